"""kopf handlers: thin. kopf watches Models (and lists them all at start-up) and hands each body to
the watch cache (cache.py), which also watches what the Models own; each Model gets one asyncio
task (loop.py) that reconciles it when any of that changes, or when time matters to it.

Why not @kopf.daemon or @kopf.timer: both make kopf put a finalizer on every Model (kopf#1074),
which would block deleting a Model whenever the operator is down, and Serin has nothing outside
Kubernetes to clean up. @kopf.on.event adds no finalizer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import kopf
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException
from prometheus_client import start_http_server
from serin.operator import executors, notify, opmetrics
from serin.operator.cache import Cache
from serin.operator.kube import GROUP, PLURAL, VERSION, Kube
from serin.operator.leader import LeaderElector
from serin.operator.loop import Registry
from serin.operator.notifier import Notifier
from serin.operator.policy import Policy
from serin.operator.prometheus import Prometheus
from serin.operator.reconcile import Deps
from serin.operator.routing import Routing, default_mode_from_configmap, parse_gateway
from serin.operator.spec import SinkSpec, parse_sinks

log = logging.getLogger("serin.operator")
REGISTRY = Registry()
CACHE: list[Cache] = []  # the one watch cache, made at start-up (kopf's handlers take no other state)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # Serin posts its own Events
    settings.watching.server_timeout = 60
    # kopf's default retries give up after ~54 s, and a Model watch that gives up stops the operator.
    # Ride out an apiserver outage (an upgrade, a restart) of up to ~10 minutes instead, as
    # client-go's informers do; the watch cache (cache.py) retries on its own, without end.
    settings.networking.error_backoffs = (1, 1, 2, 3, 5, 8, 13, 21) + (30,) * 18
    # No cluster scanning: Serin watches one CRD it knows, in cluster-wide mode or in namespaces named
    # exactly, so kopf needs neither list/watch on namespaces nor on CRDs. That keeps the chart's
    # namespaced mode free of any cluster-scoped right. The price, a CRD installed after start-up
    # going unnoticed, is paid by the check below instead: fail loudly, let the Pod restart.
    settings.scanning.disabled = True
    await load_client_config()
    api = client.ApiClient()
    await require_model_api(api)
    namespaces = tuple(ns for ns in os.environ.get("SERIN_NAMESPACES", "").split(",") if ns)
    CACHE.append(Cache(api, namespaces, REGISTRY.wake))
    kube = Kube(api, cache=CACHE[0])
    executor_kind = executors.kind_from_environment()
    limit = int(os.environ.get("SERIN_MAX_CONVERSIONS") or executors.default_limit(executor_kind))
    per_namespace = int(os.environ.get("SERIN_MAX_CONVERSIONS_PER_NAMESPACE") or 0)
    executor = executors.ConversionQueue(executors.from_environment(api, executor_kind, namespaces), limit,
                                         started=REGISTRY.wake, per_namespace=per_namespace)
    routing = await load_routing(kube)
    # `serin operator` writes "true" or "false"; anything else set by hand is the safe choice.
    policy = Policy(require_analysis=os.environ.get("SERIN_REQUIRE_ANALYSIS", "true").strip().lower() != "false")
    REGISTRY.deps = Deps(kube, executor, Prometheus(os.environ.get("SERIN_PROMETHEUS_URL", "http://localhost:9090"),
                                                    concurrency=int(os.environ.get("SERIN_PROMETHEUS_QUERIES", "16"))),
                         routing, policy=policy,
                         notifier=Notifier(kube.read_secret_data, os.environ.get("SERIN_NOTIFY_NAMESPACE")
                                           or os.environ.get("POD_NAMESPACE", ""), REGISTRY.wake),
                         notify_defaults=load_default_sinks(), notify_retry=load_retry_policy())
    lease_ns = os.environ.get("POD_NAMESPACE", "")
    if lease_ns:
        REGISTRY.leader = LeaderElector(api, lease_ns)
        REGISTRY.leader.on_elected = REGISTRY.wake_all
        REGISTRY.leader_task = asyncio.create_task(REGISTRY.leader.run(), name="leader election")
    port = int(os.environ.get("SERIN_METRICS_PORT", "0"))
    if port:
        start_http_server(port)
    log.info("serin operator started: executor=%s (%d at a time, %s per namespace), require analysis=%s, "
             "leader election=%s, KServe default mode=%s, gateway=%s", executor_kind, limit,
             per_namespace or "no limit", policy.require_analysis, bool(lease_ns), routing.default_mode,
             f"{routing.gateway.gateway_namespace}/{routing.gateway.gateway_name}" if routing.gateway else "none")


def load_default_sinks() -> tuple[SinkSpec, ...]:
    """The chart's notification sinks ($SERIN_NOTIFY_SINKS: JSON, spec.notify.sinks' schema),
    told of every Model's transitions unless a Model says includeDefaults: false."""
    text = os.environ.get("SERIN_NOTIFY_SINKS", "").strip()
    if not text:
        return ()
    try:
        raw = json.loads(text)
        sinks = parse_sinks(raw, shared=True)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise kopf.PermanentError(f"$SERIN_NOTIFY_SINKS (the chart's notifications.sinks) is not a list of sinks "
                                  f"({type(err).__name__}: {err})") from None
    bad = [s.name for s in sinks if bool(s.url) == bool(s.url_secret_key)]
    if bad:
        raise kopf.PermanentError(f"$SERIN_NOTIFY_SINKS: sink {bad[0]} needs exactly one of url and urlSecretKey")
    names = [s.name for s in sinks]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise kopf.PermanentError(f"$SERIN_NOTIFY_SINKS: sink name {twice[0]} is given twice")
    return sinks


