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
