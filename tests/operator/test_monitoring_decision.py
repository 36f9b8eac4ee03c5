"""Monitoring the serving version over time (operator/monitoring.py): the decision, without I/O."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
from serin.operator import monitoring as mon
from serin.operator.actions import Emit
from serin.operator.conditions import derive_conditions
from serin.operator.spec import MonitoringSpec, Signal, SignalSpec, parse_spec
from serin.operator.status import Monitoring, Status, Version, from_time

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
STABLE = Version(3, "k3", "file:///s", revision="fraud-predictor-00003")
FEATURES = ("amount", "age", "country")
BINS = 10
REFERENCE = mon.Reference(features={f: {b: 1 / BINS for b in range(BINS)} for f in FEATURES},
                          classes={"0": 0.7, "1": 0.3}, accuracy=0.9)
SPEC = MonitoringSpec(interval=300.0, min_rows=200)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def counts(rng: np.random.Generator, rows: int, shift: dict[str, float] | None = None, errors: float = 0.0,
           wrong: float = 0.1) -> mon.Counts:
    """`rows` rows: each feature uniform over its bins, a feature in `shift` tilted towards its top bins."""
    features = {}
    for f in FEATURES:
        p = np.full(BINS, 1 / BINS) * np.exp((shift or {}).get(f, 0.0) * np.linspace(-1, 1, BINS))
        features[f] = dict(enumerate(rng.multinomial(rows, p / p.sum()).astype(float).tolist()))
    ones = float(rng.binomial(rows, 0.3))
    feedback = rows // 10
    return mon.Counts(rows=rows, features=features, classes={"0": rows - ones, "1": ones}, requests=rows,
                      errors=float(rng.binomial(rows, errors)), latency={0.5: rows, 1.0: rows, float("inf"): rows},
                      feedback_rows=feedback, feedback_correct=feedback - float(rng.binomial(feedback, wrong)),
                      estimated_rows=rows, estimated_correct=rows * 0.9)


class Run:
    """A Model's monitoring status through successive evaluations, as the reconcile loop drives it
    (Events posted, then recorded as told)."""

    def __init__(self, spec: MonitoringSpec = SPEC, seed: int = 0) -> None:
        self.spec, self.rng = spec, np.random.default_rng(seed)
        self.m: Monitoring | None = mon.evaluate(spec, None, STABLE, None, T0, "fraud").monitoring
        self.previous = mon.Counts()
        self.minute = 0.0
        self.events: list[Emit] = []

    def step(self, window: mon.Counts, tell: bool = True) -> tuple[Emit, ...]:
        self.minute += self.spec.interval / 60
        obs = mon.MonitoringObservation(STABLE.revision, from_time(at(self.minute)) or "", window, self.previous,
                                        REFERENCE)
        out = mon.evaluate(self.spec, self.m, STABLE, obs, at(self.minute), "fraud")
        self.m = mon.mark_told(out.monitoring) if tell else out.monitoring
        self.previous = window
        self.events += out.emits
        return out.emits

    def signal(self, name: str) -> object:
        assert self.m is not None
        return self.m.signal(name)


def test_monitoring_starts_on_the_confirmed_stable_and_judges_nothing_before_traffic() -> None:
    out = mon.evaluate(SPEC, None, STABLE, None, T0, "fraud")
    assert out.monitoring is not None and out.monitoring.revision == STABLE.revision and not out.emits
    assert out.monitoring.evaluatedAt == from_time(T0) and out.monitoring.health == "Waiting"
    assert mon.seconds_until_due(SPEC, out.monitoring, STABLE, T0) == 300
    few = mon.MonitoringObservation(STABLE.revision, from_time(at(5)) or "", mon.Counts(rows=150), None, REFERENCE)
    later = mon.evaluate(SPEC, out.monitoring, STABLE, few, at(5), "fraud")
    # Too few rows: the window stays open (its start unchanged), nothing is written.
    assert later.monitoring == out.monitoring and not later.emits
    assert mon.monitored_version(SPEC, STABLE, confirmed=False) is None
    assert mon.monitored_version(MonitoringSpec(enabled=False), STABLE, confirmed=True) is None


def test_unchanged_traffic_raises_nothing_for_a_week() -> None:
    run = Run(seed=1)
    for _ in range(7 * 24 * 12):
        assert not run.step(counts(run.rng, 2000))
    assert run.m is not None and run.m.health == "Healthy" and run.m.evaluations == 7 * 24 * 12
    assert all(s.state == mon.WATCHING and s.episode == 0 for s in run.m.signals)


def test_drift_of_one_feature_raises_one_alarm_naming_it_and_ends_when_traffic_returns() -> None:
    run = Run(seed=2)
    for _ in range(12):
        run.step(counts(run.rng, 2000))
    raised: list[Emit] = []
    for _ in range(6):
        raised += run.step(counts(run.rng, 2000, shift={"age": 0.6}))
    drift = [e for e in raised if e.reason == "DriftDetected"]
    assert len(drift) == 1 and "feature age" in drift[0].message and drift[0].type == "Warning"
    signal = run.signal("inputDrift")
    assert signal.state == mon.ALARM and signal.episode == 1 and signal.worst[0].feature == "age"  # type: ignore[attr-defined]
    conditions = {c.type: c for c in derive_conditions(parse_spec({"source": {"uri": "u", "sampleUri": "s"}}),
                                                         Status(monitoring=run.m), 3, "now")}
    assert conditions["Drifted"].status == "True" and conditions["Drifted"].reason == "InputDrift"
    assert "feature age" in conditions["Drifted"].message
    assert run.m is not None and run.m.health == "Drifted"
    # Still drifted: no second Event for the same episode.
    for _ in range(10):
        assert not [e for e in run.step(counts(run.rng, 2000, shift={"age": 0.6})) if e.reason == "DriftDetected"]
    ended: list[Emit] = []
    for _ in range(SPEC.resolve_after):
        ended += run.step(counts(run.rng, 2000))
    assert [e.reason for e in ended] == ["DriftResolved"]
    assert run.signal("inputDrift").state == mon.WATCHING  # type: ignore[attr-defined]
    # A second episode is told under another name.
    again: list[Emit] = []
    for _ in range(8):
        again += run.step(counts(run.rng, 2000, shift={"age": 0.6}))
    names = {e.name for e in run.events if e.reason == "DriftDetected"}
    assert len(names) == 2 and run.signal("inputDrift").episode == 2  # type: ignore[attr-defined]


def test_drift_within_the_tolerance_is_not_an_alarm_at_any_traffic() -> None:
    """A shift of PSI ~0.005 under the default 0.02 tolerance, at 200,000 rows an evaluation."""
    run = Run(seed=3)
    tilt = 0.12
    p = np.exp(tilt * np.linspace(-1, 1, BINS))
    p /= p.sum()
    assert float(np.sum((p - 0.1) * np.log(p / 0.1))) < 0.006
    for _ in range(24 * 12):
        assert not run.step(counts(run.rng, 200_000, shift={"amount": tilt}))


def test_a_kill_between_the_status_write_and_the_event_tells_it_once() -> None:
    """The transition is persisted untold; the next tick (a restarted operator: no observation yet)
    tells it again under the same name, which the apiserver refuses as a duplicate."""
    run = Run(seed=4)
    for _ in range(6):
        run.step(counts(run.rng, 2000))
    emitted: tuple[Emit, ...] = ()
    while not emitted:
        emitted = run.step(counts(run.rng, 5000, shift={"amount": 0.8}), tell=False)
    assert mon.untold(run.m)
    # Killed here, before the Events were posted: the next tick tells the same Events, same names.
    again = mon.evaluate(SPEC, run.m, STABLE, None, at(run.minute + 1), "fraud").emits
    assert [(e.reason, e.name) for e in again] == [(e.reason, e.name) for e in emitted]
    told = mon.mark_told(run.m)
    assert not mon.untold(told) and not mon.evaluate(SPEC, told, STABLE, None, at(run.minute + 2), "fraud").emits


def test_a_dry_run_signal_judges_and_tells_no_one() -> None:
    spec = replace(SPEC, signals={**SPEC.signals, Signal.INPUT_DRIFT: SignalSpec(tolerance=0.02, dry_run=True)})
    run = Run(spec, seed=5)
    messages = []
    for _ in range(20):
        run.step(counts(run.rng, 3000, shift={"age": 0.8}))
        messages.append(run.signal("inputDrift").message)  # type: ignore[attr-defined]
        signal = run.signal("inputDrift")
        assert signal.state == mon.WATCHING and signal.dryRun  # type: ignore[attr-defined]
    assert not [e for e in run.events if e.reason == "DriftDetected"]
    assert any(m.startswith("dry run: would raise an alarm: feature age") for m in messages), messages
    conditions = {c.type: c.status for c in derive_conditions(parse_spec({"source": {"uri": "u", "sampleUri": "s"}}),
                                                              Status(monitoring=run.m), 3, "now")}
    assert conditions["Drifted"] == "False"


def test_accuracy_decay_seen_by_ground_truth_is_performance_degraded() -> None:
    """Reference accuracy 0.9, tolerated drop 0.03: answers now 80 % right."""
    run = Run(seed=6)
    for _ in range(5):
        run.step(counts(run.rng, 2000))
    events: list[Emit] = []
    for _ in range(12):
        events += run.step(counts(run.rng, 2000, wrong=0.2))
    degraded = [e for e in events if e.reason == "PerformanceDegraded"]
    assert len(degraded) == 1 and "accuracy" in degraded[0].message
    assert run.m is not None and run.m.health == "Degraded"
    assert not [e for e in events if e.reason == "DriftDetected"]


def test_errors_beyond_their_share_are_performance_degraded() -> None:
    run = Run(seed=7)
    for _ in range(3):
        run.step(counts(run.rng, 2000))
    events: list[Emit] = []
    for _ in range(4):
        events += run.step(counts(run.rng, 2000, errors=0.05))
    assert [e.reason for e in events] == ["PerformanceDegraded"] and "5xx" in events[0].message


def test_a_silence_tells_no_one_and_status_still_judges() -> None:
    run = Run(seed=8)
    assert run.m is not None
    run.m = replace(run.m, silencedUntil=from_time(at(10_000)))
    for _ in range(10):
        run.step(counts(run.rng, 3000, shift={"country": 0.8}))
    assert run.signal("inputDrift").state == mon.ALARM  # type: ignore[attr-defined]
    assert not [e for e in run.events if e.reason == "DriftDetected"]


def test_a_new_stable_revision_ends_the_old_ones_alarms_and_starts_afresh() -> None:
    run = Run(seed=9)
    while not run.m or not run.m.signal("inputDrift") or run.m.signal("inputDrift").state != mon.ALARM:  # type: ignore[union-attr]
        run.step(counts(run.rng, 3000, shift={"country": 0.8}))
    newer = Version(4, "k4", "file:///s4", revision="fraud-predictor-00004")
    out = mon.evaluate(SPEC, run.m, newer, None, at(run.minute + 1), "fraud")
    assert [e.reason for e in out.emits] == ["DriftResolved"] and "fraud-predictor-00004" in out.emits[0].message
    assert out.monitoring is not None and out.monitoring.revision == newer.revision and not out.monitoring.signals


def test_without_a_baseline_a_signal_says_so() -> None:
    run = Run(seed=10)
    obs = mon.MonitoringObservation(STABLE.revision, from_time(at(5)) or "", counts(run.rng, 500), None,
                                    mon.Reference())
    out = mon.evaluate(SPEC, run.m, STABLE, obs, at(5), "fraud")
    assert out.monitoring is not None
    states = {x.signal: x.state for x in out.monitoring.signals}
    assert states["inputDrift"] == mon.NO_BASELINE and states["accuracy"] == mon.NO_BASELINE
    assert states["errorRate"] == mon.WATCHING and not out.emits


def test_the_status_round_trips_through_its_dict() -> None:
    from serin.operator.status import status_from_dict, status_to_dict

    run = Run(seed=11)
    for _ in range(4):
        run.step(counts(run.rng, 3000, shift={"age": 0.8}))
    status = Status(monitoring=run.m)
    assert status_from_dict(status_to_dict(status)).monitoring == run.m


def test_serin_silence_names_the_serving_generation_and_is_cleared_once_read() -> None:
    """The annotation `serin silence` writes: honoured for the generation it names, cleared either
    way, and a silence for another generation (a later promotion) is not applied to this one."""
    from serin.operator.actions import ClearAnnotation
    from serin.operator.observations import Observations, ServingObservation, Variant
    from serin.operator.rollout import SILENCE_ANNOTATION, decide

    spec = parse_spec({"source": {"uri": "file:///m/v3.joblib", "sampleUri": "file:///s.csv"},
                       "rollout": {"steps": []}})
    stable = replace(STABLE, versionKey=spec.version_key)
    serving = ServingObservation(exists=True, settled=True,
                                 stable=Variant(stable.storageUri, stable.revision, True, 100))
    status = Status(phase="Promoted", observedGeneration=3, stable=stable, stableConfirmed=True)
    until = from_time(at(120)) or ""
    for generation, honoured in (("3", True), ("2", False)):
        d = decide(spec, status, Observations(3, {SILENCE_ANNOTATION: f"{generation}/{until}"}, serving, model="fraud"),
                   T0)
        # Removed only while it holds what was read: a newer silence written meanwhile is kept.
        assert ClearAnnotation(SILENCE_ANNOTATION, f"{generation}/{until}") in d.actions
        assert d.status.monitoring is not None
        assert (d.status.monitoring.silencedUntil == until) is honoured
        assert any(isinstance(a, Emit) and a.reason == "MonitoringSilenced" for a in d.actions) is honoured


def test_an_unreadable_prometheus_is_told_once_per_kind_of_trouble() -> None:
    run = Run(seed=12)
    m = run.m

    def failing(error: str, minute: float) -> mon.Outcome:
        obs = mon.MonitoringObservation(STABLE.revision, from_time(at(minute)) or "", mon.Counts(), error=error)
        return mon.evaluate(SPEC, m, STABLE, obs, at(minute), "fraud")

    first = failing("prometheus busy: no query slot within 5s (16 in flight, 3 more waiting)", 5)
    assert [e.reason for e in first.emits] == ["MonitoringInconclusive"]
    m = first.monitoring
    again = failing("prometheus busy: no query slot within 5s (16 in flight, 40 more waiting)", 10)
    assert not again.emits and again.monitoring == m  # nothing new: no status write
    other = failing("prometheus unreachable: ClientConnectorError: refused", 15)
    assert [e.reason for e in other.emits] == ["MonitoringInconclusive"]
    assert other.monitoring is not None and other.monitoring.problem.startswith("prometheus unreachable")
    # The window is still open from where it was: nothing was judged or skipped.
    assert other.monitoring.evaluatedAt == run.m.evaluatedAt  # type: ignore[union-attr]


def test_a_window_left_open_is_read_again_an_interval_later_not_at_once() -> None:
    """A Model without traffic: its window stays open (too few rows) and evaluatedAt stays; the
    operator's memory of the read, not the status, spaces the reads (no reconcile spin)."""
    from serin.operator.rollout import next_due

    spec = parse_spec({"source": {"uri": "file:///m/v3.joblib", "sampleUri": "file:///s.csv"},
                       "rollout": {"steps": []}})
    m = Run().m
    assert m is not None
    status = Status(stable=STABLE, stableConfirmed=True, monitoring=m)
    an_hour_later = at(60)
    assert mon.due(spec.monitoring, m, STABLE, an_hour_later)  # nothing read since the start: read now
    assert next_due(spec, status, an_hour_later) == 0.0
    # Read at that instant, too few rows: the next read is an interval later, not at once.
    assert not mon.due(spec.monitoring, m, STABLE, an_hour_later, read_at=an_hour_later)
    assert next_due(spec, status, an_hour_later, monitor_read=an_hour_later) == spec.monitoring.interval
    assert mon.due(spec.monitoring, m, STABLE, at(65), read_at=an_hour_later)


