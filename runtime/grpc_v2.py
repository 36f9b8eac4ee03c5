"""The Open Inference Protocol over gRPC (KServe's `inference.GRPCInferenceService`, the protocol
Triton's and KServe's gRPC clients speak), served by each worker next to HTTP, on its event loop.

Requests become the same V2 payload the HTTP path decodes (App.decode_payload), so validation,
error messages, batching rules and metrics are HTTP's: a 4xx there is INVALID_ARGUMENT or
NOT_FOUND here with the same message, and every request counts in `serin_requests_total` with
`protocol="grpc"` and the HTTP-equivalent `code` (200, 400, 404, 413, 500), so error-rate and
latency queries read gRPC traffic the same way. Tensors arrive in typed `contents` or in
`raw_input_contents`; answers use the form the request used.

The message classes come from the kserve SDK's generated `grpc_predict_v2_pb2`, loaded from its
file: importing it as `kserve.protocol.grpc...` would import the whole kserve package (FastAPI,
the Kubernetes client: ~1.7 s and tens of MB per worker) for a module that needs only protobuf.
"""

from __future__ import annotations

import importlib.util
import logging
import struct
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from serin.runtime.app import App, failed
from serin.runtime.decode import RequestError
from serin.runtime.signature import ONNX_TYPES, datatype_of

log = logging.getLogger("serin.runtime")

SERVICE = "inference.GRPCInferenceService"
_MODULE = "serin.runtime._grpc_predict_v2_pb2"

# V2 datatype -> the InferTensorContents field that carries it (FP16 travels only as raw bytes).
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
_NUMPY = {datatype: dtype for datatype, dtype in ONNX_TYPES.values() if datatype != "BYTES"}


def protocol_module() -> ModuleType:
    """The kserve SDK's grpc_predict_v2_pb2, loaded from its file under a name of ours."""
    loaded = sys.modules.get(_MODULE)
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("kserve")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the kserve SDK (its V2 gRPC protos) is not installed")
    path = Path(next(iter(spec.submodule_search_locations)), "protocol", "grpc",
                "grpc_predict_v2_pb2.py")
    module_spec = importlib.util.spec_from_file_location(_MODULE, path)
    if module_spec is None or module_spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[_MODULE] = module
    module_spec.loader.exec_module(module)
    return module


def _grpc_status(http_status: int) -> Any:
    import grpc

    return {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
            413: grpc.StatusCode.RESOURCE_EXHAUSTED}.get(http_status, grpc.StatusCode.INTERNAL)


def _raw_values(datatype: str, raw: bytes, name: str) -> list[Any]:
    if datatype == "BYTES":  # each element: a 4-byte little-endian length, then the bytes
        out, i = [], 0
        while i < len(raw):
            if i + 4 > len(raw):
                raise RequestError(f"input {name!r}: truncated BYTES element in raw contents")
            (n,) = struct.unpack_from("<I", raw, i)
            if i + 4 + n > len(raw):
                raise RequestError(f"input {name!r}: truncated BYTES element in raw contents")
            out.append(_text(raw[i + 4:i + 4 + n], name))
            i += 4 + n
        return out
    dtype = _NUMPY.get(datatype)
    if dtype is None:
        raise RequestError(f"input {name!r}: unknown datatype {datatype!r}")
    if len(raw) % dtype.itemsize:
        raise RequestError(f"input {name!r}: {len(raw)} raw bytes are not a whole number of "
                           f"{datatype} values")
    values: list[Any] = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).tolist()
    return values


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise RequestError(f"input {name!r}: BYTES values must be UTF-8 text") from None


