"""The watch cache: every object a reconcile reads, kept current by list + watch (client-go's
informers, the way Argo Rollouts, Flagger and KServe read). A reconcile reads from memory; the
apiserver sees one LIST per kind at start-up, then watches that reconnect every few minutes. At
steady state an idle Model costs no request at all.

Each object is mapped to the Model it concerns (its owner reference, a Serin label, or KServe's
InferenceService label) and every change wakes that Model's reconcile: the controller is driven by
watches, and by time only where time matters (loop.py).

Models themselves come from kopf's own watch (handlers.py feeds them in), so the Model is watched
once. Objects the operator writes go in too, from the write's response, so the next reconcile does
not plan from what it already changed. An older copy never replaces a newer one: etcd's
resourceVersions are increasing integers, which is compared when both parse (else the later
arrival wins, as in client-go).

Memory is bounded by what is stored: managed fields and kubectl's last-applied copy are dropped,
and of a Deployment only what the Standard-mode router reads (its Pod template's metadata, not its
containers) is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from serin.operator.routing.standard import ISVC_LABEL

log = logging.getLogger("serin.cache")

Key = tuple[str, str]  # (namespace, name)
Wake = Callable[[str, str], None]  # (namespace, Model name)
# A list call of the kubernetes client for one namespace ("" for all), taking watch/selector kwargs.
Lister = Callable[..., Awaitable[Any]]

WATCH_SECONDS = 300  # the apiserver closes a watch after this; it resumes from the last version
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MODEL_LABEL = "serin.dev/model"


@dataclass(frozen=True)
class KindSpec:
    """One kind the cache holds: how to list it, which of its objects, and the label it is found by."""

    name: str
    list_namespaced: Callable[[client.ApiClient], Lister]
    list_all: Callable[[client.ApiClient], Lister]
    selector: str = ""
    index_label: str = ""  # list_by_label reads objects by this label's value


def _custom(group: str, version: str, plural: str) -> tuple[Callable[[client.ApiClient], Lister],
                                                            Callable[[client.ApiClient], Lister]]:
    def namespaced(api: client.ApiClient) -> Lister:
        c = client.CustomObjectsApi(api)
        return lambda ns, **kw: c.list_namespaced_custom_object(group, version, ns, plural, **kw)

    def every(api: client.ApiClient) -> Lister:
        c = client.CustomObjectsApi(api)
        return lambda _ns, **kw: c.list_cluster_custom_object(group, version, plural, **kw)
    return namespaced, every


def _typed(api_class: Any, namespaced_fn: str, all_fn: str) -> tuple[Callable[[client.ApiClient], Lister],
                                                                     Callable[[client.ApiClient], Lister]]:
    def namespaced(api: client.ApiClient) -> Lister:
        return lambda ns, **kw: getattr(api_class(api), namespaced_fn)(ns, **kw)

    def every(api: client.ApiClient) -> Lister:
        return lambda _ns, **kw: getattr(api_class(api), all_fn)(**kw)
    return namespaced, every


KINDS: dict[str, KindSpec] = {
    # Every InferenceService: a Model's ISVC is found by its name, labelled by Serin or not.
    "isvc": KindSpec("isvc", *_custom("serving.kserve.io", "v1beta1", "inferenceservices")),
    # Standard mode: the predictor Deployments KServe makes (only they carry its label).
    "deployments": KindSpec("deployments", *_typed(client.AppsV1Api, "list_namespaced_deployment",
                                                    "list_deployment_for_all_namespaces"),
                            selector=ISVC_LABEL, index_label=ISVC_LABEL),
    # The predictor Pods (either mode), while a rollout waits on them: the reasons they do not
    # serve (unschedulable, image, crash loop, OOM) are told as they happen (operator/pods.py).
    "pods": KindSpec("pods", *_typed(client.CoreV1Api, "list_namespaced_pod", "list_pod_for_all_namespaces"),
                     selector=ISVC_LABEL, index_label=ISVC_LABEL),
    # Standard mode without a Gateway: the Model's split Service; with one: its HTTPRoute.
    "service": KindSpec("service", *_typed(client.CoreV1Api, "list_namespaced_service",
                                           "list_service_for_all_namespaces"),
                        selector="app.kubernetes.io/managed-by=serin"),
    "route": KindSpec("route", *_custom("gateway.networking.k8s.io", "v1", "httproutes"),
                      selector="app.kubernetes.io/managed-by=serin"),
    # With a Gateway: the predictor Services' EndpointSlices (they carry their Service's labels,
    # KServe's among them), so a canary gets its weight only once the Gateway has somewhere to send it.
    "endpointslices": KindSpec("endpointslices", *_typed(client.DiscoveryV1Api, "list_namespaced_endpoint_slice",
                                                          "list_endpoint_slice_for_all_namespaces"),
                               selector=ISVC_LABEL, index_label=ISVC_LABEL),
}


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    """What the cache keeps of an object: all but what no decision reads and costs memory."""
    meta = obj.get("metadata") or {}
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if annotations:
        annotations.pop(LAST_APPLIED, None)
    if obj.get("kind") == "Pod":
        # Of a Pod, only what operator/pods.py reads: who it is and why it is not running.
        status = obj.get("status") or {}
        obj["spec"] = {}
        obj["status"] = {k: status[k] for k in ("phase", "conditions", "initContainerStatuses",
                                               "containerStatuses") if k in status}
        for key in ("initContainerStatuses", "containerStatuses"):
            for cs in obj["status"].get(key) or []:
                for drop in ("image", "imageID", "containerID", "volumeMounts", "resources", "allocatedResources",
                             "user", "started"):
                    cs.pop(drop, None)
    elif obj.get("kind") == "EndpointSlice":
        # Of an EndpointSlice, whether each endpoint takes traffic (routing/standard.py).
        obj["endpoints"] = [{"conditions": e.get("conditions") or {}} for e in obj.get("endpoints") or []]
        obj.pop("ports", None)
    elif obj.get("kind") == "Deployment":
        template = (obj.get("spec") or {}).get("template")
        if isinstance(template, dict):
            obj["spec"]["template"] = {"metadata": template.get("metadata") or {}}
    return obj


def newer(candidate: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """Whether `candidate` may replace `current`: not when both versions are integers and it is older."""
    if current is None:
        return True
    a, b = _rv(candidate), _rv(current)
    return a is None or b is None or a >= b


def _rv(obj: dict[str, Any]) -> int | None:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion", ""))
    except ValueError:
        return None


def model_of(obj: dict[str, Any]) -> str | None:
    """The Model an object concerns: its controller owner when that is a Model or an
    InferenceService (Serin names the ISVC after its Model), else Serin's or KServe's label."""
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == "Model" and str(ref.get("apiVersion", "")).startswith("serin.dev/"):
            return str(ref["name"])
        if ref.get("kind") == "InferenceService":
            return str(ref["name"])
    labels = meta.get("labels") or {}
    if obj.get("kind") == "InferenceService":
        return str(meta.get("name"))
    value = labels.get(MODEL_LABEL) or labels.get(ISVC_LABEL)
    return str(value) if value else None


class Store:
    """The objects of one kind, by (namespace, name), with an optional label index."""

    def __init__(self, index_label: str = "") -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.index_label = index_label
        self.index: dict[Key, set[str]] = {}  # (namespace, label value) -> names

    def put(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        if not newer(obj, self.objects.get(key)):
            return False
        self._unindex(key)
        self.objects[key] = obj
        value = (meta.get("labels") or {}).get(self.index_label) if self.index_label else None
        if value:
            self.index.setdefault((key[0], value), set()).add(key[1])
        return True

    def remove(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._unindex((namespace, name))
        return self.objects.pop((namespace, name), None)

    def _unindex(self, key: Key) -> None:
        old = self.objects.get(key)
        if old is None or not self.index_label:
            return
        value = str((old["metadata"].get("labels") or {}).get(self.index_label) or "")
        names = self.index.get((key[0], value)) if value else None
        if names is not None:
            names.discard(key[1])
            if not names:
                del self.index[(key[0], value)]

    def by_label(self, namespace: str, value: str) -> tuple[dict[str, Any], ...]:
        return tuple(self.objects[(namespace, n)] for n in sorted(self.index.get((namespace, value), ())))


class Informer:
    """List, then watch from the list's resourceVersion, for one kind in one namespace (or all);
    relist when the watch's version is gone (410) or the stream breaks. `synced` is set after the
    first list: reads wait for it."""

    def __init__(self, kind: KindSpec, api: client.ApiClient, namespace: str, store: Store, wake: Wake) -> None:
        self.kind = kind
        self.namespace = namespace
        self.list = (kind.list_namespaced if namespace else kind.list_all)(api)
        self.store = store
        self.wake = wake
        self.synced = asyncio.Event()
        self.absent = False  # the API is not served here (a CRD not installed): every read sees nothing
        self.lists = 0  # LIST requests made (the benchmark and tests read it)

    async def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                version = await self._relist()
                backoff = 1.0
                while version:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except ApiException as err:
                if err.status in (403, 404):
                    # Not installed or not allowed: reads see nothing (as a GET's 404 would) and the
                    # reason is logged once per retry; the router reports what it cannot find.
                    if not self.absent:
                        log.warning("cannot list %s%s: API %s %s; reading none, retrying", self.kind.name,
                                    f" in {self.namespace}" if self.namespace else "", err.status, err.reason)
                    self.absent = True
                    self.synced.set()
                else:
                    log.warning("watch of %s failed: API %s %s; relisting", self.kind.name, err.status, err.reason)
            except (OSError, TimeoutError, ValueError, aiohttp.ClientError) as err:
                # The apiserver went away (a restart ends a watch mid-stream with ClientPayloadError
                # or ServerDisconnectedError, neither an OSError) or sent what does not parse.
                log.warning("watch of %s broke: %s: %s; relisting", self.kind.name, type(err).__name__, err)
            except Exception:
                # Never let an informer die: a dead one is a cache that silently stops changing.
                log.exception("watch of %s failed unexpectedly; relisting", self.kind.name)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 60.0)

    async def _relist(self) -> str:
        resp = await _checked(self.list(self.namespace, label_selector=self.kind.selector, _preload_content=False))
        self.lists += 1
        body = json.loads(await resp.read())
        fresh: dict[Key, dict[str, Any]] = {}
        item_kind = str(body.get("kind", "")).removesuffix("List")
        for item in body.get("items") or []:
            item.setdefault("kind", item_kind)
            meta = item["metadata"]
            fresh[(meta.get("namespace", ""), meta["name"])] = strip(item)
        for key in [k for k in self.store.objects if self._mine(k) and k not in fresh]:
            gone = self.store.remove(*key)
            if gone is not None:
                self._notify(gone)
        for obj in fresh.values():
            # A relist replaces what it finds (a write-through copy from our own write is not newer
            # than what the apiserver lists after it).
            before = self.store.objects.get((obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
            if self.store.put(obj) and before != obj:
                self._notify(obj)
        self.absent = False
        self.synced.set()
        return str((body.get("metadata") or {}).get("resourceVersion", ""))

    def _mine(self, key: Key) -> bool:
        return not self.namespace or key[0] == self.namespace

    async def _watch(self, version: str) -> str:
        """One watch request; the version to resume from, or "" to relist."""
        resp = await _checked(self.list(self.namespace, label_selector=self.kind.selector, watch=True,
                                        resource_version=version, allow_watch_bookmarks=True,
                                        timeout_seconds=WATCH_SECONDS, _preload_content=False,
                                        _request_timeout=WATCH_SECONDS + 30))
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    return version  # the server ended it: resume where it stopped
                event = json.loads(line)
                obj, kind = event.get("object") or {}, event.get("type")
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return ""  # too old: relist
                    raise ApiException(status=obj.get("code", 500), reason=obj.get("message", ""))
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    meta = obj["metadata"]
                    self.store.remove(meta.get("namespace", ""), meta["name"])
                    self._notify(obj)
                elif self.store.put(strip(obj)):
                    self._notify(obj)
        finally:
            resp.release()

    def _notify(self, obj: dict[str, Any]) -> None:
        model = model_of(obj)
        if model:
            self.wake(str(obj["metadata"].get("namespace", "")), model)


async def _checked(call: Awaitable[Any]) -> Any:
    """The raw response of a call made with _preload_content=False, which the client does not check."""
    resp = await call
    if resp.status >= 300:
        text = await resp.text()
        resp.release()
        try:
            reason = str(json.loads(text).get("message") or text)
        except (ValueError, AttributeError):
            reason = text
        raise ApiException(status=resp.status, reason=reason[:300])
    return resp


class Cache:
    """The informers of every kind a reconcile reads, started on first use: a kind only some modes
    need (HTTPRoutes with a Gateway, Deployments in Standard mode) is never listed otherwise."""

    def __init__(self, api: client.ApiClient, namespaces: tuple[str, ...], wake: Wake) -> None:
        self.api = api
        self.namespaces = namespaces or ("",)  # "": all namespaces, one cluster-wide watch
        self.wake = wake
        self.models = Store()
        self.stores: dict[str, Store] = {}
        self.informers: dict[str, list[Informer]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def ready(self, kind: str) -> Store:
        """The store of `kind`, once its first list is in."""
        if kind not in self.informers:
            spec = KINDS[kind]
            store = self.stores[kind] = Store(spec.index_label)
            self.informers[kind] = [Informer(spec, self.api, ns, store, self.wake) for ns in self.namespaces]
            self.tasks += [asyncio.create_task(i.run(), name=f"informer {kind} {i.namespace or '*'}")
                           for i in self.informers[kind]]
        await asyncio.gather(*(i.synced.wait() for i in self.informers[kind]))
        return self.stores[kind]

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = (await self.ready(kind)).objects.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def by_label(self, kind: str, namespace: str, value: str) -> tuple[dict[str, Any], ...]:
        return copy.deepcopy((await self.ready(kind)).by_label(namespace, value))

    def put(self, kind: str, obj: dict[str, Any] | None) -> None:
        """A write's response: the object as the apiserver now has it."""
        if obj and kind in self.stores and (obj.get("metadata") or {}).get("name"):
            self.stores[kind].put(strip(copy.deepcopy(obj)))

    def model(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.models.objects.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def put_model(self, obj: dict[str, Any]) -> bool:
        return self.models.put(strip(copy.deepcopy(obj)))

    def forget_model(self, namespace: str, name: str) -> None:
        self.models.remove(namespace, name)

    @property
    def lists(self) -> int:
        return sum(i.lists for informers in self.informers.values() for i in informers)

    def sizes(self) -> dict[str, int]:
        return {"models": len(self.models.objects)} | {k: len(s.objects) for k, s in self.stores.items()}

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
