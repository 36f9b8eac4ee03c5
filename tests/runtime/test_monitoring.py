"""In-process counting: the request path adds to plain counts, a flush moves them into the
prometheus_client metrics, and the result is what prometheus_client's own calls would give."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import Counter, Histogram
from prometheus_client.utils import floatToGoString
from serin.runtime import metric_names as mn
from serin.runtime.drift import Binner, Drift
from serin.runtime.model import Task
from serin.runtime.monitoring import Monitor, observe_many
from serin.runtime.profile import Feature
from serin.runtime.signature import TensorSpec

BOUNDS = (0.0, 0.5, 2.0, 10.0)  # no negative bound: prometheus_client exports _sum too
VALUES = [-5.0, -0.0, 0.0, 0.25, 0.5, 0.5000001, 1.9, 2.0, 2.0001, 10.0, 1e9, math.inf]


def exported(metric: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metric.collect() for s in family.samples
            if not s.name.endswith("_created")}


def test_observe_many_matches_prometheus_observe() -> None:
    direct = Histogram("h", "test", registry=None, buckets=BOUNDS)
    batched = Histogram("h", "test", registry=None, buckets=BOUNDS)
    for v in VALUES:
        direct.observe(v)
    observe_many(batched, np.array(VALUES))
    assert exported(batched) == exported(direct)


def test_a_regressors_values_on_a_cut_count_where_the_profile_counts_them() -> None:
    """The profile bins a value equal to a cut in the bin above it (converters/profile.py:
    searchsorted "right"); the value histogram must too, or a regressor that predicts exactly a
    cut value often (a clipped output, a tree's leaf) reads as drifted against its own profile."""
    from serin.converters.profile import numeric_bins

    # 40 % exactly 0 among continuous values: a quantile cut lands on 0.0 (the bins of 0.013 and
    # 0.487 either side of it; "left" counting would read 0.413 and 0.087 from the same rows).
    values = np.concatenate([np.zeros(400), np.random.default_rng(0).normal(size=600)])
    profile = numeric_bins(values, 10)
    hist = Histogram("v", "test", registry=None, buckets=sorted(set(profile["cuts"])))
    observe_many(hist, values, below_bound=True)
    samples = exported(hist)
    cumulative = [samples[("v_bucket", (("le", le),))] for le in
                  [*(floatToGoString(c) for c in sorted(set(profile["cuts"]))), "+Inf"]]
    shares = np.diff([0.0, *cumulative]) / len(values)
    assert np.allclose(shares, profile["proportions"]), (shares, profile)


def test_observe_many_skips_nan() -> None:
    hist = Histogram("h", "test", registry=None, buckets=BOUNDS)
    observe_many(hist, np.array([np.nan, 1.0, np.nan]))
    samples = exported(hist)
    assert samples[("h_count", ())] == 1 and samples[("h_sum", ())] == 1.0


def count(metric: Counter, **labels: str) -> float:
    return sum(v for (name, ls), v in exported(metric).items()
               if name.endswith("_total") and set(labels.items()) <= set(ls))


def test_counts_are_exact_after_a_flush_and_only_then() -> None:
    mon = Monitor("m", "r1", Task("classification", "label", ("0", "1")), drift=None)
    one = {"label": np.array([1], np.int64)}
    batch = {"label": np.array([0, 1, 1, 2], np.int64)}  # class 2 is not in the profile
    for _ in range(3):
        mon.observe("v2", 200, 0.004, 1, one)
    mon.observe("v1", 200, 0.2, 4, batch)
    mon.observe("v2", 400, 0.0001, 0, None)
    mon.observe("v2", 500, 3.0, 0, None)
    assert count(mon._requests) == 0  # nothing exported before the flush
    mon.flush()
    assert count(mon._requests, protocol="v2", code="200") == 3
    assert count(mon._requests, protocol="v1", code="200") == 1
    assert count(mon._requests, code="400") == 1 and count(mon._requests, code="500") == 1
    assert count(mon._rows) == 7
    assert count(mon._predictions, **{"class": "1"}) == 5
    assert count(mon._predictions, **{"class": "0"}) == 1
    assert count(mon._predictions, **{"class": "2"}) == 1
    assert exported(mon._durations["v2"])[(f"{mn.REQUEST_DURATION_SECONDS}_count", ())] == 5
    mon.flush()  # counts are moved, not copied: a second flush adds nothing
    assert count(mon._requests) == 6 and count(mon._rows) == 7


def test_duration_histogram_matches_direct_observe() -> None:
    mon = Monitor("m", "r1", Task("classification", "label", ("0", "1")), drift=None)
    direct = Histogram("d", "test", registry=None, buckets=mn.DURATION_BUCKETS)
    for seconds in (0.0001, 0.0005, 0.003, 0.049, 7.0):
        mon.observe("v2", 200, seconds, 1, None)
        direct.observe(seconds)
    mon.flush()
    ours = {(n.replace(mn.REQUEST_DURATION_SECONDS, "d"), ls): v
            for (n, ls), v in exported(mon._durations["v2"]).items()}
    assert ours.pop(("d_sum", ())) == pytest.approx(exported(direct).pop(("d_sum", ())))
    direct_rest = {k: v for k, v in exported(direct).items() if k != ("d_sum", ())}
    assert ours == direct_rest


def test_string_labels_and_selected_outputs() -> None:
    mon = Monitor("m", "r1", Task("classification", "label", ("cat", "dog")), drift=None)
    mon.observe("v2", 200, 0.001, 2, {"label": np.array(["dog", "bird"], dtype=object)})
    mon.observe("v2", 200, 0.001, 1, {"probabilities": np.zeros((1, 2))})  # label not requested
    mon.flush()
    assert count(mon._predictions, **{"class": "dog"}) == 1
    assert count(mon._predictions, **{"class": "bird"}) == 1
    assert count(mon._predictions, **{"class": "cat"}) == 0
    assert count(mon._rows) == 3


def test_regressor_values_skip_nan() -> None:
    mon = Monitor("m", "r1", Task("regression", "variable", cuts=(-2.0, 0.0, 2.0)), drift=None)
    mon.observe("v2", 200, 0.001, 1, {"variable": np.array([[np.nan]], np.float32)})
    mon.observe("v2", 200, 0.001, 3, {"variable": np.array([[1.0], [np.nan], [-3.0]])})
    mon.flush()
    samples = exported(mon._values)
    assert samples[(f"{mn.PREDICTION_VALUE}_count", ())] == 2
    assert samples[(f"{mn.PREDICTION_VALUE}_bucket", (("le", "-2.0"),))] == 1
    assert samples[(f"{mn.PREDICTION_VALUE}_bucket", (("le", "2.0"),))] == 2
    # With negative buckets prometheus_client does not export _sum; it must still be a number.
    assert mon._values._sum.get() == -2.0
    assert count(mon._rows) == 4  # NaN predictions are still rows served


def test_flush_feeds_the_drift_window_with_successful_requests_only(tmp_path: Path) -> None:
    spec = TensorSpec("input", "FP32", np.dtype(np.float32), (None, 1))
    feature = Feature("f0", "input", 0, "numeric", cuts=np.array([0.0]),
                      proportions=np.array([0.5, 0.5]))
    drift = Drift(Binner([feature], {"input": spec}), window=10, workers=1, min_rows=1,
                  state_dir=tmp_path)
    mon = Monitor("m", "r1", Task(None, None), drift=drift)
    mon.observe("v2", 200, 0.001, 2, {}, {"input": np.array([[-1.0], [1.0]], np.float32)})
    mon.observe("v2", 400, 0.001, 0, None, {"input": np.array([[5.0]], np.float32)})
    mon.flush()
    drift.tick()
    assert drift.rows == 2 and drift.window.counts().tolist() == [1, 1]
