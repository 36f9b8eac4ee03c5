"""spec.monitoring.baseline: drift judged against the trailing traffic or the same hours a week
earlier (operator/monitoring.py moving_reference, baseline_window), without I/O."""

from __future__ import annotations

import datetime as dt

import numpy as np
from serin.operator import monitoring as mon
from serin.operator.actions import Emit
from serin.operator.spec import BaselineSource, BaselineSpec, MonitoringSpec, Signal, parse_spec
from serin.operator.status import Monitoring, from_time
from test_monitoring_decision import BINS, FEATURES, REFERENCE, STABLE, T0

EVALUATIONS_PER_HOUR = 12


def traffic(rng: np.random.Generator, rows: int, tilt: dict[str, float]) -> mon.Counts:
    features = {}
    for f in FEATURES:
        p = np.exp(tilt.get(f, 0.0) * np.linspace(-1, 1, BINS))
        features[f] = dict(enumerate(rng.multinomial(rows, p / p.sum()).astype(float).tolist()))
    ones = float(rng.binomial(rows, 0.3))
    return mon.Counts(rows=rows, features=features, classes={"0": rows - ones, "1": ones}, requests=rows,
                      latency={1.0: rows, float("inf"): rows})


def nightly(minute: float, shift: dict[str, float] | None = None) -> dict[str, float]:
    """The world's distribution at an instant: `amount` tilted far beyond the tolerance at night
    (PSI about 0.12 from midnight to 6 am), plus any `shift`."""
    hour = (minute / 60) % 24
    return {"amount": 0.6 if hour < 6 else 0.0, **(shift or {})}


def run(spec: MonitoringSpec, days: float, shift_from_day: float | None = None, seed: int = 0,
        rows: int = 2000, cycle: bool = True) -> tuple[list[tuple[float, Emit]], Monitoring | None]:
    """Evaluations every 5 minutes for `days`; a moving baseline's counts drawn from the world as
    it was over the baseline's window (a day behind, or a week earlier), with 10 x the rows."""
    rng = np.random.default_rng(seed)
    m = mon.evaluate(spec, None, STABLE, None, T0, "fraud").monitoring
    told: list[tuple[float, Emit]] = []
    previous = mon.Counts()
    for i in range(1, int(days * 24 * EVALUATIONS_PER_HOUR) + 1):
        minute = i * 5.0

        def world(at_minute: float) -> dict[str, float]:
            shifted = shift_from_day is not None and at_minute >= shift_from_day * 24 * 60
            shift = {"age": 0.6} if shifted else {}
            return nightly(at_minute, shift) if cycle else shift

        window = traffic(rng, rows, world(minute))
        moving = mon.baseline_window(spec, 300)
        baseline = None
        if moving is not None:
            centre = minute - (moving[0] + moving[1] / 2) / 60
            if centre - moving[1] / 120 >= 0:  # the Model served then
                baseline = traffic(rng, rows * 10, world(centre))
        at = T0 + dt.timedelta(minutes=minute)
        obs = mon.MonitoringObservation(STABLE.revision, from_time(at) or "", window, previous, REFERENCE, baseline)
        out = mon.evaluate(spec, m, STABLE, obs, at, "fraud")
        m = mon.mark_told(out.monitoring)
        told += [(minute / 60 / 24, e) for e in out.emits]
        previous = window
    return told, m


def drift_events(told: list[tuple[float, Emit]]) -> list[tuple[float, str, str]]:
    return [(round(day, 2), e.reason, e.message.split(":")[1].strip()) for day, e in told
            if e.reason in ("DriftDetected", "DriftResolved")]


PROFILE = MonitoringSpec(interval=300.0, min_rows=200)
LAST_WEEK = MonitoringSpec(interval=300.0, min_rows=200, baseline=BaselineSpec(BaselineSource.LAST_WEEK, 7200.0))
TRAILING = MonitoringSpec(interval=300.0, min_rows=200, baseline=BaselineSpec(BaselineSource.TRAILING, 86400.0))


def test_traffic_that_follows_the_hour_alarms_against_the_profile_and_not_against_last_week() -> None:
    against_profile, _ = run(PROFILE, days=3, seed=1)
    assert any(r == "DriftDetected" for _, r, _ in drift_events(against_profile))
    # The first week has no last week: the profile stands in (and alarms at night, as above); from
    # the second week on, last week's same hours are the reference: three more weeks, no alarm.
    told, m = run(LAST_WEEK, days=28, seed=2)
    after_first_week = [e for e in drift_events(told) if e[0] >= 7.5]
    assert not [e for e in after_first_week if e[1] == "DriftDetected"], after_first_week
    assert m is not None and "against last week's 2h" in (m.signal("inputDrift").message or "")  # type: ignore[union-attr]


