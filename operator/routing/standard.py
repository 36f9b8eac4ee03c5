"""Standard mode (KServe's plain Deployments) with KServe v0.20's `spec.canary`: every version is
a named predictor, `gen{N}`, with its own Deployment and Service `{isvc}-gen{N}-predictor`; the
stable is `spec.predictor`, the canary the one entry of `spec.canary`. Promotion retargets
`spec.predictor.name` to the canary's (KServe keeps the canary's ReplicaSet: no restart); rollback
removes the entry.

KServe's `trafficPercent` routes nothing: it only sizes the canary's replicas
(`ceil(stable minReplicas * percent / 100)`, the stable's lowered by as many). The split is Serin's:

- ReplicaRatioRouter: a Service of Serin's, `{model}-serin`, over every predictor Pod of the Model,
  so requests divide by the ready Pods' ratio. Coarse (one replica each is 50 %), and reported as
  such: the observation's canary weight is the ratio achieved, not the one asked.
- GatewayRouter: an HTTPRoute of Serin's with weighted backendRefs to the two predictor Services:
  exact weights. The canary gets weight only once its Pods are ready and published in its
  Service's EndpointSlice (a backend with no endpoint answers 503 for its share), and a promotion
  first moves the route to 100 % canary, then retargets the InferenceService (which deletes the
  old stable's Service at once).

A KServe older than v0.20 drops `spec.canary` (its schema prunes the unknown field). Serin notes
the canary it wrote in an annotation of its own object (the Service or the HTTPRoute: KServe
copies the InferenceService's annotations onto the Pod templates, so one there would restart the
stable); the note without the field is how the observation knows, and the rollout refuses the
canary instead of rolling out unanalysed.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from serin.operator.actions import ApplyServing, Served
from serin.operator.gateway_metrics import GatewayMetrics
from serin.operator.observations import ServingObservation, Variant
from serin.operator.routing.base import (
    Mode,
    Op,
    Seen,
    Write,
    covers,
    diff,
    isvc_metadata,
    model_spec,
    not_ready,
    predictor_name,
    state_volumes,
    storage_container,
)
from serin.operator.spec import ModelSpec

CANARY_ANNOTATION = "serin.dev/canary"  # on Serin's Service / HTTPRoute: the canary written into spec.canary
# The storage URI KServe's controller puts on a predictor Deployment's Pod template (the webhook
# mounts it): what that Deployment really serves.
SOURCE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
ISVC_LABEL = "serving.kserve.io/inferenceservice"
PREDICTOR_PORT = 80  # KServe's predictor Services: 80 -> the container's 8080
RUNTIME_PORT = 8080
NO_CANARY_API = ("KServe dropped spec.canary from the InferenceService (KServe before v0.20 has no canary "
                 "in Standard mode): configure a Gateway (the chart's gateway values) for Serin to split "
                 "traffic, or upgrade KServe")


def revision_name(predictor: str) -> str:
    """The `revision` label of a predictor's metrics (SERIN_REVISION): its name, or KServe's
    `predictor` for an unnamed one."""
    return predictor or "predictor"


def deployment_name(isvc: str, predictor: str) -> str:
    return f"{isvc}-{predictor}-predictor" if predictor else f"{isvc}-predictor"


def model_hostname(model: str, namespace: str, domain: str) -> str:
    """Where a Model is published: `{model}.{namespace}.{domain}`, Knative's default template.

    KServe's default, `{model}-{namespace}.{domain}`, is ambiguous: Model `a-b` in namespace `c` and
    `a` in `b-c` get one hostname, and whichever route came first would take the other tenant's
    traffic. Neither a namespace nor a Model's name (the CRD holds it to a DNS label) has a dot, so
    this form names one Model only, and a Gateway can give each namespace a listener of its own
    (`*.{namespace}.{domain}`) that no other namespace's route can attach to.
    """
    return f"{model}.{namespace}.{domain}"


def split_service_name(model: str) -> str:
    return f"{model}-serin"


# What the Gateway publishes of a runtime: the inference protocols (V1 `/v1/models/...`, V2 `/v2`,
# `/v2/models/...`, health), feedback included (`/v2/models/{name}/feedback`). Not `/metrics`: the
# per-Pod series are for the Prometheus that scrapes Pods directly, not for every client of the
# Gateway (issue 32 #5). Gateway API prefixes match whole path segments: `/v2` is not `/v2x`.
PUBLIC_PATHS = ("/v1", "/v2")


def route_name(model: str) -> str:
    return model


# -- reading KServe's objects -------------------------------------------------------------------


def _predictors(isvc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(stable predictor spec, canary entry or None) as written."""
    spec = isvc.get("spec") or {}
    canaries = spec.get("canary") or []
    return spec.get("predictor") or {}, (canaries[0] if canaries else None)


