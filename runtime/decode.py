"""KServe V1 / V2 request bodies -> validated numpy feeds for onnxruntime.

Every check raises RequestError with a message that names the input and the problem, so a
malformed request is a 4xx and never reaches onnxruntime (whose errors are opaque and, for some
inputs, fatal to the process).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
from serin.runtime.signature import TensorSpec


class RequestError(Exception):
    """A client error: becomes `{"error": message}` with `status`."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def parse_json(body: bytes) -> Any:
    if not body:
        raise RequestError("empty request body: expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson follows RFC 8259, which has no NaN; Python clients (json.dumps) write NaN and
        # Infinity anyway. Parse those with the stdlib so NaN reaches the NaN policy below.
        if b"NaN" in body or b"Infinity" in body:
            try:
                return json.loads(body)
            except (ValueError, RecursionError):
                pass
        raise RequestError(f"invalid JSON: {exc}") from None


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_shape(spec: TensorSpec, shape: Sequence[int]) -> None:
    ok = len(shape) == len(spec.shape) and all(
        want is None or want == got for want, got in zip(spec.shape, shape, strict=False)
    )
    if not ok:
        raise RequestError(
            f"input {spec.name!r}: expected shape {spec.shape_text()}, got {_shape_text(shape)}"
        )
    if shape and shape[0] == 0:
        raise RequestError(f"input {spec.name!r}: empty batch (first dimension is 0)")


# Floats accept JSON integers (1 for 1.0); integers and booleans must be exactly that.
_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}


def _numbers(spec: TensorSpec, data: Any) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(
            f"input {spec.name!r}: data must be a flat or rectangular nested list of numbers"
        ) from None
    kind = arr.dtype.kind
    want = spec.dtype.kind
    if kind not in _ACCEPTED_KINDS.get(want, ""):
        what = {"f": "numbers", "i": "integers", "u": "integers", "b": "booleans"}.get(want, want)
        raise RequestError(f"input {spec.name!r}: expected {what} ({spec.datatype}), got "
                           f"{_describe(arr)}")
    if want in "iu" and arr.size and arr.dtype != spec.dtype:
        info = np.iinfo(spec.dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise RequestError(f"input {spec.name!r}: values out of range for {spec.datatype}")
    out = arr.astype(spec.dtype, copy=False)
    # Checked after the cast: 1e39 is finite in JSON but inf in float32.
    if want == "f" and not np.isfinite(out).all() and (not spec.allow_nan or np.isinf(out).any()):
        allowed = "infinite values are" if spec.allow_nan else "NaN or infinite values are"
        raise RequestError(f"input {spec.name!r}: {allowed} not allowed")
    return out


def _describe(arr: np.ndarray) -> str:
    kind = arr.dtype.kind
    if kind in "US":
        return "strings"
    if kind == "b":
        return "booleans"
    if kind == "O":
        return "non-numeric values (null, objects or mixed lists)"
    return str(arr.dtype)


def _strings(spec: TensorSpec, data: Any) -> np.ndarray:
    flat = _flatten(data)
    if flat is None or not all(isinstance(v, str) for v in flat):
        raise RequestError(f"input {spec.name!r}: expected a list of strings (BYTES)")
    try:
        return np.asarray(data, dtype=object)
    except ValueError:
        raise RequestError(f"input {spec.name!r}: ragged nested list") from None


def _flatten(data: Any) -> list[Any] | None:
    if not isinstance(data, list):
        return None
    out: list[Any] = []
    stack = [data]
    while stack:
        for v in stack.pop():
            if isinstance(v, list):
                stack.append(v)
            else:
                out.append(v)
    return out


def to_array(spec: TensorSpec, data: Any, shape: Sequence[int] | None = None) -> np.ndarray:
    """Convert and validate `data` for `spec`; with `shape` (V2) the data may be flat."""
    if not isinstance(data, list):
        raise RequestError(f"input {spec.name!r}: 'data' must be a list")
    arr = _strings(spec, data) if spec.is_string else _numbers(spec, data)
    if shape is not None:
        size = 1
        for d in shape:
            size *= d
        if arr.size != size or (arr.ndim > 1 and tuple(arr.shape) != tuple(shape)):
            raise RequestError(
                f"input {spec.name!r}: shape {_shape_text(shape)} needs {size} values, "
                f"got data of shape {_shape_text(arr.shape)}"
            )
        _check_shape(spec, shape)
        arr = arr.reshape(shape)
    else:
        _check_shape(spec, arr.shape)
    return arr


def _valid_shape(shape: Any) -> bool:
    return isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape
    )