def load_retry_policy() -> notify.RetryPolicy:
    d = notify.RetryPolicy()
    return notify.RetryPolicy(first_delay=float(os.environ.get("SERIN_NOTIFY_RETRY_SECONDS") or d.first_delay),
                              attempts=int(os.environ.get("SERIN_NOTIFY_ATTEMPTS") or d.attempts))


async def load_routing(kube: Kube) -> Routing:
    """KServe's default deployment mode (its inferenceservice-config ConfigMap, when readable) and
    the Gateway Serin routes Standard-mode canaries through (SERIN_GATEWAY, when set)."""
    namespace = os.environ.get("SERIN_KSERVE_NAMESPACE", "kserve")
    cm = await kube.get_configmap(namespace, "inferenceservice-config")
    if cm is None:
        log.info("KServe's ConfigMap %s/inferenceservice-config is not readable: assuming KServe's default mode, "
                 "Serverless (Knative)", namespace)
    store_container = os.environ.get("SERIN_MODEL_STORE_CONTAINER", "")
    gateway = parse_gateway(os.environ.get("SERIN_GATEWAY", ""), os.environ.get("SERIN_GATEWAY_DOMAIN", ""),
                            os.environ.get("SERIN_GATEWAY_METRICS", ""),
                            os.environ.get("SERIN_GATEWAY_METRICS_SELECTOR", ""), store_container)
    return Routing(default_mode_from_configmap(cm), gateway, store_container)


async def load_client_config() -> None:
    """In a Pod (client-go's rule: KUBERNETES_SERVICE_HOST set and the token mounted) use the Pod's
    ServiceAccount; otherwise $KUBECONFIG or ~/.kube/config. An explicit KUBECONFIG always wins."""
    token = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG") and token.exists():
        config.load_incluster_config()
    else:
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))


async def require_model_api(api: client.ApiClient) -> None:
    """Refuse to start (a clear error, then a Pod restart) when the Model CRD is not installed:
    without it kopf would run and silently serve nothing."""
    try:
        await client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION)
    except ApiException as err:
        if err.status == 404:
            raise kopf.PermanentError(
                f"the {PLURAL}.{GROUP}/{VERSION} API is not served: install the CRD "
                "(helm install, or kubectl apply -f manifests/crds/) and restart the operator") from None
        raise


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    await REGISTRY.stop()
    for cache in CACHE:
        await cache.stop()
    if REGISTRY.deps is not None and isinstance(REGISTRY.deps.metrics, Prometheus):
        await REGISTRY.deps.metrics.close()
    if REGISTRY.deps is not None and REGISTRY.deps.notifier is not None:
        await REGISTRY.deps.notifier.close()
    if REGISTRY.leader_task is not None:
        REGISTRY.leader_task.cancel()
    if REGISTRY.leader is not None:
        await REGISTRY.leader.release()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def model_event(type: str | None, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    if namespace is None:
        return  # Models are namespaced; kopf's signature allows None for cluster-scoped resources
    cache = CACHE[0] if CACHE else None
    if type == "DELETED":
        REGISTRY.forget(namespace, name)
        opmetrics.forget(namespace, name)
        if cache is not None:
            cache.forget_model(namespace, name)
        if REGISTRY.deps is not None:
            REGISTRY.deps.secrets.pop((namespace, name), None)
            REGISTRY.deps.monitor_reads.pop((namespace, name), None)
            REGISTRY.deps.retrain_jobs.pop((namespace, name), None)
            if REGISTRY.deps.notifier is not None:
                REGISTRY.deps.notifier.forget(namespace, name)
        if REGISTRY.deps is not None and isinstance(REGISTRY.deps.executor, executors.ConversionQueue):
            await REGISTRY.deps.executor.forget(namespace, name)
        return
    if cache is not None:
        cache.put_model({key: body[key] for key in body})
    REGISTRY.touch(namespace, name)