def _rolled_out(dep: dict[str, Any]) -> bool:
    """The Deployment runs its current template, all replicas available, no old ones left."""
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    want = int(spec.get("replicas", 1))
    return (int(status.get("observedGeneration", 0)) >= int((dep.get("metadata") or {}).get("generation", 0))
            and int(status.get("updatedReplicas", 0)) == want == int(status.get("replicas", 0))
            and int(status.get("availableReplicas", 0)) >= want)


def _ready_pods(dep: dict[str, Any] | None) -> int:
    return int(((dep or {}).get("status") or {}).get("readyReplicas", 0) or 0)


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def has_ready_endpoint(slices: tuple[dict[str, Any], ...], service: str) -> bool:
    """Whether the Service's EndpointSlices publish an endpoint that takes traffic. A Deployment's
    ready replica reaches the Gateway only through the EndpointSlice, which the EndpointSlice
    controller updates after the Pod turns ready: a weight given on the Deployment's word alone was
    a moment of 503s for the canary's share. A missing `ready` means ready (the API's convention)."""
    for s in slices:
        if ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) != service:
            continue
        for endpoint in s.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                return True
    return False


def _source(dep: dict[str, Any] | None) -> str:
    template = ((dep or {}).get("spec") or {}).get("template") or {}
    return str(((template.get("metadata") or {}).get("annotations") or {}).get(SOURCE_URI_ANNOTATION, ""))


class _Workloads:
    """What KServe made of the InferenceService: its predictor Deployments, by name."""

    def __init__(self, seen: Seen) -> None:
        assert seen.isvc is not None
        self.isvc = seen.isvc
        self.by_name = {d["metadata"]["name"]: d for d in seen.deployments}
        self.stable_spec, self.canary_entry = _predictors(seen.isvc)
        self.stable_name = str(self.stable_spec.get("name") or "")
        self.canary_name = str(((self.canary_entry or {}).get("predictor") or {}).get("name") or "")
        self.stable = self.by_name.get(deployment_name(seen.name, self.stable_name))
        self.canary = self.by_name.get(deployment_name(seen.name, self.canary_name)) if self.canary_entry else None
        named = {deployment_name(seen.name, self.stable_name)}
        if self.canary_entry:
            named.add(deployment_name(seen.name, self.canary_name))
        self.others_ready = sum(_ready_pods(d) for n, d in self.by_name.items() if n not in named)

    def variant_ok(self, dep: dict[str, Any] | None, spec: dict[str, Any]) -> bool:
        """KServe made this predictor as written: its Deployment exists, serves the written model
        and has rolled out."""
        want = ((spec.get("model") or {}).get("storageUri")) or ""
        return dep is not None and _source(dep) == want and _rolled_out(dep)

    @property
    def settled(self) -> bool:
        ok = self.variant_ok(self.stable, self.stable_spec)
        if self.canary_entry is not None:
            ok = ok and self.variant_ok(self.canary, self.canary_entry.get("predictor") or {})
        # A removed predictor's Pods must be gone too (KServe deletes its Deployment at once; they
        # take a moment to terminate and leave the endpoints).
        return ok and self.others_ready == 0

    def refused(self, owned: dict[str, Any] | None) -> str:
        """`owned`: Serin's Service or HTTPRoute, which notes the canary written."""
        written = (((owned or {}).get("metadata") or {}).get("annotations") or {}).get(CANARY_ANNOTATION)
        return NO_CANARY_API if written and self.canary_entry is None else ""


