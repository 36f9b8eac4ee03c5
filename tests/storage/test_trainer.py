"""The example trainer (local/trainer.py) against the real S3 server: the traffic a runtime
captured since an alarm, joined with its truth, refits the serving model's estimator; the new
artifact and sample are uploaded beside the old, never over them, and the Model's source is
pointed at them (here to a function: the cluster tier patches a real Model)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from conftest import Team
from serin.local import demo_models, trainer
from serin.local.s3 import S3Server
from serin.runtime.capture import Capture, CaptureSettings, sink_for


def capture_shifted_traffic(s3: S3Server, team: Team, model: str, requests: int, with_truth: float,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """What the predictors of `model` would have written: shifted rows, and the truth of some."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", team.user.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", team.user.secret_key)
    settings = CaptureSettings(share=1, uri=f"s3://{team.bucket}/capture", namespace="models", model=model,
                               revision="gen1", endpoint=s3.url, flush_seconds=0.2)
    capture = Capture(settings, sink_for(settings)).start()
    for i in range(requests):
        x = demo_models.production_rows(20, seed=i, shift=1.0)
        out = {"label": np.zeros(20, dtype=np.int64)}
        capture.offer_prediction({"input": x}, out, 20, f"p{i}")
        if i < requests * with_truth:
            capture.offer_truth(f"p{i}", demo_models.true_labels(x).tolist(), "gen1", 20)
    capture.close()


def stage(s3: S3Server, team: Team, tmp_path: Path, model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = demo_models.sklearn_version(tmp_path / "v1", seed=1)
    source = s3.put(team.bucket, f"{model}/v1/model.joblib", v1.model, user=team.user)
    sample = s3.put(team.bucket, f"{model}/v1/sample.csv", v1.sample, user=team.user)
    for name, value in {"SERIN_MODEL": model, "SERIN_NAMESPACE": "models", "SERIN_RETRAIN_JOB": f"{model}-retrain-1",
                        "SERIN_ALARM_SINCE": "2020-01-01T00:00:00Z", "SERIN_SOURCE_URI": source,
                        "SERIN_SAMPLE_URI": sample, "SERIN_CAPTURE_URI": f"s3://{team.bucket}/capture",
                        "SERIN_CAPTURE_ENDPOINT": s3.url, "SERIN_SOURCE_ENDPOINT": s3.url}.items():
        monkeypatch.setenv(name, value)


def test_the_trainer_refits_on_the_traffic_since_the_alarm_and_points_the_model_at_it(
        s3: S3Server, team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = f"fraud-{uuid.uuid4().hex[:6]}"
    stage(s3, team, tmp_path, model, monkeypatch)
    capture_shifted_traffic(s3, team, model, requests=200, with_truth=0.5, monkeypatch=monkeypatch)
    pointed: list[tuple[str, ...]] = []
    assert trainer.run(f"s3://{team.bucket}/retrained", min_rows=1000, wait=10,
                       point=lambda *args: pointed.append(args)) == 0
    [(name, namespace, uri, sample_uri, sha256)] = pointed
    assert (name, namespace) == (model, "models")
    assert uri == f"s3://{team.bucket}/retrained/{model}-retrain-1/model.joblib"
    client = s3.client(team.user)

    def read(u: str) -> bytes:
        bucket, key = u[len("s3://"):].split("/", 1)
        return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())

    import hashlib

    import pandas as pd

    artifact = read(uri)
    assert hashlib.sha256(artifact).hexdigest() == sha256
    fitted: Any = joblib.load(io.BytesIO(artifact))
    sample = pd.read_csv(io.BytesIO(read(sample_uri)))
    assert list(sample.columns) == demo_models.FEATURES and len(sample) == 2000
    assert sample["f0"].mean() > 0.8, "the sample is the shifted traffic: the new reference"
    x = demo_models.production_rows(2000, seed=99, shift=1.0)
    assert (fitted.predict(x) == demo_models.true_labels(x)).mean() > 0.95
    assert type(fitted).__name__ == "LogisticRegression" and fitted.C == 1.5, "the serving estimator, refitted"
    assert read(f"s3://{team.bucket}/{model}/v1/model.joblib") == (tmp_path / "v1" / "model.joblib").read_bytes()


def test_too_little_truth_changes_nothing(s3: S3Server, team: Team, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model = f"fraud-{uuid.uuid4().hex[:6]}"
    stage(s3, team, tmp_path, model, monkeypatch)
    capture_shifted_traffic(s3, team, model, requests=20, with_truth=0.5, monkeypatch=monkeypatch)
    assert trainer.main(["--out", f"s3://{team.bucket}/retrained", "--min-rows", "1000", "--wait", "0"]) == 2
    assert "Contents" not in s3.client(team.user).list_objects_v2(
        Bucket=team.bucket, Prefix="retrained/")
