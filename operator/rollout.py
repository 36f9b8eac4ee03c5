"""The rollout decision: decide(spec, status, observations, now) -> (new status, actions).

Pure: no I/O, no clock, no randomness. The reconcile loop observes, calls this, persists the
returned status, then applies the actions. Everything the next tick needs is in the status, so an
operator killed between any two lines resumes where it stopped. The InferenceService is made to
match the status on every tick (level-triggered), never only on transitions.

Reading order follows a version's life: a new source becomes `pending` (conversion), a converted
version becomes the first `stable` or a `canary`, a canary walks its steps under analysis, then is
promoted or rolled back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from serin.operator import analysis, monitoring, retrain
from serin.operator.actions import (
    Action,
    ApplyServing,
    CancelConversion,
    ClearAnnotation,
    Emit,
    Served,
    StartConversion,
)
from serin.operator.conditions import derive_conditions
from serin.operator.observations import ConversionResult, ConversionState, Observations, ServingObservation
from serin.operator.policy import DEFAULT, Policy, ungated
from serin.operator.spec import ModelSpec
from serin.operator.status import (
    ANALYSIS_RECORDS_KEPT,
    HISTORY_KEPT,
    Canary,
    CanaryState,
    ConversionSummary,
    Failure,
    FailureKind,
    HistoryEntry,
    Monitoring,
    Outcome,
    Pending,
    Phase,
    RollbackReason,
    RollbackStage,
    Serving,
    Status,
    Verdict,
    Version,
    Waiting,
    from_time,
    to_time,
)

PROMOTE_ANNOTATION = "serin.dev/promote"
ABORT_ANNOTATION = "serin.dev/abort"
# `serin silence MODEL --for 2h`: "<serving generation>/<RFC 3339 end>".
SILENCE_ANNOTATION = "serin.dev/silence"
# `serin rebaseline MODEL --window 24h`: JSON {"generation", "start", "end", "reason"}.
REBASELINE_ANNOTATION = "serin.dev/rebaseline"
MAX_CONVERSION_ATTEMPTS = 3
FETCH_RETRY_SECONDS = 15.0  # doubled per attempt: 15 s, then 30 s

PROGRESSING, PROMOTING, ROLLING_BACK = CanaryState.PROGRESSING, CanaryState.PROMOTING, CanaryState.ROLLING_BACK
ZERO_TRAFFIC, RESTORE = RollbackStage.ZERO_TRAFFIC, RollbackStage.RESTORE


@dataclass(frozen=True)
class Decision:
    status: Status
    actions: tuple[Action, ...]
    # Set on the tick a rollback finishes (RolledBack is emitted): why, as a bounded label.
    rolled_back: RollbackReason | None = None


@dataclass
class _Tick:
    spec: ModelSpec
    obs: Observations
    now: dt.datetime
    policy: Policy = DEFAULT
    actions: list[Action] = field(default_factory=list)
    rolled_back: RollbackReason | None = None

    @property
    def now_s(self) -> str:
        return from_time(self.now) or ""

    def emit(self, type_: str, reason: str, message: str) -> None:
        self.actions.append(Emit(type_, reason, message))

    def since(self, when: str | None) -> float:
        t = to_time(when)
        return 0.0 if t is None else (self.now - t).total_seconds()


def decide(spec: ModelSpec, status: Status, obs: Observations, now: dt.datetime,
           policy: Policy = DEFAULT) -> Decision:
    tick = _Tick(spec, obs, now, policy)
    s = _admit_new_version(tick, status)
    s = _progress_conversion(tick, s, status.pending)
    s = _confirm_stable(tick, s)
    if s.canary is not None:
        s = _progress_canary(tick, s, s.canary)
    s = _monitor(tick, s)
    s = _retrain(tick, s)
    s = _summarise(tick, s)
    desired = desired_serving(s)
    if desired is not None:
        tick.actions.append(desired)
    return Decision(s, tuple(tick.actions), tick.rolled_back)


def desired_serving(s: Status) -> ApplyServing | None:
    """What the serving layer should run, as the status calls for it. The router gets there in
    moves of its own that never send a request to a version the status does not name."""
    c = s.canary
    stable = Served(s.stable.generation, s.stable.storageUri, s.stable.sha256) if s.stable else None
    if c is not None:
        new = Served(c.generation, c.storageUri, c.sha256)
        if c.state == PROMOTING:
            return ApplyServing(new)
        assert stable is not None  # a canary only ever exists next to a stable version
        if c.state == PROGRESSING:
            return ApplyServing(stable, new, c.weight)
        if c.rollbackStage == ZERO_TRAFFIC:
            # First take all traffic off the canary (at once, without waiting for anything new to
            # start), then remove it: the stable version serves throughout.
            return ApplyServing(stable, new, 0)
        return ApplyServing(stable, retiring=c.revision)  # RESTORE (and Finalize, written by older operators)
    if stable is not None:
        return ApplyServing(stable)
    return None


def analysis_due(spec: ModelSpec, status: Status, now: dt.datetime) -> bool:
    """Whether this tick should query the metric provider (the I/O the decision then judges)."""
    c = status.canary
    if c is None or c.state != PROGRESSING or c.trafficSince is None or not spec.analysis.metrics:
        return False
    last = to_time(c.lastAnalysisAt) or to_time(c.trafficSince)
    assert last is not None
    return (now - last).total_seconds() >= spec.analysis.interval


# Deadlines are strict (`since > deadline`): wake just after one, not on it.
_AFTER = dt.timedelta(milliseconds=50)


def next_due(spec: ModelSpec, status: Status, now: dt.datetime,
             policy: Policy = DEFAULT, monitor_read: dt.datetime | None = None) -> float | None:
    """Seconds until the passing of time alone can change this status's next decision: a back-off
    ends, a conversion's timeout or a progressDeadline passes, an analysis round or a step's pause
    is due. None when only a change can (the Model, its InferenceService, a conversion's end), which
    the watches report. Reads the same fields `decide` compares with `now`, and nothing else."""
    due: list[dt.datetime | None] = []
    p = status.pending
    if p is not None:
        if p.retryAt is not None:
            due.append(to_time(p.retryAt))
        elif p.queuePosition is None:  # a queued conversion's timeout starts when it runs
            start = to_time(p.startedAt)
            due.append(start + dt.timedelta(seconds=spec.conversion.timeout.seconds) + _AFTER if start else None)
    c = status.canary
    if c is not None and c.state == PROGRESSING:
        if c.trafficSince is None:
            since = to_time(c.stepSince)
            due.append(since + dt.timedelta(seconds=spec.progress_deadline) + _AFTER if since else None)
        elif spec.analysis.metrics:
            last = to_time(c.lastAnalysisAt) or to_time(c.trafficSince)
            due.append(last + dt.timedelta(seconds=spec.analysis.interval) if last else None)
        elif spec.steps and not spec.paused and ungated(spec, policy) is None:
            since = to_time(c.trafficSince)
            due.append(since + dt.timedelta(seconds=spec.steps[c.step].pause) if since else None)
    w = status.waiting
    if w is not None and not w.exceeded:
        since = to_time(w.since)
        due.append(since + dt.timedelta(seconds=spec.progress_deadline) + _AFTER if since else None)
    times = [t for t in due if t is not None]
    watched = monitoring.monitored_version(spec.monitoring, status.stable, status.stableConfirmed)
    monitor_in = monitoring.seconds_until_due(spec.monitoring, status.monitoring, watched, now, monitor_read)
    if monitor_in is not None:
        times.append(now + dt.timedelta(seconds=monitor_in))
    retrain_in = retrain.next_due(spec, status, now)
    if retrain_in is not None:
        times.append(now + dt.timedelta(seconds=retrain_in))
    return max(0.0, (min(times) - now).total_seconds()) if times else None


def is_idle(status: Status) -> bool:
    """Nothing in flight: no conversion, no canary, the stable version confirmed serving."""
    return status.pending is None and status.canary is None and status.waiting is None


# -- versions ---------------------------------------------------------------------------------


def _admit_new_version(t: _Tick, s: Status) -> Status:
    key = t.spec.version_key
    stable_key = s.stable.versionKey if s.stable else None
    if s.canary and key == stable_key and s.canary.state != ROLLING_BACK:
        return s.evolve(canary=_start_rollback(t, s.canary, RollbackReason.REVERTED,
                                               "the source was set back to the stable version"))
    if s.pending and key == stable_key:
        t.actions.append(CancelConversion(s.pending.generation, s.pending.versionKey, s.pending.attempt))
        t.emit("Normal", "ConversionCancelled", "the source was set back to the stable version")
        return s.evolve(pending=None)
    # A version refused for its inputs is converted again once the user allows the change; one
    # refused for want of analysis once the spec can gate its canary.
    retry = s.failed is not None and (
        (s.failed.kind == FailureKind.INPUTS_CHANGED and t.spec.allow_input_change)
        or (s.failed.kind == FailureKind.ANALYSIS_REQUIRED and ungated(t.spec, t.policy) is None))
    failed = None if retry else s.failed
    known = {v.versionKey for v in (s.stable, s.canary, s.pending, failed) if v is not None}
    if key in known:
        return s
    if s.pending:
        t.actions.append(CancelConversion(s.pending.generation, s.pending.versionKey, s.pending.attempt))
    refused = _analysis_refused(t, s, t.obs.generation, key)
    if refused is not None:
        # Refused before it takes a conversion slot. What ran for an older spec goes as it would
        # for any new version: the spec no longer names it.
        canary = s.canary
        if canary and canary.state != ROLLING_BACK:
            canary = _start_rollback(t, canary, RollbackReason.SUPERSEDED,
                                     f"superseded by generation {t.obs.generation}")
        return s.evolve(pending=None, canary=canary, failed=refused)
    pending = Pending(generation=t.obs.generation, versionKey=key, startedAt=t.now_s,
                      sourceUri=t.spec.source.uri, sampleUri=t.spec.source.sampleUri)
    t.actions.append(StartConversion(pending.generation, key, pending.attempt))
    t.emit("Normal", "ConversionStarted", f"converting generation {pending.generation} ({t.spec.source.uri})")
    canary = s.canary
    if canary and canary.state != ROLLING_BACK:
        canary = _start_rollback(t, canary, RollbackReason.SUPERSEDED, f"superseded by generation {pending.generation}")
    # A refused version admitted again: its refusal is over (else, promoted, it would read Failed).
    return s.evolve(pending=pending, canary=canary, failed=failed)


# Within this many places of the front the position in status is exact.
QUEUE_EXACT_WITHIN = 10


def shown_queue_position(shown: int | None, position: int) -> int:
    """The place in line to write into status. Exact near the front; further back it is rewritten
    only once it has halved (or grown, after a restart). Each finished conversion moves every
    waiting Model up one place: writing every move makes a queue of N cost N status writes per
    conversion (measured: 60 status PATCHes/s with 900 Models in line, half the apiserver's CPU,
    slowing the conversions themselves). Halving costs each Model about log2(N / 10) writes for
    its whole wait, and what status shows is never below the true place. Kueue moved queue
    positions out of status for the same reason."""
    if shown is None or position <= QUEUE_EXACT_WITHIN or position > shown or position * 2 <= shown:
        return position
    return shown


def _progress_conversion(t: _Tick, s: Status, polled: Pending | None) -> Status:
    """`polled`: the pending version the observation's result is for (the status read this tick)."""
    p, result = s.pending, t.obs.conversion
    if p is None:
        return s
    if polled is None or (polled.generation, polled.versionKey) != (p.generation, p.versionKey):
        # Admitted this tick, replacing the one polled: that one's result is not this version's
        # (a version that finished just as the spec moved on would be recorded with its bytes).
        result = None
    if p.retryAt is not None:
        if t.since(p.retryAt) < 0:
            return s  # backing off after a transient failure
        t.actions.append(StartConversion(p.generation, p.versionKey, p.attempt))
        return s.evolve(pending=replace(p, retryAt=None, startedAt=t.now_s))
    if result is None:
        return s  # admitted this tick: its StartConversion is already on the way
    if result.state == ConversionState.QUEUED:
        if p.queuePosition is None:
            t.emit("Normal", "ConversionQueued", f"generation {p.generation} waits for a conversion slot: "
                   f"position {result.position} ({result.reason})")
        return s.evolve(pending=replace(p, queuePosition=shown_queue_position(p.queuePosition, result.position)))
    if result.state == ConversionState.MISSING and p.queuePosition is not None:
        # It waited in the queue and never ran: the queue lives in the operator's memory and went
        # with a restart. Queue it again as the same attempt (it did not fail).
        t.actions.append(StartConversion(p.generation, p.versionKey, p.attempt))
        return s
    if result.state == ConversionState.RUNNING and p.queuePosition is not None:
        t.emit("Normal", "ConversionRunning", f"generation {p.generation}: its conversion left the queue and runs")
        # Its timeout counts from now: waiting for a slot is not the conversion being slow.
        p = replace(p, queuePosition=None, startedAt=t.now_s)
        s = s.evolve(pending=p)
    if result.state == ConversionState.MISSING:
        # Nothing running and no result: a conversion lost with its process or Pod.
        if p.attempt >= MAX_CONVERSION_ATTEMPTS:
            return _conversion_failed(t, s, p, f"conversion did not run after {p.attempt} attempts", None)
        t.actions.append(StartConversion(p.generation, p.versionKey, p.attempt + 1))
        return s.evolve(pending=replace(p, attempt=p.attempt + 1))
    if result.state == ConversionState.RUNNING:
        timeout = t.spec.conversion.timeout
        if t.since(p.startedAt) > timeout.seconds:
            t.actions.append(CancelConversion(p.generation, p.versionKey, p.attempt))
            why = f": {result.reason}" if result.blocked else ""
            return _conversion_failed(t, s, p, f"conversion did not finish within {timeout.text}{why}", None)
        if result.blocked != p.blocked:
            if result.blocked:  # told once per reason, not at every poll
                t.emit("Warning", "ConversionBlocked", f"generation {p.generation}: {result.reason}")
            s = s.evolve(pending=replace(p, blocked=result.blocked))
        return s
    if result.state == ConversionState.FAILED:
        if result.retryable and p.attempt < MAX_CONVERSION_ATTEMPTS:
            delay = FETCH_RETRY_SECONDS * 2 ** (p.attempt - 1)
            t.emit("Warning", "ConversionRetrying", f"generation {p.generation}: {result.reason}; attempt "
                   f"{p.attempt + 1} of {MAX_CONVERSION_ATTEMPTS} in {delay:g}s")
            retry_at = from_time(t.now + dt.timedelta(seconds=delay))
            return s.evolve(pending=replace(p, attempt=p.attempt + 1, retryAt=retry_at))
        return _conversion_failed(t, s, p, result.reason or "conversion failed", result.summary)
    # Succeeded.
    summary = _summary(result, p)
    if s.canary is not None:
        return s.evolve(conversion=summary)  # wait for the superseded canary to finish rolling back
    version = Version(p.generation, p.versionKey, result.storageUri, result.sha256,
                      inputSignature=summary.inputSignature or "", inputs=summary.inputs or "", task=summary.task or "",
                      sourceUri=p.sourceUri, sampleUri=p.sampleUri)
    t.emit("Normal", "ConversionSucceeded", f"generation {p.generation} converted; parity passed")
    s = s.evolve(pending=None, conversion=summary)
    if s.stable is None or not s.stableConfirmed:
        t.emit("Normal", "Deploying", f"deploying generation {p.generation} at 100%")
        return s.evolve(stable=version, stableConfirmed=False)
    refused = _inputs_refused(t, s.stable, version) or _analysis_refused(t, s, p.generation, p.versionKey)
    if refused is not None:
        return s.evolve(failed=refused)
    steps = t.spec.steps
    canary = Canary(
        **vars(version), state=PROGRESSING if steps else PROMOTING,
        step=0, weight=steps[0].weight if steps else 0, since=t.now_s, stepSince=t.now_s,
        reason="" if steps else "no canary steps",
    )
    t.emit("Normal", "CanaryStarted",
           f"generation {p.generation} is the canary at {canary.weight}% (step 1 of {len(steps)})"
           if steps else f"generation {p.generation} has no canary steps: promoting")
    return s.evolve(canary=canary)


def _inputs_refused(t: _Tick, stable: Version, new: Version) -> Failure | None:
    """A version that takes other inputs than the stable's would answer 400 to the requests its
    share of users sends, which no error rate of 5xx sees: refused before any traffic unless the
    user says clients are ready for it. Unknown signatures (older operators) are not compared."""
    if not (stable.inputSignature and new.inputSignature) or stable.inputSignature == new.inputSignature:
        return None
    if t.spec.allow_input_change:
        t.emit("Normal", "InputsChanged", f"generation {new.generation} takes other inputs than generation "
               f"{stable.generation} (allowed by spec.rollout.allowInputChange): {new.inputs}")
        return None
    reason = (f"takes other inputs than the stable generation {stable.generation}: {new.inputs or '?'} instead of "
              f"{stable.inputs or '?'}; requests made for the stable would get 400. Set "
              "spec.rollout.allowInputChange: true once clients send the new inputs")
    t.emit("Warning", "InputsChanged", f"generation {new.generation} refused: {reason}")
    return Failure(new.generation, new.versionKey, FailureKind.INPUTS_CHANGED, reason, t.now_s)


def _analysis_refused(t: _Tick, s: Status, generation: int, key: str) -> Failure | None:
    """A new version next to a serving one, whose canary nothing could stop, under a policy that
    requires analysis: refused, once, with a Warning Event (the spec's next change retries it)."""
    if s.stable is None or not s.stableConfirmed:
        return None  # a first version: nothing to compare it with, nothing serving to protect
    reason = ungated(t.spec, t.policy)
    if reason is None:
        return None
    t.emit("Warning", "AnalysisRequired", f"generation {generation} refused: {reason}")
    return Failure(generation, key, FailureKind.ANALYSIS_REQUIRED, reason, t.now_s)


def _summary(result: ConversionResult, p: Pending) -> ConversionSummary:
    return replace(result.summary or ConversionSummary(passed=True), generation=p.generation)


def _conversion_failed(t: _Tick, s: Status, p: Pending, reason: str,
                       reported: ConversionSummary | None) -> Status:
    t.emit("Warning", "ConversionFailed", f"generation {p.generation}: {reason}")
    failure = Failure(p.generation, p.versionKey, FailureKind.CONVERSION_FAILED, reason, t.now_s)
    summary = replace(reported or ConversionSummary(passed=False, reason=reason), generation=p.generation)
    return s.evolve(pending=None, failed=failure, conversion=summary)


def _confirm_stable(t: _Tick, s: Status) -> Status:
    """The first version (or a version deployed without a canary) is stable once KServe serves it."""
    if s.stable is None or s.stableConfirmed or s.canary is not None:
        return s
    sv = t.obs.serving
    if not sv.serves_only(s.stable.storageUri):
        return s
    revision = sv.stable.revision if sv.stable else ""
    t.emit("Normal", "Serving", f"generation {s.stable.generation} serves 100% ({revision})")
    return s.evolve(stable=replace(s.stable, revision=revision), stableConfirmed=True,
                    history=_history(s, s.stable.generation, Outcome.PROMOTED, t.now_s))


# -- the canary -------------------------------------------------------------------------------


def _progress_canary(t: _Tick, s: Status, c: Canary) -> Status:
    if c.state == ROLLING_BACK:
        return _progress_rollback(t, s, c)
    if c.state == PROMOTING:
        return _progress_promotion(t, s, c)
    c = _manual_controls(t, c)
    if c.state != PROGRESSING:
        return s.evolve(canary=c)
    sv = t.obs.serving
    if sv.refused:
        return s.evolve(canary=_start_rollback(t, c, RollbackReason.UNSUPPORTED, sv.refused))
    crashed = _crashed(t, c)
    if crashed:
        return s.evolve(canary=_start_rollback(t, c, RollbackReason.CRASHED, crashed))
    if c.trafficSince is None:
        if not sv.serves_canary(c.storageUri, c.weight):
            if t.since(c.stepSince) > t.spec.progress_deadline:
                why = _kubernetes_reason(sv)
                c = _start_rollback(t, c, RollbackReason.DEADLINE, f"canary not serving {c.weight}% within "
                                    f"{t.spec.progress_deadline:g}s (progressDeadline)" + (f": {why}" if why else ""))
            return s.evolve(canary=c)
        assert sv.canary is not None
        achieved = sv.canary.weight
        if achieved != c.weight:
            t.emit("Warning", "WeightNotExact",
                   f"generation {c.generation} at step {c.step + 1} gets {achieved}% of traffic, not "
                   f"{c.weight}%: {sv.traffic or 'this'} routing cannot split finer (a Gateway gives exact weights)")
        c = replace(c, trafficSince=t.now_s, revision=sv.canary.revision, observedWeight=achieved)
        if s.stable and sv.stable and sv.stable.revision:
            s = s.evolve(stable=replace(s.stable, revision=sv.stable.revision))
    elif sv.canary is not None and sv.serves_canary(c.storageUri, c.weight) and sv.canary.weight != c.observedWeight:
        c = replace(c, observedWeight=sv.canary.weight)  # a replica came or went
    if t.obs.measurements is not None:
        s, c = _judge_measurements(t, s, c)
        if c.state != PROGRESSING:
            return s.evolve(canary=c)
    return s.evolve(canary=_maybe_advance(t, c))


def _crashed(t: _Tick, c: Canary) -> str:
    """Why the canary is rolled back for dying ("" when it is not): its containers restarted
    more often than spec.analysis.maxRestarts since it was deployed. The runtime counts errors
    only for requests it lives to answer; an OOM kill or a crash on some inputs answers none, so
    without this a canary that dies on a tenth of its inputs could pass every gate. Counted from
    the start (a canary that OOMs while loading under its own limits is not safe either); the
    stable's restarts are not the canary's business."""
    sv = t.obs.serving
    died = sv.canary_crashes
    if died is None or sv.canary is None or sv.canary.storageUri != c.storageUri:
        return ""
    limit = t.spec.analysis.max_restarts
    if died.count <= limit:
        return ""
    return (f"the canary's containers restarted {died.count} time{'s' if died.count != 1 else ''} "
            f"({limit} allowed: spec.analysis.maxRestarts); the last: {died.last or 'no reason given'}")


def _monitor(t: _Tick, s: Status) -> Status:
    """The serving version watched over time (monitoring.py), and `serin silence`: an annotation
    naming the serving generation it means and until when, cleared once read."""
    stable = monitoring.monitored_version(t.spec.monitoring, s.stable, s.stableConfirmed)
    silenced_until = None
    raw = t.obs.annotations.get(SILENCE_ANNOTATION)
    if raw is not None:
        t.actions.append(ClearAnnotation(SILENCE_ANNOTATION, raw))
        generation, _, until = raw.partition("/")
        if stable is not None and generation == str(stable.generation) and to_time(until) is not None:
            silenced_until = until
            t.emit("Normal", "MonitoringSilenced", f"generation {stable.generation}: no monitoring Events or "
                                                   f"alerts until {until} (status keeps judging)")
    m = _rebaseline(t, s.monitoring, stable)
    out = monitoring.evaluate(t.spec.monitoring, m, stable, t.obs.monitoring, t.now, t.obs.model,
                              silenced_until)
    t.actions.extend(out.emits)
    return s.evolve(monitoring=out.monitoring)


def _retrain(t: _Tick, s: Status) -> Status:
    """Retraining triggered by the serving version's alarms (retrain.py)."""
    r, actions = retrain.decide(t.spec, s, t.obs.retrain_job, t.obs.annotations, t.obs.model, t.obs.namespace,
                                t.obs.generation, t.now)
    t.actions.extend(actions)
    return s.evolve(retrain=r)


def _rebaseline(t: _Tick, m: Monitoring | None, stable: Version | None) -> Monitoring | None:
    """`serin rebaseline`: an annotation naming the serving generation and the traffic to accept
    as its reference (read by reconcile), cleared once acted upon, applied once."""
    raw = t.obs.annotations.get(REBASELINE_ANNOTATION)
    if raw is None:
        return m
    t.actions.append(ClearAnnotation(REBASELINE_ANNOTATION, raw))
    req = monitoring.parse_rebaseline(raw, t.now)
    if isinstance(req, str):
        t.emit("Warning", "RebaselineRefused", f"annotation {REBASELINE_ANNOTATION}: {req}")
        return m
    if stable is None or m is None or m.revision != stable.revision or req.generation != stable.generation:
        serving = f"generation {stable.generation} serves" if stable is not None else "no version serves"
        t.emit("Warning", "RebaselineRefused", f"the rebaseline names generation {req.generation}; {serving}"
                                               f"{'' if m is not None else ', unmonitored'}: nothing changed")
        return m
    seen = t.obs.rebaseline
    if seen is None or seen.request != req:
        seen = monitoring.RebaselineObservation(req, error="not read")
    m, emits = monitoring.rebaseline(t.spec.monitoring, m, seen, t.now)
    t.actions.extend(emits)
    return m


def _manual_controls(t: _Tick, c: Canary) -> Canary:
    ann = t.obs.annotations
    for key in (ABORT_ANNOTATION, PROMOTE_ANNOTATION):
        if key in ann:
            t.actions.append(ClearAnnotation(key, ann[key]))
    # The annotation names the canary generation it means, so a late or repeated command can
    # never act on a later version.
    if ann.get(ABORT_ANNOTATION) == str(c.generation):
        return _start_rollback(t, c, RollbackReason.MANUAL, "aborted by user")
    if ann.get(PROMOTE_ANNOTATION) == str(c.generation):
        t.emit("Normal", "PromotedByUser", f"generation {c.generation} promoted by user at step {c.step + 1}")
        return replace(c, state=PROMOTING, reason="promoted by user")
    return c


def _judge_measurements(t: _Tick, s: Status, c: Canary) -> tuple[Status, Canary]:
    assert t.obs.measurements is not None
    judged = analysis.judge_round(t.spec.analysis, t.obs.measurements, c.failures, c.generation, t.now_s)
    for r in judged.failed:
        t.emit("Warning", "AnalysisFailed",
               f"{r.reason} ({judged.failures[r.metric]} of {t.spec.analysis.failure_limit} allowed failures)")
    for r in judged.dry_run_failed:
        t.emit("Normal", "AnalysisDryRunFailed", f"{r.reason} (dry run: not acted on)")
    s = s.evolve(analysis=(s.analysis + judged.records)[-ANALYSIS_RECORDS_KEPT:])
    previous_streak = c.inconclusiveStreak
    streak = previous_streak + 1 if judged.inconclusive else 0
    progress = c.stepProgress
    if judged.successful:
        # A round vouches for at most one interval: the time before it may hold no data at all
        # (the first round after the canary started serving, or a tick the operator ran late).
        elapsed = max(0.0, t.since(c.lastAnalysisAt or c.trafficSince))
        progress += min(elapsed, t.spec.analysis.interval)
    c = replace(c, failures=judged.failures, inconclusiveStreak=streak, stepProgress=progress,
                lastAnalysisAt=t.now_s, lastRoundOk=judged.successful)
    over = judged.over_limit
    if over is not None:
        return s, _start_rollback(t, c, RollbackReason.ANALYSIS, f"analysis failed: {over.reason} "
                                  f"({judged.failures[over.metric]} failed measurements)")
    limit = t.spec.analysis.inconclusive_limit
    if streak >= limit > previous_streak:
        t.emit("Warning", "AnalysisInconclusive",
               f"rollout paused after {streak} inconclusive measurements: {analysis.reasons(judged.inconclusive)}")
    elif previous_streak >= limit and streak == 0:
        t.emit("Normal", "AnalysisResumed", "measurements are conclusive again: rollout resumes")
    return s, c


def _maybe_advance(t: _Tick, c: Canary) -> Canary:
    if not t.spec.steps or t.spec.paused or ungated(t.spec, t.policy) is not None:
        return c  # held: analysis the policy requires was taken out of the spec mid-canary
    step = t.spec.steps[c.step]
    if t.spec.analysis.metrics:
        # A step's pause elapses only while measurements succeed, and it never ends on a round
        # that failed or had no data.
        ready = c.lastRoundOk and c.stepProgress >= step.pause
    else:
        # No metrics: nothing to judge, so the step lasts its pause in wall time.
        ready = c.trafficSince is not None and t.since(c.trafficSince) >= step.pause
    if not ready:
        return c
    nxt = c.step + 1
    if nxt >= len(t.spec.steps):
        t.emit("Normal", "StepsPassed",
               f"generation {c.generation} passed all {len(t.spec.steps)} steps: promoting")
        return replace(c, state=PROMOTING, reason="all steps passed")
    weight = t.spec.steps[nxt].weight
    t.emit("Normal", "StepAdvanced",
           f"generation {c.generation}: step {nxt + 1} of {len(t.spec.steps)}, weight {weight}%")
    return replace(c, step=nxt, weight=weight, stepSince=t.now_s, trafficSince=None,
                   stepProgress=0.0, lastAnalysisAt=None, lastRoundOk=False, observedWeight=None)


def _progress_promotion(t: _Tick, s: Status, c: Canary) -> Status:
    sv = t.obs.serving
    if not sv.serves_only(c.storageUri):
        return s
    stable = replace(c.version(), revision=sv.stable.revision if sv.stable else "")
    t.emit("Normal", "Promoted", f"generation {c.generation} promoted to 100% ({c.reason})")
    return s.evolve(stable=stable, stableConfirmed=True, canary=None,
                    history=_history(s, c.generation, Outcome.PROMOTED, t.now_s, c.reason))


def _start_rollback(t: _Tick, c: Canary, why: RollbackReason, reason: str) -> Canary:
    t.emit("Warning", "RollbackStarted", f"rolling back generation {c.generation}: {reason}")
    return replace(c, state=ROLLING_BACK, rollbackStage=ZERO_TRAFFIC, reason=reason, rollbackReason=why)


def _progress_rollback(t: _Tick, s: Status, c: Canary) -> Status:
    sv = t.obs.serving
    assert s.stable is not None  # a canary only ever exists next to a stable version
    if c.rollbackStage == ZERO_TRAFFIC:
        if sv.canary_drained(c.storageUri):
            t.emit("Normal", "TrafficRestored", f"all traffic back on generation {s.stable.generation}")
            return s.evolve(canary=replace(c, rollbackStage=RESTORE, weight=0, observedWeight=0))
        return s
    if not sv.serves_only(s.stable.storageUri):
        return s
    t.emit("Warning", "RolledBack", f"generation {c.generation} rolled back: {c.reason}")
    # A canary rolled back by an operator that predates rollbackReason has none recorded.
    t.rolled_back = c.rollbackReason or RollbackReason.OTHER
    failure = Failure(c.generation, c.versionKey, FailureKind.ROLLED_BACK, c.reason, t.now_s)
    revision = sv.stable.revision if sv.stable else s.stable.revision
    return s.evolve(canary=None, failed=failure, stable=replace(s.stable, revision=revision),
                    history=_history(s, c.generation, Outcome.ROLLED_BACK, t.now_s, c.reason))


# -- summary ----------------------------------------------------------------------------------


def _awaited(s: Status) -> str | None:
    """What this status waits for the serving layer to show, or None when it waits for nothing
    of it (conversion, analysis, a settled version)."""
    c = s.canary
    if c is None:
        if s.stable is not None and not s.stableConfirmed:
            return f"generation {s.stable.generation} to serve 100%"
        return None
    if c.state == PROGRESSING:
        return None if c.trafficSince else f"generation {c.generation} to serve {c.weight}% as the canary"
    if c.state == PROMOTING:
        return f"generation {c.generation} to serve 100% (promotion)"
    if c.rollbackStage == ZERO_TRAFFIC:
        return f"all traffic off generation {c.generation} (rollback)"
    assert s.stable is not None  # a canary only ever exists next to a stable version
    return f"generation {s.stable.generation} to serve alone again (rollback)"


def _track_wait(t: _Tick, s: Status) -> Status:
    """Hold every wait on the serving layer to the progressDeadline. Only a canary waiting for its
    step's weight has a remedy (it is rolled back, in _progress_canary); elsewhere there is nothing
    safer to go back to, so the deadline is reported once, and the operator keeps trying."""
    what = _awaited(s)
    if what is None:
        return s.evolve(waiting=None)
    w = s.waiting if s.waiting is not None and s.waiting.what == what else Waiting(what, t.now_s)
    w = _track_trouble(t, w)
    deadline = t.spec.progress_deadline
    if not w.exceeded and t.since(w.since) > deadline:
        w = replace(w, exceeded=True)
        t.emit("Warning", "ProgressDeadlineExceeded", f"{_wait_report(t, w)}; still trying")
    return s.evolve(waiting=w)


def _track_trouble(t: _Tick, w: Waiting) -> Waiting:
    """What the Pods say while the wait lasts: a Warning Event when a new reason appears (not at
    every retry of the kubelet), nothing when it clears (status.message and the Progressing
    condition lose it at once)."""
    trouble = t.obs.serving.trouble
    reason = trouble.reason if trouble is not None else ""
    if reason and reason != w.blocked:
        assert trouble is not None
        t.emit("Warning", "ServingBlocked", f"waiting for {w.what}: {trouble.describe()}")
    return replace(w, blocked=reason) if reason != w.blocked else w


def _kubernetes_reason(sv: ServingObservation) -> str:
    """Why the serving layer does not serve yet, in Kubernetes' words: a Pod's (or KServe's
    failure), else KServe's Ready condition; "" when neither says."""
    return sv.trouble.describe() if sv.trouble is not None else sv.not_ready


def _wait_report(t: _Tick, w: Waiting) -> str:
    sv = t.obs.serving
    why = sv.refused or _kubernetes_reason(sv) or ("there is no InferenceService" if not sv.exists
                                                   else "KServe gives no reason")
    return f"waited over {t.spec.progress_deadline:g}s for {w.what}: {why}"


def _summarise(t: _Tick, s: Status) -> Status:
    s = _track_wait(t, s)
    phase, message = _phase(t.spec, s, ungated(t.spec, t.policy))
    sv = t.obs.serving
    if phase == Phase.DEPLOYING and sv.refused:
        message = f"{message}: {sv.refused}"
    conversion = t.obs.conversion
    if phase == Phase.CONVERTING and s.pending is not None and s.pending.blocked and conversion is not None:
        message = f"{message}: {conversion.reason}"
    if s.waiting is not None and s.waiting.exceeded:
        message = f"{message}; progressDeadline exceeded: {_wait_report(t, s.waiting)}"
    elif s.waiting is not None and s.waiting.blocked and sv.trouble is not None:
        message = f"{message}: {sv.trouble.describe()}"
    if t.obs.feedback_secret:
        message = f"{message}; {t.obs.feedback_secret}"
    s = s.evolve(phase=phase, message=message, observedGeneration=t.obs.generation)
    if sv.exists and sv.mode:
        s = s.evolve(serving=Serving(sv.mode, sv.traffic, sv.url))
    return s.evolve(conditions=derive_conditions(t.spec, s, t.obs.generation, t.now_s))


def _phase(spec: ModelSpec, s: Status, held: str | None = None) -> tuple[Phase, str]:
    """Derived, never stored by hand (as Argo's CalculateRolloutPhase). `held`: why the policy
    holds a canary whose spec lost its analysis (ungated())."""
    c = s.canary
    if c is not None:
        if c.state == ROLLING_BACK:
            return Phase.ROLLING_BACK, f"rolling back generation {c.generation}: {c.reason}"
        if c.state == PROMOTING:
            return Phase.PROGRESSING, f"promoting generation {c.generation}: {c.reason}"
        if spec.paused:
            return Phase.PAUSED, f"paused by user at step {c.step + 1}, weight {c.weight}%"
        if held is not None:
            return Phase.PAUSED, f"held at step {c.step + 1}, weight {c.weight}%: {held}"
        if c.inconclusiveStreak >= spec.analysis.inconclusive_limit:
            latest = s.analysis[-len(spec.analysis.metrics):]
            reasons = analysis.reasons([m for m in latest if m.verdict == Verdict.INCONCLUSIVE])
            return Phase.PAUSED, f"analysis inconclusive ({reasons}): holding at {c.weight}%"
        waiting = "" if c.trafficSince else ", waiting for the canary to serve"
        return Phase.PROGRESSING, (f"generation {c.generation} at step {c.step + 1} of {len(spec.steps)}, "
                                   f"weight {c.weight}%{waiting}")
    if s.pending is not None:
        if s.pending.queuePosition is not None:
            return Phase.CONVERTING, (f"generation {s.pending.generation} queued for conversion "
                                      f"(position {s.pending.queuePosition})")
        return Phase.CONVERTING, f"converting generation {s.pending.generation}"
    if s.stable is not None and not s.stableConfirmed:
        return Phase.DEPLOYING, f"waiting for generation {s.stable.generation} to serve"
    if s.failed is not None and s.failed.versionKey == spec.version_key:
        phase = Phase.ROLLED_BACK if s.failed.kind == FailureKind.ROLLED_BACK else Phase.FAILED
        serving = f"; generation {s.stable.generation} still serving" if s.stable else ""
        return phase, f"generation {s.failed.generation}: {s.failed.reason}{serving}"
    if s.stable is not None:
        return Phase.PROMOTED, f"generation {s.stable.generation} serves 100%"
    return Phase.PENDING, ""


def _history(s: Status, generation: int, outcome: Outcome, at: str, reason: str = "") -> tuple[HistoryEntry, ...]:
    return (*s.history, HistoryEntry(generation, outcome, at, reason))[-HISTORY_KEPT:]
