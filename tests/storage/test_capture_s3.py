"""Payload capture into the real S3 server (issue 34 #4): a runtime writes its answers and the truth
sent back to a team's bucket with the team's keys, joinable by id; with the S3 server stopped
under load every answer is still a 200, and what capture lost is counted."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Team
from harness import wait_for
from serin.converters.conversion import Request, run
from serin.local.controlplane import free_port
from serin.local.s3 import S3Server, start_s3

TOKEN = "capture-test-token"


@pytest.fixture(scope="module")
def model_dir(logreg: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The logistic regression converted (model.onnx, profile.json): one float input of 4 columns."""
    out = tmp_path_factory.mktemp("model") / "fraud"
    assert run(Request(source=str(logreg[0]), sample=str(logreg[1]), out=out)).passed
    return out


@dataclass
class Runtime:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def call(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=None if body is None else json.dumps(body).encode(),
                                         headers={"content-type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                raw = reply.read()
                return reply.status, json.loads(raw) if path != "/metrics" else raw.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def infer(self, rows: list[list[float]]) -> str:
        status, answer = self.call("/v2/models/fraud/infer", {"inputs": [
            {"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": [v for r in rows for v in r]}]})
        assert status == 200, answer
        return str(answer["id"])

    def metric(self, name: str, **labels: str) -> float:
        _, text = self.call("/metrics")
        want = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and all(w in line for w in want))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture
def serve(model_dir: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Runtime] = []

    def start(capture: dict[str, Any], user: Any) -> Runtime:
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SERIN_FEEDBACK_KEY": "k", "SERIN_FEEDBACK_TOKEN": TOKEN,
               "SERIN_CAPTURE": json.dumps(capture), "AWS_ACCESS_KEY_ID": user.access_key,
               "AWS_SECRET_ACCESS_KEY": user.secret_key}
        log = tmp_path / f"runtime-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "serin.runtime", "--model-dir", str(model_dir),
                                     "--name", "fraud", "--revision", "fraud-predictor-00001", "--host", "127.0.0.1",
                                     "--port", str(port), "--state-dir", str(tmp_path / f"state-{port}")],
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        runtime = Runtime(proc, f"http://127.0.0.1:{port}", log)
        started.append(runtime)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            try:
                if runtime.call("/v2/health/ready")[0] == 200:
                    return runtime
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"runtime not ready:\n{log.read_text()}")

    yield start
    for runtime in started:
        runtime.stop()


def records(s3: S3Server, team: Team, prefix: str) -> list[dict[str, Any]]:
    client = s3.client(team.user)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=team.bucket, Prefix=prefix)
            for o in page.get("Contents", [])]
    return [json.loads(line) for key in keys
            for line in gzip.decompress(client.get_object(Bucket=team.bucket, Key=key)["Body"].read()).splitlines()]


