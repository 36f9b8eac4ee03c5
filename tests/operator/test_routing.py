"""The routers' pure parts: what each writes for a desired state, one safe move at a time, and
how each reads KServe (and its route) back into the neutral observation the decision speaks."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from serin.operator.actions import ApplyServing, Served
from serin.operator.routing import GatewayRouter, KnativeRouter, Mode, ReplicaRatioRouter, Routing, Seen, parse_gateway
from serin.operator.routing.base import Op, Write, covers, diff
from serin.operator.routing.standard import CANARY_ANNOTATION, SOURCE_URI_ANNOTATION, canary_replicas
from serin.operator.spec import parse_spec

SPEC = parse_spec({"source": {"uri": "file:///m.joblib", "sampleUri": "file:///s.csv"},
                   "serving": {"minReplicas": 1, "maxReplicas": 3, "protocol": "v2"}})
OWNER = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "name": "fraud", "uid": "u1", "controller": True}
V1, V2 = Served(1, "pvc://store/ml/fraud/g1"), Served(2, "pvc://store/ml/fraud/g2")


def apply(obj: dict[str, Any] | None, writes: list[Write]) -> dict[str, Any] | None:
    """What the API would store after these writes to one object (merge patch semantics)."""
    def merge(base: Any, patch: Any) -> Any:
        if not isinstance(patch, dict):
            return patch
        out = dict(base) if isinstance(base, dict) else {}
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(out.get(k), v)
        return out
    for w in writes:
        obj = copy.deepcopy(w.body) if w.op == Op.CREATE else merge(obj, w.body)
    return obj


# -- Knative ----------------------------------------------------------------------------------


# The Model's Secrets: the key that signs prediction ids, and (apart) the token a feedback sender must show.
FEEDBACK_ENV = [{"name": "SERIN_FEEDBACK_KEY", "valueFrom": {"secretKeyRef": {
    "name": "fraud-serin-feedback", "key": "key", "optional": True}}},
                {"name": "SERIN_FEEDBACK_TOKEN", "valueFrom": {"secretKeyRef": {
                    "name": "fraud-serin-feedback-sender", "key": "token", "optional": True}}}]


def knative_isvc(storage: str, percent: int | None, generation: int = 3, **status: Any) -> dict[str, Any]:
    pred: dict[str, Any] = {"minReplicas": 1, "maxReplicas": 3, "model": {
        "modelFormat": {"name": "onnx"}, "runtime": "serin-onnx", "storageUri": storage, "protocolVersion": "v2",
        "env": FEEDBACK_ENV,
        "name": "", "resources": {}}}  # the last two: what KServe's defaulting webhook adds
    if percent is not None:
        pred["canaryTrafficPercent"] = percent
    return {"metadata": {"name": "fraud", "namespace": "ml", "generation": generation, "annotations": {}},
            "spec": {"predictor": pred}, "status": {"observedGeneration": generation, **status}}


def traffic(created: str, ready: str, rolled: str, split: dict[str, int]) -> dict[str, Any]:
    return {"components": {"predictor": {
        "latestCreatedRevision": created, "latestReadyRevision": ready, "latestRolledoutRevision": rolled,
        "traffic": [{"revisionName": r, "percent": p} for r, p in split.items()]}}}


def test_knative_creates_the_isvc_with_the_runtime_owner_and_mode() -> None:
    (w,) = KnativeRouter().plan(Seen("ml", "fraud"), ApplyServing(V1), SPEC, OWNER)
    assert (w.kind, w.op) == ("isvc", Op.CREATE)
    pred = w.body["spec"]["predictor"]
    # Every predictor reads the Model's feedback key (runtime/feedback.py) from its Secret.
    assert pred["model"] == {"modelFormat": {"name": "onnx"}, "runtime": "serin-onnx",
                             "storageUri": V1.storageUri, "protocolVersion": "v2", "env": FEEDBACK_ENV}
    assert "volumes" not in pred  # Knative refuses emptyDir unless a feature flag allows it
    assert "canaryTrafficPercent" not in pred and (pred["minReplicas"], pred["maxReplicas"]) == (1, 3)
    assert w.body["metadata"]["ownerReferences"] == [OWNER]
    assert w.body["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


@pytest.mark.parametrize(("have", "desired", "patch"), [
    ((V1.storageUri, None), ApplyServing(V1), None),
    ((V1.storageUri, None), ApplyServing(V1, V2, 10), {"canaryTrafficPercent": 10, "model": {"storageUri": V2.storageUri}}),
    ((V2.storageUri, 10), ApplyServing(V1, V2, 50), {"canaryTrafficPercent": 50}),
    ((V2.storageUri, 50), ApplyServing(V2), {"canaryTrafficPercent": None}),
    ((V2.storageUri, 50), ApplyServing(V1, V2, 0), {"canaryTrafficPercent": 0}),
], ids=["steady-writes-nothing", "start-canary", "next-step", "promote-removes-field", "rollback-zero"])
def test_knative_plan(have: tuple[str, int | None], desired: ApplyServing, patch: dict[str, Any] | None) -> None:
    writes = KnativeRouter().plan(Seen("ml", "fraud", knative_isvc(*have)), desired, SPEC, OWNER)
    assert writes == ([] if patch is None else [Write("isvc", Op.PATCH, "fraud", {"spec": {"predictor": patch}})])


def test_knative_restores_the_stable_model_at_zero_then_removes_the_percent_once_its_revision_is_ready() -> None:
    router, want = KnativeRouter(), ApplyServing(V1, retiring="r2")
    drained = knative_isvc(V2.storageUri, 0, **traffic("r2", "r2", "r1", {"r1": 100, "r2": 0}))
    # Move 1: the stable model at 0 % (a new revision starts while the old stable keeps 100 %).
    (w,) = router.plan(Seen("ml", "fraud", drained), want, SPEC, OWNER)
    assert w.body == {"spec": {"predictor": {"model": {"storageUri": V1.storageUri}}}}
    restoring = apply(drained, [w])
    assert restoring is not None
    # KServe's status still names the canary's revision as the latest: not restored, hold at 0 %.
    assert router.plan(Seen("ml", "fraud", restoring), want, SPEC, OWNER) == []
    # A new revision, not ready yet: hold.
    restoring["status"] = {"observedGeneration": 3, **traffic("r3", "r2", "r1", {"r1": 100})}
    assert router.plan(Seen("ml", "fraud", restoring), want, SPEC, OWNER) == []
    # Ready: move 2, the percent removed (100 % to it).
    restoring["status"] = {"observedGeneration": 3, **traffic("r3", "r3", "r1", {"r1": 100, "r3": 0})}
    (w,) = router.plan(Seen("ml", "fraud", restoring), want, SPEC, OWNER)
    assert w.body == {"spec": {"predictor": {"canaryTrafficPercent": None}}}


def test_knative_observe() -> None:
    isvc = knative_isvc(V2.storageUri, 10, **traffic("fraud-predictor-00002", "fraud-predictor-00002",
                                                     "fraud-predictor-00001",
                                                     {"fraud-predictor-00002": 10, "fraud-predictor-00001": 90}))
    obs = KnativeRouter().observe(Seen("ml", "fraud", isvc))
    assert obs.settled and obs.canaryTarget == 10 and obs.mode == Mode.KNATIVE
    assert obs.canary is not None and (obs.canary.revision, obs.canary.weight) == ("fraud-predictor-00002", 10)
    assert obs.stable is not None and (obs.stable.revision, obs.stable.weight) == ("fraud-predictor-00001", 90)
    assert obs.serves_canary(V2.storageUri, 10) and not obs.serves_canary(V2.storageUri, 50)
    assert not KnativeRouter().observe(Seen("ml", "fraud")).exists


def test_knative_observation_does_not_compare_generations_of_two_objects() -> None:
    """KServe copies status.observedGeneration from the Knative Service (PropagateStatus), whose
    generation is its own: a KServe config change rewrites it alone, so it can run ahead of the
    InferenceService's (or behind, after an edit that changes nothing there) and stay so."""
    split = {"fraud-predictor-00002": 10, "fraud-predictor-00001": 90}
    for ksvc_generation in (2, 7):
        isvc = knative_isvc(V2.storageUri, 10, generation=5, **traffic(
            "fraud-predictor-00002", "fraud-predictor-00002", "fraud-predictor-00001", split))
        isvc["status"]["observedGeneration"] = ksvc_generation
        assert KnativeRouter().observe(Seen("ml", "fraud", isvc)).serves_canary(V2.storageUri, 10)
        done = knative_isvc(V2.storageUri, None, generation=5, **traffic(
            "fraud-predictor-00002", "fraud-predictor-00002", "fraud-predictor-00002", {"fraud-predictor-00002": 100}))
        done["status"]["observedGeneration"] = ksvc_generation
        assert KnativeRouter().observe(Seen("ml", "fraud", done)).serves_only(V2.storageUri)


