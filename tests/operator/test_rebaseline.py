"""`serin rebaseline` (operator/monitoring.py rebaseline, rollout.py _rebaseline): accepting live
traffic as the serving version's reference, without I/O."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import numpy as np
import pytest
from serin.operator import monitoring as mon
from serin.operator.actions import ClearAnnotation, Emit
from serin.operator.observations import Observations, ServingObservation, Variant
from serin.operator.rollout import REBASELINE_ANNOTATION, decide
from serin.operator.spec import MonitoringSpec, Signal, SignalSpec, parse_spec
from serin.operator.status import Status, from_time, status_from_dict, status_to_dict
from test_monitoring_decision import REFERENCE, SPEC, STABLE, T0, Run, at, counts

SHIFT = {"age": 0.6}


def request(hours: float = 24, end_minute: float = 0.0, generation: int = STABLE.generation,
            reason: str = "new market") -> mon.RebaselineRequest:
    end = at(end_minute)
    return mon.RebaselineRequest(generation, from_time(end - dt.timedelta(hours=hours)) or "", from_time(end) or "",
                                 reason)


def drifted_alarm(run: Run) -> None:
    for _ in range(12):
        run.step(counts(run.rng, 2000))
    for _ in range(8):
        run.step(counts(run.rng, 2000, shift=SHIFT))
    assert run.signal("inputDrift").state == mon.ALARM  # type: ignore[attr-defined]


def rebaselined(run: Run, window: mon.Counts, req: mon.RebaselineRequest) -> tuple[Emit, ...]:
    assert run.m is not None
    m, emits = mon.rebaseline(run.spec, run.m, mon.RebaselineObservation(req, window, REFERENCE), at(run.minute))
    run.m = m
    return emits


def test_an_accepted_drift_ends_its_alarm_and_that_traffic_raises_nothing_after_but_the_old_one_does() -> None:
    run = Run(seed=21)
    drifted_alarm(run)
    day = counts(run.rng, 24 * 12 * 2000, shift=SHIFT)  # a day of the drifted traffic
    emits = rebaselined(run, day, request(end_minute=run.minute))
    assert [e.reason for e in emits] == ["MonitoringRebaselined"] and "new market" in emits[0].message
    assert run.m is not None and run.m.baseline is not None and run.m.baseline.reason == "new market"
    assert run.m.baseline.rows == day.rows and set(run.m.baseline.features) == set(REFERENCE.features)
    assert abs(sum(run.m.baseline.features["age"]) - 1) < 1e-4
    assert run.m.health == "Healthy"
    x = run.signal("inputDrift")
    assert x.state == mon.WATCHING and x.cusum == {} and x.message.startswith("rebaselined")  # type: ignore[attr-defined]
    # The alarm's end is told, once, as ended by the rebaseline (not as traffic back within tolerance).
    ended = run.step(counts(run.rng, 2000, shift=SHIFT))
    assert [e.reason for e in ended] == ["DriftResolved"] and "alarm ended" in ended[0].message
    assert "rebaselined" in ended[0].message
    # A week of the accepted traffic: nothing.
    for _ in range(7 * 24 * 12):
        assert not run.step(counts(run.rng, 2000, shift=SHIFT))
    # The old traffic is now the drift, judged against the new reference.
    back: list[Emit] = []
    for _ in range(12):
        back += run.step(counts(run.rng, 2000))
    assert [e.reason for e in back] == ["DriftDetected"] and "feature age" in back[0].message
    # The baseline survives the status round trip (an operator restart).
    status = Status(monitoring=run.m)
    assert status_from_dict(status_to_dict(status)).monitoring == run.m


def test_a_window_too_small_to_stand_for_a_reference_is_refused_and_changes_nothing() -> None:
    run = Run(seed=22)
    drifted_alarm(run)
    before = run.m
    emits = rebaselined(run, counts(run.rng, 3000, shift=SHIFT), request(end_minute=run.minute))
    assert [e.reason for e in emits] == ["RebaselineRefused"] and emits[0].type == "Warning"
    # 10 bins at tolerance 0.02: (10 - 1) / (2 x 0.05 x 0.02) rows, so that its noise uses 5 % of it.
    assert "needs 4500" in emits[0].message and "longer window" in emits[0].message
    assert run.m == before
    unread = mon.rebaseline(SPEC, before, mon.RebaselineObservation(request(), error="prometheus unreachable: x"),  # type: ignore[arg-type]
                            at(run.minute))
    assert unread[0] == before and "could not be read (prometheus unreachable: x); run serin rebaseline again" \
        in unread[1][0].message


def test_the_same_request_is_applied_once() -> None:
    """A restart between the status write and the annotation's removal reads the request again."""
    run = Run(seed=23)
    drifted_alarm(run)
    req = request(end_minute=run.minute)
    day = counts(run.rng, 100_000, shift=SHIFT)
    assert rebaselined(run, day, req)
    after = run.m
    assert rebaselined(run, day, req) == () and run.m == after


