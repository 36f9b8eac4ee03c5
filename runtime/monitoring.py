"""Prometheus metrics for one worker process (names from serin.runtime.metric_names).

The request path only adds to plain Python counts (`Monitor.observe`: one dict entry keyed by
protocol, status and latency bucket, a float, an int, the predicted class) and hands the decoded
inputs to the drift window with one deque append. `Monitor.flush` moves the counts into
prometheus_client's metrics every FLUSH_INTERVAL seconds and before this worker answers a
scrape. Writing prometheus_client's multiprocess values per request costs a lock, a pid check
and an mmap write per value, five per request, and each of them touches code and data the model
run has pushed out of the CPU caches; see docs/runtime.md for what was measured.

Flushing runs on the event loop, the thread that serves requests, so the counts need no lock and
no update is lost or counted twice. Counters and histograms use prometheus_client's multiprocess
mode: every worker writes its own mmap file in PROMETHEUS_MULTIPROC_DIR (set by the CLI before
prometheus_client is imported) and any worker answering /metrics sums them, so `rate()` and
`histogram_quantile()` see one coherent series per revision whichever worker Prometheus reaches.
A scrape shows its own worker's requests at once and the other workers' within FLUSH_INTERVAL.
PSI gauges are not summable; they come from a custom collector exporting the drift result merged
across workers (see drift.py).
"""

from __future__ import annotations

import logging
import math
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from serin.runtime import metric_names as mn
from serin.runtime.drift import Drift
from serin.runtime.feedback import ClassColumns
from serin.runtime.model import Task
from serin.runtime.profile import Prediction

log = logging.getLogger("serin.runtime.monitoring")

FLUSH_INTERVAL = 0.5
_DURATION_BOUNDS = tuple(mn.DURATION_BUCKETS)
_DEFAULT_VALUE_BUCKETS = (-10.0, -1.0, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0, 1000.0)


class DriftCollector(Collector):
    def __init__(self, drift: Drift, model: str, revision: str) -> None:
        self.drift = drift
        self.labels = [model, revision]

    def reference(self) -> Iterator[Metric]:
        """The profile's share of each feature bin: what the operator's monitoring compares the
        bin counters with (constant: a few hundred series that compress to nearly nothing)."""
        ratio = GaugeMetricFamily(
            mn.FEATURE_BIN_REFERENCE_RATIO, "Share of the reference profile's rows in each feature bin",
            labels=list(mn.LABELS[mn.FEATURE_BIN_REFERENCE_RATIO]),
        )
        for f in self.drift.binner.features:
            total = float(np.sum(f.proportions)) or 1.0
            for b, share in enumerate(f.proportions.tolist()):
                ratio.add_metric([*self.labels, f.name, str(b)], share / total)
        yield ratio

    def collect(self) -> Iterator[Metric]:
        yield from self.reference()
        rows = GaugeMetricFamily(
            mn.DRIFT_WINDOW_ROWS, "Rows in the drift window behind the PSI figures",
            labels=list(mn.LABELS[mn.DRIFT_WINDOW_ROWS]),
        )
        rows.add_metric(self.labels, self.drift.rows)
        yield rows
        result = self.drift.result
        if result is None:
            return  # too few rows for PSI to mean anything: absent, not zero
        feature = GaugeMetricFamily(
            mn.FEATURE_PSI, "PSI of one input feature, recent window vs reference profile",
            labels=list(mn.LABELS[mn.FEATURE_PSI]),
        )
        for name, value in result.feature_psi.items():
            feature.add_metric([*self.labels, name], value)
        yield feature
        overall = GaugeMetricFamily(
            mn.INPUT_PSI, "Largest feature PSI", labels=list(mn.LABELS[mn.INPUT_PSI])
        )
        overall.add_metric(self.labels, result.input_psi)
        yield overall
        smallest_pvalue = result.input_pvalue
        if smallest_pvalue is None:
            return  # a profile without its row count: no test (see Drift.reference_rows)
        pvalue = GaugeMetricFamily(
            mn.FEATURE_DRIFT_PVALUE,
            "Holm-adjusted p-value of one feature's drift test (KS numeric, chi-squared categorical)",
            labels=list(mn.LABELS[mn.FEATURE_DRIFT_PVALUE]),
        )
        for name, value in result.feature_pvalue.items():
            pvalue.add_metric([*self.labels, name], value)
        yield pvalue
        smallest = GaugeMetricFamily(
            mn.INPUT_DRIFT_PVALUE, "Smallest adjusted feature p-value: some feature drifted when <= alpha",
            labels=list(mn.LABELS[mn.INPUT_DRIFT_PVALUE]),
        )
        smallest.add_metric(self.labels, smallest_pvalue)
        yield smallest


