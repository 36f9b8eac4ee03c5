"""The rollout decision as a table of situations: (spec, status, observations, now) → outcome.

No I/O: these run in milliseconds and pin down every transition the operator can make."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from clock import at, ts
from serin.operator.actions import (
    ApplyServing,
    CancelConversion,
    ClearAnnotation,
    Emit,
    Served,
    StartConversion,
)
from serin.operator.observations import (
    ConversionResult,
    MeasuredValue,
    Observations,
    ServingObservation,
    Variant,
)
from serin.operator.pods import Crashes
from serin.operator.policy import Policy
from serin.operator.rollout import (
    ABORT_ANNOTATION,
    PROMOTE_ANNOTATION,
    Decision,
    analysis_due,
    decide,
)
from serin.operator.spec import ModelSpec, parse_spec
from serin.operator.status import (
    Canary,
    ConversionSummary,
    Failure,
    Pending,
    Status,
    Version,
    status_from_dict,
    status_to_dict,
)


def make_spec(uri: str = "file:///models/v2.joblib", **rollout: Any) -> ModelSpec:
    r: dict[str, Any] = {
        "steps": [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}],
        "analysis": {"interval": "10s", "failureLimit": 2, "inconclusiveLimit": 3, "metrics": [
            {"name": "error-rate", "builtin": "errorRate", "max": 0.01},
            {"name": "accuracy", "query": "x", "min": 0.9},
        ]},
    } | rollout
    return parse_spec({"source": {"uri": uri, "sampleUri": "file:///s.csv"}, "rollout": r})


V1_SPEC = make_spec("file:///models/v1.joblib")
LENIENT = Policy(require_analysis=False)  # an operator started with --require-analysis=false
SPEC = make_spec()  # the spec names v2
K1, K2 = V1_SPEC.version_key, SPEC.version_key
STABLE = Version(1, K1, "file:///store/v1", "s1", "m-predictor-00001")
URI2 = "file:///store/v2"
PROMOTED = Status(phase="Promoted", observedGeneration=1, stable=STABLE, stableConfirmed=True)


def canary(**kw: Any) -> Canary:
    base = dict(generation=2, versionKey=K2, storageUri=URI2, sha256="s2", state="Progressing",
                step=0, weight=10, since=ts(0), stepSince=ts(0))
    return Canary(**(base | kw))


def only(uri: str, revision: str = "m-predictor-00001", **kw: Any) -> ServingObservation:
    """The serving layer runs one version, with all the traffic."""
    return ServingObservation(exists=True, settled=True, stable=Variant(uri, revision, True, 100), **kw)


SERVES_V1 = only(STABLE.storageUri)


def canary_serving(weight: int, achieved: int | None = None, **kw: Any) -> ServingObservation:
    """The canary is up at the step's `weight`, receiving `achieved` percent (exact by default)."""
    got = weight if achieved is None else achieved
    return ServingObservation(exists=True, settled=True, stable=Variant("", "m-predictor-00001", True, 100 - got),
                              canary=Variant(URI2, "m-predictor-00002", True, got), canaryTarget=weight, **kw)


# What the decision asks the serving layer for: v1 alone, v2 as the canary at a weight, v2 alone.
S1, C2 = Served(1, STABLE.storageUri), Served(2, URI2)
ONLY_V1, PROMOTE_V2 = ApplyServing(S1), ApplyServing(C2)


def at_weight(weight: int) -> ApplyServing:
    return ApplyServing(S1, C2, weight)


# A canary at step 1, traffic confirmed at t=0.
LIVE = replace(PROMOTED, canary=canary(trafficSince=ts(0), revision="m-predictor-00002"))


def measured(error_rate: float | None = 0.001, accuracy: float | None = 0.95, error: str = "") -> tuple[MeasuredValue, ...]:
    return (MeasuredValue("error-rate", error_rate, error), MeasuredValue("accuracy", accuracy, error))


def obs(generation: int = 2, **kw: Any) -> Observations:
    return Observations(generation=generation, **kw)


def events(d: Decision) -> list[str]:
    return [a.reason for a in d.actions if isinstance(a, Emit)]


def of(d: Decision, kind: type) -> list[Any]:
    return [a for a in d.actions if isinstance(a, kind)]


def serving_action(d: Decision) -> ApplyServing | None:
    found = of(d, ApplyServing)
    return found[-1] if found else None


@dataclass
class Case:
    id: str
    status: Status
    observations: Observations
    check: Callable[[Decision], None]
    spec: ModelSpec = SPEC
    now: float = 0.0
    policy: Policy = field(default_factory=Policy)  # the operator's default: requireAnalysis on


def check_all(*checks: Callable[[Decision], Any]) -> Callable[[Decision], None]:
    def run(d: Decision) -> None:
        for c in checks:
            result = c(d)
            assert result is None or result is True, (
                f"check failed: {inspect.getsource(c).strip()}\nstatus: {d.status}\nactions: {d.actions}")
    return run


