"""Converters of Serin's own for steps whose skl2onnx graph cannot run on float64 inputs.

skl2onnx maps SimpleImputer to ai.onnx.ml's Imputer, which onnxruntime implements for float32
and int64 only ("Could not find an implementation for Imputer(1)" on a double input). On a float64
input the same replacement is written with standard operators (IsNaN or Equal, then Where), which
onnxruntime runs in double; every other input keeps skl2onnx's converter.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def convert_imputer(scope: Any, operator: Any, container: Any) -> None:
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType
    from skl2onnx.operator_converters.common import concatenate_variables
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer

    imputer = operator.raw_operator
    if not all(isinstance(v.type, DoubleTensorType) for v in operator.inputs):
        convert_sklearn_imputer(scope, operator, container)
        return
    if getattr(imputer, "add_indicator", False):
        raise NotImplementedError("SimpleImputer(add_indicator=True) on a float64 input")
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    if np.isnan(statistics).any():  # scikit-learn drops columns it could not learn a value for
        raise NotImplementedError("SimpleImputer with an all-missing column on a float64 input")
    missing = imputer.missing_values
    features = concatenate_variables(scope, operator.inputs, container)
    is_missing = scope.get_unique_variable_name("imputer_missing")
    if isinstance(missing, float) and np.isnan(missing):
        container.add_node("IsNaN", features, is_missing,
                           name=scope.get_unique_operator_name("ImputerIsNaN"))
    elif isinstance(missing, (int, float)):
        value = scope.get_unique_variable_name("imputer_missing_value")
        container.add_initializer(value, TensorProto.DOUBLE, [1], [float(missing)])
        container.add_node("Equal", [features, value], is_missing,
                           name=scope.get_unique_operator_name("ImputerEqual"))
    else:
        raise NotImplementedError(f"SimpleImputer(missing_values={missing!r}) on a float64 input")
    fill = scope.get_unique_variable_name("imputer_statistics")
    container.add_initializer(fill, TensorProto.DOUBLE, [1, statistics.size], statistics.tolist())
    container.add_node("Where", [is_missing, fill, features], operator.outputs[0].full_name,
                       name=scope.get_unique_operator_name("ImputerWhere"))


def register() -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes
    from sklearn.impute import SimpleImputer

    update_registered_converter(SimpleImputer, "SklearnSimpleImputer",
                                calculate_sklearn_imputer_output_shapes, convert_imputer)