@pytest.mark.parametrize("percent", [10, 100])
def test_knative_status_not_caught_up_with_a_new_canary_is_not_read_as_serving_it(percent: int) -> None:
    """Just after the canary's storageUri is written the status still shows the stable revision as
    the newest, ready, at 100 %: that revision is not the canary, at any weight."""
    stale = knative_isvc(V2.storageUri, percent, **traffic(
        "fraud-predictor-00001", "fraud-predictor-00001", "fraud-predictor-00001", {"fraud-predictor-00001": 100}))
    obs = KnativeRouter().observe(Seen("ml", "fraud", stale))
    assert not obs.serves_canary(V2.storageUri, percent) and not obs.settled


# -- Standard mode ----------------------------------------------------------------------------


def deployment(name: str, storage: str, ready: int = 1, replicas: int = 1, rolled_out: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": f"fraud-{name}-predictor", "generation": 2},
            "spec": {"replicas": replicas, "template": {"metadata": {"annotations": {SOURCE_URI_ANNOTATION: storage}}}},
            "status": {"observedGeneration": 2 if rolled_out else 1, "replicas": replicas,
                       "updatedReplicas": replicas if rolled_out else 0, "availableReplicas": ready,
                       "readyReplicas": ready}}


SPLIT_SVC = {"metadata": {"name": "fraud-serin"}}


