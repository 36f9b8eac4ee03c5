"""Kubernetes' own reasons a model's Pods are not serving, read off the Pods as they happen.

While a rollout waits for the serving layer (a first version, a canary's weight, a promotion), the
InferenceService says little until KServe gives up, and the progressDeadline says it late. The
Pods say it at once: a Pod the scheduler cannot place, an image that cannot be pulled, a container
that crash-loops or was OOM-killed. Argo Rollouts and Deployments surface the same reasons as they
happen (a ReplicaSet's FailedCreate, a Pod's Unschedulable); so does Serin, in the Model's
status.message, its Progressing condition and one Warning Event per reason.

Pure: Pods in (plain dicts as the API returns them), one `PodTrouble` out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Container waiting reasons that no wait ends: a conversion Pod in one of them has failed
# (executors/job.py); a predictor's is told.
CANNOT_START = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                          "CreateContainerConfigError", "CreateContainerError"})
# A container waiting for one of these will not start by itself soon: each is worth telling. Others
# (ContainerCreating, PodInitializing) are the normal way to start.
_WAITING_TROUBLE = CANNOT_START | {"CrashLoopBackOff", "RunContainerError"}
# Terminations that explain a restart.
_TERMINATED_TROUBLE = ("OOMKilled", "Error", "ContainerCannotRun", "DeadlineExceeded", "StartError")
_IMAGE = re.compile(r'image "([^"]+)"')
MESSAGE_LIMIT = 300  # a scheduler's message lists every node: bounded, status stays small


@dataclass(frozen=True)
class PodTrouble:
    """Why one of the Model's Pods does not serve (or cannot be made), in Kubernetes' own words."""

    reason: str  # Unschedulable, ImagePullBackOff, CrashLoopBackOff, OOMKilled, ...: the Event's identity
    message: str  # what Kubernetes says, bounded
    pod: str
    kind: str = "Pod"  # or InferenceService, when KServe cannot make the Pods at all

    def describe(self) -> str:
        return f"{self.kind} {self.pod} {self.reason}" + (f": {self.message}" if self.message else "")


# KServe's Ready condition reasons that are a failure, not a start in progress: its controller
# could not make the predictor's objects (an invalid Deployment: a request above a limit), or
# Knative failed the revision. Told as they happen, like a Pod's.
_SERVING_FAILED = ("ReconcileFailed", "RevisionFailed")


def serving_trouble(not_ready: str, isvc: str) -> PodTrouble | None:
    """KServe's own reason (the router's `not_ready`, "Reason: message") when it is a failure."""
    reason, _, message = not_ready.partition(": ")
    if reason not in _SERVING_FAILED:
        return None
    return PodTrouble(reason, _bounded(message), isvc, kind="InferenceService")


def trouble(pods: Iterable[dict[str, Any]]) -> PodTrouble | None:
    """The first Pod trouble, in a stable order (by Pod name), or None when every Pod is on its
    way. A Pod being deleted is not the Model's trouble any more."""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", ""))):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        found = pod_trouble(pod)
        if found is not None:
            return found
    return None


def pod_trouble(pod: dict[str, Any]) -> PodTrouble | None:
    name = str((pod.get("metadata") or {}).get("name", ""))
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded",):
        return None
    for cond in status.get("conditions") or []:
        # PodScheduled False is the scheduler's verdict ("0/1 nodes are available: 1 Insufficient cpu").
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return PodTrouble(str(cond.get("reason") or "Unschedulable"), _bounded(cond.get("message")), name)
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    for cs in statuses:
        container = cs.get("name", "?")
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in _WAITING_TROUBLE and reason != "CrashLoopBackOff":
            message = str(waiting.get("message") or "")
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                # The kubelet alternates the two, each with words of its own: one trouble, one name
                # and one text (the image), so status is not rewritten at every pull retry.
                reason = "ImagePullBackOff"
                image = _IMAGE.search(message)
                message = f'cannot pull image "{image.group(1)}"' if image else "cannot pull its image"
            return PodTrouble(reason, _bounded(f"container {container}: {message}"), name)
        last = (cs.get("lastState") or {}).get("terminated") or {}
        # A crashing container alternates between waiting in CrashLoopBackOff and running unready
        # after its last exit: both are one trouble, named by that exit (OOMKilled stands out), so
        # the reason does not flap with the back-off and one Event tells it.
        restarted = int(cs.get("restartCount") or 0) > 0
        if reason == "CrashLoopBackOff" or (not cs.get("ready") and last and (
                restarted or last.get("reason") in _TERMINATED_TROUBLE)):
            why = str(last.get("reason") or "")
            detail = f"last exit {why} (code {last.get('exitCode', '?')})" if why else waiting.get("message") or ""
            if last.get("message"):
                detail = f"{detail}: {last['message']}"
            return PodTrouble("OOMKilled" if why == "OOMKilled" else "CrashLoopBackOff",
                              _bounded(f"container {container}: {detail}"), name)
    return None


@dataclass(frozen=True)
class Crashes:
    """How often a version's containers died while it was deployed (issue 32 #8): the runtime
    counts errors only for requests it lives to answer, so a model that OOMs or segfaults on some
    inputs shows no error rate at all. Kubernetes counts those deaths."""

    count: int = 0  # container restarts, plus Pods that failed outright (evicted, killed)
    last: str = ""  # the latest, in Kubernetes' words: "pod P container C OOMKilled (exit 137)"


def selected(pods: Iterable[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """The Pods carrying every one of `labels` (a Deployment's matchLabels, a revision label)."""
    if not labels:
        return []
    return [p for p in pods
            if all(((p.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items())]


def crashes(pods: Iterable[dict[str, Any]]) -> Crashes:
    count, latest, last = 0, "", ""
    for pod in pods:
        name = str((pod.get("metadata") or {}).get("name", ""))
        status = pod.get("status") or {}
        if status.get("phase") == "Failed":
            count += 1
            if not latest:
                why = f"{status.get('reason') or 'Failed'} {_bounded(status.get('message'))}".strip()
                last = f"pod {name} failed: {why}"
        for cs in status.get("containerStatuses") or []:
            restarts = int(cs.get("restartCount") or 0)
            count += restarts
            ended = (cs.get("lastState") or {}).get("terminated") or {}
            if restarts and ended and str(ended.get("finishedAt") or "") >= latest:
                latest = str(ended.get("finishedAt") or "")
                last = (f"pod {name} container {cs.get('name', '?')} {ended.get('reason') or 'exited'} "
                        f"(exit {ended.get('exitCode', '?')})")
    return Crashes(count, last)


def _bounded(text: Any) -> str:
    words = " ".join(str(text or "").split())
    return words if len(words) <= MESSAGE_LIMIT else words[:MESSAGE_LIMIT - 1] + "…"
