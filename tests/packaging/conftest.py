"""Packaging tier fixtures: the real helm and kubectl (from hack/provision.sh) against the real
apiserver of the session's control plane, which runs with --authorization-mode=RBAC."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging_helpers import CHART, MONITORING_CRDS, Helm
from serin.local.controlplane import ControlPlane, provision


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return provision()


@pytest.fixture(scope="session")
def helm(bin_dir: Path) -> Helm:
    """helm without a cluster: lint, template, package."""
    return Helm(bin_dir / "helm")


@pytest.fixture(scope="session")
def cluster_helm(bin_dir: Path, crds: ControlPlane) -> Helm:
    """helm talking to the session's apiserver as cluster-admin (system:masters)."""
    return Helm(bin_dir / "helm", kubeconfig=crds.kubeconfig)


@pytest.fixture(scope="session")
def monitoring_crds(crds: ControlPlane) -> ControlPlane:
    crds.kubectl("apply", "--server-side", "-f", str(MONITORING_CRDS))
    crds.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 "crd/servicemonitors.monitoring.coreos.com", "crd/podmonitors.monitoring.coreos.com",
                 "crd/prometheusrules.monitoring.coreos.com")
    return crds


@pytest.fixture
def make_namespace(crds: ControlPlane) -> Iterator[Callable[[str], str]]:
    """Creates extra namespaces on demand (watched or unwatched ones), deleted after the test."""
    made: list[str] = []

    def make(prefix: str = "w") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        crds.kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield make
    for name in made:
        crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def server_version(crds: ControlPlane) -> str:
    return str(json.loads(crds.kubectl("get", "--raw", "/version").stdout)["gitVersion"])


@pytest.fixture(scope="session")
def install_chart() -> Path:
    """The chart exactly as shipped: the provisioned apiserver is version-stamped, so the chart's
    kubeVersion constraint is enforced for real (test_chart_kube_version_is_enforced)."""
    return CHART
