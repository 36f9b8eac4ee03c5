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
  how to approve) until `serin approve MODEL --generation G` names its Job; an alarm that ends
  first drops it. An approved one still waits while a version is on its way or a silence lasts.
- **No storm of worse versions.** A retraining whose version was rolled back is not repeated for
  the same serving version and signal (whatever the alarm's episode or the revision's name).
- **Never stuck.** A Job refused for good (the Job API, RBAC, an admission policy), one deleted,
  a retraining removed from the spec before its Job: each ends the retraining as Failed. A Job
  with no activeDeadlineSeconds gets a day.
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
from serin.operator.status import Monitoring, Outcome, Retrain, SignalStatus, Status, Version, from_time, to_time

APPROVE_ANNOTATION = "serin.dev/approve-retrain"  # `serin approve MODEL`: the serving generation it means
AWAITING, RUNNING, SUCCEEDED, FAILED = "AwaitingApproval", "Running", "Succeeded", "Failed"
DROPPED = "Dropped"  # awaited approval, and its alarm ended first
DEFAULT_DEADLINE = 24 * 3600  # a Job's activeDeadlineSeconds when its template gives none: it ends
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
    """The longest-lasting alarm that may trigger: not dry-run, of a condition `conditions` names."""
    m = s.monitoring
    if m is None:
        return None
    alarms = [x for x in m.signals if x.state == monitoring.ALARM and not x.dryRun
              and condition_of(x.signal) in spec.conditions and to_time(x.since) is not None]
    return min(alarms, key=lambda x: to_time(x.since) or now) if alarms else None


def _alarm_key(m_started: str, revision: str, signal: str, episode: int) -> str:
    return f"{revision}/{m_started}/{signal}/{episode}"


def _acted_key(r: Retrain, m: Monitoring | None) -> str:
    """The alarm a retraining was for. One recorded before retrainings kept their monitoring's start
    is taken for the current monitoring's when its revision is the one monitored (else an upgrade
    would drop an approval, or start a second Job for the same alarm)."""
    started = r.monitoringStartedAt or (m.startedAt if m is not None and m.revision == r.revision else "")
    return _alarm_key(started, r.revision, r.signal, r.episode)


def _held(s: Status, now: dt.datetime) -> str:
    """Why nothing may start now, whatever the alarm ("" : nothing holds it)."""
    if s.pending is not None or s.canary is not None:
        return "a new version is on its way"
    m = s.monitoring
    if m is not None and m.silencedUntil and (to_time(m.silencedUntil) or now) > now:
        return f"monitoring is silenced until {m.silencedUntil}"
    return ""


def _rolled_back_since(s: Status, r: Retrain) -> bool:
    """The version the retraining produced was rolled back: the generation its trainer's change made
    (another version rolled back since, a user's, says nothing of the retraining). A retraining
    recorded before Serin kept that generation: any rollback after its trigger."""
    triggered = to_time(r.triggeredAt)
    if r.producedGeneration:
        return any(h.outcome == Outcome.ROLLED_BACK and h.generation == r.producedGeneration for h in s.history)
    return triggered is not None and any(
        h.outcome == Outcome.ROLLED_BACK and (to_time(h.at) or triggered) > triggered for h in s.history)


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
        return _running(spec, r, job, model, namespace, model_generation, now_s, out, _serving(s, r))
    if rs is None:
        return (None if r is not None and r.state == AWAITING else r), out
    m = s.monitoring
    alarm = _alarm(rs, s, now)
    if r is not None and r.state == AWAITING:
        awaited = _acted_key(r, m)
        same = alarm is not None and m is not None \
            and _alarm_key(m.startedAt, m.revision, alarm.signal, alarm.episode) == awaited
        if not same:
            out.append(Emit("Normal", "RetrainSkipped", f"the retraining awaiting approval for {r.signal} "
                                                        f"(episode {r.episode}) is dropped: its alarm ended"))
            return replace(r, state=DROPPED, finishedAt=now_s, message="its alarm ended before approval"), out
        if raw is not None and raw != r.job:
            out.append(Emit("Warning", "RetrainSkipped", f"{APPROVE_ANNOTATION}={raw!r} names no retraining awaiting "
                                                         f"approval (Job {r.job} awaits)"))
        approved = r.approved or raw == r.job
        held = _held(s, now)
        if not approved or held:
            return replace(r, approved=approved, message=f"approved; waiting: {held}" if approved else r.message), out
        r = replace(r, state=RUNNING, approved=True, triggeredAt=now_s, message="approved")
        out.append(Emit("Normal", "RetrainTriggered", f"retraining approved: Job {r.job} for the {r.signal} "
                                                      f"alarm of generation {r.generation}"))
        out.append(_create(rs, r, spec, model, namespace, _serving(s, r)))
        return r, out
    if alarm is None or m is None or s.stable is None or _held(s, now):
        return r, out  # nothing to act on, or held (a version on its way, a silence)
    since = to_time(alarm.since)
    assert since is not None
    if (now - since).total_seconds() < rs.after:
        return r, out
    key = _alarm_key(m.startedAt, m.revision, alarm.signal, alarm.episode)
    if r is not None and _acted_key(r, m) == key:
        return r, out  # this alarm was acted on already (whatever came of it)
    if r is not None and r.generation == s.stable.generation and r.signal == alarm.signal \
            and r.state == SUCCEEDED and _rolled_back_since(s, r):
        # Its retrained version was worse: the same serving version and signal are not retrained
        # again (a storm of rolled-back versions), whatever the alarm's episode or revision (a
        # Knative rollback restores the stable under a new revision name, restarting monitoring).
        if r.skipped != key:
            out.append(Emit("Normal", "RetrainSkipped", f"{alarm.signal} alarm of generation {s.stable.generation}: "
                                                        f"the version retraining made for it (Job {r.job}) was rolled "
                                                        "back; not retrained again for this version and signal"))
            r = replace(r, skipped=key)
        return r, out
    last = to_time(r.triggeredAt) if r is not None and r.state != DROPPED else None
    if r is not None and last is not None and (now - last).total_seconds() < rs.cooldown:
        if r.skipped != key:
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
                  modelGeneration=model_generation, monitoringStartedAt=m.startedAt)
    what = f"the {alarm.signal} alarm of generation {new.generation} (since {alarm.since})"
    if rs.approval == Approval.MANUAL:
        new = replace(new, state=AWAITING)
        approve = f"serin approve {model} -n {namespace} --generation {new.generation}"
        out.append(Emit("Normal", "RetrainSkipped", f"{what} calls for retraining, awaiting approval: {approve}"))
        return new, out
    out.append(Emit("Normal", "RetrainTriggered", f"Job {new.job} started for {what}; it trains on the traffic of "
                                                  f"{new.windowStart} .. {new.windowEnd}"))
    out.append(_create(rs, new, spec, model, namespace, _serving(s, new)))
    return new, out