CASES = [
    # -- the first version ------------------------------------------------------------------
    Case("new-model-starts-conversion", Status(), obs(1), check_all(
        lambda d: d.status.phase == "Converting",
        lambda d: d.status.pending is not None and d.status.pending.versionKey == K2,
        lambda d: of(d, StartConversion) == [StartConversion(1, K2, 1)],
        lambda d: serving_action(d) is None,
        lambda d: "ConversionStarted" in events(d))),
    Case("conversion-running-waits", Status(pending=Pending(1, K2, ts(0))),
         obs(1, conversion=ConversionResult("Running")), check_all(
        lambda d: d.status.phase == "Converting", lambda d: of(d, StartConversion) == []), now=60),
    Case("conversion-lost-is-restarted", Status(pending=Pending(1, K2, ts(0))),
         obs(1, conversion=ConversionResult("Missing")), check_all(
        lambda d: of(d, StartConversion) == [StartConversion(1, K2, 2)],
        lambda d: d.status.pending is not None and d.status.pending.attempt == 2)),
    Case("conversion-lost-three-times-fails", Status(pending=Pending(1, K2, ts(0), attempt=3)),
         obs(1, conversion=ConversionResult("Missing")), check_all(
        lambda d: d.status.phase == "Failed", lambda d: d.status.pending is None,
        lambda d: "did not run after 3 attempts" in d.status.message)),
    Case("fetch-failure-backs-off-before-retrying", Status(pending=Pending(1, K2, ts(0))),
         obs(1, conversion=ConversionResult("Failed", reason="cannot fetch artifact s3://b/m: 503", retryable=True)),
         check_all(
        lambda d: d.status.phase == "Converting", lambda d: of(d, StartConversion) == [],
        lambda d: d.status.pending == Pending(1, K2, ts(0), attempt=2, retryAt=ts(75)),
        lambda d: [a.message for a in of(d, Emit) if a.reason == "ConversionRetrying"]
        == ["generation 1: cannot fetch artifact s3://b/m: 503; attempt 2 of 3 in 15s"]), now=60),
    Case("fetch-retry-waits-for-its-time", Status(pending=Pending(1, K2, ts(0), attempt=2, retryAt=ts(75))),
         obs(1), check_all(
        lambda d: of(d, StartConversion) == [], lambda d: d.status.pending is not None
        and d.status.pending.retryAt == ts(75)), now=70),
    Case("fetch-retry-starts-the-next-attempt", Status(pending=Pending(1, K2, ts(0), attempt=2, retryAt=ts(75))),
         obs(1), check_all(
        lambda d: of(d, StartConversion) == [StartConversion(1, K2, 2)],
        lambda d: d.status.pending == Pending(1, K2, ts(76), attempt=2)), now=76),
    Case("fetch-failure-on-the-last-attempt-fails", Status(pending=Pending(1, K2, ts(0), attempt=3)),
         obs(1, conversion=ConversionResult("Failed", reason="cannot fetch artifact s3://b/m: 503", retryable=True)),
         check_all(
        lambda d: d.status.phase == "Failed", lambda d: d.status.pending is None,
        lambda d: "cannot fetch artifact" in d.status.message), now=60),
    Case("parity-failure-is-not-retried", Status(pending=Pending(1, K2, ts(0))),
         obs(1, conversion=ConversionResult("Failed", reason="parity failed: 3 rows differ")), check_all(
        lambda d: d.status.phase == "Failed", lambda d: "ConversionRetrying" not in events(d)), now=60),
    Case("superseded-retry-cancels-its-own-attempt", Status(pending=Pending(1, K1, ts(0), attempt=3)),
         obs(2), check_all(
        lambda d: of(d, CancelConversion) == [CancelConversion(1, K1, 3)]), now=60),
    Case("conversion-timeout-fails-and-cancels", Status(pending=Pending(1, K2, ts(0))),
         obs(1, conversion=ConversionResult("Running")), check_all(
        lambda d: d.status.phase == "Failed", lambda d: len(of(d, CancelConversion)) == 1,
        lambda d: "did not finish within 10m" in d.status.message), now=601),
    Case("first-conversion-succeeds-deploys-at-100", Status(pending=Pending(1, K2, ts(0))),
         obs(1, conversion=ConversionResult("Succeeded", URI2, "s2", summary=ConversionSummary(passed=True))), check_all(
        lambda d: d.status.phase == "Deploying",
        lambda d: d.status.stable is not None and d.status.stable.storageUri == URI2,
        lambda d: serving_action(d) == ApplyServing(Served(1, URI2)),
        lambda d: d.status.conversion == ConversionSummary(passed=True, generation=1))),
    Case("first-conversion-fails-nothing-served", Status(pending=Pending(1, K2, ts(0))),
         obs(1, conversion=ConversionResult("Failed", reason="unsupported estimator Foo")), check_all(
        lambda d: d.status.phase == "Failed", lambda d: serving_action(d) is None,
        lambda d: "unsupported estimator Foo" in d.status.message,
        lambda d: {c.type: c.status for c in d.status.conditions}["Converted"] == "False")),
    Case("first-version-confirmed-serving", Status(stable=replace(STABLE, versionKey=K2, storageUri=URI2, revision="")),
         obs(1, serving=only(URI2)), check_all(
        lambda d: d.status.phase == "Promoted", lambda d: d.status.stableConfirmed,
        lambda d: d.status.stable is not None and d.status.stable.revision == "m-predictor-00001",
        lambda d: {c.type: c.status for c in d.status.conditions}["Ready"] == "True")),
    Case("first-version-not-ready-keeps-deploying", Status(stable=replace(STABLE, versionKey=K2, storageUri=URI2)),
         obs(1, serving=ServingObservation(exists=True, settled=False, stable=Variant(URI2, "", False, 0))), check_all(
        lambda d: d.status.phase == "Deploying", lambda d: not d.status.stableConfirmed)),
    Case("isvc-stale-status-is-not-trusted", Status(stable=replace(STABLE, versionKey=K2, storageUri=URI2)),
         obs(1, serving=replace(only(URI2, "r1"), settled=False)), check_all(lambda d: d.status.phase == "Deploying")),
    Case("first-version-refused-says-why", Status(stable=replace(STABLE, versionKey=K2, storageUri=URI2)),
         obs(1, serving=ServingObservation(exists=False, refused="isvc m create refused: denied by webhook")), check_all(
        lambda d: d.status.phase == "Deploying",
        lambda d: d.status.message == "waiting for generation 1 to serve: isvc m create refused: denied by webhook")),
    # -- a new version next to a stable one -------------------------------------------------
    Case("new-source-converts-while-stable-serves", PROMOTED, obs(2, serving=SERVES_V1), check_all(
        lambda d: d.status.phase == "Converting", lambda d: of(d, StartConversion) == [StartConversion(2, K2, 1)],
        lambda d: serving_action(d) == ONLY_V1)),
    Case("second-conversion-starts-canary", replace(PROMOTED, pending=Pending(2, K2, ts(0))),
         obs(2, serving=SERVES_V1, conversion=ConversionResult("Succeeded", URI2, "s2")), check_all(
        lambda d: d.status.phase == "Progressing",
        lambda d: d.status.canary is not None and (d.status.canary.step, d.status.canary.weight) == (0, 10),
        lambda d: serving_action(d) == at_weight(10), lambda d: "CanaryStarted" in events(d))),
    Case("second-conversion-fails-stable-untouched", replace(PROMOTED, pending=Pending(2, K2, ts(0))),
         obs(2, serving=SERVES_V1, conversion=ConversionResult("Failed", reason="parity failed: label agreement 0.93")),
         check_all(
        lambda d: d.status.phase == "Failed", lambda d: d.status.stable == STABLE,
        lambda d: serving_action(d) == ONLY_V1,
        lambda d: "generation 1 still serving" in d.status.message,
        lambda d: {c.type: c.status for c in d.status.conditions} == {
            "Ready": "True", "Progressing": "False", "Degraded": "True", "Converted": "False",
            # Monitoring started on the serving version, with nothing judged yet.
            "Drifted": "Unknown", "PerformanceDegraded": "Unknown"})),
    Case("failed-version-is-not-retried", replace(PROMOTED, failed=Failure(2, K2, "ConversionFailed", "bad", ts(0))),
         obs(2, serving=SERVES_V1), check_all(
        lambda d: of(d, StartConversion) == [], lambda d: d.status.phase == "Failed")),
    Case("rolled-back-version-is-not-retried", replace(PROMOTED, failed=Failure(2, K2, "RolledBack", "errors", ts(0))),
         obs(2, serving=SERVES_V1), check_all(
        lambda d: of(d, StartConversion) == [], lambda d: d.status.phase == "RolledBack")),
    Case("no-steps-promotes-directly-when-analysis-is-not-required", replace(PROMOTED, pending=Pending(2, K2, ts(0))),
         obs(2, serving=SERVES_V1, conversion=ConversionResult("Succeeded", URI2, "s2")), check_all(
        lambda d: d.status.canary is not None and d.status.canary.state == "Promoting",
        lambda d: serving_action(d) == PROMOTE_V2), spec=make_spec(steps=[]), policy=LENIENT),
    Case("replicas-change-is-not-a-new-version", PROMOTED, obs(3, serving=SERVES_V1), check_all(
        lambda d: of(d, StartConversion) == [], lambda d: d.status.phase == "Promoted",
        lambda d: d.status.observedGeneration == 3), spec=replace(V1_SPEC, serving={"maxReplicas": 3})),
    # -- the canary waits for KServe --------------------------------------------------------
    Case("canary-waits-for-traffic", replace(PROMOTED, canary=canary()), obs(2, serving=SERVES_V1), check_all(
        lambda d: d.status.canary is not None and d.status.canary.trafficSince is None,
        lambda d: "waiting for the canary to serve" in d.status.message,
        lambda d: serving_action(d) == at_weight(10)), now=20),
    Case("canary-traffic-confirmed-records-revisions", replace(PROMOTED, canary=canary()),
         obs(2, serving=canary_serving(10)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.trafficSince == ts(5),
        lambda d: d.status.canary is not None and d.status.canary.revision == "m-predictor-00002",
        lambda d: d.status.stable is not None and d.status.stable.revision == "m-predictor-00001"), now=5),
    Case("canary-not-ready-by-deadline-rolls-back", replace(PROMOTED, canary=canary()), obs(2, serving=SERVES_V1),
         check_all(
        lambda d: d.status.phase == "RollingBack", lambda d: "progressDeadline" in d.status.message,
        lambda d: serving_action(d) == at_weight(0)), now=601),
    # -- analysis ---------------------------------------------------------------------------
    Case("passing-round-accrues-progress", LIVE, obs(2, serving=canary_serving(10), measurements=measured()),
         check_all(
        lambda d: d.status.canary is not None and d.status.canary.stepProgress == 10.0,
        lambda d: d.status.canary is not None and d.status.canary.step == 0,
        lambda d: [m.verdict for m in d.status.analysis] == ["Successful", "Successful"]), now=10),
    Case("a-late-first-round-vouches-for-one-interval-only", LIVE,
         obs(2, serving=canary_serving(10), measurements=measured()), check_all(
        lambda d: d.status.canary is not None and d.status.canary.stepProgress == 10.0), now=45),
    Case("a-round-after-a-gap-vouches-for-one-interval-only",
         replace(PROMOTED, canary=canary(trafficSince=ts(0), lastAnalysisAt=ts(10), stepProgress=10.0)),
         obs(2, serving=canary_serving(10), measurements=measured()), check_all(
        lambda d: d.status.canary is not None and d.status.canary.stepProgress == 20.0,
        lambda d: d.status.canary is not None and d.status.canary.step == 0), now=70),
    Case("pause-elapsed-advances-step", replace(PROMOTED, canary=canary(trafficSince=ts(0), lastAnalysisAt=ts(20), stepProgress=20.0)),
         obs(2, serving=canary_serving(10), measurements=measured()), check_all(
        lambda d: d.status.canary is not None and (d.status.canary.step, d.status.canary.weight) == (1, 50),
        lambda d: d.status.canary is not None and d.status.canary.trafficSince is None,
        lambda d: serving_action(d) == at_weight(50), lambda d: "StepAdvanced" in events(d)), now=30),
    Case("last-step-passed-promotes", replace(PROMOTED, canary=canary(step=1, weight=50, trafficSince=ts(0), lastAnalysisAt=ts(20), stepProgress=20.0)),
         obs(2, serving=canary_serving(50), measurements=measured()), check_all(
        lambda d: d.status.canary is not None and d.status.canary.state == "Promoting",
        lambda d: serving_action(d) == PROMOTE_V2), now=30),
    Case("one-failure-below-limit-holds-the-step", replace(PROMOTED, canary=canary(trafficSince=ts(0), lastAnalysisAt=ts(20), stepProgress=20.0)),
         obs(2, serving=canary_serving(10), measurements=measured(error_rate=0.05)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.failures == {"error-rate": 1},
        lambda d: d.status.canary is not None and d.status.canary.step == 0,
        lambda d: "AnalysisFailed" in events(d), lambda d: d.status.phase == "Progressing"), now=30),
    Case("failure-limit-rolls-back-at-once", replace(PROMOTED, canary=canary(trafficSince=ts(0), failures={"error-rate": 1})),
         obs(2, serving=canary_serving(10), measurements=measured(error_rate=0.05)), check_all(
        lambda d: d.status.phase == "RollingBack",
        lambda d: "error-rate = 0.05 > max 0.01 (2 failed measurements)" in d.status.message,
        lambda d: serving_action(d) == at_weight(0)), now=10),
    Case("below-min-fails", replace(PROMOTED, canary=canary(trafficSince=ts(0), failures={"accuracy": 1})),
         obs(2, serving=canary_serving(10), measurements=measured(accuracy=0.5)), check_all(
        lambda d: d.status.phase == "RollingBack", lambda d: "accuracy = 0.5 < min 0.9" in d.status.message), now=10),
    Case("no-data-is-inconclusive-not-progress", LIVE, obs(2, serving=canary_serving(10), measurements=measured(error_rate=None)),
         check_all(
        lambda d: d.status.canary is not None and d.status.canary.inconclusiveStreak == 1,
        lambda d: d.status.canary is not None and d.status.canary.stepProgress == 0.0,
        lambda d: d.status.analysis[0].reason == "no data"), now=10),
    Case("inconclusive-limit-pauses", replace(PROMOTED, canary=canary(trafficSince=ts(0), inconclusiveStreak=2, stepProgress=100.0)),
         obs(2, serving=canary_serving(10), measurements=measured(error="prometheus: connection refused")), check_all(
        lambda d: d.status.phase == "Paused", lambda d: "AnalysisInconclusive" in events(d),
        lambda d: "connection refused" in d.status.message,
        lambda d: d.status.canary is not None and d.status.canary.state == "Progressing",
        lambda d: serving_action(d) == at_weight(10)), now=10),
    Case("inconclusive-never-promotes-even-with-progress", replace(PROMOTED, canary=canary(step=1, weight=50, trafficSince=ts(0), inconclusiveStreak=5, stepProgress=999.0)),
         obs(2, serving=canary_serving(50), measurements=measured(accuracy=None)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.state == "Progressing",
        lambda d: d.status.phase == "Paused"), now=10),
    Case("conclusive-again-resumes", replace(PROMOTED, canary=canary(trafficSince=ts(0), inconclusiveStreak=3)),
         obs(2, serving=canary_serving(10), measurements=measured()), check_all(
        lambda d: d.status.phase == "Progressing", lambda d: "AnalysisResumed" in events(d)), now=10),
    Case("nan-value-is-inconclusive-and-not-stored", LIVE, obs(2, serving=canary_serving(10), measurements=measured(error_rate=float("nan"))),
         check_all(
        lambda d: d.status.analysis[0].verdict == "Inconclusive", lambda d: d.status.analysis[0].value is None), now=10),
    Case("unmeasured-metric-is-inconclusive", LIVE, obs(2, serving=canary_serving(10), measurements=(MeasuredValue("error-rate", 0.0),)),
         check_all(lambda d: d.status.analysis[-1].reason == "not measured"), now=10),
    Case("user-pause-holds-the-step", replace(PROMOTED, canary=canary(trafficSince=ts(0), lastAnalysisAt=ts(20), stepProgress=20.0)),
         obs(2, serving=canary_serving(10), measurements=measured()), check_all(
        lambda d: d.status.phase == "Paused", lambda d: d.status.canary is not None and d.status.canary.step == 0),
         spec=make_spec(paused=True), now=30),
    Case("user-pause-still-rolls-back-on-failure", replace(PROMOTED, canary=canary(trafficSince=ts(0), failures={"error-rate": 1})),
         obs(2, serving=canary_serving(10), measurements=measured(error_rate=0.5)), check_all(
        lambda d: d.status.phase == "RollingBack"), spec=make_spec(paused=True), now=10),
    Case("no-metrics-step-lasts-its-pause-when-analysis-is-not-required", replace(PROMOTED, canary=canary(trafficSince=ts(0))),
         obs(2, serving=canary_serving(10)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.step == 1),
         spec=make_spec(analysis={"metrics": []}), now=31, policy=LENIENT),
    # -- manual control ---------------------------------------------------------------------
    Case("manual-promote", LIVE, obs(2, serving=canary_serving(10), annotations={PROMOTE_ANNOTATION: "2"}), check_all(
        lambda d: d.status.canary is not None and d.status.canary.state == "Promoting",
        lambda d: of(d, ClearAnnotation) == [ClearAnnotation(PROMOTE_ANNOTATION, "2")],
        lambda d: serving_action(d) == PROMOTE_V2)),
    Case("stale-promote-is-ignored-and-cleared", LIVE, obs(2, serving=canary_serving(10), annotations={PROMOTE_ANNOTATION: "1"}),
         check_all(
        lambda d: d.status.canary is not None and d.status.canary.state == "Progressing",
        lambda d: of(d, ClearAnnotation) == [ClearAnnotation(PROMOTE_ANNOTATION, "1")])),
    Case("manual-abort", LIVE, obs(2, serving=canary_serving(10), annotations={ABORT_ANNOTATION: "2"}), check_all(
        lambda d: d.status.phase == "RollingBack", lambda d: "aborted by user" in d.status.message)),
    # -- promotion and rollback complete ----------------------------------------------------
    Case("promotion-confirmed", replace(PROMOTED, canary=canary(state="Promoting", reason="all steps passed")),
         obs(2, serving=only(URI2, "m-predictor-00002")), check_all(
        lambda d: d.status.phase == "Promoted", lambda d: d.status.canary is None,
        lambda d: d.status.stable is not None and (d.status.stable.generation, d.status.stable.revision) == (2, "m-predictor-00002"),
        lambda d: d.status.history[-1].outcome == "Promoted", lambda d: "Promoted" in events(d))),
    Case("promotion-waits-for-kserve", replace(PROMOTED, canary=canary(state="Promoting")), obs(2, serving=canary_serving(10)),
         check_all(lambda d: d.status.canary is not None, lambda d: serving_action(d) == PROMOTE_V2)),
    Case("rollback-zero-traffic-confirmed-removes-the-canary", replace(PROMOTED, canary=canary(state="RollingBack", rollbackStage="ZeroTraffic", reason="errors")),
         obs(2, serving=canary_serving(0)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.rollbackStage == "Restore",
        lambda d: "TrafficRestored" in events(d),
        lambda d: serving_action(d) == ONLY_V1)),
    Case("rollback-waits-for-zero-traffic", replace(PROMOTED, canary=canary(state="RollingBack", rollbackStage="ZeroTraffic")),
         obs(2, serving=canary_serving(10)), check_all(lambda d: serving_action(d) == at_weight(0))),
    Case("rollback-zero-traffic-needs-the-layer-settled", replace(PROMOTED, canary=canary(state="RollingBack", rollbackStage="ZeroTraffic")),
         obs(2, serving=replace(canary_serving(0), settled=False)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.rollbackStage == "ZeroTraffic")),
    Case("rollback-zero-traffic-a-removed-canary-counts", replace(PROMOTED, canary=canary(state="RollingBack", rollbackStage="ZeroTraffic")),
         obs(2, serving=SERVES_V1), check_all(
        lambda d: d.status.canary is not None and d.status.canary.rollbackStage == "Restore")),
    Case("restore-waits-until-only-the-stable-serves", replace(PROMOTED, canary=canary(state="RollingBack", rollbackStage="Restore")),
         obs(2, serving=canary_serving(0)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.rollbackStage == "Restore",
        lambda d: serving_action(d) == ONLY_V1)),
    Case("rollback-complete", replace(PROMOTED, canary=canary(state="RollingBack", rollbackStage="Restore", reason="analysis failed: x")),
         obs(2, serving=only(STABLE.storageUri, "m-predictor-00003")), check_all(
        lambda d: d.status.phase == "RolledBack", lambda d: d.status.canary is None,
        lambda d: d.status.failed is not None and d.status.failed.kind == "RolledBack",
        lambda d: d.status.stable is not None and d.status.stable.revision == "m-predictor-00003",
        lambda d: {c.type: c.status for c in d.status.conditions}["Degraded"] == "True",
        lambda d: "RolledBack" in events(d))),
    Case("rollback-an-older-operator-left-in-finalize-completes", replace(PROMOTED, canary=canary(state="RollingBack", rollbackStage="Finalize", reason="x")),
         obs(2, serving=only(STABLE.storageUri, "m-predictor-00003")), check_all(
        lambda d: d.status.phase == "RolledBack", lambda d: d.rolled_back == "other")),
    # -- what the serving layer can and cannot do -------------------------------------------
    Case("replica-ratio-weight-is-recorded-and-said", replace(PROMOTED, canary=canary()),
         obs(2, serving=canary_serving(10, achieved=50, traffic="replicaRatio")), check_all(
        lambda d: d.status.canary is not None and d.status.canary.trafficSince == ts(5),
        lambda d: d.status.canary is not None and (d.status.canary.weight, d.status.canary.observedWeight) == (10, 50),
        lambda d: [a.message for a in of(d, Emit) if a.reason == "WeightNotExact"] == [
            "generation 2 at step 1 gets 50% of traffic, not 10%: replicaRatio routing cannot split finer "
            "(a Gateway gives exact weights)"]), now=5),
    Case("exact-weight-says-nothing", replace(PROMOTED, canary=canary()), obs(2, serving=canary_serving(10)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.observedWeight == 10,
        lambda d: "WeightNotExact" not in events(d)), now=5),
    Case("observed-weight-follows-replicas", replace(LIVE, canary=replace(LIVE.canary, observedWeight=50)),
         obs(2, serving=canary_serving(10, achieved=34)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.observedWeight == 34), now=5),
    Case("refused-canary-rolls-back-and-says-why", replace(PROMOTED, canary=canary()),
         obs(2, serving=replace(SERVES_V1, refused="KServe dropped spec.canary")), check_all(
        lambda d: d.status.phase == "RollingBack",
        lambda d: d.status.canary is not None and d.status.canary.rollbackReason == "unsupported",
        lambda d: "KServe dropped spec.canary" in d.status.message,
        lambda d: serving_action(d) == at_weight(0))),
    # -- a canary that dies (issue 32 #8): its restarts, not its error rate ---------------------
    Case("a-canary-that-was-oom-killed-rolls-back-with-healthy-metrics", LIVE,
         obs(2, serving=replace(canary_serving(10), canary_crashes=Crashes(
             1, "pod m-gen2-1 container kserve-container OOMKilled (exit 137)")), measurements=measured()),
         check_all(
        lambda d: d.status.phase == "RollingBack",
        lambda d: d.status.canary is not None and d.status.canary.rollbackReason == "crashed",
        lambda d: "restarted 1 time (0 allowed: spec.analysis.maxRestarts)" in d.status.message,
        lambda d: "OOMKilled (exit 137)" in d.status.message,
        lambda d: serving_action(d) == at_weight(0)), now=20),
    Case("restarts-within-maxRestarts-are-tolerated", LIVE,
         obs(2, serving=replace(canary_serving(10), canary_crashes=Crashes(2, "pod p container c Error (exit 1)")),
             measurements=measured()),
         check_all(lambda d: d.status.phase != "RollingBack",
                   lambda d: d.status.canary is not None and d.status.canary.state == "Progressing"),
         now=20, spec=make_spec(analysis={"interval": "10s", "maxRestarts": 2, "metrics": [
             {"name": "error-rate", "builtin": "errorRate", "max": 0.01}]})),
    Case("a-crash-before-traffic-counts-too", replace(PROMOTED, canary=canary()),
         obs(2, serving=replace(canary_serving(10), canary_crashes=Crashes(1, "pod p container c OOMKilled (exit 137)"))),
         check_all(lambda d: d.status.canary is not None and d.status.canary.rollbackReason == "crashed"), now=5),
    Case("crashes-of-another-version-are-not-this-canarys", LIVE,
         obs(2, serving=replace(canary_serving(10), canary=Variant("file:///store/v3", "m-gen3", True, 10),
                                canary_crashes=Crashes(3, "x"))),
         check_all(lambda d: d.status.phase != "RollingBack"), now=5),
    Case("status-serving-reports-mode-and-address", PROMOTED,
         obs(1, serving=only(STABLE.storageUri, mode="Standard", traffic="gateway", url="http://m-ns.example.com")),
         check_all(lambda d: d.status.serving is not None
                   and (d.status.serving.mode, d.status.serving.traffic, d.status.serving.url)
                   == ("Standard", "gateway", "http://m-ns.example.com")), spec=V1_SPEC),
    # -- the spec moves during a rollout ----------------------------------------------------
    Case("new-source-during-canary-supersedes-it", LIVE, obs(3, serving=canary_serving(10)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.state == "RollingBack",
        lambda d: "superseded by generation 3" in d.status.canary.reason if d.status.canary else False,
        lambda d: d.status.pending is not None and d.status.pending.generation == 3),
         spec=make_spec("file:///models/v3.joblib")),
    Case("source-set-back-to-stable-aborts-canary", LIVE, obs(3, serving=canary_serving(10)), check_all(
        lambda d: d.status.phase == "RollingBack", lambda d: of(d, StartConversion) == []), spec=replace(V1_SPEC)),
    Case("source-set-back-to-stable-cancels-conversion", replace(PROMOTED, pending=Pending(2, K2, ts(0))),
         obs(3, serving=SERVES_V1, conversion=ConversionResult("Running")), check_all(
        lambda d: d.status.pending is None, lambda d: len(of(d, CancelConversion)) == 1,
        lambda d: d.status.phase == "Promoted"), spec=V1_SPEC),
    Case("converted-while-old-canary-rolls-back-waits", replace(PROMOTED, canary=canary(state="RollingBack", rollbackStage="ZeroTraffic"),
                                                             pending=Pending(3, make_spec("file:///v3").version_key, ts(0))),
         obs(3, serving=canary_serving(10), conversion=ConversionResult("Succeeded", "file:///store/v3", "s3")), check_all(
        lambda d: d.status.pending is not None, lambda d: d.status.canary is not None and d.status.canary.generation == 2),
         spec=make_spec("file:///v3")),
    Case("new-version-after-rollback-converts", replace(PROMOTED, failed=Failure(2, K2, "RolledBack", "x", ts(0))),
         obs(3, serving=SERVES_V1), check_all(lambda d: of(d, StartConversion) == [StartConversion(3, make_spec("file:///v3").version_key, 1)]),
         spec=make_spec("file:///v3")),
    # -- requireAnalysis (the operator's setting, on by default): no canary without a gate -----
    Case("required-analysis-refuses-a-version-without-metrics", PROMOTED, obs(2, serving=SERVES_V1), check_all(
        lambda d: of(d, StartConversion) == [], lambda d: d.status.pending is None,
        lambda d: d.status.failed is not None and (d.status.failed.kind, d.status.failed.versionKey)
        == ("AnalysisRequired", K2),
        lambda d: d.status.phase == "Failed", lambda d: "requireAnalysis" in d.status.message,
        lambda d: "no metrics" in d.status.message, lambda d: "generation 1 still serving" in d.status.message,
        lambda d: "AnalysisRequired" in events(d), lambda d: serving_action(d) == ONLY_V1,
        lambda d: {c.type: (c.status, c.reason) for c in d.status.conditions}["Degraded"]
        == ("True", "AnalysisRequired"),
        lambda d: {c.type: c.status for c in d.status.conditions}["Converted"] != "True"),
         spec=make_spec(analysis={"metrics": []})),
    Case("required-analysis-refuses-only-dry-run-metrics", PROMOTED, obs(2, serving=SERVES_V1), check_all(
        lambda d: of(d, StartConversion) == [], lambda d: "only dryRun metrics" in d.status.message),
         spec=make_spec(analysis={"metrics": [{"name": "e", "builtin": "errorRate", "max": 0.01, "dryRun": True}]})),
    Case("required-analysis-refuses-no-steps", PROMOTED, obs(2, serving=SERVES_V1), check_all(
        lambda d: of(d, StartConversion) == [], lambda d: "spec.rollout.steps is empty" in d.status.message),
         spec=make_spec(steps=[])),
    Case("required-analysis-refusal-is-said-once", replace(PROMOTED, failed=Failure(2, K2, "AnalysisRequired", "x", ts(0))),
         obs(2, serving=SERVES_V1), check_all(
        lambda d: of(d, StartConversion) == [], lambda d: events(d) == [], lambda d: d.status.phase == "Failed"),
         spec=make_spec(analysis={"metrics": []})),
    Case("required-analysis-lets-a-first-version-deploy", Status(), obs(1), check_all(
        lambda d: of(d, StartConversion) == [StartConversion(1, K2, 1)]), spec=make_spec(analysis={"metrics": []})),
    Case("a-metric-added-admits-the-refused-version", replace(PROMOTED, failed=Failure(2, K2, "AnalysisRequired", "x", ts(0))),
         obs(3, serving=SERVES_V1), check_all(
        lambda d: of(d, StartConversion) == [StartConversion(3, K2, 1)], lambda d: d.status.phase == "Converting",
        lambda d: d.status.failed is None)),  # else the version, once promoted, would still read Failed
    Case("metrics-removed-while-converting-refuses-the-canary", replace(PROMOTED, pending=Pending(2, K2, ts(0))),
         obs(3, serving=SERVES_V1, conversion=ConversionResult("Succeeded", URI2, "s2")), check_all(
        lambda d: d.status.canary is None, lambda d: serving_action(d) == ONLY_V1,
        lambda d: d.status.failed is not None and d.status.failed.kind == "AnalysisRequired",
        lambda d: "AnalysisRequired" in events(d)), spec=make_spec(analysis={"metrics": []})),
    Case("metrics-removed-during-the-canary-hold-its-step", replace(PROMOTED, canary=canary(trafficSince=ts(0))),
         obs(3, serving=canary_serving(10)), check_all(
        lambda d: d.status.canary is not None and (d.status.canary.step, d.status.canary.state) == (0, "Progressing"),
        lambda d: d.status.phase == "Paused", lambda d: "requireAnalysis" in d.status.message,
        lambda d: serving_action(d) == at_weight(10)), spec=make_spec(analysis={"metrics": []}), now=31),
    Case("dry-run-only-canary-holds-after-passing-rounds",
         replace(PROMOTED, canary=canary(trafficSince=ts(0), lastAnalysisAt=ts(20), stepProgress=20.0)),
         obs(2, serving=canary_serving(10), measurements=(MeasuredValue("e", 0.001),)), check_all(
        lambda d: d.status.canary is not None and d.status.canary.step == 0, lambda d: d.status.phase == "Paused"),
         spec=make_spec(analysis={"metrics": [{"name": "e", "builtin": "errorRate", "max": 0.01, "dryRun": True}]}),
         now=30),
    Case("a-held-canary-can-still-be-promoted-by-hand", replace(PROMOTED, canary=canary(trafficSince=ts(0))),
         obs(2, serving=canary_serving(10), annotations={PROMOTE_ANNOTATION: "2"}), check_all(
        lambda d: d.status.canary is not None and d.status.canary.state == "Promoting"),
         spec=make_spec(analysis={"metrics": []})),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    case.check(decide(case.spec, case.status, case.observations, at(case.now), case.policy))


@pytest.mark.parametrize(("status", "now", "due"), [
    (PROMOTED, 100, False),
    (replace(PROMOTED, canary=canary()), 100, False),
    (LIVE, 9, False),
    (LIVE, 10, True),
    (replace(PROMOTED, canary=canary(trafficSince=ts(0), lastAnalysisAt=ts(10))), 15, False),
    (replace(PROMOTED, canary=canary(trafficSince=ts(0), lastAnalysisAt=ts(10))), 20, True),
    (replace(PROMOTED, canary=canary(state="Promoting", trafficSince=ts(0))), 100, False),
], ids=["no-canary", "traffic-not-confirmed", "before-interval", "at-interval", "since-last-too-soon",
        "since-last-due", "promoting"])
def test_analysis_due(status: Status, now: float, due: bool) -> None:
    assert analysis_due(SPEC, status, at(now)) is due


def test_walks_every_step_then_promotes() -> None:
    """A whole healthy canary, tick by tick, with KServe following the spec."""
    status, t = replace(PROMOTED, pending=Pending(2, K2, ts(0))), 0.0
    seen_weights = []
    observation = obs(2, serving=SERVES_V1, conversion=ConversionResult("Succeeded", URI2, "s2"))
    for _ in range(200):
        d = decide(SPEC, status, observation, at(t))
        status = d.status
        if status.phase == "Promoted" and status.stable and status.stable.generation == 2:
            break
        want = serving_action(d)
        assert want is not None
        if want.canary is not None:
            seen_weights.append(want.weight)
            sv = canary_serving(want.weight)
        else:
            sv = only(want.stable.storageUri, "m-predictor-00002")
        t += 5
        observation = obs(2, serving=sv, measurements=measured() if analysis_due(SPEC, status, at(t)) else None)
    assert status.phase == "Promoted" and status.stable is not None and status.stable.generation == 2
    assert sorted(set(seen_weights)) == [10, 50]
    assert 60 <= t <= 120  # two 30 s steps of analysis, plus confirmation ticks


def test_conditions_keep_transition_time_while_unchanged() -> None:
    d1 = decide(SPEC, PROMOTED, obs(2, serving=SERVES_V1), at(0))
    d2 = decide(SPEC, d1.status, obs(2, serving=SERVES_V1, conversion=ConversionResult("Running")), at(50))
    ready1 = {c.type: c for c in d1.status.conditions}["Ready"]
    ready2 = {c.type: c for c in d2.status.conditions}["Ready"]
    assert ready1.status == ready2.status == "True"
    assert ready1.lastTransitionTime == ready2.lastTransitionTime == ts(0)
    progressing = {c.type: c for c in d2.status.conditions}["Progressing"]
    assert (progressing.status, progressing.lastTransitionTime) == ("True", ts(0))
    assert all(c.observedGeneration == 2 for c in d2.status.conditions)


def test_analysis_records_are_bounded() -> None:
    status = LIVE
    for i in range(20):
        status = decide(SPEC, status, obs(2, serving=canary_serving(10), measurements=measured()), at(10 * (i + 1))).status
        if status.canary and status.canary.step == 1:
            status = replace(status, canary=replace(status.canary, step=0, weight=10, trafficSince=ts(0)))
    assert len(status.analysis) == 12


def test_status_round_trips_through_json() -> None:
    d = decide(SPEC, replace(LIVE, failed=Failure(1, K1, "RolledBack", "r", ts(0)), pending=Pending(3, "k", ts(1))),
               obs(2, serving=canary_serving(10), measurements=measured(error_rate=0.5)), at(10))
    assert status_from_dict(status_to_dict(d.status)) == d.status


# -- progressDeadline: every wait on the serving layer ------------------------------------------

NOT_READY = "RevisionFailed: Revision \"m-predictor-00003\" failed with message: ImagePullBackOff."
DEPLOYING = Status(stable=Version(1, K2, URI2, "s2"), stableConfirmed=False)
PROMOTING = replace(PROMOTED, canary=canary(state="Promoting", trafficSince=ts(0), reason="all steps passed"))
DRAINING = replace(PROMOTED, canary=canary(state="RollingBack", rollbackStage="ZeroTraffic", reason="analysis failed"))
RESTORING = replace(PROMOTED, canary=canary(state="RollingBack", rollbackStage="Restore", reason="analysis failed"))


@pytest.mark.parametrize(("status", "stuck", "done", "what"), [
    (DEPLOYING, ServingObservation(exists=True, not_ready=NOT_READY), only(URI2), "generation 1 to serve 100%"),
    (PROMOTING, canary_serving(10, not_ready=NOT_READY), only(URI2), "generation 2 to serve 100% (promotion)"),
    (DRAINING, canary_serving(10, not_ready=NOT_READY), canary_serving(0), "all traffic off generation 2"),
    (RESTORING, canary_serving(0, not_ready=NOT_READY), SERVES_V1, "generation 1 to serve alone again"),
], ids=["first-version", "promotion", "rollback-traffic-off", "rollback-restore"])
def test_every_wait_on_kserve_is_held_to_the_progress_deadline(
        status: Status, stuck: ServingObservation, done: ServingObservation, what: str) -> None:
    """Past progressDeadline (600 s), whatever KServe was asked to do: one Warning Event saying what
    did not happen and KServe's reason, Progressing False ProgressDeadlineExceeded (a Deployment's
    convention) while the operator keeps asking; back to normal once it happens."""
    generation = 1 if status is DEPLOYING else 2
    first = decide(SPEC, status, obs(generation, serving=stuck), at(0))
    asked = serving_action(first)
    assert first.status.waiting is not None and first.status.waiting.since == ts(0)
    assert what in first.status.waiting.what and not first.status.waiting.exceeded

    before = decide(SPEC, first.status, obs(generation, serving=stuck), at(600))
    assert "ProgressDeadlineExceeded" not in events(before)

    late = decide(SPEC, before.status, obs(generation, serving=stuck), at(601))
    (warning,) = [a for a in of(late, Emit) if a.reason == "ProgressDeadlineExceeded"]
    assert warning.type == "Warning" and what in warning.message and NOT_READY in warning.message
    progressing = {c.type: c for c in late.status.conditions}["Progressing"]
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
    assert NOT_READY in progressing.message and "progressDeadline exceeded" in late.status.message
    assert serving_action(late) == asked  # still asking for the same thing: nothing safer to go back to
    assert status_from_dict(status_to_dict(late.status)) == late.status  # survives a restart

    again = decide(SPEC, late.status, obs(generation, serving=stuck), at(900))
    assert "ProgressDeadlineExceeded" not in events(again)  # reported once

    recovered = decide(SPEC, again.status, obs(generation, serving=done), at(901))
    conditions = {c.type: c for c in recovered.status.conditions}
    assert conditions["Progressing"].reason != "ProgressDeadlineExceeded"
    assert recovered.status.waiting is None or what not in recovered.status.waiting.what


def test_a_new_wait_gets_its_own_deadline() -> None:
    """The deadline runs per thing awaited: the restore after a slow drain starts at zero."""
    d = decide(SPEC, DRAINING, obs(2, serving=canary_serving(10)), at(0))
    d = decide(SPEC, d.status, obs(2, serving=canary_serving(0)), at(500))  # drained: now the restore
    assert d.status.canary is not None and d.status.canary.rollbackStage == "Restore"
    d = decide(SPEC, d.status, obs(2, serving=canary_serving(0)), at(900))
    assert "ProgressDeadlineExceeded" not in events(d) and d.status.waiting is not None
    assert d.status.waiting.since == ts(500)
    d = decide(SPEC, d.status, obs(2, serving=canary_serving(0)), at(1101))
    assert "ProgressDeadlineExceeded" in events(d)


# -- a canary that takes other inputs ---------------------------------------------------------

SIGNED = replace(PROMOTED, stable=replace(STABLE, inputSignature="aaaa", inputs="input:float[30]"))


def converted(signature: str, inputs: str) -> Observations:
    summary = ConversionSummary(passed=True, inputSignature=signature, inputs=inputs)
    return obs(2, serving=SERVES_V1, conversion=ConversionResult("Succeeded", URI2, "s2", summary=summary))


def test_a_version_with_other_inputs_is_refused_before_any_traffic() -> None:
    """Its share of users would get 400 for requests made for the stable (5xx-only error rates
    never see it): refused with the reason, the stable untouched."""
    d = decide(SPEC, replace(SIGNED, pending=Pending(2, K2, ts(0))), converted("bbbb", "input:float[29]"), at(5))
    assert d.status.canary is None and serving_action(d) == ONLY_V1
    assert d.status.failed is not None and d.status.failed.kind == "InputsChanged"
    assert d.status.phase == "Failed" and "input:float[29] instead of input:float[30]" in d.status.message
    assert "allowInputChange" in d.status.message and "generation 1 still serving" in d.status.message
    assert {c.type: c for c in d.status.conditions}["Degraded"].reason == "InputsChanged"
    assert [a.type for a in of(d, Emit) if a.reason == "InputsChanged"] == ["Warning"]
    # Still refused on later ticks; nothing converted again while the spec is unchanged.
    later = decide(SPEC, d.status, obs(2, serving=SERVES_V1), at(10))
    assert of(later, StartConversion) == [] and later.status.phase == "Failed"

    # The user allows it: converted again, then rolled out as a canary.
    allowed = make_spec(allowInputChange=True)
    again = decide(allowed, later.status, obs(3, serving=SERVES_V1), at(20))
    assert of(again, StartConversion) == [StartConversion(3, K2, 1)]
    assert again.status.failed is None  # its refusal is over: promoted later, it must not read Failed
    done = decide(allowed, again.status, replace(converted("bbbb", "input:float[29]"), generation=3), at(30))
    assert done.status.canary is not None and done.status.canary.inputSignature == "bbbb"
    assert [a.type for a in of(done, Emit) if a.reason == "InputsChanged"] == ["Normal"]


def test_a_version_with_the_same_inputs_becomes_the_canary_and_keeps_them_when_promoted() -> None:
    d = decide(SPEC, replace(SIGNED, pending=Pending(2, K2, ts(0))), converted("aaaa", "input:float[30]"), at(5))
    assert d.status.canary is not None and d.status.failed is None and "InputsChanged" not in events(d)
    promoting = replace(d.status, canary=replace(d.status.canary, state="Promoting"))
    p = decide(SPEC, promoting, obs(2, serving=only(URI2, "m-predictor-00002")), at(10))
    assert p.status.stable is not None and (p.status.stable.generation, p.status.stable.inputSignature) == (2, "aaaa")


# -- dryRun: measured and shown, never acted on --------------------------------------------------

DRY_SPEC = make_spec(analysis={"interval": "10s", "failureLimit": 2, "inconclusiveLimit": 3, "metrics": [
    {"name": "error-rate", "builtin": "errorRate", "max": 0.01},
    {"name": "drift-test", "builtin": "inputDriftPValue", "min": 0.01, "dryRun": True},
]})


def dry(p_value: float | None) -> tuple[MeasuredValue, ...]:
    return (MeasuredValue("error-rate", 0.001), MeasuredValue("drift-test", p_value))


def test_a_failing_dry_run_metric_is_recorded_and_never_rolls_back() -> None:
    status = LIVE
    for i in range(1, 4):  # past failureLimit, and past the step's pause
        d = decide(DRY_SPEC, status, obs(2, serving=canary_serving(10), measurements=dry(1e-9)), at(10 * i))
        status = d.status
        assert "RollbackStarted" not in events(d) and "AnalysisFailed" not in events(d)
        assert "AnalysisDryRunFailed" in events(d)
    assert status.canary is not None and status.canary.state == "Progressing"
    assert status.canary.step == 1  # the step ended on its successful rounds
    assert status.canary.failures == {}
    record = [r for r in status.analysis if r.metric == "drift-test"][-1]
    assert (record.verdict, record.dryRun, record.value) == ("Failed", True, 1e-9)
    assert "< min 0.01" in record.reason
    assert status_to_dict(status)["analysis"][-1]["dryRun"] is True
    assert "dryRun" not in status_to_dict(status)["analysis"][-2]  # the acted-on metric's record


def test_a_dry_run_metric_without_data_does_not_pause() -> None:
    status = LIVE
    for i in range(1, 5):
        d = decide(DRY_SPEC, status, obs(2, serving=canary_serving(10), measurements=dry(None)), at(10 * i))
        status = d.status
        assert "AnalysisInconclusive" not in events(d)
    assert status.canary is not None and status.canary.inconclusiveStreak == 0 and status.phase != "Paused"


def test_without_dry_run_the_same_metric_rolls_back() -> None:
    """The control: the same measurements with dryRun off roll the canary back."""
    spec = make_spec(analysis={"interval": "10s", "failureLimit": 2, "inconclusiveLimit": 3, "metrics": [
        {"name": "error-rate", "builtin": "errorRate", "max": 0.01},
        {"name": "drift-test", "builtin": "inputDriftPValue", "min": 0.01},
    ]})
    status, seen = LIVE, []
    for i in range(1, 3):
        d = decide(spec, status, obs(2, serving=canary_serving(10), measurements=dry(1e-9)), at(10 * i))
        status, seen = d.status, seen + events(d)
    assert "RollbackStarted" in seen


def test_a_version_keeps_the_source_it_was_converted_from_through_its_canary_and_promotion() -> None:
    # What a retraining Job is told (retrain.py): the serving version's artifact, whatever the
    # spec names later.
    started = decide(SPEC, PROMOTED, obs(2, serving=SERVES_V1), at(0))
    assert started.status.pending is not None
    assert (started.status.pending.sourceUri, started.status.pending.sampleUri) == (SPEC.source.uri, "file:///s.csv")
    converted = decide(SPEC, started.status,
                       obs(2, serving=SERVES_V1, conversion=ConversionResult("Succeeded", URI2, "s2")), at(1))
    assert converted.status.canary is not None and converted.status.canary.sourceUri == SPEC.source.uri
    assert converted.status.canary.version().sampleUri == "file:///s.csv"
    assert status_from_dict(status_to_dict(converted.status)) == converted.status


def test_a_conversion_that_finishes_as_the_spec_moves_on_is_not_taken_for_the_new_version() -> None:
    # Generation 2's conversion reports success in the tick that first sees generation 3's spec:
    # the result is generation 2's bytes, never generation 3's.
    started = decide(SPEC, PROMOTED, obs(2, serving=SERVES_V1), at(0))
    v3 = make_spec("file:///models/v3.joblib")
    d = decide(v3, started.status, obs(3, serving=SERVES_V1, conversion=ConversionResult("Succeeded", URI2, "s2")),
               at(1))
    assert d.status.canary is None and d.status.pending is not None
    assert (d.status.pending.generation, d.status.pending.versionKey) == (3, v3.version_key)
    assert of(d, StartConversion) == [StartConversion(3, v3.version_key, 1)]
    assert of(d, CancelConversion) == [CancelConversion(2, K2, 1)]
