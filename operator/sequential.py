"""Sequential change detection with a false-alarm budget: the statistics behind spec.monitoring.

Pure and I/O-free: counts in, evidence out. Each monitored signal is a *detector*, a CUSUM of
e-values (Page's CUSUM, with likelihood ratios replaced by e-values, as in Shin, Ramdas and
Rinaldo's e-detectors, 2023):

    S_0 = 0,   S_t = max(0, S_{t-1} + log E_t),   alarm when S_t >= h.

E_t is the evidence one evaluation's counts give against "this signal is within its tolerance".
Each E_t is built so that, for *every* distribution the tolerance allows (and whatever the past),
its expectation is at most 1; that is all the bound needs:

- Ville's inequality bounds each one-sided test started at evaluation k: P(ever >= e^h) <= e^-h,
  so P(any alarm in the first m evaluations) <= m e^-h (CUSUM alarms iff one of them crosses);
- Lorden's argument (the Shiryaev-Roberts sum minus n is a supermartingale, and CUSUM <= SR) gives
  a mean time between false alarms of at least e^h evaluations, each alarm resetting the CUSUM, so
  the long-run rate is at most e^-h per evaluation.

A Model with D detectors evaluated at most m times a month therefore has at most D m e^-h false
alarms in its first month, and at most D m e^-h a month in the long run; `threshold` sets
h = log(D m / budget). Nothing here assumes a
traffic volume, a season, or that traffic within the tolerance keeps one distribution: rows may
come from any mixture of tolerated distributions, changing hour by hour. What it does assume is
that rows are independent given the past (a client replaying the same row a thousand times is a
thousand rows of evidence), and that the reference it is measured against is exact (a profile of
n rows adds PSI noise of about bins/n, docs/operator.md says how to keep it small).

Two kinds of e-value, each a bet placed *before* the evaluation's counts are seen, on what the
rows seen before it (the trailing window) suggest; a bad bet loses a little, never validity:

- `rate_bet`: a share of rows (errors, answers slower than the SLO, wrong answers, the estimate's
  expected wrong answers) against its limit rho0. The bet is the Bernoulli likelihood ratio of the
  trailing share rho over rho0; for any true share <= rho0 its expectation is <= 1. For values in
  [0, 1] that are not 0/1 (the label-free estimate's per-row chance of being wrong) the same holds,
  since x -> a^x b^(1-x) lies under its chord.
- `categorical_bet`: a distribution over bins (a feature's bins, the predicted classes) against
  the reference proportions p, tolerating drift up to KL(live || p) <= kappa. The bet multiplies
  r_b = (q_b / p_b)^s per row in bin b, q the trailing proportions; no tolerated distribution
  makes E[r] larger than U = inf_t (kappa + log sum_b p_b e^(t r_b)) / t (Donsker-Varadhan: the
  dual of maximising a linear function over a KL ball), so prod r / U^rows is an e-value. Any t
  gives a valid U, so the numerical minimisation can only cost power. s = 1 - sqrt(kappa / K),
  K = KL(q || p), is the small-shift growth-optimal tempering: it makes the expected growth per
  row about (sqrt K - sqrt kappa)^2, positive exactly when the drift is beyond the tolerance.

The tolerance is stated as PSI (PSI = KL(q||p) + KL(p||q)) and tested as KL(q || p) <= PSI:
PSI >= KL(q||p) always, so every distribution within the tolerance is within the tested null,
exactly, whatever the bins. The price: for small shifts KL(q||p) is about PSI / 2, so drift is
detected reliably from about twice the tolerance on. (A tighter share was tried: 0.75 x PSI holds
for bins of 0.1 % and tolerances up to 0.1, but a bin the reference never saw, floored at 1e-4,
filling up on the boundary takes KL(q||p) to 0.77-0.86 of PSI: not exact, so not used.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Proportions below this are floored (and renormalised), as the runtime's PSI floors them: a bin
# the reference never saw must not make every live row in it infinite evidence.
FLOOR = 1e-4
# The trailing estimate is shrunk towards the reference by this many pseudo-rows, so a short
# trailing window cannot bet everything on noise.
PRIOR_ROWS = 50.0
SECONDS_PER_MONTH = 30 * 24 * 3600.0


def threshold(detectors: int, evaluations_per_month: float, budget: float) -> float:
    """h such that `detectors` detectors evaluated `evaluations_per_month` times a month raise at
    most `budget` false alarms a month: D m e^-h = budget."""
    if detectors < 1 or evaluations_per_month <= 0 or budget <= 0:
        raise ValueError("threshold needs detectors >= 1, evaluations > 0 and budget > 0")
    return math.log(detectors * evaluations_per_month / budget)


def cusum(previous: float, log_e: float) -> float:
    return max(0.0, previous + log_e)


# -- shares of rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateBet:
    """One evaluation's bet that a share exceeds `limit`: rows with the event multiply the
    evidence by `up`, rows without it by `down` (log scale). No bet: both 0."""

    limit: float
    estimate: float
    up: float = 0.0
    down: float = 0.0

    def log_e(self, events: float, rows: float) -> float:
        events = min(max(events, 0.0), rows)
        return events * self.up + (rows - events) * self.down


def rate_bet(trailing_events: float, trailing_rows: float, limit: float) -> RateBet:
    """The bet on a share above `limit` (0 < limit < 1), from the share in the trailing window
    shrunk towards the limit by PRIOR_ROWS pseudo-rows. At or under the limit: no bet."""
    if not 0.0 < limit < 1.0:
        raise ValueError(f"a share's limit must be in (0, 1), not {limit}")
    rows = max(trailing_rows, 0.0)
    events = min(max(trailing_events, 0.0), rows)
    estimate = (events + PRIOR_ROWS * limit) / (rows + PRIOR_ROWS)
    if estimate <= limit:
        return RateBet(limit, estimate)
    estimate = min(estimate, 1.0 - 1e-9)
    return RateBet(limit, estimate, math.log(estimate / limit), math.log((1.0 - estimate) / (1.0 - limit)))


# -- distributions over bins ---------------------------------------------------------------------


def floored(proportions: np.ndarray) -> np.ndarray:
    p = np.maximum(np.asarray(proportions, np.float64), FLOOR)
    return p / p.sum(axis=-1, keepdims=True)


def kl(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """KL(q || p) along the last axis (q, p > 0)."""
    return np.sum(q * np.log(q / p), axis=-1)


def psi(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.sum((q - p) * np.log(q / p), axis=-1)


KL_SHARE_OF_PSI = 1.0


def kl_tolerance(psi_tolerance: float) -> float:
    """The KL(live || reference) boundary tested for a PSI tolerance (module docstring)."""
    return KL_SHARE_OF_PSI * psi_tolerance


@dataclass(frozen=True)
class CategoricalBet:
    """Bets for several distributions at once (one row each: the features of a Model): a live row
    in bin b adds weights[i, b] to distribution i's log-evidence, and each row costs log_u[i]."""

    weights: np.ndarray  # (n, bins): s * log(q / p)
    log_u: np.ndarray  # (n,)
    estimate_psi: np.ndarray  # (n,): PSI of the trailing estimate, for status

    def log_e(self, counts: np.ndarray) -> np.ndarray:
        counts = np.asarray(counts, np.float64)
        return np.sum(counts * self.weights, axis=-1) - counts.sum(axis=-1) * self.log_u


