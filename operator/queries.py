"""PromQL for the builtin metrics and user templates. Metric names come from the runtime's
contract module, so a rename there cannot silently break analysis here. A user's query is
confined to its Model's namespace (promql.py) before it is sent; the builtins are Serin's own and
sent as written."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

from serin.operator.gateway_metrics import GatewayMetrics
from serin.operator.promql import QueryRefused, confine
from serin.operator.spec import Builtin, MetricSpec
from serin.runtime import metric_names as m


@dataclass(frozen=True)
class QueryContext:
    model: str  # the InferenceService name: the runtime's `model` label
    namespace: str
    revision: str  # canary revision
    stable_revision: str
    window: str  # PromQL range, e.g. "1m"
    # PromQL range covering the canary's time with traffic (never shorter than `window`): what the
    # ground-truth builtins add up, since labels are few and every one counts.
    lifetime: str = ""
    # gatewayErrorRate: its query, rendered for the Gateway implementation and the canary's
    # backend Service (gateway_query); else why it cannot be read.
    gateway_errors: str = ""
    gateway_refusal: str = ""


def _sel(ctx: QueryContext, revision: str, extra: str = "") -> str:
    # KServe names revisions `<isvc>-predictor-0000N` in every namespace, so model and revision
    # alone also match a namesake elsewhere; its series would answer for a canary that has no data
    # yet (a healthy neighbour's 200s made a broken canary's error rate read 0). The namespace
    # label is the scrape target's, as a PodMonitor attaches it.
    return f'namespace="{ctx.namespace}",model="{ctx.model}",revision="{revision}"{extra}'


def builtin_query(builtin: Builtin, ctx: QueryContext) -> str:
    c, w = _sel(ctx, ctx.revision), ctx.window
    if builtin == Builtin.ERROR_RATE:
        # The canary's share of 5xx, plus its share of 4xx beyond the stable's over the same
        # window: a version that refuses the live traffic's requests (400: another input schema)
        # fails its users as surely as one that crashes, while clients' own bad requests reach
        # both versions alike and cancel out. `or vector(0)`: no such series at all means none,
        # not "no data"; the canary's denominator stays strict, so a canary without traffic is
        # still Inconclusive, and a stable without any (a 100 % step) has no 4xx share to subtract.
        def coded(revision: str, codes: str) -> str:
            codes_sel = _sel(ctx, revision, f',code=~"{codes}"')
            return f"(sum(rate({m.REQUESTS_TOTAL}{{{codes_sel}}}[{w}])) or vector(0))"

        canary_total = f"sum(rate({m.REQUESTS_TOTAL}{{{c}}}[{w}]))"
        # Floored: a stable that got no request in the window has a 4xx share of 0, not NaN.
        stable_total = f"clamp_min(sum(rate({m.REQUESTS_TOTAL}{{{_sel(ctx, ctx.stable_revision)}}}[{w}])), 1e-12)"
        stable_4xx = f"scalar(({coded(ctx.stable_revision, '4..')} / {stable_total}) or vector(0))"
        return (
            f"{coded(ctx.revision, '5..')} / {canary_total}"
            f" + clamp_min({coded(ctx.revision, '4..')} / {canary_total} - {stable_4xx}, 0)"
        )
    if builtin == Builtin.LATENCY_P99_SECONDS:
        return (
            f"histogram_quantile(0.99, sum by (le) "
            f"(rate({m.REQUEST_DURATION_SECONDS}_bucket{{{c}}}[{w}])))"
        )
    if builtin == Builtin.INPUT_PSI:
        return f"max({m.INPUT_PSI}{{{c}}})"
    if builtin == Builtin.INPUT_DRIFT_P_VALUE:
        # Each pod tests its own window; the smallest p-value is the most drifted pod's.
        return f"min({m.INPUT_DRIFT_PVALUE}{{{c}}})"
    if builtin == Builtin.ERROR_RATE_VS_STABLE:
        def share_5xx(revision: str) -> str:
            s, s5 = _sel(ctx, revision), _sel(ctx, revision, ',code=~"5.."')
            errors = f"(sum(rate({m.REQUESTS_TOTAL}{{{s5}}}[{w}])) or vector(0))"
            return f"{errors} / sum(rate({m.REQUESTS_TOTAL}{{{s}}}[{w}]))"

        # A stable without requests in the window (a 100 % step) has no share: 0, not "no data".
        return f"{share_5xx(ctx.revision)} - scalar(({share_5xx(ctx.stable_revision)}) or vector(0))"
    if builtin == Builtin.LATENCY_P99_VS_STABLE:
        def p99(revision: str) -> str:
            return (f"histogram_quantile(0.99, sum by (le) "
                    f"(rate({m.REQUEST_DURATION_SECONDS}_bucket{{{_sel(ctx, revision)}}}[{w}])))")

        return f"{p99(ctx.revision)} / scalar({p99(ctx.stable_revision)})"
    if builtin == Builtin.GATEWAY_ERROR_RATE:
        return ctx.gateway_errors
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


# -- predictionShift for a regressor ----------------------------------------------------------
# A regressor's predicted values are a histogram (serin_prediction_value) whose buckets are each
# version's own profile cuts (its reference predictions' deciles), so the two versions' buckets do
# not line up and PromQL cannot join them. The operator reads both cumulative bucket vectors and
# computes the same PSI as for classes, over the stable's bins, here.

PSI_FLOOR = 0.0001  # as the class query's: a bin one side never hit does not make PSI infinite


def value_buckets_query(ctx: QueryContext, revision: str) -> str:
    """The cumulative counts of predicted values over the window, one sample per `le`."""
    return f"sum by (le) (increase({m.PREDICTION_VALUE}_bucket{{{_sel(ctx, revision)}}}[{ctx.window}]))"


def _cumulative(buckets: dict[str, float]) -> list[tuple[float, float]]:
    points = sorted((float(le), count) for le, count in buckets.items())
    # Counters sampled a moment apart can make a cumulative count dip below the one before it.
    out, top = [], 0.0
    for le, count in points:
        top = max(top, count)
        out.append((le, top))
    return out


def _knots(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The cumulative counts as a piecewise-linear function (linear inside a bucket, as
    histogram_quantile assumes); the two open buckets are taken to be as wide as their neighbours."""
    finite = [(le, c) for le, c in points if math.isfinite(le)]
    total = points[-1][1]
    if not finite:  # only +Inf: all of it at 0, for lack of anything better
        return [(math.nextafter(0.0, -1.0), 0.0), (0.0, total)]
    first_width = (finite[1][0] - finite[0][0]) if len(finite) > 1 else 1.0
    last_width = (finite[-1][0] - finite[-2][0]) if len(finite) > 1 else 1.0
    return [(finite[0][0] - first_width, 0.0), *finite, (finite[-1][0] + last_width, total)]


