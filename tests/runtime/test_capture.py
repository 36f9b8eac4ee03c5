"""Payload capture (runtime/capture.py): the sampled share, the layout of what is written, the bound
that keeps a slow or failing store from holding or failing an answer, and nothing lost at a
graceful shutdown; then on real server processes, predictions and their truth joined by id."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import serve, stop_server
from serin.runtime.capture import (
    DROP_QUEUE_FULL,
    DROP_TOO_LARGE,
    DROP_WRITE_FAILED,
    Capture,
    CaptureSettings,
    DirectorySink,
)
from test_feedback import KEY, feedback, infer, rows

HOUR = 3600.0
T0 = 1_765_000_000.0  # 2025-12-06 05:46:40 UTC


class Counts:
    def __init__(self) -> None:
        self.captured: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def captured_(self, kind: str, n: int) -> None:
        self.captured[kind] = self.captured.get(kind, 0) + n

    def dropped_(self, reason: str, n: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


class Metrics:
    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    def captured(self, kind: str, rows: int) -> None:
        self.counts.captured_(kind, rows)

    def dropped(self, reason: str, rows: int) -> None:
        self.counts.dropped_(reason, rows)


class MemorySink:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    def expire(self, prefix: str, before: float) -> int:
        return 0

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for data in self.objects.values() for line in gzip.decompress(data).splitlines()]


def settings(**kw: Any) -> CaptureSettings:
    return CaptureSettings(**{"share": 1.0, "uri": "memory", "namespace": "ml", "model": "fraud",
                              "revision": "fraud-predictor-00002", **kw})


def test_records_are_written_per_kind_and_hour_under_the_models_revision() -> None:
    sink, counts, now = MemorySink(), Counts(), [T0]
    capture = Capture(settings(), sink, Metrics(counts), clock=lambda: now[0], worker="w1")
    x = np.array([[1.5, 2.0], [3.0, float("nan")]], dtype=np.float32)
    capture.offer_prediction({"input": x, "country": np.array(["fr", "de"], dtype=object)},
                             {"label": np.array([1, 0]), "probabilities": np.array([[0.2, 0.8], [0.9, 0.1]])}, 2,
                             "id-1")
    now[0] += HOUR
    capture.offer_prediction({"input": x[:1]}, {"label": np.array([1])}, 1, "id-2")
    capture.offer_truth("id-1", [1, 1], "fraud-predictor-00001", 2)
    capture.write(list(capture._queue))
    assert sorted(k.rsplit("/", 1)[0] for k in sink.objects) == [
        "ml/fraud/fraud-predictor-00002/predictions/2025-12-06/05",
        "ml/fraud/fraud-predictor-00002/predictions/2025-12-06/06",
        "ml/fraud/fraud-predictor-00002/truth/2025-12-06/06",
    ]
    first = next(r for r in sink.records() if r["id"] == "id-1" and r["kind"] == "predictions")
    assert first["inputs"] == {"input": [[1.5, 2.0], [3.0, None]], "country": ["fr", "de"]}
    assert first["outputs"]["probabilities"] == [[0.2, 0.8], [0.9, 0.1]] and first["rows"] == 2
    assert first["revision"] == "fraud-predictor-00002" and first["time"] == T0
    truth = next(r for r in sink.records() if r["kind"] == "truth")
    # Under the revision that predicted, which the feedback endpoint read from the id.
    assert truth == {"kind": "truth", "time": T0 + HOUR, "id": "id-1", "revision": "fraud-predictor-00001",
                     "rows": 2, "truth": [1, 1]}
    assert counts.captured == {"predictions": 3, "truth": 2}


def test_the_share_is_sampled_per_request() -> None:
    draws = iter([0.05, 0.5, 0.09, 0.95, 0.1])
    capture = Capture(settings(share=0.1), MemorySink(), chance=lambda: next(draws))
    for i in range(5):
        capture.offer_prediction({"x": np.zeros((1, 1))}, {"y": np.zeros(1)}, 1, f"id-{i}")
    assert [p.record["id"] for p in capture._queue] == ["id-0", "id-2"]


class BlockedSink(MemorySink):
    """A store that hangs until released (a slow or unreachable S3)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def put(self, key: str, data: bytes) -> None:
        self.entered.set()
        self.release.wait(30)
        super().put(key, data)


