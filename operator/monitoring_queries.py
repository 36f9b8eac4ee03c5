"""Reading the counts monitoring judges (monitoring.py) from Prometheus: the only I/O it needs.

Counters differenced between two instants give exact counts of the rows counted in between, where
`increase()` would extrapolate them to the window's edges (inflating the evidence of a short
window by up to a scrape interval's share). Consecutive windows tile without gap or overlap: each
ends at the instant the next one starts, both read at the last scrape before that instant. A Pod
whose counters reset inside a window, or in the lookback before it, is left out of that window
entirely; one that started in it counts from zero (the runtime creates every counter at 0 at
start-up), and one that went away in it is left out with its rows (its series lack the window's
end: with scale-to-zero and intermittent traffic a window can stay short of minRows for a day).
Rows left out are never counted, and no difference of unrelated counters is ever taken for a count.
What is counted is what the runtime binned: under overload it bins a sample of the rows (its drift
window drops requests it has no time for), which changes the counts, not their distribution.

One query per evaluation reads the window and the reference the runtime exports; a second reads
the trailing window behind the bet only when the first holds enough rows to judge. Feedback is
counted under the revision that made the prediction (`predicted_revision`), whichever Pod took it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from serin.operator.monitoring import Counts, Reference
from serin.runtime import metric_names as m

_VALUE_BUCKETS = f"{m.PREDICTION_VALUE}_bucket"  # a regressor's predicted values, by the profile's cuts
_COUNTERS = (
    m.FEATURE_BIN_ROWS_TOTAL, m.PREDICTIONS_TOTAL, f"{m.REQUESTS_TOTAL}", f"{m.REQUEST_DURATION_SECONDS}_bucket",
    m.INFERENCE_ROWS_TOTAL, m.ESTIMATED_CORRECT_TOTAL, m.ESTIMATED_ROWS_TOTAL, _VALUE_BUCKETS,
)
_FEEDBACK = (m.FEEDBACK_ROWS_TOTAL, m.FEEDBACK_CORRECT_TOTAL)
_REFERENCE = (m.FEATURE_BIN_REFERENCE_RATIO, m.PREDICTION_REFERENCE_RATIO, m.REFERENCE_ACCURACY,
              m.PREDICTION_VALUE_REFERENCE_RATIO)
_BY = "name, feature, bin, class, code, le"
LOOKBACK = 300  # Prometheus' default lookback delta, seconds


def _names(names: Iterable[str]) -> str:
    return "|".join(names)


def _selector(namespace: str, model: str, revision: str, names: Iterable[str], label: str = m.REVISION) -> str:
    return f'{{__name__=~"{_names(names)}",namespace="{namespace}",model="{model}",{label}="{revision}"}}'


def _offset(seconds: int) -> str:
    return f" offset {seconds}s" if seconds > 0 else ""


def _difference(selector: str, guard: str, started: str, ends_before: int, seconds: int) -> str:
    """Each series' rows in the `seconds` ending `ends_before` seconds before the query time,
    left out for any instance whose counters reset in between. `guard` selects one counter per
    runtime process set that always exists (created at 0 at start-up): all of a Pod's counters
    reset together, and resets() over many metric names at once would yield clashing label sets.
    `started` selects the runtimes' start times (serin_start_time_seconds)."""
    named = 'label_replace({sel}{off}, "name", "$1", "__name__", "(.+)")'
    end = named.format(sel=selector, off=_offset(ends_before))
    start = named.format(sel=selector, off=_offset(ends_before + seconds))
    # A series with no sample at the start counts from zero (the runtime creates every counter at 0)
    # only if its Pod started inside the window: one that was alive before and has no sample there
    # (a scrape gap longer than the lookback, data past retention) would otherwise count its whole
    # history as the window's; it is left out instead. The start's value is the last sample at or
    # before the window's start, up to a lookback (5 minutes) earlier: a restart in that gap would
    # make the difference one of unrelated counters, so the resets are looked for over the window
    # and the lookback before it.
    # Born inside the window: its runtime started after the window's start, less a lookback (it
    # loads its model before it is first scraped; the previous window left it out, as it had no
    # sample there), or the Pod was scraped at the start (its guard has a sample), so a series it
    # lacked there was not yet created: 0.
    window_start = f"time() - {ends_before + seconds + LOOKBACK}"
    born = (f"({end} * 0 and on(instance) "
            f"(({started}{_offset(ends_before)} >= {window_start}) or {guard}{_offset(ends_before + seconds)}))")
    return (f"({end} - ({start} or {born}))"
            f" unless on(instance) (resets({guard}[{seconds + LOOKBACK}s]{_offset(ends_before)}) > 0)")


