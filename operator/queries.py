"""PromQL for the builtin metrics and user templates. Metric names come from the runtime's
contract module, so a rename there cannot silently break analysis here."""

from __future__ import annotations

from dataclasses import dataclass

from serin.operator.spec import Builtin, MetricSpec
from serin.runtime import metric_names as m


@dataclass(frozen=True)
class QueryContext:
    model: str  # the InferenceService name: the runtime's `model` label
    namespace: str
    revision: str  # canary revision
    stable_revision: str
    window: str  # PromQL range, e.g. "1m"


def _sel(ctx: QueryContext, revision: str, extra: str = "") -> str:
    # KServe names revisions `<isvc>-predictor-0000N` in every namespace, so model and revision
    # alone also match a namesake elsewhere; its series would answer for a canary that has no data
    # yet (a healthy neighbour's 200s made a broken canary's error rate read 0). The namespace
    # label is the scrape target's, as a PodMonitor attaches it.
    return f'namespace="{ctx.namespace}",model="{ctx.model}",revision="{revision}"{extra}'


def builtin_query(builtin: Builtin, ctx: QueryContext) -> str:
    c, w = _sel(ctx, ctx.revision), ctx.window
    if builtin == Builtin.ERROR_RATE:
        # `or vector(0)`: no 5xx series at all means zero errors, not "no data"; the denominator
        # stays strict, so a canary without traffic is still Inconclusive.
        errors = _sel(ctx, ctx.revision, ',code=~"5.."')
        return (
            f"(sum(rate({m.REQUESTS_TOTAL}{{{errors}}}[{w}])) or vector(0))"
            f" / sum(rate({m.REQUESTS_TOTAL}{{{c}}}[{w}]))"
        )
    if builtin == Builtin.LATENCY_P99_SECONDS:
        return (
            f"histogram_quantile(0.99, sum by (le) "
            f"(rate({m.REQUEST_DURATION_SECONDS}_bucket{{{c}}}[{w}])))"
        )
    if builtin == Builtin.INPUT_PSI:
        return f"max({m.INPUT_PSI}{{{c}}})"
    if builtin == Builtin.PREDICTION_SHIFT:
        # PSI of the canary's class distribution against the stable's over the same window,
        # with a small floor so a class one side never predicted does not make it infinite.
        def share(rev: str) -> str:
            s = _sel(ctx, rev)
            return (
                f"(sum by (class) (rate({m.PREDICTIONS_TOTAL}{{{s}}}[{w}]))"
                f" / scalar(sum(rate({m.PREDICTIONS_TOTAL}{{{s}}}[{w}]))) + 0.0001)"
            )

        can, sta = share(ctx.revision), share(ctx.stable_revision)
        return f"sum(({can} - {sta}) * ln({can} / {sta}))"
    raise ValueError(f"unknown builtin metric {builtin!r}")


def sample_query(metric: MetricSpec, ctx: QueryContext) -> str | None:
    """How many requests a builtin rate stands on over the window (the canary's), or None."""
    if metric.builtin == Builtin.ERROR_RATE:
        return f"sum(increase({m.REQUESTS_TOTAL}{{{_sel(ctx, ctx.revision)}}}[{ctx.window}]))"
    return None


def render(metric: MetricSpec, ctx: QueryContext) -> str:
    if metric.builtin:
        return builtin_query(metric.builtin, ctx)
    assert metric.query is not None  # the CRD requires exactly one of builtin / query
    return (
        metric.query.replace("{{model}}", ctx.model)
        .replace("{{namespace}}", ctx.namespace)
        .replace("{{revision}}", ctx.revision)
        .replace("{{stableRevision}}", ctx.stable_revision)
    )


def window_for(interval_seconds: float) -> str:
    """rate() needs at least two scrapes in its window: never shorter than 30 s."""
    return f"{max(30, int(interval_seconds * 3))}s"
