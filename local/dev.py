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

from serin.local.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, free_port, provision
from serin.local.kserve_controller import install_crds as install_kserve_crds
from serin.local.prometheus import Prometheus
from serin.local.stack import operator_argv, process, standin_argv

DEFAULT_HOME = Path(os.environ.get("SERIN_DEV_HOME", Path.home() / ".serin" / "dev"))
CRD_PATHS = (REPO_ROOT / "manifests" / "crds",)


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
    """Starts (idempotently) the control plane, CRDs, Prometheus, the KServe stand-in with its data
    plane, and the operator, all as background processes recorded in state.json."""
    state = read_state(home)
    if state:
        return state
    down(home, quiet=True)  # a half-dead platform from an earlier run: clear it first
    bin_dir = provision()
    cp = ControlPlane(workdir=home / "controlplane", bin_dir=bin_dir)
    prom = Prometheus(workdir=home / "prometheus", bin_dir=bin_dir)
    procs = []
    try:
        cp.start()
        for path in CRD_PATHS:
            cp.kubectl("apply", "--server-side", "-f", str(path))
        install_kserve_crds(cp)  # KServe's own, as released
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/models.serin.dev",
                   "crd/inferenceservices.serving.kserve.io")
        prom.start()
        metrics_port = free_port()
        env = {"KUBECONFIG": str(cp.kubeconfig)}
        procs = [
            process("kserve-standin", standin_argv(cp.kubeconfig, home / "standin", prom.targets_file),
                    home / "logs" / "kserve-standin.log"),
            process("operator", operator_argv(prom.url, home / "store", metrics_port=metrics_port),
                    home / "logs" / "operator.log"),
        ]
        for proc in procs:
            proc.env = env
            proc.start()
    except BaseException:
        for proc in procs:
            proc.stop()
        prom.stop()
        cp.stop()
        raise
    pids = {name: proc.popen.pid for name, proc in cp._procs.items() if proc.popen}
    pids["prometheus"] = prom.pid or 0
    pids |= {proc.name: proc.popen.pid for proc in procs if proc.popen}
    state = {
        "kubeconfig": str(cp.kubeconfig),
        "server": cp.server,
        "bin": str(cp.bin_dir),
        "prometheus": prom.url,
        "operatorMetrics": f"http://127.0.0.1:{metrics_port}/metrics",
        "logs": str(home / "logs"),
        "pids": pids,
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
    print(f"Local platform is up: kube-apiserver {state['server']}, Prometheus {state.get('prometheus', '-')}")
    print(f"  export KUBECONFIG={state['kubeconfig']}")
    print(f"  export PATH={state['bin']}:$PATH   # kubectl, helm built by hack/provision.sh")
    print("  kubectl get models,inferenceservices -A")
    if state.get("logs"):
        print(f"  logs: {state['logs']}/  operator metrics: {state.get('operatorMetrics', '-')}")


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