def _serving(s: Status, r: Retrain) -> Version | None:
    """The version the retraining is for, while it still serves."""
    return s.stable if s.stable is not None and s.stable.generation == r.generation else None


def _running(spec: ModelSpec, r: Retrain, job: JobObservation | None, model: str, namespace: str,
             model_generation: int, now_s: str, out: list[Action],
             serving: Version | None) -> tuple[Retrain, list[Action]]:
    rs = spec.monitoring.retrain
    if job is None:
        return r, out  # not read this tick
    if job.refused:
        # The Job API, RBAC or an admission policy refused it: retrying sends the same Job.
        out.append(Emit("Warning", "RetrainFailed", f"Job {r.job} refused: {job.refused}"))
        return replace(r, state=FAILED, finishedAt=now_s, message=f"refused: {job.refused}"), out
    if not job.exists:
        if r.jobSeen:
            out.append(Emit("Warning", "RetrainFailed", f"Job {r.job} was deleted before it finished"))
            return replace(r, state=FAILED, finishedAt=now_s, message="the Job was deleted"), out
        if rs is None:
            out.append(Emit("Warning", "RetrainFailed",
                            f"Job {r.job} not created: spec.monitoring.retrain was removed"))
            return replace(r, state=FAILED, finishedAt=now_s, message="spec.monitoring.retrain was removed"), out
        # Decided, not created yet (or a kill in between): create it, under its name.
        out.append(_create(rs, r, spec, model, namespace, serving))
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
        return replace(r, state=SUCCEEDED, finishedAt=now_s, message=words,
                       producedGeneration=model_generation if changed else 0), out
    return r, out


def _create(rs: RetrainSpec, r: Retrain, spec: ModelSpec, model: str, namespace: str,
            serving: Version | None) -> CreateRetrainJob:
    # The serving version's artifact: the spec may name another by now (a version rolled back since
    # keeps its source in the spec). A version recorded before Serin kept its source: the spec's,
    # only while the spec still names that version; else none (never another version's).
    if serving is not None and serving.sourceUri:
        source_uri, sample_uri = serving.sourceUri, serving.sampleUri
    elif serving is not None and serving.versionKey == spec.version_key:
        source_uri, sample_uri = spec.source.uri, spec.source.sampleUri
    else:
        source_uri = sample_uri = ""
    env = {
        "SERIN_MODEL": model, "SERIN_NAMESPACE": namespace, "SERIN_RETRAIN_JOB": r.job,
        "SERIN_SERVING_GENERATION": str(r.generation), "SERIN_SERVING_REVISION": r.revision,
        "SERIN_SIGNAL": r.signal, "SERIN_ALARM_SINCE": r.alarmSince,
        "SERIN_WINDOW_START": r.windowStart, "SERIN_WINDOW_END": r.windowEnd,
        "SERIN_SOURCE_URI": source_uri, "SERIN_SAMPLE_URI": sample_uri,
    }
    if spec.source.s3 is not None and spec.source.s3.endpoint:
        env["SERIN_SOURCE_ENDPOINT"] = spec.source.s3.endpoint
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
    m = s.monitoring
    if r is not None and (r.state in (RUNNING, AWAITING) or _acted_key(r, m) == _alarm_key(
            m.startedAt, m.revision, alarm.signal, alarm.episode)):
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
    spec.setdefault("activeDeadlineSeconds", DEFAULT_DEADLINE)  # a Job that never ends would hold every later one
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
