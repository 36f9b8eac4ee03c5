"""A real Prometheus (built from its Go module by hack/provision.sh) on a loopback port.

It scrapes whatever the file-based service discovery file lists (the KServe stand-in writes one
entry per running runtime revision), and, given a cluster (`kubernetes`), the runtime Pods it
discovers through the Kubernetes API with the relabelling prometheus-operator generates for the
chart's PodMonitor (charts/serin/templates/podmonitor.yaml): Pods labelled
`serving.kserve.io/inferenceservice`, their container port `targetPort`, and the target labels
namespace, pod and container. Every `scrape_interval`: short intervals keep local canary analysis
responsive; a production Prometheus would use 15-30 s.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from serin.local.controlplane import ControlPlaneError, _Proc, free_port


@dataclass(frozen=True)
class KubernetesDiscovery:
    """Where Prometheus lists Pods: the apiserver and a client identity that may list them."""

    api_server: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    target_port: int = 8080  # the chart's monitoring.podMonitor.targetPort

    def scrape_config(self) -> dict[str, Any]:
        def meta(name: str) -> str:
            return f"__meta_kubernetes_{name}"

        return {
            # The job prometheus-operator names after the PodMonitor (namespace/name/endpoint index).
            "job_name": "podMonitor/serin-system/serin-runtime/0",
            "honor_labels": False,
            "kubernetes_sd_configs": [{"role": "pod", "api_server": self.api_server, "tls_config": {
                "ca_file": str(self.ca_file), "cert_file": str(self.cert_file), "key_file": str(self.key_file)}}],
            "relabel_configs": [
                {"source_labels": [meta("pod_labelpresent_serving_kserve_io_inferenceservice")], "regex": "true",
                 "action": "keep"},
                {"source_labels": [meta("pod_container_port_number")], "regex": str(self.target_port),
                 "action": "keep"},
                {"source_labels": [meta("pod_phase")], "regex": "(Failed|Succeeded)", "action": "drop"},
                {"source_labels": [meta("namespace")], "target_label": "namespace"},
                {"source_labels": [meta("pod_name")], "target_label": "pod"},
                {"source_labels": [meta("pod_container_name")], "target_label": "container"},
            ],
        }


@dataclass
class Prometheus:
    workdir: Path
    bin_dir: Path
    scrape_interval: str = "2s"
    port: int = field(default_factory=free_port)
    kubernetes: KubernetesDiscovery | None = None
    # Loopback, or the host end of the node's veth (local/node.py HOST_ADDRESS) for an operator
    # that runs in a Pod to query it.
    listen: str = "127.0.0.1"
    # Alerting: a rules file's content (local/alertmanager.py chart_rules), the Alertmanager it
    # fires to (host:port), and scrape targets of its own (the operator's metrics) by job name.
    rules: dict[str, Any] | None = None
    alertmanager: str = ""
    static_targets: dict[str, list[str]] = field(default_factory=dict)
    _proc: _Proc | None = None

    @property
    def url(self) -> str:
        return f"http://{self.listen}:{self.port}"

    @property
    def targets_file(self) -> Path:
        return self.workdir / "targets.json"

    def targets_file_for(self, writer: str) -> Path:
        """A file_sd file of its own for one of several writers (a stand-in per namespace): each
        rewrites its whole file, so two sharing one would drop each other's targets."""
        return self.workdir / f"targets-{writer}.json"

    def config(self) -> dict[str, Any]:
        scrape: list[dict[str, Any]] = [{
            "job_name": "serin-runtimes",
            "file_sd_configs": [{"files": [str(self.workdir / "targets*.json")], "refresh_interval": "1s"}],
        }]
        if self.kubernetes is not None:
            scrape.append(self.kubernetes.scrape_config())
        scrape += [{"job_name": job, "static_configs": [{"targets": targets}]}
                   for job, targets in self.static_targets.items()]
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": scrape,
        }
        if self.rules is not None:
            config["rule_files"] = [str(self.workdir / "rules.yml")]
        if self.alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [self.alertmanager]}]}]}
        return config

    def start(self, timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.targets_file.exists():
            self.targets_file.write_text("[]")
        if self.rules is not None:
            (self.workdir / "rules.yml").write_text(yaml.safe_dump(self.rules))
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(self.config()))
        self._proc = _Proc("prometheus", [
            str(self.bin_dir / "prometheus"),
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={self.listen}:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ], self.workdir / "prometheus.log")
        self._proc.start()
        self.wait_ready(timeout)

    def scrape(self, job: str, targets: list[str]) -> None:
        """Scrape `targets` as `job` from now on: the configuration rewritten and reloaded."""
        self.static_targets[job] = targets
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(self.config()))
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status != 200:
                raise ControlPlaneError(f"prometheus did not reload its configuration: {resp.status}")

    def wait_ready(self, timeout: float = 60.0) -> None:
        if self._proc is None:
            raise ControlPlaneError("prometheus was not started")
        self._proc.wait_http(f"{self.url}/-/ready", timeout)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.popen.pid if self._proc and self._proc.popen else None

    def query(self, expr: str) -> dict:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)


def start_prometheus(workdir: Path, bin_dir: Path, scrape_interval: str = "2s",
                     kubernetes: KubernetesDiscovery | None = None, listen: str = "127.0.0.1",
                     rules: dict[str, Any] | None = None, alertmanager: str = "",
                     static_targets: dict[str, list[str]] | None = None) -> Prometheus:
    prom = Prometheus(workdir=workdir, bin_dir=bin_dir, scrape_interval=scrape_interval, kubernetes=kubernetes,
                      listen=listen, rules=rules, alertmanager=alertmanager, static_targets=static_targets or {})
    try:
        prom.start()
    except BaseException:
        prom.stop()
        raise
    return prom