def endpoint_slice(service: str, *ready: bool | None) -> dict[str, Any]:
    """The EndpointSlice of `service`, one endpoint per entry of `ready` (None: the field absent)."""
    return {"metadata": {"name": f"{service}-x7k2p", "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"conditions": {} if r is None else {"ready": r}} for r in ready]}


def standard(router: Any, isvc: dict[str, Any] | None, *deps: dict[str, Any], route: dict[str, Any] | None = None,
             service: dict[str, Any] | None = SPLIT_SVC, endpoints: tuple[dict[str, Any], ...] | None = None) -> Seen:
    """What a router reads; by default every ready Pod is published in its Service's EndpointSlice
    (a predictor's Service is named as its Deployment)."""
    if endpoints is None:
        endpoints = tuple(endpoint_slice(d["metadata"]["name"], *[True] * d["status"]["readyReplicas"]) for d in deps)
    return Seen("ml", "fraud", isvc, tuple(deps), service, route, endpoints=endpoints)


def written(router: Any, seen: Seen, desired: ApplyServing) -> dict[str, Any]:
    """The InferenceService after the router's writes (and KServe's defaulting of model.name)."""
    isvc = apply(seen.isvc, [w for w in router.plan(seen, desired, SPEC, OWNER) if w.kind == "isvc"])
    assert isvc is not None
    return isvc


def test_standard_names_every_version_and_labels_its_metrics() -> None:
    router = ReplicaRatioRouter()
    writes = router.plan(Seen("ml", "fraud"), ApplyServing(V1), SPEC, OWNER)
    assert [(w.kind, w.op) for w in writes] == [("isvc", Op.CREATE), ("service", Op.CREATE)]
    isvc, svc = writes[0].body, writes[1].body
    assert svc["spec"]["selector"] == {"serving.kserve.io/inferenceservice": "fraud", "component": "predictor"}
    assert svc["metadata"]["ownerReferences"] == [OWNER]
    pred = isvc["spec"]["predictor"]
    assert pred["name"] == "gen1" and pred["model"]["env"] == [{"name": "SERIN_REVISION", "value": "gen1"}, *FEEDBACK_ENV]
    # Standard mode: the state volume keeps the ids that got their truth over container restarts.
    assert pred["volumes"] == [{"name": "serin-state", "emptyDir": {"sizeLimit": "256Mi"}}]
    assert pred["model"]["volumeMounts"] == [{"name": "serin-state", "mountPath": "/var/lib/serin"}]
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "Standard"}
    assert "canary" not in isvc["spec"]


def test_standard_canary_is_a_named_predictor_without_max_replicas() -> None:
    router = ReplicaRatioRouter()
    stable = written(router, Seen("ml", "fraud"), ApplyServing(V1))
    isvc = written(router, standard(router, stable, deployment("gen1", V1.storageUri)), ApplyServing(V1, V2, 10))
    (entry,) = isvc["spec"]["canary"]
    assert entry["trafficPercent"] == 10 and entry["predictor"]["name"] == "gen2"
    assert "maxReplicas" not in entry["predictor"] and "minReplicas" not in entry["predictor"]
    assert entry["predictor"]["model"]["storageUri"] == V2.storageUri
    # The note of the canary written is on Serin's Service: KServe copies the InferenceService's
    # annotations onto Pod templates, and one there would restart the stable.
    assert CANARY_ANNOTATION not in isvc["metadata"].get("annotations", {})
    (note,) = [w for w in router.plan(standard(router, stable, deployment("gen1", V1.storageUri)),
                                      ApplyServing(V1, V2, 10), SPEC, OWNER) if w.kind == "service"]
    assert note.body == {"metadata": {"annotations": {CANARY_ANNOTATION: "gen2"}}}


def test_standard_steady_state_writes_nothing_despite_kserve_defaults() -> None:
    router = ReplicaRatioRouter()
    isvc = written(router, Seen("ml", "fraud"), ApplyServing(V1))
    isvc = written(router, standard(router, isvc), ApplyServing(V1, V2, 10))
    isvc["spec"]["predictor"]["model"]["name"] = ""  # KServe's defaulting webhook
    isvc["spec"]["canary"][0]["predictor"]["model"].update(name="", resources={})
    noted = {"metadata": {"name": "fraud-serin", "annotations": {CANARY_ANNOTATION: "gen2"}}}
    assert router.plan(standard(router, isvc, service=noted), ApplyServing(V1, V2, 10), SPEC, OWNER) == []


def test_replica_ratio_reports_the_weight_achieved() -> None:
    router = ReplicaRatioRouter()
    isvc = written(router, Seen("ml", "fraud"), ApplyServing(V1))
    isvc = written(router, standard(router, isvc), ApplyServing(V1, V2, 10))
    obs = router.observe(standard(router, isvc, deployment("gen1", V1.storageUri), deployment("gen2", V2.storageUri)))
    assert obs.settled and obs.canaryTarget == 10 and obs.traffic == "replicaRatio"
    assert obs.canary is not None and (obs.canary.weight, obs.canary.revision) == (50, "gen2")
    assert obs.serves_canary(V2.storageUri, 10)
    obs = router.observe(standard(router, isvc, deployment("gen1", V1.storageUri, ready=3, replicas=3),
                                  deployment("gen2", V2.storageUri)))
    assert obs.canary is not None and obs.canary.weight == 25
    assert obs.url == "http://fraud-serin.ml.svc.cluster.local"


@pytest.mark.parametrize("case", ["canary-not-rolled-out", "canary-serves-other-model", "old-pods-still-ready",
                                  "no-split-service"])
def test_replica_ratio_is_not_settled_until_kserve_made_what_was_written(case: str) -> None:
    router = ReplicaRatioRouter()
    isvc = written(router, Seen("ml", "fraud"), ApplyServing(V1))
    isvc = written(router, standard(router, isvc), ApplyServing(V1, V2, 10))
    deps = [deployment("gen1", V1.storageUri), deployment("gen2", V2.storageUri)]
    service: dict[str, Any] | None = SPLIT_SVC
    if case == "canary-not-rolled-out":
        deps[1] = deployment("gen2", V2.storageUri, ready=0, rolled_out=False)
    elif case == "canary-serves-other-model":
        deps[1] = deployment("gen2", "pvc://store/ml/fraud/other")
    elif case == "old-pods-still-ready":
        deps.append(deployment("gen0", "pvc://old"))
    else:
        service = None
    assert not router.observe(standard(router, isvc, *deps, service=service)).settled


def test_replica_ratio_reaches_zero_by_removing_the_canary_then_promotes_by_retargeting() -> None:
    router = ReplicaRatioRouter()
    isvc = written(router, Seen("ml", "fraud"), ApplyServing(V1))
    canary = written(router, standard(router, isvc), ApplyServing(V1, V2, 10))
    drained = written(router, standard(router, canary), ApplyServing(V1, V2, 0))
    assert "canary" not in drained["spec"]
    obs = router.observe(standard(router, drained, deployment("gen1", V1.storageUri)))
    assert obs.canary_drained(V2.storageUri) and obs.serves_only(V1.storageUri)
    promoted = written(router, standard(router, canary), ApplyServing(V2))
    assert promoted["spec"]["predictor"]["name"] == "gen2" and "canary" not in promoted["spec"]
    assert promoted["spec"]["predictor"]["model"] == canary["spec"]["canary"][0]["predictor"]["model"]  # no restart
    assert (promoted["spec"]["predictor"]["minReplicas"], promoted["spec"]["predictor"]["maxReplicas"]) == (1, 3)


def test_standard_refuses_when_kserve_drops_spec_canary() -> None:
    router = ReplicaRatioRouter()
    isvc = written(router, Seen("ml", "fraud"), ApplyServing(V1))
    isvc = written(router, standard(router, isvc), ApplyServing(V1, V2, 10))
    del isvc["spec"]["canary"]  # what an InferenceService CRD without the field stores
    noted = {"metadata": {"name": "fraud-serin", "annotations": {CANARY_ANNOTATION: "gen2"}}}
    obs = router.observe(standard(router, isvc, deployment("gen1", V1.storageUri), service=noted))
    assert "KServe before v0.20" in obs.refused
    assert router.observe(standard(router, isvc, deployment("gen1", V1.storageUri))).refused == ""


def test_kserve_canary_sizing_is_coarse_at_low_replica_counts() -> None:
    assert canary_replicas(1, 10) == (1, 1)  # 50 %: why the weight achieved is reported
    assert canary_replicas(10, 10) == (9, 1)
    assert canary_replicas(4, 20) == (3, 1)


# -- Gateway ----------------------------------------------------------------------------------

GW = GatewayRouter("gateways", "serin", "web", "models.example")


def accepted(route: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    route = copy.deepcopy(route)
    route["metadata"]["generation"] = generation
    conds = [{"type": t, "status": "True", "observedGeneration": generation} for t in ("Accepted", "ResolvedRefs")]
    route["status"] = {"parents": [{"parentRef": {"name": "serin", "namespace": "gateways"}, "conditions": conds}]}
    return route


def route_of(seen: Seen, desired: ApplyServing) -> dict[str, Any] | None:
    return apply(seen.route, [w for w in GW.plan(seen, desired, SPEC, OWNER) if w.kind == "httproute"])


def backends(route: dict[str, Any] | None) -> dict[str, int]:
    assert route is not None
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}


DNS_LABEL = st.from_regex(r"\A[a-z]([-a-z0-9]{0,10}[a-z0-9])?\Z")


def test_kserves_hostname_form_would_give_two_tenants_one_hostname_and_serins_does_not() -> None:
    # KServe's default template {model}-{namespace}: Model "a-b" of namespace "c" and Model "a" of
    # namespace "b-c" are both "a-b-c"; whichever route came first takes the other's traffic.
    assert GW.hostname(Seen("c", "a-b")) != GW.hostname(Seen("b-c", "a"))
    assert GW.hostname(Seen("c", "a-b")) == "a-b.c.models.example"


@given(DNS_LABEL, DNS_LABEL, DNS_LABEL, DNS_LABEL)
def test_two_models_share_a_hostname_only_if_they_are_one_model(ns1: str, m1: str, ns2: str, m2: str) -> None:
    assert (GW.hostname(Seen(ns1, m1)) == GW.hostname(Seen(ns2, m2))) == ((ns1, m1) == (ns2, m2))


def test_gateway_route_is_exact_and_gives_the_canary_weight_only_once_it_is_ready() -> None:
    isvc = written(GW, Seen("ml", "fraud"), ApplyServing(V1))
    route = route_of(Seen("ml", "fraud"), ApplyServing(V1))
    assert route is not None and route["spec"]["hostnames"] == ["fraud.ml.models.example"]
    assert route["spec"]["parentRefs"] == [{"name": "serin", "namespace": "gateways", "sectionName": "web"}]
    assert backends(route) == {"fraud-gen1-predictor": 100}
    desired = ApplyServing(V1, V2, 10)
    seen = standard(GW, isvc, deployment("gen1", V1.storageUri), route=accepted(route))
    isvc = written(GW, seen, desired)
    route = route_of(seen, desired)
    assert backends(route) == {"fraud-gen1-predictor": 100, "fraud-gen2-predictor": 0}  # no Pods yet: 503s
    pending = standard(GW, isvc, deployment("gen1", V1.storageUri), deployment("gen2", V2.storageUri, 0, rolled_out=False),
                       route=accepted(route or {}, 2))
    assert not GW.observe(pending).serves_canary(V2.storageUri, 10)
    ready = standard(GW, isvc, deployment("gen1", V1.storageUri), deployment("gen2", V2.storageUri),
                     route=accepted(route or {}, 2))
    route = route_of(ready, desired)
    assert backends(route) == {"fraud-gen1-predictor": 90, "fraud-gen2-predictor": 10}
    obs = GW.observe(standard(GW, isvc, *ready.deployments, route=accepted(route or {}, 3)))
    assert obs.serves_canary(V2.storageUri, 10) and obs.canary is not None and obs.canary.weight == 10
    assert obs.traffic == "gateway" and obs.url == "http://fraud.ml.models.example"
    # Written but not yet accepted by the Gateway at this generation: not settled.
    assert not GW.observe(standard(GW, isvc, *ready.deployments, route=accepted(route or {}, 2) | {
        "metadata": {**(route or {})["metadata"], "generation": 3}})).settled


@pytest.mark.parametrize("published", [(), (False,), (False, False)], ids=["no-slice", "not-ready", "none-ready"])
def test_gateway_gives_the_canary_weight_only_once_its_endpoints_are_published(published: tuple[bool, ...]) -> None:
    # The Deployment says ready before the EndpointSlice controller publishes the Pod: a weight
    # given then is a moment of 503s for the canary's share (seen on Traefik in the cluster tier).
    isvc = written(GW, Seen("ml", "fraud"), ApplyServing(V1))
    desired = ApplyServing(V1, V2, 10)
    route = accepted(GW.route_body(Seen("ml", "fraud"), OWNER, {"fraud-gen1-predictor": 100}, 0))
    isvc = written(GW, standard(GW, isvc, deployment("gen1", V1.storageUri), route=route), desired)
    deps = (deployment("gen1", V1.storageUri), deployment("gen2", V2.storageUri))
    unpublished = (endpoint_slice("fraud-gen1-predictor", True),) + (
        (endpoint_slice("fraud-gen2-predictor", *published),) if published else ())
    seen = standard(GW, isvc, *deps, route=route, endpoints=unpublished)
    held = route_of(seen, desired)
    assert backends(held) == {"fraud-gen1-predictor": 100, "fraud-gen2-predictor": 0}
    obs = GW.observe(standard(GW, isvc, *deps, route=accepted(held or {}, 2), endpoints=unpublished))
    assert obs.canary is not None and not obs.canary.ready and not obs.serves_canary(V2.storageUri, 10)
    # Published (one ready endpoint is enough; a missing `ready` means ready): the weight follows.
    for now in ((True,), (False, True), (None,)):
        slices = (endpoint_slice("fraud-gen1-predictor", True), endpoint_slice("fraud-gen2-predictor", *now))
        assert backends(route_of(standard(GW, isvc, *deps, route=accepted(held or {}, 2), endpoints=slices),
                                 desired)) == {"fraud-gen1-predictor": 90, "fraud-gen2-predictor": 10}
    # Another Service's endpoints are not the canary's.
    other = (endpoint_slice("fraud-gen1-predictor", True), endpoint_slice("other-gen2-predictor", True))
    assert backends(route_of(standard(GW, isvc, *deps, route=accepted(held or {}, 2), endpoints=other),
                             desired))["fraud-gen2-predictor"] == 0


def test_gateway_promotion_moves_the_route_before_kserve_deletes_the_old_service() -> None:
    isvc = written(GW, Seen("ml", "fraud"), ApplyServing(V1))
    isvc = written(GW, standard(GW, isvc), ApplyServing(V1, V2, 50))
    deps = (deployment("gen1", V1.storageUri), deployment("gen2", V2.storageUri))
    route = GW.route_body(Seen("ml", "fraud"), OWNER, {"fraud-gen1-predictor": 50, "fraud-gen2-predictor": 50}, 50)
    seen = standard(GW, isvc, *deps, route=accepted(route))
    writes = GW.plan(seen, ApplyServing(V2), SPEC, OWNER)
    assert [w.kind for w in writes] == ["httproute"]  # the InferenceService waits
    moved = apply(route, writes)
    assert backends(moved) == {"fraud-gen2-predictor": 100}
    writes = GW.plan(standard(GW, isvc, *deps, route=accepted(moved or {}, 2)), ApplyServing(V2), SPEC, OWNER)
    assert [w.kind for w in writes] == ["isvc"]
    assert apply(isvc, writes)["spec"]["predictor"]["name"] == "gen2"  # type: ignore[index]


def test_gateway_rollback_holds_the_canary_at_zero_then_removes_it() -> None:
    isvc = written(GW, Seen("ml", "fraud"), ApplyServing(V1))
    isvc = written(GW, standard(GW, isvc), ApplyServing(V1, V2, 50))
    deps = (deployment("gen1", V1.storageUri), deployment("gen2", V2.storageUri))
    route = accepted(GW.route_body(Seen("ml", "fraud"), OWNER,
                                   {"fraud-gen1-predictor": 50, "fraud-gen2-predictor": 50}, 50))
    seen = standard(GW, isvc, *deps, route=route)
    assert written(GW, seen, ApplyServing(V1, V2, 0))["spec"]["canary"] == isvc["spec"]["canary"]  # replicas kept
    zero = route_of(seen, ApplyServing(V1, V2, 0))
    assert backends(zero) == {"fraud-gen1-predictor": 100, "fraud-gen2-predictor": 0}
    assert GW.observe(standard(GW, isvc, *deps, route=accepted(zero or {}, 2))).canary_drained(V2.storageUri)


@pytest.mark.parametrize(("value", "ok"), [("gw/serin", True), ("gw/serin/web", True), ("", True),
                                           ("serin", False), ("gw//web", False), ("a/b/c/d", False)])
def test_parse_gateway(value: str, ok: bool) -> None:
    if ok:
        gw = parse_gateway(value)
        assert (gw is None) == (value == "")
    else:
        with pytest.raises(ValueError, match="NAMESPACE/NAME"):
            parse_gateway(value)


def test_mode_comes_from_the_running_isvc_then_the_spec_then_kserve() -> None:
    routing = Routing(default_mode=Mode.STANDARD)
    standard_spec = parse_spec({"source": {"uri": "u", "sampleUri": "s"}, "serving": {"deploymentMode": "Knative"}})
    assert isinstance(routing.router_for(SPEC, None), ReplicaRatioRouter)
    assert isinstance(routing.router_for(standard_spec, None), KnativeRouter)
    running = {"metadata": {"annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"}}}
    assert isinstance(routing.router_for(standard_spec, running), ReplicaRatioRouter)
    obs = routing.observe(routing.router_for(standard_spec, running), standard_spec, Seen("ml", "fraud", running))
    assert "KServe cannot change the mode" in obs.refused
    assert isinstance(Routing(Mode.STANDARD, GW).router_for(SPEC, None), GatewayRouter)


