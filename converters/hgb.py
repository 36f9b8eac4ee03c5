"""Serin's own converter for scikit-learn's HistGradientBoosting{Regressor,Classifier}.

skl2onnx 1.20's converter is not exact for these models, for three reasons measured against
scikit-learn 1.9 (docs/converters.md, "HistGradientBoosting"):
- HistGradientBoosting compares float64 features with float64 thresholds, and its thresholds are
  often training values themselves. skl2onnx writes float32 thresholds (it has no `*_as_tensor`
  attributes), so a value within float32 rounding of a threshold takes the other branch; with a
  double input the float32 thresholds are worse, not better.
- Native categorical splits (bitsets) are ignored: a categorical node becomes `x <= 0`.
- A regressor's link is ignored: `loss="poisson"` or `"gamma"` serves log-predictions.
This converter writes one ai.onnx.ml 3 TreeEnsembleRegressor with float64 thresholds, leaves and
baseline (`*_as_tensor`), takes a float64 input (a float32 one is widened first), turns each
categorical split into a chain of BRANCH_EQ nodes on the raw category values (folding in the
model's own OrdinalEncoder, unknown categories going where missing values go), and applies the
link, the sigmoid or the softmax in float64 afterwards.

onnxruntime's TreeEnsembleRegressor returns float32 sums; they are widened back to float64 before
the link. That rounding is ~6e-8 relative, far inside the parity tolerance; branch decisions, which
are what flips a prediction by a whole leaf value, are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3
_MAX_CATEGORY = 256  # HistGradientBoosting's bitsets hold category codes 0..255


class UnsupportedHGB(ValueError):
    """The model uses something this converter cannot express exactly (the message says what)."""


@dataclass
class Ensemble:
    """TreeEnsembleRegressor attribute lists, filled tree by tree."""

    n_targets: int
    treeids: list[int] = field(default_factory=list)
    nodeids: list[int] = field(default_factory=list)
    featureids: list[int] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    true_ids: list[int] = field(default_factory=list)
    false_ids: list[int] = field(default_factory=list)
    missing_true: list[int] = field(default_factory=list)
    target_treeids: list[int] = field(default_factory=list)
    target_nodeids: list[int] = field(default_factory=list)
    target_ids: list[int] = field(default_factory=list)
    target_weights: list[float] = field(default_factory=list)

    def node(self, tree: int, node: int, feature: int, mode: str, value: float, true_id: int,
             false_id: int, missing_true: bool) -> None:
        self.treeids.append(tree)
        self.nodeids.append(node)
        self.featureids.append(feature)
        self.modes.append(mode)
        self.values.append(value)
        self.true_ids.append(true_id)
        self.false_ids.append(false_id)
        self.missing_true.append(int(missing_true))

    def leaf(self, tree: int, node: int, target: int, weight: float) -> None:
        self.node(tree, node, 0, "LEAF", 0.0, 0, 0, False)
        self.target_treeids.append(tree)
        self.target_nodeids.append(node)
        self.target_ids.append(target)
        self.target_weights.append(weight)

    def attributes(self, base_values: np.ndarray) -> dict[str, Any]:
        from onnx import numpy_helper

        def doubles(name: str, values: Any) -> Any:
            return numpy_helper.from_array(np.asarray(values, dtype=np.float64).ravel(), name)

        return {
            "n_targets": self.n_targets, "post_transform": "NONE",
            "nodes_treeids": self.treeids, "nodes_nodeids": self.nodeids,
            "nodes_featureids": self.featureids, "nodes_modes": self.modes,
            "nodes_truenodeids": self.true_ids, "nodes_falsenodeids": self.false_ids,
            "nodes_missing_value_tracks_true": self.missing_true,
            "nodes_values_as_tensor": doubles("nodes_values", self.values),
            "target_treeids": self.target_treeids, "target_nodeids": self.target_nodeids,
            "target_ids": self.target_ids,
            "target_weights_as_tensor": doubles("target_weights", self.target_weights),
            "base_values_as_tensor": doubles("base_values", base_values),
        }


@dataclass(frozen=True)
class Categories:
    """How the model reads its categorical columns: which input column each tree feature is, and
    the raw value behind each category code (HistGradientBoosting ordinal-encodes categorical
    columns itself when fitted with `categorical_features`, and moves them first)."""

    column_of: tuple[int, ...]  # tree feature index -> input column index
    raw_values: dict[int, np.ndarray]  # tree feature index -> raw value of code 0, 1, ...
    known: dict[int, frozenset[int]]  # tree feature index -> codes seen in training


def categories(model: Any) -> Categories:
    n = int(model.n_features_in_)
    preprocessor = getattr(model, "_preprocessor", None)
    if preprocessor is None:
        return Categories(tuple(range(n)), {}, {})
    is_cat = np.asarray(model.is_categorical_, dtype=bool)
    # The preprocessor's output: the encoded categorical columns, then the numeric ones, each in
    # input order (ColumnTransformer([("encoder", ..., is_cat), ("numerical", ..., ~is_cat)])).
    column_of = tuple(int(i) for i in np.concatenate([np.flatnonzero(is_cat),
                                                      np.flatnonzero(~is_cat)]))
    encoder = preprocessor.named_transformers_["encoder"]
    known_bitsets, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
    raw_values: dict[int, np.ndarray] = {}
    known: dict[int, frozenset[int]] = {}
    for feature, values in enumerate(encoder.categories_):
        values = np.asarray(values)
        if values.dtype.kind not in "iuf":
            raise UnsupportedHGB(
                f"categorical column {column_of[feature]} holds non-numeric categories (e.g. "
                f"{values[0]!r}); encode them first, e.g. make_pipeline(ColumnTransformer("
                "[(\"cat\", OrdinalEncoder(), [...])], remainder=\"passthrough\"), "
                "HistGradientBoosting...(categorical_features=[...]))")
        values = values.astype(np.float64)
        raw_values[feature] = values[~np.isnan(values)]
        known[feature] = _bits(known_bitsets[f_idx_map[feature]])
    return Categories(column_of, raw_values, known)


def _bits(bitset: np.ndarray) -> frozenset[int]:
    words = np.asarray(bitset, dtype=np.uint32)
    return frozenset(int(c) for c in range(_MAX_CATEGORY) if words[c // 32] >> (c % 32) & 1)


def ensemble(model: Any) -> Ensemble:
    """The model's trees as one TreeEnsembleRegressor with one target per tree of an iteration."""
    per_iteration = int(model.n_trees_per_iteration_)
    cats = categories(model)
    out = Ensemble(per_iteration)
    for iteration, predictors in enumerate(model._predictors):
        for target, predictor in enumerate(predictors):
            _add_tree(out, iteration * per_iteration + target, target, predictor, cats)
    return out