def test_answers_and_their_truth_land_in_the_teams_bucket_joinable_by_id(s3: S3Server, team: Team, serve: Any,
                                                                       tmp_path: Path) -> None:
    runtime = serve({"share": 1, "uri": f"s3://{team.bucket}/capture", "namespace": "ml",
                     "s3": {"endpoint": s3.url, "region": s3.region}, "flushSeconds": 0.5}, team.user)
    ids = [runtime.infer([[0.1 * i, 1.0, -1.0, 2.0], [0.5, 0.5, 0.5, 0.5]]) for i in range(30)]
    for pid in ids[:10]:
        status, taken = runtime.call("/v2/models/fraud/feedback", {"id": pid, "truth": [1, 0]},
                                     {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200, taken
    runtime.stop()  # a graceful stop writes what waits
    got = records(s3, team, "capture/ml/fraud/fraud-predictor-00001/")
    predictions = {r["id"]: r for r in got if r["kind"] == "predictions"}
    truth = {r["id"]: r for r in got if r["kind"] == "truth"}
    assert set(predictions) == set(ids) and set(truth) == set(ids[:10])
    assert predictions[ids[3]]["inputs"]["input"][0] == pytest.approx([0.3, 1.0, -1.0, 2.0], rel=1e-6)
    assert truth[ids[0]]["truth"] == [1, 0] and truth[ids[0]]["revision"] == "fraud-predictor-00001"
    # What a data scientist is handed: one row per predicted row, its truth beside it.
    out = tmp_path / "rows.csv"
    export = subprocess.run(
        [sys.executable, "-m", "serin.operator.cli", "capture", "export", "fraud", "-n", "ml", "--since", "1h",
         "--uri", f"s3://{team.bucket}/capture", "--endpoint", s3.url, "--out", str(out)],
        env={**os.environ, "AWS_ACCESS_KEY_ID": team.user.access_key, "AWS_SECRET_ACCESS_KEY": team.user.secret_key},
        capture_output=True, text=True, timeout=120, check=False)
    assert export.returncode == 0, export.stderr
    assert "wrote 60 rows (20 with truth)" in export.stdout, export.stdout
    import pandas as pd

    frame = pd.read_csv(out)
    assert list(frame.columns[:4]) == ["id", "row", "time", "revision"]
    assert {"input_0", "input_3", "truth", "truth_time"} <= set(frame.columns)
    labelled = frame[frame["id"] == ids[0]].sort_values("row")
    assert labelled["truth"].tolist() == [1, 0] and labelled["input_1"].tolist() == pytest.approx([1.0, 0.5])
    # Another team's keys read nothing of it: refused by the S3 server, said in one line.
    other = s3.create_user(f"{team.bucket}-reader")
    refused = subprocess.run(
        [sys.executable, "-m", "serin.operator.cli", "capture", "export", "fraud", "-n", "ml",
         "--uri", f"s3://{team.bucket}/capture", "--endpoint", s3.url, "--out", str(tmp_path / "x.csv")],
        env={**os.environ, "AWS_ACCESS_KEY_ID": other.access_key, "AWS_SECRET_ACCESS_KEY": other.secret_key},
        capture_output=True, text=True, timeout=120, check=False)
    assert refused.returncode == 1 and "AccessDenied" in refused.stderr, refused.stderr


def test_with_the_store_down_every_answer_is_a_200_and_the_loss_is_counted(serve: Any,
                                                                          tmp_path: Path) -> None:
    own = start_s3(tmp_path / "s3-down")
    try:
        user = own.create_user("capture-down")
        own.create_bucket("capture-down", owner=user)
        runtime = serve({"share": 1, "uri": "s3://capture-down", "s3": {"endpoint": own.url},
                         "flushSeconds": 0.2}, user)
        for i in range(5):
            runtime.infer([[float(i), 0, 0, 0]])
        wait_for("5 rows captured", lambda: runtime.metric("serin_capture_rows_total", kind="predictions") >= 5,
                 timeout=30, every=0.2)
    finally:
        own.stop()
    shutil.rmtree(tmp_path / "s3-down", ignore_errors=True)
    # The store is gone: answers go on, capture counts what it cannot write.
    for i in range(40):
        runtime.infer([[float(i), 1, 1, 1]])
    wait_for("40 rows counted as write_failed",
             lambda: runtime.metric("serin_capture_dropped_rows_total", reason="write_failed") >= 40, timeout=60)
    assert runtime.metric("serin_requests_total", code="200") == 45


def test_retention_deletes_the_models_old_objects_on_the_real_s3_server(s3: S3Server, team: Team) -> None:
    """DeleteObjects as boto3 sends it (with its checksum) against the S3 server, every revision of
    the Model expired and nothing of another Model's."""
    from serin.runtime.capture import Capture, CaptureSettings, sink_for

    settings = CaptureSettings(share=1, uri=f"s3://{team.bucket}/capture", namespace="ml", model="fraud",
                               revision="r2", endpoint=s3.url, region=s3.region, retention_seconds=3600)
    keys = {f"capture/ml/{m}/{r}/predictions/2026-01-01/00/{i}-w.jsonl.gz"
            for m, r in (("fraud", "r1"), ("fraud", "r2"), ("fraud2", "r1")) for i in range(3)}
    for key in keys:
        s3.put(team.bucket, key, b"x", user=team.user)
    env = {"AWS_ACCESS_KEY_ID": team.user.access_key, "AWS_SECRET_ACCESS_KEY": team.user.secret_key}
    later = Capture(settings, sink_for(settings, env), clock=lambda: time.time() + 2 * 3600)
    assert later.expire() == 6
    left = {o["Key"] for o in s3.client(team.user).list_objects_v2(Bucket=team.bucket, Prefix="capture/")["Contents"]}
    assert left == {k for k in keys if "/fraud2/" in k}
