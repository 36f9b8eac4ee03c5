"""`serin convert` and the conversion Job as processes: exit codes, one-line stderr, outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from serin.converters.job import TERMINATION_LIMIT, merged_argv, summary
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

    model, frame = zoo.float32_pitfall()
    joblib.dump(model, tmp_path / "m.joblib")
    frame.to_csv(tmp_path / "s.csv", index=False)
    out = tmp_path / "out"
    proc = run(["-m", "serin.converters.cli", str(tmp_path / "m.joblib"), "--sample",
                str(tmp_path / "s.csv"), "--out", str(out)])
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "parity failed" in proc.stderr


def test_job_reads_env_and_writes_termination_log(logreg: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    out, term = tmp_path / "out", tmp_path / "termination-log"
    env = {**ENV, "SERIN_SOURCE_URI": logreg[0].as_uri(), "SERIN_SAMPLE_URI": str(logreg[1]),
           "SERIN_OUT": str(out), "SERIN_FORMAT": "sklearn", "SERIN_TARGET_OPSET": "15",
           "SERIN_ATOL": "1e-3", "SERIN_TERMINATION_LOG": str(term)}
    proc = run(["-m", "serin.converters.job"], env)
    assert proc.returncode == 0, proc.stderr
    rep = report(out)
    assert rep["passed"] and rep["opset"] <= 15
    assert rep["parity"]["tolerance"]["absolute"] == 1e-3
    message = json.loads(term.read_text())
    assert message["passed"] is True and message["exitCode"] == 0
    assert message["onnxSha256"] == rep["sha256"]["onnx"]
    assert len(term.read_bytes()) <= TERMINATION_LIMIT


def test_job_failure_without_settings(tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    env = {**ENV, "SERIN_OUT": str(tmp_path / "out"), "SERIN_TERMINATION_LOG": str(term)}
    proc = run(["-m", "serin.converters.job"], env)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert json.loads(term.read_text())["passed"] is False
    assert report(tmp_path / "out")["passed"] is False


def test_job_fetch_failure_exit_4(logreg: tuple[Path, Path], tmp_path: Path) -> None:
    term = tmp_path / "termination-log"
    env = {**ENV, "SERIN_SOURCE_URI": "http://127.0.0.1:9/m.joblib",
           "SERIN_SAMPLE_URI": str(logreg[1]), "SERIN_OUT": str(tmp_path / "out"),
           "SERIN_TERMINATION_LOG": str(term)}
    proc = run(["-m", "serin.converters.job"], env)
    assert proc.returncode == 4
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert json.loads(term.read_text())["error"] == "fetch-failed"


def test_arguments_win_over_environment() -> None:
    argv = merged_argv(["a.joblib", "--out", "/x"], {"SERIN_SOURCE_URI": "b.joblib",
                                                      "SERIN_OUT": "/y", "SERIN_ATOL": "0.1"})
    assert argv[0] == "a.joblib" and "b.joblib" not in argv
    assert argv[argv.index("--out") + 1] == "/x" and argv[argv.index("--atol") + 1] == "0.1"


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