def _at(knots: list[tuple[float, float]], x: float) -> float:
    if x <= knots[0][0]:
        return 0.0
    for (x0, c0), (x1, c1) in itertools.pairwise(knots):
        if x <= x1:
            return c0 + (c1 - c0) * (x - x0) / (x1 - x0) if x1 > x0 else c1
    return knots[-1][1]


def regression_shift(canary: dict[str, float], stable: dict[str, float]) -> float | None:
    """PSI of the canary's predicted values against the stable's, over the stable's bins; None
    when either has no prediction in the window (Inconclusive, as for classes)."""
    c, s = _cumulative(canary), _cumulative(stable)
    if not c or not s or c[-1][1] <= 0 or s[-1][1] <= 0:
        return None
    knots, s_total, c_total = _knots(c), s[-1][1], c[-1][1]
    psi, s_before, c_before = 0.0, 0.0, 0.0
    for le, s_cum in s:
        c_cum = c_total if not math.isfinite(le) else min(c_total, _at(knots, le))
        p = (s_cum - s_before) / s_total + PSI_FLOOR
        q = max(0.0, c_cum - c_before) / c_total + PSI_FLOOR
        psi += (q - p) * math.log(q / p)
        s_before, c_before = s_cum, max(c_before, c_cum)
    return psi


# -- ground truth: canary against stable -------------------------------------------------------
# The feedback counters (runtime/feedback.py) are labelled with the revision that made each
# prediction, whichever replica took the truth; one query per counter returns both versions'.


