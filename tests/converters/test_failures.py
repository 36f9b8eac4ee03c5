"""Every failure mode gives a one-line reason, the right exit code and a report with passed=false."""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from serin.converters import zoo
from serin.converters.errors import (
    EXIT_FETCH_FAILED,
    EXIT_INTERNAL,
    EXIT_PARITY_FAILED,
    EXIT_USER_ERROR,
)
from serin.converters.parity import Tolerance

Convert = Callable[..., Any]  # the `convert` fixture (conftest.py)


def read_report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def assert_failed(outcome: Any, out: Path, code: int, *needles: str) -> dict[str, Any]:
    report = read_report(out)
    assert outcome.exit_code == code, report["reason"]
    assert report["passed"] is False
    reason = report["reason"]
    assert isinstance(reason, str) and "\n" not in reason
    for needle in needles:
        assert needle in reason, reason
    assert not (out / "model.onnx").exists()
    assert not (out / "profile.json").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    return report


class _RunsOnLoad:
    """Unpickling this creates a file: proof of whether anything was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_digest_is_verified_before_anything_is_unpickled(tmp_path: Path, logreg: tuple[Path, Path],
                                                        convert: Convert) -> None:
    marker = tmp_path / "unpickled"
    artifact = tmp_path / "evil.pkl"
    artifact.write_bytes(pickle.dumps(_RunsOnLoad(marker)))
    out = tmp_path / "out"
    outcome = convert(artifact, logreg[1], out=out, sha256="0" * 64)
    report = assert_failed(outcome, out, EXIT_USER_ERROR, "sha256 mismatch", "refusing to load")
    assert not marker.exists()
    assert report["sha256"]["source"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    # With the right digest it is unpickled (and then refused: it is no model at all).
    outcome = convert(artifact, logreg[1], out=out, sha256=report["sha256"]["source"])
    assert_failed(outcome, out, EXIT_USER_ERROR, "not a scikit-learn, XGBoost or LightGBM model")
    assert marker.exists()


def test_matching_digest_passes(logreg: tuple[Path, Path], convert: Convert, tmp_path: Path) -> None:
    digest = hashlib.sha256(logreg[0].read_bytes()).hexdigest()
    assert convert(*logreg, sha256=digest.upper(), out=tmp_path / "o").exit_code == 0


def test_unknown_format(tmp_path: Path, logreg: tuple[Path, Path], convert: Convert) -> None:
    artifact = tmp_path / "model.dat"
    artifact.write_bytes(b"GIF89a not a model at all")
    out = tmp_path / "out"
    assert_failed(convert(artifact, logreg[1], out=out), out, EXIT_USER_ERROR,
                  "cannot tell the format of model.dat", "--format")


def test_unsupported_estimator_is_named_and_supported_ones_listed(
        tmp_path: Path, logreg: tuple[Path, Path], convert: Convert) -> None:
    from sklearn.isotonic import IsotonicRegression

    x = np.arange(50.0)
    artifact = tmp_path / "iso.joblib"
    joblib.dump(IsotonicRegression().fit(x, x ** 2), artifact)
    sample = tmp_path / "iso.csv"
    pd.DataFrame({"x": x}).to_csv(sample, index=False)
    out = tmp_path / "out"
    report = assert_failed(convert(artifact, sample, out=out), out, EXIT_USER_ERROR,
                           "unsupported estimator IsotonicRegression",
                           "supported sklearn estimators:", "LogisticRegression",
                           "HistGradientBoostingClassifier")
    assert report["format"] == "sklearn"


def test_format_flag_contradicting_the_file(logreg: tuple[Path, Path], convert: Convert,
                                           tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_failed(convert(*logreg, out=out, format="xgboost"), out, EXIT_USER_ERROR,
                  "--format xgboost given", "holds a sklearn model")


@pytest.mark.parametrize("entry_id", ["logistic_regression", "xgboost_regressor_native_json",
                                      "lightgbm_booster_binary_txt", "onnx_passthrough"],
                         ids=["joblib", "xgboost-json", "lightgbm-txt", "onnx"])
def test_truncated_artifact(entry_id: str, tmp_path: Path, convert: Convert) -> None:
    artifact, sample, _, _ = zoo.by_id(entry_id).materialize(tmp_path / "zoo")
    data = artifact.read_bytes()
    artifact.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert_failed(convert(artifact, sample, out=out), out, EXIT_USER_ERROR, "corrupt")


def test_sample_with_wrong_number_of_columns(tmp_path: Path, logreg: tuple[Path, Path],
                                             convert: Convert) -> None:
    sample = tmp_path / "narrow.csv"
    pd.read_csv(logreg[1]).iloc[:, :3].to_csv(sample, index=False)
    out = tmp_path / "out"
    assert_failed(convert(logreg[0], sample, out=out), out, EXIT_USER_ERROR,
                  "sample has 3 columns but the model expects 4 features")


def test_sample_missing_named_columns(tmp_path: Path, convert: Convert) -> None:
    artifact, sample, _, frame = zoo.by_id("column_transformer_onehot_classifier").materialize(
        tmp_path / "zoo")
    frame.drop(columns=["size"]).to_csv(sample, index=False)
    out = tmp_path / "out"
    assert_failed(convert(artifact, sample, out=out), out, EXIT_USER_ERROR, "lacks column(s) size")


def test_nan_where_the_model_cannot_take_them(tmp_path: Path, logreg: tuple[Path, Path],
                                              convert: Convert) -> None:
    frame = pd.read_csv(logreg[1])
    frame.loc[3, "f1"] = np.nan
    sample = tmp_path / "nan.csv"
    frame.to_csv(sample, index=False)
    out = tmp_path / "out"
    assert_failed(convert(logreg[0], sample, out=out), out, EXIT_USER_ERROR,
                  "missing values (NaN) in column(s) f1", "LogisticRegression cannot take them")


def test_text_column_for_a_numeric_model(tmp_path: Path, logreg: tuple[Path, Path],
                                         convert: Convert) -> None:
    frame = pd.read_csv(logreg[1])
    frame["f2"] = "red"
    sample = tmp_path / "text.csv"
    frame.to_csv(sample, index=False)
    out = tmp_path / "out"
    assert_failed(convert(logreg[0], sample, out=out), out, EXIT_USER_ERROR,
                  "column 'f2' is not numeric")


@pytest.mark.parametrize("which", ["artifact", "sample"])
def test_missing_file(which: str, tmp_path: Path, logreg: tuple[Path, Path],
                      convert: Convert) -> None:
    missing = tmp_path / "nope.joblib"
    args = (missing, logreg[1]) if which == "artifact" else (logreg[0], missing)
    out = tmp_path / "out"
    assert_failed(convert(*args, out=out), out, EXIT_USER_ERROR, f"{which} not found")


def test_file_uri_and_npy_sample(tmp_path: Path, logreg: tuple[Path, Path],
                                 convert: Convert) -> None:
    sample = tmp_path / "sample.npy"
    np.save(sample, pd.read_csv(logreg[1]).to_numpy())
    outcome = convert(logreg[0].as_uri(), sample.as_uri(), out=tmp_path / "out")
    assert outcome.exit_code == 0, outcome.report["reason"]


def test_unreachable_remote_uri_is_a_fetch_error(tmp_path: Path, logreg: tuple[Path, Path],
                                                 convert: Convert) -> None:
    out = tmp_path / "out"
    outcome = convert("http://127.0.0.1:9/models/model.joblib", logreg[1], out=out)
    report = assert_failed(outcome, out, EXIT_FETCH_FAILED, "cannot fetch artifact "
                           "http://127.0.0.1:9/models/model.joblib")
    assert report["error"] == "fetch-failed"  # the operator retries this kind (and only this one)


def test_unsupported_uri_scheme(tmp_path: Path, logreg: tuple[Path, Path],
                                convert: Convert) -> None:
    out = tmp_path / "out"
    report = assert_failed(convert("ftp://host/model.joblib", logreg[1], out=out), out, EXIT_USER_ERROR,
                           "unsupported artifact URI scheme ftp://")
    assert report["error"] == "user-error"


def test_parquet_sample_needs_pyarrow_or_works(tmp_path: Path, logreg: tuple[Path, Path],
                                               convert: Convert) -> None:
    frame = pd.read_csv(logreg[1])
    sample = tmp_path / "sample.parquet"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        sample.write_bytes(b"PAR1")
        out = tmp_path / "out"
        assert_failed(convert(logreg[0], sample, out=out), out, EXIT_USER_ERROR,
                      "Parquet sample needs pyarrow")
    else:
        frame.to_parquet(sample)
        assert convert(logreg[0], sample, out=tmp_path / "out").exit_code == 0


def _write(model: Any, frame: pd.DataFrame, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    artifact, sample = directory / "model.joblib", directory / "sample.csv"
    joblib.dump(model, artifact)
    frame.to_csv(sample, index=False)
    return artifact, sample


def test_float32_pitfall_converts_with_float64_inputs_and_says_why(tmp_path: Path,
                                                                    convert: Convert) -> None:
    artifact, sample = _write(*zoo.float32_pitfall(), tmp_path)
    outcome = convert(artifact, sample, out=tmp_path / "out")
    report = read_report(tmp_path / "out")
    assert outcome.exit_code == 0, report["reason"]
    assert report["inputs"] == "input:double[1]"
    assert report["parity"]["mismatched_rows"] == 0
    assert report["parity"]["label_agreement"] == 1.0
    why = report["warnings"][0]
    assert why.startswith("converted with float64 inputs: with float32 inputs label agreement"), why


def test_float32_pitfall_without_a_float64_graph_is_reported_not_hidden(tmp_path: Path,
                                                                        convert: Convert) -> None:
    artifact, sample = _write(*zoo.float32_pitfall_lightgbm(), tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"an older model")  # must not survive a failing run
    report = assert_failed(convert(artifact, sample, out=out), out, EXIT_PARITY_FAILED,
                           "parity failed: LGBMClassifier: label agreement 0.5 < 1 (10 of 20 rows)",
                           "worst row 10: native [0.",
                           "this sample passes with spec.conversion.tolerance labelAgreement: 0.5")
    parity = report["parity"]
    assert parity["mismatched_rows"] == 10 and parity["rows_off_share"] == 0.5
    worst = parity["worst_rows"]
    assert len(worst) == 5 and [w["row"] for w in worst] == [10, 11, 12, 13, 14]
    assert all(w["native_label"] == 1 and w["onnx_label"] == 0 for w in worst)
    assert worst[0]["diff"] > 0.3 and len(worst[0]["native"]) == 2
    assert any("float32" in w for w in report["warnings"])
    # The advised tolerance accepts it, still counting the rows that differ.
    relaxed = convert(artifact, sample, out=tmp_path / "relaxed",
                      tolerance=Tolerance(absolute=1.0, label_agreement=0.5))
    assert relaxed.exit_code == 0, relaxed.report["reason"]
    assert relaxed.report["parity"]["mismatched_rows"] == 10


def test_a_model_exact_in_neither_precision_gives_both_reasons(
        tmp_path: Path, convert: Convert, monkeypatch: pytest.MonkeyPatch) -> None:
    from serin.converters import sklearn_

    artifact, sample = _write(*zoo.float32_pitfall(), tmp_path)
    converter = sklearn_.CONVERTER
    # A float64 graph that is no better: the float32 one again.
    monkeypatch.setattr(converter, "widened", lambda model, s, opset: converter.convert(
        model, s, opset))
    out = tmp_path / "out"
    report = assert_failed(convert(artifact, sample, out=out), out, EXIT_PARITY_FAILED,
                           "parity failed: LogisticRegression: label agreement",
                           "; with float64 inputs: label agreement")
    assert report["parity"]["mismatched_rows"] >= 1


def test_a_float64_graph_that_cannot_run_keeps_the_float32_reason(
        tmp_path: Path, convert: Convert, monkeypatch: pytest.MonkeyPatch) -> None:
    from serin.converters import sklearn_

    artifact, sample = _write(*zoo.float32_pitfall(), tmp_path)
    converter = sklearn_.CONVERTER

    def unrunnable(model: Any, s: Any, opset: int) -> Any:
        graph = converter.convert(model, s, opset)
        graph.graph.input[0].name = "renamed"  # the sample's feed no longer matches
        return graph

    monkeypatch.setattr(converter, "widened", unrunnable)
    out = tmp_path / "out"
    assert_failed(convert(artifact, sample, out=out), out, EXIT_PARITY_FAILED,
                  "parity failed: LogisticRegression: label agreement",
                  "; with float64 inputs: onnxruntime cannot run the converted model")


def test_a_regressor_refused_by_parity_advises_a_relative_tolerance(tmp_path: Path,
                                                                    convert: Convert) -> None:
    # LightGBM has no float64 graph (registry.SklearnApi.widened): float32's rounding stays.
    artifact, sample, _, _ = zoo.by_id("lightgbm_regressor").materialize(tmp_path / "zoo")
    out = tmp_path / "out"
    report = assert_failed(convert(artifact, sample, out=out,
                                   tolerance=Tolerance(absolute=0.0, relative=1e-12)),
                           out, EXIT_PARITY_FAILED, "values differ by up to",
                           "this sample passes with spec.conversion.tolerance relative: ")
    advised = float(report["reason"].rsplit("relative: ", 1)[1].rstrip(")"))
    assert advised > 1e-12
    again = convert(artifact, sample, out=tmp_path / "again",
                    tolerance=Tolerance(absolute=0.0, relative=advised))
    assert again.exit_code == 0, again.report["reason"]


def test_tight_tolerance_fails_parity(tmp_path: Path, convert: Convert) -> None:
    artifact, sample, _, _ = zoo.by_id("lightgbm_regressor").materialize(tmp_path / "zoo")
    out = tmp_path / "out"
    report = assert_failed(convert(artifact, sample, out=out,
                                   tolerance=Tolerance(absolute=0.0, relative=1e-12)),
                           out, EXIT_PARITY_FAILED, "values differ by up to")
    assert report["parity"]["mismatched_rows"] > 0


def test_tight_tolerance_is_met_by_the_float64_graph(tmp_path: Path, convert: Convert) -> None:
    """Ridge in float32 is off by ~1e-7 relative; its float64 graph computes what scikit-learn
    does, so the converter takes it rather than refusing."""
    artifact, sample, _, _ = zoo.by_id("ridge").materialize(tmp_path / "zoo")
    outcome = convert(artifact, sample, out=tmp_path / "out",
                      tolerance=Tolerance(absolute=0.0, relative=1e-12))
    assert outcome.exit_code == 0, outcome.report["reason"]
    assert outcome.report["inputs"] == "input:double[4]"
    assert outcome.report["warnings"][0].startswith(
        "converted with float64 inputs: with float32 inputs values differ by up to")


def test_internal_error_still_writes_a_report(tmp_path: Path, logreg: tuple[Path, Path],
                                              convert: Convert, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from serin.converters import sklearn_

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(sklearn_.SklearnConverter, "convert", boom)
    out = tmp_path / "out"
    assert_failed(convert(*logreg, out=out), out, EXIT_INTERNAL,
                  "internal error: RuntimeError: converter exploded")
    assert "Traceback" in capsys.readouterr().err
