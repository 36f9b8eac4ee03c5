"""scikit-learn estimators and Pipelines (which may hold XGBoost/LightGBM steps) via skl2onnx."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import onnx
import pandas as pd
from serin.converters.errors import ConversionError, first_line
from serin.converters.registry import (
    SklearnApi,
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
    "XGBClassifier", "XGBRegressor",
)

# Estimators skl2onnx claims to convert but that fail Serin's zoo with the pinned versions:
# refused up front with the reason, instead of producing a model that fails parity.
KNOWN_BROKEN: dict[str, str] = {}


@functools.cache
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


def components(model: Any) -> Iterator[Any]:
    """The model and every estimator nested in Pipelines, ColumnTransformers and FeatureUnions."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    yield model
    if isinstance(model, Pipeline):
        children = [step for _, step in model.steps]
    elif isinstance(model, ColumnTransformer):
        children = [t for _, t, _ in getattr(model, "transformers_", model.transformers)]
    elif isinstance(model, FeatureUnion):
        children = [t for _, t in model.transformer_list]
    else:
        children = []
    for child in children:
        if child is not None and not isinstance(child, str):  # "drop" / "passthrough"
            yield from components(child)


def describe(model: Any) -> str:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(model, Pipeline):
        children = [s for _, s in model.steps]
    elif isinstance(model, ColumnTransformer):
        children = [t for _, t, _ in getattr(model, "transformers_", model.transformers)]
    elif isinstance(model, FeatureUnion):
        children = [t for _, t in model.transformer_list]
    else:
        return type(model).__name__
    inner = ", ".join(describe(c) for c in children if c is not None and not isinstance(c, str))
    return f"{type(model).__name__}({inner})"


def _selects_by_name(model: Any) -> bool:
    from sklearn.compose import ColumnTransformer

    return any(isinstance(c, ColumnTransformer) for c in components(model))


class SklearnConverter(SklearnApi):
    format = "sklearn"
    tested = TESTED

    def check(self, model: Any) -> list[str]:
        _register_boosters()
        from skl2onnx._supported_operators import sklearn_operator_name_map

        warnings: list[str] = []
        for part in components(model):
            name = type(part).__name__
            if type(part) not in sklearn_operator_name_map:
                raise unsupported(name, self.format)
            if name in KNOWN_BROKEN:
                raise unsupported(name, self.format, KNOWN_BROKEN[name])
            if name not in TESTED:
                warnings.append(f"{name} converts with skl2onnx but is not in Serin's tested zoo; "
                                "only the parity proof vouches for it")
        task_of(model)
        return warnings

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

    def convert(self, model: Any, sample: Sample, opset: int) -> onnx.ModelProto:
        _register_boosters()
        from skl2onnx import convert_sklearn
        from sklearn.preprocessing import StandardScaler

        # ai.onnx.ml 3 is the newest version skl2onnx's tree converters (and onnxmltools' ones
        # registered for Pipelines) emit; leaving it implicit fails with XGBoost/LightGBM steps.
        target = {"": opset, "ai.onnx.ml": 3}
        # Scale in double and cast once: a float32 division before a tree flips branches
        # (skl2onnx's documented remedy, DESIGN.md known pitfalls).
        options: dict[Any, Any] = {
            id(p): {"div": "div_cast"} for p in components(model) if isinstance(p, StandardScaler)
        }
        if task_of(model) == "classification":
            options[id(model)] = {"zipmap": False}  # tensors, not ZipMap's sequence of maps

        def attempt(inputs: tuple[InputSpec, ...]) -> onnx.ModelProto:
            types = [(s.name, _tensor_type(s.dtype, len(s.columns))) for s in inputs]
            try:
                return convert_sklearn(model, initial_types=types, target_opset=target,
                                       options=options)
            except NameError as exc:  # the estimator has no zipmap option (e.g. LinearSVC)
                if "zipmap" not in str(exc) or id(model) not in options:
                    raise
                options.pop(id(model))
                return convert_sklearn(model, initial_types=types, target_opset=target,
                                       options=options)

        try:
            try:
                return attempt(sample.inputs)
            except Exception as exc:
                # Integer columns go in as int64 when every converter on their path accepts
                # it (OneHotEncoder does); imputers and scalers want floats: retry as float32.
                if "Int64TensorType" not in str(exc):
                    raise
                return attempt(tuple(InputSpec(s.name, "float32" if s.dtype == "int64" else s.dtype,
                                               s.columns) for s in sample.inputs))
        except Exception as exc:  # skl2onnx raises RuntimeError/TypeError/NotImplementedError...
            raise ConversionError(
                f"skl2onnx cannot convert {describe(model)}: {first_line(exc, 200)}"
            ) from exc


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