def feedback_query(ctx: QueryContext, counter: str, by: str = m.PREDICTED_REVISION) -> str:
    """`counter`'s increase since the canary started, per revision (canary and stable).

    A replica counts truth under the revision that predicted, so a stable replica starts a series
    for the canary's revision (and the other way round) at its first feedback: the series is born
    with a value, which increase() never counts (it sees increases between samples only); at a few
    labels a minute that can be all there is. So per series the larger of increase(), right across
    restarts, and the plain difference from the series' value when the canary started (0 when it
    did not exist then), right for a series born since."""
    selector = (f'{counter}{{namespace="{ctx.namespace}",model="{ctx.model}",'
                f'{by}=~"{ctx.revision}|{ctx.stable_revision}"}}')
    span = ctx.lifetime or ctx.window
    counted = f"increase({selector}[{span}])"
    difference = f"({selector} - ({selector} offset {span} * 1 or {selector} * 0))"
    return f"sum by ({by}) (({counted} >= {difference}) or {difference})"


FEEDBACK_COUNTERS: dict[Builtin, tuple[str, ...]] = {
    Builtin.ACCURACY: (m.FEEDBACK_ROWS_TOTAL, m.FEEDBACK_CORRECT_TOTAL),
    # The estimate's "correct" is a sum of probabilities: its binomial interval is conservative
    # (the variance of a sum of Bernoulli(p_i) is at most n * mean(p) * (1 - mean(p))).
    Builtin.ESTIMATED_ACCURACY: (m.ESTIMATED_ROWS_TOTAL, m.ESTIMATED_CORRECT_TOTAL),  # by `revision`
    Builtin.MEAN_ABSOLUTE_ERROR: (m.FEEDBACK_ROWS_TOTAL, m.FEEDBACK_ABSOLUTE_ERROR_TOTAL,
                                  m.FEEDBACK_SQUARED_ERROR_TOTAL),
}


@dataclass(frozen=True)
class Compared:
    """A canary-against-stable figure with its confidence interval, or why there is none."""

    value: float | None
    interval: tuple[float, float] | None = None
    why_none: str = ""


def _z(confidence: float) -> float:
    # Two-sided interval at `confidence`: each side is one-sided at (1 + confidence) / 2.
    return NormalDist().inv_cdf((1.0 + confidence) / 2.0)


def _missing(canary_rows: float, stable_rows: float, what: str = "ground truth") -> str:
    sides = [name for name, n in (("canary", canary_rows), ("stable", stable_rows)) if n < 1]
    return f"no {what} yet for the {' and the '.join(sides)}" if sides else ""


def accuracy_difference(canary: tuple[float, float], stable: tuple[float, float], confidence: float,
                        what: str = "ground truth") -> Compared:
    """Canary accuracy minus stable accuracy from (rows, correct) each, with the Agresti-Caffo
    interval (one success and one failure added to each side): it keeps its coverage at small
    counts and at accuracies near 1, where the plain Wald interval is far too narrow."""
    (n_c, x_c), (n_s, x_s) = canary, stable
    why = _missing(n_c, n_s, what)
    if why:
        return Compared(None, why_none=why)
    x_c, x_s = min(max(x_c, 0.0), n_c), min(max(x_s, 0.0), n_s)
    p_c, p_s = (x_c + 1) / (n_c + 2), (x_s + 1) / (n_s + 2)
    centre = p_c - p_s
    half = _z(confidence) * math.sqrt(p_c * (1 - p_c) / (n_c + 2) + p_s * (1 - p_s) / (n_s + 2))
    return Compared(x_c / n_c - x_s / n_s, (centre - half, centre + half))


def mae_ratio(canary: tuple[float, float, float], stable: tuple[float, float, float], confidence: float) -> Compared:
    """Canary MAE over stable MAE, minus 1, from (rows, sum |e|, sum e^2) each; the interval by the
    delta method, with each side's variance of |e| from its own sums."""
    (n_c, a_c, q_c), (n_s, a_s, q_s) = canary, stable
    why = _missing(n_c, n_s)
    if why:
        return Compared(None, why_none=why)
    if n_c < 2 or n_s < 2:
        return Compared(None, why_none="fewer than 2 rows of ground truth on a side")
    mae_c, mae_s = a_c / n_c, a_s / n_s
    if mae_s <= 0:
        return Compared(None, why_none="the stable's error is 0: no ratio")
    var_c = max(0.0, q_c / n_c - mae_c**2) / (n_c - 1)
    var_s = max(0.0, q_s / n_s - mae_s**2) / (n_s - 1)
    ratio = mae_c / mae_s
    half = _z(confidence) * math.sqrt(var_c / mae_s**2 + ratio**2 * var_s / mae_s**2)
    return Compared(ratio - 1.0, (ratio - 1.0 - half, ratio - 1.0 + half))