def test_each_accuracy_signal_is_rebaselined_from_its_own_rows_to_the_lower_end_of_its_interval() -> None:
    run = Run(seed=24)
    for _ in range(3):
        run.step(counts(run.rng, 2000))
    # 20,000 rows with ground truth, 85 % right; the estimate (counts()) says 90 % over 100,000.
    window = replace(counts(run.rng, 100_000), feedback_rows=20_000.0, feedback_correct=17_000.0)
    emits = rebaselined(run, window, request(end_minute=run.minute))
    assert run.m is not None and run.m.baseline is not None
    b = run.m.baseline
    assert b.accuracy is not None and 0.844 < b.accuracy < 0.85  # its 95 % lower end (0.8450)
    assert b.estimatedAccuracy is not None and 0.898 < b.estimatedAccuracy < 0.9
    # The interval spans at most a quarter of the tolerated drop (0.03): the limit moves little.
    assert 0.85 - b.accuracy <= 0.25 * 0.03
    assert set(b.signals) == {"inputDrift", "predictionShift", "accuracy", "estimatedAccuracy"}
    reference = mon.effective_reference(run.m, REFERENCE)
    assert (reference.accuracy, reference.estimated_accuracy) == (b.accuracy, b.estimatedAccuracy)
    assert reference.features["age"] == dict(enumerate(b.features["age"]))
    assert "accuracy 0.84" in emits[0].message and "estimatedAccuracy 0.89" in emits[0].message


def test_too_little_ground_truth_keeps_accuracys_reference_and_its_alarm() -> None:
    """The estimate never stands in for ground truth (its calibration is what drift breaks)."""
    run = Run(seed=25)
    for _ in range(12):
        run.step(counts(run.rng, 2000))
    for _ in range(30):
        run.step(counts(run.rng, 2000, wrong=0.3))  # ground truth: 70 % right, the profile says 90 %
    assert run.signal("accuracy").state == mon.ALARM  # type: ignore[attr-defined]
    emits = rebaselined(run, replace(counts(run.rng, 100_000), feedback_rows=400.0, feedback_correct=300.0),
                        request(end_minute=run.minute))
    assert run.m is not None and run.m.baseline is not None and run.m.baseline.accuracy is None
    assert "accuracy" not in run.m.baseline.signals and "estimatedAccuracy" in run.m.baseline.signals
    assert run.signal("accuracy").state == mon.ALARM  # type: ignore[attr-defined]
    assert "accuracy kept its reference (400 rows in the window" in emits[0].message


def test_an_accuracy_with_its_own_min_is_not_rebaselined() -> None:
    spec = MonitoringSpec(interval=300.0, min_rows=200,
                          signals={**SPEC.signals, Signal.ACCURACY: SignalSpec(tolerance=0.03, minimum=0.85)})
    run = Run(spec, seed=30)
    for _ in range(30):
        run.step(counts(run.rng, 2000, wrong=0.3))
    assert run.signal("accuracy").state == mon.ALARM  # type: ignore[attr-defined]
    rebaselined(run, replace(counts(run.rng, 100_000), feedback_rows=50_000.0, feedback_correct=35_000.0),
                request(end_minute=run.minute))
    assert run.m is not None and run.m.baseline is not None and "accuracy" not in run.m.baseline.signals
    assert run.signal("accuracy").state == mon.ALARM  # type: ignore[attr-defined]
    assert not [e for e in run.step(counts(run.rng, 2000, wrong=0.3)) if e.reason == "PerformanceRecovered"]