def test_covers_and_diff() -> None:
    assert covers({"a": 1, "b": [{"x": 1, "extra": ""}]}, {"b": [{"x": 1}]})
    assert not covers({"b": [{"x": 1}, {"x": 2}]}, {"b": [{"x": 1}]})
    assert diff({"a": 1, "c": 2}, {"a": 1, "c": None, "d": {"e": 1}}) == {"c": None, "d": {"e": 1}}
    assert diff({"a": 1}, {"b": None}) == {}
    assert json.dumps(diff({"m": {"x": 1, "y": 2}}, {"m": {"x": 1, "y": 3}})) == '{"m": {"y": 3}}'


def test_an_unnamed_stable_from_an_older_serin_keeps_its_deployment_until_its_next_promotion() -> None:
    router = ReplicaRatioRouter()
    legacy = written(router, Seen("ml", "fraud"), ApplyServing(V1))
    del legacy["spec"]["predictor"]["name"]  # an InferenceService before named predictors
    legacy["spec"]["predictor"]["model"].pop("env")
    isvc = written(router, standard(router, legacy), ApplyServing(V1, V2, 10))
    assert "name" not in isvc["spec"]["predictor"]  # renaming would replace its Deployment
    assert isvc["spec"]["predictor"]["model"]["env"] == [{"name": "SERIN_REVISION", "value": "predictor"}, *FEEDBACK_ENV]
    assert isvc["spec"]["canary"][0]["predictor"]["name"] == "gen2"
    obs = router.observe(standard(router, isvc, {**deployment("", V1.storageUri), "metadata": {
        "name": "fraud-predictor", "generation": 2}}, deployment("gen2", V2.storageUri)))
    assert obs.stable is not None and obs.stable.revision == "predictor" and obs.settled
    promoted = written(router, standard(router, isvc), ApplyServing(V2))
    assert promoted["spec"]["predictor"]["name"] == "gen2"


