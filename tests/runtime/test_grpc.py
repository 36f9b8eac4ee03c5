"""V2 over gRPC (runtime/grpc_v2.py) against a real server: KServe's own gRPC client and raw stubs
from the kserve SDK's protos. Same answers as HTTP, the same validation with gRPC status codes
and HTTP's messages, and the same metrics with protocol="grpc"."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import Server, free_port, serve, stop_server
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from test_metrics import value

ROWS = np.random.default_rng(11).normal(size=(3, 4)).round(3).astype(np.float32)


@pytest.fixture(scope="module")
def grpc_server(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Server, int]]:
    port = free_port()
    srv = serve(tmp_path_factory.mktemp("grpc"), models["numeric"], "iris", "--revision", "g1",
                "--grpc-port", str(port))
    yield srv, port
    stop_server(srv)


@pytest.fixture(scope="module")
def stub(grpc_server: tuple[Server, int]) -> Iterator[Any]:
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_server[1]}")
    grpc.channel_ready_future(channel).result(timeout=30)
    yield pb_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def infer_request(rows: np.ndarray, *, raw: bool = False, name: str = "input",
                  datatype: str = "FP32", model: str = "iris", **extra: Any) -> Any:
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype,
                                                   shape=list(rows.shape))
    request = pb.ModelInferRequest(model_name=model, inputs=[tensor], **extra)
    if raw:
        request.raw_input_contents.append(rows.astype("<f4").tobytes())
    else:  # (the request holds a copy of `tensor`)
        request.inputs[0].contents.fp32_contents.extend(rows.ravel().tolist())
    return request


def http_answer(srv: Server, rows: np.ndarray) -> dict[str, Any]:
    reply = srv.infer([{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.tolist()}])
    assert reply.status == 200, reply.body
    return {o["name"]: o for o in reply.json()["outputs"]}


def outputs_of(response: Any) -> dict[str, tuple[list[int], str, list[Any]]]:
    out = {}
    for i, tensor in enumerate(response.outputs):
        if response.raw_output_contents:
            dtype = {"INT64": "<i8", "FP32": "<f4"}[tensor.datatype]
            data = np.frombuffer(response.raw_output_contents[i], dtype=dtype).tolist()
        else:
            field = {"INT64": "int64_contents", "FP32": "fp32_contents"}[tensor.datatype]
            data = list(getattr(tensor.contents, field))
        out[tensor.name] = (list(tensor.shape), tensor.datatype, data)
    return out


def test_health_and_metadata(grpc_server: tuple[Server, int], stub: Any) -> None:
    srv, _ = grpc_server
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris")).ready
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"))
    http = srv.request("GET", "/v2/models/iris").json()
    assert meta.name == "iris" and meta.platform == http["platform"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == \
        [(t["name"], t["datatype"], t["shape"]) for t in http["inputs"]]
    assert [t.name for t in meta.outputs] == [t["name"] for t in http["outputs"]]
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "serin-onnx"
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelReady(pb.ModelReadyRequest(name="other"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "model 'other' not found"


@pytest.mark.parametrize("raw", [False, True], ids=["typed-contents", "raw-contents"])
def test_answers_equal_http_answers(grpc_server: tuple[Server, int], stub: Any,
                                    raw: bool) -> None:
    srv, _ = grpc_server
    response = stub.ModelInfer(infer_request(ROWS, raw=raw, id="req-7"))
    assert response.id == "req-7" and response.model_name == "iris"
    assert bool(response.raw_output_contents) == raw  # answered in the form asked
    got, want = outputs_of(response), http_answer(srv, ROWS)
    assert set(got) == set(want)
    for name, (shape, datatype, data) in got.items():
        assert shape == want[name]["shape"] and datatype == want[name]["datatype"]
        assert data == pytest.approx(want[name]["data"], rel=1e-6)


def test_output_selection_and_generated_ids(stub: Any) -> None:
    request = infer_request(ROWS[:1], outputs=[
        pb.ModelInferRequest.InferRequestedOutputTensor(name="label")])
    first, second = stub.ModelInfer(request), stub.ModelInfer(request)
    assert [o.name for o in first.outputs] == ["label"]
    assert first.id and second.id and first.id != second.id


def test_kserve_sdk_client_interoperates(grpc_server: tuple[Server, int]) -> None:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    srv, port = grpc_server

    async def call() -> Any:
        client = InferenceGRPCClient(f"127.0.0.1:{port}")
        try:
            tensor = InferInput("input", list(ROWS.shape), "FP32")
            tensor.set_data_from_numpy(ROWS)
            return await client.infer(InferRequest("iris", [tensor], request_id="sdk-1"))
        finally:
            await client.close()

    response = asyncio.run(call())
    want = http_answer(srv, ROWS)
    outputs = {o.name: o for o in response.outputs}
    assert outputs["label"].as_numpy().tolist() == want["label"]["data"]
    assert outputs["probabilities"].as_numpy().ravel().tolist() == \
        pytest.approx(want["probabilities"]["data"], rel=1e-6)


def _http_error(srv: Server, payload: dict[str, Any], model: str = "iris") -> str:
    reply = srv.post(f"/v2/models/{model}/infer", payload)
    assert reply.status in (400, 404), reply.body
    return str(reply.json()["error"])


@pytest.mark.parametrize(("request_factory", "payload", "code"), [
    (lambda: infer_request(np.zeros((1, 3), np.float32)),
     {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]}]},
     grpc.StatusCode.INVALID_ARGUMENT),
    (lambda: infer_request(ROWS[:1], name="nope"),
     {"inputs": [{"name": "nope", "shape": [1, 4], "datatype": "FP32", "data": [0] * 4}]},
     grpc.StatusCode.INVALID_ARGUMENT),
    (lambda: infer_request(np.array([[np.nan, 0, 0, 0]], np.float32)),
     {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                  "data": [float("nan"), 0, 0, 0]}]},
     grpc.StatusCode.INVALID_ARGUMENT),
    (lambda: infer_request(ROWS[:1], outputs=[
        pb.ModelInferRequest.InferRequestedOutputTensor(name="nope")]),
     {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                  "data": ROWS[0].tolist()}], "outputs": [{"name": "nope"}]},
     grpc.StatusCode.INVALID_ARGUMENT),
    (lambda: infer_request(ROWS[:1], model="other"),
     {"inputs": []}, grpc.StatusCode.NOT_FOUND),
], ids=["wrong-shape", "unknown-input", "nan", "unknown-output", "unknown-model"])
def test_bad_requests_get_status_codes_with_http_messages(
        grpc_server: tuple[Server, int], stub: Any, request_factory: Any,
        payload: dict[str, Any], code: grpc.StatusCode) -> None:
    srv, _ = grpc_server
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request_factory())
    assert err.value.code() == code
    model = "other" if code == grpc.StatusCode.NOT_FOUND else "iris"
    assert err.value.details() == _http_error(srv, json.loads(json.dumps(payload)), model)


def test_malformed_tensor_contents(stub: Any) -> None:
    raw = infer_request(ROWS[:1], raw=True)
    raw.raw_input_contents[0] = raw.raw_input_contents[0][:-1]  # 15 bytes: not FP32 values
    cases = [
        (raw, "input 'input': 15 raw bytes are not a whole number of FP32 values"),
        (pb.ModelInferRequest(model_name="iris", inputs=[
            pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 4])],
            raw_input_contents=[b"", b""]), "raw_input_contents has 2 entries for 1 inputs"),
        (infer_request(ROWS[:1], datatype="FP16"),
         "input 'input': datatype 'FP16' has no typed contents field; send it in "
         "raw_input_contents"),
    ]
    for request, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == message


def test_grpc_requests_are_counted_like_http(grpc_server: tuple[Server, int], stub: Any) -> None:
    srv, _ = grpc_server
    before = srv.metrics()
    for _ in range(4):
        stub.ModelInfer(infer_request(ROWS))
    for _ in range(2):
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(infer_request(np.zeros((1, 3), np.float32)))
    after = srv.metrics()
    for name, labels, delta in [
        ("serin_requests_total", {"protocol": "grpc", "code": "200"}, 4),
        ("serin_requests_total", {"protocol": "grpc", "code": "400"}, 2),
        ("serin_request_duration_seconds_count", {"protocol": "grpc"}, 6),
        ("serin_inference_rows_total", {}, 12),
    ]:
        was = value(before, name, model="iris", **labels) or 0
        assert value(after, name, model="iris", **labels) == was + delta, name


def test_bytes_raw_contents_round_trip_lengths() -> None:
    from serin.runtime.decode import RequestError
    from serin.runtime.grpc_v2 import _raw_values

    raw = b"".join(struct.pack("<I", len(v)) + v for v in (b"red", b"", "blü".encode()))
    assert _raw_values("BYTES", raw, "color") == ["red", "", "blü"]
    with pytest.raises(RequestError, match="truncated BYTES element"):
        _raw_values("BYTES", raw[:-1], "color")


def test_string_inputs_in_typed_and_raw_contents(models: dict[str, Path],
                                                 tmp_path: Path) -> None:
    port = free_port()
    srv = serve(tmp_path, models["mixed"], "mixed", "--grpc-port", str(port))
    try:
        columns = {"age": ("FP32", [[41.0]]), "income": ("FP32", [[52.5]]),
                   "color": ("BYTES", [["red"]])}
        http = srv.infer([{"name": n, "shape": [1, 1], "datatype": d, "data": v}
                          for n, (d, v) in columns.items()])
        assert http.status == 200, http.body
        want = {o["name"]: o["data"] for o in http.json()["outputs"]}
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for raw in (False, True):
            request = pb.ModelInferRequest(model_name="mixed")
            for name, (datatype, values) in columns.items():
                tensor = request.inputs.add(name=name, datatype=datatype, shape=[1, 1])
                value = values[0][0]
                if raw:
                    request.raw_input_contents.append(
                        struct.pack("<I", len(value)) + value.encode() if datatype == "BYTES"
                        else np.float32(value).tobytes())
                elif datatype == "BYTES":
                    tensor.contents.bytes_contents.append(value.encode())
                else:
                    tensor.contents.fp32_contents.append(value)
            got = outputs_of(stub.ModelInfer(request, timeout=30))
            assert set(got) == set(want)
            for name, (_, _, data) in got.items():
                assert data == pytest.approx(want[name], rel=1e-6), (raw, name)
        channel.close()
    finally:
        stop_server(srv)


def test_protos_load_without_importing_the_kserve_package() -> None:
    # The kserve package imports FastAPI and the Kubernetes client: ~1.7 s and tens of MB a
    # worker, for messages that need only protobuf.
    import subprocess
    import sys

    code = ("import sys; from serin.runtime import grpc_v2; pb = grpc_v2.protocol_module(); "
            "assert pb.ModelInferRequest(model_name='m').model_name == 'm'; "
            "print(sorted(m for m in sys.modules if m == 'kserve' or m.startswith('kserve.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    assert out == "[]"


def test_another_models_name_is_not_found_whatever_the_tensors(stub: Any) -> None:
    request = infer_request(ROWS[:1], raw=True, model="other")
    request.raw_input_contents[0] = b"\x00"  # malformed too: the model's name is checked first
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "model 'other' not found"