def compare_feedback(builtin: Builtin, sums: dict[str, dict[str, float]], ctx: QueryContext,
                     confidence: float) -> Compared:
    """The builtin's figure from the feedback counters' per-revision increases (`sums`: counter ->
    revision -> increase), as feedback_query returns them."""
    counters = FEEDBACK_COUNTERS[builtin]

    def side(revision: str) -> tuple[float, ...]:
        return tuple(sums.get(c, {}).get(revision, 0.0) for c in counters)

    canary, stable = side(ctx.revision), side(ctx.stable_revision)
    if builtin == Builtin.ACCURACY:
        return accuracy_difference((canary[0], canary[1]), (stable[0], stable[1]), confidence)
    if builtin == Builtin.ESTIMATED_ACCURACY:
        return accuracy_difference((canary[0], canary[1]), (stable[0], stable[1]), confidence,
                                   "answered row with class probabilities")
    return mae_ratio((canary[0], canary[1], canary[2]), (stable[0], stable[1], stable[2]), confidence)


def sample_query(metric: MetricSpec, ctx: QueryContext) -> str | None:
    """How many requests a builtin rate stands on over the window (the canary's), or None."""
    if metric.builtin == Builtin.ERROR_RATE:
        return f"sum(increase({m.REQUESTS_TOTAL}{{{_sel(ctx, ctx.revision)}}}[{ctx.window}]))"
    return None


# Sent in place of a refused user query: it reads no series, so it answers "no data" (Inconclusive)
# whether or not the caller asked `refusal` for the reason first.
REFUSED = "vector(0) unless vector(0)"


def render(metric: MetricSpec, ctx: QueryContext) -> str:
    """The PromQL to send for `metric`: a builtin as written; a user query with its placeholders
    filled in and confined to ctx.namespace, or REFUSED when it cannot be (`refusal` says why)."""
    if metric.builtin:
        return builtin_query(metric.builtin, ctx)
    try:
        return _user_query(metric, ctx)
    except QueryRefused:
        return REFUSED


def refusal(metric: MetricSpec, ctx: QueryContext) -> str:
    """Why `metric`'s query is not sent ("" when it is): the reason to record in status."""
    if metric.builtin == Builtin.GATEWAY_ERROR_RATE and not ctx.gateway_errors:
        return ctx.gateway_refusal or "gatewayErrorRate: the Gateway's answers cannot be read here"
    if metric.builtin:
        return ""
    try:
        _user_query(metric, ctx)
    except QueryRefused as err:
        return f"query refused: {err}"
    return ""


def _user_query(metric: MetricSpec, ctx: QueryContext) -> str:
    assert metric.query is not None  # the CRD requires exactly one of builtin / query
    return confine(
        metric.query.replace("{{model}}", ctx.model)
        .replace("{{namespace}}", ctx.namespace)
        .replace("{{revision}}", ctx.revision)
        .replace("{{stableRevision}}", ctx.stable_revision),
        ctx.namespace)


def window_for(interval_seconds: float) -> str:
    """rate() needs at least two scrapes in its window: never shorter than 30 s."""
    return f"{max(30, int(interval_seconds * 3))}s"


def lifetime_for(interval_seconds: float, canary_age_seconds: float) -> str:
    """The range since the canary got traffic, never shorter than the ordinary window."""
    return f"{max(max(30, int(interval_seconds * 3)), math.ceil(canary_age_seconds))}s"


def gateway_query(metrics: GatewayMetrics | None, traffic: str, namespace: str, canary_service: str,
                  port: int, window: str) -> tuple[str, str]:
    """(gatewayErrorRate's query, "") or ("", why it cannot be read): only a Model whose canary
    Serin routes through a Gateway (status.serving.traffic) whose implementation's metrics the
    operator was told (SERIN_GATEWAY_METRICS)."""
    if traffic != "gateway":
        return "", ("gatewayErrorRate reads the Gateway's answers, and this Model is not routed through a "
                    "Gateway (Standard mode with the chart's gateway values)")
    if metrics is None:
        return "", ("gatewayErrorRate: the operator was not told which Gateway implementation's metrics to "
                    "read (the chart's gateway.metrics, SERIN_GATEWAY_METRICS)")
    if not canary_service:
        return "", "gatewayErrorRate: the canary's predictor is not known yet"
    return metrics.error_share(namespace, canary_service, port, window), ""
