"""LightGBM estimators and native Boosters (.txt model files) via onnxmltools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
from serin.converters.errors import ConversionError, UnsupportedModel, first_line
from serin.converters.registry import (
    CLASSIFICATION,
    REGRESSION,
    NativePredictError,
    Outputs,
    SklearnApi,
    onnxmltools_opset,
    task_of,
    unsupported,
)
from serin.converters.sample import Sample, align, matrix_inputs

TESTED: tuple[str, ...] = ("LGBMClassifier", "LGBMRegressor", "Booster")
_CLASSIFY = ("binary", "multiclass", "multiclassova", "cross_entropy", "xentropy")
_REGRESS = ("regression", "regression_l1", "regression_l2", "l1", "l2", "huber", "fair",
            "poisson", "quantile", "mape", "gamma", "tweedie", "mse", "mae", "rmse")
# LightGBM sums many trees in float32 in ONNX; splitting the sum into chunks of this many trees
# keeps the rounding error from growing with the tree count (onnxmltools' `split` option).
_SPLIT_TREES = 100


def load_native(path: Path) -> Any:
    import lightgbm as lgb

    # LightGBM's C++ parser aborts the whole process (SIGABRT, no exception) on some truncated
    # files: refuse a text model without its closing marker before handing it over.
    if b"end of trees" not in path.read_bytes():
        raise ConversionError(
            f"cannot load LightGBM model {path.name}: the file is corrupt or truncated "
            "(no 'end of trees' marker)"
        )
    try:
        return lgb.Booster(model_file=str(path))
    except (lgb.basic.LightGBMError, ValueError, OSError) as exc:
        raise ConversionError(
            f"cannot load LightGBM model {path.name}: the file is corrupt or not a LightGBM model "
            f"({first_line(exc, 120)})"
        ) from exc


def _is_booster(model: Any) -> bool:
    return type(model).__name__ == "Booster" and type(model).__module__.startswith("lightgbm")


def _objective(booster: Any) -> str:
    return str(booster.dump_model(num_iteration=0).get("objective", "")).split(" ")[0]


class LightGBMConverter(SklearnApi):
    format = "lightgbm"
    tested = TESTED

    def check(self, model: Any) -> list[str]:
        if type(model).__name__ not in TESTED or not type(model).__module__.startswith("lightgbm"):
            raise unsupported(type(model).__name__, self.format)
        self.task(model)
        return []

    def describe(self, model: Any) -> str:
        return type(model).__name__ if not _is_booster(model) else f"Booster({_objective(model)})"

    def task(self, model: Any) -> str:
        if not _is_booster(model):
            return task_of(model)
        objective = _objective(model)
        if objective in _CLASSIFY:
            return CLASSIFICATION
        if objective in _REGRESS:
            return REGRESSION
        raise UnsupportedModel(f"LightGBM objective {objective} is not supported; supported: "
                               f"{', '.join(_CLASSIFY + _REGRESS)}")

    def prepare(self, model: Any, frame: pd.DataFrame) -> Sample:
        if _is_booster(model):  # a Booster's feature names are often Column_0...: go by position
            frame = align(frame, model.num_feature(), None)
            return Sample(frame, matrix_inputs(frame), native_frame=False)
        names = getattr(model, "feature_names_in_", None)
        names = [str(n) for n in names] if names is not None else None
        frame = align(frame, getattr(model, "n_features_in_", None), names)
        return Sample(frame, matrix_inputs(frame), native_frame=names is not None)

    def convert(self, model: Any, sample: Sample, opset: int) -> onnx.ModelProto:
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        types = [("input", FloatTensorType([None, len(sample.inputs[0].columns)]))]
        booster = model if _is_booster(model) else model.booster_
        split = _SPLIT_TREES if self.task(model) == REGRESSION and booster.num_trees() > _SPLIT_TREES \
            else None
        try:
            converted = convert_lightgbm(model, initial_types=types,
                                         target_opset=onnxmltools_opset(opset), zipmap=False,
                                         split=split)
        except Exception as exc:  # onnxmltools raises RuntimeError/KeyError/ValueError...
            raise ConversionError(
                f"onnxmltools cannot convert {self.describe(model)}: {first_line(exc, 200)}"
            ) from exc
        # onnxmltools declares the classifier's label output as shape [1]; onnxruntime then
        # warns on every batch larger than one row. The batch dimension is free: say so.
        for output in converted.graph.output:
            dims = output.type.tensor_type.shape.dim
            if len(dims) and dims[0].HasField("dim_value"):
                dims[0].dim_param = "N"
        return converted

    def predict(self, model: Any, sample: Sample) -> Outputs:
        if not _is_booster(model):
            return super().predict(model, sample)
        try:
            raw = np.asarray(model.predict(sample.native_input()), dtype=np.float64)
        except Exception as exc:  # LightGBMError for shape/NaN problems
            raise NativePredictError(first_line(exc, 200)) from exc
        if self.task(model) == REGRESSION:
            return Outputs(None, raw, "values")
        # binary boosters give the probability of class 1 only
        proba = np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw
        return Outputs(np.argmax(proba, axis=1).astype(np.int64), proba, "probabilities")

    def classes(self, model: Any) -> list[Any] | None:
        if _is_booster(model):
            if self.task(model) == REGRESSION:
                return None
            k = model.num_model_per_iteration()
            return list(range(2 if k == 1 else k))
        return super().classes(model)


CONVERTER = LightGBMConverter()