def test_a_hung_store_never_holds_a_request_and_what_overflows_is_counted() -> None:
    sink, counts = BlockedSink(), Counts()
    capture = Capture(settings(batch_rows=10, max_pending_rows=50, flush_seconds=0.05), sink, Metrics(counts))
    batch = ({"x": np.zeros((5, 2))}, {"y": np.zeros(5)}, 5)
    for _ in range(3):  # 15 rows: the thread takes them all and hangs in put()
        capture.offer_prediction(*batch, None)
    capture.start()
    assert sink.entered.wait(10)
    # While the store hangs, requests go on: 50 rows wait, the next 50 are dropped, none waits.
    offered = threading.Thread(target=lambda: [capture.offer_prediction(*batch, None) for _ in range(20)])
    offered.start()
    offered.join(10)
    assert not offered.is_alive(), "offering rows waited on the store"
    # The 15 rows being written count against the bound too: 35 more wait, 65 are dropped.
    assert counts.dropped == {DROP_QUEUE_FULL: 65}
    sink.release.set()
    capture.close()
    assert counts.captured == {"predictions": 15 + 35}


def test_a_request_beyond_the_bounds_is_dropped_as_too_large_and_a_failing_offer_costs_nothing() -> None:
    counts = Counts()
    capture = Capture(settings(max_pending_rows=100, max_pending_bytes=1 << 20), MemorySink(), Metrics(counts))
    capture.offer_prediction({"x": np.zeros((101, 1))}, {"y": np.zeros(101)}, 101, None)
    capture.offer_prediction({"x": np.zeros((10, 20_000))}, {"y": np.zeros(10)}, 10, None)  # 1.6 MB
    assert counts.dropped == {DROP_TOO_LARGE: 111} and not capture._queue

    class Broken(Metrics):
        def dropped(self, reason: str, rows: int) -> None:
            raise OSError("the metrics file is gone")

    broken = Capture(settings(max_pending_rows=1), MemorySink(), Broken(Counts()))
    broken.offer_prediction({"x": np.zeros((2, 1))}, {"y": np.zeros(2)}, 2, None)  # must not raise
    broken.offer_truth("id", [1, 0], "r1", 2)


def test_a_single_rows_bare_truth_is_stored_as_a_list_of_one() -> None:
    capture = Capture(settings(), MemorySink())
    capture.offer_truth("id-1", 1, "r1", 1)
    capture.offer_truth("id-2", [0, 1], "r1", 2)
    assert [p.record["truth"] for p in capture._queue] == [[1], [0, 1]]


class FailingSink(MemorySink):
    def put(self, key: str, data: bytes) -> None:
        raise ConnectionError("Could not connect to the endpoint URL")


def test_a_failing_store_loses_the_batch_counted_and_capture_goes_on() -> None:
    counts = Counts()
    capture = Capture(settings(), FailingSink(), Metrics(counts))
    capture.offer_prediction({"x": np.zeros((3, 1))}, {"y": np.zeros(3)}, 3, None)
    capture.write(list(capture._queue))
    assert counts.dropped == {DROP_WRITE_FAILED: 3} and counts.captured == {}


def test_close_writes_what_waits_and_later_rows_are_dropped(tmp_path: Path) -> None:
    counts = Counts()
    capture = Capture(settings(flush_seconds=3600), DirectorySink(tmp_path), Metrics(counts)).start()
    for i in range(7):
        capture.offer_prediction({"x": np.full((1, 1), i)}, {"y": np.zeros(1)}, 1, f"id-{i}")
    capture.close()
    written = [json.loads(line) for p in tmp_path.rglob("*.jsonl.gz") for line in gzip.decompress(p.read_bytes())
               .splitlines()]
    assert sorted(r["id"] for r in written) == [f"id-{i}" for i in range(7)]
    capture.offer_prediction({"x": np.zeros((1, 1))}, {"y": np.zeros(1)}, 1, "late")
    assert counts.dropped == {DROP_QUEUE_FULL: 1}


