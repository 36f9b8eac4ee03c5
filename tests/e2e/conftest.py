from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Cluster, OperatorProcess, Platform, Versions, standin
from serin.local import demo_models
from serin.local.controlplane import ControlPlane
from serin.local.prometheus import Prometheus


@pytest.fixture(scope="session")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Versions:
    root = tmp_path_factory.mktemp("versions")
    return Versions(
        v1=demo_models.sklearn_version(root / "v1", seed=1),
        v2=demo_models.sklearn_version(root / "v2", seed=2),
        erroring=demo_models.erroring_version(root / "erroring"),
        slow=demo_models.slow_version(root / "slow"),
        drifted=demo_models.drifted_version(root / "drifted"),
        less_accurate=demo_models.less_accurate_version(root / "less-accurate"),
    )


@pytest.fixture
def platform(crds: ControlPlane, namespace: str, prometheus: Prometheus, artifacts, tmp_path: Path) -> Iterator[Platform]:  # type: ignore[no-untyped-def]
    """The local platform for one namespace: a data-plane stand-in (real runtime processes behind a
    router, listed in Prometheus' file_sd), the operator, and the session's real Prometheus."""
    with standin(crds, namespace, tmp_path, data_plane=True, file_sd=prometheus.targets_file) as proc:
        op = OperatorProcess(crds, namespace, prometheus.url, tmp_path / "store", tmp_path / "operator.log")
        try:
            yield Platform(Cluster(crds, namespace, artifacts, op, standin_log=tmp_path / "standin.log"), prometheus, proc)
        finally:
            op.stop()
