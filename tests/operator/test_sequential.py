"""The statistics of monitoring over time (operator/sequential.py), on tables of counts.

The false-alarm bound rests on one property of every e-value: for every distribution the tolerance
allows, its expectation is at most 1. Where the expectation can be computed exactly (all outcomes
of a small multinomial or binomial enumerated) it is, on the tolerance's boundary, where it is
largest; elsewhere it is checked by simulation against the bound it must respect.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import binom, multinomial
from serin.operator import sequential as sq


def boundary_points(p: np.ndarray, kappa: float, count: int, seed: int) -> list[np.ndarray]:
    """Distributions q with KL(q || p) == kappa, in random directions from p."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        direction = rng.normal(size=p.size)
        lo, hi = 0.0, 20.0
        for _ in range(80):  # bisect the step along the direction to the boundary
            mid = (lo + hi) / 2
            q = p * np.exp(mid * direction)
            q /= q.sum()
            lo, hi = (mid, hi) if sq.kl(q, p) < kappa else (lo, mid)
        q = p * np.exp(lo * direction)
        out.append(q / q.sum())
    return out


def exact_expectation(bet: sq.CategoricalBet, q: np.ndarray, rows: int) -> float:
    """E[exp(log_e)] over every outcome of `rows` rows drawn from q."""
    total = 0.0
    bins = q.size
    for split in itertools.combinations_with_replacement(range(bins), rows):
        counts = np.bincount(split, minlength=bins)
        total += multinomial.pmf(counts, rows, q) * math.exp(float(bet.log_e(counts[None, :])[0]))
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_drift_bet_never_wins_on_average_against_a_tolerated_distribution(seed: int) -> None:
    """Exact, over all outcomes of 6 rows in 4 bins, for distributions on the tested boundary
    (sequential.kl_tolerance) and inside it: E[e-value] <= 1 however the bet was placed."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(4) * 3)
    trailing = np.round(rng.dirichlet(np.ones(4) * 0.3) * 400)  # a bet placed on an arbitrary past
    bet = sq.categorical_bet(trailing[None, :], p[None, :], 0.04)
    assert bet.log_u[0] != 0.0, "the trailing window must be drifted enough to bet on"
    kappa = sq.kl_tolerance(0.04)
    for q in [*boundary_points(p, kappa, 12, seed), p]:
        assert exact_expectation(bet, q, 6) <= 1 + 1e-9


def test_the_bound_on_a_linear_function_over_the_kl_ball_is_tight() -> None:
    """Donsker-Varadhan's bound equals the maximum an optimiser finds, to 1e-5."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        p = rng.dirichlet(np.ones(6))
        r = np.exp(rng.normal(scale=0.4, size=6))
        kappa = 0.01
        bound = float(sq.linear_sup_over_kl_ball(p[None], r[None], kappa)[0])

        def negative(z: np.ndarray, r: np.ndarray = r) -> float:
            q = np.exp(z) / np.exp(z).sum()
            return -float(np.sum(q * r))

        def within(z: np.ndarray, p: np.ndarray = p, kappa: float = kappa) -> float:
            return kappa - float(sq.kl(np.exp(z) / np.exp(z).sum(), p))

        constraint = {"type": "ineq", "fun": within}
        found = minimize(negative, np.log(p), constraints=[constraint], method="SLSQP",
                         options={"ftol": 1e-13, "maxiter": 1000})
        assert -found.fun <= bound + 1e-9
        assert bound - (-found.fun) < 1e-5


@pytest.mark.parametrize("limit", [0.01, 0.1, 0.3])
def test_a_rate_bet_never_wins_on_average_at_or_under_its_limit(limit: float) -> None:
    """Exact, over every outcome of a binomial, at the limit and below it."""
    bet = sq.rate_bet(50, 100, limit)  # the trailing window saw 50 %: above every limit here
    assert bet.up > 0
    for share in (limit, limit / 2, 0.0):
        for rows in (1, 10, 200):
            k = np.arange(rows + 1)
            expectation = float(np.sum(binom.pmf(k, rows, share) * np.exp([bet.log_e(x, rows) for x in k])))
            assert expectation <= 1 + 1e-9