def _variant(dep: dict[str, Any] | None, predictor: str, weight: int) -> Variant:
    ready = dep is not None and _rolled_out(dep) and _ready_pods(dep) > 0
    return Variant(_source(dep), revision_name(predictor), ready, weight)


# -- writing the InferenceService ---------------------------------------------------------------


def isvc_spec(stable: Served, canary: Served | None, canary_percent: int, spec: ModelSpec,
              stable_name: str | None = None, model: str = "", namespace: str = "",
              store_container: str = "") -> dict[str, Any]:
    """`stable_name`: keep this name for the stable predictor (one an InferenceService already
    serves it under: renaming it would make KServe start a new Deployment and delete the old one).
    `model`: the Model's name (its feedback Secret and state volume; none when empty), `namespace`
    its namespace (its captured records' prefix); `store_container`: the S3 model store's
    ClusterStorageContainer (base.storage_container)."""
    volumes = {"volumes": state_volumes()} if model else {}
    serving = spec.serving
    name = predictor_name(stable) if stable_name is None else stable_name
    out: dict[str, Any] = {
        "predictor": {"name": name or None, "minReplicas": serving.minReplicas, "maxReplicas": serving.maxReplicas,
                      "storageContainerName": storage_container(stable.storageUri, store_container),
                      "model": model_spec(stable, spec, revision=revision_name(name), model=model,
                                           state_volume=bool(model), namespace=namespace), **volumes},
        "canary": None,
    }
    if canary is not None:
        cname = predictor_name(canary)
        # KServe refuses maxReplicas on a canary; it sizes the canary from trafficPercent (1..100).
        out["canary"] = [{"trafficPercent": max(1, min(100, canary_percent)),
                          "predictor": {"name": cname, **_storage_container(canary, store_container),
                                        "model": model_spec(canary, spec, revision=cname, model=model,
                                                              state_volume=bool(model), namespace=namespace),
                                        **volumes}}]
    return out


def _storage_container(version: Served, store_container: str) -> dict[str, str]:
    """In a list entry, unlike a merge-patched object, a null is no removal: the key only when set."""
    name = storage_container(version.storageUri, store_container)
    return {"storageContainerName": name} if name else {}


def isvc_writes(seen: Seen, stable: Served, canary: Served | None, percent: int, spec: ModelSpec,
                owner: dict[str, Any], store_container: str = "") -> list[Write]:
    # An InferenceService that already serves this stable version keeps its predictor's name: an
    # unnamed one (written by a Serin before named predictors) is renamed by its next promotion.
    running = ((seen.isvc or {}).get("spec") or {}).get("predictor") or {}
    keep = str(running.get("name") or "") if (running.get("model") or {}).get("storageUri") == stable.storageUri \
        else None
    want = isvc_spec(stable, canary, percent, spec, stable_name=keep, model=seen.name, namespace=seen.namespace,
                     store_container=store_container)
    if seen.isvc is None:
        body = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": isvc_metadata(seen, owner, Mode.STANDARD, {}),
                "spec": {k: v for k, v in want.items() if v is not None}}
        return [Write("isvc", Op.CREATE, seen.name, body)]
    patch = diff(seen.isvc.get("spec") or {}, want)
    return [Write("isvc", Op.PATCH, seen.name, {"spec": patch})] if patch else []


def canary_note(canary: Served | None) -> str | None:
    return predictor_name(canary) if canary is not None else None


def _owned(seen: Seen, owner: dict[str, Any], name: str) -> dict[str, Any]:
    return {"name": name, "namespace": seen.namespace,
            "labels": {"app.kubernetes.io/managed-by": "serin", "serin.dev/model": seen.name},
            "ownerReferences": [owner]}


