"""The KServe stand-in's status function, situation by situation (no I/O).

Each situation is a sequence of steps applied to one InferenceService: a change of the predictor
(as Serin's operator would patch it) and the readiness of revisions at that moment. Expected
values are what KServe's ksvc_reconciler.go + PropagateStatus and Knative's route resolution
produce (see local/kserve_status.py and local/knative.py for the citations)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
from serin.local.knative import PENDING, READY, Readiness
from serin.local.kserve_status import STANDIN_KEY, Endpoints, reconcile

A, B, C = "file:///models/a", "file:///models/b", "file:///models/c"
FAILED = Readiness("False", "ExitCode2", "/models/b has no model.onnx")
DROP = object()  # removes a predictor field, as a merge patch with null does


def rev(n: int) -> str:
    return f"m-predictor-{n:05d}"


@dataclass
class Step:
    patch: dict[str, Any] = field(default_factory=dict)  # merged into spec.predictor
    ready: dict[int, Readiness] = field(default_factory=dict)  # revision number → readiness


@dataclass
class Expect:
    traffic: list[tuple[int, bool, int, str]]  # (revision, latestRevision, percent, tag)
    created: int
    ready: int | None
    rolledout: int | None
    previous: int | None = None
    isvc_ready: str = "True"


def isvc(uri: str = A, **extra: Any) -> dict[str, Any]:
    predictor = {"minReplicas": 1, "maxReplicas": 1,
                 "model": {"modelFormat": {"name": "onnx"}, "runtime": "serin-onnx",
                           "storageUri": uri, "protocolVersion": "v2"}, **extra}
    return {"metadata": {"name": "m", "namespace": "ns", "generation": 1}, "spec": {"predictor": predictor}}


def apply(obj: dict[str, Any], step: Step, readiness: dict[str, Readiness], t: int) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    pred = obj["spec"]["predictor"]
    for key, value in step.patch.items():
        if value is DROP:
            pred.pop(key, None)
        elif key == "storageUri":
            pred["model"]["storageUri"] = value
        else:
            pred[key] = value
    if step.patch:
        obj["metadata"]["generation"] += 1
    readiness.update({rev(n): r for n, r in step.ready.items()})
    obj["status"] = reconcile(obj, readiness, f"2026-01-01T00:00:{t:02d}Z").status
    return obj


def run(steps: list[Step], start: dict[str, Any] | None = None) -> dict[str, Any]:
    obj, readiness = start or isvc(), {}
    for t, step in enumerate(steps):
        obj = apply(obj, step, readiness, t)
    return obj


ROLLED_OUT = [Step(ready={1: READY})]  # rev 1 serving 100 %
CANARY = [*ROLLED_OUT, Step({"storageUri": B, "canaryTrafficPercent": 10}, {2: READY})]
PROMOTED = [*CANARY, Step({"canaryTrafficPercent": DROP})]
ROLLED_BACK_TO_0 = [*CANARY, Step({"canaryTrafficPercent": 0})]

SITUATIONS = [
    pytest.param([Step()], Expect([], 1, None, None, isvc_ready="Unknown"), id="first-create-pending"),
    pytest.param(ROLLED_OUT, Expect([(1, True, 100, "")], 1, 1, 1), id="first-create-ready-100-percent"),
    pytest.param([Step(ready={1: FAILED})], Expect([], 1, None, None, isvc_ready="False"),
                 id="first-create-never-ready"),
    # The first revision is rolled out at 100 % first; the next KServe reconcile then splits the
    # percent over that same revision (latest + prev), which changes nothing for requests.
    pytest.param([Step({"canaryTrafficPercent": 10}, {1: READY})],
                 Expect([(1, True, 10, ""), (1, False, 90, "prev")], 1, 1, 1),
                 id="canary-percent-on-first-create-splits-over-revision-1"),
    pytest.param([*ROLLED_OUT, Step({"storageUri": B, "canaryTrafficPercent": 10})],
                 Expect([(1, True, 10, ""), (1, False, 90, "prev")], 2, 1, 1, isvc_ready="Unknown"),
                 id="canary-10-new-revision-pending-stable-serves-both-targets"),
    pytest.param(CANARY, Expect([(2, True, 10, ""), (1, False, 90, "prev")], 2, 2, 1), id="canary-10-split"),
    pytest.param([*CANARY, Step({"canaryTrafficPercent": 50})],
                 Expect([(2, True, 50, ""), (1, False, 50, "prev")], 2, 2, 1), id="canary-step-to-50-no-new-revision"),
    pytest.param(PROMOTED, Expect([(2, True, 100, "")], 2, 2, 2, 1), id="promote-by-removing-canary-percent"),
    pytest.param([*CANARY, Step({"canaryTrafficPercent": 100})], Expect([(2, True, 100, "")], 2, 2, 2, 1),
                 id="canary-100-promotes"),
    pytest.param(ROLLED_BACK_TO_0, Expect([(2, True, 0, ""), (1, False, 100, "prev")], 2, 2, 1),
                 id="rollback-canary-0-all-traffic-to-rolled-out"),
    # Knative resolves `latestRevision: true` to the latest READY revision: removing the percent
    # while the restored revision is still starting sends 100 % to the rolled-back canary.
    pytest.param([*ROLLED_BACK_TO_0, Step({"storageUri": A, "canaryTrafficPercent": DROP})],
                 Expect([(2, True, 100, "")], 3, 2, 2, 1, isvc_ready="Unknown"),
                 id="restore-and-remove-percent-while-new-revision-pending-serves-canary"),
    pytest.param([*ROLLED_BACK_TO_0, Step({"storageUri": A, "canaryTrafficPercent": DROP}, {3: READY})],
                 Expect([(3, True, 100, "")], 3, 3, 3, 1), id="restore-stable-new-revision-100-once-ready"),
    pytest.param([*ROLLED_BACK_TO_0, Step({"storageUri": A, "canaryTrafficPercent": DROP}), Step(ready={3: READY})],
                 Expect([(3, True, 100, "")], 3, 3, 3, 2), id="restore-in-two-ticks-canary-becomes-previous"),
    pytest.param([*ROLLED_BACK_TO_0, Step({"storageUri": A})],
                 Expect([(2, True, 0, ""), (1, False, 100, "prev")], 3, 2, 1, isvc_ready="Unknown"),
                 id="restore-keeping-0-percent-traffic-stays-on-stable"),
    pytest.param([*ROLLED_BACK_TO_0, Step({"storageUri": A}), Step(ready={3: READY}),
                  Step({"canaryTrafficPercent": DROP})],
                 Expect([(3, True, 100, "")], 3, 3, 3, 1), id="restore-keeping-0-then-remove-percent"),
    pytest.param([*ROLLED_OUT, Step({"storageUri": B, "canaryTrafficPercent": 10}, {2: FAILED})],
                 Expect([(1, True, 10, ""), (1, False, 90, "prev")], 2, 1, 1, isvc_ready="False"),
                 id="canary-never-ready-traffic-stays"),
    pytest.param([*CANARY, Step({"storageUri": C})],
                 Expect([(2, True, 10, ""), (1, False, 90, "prev")], 3, 2, 1, isvc_ready="Unknown"),
                 id="spec-change-during-canary-pending-old-canary-keeps-10"),
    pytest.param([*CANARY, Step({"storageUri": C}, {3: READY})],
                 Expect([(3, True, 10, ""), (1, False, 90, "prev")], 3, 3, 1),
                 id="spec-change-during-canary-ready-new-canary-takes-10"),
    pytest.param([*PROMOTED, Step({"canaryTrafficPercent": 0})],
                 Expect([(2, True, 0, ""), (1, False, 100, "prev")], 2, 2, 1, 1),
                 id="rollback-after-promotion-returns-to-previous-rolled-out"),
    pytest.param([*ROLLED_OUT, Step({"minReplicas": 2}, {2: READY})], Expect([(2, True, 100, "")], 2, 2, 2, 1),
                 id="replica-change-is-a-new-revision"),
    pytest.param([*ROLLED_OUT, Step({"canaryTrafficPercent": 30})], Expect([(1, True, 30, ""), (1, False, 70, "prev")], 1, 1, 1),
                 id="percent-only-change-is-no-new-revision"),
]


@pytest.mark.parametrize(("steps", "want"), SITUATIONS)
def test_situation(steps: list[Step], want: Expect) -> None:
    status = run(steps)["status"]
    pred = status["components"]["predictor"]
    got = [(int(t["revisionName"][-5:]), t["latestRevision"], t["percent"], t.get("tag", "")) for t in pred.get("traffic", [])]
    assert got == want.traffic
    assert pred["latestCreatedRevision"] == rev(want.created)
    assert pred.get("latestReadyRevision") == (rev(want.ready) if want.ready else None)
    assert pred.get("latestRolledoutRevision") == (rev(want.rolledout) if want.rolledout else None)
    assert pred.get("previousRolledoutRevision") == (rev(want.previous) if want.previous else None)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == want.isvc_ready
    assert conds["PredictorReady"]["status"] == want.isvc_ready


def test_ready_status_is_kserve_shaped() -> None:
    status = run(ROLLED_OUT)["status"]
    assert status["url"] == "http://m.ns.example.com"
    assert status["address"] == {"url": "http://m.ns.svc.cluster.local"}
    assert status["components"]["predictor"]["url"] == "http://m-predictor.ns.example.com"
    assert status["observedGeneration"] == 1
    assert status["modelStatus"]["states"] == {"activeModelState": "Loaded", "targetModelState": "Loaded"}
    types = [c["type"] for c in status["conditions"]]
    assert types == sorted(types) == ["IngressReady", "LatestDeploymentReady", "PredictorConfigurationReady",
                                      "PredictorReady", "PredictorRouteReady", "Ready", "RoutesReady"]
    severities = {c["type"]: c.get("severity") for c in status["conditions"]}
    assert severities["Ready"] is None and severities["PredictorReady"] is None
    assert severities["RoutesReady"] == "Info"


def test_failed_revision_reports_kserve_reasons() -> None:
    status = run([*ROLLED_OUT, Step({"storageUri": B, "canaryTrafficPercent": 10}, {2: FAILED})])["status"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["PredictorReady"]["reason"] == "RevisionFailed"
    assert rev(2) in conds["PredictorReady"]["message"] and "no model.onnx" in conds["PredictorReady"]["message"]
    assert conds["IngressReady"] == {**conds["IngressReady"], "status": "False", "reason": "Predictor ingress not created"}
    assert status["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"
    assert status["modelStatus"]["lastFailureInfo"]["reason"] == "ModelLoadFailed"
    assert status["url"] == "http://m.ns.example.com"  # kept from when it was ready


def test_tag_routing_annotation_tags_latest() -> None:
    start = isvc()
    start["metadata"]["annotations"] = {"serving.kserve.io/enable-tag-routing": "true"}
    status = run(CANARY, start)["status"]
    tags = [(t.get("tag"), t.get("url")) for t in status["components"]["predictor"]["traffic"]]
    assert tags == [("latest", "http://latest-m-predictor.ns.example.com"), ("prev", "http://prev-m-predictor.ns.example.com")]


def test_settled_status_is_a_fixed_point() -> None:
    obj = run(CANARY)
    again = reconcile(obj, {rev(1): READY, rev(2): READY}, "2030-01-01T00:00:00Z")
    assert again.status == obj["status"]  # no new revision, same lastTransitionTimes: nothing to write
    assert again.routes == {rev(2): 10, rev(1): 90}
    assert again.live == {rev(1), rev(2)}


def test_unreferenced_revision_is_not_live_after_promotion() -> None:
    obj = run([*PROMOTED, Step({"storageUri": C, "canaryTrafficPercent": DROP}, {3: READY})])
    out = reconcile(obj, {rev(n): READY for n in (1, 2, 3)}, "2030-01-01T00:00:00Z")
    assert out.live == {rev(3)}
    assert [r["name"] for r in obj["status"][STANDIN_KEY]["revisions"]] == [rev(1), rev(2), rev(3)]


def test_observed_generation_is_the_knative_services_own() -> None:
    """As KServe's PropagateStatus: copied from the Knative Service, whose generation moves with
    the spec KServe writes there, not with the InferenceService's."""
    obj = run([*ROLLED_OUT, Step({"canaryTrafficPercent": 30})])
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
    unchanged = obj["status"]["observedGeneration"]
    obj["metadata"]["generation"] += 1  # an edit KServe does not carry to the Knative Service
    out = reconcile(obj, {rev(1): READY, rev(2): READY}, "2030-01-01T00:00:00Z")
    assert out.status["observedGeneration"] == unchanged != obj["metadata"]["generation"]


def test_endpoints_are_injected() -> None:
    ep = Endpoints("http://127.0.0.1:5000", "http://127.0.0.1:5000", "http://127.0.0.1:5000")
    out = reconcile(isvc(), {rev(1): READY}, "2026-01-01T00:00:00Z", ep)
    assert out.status["url"] == out.status["address"]["url"] == "http://127.0.0.1:5000"


def test_pending_is_the_default_readiness() -> None:
    assert reconcile(isvc(), {}, "t").status == reconcile(isvc(), {rev(1): PENDING}, "t").status
