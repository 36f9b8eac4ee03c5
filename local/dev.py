"""`serin dev up|down|status`: the local platform as long-lived background processes.

Two platforms, one at a time per home directory:
  serin dev up             the apiserver, Prometheus, the KServe stand-in with its data plane and
                           the operator as host processes (no root, no Pods)
  serin dev up --cluster   the real thing (needs root): a real node, KServe's own controller in
                           Standard mode, Traefik as the Gateway, Prometheus discovering Pods, and
                           Serin installed by `helm install charts/serin` from its own images

State (pids, addresses, kubeconfig) lives in one JSON file under the platform directory so that
`up` is idempotent and `down` leaves nothing behind, whichever shell started it. The cluster is
held by a supervisor process that tears it down on SIGTERM; if that process was killed, `down`
stops what it recorded and removes the node's state from the host itself.

`up --cluster` after `down` starts a clean cluster (no Models, a fresh Helm release) and keeps one
thing of the last one: the `sources` folder, the user's artifacts. Resuming the old cluster was
tried: its apiserver comes back on another port and the Pods on the node no longer reach it through
the `kubernetes` Service. `down --purge` deletes the sources folder too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
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
    # A zombie (exited, its parent not reaping it yet) is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_state(home: Path) -> dict | None:
    """The running platform's state, or None when there is none or any of its processes died."""
    try:
        state = json.loads(_state_path(home).read_text())
    except (OSError, ValueError):
        return None
    return state if all(_alive(pid) for pid in state["pids"].values()) else None


def _kind(state: dict) -> str:
    return state.get("kind", "standin")


def up(home: Path) -> dict:
    """Starts (idempotently) the control plane, CRDs, Prometheus, the KServe stand-in with its data
    plane, and the operator, all as background processes recorded in state.json."""
    state = read_state(home)
    if state:
        if _kind(state) != "standin":
            raise ControlPlaneError(f"a {_kind(state)} platform is running in {home}: `serin dev down` first")
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
        "kind": "standin",
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


def down(home: Path, quiet: bool = False) -> list[str]:
    """Stops the platform; returns what it left on the host (nothing, or a defect)."""
    try:
        state = json.loads(_state_path(home).read_text())
    except (OSError, ValueError):
        if not quiet:
            print("serin dev: nothing is running")
        return []
    left: list[str] = []
    if _kind(state) == "cluster":
        left = _down_cluster(home, state, quiet)
    else:
        # Reverse start order: clients of the apiserver first, etcd last.
        for name, pid in reversed(list(state["pids"].items())):
            _terminate(pid)
            if not quiet:
                print(f"stopped {name} (pid {pid})")
    _state_path(home).unlink(missing_ok=True)
    return left


def purge(home: Path) -> None:
    """Deletes everything a stopped platform left under its home, the sources folder included."""
    if read_state(home):
        raise ControlPlaneError(f"a platform is running in {home}: `serin dev down` first")
    for kept in ("cluster", "controlplane", "prometheus", "standin", "store"):
        shutil.rmtree(home / kept, ignore_errors=True)
    print(f"serin dev: deleted the platform's data under {home}, the sources folder too")


def sources_dir(home: Path) -> Path:
    """The `sources` claim's folder on the host (local/cluster_platform.py puts it there)."""
    return home / "cluster" / "volumes" / "sources"


def start_clean(home: Path) -> bool:
    """Before a cluster starts: removes what an earlier one left (etcd's data, the node's state, the
    model store), keeping its `sources` folder. Whether there was one."""
    cluster = home / "cluster"
    if not cluster.exists():
        return False
    sources, kept = sources_dir(home), home / "sources.kept"
    if sources.exists():
        shutil.rmtree(kept, ignore_errors=True)
        sources.rename(kept)
    shutil.rmtree(cluster)
    if kept.exists():
        sources.parent.mkdir(parents=True, exist_ok=True)
        kept.rename(sources)
    return True


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


# --- the real cluster -------------------------------------------------------------------------

CLUSTER_NAMESPACE = "models"
# A cold node pulls nothing but imports ~1 GB of images, and helm waits for the operator: minutes.
CLUSTER_UP_TIMEOUT = 900.0


