"""The notification outbox as a table of situations (notify.update): pure, no I/O."""

from __future__ import annotations

import json

from clock import at, ts
from serin.operator import notify
from serin.operator.actions import Deliver, Emit
from serin.operator.spec import NotifySpec, SinkFormat, SinkSpec, parse_spec
from serin.operator.status import (
    FeatureEvidence,
    Measurement,
    Monitoring,
    Notification,
    Notifications,
    SignalStatus,
    Status,
    Verdict,
    Version,
    status_from_dict,
    status_to_dict,
)

IDENT = notify.Identity("team-a", "iris", "uid-1")
OPS = SinkSpec("ops", url="http://receiver.example/hook")
CHAT = SinkSpec("chat", url="http://chat.example/hook", format=SinkFormat.SLACK, events=("RolledBack",))
SHARED = SinkSpec("platform", url="http://platform.example/hook", shared=True)
PROMOTED = Emit("Normal", "Promoted", "generation 2 promoted: steps passed")
ROLLED_BACK = Emit("Warning", "RolledBack", "generation 2 rolled back: analysis failed")
STEP = Emit("Normal", "StepAdvanced", "weight 50")
STATUS = Status(observedGeneration=2, stable=Version(2, "k2", "s3://m/2", revision="iris-predictor-00002"))


TO_OPS = NotifySpec((OPS,))
DEFAULT_RETRY = notify.RetryPolicy()


def run(status: Status, actions: tuple, spec: NotifySpec = TO_OPS, outcomes: dict | None = None,
        now: float = 0, defaults: tuple = (), retry: notify.RetryPolicy = DEFAULT_RETRY):
    return notify.update(status, actions, spec, defaults, outcomes or {}, IDENT, at(now), retry)


def test_a_transition_becomes_one_notification_per_sink_sent_at_once() -> None:
    outbox, actions = run(STATUS, (PROMOTED, STEP), NotifySpec((OPS, CHAT)), defaults=(SHARED,))
    assert outbox is not None
    # chat asked for RolledBack only; StepAdvanced is not told to sinks; the chart's sink is included.
    assert [(n.sink, n.reason) for n in outbox.pending] == [("ops", "Promoted"), ("chart/platform", "Promoted")]
    assert len({n.id for n in outbox.pending}) == 1, "one id per transition, whatever the sink"
    assert [a.notification.sink for a in actions if isinstance(a, Deliver)] == ["ops", "chart/platform"]
    event = json.loads(outbox.pending[0].event)
    assert event["specversion"] == "1.0" and event["type"] == "dev.serin.model.promoted"
    assert event["source"] == "/apis/serin.dev/v1alpha1/namespaces/team-a/models/iris"
    assert event["time"] == ts(0) and event["data"]["stable"] == {"generation": 2, "revision": "iris-predictor-00002"}
    assert event["data"]["links"]["describe"] == "kubectl describe model iris -n team-a"


def test_include_defaults_false_leaves_the_charts_sinks_out() -> None:
    outbox, _ = run(STATUS, (PROMOTED,), NotifySpec((OPS,), include_defaults=False), defaults=(SHARED,))
    assert outbox is not None and [n.sink for n in outbox.pending] == ["ops"]


def test_no_sink_no_outbox() -> None:
    assert run(STATUS, (PROMOTED,), NotifySpec()) == (None, ())


def test_delivered_is_removed_and_remembered() -> None:
    outbox, _ = run(STATUS, (PROMOTED,))
    assert outbox is not None
    n = outbox.pending[0]
    after, actions = run(STATUS.evolve(notifications=outbox), (), outcomes={(n.id, "ops"): notify.Delivered(204)},
                         now=1)
    assert after is not None and after.pending == () and after.sent == (f"{n.id} ops",)
    assert actions == ()


def test_a_transition_told_again_is_not_sent_again() -> None:
    """A monitoring Event is told again after a kill before it was marked told: same name, same id."""
    named = Emit("Warning", "DriftDetected", "revision r1: inputDrift alarm", name="iris.monitoring.abc", about="inputDrift")
    outbox, _ = run(STATUS, (named,))
    assert outbox is not None
    n = outbox.pending[0]
    again, actions = run(STATUS.evolve(notifications=outbox), (named,), now=5)
    assert again is not None and [x.id for x in again.pending] == [n.id], "still one, waiting for its attempt"
    delivered, _ = run(STATUS.evolve(notifications=again), (), outcomes={(n.id, "ops"): notify.Delivered(200)}, now=6)
    third, actions = run(STATUS.evolve(notifications=delivered), (named,), now=7)
    assert third is not None and third.pending == () and not any(isinstance(a, Deliver) for a in actions)


