"""Helpers for the packaging tier: helm as a small typed wrapper, object lookup in renders.
(A module of its own, not conftest: test folders have no __init__.py, so a shared name would clash.)"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "serin"
MONITORING_CRDS = Path(__file__).with_name("monitoring-crds.yaml")
# What `helm template` is told the cluster runs: the version hack/lib.sh provisions.
KUBE_VERSION = re.search(r'KUBE_VERSION="v([0-9.]+)"', (REPO / "hack" / "lib.sh").read_text())[1]  # type: ignore[index]
# The converter image of the chart's defaults: the only one its admission policy lets the operator
# start conversion Jobs with.
CONVERTER_IMAGE = f"ghcr.io/serin/converter:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"


# Value sets shared by the render tests and the server-side dry runs.
ALL_MONITORING = {"monitoring": {
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    "podMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
    "dashboard": {"enabled": True}}}
CUSTOM_IMAGES = {
    "operator": {"replicas": 1, "image": {"repository": "registry.example/ml/serin-operator",
                                          "digest": "sha256:" + "a" * 64},
                 "extraArgs": ["--log-level=debug"], "extraEnv": [{"name": "EXTRA", "value": "1"}]},
    "conversion": {"image": {"repository": "registry.example/ml/serin-converter", "tag": "0.1.0-rc1"},
                   "modelStore": "pvc://models/serin"},
    "servingRuntime": {"image": {"repository": "registry.example/ml/serin-runtime", "tag": "0.1.0-rc1"}},
}


@dataclass
class Helm:
    binary: Path
    kubeconfig: Path | None = None

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), *args]
        if self.kubeconfig is not None:
            argv += ["--kubeconfig", str(self.kubeconfig)]
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
        return out

    def template(self, values: dict[str, Any] | None = None, namespace: str = "serin-system",
                 release: str = "serin", *extra: str, check: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        return self.run("template", release, str(CHART), "--namespace", namespace,
                        "--kube-version", KUBE_VERSION, *values_args(values), *extra, check=check)

    def objects(self, values: dict[str, Any] | None = None, namespace: str = "serin-system",
                release: str = "serin", *extra: str) -> list[dict[str, Any]]:
        text = self.template(values, namespace, release, *extra).stdout
        return [d for d in yaml.safe_load_all(text) if d]


def values_args(values: dict[str, Any] | None) -> list[str]:
    """Values as one --set-json per top-level key: exact types, no --set string guessing."""
    return [a for k, v in (values or {}).items() for a in ("--set-json", f"{k}={json.dumps(v)}")]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None,
         namespace: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]