class ReferenceCollector(Collector):
    """The reference profile's predicted-class shares and accuracy, as constant gauges: the
    operator's predictionShift and accuracy monitoring compare live counts with them."""

    def __init__(self, prediction: Prediction, model: str, revision: str) -> None:
        self.prediction = prediction
        self.labels = [model, revision]

    def collect(self) -> Iterator[Metric]:
        p = self.prediction
        if p.kind == "classification" and len(p.proportions) == len(p.classes) and p.classes:
            ratio = GaugeMetricFamily(
                mn.PREDICTION_REFERENCE_RATIO, "Share of each class among the reference profile's predictions",
                labels=list(mn.LABELS[mn.PREDICTION_REFERENCE_RATIO]))
            total = sum(p.proportions) or 1.0
            for cls, share in zip(p.classes, p.proportions, strict=True):
                ratio.add_metric([*self.labels, cls], share / total)
            yield ratio
        if p.kind == "regression" and p.cuts and len(p.proportions) == len(p.cuts) + 1:
            # One share per bucket of the value histogram (whose bounds are sorted(set(cuts))), by
            # its upper bound as the histogram writes it; a bin the profile gives no width (a
            # repeated cut) adds to the bucket that ends there.
            shares: dict[float, float] = {}
            total = sum(p.proportions) or 1.0
            for i, share in enumerate(p.proportions):
                upper = float(p.cuts[i]) if i < len(p.cuts) else math.inf
                shares[upper] = shares.get(upper, 0.0) + share / total
            values = GaugeMetricFamily(
                mn.PREDICTION_VALUE_REFERENCE_RATIO,
                "Share of the reference profile's predicted values in each bucket of serin_prediction_value",
                labels=list(mn.LABELS[mn.PREDICTION_VALUE_REFERENCE_RATIO]))
            for upper, share in sorted(shares.items()):
                values.add_metric([*self.labels, floatToGoString(upper)], share)
            yield values
        if p.reference_accuracy is not None:
            accuracy = GaugeMetricFamily(
                mn.REFERENCE_ACCURACY, "Accuracy on the reference sample's true labels",
                labels=list(mn.LABELS[mn.REFERENCE_ACCURACY]))
            accuracy.add_metric(self.labels, p.reference_accuracy)
            yield accuracy


class StartTimeCollector(Collector):
    """When the runtime started (its first process, shared by the workers), as a constant gauge."""

    def __init__(self, started_at: float, model: str, revision: str) -> None:
        self.started_at = started_at
        self.labels = [model, revision]

    def collect(self) -> Iterator[Metric]:
        started = GaugeMetricFamily(mn.START_TIME_SECONDS, "When this runtime started (unix seconds)",
                                    labels=list(mn.LABELS[mn.START_TIME_SECONDS]))
        started.add_metric(self.labels, self.started_at)
        yield started


def _add_to_buckets(child: Any, counts: list[int] | np.ndarray, total: float) -> None:
    # prometheus_client has no public "add n observations to bucket i": its histogram child keeps
    # one value per bucket (`_buckets`, not cumulative, the last one +Inf) and `_sum`, which
    # `observe` increments. tests/runtime/test_monitoring.py checks both paths export the same.
    for bucket, n in zip(child._buckets, counts, strict=True):
        if n:
            bucket.inc(int(n))
    child._sum.inc(total)


