"""`serin convert` and the conversion Job as processes: exit codes, one-line stderr, outputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from serin.converters.job import REQUEST_ENV, TERMINATION_LIMIT, parse_request, summary
from serin.converters.profile import numeric_bins

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          env=env or ENV, check=False)


def report(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    return data


def test_serin_convert_success_through_the_dispatcher(logreg: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(["-m", "serin.operator.cli", "convert", str(logreg[0]), "--sample", str(logreg[1]),
                "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "parity passed on 100 rows" in proc.stdout
    assert report(out)["passed"] is True
    assert (out / "model.onnx").exists() and (out / "profile.json").exists()


def test_serin_convert_digest_mismatch_one_line(logreg: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(["-m", "serin.converters.cli", str(logreg[0]), "--sample", str(logreg[1]),
                "--out", str(out), "--sha256", "ab" * 32])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("serin convert: error: sha256 mismatch")
    assert report(out)["reason"] in lines[0]


def test_serin_convert_bad_arguments_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(["-m", "serin.converters.cli", "model.joblib", "--out", str(out), "--atol", "x"])
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert report(out)["passed"] is False


def test_serin_convert_parity_failure_exit_1(tmp_path: Path) -> None:
    import joblib
    from serin.converters import zoo

    model, frame = zoo.float32_pitfall_lightgbm()
    joblib.dump(model, tmp_path / "m.joblib")
    frame.to_csv(tmp_path / "s.csv", index=False)
    out = tmp_path / "out"
    proc = run(["-m", "serin.converters.cli", str(tmp_path / "m.joblib"), "--sample",
                str(tmp_path / "s.csv"), "--out", str(out)])
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "parity failed" in proc.stderr


def request(source: str, sample: str, out: Path, **conversion: Any) -> str:
    return json.dumps({"source": {"uri": source, "sampleUri": sample}, "conversion": conversion, "out": str(out)})


def test_job_reads_the_request_and_writes_termination_log(logreg: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    out, term = tmp_path / "out", tmp_path / "termination-log"
    doc = json.loads(request(logreg[0].as_uri(), str(logreg[1]), out, targetOpset=15,
                             tolerance={"absolute": 1e-3}))
    doc["source"]["format"] = "sklearn"
    env = {**ENV, REQUEST_ENV: json.dumps(doc), "SERIN_TERMINATION_LOG": str(term)}
    proc = run(["-m", "serin.converters.job"], env)
    assert proc.returncode == 0, proc.stderr
    rep = report(out)
    assert rep["passed"] and rep["opset"] <= 15
    assert rep["parity"]["tolerance"]["absolute"] == 1e-3
    message = json.loads(term.read_text())
    assert message["passed"] is True and message["exitCode"] == 0
    assert message["onnxSha256"] == rep["sha256"]["onnx"]
    assert len(term.read_bytes()) <= TERMINATION_LIMIT
    # What a request must carry, as the runtime checks it: the operator compares versions by it.
    model = onnx.load(out / "model.onnx")
    (only,) = model.graph.input
    width = only.type.tensor_type.shape.dim[1].dim_value
    assert message["inputs"] == rep["inputs"] == f"{only.name}:float[{width}]"
    assert re.fullmatch(r"[0-9a-f]{16}", message["inputSignature"])


def test_the_summary_fits_the_termination_limit_with_a_very_wide_signature() -> None:
    inputs = " ".join(f"column_{i}:float[1]" for i in range(2000))
    text = summary({"passed": True, "inputs": inputs, "estimator": "Pipeline(…)"}, 0, None)
    doc = json.loads(text)
    assert len(text.encode()) <= TERMINATION_LIMIT and doc["inputSignature"] is not None
    assert doc["inputs"] is None or doc["inputs"].endswith("…")


def test_job_failure_without_a_request(tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    env = {k: v for k, v in ENV.items() if k != REQUEST_ENV} | {"SERIN_TERMINATION_LOG": str(term)}
    proc = run(["-m", "serin.converters.job"], env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and REQUEST_ENV in lines[0], proc.stderr
    message = json.loads(term.read_text())
    assert message["passed"] is False and REQUEST_ENV in message["reason"]


def test_job_failure_with_an_incomplete_request(tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    env = {**ENV, REQUEST_ENV: json.dumps({"source": {"sampleUri": "file:///s.csv"}, "out": str(tmp_path / "out")}),
           "SERIN_TERMINATION_LOG": str(term)}
    proc = run(["-m", "serin.converters.job"], env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"serin convert: error: source.uri is required in {REQUEST_ENV}"]
    assert json.loads(term.read_text())["passed"] is False
    assert report(tmp_path / "out")["passed"] is False


def test_job_fetch_failure_exit_4(logreg: tuple[Path, Path], tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    env = {**ENV, REQUEST_ENV: request("http://127.0.0.1:9/m.joblib", str(logreg[1]), tmp_path / "out"),
           "SERIN_TERMINATION_LOG": str(term)}
    proc = run(["-m", "serin.converters.job"], env)
    assert proc.returncode == 4
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert json.loads(term.read_text())["error"] == "fetch-failed"


GOOD = {"source": {"uri": "file:///m.joblib", "sampleUri": "file:///s.csv"}, "out": "/out"}


@pytest.mark.parametrize(("doc", "message"), [
    pytest.param("{", f"{REQUEST_ENV} is not valid JSON", id="not-json"),
    pytest.param("[]", "the request must be a JSON object", id="not-an-object"),
    pytest.param(GOOD | {"bins": 3}, f"unknown field bins in {REQUEST_ENV}", id="unknown-top-field"),
    pytest.param(GOOD | {"conversion": {"tolerance": {"atol": 1}}},
                 f"unknown field conversion.tolerance.atol in {REQUEST_ENV}", id="unknown-nested-field"),
    pytest.param({"source": GOOD["source"]}, f"out is required in {REQUEST_ENV}", id="no-out"),
    pytest.param(GOOD | {"source": {"uri": "file:///m.joblib"}}, f"source.sampleUri is required in {REQUEST_ENV}",
                 id="no-sample"),
    pytest.param(GOOD | {"source": {"uri": 7, "sampleUri": "s"}}, "source.uri must be str, not 7", id="uri-not-a-string"),
    pytest.param(GOOD | {"conversion": {"targetOpset": "17"}}, 'conversion.targetOpset must be int, not "17"',
                 id="opset-a-string"),
    pytest.param(GOOD | {"conversion": {"tolerance": {"absolute": True}}},
                 "conversion.tolerance.absolute must be a number, not true", id="tolerance-a-bool"),
    pytest.param(GOOD | {"source": GOOD["source"] | {"format": "torch"}},
                 "source.format must be one of sklearn, xgboost, lightgbm, onnx, not 'torch'", id="unknown-format"),
    # The S3 model store's place (issue 34 #3).
    pytest.param(GOOD | {"outS3": {"endpoint": "http://s3:7070"}},
                 "outS3 is for an s3:// out (the S3 model store), not a directory", id="store-settings-for-a-directory"),
    pytest.param(GOOD | {"out": "s3://models"}, "out s3://models must name the version's place in the store",
                 id="store-without-a-place"),
    pytest.param(GOOD | {"out": "s3://models/ns/v1/"}, "out s3://models/ns/v1/ must name the version's place",
                 id="store-place-a-prefix"),
    pytest.param(GOOD | {"out": "s3://models/ns/v1", "outS3": {"addressing": "host"}},
                 "outS3.addressing must be path or virtual, not 'host'", id="store-addressing"),
    pytest.param(GOOD | {"out": "s3://models/ns/v1", "outS3": {"secretName": "keys"}},
                 f"unknown field outS3.secretName in {REQUEST_ENV}", id="store-secret-is-the-operators"),
])
def test_a_bad_request_is_refused_naming_the_field(doc: Any, message: str) -> None:
    from serin.converters.errors import ConversionError

    with pytest.raises(ConversionError) as err:
        parse_request(doc if isinstance(doc, str) else json.dumps(doc))
    assert err.value.message.startswith(message), err.value.message


def test_the_operators_request_is_the_one_the_converter_reads() -> None:
    """The two sides of the one serialized form: what the operator writes from a Model's spec is
    read back by the converter as the same settings, defaults included."""
    from serin.converters.conversion import DEFAULT_OPSET
    from serin.operator.executors import ConversionRequest
    from serin.operator.spec import parse_spec

    spec = parse_spec({"source": {"uri": "s3://b/m.json", "sampleUri": "s3://b/s.csv", "format": "xgboost",
                                  "sha256": "c" * 64},
                       "conversion": {"targetOpset": 15, "tolerance": {"relative": 0.01}}})
    req = ConversionRequest("ml", "fraud", "u", 3, spec.version_key, 1, spec.source, spec.conversion)
    got = parse_request(req.document("/out/ml/fraud"))
    assert (got.source, got.sample, got.format, got.sha256) == ("s3://b/m.json", "s3://b/s.csv", "xgboost", "c" * 64)
    assert (got.out, got.opset) == (Path("/out/ml/fraud"), 15)
    assert (got.tolerance.absolute, got.tolerance.relative, got.tolerance.label_agreement) == (1e-4, 0.01, 1.0)
    bare = parse_spec({"source": {"uri": "s3://b/m.onnx", "sampleUri": "s3://b/s.csv"}})
    plain = parse_request(ConversionRequest("ml", "m", "u", 1, "k", 1, bare.source, bare.conversion).document("/o"))
    assert (plain.format, plain.sha256, plain.opset) == (None, None, DEFAULT_OPSET)
    # With the S3 store: the version's place and the store's settings, nothing written to a directory.
    from serin.operator.spec import S3Source

    stored = parse_request(req.document("s3://models/v/ml/fraud-g3", S3Source(endpoint="http://s3:7070",
                                                                            secretName="serin-model-store")))
    assert (stored.store, stored.out) == ("s3://models/v/ml/fraud-g3", Path("/dev/null"))
    assert stored.store_s3 is not None and stored.store_s3.endpoint == "http://s3:7070"


def test_the_summary_is_status_conversion() -> None:
    """One shape whichever executor ran: every key the converter's summary writes is a field of the
    operator's ConversionSummary (so nothing is dropped reading it), and it parses back."""
    from dataclasses import fields

    from serin.operator.status import ConversionSummary, parse_conversion_summary

    rep = {"passed": True, "reason": None, "format": "sklearn", "task": "classification", "estimator": "LogisticRegression",
           "rows": 100, "seconds": 0.5, "parity": {"label_agreement": 1.0, "max_abs_diff": 1e-7, "max_rel_diff": 1e-6,
                                                  "mismatched_rows": 0},
           "sha256": {"source": "a" * 64, "onnx": "b" * 64}}
    doc = json.loads(summary(rep, 0, None))
    assert set(doc) <= {f.name for f in fields(ConversionSummary)}
    parsed = parse_conversion_summary(doc)
    assert parsed is not None
    assert (parsed.passed, parsed.rows, parsed.maxAbsDiff, parsed.onnxSha256) == (True, 100, 1e-7, "b" * 64)