def test_an_alarm_the_rebaseline_did_not_replace_is_not_told_as_ended_by_it() -> None:
    run = Run(seed=32)
    drifted_alarm(run)
    rebaselined(run, counts(run.rng, 100_000, shift=SHIFT), request(end_minute=run.minute))
    assert run.m is not None and run.m.baseline is not None
    error = mon.SignalStatus("errorRate", mon.WATCHING, run.m.baseline.takenAt, message="share of 5xx answers 0",
                             episode=1, announced=f"{mon.ALARM}/1")
    run.m = replace(run.m, signals=(*run.m.signals, error))
    told = {e.message.split(":")[1].strip(): e.message for e in mon._untold(run.m, "fraud", at(run.minute))}
    assert "rebaselined" in told["inputDrift alarm ended (episode 1)"]
    assert "errorRate back within tolerance (episode 1)" in told


def test_a_signal_without_a_baseline_gets_one() -> None:
    """A profile without accuracy (no sampleLabels): accuracy says NoBaseline until a rebaseline
    with ground truth gives it one; then it is judged."""
    spec = MonitoringSpec(interval=300.0, min_rows=200)
    run = Run(spec, seed=26)
    no_accuracy = replace(REFERENCE, accuracy=None)
    m = run.m
    obs = mon.MonitoringObservation(STABLE.revision, from_time(at(5)) or "", counts(run.rng, 2000), None, no_accuracy)
    m = mon.evaluate(spec, m, STABLE, obs, at(5), "fraud").monitoring
    assert m is not None and m.signal("accuracy").state == mon.NO_BASELINE  # type: ignore[union-attr]
    window = replace(counts(run.rng, 100_000), feedback_rows=10_000.0, feedback_correct=9000.0)
    m, _ = mon.rebaseline(spec, m, mon.RebaselineObservation(request(end_minute=5), window, no_accuracy), at(5))
    obs = mon.MonitoringObservation(STABLE.revision, from_time(at(10)) or "", counts(run.rng, 2000), None, no_accuracy)
    m = mon.evaluate(spec, m, STABLE, obs, at(10), "fraud").monitoring
    assert m is not None and m.signal("accuracy").state == mon.WATCHING  # type: ignore[union-attr]


def test_only_the_signals_it_can_stand_for_are_rebaselined() -> None:
    """Error rate and latency have no reference to replace: their evidence is kept."""
    spec = MonitoringSpec(interval=300.0, min_rows=200)
    run = Run(spec, seed=27)
    for _ in range(6):
        run.step(counts(run.rng, 2000, errors=0.05))
    before = run.signal("errorRate")
    rebaselined(run, counts(run.rng, 100_000), request(end_minute=run.minute))
    assert run.signal("errorRate") == before


@pytest.mark.parametrize(("raw", "words"), [
    ("3/24h", "not JSON"),
    ("[1]", "not a JSON object"),
    (json.dumps({"generation": "3", "start": "2026-12-01T00:00:00Z", "end": "2026-12-01T01:00:00Z"}), "integer generation"),
    (json.dumps({"generation": True, "start": "2026-12-01T00:00:00Z", "end": "2026-12-01T01:00:00Z"}), "integer generation"),
    (json.dumps({"generation": 3, "start": "yesterday", "end": "2026-12-01T01:00:00Z"}), "RFC 3339"),
    (json.dumps({"generation": 3, "start": "2026-12-01T00:00:00", "end": "2026-12-01T01:00:00Z"}), "RFC 3339"),
    (json.dumps({"generation": 3, "start": "2026-12-01T01:00:00Z", "end": "2026-12-01T01:00:00Z"}), "longer than 0s"),
    (json.dumps({"generation": 3, "start": "2026-10-01T00:00:00Z", "end": "2026-12-01T00:00:00Z"}), "at most 31 days"),
    (json.dumps({"generation": 3, "start": "2026-12-01T00:00:00Z", "end": "2026-12-02T00:00:00Z"}), "in the future"),
])
def test_a_malformed_request_is_refused_saying_why(raw: str, words: str) -> None:
    got = mon.parse_rebaseline(raw, T0)
    assert isinstance(got, str) and words in got, got


