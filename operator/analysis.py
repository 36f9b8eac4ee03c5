"""Judging an analysis round: pure, separate from measuring, as Argo Rollouts' analysis is
(generate the queries: queries.py → measure: reconcile.measure, the only I/O → judge: here).

Missing data is never a pass: no series, NaN, or a Prometheus error is Inconclusive, which can
pause a rollout but never promote it. rollout.py acts on the judged round (advance, pause, roll
back); nothing here knows about steps or traffic."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from serin.operator.observations import MeasuredValue
from serin.operator.spec import AnalysisSpec, Builtin, MetricSpec
from serin.operator.status import Measurement, Verdict

# The fast path for hard failures. A failed measurement normally counts towards failureLimit
# (default 2: two rounds, so two intervals, before the rollback). A canary that fails badly loses
# its traffic on the first round instead, when the evidence is overwhelming:
#   - its error rate is at least HARD_FACTOR times the limit, and
#   - an exact one-sided binomial test rejects "the true rate is at most the limit" at level
#     HARD_ALPHA: P(X >= errors | X ~ Binomial(requests, max)) < HARD_ALPHA,
#   - on at least HARD_MIN_SAMPLES requests (Prometheus' increase() extrapolates tiny windows).
# By construction, a canary whose true error rate is at the limit takes this path on one round
# with probability below HARD_ALPHA = 1e-4, and one below the limit (a healthy one) less still; over
# a rollout of 20 rounds that is under 0.2 %, against the ordinary path's own false-rollback rate
# for such a borderline canary (it fails a round about half the time at the limit). Only errorRate
# has it: a latency or drift value has no count of trials to weigh it by.
HARD_FACTOR = 2.0
HARD_ALPHA = 1e-4
HARD_MIN_SAMPLES = 20


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (n may be 10^5 or more)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total, i = 0.0, k
    log_n_fact = math.lgamma(n + 1)
    while i <= n:
        term = math.exp(log_n_fact - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
        total += term
        # Past the mode the terms fall geometrically: stop once they no longer matter.
        if i > n * p and term < total * 1e-17:
            break
        i += 1
    return min(1.0, total)


def hard_failure(metric: MetricSpec, measured: MeasuredValue) -> bool:
    """A failure too clear to wait for failureLimit (see HARD_FACTOR)."""
    if metric.builtin != Builtin.ERROR_RATE or metric.max is None or measured.value is None:
        return False
    n = measured.samples
    if n is None or not math.isfinite(n) or n < HARD_MIN_SAMPLES or not 0 < metric.max < 1:
        return False
    if measured.value < HARD_FACTOR * metric.max:
        return False
    requests = round(n)
    errors = min(requests, round(measured.value * n))
    return binomial_tail(errors, requests, metric.max) < HARD_ALPHA


def assess(metric: MetricSpec, measured: MeasuredValue) -> tuple[Verdict, str]:
    """One measurement → (verdict, reason)."""
    if measured.error:
        return Verdict.INCONCLUSIVE, measured.error
    value = measured.value
    if value is None or math.isnan(value):
        return Verdict.INCONCLUSIVE, "no data"
    if measured.interval is not None:
        return _assess_interval(metric, value, measured.interval)
    if metric.max is not None and value > metric.max:
        return Verdict.FAILED, f"{metric.name} = {value:.4g} > max {metric.max:g}"
    if metric.min is not None and value < metric.min:
        return Verdict.FAILED, f"{metric.name} = {value:.4g} < min {metric.min:g}"
    return Verdict.SUCCESSFUL, ""


def _assess_interval(metric: MetricSpec, value: float, interval: tuple[float, float]) -> tuple[Verdict, str]:
    """A canary-against-stable figure with its confidence interval (spec.WITH_CONFIDENCE): Failed
    when all of the interval is past a limit (the canary is worse by more than the tolerance, with
    that confidence), Successful when all of it is within the limits, Inconclusive while it
    straddles one: noise at small counts can hold a step, never roll a canary back."""
    low, high = interval
    shown = f"{metric.name} = {value:+.4g} ({metric.confidence:.0%} interval {low:+.4g} to {high:+.4g})"
    if metric.max is not None and low > metric.max:
        return Verdict.FAILED, f"{shown} > max {metric.max:g}"
    if metric.min is not None and high < metric.min:
        return Verdict.FAILED, f"{shown} < min {metric.min:g}"
    if metric.max is not None and high > metric.max:
        return Verdict.INCONCLUSIVE, f"{shown}: not yet shown to be within max {metric.max:g}"
    if metric.min is not None and low < metric.min:
        return Verdict.INCONCLUSIVE, f"{shown}: not yet shown to be within min {metric.min:g}"
    return Verdict.SUCCESSFUL, ""


@dataclass(frozen=True)
class Round:
    """One analysis round, judged: a record per metric of the spec, and the failure counters."""

    records: tuple[Measurement, ...]  # dry-run metrics' included, marked dryRun
    failures: dict[str, int]  # failed measurements per metric during this canary, this round included
    failure_limit: int
    hard: tuple[str, ...] = ()  # metrics that failed hard this round (the fast path)

    @property
    def acted_on(self) -> tuple[Measurement, ...]:
        """The records that count: every metric's but the dry-run ones'."""
        return tuple(r for r in self.records if not r.dryRun)

    @property
    def successful(self) -> bool:
        return all(r.verdict == Verdict.SUCCESSFUL for r in self.acted_on)

    @property
    def failed(self) -> tuple[Measurement, ...]:
        return tuple(r for r in self.acted_on if r.verdict == Verdict.FAILED)

    @property
    def inconclusive(self) -> tuple[Measurement, ...]:
        return tuple(r for r in self.acted_on if r.verdict == Verdict.INCONCLUSIVE)

    @property
    def dry_run_failed(self) -> tuple[Measurement, ...]:
        return tuple(r for r in self.records if r.dryRun and r.verdict == Verdict.FAILED)

    @property
    def over_limit(self) -> Measurement | None:
        """The first metric that failed hard, or whose failures reached failureLimit: the canary
        must roll back."""
        return next((r for r in self.failed if r.metric in self.hard or self.failures[r.metric] >= self.failure_limit),
                    None)


def judge_round(spec: AnalysisSpec, measured: tuple[MeasuredValue, ...], failures: Mapping[str, int],
                generation: int, at: str) -> Round:
    """Every metric of the spec gets a verdict; one that was not measured is Inconclusive."""
    by_name = {m.metric: m for m in measured}
    counts = dict(failures)
    records: list[Measurement] = []
    hard: list[str] = []
    for metric in spec.metrics:
        got = by_name.get(metric.name)
        if got is None:
            verdict, reason, value = Verdict.INCONCLUSIVE, "not measured", None
        else:
            (verdict, reason), value = assess(metric, got), got.value
        finite = value is not None and math.isfinite(value)  # JSON (and so status) has no NaN
        if metric.dry_run:
            records.append(Measurement(metric.name, verdict, at, generation, value if finite else None,
                                       reason, dryRun=True))
            continue  # never counted, never hard: shown only
        if verdict == Verdict.FAILED and got is not None and hard_failure(metric, got):
            hard.append(metric.name)
            reason = (f"{reason}, a hard failure ({got.samples:.0f} requests: at the limit this many errors "
                      f"would have a chance below {HARD_ALPHA:g})")
        records.append(Measurement(metric.name, verdict, at, generation, value if finite else None, reason))
        if verdict == Verdict.FAILED:
            counts[metric.name] = counts.get(metric.name, 0) + 1
    return Round(tuple(records), counts, spec.failure_limit, tuple(hard))



def reasons(records: tuple[Measurement, ...] | list[Measurement]) -> str:
    return ", ".join(f"{r.metric}: {r.reason}" for r in records) or "no data"
