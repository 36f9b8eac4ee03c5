"""scikit-learn estimators and Pipelines (which may hold XGBoost/LightGBM steps) via skl2onnx."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import onnx
import pandas as pd
from serin.converters.errors import ConversionError, UnsupportedModel, first_line
from serin.converters.registry import (
    NativePredictError,
    Outputs,
    SklearnApi,
    predict_sklearn_api,
    task_of,
    unsupported,
)
from serin.converters.sample import (
    InputSpec,
    Sample,
    align,
    column_inputs,
    matrix_inputs,
)

# Every name here is exercised by the zoo (serin.converters.zoo) and passes parity there.
TESTED: tuple[str, ...] = (
    "BernoulliNB", "ColumnTransformer", "DecisionTreeClassifier", "DecisionTreeRegressor",
    "ElasticNet", "ExtraTreesClassifier", "ExtraTreesRegressor", "GaussianNB",
    "GradientBoostingClassifier", "GradientBoostingRegressor", "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor", "KNeighborsClassifier", "KNeighborsRegressor", "Lasso",
    "LGBMClassifier", "LGBMRegressor", "LinearRegression", "LinearSVC", "LogisticRegression",
    "MinMaxScaler", "MLPClassifier", "MLPRegressor", "MultinomialNB", "OneHotEncoder", "Pipeline",
    "RandomForestClassifier", "RandomForestRegressor", "Ridge", "SelectKBest", "SGDClassifier",
    "SGDRegressor", "SimpleImputer", "StandardScaler", "SVC", "SVR", "VarianceThreshold",
    "VotingClassifier", "XGBClassifier", "XGBRegressor",
)

# Estimators skl2onnx claims to convert but that fail Serin's zoo with the pinned versions:
# refused up front with the reason, instead of producing a model that fails parity.
KNOWN_BROKEN: dict[str, str] = {}


@functools.cache
def _register_converters() -> None:
    """Serin's own converters where skl2onnx's are not exact (serin.converters.hgb), and the
    XGBoost/LightGBM ones for Pipelines."""
    from serin.converters import float64_ops, hgb

    hgb.register()
    float64_ops.register()
    _register_boosters()


def _register_boosters() -> None:
    """Teaches skl2onnx the XGBoost/LightGBM estimators so Pipelines holding them convert.

    Without this skl2onnx raises MissingShapeCalculator (see DESIGN.md, known pitfalls).
    """
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    clf_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(XGBClassifier, "XGBoostXGBClassifier",
                                    calculate_linear_classifier_output_shapes, convert_xgboost,
                                    options=clf_options)
        update_registered_converter(XGBRegressor, "XGBoostXGBRegressor",
                                    calculate_linear_regressor_output_shapes, convert_xgboost)
    except ImportError:
        pass
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(LGBMClassifier, "LightGbmLGBMClassifier",
                                    calculate_linear_classifier_output_shapes, convert_lightgbm,
                                    options=clf_options)
        update_registered_converter(LGBMRegressor, "LightGbmLGBMRegressor",
                                    calculate_linear_regressor_output_shapes, convert_lightgbm,
                                    options={"split": None})
    except ImportError:
        pass


def _children(model: Any) -> list[Any] | None:
    """The estimators a composite model holds ("drop" / "passthrough" left out), None for a leaf."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import VotingClassifier, VotingRegressor
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(model, Pipeline):
        children = [step for _, step in model.steps]
    elif isinstance(model, ColumnTransformer):
        children = [t for _, t, _ in getattr(model, "transformers_", model.transformers)]
    elif isinstance(model, FeatureUnion):
        children = [t for _, t in model.transformer_list]
    elif isinstance(model, (VotingClassifier, VotingRegressor)):
        children = getattr(model, "estimators_", None) or [e for _, e in model.estimators]
    else:
        return None
    return [c for c in children if c is not None and not isinstance(c, str)]


def components(model: Any) -> Iterator[Any]:
    """The model and every estimator nested in Pipelines, ColumnTransformers, FeatureUnions and
    voting ensembles."""
    yield model
    for child in _children(model) or []:
        yield from components(child)


def describe(model: Any) -> str:
    children = _children(model)
    if children is None:
        return type(model).__name__
    return f"{type(model).__name__}({', '.join(describe(c) for c in children)})"


