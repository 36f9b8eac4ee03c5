"""`serin dev up|status|down`: idempotent start, and a clean stop that leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def serin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serin.operator.cli", *args], capture_output=True, text=True,
                          timeout=300)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_dev_up_is_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "dev"
    up = serin("dev", "up", "--home", str(home))
    assert up.returncode == 0, up.stderr
    state = json.loads((home / "state.json").read_text())
    assert set(state["pids"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "prometheus",
                                  "kserve-standin", "operator"}
    assert all(alive(pid) for pid in state["pids"].values())
    again = serin("dev", "up", "--home", str(home))
    assert again.returncode == 0 and json.loads((home / "state.json").read_text())["pids"] == state["pids"]
    assert serin("dev", "status", "--home", str(home)).returncode == 0
    down = serin("dev", "down", "--home", str(home))
    assert down.returncode == 0, down.stderr
    assert [name for name, pid in state["pids"].items() if alive(pid)] == []
    assert serin("dev", "status", "--home", str(home)).returncode == 1


def test_dev_up_cluster_refuses_without_root_and_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """The real node needs root (namespaces, iptables, cgroups): a user gets why and what to run
    instead, before anything is started or written."""
    from serin.local import dev

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    started: list[object] = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **kw: started.append(a))
    home = tmp_path / "home"
    assert dev.main(["up", "--cluster", "--home", str(home)]) == 1
    err = capsys.readouterr().err
    assert "needs root" in err and "`serin dev up` for the stand-in" in err
    assert started == [] and not (home / "state.json").exists()
