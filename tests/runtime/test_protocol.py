"""KServe V1 and V2 (Open Inference Protocol) over HTTP, single rows and batches."""

from __future__ import annotations

import pytest
from conftest import Server

ROWS = [[1.0, 2.0, 3.0, 4.0], [-1.0, -2.0, -3.0, -4.0], [0.5, -0.5, 0.1, 0.0]]


def v2_input(rows: list[list[float]]) -> dict[str, object]:
    flat = [v for row in rows for v in row]
    return {"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": flat}


def test_health_and_metadata(server: Server) -> None:
    assert server.request("GET", "/v2/health/live").json() == {"live": True}
    assert server.request("GET", "/v2/health/ready").json() == {"ready": True}
    assert server.request("GET", "/v2/models/iris/ready").json() == {"name": "iris", "ready": True}
    assert server.request("GET", "/v1/models/iris").json() == {"name": "iris", "ready": True}
    meta = server.request("GET", "/v2/models/iris").json()
    assert meta["name"] == "iris"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]


@pytest.mark.parametrize("rows", [ROWS[:1], ROWS], ids=["single", "batch"])
def test_v2_infer(server: Server, rows: list[list[float]]) -> None:
    reply = server.infer([v2_input(rows)], id="req-1")
    assert reply.status == 200, reply.body
    body = reply.json()
    assert body["model_name"] == "iris"
    assert body["id"] == "req-1"
    label, proba = body["outputs"]
    assert label == {"name": "label", "shape": [len(rows)], "datatype": "INT64",
                     "data": label["data"]}
    assert set(label["data"]) <= {0, 1}
    assert proba["shape"] == [len(rows), 2] and proba["datatype"] == "FP32"
    assert len(proba["data"]) == 2 * len(rows)


def test_v2_ids_are_strings(server: Server) -> None:
    generated = [server.infer([v2_input(ROWS[:1])]).json()["id"] for _ in range(3)]
    numeric = server.infer([v2_input(ROWS[:1])], id=42).json()["id"]
    assert all(isinstance(i, str) and i for i in generated)
    assert len(set(generated)) == 3  # each answer its own id
    assert numeric == "42"


def test_v2_nested_data_and_output_selection(server: Server) -> None:
    tensor = {"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS[:2]}
    reply = server.infer([tensor], outputs=[{"name": "probabilities"}])
    assert reply.status == 200, reply.body
    assert [o["name"] for o in reply.json()["outputs"]] == ["probabilities"]


def test_v2_versioned_path(server: Server) -> None:
    reply = server.post("/v2/models/iris/versions/1/infer", {"inputs": [v2_input(ROWS[:1])]})
    assert reply.status == 200, reply.body


@pytest.mark.parametrize("rows", [ROWS[:1], ROWS], ids=["single", "batch"])
def test_v1_predict(server: Server, rows: list[list[float]]) -> None:
    reply = server.predict(rows)
    assert reply.status == 200, reply.body
    preds = reply.json()["predictions"]
    assert len(preds) == len(rows) and set(preds) <= {0, 1}
    # V1 and V2 agree.
    v2 = server.infer([v2_input(rows)]).json()["outputs"][0]["data"]
    assert preds == v2


def test_v1_objects_for_single_input_model(server: Server) -> None:
    reply = server.predict([{"input": ROWS[0]}, {"input": ROWS[1]}])
    assert reply.status == 200, reply.body
    assert reply.json()["predictions"] == server.predict(ROWS[:2]).json()["predictions"]


MIXED_ROWS = [
    {"age": 25.0, "income": 40.0, "color": "red"},
    {"age": 55.0, "income": 70.0, "color": "blue"},
    {"age": 41.0, "income": 52.0, "color": "purple"},  # unseen category: one-hot ignores it
]


def test_mixed_v2_one_tensor_per_input(mixed_server: Server) -> None:
    rows = MIXED_ROWS
    inputs = [
        {"name": "age", "shape": [3, 1], "datatype": "FP32", "data": [r["age"] for r in rows]},
        {"name": "income", "shape": [3, 1], "datatype": "FP32",
         "data": [r["income"] for r in rows]},
        {"name": "color", "shape": [3, 1], "datatype": "BYTES",
         "data": [r["color"] for r in rows]},
    ]
    reply = mixed_server.infer(inputs)
    assert reply.status == 200, reply.body
    label = reply.json()["outputs"][0]
    assert label["shape"] == [3] and set(label["data"]) <= {0, 1}
    v1 = mixed_server.predict(rows)
    assert v1.status == 200, v1.body
    assert v1.json()["predictions"] == label["data"]


def test_mixed_v1_single_instance_with_wrapped_values(mixed_server: Server) -> None:
    reply = mixed_server.predict([{"age": [30.0], "income": [45.0], "color": ["green"]}])
    assert reply.status == 200, reply.body
    assert len(reply.json()["predictions"]) == 1


def test_mixed_metadata_lists_string_input(mixed_server: Server) -> None:
    meta = mixed_server.request("GET", "/v2/models/mixed").json()
    assert {"name": "color", "datatype": "BYTES", "shape": [-1, 1]} in meta["inputs"]