def _selects_by_name(model: Any) -> bool:
    from sklearn.compose import ColumnTransformer

    return any(isinstance(c, ColumnTransformer) for c in components(model))


class SklearnConverter(SklearnApi):
    format = "sklearn"
    tested = TESTED

    def check(self, model: Any) -> list[str]:
        _register_converters()
        from skl2onnx._supported_operators import sklearn_operator_name_map

        notes: list[str] = []
        for part in components(model):
            name = type(part).__name__
            if type(part) not in sklearn_operator_name_map:
                raise unsupported(name, self.format)
            if name in KNOWN_BROKEN:
                raise unsupported(name, self.format, KNOWN_BROKEN[name])
            if _is_hgb(part):
                from serin.converters import hgb

                try:
                    hgb.categories(part)
                except hgb.UnsupportedHGB as exc:
                    raise UnsupportedModel(f"{name}: {exc}") from exc
            if name not in TESTED:
                notes.append(f"{name} converts with skl2onnx but is not in Serin's tested zoo; "
                             "only the parity proof vouches for it")
        task_of(model)
        return notes

    def describe(self, model: Any) -> str:
        return describe(model)

    def task(self, model: Any) -> str:
        return task_of(model)

    def prepare(self, model: Any, frame: pd.DataFrame) -> Sample:
        names = getattr(model, "feature_names_in_", None)
        names = [str(n) for n in names] if names is not None else None
        frame = align(frame, getattr(model, "n_features_in_", None), names)
        # Per-column inputs exist for ColumnTransformers (they select columns by name and mix
        # types); anything else takes one numeric matrix, and text there is a sample error.
        if _selects_by_name(model):
            return Sample(frame, column_inputs(frame), native_frame=True, layout="columns")
        return Sample(frame, matrix_inputs(frame), native_frame=names is not None)

    def predict(self, model: Any, sample: Sample) -> Outputs:
        from serin.converters import voting

        x = sample.native_input()
        try:
            # Hard voting has neither predict_proba nor decision_function: its scores are the
            # members' weighted votes, which its graph outputs as probabilities.
            shares = voting.vote_shares(model, x)
            if shares is not None:
                return Outputs(np.asarray(model.predict(x)), shares, "probabilities")
        except ValueError as exc:
            raise NativePredictError(first_line(exc, 200)) from exc
        return predict_sklearn_api(model, x, task_of(model))

    def convert(self, model: Any, sample: Sample, opset: int) -> onnx.ModelProto:
        _register_converters()
        if wants_float64(model):
            widened = self.widened(model, sample, opset)
            if widened is not None:
                return widened
        return self._convert(model, sample.inputs, opset)

    def widened(self, model: Any, sample: Sample, opset: int) -> onnx.ModelProto | None:
        _register_converters()
        wide = tuple(replace(s, dtype="float64") if s.dtype == "float32" else s
                     for s in sample.inputs)
        try:
            converted = self._convert(with_float32_casts(model), wide, opset)
            runnable(converted)
            return converted
        except Exception as exc:  # the float32 graph is what every other model gets
            warnings.warn(f"float64 inputs for {describe(model)} failed ({first_line(exc, 160)}); "
                          "float32 inputs only", RuntimeWarning, stacklevel=2)
            return None

    def _convert(self, model: Any, inputs: tuple[InputSpec, ...], opset: int) -> onnx.ModelProto:
        from serin.converters import voting
        from skl2onnx import convert_sklearn
        from sklearn.preprocessing import StandardScaler

        # What the native model predicts, in a form skl2onnx converts; the parity proof
        # compares the graph with the native model, not with this copy.
        model = voting.for_onnx(model)

        # ai.onnx.ml 3 is the newest version skl2onnx's tree converters (and onnxmltools' ones
        # registered for Pipelines) emit; leaving it implicit fails with XGBoost/LightGBM steps.
        target = {"": opset, "ai.onnx.ml": 3}
        # Scale in double and cast once: a float32 division before a tree flips branches
        # (skl2onnx's documented remedy, DESIGN.md known pitfalls). With float64 inputs the
        # scaler computes in float64 anyway.
        scalers = [p for p in components(model) if isinstance(p, StandardScaler)]
        zipmap_off = [task_of(model) == "classification"]  # tensors, not ZipMap's sequence of maps

        def attempt(inputs: tuple[InputSpec, ...]) -> onnx.ModelProto:
            types = [(s.name, _tensor_type(s.dtype, len(s.columns))) for s in inputs]
            while True:
                # A new dict each time: skl2onnx copies a Pipeline's options into its steps'.
                options: dict[Any, Any] = {id(p): {"div": "div_cast"} for p in scalers}
                if zipmap_off[0]:
                    options[id(model)] = {"zipmap": False}
                try:
                    return convert_sklearn(model, initial_types=types, target_opset=target,
                                           options=options)
                except NameError as exc:  # no zipmap option (e.g. LinearSVC, also in a Pipeline)
                    if "zipmap" not in str(exc) or not zipmap_off[0]:
                        raise
                    zipmap_off[0] = False

        try:
            try:
                return attempt(inputs)
            except Exception as exc:
                # Integer columns go in as int64 when every converter on their path accepts
                # it (OneHotEncoder does); imputers and scalers want floats: retry as float.
                if "Int64TensorType" not in str(exc):
                    raise
                floats = "float64" if any(s.dtype == "float64" for s in inputs) else "float32"
                return attempt(tuple(replace(s, dtype=floats) if s.dtype == "int64" else s
                                     for s in inputs))
        except Exception as exc:  # skl2onnx raises RuntimeError/TypeError/NotImplementedError...
            raise ConversionError(
                f"skl2onnx cannot convert {describe(model)}: {first_line(exc, 200)}"
            ) from exc