def test_a_failed_attempt_waits_out_a_doubling_back_off_then_is_given_up() -> None:
    retry = notify.RetryPolicy(first_delay=5, max_delay=600, attempts=3)
    outbox, _ = run(STATUS, (ROLLED_BACK,), retry=retry)
    assert outbox is not None
    key = (outbox.pending[0].id, "ops")
    s = STATUS.evolve(notifications=outbox)
    outbox, actions = run(s, (), outcomes={key: notify.Failed("HTTP 503")}, now=10, retry=retry)
    assert outbox is not None and outbox.pending[0].attempts == 1 and outbox.pending[0].nextAttemptAt == ts(15)
    assert outbox.pending[0].lastError == "HTTP 503" and actions == (), "not before its back-off"
    assert notify.next_attempt(outbox, at(10)) == 5
    s = s.evolve(notifications=outbox)
    assert [type(a) for a in run(s, (), now=15, retry=retry)[1]] == [Deliver]
    outbox, _ = run(s, (), outcomes={key: notify.Failed("refused")}, now=16, retry=retry)
    assert outbox is not None and outbox.pending[0].nextAttemptAt == ts(26), "5 s, then 10 s"
    s = s.evolve(notifications=outbox)
    outbox, actions = run(s, (), outcomes={key: notify.Failed("refused")}, now=30, retry=retry)
    assert outbox is not None and outbox.pending == ()
    [failed] = [a for a in actions if isinstance(a, Emit)]
    assert failed.reason == "NotificationFailed" and failed.about == "ops" and "after 3 attempts: refused" in failed.message


def test_an_answer_retrying_cannot_change_ends_it_at_once() -> None:
    outbox, _ = run(STATUS, (ROLLED_BACK,))
    assert outbox is not None
    key = (outbox.pending[0].id, "ops")
    after, actions = run(STATUS.evolve(notifications=outbox), (), outcomes={key: notify.Failed("HTTP 401", final=True)})
    assert after is not None and after.pending == ()
    assert [a.reason for a in actions if isinstance(a, Emit)] == ["NotificationFailed"]


def test_one_at_a_time_per_sink_oldest_first() -> None:
    outbox, actions = run(STATUS, (PROMOTED, ROLLED_BACK))
    assert outbox is not None and [n.reason for n in outbox.pending] == ["Promoted", "RolledBack"]
    assert [a.notification.reason for a in actions if isinstance(a, Deliver)] == ["Promoted"]
    first = outbox.pending[0]
    after, actions = run(STATUS.evolve(notifications=outbox), (), outcomes={(first.id, "ops"): notify.Delivered(200)})
    assert [a.notification.reason for a in actions if isinstance(a, Deliver)] == ["RolledBack"]
    assert after is not None


def test_a_sink_taken_out_of_the_spec_is_forgotten() -> None:
    outbox, _ = run(STATUS, (PROMOTED,), NotifySpec((OPS, SinkSpec("other", url="http://x/"))))
    assert outbox is not None and len(outbox.pending) == 2
    after, _ = run(STATUS.evolve(notifications=outbox), ())
    assert after is not None and [n.sink for n in after.pending] == ["ops"]


def test_the_outbox_is_bounded() -> None:
    pending = tuple(Notification(f"id{i}", "ops", "Promoted", "{}") for i in range(notify.PENDING_KEPT))
    s = STATUS.evolve(notifications=Notifications(pending))
    outbox, actions = run(s, (ROLLED_BACK,))
    assert outbox is not None and len(outbox.pending) == notify.PENDING_KEPT
    # The head (perhaps on its way, with its back-off) stays; the oldest after it goes.
    assert [n.id for n in outbox.pending[:2]] == ["id0", "id2"] and outbox.pending[-1].reason == "RolledBack"
    assert [a.reason for a in actions if isinstance(a, Emit)] == ["NotificationFailed"]
    assert "notification id1 " in next(a for a in actions if isinstance(a, Emit)).message


def test_the_outbox_bound_drops_from_the_sink_that_is_down() -> None:
    down = tuple(Notification(f"d{i}", "ops", "Promoted", "{}") for i in range(notify.PENDING_KEPT - 1))
    s = STATUS.evolve(notifications=Notifications((Notification("h0", "chat", "RolledBack", "{}"), *down)))
    outbox, _ = run(s, (ROLLED_BACK,), NotifySpec((OPS, CHAT)))
    assert outbox is not None and len(outbox.pending) == notify.PENDING_KEPT
    assert next(n.id for n in outbox.pending if n.sink == "chat") == "h0", "the healthy sink keeps its own"
    assert "d1" not in {n.id for n in outbox.pending} and outbox.pending[1].id == "d0"


