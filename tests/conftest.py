"""Fixtures shared by every test tier. The control plane is real: etcd + kube-apiserver built by
hack/provision.sh, started once per session on loopback ports. If it cannot be provisioned the
tests that need it fail with the reason; they are never skipped or faked."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Artifacts, make_artifacts
from serin.local.controlplane import ControlPlane, start_control_plane
from serin.local.kserve_controller import install_crds as install_kserve_crds
from serin.local.prometheus import Prometheus, start_prometheus

REPO = Path(__file__).resolve().parent.parent
SERIN_CRDS = REPO / "manifests" / "crds"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = start_control_plane(tmp_path_factory.mktemp("controlplane"))
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def crds(control_plane: ControlPlane) -> ControlPlane:
    """Serin's CRDs (from manifests/crds, the single source) and KServe's own (the released ones,
    from its module: local/kserve_controller.py), installed and Established."""
    control_plane.kubectl("apply", "--server-side", "-f", str(SERIN_CRDS))
    install_kserve_crds(control_plane)
    # KServe's namespace, where the chart grants the operator a read of KServe's ConfigMap.
    control_plane.kubectl("create", "namespace", "kserve", check=False)
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/models.serin.dev", "crd/inferenceservices.serving.kserve.io",
        "crd/clusterservingruntimes.serving.kserve.io",
    )
    return control_plane


@pytest.fixture
def namespace(crds: ControlPlane) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    crds.kubectl("create", "namespace", name)
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def prometheus(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A real Prometheus; it scrapes whatever runtimes the data-plane stand-ins list in its file_sd."""
    prom = start_prometheus(tmp_path_factory.mktemp("prometheus"), control_plane.bin_dir)
    yield prom
    prom.stop()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))
