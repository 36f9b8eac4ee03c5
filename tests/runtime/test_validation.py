"""Every class of bad input gets the right 4xx and a message naming the problem."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Server

GOOD = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}


def tensor(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


V2_CASES = [
    ("wrong-shape", {"inputs": [tensor(shape=[2, 3], data=[1] * 6)]}, 400,
     "input 'input': expected shape [-1, 4], got [2, 3]"),
    ("wrong-rank", {"inputs": [tensor(shape=[4], data=[1] * 4)]}, 400, "expected shape [-1, 4]"),
    ("data-size-mismatch", {"inputs": [tensor(shape=[2, 4])]}, 400, "needs 8 values"),
    ("wrong-datatype", {"inputs": [tensor(datatype="INT64")]}, 400,
     "input 'input': expected datatype FP32, got 'INT64'"),
    ("unknown-input", {"inputs": [GOOD, tensor(name="extra")]}, 400, "unknown input 'extra'"),
    ("duplicate-input", {"inputs": [GOOD, GOOD]}, 400, "appears more than once"),
    ("strings-for-floats", {"inputs": [tensor(data=["a", "b", "c", "d"])]}, 400,
     "expected numbers (FP32), got strings"),
    ("numeric-strings", {"inputs": [tensor(data=["1", "2", "3", "4"])]}, 400, "got strings"),
    ("null-value", {"inputs": [tensor(data=[1, None, 3, 4])]}, 400, "non-numeric"),
    ("booleans", {"inputs": [tensor(data=[True, False, True, False])]}, 400, "got booleans"),
    ("nested-object", {"inputs": [tensor(data=[{"a": 1}, 2, 3, 4])]}, 400, "non-numeric"),
    ("ragged", {"inputs": [tensor(shape=[2, 4], data=[[1, 2, 3, 4], [1, 2]])]}, 400, "input"),
    ("float32-overflow", {"inputs": [tensor(data=[1e39, 0, 0, 0])]}, 400,
     "NaN or infinite values are not allowed"),
    ("empty-batch", {"inputs": [tensor(shape=[0, 4], data=[])]}, 400, "empty batch"),
    ("negative-dim", {"inputs": [tensor(shape=[-1, 4])]}, 400, "non-negative integers"),
    ("shape-not-list", {"inputs": [tensor(shape="1,4")]}, 400, "'shape' must be a list"),
    ("data-missing", {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32"}]}, 400,
     "'data' is missing"),
    ("data-not-list", {"inputs": [tensor(data=7)]}, 400, "'data' must be a list"),
    ("inputs-empty", {"inputs": []}, 400, "'inputs' must be a non-empty list"),
    ("inputs-missing", {"instances": [[1, 2, 3, 4]]}, 400, "'inputs'"),
    ("body-not-object", [1, 2, 3], 400, "JSON object"),
    ("name-not-string", {"inputs": [tensor(name=3)]}, 400, "'name' must be a string"),
    ("unknown-output", {"inputs": [GOOD], "outputs": [{"name": "nope"}]}, 400,
     "unknown output(s) ['nope']"),
]


@pytest.mark.parametrize(("payload", "status", "message"), [c[1:] for c in V2_CASES],
                         ids=[c[0] for c in V2_CASES])
def test_v2_rejects(server: Server, payload: Any, status: int, message: str) -> None:
    reply = server.post("/v2/models/iris/infer", payload)
    assert reply.status == status, reply.body
    assert message in reply.json()["error"]


V1_CASES = [
    ("wrong-width", {"instances": [[1, 2, 3], [4, 5, 6]]}, 400,
     "input 'input': expected shape [-1, 4], got [2, 3]"),
    ("empty-batch", {"instances": []}, 400, "empty batch"),
    ("not-a-list", {"instances": {"a": 1}}, 400, "'instances' must be a list"),
    ("missing-instances", {"inputs": [[1, 2, 3, 4]]}, 400, "'instances' must be a list"),
    ("ragged", {"instances": [[1, 2, 3, 4], [1, 2]]}, 400, "rectangular"),
    ("strings", {"instances": [["a", "b", "c", "d"]]}, 400, "got strings"),
    ("unknown-key", {"instances": [{"input": [1, 2, 3, 4], "x": 1}]}, 400, "unknown input 'x'"),
    ("mixed-forms", {"instances": [{"input": [1, 2, 3, 4]}, [1, 2, 3, 4]]}, 400, "mix objects"),
]


@pytest.mark.parametrize(("payload", "status", "message"), [c[1:] for c in V1_CASES],
                         ids=[c[0] for c in V1_CASES])
def test_v1_rejects(server: Server, payload: Any, status: int, message: str) -> None:
    reply = server.post("/v1/models/iris:predict", payload)
    assert reply.status == status, reply.body
    assert message in reply.json()["error"]


@pytest.mark.parametrize("path", ["/v2/models/iris/infer", "/v1/models/iris:predict"])
@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "invalid JSON"), (b"", "empty request body"), (b"\xff\xfe", "invalid JSON"),
    (b"[" * 5000 + b"]" * 5000, "invalid JSON"),
], ids=["garbage", "empty", "binary", "deep-nesting"])
def test_invalid_json(server: Server, path: str, body: bytes, message: str) -> None:
    reply = server.post(path, body)
    assert reply.status == 400
    assert message in reply.json()["error"]


@pytest.mark.parametrize("path", ["/v2/models/other/infer", "/v1/models/other:predict",
                                  "/v2/models/other", "/v2/models/other/ready"])
def test_wrong_model_name_is_404(server: Server, path: str) -> None:
    method = "POST" if path.endswith(("infer", "predict")) else "GET"
    reply = server.request(method, path, b'{"inputs": []}' if method == "POST" else None)
    assert reply.status == 404
    assert "model 'other' not found" in reply.json()["error"]


def test_unknown_path_and_method(server: Server) -> None:
    assert server.request("GET", "/nope").status == 404
    reply = server.request("GET", "/v2/models/iris/infer")
    assert reply.status == 405 and "not allowed" in reply.json()["error"]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_oversized_body_is_413(server: Server, declared: bool) -> None:
    # The server under test runs with --max-body-bytes 1000000.
    big = b'{"inputs": [' + b" " * 1_100_000 + b"]}"
    if declared:
        reply = server.post("/v2/models/iris/infer", big)
    else:
        chunks = iter([big[i : i + 65536] for i in range(0, len(big), 65536)])
        reply = server.request("POST", "/v2/models/iris/infer", chunks,  # type: ignore[arg-type]
                               headers={"Transfer-Encoding": "chunked"})
    assert reply.status == 413
    assert "exceeds 1000000 bytes" in reply.json()["error"]
    assert server.alive()


def test_nan_rejected_by_default(server: Server) -> None:
    reply = server.post("/v2/models/iris/infer",
                        b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
                        b'"data": [1, NaN, 3, 4]}]}')
    assert reply.status == 400
    assert "input 'input': NaN or infinite values are not allowed" in reply.json()["error"]


MIXED_CASES = [
    ("missing-input", [{"age": 1.0, "income": 2.0}], "instances[0]: missing input 'color'"),
    ("number-for-string", [{"age": 1.0, "income": 2.0, "color": 3}], "expected a list of strings"),
    ("string-for-number", [{"age": "old", "income": 2.0, "color": "red"}], "got strings"),
    ("rows-for-multi-input", [[1.0, 2.0, "red"]], "object keyed by input name"),
]


@pytest.mark.parametrize(("instances", "message"), [c[1:] for c in MIXED_CASES],
                         ids=[c[0] for c in MIXED_CASES])
def test_mixed_v1_rejects(mixed_server: Server, instances: Any, message: str) -> None:
    reply = mixed_server.predict(instances)
    assert reply.status == 400, reply.body
    assert message in reply.json()["error"]


def test_mixed_v2_missing_and_batch_mismatch(mixed_server: Server) -> None:
    age = {"name": "age", "shape": [1, 1], "datatype": "FP32", "data": [30]}
    income = {"name": "income", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}
    color = {"name": "color", "shape": [1, 1], "datatype": "BYTES", "data": ["red"]}
    reply = mixed_server.infer([age, color])
    assert reply.status == 400 and "missing input(s): 'income'" in reply.json()["error"]
    reply = mixed_server.infer([age, income, color])
    assert reply.status == 400 and "disagree on the batch size" in reply.json()["error"]
    reply = mixed_server.infer([age, {**income, "shape": [1, 1], "data": [1]},
                                {**color, "datatype": "FP32"}])
    assert reply.status == 400 and "expected datatype BYTES" in reply.json()["error"]


@pytest.mark.parametrize("datatype", ["FP64", "FP16"])
def test_a_float_input_takes_any_float_width(server: Server, datatype: str) -> None:
    """A version converted with float64 inputs must take its stable's FP32 requests, and the
    reverse: JSON carries decimal numbers either way; the values are cast to the model's width."""
    data = [5.1, 3.5, 1.4, 0.2]
    expected = server.post("/v2/models/iris/infer", {"inputs": [tensor(data=data)]})
    reply = server.post("/v2/models/iris/infer", {"inputs": [tensor(datatype=datatype, data=data)]})
    assert reply.status == 200, reply.body
    assert reply.json()["outputs"] == expected.json()["outputs"]


def test_a_float64_input_decodes_fp32_requests_to_float64() -> None:
    import numpy as np
    from serin.runtime.decode import decode_v2
    from serin.runtime.signature import tensor_spec

    spec = tensor_spec("input", "tensor(double)", [-1, 2])
    assert spec is not None
    feeds, rows = decode_v2({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32",
                                         "data": [0.1, 2]}]}, {"input": spec})
    assert rows == 1 and feeds["input"].dtype == np.float64
    assert feeds["input"][0, 0] == 0.1  # the JSON number, not its float32 rounding
