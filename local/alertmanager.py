"""A real Alertmanager (Debian's prometheus-alertmanager 0.25, installed by hack/provision.sh) on a
loopback port, routing every alert to one webhook.

Prometheus evaluates the chart's PrometheusRule (`chart_rules`: its groups, as a rules file) and
sends what fires here; Alertmanager groups it by alert and Model and posts Alertmanager's webhook
document (version 4: status, the alerts with labels, annotations, startsAt/endsAt) to the receiver,
resolved alerts too. Timings are short so a test sees an alert within seconds of Prometheus firing
it; a production Alertmanager keeps its defaults (group_wait 30s, group_interval 5m).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from serin.local.controlplane import ControlPlaneError, _Proc, free_port

BINARY = Path("/usr/bin/prometheus-alertmanager")


@dataclass
class Alertmanager:
    workdir: Path
    webhook_url: str
    port: int = field(default_factory=free_port)
    binary: Path = BINARY
    _proc: _Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def target(self) -> str:
        """host:port, as Prometheus' alerting static_configs name it."""
        return f"127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "route": {"receiver": "webhook", "group_by": ["alertname", "namespace", "model", "sink"],
                      "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "webhook",
                           "webhook_configs": [{"url": self.webhook_url, "send_resolved": True}]}],
        }

    def start(self, timeout: float = 30.0) -> None:
        if not self.binary.exists():
            raise ControlPlaneError(f"{self.binary} is missing: run hack/provision.sh (Debian package "
                                    "prometheus-alertmanager)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "alertmanager.yml").write_text(yaml.safe_dump(self.config()))
        self._proc = _Proc("alertmanager", [
            str(self.binary),
            f"--config.file={self.workdir / 'alertmanager.yml'}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",  # one instance: no gossip port, no peers
            "--log.level=warn",
        ], self.workdir / "alertmanager.log")
        self._proc.start()
        self._proc.wait_http(f"{self.url}/-/ready", timeout)

    def alerts(self) -> list[dict[str, Any]]:
        """What Alertmanager holds now (its v2 API)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as resp:
            return list(json.load(resp))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()


def chart_rules(helm: Path, chart: Path, values: dict[str, Any]) -> dict[str, Any]:
    """The chart's PrometheusRule, rendered by helm with `values` under monitoring.prometheusRule,
    as a Prometheus rules file: what prometheus-operator would load from it."""
    rule_values = {"enabled": True} | values
    # The chart states the Kubernetes versions it supports; helm template assumes an old one.
    lib = (chart.parent.parent / "hack" / "lib.sh").read_text()
    kube_version = re.search(r'KUBE_VERSION="v([0-9.]+)"', lib)[1]  # type: ignore[index]
    out = subprocess.run([str(helm), "template", "serin", str(chart), "--namespace", "serin-system",
                          "--kube-version", kube_version, "--show-only", "templates/prometheusrule.yaml",
                          "--set-json", f"monitoring.prometheusRule={json.dumps(rule_values)}"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise ControlPlaneError(f"helm template of the chart's PrometheusRule failed: {out.stderr.strip()}")
    (rule,) = [d for d in yaml.safe_load_all(out.stdout) if d]
    return {"groups": rule["spec"]["groups"]}
