"""The local KServe stand-in: watches every namespace's InferenceServices and writes the status
KServe + Knative would write (see serin.local.kserve_status), starting and routing revisions
through a DataPlane. The operator cannot tell it from KServe: it only reads KServe-shaped status.

    python -m serin.local.kserve_standin --kubeconfig K [--data-plane] [--file-sd PATH]

From Python: `async with running_standin(kubeconfig, data_plane) as standin: ...`.
A plain asyncio program on kubernetes_asyncio, not kopf: it must never share (or be mistaken
for) the operator's kopf registry.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import logging
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from serin.local.dataplane import ControlPlaneOnly, DataPlane, IsvcRef
from serin.local.knative import Readiness
from serin.local.kserve_status import reconcile

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
log = logging.getLogger("serin.local.kserve_standin")
DRAIN_SECONDS = 3.0  # how long an unreferenced revision keeps serving requests already sent to it


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _version(obj: dict[str, Any] | None) -> int | None:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion", ""))
    except ValueError:
        return None


def _older(candidate: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """Whether `candidate` is an older copy than `current` (etcd's resourceVersions are increasing
    integers). The copies arrive by three ways that race: watch events, our own status writes'
    responses, and the GET after a conflict, which may answer from before a change whose event has
    already arrived. Reconciling an older copy that our status already matches would write
    nothing, and the change it predates would never be acted on."""
    a, b = _version(candidate), _version(current)
    return a is not None and b is not None and a < b


@dataclass
class _Tracked:
    obj: dict[str, Any] | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    readiness: dict[str, Readiness] = field(default_factory=dict)
    starting: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    worker: asyncio.Task[None] | None = None


class KServeStandIn:
    def __init__(self, api: client.ApiClient, data_plane: DataPlane | None = None,
                 namespace: str | None = None) -> None:
        self.api = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        # KServe watches every namespace; one namespace lets several stand-ins share an apiserver
        # (tests) without two of them writing the same status.
        self.namespace = namespace
        self.plane: DataPlane = data_plane or ControlPlaneOnly()
        self._tracked: dict[IsvcRef, _Tracked] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()  # revisions draining before they stop

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kserve-standin")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._stopping) if t]
        for tracked in self._tracked.values():
            tasks += [t for t in (tracked.worker, *tracked.starting.values()) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.plane.close()

    # -- watching ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._list_and_watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the apiserver restarted, a 410, a dropped connection…
                log.warning("watch interrupted (%s); listing again", exc)
                await asyncio.sleep(1.0)  # back off before hammering a restarting apiserver

    async def _list_and_watch(self) -> None:
        fn, args = self._list_call()
        listing = await fn(*args)
        seen = set()
        for item in listing.get("items") or []:
            ref = _ref(item)
            seen.add(ref)
            self._observe(ref, item)
        for ref in set(self._tracked) - seen:  # deleted while we were not watching
            self._observe(ref, None)
        rv = listing["metadata"]["resourceVersion"]
        while True:
            stream = watch.Watch().stream(fn, *args, resource_version=rv, timeout_seconds=300,
                                          allow_watch_bookmarks=True)
            async with stream as events:
                async for event in events:
                    obj = event["object"]
                    rv = obj["metadata"]["resourceVersion"]
                    if event["type"] == "BOOKMARK":
                        continue
                    self._observe(_ref(obj), None if event["type"] == "DELETED" else obj)

    def _list_call(self) -> tuple[Any, tuple[str, ...]]:
        # The API methods themselves, not a wrapper: Watch reads their docstrings.
        if self.namespace:
            return self.api.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, PLURAL)
        return self.api.list_cluster_custom_object, (GROUP, VERSION, PLURAL)

    def _observe(self, ref: IsvcRef, obj: dict[str, Any] | None) -> None:
        tracked = self._tracked.get(ref)
        if tracked is None:
            if obj is None:
                return
            tracked = self._tracked[ref] = _Tracked(obj)
        if obj is not None and _older(obj, tracked.obj):
            return  # the event of a version we hold a newer copy of (our own write's response)
        tracked.obj = obj
        tracked.wake.set()
        if tracked.worker is None or tracked.worker.done():
            tracked.worker = asyncio.create_task(self._work(ref, tracked), name=f"standin {ref}")

    # -- reconciling ------------------------------------------------------------------------

    async def _work(self, ref: IsvcRef, tracked: _Tracked) -> None:
        """One worker per InferenceService: events for it are handled in order, the latest wins."""
        while True:
            await tracked.wake.wait()
            tracked.wake.clear()
            if tracked.obj is None:
                starting = list(tracked.starting.values())
                for task in starting:
                    task.cancel()
                await asyncio.gather(*starting, return_exceptions=True)  # no process left behind
                tracked.starting.clear()
                tracked.readiness.clear()
                await self.plane.forget(ref)
                if tracked.obj is None:
                    self._tracked.pop(ref, None)
                    return
                continue  # created again while we were cleaning up
            try:
                await self._reconcile(ref, tracked)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciling %s failed; retrying", ref)
                await asyncio.sleep(1.0)
                tracked.wake.set()

    async def _reconcile(self, ref: IsvcRef, tracked: _Tracked) -> None:
        obj = tracked.obj
        assert obj is not None
        out = reconcile(obj, tracked.readiness, _now(), self.plane.endpoints(ref))
        for revision in out.revisions:
            if revision.name in out.live and revision.name not in tracked.readiness \
                    and revision.name not in tracked.starting:
                tracked.starting[revision.name] = asyncio.create_task(
                    self._start_revision(ref, tracked, revision.name, revision.storage_uri))
        traffic = out.status["components"]["predictor"].get("traffic") or []
        tags = {t["tag"]: t["revisionName"] for t in traffic if t.get("tag")}
        # Routes first, then scale down: as Knative drains a revision before it goes, so that no
        # request is sent to a runtime that is already stopping.
        await self.plane.set_routes(ref, out.routes, tags)
        for name in [n for n in tracked.readiness if n not in out.live]:
            # Knative would scale an unreferenced revision to zero; its readiness is re-learnt
            # (the process restarted) if traffic ever points at it again.
            del tracked.readiness[name]
            task = asyncio.create_task(self._stop_after_drain(ref, tracked, name))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        if out.status != obj.get("status"):
            await self._write_status(ref, tracked, obj, {**obj, "status": out.status})

    async def _stop_after_drain(self, ref: IsvcRef, tracked: _Tracked, name: str) -> None:
        await asyncio.sleep(DRAIN_SECONDS)  # requests already routed to it finish first
        if name not in tracked.readiness and name not in tracked.starting:
            await self.plane.stop(ref, name)

    async def _start_revision(self, ref: IsvcRef, tracked: _Tracked, name: str, storage_uri: str) -> None:
        try:
            env = await self._container_env(ref, tracked.obj or {})
            state = await self.plane.start(ref, name, storage_uri, env)
        except Exception as exc:
            log.exception("starting %s %s failed", ref, name)
            state = Readiness("False", "StartFailed", str(exc))
        log.info("%s revision %s: Ready=%s %s", ref, name, state.status, state.message)
        tracked.readiness[name] = state
        tracked.starting.pop(name, None)
        tracked.wake.set()

    async def _container_env(self, ref: IsvcRef, isvc: dict[str, Any]) -> dict[str, str]:
        """The predictor container's env as a kubelet resolves it: plain values, and values from a
        Secret key (a missing optional one is left out, as the kubelet does)."""
        env: dict[str, str] = {}
        model = ((isvc.get("spec") or {}).get("predictor") or {}).get("model") or {}
        for var in model.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
                continue
            ref_ = ((var.get("valueFrom") or {}).get("secretKeyRef")) or {}
            if not ref_:
                continue  # fieldRef and the like: nothing a local process has
            try:
                secret = await self.core.read_namespaced_secret(ref_["name"], ref.namespace)
            except ApiException as err:
                if err.status == 404 and ref_.get("optional"):
                    continue
                raise
            data = (secret.data or {}).get(ref_["key"])
            if data is not None:
                env[var["name"]] = base64.b64decode(data).decode()
        return env

    async def _write_status(self, ref: IsvcRef, tracked: _Tracked, base: dict[str, Any],
                            body: dict[str, Any]) -> None:
        """A full status replace guarded by resourceVersion: on 409 the object is read again and
        the worker reconciles the fresh copy. A merge patch could not remove fields KServe drops
        (a tag, a traffic entry) and would apply status computed from a stale spec."""
        try:
            written = await self.api.replace_namespaced_custom_object_status(
                GROUP, VERSION, ref.namespace, PLURAL, ref.name, body)
            # One line per status written: with the operator's log, which side waits on which.
            comp = (body["status"].get("components") or {}).get("predictor") or {}
            pred = (body.get("spec") or {}).get("predictor") or {}
            log.info("%s status rv %s for spec rv %s (canaryTrafficPercent %s): created %s, ready %s, "
                     "rolled out %s, traffic %s", ref, written["metadata"]["resourceVersion"],
                     base["metadata"].get("resourceVersion"), pred.get("canaryTrafficPercent"),
                     comp.get("latestCreatedRevision"), comp.get("latestReadyRevision"),
                     comp.get("latestRolledoutRevision"),
                     {t.get("revisionName"): t.get("percent") for t in comp.get("traffic") or []})
            if tracked.obj is not None and not _older(written, tracked.obj):
                tracked.obj = written  # nothing newer arrived meanwhile: continue from what we wrote
        except ApiException as exc:
            if exc.status == 409:
                fresh = await self._get(ref)
                if fresh is None or not _older(fresh, tracked.obj):
                    tracked.obj = fresh
                tracked.wake.set()
            elif exc.status == 404:
                tracked.obj = None
                tracked.wake.set()
            else:
                raise

    async def _get(self, ref: IsvcRef) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self.api.get_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, PLURAL, ref.name)
            return obj
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _ref(obj: dict[str, Any]) -> IsvcRef:
    return IsvcRef(obj["metadata"]["namespace"], obj["metadata"]["name"])


async def api_client(kubeconfig: Path) -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(configuration=cfg)


@contextlib.asynccontextmanager
async def running_standin(kubeconfig: Path, data_plane: DataPlane | None = None,
                          namespace: str | None = None) -> AsyncIterator[KServeStandIn]:
    api = await api_client(kubeconfig)
    standin = KServeStandIn(api, data_plane, namespace)
    await standin.start()
    try:
        yield standin
    finally:
        await standin.stop()
        await api.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serin.local.kserve_standin",
                                description="Local stand-in for KServe + Knative (serverless InferenceServices).")
    p.add_argument("--kubeconfig", required=True, type=Path)
    p.add_argument("--namespace", help="watch one namespace only (default: all, as KServe)")
    p.add_argument("--data-plane", action="store_true",
                   help="run a Serin runtime per revision and a router per InferenceService")
    p.add_argument("--workdir", type=Path, default=Path.home() / ".serin" / "dev" / "standin",
                   help="runtime logs (data plane)")
    p.add_argument("--file-sd", type=Path, help="Prometheus file_sd JSON listing every runtime (data plane)")
    p.add_argument("--ready-timeout", type=float, default=180.0, help="seconds for a revision to become ready")
    p.add_argument("--log-level", default="INFO")
    return p


async def _main(args: argparse.Namespace) -> int:
    plane: DataPlane | None = None
    if args.data_plane:
        from serin.local.runtimes import RuntimeProcesses

        plane = RuntimeProcesses(args.workdir, args.file_sd, ready_timeout=args.ready_timeout)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with running_standin(args.kubeconfig, plane, args.namespace):
        log.info("KServe stand-in watching InferenceServices (data plane: %s)",
                 "runtimes" if args.data_plane else "none")
        await stopping.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