def test_every_router_passes_on_why_kserve_or_the_gateway_is_not_there_yet() -> None:
    """What a progressDeadline report quotes: KServe's Ready condition, or the Gateway's refusal."""
    failing = {"type": "Ready", "status": "False", "reason": "RevisionFailed",
               "message": 'Revision "fraud-predictor-00002" failed with message: Back-off pulling image.'}
    isvc = knative_isvc(V2.storageUri, 10, **traffic("fraud-predictor-00002", "", "fraud-predictor-00001",
                                                     {"fraud-predictor-00001": 100}))
    isvc["status"]["conditions"] = [{"type": "PredictorReady", "status": "True"}, failing]
    assert KnativeRouter().observe(Seen("ml", "fraud", isvc)).not_ready == f"RevisionFailed: {failing['message']}"
    isvc["status"]["conditions"] = [failing | {"status": "True"}]
    assert KnativeRouter().observe(Seen("ml", "fraud", isvc)).not_ready == ""

    std = written(GW, Seen("ml", "fraud"), ApplyServing(V1))
    std["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "MinimumReplicasUnavailable",
                                     "message": "Deployment does not have minimum availability."}]}
    dep = deployment("gen1", V1.storageUri, ready=0)
    assert ReplicaRatioRouter().observe(standard(ReplicaRatioRouter(), std, dep)).not_ready.startswith(
        "MinimumReplicasUnavailable: Deployment does not have")
    route = accepted(route_of(Seen("ml", "fraud"), ApplyServing(V1)) or {})
    route["status"]["parents"][0]["conditions"][1] = {
        "type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "message": "service ml/x not found"}
    assert GW.observe(standard(GW, std, dep, route=route)).not_ready == \
        "HTTPRoute ResolvedRefs False: BackendNotFound service ml/x not found"


@pytest.mark.parametrize(("owners", "foreign"), [
    ([OWNER], False),
    ([], True),
    ([OWNER | {"uid": "u0"}], True),  # a Model of the same name, deleted: its garbage collection pending
    ([{"apiVersion": "v1", "kind": "ConfigMap", "name": "fraud", "uid": "u1"}], True),
], ids=["this-models", "made-by-hand", "an-earlier-model-of-that-name", "owned-by-something-else"])
def test_an_inferenceservice_not_this_models_is_refused_never_written(owners: list[dict[str, Any]],
                                                                       foreign: bool) -> None:
    """Issue 32 #10: an InferenceService that happens to bear the Model's name is not taken over:
    the observation refuses it, naming its owners, and the reconcile writes nothing to it."""
    isvc = knative_isvc(V1.storageUri, None)
    isvc["metadata"]["ownerReferences"] = owners
    seen = Seen("ml", "fraud", isvc, uid="u1")
    obs = Routing(default_mode=Mode.KNATIVE).observe(KnativeRouter(), SPEC, seen)
    if foreign:
        assert "is not this Model's" in seen.foreign() and obs.refused == seen.foreign()
        assert "delete it, or name the Model otherwise" in obs.refused
    else:
        assert seen.foreign() == "" and obs.refused == ""
    assert Seen("ml", "fraud", uid="u1").foreign() == ""  # nothing there yet: Serin creates it


def test_every_predictor_is_told_the_digest_of_the_model_it_serves() -> None:
    """Issue 32 #1: the runtime serves model.onnx only with the digest its conversion recorded; each
    version's predictor carries its own (Standard: stable and canary; Knative: the storage it runs)."""
    stable, canary = Served(1, V1.storageUri, "1" * 64), Served(2, V2.storageUri, "2" * 64)

    def digests(model: dict[str, Any]) -> list[str]:
        return [e["value"] for e in model.get("env", []) if e["name"] == "SERIN_MODEL_SHA256"]

    isvc = ReplicaRatioRouter().plan(Seen("ml", "fraud"), ApplyServing(stable, canary, 10), SPEC, OWNER)[0].body
    assert digests(isvc["spec"]["predictor"]["model"]) == ["1" * 64]
    assert digests(isvc["spec"]["canary"][0]["predictor"]["model"]) == ["2" * 64]
    (w,) = KnativeRouter().plan(Seen("ml", "fraud", isvc=knative_isvc(V1.storageUri, None)),
                                ApplyServing(stable, canary, 10), SPEC, OWNER)
    assert w.body["spec"]["predictor"]["model"]["storageUri"] == V2.storageUri
    assert digests(w.body["spec"]["predictor"]["model"]) == ["2" * 64]
    # a version converted before digests were recorded is served unchecked, as before
    (w,) = KnativeRouter().plan(Seen("ml", "fraud"), ApplyServing(V1), SPEC, OWNER)
    assert digests(w.body["spec"]["predictor"]["model"]) == []


def test_the_route_publishes_the_protocols_and_not_the_pods_metrics() -> None:
    """Issue 32 #5: /v1 and /v2 (inference, health, feedback) through the Gateway; /metrics is for
    the Prometheus that scrapes Pods, not for the Gateway's clients."""
    route = GW.route_body(Seen("ml", "fraud"), OWNER, {"fraud-gen1-predictor": 100}, 0)
    [rule] = route["spec"]["rules"]
    assert [m["path"] for m in rule["matches"]] == [{"type": "PathPrefix", "value": "/v1"},
                                                    {"type": "PathPrefix", "value": "/v2"}]


def crashed_pod(labels: dict[str, str], restarts: int) -> dict[str, Any]:
    return {"metadata": {"name": f"p-{restarts}", "labels": {"serving.kserve.io/inferenceservice": "fraud", **labels}},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "kserve-container", "ready": True, "restartCount": restarts,
                "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137,
                                             "finishedAt": "2026-12-06T00:00:00Z"}}}]}}


