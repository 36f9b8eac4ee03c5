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
from serin.converters.registry import converter_for
from serin.converters.sklearn_ import components

Convert = Callable[..., Any]  # the `convert` fixture (conftest.py)


def read_report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report

REPORT_KEYS = {"passed", "reason", "error", "format", "estimator", "task", "opset", "rows", "parity",
               "seconds", "sha256", "versions", "warnings", "inputs"}
ZOO = zoo.models()


@pytest.mark.parametrize("entry", ZOO, ids=[m.id for m in ZOO])
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