def test_objects_older_than_the_retention_are_deleted_for_every_revision_of_the_model_only(tmp_path: Path) -> None:
    """A version no longer served writes nothing and expires nothing: the serving one expires the
    Model's every revision, never another Model's (`fraud2` is not under `fraud/`)."""
    import os

    sink = DirectorySink(tmp_path)
    old = {key: tmp_path / key for key in ("ml/fraud/r1/predictions/2025-11-01/00/1-a.jsonl.gz",
                                            "ml/fraud/r1/truth/2025-11-01/03/1-a.jsonl.gz")}
    kept = {key: tmp_path / key for key in ("ml/fraud/r2/predictions/2025-12-06/00/2-a.jsonl.gz",
                                             "ml/fraud2/r1/predictions/2025-11-01/00/1-a.jsonl.gz",
                                             "ml/other/r1/predictions/2025-11-01/00/1-a.jsonl.gz")}
    for key in [*old, *kept]:
        sink.put(key, b"x")
    for path in [*old.values(), kept["ml/fraud2/r1/predictions/2025-11-01/00/1-a.jsonl.gz"],
                 kept["ml/other/r1/predictions/2025-11-01/00/1-a.jsonl.gz"]]:
        os.utime(path, (T0 - 40 * 24 * HOUR, T0 - 40 * 24 * HOUR))
    serving = Capture(settings(namespace="ml", model="fraud", revision="r2"), sink, clock=lambda: T0)
    assert serving.expire() == 2
    assert not any(p.exists() for p in old.values()) and all(p.exists() for p in kept.values())
    assert not (tmp_path / "ml/fraud/r1/predictions/2025-11-01").exists(), "empty folders are removed"


@pytest.mark.parametrize(("text", "words"), [
    ('{"uri": "s3://b"}', "share must be above 0"),
    ('{"share": 1.5, "uri": "s3://b"}', "share must be above 0 and at most 1"),
    ('{"share": 0.1}', "uri is required"),
    ("[1]", "must be a JSON object"),
])
def test_bad_settings_name_the_field(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        CaptureSettings.parse(text, "fraud", "r1")


def test_a_server_captures_its_answers_and_the_truth_sent_back_joined_by_id(models: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    """Two workers, each writing its own objects; everything is written by a graceful stop."""
    store = tmp_path / "capture"
    env = {**KEY, "SERIN_CAPTURE": json.dumps({"share": 1, "uri": str(store), "namespace": "ml"})}
    srv = serve(tmp_path, models["numeric"], "fraud", "--revision", "r1", "--workers", "2",
                "--state-dir", str(tmp_path / "state"), env=env)
    try:
        ids = [infer(srv, rows(3, seed))["id"] for seed in range(20)]
        for pid in ids[:5]:
            status, _ = feedback(srv, {"id": pid, "truth": [1, 0, 1]})
            assert status == 200
        assert srv.request("POST", "/v2/models/fraud/infer", {"inputs": []}).status == 400  # not captured
    finally:
        stop_server(srv)
    records = [json.loads(line) for p in store.rglob("*.jsonl.gz") for line in gzip.decompress(p.read_bytes())
               .splitlines()]
    predictions = {r["id"]: r for r in records if r["kind"] == "predictions"}
    truth = {r["id"]: r for r in records if r["kind"] == "truth"}
    assert set(predictions) == set(ids) and set(truth) == set(ids[:5])
    assert all(r["rows"] == 3 and len(r["inputs"]["input"]) == 3 for r in predictions.values())
    assert all(str(p.relative_to(store)).startswith("ml/fraud/r1/") for p in store.rglob("*.jsonl.gz"))
    np.testing.assert_allclose(predictions[ids[7]]["inputs"]["input"], rows(3, 7), rtol=1e-6)