def test_a_real_shift_on_top_of_the_daily_cycle_is_detected_against_last_week() -> None:
    told, m = run(LAST_WEEK, days=16, shift_from_day=14.0, seed=3)
    detected = [e for e in drift_events(told) if e[0] >= 14.0 and e[1] == "DriftDetected"]
    assert detected and detected[0][0] < 14.0 + 2 / 24, detected  # within two hours at 2,000 rows an evaluation
    assert m is not None and m.signal("inputDrift").worst[0].feature == "age"  # type: ignore[union-attr]


def test_a_trailing_baseline_detects_a_change_and_absorbs_it_after_its_window() -> None:
    """A change detector: a lasting shift is an alarm until the day behind has taken it in. (A daily
    cycle beyond the tolerance is not for it: the night differs from the day's average; lastWeek.)"""
    told, m = run(TRAILING, days=5, shift_from_day=2.0, seed=4, cycle=False)
    events = drift_events(told)
    assert [e[1] for e in events] == ["DriftDetected", "DriftResolved"], events
    assert 2.0 <= events[0][0] < 2.0 + 2 / 24 and 2.5 < events[1][0] < 3.5, events
    assert m is not None and "against the trailing 24h" in (m.signal("inputDrift").message or "")  # type: ignore[union-attr]


def test_a_baseline_window_with_too_few_rows_gives_way_to_the_profile() -> None:
    rng = np.random.default_rng(5)
    few = traffic(rng, 500, {})  # 10 bins at tolerance 0.02 need 4,500 rows, two classes 1,000
    drift, shift = Signal.INPUT_DRIFT, Signal.PREDICTION_SHIFT
    ref, notes = mon.moving_reference(LAST_WEEK, few, REFERENCE)
    assert ref.features == REFERENCE.features and ref.classes == REFERENCE.classes
    assert notes == dict.fromkeys((drift, shift), "against the profile (last week's 2h had too few rows)")
    # Enough for the classes (1,000), not for the features (4,500): each signal says its own.
    some = traffic(rng, 1500, {})
    ref, notes = mon.moving_reference(LAST_WEEK, some, REFERENCE)
    assert ref.features == REFERENCE.features and ref.classes != REFERENCE.classes
    assert notes == {drift: "against the profile (last week's 2h had too few rows)", shift: "against last week's 2h"}
    plenty = traffic(rng, 50_000, {"amount": 0.6})
    ref, notes = mon.moving_reference(LAST_WEEK, plenty, REFERENCE)
    assert notes[drift] == "against last week's 2h" and ref.features["amount"] != REFERENCE.features["amount"]
    assert abs(sum(ref.features["amount"].values()) - 1) < 1e-9 and ref.accuracy == REFERENCE.accuracy
    assert mon.moving_reference(PROFILE, plenty, REFERENCE) == (REFERENCE, {})
    # The moving window could not be read (Prometheus busy on a long range): the profile, said so.
    ref, notes = mon.moving_reference(LAST_WEEK, None, REFERENCE, "prometheus busy: x")
    assert ref == REFERENCE and notes[drift] == "against the profile (last week's 2h could not be read: prometheus busy: x)"


def test_the_baseline_windows_sit_where_they_say() -> None:
    assert mon.baseline_window(PROFILE, 300) is None
    assert mon.baseline_window(TRAILING, 300) == (300, 86400)  # the day just before the window
    ends_before, length = mon.baseline_window(LAST_WEEK, 300)  # type: ignore[misc]
    # Centred on the evaluation window's middle (150 s before now), seven days earlier.
    assert length == 7200 and ends_before + length / 2 == 7 * 86400 + 150
    # A window longer than the baseline's: last week's span at least as long, on the same centre.
    ends_before, length = mon.baseline_window(LAST_WEEK, 6 * 3600)  # type: ignore[misc]
    assert length == 6 * 3600 and ends_before + length / 2 == 7 * 86400 + 3 * 3600


def test_the_spec_gives_each_moving_baseline_its_default_window() -> None:
    def spec(baseline: dict[str, str]) -> BaselineSpec:
        return parse_spec({"source": {"uri": "u", "sampleUri": "s"}, "monitoring": {"baseline": baseline}}
                          ).monitoring.baseline
    assert spec({}) == BaselineSpec()
    assert spec({"from": "trailing"}) == BaselineSpec(BaselineSource.TRAILING, 86400.0)
    assert spec({"from": "lastWeek"}) == BaselineSpec(BaselineSource.LAST_WEEK, 7200.0)
    assert spec({"from": "lastWeek", "window": "30m"}) == BaselineSpec(BaselineSource.LAST_WEEK, 1800.0)
