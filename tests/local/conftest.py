"""Fixtures for the KServe stand-in tests: the stand-in started the way `serin dev` starts it
(`python -m serin.local.kserve_standin`, a process of its own), scoped to the test's namespace so
that stand-ins of different tests never write the same status."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from serin.local.controlplane import ControlPlane

sys.path.insert(0, str(Path(__file__).parent))
from standin_helpers import Isvcs, StandIn


@pytest.fixture
def isvcs(crds: ControlPlane, namespace: str) -> Isvcs:
    return Isvcs(crds, namespace)


@pytest.fixture
def start_standin(crds: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Callable[..., StandIn]]:
    started: list[StandIn] = []

    def start(*extra: str) -> StandIn:
        log = tmp_path / f"standin-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "serin.local.kserve_standin", "--kubeconfig", str(crds.kubeconfig),
                 "--namespace", namespace, "--workdir", str(tmp_path / "standin"), *extra],
                stdout=out, stderr=subprocess.STDOUT)
        started.append(StandIn(proc, log))
        return started[-1]

    yield start
    for s in started:
        s.stop()
    for s in started:
        print(f"--- {s.log.name}\n{s.log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def standin(start_standin: Callable[..., StandIn]) -> StandIn:
    return start_standin()
