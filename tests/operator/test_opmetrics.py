"""The operator's counters that alerts count the increase of exist at 0 before their first event:
Prometheus sees no increase in a series that appears at 1 (increase() and rate() need two
samples), which the real Alertmanager test found for the first rollback of a Model."""

from __future__ import annotations

from prometheus_client import REGISTRY
from serin.operator import opmetrics
from serin.operator.status import RollbackReason


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_the_alerts_counters_exist_at_zero_before_their_first_event() -> None:
    assert {r.value for r in RollbackReason} == set(opmetrics.ROLLBACK_REASONS)
    opmetrics.known("ns-k", "quiet", canary=False, sinks=["ops"])
    assert value("serin_reconcile_errors_total", namespace="ns-k", model="quiet") == 0
    assert value("serin_notifications_failed_total", namespace="ns-k", sink="ops") == 0
    # A Model that never canaries costs no rollback series.
    assert value("serin_rollouts_rolled_back_total", namespace="ns-k", model="quiet", reason="analysis") is None
    opmetrics.known("ns-k", "busy", canary=True)
    for reason in opmetrics.ROLLBACK_REASONS:
        assert value("serin_rollouts_rolled_back_total", namespace="ns-k", model="busy", reason=reason) == 0
    opmetrics.ROLLOUTS_ROLLED_BACK.labels("ns-k", "busy", "manual").inc()
    opmetrics.known("ns-k", "busy", canary=True)  # idempotent: never resets a count
    assert value("serin_rollouts_rolled_back_total", namespace="ns-k", model="busy", reason="manual") == 1
    opmetrics.forget("ns-k", "busy")
    assert value("serin_rollouts_rolled_back_total", namespace="ns-k", model="busy", reason="manual") is None
