"""An ONNX model's tensor signature in KServe V2 terms (datatypes, shapes with -1 for dynamic)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ONNX tensor element type -> (V2 datatype, numpy dtype). Strings travel as V2 "BYTES" in JSON.
ONNX_TYPES: dict[str, tuple[str, np.dtype]] = {
    "tensor(float)": ("FP32", np.dtype(np.float32)),
    "tensor(double)": ("FP64", np.dtype(np.float64)),
    "tensor(float16)": ("FP16", np.dtype(np.float16)),
    "tensor(int64)": ("INT64", np.dtype(np.int64)),
    "tensor(int32)": ("INT32", np.dtype(np.int32)),
    "tensor(int16)": ("INT16", np.dtype(np.int16)),
    "tensor(int8)": ("INT8", np.dtype(np.int8)),
    "tensor(uint64)": ("UINT64", np.dtype(np.uint64)),
    "tensor(uint32)": ("UINT32", np.dtype(np.uint32)),
    "tensor(uint16)": ("UINT16", np.dtype(np.uint16)),
    "tensor(uint8)": ("UINT8", np.dtype(np.uint8)),
    "tensor(bool)": ("BOOL", np.dtype(np.bool_)),
    "tensor(string)": ("BYTES", np.dtype(object)),
}

# numpy kind -> V2 datatype, for outputs whose dtype we only learn at run time.
_KIND_DATATYPE = {"U": "BYTES", "S": "BYTES", "O": "BYTES"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    dtype: np.dtype
    shape: tuple[int | None, ...]  # None: dynamic (ONNX symbolic or unknown dimension)
    allow_nan: bool = False

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    @property
    def is_string(self) -> bool:
        return self.datatype == "BYTES"

    def shape_text(self) -> str:
        return "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"

    def as_metadata(self) -> dict[str, object]:
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": [-1 if d is None else d for d in self.shape],
        }


def tensor_spec(name: str, onnx_type: str, shape: list[object], allow_nan: bool = False) -> (
    TensorSpec | None
):
    """None for non-tensor types (e.g. ZipMap's sequence of maps), which V2 cannot carry."""
    known = ONNX_TYPES.get(onnx_type)
    if known is None:
        return None
    dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)
    return TensorSpec(name, known[0], known[1], dims, allow_nan)


_DTYPE_DATATYPE = {dtype: datatype for datatype, dtype in ONNX_TYPES.values() if dtype.kind != "O"}


def datatype_of(array: np.ndarray) -> str:
    known = _DTYPE_DATATYPE.get(array.dtype)  # one dict lookup: this runs for every output
    if known is not None:
        return known
    return _KIND_DATATYPE.get(array.dtype.kind, "BYTES")