def payload_of(request: Any) -> dict[str, Any]:
    """A ModelInferRequest as the V2 JSON payload the HTTP path decodes."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"raw_input_contents has {len(raw)} entries for "
                           f"{len(request.inputs)} inputs")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        if raw:
            data = _raw_values(tensor.datatype, raw[i], tensor.name)
        else:
            field = CONTENTS_FIELD.get(tensor.datatype)
            if field is None:
                raise RequestError(f"input {tensor.name!r}: datatype {tensor.datatype!r} has no "
                                   "typed contents field; send it in raw_input_contents")
            data = list(getattr(tensor.contents, field))
            if tensor.datatype == "BYTES":
                data = [_text(v, tensor.name) for v in data]
        inputs.append({"name": tensor.name, "shape": list(tensor.shape),
                       "datatype": tensor.datatype, "data": data})
    payload: dict[str, Any] = {"inputs": inputs}
    if request.outputs:
        payload["outputs"] = [{"name": o.name} for o in request.outputs]
    return payload


class Servicer:
    """The GRPCInferenceService methods, on the worker's App."""

    def __init__(self, app: App, pb: ModuleType) -> None:
        self.app = app
        self.pb = pb

    def _check_model(self, name: str) -> None:
        if name != self.app.model.name:
            raise RequestError(f"model {name!r} not found", 404)

    async def _call(self, context: Any, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except RequestError as exc:
            await context.abort(_grpc_status(exc.status), exc.message)
            raise  # not reached: abort raises

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return self.pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return self.pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        await self._call(context, self._check_model, request.name)
        return self.pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return self.pb.ServerMetadataResponse(name="serin-onnx", version="1", extensions=[])

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        await self._call(context, self._check_model, request.name)
        meta = self.app.model.v2_metadata()
        tensor = self.pb.ModelMetadataResponse.TensorMetadata
        return self.pb.ModelMetadataResponse(
            name=meta["name"], versions=meta.get("versions", []), platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]])

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        start = time.perf_counter()
        app = self.app
        response = None
        try:
            self._check_model(request.model_name)  # first, as over HTTP: another model is a 404
            answer = await app.answer("grpc", app.decode_payload("v2", payload_of(request)))
            if answer.results is not None:
                assert answer.request is not None
                pid = app.prediction_id(answer.request, answer.results)
                response = self._response(request, answer.results, pid)
                answer = replace(answer, prediction_id=pid)
        except Exception as exc:
            answer = failed(exc, None)
        app.observe("grpc", answer, time.perf_counter() - start)
        if response is None:  # the same words as the HTTP path's {"error": ...}
            await context.abort(_grpc_status(answer.status), answer.error)
        return response

    def _response(self, request: Any, results: dict[str, Any], prediction_id: str | None) -> Any:
        model = self.app.model
        # As over HTTP: the client's id echoed (the prediction id then in a parameter), else the
        # prediction id that feedback names this answer by.
        response = self.pb.ModelInferResponse(model_name=model.name,
                                              model_version=model.version or "",
                                              id=request.id or prediction_id or model.new_id())
        if request.id and prediction_id:
            response.parameters["prediction_id"].string_param = prediction_id
        arrays = {name: np.asarray(value) for name, value in results.items()}
        datatypes = {name: datatype_of(arr) for name, arr in arrays.items()}
        # Raw for all outputs or none (the protocol's rule): raw when the request was, or when an
        # output has no typed field (FP16).
        raw = bool(request.raw_input_contents) or any(
            d not in CONTENTS_FIELD for d in datatypes.values())
        for name, arr in arrays.items():
            datatype = datatypes[name]
            out = response.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
            flat = arr.ravel()
            if datatype == "BYTES":
                items = [v if isinstance(v, bytes) else str(v).encode() for v in flat.tolist()]
                if raw:
                    response.raw_output_contents.append(
                        b"".join(struct.pack("<I", len(v)) + v for v in items))
                else:
                    out.contents.bytes_contents.extend(items)
            elif raw:
                response.raw_output_contents.append(
                    flat.astype(flat.dtype.newbyteorder("<"), copy=False).tobytes())
            else:
                getattr(out.contents, CONTENTS_FIELD[datatype]).extend(flat.tolist())
        return response


async def start(app: App, host: str, port: int, max_message: int, shared: bool) -> Any:
    """A started grpc.aio server for `app` on host:port. `shared`: several workers bind the
    port (SO_REUSEPORT, as their HTTP sockets); a single worker must find the port free."""
    import grpc

    pb = protocol_module()
    servicer = Servicer(app, pb)
    methods = {
        "ServerLive": pb.ServerLiveRequest, "ServerReady": pb.ServerReadyRequest,
        "ModelReady": pb.ModelReadyRequest, "ServerMetadata": pb.ServerMetadataRequest,
        "ModelMetadata": pb.ModelMetadataRequest, "ModelInfer": pb.ModelInferRequest,
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name), request_deserializer=message.FromString,
            response_serializer=lambda m: m.SerializeToString())
        for name, message in methods.items()
    }
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
        ("grpc.so_reuseport", 1 if shared else 0),
    ])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    await server.start()
    log.info("gRPC (V2, %s) on %s", SERVICE, address)
    return server
