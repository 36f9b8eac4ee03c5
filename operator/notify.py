"""Telling people: a Model's transitions as CloudEvents to webhooks, exactly one delivery sequence each.

Pure. The decision's Events (rollout.py, monitoring.py) that `TYPES` names become notifications,
one per (transition, sink), kept in `status.notifications.pending`: the outbox. They are written
with the status that decided the transition, before anything is sent (reconcile.py persists, then
acts), so an operator killed or replaced at any point finds them there and sends them under the
same id; a receiver deduplicates on it (CloudEvents' `source` + `id`). What is sent is fixed when
decided (the CloudEvent's JSON is in the status), so every attempt carries the same bytes and the
same signature.

A sink's notifications go out one at a time, oldest first (a receiver reads them in the order they
happened); a failed attempt is retried with doubling back-off, an answer that retrying cannot
change (4xx other than 408 and 429, a redirect) ends it at once. A notification given up is a
`NotificationFailed` Event; nothing here ever holds a rollout: the rollout's decision is taken
before this runs and does not read it. The sending itself is notifier.py's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from serin.operator.actions import Action, Deliver, Emit
from serin.operator.kube import GROUP, PLURAL, VERSION
from serin.operator.spec import NotifySpec, SinkFormat, SinkSpec
from serin.operator.status import Notification, Notifications, Status, from_time, to_time

# The Events told to sinks, by reason, and their CloudEvent type (TYPE_PREFIX + this). A sink's
# `events` names reasons from here; StepAdvanced and the conversion's progress are left out (they
# are the rollout's routine, in `kubectl describe`).
TYPE_PREFIX = "dev.serin.model."
TYPES: dict[str, str] = {
    "ConversionFailed": "conversion.failed",
    "Serving": "serving",  # the first version serves
    "CanaryStarted": "canary.started",
    "AnalysisInconclusive": "paused",  # no data to judge the canary on: the rollout waits
    "AnalysisResumed": "resumed",
    "Promoted": "promoted",
    "PromotedByUser": "promoted.manually",
    "RollbackStarted": "rollback.started",
    "RolledBack": "rolledback",
    "ProgressDeadlineExceeded": "progress.deadlineexceeded",
    "ServingBlocked": "serving.blocked",
    "DriftDetected": "drift.detected",
    "DriftResolved": "drift.resolved",
    "PerformanceDegraded": "performance.degraded",
    "PerformanceRecovered": "performance.recovered",
    "RetrainTriggered": "retrain.triggered",
    "RetrainSkipped": "retrain.skipped",  # cooldown, awaiting approval, an approval dropped
    "RetrainSucceeded": "retrain.succeeded",
    "RetrainFailed": "retrain.failed",
}
# Whose evidence is the latest analysis round (the measurements and limits that decided).
_ANALYSED = frozenset({"AnalysisInconclusive", "AnalysisResumed", "Promoted", "RollbackStarted", "RolledBack"})
PENDING_KEPT = 50  # per Model: past this the oldest is given up (a sink down for days, a storm of transitions)
SENT_KEPT = 200  # per Model: a transition told again is recognised for ~10 transitions of 16 sinks
SIGNATURE_HEADER = "X-Serin-Signature-256"


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: float = 5.0  # seconds after the first failed attempt, doubled after each
    max_delay: float = 600.0
    attempts: int = 10  # about half an hour of attempts with the defaults

    def delay(self, failed: int) -> float:
        return min(self.first_delay * 2 ** max(failed - 1, 0), self.max_delay)


@dataclass(frozen=True)
class Delivered:
    status: int


@dataclass(frozen=True)
class Failed:
    error: str
    final: bool = False  # retrying cannot help (a 4xx, a redirect, a refused destination)


DeliveryOutcome = Delivered | Failed
Key = tuple[str, str]  # (notification id, sink key)


@dataclass(frozen=True)
class Identity:
    namespace: str
    name: str
    uid: str

    @property
    def source(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{self.name}"


def sink_key(sink: SinkSpec) -> str:
    return f"chart/{sink.name}" if sink.shared else sink.name


def sinks_for(spec: NotifySpec, defaults: tuple[SinkSpec, ...]) -> dict[str, SinkSpec]:
    sinks = {sink_key(s): s for s in spec.sinks}
    if spec.include_defaults:
        sinks |= {sink_key(s): s for s in defaults}
    return sinks


def wants(sink: SinkSpec, reason: str) -> bool:
    return reason in TYPES and (not sink.events or reason in sink.events)


def event_id(ident: Identity, emit: Emit, now: dt.datetime) -> str:
    """Fixed by the transition: a named Event (monitoring.event_name, told again until recorded as
    told) gives the same id each time it is told; another is decided once (its status is written
    before it is told), and its id from what decided it."""
    told = emit.name or f"{ident.uid}|{emit.reason}|{from_time(now)}|{emit.message}"
    return hashlib.sha256(f"{ident.namespace}/{ident.name}|{told}".encode()).hexdigest()[:32]


def update(status: Status, actions: tuple[Action, ...], spec: NotifySpec, defaults: tuple[SinkSpec, ...],
           outcomes: Mapping[Key, DeliveryOutcome], ident: Identity, now: dt.datetime,
           retry: RetryPolicy = RetryPolicy()) -> tuple[Notifications | None, tuple[Action, ...]]:
    """The outbox after this tick: the attempts that ended since (`outcomes`), the transitions this
    tick decided (`actions`' Events), and what to send now (Deliver), with an Event for each
    notification given up."""
    sinks = sinks_for(spec, defaults)
    before = status.notifications or Notifications()
    pending: list[Notification] = []
    sent = list(before.sent)
    out: list[Action] = []
    for n in before.pending:
        if n.sink not in sinks:
            continue  # the sink was taken out of the spec: nobody asks for it any more
        outcome = outcomes.get((n.id, n.sink))
        if isinstance(outcome, Delivered):
            sent.append(f"{n.id} {n.sink}")
            continue
        if isinstance(outcome, Failed):
            failed = n.attempts + 1
            if outcome.final or failed >= retry.attempts:
                sent.append(f"{n.id} {n.sink}")
                out.append(_given_up(n, f"after {failed} attempt{'s' if failed > 1 else ''}: {outcome.error}"))
                continue
            n = replace(n, attempts=failed, lastError=outcome.error[:300],
                        nextAttemptAt=from_time(now + dt.timedelta(seconds=retry.delay(failed))))
        pending.append(n)
    known = {(n.id, n.sink) for n in pending} | {tuple(x.split(" ", 1)) for x in sent}
    for emit in actions:
        if not isinstance(emit, Emit) or emit.reason not in TYPES:
            continue
        ev_id = event_id(ident, emit, now)
        event: str | None = None
        for key, sink in sinks.items():
            if not wants(sink, emit.reason) or (ev_id, key) in known:
                continue
            event = event or json.dumps(cloudevent(ev_id, ident, emit, status, now), separators=(",", ":"),
                                        sort_keys=True)
            pending.append(Notification(ev_id, key, emit.reason, event))
    while len(pending) > PENDING_KEPT:
        # From the sink with the most waiting (the one that is down), its oldest but the head: the
        # head may be on its way, and keeps its back-off; the others' keep their turn.
        counts: dict[str, int] = {}
        for n in pending:
            counts[n.sink] = counts.get(n.sink, 0) + 1
        fullest = max(counts, key=lambda k: counts[k])
        dropped = [n for n in pending if n.sink == fullest][1]
        pending.remove(dropped)
        sent.append(f"{dropped.id} {dropped.sink}")
        out.append(_given_up(dropped, f"dropped: more than {PENDING_KEPT} notifications waited for this Model"))
    heads: dict[str, Notification] = {}
    for n in pending:
        heads.setdefault(n.sink, n)  # one at a time per sink, oldest first
    for n in heads.values():
        at = to_time(n.nextAttemptAt)
        if at is None or at <= now:
            out.append(Deliver(n))
    sent = sent[-SENT_KEPT:]
    return (Notifications(tuple(pending), tuple(sent)) if pending or sent else None), tuple(out)


def next_attempt(n: Notifications | None, now: dt.datetime) -> float | None:
    """Seconds until a notification waiting out its back-off is due (None: none waits)."""
    # Only those still ahead: one whose time has come is on its way, and its end wakes the Model.
    waits = [(t - now).total_seconds() for t in (to_time(x.nextAttemptAt) for x in (n.pending if n else ()))
             if t is not None and t > now]
    return min(waits) if waits else None


def _given_up(n: Notification, why: str) -> Emit:
    return Emit("Warning", "NotificationFailed", f"{n.reason} notification {n.id} to sink {n.sink} given up {why}",
                about=n.sink)


# -- what is sent --------------------------------------------------------------------------------


def cloudevent(ev_id: str, ident: Identity, emit: Emit, status: Status, now: dt.datetime) -> dict[str, Any]:
    """A structured CloudEvents 1.0 document: what happened, and the evidence that decided it."""
    data: dict[str, Any] = {
        "namespace": ident.namespace, "model": ident.name, "uid": ident.uid,
        "reason": emit.reason, "severity": emit.type, "message": emit.message,
        "generation": status.observedGeneration, "phase": str(status.phase),
        "links": {
            "describe": f"kubectl describe model {ident.name} -n {ident.namespace}",
            "status": f"kubectl get model {ident.name} -n {ident.namespace} -o yaml",
        },
    }
    if status.stable is not None:
        data["stable"] = {"generation": status.stable.generation, "revision": status.stable.revision}
    if status.canary is not None:
        c = status.canary
        data["canary"] = {"generation": c.generation, "revision": c.revision, "weight": c.weight, "step": c.step}
    if emit.reason in _ANALYSED and status.analysis:
        latest = status.analysis[-1].at
        data["measurements"] = [{"metric": m.metric, "verdict": str(m.verdict), "value": m.value, "why": m.reason}
                                for m in status.analysis if m.at == latest]
    if emit.reason in ("ConversionFailed", "RolledBack") and status.failed is not None:
        data["failure"] = {"generation": status.failed.generation, "kind": str(status.failed.kind),
                           "reason": status.failed.reason}
    m = status.monitoring
    signal = next((x for x in m.signals if x.signal == emit.about), None) if m is not None and emit.about else None
    if m is not None and signal is not None:
        data["signal"] = {
            "signal": signal.signal, "state": signal.state, "episode": signal.episode,
            "evidence": signal.evidence, "threshold": m.threshold, "message": signal.message,
            "revision": m.revision, "evaluatedAt": m.evaluatedAt,
            # The features that moved most: their PSI over the trailing window against the baseline.
            "features": [{"feature": w.feature, "psi": w.psi, "evidence": w.evidence} for w in signal.worst],
        }
    event: dict[str, Any] = {
        "specversion": "1.0", "id": ev_id, "source": ident.source,
        "type": TYPE_PREFIX + TYPES[emit.reason], "time": from_time(now),
        "datacontenttype": "application/json", "data": data,
    }
    if emit.about:
        event["subject"] = emit.about
    return event


def slack_text(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    icon = ":warning:" if data.get("severity") == "Warning" else ":white_check_mark:"
    model = f"{data.get('namespace')}/{data.get('model')}"
    lines = [f"{icon} *{data.get('reason')}* model `{model}`: {data.get('message')}"]
    for m in data.get("measurements") or []:
        lines.append(f"• {m['metric']}: {m['verdict']}" + (f" ({m['why']})" if m.get("why") else ""))
    for f in (data.get("signal") or {}).get("features") or []:
        lines.append(f"• {f['feature']}: PSI {f['psi']:.3f}")
    lines.append(f"`{(data.get('links') or {}).get('describe', '')}`")
    return "\n".join(lines)


def request(n: Notification, sink: SinkSpec, signing_key: bytes | None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an attempt: the stored CloudEvent as it is (structured mode) or
    Slack's {"text"} made from it; signed with HMAC-SHA256 over the body when the sink has a key."""
    if sink.format == SinkFormat.SLACK:
        body = json.dumps({"text": slack_text(json.loads(n.event))}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
    else:
        body = n.event.encode()
        headers = {"Content-Type": "application/cloudevents+json; charset=utf-8"}
    headers["X-Serin-Event-Id"] = n.id
    if signing_key is not None:
        headers[SIGNATURE_HEADER] = "sha256=" + hmac.new(signing_key, body, hashlib.sha256).hexdigest()
    return body, headers


def verify(body: bytes, header: str, key: bytes) -> bool:
    """What a receiver does (docs/notifications.md): recompute the HMAC, compare in constant time."""
    expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)