def test_termination_summary_fits_kubernetes_limit() -> None:
    rep = {"passed": False, "reason": "x" * 10_000, "estimator": "y" * 10_000}
    text = summary(rep, 2, "user-error")
    assert len(text.encode()) <= TERMINATION_LIMIT
    assert json.loads(text)["exitCode"] == 2


def test_profile_bins_low_cardinality_one_bin_per_value() -> None:
    values = np.array([0, 0, 1, 1, 1, 2], dtype=np.float64)
    bins = numeric_bins(values, 10)
    assert bins["cuts"] == [0.5, 1.5]
    assert bins["proportions"] == [2 / 6, 3 / 6, 1 / 6]


def test_profile_bins_quantiles_and_nan() -> None:
    values = np.concatenate([np.arange(1000.0), [np.nan]])
    bins = numeric_bins(values, 10)
    assert len(bins["cuts"]) == 9
    assert np.allclose(bins["proportions"], 0.1)


def test_remote_fetch_is_bounded_in_time(logreg: tuple[Path, Path], tmp_path: Path) -> None:
    """gs:// without network or credentials: google-auth would retry for minutes; we do not."""
    out = tmp_path / "out"
    proc = run(["-m", "serin.converters.cli", "gs://serin-missing-bucket/m.joblib", "--sample",
                str(logreg[1]), "--out", str(out)], {**ENV, "SERIN_FETCH_TIMEOUT": "3"})
    assert proc.returncode == 4, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot fetch artifact gs://serin-missing-bucket/m.joblib" in proc.stderr
    assert report(out)["passed"] is False


def test_input_signature_digest_names_what_requests_can_carry() -> None:
    """float and double inputs take the same requests (the runtime takes any float width), so a
    version widened to float64 is not refused as taking other inputs; other changes still are."""
    from serin.converters.job import _digest, accepted_requests

    float32, float64 = "input:float[30]", "input:double[30]"
    assert _digest(accepted_requests(float32)) == _digest(accepted_requests(float64))
    for other in ("input:float[29]", "input:int64[30]", "x:float[30]",
                  "input:float[30] extra:string[1]"):
        assert _digest(accepted_requests(other)) != _digest(accepted_requests(float32)), other
