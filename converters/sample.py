"""The sample rows: reading them, checking them against the model, and shaping them into inputs.

Two input layouts exist (see docs/formats.md): a numeric matrix becomes one float32 input
"input" [N, F]; a frame with string columns (or a ColumnTransformer that selects columns by
name) becomes one [N, 1] input per column, typed float32 / int64 / string. A converter may widen
float32 to float64 where float32 would change the model's branch decisions (sklearn_.wants_float64).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from serin.converters.errors import SampleError, first_line

MATRIX_INPUT = "input"


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str  # float32 | float64 | int64 | string (ONNX-side element type)
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    frame: pd.DataFrame  # the rows, columns in the order the model expects
    inputs: tuple[InputSpec, ...]
    native_frame: bool  # feed the native model a DataFrame (it was fitted with column names)
    layout: str = "matrix"  # "matrix" (one [N, F] input) | "columns" (one [N, 1] input per column)

    @property
    def rows(self) -> int:
        return len(self.frame)

    @property
    def is_matrix(self) -> bool:
        return self.layout == "matrix"

    def with_dtypes(self, dtypes: dict[str, str]) -> Sample:
        """The inputs as the converted graph declares them (a converter may widen int64 to float)."""
        inputs = tuple(replace(s, dtype=dtypes.get(s.name, s.dtype)) for s in self.inputs)
        return replace(self, inputs=inputs)

    def native_input(self) -> Any:
        """What the native model is fed: the rows as read (float64), never the float32 cast."""
        if not self.is_matrix:
            return self.frame
        if self.native_frame:
            return self.frame.astype(np.float64)
        return self.frame.to_numpy(dtype=np.float64)

    def feeds(self) -> dict[str, np.ndarray]:
        """onnxruntime feeds; float64 sample values are cast to float32 here (the documented pitfall)."""
        out: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            block = self.frame[list(spec.columns)]
            if spec.dtype == "string":
                values = block.astype(str).to_numpy(dtype=object)
            else:
                values = block.to_numpy(dtype=np.dtype(spec.dtype))
            out[spec.name] = values
        return out


def read_sample(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            array = np.load(path, allow_pickle=False)
            if array.ndim != 2:
                raise SampleError(f"sample {path.name} is a {array.ndim}-D array; need rows x features")
            frame = pd.DataFrame(array, columns=[f"f{i}" for i in range(array.shape[1])])
        elif name.endswith(".parquet"):
            frame = _read_parquet(path)
        else:
            # pandas' default float parser can be one ulp off; a value read one ulp above a tree
            # threshold it equals takes the other branch in the native model (docs/converters.md).
            frame = pd.read_csv(path, float_precision="round_trip")
    except SampleError:
        raise
    except Exception as exc:  # pandas/numpy raise many types for unreadable files
        raise SampleError(f"cannot read sample {path.name}: {first_line(exc, 160)}") from exc
    if frame.empty or len(frame.columns) == 0:
        raise SampleError(f"sample {path.name} has no rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise SampleError(
            "reading a Parquet sample needs pyarrow, which is not installed; use CSV or .npy"
        ) from exc
    return pd.read_parquet(path)


def is_textual(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def align(frame: pd.DataFrame, n_features: int | None, names: list[str] | None) -> pd.DataFrame:
    """Puts the sample's columns in the model's order, or says exactly why they do not fit."""
    if names:
        missing = [n for n in names if n not in frame.columns]
        extra = [c for c in frame.columns if c not in names]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks column(s) {', '.join(missing[:8])}")
            if extra:
                parts.append(f"has column(s) {', '.join(extra[:8])} the model does not know")
            raise SampleError(
                f"sample has {len(frame.columns)} columns but the model expects {len(names)}: "
                + " and ".join(parts)
            )
        return frame[names]
    if n_features is not None and len(frame.columns) != n_features:
        raise SampleError(
            f"sample has {len(frame.columns)} columns but the model expects {n_features} features"
        )
    return frame


def matrix_inputs(frame: pd.DataFrame) -> tuple[InputSpec, ...]:
    textual = [c for c in frame.columns if is_textual(frame[c])]
    if textual:
        raise SampleError(
            f"sample column {textual[0]!r} is not numeric (e.g. {frame[textual[0]].iloc[0]!r}) but "
            "this model takes a numeric matrix"
        )
    return (InputSpec(MATRIX_INPUT, "float32", tuple(frame.columns)),)


def column_inputs(frame: pd.DataFrame) -> tuple[InputSpec, ...]:
    specs = []
    for column in frame.columns:
        series = frame[column]
        if is_textual(series):
            dtype = "string"
        elif pd.api.types.is_integer_dtype(series) or pd.api.types.is_bool_dtype(series):
            dtype = "int64"
        else:
            dtype = "float32"
        specs.append(InputSpec(column, dtype, (column,)))
    return tuple(specs)


def has_nan(frame: pd.DataFrame) -> list[str]:
    return [str(c) for c in frame.columns if frame[c].isna().any()]