def observe_many(child: Any, values: np.ndarray, below_bound: bool = False) -> None:
    """Add many observations to a prometheus_client histogram child. NaN is skipped: it has no
    bucket, and in the sum it would make `_sum` NaN for good. `below_bound`: a value equal to a
    bucket's bound goes to the next bucket (bucket `le=b` holds values below b), the convention of
    the profile's cuts (`searchsorted(cuts, x, "right")`), so that a regressor's live buckets and
    the profile's shares of them count a value sitting on a cut on the same side."""
    values = values[~np.isnan(values)]
    if values.size:
        bounds = np.asarray(child._upper_bounds[:-1], np.float64)
        # side="left": the first bucket whose upper bound is >= the value, as `observe` does.
        idx = np.searchsorted(bounds, values, side="right" if below_bound else "left")
        _add_to_buckets(child, np.bincount(idx, minlength=len(bounds) + 1).tolist(),
                        float(values.sum()))


class CaptureMetrics:
    """Rows the capture wrote and dropped (capture.py), counted as they happen (from its thread)."""

    def __init__(self, model: str, revision: str) -> None:
        self._rows = Counter(mn.CAPTURE_ROWS_TOTAL, "Rows written to the capture store, by kind",
                             mn.LABELS[mn.CAPTURE_ROWS_TOTAL], registry=None)
        self._dropped = Counter(mn.CAPTURE_DROPPED_ROWS_TOTAL, "Rows capture dropped, by reason",
                                mn.LABELS[mn.CAPTURE_DROPPED_ROWS_TOTAL], registry=None)
        self.model, self.revision = model, revision
        # At 0 from the start: a first loss must show in increase(), which ignores a series' birth.
        for kind in mn.CAPTURE_KINDS:
            self._rows.labels(model, revision, kind)
        for reason in mn.CAPTURE_DROP_REASONS:
            self._dropped.labels(model, revision, reason)

    def captured(self, kind: str, rows: int) -> None:
        self._rows.labels(self.model, self.revision, kind).inc(rows)

    def dropped(self, reason: str, rows: int) -> None:
        self._dropped.labels(self.model, self.revision, reason).inc(rows)


class FeedbackMetrics:
    """The performance counters the feedback endpoint adds to (feedback.py): few requests, so
    written at once rather than batched like the request path's counts."""

    def __init__(self, model: str, revision: str, task: Task) -> None:
        self.model = model
        self.revision = revision
        def counter(name: str, text: str) -> Any:
            return Counter(name, text, mn.LABELS[name], registry=None)

        self._rows = counter(mn.FEEDBACK_ROWS_TOTAL, "Rows that got their ground truth, by predicting revision")
        self._requests = counter(mn.FEEDBACK_REQUESTS_TOTAL, "Feedback requests by answer code")
        if task.kind == "regression":
            self._sums = {
                "absolute_error": counter(mn.FEEDBACK_ABSOLUTE_ERROR_TOTAL, "Sum of |prediction - truth|"),
                "squared_error": counter(mn.FEEDBACK_SQUARED_ERROR_TOTAL, "Sum of (prediction - truth)^2"),
            }
        else:
            self._sums = {
                "correct": counter(mn.FEEDBACK_CORRECT_TOTAL, "Rows whose predicted class was the true one"),
                "scored_rows": counter(mn.FEEDBACK_SCORED_ROWS_TOTAL,
                                       "Rows with ground truth whose class probabilities were known"),
                "log_loss": counter(mn.FEEDBACK_LOG_LOSS_TOTAL, "Sum of -ln(probability of the true class)"),
                "brier": counter(mn.FEEDBACK_BRIER_TOTAL, "Sum of the multi-class Brier score"),
            }
        # At 0 from the start for this replica's own revision: rate() ignores a series' first value.
        self._rows.labels(model, revision, revision)
        for child in self._sums.values():
            child.labels(model, revision, revision)
        for code in mn.FEEDBACK_CODES:
            self._requests.labels(model, revision, code)
        self._routed = counter(mn.FEEDBACK_ROUTED_TOTAL, "Feedback taken, by where: here, forwarded to the "
                               "replica that issued its id, received from another replica, or here as its "
                               "issuer is gone")
        for route in mn.FEEDBACK_ROUTES:
            self._routed.labels(model, revision, route)

    def count(self, predicted_by: str, scores: Any) -> None:
        """Scores of a prediction `predicted_by` made (a revision), whichever this replica is."""
        self._rows.labels(self.model, self.revision, predicted_by).inc(scores.rows)
        for field, counter in self._sums.items():
            value = getattr(scores, field)
            if value:
                counter.labels(self.model, self.revision, predicted_by).inc(value)

    def answered(self, code: int) -> None:
        self._requests.labels(self.model, self.revision, str(code)).inc()

    def routed(self, route: str) -> None:
        self._routed.labels(self.model, self.revision, route).inc()


