"""The operator's own Prometheus metrics (names are a contract: the chart's alerts and dashboard
use them). Counted from the decision (its Events, and the rollback reason it carries as an enum),
so a metric can never disagree with what `kubectl describe model` shows."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

ROLLOUTS_STARTED = Counter("serin_rollouts_started", "Canary rollouts started", ["namespace", "model"])
ROLLOUTS_PROMOTED = Counter("serin_rollouts_promoted", "Versions promoted to 100%", ["namespace", "model"])
ROLLOUTS_ROLLED_BACK = Counter("serin_rollouts_rolled_back", "Canaries rolled back", ["namespace", "model", "reason"])
# status.RollbackReason's values (not imported: this module imports nothing of the operator's).
ROLLBACK_REASONS = ("analysis", "manual", "deadline", "superseded", "reverted", "unsupported", "crashed", "other")
CANARY_WEIGHT = Gauge("serin_canary_weight", "Percent of traffic on the canary", ["namespace", "model"])
ANALYSIS_VERDICTS = Counter("serin_analysis_verdicts", "Analysis measurements by verdict",
                            ["namespace", "model", "metric", "verdict"])
CONVERSIONS = Counter("serin_conversions", "Finished conversions by outcome", ["namespace", "model", "outcome"])
CONVERSION_SECONDS = Histogram("serin_conversion_seconds", "Time from conversion start to its result",
                               ["namespace", "model"], buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800))
RECONCILE_ERRORS = Counter("serin_reconcile_errors", "Reconcile ticks that failed", ["namespace", "model"])
# Where an analysis round's time goes, across all Models (no per-Model series: what matters is the
# operator's load): many rollouts at once show up as waits for a query slot, a slow Prometheus as
# long queries, a busy apiserver as a slow status write.
_ROUND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PROMETHEUS_QUERY_SECONDS = Histogram(
    "serin_prometheus_query_seconds", "Analysis queries: the wait for one of the operator's query slots "
    "(phase=wait), then the query itself (phase=query)", ["phase"], buckets=_ROUND_BUCKETS)
ANALYSIS_ROUND_SECONDS = Histogram(
    "serin_analysis_round_seconds", "Analysis rounds: measuring every metric (stage=measure), then "
    "judging and writing the Model's status (stage=persist), and reading a monitoring evaluation's counts "
    "(stage=monitor)", ["stage"], buckets=_ROUND_BUCKETS)
# Monitoring over time: Serin's verdict per (Model, signal), which the chart's alerts use (instead
# of raw PSI), and how far each signal is towards an alarm. Six signals at most per Model.
MONITORING_ALARM = Gauge(
    "serin_monitoring_alarm", "Monitoring verdict of the serving version: 1 alarm, 0 watching, -1 no baseline",
    ["namespace", "model", "signal", "dry_run", "silenced"])
MONITORING_EVIDENCE = Gauge(
    "serin_monitoring_evidence", "The signal's CUSUM over its alarm threshold (1 raises the alarm)",
    ["namespace", "model", "signal"])
MONITORING_EVALUATIONS = Counter(
    "serin_monitoring_reads", "Monitoring reads of the serving version's counts, by outcome (read, error)",
    ["outcome"])

# Notifications (notify.py, notifier.py): each attempt by its result (delivered; failed, to be
# retried; refused, which retrying cannot change), and each notification given up. By sink, not
# by Model: a failing sink is what an alert names.
NOTIFICATION_ATTEMPTS = Counter(
    "serin_notification_attempts", "Notification delivery attempts by result (delivered, failed, refused)",
    ["namespace", "sink", "result"])
NOTIFICATIONS_FAILED = Counter(
    "serin_notifications_failed", "Notifications given up (NotificationFailed Events)", ["namespace", "sink"])


PER_MODEL: tuple[MetricWrapperBase, ...] = (
    ROLLOUTS_STARTED, ROLLOUTS_PROMOTED, ROLLOUTS_ROLLED_BACK, CANARY_WEIGHT, ANALYSIS_VERDICTS, CONVERSIONS,
    CONVERSION_SECONDS, RECONCILE_ERRORS, MONITORING_ALARM, MONITORING_EVIDENCE)


def known(namespace: str, model: str, canary: bool, sinks: Iterable[str] = ()) -> None:
    """Create at 0 the counters an alert counts the increase of, before their first event: a series
    that appears at 1 has no increase in Prometheus' eyes (increase() and rate() need two samples),
    so the first rollback of a Model, or the first notification a sink refuses, would never fire
    SerinRollbacks or SerinNotificationsFailing (found by the real Alertmanager test). The rollback
    reasons are created while a version is converted or canaried (`canary`), which is usually longer
    than a scrape interval before it can be rolled back: a Model at rest costs no such series. Not
    covered: an operator that starts (or takes the lease) in the tick that ends a rollback, or
    sends a notification refused for good within a scrape of its start."""
    RECONCILE_ERRORS.labels(namespace, model)
    if canary:
        for reason in ROLLBACK_REASONS:
            ROLLOUTS_ROLLED_BACK.labels(namespace, model, reason)
    for sink in sinks:
        NOTIFICATIONS_FAILED.labels(namespace, sink)


def forget(namespace: str, model: str) -> None:
    """Drop every series of a deleted Model: a gauge left behind would keep its last value (the
    stuck-rollout alert would fire for a Model that no longer exists), and the series of 1,000
    deleted Models would stay in every scrape."""
    for metric in PER_MODEL:
        metric.remove_by_labels({"namespace": namespace, "model": model})


def set_monitoring(namespace: str, model: str, signal: str, alarm: int, evidence: float, dry_run: str,
                   silenced: str) -> None:
    # A change of dry_run or silenced must not leave the old series behind with its last value.
    for other in (("true", "false"), ("false", "true"), ("true", "true"), ("false", "false")):
        if other != (dry_run, silenced):
            with contextlib.suppress(KeyError):  # never set
                MONITORING_ALARM.remove(namespace, model, signal, *other)
    MONITORING_ALARM.labels(namespace, model, signal, dry_run, silenced).set(alarm)
    MONITORING_EVIDENCE.labels(namespace, model, signal).set(evidence)


def forget_monitoring(namespace: str, model: str) -> None:
    for metric in (MONITORING_ALARM, MONITORING_EVIDENCE):
        metric.remove_by_labels({"namespace": namespace, "model": model})