def test_the_canarys_deaths_are_counted_on_its_own_pods_in_standard_mode() -> None:
    """Issue 32 #8: the canary predictor Deployment's Pods (by its selector), not the stable's."""
    isvc = written(GW, Seen("ml", "fraud"), ApplyServing(V1))
    isvc = written(GW, standard(GW, isvc), ApplyServing(V1, V2, 50))
    deps = []
    for name, storage in (("gen1", V1.storageUri), ("gen2", V2.storageUri)):
        dep = deployment(name, storage)
        dep["spec"]["selector"] = {"matchLabels": {"app": f"isvc.fraud-{name}-predictor"}}
        deps.append(dep)
    pods = (crashed_pod({"app": "isvc.fraud-gen1-predictor"}, 5), crashed_pod({"app": "isvc.fraud-gen2-predictor"}, 2))
    seen = Seen("ml", "fraud", isvc, tuple(deps), SPLIT_SVC, None, pods, uid="")
    obs = Routing().observe(ReplicaRatioRouter(), SPEC, seen)
    assert obs.canary is not None and obs.canary_crashes is not None
    assert obs.canary_crashes.count == 2 and "OOMKilled (exit 137)" in obs.canary_crashes.last
    only_stable = Routing().observe(ReplicaRatioRouter(), SPEC, Seen("ml", "fraud", isvc, tuple(deps), SPLIT_SVC,
                                                                       None, pods[:1]))
    assert only_stable.canary_crashes is None, "the stable's restarts are not the canary's"


