"""Start-up against a real apiserver that lacks the Model CRD: the operator must refuse to run,
saying why, rather than run and serve nothing (kopf's cluster scanning is off, so it would never
notice the CRD arriving later)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from serin.local.controlplane import ControlPlane, start_control_plane
from serin.local.stack import operator_argv

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def bare_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A second, empty control plane: no CRDs at all."""
    cp = start_control_plane(tmp_path_factory.mktemp("bare-cp"), controller_manager=False)
    yield cp
    cp.stop()


def test_operator_refuses_to_start_without_the_model_crd(bare_control_plane: ControlPlane, tmp_path: Path) -> None:
    env = os.environ | {"KUBECONFIG": str(bare_control_plane.kubeconfig)}
    out = subprocess.run(operator_argv("http://127.0.0.1:9", tmp_path / "store", namespace=None),
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "models.serin.dev/v1alpha1 API is not served: install the CRD" in out.stdout + out.stderr


def test_operator_starts_once_the_crd_is_installed(crds: ControlPlane, tmp_path: Path) -> None:
    """The same check passes against the suite's control plane, which has the CRD: the operator
    stays up (and is stopped by the test)."""
    env = os.environ | {"KUBECONFIG": str(crds.kubeconfig)}
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(operator_argv("http://127.0.0.1:9", tmp_path / "store", namespace="default"),
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(8)
        assert "serin operator started" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(15)
