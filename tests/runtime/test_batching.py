"""Batching of requests that arrive together (runtime/batching.py, App.answer_many), without a
server: a batched answer must be exactly what the same request gets alone."""

from __future__ import annotations

from pathlib import Path

import model_factory as mf
import numpy as np
import orjson
import pytest
from serin.runtime import batching
from serin.runtime.app import Answer, App, Request
from serin.runtime.model import OnnxModel


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    directory = mf.numeric_classifier(tmp_path_factory.mktemp("batching") / "numeric")
    return OnnxModel("iris", directory)


def v1(rows: list[list[float]]) -> bytes:
    return orjson.dumps({"instances": rows})


def decoded(app: App, body: bytes, protocol: str = "v1") -> Request:
    request = app.decode_inline(protocol, "iris", body)
    assert isinstance(request, Request), request
    return request


ROWS = np.random.default_rng(3).normal(size=(40, 4)).round(3).tolist()


def test_merge_and_split_round_trip() -> None:
    parts = [{"x": np.arange(6, dtype=np.float32).reshape(3, 2)},
             {"x": np.arange(2, dtype=np.float32).reshape(1, 2)}]
    merged = batching.merge(parts)
    assert merged["x"].shape == (4, 2)
    back = batching.split({"y": merged["x"] * 2, "label": np.arange(4)}, [3, 1])
    assert back is not None
    assert back[0]["y"].tolist() == (parts[0]["x"] * 2).tolist()
    assert back[1]["label"].tolist() == [3]


def test_split_refuses_outputs_without_a_row_each() -> None:
    assert batching.split({"total": np.zeros(3)}, [1, 1]) is None
    assert batching.split({"scalar": np.float32(1.0)}, [1, 1]) is None


def test_batch_key_separates_incompatible_feeds() -> None:
    a = {"x": np.zeros((1, 4), np.float32)}
    assert batching.batch_key(a) == batching.batch_key({"x": np.ones((3, 4), np.float32)})
    assert batching.batch_key(a) != batching.batch_key({"x": np.zeros((1, 5), np.float32)})
    assert batching.batch_key(a) != batching.batch_key({"x": np.zeros((1, 4), np.float64)})


def test_batched_answers_equal_answers_alone(model: OnnxModel) -> None:
    app = App(model, batch_rows=8)
    requests = [("v1", decoded(app, v1([row]))) for row in ROWS[:20]]
    requests.insert(5, ("v1", decoded(app, v1(ROWS[20:23]))))  # a 3-row request among them
    runs = model.runs
    together = app.answer_many(requests)
    # 23 rows, at most 8 per run, consecutive requests: 3 runs, not 21.
    assert model.runs - runs == 3
    alone = [app.answer_inline(p, "iris", v1(r.feeds["input"].tolist())) for p, r in requests]
    assert [a.status for a in together] == [200] * len(requests)
    assert [a.body for a in together] == [a.body for a in alone]
    assert together[5].results is not None and together[5].results["label"].shape == (3,)


def test_v2_ids_and_output_selection_survive_batching(model: OnnxModel) -> None:
    app = App(model, batch_rows=32)
    bodies = [orjson.dumps({"id": f"r{i}", "inputs": [{"name": "input", "shape": [1, 4],
                            "datatype": "FP32", "data": row}],
                            **({"outputs": [{"name": "label"}]} if i % 2 else {})})
              for i, row in enumerate(ROWS[:6])]
    together = app.answer_many([("v2", decoded(app, b, "v2")) for b in bodies])
    for i, (answer, body) in enumerate(zip(together, bodies, strict=True)):
        alone = app.answer_inline("v2", "iris", body)
        assert answer.body == alone.body
        names = [o["name"] for o in orjson.loads(answer.body)["outputs"]]
        assert orjson.loads(answer.body)["id"] == f"r{i}"
        assert names == (["label"] if i % 2 else model.output_names)


def test_batching_off_runs_each_request(model: OnnxModel) -> None:
    app = App(model, batch_rows=0)
    requests = [("v1", decoded(app, v1([row]))) for row in ROWS[:5]]
    runs = model.runs
    assert [a.status for a in app.answer_many(requests)] == [200] * 5
    assert model.runs - runs == 5


def _sums_model(directory: Path, declared: list[int | None]) -> OnnxModel:
    # total = the column sums of the batch: one row per call is the only correct way to run it.
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["input", "axes"], ["total"], keepdims=0)], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, declared)],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [0])],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onx.ir_version = 9
    return OnnxModel("sums", mf._write(directory, onx, None))


def _v2_requests(app: App, rows: list[list[float]]) -> list[tuple[str, Request]]:
    requests = []
    for row in rows:
        request = app.decode_inline("v2", "sums", orjson.dumps({"inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}))
        assert isinstance(request, Request)
        requests.append(("v2", request))
    return requests


def test_a_model_declaring_a_fixed_first_dimension_is_not_batched(tmp_path: Path) -> None:
    app = App(_sums_model(tmp_path / "sums", [4]), batch_rows=8)
    assert app.batch_rows == 0


def test_outputs_that_do_not_split_by_rows_stop_batching(tmp_path: Path) -> None:
    # The input flattened: a dynamic first dimension, but 4 entries per row, not one. Only the
    # split of a batch's result can tell.
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "flat"], ["total"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, [None])],
        [helper.make_tensor("flat", TensorProto.INT64, [1], [-1])],
    )
    onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onx.ir_version = 9
    app = App(OnnxModel("sums", mf._write(tmp_path / "flat", onx, None)), batch_rows=8)
    assert app.batch_rows == 8
    answers = app.answer_many(_v2_requests(app, ROWS[:3]))
    assert app.batch_rows == 0  # and off for good
    for answer, row in zip(answers, ROWS[:3], strict=True):
        data = orjson.loads(answer.body)["outputs"][0]["data"]
        assert data == pytest.approx(row, abs=1e-6)  # its own row, not a slice of the batch


def test_one_bad_request_fails_alone(model: OnnxModel) -> None:
    app = App(model, batch_rows=8)
    bad = app.decode_inline("v1", "iris", v1([[1.0, 2.0]]))  # wrong width: 400 at decode
    assert isinstance(bad, Answer) and bad.status == 400
    good = [("v1", decoded(app, v1([row]))) for row in ROWS[:3]]
    assert [a.status for a in app.answer_many(good)] == [200, 200, 200]


class _Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _Connection:
    """What the batcher needs of a DirectProtocol connection: its count, answer and transport."""

    def __init__(self, fails: bool = False) -> None:
        self._in_batch = 1
        self.fails = fails
        self.transport = _Transport()
        self.statuses: list[int] = []

    def answer(self, protocol: str, answer: Answer, keep_alive: bool, start: float) -> None:
        if self.fails:
            raise ConnectionResetError("the peer went away mid-write")
        self.statuses.append(answer.status)


def test_a_failing_connection_does_not_leave_the_rest_of_its_batch_unanswered(
        model: OnnxModel) -> None:
    from serin.runtime.direct import _Batcher

    app = App(model, batch_rows=8)
    batcher = _Batcher(app)
    connections = [_Connection(), _Connection(fails=True), _Connection()]
    for connection, row in zip(connections, ROWS, strict=False):
        batcher.pending.append((connection, "v1", decoded(app, v1([row])), True, 0.0))
    batcher.flush()
    assert [c.statuses for c in connections] == [[200], [], [200]]
    assert [c.transport.closed for c in connections] == [False, True, False]
    assert [c._in_batch for c in connections] == [0, 0, 0]
    assert batcher.pending == []
