"""Judging one measurement: pure, separate from measuring (as Argo Rollouts' analysis does).

Missing data is never a pass: no series, NaN, or a Prometheus error is Inconclusive, which can
pause a rollout but never promote it."""

from __future__ import annotations

import math

from serin.operator.observations import MeasuredValue
from serin.operator.spec import MetricSpec

SUCCESSFUL, FAILED, INCONCLUSIVE = "Successful", "Failed", "Inconclusive"


def assess(metric: MetricSpec, measured: MeasuredValue) -> tuple[str, str]:
    """→ (verdict, reason)."""
    if measured.error:
        return INCONCLUSIVE, measured.error
    value = measured.value
    if value is None or math.isnan(value):
        return INCONCLUSIVE, "no data"
    if metric.max is not None and value > metric.max:
        return FAILED, f"{metric.name} = {value:.4g} > max {metric.max:g}"
    if metric.min is not None and value < metric.min:
        return FAILED, f"{metric.name} = {value:.4g} < min {metric.min:g}"
    return SUCCESSFUL, ""
