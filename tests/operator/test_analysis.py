"""The fast path for hard failures: its statistics, computed exactly, and how it acts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom
from serin.operator.analysis import (
    HARD_ALPHA,
    HARD_FACTOR,
    HARD_MIN_SAMPLES,
    binomial_tail,
    hard_failure,
    judge_round,
)
from serin.operator.observations import MeasuredValue
from serin.operator.spec import AnalysisSpec, Builtin, MetricSpec

LIMITS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
SIZES = [20, 30, 50, 80, 100, 150, 200, 300, 500, 1000, 2000, 5000, 20000, 100000]


def errors(limit: float) -> MetricSpec:
    return MetricSpec("errors", builtin=Builtin.ERROR_RATE, max=limit)


@pytest.mark.parametrize(("k", "n", "p"), [(0, 10, 0.1), (1, 10, 0.1), (3, 10, 0.01), (2, 50, 0.001),
                                           (1200, 100000, 0.01), (20, 20, 0.5), (21, 20, 0.5)])
def test_binomial_tail_is_exact(k: int, n: int, p: float) -> None:
    assert binomial_tail(k, n, p) == pytest.approx(float(binom.sf(k - 1, n, p)), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("limit", LIMITS)
def test_a_canary_at_the_limit_takes_the_fast_path_with_probability_below_alpha(limit: float) -> None:
    """Over every round size: P(fast path | true error rate = limit), summed exactly over every
    error count the fast path fires on, is below HARD_ALPHA. Below the limit it is smaller still."""
    def fires(k: int, n: int) -> bool:
        return hard_failure(errors(limit), MeasuredValue("errors", k / n, samples=n))

    for n in SIZES:
        if not fires(n, n):
            continue
        lo, hi = 0, n  # fires(hi); find the fewest errors that fire
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if fires(mid, n) else (mid + 1, hi)
        k_min = lo
        # Monotone around the threshold and above it: more errors never stop it firing.
        assert not any(fires(k, n) for k in range(max(0, k_min - 50), k_min))
        assert all(fires(k, n) for k in range(k_min, min(n, k_min + 50) + 1))
        for true_rate in (limit, limit / 2):
            chance = float(binom.sf(k_min - 1, n, true_rate))
            assert chance < 1e-4, (limit, n, k_min, true_rate, chance)  # the promise in analysis.py


@pytest.mark.parametrize(("rate", "n", "hard"), [
    (0.6, 40, True),  # the demo's erroring model: most requests carry a row it cannot score
    (0.05, 1000, True),  # 5x the limit, plenty of requests
    (0.015, 100000, False),  # over the limit but not twice: the ordinary path judges it
    (0.5, HARD_MIN_SAMPLES - 1, False),  # too few requests to be sure of anything
    (0.03, 100, False),  # 3 errors in 100 at a 1 % limit: happens (8 %), not a hard failure
], ids=["erroring-model", "five-times", "under-twice", "too-few", "plausible-at-the-limit"])
def test_hard_failures(rate: float, n: int, hard: bool) -> None:
    assert hard_failure(errors(0.01), MeasuredValue("errors", rate, samples=n)) is hard


def test_only_error_rates_with_a_count_take_the_fast_path() -> None:
    latency = MetricSpec("p99", builtin=Builtin.LATENCY_P99_SECONDS, max=0.1)
    assert not hard_failure(latency, MeasuredValue("p99", 10.0, samples=10000))
    assert not hard_failure(errors(0.01), MeasuredValue("errors", 0.9))  # no sample count
    assert not hard_failure(MetricSpec("q", query="x", max=0.01), MeasuredValue("q", 0.9, samples=10000))


def test_a_hard_failure_is_over_the_limit_at_once_and_says_why() -> None:
    spec = AnalysisSpec(failure_limit=3, metrics=(errors(0.01),))
    judged = judge_round(spec, (MeasuredValue("errors", 0.6, samples=40),), {}, 2, "t")
    assert judged.failures == {"errors": 1} and judged.over_limit is not None
    assert "a hard failure (40 requests" in judged.over_limit.reason
    ordinary = judge_round(spec, (MeasuredValue("errors", 0.015, samples=40),), {}, 2, "t")
    assert ordinary.failed and ordinary.over_limit is None


def test_the_factor_is_what_the_docs_say() -> None:
    assert HARD_FACTOR == 2.0 and HARD_ALPHA == 1e-4


# -- predictionShift of a regressor: PSI over the stable's bins ---------------------------------


def cumulative(values: np.ndarray, edges: np.ndarray) -> dict[str, float]:
    """A Prometheus histogram's cumulative bucket counts of `values`, by `le`."""
    out = {repr(float(e)): float(np.sum(values <= e)) for e in edges}
    return out | {"+Inf": float(len(values))}


RNG = np.random.default_rng(7)
STABLE_VALUES = RNG.normal(100.0, 15.0, 20_000)
# Each version's buckets are its own reference deciles: close, never the same.
STABLE_EDGES = np.quantile(RNG.normal(100.0, 15.0, 500), np.linspace(0.1, 0.9, 9))
CANARY_EDGES = np.quantile(RNG.normal(100.0, 15.0, 500), np.linspace(0.1, 0.9, 9))


@pytest.mark.parametrize(("canary_values", "low", "high"), [
    (RNG.normal(100.0, 15.0, 5_000), 0.0, 0.02),  # the same model
    (RNG.normal(104.0, 15.0, 5_000), 0.03, 0.15),  # a bias of a quarter sd
    (RNG.normal(130.0, 15.0, 5_000), 1.0, 30.0),  # a bias of two sd
    (RNG.normal(100.0, 45.0, 5_000), 0.4, 30.0),  # three times the spread, same mean
], ids=["same", "small-bias", "large-bias", "wider"])
def test_regression_shift_compares_value_histograms_with_different_buckets(
        canary_values: np.ndarray, low: float, high: float) -> None:
    from serin.operator.queries import regression_shift

    shift = regression_shift(cumulative(canary_values, CANARY_EDGES), cumulative(STABLE_VALUES, STABLE_EDGES))
    assert shift is not None and low <= shift <= high, shift


def test_regression_shift_without_predictions_on_either_side_has_no_value() -> None:
    from serin.operator.queries import regression_shift

    empty = cumulative(np.zeros(0), CANARY_EDGES)
    assert regression_shift(empty, cumulative(STABLE_VALUES, STABLE_EDGES)) is None
    assert regression_shift(cumulative(STABLE_VALUES, CANARY_EDGES), {}) is None