def test_the_canarys_deaths_are_counted_on_its_revision_in_knative_mode() -> None:
    isvc = knative_isvc(V2.storageUri, 10, **traffic("fraud-predictor-00002", "fraud-predictor-00002",
                                                    "fraud-predictor-00001",
                                                    {"fraud-predictor-00001": 90, "fraud-predictor-00002": 10}))
    pods = (crashed_pod({"serving.knative.dev/revision": "fraud-predictor-00001"}, 4),
            crashed_pod({"serving.knative.dev/revision": "fraud-predictor-00002"}, 1))
    obs = Routing().observe(KnativeRouter(), SPEC, Seen("ml", "fraud", isvc, pods=pods))
    assert obs.canary is not None and obs.canary.revision == "fraud-predictor-00002"
    assert obs.canary_crashes is not None and obs.canary_crashes.count == 1


# -- Payload capture (issue 34 #4) ----------------------------------------------------------------

CAPTURE_SPEC = parse_spec({
    "source": {"uri": "file:///m.joblib", "sampleUri": "file:///s.csv"},
    "serving": {"capture": {"share": 0.1, "uri": "s3://team-a/capture", "retention": "48h",
                            "s3": {"endpoint": "http://s3.storage:7070", "secretName": "team-a-capture"}}}})


def _env(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in model["env"]}


