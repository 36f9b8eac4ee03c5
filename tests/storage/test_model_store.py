"""The S3 model store (issue 34 #3) against the real S3 server: the conversion's publish step writes
a version's place once, with the namespace's store keys, and never over other bytes; the
predictor's storage-initializer (serin.runtime.fetch) reads exactly that version back; each thing
that can be wrong says what to fix, and is retried only when retrying can help.

The store is laid out as the chart's: a bucket of the platform's, each namespace's keys scoped by a
bucket policy to `{prefix}/{namespace}/`, as local/cluster_platform.py sets it up."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from serin.converters import s3 as s3_
from serin.converters.errors import EXIT_STORE_FAILED, StoreRefused, StoreUnavailable
from serin.converters.publish import S3Sink
from serin.local.controlplane import free_port
from serin.local.s3 import S3Server, S3User
from serin.runtime import fetch as store_fetch

PREFIX = "versions"


@dataclass(frozen=True)
class Store:
    bucket: str
    namespace: str
    user: S3User  # the namespace's store keys

    def place(self, version: str) -> str:
        return f"s3://{self.bucket}/{PREFIX}/{self.namespace}/{version}"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.user.access_key, "AWS_SECRET_ACCESS_KEY": self.user.secret_key}

    def keys(self) -> s3_.Keys:
        return s3_.Keys(self.user.access_key, self.user.secret_key)


@pytest.fixture
def stores(s3: S3Server) -> tuple[Store, Store]:
    """One store bucket, two namespaces with keys of their own."""
    bucket = f"store-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(bucket)
    out = []
    for ns in ("team-a", "team-b"):
        user = s3.create_user(f"{bucket}-{ns}")
        s3.grant(bucket, f"{PREFIX}/{ns}", user)
        out.append(Store(bucket, ns, user))
    return out[0], out[1]


def settings(s3: S3Server) -> s3_.S3Settings:
    return s3_.S3Settings(endpoint=s3.url, region=s3.region)


def test_a_version_is_written_once_and_never_over_other_bytes(s3: S3Server, stores: tuple[Store, Store]) -> None:
    team_a, _ = stores
    sink = S3Sink(team_a.place("fraud-g1-abcdef01"), settings(s3), team_a.keys())
    sink.write("model.onnx", b"the model")
    # The same bytes again (the publish step tried again after writing part of the version): fine.
    sink.write("model.onnx", b"the model")
    with pytest.raises(StoreRefused, match="already holds other bytes, and a published version is never overwritten"):
        sink.write("model.onnx", b"another model")
    got = s3.client().get_object(Bucket=team_a.bucket, Key=f"{PREFIX}/team-a/fraud-g1-abcdef01/model.onnx")
    assert got["Body"].read() == b"the model"


def test_a_namespaces_keys_reach_its_own_part_of_the_store_only(s3: S3Server, stores: tuple[Store, Store],
                                                                tmp_path: Path) -> None:
    team_a, team_b = stores
    S3Sink(team_a.place("v1"), settings(s3), team_a.keys()).write("model.onnx", b"a's model")
    with pytest.raises(StoreRefused, match="access denied to") as refused:
        S3Sink(team_a.place("v2"), settings(s3), team_b.keys()).write("model.onnx", b"b's model")
    assert team_b.user.access_key in refused.value.message
    with pytest.raises(store_fetch.ConversionError, match="access denied to"):
        store_fetch.fetch(team_a.place("v1"), tmp_path / "b", {**team_b.env(), store_fetch.SETTINGS_ENV: json.dumps(
            {"endpoint": s3.url})})


def test_an_unreachable_store_is_worth_retrying_and_a_refusing_one_is_not(s3: S3Server,
                                                                         stores: tuple[Store, Store]) -> None:
    team_a, _ = stores
    closed = s3_.S3Settings(endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StoreUnavailable) as unreachable:
        S3Sink(team_a.place("v1"), closed, team_a.keys()).write("model.onnx", b"m")
    assert unreachable.value.exit_code == EXIT_STORE_FAILED
    assert "is the model store's S3 settings (the chart's conversion.modelStoreS3).endpoint right?" \
        in unreachable.value.message
    with pytest.raises(StoreRefused) as wrong_secret:
        S3Sink(team_a.place("v1"), settings(s3), s3_.Keys(team_a.user.access_key, "wrong")).write("m", b"m")
    assert "the secret access key does not match" in wrong_secret.value.message
    with pytest.raises(StoreRefused, match="does not exist at"):
        S3Sink(f"s3://{team_a.bucket}-gone/{PREFIX}/team-a/v1", settings(s3), team_a.keys()).write("m", b"m")
    with pytest.raises(StoreRefused, match="the model store needs keys"):
        S3Sink(team_a.place("v1"), settings(s3), None).write("model.onnx", b"m")


def step(name: str, request: dict[str, object], env: dict[str, str], work: Path) -> tuple[int, dict[str, object]]:
    """One step of the conversion Job, as its container runs it (python -P -m, from /)."""
    termination = work / f"{name}.termination"
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "serin.converters.job", name],
        env={"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
             "SERIN_CONVERSION_REQUEST": json.dumps(request), "SERIN_WORK_DIR": str(work),
             "SERIN_TERMINATION_LOG": str(termination), **env},
        capture_output=True, text=True, timeout=300, check=False, cwd="/")
    summary = json.loads(termination.read_text()) if termination.exists() else {}
    assert proc.returncode == 0 or summary, proc.stderr
    return proc.returncode, summary


def test_the_conversion_publishes_to_the_store_and_the_predictor_fetches_exactly_that(
        s3: S3Server, stores: tuple[Store, Store], logreg: tuple[Path, Path], tmp_path: Path) -> None:
    """The Job's three steps with the store's request (`out` the version's place, `outS3` the
    store's settings): only publish holds the store keys. Then the predictor's storage-initializer
    (serin.runtime.fetch, as the chart's ClusterStorageContainer runs it) fetches the version, whose
    model.onnx has the digest the summary recorded."""
    team_a, _ = stores
    artifact, sample = logreg
    place = team_a.place("churn-g1-abcdef01")
    request = {"source": {"uri": str(artifact), "sampleUri": str(sample)}, "out": place,
               "outS3": {"endpoint": s3.url, "region": s3.region}}
    work = tmp_path / "work"
    for sub in ("input", "output"):
        (work / sub).mkdir(parents=True)
    assert step("fetch", request, {}, work)[0] == 0
    assert step("convert", request, {}, work)[0] == 0
    # Without the keys the publish step is refused, says where keys come from, and writes nothing.
    code, refused = step("publish", request, {}, work)
    assert code != 0 and refused["error"] == "store-refused"
    assert "the model store needs keys" in str(refused["reason"])
    code, summary = step("publish", request, team_a.env(), work)
    assert code == 0 and summary["passed"] is True, summary
    listed = s3.client().list_objects_v2(Bucket=team_a.bucket, Prefix=f"{PREFIX}/team-a/churn-g1-abcdef01/")
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed["Contents"]) == ["model.onnx", "profile.json",
                                                                               "report.json"]
    served = tmp_path / "mnt-models"
    code = store_fetch.main([place, str(served)], {**team_a.env(), store_fetch.SETTINGS_ENV: json.dumps(
        {"endpoint": s3.url, "region": s3.region, "addressing": "", "verifyTls": True})},
        termination=str(tmp_path / "fetch.termination"))
    assert code == 0
    assert sorted(p.name for p in served.iterdir()) == ["model.onnx", "profile.json"]
    assert hashlib.sha256((served / "model.onnx").read_bytes()).hexdigest() == summary["onnxSha256"]
    # Published again (the same Job's step retried): the version is as it was.
    code, again = step("publish", request, team_a.env(), work)
    assert code == 0 and again["onnxSha256"] == summary["onnxSha256"]


def test_the_predictors_fetch_of_a_missing_version_says_what_is_missing(s3: S3Server, stores: tuple[Store, Store],
                                                                       tmp_path: Path) -> None:
    team_a, _ = stores
    termination = tmp_path / "termination"
    env = {**team_a.env(), store_fetch.SETTINGS_ENV: json.dumps({"endpoint": s3.url})}
    code = store_fetch.main([team_a.place("never-published"), str(tmp_path / "m")], env, str(termination))
    assert code == store_fetch.EXIT_FAILED
    said = termination.read_text()
    assert said.startswith("serin model store: cannot fetch") and "no object" in said
    assert f"{PREFIX}/team-a/never-published/model.onnx" in said
    # Unreachable: another exit, which the kubelet's restarts of the init container retry anyway.
    closed = {**team_a.env(), store_fetch.SETTINGS_ENV: json.dumps({"endpoint": f"http://127.0.0.1:{free_port()}"})}
    assert store_fetch.main([team_a.place("v"), str(tmp_path / "m")], closed, str(termination)) == \
        store_fetch.EXIT_RETRY
    assert "cannot be reached" in termination.read_text()
    assert store_fetch.main(["pvc://claim/v", str(tmp_path / "m")], env, str(termination)) == store_fetch.EXIT_FAILED
    assert "is not an s3:// URI" in termination.read_text()


def test_the_client_takes_its_endpoint_from_its_settings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """KServe injects AWS_ENDPOINT_URL into a storage-initializer from the namespace's
    ServiceAccount; botocore would read it when the settings name no endpoint (AWS's own), and
    send requests signed with the store keys there."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    aws = s3_.client(s3_.S3Settings(region="eu-west-1"), None)
    assert aws.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"
    assert s3_.client(s3_.S3Settings(endpoint="http://s3.storage:7070"), None).meta.endpoint_url == \
        "http://s3.storage:7070"
