"""Two operator replicas against one apiserver, as the Helm chart's Deployment runs them
(POD_NAMESPACE set: leader election on a Lease). Only the leader acts; when it dies mid-canary the
standby takes the Lease once it expires and finishes the rollout from the Model's status, with no
step repeated or skipped and every transition recorded once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import FAST_ROLLOUT, Artifacts, Cluster, OperatorProcess
from serin.local.controlplane import ControlPlane
from serin.local.prometheus import Prometheus

pytestmark = pytest.mark.controlplane

# Long enough at step 1 to kill the leader there, short enough to finish once the standby leads.
STEP1_HOLD = {**FAST_ROLLOUT, "steps": [{"weight": 10, "pause": "20s"}, {"weight": 50, "pause": "2s"}]}


@pytest.fixture
def replicas(crds: ControlPlane, namespace: str, prometheus: Prometheus, kserve_standin: subprocess.Popen[bytes],
             tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    # One model store for both, as the Pods share the PVC: the standby must find the leader's
    # converted artifacts where status says they are.
    ops = [OperatorProcess(crds, namespace, prometheus.url, tmp_path / "store", tmp_path / f"operator-{i}.log",
                           env={"POD_NAMESPACE": namespace})
           for i in range(2)]
    yield ops
    for op in ops:
        op.stop()


def lease(cp: ControlPlane, namespace: str) -> dict[str, Any]:
    out = cp.kubectl("get", "lease", "serin-operator", "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout)["spec"] if out.returncode == 0 else {}


def holder_index(cp: ControlPlane, namespace: str, ops: list[OperatorProcess]) -> int | None:
    holder = lease(cp, namespace).get("holderIdentity") or ""
    for i, op in enumerate(ops):
        assert op.proc is not None
        if f"-{op.proc.pid}-" in holder:
            return i
    return None


def serve_v1_with_both_running(cp: ControlPlane, namespace: str, replicas: list[OperatorProcess],
                               artifacts: Artifacts) -> tuple[Cluster, int, int]:
    """Both replicas up, v1 promoted; returns the cluster and the leader's and standby's indexes."""
    for op in replicas:
        op.start()
    c = Cluster(cp, namespace, artifacts, replicas[0])
    c.apply(artifacts.good_v1)
    c.wait_phase("Promoted", generation=1)
    leader = holder_index(cp, namespace, replicas)
    assert leader is not None, lease(cp, namespace)
    return c, leader, 1 - leader


def reasons(c: Cluster) -> list[str]:
    return sorted(e["reason"] for e in c.events())


def test_two_replicas_one_leader_and_failover_mid_canary(crds: ControlPlane, namespace: str,
                                                         replicas: list[OperatorProcess],
                                                         artifacts: Artifacts) -> None:
    c, leader, standby = serve_v1_with_both_running(crds, namespace, replicas, artifacts)
    # Only the leader acted: the standby's log has no transition at all.
    assert "ConversionStarted" in replicas[leader].log.read_text()
    assert "ConversionStarted" not in replicas[standby].log.read_text()

    c.apply(artifacts.good_v2, rollout=STEP1_HOLD)
    c.wait("canary at step 1", lambda m: bool((m.get("status") or {}).get("canary", {}).get("trafficSince")))
    transitions_before = lease(crds, namespace).get("leaseTransitions", 0)
    proc = replicas[leader].proc
    assert proc is not None
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to hand the Lease over: the standby must wait it out
    proc.wait(10)

    c.operator = replicas[standby]
    s = c.wait_phase("Promoted", generation=2, timeout=120)["status"]
    assert holder_index(crds, namespace, replicas) == standby
    assert lease(crds, namespace)["leaseTransitions"] == transitions_before + 1
    assert "became leader" in replicas[standby].log.read_text()
    assert c.weights_seen() == [10, 50], "a step was repeated or skipped across the failover"
    assert [h["outcome"] for h in s["history"]] == ["Promoted", "Promoted"]
    # Every transition recorded exactly once, although two processes handled this Model.
    got = reasons(c)
    for reason in ("CanaryStarted", "StepAdvanced", "Promoted"):
        assert got.count(reason) == 1, got
    assert got.count("ConversionStarted") == 2 and got.count("ConversionSucceeded") == 2, got


def test_graceful_stop_hands_the_lease_over(crds: ControlPlane, namespace: str, replicas: list[OperatorProcess],
                                            artifacts: Artifacts) -> None:
    """SIGTERM (a rolling update) stops the leader cleanly (exit 0) and releases the Lease: the
    standby takes it and serves the next version."""
    c, leader, standby = serve_v1_with_both_running(crds, namespace, replicas, artifacts)
    replicas[leader].stop()
    assert replicas[leader].proc is not None and replicas[leader].proc.returncode == 0
    # Released, not left to expire: the stopped leader cut its Lease to 1 s in the past on the way
    # out (or the standby already holds it, which before expiry only a release allows).
    released = lease(crds, namespace)
    assert released["leaseDurationSeconds"] == 1 or holder_index(crds, namespace, replicas) == standby, released
    c.operator = replicas[standby]
    c.apply(artifacts.good_v2)
    c.wait_phase("Promoted", generation=2)
    assert holder_index(crds, namespace, replicas) == standby
    assert "ConversionStarted" in replicas[standby].log.read_text()
