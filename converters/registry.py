"""One converter per framework behind one interface, and the factory that picks one.

The conversion flow (conversion.py) only talks to `Converter`; each framework module
(sklearn_, xgboost_, lightgbm_, onnx_) imports its heavy libraries itself, so asking for the
ONNX passthrough never imports scikit-learn's converters and vice versa.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx
import pandas as pd
from serin.converters.errors import ConversionError, UnsupportedModel, first_line
from serin.converters.sample import Sample

CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclass(frozen=True)
class Outputs:
    """Predictions of one model on the sample, native or ONNX, in comparable shapes."""

    labels: np.ndarray | None  # [N] for classifiers, None for regressors
    scores: np.ndarray  # probabilities [N, K], decision scores [N] / [N, K], or values [N]
    score_kind: str  # "probabilities" | "scores" | "values"


class Converter(Protocol):
    format: str
    # Estimator class names proven by the model zoo in tests/converters (docs list them too).
    tested: tuple[str, ...]

    def check(self, model: Any) -> list[str]:
        """Raises UnsupportedModel naming the estimator and what is supported; returns warnings."""
        ...

    def describe(self, model: Any) -> str: ...

    def task(self, model: Any) -> str: ...

    def prepare(self, model: Any, frame: pd.DataFrame) -> Sample: ...

    def convert(self, model: Any, sample: Sample, opset: int) -> onnx.ModelProto: ...

    def widened(self, model: Any, sample: Sample, opset: int) -> onnx.ModelProto | None:
        """The model converted with float64 inputs, tried when the float32 graph fails parity;
        None where this converter has no such graph or it would be no more exact."""
        ...

    def predict(self, model: Any, sample: Sample) -> Outputs: ...

    def classes(self, model: Any) -> list[Any] | None: ...


_MODULES = {
    "sklearn": "serin.converters.sklearn_",
    "xgboost": "serin.converters.xgboost_",
    "lightgbm": "serin.converters.lightgbm_",
    "onnx": "serin.converters.onnx_",
}


def converter_for(fmt: str) -> Converter:
    module = importlib.import_module(_MODULES[fmt])
    converter: Converter = module.CONVERTER
    return converter


def unsupported(name: str, fmt: str, why: str = "has no ONNX converter") -> UnsupportedModel:
    tested = ", ".join(converter_for(fmt).tested)
    return UnsupportedModel(f"unsupported estimator {name}: it {why}; supported {fmt} estimators: {tested}")


def task_of(model: Any) -> str:
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(model):
        return CLASSIFICATION
    if is_regressor(model):
        return REGRESSION
    if hasattr(model, "classes_"):
        return CLASSIFICATION
    raise UnsupportedModel(
        f"{type(model).__name__} is neither a classifier nor a regressor; Serin converts models "
        "that predict (a Pipeline must end in an estimator)"
    )


def predict_sklearn_api(model: Any, x: Any, task: str) -> Outputs:
    """Native predictions through the scikit-learn API (also XGBoost's and LightGBM's wrappers)."""
    try:
        if task == REGRESSION:
            values = np.asarray(model.predict(x), dtype=np.float64)
            return Outputs(None, values.reshape(len(values), -1).squeeze(axis=1)
                           if values.ndim == 2 and values.shape[1] == 1 else values, "values")
        labels = np.asarray(model.predict(x))
        if hasattr(model, "predict_proba"):
            return Outputs(labels, np.asarray(model.predict_proba(x), dtype=np.float64),
                           "probabilities")
        return Outputs(labels, np.asarray(model.decision_function(x), dtype=np.float64), "scores")
    except ValueError as exc:
        raise NativePredictError(first_line(exc, 200)) from exc


class SklearnApi:
    """Native predictions and class labels through the scikit-learn estimator API, shared by the
    converters whose models speak it (scikit-learn, and XGBoost's and LightGBM's wrappers)."""

    def widened(self, model: Any, sample: Sample, opset: int) -> onnx.ModelProto | None:
        # XGBoost rounds its input to float32 itself; onnxmltools writes LightGBM's thresholds
        # in float32: neither gets more exact with float64 inputs.
        return None

    def predict(self, model: Any, sample: Sample) -> Outputs:
        return predict_sklearn_api(model, sample.native_input(), task_of(model))

    def classes(self, model: Any) -> list[Any] | None:
        classes = getattr(model, "classes_", None)
        return list(classes) if classes is not None else None


class NativePredictError(ConversionError):
    """The native model refused the sample (NaN, dtype, shape); conversion.py words the message."""


def onnxmltools_opset(requested: int) -> int:
    """onnxmltools refuses opsets above the newest it knows: lower the target and say so."""
    import warnings

    from onnxmltools.convert.common.onnx_ex import get_maximum_opset_supported

    highest = int(get_maximum_opset_supported())
    if requested > highest:
        warnings.warn(f"target opset {requested} lowered to {highest}, the newest onnxmltools "
                      "supports; the model runs on any runtime with opset >= " f"{highest}",
                      UserWarning, stacklevel=2)
        return highest
    return requested