def test_an_accuracy_alarm_does_not_end_on_windows_without_ground_truth() -> None:
    run = Run(seed=13)
    for _ in range(3):
        run.step(counts(run.rng, 2000))
    while run.signal("accuracy").state != mon.ALARM:  # type: ignore[attr-defined]
        run.step(counts(run.rng, 2000, wrong=0.25))
    for _ in range(SPEC.resolve_after + 3):
        run.step(replace(counts(run.rng, 2000), feedback_rows=0.0, feedback_correct=0.0))
    assert run.signal("accuracy").state == mon.ALARM  # type: ignore[attr-defined]
    assert not [e for e in run.events if e.reason == "PerformanceRecovered"]


def test_an_alarm_survives_a_read_without_the_reference() -> None:
    run = Run(seed=14)
    while run.signal("inputDrift") is None or run.signal("inputDrift").state != mon.ALARM:  # type: ignore[attr-defined]
        run.step(counts(run.rng, 3000, shift={"age": 0.9}))
    before = run.signal("inputDrift")
    run.minute += 5
    obs = mon.MonitoringObservation(STABLE.revision, from_time(at(run.minute)) or "", counts(run.rng, 3000),
                                    run.previous, mon.Reference())
    out = mon.evaluate(SPEC, run.m, STABLE, obs, at(run.minute), "fraud")
    assert out.monitoring is not None and out.monitoring.signal("inputDrift") == before
    assert not out.emits


def test_event_names_differ_when_monitoring_starts_again() -> None:
    m = Run().m
    assert m is not None
    later = replace(m, startedAt=from_time(at(60)) or "")
    assert mon.event_name("fraud", m, "inputDrift", 1, "raised") != mon.event_name("fraud", later, "inputDrift", 1,
                                                                                   "raised")
    name = mon.event_name("a" * 199 + "-" + "b" * 20, m, "inputDrift", 1, "raised")
    assert ".monitoring." in name and "-.monitoring" not in name and len(name) <= 253


def test_conditions_are_unknown_while_nothing_can_be_judged() -> None:
    run = Run(seed=15)
    for _ in range(2):
        run.step(counts(run.rng, 2000))
    assert run.m is not None
    kinds = {k: (s, r) for k, s, r, _ in mon.conditions(replace(run.m, problem="prometheus unreachable: refused"))}
    assert kinds["Drifted"] == ("Unknown", "Inconclusive")
    no_baseline = replace(run.m, signals=tuple(replace(x, state=mon.NO_BASELINE) for x in run.m.signals))
    assert {k: (s, r) for k, s, r, _ in mon.conditions(no_baseline)}["Drifted"] == ("Unknown", "NoBaseline")