def _is_hgb(part: Any) -> bool:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    return isinstance(part, (HistGradientBoostingClassifier, HistGradientBoostingRegressor))


def _casts_to_float32(part: Any) -> bool:
    """Estimators whose native predict rounds its input to float32 before comparing it with a
    threshold: scikit-learn's trees and forests, and XGBoost. LightGBM compares in float64 but
    onnxmltools writes float32 thresholds, so it too is exactly as good on a float32 input."""
    from sklearn.ensemble import BaseEnsemble, VotingClassifier
    from sklearn.tree import BaseDecisionTree

    if _is_hgb(part):
        return False
    if isinstance(part, VotingClassifier):
        # Members see one input: rounding it once for all is exact for the trees, and the
        # others see what a float32 graph gives them anyway.
        return any(_casts_to_float32(m) for m in _children(part) or [])
    if isinstance(part, (BaseDecisionTree, BaseEnsemble)):
        return True
    return type(part).__module__.split(".")[0] in ("xgboost", "lightgbm")


def wants_float64(model: Any) -> bool:
    """Whether the graph should take float64 inputs: where the native model compares float64
    values with its thresholds and a float32 graph would send a value near one down the other
    branch. That is HistGradientBoosting (it compares float64 with float64 thresholds, often
    training values themselves), and trees behind a transformer in a Pipeline (the transformer
    computes in float64 and the tree rounds its output once; a float32 graph rounds the input,
    then the output of a float32 computation)."""
    from sklearn.pipeline import Pipeline

    if any(_is_hgb(p) for p in components(model)):
        return True
    if isinstance(model, Pipeline):
        steps = [s for _, s in model.steps if s is not None and not isinstance(s, str)]
        return any(_casts_to_float32(s) for s in steps[1:])
    return False


def with_float32_casts(model: Any) -> Any:
    """The model as skl2onnx should see it on a float64 input: a CastTransformer(float32) in
    front of each estimator that rounds its input to float32 natively, so the graph rounds
    exactly where scikit-learn, XGBoost and LightGBM do. Fitted steps are shared, not copied;
    the native model is never changed."""
    from skl2onnx.sklapi import CastTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline):
        return model
    steps: list[tuple[str, Any]] = []
    for name, step in model.steps:
        if _casts_to_float32(step):
            steps.append((f"serin_float32_before_{name}", CastTransformer(dtype=np.float32)))
        steps.append((name, with_float32_casts(step)))
    return Pipeline(steps)


def runnable(model: onnx.ModelProto) -> None:
    """Raises when onnxruntime cannot load the graph (a converter declared a type it cannot run)."""
    from serin.converters import parity

    parity.session(model.SerializeToString())


def _tensor_type(dtype: str, width: int) -> Any:
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    kinds = {"float32": FloatTensorType, "float64": DoubleTensorType, "int64": Int64TensorType,
             "string": StringTensorType}
    return kinds[dtype]([None, width])


CONVERTER = SklearnConverter()
