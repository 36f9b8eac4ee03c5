"""Notifications end to end on the control plane (issue 35 #1): the real operator process tells a
real HTTP receiver of each transition, signed with the key of the namespace's real Secret
serin-notify; a receiver down then up; the operator killed after it wrote a transition and
before it sent it."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from harness import FAST_ROLLOUT, Cluster, Receiver, webhook_receiver
from serin.operator import notify

pytestmark = pytest.mark.controlplane
KEY = b"team-a-signing-key"
FAILING = copy.deepcopy(FAST_ROLLOUT)
FAILING["analysis"]["metrics"] = [{"name": "score", "query": "vector(0)", "min": 0.5}]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as r:
        yield r


def sinks(c: Cluster, r: Receiver) -> dict[str, Any]:
    c.cp.kubectl("create", "secret", "generic", "serin-notify", "-n", c.namespace,
                 f"--from-literal=ops-key={KEY.decode()}", f"--from-literal=ops-url={r.url}", check=False)
    return {"sinks": [{"name": "ops", "urlSecretKey": "ops-url", "signingSecretKey": "ops-key"}]}


def until(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def outbox(c: Cluster) -> dict[str, Any]:
    return (c.model().get("status") or {}).get("notifications") or {}


def test_each_transition_is_delivered_once_signed(cluster: Cluster, receiver: Receiver) -> None:
    cluster.operator.start()
    notify_spec = sinks(cluster, receiver)
    cluster.apply(cluster.artifacts.good_v1, notify=notify_spec)
    cluster.wait_phase("Promoted", generation=1)
    cluster.apply(cluster.artifacts.good_v2, notify=notify_spec)
    cluster.wait_phase("Promoted", generation=2)
    until("the Promoted notification", lambda: "Promoted" in receiver.reasons())
    until("an empty outbox", lambda: not outbox(cluster).get("pending"))
    time.sleep(2)  # nothing more comes
    assert receiver.reasons() == ["Serving", "CanaryStarted", "Promoted"]
    events = receiver.delivered()
    assert len({e["id"] for e in events}) == 3
    assert events[-1]["type"] == "dev.serin.model.promoted" and events[-1]["data"]["stable"]["generation"] == 2
    assert [m["verdict"] for m in events[-1]["data"]["measurements"]] == ["Successful"]
    for headers, body, _ in receiver.requests:
        assert notify.verify(body, headers[notify.SIGNATURE_HEADER], KEY)
        assert headers["Content-Type"].startswith("application/cloudevents+json")
    assert sorted(outbox(cluster)["sent"]) == sorted(f"{e['id']} ops" for e in events)


def test_a_receiver_down_then_up_gets_each_once_in_order_and_the_rollout_never_waits(
        cluster: Cluster, receiver: Receiver) -> None:
    cluster.operator.env = {"SERIN_NOTIFY_RETRY_SECONDS": "0.5"}
    cluster.operator.start()
    receiver.down = True
    notify_spec = sinks(cluster, receiver)
    cluster.apply(cluster.artifacts.good_v1, notify=notify_spec)
    cluster.wait_phase("Promoted", generation=1)
    cluster.apply(cluster.artifacts.good_v2, rollout=FAILING, notify=notify_spec)
    cluster.wait_phase("RolledBack", generation=2)  # with the receiver still down
    pending = outbox(cluster)["pending"]
    assert [n["reason"] for n in pending] == ["Serving", "CanaryStarted", "RollbackStarted", "RolledBack"]
    assert pending[0]["attempts"] >= 1 and pending[0]["lastError"] == "HTTP 503"
    assert all(n["attempts"] == 0 for n in pending[1:]), "one at a time per sink: the others wait their turn"
    receiver.down = False
    until("every notification", lambda: len(receiver.delivered()) == 4)
    assert receiver.reasons() == ["Serving", "CanaryStarted", "RollbackStarted", "RolledBack"]
    rolled_back = receiver.delivered()[-1]["data"]
    assert "score = 0 < min 0.5" in rolled_back["failure"]["reason"]
    assert len({e["id"] for e in receiver.delivered()}) == 4
    until("an empty outbox", lambda: not outbox(cluster).get("pending"))


def test_killed_after_persisting_before_sending_sends_once_with_the_same_id(
        cluster: Cluster, receiver: Receiver) -> None:
    cluster.operator.start()
    notify_spec = sinks(cluster, receiver)
    cluster.apply(cluster.artifacts.good_v1, notify=notify_spec)
    cluster.wait_phase("Promoted", generation=1)
    until("Serving", lambda: receiver.reasons() == ["Serving"])
    cluster.operator.stop()
    cluster.operator.start(failpoint="after-persist:Promoted")
    cluster.apply(cluster.artifacts.good_v2, notify=notify_spec)
    assert cluster.operator.wait_exit(timeout=120) == 137, "the failpoint was not reached"
    [written] = [n for n in outbox(cluster)["pending"] if n["reason"] == "Promoted"]
    assert "Promoted" not in receiver.reasons(), "killed before it was sent"
    cluster.operator.start()
    until("the Promoted notification", lambda: "Promoted" in receiver.reasons())
    until("an empty outbox", lambda: not outbox(cluster).get("pending"))
    time.sleep(2)
    assert receiver.reasons().count("Promoted") == 1
    [promoted] = [e for e in receiver.delivered() if e["data"]["reason"] == "Promoted"]
    assert promoted["id"] == written["id"] and json.loads(written["event"]) == promoted
