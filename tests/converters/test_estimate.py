"""The label-free accuracy estimate from conversion to serving: the sample's true labels calibrate
it (converters/profile.py), the runtime folds it over live answers (runtime/monitoring.py
AccuracyEstimate), and on traffic from the reference distribution it lands on the realised
accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from serin.runtime.model import OnnxModel, Task
from serin.runtime.monitoring import AccuracyEstimate

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose label is noisy: no model is sure of every row, so calibration matters."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    logit = 2.0 * x[:, 0] - 1.5 * x[:, 1] + x[:, 2] * x[:, 3]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import joblib
    from sklearn.ensemble import RandomForestClassifier

    tmp = tmp_path_factory.mktemp("estimate")
    x, y = world(4000, 0)
    # Overconfident on purpose: deep trees on noisy labels say 0.9 where they are right 75 %.
    model = RandomForestClassifier(n_estimators=5, min_samples_leaf=1, random_state=0).fit(x[:2000], y[:2000])
    joblib.dump(model, tmp / "model.joblib")
    sample = pd.DataFrame(x[2000:3000], columns=["a", "b", "c", "d"])
    sample["truth"] = y[2000:3000]
    sample.to_csv(tmp / "sample.csv", index=False)
    out = tmp / "out"
    proc = subprocess.run([sys.executable, "-m", "serin.converters.cli", str(tmp / "model.joblib"), "--sample",
                           str(tmp / "sample.csv"), "--sample-labels", "truth", "--out", str(out)],
                          capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_sample_labels_calibrate_and_are_not_an_input(converted: Path) -> None:
    profile = json.loads((converted / "profile.json").read_text())
    assert [f["name"] for f in profile["features"]] == ["a", "b", "c", "d"]
    performance = profile["prediction"]["performance"]
    assert 0.6 < performance["accuracy"] < 0.9 and performance["rows"] == 1000
    calibration = performance["calibration"]
    assert calibration["confidence"] == sorted(calibration["confidence"])
    # Overconfident: the calibrated chance of being right sits below the raw confidence.
    assert performance["confidence"] > performance["accuracy"] + 0.03
    report = json.loads((converted / "report.json").read_text())
    assert report["sampleLabels"] == "truth"


def test_a_missing_label_column_is_a_sample_error_naming_it(tmp_path: Path, converted: Path) -> None:
    sample = tmp_path / "sample.csv"
    pd.DataFrame(world(50, 3)[0], columns=["a", "b", "c", "d"]).to_csv(sample, index=False)
    model = converted.parent / "model.joblib"
    proc = subprocess.run([sys.executable, "-m", "serin.converters.cli", str(model), "--sample", str(sample),
                           "--sample-labels", "y", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert proc.returncode != 0
    assert "sampleLabels: the sample has no column 'y' (its columns: a, b, c, d)" in proc.stderr


def estimate_on(model: OnnxModel, x: np.ndarray) -> float:
    """What the runtime's counters say the accuracy is on these rows (no Prometheus: the fold)."""
    estimate = AccuracyEstimate("m", f"r{id(x)}", model.task, "probabilities")
    results = model.run({"input": x})
    estimate.fold([(results["label"], results["probabilities"])], [])
    return float(estimate._correct._value.get() / estimate._rows._value.get())


def test_the_estimate_lands_on_the_realised_accuracy_of_unseen_traffic(converted: Path) -> None:
    model = OnnxModel("m", converted)
    assert model.task.calibration is not None
    x, y = world(4000, 7)  # traffic from the reference distribution, labels never seen
    realised = float((model.run({"input": x})["label"] == y).mean())
    estimated = estimate_on(model, x)
    assert abs(estimated - realised) < 0.03, (estimated, realised)
    # Without the calibration the raw confidence overstates it.
    raw = Task(model.task.kind, model.task.output, model.task.classes, model.task.cuts, None)
    uncalibrated = AccuracyEstimate("m", "raw", raw, "probabilities")
    out = model.run({"input": x})
    uncalibrated.fold([(out["label"], out["probabilities"])], [])
    raw_estimate = uncalibrated._correct._value.get() / uncalibrated._rows._value.get()
    assert raw_estimate > realised + 0.05, (raw_estimate, realised)


def test_a_corrupt_calibration_is_a_profile_error_naming_it() -> None:
    from serin.runtime.profile import ProfileError, parse_profile

    raw = {"version": 1, "rows": 10, "features": [], "prediction": {
        "kind": "classification", "output": "label", "classes": ["0", "1"],
        "performance": {"calibration": {"confidence": [0.9, 0.5], "accuracy": [0.8, 0.6]}}}}
    with pytest.raises(ProfileError, match=r"prediction\.performance\.calibration: confidence must be sorted"):
        parse_profile(raw)
    raw["prediction"]["performance"]["calibration"] = {"confidence": [0.5, 0.9], "accuracy": [0.6]}
    with pytest.raises(ProfileError, match="as long as accuracy"):
        parse_profile(raw)