def linear_sup_over_kl_ball(p: np.ndarray, r: np.ndarray, kappa: float, iterations: int = 12) -> np.ndarray:
    """An upper bound, tight to numerical precision, on max E_q[r] over all q with KL(q||p) <=
    kappa: inf over t > 0 of f(t) = (kappa + L(t)) / t, L(t) = log E_p[e^(t r)].

    f'(t) = 0 where t L'(t) - L(t) = kappa, and the left side grows with t (its derivative is
    t L''(t) >= 0), so Newton's method on log t finds it from the small-shift guess
    t = sqrt(2 kappa / Var_p(r)) in a few steps. Every t tried gives a valid bound and the smallest
    is returned (capped by max r, itself one): an iteration that goes astray costs tightness,
    never validity."""
    p, r = np.atleast_2d(p), np.atleast_2d(r)
    best = r.max(axis=-1)
    if kappa <= 0:
        return np.minimum(best, np.sum(p * r, axis=-1))
    mean = np.sum(p * r, axis=-1)
    variance = np.maximum(np.sum(p * (r - mean[:, None]) ** 2, axis=-1), 1e-300)
    log_t = np.clip(0.5 * np.log(2 * kappa / variance), -30.0, 30.0)
    for _ in range(iterations):
        t = np.exp(log_t)
        x = t[:, None] * r
        top = x.max(axis=-1, keepdims=True)
        w = p * np.exp(x - top)
        total = w.sum(axis=-1)
        log_mean = top[:, 0] + np.log(total)
        w /= total[:, None]
        first = np.sum(w * r, axis=-1)  # L'(t)
        second = np.maximum(np.sum(w * (r - first[:, None]) ** 2, axis=-1), 1e-300)  # L''(t)
        best = np.minimum(best, np.where(np.isfinite(log_mean), (kappa + log_mean) / t, np.inf))
        # Newton on u = log t for h(u) = t L'(t) - L(t) - kappa, h'(u) = t^2 L''(t).
        step = (t * first - log_mean - kappa) / (t * t * second)
        log_t = np.clip(log_t - np.clip(step, -2.0, 2.0), -30.0, 30.0)
    return best


def categorical_bet(trailing: np.ndarray, reference: np.ndarray, psi_tolerance: float) -> CategoricalBet:
    """The bets that each row's distribution drifted beyond `psi_tolerance` from `reference`,
    placed from the `trailing` counts (same shape: distributions x bins)."""
    trailing = np.atleast_2d(np.asarray(trailing, np.float64))
    p = floored(np.atleast_2d(reference))
    rows = trailing.sum(axis=-1, keepdims=True)
    q = floored((trailing + PRIOR_ROWS * p) / (rows + PRIOR_ROWS))
    kappa = kl_tolerance(psi_tolerance)
    divergence = kl(q, p)
    s = np.where(divergence > kappa, 1.0 - np.sqrt(kappa / np.maximum(divergence, 1e-300)), 0.0)
    weights = s[:, None] * np.log(q / p)
    log_u = np.zeros(q.shape[0])
    betting = s > 0
    if betting.any():
        u = linear_sup_over_kl_ball(p[betting], np.exp(weights[betting]), kappa)
        log_u[betting] = np.log(u)
    return CategoricalBet(weights, log_u, psi(q, p))


def trailing_psi(trailing: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The trailing window's PSI against the reference less its sampling bias (about (bins - 1)
    / rows for an undrifted window): what the hysteresis of a drift alarm compares with."""
    trailing = np.atleast_2d(np.asarray(trailing, np.float64))
    p = floored(np.atleast_2d(reference))
    rows = trailing.sum(axis=-1)
    q = floored(trailing / np.maximum(rows, 1.0)[:, None])
    bins = (p > FLOOR * 1.5).sum(axis=-1)
    return np.maximum(psi(q, p) - (bins - 1) / np.maximum(rows, 1.0), 0.0)
