"""The conversion's S3 fetch against the real S3 server: the exact object, and for each thing that
can be wrong a reason a person can act on, retried (FetchError, exit 4) only when retrying can help."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Team
from serin.converters import s3 as s3_
from serin.converters.errors import EXIT_FETCH_FAILED, EXIT_USER_ERROR, FetchError, SourceUnavailable
from serin.local.controlplane import free_port
from serin.local.s3 import S3Server, S3User


def settings(s3: S3Server, **kw: object) -> s3_.S3Settings:
    return s3_.S3Settings(endpoint=s3.url, region=s3.region, **kw)  # type: ignore[arg-type]


def keys(user: S3User) -> s3_.Keys:
    return s3_.Keys(user.access_key, user.secret_key)


def test_fetches_exactly_the_key_named(s3: S3Server, team: Team, tmp_path: Path) -> None:
    uri = s3.put(team.bucket, "churn/v1/model.joblib", b"the model")
    s3.put(team.bucket, "churn/v1/model.joblib.bak", b"another file under the same prefix")
    got = s3_.download(uri, tmp_path / "model.joblib", settings(s3), keys(team.user))
    assert got.read_bytes() == b"the model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.joblib"]


def test_a_multipart_object_is_fetched_whole(s3: S3Server, team: Team, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20) * 9)  # 9 MiB: boto3 uploads it in two parts
    uri = s3.put(team.bucket, "big.bin", big, user=team.user)
    got = s3_.download(uri, tmp_path / "out" / "big.bin", settings(s3), keys(team.user))
    assert got.read_bytes() == big.read_bytes()


@pytest.mark.parametrize("case", ["wrong secret", "unknown key id", "other team's bucket", "missing bucket",
                                  "missing object", "anonymous"])
def test_refusals_are_final_and_say_what_to_fix(s3: S3Server, team: Team, tmp_path: Path, case: str) -> None:
    uri = s3.put(team.bucket, "m.joblib", b"x", user=team.user)
    who: s3_.Keys | None = keys(team.user)
    expected = {
        "wrong secret": "the secret access key does not match the access key ID",
        "unknown key id": "does not know the access key ID nobody",
        "other team's bucket": "access denied to",
        "missing bucket": "does not exist at",
        "missing object": "no object absent.joblib in bucket",
        "anonymous": "name a Secret with the keys in spec.source.s3.secretName",
    }[case]
    if case == "wrong secret":
        who = s3_.Keys(team.user.access_key, "wrong")
    elif case == "unknown key id":
        who = s3_.Keys("nobody", "wrong")
    elif case == "other team's bucket":
        who = keys(s3.create_user(f"{team.bucket}-b"))
    elif case == "missing bucket":
        uri = f"s3://{team.bucket}-gone/m.joblib"
    elif case == "missing object":
        uri = f"s3://{team.bucket}/absent.joblib"
    elif case == "anonymous":
        who = None
    with pytest.raises(SourceUnavailable) as refused:
        s3_.download(uri, tmp_path / "m.joblib", settings(s3), who)
    assert expected in refused.value.message, refused.value.message
    assert uri in refused.value.message
    assert refused.value.exit_code == EXIT_USER_ERROR
    assert not any(tmp_path.iterdir()), "a refused fetch leaves no partial file"


def test_an_unreachable_endpoint_is_worth_retrying(s3: S3Server, team: Team, tmp_path: Path) -> None:
    closed = s3_.S3Settings(endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(FetchError) as unreachable:
        s3_.download(f"s3://{team.bucket}/m.joblib", tmp_path / "m", closed, keys(team.user))
    assert type(unreachable.value) is FetchError and unreachable.value.exit_code == EXIT_FETCH_FAILED
    assert "cannot be reached" in unreachable.value.message and closed.endpoint in unreachable.value.message


@pytest.fixture
def not_s3() -> Iterator[str]:
    """An HTTP server that is not S3 (a web page's 404 to everything)."""
    class WebPage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>Not Found</body></html>"
            self.send_response(404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WebPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_an_endpoint_that_is_not_s3_is_said_to_be(not_s3: str, team: Team, tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable) as wrong:
        s3_.download(f"s3://{team.bucket}/no/such.joblib", tmp_path / "m", s3_.S3Settings(endpoint=not_s3),
                     s3_.Keys("a", "b"))
    assert "is it an S3 endpoint" in wrong.value.message or "answered" in wrong.value.message, wrong.value.message


def test_bytes_changed_behind_the_servers_back_fail_the_etag_check(s3: S3Server, team: Team, tmp_path: Path) -> None:
    uri = s3.put(team.bucket, "m.joblib", b"A" * 4096, user=team.user)
    # The posix backend keeps the object as a file and its ETag apart: same length, other bytes.
    (s3.workdir / "data" / team.bucket / "m.joblib").write_bytes(b"B" * 4096)
    with pytest.raises(FetchError) as changed:
        s3_.download(uri, tmp_path / "m.joblib", settings(s3), keys(team.user))
    # botocore checks the CRC the server stored at upload, and Serin the ETag (an MD5) where it has none.
    assert "the bytes received do not match the object's" in changed.value.message
    assert not (tmp_path / "m.joblib").exists()


def test_uri_names_an_object_and_its_key_is_taken_as_written(s3: S3Server, team: Team, tmp_path: Path) -> None:
    for uri in ("s3://bucket/models/", "s3://bucket/models/..", "s3://bucket"):
        with pytest.raises(SourceUnavailable, match="names no object"):
            s3_.split_uri(uri)
    # S3 keys may hold what URLs reserve: fetched as written, not cut at # or ? nor decoded.
    assert s3_.split_uri("s3://bucket/a/b%20c#1?.joblib") == ("bucket", "a/b%20c#1?.joblib")
    uri = s3.put(team.bucket, "v#1/model?.joblib", b"odd key", user=team.user)
    assert s3_.download(uri, tmp_path / "m", settings(s3), keys(team.user)).read_bytes() == b"odd key"


@pytest.mark.parametrize("endpoint", ["http://169.254.169.254", "http://2852039166", "http://[fe80::1]:80"])
def test_an_endpoint_at_the_cloud_metadata_address_is_refused_before_any_request(endpoint: str,
                                                                                 tmp_path: Path) -> None:
    """The fetch step has the network and a Model chooses the endpoint: it must not read the
    node's cloud identity, however the address is spelt."""
    with pytest.raises(SourceUnavailable, match="a link-local address") as refused:
        s3_.download("s3://latest/meta-data/iam/security-credentials/role", tmp_path / "m",
                     s3_.S3Settings(endpoint=endpoint), None)
    assert endpoint in refused.value.message


@pytest.fixture(scope="module")
def s3_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The S3 server on HTTPS, its certificate from a CA of the test's own that no client trusts."""
    from serin.local.pki import create_pki, issue_serving_cert

    work = tmp_path_factory.mktemp("s3-tls")
    pki = create_pki(work / "pki")
    server = S3Server(workdir=work / "s3", tls=issue_serving_cert(pki, "s3", "s3"), ca=pki.ca_cert)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_an_untrusted_certificate_is_refused_and_says_so(s3_tls: S3Server, tmp_path: Path) -> None:
    user = s3_tls.create_user("tls-team")
    s3_tls.create_bucket("tls-team", owner=user)
    uri = s3_tls.put("tls-team", "m.joblib", b"over TLS", user=user)
    with pytest.raises(SourceUnavailable, match="TLS certificate is not trusted") as refused:
        s3_.download(uri, tmp_path / "m", settings(s3_tls), keys(user))
    assert "check spec.source.s3.endpoint and the certificate it serves" in refused.value.message
    assert not any(tmp_path.iterdir())
    # verifyTls: false reads it (the documented way out for a self-signed certificate, at that cost).
    got = s3_.download(uri, tmp_path / "m", settings(s3_tls, verify_tls=False), keys(user))
    assert got.read_bytes() == b"over TLS"


def job(request: dict[str, object], env: dict[str, str], tmp_path: Path) -> tuple[int, dict[str, object]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    termination = tmp_path / "termination"
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "serin.converters.job", "all"],
        env={"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
             "SERIN_CONVERSION_REQUEST": json.dumps(request), "SERIN_WORK_DIR": str(tmp_path / "work"),
             "SERIN_TERMINATION_LOG": str(termination), **env},
        capture_output=True, text=True, timeout=300, check=False, cwd="/")
    assert termination.exists(), proc.stderr
    return proc.returncode, json.loads(termination.read_text())


def test_the_conversion_job_converts_from_s3_with_the_models_keys(s3: S3Server, team: Team, tmp_path: Path,
                                                                  logreg: tuple[Path, Path]) -> None:
    artifact, sample = logreg
    source = {"uri": s3.put(team.bucket, f"churn/{artifact.name}", artifact, user=team.user),
              "sampleUri": s3.put(team.bucket, f"churn/{sample.name}", sample, user=team.user),
              "s3": {"endpoint": s3.url, "region": s3.region, "secretName": "churn-s3"}}
    request = {"source": source, "out": str(tmp_path / "out")}
    user_keys = {"AWS_ACCESS_KEY_ID": team.user.access_key, "AWS_SECRET_ACCESS_KEY": team.user.secret_key}
    code, summary = job(request, user_keys, tmp_path / "ok")
    assert code == 0 and summary["passed"] is True, summary
    assert (tmp_path / "out" / "model.onnx").exists()
    # The same request with another team's keys: refused, said so, and not worth retrying.
    other = s3.create_user(f"{team.bucket}-x")
    code, summary = job({**request, "out": str(tmp_path / "out2")},
                        {"AWS_ACCESS_KEY_ID": other.access_key, "AWS_SECRET_ACCESS_KEY": other.secret_key},
                        tmp_path / "denied")
    assert code == EXIT_USER_ERROR and summary["error"] == "source-unavailable", summary
    assert "access denied" in str(summary["reason"])