def test_a_rate_bet_on_values_between_0_and_1_holds_too() -> None:
    """The label-free estimate adds chances, not 0/1 events: E[a^x b^(1-x)] <= 1 for any x in
    [0, 1] with mean at the limit (x -> a^x b^(1-x) lies under its chord)."""
    bet = sq.rate_bet(40, 100, 0.2)
    for x in (np.full(1000, 0.2), np.random.default_rng(0).beta(2, 8, 100_000)):
        x = x * (0.2 / x.mean())
        assert float(np.mean(np.exp(x * bet.up + (1 - x) * bet.down))) <= 1 + 1e-9


def test_no_bet_when_the_past_is_within_tolerance() -> None:
    p = np.full(5, 0.2)
    bet = sq.categorical_bet(np.array([[200, 200, 200, 200, 200]]), p[None], 0.02)
    assert bet.log_u[0] == 0 and np.all(bet.weights == 0)
    assert float(bet.log_e(np.array([[0, 0, 0, 0, 1000]]))[0]) == 0.0  # nothing staked, nothing won
    assert sq.rate_bet(1, 1000, 0.01).up == 0


def test_evidence_grows_beyond_the_tolerance_and_not_within_it() -> None:
    """At 10,000 rows an evaluation: drift of PSI ~0.01 under a 0.02 tolerance gathers nothing,
    drift of PSI ~0.1 beyond it passes a month's threshold within a few evaluations."""
    rng = np.random.default_rng(7)
    p = np.full(10, 0.1)

    def run(q: np.ndarray, evaluations: int) -> float:
        s, past = 0.0, np.zeros(10)
        for _ in range(evaluations):
            bet = sq.categorical_bet(past[None], p[None], 0.02)
            counts = rng.multinomial(10_000, q)
            s = sq.cusum(s, float(bet.log_e(counts[None])[0]))
            past = counts.astype(float)
        return s

    h = sq.threshold(31, sq.SECONDS_PER_MONTH / 300, 0.05)
    tolerated = p * np.exp(np.linspace(-0.17, 0.17, 10))
    tolerated /= tolerated.sum()
    assert float(sq.psi(tolerated, p)) < 0.012
    assert run(tolerated, 200) < h / 4
    drifted = p * np.exp(np.linspace(-0.55, 0.55, 10))
    drifted /= drifted.sum()
    assert float(sq.psi(drifted, p)) > 0.09
    assert run(drifted, 4) >= h


def test_the_threshold_spends_the_budget_over_detectors_and_evaluations() -> None:
    h = sq.threshold(31, 8640, 0.05)
    assert 31 * 8640 * math.exp(-h) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        sq.threshold(0, 8640, 0.05)


def psi_boundary(p: np.ndarray, tolerance: float, direction: np.ndarray) -> np.ndarray:
    lo, hi = 0.0, 20.0
    for _ in range(80):
        mid = (lo + hi) / 2
        q = p * np.exp(mid * direction)
        q /= q.sum()
        lo, hi = (mid, hi) if sq.psi(q, p) < tolerance else (lo, mid)
    q = p * np.exp(lo * direction)
    return q / q.sum()


@pytest.mark.parametrize("tolerance", [0.01, 0.02, 0.1, 2.0])
def test_every_distribution_within_the_psi_tolerance_is_within_the_tested_null(tolerance: float) -> None:
    """The tolerance is stated as PSI and tested as KL(q||p) <= kl_tolerance(PSI). On the boundary
    PSI == tolerance, in random directions and towards each single bin, for references with bins
    down to the 1e-4 floor (a bin the reference never saw, filling up, is the hardest case),
    KL(q||p) stays under it; and a share below 1 would not (why kl_tolerance is the PSI itself)."""
    rng = np.random.default_rng(int(tolerance * 1000))
    kappa = sq.kl_tolerance(tolerance)
    worst = 0.0
    for _ in range(30):
        p = rng.dirichlet(np.ones(10))
        p[rng.integers(10)] = 0.0  # a bin the reference never saw
        p = sq.floored(p)
        directions = [rng.normal(size=10) for _ in range(10)] + [np.eye(10)[b] * sign for b in range(10)
                                                                 for sign in (-1, 1)]
        for d in directions:
            worst = max(worst, float(sq.kl(psi_boundary(p, tolerance, d), p)))
    assert worst <= kappa
    if tolerance >= 0.02:
        assert worst > 0.75 * tolerance  # a share of 0.75 (tried first) would leave tolerated drift outside
