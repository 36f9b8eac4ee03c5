"""The watch cache on the real apiserver: it sees changes, and keeps seeing them after the
apiserver restarts (a watch cut mid-stream, then refused connections and 503s while it starts)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from kubernetes_asyncio import client, config
from serin.local.controlplane import ControlPlane
from serin.operator.cache import Cache

pytestmark = pytest.mark.controlplane


def isvc(namespace: str, name: str, uri: str) -> str:
    return json.dumps({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                       "metadata": {"name": name, "namespace": namespace},
                       "spec": {"predictor": {"model": {"modelFormat": {"name": "onnx"}, "storageUri": uri}}}})


async def woken(wakes: list[tuple[str, str]], key: tuple[str, str], since: int, timeout: float) -> float:
    """Seconds until `key` is woken after wakes[since:], failing after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if key in wakes[since:]:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} not woken within {timeout}s; wakes: {wakes[since:]}")


async def test_the_cache_keeps_watching_across_an_apiserver_restart(crds: ControlPlane, namespace: str) -> None:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(crds.kubeconfig), client_configuration=cfg)
    wakes: list[tuple[str, str]] = []
    async with client.ApiClient(configuration=cfg) as api:
        cache = Cache(api, (namespace,), lambda ns, name: wakes.append((ns, name)))
        try:
            assert await cache.get("isvc", namespace, "a") is None
            crds.kubectl("apply", "-f", "-", input=isvc(namespace, "a", "file:///m/v1.onnx"))
            await woken(wakes, (namespace, "a"), 0, timeout=10)
            assert (await cache.get("isvc", namespace, "a"))["spec"]["predictor"]["model"]["storageUri"] \
                == "file:///m/v1.onnx"

            # The restart blocks until the apiserver is ready again; the informer runs meanwhile.
            await asyncio.to_thread(crds.restart_apiserver, 2)
            lists_before = cache.lists
            since = len(wakes)
            crds.kubectl("apply", "-f", "-", input=isvc(namespace, "a", "file:///m/v2.onnx"))
            crds.kubectl("apply", "-f", "-", input=isvc(namespace, "b", "file:///m/v1.onnx"))
            took = await woken(wakes, (namespace, "b"), since, timeout=60)
            await woken(wakes, (namespace, "a"), since, timeout=5)
            print(f"change after the restart seen in {took:.2f}s; relists: {cache.lists - lists_before}")
            assert (await cache.get("isvc", namespace, "a"))["spec"]["predictor"]["model"]["storageUri"] \
                == "file:///m/v2.onnx"
            assert all(not t.done() for t in cache.tasks), "an informer ended"
        finally:
            await cache.stop()
