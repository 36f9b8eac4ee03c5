"""A model slower than its request rate must stay observable. Its runs go to an inference thread,
so /metrics and the health probes answer between runs instead of after the whole queue; when runs
held the event loop, an overloaded slow canary stopped being scraped, its p99 read "no data", and
the rollout paused instead of rolling back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Server, serve, stop_server
from serin.local import demo_models
from test_metrics import rows_input

QUEUED = 8


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("slow")
    version = demo_models.slow_version(tmp / "model")
    srv = serve(tmp, version.model.parent, "slow", "--revision", "slow-00001")
    yield srv
    stop_server(srv)


def test_metrics_and_probes_answer_while_slow_runs_are_queued(slow_server: Server) -> None:
    rows = rows_input(np.zeros((20, 4), np.float32))
    assert slow_server.infer([rows]).status == 200  # the runtime now knows this model is slow

    lock = threading.Lock()
    pending = QUEUED
    first_done = threading.Event()
    statuses: list[int] = []

    def one() -> None:
        nonlocal pending
        status = slow_server.infer([rows], timeout=120).status
        with lock:
            pending -= 1
            statuses.append(status)
        first_done.set()

    threads = [threading.Thread(target=one) for _ in range(QUEUED)]
    for t in threads:
        t.start()
    # Every run is queued by now or soon: wait until one has finished, so the probes below arrive
    # behind a queue of runs, which is where an event loop blocked by runs would hold them.
    assert first_done.wait(120)
    answered_with_pending: dict[str, int] = {}
    for path in ("/metrics", "/v2/health/ready", "/v2/health/live"):
        reply = slow_server.request("GET", path, timeout=120)
        assert reply.status == 200, (path, reply.body)
        with lock:
            answered_with_pending[path] = pending
    for t in threads:
        t.join(120)
    assert statuses == [200] * QUEUED
    # Answered while most runs still waited (each takes a large fraction of a second here); with
    # runs on the event loop they would all have waited for the queue to drain (pending 0).
    assert all(n >= QUEUED // 2 for n in answered_with_pending.values()), answered_with_pending


def test_a_fast_model_stays_on_the_event_loop(models: dict[str, Path]) -> None:
    """The hand-off costs more than a small model's run, so fast models keep running inline."""
    from serin.runtime.app import INLINE_RUN_BUDGET_S
    from serin.runtime.model import OnnxModel

    model = OnnxModel("fast", models["numeric"])
    for _ in range(60):
        model.run({"input": np.zeros((1, 4), np.float32)})
    assert model.recent_run_seconds < INLINE_RUN_BUDGET_S, model.recent_run_seconds


@pytest.fixture(scope="module")
def batching_slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("slow-batched")
    # ~0.2 GFLOP a row, ~8 ms: far past the inline budget, so runs go to the inference thread.
    version = demo_models.slow_version(tmp / "model", depth=400)
    srv = serve(tmp, version.model.parent, "slow", "--batch-rows", "8")
    yield srv
    stop_server(srv)


def test_requests_queued_for_a_slow_model_run_as_batches(batching_slow_server: Server) -> None:
    from test_metrics import value

    srv = batching_slow_server
    rows = np.random.default_rng(2).normal(size=(12, 4)).astype(np.float32)
    alone = [srv.infer([rows_input(rows[i:i + 1])]).json()["outputs"] for i in range(len(rows))]
    before = srv.metrics()
    replies: dict[int, object] = {}

    def one(i: int) -> None:
        reply = srv.infer([rows_input(rows[i:i + 1])], timeout=120)
        assert reply.status == 200, reply.body
        replies[i] = reply.json()["outputs"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(rows))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    after = srv.metrics()
    assert sorted(replies) == list(range(len(rows)))
    for i, outputs in replies.items():
        for got, want in zip(outputs, alone[i], strict=True):  # type: ignore[call-overload]
            assert got["name"] == want["name"] and got["shape"] == want["shape"]
            assert got["data"] == pytest.approx(want["data"], rel=1e-5, abs=1e-6)
    runs = (value(after, "serin_model_runs_total", model="slow") or 0) - \
        (value(before, "serin_model_runs_total", model="slow") or 0)
    # 12 requests at once: the first runs alone, the others queue behind it and run together.
    print(f"{len(rows)} requests in {runs:.0f} runs")
    assert runs < len(rows), runs