def _add_tree(out: Ensemble, tree: int, target: int, predictor: Any, cats: Categories) -> None:
    nodes = predictor.nodes
    next_id = len(nodes)  # ids for the extra nodes of categorical chains
    for i, node in enumerate(nodes):
        if node["is_leaf"]:
            out.leaf(tree, i, target, float(node["value"]))
            continue
        feature = int(node["feature_idx"])
        column = cats.column_of[feature]
        left, right = int(node["left"]), int(node["right"])
        missing_left = bool(node["missing_go_to_left"])
        if not node["is_categorical"]:
            out.node(tree, i, column, "BRANCH_LEQ", float(node["num_threshold"]), left, right,
                     missing_left)
            continue
        # scikit-learn: NaN, negative and unknown codes go where missing values go; a code in the
        # bitset goes left, any other known code right. A chain of equality tests on the raw
        # values of the codes that do NOT take the missing side ends in the missing side.
        to_left = _bits(predictor.raw_left_cat_bitsets[int(node["bitset_idx"])])
        known = cats.known.get(feature)
        if known is None:
            raise UnsupportedHGB(f"tree {tree} splits feature {feature} by category but the model "
                                 "records no categories for it")
        tested, tested_goes, otherwise = (
            (sorted(known - to_left), right, left) if missing_left else (sorted(to_left), left, right))
        raw = cats.raw_values[feature]
        if not tested:  # every code takes the missing side: an always-true test
            out.node(tree, i, column, "BRANCH_LEQ", float("inf"), otherwise, otherwise, True)
            continue
        ids = [i, *range(next_id, next_id + len(tested) - 1)]
        next_id += len(tested) - 1
        for k, (node_id, code) in enumerate(zip(ids, tested, strict=True)):
            false_id = ids[k + 1] if k + 1 < len(ids) else otherwise
            out.node(tree, node_id, column, "BRANCH_EQ", float(raw[code]), tested_goes, false_id,
                     False)


def link(model: Any) -> str:
    """The inverse link a regressor applies to its raw sum: "identity" or "exp"."""
    name = type(model._loss.link).__name__
    links = {"IdentityLink": "identity", "LogLink": "exp"}
    if name not in links:
        raise UnsupportedHGB(f"loss {model.loss!r} uses a {name} this converter does not know")
    return links[name]