def _finish(feeds: dict[str, np.ndarray], signature: Mapping[str, TensorSpec]) -> int:
    missing = [n for n in signature if n not in feeds]
    if missing:
        raise RequestError(f"missing input(s): {', '.join(repr(n) for n in missing)}")
    batches = {arr.shape[0] if arr.ndim else 1 for arr in feeds.values()}
    if len(batches) > 1:
        raise RequestError(f"inputs disagree on the batch size: {sorted(batches)}")
    return batches.pop()


def _unknown(name: str, signature: Mapping[str, TensorSpec]) -> RequestError:
    return RequestError(f"unknown input {name!r}; the model's inputs are {list(signature)}")


FLOAT_DATATYPES = frozenset({"FP16", "FP32", "FP64"})


def decode_v2(
    payload: Any, signature: Mapping[str, TensorSpec]
) -> tuple[dict[str, np.ndarray], int]:
    """An Open Inference Protocol request -> (feeds, rows)."""
    if not isinstance(payload, dict):
        raise RequestError("request body must be a JSON object with an 'inputs' list")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors")
    feeds: dict[str, np.ndarray] = {}
    for i, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise RequestError(f"inputs[{i}] must be an object with name, shape, datatype, data")
        name = item.get("name")
        if not isinstance(name, str):
            raise RequestError(f"inputs[{i}]: 'name' must be a string")
        spec = signature.get(name)
        if spec is None:
            raise _unknown(name, signature)
        if name in feeds:
            raise RequestError(f"input {name!r} appears more than once")
        datatype = item.get("datatype")
        # A float input takes any float width: JSON carries decimal text either way, and a
        # version converted with float64 inputs must take the FP32 requests its stable took.
        if datatype != spec.datatype and not (spec.is_float and datatype in FLOAT_DATATYPES):
            raise RequestError(
                f"input {name!r}: expected datatype {spec.datatype}, got {datatype!r}"
            )
        shape: Any = item.get("shape")
        if not _valid_shape(shape):
            raise RequestError(f"input {name!r}: 'shape' must be a list of non-negative integers")
        _check_shape(spec, shape)
        if "data" not in item:
            raise RequestError(f"input {name!r}: 'data' is missing")
        feeds[name] = to_array(spec, item["data"], shape)
    rows = _finish(feeds, signature)
    return feeds, rows


def requested_outputs(payload: dict[str, Any], available: Sequence[str]) -> list[str] | None:
    """The V2 request's optional `outputs` selection, validated; None means all outputs."""
    outputs = payload.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise RequestError("'outputs' must be a list of objects with a 'name'")
    names = [o["name"] for o in outputs]
    unknown = [n for n in names if n not in available]
    if unknown:
        raise RequestError(
            f"unknown output(s) {unknown}; the model's outputs are {list(available)}"
        )
    return names


def _column(spec: TensorSpec, values: list[Any]) -> np.ndarray:
    # [N, 1] inputs (one per column of a mixed-type pipeline) take scalars per instance.
    if len(spec.shape) == 2 and spec.shape[1] == 1:
        values = [v if isinstance(v, list) else [v] for v in values]
    return to_array(spec, values)


def decode_v1(
    payload: Any, signature: Mapping[str, TensorSpec]
) -> tuple[dict[str, np.ndarray], int]:
    """A KServe V1 `{"instances": [...]}` request -> (feeds, rows)."""
    if not isinstance(payload, dict):
        raise RequestError("request body must be a JSON object with an 'instances' list")
    instances = payload.get("instances")
    if not isinstance(instances, list):
        raise RequestError("'instances' must be a list")
    if not instances:
        raise RequestError("empty batch: 'instances' is empty")
    if all(isinstance(inst, dict) for inst in instances):
        columns: dict[str, list[Any]] = {name: [] for name in signature}
        for i, inst in enumerate(instances):
            for key in inst:
                if key not in signature:
                    raise _unknown(key, signature)
            for name, col in columns.items():
                if name not in inst:
                    raise RequestError(f"instances[{i}]: missing input {name!r}")
                col.append(inst[name])
        feeds = {name: _column(signature[name], col) for name, col in columns.items()}
    elif any(isinstance(inst, dict) for inst in instances):
        raise RequestError("instances mix objects and rows; use one form for the whole batch")
    elif len(signature) == 1:
        spec = next(iter(signature.values()))
        feeds = {spec.name: _column(spec, instances)}
    else:
        raise RequestError(
            f"the model has {len(signature)} inputs {list(signature)}: send each instance as an "
            "object keyed by input name"
        )
    return feeds, _finish(feeds, signature)
