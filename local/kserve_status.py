"""The KServe stand-in's core: InferenceService (+ revision readiness) → the next status, pure.

Follows KServe's serverless path:
- pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go,
  createKnativeService: the Knative route spec. With canaryTrafficPercent set and a
  LatestRolledoutRevision known: `latestRevision: true` at the canary percent plus the rolled-out
  revision tagged `prev` at the rest (omitted at 100); otherwise 100 % to the latest revision.
  The `latest` tag only with the annotation serving.kserve.io/enable-tag-routing: "true".
- pkg/apis/serving/v1beta1/inference_service_status.go, PropagateStatus: LatestRolledoutRevision
  moves to the latest ready revision when that revision serves 100 % as `latestRevision`
  (PreviousRolledoutRevision takes the old value); it moves back to PreviousRolledoutRevision
  when the latest ready (= latest created) revision is the rolled-out one and is being given
  < 100 % while its revision still totals 100 % (canaryTrafficPercent: 0 after a promotion).
  Traffic, LatestCreated/LatestReady, the component's Ready/route/configuration conditions and
  observedGeneration are copied from the Knative Service. The Knative Service's generation is
  its own: it moves when the template or the route spec KServe writes changes (the route spec
  also when the rolled-out revision moves), so it parts from the InferenceService's.
- the ingress reconciler (IngressReady False/Unknown "Predictor ingress not created" until the
  predictor is ready; then the top-level url/address) and the LivingConditionSet
  {PredictorReady, IngressReady} behind Ready.

KServe reacts to its own status writes and Knative's, so a change settles over a few
reconciles; `reconcile` iterates to that fixed point so that every written status is settled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serin.local.knative import (
    PENDING,
    READY,
    Conditions,
    Readiness,
    Revision,
    Status,
    Target,
    all_of,
    latest_ready,
    plan_revisions,
    resolve_route,
)

# Where the stand-in keeps its Knative Revisions (Knative would keep them as objects). The
# operator never reads it; everything it reads is KServe-shaped.
STANDIN_KEY = "serinStandin"
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"


@dataclass(frozen=True)
class Endpoints:
    url: str
    address: str
    predictor_url: str

    @staticmethod
    def knative_default(name: str, namespace: str) -> Endpoints:
        """The hosts KServe + Knative publish with the default domain (example.com)."""
        return Endpoints(f"http://{name}.{namespace}.example.com",
                         f"http://{name}.{namespace}.svc.cluster.local",
                         f"http://{name}-predictor.{namespace}.example.com")


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    revisions: list[Revision]
    routes: dict[str, int]  # revision → percent actually served
    live: frozenset[str]  # revisions the data plane must keep running


@dataclass(frozen=True)
class Rollout:
    latest: str = ""
    previous: str = ""


def revisions_in(status: Mapping[str, Any]) -> list[Revision]:
    raw = (status.get(STANDIN_KEY) or {}).get("revisions") or []
    return [Revision.from_json(r) for r in raw]


def ksvc_targets(canary: int | None, rollout: Rollout, tag_latest: bool) -> list[Target]:
    """ksvc_reconciler.go createKnativeService, the RouteSpec part."""
    latest_tag = "latest" if tag_latest else ""
    if canary is not None and rollout.latest:
        targets = [Target(canary, True, tag=latest_tag)]
        if canary < 100:
            targets.append(Target(100 - canary, False, revision=rollout.latest, tag="prev"))
        return targets
    return [Target(100, True, tag=latest_tag)]  # KServe: "blue-green rollout"


def propagate_rollout(rollout: Rollout, traffic: list[dict[str, Any]], ready: str, created: str) -> Rollout:
    """inference_service_status.go PropagateStatus, the rolled-out revision bookkeeping."""
    latest, previous = rollout.latest, rollout.previous
    per_revision: dict[str, int] = {}
    for t in traffic:
        per_revision[t["revisionName"]] = per_revision.get(t["revisionName"], 0) + int(t["percent"])
    for t in traffic:
        if t["revisionName"] != ready or not t["latestRevision"]:
            continue
        if latest != ready:
            if t["percent"] == 100:  # "track the last revision that's fully rolled out"
                previous, latest = latest, ready
        elif ready == created and t["percent"] < 100 and per_revision.get(ready) == 100 and previous:
            latest = previous  # rolled back after a promotion
    return Rollout(latest, previous)


def _config_condition(created: str, state: Readiness) -> Readiness:
    if state.status == "False":
        return Readiness("False", "RevisionFailed",
                         f'Revision "{created}" failed with message: {state.message or state.reason}.')
    return READY if state.ready else Readiness("Unknown", state.reason or "Deploying", state.message)


def _not_ready(component_condition: str, state: Readiness) -> Readiness:
    # PropagateCrossComponentStatus: the aggregate names the component condition that is not ready.
    return READY if state.ready else Readiness(state.status, f"{component_condition} not ready")


def reconcile(isvc: Mapping[str, Any], readiness: Mapping[str, Readiness], now: str,
              endpoints: Endpoints | None = None) -> Outcome:
    meta = isvc.get("metadata") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    old = isvc.get("status") or {}
    old_comp = (old.get("components") or {}).get("predictor") or {}
    endpoints = endpoints or Endpoints.knative_default(name, namespace)

    revisions = plan_revisions(name, predictor, revisions_in(old))
    created = revisions[-1].name
    ready = latest_ready(str(old_comp.get("latestReadyRevision", "")), created, readiness)
    canary = predictor.get("canaryTrafficPercent")
    canary = None if canary is None else int(canary)
    tag_latest = (meta.get("annotations") or {}).get(TAG_ROUTING_ANNOTATION) == "true"
    route_host = f"{name}-predictor.{namespace}.example.com"

    rollout = Rollout(str(old_comp.get("latestRolledoutRevision", "")),
                      str(old_comp.get("previousRolledoutRevision", "")))
    traffic: list[dict[str, Any]] = list(old_comp.get("traffic") or [])
    route_state = READY
    for _ in range(4):  # settles in ≤ 2 rounds; the bound only guards against a loop
        route = resolve_route(ksvc_targets(canary, rollout, tag_latest), ready, readiness, route_host)
        route_state = route.condition
        if route.traffic is not None:
            traffic = route.traffic
        nxt = propagate_rollout(rollout, traffic, ready, created)
        if nxt == rollout:
            break
        rollout = nxt

    ksvc = _ksvc_generation(old.get(STANDIN_KEY) or {}, predictor, ksvc_targets(canary, rollout, tag_latest))
    created_state = readiness.get(created, PENDING)
    config_state = _config_condition(created, created_state)
    ksvc_ready = all_of(config_state, route_state)

    conds = Conditions("Ready", ("PredictorReady", "IngressReady"), now,
                       {c["type"]: c for c in old.get("conditions") or [] if "type" in c})
    conds.set("PredictorConfigurationReady", config_state)
    conds.set("PredictorRouteReady", route_state)
    conds.set("PredictorReady", ksvc_ready)
    conds.set("LatestDeploymentReady", _not_ready("PredictorConfigurationReady", config_state))
    conds.set("RoutesReady", _not_ready("PredictorRouteReady", route_state))
    if ksvc_ready.ready:
        conds.set("IngressReady", READY)
    else:
        # The istio ingress reconciler's createIngress: Unknown while the predictor is Unknown.
        ingress: Status = "Unknown" if ksvc_ready.status == "Unknown" else "False"
        conds.set("IngressReady", Readiness(ingress, "Predictor ingress not created"))
    conditions = conds.to_list()
    isvc_ready = conds.current["Ready"]["status"] == "True"

    comp: dict[str, Any] = {k: v for k, v in old_comp.items() if k in ("url", "address")}
    if ksvc_ready.ready:  # PropagateStatus copies url/address only from a ready Knative Service
        comp["url"] = endpoints.predictor_url
        comp["address"] = {"url": endpoints.predictor_url}
    comp["latestCreatedRevision"] = created
    if traffic:  # omitempty: a route that never resolved has no traffic at all
        comp["traffic"] = traffic
    for key, value in (("latestReadyRevision", ready), ("latestRolledoutRevision", rollout.latest),
                       ("previousRolledoutRevision", rollout.previous)):
        if value:  # omitempty
            comp[key] = value

    status: dict[str, Any] = {
        "observedGeneration": ksvc["generation"],
        "conditions": conditions,
        "components": {"predictor": comp},
        "modelStatus": _model_status(old.get("modelStatus") or {}, created, created_state,
                                     isvc_ready and ready == created),
        "deploymentMode": "Serverless",
        STANDIN_KEY: {"revisions": [r.to_json() for r in revisions], "ksvc": ksvc},
    }
    for key in ("url", "address"):
        if key in old:
            status[key] = old[key]
    if ksvc_ready.ready:
        status["url"] = endpoints.url
        status["address"] = {"url": endpoints.address}

    routes: dict[str, int] = {}
    for t in traffic:
        routes[t["revisionName"]] = routes.get(t["revisionName"], 0) + int(t["percent"])
    live = frozenset({created, *([ready] if ready else []), *routes})
    return Outcome(status, revisions, routes, live)


def _ksvc_generation(standin: Mapping[str, Any], predictor: Mapping[str, Any],
                    targets: list[Target]) -> dict[str, Any]:
    """The Knative Service's metadata.generation (which its observedGeneration matches once
    Knative has seen it): one more each time the spec KServe writes there changes."""
    template = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
    spec = json.dumps({"template": template, "traffic": [vars(t) for t in targets]}, sort_keys=True)
    digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
    old = standin.get("ksvc") or {}
    generation = int(old.get("generation") or 0)
    return {"generation": generation if old.get("spec") == digest else generation + 1, "spec": digest}


def _model_status(old: Mapping[str, Any], created: str, state: Readiness, loaded: bool) -> dict[str, Any]:
    """UpdateModelRevisionStates as PropagateModelStatus drives it in serverless mode."""
    active = str((old.get("states") or {}).get("activeModelState") or "Pending")
    out: dict[str, Any] = {}
    if loaded:
        target, transition, active = "Loaded", "UpToDate", "Loaded"
        out["copies"] = {"failedCopies": 0, "totalCopies": 1}
    elif state.status == "False":
        target, transition = "FailedToLoad", "BlockedByFailedLoad"
        out["lastFailureInfo"] = {"reason": "ModelLoadFailed", "message": state.message or state.reason,
                                  "location": created}
    else:
        target, transition = "Pending", "InProgress"
    if old.get("lastFailureInfo") and "lastFailureInfo" not in out:
        out["lastFailureInfo"] = old["lastFailureInfo"]  # SetModelFailureInfo only ever replaces it
    return {"transitionStatus": transition, "states": {"activeModelState": active, "targetModelState": target},
            **out}
