"""`serin dev up|down|status`: the local platform as long-lived background processes.

State (pids, ports, kubeconfig) lives in one JSON file under the platform directory so that `up`
is idempotent and `down` leaves no process behind, whichever shell started them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from serin.local.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, provision

DEFAULT_HOME = Path(os.environ.get("SERIN_DEV_HOME", Path.home() / ".serin" / "dev"))
CRD_PATHS = (REPO_ROOT / "manifests" / "crds", Path(__file__).parent / "crds" / "kserve.yaml")


def _state_path(home: Path) -> Path:
    return home / "state.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(home: Path) -> dict | None:
    try:
        state = json.loads(_state_path(home).read_text())
    except (OSError, ValueError):
        return None
    return state if all(_alive(pid) for pid in state["pids"].values()) else None


def up(home: Path) -> dict:
    state = read_state(home)
    if state:
        return state
    down(home, quiet=True)  # a half-dead platform from an earlier run: clear it first
    cp = ControlPlane(workdir=home / "controlplane", bin_dir=provision())
    try:
        cp.start()
        for path in CRD_PATHS:
            cp.kubectl("apply", "--server-side", "-f", str(path))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/models.serin.dev",
                   "crd/inferenceservices.serving.kserve.io")
    except BaseException:
        cp.stop()
        raise
    state = {
        "kubeconfig": str(cp.kubeconfig),
        "server": cp.server,
        "bin": str(cp.bin_dir),
        "pids": {name: proc.popen.pid for name, proc in cp._procs.items() if proc.popen},
        "started": time.time(),
    }
    _state_path(home).write_text(json.dumps(state, indent=2))
    return state


def down(home: Path, quiet: bool = False) -> None:
    try:
        state = json.loads(_state_path(home).read_text())
    except (OSError, ValueError):
        if not quiet:
            print("serin dev: nothing is running")
        return
    # Reverse start order: clients of the apiserver first, etcd last.
    for name, pid in reversed(list(state["pids"].items())):
        _terminate(pid)
        if not quiet:
            print(f"stopped {name} (pid {pid})")
    _state_path(home).unlink(missing_ok=True)


def _terminate(pid: int, timeout: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def print_usage_hint(state: dict) -> None:
    print(f"Local platform is up: {state['server']}")
    print(f"  export KUBECONFIG={state['kubeconfig']}")
    print(f"  export PATH={state['bin']}:$PATH   # kubectl, helm built by hack/provision.sh")
    print("  kubectl get models -A")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serin dev", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="platform state directory")
    args = parser.parse_args(argv)
    args.home.mkdir(parents=True, exist_ok=True)
    try:
        if args.action == "up":
            print_usage_hint(up(args.home))
        elif args.action == "down":
            down(args.home)
        else:
            state = read_state(args.home)
            if not state:
                print("serin dev: not running")
                return 1
            print_usage_hint(state)
    except ControlPlaneError as err:
        print(f"serin dev: {err}", file=sys.stderr)
        return 1
    return 0