class AccuracyEstimate:
    """Confidence-based performance estimation (NannyML's CBPE) on live traffic: each answered row
    is right with the calibrated probability of its predicted class (the profile's isotonic map
    from the reference sample, converters/profile.py), so the estimated accuracy of any window is
    increase(estimated correct) / increase(estimated rows). Folded at flush, off the request path."""

    def __init__(self, model: str, revision: str, task: Task, probability_output: str) -> None:
        self.output = task.output
        self.probability_output = probability_output
        self.classes = len(task.classes)
        self.knots = (np.asarray(task.calibration[0]), np.asarray(task.calibration[1])) if task.calibration else None
        self.column = ClassColumns(task.classes)  # raw label (as the model answers it) -> probability column
        self._correct = Counter(mn.ESTIMATED_CORRECT_TOTAL, "Sum over answered rows of the calibrated probability "
                                "of the predicted class", mn.LABELS[mn.ESTIMATED_CORRECT_TOTAL],
                                registry=None).labels(model, revision)
        self._rows = Counter(mn.ESTIMATED_ROWS_TOTAL, "Answered rows behind the accuracy estimate",
                             mn.LABELS[mn.ESTIMATED_ROWS_TOTAL], registry=None).labels(model, revision)

    def expected(self, answered: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, int]:
        """(labels, probabilities) of answered requests → (expected correct rows, rows)."""
        labels = np.concatenate([np.asarray(a).reshape(-1) for a, _ in answered])
        probabilities = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, self.classes)
                                        for _, p in answered])
        if labels.shape[0] != probabilities.shape[0]:
            return 0.0, 0
        values, inverse = np.unique(labels, return_inverse=True)
        columns = np.asarray([self.column(v) for v in values.tolist()])[inverse]
        known = columns >= 0  # a label the profile does not list has no column: not estimated
        confidence = probabilities[np.flatnonzero(known), columns[known]]
        if self.knots is not None:
            confidence = np.interp(confidence, *self.knots)
        return float(confidence.sum()), int(confidence.size)

    def fold(self, answered: list[tuple[np.ndarray, np.ndarray]], confidences: list[float]) -> None:
        """Multi-row answers' (labels, probabilities) and one-row answers' probabilities of their
        predicted class → the counters."""
        correct, rows = self.expected(answered) if answered else (0.0, 0)
        if confidences:
            values = np.asarray(confidences, dtype=np.float64)
            if self.knots is not None:
                values = np.interp(values, *self.knots)
            correct, rows = correct + float(values.sum()), rows + len(confidences)
        if rows:
            self._correct.inc(correct)
            self._rows.inc(rows)


