"""What lets one operator carry 1,000 Models, without I/O: when time alone matters to a Model
(`next_due`, which replaces ticking every second), the conversion queue, the watch cache's store,
and Prometheus queries bounded in number and time."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from clock import at, ts
from prometheus_client import REGISTRY
from serin.operator.actions import Action, ApplyServing, Emit, Served, StartConversion
from serin.operator.cache import Store, model_of, newer, strip
from serin.operator.executors.base import ConversionRequest
from serin.operator.executors.queue import ConversionQueue
from serin.operator.observations import (
    ConversionResult,
    ConversionState,
    MeasuredValue,
    Observations,
    ServingObservation,
    Variant,
)
from serin.operator.policy import Policy
from serin.operator.prometheus import Prometheus
from serin.operator.reconcile import apply_in_order
from serin.operator.rollout import analysis_due, decide, is_idle, next_due, shown_queue_position
from serin.operator.spec import ModelSpec, MonitoringSpec, parse_spec
from serin.operator.status import Canary, Pending, Status, Version, Waiting


def spec_with(uri: str = "file:///m/v2.onnx", metrics: bool = True, **rollout: Any) -> ModelSpec:
    r: dict[str, Any] = {"steps": [{"weight": 10, "pause": "20s"}, {"weight": 50, "pause": "15s"}],
                         "progressDeadline": "90s"}
    if metrics:
        r["analysis"] = {"interval": "7s", "failureLimit": 2, "inconclusiveLimit": 3,
                         "metrics": [{"name": "score", "query": "x", "min": 0.5}]}
    return parse_spec({"source": {"uri": uri, "sampleUri": "file:///s.csv"}, "rollout": r | rollout})


V1 = spec_with("file:///m/v1.onnx")
LENIENT = Policy(require_analysis=False)  # an operator started with --require-analysis=false
STABLE = Version(1, V1.version_key, "file:///store/v1", "s1", "m-predictor-00001")
URI2 = "file:///store/v2"
PROMOTED = Status(phase="Promoted", observedGeneration=1, stable=STABLE, stableConfirmed=True)


def canary(**kw: Any) -> Canary:
    base = dict(generation=2, versionKey=spec_with().version_key, storageUri=URI2, sha256="s2", state="Progressing",
                step=0, weight=10, since=ts(0), stepSince=ts(0))
    return Canary(**(base | kw))


# -- next_due: when time alone changes the decision ------------------------------------------


@pytest.mark.parametrize(("status", "spec", "due"), [
    pytest.param(PROMOTED, spec_with(), None, id="idle: only a change can matter"),
    pytest.param(replace(PROMOTED, pending=Pending(2, "k", ts(0))), spec_with(), 600.05,
                 id="converting: its timeout (10m)"),
    pytest.param(replace(PROMOTED, pending=Pending(2, "k", ts(0), attempt=2, retryAt=ts(20))), spec_with(), 20,
                 id="backing off: the retry"),
    pytest.param(replace(PROMOTED, pending=Pending(2, "k", ts(0), queuePosition=3)), spec_with(), None,
                 id="queued: no timeout runs yet"),
    pytest.param(replace(PROMOTED, canary=canary()), spec_with(), 90.05,
                 id="canary waiting for traffic: the progressDeadline"),
    pytest.param(replace(PROMOTED, canary=canary(trafficSince=ts(3))), spec_with(), 10,
                 id="canary serving: the first analysis round"),
    pytest.param(replace(PROMOTED, canary=canary(trafficSince=ts(3), lastAnalysisAt=ts(12))), spec_with(), 19,
                 id="canary serving: the next analysis round"),
    pytest.param(replace(PROMOTED, canary=canary(trafficSince=ts(3))), spec_with(metrics=False), None,
                 id="no metrics, analysis required: held, nothing is due"),
    pytest.param(replace(PROMOTED, canary=canary(trafficSince=ts(3))), spec_with(metrics=False, paused=True), None,
                 id="no metrics, paused: nothing"),
    pytest.param(replace(PROMOTED, canary=canary(trafficSince=ts(3)), waiting=Waiting("x", ts(1))),
                 spec_with(), 10, id="a wait's deadline is later than the round"),
    pytest.param(replace(PROMOTED, waiting=Waiting("x", ts(1))), spec_with(), 91.05, id="a wait's deadline"),
    pytest.param(replace(PROMOTED, waiting=Waiting("x", ts(1), exceeded=True)), spec_with(), None,
                 id="a wait already reported"),
])
def test_next_due(status: Status, spec: ModelSpec, due: float | None) -> None:
    got = next_due(spec, status, at(0))
    assert got == (None if due is None else pytest.approx(due, abs=1e-6))


def test_without_required_analysis_a_step_without_metrics_lasts_its_pause() -> None:
    status = replace(PROMOTED, canary=canary(trafficSince=ts(3)))
    assert next_due(spec_with(metrics=False), status, at(0), LENIENT) == pytest.approx(23)


def test_a_passed_deadline_is_due_now() -> None:
    assert next_due(spec_with(), replace(PROMOTED, canary=canary()), at(500)) == 0.0


def observed(applied: ApplyServing | None) -> ServingObservation:
    """A serving layer that does at once what it was last asked."""
    if applied is None or applied.canary is None:
        uri = applied.stable.storageUri if applied else STABLE.storageUri
        rev = "m-predictor-00001" if uri == STABLE.storageUri else "m-predictor-00002"
        return ServingObservation(exists=True, settled=True, stable=Variant(uri, rev, True, 100))
    w = applied.weight
    return ServingObservation(exists=True, settled=True, stable=Variant("", "m-predictor-00001", True, 100 - w),
                              canary=Variant(URI2, "m-predictor-00002", True, w), canaryTarget=w)


def simulate(spec: ModelSpec, scheduled: bool, score: float = 0.9,
             policy: Policy = LENIENT) -> list[tuple[str, float]]:
    """A whole rollout of v2 over v1 against an obliging world, ticking either every 0.1 s (the
    old loop) or only when something changed and at `next_due` (the new one): the Events and when
    they happen, in seconds."""
    status, applied, now, seen = PROMOTED, None, 0.0, []
    for _ in range(20_000):
        conversion = ConversionResult(ConversionState.SUCCEEDED, URI2, "s2") if status.pending else None
        measurements = (MeasuredValue("score", score),) if analysis_due(spec, status, at(now)) else None
        d = decide(spec, status, Observations(2, serving=observed(applied), conversion=conversion,
                                              measurements=measurements), at(now), policy)
        emitted = [a.reason for a in d.actions if isinstance(a, Emit)]
        seen += [(reason, now) for reason in emitted]
        serving = [a for a in d.actions if isinstance(a, ApplyServing)]
        changed = d.status != status or (serving and serving[-1] != applied)
        status, applied = d.status, serving[-1] if serving else applied
        if is_idle(status) or now > 400:  # promoted, or rolled back
            return seen
        if not scheduled:
            now = round(now + 0.1, 3)
        elif changed:
            now += 0.001  # the write's own watch event wakes it at once
        else:
            due = next_due(spec, status, at(now), policy)
            assert due is not None, f"nothing would ever wake this Model: {status}"
            now += max(due, 0.05)
    raise AssertionError("the simulation did not end")


@pytest.mark.parametrize("spec", [spec_with(), spec_with(metrics=False)], ids=["analysis", "pauses only"])
@pytest.mark.parametrize("score", [0.9, 0.1], ids=["healthy", "failing"])
def test_waking_when_due_decides_as_ticking_every_100ms(spec: ModelSpec, score: float) -> None:
    ticked, woken = simulate(spec, scheduled=False, score=score), simulate(spec, scheduled=True, score=score)
    assert [r for r, _ in woken] == [r for r, _ in ticked]
    assert "RolledBack" in [r for r, _ in ticked] if score < 0.5 and spec.analysis.metrics else "Promoted" in \
        [r for r, _ in ticked]
    # Never later than ticking (which also loses 0.1 s on every step a watch event would start).
    for (reason, t_woken), (_, t_ticked) in zip(woken, ticked, strict=True):
        assert t_woken <= t_ticked + 0.11, f"{reason} at {t_woken:.2f}s woken, {t_ticked:.2f}s ticking"


# -- the decision around the queue -----------------------------------------------------------


def pending_obs(state: ConversionState, position: int = 0) -> Observations:
    return Observations(2, serving=observed(None), conversion=ConversionResult(state, position=position,
                                                                              reason="2 of 2 slots in use"))


def test_a_queued_conversion_says_its_place_once_as_an_event_and_always_in_status() -> None:
    spec = spec_with()
    s = replace(PROMOTED, pending=Pending(2, spec.version_key, ts(0)))
    d = decide(spec, s, pending_obs(ConversionState.QUEUED, 7), at(1))
    assert d.status.pending is not None and d.status.pending.queuePosition == 7
    assert [a.reason for a in d.actions if isinstance(a, Emit)] == ["ConversionQueued"]
    assert "queued for conversion (position 7)" in d.status.message
    again = decide(spec, d.status, pending_obs(ConversionState.QUEUED, 3), at(30))
    assert again.status.pending is not None and again.status.pending.queuePosition == 3
    assert not [a for a in again.actions if isinstance(a, Emit)]


@pytest.mark.parametrize(("shown", "position", "want"), [
    pytest.param(None, 900, 900, id="first-answer-is-written"),
    pytest.param(900, 899, 900, id="far-back-one-place-up-is-not-a-write"),
    pytest.param(900, 451, 900, id="not-yet-halved"),
    pytest.param(900, 450, 450, id="halved-is-written"),
    pytest.param(14, 10, 10, id="exact-near-the-front"),
    pytest.param(7, 6, 6, id="every-place-counts-near-the-front"),
    pytest.param(40, 60, 60, id="grown-after-a-restart-is-written"),
])
def test_queue_position_in_status_is_coarse_far_back_exact_near_the_front(
        shown: int | None, position: int, want: int) -> None:
    assert shown_queue_position(shown, position) == want


def test_a_long_queue_costs_each_model_few_status_writes() -> None:
    spec = spec_with()
    s = replace(PROMOTED, pending=Pending(2, spec.version_key, ts(0)))
    writes = 0
    for i, position in enumerate(range(1000, 0, -1)):  # one place up per finished conversion
        d = decide(spec, s, pending_obs(ConversionState.QUEUED, position), at(i))
        writes += d.status != s
        assert d.status.pending is not None and d.status.pending.queuePosition is not None
        assert d.status.pending.queuePosition >= position  # never shows a place ahead of the truth
        s = d.status
    assert writes <= 10 + 7, f"{writes} status writes for one wait through 1,000 places"


def test_leaving_the_queue_restarts_the_timeout_clock() -> None:
    # Without monitoring, whose next evaluation (5m) would come before the timeout.
    spec = replace(spec_with(), monitoring=MonitoringSpec(enabled=False))
    s = replace(PROMOTED, pending=Pending(2, spec.version_key, ts(0), queuePosition=1))
    d = decide(spec, s, pending_obs(ConversionState.RUNNING), at(900))  # queued past the 10m timeout
    assert d.status.pending is not None
    assert d.status.pending.queuePosition is None and d.status.pending.startedAt == ts(900)
    assert [a.reason for a in d.actions if isinstance(a, Emit)] == ["ConversionRunning"]
    assert next_due(spec, d.status, at(900)) == pytest.approx(600.05)


def test_a_queued_version_lost_with_a_restart_queues_again_as_the_same_attempt() -> None:
    spec = spec_with()
    s = replace(PROMOTED, pending=Pending(2, spec.version_key, ts(0), attempt=1, queuePosition=4))
    d = decide(spec, s, pending_obs(ConversionState.MISSING), at(5))
    assert [a for a in d.actions if isinstance(a, StartConversion)] == [StartConversion(2, spec.version_key, 1)]
    assert d.status.pending == s.pending


# -- the conversion queue --------------------------------------------------------------------


class FakeExecutor:
    """Conversions that run until the test ends them; `active()` is what really runs."""

    poll_seconds = 1.0

    def __init__(self) -> None:
        self.running: set[tuple[str, str]] = set()
        self.done: set[tuple[str, str]] = set()
        self.started: list[str] = []

    async def start(self, req: ConversionRequest) -> None:
        self.started.append(req.name)
        self.running.add((req.namespace, req.slug))

    async def poll(self, req: ConversionRequest) -> ConversionResult:
        key = (req.namespace, req.slug)
        if key in self.done:
            return ConversionResult(ConversionState.SUCCEEDED, "file:///x", "s")
        return ConversionResult(ConversionState.RUNNING if key in self.running else ConversionState.MISSING)

    async def cancel(self, req: ConversionRequest) -> None:
        self.running.discard((req.namespace, req.slug))

    async def active(self) -> set[tuple[str, str]]:
        return set(self.running)

    def finish(self, req: ConversionRequest) -> None:
        self.running.discard((req.namespace, req.slug))
        self.done.add((req.namespace, req.slug))


def request(name: str, at_s: float, namespace: str = "ns") -> ConversionRequest:
    spec = spec_with(f"file:///m/{name}.onnx")
    return ConversionRequest(namespace, name, "uid", 1, spec.version_key, 1, spec.source, spec.conversion, ts(at_s))


async def test_the_queue_never_runs_more_than_its_limit_and_serves_the_oldest_request_first() -> None:
    inner, woken = FakeExecutor(), []
    queue = ConversionQueue(inner, limit=2, started=lambda ns, n: woken.append(n), clock=lambda: 0.0)
    reqs = [request(f"m{i}", at_s=i) for i in range(6)]
    for r in (reqs[0], reqs[1], reqs[5], reqs[3], reqs[4], reqs[2]):  # arrival order is not admission order
        await queue.start(r)
    assert inner.started == ["m0", "m1"]
    assert [(await queue.poll(r)).position for r in reqs[2:]] == [1, 2, 3, 4]
    assert (await queue.poll(reqs[5])).state == ConversionState.QUEUED
    for r in reqs:
        await queue.start(r)  # idempotent: a second start neither runs nor queues it twice
    assert len(queue.waiting) == 4 and inner.started == ["m0", "m1"]
    inner.finish(reqs[0])
    assert (await queue.poll(reqs[0])).state == ConversionState.SUCCEEDED  # its end frees a slot ...
    assert inner.started == ["m0", "m1", "m2"] and woken == ["m2"]  # ... for the oldest, woken at once
    assert (await queue.poll(reqs[2])).state == ConversionState.RUNNING
    await queue.cancel(reqs[1])
    assert inner.started[-1] == "m3"
    assert queue.peak == 2 and len(inner.running) == 2


async def test_the_queue_counts_conversions_it_did_not_start_and_frees_slots_of_deleted_models() -> None:
    inner, clock = FakeExecutor(), [0.0]
    inner.running = {("ns", "left-by-an-earlier-operator-g1-abc")}
    queue = ConversionQueue(inner, limit=1, clock=lambda: clock[0])
    a, b = request("a", 1), request("b", 2)
    await queue.start(a)
    assert inner.started == [] and (await queue.poll(a)).position == 1
    inner.running.clear()  # that conversion ended; nobody polls it (its Model is gone)
    clock[0] += 5
    assert (await queue.poll(a)).state == ConversionState.RUNNING  # seen on the next refresh
    await queue.start(b)
    await queue.forget("ns", "b")
    assert not queue.waiting and inner.started == ["a"]


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConversionQueue(FakeExecutor(), limit=0)
    with pytest.raises(ValueError, match="per namespace"):
        ConversionQueue(FakeExecutor(), limit=2, per_namespace=-1)


async def test_a_free_slot_goes_to_the_namespace_served_least_recently_not_to_the_oldest_request() -> None:
    """One namespace applying 20 Models first must not make every other namespace wait behind all
    of them: namespaces take turns for free slots (oldest request first within each)."""
    inner = FakeExecutor()
    queue = ConversionQueue(inner, limit=2, clock=lambda: 0.0)
    flood = [request(f"a{i}", at_s=i, namespace="team-a") for i in range(20)]
    late_b, late_c = request("b0", at_s=100, namespace="team-b"), request("c0", at_s=101, namespace="team-c")
    for r in [*flood, late_b, late_c]:
        await queue.start(r)
    assert inner.started == ["a0", "a1"]
    assert (await queue.poll(late_b)).position == 1 and (await queue.poll(late_c)).position == 2
    assert (await queue.poll(flood[2])).position == 3  # then team-a again
    for done in (flood[0], flood[1]):
        inner.finish(done)
        await queue.poll(done)
    assert inner.started == ["a0", "a1", "b0", "c0"]
    inner.finish(late_b)
    await queue.poll(late_b)
    assert inner.started[-1] == "a2"


async def test_a_per_namespace_cap_leaves_slots_for_other_namespaces() -> None:
    """With --max-conversions-per-namespace, one namespace never holds every slot, even when it is
    alone: a conversion can run for up to an hour, and the next namespace must not wait that long."""
    inner = FakeExecutor()
    queue = ConversionQueue(inner, limit=4, per_namespace=2, clock=lambda: 0.0)
    for i in range(6):
        await queue.start(request(f"a{i}", at_s=i, namespace="team-a"))
    assert inner.started == ["a0", "a1"]
    result = await queue.poll(request("a2", at_s=2, namespace="team-a"))
    assert result.state == ConversionState.QUEUED and "2 per namespace" in result.reason
    await queue.start(request("b0", at_s=50, namespace="team-b"))
    assert inner.started == ["a0", "a1", "b0"]  # at once, two slots were kept free
    inner.running.add(("team-a", "left-by-an-earlier-operator-g1-abc"))  # counts against team-a too
    inner.finish(request("a0", at_s=0, namespace="team-a"))
    await queue.poll(request("a0", at_s=0, namespace="team-a"))
    assert inner.started == ["a0", "a1", "b0"]


# -- the watch cache's store -----------------------------------------------------------------


def obj(name: str, rv: str, kind: str = "InferenceService", **meta: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv} | meta}


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    store = Store()
    assert store.put(obj("m", "20"))
    assert not store.put(obj("m", "19"))  # a watch event older than our own write's response
    assert store.put(obj("m", "21"))
    assert newer(obj("m", "opaque"), obj("m", "21"))  # not integers: the later arrival wins


def test_the_store_indexes_by_label_and_forgets_moved_objects() -> None:
    store = Store("serving.kserve.io/inferenceservice")
    store.put(obj("m-predictor", "1", "Deployment", labels={"serving.kserve.io/inferenceservice": "m"}))
    store.put(obj("m-predictor-canary", "2", "Deployment", labels={"serving.kserve.io/inferenceservice": "m"}))
    store.put(obj("other", "3", "Deployment", labels={"serving.kserve.io/inferenceservice": "o"}))
    assert [d["metadata"]["name"] for d in store.by_label("ns", "m")] == ["m-predictor", "m-predictor-canary"]
    store.put(obj("m-predictor-canary", "4", "Deployment", labels={"serving.kserve.io/inferenceservice": "o"}))
    store.remove("ns", "m-predictor")
    assert store.by_label("ns", "m") == ()
    assert [d["metadata"]["name"] for d in store.by_label("ns", "o")] == ["m-predictor-canary", "other"]


def test_strip_drops_what_no_decision_reads() -> None:
    dep = obj("m-predictor", "1", "Deployment", managedFields=[{"manager": "x"}],
              annotations={"kubectl.kubernetes.io/last-applied-configuration": "{...}", "keep": "1"})
    dep["spec"] = {"replicas": 2, "template": {"metadata": {"annotations": {"serving.kserve.io/storage-uri": "u"}},
                                               "spec": {"containers": [{"name": "c" * 10_000}]}}}
    s = strip(dep)
    assert "managedFields" not in s["metadata"] and s["metadata"]["annotations"] == {"keep": "1"}
    assert s["spec"] == {"replicas": 2, "template": {"metadata": {"annotations": {"serving.kserve.io/storage-uri": "u"}}}}
    eps = obj("m-gen2-predictor-x7k2p", "1", "EndpointSlice")
    eps |= {"ports": [{"port": 80}], "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": True},
                                                    "targetRef": {"kind": "Pod", "name": "p"}, "nodeName": "n"}]}
    assert strip(eps)["endpoints"] == [{"conditions": {"ready": True}}] and "ports" not in strip(eps)


@pytest.mark.parametrize(("o", "model"), [
    (obj("fraud", "1"), "fraud"),
    (obj("fraud-predictor", "1", "Deployment", ownerReferences=[{"kind": "InferenceService", "name": "fraud"}]),
     "fraud"),
    (obj("fraud-route", "1", "HTTPRoute", ownerReferences=[{"kind": "Model", "apiVersion": "serin.dev/v1alpha1",
                                                           "name": "fraud"}]), "fraud"),
    (obj("x", "1", "Job", labels={"serin.dev/model": "fraud"}), "fraud"),
    (obj("fraud-gen2-predictor-x7k2p", "1", "EndpointSlice", ownerReferences=[{"kind": "Service", "name": "s"}],
         labels={"serving.kserve.io/inferenceservice": "fraud"}), "fraud"),
    (obj("x", "1", "Service"), None),
], ids=["isvc", "deployment", "route", "job label", "endpointslice", "unrelated"])
def test_every_watched_object_wakes_the_model_it_concerns(o: dict[str, Any], model: str | None) -> None:
    assert model_of(o) == model


# -- Prometheus load bounded -----------------------------------------------------------------


async def test_a_busy_prometheus_makes_measurements_inconclusive_never_late() -> None:
    in_flight, most = [0], [0]

    async def slow_query(_: web.Request) -> web.Response:
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        await asyncio.sleep(0.3)
        in_flight[0] -= 1
        return web.json_response({"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}})

    app = web.Application()
    app.router.add_get("/api/v1/query", slow_query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    prom = Prometheus(f"http://127.0.0.1:{port}", timeout=1.0, concurrency=2)
    before = {phase: query_seconds(phase) for phase in ("wait", "query")}
    try:
        got = await asyncio.gather(*(prom.measure(f"m{i}", "vector(1)") for i in range(12)))
    finally:
        await prom.close()
        await runner.cleanup()
    answered = [m for m in got if m.value == 1.0]
    busy = [m for m in got if m.value is None]
    # The operator's histograms say where the time went: every query waited, the ones that got a
    # slot ran; queued behind 0.3 s queries, the waits add up to seconds.
    waits, ran = (tuple(a - b for a, b in zip(query_seconds(p), before[p], strict=True)) for p in ("wait", "query"))
    no_slot = [m for m in busy if "prometheus busy" in m.error]
    assert waits[1] == 12 and ran[1] == 12 - len(no_slot), (waits, ran, len(no_slot))
    assert waits[0] > 1.0 and ran[0] >= 0.3 * len(answered), (waits, ran)
    assert most[0] <= 2, f"{most[0]} queries in flight at once, limit 2"
    assert answered and busy, (answered, busy)
    assert all("prometheus busy" in m.error or "TimeoutError" in m.error for m in busy), [m.error for m in busy]
    assert any("prometheus busy" in m.error for m in busy)
    # 2 slots for 1 s of 0.3 s queries answer at most 8: the rest gave up at their deadline
    # instead of being answered late.
    assert len(answered) <= 8 and len(busy) >= 4, (len(answered), len(busy))


def query_seconds(phase: str) -> tuple[float, float]:
    """serin_prometheus_query_seconds{phase}: (sum, count) so far in this process."""
    def sample(part: str) -> float:
        return REGISTRY.get_sample_value(f"serin_prometheus_query_seconds_{part}", {"phase": phase}) or 0.0

    return sample("sum"), sample("count")


# -- the order of a decision's writes -----------------------------------------------------------


def test_serving_writes_go_before_the_events_that_announce_them() -> None:
    failed, rollback = Emit("Warning", "AnalysisFailed", "x"), Emit("Warning", "RollbackStarted", "y")
    write = ApplyServing(Served(1, "file:///m/v1.onnx"))
    done: list[Action] = []

    async def apply(action: Action) -> None:
        done.append(action)

    asyncio.run(apply_in_order((failed, rollback, write), apply))
    assert done == [write, failed, rollback]


def test_a_write_that_raises_still_has_its_events_posted() -> None:
    announce, write = Emit("Warning", "RollbackStarted", "y"), ApplyServing(Served(1, "file:///m/v1.onnx"))
    done: list[Action] = []

    async def apply(action: Action) -> None:
        if action is write:
            raise OSError("apiserver gone")
        done.append(action)

    with pytest.raises(OSError, match="apiserver gone"):
        asyncio.run(apply_in_order((announce, write), apply))
    assert done == [announce]
