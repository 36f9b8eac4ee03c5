"""The stand-in acts on the newest copy of an InferenceService it has seen, whichever way the
copies arrive: watch events, its own status writes' responses, the GET after a conflict. (No
apiserver here: the race needs an answer that is older than an event already delivered, which a
real apiserver produces only now and then; the order is forced through a scripted API.)

Found by CI: after a rollback the stand-in's GET after a conflict answered from just before the
operator's last write, whose watch event had arrived first; the stand-in kept the older copy,
whose status it had already written, and never acted on the write (the operator waited 60 s
and more for the traffic to move)."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException
from serin.local.dataplane import IsvcRef
from serin.local.kserve_standin import KServeStandIn, _Tracked

REF = IsvcRef("ns", "m")


def copy_at(version: int, percent: int | None) -> dict[str, Any]:
    return {"metadata": {"name": REF.name, "namespace": REF.namespace, "resourceVersion": str(version)},
            "spec": {"predictor": {"canaryTrafficPercent": percent, "model": {"storageUri": "file:///m"}}},
            "status": {}}


class ScriptedApi:
    """A status write that conflicts, and a GET answered from before a change whose watch event
    the stand-in receives while the GET is in flight."""

    def __init__(self, standin: KServeStandIn, stale: dict[str, Any], event: dict[str, Any]) -> None:
        self.standin, self.stale, self.event = standin, stale, event

    async def replace_namespaced_custom_object_status(self, *args: Any) -> dict[str, Any]:
        raise ApiException(status=409, reason="Conflict")

    async def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        self.standin._observe(REF, self.event)  # the event overtakes the GET's answer
        await asyncio.sleep(0)
        return self.stale


def test_a_get_older_than_a_delivered_event_does_not_replace_it() -> None:
    async def scenario() -> None:
        standin = KServeStandIn.__new__(KServeStandIn)  # no apiserver: only the ordering is under test
        standin._tracked = {}
        base, stale, newest = copy_at(4, 0), copy_at(5, 0), copy_at(6, None)
        tracked = standin._tracked[REF] = _Tracked(base)
        tracked.worker = asyncio.get_running_loop().create_future()  # a worker "running": none started
        standin.api = ScriptedApi(standin, stale, newest)  # type: ignore[assignment]
        await standin._write_status(REF, tracked, base, {**base, "status": {"x": 1}})
        assert tracked.obj is newest, "the GET's older answer replaced the newer event"
        assert tracked.wake.is_set()
        # An event older than what is held (our own write's, arriving late) is dropped too.
        standin._observe(REF, copy_at(5, 0))
        assert tracked.obj is newest
        # A deletion always wins.
        standin._observe(REF, None)
        assert tracked.obj is None
    asyncio.run(scenario())