class Monitor:
    flush_interval = FLUSH_INTERVAL

    def __init__(self, model: str, revision: str, task: Task, drift: Drift | None,
                 runs: Callable[[], int] | None = None, probability_output: str | None = None,
                 reference: Prediction | None = None, started_at: float | None = None) -> None:
        self.model = model
        self.revision = revision
        self.task = task
        self.drift = drift
        self.collector = DriftCollector(drift, model, revision) if drift is not None else None
        self.reference = ReferenceCollector(reference, model, revision) if reference is not None else None
        self.started = StartTimeCollector(time.time() if started_at is None else started_at, model, revision)
        base = (model, revision)
        # Rows per feature bin (monitoring over time): every child made up front, so each exists
        # at 0 before its first row (the operator differences counters between two instants).
        self._bins: list[Any] = []
        if drift is not None:
            bins = Counter(mn.FEATURE_BIN_ROWS_TOTAL, "Rows per bin of each profiled input feature",
                           mn.LABELS[mn.FEATURE_BIN_ROWS_TOTAL], registry=None)
            self._bins = [bins.labels(*base, f.name, str(b))
                          for f in drift.binner.features for b in range(f.bins)]
        # registry=None: in multiprocess mode the exposition registry is built per scrape.
        self._requests = Counter(
            mn.REQUESTS_TOTAL, "Inference requests by protocol and HTTP status code",
            mn.LABELS[mn.REQUESTS_TOTAL], registry=None,
        )
        duration = Histogram(
            mn.REQUEST_DURATION_SECONDS, "Inference request latency, body read to response sent",
            mn.LABELS[mn.REQUEST_DURATION_SECONDS], registry=None, buckets=mn.DURATION_BUCKETS,
        )
        self._rows = Counter(
            mn.INFERENCE_ROWS_TOTAL, "Rows inferred (a batch counts each row)",
            mn.LABELS[mn.INFERENCE_ROWS_TOTAL], registry=None,
        ).labels(*base)
        self._runs = Counter(
            mn.MODEL_RUNS_TOTAL, "Model runs (requests batched together count once)",
            mn.LABELS[mn.MODEL_RUNS_TOTAL], registry=None,
        ).labels(*base)
        self._count_runs = runs  # the model's running count of its runs
        self._runs_flushed = runs() if runs is not None else 0
        self._predictions = Counter(
            mn.PREDICTIONS_TOTAL, "Predicted classes", mn.LABELS[mn.PREDICTIONS_TOTAL],
            registry=None,
        )
        # Children made up front exist in the exposition at 0 before the first request, which
        # `rate()` and the operator's predictionShift query need.
        self._durations = {p: duration.labels(*base, p) for p in mn.PROTOCOLS}
        self._classes = {cls: self._predictions.labels(*base, cls) for cls in task.classes}
        self._request_children: dict[tuple[str, int], Any] = {}
        for protocol in mn.PROTOCOLS:
            for code in mn.ANSWERED_CODES:
                self._request_child(protocol, int(code))
        self._values = None
        if task.kind == "regression":
            # The profile's prediction cuts make the buckets: drift shows up as bucket shifts.
            self._values = Histogram(
                mn.PREDICTION_VALUE, "Predicted values (regressors)",
                mn.LABELS[mn.PREDICTION_VALUE], registry=None,
                buckets=sorted(set(task.cuts or _DEFAULT_VALUE_BUCKETS)),
            ).labels(*base)
        self._output = task.output
        self._classifier = task.kind == "classification"
        self._predicts = self._classifier or self._values is not None
        self._remember = drift.window.pending.append if drift is not None else None
        self.estimate = (AccuracyEstimate(model, revision, task, probability_output)
                         if probability_output is not None and self._classifier and task.classes else None)
        # Folded at flush: multi-row answers' (labels, probabilities), and for one-row answers (the
        # common case, kept cheap: one float) the probability of the predicted class.
        self.answered: list[tuple[np.ndarray, np.ndarray]] = []
        self.confidences: list[float] = []
        # Not yet flushed: the request path touches only these.
        self.requests: dict[tuple[str, int, int], int] = {}  # (protocol, code, latency bucket)
        self.seconds = {p: 0.0 for p in self._durations}
        self.rows = 0
        self.classes: dict[Any, int] = {}  # single-row predictions: raw label -> count
        self.outputs: list[np.ndarray] = []  # batches and regression values, folded at flush

    def observe(
        self, protocol: str, code: int, seconds: float, rows: int,
        results: dict[str, Any] | None, feeds: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """The request path: a handful of plain dict and number operations."""
        key = (protocol, code, bisect_left(_DURATION_BOUNDS, seconds))
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.seconds[protocol] += seconds
        if code != 200 or results is None:
            return
        self.rows += rows
        values = results.get(self._output)  # type: ignore[arg-type]
        estimate = self.estimate
        if estimate is not None and values is not None and rows != 1:
            probabilities = results.get(estimate.probability_output)
            if probabilities is not None:
                self.answered.append((values, probabilities))
        if values is not None and self._predicts:
            if rows == 1 and self._classifier:
                label = values.item(0)  # a plain int or str: cheaper to hash than numpy scalars
                self.classes[label] = self.classes.get(label, 0) + 1
                if estimate is not None:
                    probabilities = results.get(estimate.probability_output)
                    column = estimate.column(label)
                    if probabilities is not None and column >= 0 and probabilities.size > column:
                        self.confidences.append(probabilities.item(column))
            else:
                self.outputs.append(values)
        if self._remember is not None and feeds:
            if rows == 1:
                self._remember(feeds)  # drift: one deque append, binned in the background
            else:
                self.drift.add(feeds, rows)  # type: ignore[union-attr]

    def flush(self) -> None:
        """Move the counts gathered since the last flush into the exported metrics."""
        requests, self.requests = self.requests, {}
        per_code: dict[tuple[str, int], int] = {}
        per_bucket = {p: [0] * (len(_DURATION_BOUNDS) + 1) for p in self._durations}
        for (protocol, code, bucket), n in requests.items():
            per_code[protocol, code] = per_code.get((protocol, code), 0) + n
            per_bucket[protocol][bucket] += n
        for (protocol, code), n in per_code.items():
            self._request_child(protocol, code).inc(n)
        for protocol, counts in per_bucket.items():
            if any(counts):
                _add_to_buckets(self._durations[protocol], counts, self.seconds[protocol])
                self.seconds[protocol] = 0.0
        if self.rows:
            self._rows.inc(self.rows)
            self.rows = 0
        if self._count_runs is not None:
            runs = self._count_runs()
            if runs > self._runs_flushed:
                self._runs.inc(runs - self._runs_flushed)
                self._runs_flushed = runs
        classes, self.classes = self.classes, {}
        for label, n in classes.items():
            self._class_child(str(label)).inc(n)
        answered, self.answered = self.answered, []
        confidences, self.confidences = self.confidences, []
        if (answered or confidences) and self.estimate is not None:
            self.estimate.fold(answered, confidences)
        if self._bins:
            fresh = self.drift.window.take_unreported()  # type: ignore[union-attr]
            for b in np.flatnonzero(fresh).tolist():
                self._bins[b].inc(int(fresh[b]))
        outputs, self.outputs = self.outputs, []
        if outputs:
            values = np.concatenate(outputs, axis=None)  # axis=None: flattened
            if self._classifier:
                labels, label_counts = np.unique(values, return_counts=True)
                for label, n in zip(labels.tolist(), label_counts.tolist(), strict=True):
                    self._class_child(str(label)).inc(n)
            elif self._values is not None:
                observe_many(self._values, values.astype(np.float64, copy=False), below_bound=True)

    def _request_child(self, protocol: str, code: int) -> Any:
        child = self._request_children.get((protocol, code))
        if child is None:
            child = self._request_children[protocol, code] = self._requests.labels(
                self.model, self.revision, protocol, str(code)
            )
        return child

    def _class_child(self, cls: str) -> Any:
        child = self._classes.get(cls)
        if child is None:
            child = self._classes[cls] = self._predictions.labels(self.model, self.revision, cls)
        return child

    def exposition(self) -> bytes:
        """The /metrics body: this worker's counts flushed first, then every worker's files."""
        self.flush()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])  # type: ignore[no-untyped-call]
        if self.collector is not None:
            registry.register(self.collector)
        if self.reference is not None:
            registry.register(self.reference)
        registry.register(self.started)
        return generate_latest(registry)