def convert(scope: Any, operator: Any, container: Any) -> None:
    """skl2onnx converter: registered for both estimators, so Pipelines holding them convert too."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = operator.raw_operator
    source = operator.inputs[0].full_name
    if not isinstance(operator.inputs[0].type, DoubleTensorType):
        widened = scope.get_unique_variable_name("hgb_input_double")
        container.add_node("Cast", source, widened, to=TensorProto.DOUBLE,
                           name=scope.get_unique_operator_name("HgbCast"))
        source = widened
    trees = ensemble(model)
    raw32 = scope.get_unique_variable_name("hgb_raw_float")
    container.add_node("TreeEnsembleRegressor", source, raw32, op_domain=ML_DOMAIN,
                       op_version=ML_OPSET, name=scope.get_unique_operator_name("HgbTrees"),
                       **trees.attributes(np.asarray(model._baseline_prediction).ravel()))
    raw = _cast(scope, container, raw32, TensorProto.DOUBLE, "hgb_raw")
    if isinstance(model, HistGradientBoostingClassifier):
        _classifier_outputs(scope, operator, container, model, raw)
    else:
        value = raw
        if link(model) == "exp":
            value = scope.get_unique_variable_name("hgb_value")
            container.add_node("Exp", raw, value, name=scope.get_unique_operator_name("HgbLink"))
        _to_output(scope, container, value, operator.outputs[0])


def _classifier_outputs(scope: Any, operator: Any, container: Any, model: Any, raw: str) -> None:
    from onnx import TensorProto

    classes = np.asarray(model.classes_)
    if len(classes) == 2:
        # proba = [1 - expit(raw), expit(raw)]; label = classes[raw > 0] (ties go to class 0, as
        # scikit-learn's "> 0"): ArgMax over [0, raw] picks the first index on a tie.
        p1 = scope.get_unique_variable_name("hgb_p1")
        container.add_node("Sigmoid", raw, p1, name=scope.get_unique_operator_name("HgbSigmoid"))
        one = scope.get_unique_variable_name("hgb_one")
        container.add_initializer(one, TensorProto.DOUBLE, [1], [1.0])
        p0 = scope.get_unique_variable_name("hgb_p0")
        container.add_node("Sub", [one, p1], p0, name=scope.get_unique_operator_name("HgbSub"))
        proba = scope.get_unique_variable_name("hgb_proba")
        container.add_node("Concat", [p0, p1], proba, axis=1,
                           name=scope.get_unique_operator_name("HgbConcat"))
        zeros = scope.get_unique_variable_name("hgb_zero")
        container.add_node("Sub", [raw, raw], zeros, name=scope.get_unique_operator_name("HgbSub"))
        scores = scope.get_unique_variable_name("hgb_scores")
        container.add_node("Concat", [zeros, raw], scores, axis=1,
                           name=scope.get_unique_operator_name("HgbConcat"))
    else:
        proba = scope.get_unique_variable_name("hgb_proba")
        container.add_node("Softmax", raw, proba, axis=1,
                           name=scope.get_unique_operator_name("HgbSoftmax"))
        scores = raw
    index = scope.get_unique_variable_name("hgb_index")
    container.add_node("ArgMax", scores, index, axis=1, keepdims=0,
                       name=scope.get_unique_operator_name("HgbArgMax"))
    labels = scope.get_unique_variable_name("hgb_classes")
    if classes.dtype.kind in "iub":
        container.add_initializer(labels, TensorProto.INT64, [len(classes)],
                                  [int(c) for c in classes])
    elif classes.dtype.kind in "OUS":
        container.add_initializer(labels, TensorProto.STRING, [len(classes)],
                                  [str(c).encode() for c in classes])
    else:
        raise UnsupportedHGB(f"class labels of dtype {classes.dtype} (need integers or strings)")
    container.add_node("Gather", [labels, index], operator.outputs[0].full_name, axis=0,
                       name=scope.get_unique_operator_name("HgbLabel"))
    _to_output(scope, container, proba, operator.outputs[1])


def _cast(scope: Any, container: Any, source: str, to: int, hint: str) -> str:
    out = scope.get_unique_variable_name(hint)
    container.add_node("Cast", source, out, to=to, name=scope.get_unique_operator_name("HgbCast"))
    return out


def _to_output(scope: Any, container: Any, source: str, variable: Any) -> None:
    """Writes `source` (float64) into the declared output, casting if it is declared float32."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType

    to = TensorProto.DOUBLE if isinstance(variable.type, DoubleTensorType) else TensorProto.FLOAT
    container.add_node("Cast", source, variable.full_name, to=to,
                       name=scope.get_unique_operator_name("HgbOut"))


def register() -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    update_registered_converter(HistGradientBoostingClassifier,
                                "SklearnHistGradientBoostingClassifier",
                                calculate_linear_classifier_output_shapes, convert,
                                options={"zipmap": [True, False, "columns"], "nocl": [True, False]})
    update_registered_converter(HistGradientBoostingRegressor,
                                "SklearnHistGradientBoostingRegressor",
                                calculate_linear_regressor_output_shapes, convert)
