"""Canary against stable on ground truth (queries.accuracy_difference, mae_ratio) and how such a
figure is judged on its confidence interval (analysis.assess): the statistics checked exactly on
tables of counts, and by their coverage where the normal approximation is weakest."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom
from serin.operator.analysis import assess, judge_round
from serin.operator.observations import MeasuredValue
from serin.operator.queries import QueryContext, accuracy_difference, compare_feedback, feedback_query, mae_ratio
from serin.operator.spec import AnalysisSpec, Builtin, MetricSpec
from serin.operator.status import Verdict
from serin.runtime import metric_names as mn

ACCURACY = MetricSpec("accuracy", builtin=Builtin.ACCURACY, min=-0.01, confidence=0.99)


def test_the_difference_and_its_interval_on_a_table_of_counts() -> None:
    got = accuracy_difference((1000, 870), (9000, 8100), 0.95)
    assert got.value == pytest.approx(0.87 - 0.9)
    # Agresti-Caffo: (871/1002 - 8101/9002) ± 1.96 * sqrt(p(1-p)/1002 + q(1-q)/9002)
    p, q = 871 / 1002, 8101 / 9002
    half = 1.959964 * np.sqrt(p * (1 - p) / 1002 + q * (1 - q) / 9002)
    assert got.interval == pytest.approx((p - q - half, p - q + half), abs=1e-6)


def test_no_truth_on_a_side_is_no_value_and_says_which() -> None:
    assert accuracy_difference((0, 0), (100, 90), 0.99).why_none == "no ground truth yet for the canary"
    assert accuracy_difference((10, 9), (0, 0), 0.99).why_none == "no ground truth yet for the stable"


@pytest.mark.parametrize(("n_c", "n_s", "p"), [(20, 180, 0.9), (50, 450, 0.95), (200, 1800, 0.8), (30, 30, 0.99)])
def test_the_interval_covers_the_true_difference_at_small_counts(n_c: int, n_s: int, p: float) -> None:
    """Exact coverage over every outcome of two binomials with equal accuracy: the interval holds
    the true difference (0) at least as often as it claims, less a little for discreteness."""
    coverage = 0.0
    pc, ps = binom.pmf(np.arange(n_c + 1), n_c, p), binom.pmf(np.arange(n_s + 1), n_s, p)
    for x_c in range(n_c + 1):
        if pc[x_c] < 1e-12:
            continue
        for x_s in range(n_s + 1):
            if ps[x_s] < 1e-12:
                continue
            low, high = accuracy_difference((n_c, x_c), (n_s, x_s), 0.95).interval  # type: ignore[misc]
            if low <= 0 <= high:
                coverage += pc[x_c] * ps[x_s]
    assert coverage >= 0.93, coverage


def test_a_clearly_worse_canary_fails_and_noise_at_small_counts_is_never_a_failure() -> None:
    worse = accuracy_difference((3000, 2580), (27000, 24300), ACCURACY.confidence)  # 86 % vs 90 %
    verdict, reason = assess(ACCURACY, MeasuredValue("accuracy", worse.value, interval=worse.interval))
    assert verdict == Verdict.FAILED and "< min -0.01" in reason and "99% interval" in reason
    # 4 points worse on 25 labels: not enough to say either way.
    few = accuracy_difference((25, 21), (225, 198), ACCURACY.confidence)
    assert assess(ACCURACY, MeasuredValue("accuracy", few.value, interval=few.interval))[0] == Verdict.INCONCLUSIVE
    same = accuracy_difference((20000, 18000), (180000, 162000), ACCURACY.confidence)
    assert assess(ACCURACY, MeasuredValue("accuracy", same.value, interval=same.interval)) == (Verdict.SUCCESSFUL, "")


def test_an_interval_judgement_never_counts_as_a_failure_while_it_straddles() -> None:
    spec = AnalysisSpec(metrics=(ACCURACY,))
    measured = (MeasuredValue("accuracy", -0.04, interval=(-0.09, 0.01)),)
    judged = judge_round(spec, measured, {}, 2, "t")
    assert judged.records[0].verdict == Verdict.INCONCLUSIVE and judged.failures == {}
    assert "not yet shown to be within min -0.01" in judged.records[0].reason


def test_mean_absolute_error_ratio_on_sums() -> None:
    rng = np.random.default_rng(0)
    e_c, e_s = rng.normal(0, 1.2, 4000), rng.normal(0, 1.0, 36000)
    got = mae_ratio((4000, np.abs(e_c).sum(), (e_c**2).sum()), (36000, np.abs(e_s).sum(), (e_s**2).sum()), 0.99)
    assert got.value == pytest.approx(0.2, abs=0.03)
    assert got.interval is not None and got.interval[0] > 0.1 and got.interval[1] < 0.3
    metric = MetricSpec("mae", builtin=Builtin.MEAN_ABSOLUTE_ERROR, max=0.05)
    assert assess(metric, MeasuredValue("mae", got.value, interval=got.interval))[0] == Verdict.FAILED
    assert mae_ratio((1, 1.0, 1.0), (100, 50.0, 40.0), 0.99).why_none.startswith("fewer than 2 rows")


def test_compare_feedback_reads_the_counters_of_both_revisions() -> None:
    ctx = QueryContext("m", "ns", "m-2", "m-1", "30s", lifetime="300s")
    sums = {mn.FEEDBACK_ROWS_TOTAL: {"m-2": 100.0, "m-1": 900.0},
            mn.FEEDBACK_CORRECT_TOTAL: {"m-2": 80.0, "m-1": 810.0}}
    got = compare_feedback(Builtin.ACCURACY, sums, ctx, 0.99)
    assert got.value == pytest.approx(-0.1)
    query = feedback_query(ctx, mn.FEEDBACK_ROWS_TOTAL)
    assert "[300s]" in query and "offset 300s" in query
    assert query.startswith("sum by (predicted_revision)") and 'predicted_revision=~"m-2|m-1"' in query


def test_estimated_accuracy_reads_the_estimate_counters() -> None:
    ctx = QueryContext("m", "ns", "m-2", "m-1", "30s")
    sums = {mn.ESTIMATED_ROWS_TOTAL: {"m-2": 2000.0, "m-1": 18000.0},
            mn.ESTIMATED_CORRECT_TOTAL: {"m-2": 1700.0, "m-1": 16200.0}}
    got = compare_feedback(Builtin.ESTIMATED_ACCURACY, sums, ctx, 0.99)
    assert got.value == pytest.approx(0.85 - 0.9)
    assert got.interval is not None and got.interval[1] < -0.02
    none = compare_feedback(Builtin.ESTIMATED_ACCURACY, {}, ctx, 0.99)
    assert none.value is None and "no answered row with class probabilities yet" in none.why_none
