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
from serin.operator.spec import AnalysisSpec, MetricSpec
from serin.operator.status import Measurement, Verdict


def assess(metric: MetricSpec, measured: MeasuredValue) -> tuple[Verdict, str]:
    """One measurement → (verdict, reason)."""
    if measured.error:
        return Verdict.INCONCLUSIVE, measured.error
    value = measured.value
    if value is None or math.isnan(value):
        return Verdict.INCONCLUSIVE, "no data"
    if metric.max is not None and value > metric.max:
        return Verdict.FAILED, f"{metric.name} = {value:.4g} > max {metric.max:g}"
    if metric.min is not None and value < metric.min:
        return Verdict.FAILED, f"{metric.name} = {value:.4g} < min {metric.min:g}"
    return Verdict.SUCCESSFUL, ""


@dataclass(frozen=True)
class Round:
    """One analysis round, judged: a record per metric of the spec, and the failure counters."""

    records: tuple[Measurement, ...]
    failures: dict[str, int]  # failed measurements per metric during this canary, this round included
    failure_limit: int

    @property
    def successful(self) -> bool:
        return all(r.verdict == Verdict.SUCCESSFUL for r in self.records)

    @property
    def failed(self) -> tuple[Measurement, ...]:
        return tuple(r for r in self.records if r.verdict == Verdict.FAILED)

    @property
    def inconclusive(self) -> tuple[Measurement, ...]:
        return tuple(r for r in self.records if r.verdict == Verdict.INCONCLUSIVE)

    @property
    def over_limit(self) -> Measurement | None:
        """The first metric whose failures reached failureLimit: the canary must roll back."""
        return next((r for r in self.failed if self.failures[r.metric] >= self.failure_limit), None)


def judge_round(spec: AnalysisSpec, measured: tuple[MeasuredValue, ...], failures: Mapping[str, int],
                generation: int, at: str) -> Round:
    """Every metric of the spec gets a verdict; one that was not measured is Inconclusive."""
    by_name = {m.metric: m for m in measured}
    counts = dict(failures)
    records: list[Measurement] = []
    for metric in spec.metrics:
        got = by_name.get(metric.name)
        if got is None:
            verdict, reason, value = Verdict.INCONCLUSIVE, "not measured", None
        else:
            (verdict, reason), value = assess(metric, got), got.value
        finite = value is not None and math.isfinite(value)  # JSON (and so status) has no NaN
        records.append(Measurement(metric.name, verdict, at, generation, value if finite else None, reason))
        if verdict == Verdict.FAILED:
            counts[metric.name] = counts.get(metric.name, 0) + 1
    return Round(tuple(records), counts, spec.failure_limit)


def reasons(records: tuple[Measurement, ...] | list[Measurement]) -> str:
    return ", ".join(f"{r.metric}: {r.reason}" for r in records) or "no data"
