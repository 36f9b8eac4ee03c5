"""XGBoost's scikit-learn estimators (pickled, or native .json/.ubj files) via onnxmltools."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import onnx
import pandas as pd
from serin.converters.errors import ConversionError, UnsupportedModel, first_line
from serin.converters.registry import SklearnApi, onnxmltools_opset, task_of, unsupported
from serin.converters.sample import Sample, align, matrix_inputs

TESTED: tuple[str, ...] = ("XGBClassifier", "XGBRegressor")


def load_native(path: Path) -> Any:
    """A native model file, wrapped in the sklearn estimator its objective implies."""
    import xgboost as xgb

    try:
        booster = xgb.Booster()
        booster.load_model(str(path))
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    except (xgb.core.XGBoostError, ValueError, KeyError) as exc:
        raise ConversionError(
            f"cannot load XGBoost model {path.name}: the file is corrupt or not an XGBoost model "
            f"({first_line(exc, 120)})"
        ) from exc
    if objective.startswith(("binary:", "multi:")):
        model: Any = xgb.XGBClassifier()
    elif objective.startswith(("reg:", "count:")):
        model = xgb.XGBRegressor()
    else:
        raise UnsupportedModel(
            f"XGBoost objective {objective} is not supported; supported: binary:*, multi:*, reg:*"
        )
    model.load_model(str(path))
    return model


class XGBoostConverter(SklearnApi):
    format = "xgboost"
    tested = TESTED

    def check(self, model: Any) -> list[str]:
        if type(model).__name__ not in TESTED or not type(model).__module__.startswith("xgboost"):
            raise unsupported(type(model).__name__, self.format)
        return []

    def describe(self, model: Any) -> str:
        return type(model).__name__

    def task(self, model: Any) -> str:
        return task_of(model)

    def prepare(self, model: Any, frame: pd.DataFrame) -> Sample:
        names = getattr(model, "feature_names_in_", None)
        names = [str(n) for n in names] if names is not None else None
        frame = align(frame, getattr(model, "n_features_in_", None), names)
        return Sample(frame, matrix_inputs(frame), native_frame=names is not None)

    def convert(self, model: Any, sample: Sample, opset: int) -> onnx.ModelProto:
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        # A model trained on a DataFrame carries feature names the converter rejects (it wants
        # f0, f1, ...): convert a copy without them; the input is positional anyway.
        stripped = copy.deepcopy(model)
        stripped.get_booster().feature_names = None
        types = [("input", FloatTensorType([None, len(sample.inputs[0].columns)]))]
        try:
            return convert_xgboost(stripped, initial_types=types, target_opset=onnxmltools_opset(opset))
        except Exception as exc:  # onnxmltools raises RuntimeError/KeyError/ValueError...
            raise ConversionError(
                f"onnxmltools cannot convert {type(model).__name__}: {first_line(exc, 200)}"
            ) from exc


CONVERTER = XGBoostConverter()