def test_a_retry_whose_time_has_come_does_not_make_the_model_spin() -> None:
    """Due and on its way: its end wakes the Model, not a deadline in the past."""
    waiting = Notifications((Notification("a", "ops", "Promoted", "{}", attempts=1, nextAttemptAt=ts(10)),))
    assert notify.next_attempt(waiting, at(5)) == 5
    assert notify.next_attempt(waiting, at(10)) is None and notify.next_attempt(waiting, at(60)) is None


def test_the_evidence_of_a_rollback_and_of_a_drift() -> None:
    analysed = STATUS.evolve(analysis=(
        Measurement("accuracy", Verdict.SUCCESSFUL, ts(0), 2, 0.01),
        Measurement("error-rate", Verdict.FAILED, ts(10), 2, 0.2, reason="error-rate = 0.2 > max 0.01"),
    ))
    outbox, _ = run(analysed, (ROLLED_BACK,), now=10)
    assert outbox is not None
    data = json.loads(outbox.pending[0].event)["data"]
    assert data["measurements"] == [{"metric": "error-rate", "verdict": "Failed", "value": 0.2,
                                     "why": "error-rate = 0.2 > max 0.01"}], "the latest round only"
    drifted = STATUS.evolve(monitoring=Monitoring("r1", 2, ts(0), ts(0), threshold=9.2, signals=(
        SignalStatus("inputDrift", "Alarm", ts(0), evidence=1.1, episode=1, message="petal_length PSI 0.3",
                     worst=(FeatureEvidence("petal_length", 1.1, 0.3),)),)))
    emit = Emit("Warning", "DriftDetected", "revision r1: inputDrift alarm", name="iris.monitoring.x", about="inputDrift")
    outbox, _ = run(drifted, (emit,))
    assert outbox is not None
    event = json.loads(outbox.pending[0].event)
    assert event["type"] == "dev.serin.model.drift.detected" and event["subject"] == "inputDrift"
    assert event["data"]["signal"]["features"] == [{"feature": "petal_length", "psi": 0.3, "evidence": 1.1}]
    assert event["data"]["signal"]["threshold"] == 9.2


def test_the_request_is_the_stored_event_signed_over_its_bytes() -> None:
    outbox, _ = run(STATUS, (PROMOTED,))
    assert outbox is not None
    n = outbox.pending[0]
    body, headers = notify.request(n, OPS, b"k3y")
    assert body == n.event.encode() and headers["Content-Type"].startswith("application/cloudevents+json")
    assert headers["X-Serin-Event-Id"] == n.id
    assert notify.verify(body, headers[notify.SIGNATURE_HEADER], b"k3y")
    assert not notify.verify(body + b" ", headers[notify.SIGNATURE_HEADER], b"k3y")
    assert not notify.verify(body, headers[notify.SIGNATURE_HEADER], b"other")
    unsigned = notify.request(n, OPS, None)[1]
    assert notify.SIGNATURE_HEADER not in unsigned
    slack_body, _ = notify.request(n, CHAT, None)
    text = json.loads(slack_body)["text"]
    assert "*Promoted* model `team-a/iris`" in text and "kubectl describe model iris -n team-a" in text


def test_the_outbox_round_trips_through_the_status() -> None:
    outbox, _ = run(STATUS, (PROMOTED,))
    s = STATUS.evolve(notifications=outbox)
    assert status_from_dict(json.loads(json.dumps(status_to_dict(s)))).notifications == outbox
    assert status_to_dict(STATUS)["notifications"] is None, "a merge patch removes an emptied outbox"


def test_the_spec() -> None:
    spec = parse_spec({"source": {"uri": "file:///m.joblib", "sampleUri": "file:///s.csv"}, "notify": {
        "includeDefaults": False, "sinks": [
            {"name": "ops", "urlSecretKey": "ops-url", "signingSecretKey": "ops-key", "format": "Slack",
             "events": ["RolledBack", "DriftDetected"]}]}})
    assert spec.notify == NotifySpec((SinkSpec("ops", url_secret_key="ops-url", signing_secret_key="ops-key",
                                               format=SinkFormat.SLACK, events=("RolledBack", "DriftDetected")),),
                                     include_defaults=False)
    assert parse_spec({"source": {"uri": "file:///m.joblib", "sampleUri": "file:///s.csv"}}).notify == NotifySpec()
