"""The chart's alerts for real (issue 35 #2): a real Prometheus evaluates the chart's PrometheusRule
(rendered by helm, windows shortened by the chart's own values) on the real operator's metrics, and
fires to a real Alertmanager (Debian's prometheus-alertmanager 0.25), which routes each alert to a
webhook, resolved ones too. Every alert is caused by the situation it names on the local platform
(real runtimes, real load), and resolves when that situation ends:

- SerinNotificationsFailing: the team's sink refuses a notification (404, given up at once);
- SerinModelDegraded: the serving version answers slower than its latency SLO;
- SerinRolloutStuck: a canary holds its weight longer than stuckFor;
- SerinReconcileErrors: the apiserver goes away while the operator has writes to make;
- SerinRollbacks: the canary is rolled back;
- SerinModelDrifted: the clients' traffic moves beyond the Model's tolerance."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_e2e
from harness import Platform, Receiver, Versions, webhook_receiver
from serin.local.alertmanager import Alertmanager, chart_rules
from serin.local.controlplane import free_port
from serin.local.loadgen import LoadGenerator
from serin.local.prometheus import Prometheus, start_prometheus
from test_e2e import ROLLOUT, canary_serving, status

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "charts" / "serin"
# The chart's windows, shortened (monitoring.prometheusRule values): minutes and hours in production.
RULE_VALUES = {"stuckFor": "5s", "window": "30s", "reconcileErrorsWindow": "30s", "reconcileErrorsFor": "4s"}
MONITORING = {"interval": "10s", "minRows": 500, "trailingWindow": "20s", "resolveAfter": 2,
              # An SLO no answer keeps (the smallest latency bucket): the serving version is degraded.
              "latency": {"threshold": "0.5ms", "maxShare": 0.01}}


class Alerts:
    """What Alertmanager posted to its webhook, as (received at, alert) pairs."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def seen(self) -> list[tuple[float, dict[str, Any]]]:
        with self.receiver.lock:
            posts = list(zip(self.receiver.arrivals, self.receiver.requests, strict=True))
        return [(at, a) for at, (_, body, _) in posts for a in json.loads(body).get("alerts") or []]

    def first(self, state: str, alertname: str, after: float = 0.0, **labels: str) -> float | None:
        """When Alertmanager first told (since `after`) of `alertname` with those labels in `state`
        (firing, resolved)."""
        for at, a in self.seen():
            got = a.get("labels") or {}
            if at >= after and a.get("status") == state and got.get("alertname") == alertname and \
                    all(got.get(k) == v for k, v in labels.items()):
                return at
        return None

    def until(self, state: str, alertname: str, timeout: float, after: float = 0.0, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.first(state, alertname, after, **labels)
            if at is not None:
                return at
            time.sleep(0.5)
        names = sorted({(a["labels"].get("alertname"), a.get("status")) for _, a in self.seen()})
        raise AssertionError(f"timed out waiting for {alertname} {labels} {state}; Alertmanager told: {names}")


@pytest.fixture
def alerting(platform: Platform, tmp_path: Path) -> Iterator[tuple[Alerts, Prometheus]]:
    """Alertmanager posting to a webhook, and a Prometheus of its own scraping the operator's metrics
    with the chart's rules, firing to that Alertmanager."""
    with webhook_receiver() as hook:
        am = Alertmanager(tmp_path / "alertmanager", hook.url)
        prom: Prometheus | None = None
        try:
            am.start()
            port = free_port()
            platform.cluster.operator.metrics_port = port
            rules = chart_rules(platform.cluster.cp.bin_dir / "helm", CHART, RULE_VALUES)
            prom = start_prometheus(tmp_path / "alerting-prometheus", platform.cluster.cp.bin_dir, rules=rules,
                                    alertmanager=am.target, static_targets={"serin-operator": [f"127.0.0.1:{port}"]})
            yield Alerts(hook), prom
        finally:
            if prom is not None:
                prom.stop()
            am.stop()


def apply(p: Platform, files: Any, rollout: dict[str, Any], monitoring: dict[str, Any], sink_url: str) -> None:
    test_e2e.apply(p, files, rollout, monitoring, notify={"sinks": [{"name": "ops", "url": sink_url}]})


def serin(p: Platform, *args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "serin.operator.cli", *args, "--kubeconfig",
                          str(p.cluster.cp.kubeconfig)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_each_alert_of_the_chart_fires_on_its_situation_and_resolves(
        platform: Platform, versions: Versions, alerting: tuple[Alerts, Prometheus]) -> None:
    alerts, prom = alerting
    c = platform.cluster
    t0 = time.monotonic()
    with webhook_receiver() as sink:
        sink.refusing = True
        c.operator.start()
        apply(platform, versions.v1, ROLLOUT, MONITORING, sink.url)
        c.wait_phase("Promoted", generation=1)
        isvc = c.isvc()
        assert isvc is not None
        load = LoadGenerator(isvc["status"]["url"], c.name, rate=40, rows=20, max_seconds=900).start()
        try:
            # The sink refuses the first notification (Serving): given up at once, alerted.
            alerts.until("firing", "SerinNotificationsFailing", 90, namespace=c.namespace, sink="ops")
            sink.refusing = False  # the team fixes its receiver: the alert ends after the window
            # Every answer slower than the 0.5 ms SLO: the serving version is degraded.
            alerts.until("firing", "SerinModelDegraded", 150, namespace=c.namespace, model=c.name, signal="latency")
            assert alerts.first("firing", "SerinRolloutStuck") is None

            # A canary that holds its weight (a long pause): stuck after stuckFor.
            held = copy.deepcopy(ROLLOUT)
            held["steps"] = [{"weight": 10, "pause": "10m"}]
            apply(platform, versions.v2, held, MONITORING, sink.url)
            c.wait("canary serving", canary_serving, timeout=300)
            alerts.until("firing", "SerinRolloutStuck", 60, namespace=c.namespace, model=c.name)
            # The apiserver goes away while the canary's analysis has status to write.
            assert alerts.first("firing", "SerinReconcileErrors") is None
            restart = threading.Thread(target=c.cp.restart_apiserver, kwargs={"downtime": 8})
            restart.start()
            alerts.until("firing", "SerinReconcileErrors", 90, namespace=c.namespace, model=c.name)
            restart.join()
            # The canary rolled back: the rollback alerted, the stuck canary's alert resolved.
            assert alerts.first("firing", "SerinRollbacks") is None
            aborted = time.monotonic()
            serin(platform, "abort", c.name, "-n", c.namespace)
            c.wait("rolled back", lambda m: status(m).get("phase") == "RolledBack" and not status(m).get("canary"),
                   timeout=120)
            assert alerts.until("firing", "SerinRollbacks", 60, namespace=c.namespace, model=c.name,
                                reason="manual") > aborted
            alerts.until("resolved", "SerinRolloutStuck", 60, namespace=c.namespace, model=c.name)

            # The clients' traffic moves: drifted; back, and the SLO loosened: both resolve.
            assert alerts.first("firing", "SerinModelDrifted") is None
            shifted = time.monotonic()
            load.set_shift(1.0)
            assert alerts.until("firing", "SerinModelDrifted", 150, namespace=c.namespace, model=c.name,
                                signal="inputDrift") > shifted
            # Knative mode restores the stable under a new revision after a rollback: monitoring
            # starts over on it, so its alarms ended and were raised again; wait for them.
            alerts.until("firing", "SerinModelDegraded", 150, after=aborted, namespace=c.namespace, model=c.name,
                         signal="latency")
            back = time.monotonic()
            load.set_shift(0.0)
            loose = copy.deepcopy(MONITORING)
            loose["latency"]["threshold"] = "5s"
            apply(platform, versions.v2, held, loose, sink.url)
            alerts.until("resolved", "SerinModelDrifted", 150, after=back, namespace=c.namespace, model=c.name,
                         signal="inputDrift")
            alerts.until("resolved", "SerinModelDegraded", 150, after=back, namespace=c.namespace, model=c.name,
                         signal="latency")
            # Past the window, the events' alerts resolve.
            for name, labels in (("SerinRollbacks", {"model": c.name}), ("SerinNotificationsFailing", {"sink": "ops"}),
                                 ("SerinReconcileErrors", {"model": c.name})):
                alerts.until("resolved", name, 120, namespace=c.namespace, **labels)
        finally:
            load.stop()
    print("\nAlertmanager told (s since the test began): " + ", ".join(
        f"{a['labels']['alertname']} {a['status']} +{at - t0:.0f}" for at, a in alerts.seen()))
    # Each one's text names the Model (or the sink) and what to look at.
    told = {a["labels"]["alertname"]: a for _, a in alerts.seen() if a.get("status") == "firing"}
    assert set(told) == {"SerinNotificationsFailing", "SerinModelDegraded", "SerinRolloutStuck",
                         "SerinReconcileErrors", "SerinRollbacks", "SerinModelDrifted"}, set(told)
    assert told["SerinRollbacks"]["annotations"]["summary"] == f"Model {c.namespace}/{c.name} was rolled back (manual)"
    assert f"kubectl describe model -n {c.namespace} {c.name}" in told["SerinModelDrifted"]["annotations"]["description"]
    assert told["SerinNotificationsFailing"]["labels"]["severity"] == "warning"
    # Every alert Prometheus loaded (the chart's, as rendered) was told: none is left untried.
    with urllib.request.urlopen(f"{prom.url}/api/v1/rules", timeout=5) as resp:
        loaded = {r["name"] for g in json.load(resp)["data"]["groups"] for r in g["rules"]}
    assert loaded == set(told), loaded