def up_cluster(home: Path, timeout: float = CLUSTER_UP_TIMEOUT) -> dict:
    """Starts (idempotently) the real platform under a supervisor process of its own, and returns
    its state once everything is up; raises with the supervisor's log when it did not come up."""
    state = read_state(home)
    if state:
        if _kind(state) != "cluster":
            raise ControlPlaneError(f"a {_kind(state)} platform is running in {home}: `serin dev down` first")
        return state
    if os.geteuid() != 0:
        raise ControlPlaneError("the real cluster needs root (network and mount namespaces, iptables, cgroups): "
                                "run `serin dev up --cluster` as root, or `serin dev up` for the stand-in")
    down(home, quiet=True)  # a half-dead platform from an earlier run: clear it first
    if start_clean(home):
        print(f"serin dev: starting a clean cluster; the last one's Models are gone, its sources folder "
              f"{sources_dir(home)} is kept", file=sys.stderr)
    log = home / "logs" / "supervisor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as logf:
        supervisor = subprocess.Popen([sys.executable, "-m", "serin.local.dev", "--supervise", str(home)],
                                      stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                      start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(home)
        if state and state["pids"].get("supervisor") == supervisor.pid:
            return state
        if supervisor.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            raise ControlPlaneError(f"the cluster did not come up (supervisor exited {supervisor.returncode}); "
                                    f"{log}:\n{tail}")
        time.sleep(0.5)
    supervisor.terminate()  # it tears down what it started
    supervisor.wait(300)
    raise ControlPlaneError(f"the cluster was not up after {timeout:.0f}s; see {log}")


def supervise_cluster(home: Path) -> int:
    """The supervisor: brings the platform up, records it, and holds it until SIGTERM or SIGINT,
    then tears it down and records what (if anything) was left on the host."""
    from serin.local import examples
    from serin.local.cluster_platform import bring_up

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # taken by sigwait below
    t0 = time.time()
    platform = bring_up(home / "cluster", CLUSTER_NAMESPACE, gateway=True)
    try:
        cp, gateway = platform.cluster.control_plane, platform.gateway
        assert gateway is not None
        examples.stage(platform.sources)  # what manifests/examples/platform/ points at
        state = {
            "kind": "cluster",
            "kubeconfig": str(cp.kubeconfig),
            "server": cp.server,
            "bin": str(cp.bin_dir),
            "prometheus": platform.prometheus.url,
            "gateway": gateway.address,
            "gatewayDomain": "example.com",
            "namespace": platform.namespace,
            "sources": str(platform.sources),
            "logs": str(home / "logs"),
            # The supervisor first: `status` and `up` judge the platform by all of them being alive.
            "pids": {"supervisor": os.getpid(), **platform.host_processes()},
            "started": t0,
            "startedIn": {k: round(v, 1) for k, v in platform.started_in.items()},
        }
        tmp = _state_path(home).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(_state_path(home))
        print(f"platform up in {time.time() - t0:.1f}s: {state['startedIn']}", flush=True)
        sig = signal.sigwait({signal.SIGTERM, signal.SIGINT})
        print(f"got {signal.Signals(sig).name}: tearing the platform down", flush=True)
    finally:
        left = platform.down()
        (home / "left.json").write_text(json.dumps(left))
        print(f"down; left on the host: {left or 'nothing'}", flush=True)
    return 0 if not left else 1


def _down_cluster(home: Path, state: dict, quiet: bool) -> list[str]:
    from serin.local.node import Node

    supervisor = state["pids"].get("supervisor", 0)
    (home / "left.json").unlink(missing_ok=True)
    if _alive(supervisor):
        # It stops the platform in order (clients, the node, then the control plane) and exits.
        os.kill(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + 300
        while _alive(supervisor) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(supervisor, os.WNOHANG)
            time.sleep(0.2)
        if not quiet:
            print(f"stopped the cluster (supervisor pid {supervisor})")
    # Whatever the supervisor did not stop (it was killed, or timed out): stop it here.
    for name, pid in reversed([(n, p) for n, p in state["pids"].items() if n != "supervisor"]):
        if _alive(pid):
            _terminate(pid)
            if not quiet:
                print(f"stopped {name} (pid {pid}), which the supervisor had left running")
    _terminate(supervisor)
    Node.cleanup_leftovers()
    left = Node.leftovers()
    if left:
        print(f"serin dev: left on the host: {left}", file=sys.stderr)
    return left


def print_usage_hint(state: dict) -> None:
    if _kind(state) == "cluster":
        print(f"Real cluster is up: a node, KServe's controller (Standard mode), Traefik's Gateway {state['gateway']}, "
              f"Prometheus {state['prometheus']}, Serin from charts/serin (release serin in serin-system)")
    else:
        print(f"Local platform is up: kube-apiserver {state['server']}, Prometheus {state.get('prometheus', '-')}")
    print(f"  export KUBECONFIG={state['kubeconfig']}")
    print(f"  export PATH={state['bin']}:$PATH   # kubectl, helm built by hack/provision.sh")
    print("  kubectl get models,inferenceservices -A")
    if _kind(state) == "cluster":
        ns = state["namespace"]
        print(f"  kubectl apply -f {REPO_ROOT / 'manifests' / 'examples' / 'platform'}/   # one Model per format")
        print(f"  Your own: Models go in namespace {ns}; copy an artifact under {state['sources']}/ and point "
              f"spec.source.uri at pvc://sources/<its path there>")
        print(f"  a Model's endpoint: curl -H 'Host: <model>.{ns}.{state['gatewayDomain']}' "
              f"{state['gateway']}/v2/models/<model>/infer")
    if state.get("logs"):
        print(f"  logs: {state['logs']}/" + (f"  operator metrics: {state['operatorMetrics']}"
                                            if state.get("operatorMetrics") else ""))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serin dev", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="platform state directory")
    parser.add_argument("--cluster", action="store_true",
                        help="up: the real cluster with KServe's controller and a Gateway (needs root)")
    parser.add_argument("--purge", action="store_true",
                        help="down: also delete the sources folder, which `up --cluster` keeps across runs")
    args = parser.parse_args(argv)
    args.home.mkdir(parents=True, exist_ok=True)
    try:
        if args.action == "up":
            print_usage_hint(up_cluster(args.home) if args.cluster else up(args.home))
        elif args.action == "down":
            left = down(args.home)
            if args.purge:
                purge(args.home)
            return 1 if left else 0
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


if __name__ == "__main__":
    if sys.argv[1:2] == ["--supervise"] and len(sys.argv) == 3:
        sys.exit(supervise_cluster(Path(sys.argv[2])))
    sys.exit(main(sys.argv[1:]))
