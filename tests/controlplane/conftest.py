from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Artifacts, Cluster, OperatorProcess, standin
from serin.local.controlplane import ControlPlane
from serin.local.prometheus import Prometheus


@pytest.fixture
def kserve_standin(crds: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The stand-in playing KServe's controller (status only, no data plane), for this test's namespace."""
    with standin(crds, namespace, tmp_path, data_plane=False) as proc:
        yield proc


@pytest.fixture
def cluster(crds: ControlPlane, namespace: str, prometheus: Prometheus, kserve_standin: subprocess.Popen[bytes],
            artifacts: Artifacts, tmp_path: Path) -> Iterator[Cluster]:
    op = OperatorProcess(crds, namespace, prometheus.url, tmp_path / "store", tmp_path / "operator.log")
    c = Cluster(crds, namespace, artifacts, op, standin_log=tmp_path / "standin.log")
    yield c
    c.stop_watch()
    op.stop()
