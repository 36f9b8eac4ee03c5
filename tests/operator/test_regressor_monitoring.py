"""Prediction shift over time for a regressor: its value histogram's buckets (the profile's cuts)
against the profile's share of each, read as Prometheus answers them (monitoring_queries.parse)
and judged by the same detector as a classifier's classes."""

from __future__ import annotations

import datetime as dt

import numpy as np
from serin.operator import monitoring as mon
from serin.operator import monitoring_queries as q
from serin.operator.spec import MonitoringSpec
from serin.operator.status import from_time
from serin.runtime import metric_names as mn
from test_monitoring_decision import STABLE, T0

CUTS = (-2.0, 0.0, 2.0)
SHARES = (0.25, 0.25, 0.25, 0.25)


def answer(rows_per_bin: list[float]) -> list[tuple[dict[str, str], float]]:
    """What the window query returns for a regressor: cumulative value buckets (differenced
    counters) and the reference gauges, labelled `le` as prometheus_client writes them."""
    out: list[tuple[dict[str, str], float]] = []
    running = 0.0
    for le, n in zip([*CUTS, float("inf")], rows_per_bin, strict=True):
        running += n
        label = "+Inf" if le == float("inf") else f"{le:.1f}"
        out.append(({"name": f"{mn.PREDICTION_VALUE}_bucket", "le": label}, running))
    for le, share in zip([*CUTS, float("inf")], SHARES, strict=True):
        label = "+Inf" if le == float("inf") else f"{le:.1f}"
        out.append(({"name": mn.PREDICTION_VALUE_REFERENCE_RATIO, "le": label}, share))
    out.append(({"name": mn.INFERENCE_ROWS_TOTAL}, sum(rows_per_bin)))
    return out


def test_the_value_buckets_read_as_bins_paired_with_the_profiles_shares() -> None:
    counts, reference = q.parse(answer([10, 20, 30, 40]))
    assert counts.classes == {"value <= -2.0": 10, "value <= 0.0": 20, "value <= 2.0": 30,
                              "value above the last cut": 40}
    assert reference.classes == dict.fromkeys(counts.classes, 0.25)
    assert not counts.latency  # request latency buckets are another metric


def test_a_regressor_whose_predictions_move_up_raises_prediction_shift_naming_values() -> None:
    spec = MonitoringSpec(interval=300.0, min_rows=200)
    rng = np.random.default_rng(31)
    m = mon.evaluate(spec, None, STABLE, None, T0, "price").monitoring
    previous = mon.Counts()
    raised = []
    for i in range(1, 60):
        shares = [0.25] * 4 if i < 20 else [0.1, 0.2, 0.3, 0.4]  # predictions drift up (PSI about 0.23)
        window, reference = q.parse(answer(rng.multinomial(2000, shares).astype(float).tolist()))
        at = T0 + dt.timedelta(minutes=5 * i)
        out = mon.evaluate(spec, m, STABLE, mon.MonitoringObservation(STABLE.revision, from_time(at) or "", window,
                                                                        previous, reference), at, "price")
        m = mon.mark_told(out.monitoring)
        raised += [(i, e) for e in out.emits if e.reason == "DriftDetected"]
        previous = window
    assert m is not None and m.signal("predictionShift").state == mon.ALARM  # type: ignore[union-attr]
    (i, event), = raised
    assert i >= 20 and "predictionShift" in event.message and "predicted values" in event.message