# -- without a Gateway: the replica ratio ---------------------------------------------------------


class ReplicaRatioRouter:
    traffic = "replicaRatio"

    def __init__(self, store_container: str = "") -> None:
        self.store_container = store_container  # base.storage_container

    @property
    def mode(self) -> Mode:
        return Mode.STANDARD

    def kinds(self) -> tuple[str, ...]:
        return ("deployments", "service")

    def observe(self, seen: Seen) -> ServingObservation:
        url = f"http://{split_service_name(seen.name)}.{seen.namespace}.svc.cluster.local"
        base = ServingObservation(mode=Mode.STANDARD, traffic=self.traffic, url=url)
        if seen.isvc is None:
            return base
        w = _Workloads(seen)
        ready_s, ready_c = _ready_pods(w.stable), _ready_pods(w.canary)
        total = ready_s + ready_c
        canary_share = round(100 * ready_c / total) if total else 0
        canary = None
        if w.canary_entry is not None:
            canary = _variant(w.canary, w.canary_name, canary_share)
        stable = _variant(w.stable, w.stable_name, 100 - canary_share if total else 0)
        target = int(w.canary_entry.get("trafficPercent") or 0) if w.canary_entry is not None else None
        settled = w.settled and seen.service is not None
        return ServingObservation(exists=True, settled=settled, stable=stable, canary=canary, canaryTarget=target,
                                  refused=w.refused(seen.service), not_ready=not_ready(seen.isvc), mode=Mode.STANDARD,
                                  traffic=self.traffic, url=url)

    def plan(self, seen: Seen, desired: ApplyServing, spec: ModelSpec, owner: dict[str, Any]) -> list[Write]:
        # Weight 0 is reached by removing the canary: KServe cannot size it below one replica.
        canary = desired.canary if desired.canary is not None and desired.weight > 0 else None
        writes = isvc_writes(seen, desired.stable, canary, desired.weight, spec, owner, self.store_container)
        note = canary_note(canary)
        name = split_service_name(seen.name)
        if seen.service is None:
            writes.append(Write("service", Op.CREATE, name, split_service(seen, owner, note)))
        else:
            annotations = diff((seen.service.get("metadata") or {}).get("annotations") or {}, {CANARY_ANNOTATION: note})
            if annotations:
                writes.append(Write("service", Op.PATCH, name, {"metadata": {"annotations": annotations}}))
        return writes


def split_service(seen: Seen, owner: dict[str, Any], note: str | None = None) -> dict[str, Any]:
    """Every predictor Pod of the Model, stable and canary: requests divide by their ready Pods."""
    meta = _owned(seen, owner, split_service_name(seen.name))
    if note:
        meta["annotations"] = {CANARY_ANNOTATION: note}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
            "spec": {"selector": {ISVC_LABEL: seen.name, "component": "predictor"},
                     "ports": [{"name": "http", "port": PREDICTOR_PORT, "targetPort": RUNTIME_PORT}]}}


# -- with a Gateway: exact weights ---------------------------------------------------------------

WEIGHT_ANNOTATION = "serin.dev/canary-weight"  # the weight Serin asks for; backendRefs hold what is applied


