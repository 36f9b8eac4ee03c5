"""Prometheus metrics for one worker process (names from serin.runtime.metric_names).

Counters and histograms use prometheus_client's multiprocess mode: every worker writes its own
mmap file in PROMETHEUS_MULTIPROC_DIR (set by the CLI before prometheus_client is imported) and
any worker answering /metrics sums them, so `rate()` and `histogram_quantile()` see one coherent
series per revision whichever worker Prometheus reaches. PSI gauges are not summable; they come
from a custom collector exporting the drift result merged across workers (see drift.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from serin.runtime import metric_names as mn
from serin.runtime.drift import Drift
from serin.runtime.model import Task

_DEFAULT_VALUE_BUCKETS = (-10.0, -1.0, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0, 1000.0)


class DriftCollector(Collector):
    def __init__(self, drift: Drift, model: str, revision: str) -> None:
        self.drift = drift
        self.labels = [model, revision]

    def collect(self) -> Iterator[Metric]:
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


class Monitor:
    def __init__(self, model: str, revision: str, task: Task, drift: Drift | None) -> None:
        self.model = model
        self.revision = revision
        self.task = task
        self.drift = drift
        base = (model, revision)
        # registry=None: in multiprocess mode the exposition registry is built per scrape.
        self._requests = Counter(
            mn.REQUESTS_TOTAL, "Inference requests by protocol and HTTP status code",
            mn.LABELS[mn.REQUESTS_TOTAL], registry=None,
        )
        self._duration = Histogram(
            mn.REQUEST_DURATION_SECONDS, "Inference request latency, body read to response sent",
            mn.LABELS[mn.REQUEST_DURATION_SECONDS], registry=None, buckets=mn.DURATION_BUCKETS,
        )
        self._rows = Counter(
            mn.INFERENCE_ROWS_TOTAL, "Rows inferred (a batch counts each row)",
            mn.LABELS[mn.INFERENCE_ROWS_TOTAL], registry=None,
        ).labels(*base)
        self._predictions = Counter(
            mn.PREDICTIONS_TOTAL, "Predicted classes", mn.LABELS[mn.PREDICTIONS_TOTAL],
            registry=None,
        )
        self._values = None
        if task.kind == "regression":
            # The profile's prediction cuts make the buckets: drift shows up as bucket shifts.
            self._values = Histogram(
                mn.PREDICTION_VALUE, "Predicted values (regressors)",
                mn.LABELS[mn.PREDICTION_VALUE], registry=None,
                buckets=sorted(set(task.cuts or _DEFAULT_VALUE_BUCKETS)),
            ).labels(*base)
        # Children cached: labels() takes a lock and builds a tuple on every call.
        self._request_children: dict[tuple[str, int], Any] = {}
        self._duration_children = {
            p: self._duration.labels(model, revision, p) for p in ("v1", "v2")
        }
        self._class_children: dict[str, Any] = {}
        for cls in task.classes:
            self._class(cls)

    def _class(self, cls: str) -> Any:
        child = self._class_children.get(cls)
        if child is None:
            child = self._class_children[cls] = self._predictions.labels(
                self.model, self.revision, cls
            )
        return child

    def observe(
        self, protocol: str, code: int, seconds: float, rows: int, results: dict[str, Any] | None
    ) -> None:
        key = (protocol, code)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self._requests.labels(
                self.model, self.revision, protocol, str(code)
            )
        child.inc()
        self._duration_children[protocol].observe(seconds)
        if code != 200 or results is None:
            return
        self._rows.inc(rows)
        out = self.task.output
        if out is None or out not in results:
            return
        values = np.asarray(results[out]).reshape(-1)
        if self.task.kind == "classification":
            if values.shape[0] == 1:
                # .item() gives a plain int/str: str() of a numpy scalar costs a microsecond more.
                self._class(str(values.item(0))).inc()
            else:
                labels, counts = np.unique(values, return_counts=True)
                for label, n in zip(labels, counts, strict=True):
                    self._class(str(label)).inc(int(n))
        elif self._values is not None:
            for v in values.tolist():
                self._values.observe(v)


def exposition(drift_collector: DriftCollector | None) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if drift_collector is not None:
        registry.register(drift_collector)
    return generate_latest(registry)
