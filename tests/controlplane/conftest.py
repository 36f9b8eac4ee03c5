from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serin.local.controlplane import ControlPlane
from serin.local.prometheus import Prometheus, start_prometheus

from operator_harness import Artifacts, Cluster, OperatorProcess, make_artifacts


@pytest.fixture(scope="session")
def prometheus(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prom = start_prometheus(tmp_path_factory.mktemp("prometheus"), control_plane.bin_dir)
    yield prom
    prom.stop()


@pytest.fixture(scope="session")
def kserve_standin(crds: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """The local stand-in playing KServe's controller (writes KServe-shaped status)."""
    log = tmp_path_factory.mktemp("standin") / "standin.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "serin.local.kserve_standin", "--kubeconfig", str(crds.kubeconfig)],
                                stdout=out, stderr=subprocess.STDOUT)
    time.sleep(1)
    assert proc.poll() is None, f"KServe stand-in exited:\n{log.read_text()}"
    yield proc
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture
def cluster(crds: ControlPlane, namespace: str, prometheus: Prometheus, kserve_standin: subprocess.Popen[bytes],
            artifacts: Artifacts, tmp_path: Path) -> Iterator[Cluster]:
    op = OperatorProcess(crds, namespace, prometheus.url, tmp_path / "store", tmp_path / "operator.log")
    yield Cluster(crds, namespace, artifacts, op)
    op.stop()