class GatewayRouter:
    traffic = "gateway"

    def __init__(self, gateway_namespace: str, gateway_name: str, listener: str = "", domain: str = "example.com",
                 metrics: GatewayMetrics | None = None, store_container: str = ""):
        self.gateway_namespace, self.gateway_name = gateway_namespace, gateway_name
        self.listener, self.domain = listener, domain
        # Which implementation's request counters to read (gateway_metrics.py): gatewayErrorRate.
        self.metrics = metrics
        self.store_container = store_container  # base.storage_container

    @property
    def mode(self) -> Mode:
        return Mode.STANDARD

    def kinds(self) -> tuple[str, ...]:
        return ("deployments", "route", "endpointslices")

    def hostname(self, seen: Seen) -> str:
        return model_hostname(seen.name, seen.namespace, self.domain)

    def observe(self, seen: Seen) -> ServingObservation:
        url = f"http://{self.hostname(seen)}"
        if seen.isvc is None:
            return ServingObservation(mode=Mode.STANDARD, traffic=self.traffic, url=url)
        w = _Workloads(seen)
        weights = self._route_weights(seen)
        stable_svc = deployment_name(seen.name, w.stable_name)
        canary_svc = deployment_name(seen.name, w.canary_name) if w.canary_entry is not None else None
        total = sum(weights.values())
        share = {svc: round(100 * wt / total) if total else 0 for svc, wt in weights.items()}
        stable = _variant(w.stable, w.stable_name, share.get(stable_svc, 0))
        canary = _variant(w.canary, w.canary_name, share.get(canary_svc, 0)) if canary_svc else None
        if canary is not None and not has_ready_endpoint(seen.endpoints, canary_svc or ""):
            canary = replace(canary, ready=False)  # not where the Gateway can send its share yet
        asked = _asked_weight(seen.route)
        target = asked if canary_svc is not None else None
        # Applied as asked (the canary holds 0 until it is ready), only the Services of the current
        # predictors, and the Gateway accepted this generation of the route.
        applied = set(weights) <= {stable_svc, canary_svc} and (
            canary is None or not canary.ready or canary.weight == asked)
        settled = w.settled and applied and self._route_accepted(seen.route)
        return ServingObservation(exists=True, settled=settled, stable=stable, canary=canary, canaryTarget=target,
                                  refused=w.refused(seen.route),
                                  not_ready=_route_not_ready(seen.route) or not_ready(seen.isvc),
                                  mode=Mode.STANDARD, traffic=self.traffic, url=url)

    def plan(self, seen: Seen, desired: ApplyServing, spec: ModelSpec, owner: dict[str, Any]) -> list[Write]:
        stable_svc = deployment_name(seen.name, predictor_name(desired.stable))
        w = _Workloads(seen) if seen.isvc is not None else None
        if desired.canary is not None:
            canary_svc = deployment_name(seen.name, predictor_name(desired.canary))
            # The InferenceService first (it makes the canary's Pods), and the canary's share only
            # once they are ready; the entry keeps its replicas while the route holds it at 0.
            writes = isvc_writes(seen, desired.stable, desired.canary, desired.weight or _isvc_percent(w), spec,
                                 owner, self.store_container)
            ready = w is not None and w.canary_name == predictor_name(desired.canary) and _ready_pods(w.canary) > 0 \
                and _rolled_out(w.canary or {}) and has_ready_endpoint(seen.endpoints, canary_svc)
            weight = desired.weight if ready else 0
            return writes + self._route_writes(seen, owner, {stable_svc: 100 - weight, canary_svc: weight},
                                               desired.weight, canary_note(desired.canary))
        # One version. If the InferenceService still runs another predictor as stable or canary,
        # move the route entirely onto the desired one first (while both Services exist), and
        # retarget the InferenceService only once the Gateway has it.
        only = {stable_svc: 100}
        if w is not None and (w.canary_entry is not None or w.stable_name != predictor_name(desired.stable)):
            route_writes = self._route_writes(seen, owner, only, 0)
            if route_writes or not self._route_accepted(seen.route):
                return route_writes
            return isvc_writes(seen, desired.stable, None, 0, spec, owner, self.store_container)
        return (isvc_writes(seen, desired.stable, None, 0, spec, owner, self.store_container)
                + self._route_writes(seen, owner, only, 0))

    # -- the HTTPRoute --

    def route_body(self, seen: Seen, owner: dict[str, Any], weights: dict[str, int], asked: int,
                   note: str | None = None) -> dict[str, Any]:
        parent: dict[str, Any] = {"name": self.gateway_name, "namespace": self.gateway_namespace}
        if self.listener:
            parent["sectionName"] = self.listener
        meta = _owned(seen, owner, route_name(seen.name))
        meta["annotations"] = {WEIGHT_ANNOTATION: str(asked), CANARY_ANNOTATION: note}
        return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": meta,
                "spec": {"parentRefs": [parent], "hostnames": [self.hostname(seen)],
                         "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": prefix}}
                                                for prefix in PUBLIC_PATHS],
                                    "backendRefs": [{"name": svc, "port": PREDICTOR_PORT, "weight": wt}
                                                    for svc, wt in weights.items()]}]}}

    def _route_writes(self, seen: Seen, owner: dict[str, Any], weights: dict[str, int], asked: int,
                      note: str | None = None) -> list[Write]:
        body = self.route_body(seen, owner, weights, asked, note)
        if seen.route is None:
            annotations = body["metadata"]["annotations"]
            body["metadata"]["annotations"] = {k: v for k, v in annotations.items() if v is not None}
            return [Write("httproute", Op.CREATE, route_name(seen.name), body)]
        if covers(seen.route.get("spec"), body["spec"]) and covers(seen.route.get("metadata"),
                                                                  {"annotations": body["metadata"]["annotations"]}):
            return []
        return [Write("httproute", Op.PATCH, route_name(seen.name),
                      {"metadata": {"annotations": body["metadata"]["annotations"]}, "spec": body["spec"]})]

    def _route_weights(self, seen: Seen) -> dict[str, int]:
        rules = ((seen.route or {}).get("spec") or {}).get("rules") or []
        out: dict[str, int] = {}
        for rule in rules[:1]:
            for ref in rule.get("backendRefs") or []:
                out[str(ref.get("name"))] = out.get(str(ref.get("name")), 0) + int(ref.get("weight", 1))
        return out

    def _route_accepted(self, route: dict[str, Any] | None) -> bool:
        """The Gateway accepted the route at its current generation and resolved its backends."""
        if route is None:
            return False
        generation = (route.get("metadata") or {}).get("generation")
        for parent in (route.get("status") or {}).get("parents") or []:
            ref = parent.get("parentRef") or {}
            if ref.get("name") != self.gateway_name or (ref.get("namespace") or route["metadata"].get("namespace")) \
                    != self.gateway_namespace:
                continue
            conds = {c.get("type"): c for c in parent.get("conditions") or []}
            if all(conds.get(t, {}).get("status") == "True" and conds[t].get("observedGeneration") == generation
                   for t in ("Accepted", "ResolvedRefs")):
                return True
        return False


