"""Every zoo model converts and passes the parity proof; the outputs follow docs/formats.md."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
from serin.converters import zoo
from serin.converters.publish import SampleSource, publish
from serin.converters.registry import converter_for
from serin.converters.sklearn_ import components

Convert = Callable[..., Any]  # the `convert` fixture (conftest.py)


def read_report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report

REPORT_KEYS = {"passed", "reason", "error", "format", "estimator", "task", "opset", "rows", "parity",
               "seconds", "sha256", "versions", "warnings", "inputs", "batching"}
ZOO = zoo.models()
REALISTIC = zoo.realistic()


@pytest.mark.parametrize("entry", ZOO + REALISTIC, ids=[m.id for m in ZOO + REALISTIC])
def test_zoo_model_converts_and_passes_parity(entry: zoo.ZooModel, zoo_dir: Path,
                                              convert: Convert, tmp_path: Path) -> None:
    artifact, sample, _, frame = entry.materialize(zoo_dir / entry.id)
    out = tmp_path / "out"
    outcome = convert(artifact, sample, out=out)
    report = read_report(out)
    assert report == json.loads(json.dumps(outcome.report))  # what was returned was written
    assert report["passed"], report["reason"]
    assert outcome.exit_code == 0
    assert set(report) == REPORT_KEYS
    assert report["format"] == entry.format  # detected, not given
    assert report["rows"] == len(frame)
    parity = report["parity"]
    assert parity["mismatched_rows"] == 0
    assert parity["max_abs_diff"] <= 1e-4 or report["task"] == "regression"
    if report["task"] == "classification":
        assert parity["label_agreement"] == 1.0
    else:
        assert parity["label_agreement"] is None
        assert parity["max_rel_diff"] <= 1e-3
    assert len(report["sha256"]["source"]) == 64 and len(report["sha256"]["onnx"]) == 64

    model = onnx.load(str(out / "model.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["serin.source_sha256"] == report["sha256"]["source"]
    assert meta["serin.format"] == entry.format
    assert "onnxruntime" in json.loads(meta["serin.converter_versions"])
    assert meta["serin.created_by"].startswith("serin.converters")
    for out_value in model.graph.output:  # tensors only: no ZipMap sequences
        assert out_value.type.HasField("tensor_type"), out_value.name

    profile = json.loads((out / "profile.json").read_text())
    assert profile["version"] == 1 and profile["rows"] == len(frame)
    assert [i["name"] for i in profile["inputs"]] == [i.name for i in model.graph.input]
    assert len(profile["features"]) == len(frame.columns)
    for feature in profile["features"]:
        if feature["kind"] == "numeric":
            assert len(feature["proportions"]) == len(feature["cuts"]) + 1
            assert feature["cuts"] == sorted(feature["cuts"])
            assert math.isclose(sum(feature["proportions"]), 1.0)
        else:
            assert math.isclose(sum(feature["categories"].values()) + feature["other"], 1.0)
    prediction = profile["prediction"]
    assert prediction["kind"] == report["task"]
    assert prediction["output"] == model.graph.output[0].name
    assert math.isclose(sum(prediction["proportions"]), 1.0)
    if prediction["kind"] == "classification":
        assert all(isinstance(c, str) for c in prediction["classes"])
    batching = profile["batching"]
    assert batching == report["batching"]
    # The trusted publish step rebuilds the profile from the sample and the ONNX model alone (the
    # step that unpickled only claims columns and class order): for an honest conversion, the
    # same bytes.
    published = publish(out, tmp_path / "published", artifact, SampleSource(sample))
    assert (tmp_path / "published" / "profile.json").read_bytes() == (out / "profile.json").read_bytes()
    assert published["batching"] == report["batching"]
    assert batching["rows"] == min(64, len(frame))
    if batching["rowsIndependent"]:
        # Within float32 rounding, not always bit for bit: onnxruntime sums a batch of rows in
        # another order than one row (regressors differ by up to ~1e-5 of their values).
        assert isinstance(batching["maxAbsDiff"], float)
    else:  # e.g. onnxruntime's SVMRegressor computes a batch's kernel values otherwise (~3e-3)
        assert batching["reason"], batching
    if entry.format in ("xgboost", "lightgbm") or any(
            k in entry.id for k in ("forest", "tree", "boost", "logistic", "linear")):
        # Tree ensembles and linear models, most of what is served: batched by the runtime.
        assert batching["rowsIndependent"] is True, batching


def test_zoo_covers_every_estimator_listed_as_supported() -> None:
    """The supported list is a claim the zoo backs: no name there without a passing zoo model."""
    exercised: set[str] = set()
    for entry in ZOO:
        model, _ = entry.build()
        if entry.format == "sklearn":
            exercised |= {type(p).__name__ for p in components(model)}
        else:
            exercised.add(type(model).__name__)
    for fmt in ("sklearn", "xgboost", "lightgbm", "onnx"):
        missing = set(converter_for(fmt).tested) - exercised
        assert not missing, f"{fmt} lists {missing} as tested but no zoo model uses them"
    assert len([m for m in ZOO if m.format == "sklearn"]) >= 25


def _estimators(entry: zoo.ZooModel, model: Any) -> set[str]:
    if entry.format == "sklearn":
        return {type(p).__name__ for p in components(model)}
    return {type(model).__name__}


@pytest.mark.parametrize("fmt", ["sklearn", "xgboost", "lightgbm"])
def test_realistic_tier_covers_every_supported_estimator_at_size(fmt: str) -> None:
    """Every tested estimator also converts exactly at the sizes teams train: each appears in a
    realistic model, and every tree ensemble there has >= 100 trees or iterations and the data
    30 features."""
    exercised: set[str] = set()
    for entry in REALISTIC:
        model, sample = entry.build()
        exercised |= _estimators(entry, model)
        assert len(sample.columns) == zoo.REALISTIC_FEATURES, entry.id
        for part in components(model) if entry.format == "sklearn" else [model]:
            trees = (part.n_iter_ if hasattr(part, "n_iter_") and hasattr(part, "_predictors")
                     else part.num_trees() if hasattr(part, "num_trees")
                     else getattr(part, "n_estimators", None))
            if trees is not None and type(part).__name__ not in ("DecisionTreeClassifier",
                                                                 "DecisionTreeRegressor"):
                assert trees >= 100, f"{entry.id}: {type(part).__name__} has {trees} trees"
    missing = set(converter_for(fmt).tested) - exercised
    assert not missing, f"{fmt} estimators with no realistic zoo model: {sorted(missing)}"


def test_realistic_tier_holds_what_real_data_holds() -> None:
    """Missing values, native and one-hot categorical columns, integer features behind a scaler
    and DataFrame names: each is in the realistic tier, so none is left to a user to discover."""
    ids = {m.id for m in REALISTIC}
    for needed in ("realistic_hgb_classifier_nan", "realistic_hgb_regressor_nan",
                   "realistic_hgb_classifier_native_categorical",
                   "realistic_lightgbm_native_categorical", "realistic_onehot_columns_hgb_classifier",
                   "realistic_scaler_random_forest_integers", "realistic_xgboost_classifier_nan",
                   "realistic_lightgbm_regressor_nan"):
        assert needed in ids
    model, sample = zoo.by_id_realistic("realistic_hgb_classifier_native_categorical").build()
    assert list(model.feature_names_in_) == list(sample.columns)  # fitted on a DataFrame
    assert sample.isna().any().any()
    assert model.is_categorical_[:2].all() and not model.is_categorical_[2:].any()


@pytest.mark.parametrize("entry_id", ["realistic_hgb_classifier_nan", "realistic_hgb_regressor_nan",
                                      "realistic_scaler_random_forest_integers",
                                      "realistic_onehot_columns_hgb_regressor"])
def test_models_that_float32_would_flip_get_float64_inputs(entry_id: str, tmp_path: Path,
                                                           convert: Convert) -> None:
    artifact, sample, _, _ = zoo.by_id_realistic(entry_id).materialize(tmp_path / "zoo")
    outcome = convert(artifact, sample, out=tmp_path / "out")
    assert outcome.exit_code == 0, outcome.report["reason"]
    floats = [part.split(":")[1].split("[")[0] for part in outcome.report["inputs"].split()]
    assert "double" in floats and "float" not in floats, outcome.report["inputs"]
