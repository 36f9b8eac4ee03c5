"""Kubernetes' own reasons a model's Pods do not serve (operator/pods.py), as the API shows them,
and how a rollout waiting on them tells them: at once, once per reason, gone when they are."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from clock import at, ts
from serin.operator.observations import Observations, ServingObservation, Variant
from serin.operator.pods import MESSAGE_LIMIT, Crashes, PodTrouble, crashes, pod_trouble, selected, trouble
from serin.operator.rollout import decide
from serin.operator.spec import parse_spec
from serin.operator.status import Canary, Status, Version, status_from_dict, status_to_dict


def pod(name: str = "m-gen2-predictor-7d9f-x2", phase: str = "Pending", conditions: list[dict[str, Any]] | None = None,
        containers: list[dict[str, Any]] | None = None, init: list[dict[str, Any]] | None = None,
        deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"serving.kserve.io/inferenceservice": "m"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T00:00:00Z"
    status: dict[str, Any] = {"phase": phase, "conditions": conditions or []}
    if containers is not None:
        status["containerStatuses"] = containers
    if init is not None:
        status["initContainerStatuses"] = init
    return {"kind": "Pod", "metadata": meta, "status": status}


UNSCHEDULABLE = pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 "
                                            "nodes are available: 1 No preemption victims found."}])


def waiting(reason: str, message: str = "", name: str = "kserve-container", **kw: Any) -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": kw.pop("restarts", 0),
            "state": {"waiting": {"reason": reason, "message": message}}, **kw}


def running(ready: bool, name: str = "kserve-container", last: dict[str, Any] | None = None) -> dict[str, Any]:
    cs: dict[str, Any] = {"name": name, "ready": ready, "restartCount": 3 if last else 0,
                          "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}}}
    if last:
        cs["lastState"] = {"terminated": last}
    return cs


OOM = {"reason": "OOMKilled", "exitCode": 137}
CRASH = {"reason": "Error", "exitCode": 1, "message": "ValueError: no model.onnx"}


@pytest.mark.parametrize(("the_pod", "reason", "words"), [
    (UNSCHEDULABLE, "Unschedulable", "1 Insufficient cpu"),
    (pod(containers=[waiting("ImagePullBackOff", 'Back-off pulling image "ghcr.io/serin/runtime:x"')]),
     "ImagePullBackOff", 'cannot pull image "ghcr.io/serin/runtime:x"'),
    (pod(containers=[waiting("ErrImagePull", 'failed to pull and unpack image "ghcr.io/serin/runtime:x": '
                                             "not found")]), "ImagePullBackOff", 'image "ghcr.io/serin/runtime:x"'),
    (pod(containers=[waiting("CreateContainerConfigError", 'secret "s" not found')]),
     "CreateContainerConfigError", 'secret "s" not found'),
    (pod(phase="Running", containers=[waiting("CrashLoopBackOff", "back-off 40s", lastState={"terminated": CRASH})]),
     "CrashLoopBackOff", "last exit Error (code 1): ValueError: no model.onnx"),
    (pod(phase="Running", containers=[running(False, last=CRASH)]), "CrashLoopBackOff", "last exit Error"),
    (pod(phase="Running", containers=[waiting("CrashLoopBackOff", "back-off", lastState={"terminated": OOM})]),
     "OOMKilled", "last exit OOMKilled (code 137)"),
    (pod(phase="Running", containers=[running(False, last=OOM)]), "OOMKilled", "code 137"),
    (pod(phase="Running", containers=[running(False, last={"reason": "Completed", "exitCode": 0})]),
     "CrashLoopBackOff", "last exit Completed (code 0)"),
    (pod(init=[waiting("CrashLoopBackOff", "", name="storage-initializer", lastState={"terminated": CRASH})]),
     "CrashLoopBackOff", "container storage-initializer"),
], ids=["unschedulable", "image-pull-backoff", "err-image-pull-is-the-same-trouble", "config-error",
        "crash-loop-waiting", "crash-loop-running-unready", "oom-killed-waiting", "oom-killed-running-unready",
        "exiting-with-0-and-restarted",
        "storage-initializer-crashing"])
def test_a_pods_trouble_in_kubernetes_own_words(the_pod: dict[str, Any], reason: str, words: str) -> None:
    found = pod_trouble(the_pod)
    assert found is not None and found.reason == reason and words in found.message, found
    assert found.pod == the_pod["metadata"]["name"] and found.pod in found.describe()


@pytest.mark.parametrize("the_pod", [
    pod(containers=[waiting("ContainerCreating")]),
    pod(init=[waiting("PodInitializing", name="storage-initializer")]),
    pod(phase="Running", containers=[running(True)]),
    pod(phase="Running", containers=[running(True, last=OOM)]),  # serving again: the restart count tells
    pod(phase="Running", containers=[running(False)]),  # starting: its readiness probe has not passed yet
    pod(deleting=True, conditions=UNSCHEDULABLE["status"]["conditions"]),
], ids=["creating", "initializing", "ready", "ready-after-an-oom", "not-ready-yet", "being-deleted"])
def test_pods_on_their_way_are_no_trouble(the_pod: dict[str, Any]) -> None:
    assert trouble([the_pod]) is None


def test_messages_are_bounded_and_the_first_pod_by_name_is_told() -> None:
    long = pod("m-b", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                   "message": "0/5000 nodes " * 500}])
    crash = pod("m-a", phase="Running", containers=[running(False, last=CRASH)])
    assert len(pod_trouble(long).message) <= MESSAGE_LIMIT  # type: ignore[union-attr]
    found = trouble([long, crash])
    assert found is not None and found.pod == "m-a"


# -- a rollout waiting on its Pods --------------------------------------------------------------

SPEC = parse_spec({"source": {"uri": "file:///v2.joblib", "sampleUri": "file:///s.csv"}, "rollout": {
    "steps": [{"weight": 10, "pause": "30s"}], "progressDeadline": "600s",
    "analysis": {"metrics": [{"name": "error-rate", "builtin": "errorRate", "max": 0.01}]}}})
STABLE = Version(1, "k1", "file:///store/v1", "s1", "m-gen1")
CANARY = Canary(generation=2, versionKey=SPEC.version_key, storageUri="file:///store/v2", sha256="s2",
                state="Progressing", step=0, weight=10, since=ts(0), stepSince=ts(0))
WAITING = Status(phase="Progressing", observedGeneration=2, stable=STABLE, stableConfirmed=True, canary=CANARY)
NOT_YET = ServingObservation(exists=True, settled=False, stable=Variant(STABLE.storageUri, "m-gen1", True, 100),
                             mode="Standard")


def tick(status: Status, t: PodTrouble | None, seconds: float) -> tuple[Status, list[tuple[str, str]]]:
    d = decide(SPEC, status, Observations(2, serving=replace(NOT_YET, trouble=t)), at(seconds))
    events = [(a.reason, a.message) for a in d.actions if type(a).__name__ == "Emit"]
    return d.status, events


def test_a_waiting_canary_names_kubernetes_reason_at_once_once_per_reason_and_clears() -> None:
    """The canary's Pod cannot be scheduled: the first tick says so in status.message, in the
    Progressing condition (still True: the deadline has not passed) and in one Warning Event;
    the kubelet's retries add nothing; a new reason is told again; once the Pods give no reason,
    status loses it at once, with no Event."""
    unschedulable = pod_trouble(UNSCHEDULABLE)
    assert unschedulable is not None
    s, events = tick(WAITING, unschedulable, 1)
    assert [r for r, _ in events] == ["ServingBlocked"]
    assert "generation 2 to serve 10% as the canary" in events[0][1] and "Insufficient cpu" in events[0][1]
    assert "waiting for the canary to serve" in s.message and "Unschedulable: 0/1 nodes" in s.message
    progressing = {c.type: c for c in s.conditions}["Progressing"]
    assert (progressing.status, progressing.reason) == ("True", "Unschedulable")
    assert "Insufficient cpu" in progressing.message
    assert status_from_dict(status_to_dict(s)) == s  # the reason told survives a restart: not told twice

    s, events = tick(s, unschedulable, 5)
    assert events == []  # the same reason: told once
    crash = PodTrouble("CrashLoopBackOff", "container kserve-container: last exit Error (code 1)", "m-gen2-x")
    s, events = tick(s, crash, 9)
    assert [r for r, _ in events] == ["ServingBlocked"] and "CrashLoopBackOff" in events[0][1]

    s, events = tick(s, None, 12)
    assert events == [] and "CrashLoopBackOff" not in s.message
    assert s.waiting is not None and s.waiting.blocked == ""
    assert {c.type: c for c in s.conditions}["Progressing"].reason == "Progressing"


def test_past_the_deadline_the_report_leads_with_the_pods_reason() -> None:
    unschedulable = pod_trouble(UNSCHEDULABLE)
    s, _ = tick(WAITING, unschedulable, 1)
    s, events = tick(s, unschedulable, 700)
    (rollback,) = [m for r, m in events if r == "RollbackStarted"]
    assert "progressDeadline" in rollback and "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu" in rollback
    assert "Insufficient cpu" in s.message


def test_a_first_version_waiting_on_an_image_says_so() -> None:
    deploying = Status(stable=Version(1, SPEC.version_key, "file:///store/v2", "s2"), stableConfirmed=False)
    pull = PodTrouble("ImagePullBackOff", 'container kserve-container: Back-off pulling image "x"', "m-gen1-y")
    d = decide(SPEC, deploying, Observations(1, serving=ServingObservation(exists=True, trouble=pull)), at(0))
    assert d.status.phase == "Deploying" and "ImagePullBackOff" in d.status.message
    assert [a.reason for a in d.actions if type(a).__name__ == "Emit"] == ["ServingBlocked"]


def test_a_conversion_whose_pod_cannot_be_scheduled_says_so_once_and_clears() -> None:
    """The conversion Job exists but its Pod waits for a node with room: the Model says why while
    it lasts (and in the timeout's reason), with one Warning Event per reason."""
    from serin.operator.observations import ConversionResult, ConversionState
    from serin.operator.status import Pending

    converting = Status(pending=Pending(1, SPEC.version_key, ts(0)))
    why = "Pod serin-convert-m-x Unschedulable: 0/1 nodes are available: 1 Insufficient cpu"
    blocked = ConversionResult(ConversionState.RUNNING, reason=why, blocked="Unschedulable")

    def step(status: Status, result: ConversionResult, seconds: float) -> tuple[Status, list[str]]:
        d = decide(SPEC, status, Observations(1, conversion=result), at(seconds))
        return d.status, [a.reason for a in d.actions if type(a).__name__ == "Emit"]

    s, events = step(converting, blocked, 1)
    assert events == ["ConversionBlocked"] and s.phase == "Converting" and "Insufficient cpu" in s.message
    assert {c.type: c for c in s.conditions}["Progressing"].reason == "Unschedulable"
    s, events = step(s, blocked, 3)
    assert events == []
    s, events = step(s, ConversionResult(ConversionState.RUNNING), 5)
    assert events == [] and "Insufficient cpu" not in s.message and s.pending is not None and not s.pending.blocked
    s, _ = step(s, blocked, 7)
    s, events = step(s, blocked, 601)  # spec.conversion.timeout (10m) passed while unschedulable
    assert "ConversionFailed" in events and s.failed is not None and "Insufficient cpu" in s.failed.reason


@pytest.mark.parametrize(("not_ready", "reason"), [
    ('ReconcileFailed: fails to reconcile predictor: Deployment.apps "big-gen1-predictor" is invalid: '
     'spec.template.spec.containers[0].resources.requests: Invalid value: "64": must be less than or equal to '
     'cpu limit of 1', "ReconcileFailed"),
    ('RevisionFailed: Revision "m-predictor-00002" failed with message: Back-off pulling image.', "RevisionFailed"),
    ("MinimumReplicasUnavailable: Deployment does not have minimum availability.", None),  # starting
    ("", None),
], ids=["kserve-cannot-make-the-deployment", "knative-failed-the-revision", "starting", "ready"])
def test_kserve_failures_are_told_as_they_happen_starting_is_not(not_ready: str, reason: str | None) -> None:
    """When KServe cannot make the Pods at all, no Pod tells why: its Ready condition does."""
    from serin.operator.pods import serving_trouble

    found = serving_trouble(not_ready, "big")
    if reason is None:
        assert found is None
    else:
        assert found is not None and found.reason == reason and found.describe().startswith(f"InferenceService big {reason}: ")


def test_the_kubelets_alternating_image_pull_states_read_as_one_trouble() -> None:
    """ErrImagePull and ImagePullBackOff alternate at every retry, each with its own words: the
    trouble (reason and text) is the same, so status is not rewritten at every retry."""
    image = "ghcr.io/serin/runtime:missing"
    a = pod_trouble(pod(containers=[waiting("ErrImagePull", f'rpc error: failed to pull image "{image}": not found')]))
    b = pod_trouble(pod(containers=[waiting("ImagePullBackOff", f'Back-off pulling image "{image}"')]))
    assert a == b and a is not None and image in a.message


# -- issue 32 #8: how often a canary's containers died ----------------------------------------------

def restarted(count: int, reason: str, at_s: str, name: str = "kserve-container") -> dict[str, Any]:
    return {"name": name, "ready": True, "restartCount": count,
            "state": {"running": {"startedAt": "2026-12-06T00:10:00Z"}},
            "lastState": {"terminated": {"reason": reason, "exitCode": 137 if reason == "OOMKilled" else 1,
                                         "finishedAt": f"2026-12-06T00:0{at_s}Z"}}}


def test_crashes_count_every_restart_and_failed_pod_and_name_the_latest() -> None:
    pods_ = [pod("a", phase="Running", containers=[restarted(2, "Error", "1:00")]),
             pod("b", phase="Running", containers=[restarted(1, "OOMKilled", "5:00"), running(True)]),
             pod("c", phase="Failed"), pod("d", phase="Running", containers=[running(True)])]
    got = crashes(pods_)
    assert got.count == 4
    assert got.last == "pod b container kserve-container OOMKilled (exit 137)"
    assert crashes([pod("d", phase="Running", containers=[running(True)])]) == Crashes(0, "")


def test_a_versions_pods_are_told_apart_by_their_labels() -> None:
    mine = pod("canary", phase="Running", containers=[restarted(1, "OOMKilled", "2:00")])
    mine["metadata"]["labels"]["app"] = "isvc.m-gen2-predictor"
    other = pod("stable", phase="Running", containers=[restarted(5, "Error", "3:00")])
    other["metadata"]["labels"]["app"] = "isvc.m-gen1-predictor"
    assert selected([mine, other], {"app": "isvc.m-gen2-predictor"}) == [mine]
    assert selected([mine, other], {}) == [], "no selector selects nothing, not everything"
