"""Retraining triggered by monitoring (spec.monitoring.retrain): closing the loop.

Pure. When an alarm of the serving version (monitoring.py) that one of `on`'s conditions names
has lasted `for`, and no new version is on its way, Serin creates a Job from the user's template
(their trainer), owned by the Model. The Job's contract: train on the served traffic of the window
it is told (the captured rows and their ground truth, `serin capture export`), write a new
artifact, and set the Model's spec.source; the new version then goes through conversion and the
canary gate like any other, so a retrained model that is worse is rolled back.

- **Created once.** The Job's name is fixed by the trigger (the alarm's revision, signal, episode
  and the monitoring's start), and `status.retrain` records it before the Job is created
  (reconcile persists, then acts): a kill between the decision and the creation creates it on the
  next tick under that name, a kill after it finds it there (AlreadyExists).
- **One per alarm, at most one per cooldown.** An alarm episode triggers at most one retraining;
  a rolled-back retrained version leaves the serving version and its alarm as they were, and
  nothing more happens for that episode (no storm). A new episode within the cooldown waits for
  its end (told once, RetrainSkipped).
- **Approval.** `approval: Manual` records the trigger as AwaitingApproval (RetrainSkipped says
  how to approve) until `serin approve MODEL --generation G` names the serving generation; an
  alarm that ends first, or a version that replaces it, drops it.
- A silenced Model (`serin silence`) does not retrain: a silence says the alarm is known.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from dataclasses import replace
from typing import Any

from serin.operator import monitoring
from serin.operator.actions import Action, ClearAnnotation, CreateRetrainJob, Emit
from serin.operator.names import bounded
from serin.operator.observations import JobObservation
from serin.operator.spec import DRIFT_SIGNALS, Approval, ModelSpec, RetrainSpec
from serin.operator.status import Retrain, SignalStatus, Status, from_time, to_time

APPROVE_ANNOTATION = "serin.dev/approve-retrain"  # `serin approve MODEL`: the serving generation it means
AWAITING, RUNNING, SUCCEEDED, FAILED = "AwaitingApproval", "Running", "Succeeded", "Failed"
# A retraining Job is the trainer's: the admission policy tells it from a conversion Job by these.
TRAINER_LABELS = {"app.kubernetes.io/name": "serin-trainer", "app.kubernetes.io/managed-by": "serin"}
MODEL_LABEL = "serin.dev/model"
POLL_SECONDS = 15.0  # a running Job is read this often (its end is not watched)


def job_name(model: str, m_started: str, revision: str, signal: str, episode: int) -> str:
    digest = hashlib.sha256(f"{revision}/{m_started}/{signal}/{episode}".encode()).hexdigest()[:8]
    return f"{bounded(model, 63 - len('-retrain-') - 8)}-retrain-{digest}"


def condition_of(signal: str) -> str:
    return "Drifted" if signal in DRIFT_SIGNALS else "PerformanceDegraded"


def _alarm(spec: RetrainSpec, s: Status, now: dt.datetime) -> SignalStatus | None:
    """The longest-lasting alarm that may trigger: not dry-run, of a condition `on` names."""
    m = s.monitoring
    if m is None:
        return None
    alarms = [x for x in m.signals if x.state == monitoring.ALARM and not x.dryRun
              and condition_of(x.signal) in spec.on and to_time(x.since) is not None]
    return min(alarms, key=lambda x: to_time(x.since) or now) if alarms else None


def decide(spec: ModelSpec, s: Status, job: JobObservation | None, annotations: dict[str, str], model: str,
           namespace: str, model_generation: int, now: dt.datetime) -> tuple[Retrain | None, list[Action]]:
    r = s.retrain
    out: list[Action] = []
    rs = spec.monitoring.retrain
    now_s = from_time(now) or ""
    raw = annotations.get(APPROVE_ANNOTATION)
    if raw is not None:
        out.append(ClearAnnotation(APPROVE_ANNOTATION, raw))
    if r is not None and r.state == RUNNING:
        return _running(spec, r, job, model, namespace, model_generation, now_s, out)
    if rs is None:
        return (None if r is not None and r.state == AWAITING else r), out
    m = s.monitoring
    alarm = _alarm(rs, s, now)
    if r is not None and r.state == AWAITING:
        same = alarm is not None and m is not None and (m.revision, alarm.signal, alarm.episode) == (
            r.revision, r.signal, r.episode)
        if not same:
            out.append(Emit("Normal", "RetrainSkipped", f"the retraining awaiting approval for {r.signal} "
                                                        f"(episode {r.episode}) is dropped: its alarm ended"))
            return None, out
        if raw == str(r.generation):
            r = replace(r, state=RUNNING, message="approved")
            out.append(Emit("Normal", "RetrainTriggered", f"retraining approved: Job {r.job} for the {r.signal} "
                                                          f"alarm of generation {r.generation}"))
            out.append(_create(rs, r, spec, model, namespace))
        elif raw is not None:
            out.append(Emit("Warning", "RetrainSkipped", f"{APPROVE_ANNOTATION}={raw!r} names no generation awaiting "
                                                         f"approval (generation {r.generation} does)"))
        return r, out
    if alarm is None or m is None or s.stable is None or s.pending is not None or s.canary is not None:
        return r, out  # nothing to act on, or a new version is on its way already
    since = to_time(alarm.since)
    assert since is not None
    if (now - since).total_seconds() < rs.after:
        return r, out
    if m.silencedUntil and (to_time(m.silencedUntil) or now) > now:
        return r, out
    key = f"{m.revision}/{alarm.signal}/{alarm.episode}"
    if r is not None and f"{r.revision}/{r.signal}/{r.episode}" == key:
        return r, out  # this alarm was acted on already (whatever came of it)
    last = to_time(r.triggeredAt) if r is not None else None
    if last is not None and (now - last).total_seconds() < rs.cooldown:
        if r is not None and r.skipped != key:
            until = from_time(last + dt.timedelta(seconds=rs.cooldown))
            out.append(Emit("Normal", "RetrainSkipped", f"{alarm.signal} alarm (episode {alarm.episode}) of "
                                                        f"generation {s.stable.generation}: the last retraining was "
                                                        f"triggered at {r.triggeredAt}; cooldown until {until}"))
            r = replace(r, skipped=key)
        return r, out
    start = now - dt.timedelta(seconds=rs.window)
    new = Retrain(state=RUNNING, job=job_name(model, m.startedAt, m.revision, alarm.signal, alarm.episode),
                  generation=s.stable.generation, revision=m.revision, signal=alarm.signal, episode=alarm.episode,
                  alarmSince=alarm.since, triggeredAt=now_s, windowStart=from_time(start) or "", windowEnd=now_s,
                  modelGeneration=model_generation)
    what = f"the {alarm.signal} alarm of generation {new.generation} (since {alarm.since})"
    if rs.approval == Approval.MANUAL:
        new = replace(new, state=AWAITING)
        approve = f"serin approve {model} -n {namespace} --generation {new.generation}"
        out.append(Emit("Normal", "RetrainSkipped", f"{what} calls for retraining, awaiting approval: {approve}"))
        return new, out
    out.append(Emit("Normal", "RetrainTriggered", f"Job {new.job} started for {what}; it trains on the traffic of "
                                                  f"{new.windowStart} .. {new.windowEnd}"))
    out.append(_create(rs, new, spec, model, namespace))
    return new, out


def _running(spec: ModelSpec, r: Retrain, job: JobObservation | None, model: str, namespace: str,
             model_generation: int, now_s: str, out: list[Action]) -> tuple[Retrain, list[Action]]:
    rs = spec.monitoring.retrain
    if job is None:
        return r, out  # not read this tick
    if not job.exists:
        if r.jobSeen:
            out.append(Emit("Warning", "RetrainFailed", f"Job {r.job} was deleted before it finished"))
            return replace(r, state=FAILED, finishedAt=now_s, message="the Job was deleted"), out
        if rs is not None:  # decided, not created yet (or a kill in between): create it, under its name
            out.append(_create(rs, r, spec, model, namespace))
        return r, out
    r = replace(r, jobSeen=True)
    if job.failed:
        out.append(Emit("Warning", "RetrainFailed", f"Job {r.job} failed: {job.reason or 'no reason given'}; "
                                                    f"generation {r.generation} keeps serving"))
        return replace(r, state=FAILED, finishedAt=now_s, message=job.reason), out
    if job.succeeded:
        changed = model_generation > r.modelGeneration
        words = (f"the Model changed (generation {model_generation}): the new version goes through conversion and "
                 "the canary gate" if changed else "the trainer did not change the Model: nothing to roll out")
        out.append(Emit("Normal", "RetrainSucceeded", f"Job {r.job} succeeded; {words}"))
        return replace(r, state=SUCCEEDED, finishedAt=now_s, message=words), out
    return r, out


def _create(rs: RetrainSpec, r: Retrain, spec: ModelSpec, model: str, namespace: str) -> CreateRetrainJob:
    env = {
        "SERIN_MODEL": model, "SERIN_NAMESPACE": namespace, "SERIN_RETRAIN_JOB": r.job,
        "SERIN_SERVING_GENERATION": str(r.generation), "SERIN_SERVING_REVISION": r.revision,
        "SERIN_SIGNAL": r.signal, "SERIN_ALARM_SINCE": r.alarmSince,
        "SERIN_WINDOW_START": r.windowStart, "SERIN_WINDOW_END": r.windowEnd,
        "SERIN_SOURCE_URI": spec.source.uri, "SERIN_SAMPLE_URI": spec.source.sampleUri,
    }
    capture = spec.serving.capture
    if capture is not None:
        # Where the served traffic of the window is (runtime/capture.py's layout), for
        # `serin capture export $SERIN_MODEL -n $SERIN_NAMESPACE --uri ... --endpoint ...`.
        env["SERIN_CAPTURE_URI"] = capture.uri
        if capture.s3 is not None and capture.s3.endpoint:
            env["SERIN_CAPTURE_ENDPOINT"] = capture.s3.endpoint
    return CreateRetrainJob(r.job, tuple(sorted(env.items())))


def poll_due(r: Retrain | None) -> float | None:
    return POLL_SECONDS if r is not None and r.state == RUNNING else None


def next_due(spec: ModelSpec, s: Status, now: dt.datetime) -> float | None:
    """Seconds until time alone may trigger: an alarm's `for` or the cooldown ending."""
    rs = spec.monitoring.retrain
    alarm = _alarm(rs, s, now) if rs is not None else None
    if rs is None or alarm is None or s.monitoring is None:
        return poll_due(s.retrain)
    r = s.retrain
    if r is not None and (r.state in (RUNNING, AWAITING) or (r.revision, r.signal, r.episode) == (
            s.monitoring.revision, alarm.signal, alarm.episode)):
        return poll_due(r)
    since = to_time(alarm.since)
    assert since is not None
    at = since + dt.timedelta(seconds=rs.after)
    last = to_time(r.triggeredAt) if r is not None else None
    if last is not None:
        at = max(at, last + dt.timedelta(seconds=rs.cooldown))
    if at <= now:
        return poll_due(r)  # due, and held by something a change ends (a rollout, a silence): no spin
    return (at - now).total_seconds() + 0.05


def job_body(template: dict[str, Any], name: str, namespace: str, model: str, env: tuple[tuple[str, str], ...],
             owner: dict[str, Any]) -> dict[str, Any]:
    """The Job from the user's JobTemplateSpec: its spec as written, Serin's labels and owner
    reference, and `env` set in every container (Serin's values win over the template's)."""
    meta = template.get("metadata") or {}
    spec = copy.deepcopy(template.get("spec") or {})
    ours = {k for k, _ in env}
    pod = spec.setdefault("template", {}).setdefault("spec", {})
    pod.setdefault("restartPolicy", "Never")  # a Job's Pods may not restart Always (the Pod default)
    for key in ("initContainers", "containers"):
        for c in pod.get(key) or []:
            c["env"] = [e for e in c.get("env") or [] if e.get("name") not in ours] + \
                [{"name": k, "value": v} for k, v in env]
    pod_meta = spec["template"].setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **TRAINER_LABELS, MODEL_LABEL: model}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**(meta.get("labels") or {}), **TRAINER_LABELS, MODEL_LABEL: model},
                     "annotations": dict(meta.get("annotations") or {}),
                     "ownerReferences": [owner]},
        "spec": spec,
    }