def window_query(namespace: str, model: str, revision: str, ends_before: int, seconds: int,
                 with_reference: bool) -> str:
    counters = _selector(namespace, model, revision, _COUNTERS)
    feedback = _selector(namespace, model, revision, _FEEDBACK, m.PREDICTED_REVISION)
    guard = f'{m.REQUESTS_TOTAL}{{namespace="{namespace}",model="{model}",protocol="v1",code="200"}}'
    started = f'{m.START_TIME_SECONDS}{{namespace="{namespace}",model="{model}"}}'
    parts = [f"sum by ({_BY}) ({_difference(counters, guard, started, ends_before, seconds)})",
             f"sum by ({_BY}) ({_difference(feedback, guard, started, ends_before, seconds)})"]
    if with_reference:
        reference = _selector(namespace, model, revision, _REFERENCE)
        parts.append(f'max by ({_BY}) (label_replace({reference}, "name", "$1", "__name__", "(.+)"))')
    return " or ".join(parts)


def parse(samples: list[tuple[dict[str, str], float]]) -> tuple[Counts, Reference]:
    """The counts and reference of one answer (a sample the runtime cannot have exported, such as
    a bin that is not a number, is ignored)."""
    features: dict[str, dict[int, float]] = {}
    classes: dict[str, float] = {}
    latency: dict[float, float] = {}
    values: dict[float, float] = {}  # a regressor's predicted values: rows at most `le` (cumulative)
    ref_values: dict[float, float] = {}  # the profile's share of each value bucket, by its upper bound
    ref_features: dict[str, dict[int, float]] = {}
    ref_classes: dict[str, float] = {}
    totals = {"rows": 0.0, "requests": 0.0, "errors": 0.0, "feedback_rows": 0.0, "feedback_correct": 0.0,
              "estimated_rows": 0.0, "estimated_correct": 0.0}
    accuracy = None
    for labels, value in samples:
        name = labels.get("name", "")
        if not math.isfinite(value):
            continue
        if name in (m.FEATURE_BIN_ROWS_TOTAL, m.FEATURE_BIN_REFERENCE_RATIO):
            try:
                b = int(labels.get(m.BIN, ""))
            except ValueError:
                continue
            into = features if name == m.FEATURE_BIN_ROWS_TOTAL else ref_features
            into.setdefault(labels.get(m.FEATURE, ""), {})[b] = value
        elif name == m.PREDICTIONS_TOTAL:
            classes[labels.get(m.CLASS, "")] = value
        elif name == m.PREDICTION_REFERENCE_RATIO:
            ref_classes[labels.get(m.CLASS, "")] = value
        elif name == m.REFERENCE_ACCURACY:
            accuracy = value
        elif name == m.REQUESTS_TOTAL:
            totals["requests"] += value
            if labels.get(m.CODE, "").startswith("5"):
                totals["errors"] += value
        elif name in (f"{m.REQUEST_DURATION_SECONDS}_bucket", _VALUE_BUCKETS, m.PREDICTION_VALUE_REFERENCE_RATIO):
            try:
                le = float(labels.get("le", ""))
            except ValueError:
                continue
            by_le = {_VALUE_BUCKETS: values, m.PREDICTION_VALUE_REFERENCE_RATIO: ref_values}.get(name, latency)
            by_le[le] = value
        else:
            key = {m.INFERENCE_ROWS_TOTAL: "rows", m.FEEDBACK_ROWS_TOTAL: "feedback_rows",
                   m.FEEDBACK_CORRECT_TOTAL: "feedback_correct", m.ESTIMATED_ROWS_TOTAL: "estimated_rows",
                   m.ESTIMATED_CORRECT_TOTAL: "estimated_correct"}.get(name)
            if key is not None:
                totals[key] += value
    if not classes and values:  # a regressor: its value buckets are the "classes" predictionShift judges
        classes = value_bins(values)
    if not ref_classes and ref_values:
        ref_classes = {value_bin(le): share for le, share in ref_values.items()}
    counts = Counts(features=features, classes=classes, latency=latency, **totals)
    return counts, Reference(ref_features, dict(sorted(ref_classes.items())), accuracy)


def value_bin(le: float) -> str:
    """A regressor's value bucket as predictionShift names it: by its upper bound."""
    return f"value <= {le!r}" if math.isfinite(le) else "value above the last cut"  # repr: exact, unique


def value_bins(cumulative: dict[float, float]) -> dict[str, float]:
    """Rows per bucket from a histogram's cumulative counts by upper bound."""
    out, below = {}, 0.0
    for le in sorted(cumulative):
        out[value_bin(le)] = max(cumulative[le] - below, 0.0)
        below = max(below, cumulative[le])
    return out