def test_serin_rebaseline_names_the_serving_generation_and_is_cleared_once_read() -> None:
    spec = parse_spec({"source": {"uri": "file:///m/v3.joblib", "sampleUri": "file:///s.csv"},
                       "rollout": {"steps": []}})
    stable = replace(STABLE, versionKey=spec.version_key)
    serving = ServingObservation(exists=True, settled=True,
                                 stable=Variant(stable.storageUri, stable.revision, True, 100))
    run = Run(seed=28)
    run.step(counts(run.rng, 2000))
    status = Status(phase="Promoted", observedGeneration=3, stable=stable, stableConfirmed=True, monitoring=run.m)
    req = request(end_minute=run.minute)
    raw = json.dumps({"generation": req.generation, "start": req.start, "end": req.end, "reason": req.reason})
    window = counts(run.rng, 100_000, shift=SHIFT)
    now = at(run.minute + 1)

    def reasons(d) -> list[str]:  # type: ignore[no-untyped-def]
        return [a.reason for a in d.actions if isinstance(a, Emit)]

    taken = decide(spec, status, Observations(3, {REBASELINE_ANNOTATION: raw}, serving, model="fraud",
                                              rebaseline=mon.RebaselineObservation(req, window, REFERENCE)), now)
    assert ClearAnnotation(REBASELINE_ANNOTATION, raw) in taken.actions and "MonitoringRebaselined" in reasons(taken)
    assert taken.status.monitoring is not None and taken.status.monitoring.baseline is not None
    assert taken.status.monitoring.baseline.start == req.start
    # Another generation (the command raced a promotion), or a request that was not read: refused, cleared.
    other = raw.replace(f'"generation": {req.generation}', '"generation": 2')
    for value in (other, raw, "junk"):
        d = decide(spec, status, Observations(3, {REBASELINE_ANNOTATION: value}, serving, model="fraud"), now)
        assert ClearAnnotation(REBASELINE_ANNOTATION, value) in d.actions and reasons(d) == ["RebaselineRefused"]
        assert d.status.monitoring is not None and d.status.monitoring.baseline is None


def test_rows_needed_keeps_the_baselines_noise_to_a_twentieth_of_the_tolerance() -> None:
    # The expected KL of n multinomial rows from their own distribution: about (bins - 1) / 2n.
    rng = np.random.default_rng(29)
    p = np.full(10, 0.1)
    n = mon.rows_needed(10, 0.02)
    kl = [float(np.sum(np.maximum(q := rng.multinomial(n, p) / n, 1e-12) * np.log(np.maximum(q, 1e-12) / p)))
          for _ in range(2000)]
    assert n == 4500 and np.mean(kl) <= 0.05 * 0.02 * 1.1
    assert mon.rows_needed(2, 0.5) == mon.BASELINE_MIN_ROWS


def test_a_second_rebaseline_keeps_what_it_does_not_replace() -> None:
    run = Run(seed=33)
    drifted_alarm(run)
    first = replace(counts(run.rng, 100_000, shift=SHIFT), feedback_rows=20_000.0, feedback_correct=17_000.0)
    rebaselined(run, first, request(end_minute=run.minute))
    assert run.m is not None and run.m.baseline is not None
    accuracy = run.m.baseline.accuracy
    # Too little ground truth the second time: accuracy keeps the first rebaseline's, not the profile's.
    second = replace(counts(run.rng, 100_000, shift=SHIFT), feedback_rows=300.0, feedback_correct=250.0)
    emits = rebaselined(run, second, request(hours=2, end_minute=run.minute + 60))
    assert run.m.baseline.accuracy == accuracy and "accuracy" in run.m.baseline.signals
    assert mon.effective_reference(run.m, REFERENCE).accuracy == accuracy
    assert "accuracy kept its reference" in emits[0].message


def test_a_regressor_gets_no_accuracy_from_a_rebaseline() -> None:
    run = Run(seed=34)
    values = {f"value <= {x!r}": 25_000.0 for x in (-2.0, 0.0, 2.0)} | {"value above the last cut": 25_000.0}
    window = replace(counts(run.rng, 100_000), classes=values, feedback_rows=5000.0, feedback_correct=0.0,
                     estimated_rows=0.0, estimated_correct=0.0)
    emits = rebaselined(run, window, request(end_minute=run.minute))
    assert run.m is not None and run.m.baseline is not None
    assert run.m.baseline.accuracy is None and run.m.baseline.estimatedAccuracy is None
    assert "accuracy" not in emits[0].message.split(":")[1] and "kept its reference" not in emits[0].message
