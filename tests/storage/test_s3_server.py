"""What Serin relies on from an S3 server, proven on the real one (versitygw): signature v4 with
path-style addressing, exact keys, multipart uploads and their ETags, ranged GETs, and the error
codes the conversion turns into reasons (converters/s3.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import Team
from serin.local.s3 import S3Server, S3User


def code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return str(response["Error"]["Code"]), int(response["ResponseMetadata"]["HTTPStatusCode"])


def test_single_part_etag_is_the_md5_and_keys_are_exact(s3: S3Server, team: Team) -> None:
    client = s3.client(team.user)
    body = b"serin" * 1000
    client.put_object(Bucket=team.bucket, Key="models/m.joblib", Body=body)
    client.put_object(Bucket=team.bucket, Key="models/m.joblib.old", Body=b"older")
    got = client.get_object(Bucket=team.bucket, Key="models/m.joblib")
    assert got["Body"].read() == body
    assert got["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    assert got["ContentLength"] == len(body)


def test_multipart_upload_and_ranged_get(s3: S3Server, team: Team, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (24 * 4096))  # 24 MiB
    client = s3.client(team.user)
    client.upload_file(str(big), team.bucket, "big.bin",
                       Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
    head = client.head_object(Bucket=team.bucket, Key="big.bin")
    etag = head["ETag"].strip('"')
    # A multipart ETag is not the body's MD5: "<md5 of the parts' md5s>-<parts>".
    assert etag.endswith("-5") and len(etag.split("-")[0]) == 32
    assert head["ContentLength"] == big.stat().st_size
    part = client.get_object(Bucket=team.bucket, Key="big.bin", Range="bytes=1000-1999")
    assert part["ContentRange"] == f"bytes 1000-1999/{big.stat().st_size}"
    assert part["Body"].read() == big.read_bytes()[1000:2000]
    downloaded = tmp_path / "back.bin"
    client.download_file(team.bucket, "big.bin", str(downloaded))
    assert downloaded.read_bytes() == big.read_bytes()


def test_refusals_have_the_codes_serin_reads(s3: S3Server, team: Team) -> None:
    s3.client(team.user).put_object(Bucket=team.bucket, Key="k", Body=b"x")
    with pytest.raises(ClientError) as wrong_secret:
        s3.client(S3User(team.user.access_key, "not-the-secret")).get_object(Bucket=team.bucket, Key="k")
    assert code(wrong_secret) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(ClientError) as unknown_key:
        s3.client(S3User("nobody", "nothing")).get_object(Bucket=team.bucket, Key="k")
    assert code(unknown_key) == ("InvalidAccessKeyId", 403)
    with pytest.raises(ClientError) as missing_bucket:
        s3.client(team.user).get_object(Bucket=f"{team.bucket}-gone", Key="k")
    assert code(missing_bucket) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as missing_key:
        s3.client(team.user).get_object(Bucket=team.bucket, Key="absent")
    assert code(missing_key) == ("NoSuchKey", 404)


def test_a_user_cannot_read_another_users_bucket_nor_anonymous_requests(s3: S3Server, team: Team) -> None:
    s3.client(team.user).put_object(Bucket=team.bucket, Key="k", Body=b"x")
    other = s3.create_user(f"{team.bucket}-other")
    with pytest.raises(ClientError) as denied:
        s3.client(other).get_object(Bucket=team.bucket, Key="k")
    assert code(denied) == ("AccessDenied", 403)
    import boto3

    anonymous = boto3.client("s3", endpoint_url=s3.url, region_name=s3.region,
                             config=Config(signature_version=UNSIGNED, s3={"addressing_style": "path"}))
    with pytest.raises(ClientError) as unsigned:
        anonymous.get_object(Bucket=team.bucket, Key="k")
    assert code(unsigned) == ("AccessDenied", 403)
