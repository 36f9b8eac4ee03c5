"""`serin dev up --cluster`: the whole real platform (node, KServe's controller, Traefik's Gateway,
Prometheus, Serin from its chart) in one command, held in the background; `serin dev down` leaves
nothing on the host — also when the process holding the platform was killed.

This module starts its own cluster through the command, as a user would; the tier's other modules
each start theirs, one at a time (one node per machine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness import wait_for
from serin.local import demo_models
from serin.local.node import Node


def serin(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serin.operator.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kubectl(state: dict, *args: str, input: str | None = None) -> str:
    out = subprocess.run([f"{state['bin']}/kubectl", "--kubeconfig", state["kubeconfig"], *args], input=input,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
    return out.stdout


def up(home: Path) -> dict:
    t = time.monotonic()
    out = serin("dev", "up", "--cluster", "--home", str(home))
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    state = json.loads((home / "state.json").read_text())
    print(f"\nserin dev up --cluster: {time.monotonic() - t:.1f}s, parts {state['startedIn']}")
    return state


def test_dev_up_cluster_serves_a_model_and_down_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "dev"
    state = up(home)
    assert state["kind"] == "cluster"
    assert {"supervisor", "etcd", "kube-apiserver", "kube-scheduler", "kserve-manager", "traefik",
            "prometheus"} <= set(state["pids"])
    assert all(alive(pid) for pid in state["pids"].values())
    assert kubectl(state, "get", "node", "-o", "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}") \
        == "True"
    assert kubectl(state, "get", "deployment", "serin-operator", "-n", "serin-system", "-o",
                   "jsonpath={.status.availableReplicas}") == "1"

    # Idempotent: the same platform, not a second one; and not the stand-in on top of it.
    t = time.monotonic()
    again = serin("dev", "up", "--cluster", "--home", str(home))
    assert again.returncode == 0 and json.loads((home / "state.json").read_text())["pids"] == state["pids"]
    assert time.monotonic() - t < 30, "a second `up` must find the running platform, not start one"
    standin = serin("dev", "up", "--home", str(home))
    assert standin.returncode == 1 and "cluster platform is running" in standin.stderr
    status = serin("dev", "status", "--home", str(home))
    assert status.returncode == 0 and state["gateway"] in status.stdout

    # What the hint tells a user to do: an artifact on the sources claim, a Model, an answer through the Gateway.
    files = demo_models.sklearn_version(tmp_path / "v1", seed=1)
    target = Path(state["sources"]) / "iris" / "v1"
    target.mkdir(parents=True)
    for f in (files.model, files.sample):
        shutil.copy(f, target / f.name)
    kubectl(state, "apply", "-f", "-", input=json.dumps({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Model", "metadata": {"name": "iris", "namespace": state["namespace"]},
        "spec": {"source": {"uri": f"pvc://sources/iris/v1/{files.model.name}", "format": files.format,
                            "sampleUri": f"pvc://sources/iris/v1/{files.sample.name}"}}}))
    wait_for("iris Promoted", lambda: kubectl(state, "get", "model", "iris", "-n", state["namespace"], "-o",
                                              "jsonpath={.status.phase}") == "Promoted", timeout=240)
    request = urllib.request.Request(
        f"{state['gateway']}/v2/models/iris/infer", method="POST",
        data=json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                     "data": [5.1, 3.5, 1.4, 0.2]}]}).encode(),
        headers={"Host": f"iris-{state['namespace']}.{state['gatewayDomain']}", "Content-Type": "application/json"})
    # Right after Promoted Traefik can answer 503 for a few hundred ms: the HTTPRoute's status is
    # written before its router has the route (harness.from_first_served, docs/serving.md).
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200 and len(json.loads(resp.read())["outputs"][0]["data"]) == 1
                break
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)

    down = serin("dev", "down", "--home", str(home), timeout=400)
    assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
    assert [name for name, pid in state["pids"].items() if alive(pid)] == []
    assert Node.leftovers() == []
    assert json.loads((home / "left.json").read_text()) == [], "the supervisor's own teardown left state"
    assert serin("dev", "status", "--home", str(home)).returncode == 1


def test_dev_down_cleans_up_after_a_killed_supervisor(tmp_path: Path) -> None:
    home = tmp_path / "dev"
    state = up(home)
    os.kill(state["pids"]["supervisor"], signal.SIGKILL)
    wait_for("the supervisor gone", lambda: not alive(state["pids"]["supervisor"]), timeout=10)
    assert serin("dev", "status", "--home", str(home)).returncode == 1, "a platform with a dead part is not up"
    down = serin("dev", "down", "--home", str(home), timeout=400)
    assert down.returncode == 0, f"{down.stdout}\n{down.stderr}"
    assert "which the supervisor had left running" in down.stdout
    assert [name for name, pid in state["pids"].items() if alive(pid)] == []
    assert Node.leftovers() == []