def _route_not_ready(route: dict[str, Any] | None) -> str:
    """What a Gateway said against Serin's route (not Accepted, references unresolved), if it did."""
    for parent in ((route or {}).get("status") or {}).get("parents") or []:
        for cond in parent.get("conditions") or []:
            if cond.get("type") in ("Accepted", "ResolvedRefs") and cond.get("status") == "False":
                return f"HTTPRoute {cond['type']} False: {cond.get('reason', '')} {cond.get('message', '')}".strip()
    return ""


def _asked_weight(route: dict[str, Any] | None) -> int:
    raw = (((route or {}).get("metadata") or {}).get("annotations") or {}).get(WEIGHT_ANNOTATION, "0")
    try:
        return int(raw)
    except ValueError:
        return 0


def _isvc_percent(w: _Workloads | None) -> int:
    """The canary entry's trafficPercent as written (it sizes replicas; kept while the route drains)."""
    if w is None or w.canary_entry is None:
        return 1
    return int(w.canary_entry.get("trafficPercent") or 1)


def canary_replicas(stable_min: int, percent: int) -> tuple[int, int]:
    """KServe v0.20's sizing (pkg/controller/v1beta1/inferenceservice): (stable, canary) replicas."""
    canary = math.ceil(stable_min * percent / 100)
    return max(1, stable_min - canary), canary


__all__ = ["GatewayRouter", "ReplicaRatioRouter", "canary_replicas"]