@pytest.mark.parametrize("router", [KnativeRouter(), ReplicaRatioRouter()], ids=["knative", "standard"])
def test_capture_reaches_every_predictor_with_its_settings_and_its_secrets_keys(router: Routing) -> None:
    writes = router.plan(Seen("team-a", "fraud"), ApplyServing(V1, V2, 10), CAPTURE_SPEC, OWNER)
    isvc = next(w.body for w in writes if w.kind == "isvc")
    predictors = [isvc["spec"]["predictor"], *(c["predictor"] for c in isvc["spec"].get("canary") or [])]
    for predictor in predictors:
        env = _env(predictor["model"])
        # The records' prefix names the Model's namespace; the settings are the runtime's JSON.
        assert json.loads(env["SERIN_CAPTURE"]["value"]) == {
            "share": 0.1, "uri": "s3://team-a/capture", "namespace": "team-a", "retentionSeconds": 172800.0,
            "flushSeconds": 30.0,
            "s3": {"endpoint": "http://s3.storage:7070", "verifyTls": True}}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
            "secretKeyRef": {"name": "team-a-capture", "key": "AWS_ACCESS_KEY_ID"}}
        assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_without_capture_the_predictor_has_no_capture_variable_and_no_key() -> None:
    writes = ReplicaRatioRouter().plan(Seen("ml", "fraud"), ApplyServing(V1), SPEC, OWNER)
    env = _env(writes[0].body["spec"]["predictor"]["model"])
    assert not {"SERIN_CAPTURE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)


# -- The S3 model store (issue 34 #3) ---------------------------------------------------------------

S3_V1, S3_V2 = Served(1, "s3://serin-models/versions/ml/fraud-g1-aaaaaaaa"), \
    Served(2, "s3://serin-models/versions/ml/fraud-g2-bbbbbbbb")


def _containers(isvc: dict[str, Any]) -> list[str | None]:
    return [p.get("storageContainerName") for p in
            (isvc["spec"]["predictor"], *(c["predictor"] for c in isvc["spec"].get("canary") or []))]


@pytest.mark.parametrize("router", [ReplicaRatioRouter("serin-model-store"),
                                    GatewayRouter("gw", "serin", "http", store_container="serin-model-store")],
                         ids=["replica-ratio", "gateway"])
def test_every_predictor_of_an_s3_version_names_serins_storage_container(router: Any) -> None:
    """KServe picks a storage initializer by URI unless told: its `default` one matches every s3://
    URI and falls back to the node's identity. Each S3 version's predictor names Serin's; a claim's
    version (KServe mounts it) names none, also beside an S3 one while the store moves."""
    isvc = written(router, Seen("ml", "fraud"), ApplyServing(S3_V1))
    assert _containers(isvc) == ["serin-model-store"]
    isvc = written(router, standard(router, isvc), ApplyServing(S3_V1, S3_V2, 10))
    assert _containers(isvc) == ["serin-model-store", "serin-model-store"]
    mixed = written(router, Seen("ml", "fraud"), ApplyServing(V1, S3_V2, 10))
    assert _containers(mixed) == [None, "serin-model-store"]
    if isinstance(router, ReplicaRatioRouter):  # (the Gateway moves its route first)
        # Promoted: the stable predictor becomes the S3 version's, and says so.
        promoted = written(router, standard(router, mixed), ApplyServing(S3_V2))
        assert _containers(promoted) == ["serin-model-store"]


def test_knative_predictors_name_the_storage_container_of_the_version_they_run() -> None:
    router = KnativeRouter("serin-model-store")
    (w,) = router.plan(Seen("ml", "fraud"), ApplyServing(S3_V1), SPEC, OWNER)
    assert w.body["spec"]["predictor"]["storageContainerName"] == "serin-model-store"
    running = knative_isvc(S3_V1.storageUri, None)
    running["spec"]["predictor"]["storageContainerName"] = "serin-model-store"
    (w,) = router.plan(Seen("ml", "fraud", isvc=running), ApplyServing(S3_V1, V2, 10), SPEC, OWNER)
    assert w.body["spec"]["predictor"]["model"]["storageUri"] == V2.storageUri
    assert w.body["spec"]["predictor"]["storageContainerName"] is None, "a claim's version: the field removed"


def test_without_an_s3_store_no_predictor_names_a_storage_container() -> None:
    isvc = written(ReplicaRatioRouter(), Seen("ml", "fraud"), ApplyServing(S3_V1, S3_V2, 10))
    assert _containers(isvc) == [None, None]
    assert Routing(store_container="x").router_for(SPEC, None).store_container == "x"  # type: ignore[attr-defined]
