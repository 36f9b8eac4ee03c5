"""Fetching `s3://bucket/key` from any S3-compatible server, with reasons a person can act on.

Serin's own client (boto3) rather than kserve-storage's for S3, for three reasons: it fetches
exactly the key named (kserve-storage downloads every object under the key as a prefix, so
`model.joblib` also brings `model.joblib.old`); it tells a missing bucket from a missing object,
a refused key from an unreachable endpoint, and only the last is worth retrying; and in the
conversion Job it never falls back to the node's cloud identity (instance metadata, shared
files): it signs with the keys of the Model's own Secret, or asks anonymously.

Settings come from the Model's `spec.source.s3` (endpoint, region, addressing, verifyTls); the
keys from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN),
which the conversion Job fills from the Model's Secret for its fetch step only.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import socket
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from serin.converters.errors import (
    ConversionError,
    FetchError,
    SourceUnavailable,
    StoreRefused,
    StoreUnavailable,
    first_line,
)

# Reads are streamed to disk in blocks of this size; nothing holds a whole artifact in memory.
BLOCK = 1 << 20
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0
# botocore's "standard" retries: throttling, 5xx and dropped connections, with back-off. Errors that
# outlast them reach the operator as transient (FetchError), which retries the whole fetch later.
ATTEMPTS = 3
# Answers no retry can change: the request, the keys or the object are wrong until a person acts.
_REFUSED = {
    "NoSuchBucket": "bucket {bucket} does not exist at {endpoint}",
    "NoSuchKey": "no object {key} in bucket {bucket} at {endpoint}",
    "InvalidAccessKeyId": "{endpoint} does not know the access key ID {key_id} (the Secret's AWS_ACCESS_KEY_ID)",
    "SignatureDoesNotMatch": "{endpoint} refused the signature: the secret access key does not match "
                             "the access key ID {key_id} (the Secret's AWS_SECRET_ACCESS_KEY)",
    "AccessDenied": "access denied to {uri} for {who} at {endpoint}",
    "ExpiredToken": "the session token has expired (the Secret's AWS_SESSION_TOKEN)",
    "InvalidToken": "the session token is not valid (the Secret's AWS_SESSION_TOKEN)",
    "AuthorizationHeaderMalformed": "{endpoint} refused the request's authorization: {message} "
                                    "(is {field}.region right?)",
    "PermanentRedirect": "bucket {bucket} is in another region or at another endpoint: {message}",
    "InvalidBucketName": "{bucket} is not a valid bucket name",
}
_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
                    "ThrottlingException", "RequestTimeTooSkewed", "TemporaryRedirect",
                    # the bytes a write sent arrived other than they left: sent again, they may not
                    "BadDigest", "XAmzContentSHA256Mismatch"}
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})"?$')


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 server is and how to talk to it (the Model's spec.source.s3)."""

    endpoint: str | None = None  # http(s)://host[:port]; None: AWS's own endpoint for the region
    region: str | None = None
    addressing: str | None = None  # path | virtual; None: path with an endpoint, virtual without
    verify_tls: bool = True

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> S3Settings:
        raw = raw or {}
        return cls(endpoint=raw.get("endpoint") or None, region=raw.get("region") or None,
                   addressing=raw.get("addressing") or None, verify_tls=bool(raw.get("verifyTls", True)))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings:
        """For `serin convert` run by hand: the AWS SDKs' own variables (AWS_ENDPOINT_URL_S3,
        AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION)."""
        return cls(endpoint=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
                   region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None)

    @property
    def where(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region or 'us-east-1'})"


@dataclass(frozen=True)
class Keys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Keys | None:
        key_id, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
        if not key_id and not secret:
            return None
        if not key_id or not secret:
            missing = "AWS_ACCESS_KEY_ID" if not key_id else "AWS_SECRET_ACCESS_KEY"
            raise SourceUnavailable(f"{missing} is empty: the Secret must hold both AWS_ACCESS_KEY_ID and "
                                    "AWS_SECRET_ACCESS_KEY")
        # Stripped: a Secret made from a file often ends its values with a newline.
        return cls(key_id.strip(), secret.strip(), (env.get("AWS_SESSION_TOKEN") or "").strip() or None)


@dataclass(frozen=True)
class Where:
    """Where a person fixes what a reason reports: the settings (their `.endpoint`, `.region`)
    and how keys are given. A Model's source names its own; the model store's are the chart's."""

    settings: str = "spec.source.s3"
    no_keys: str = "name a Secret with the keys in spec.source.s3.secretName"


SOURCE = Where()
# The model store's: the chart's settings, the namespace's Secret (the publish step, the predictor's fetch).
MODEL_STORE = Where(settings="the model store's S3 settings (the chart's conversion.modelStoreS3)",
                    no_keys="the model store needs keys: the namespace's Secret named by "
                            "conversion.modelStoreS3.secretName")


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key → (bucket, key), the key exactly as written: S3 keys may hold `#`, `?` and
    `%`, which URL parsing would cut or decode. The key is one object, never a prefix."""
    if not uri.startswith("s3://"):
        raise SourceUnavailable(f"{uri} is not an s3://BUCKET/KEY URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise SourceUnavailable(f"{uri} is not an s3://BUCKET/KEY URI")
    if not key or key.endswith("/") or key.rsplit("/", 1)[-1] in (".", ".."):
        raise SourceUnavailable(f"{uri} names no object: point at the file itself (s3://{bucket}/path/to/file)")
    return bucket, key


# Where clouds serve a node's identity (instance metadata): link-local addresses, and AWS's IPv6 one.
_METADATA_V6 = ipaddress.ip_address("fd00:ec2::254")


def refuse_metadata_endpoint(settings: S3Settings, where: Where = SOURCE) -> None:
    """An endpoint that resolves to a link-local address is refused before any request: the
    trusted fetch step has the network, and a Model must not make it read the node's cloud
    identity (`http://169.254.169.254`, in any spelling: the resolver normalises them). Not a
    wall (a name could resolve elsewhere a moment later): the chart's NetworkPolicy is one."""
    if not settings.endpoint:
        return
    host = urlparse(settings.endpoint).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return  # unresolvable: the request fails as unreachable, and is retried
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address.is_link_local or address == _METADATA_V6:
            raise SourceUnavailable(
                f"{where.settings}.endpoint {settings.endpoint} resolves to {address}, a link-local address "
                "(where clouds serve a node's instance metadata): refused")


def client(settings: S3Settings, keys: Keys | None, connect_timeout: float = CONNECT_TIMEOUT,
           read_timeout: float = READ_TIMEOUT) -> Any:
    """A boto3 S3 client that signs with `keys` only, or sends unsigned requests without them:
    never the default credential chain (instance metadata, ~/.aws), whose identity is the node's.
    Also the runtime's capture store client (runtime/capture.py)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    addressing = settings.addressing or ("path" if settings.endpoint else "virtual")
    config = Config(
        region_name=settings.region or "us-east-1",
        signature_version=UNSIGNED if keys is None else "s3v4",
        s3={"addressing_style": addressing},
        connect_timeout=connect_timeout, read_timeout=read_timeout,
        retries={"max_attempts": ATTEMPTS, "mode": "standard"},
        # Only the endpoint of the settings: never AWS_ENDPOINT_URL(_S3) or a config file's, which
        # KServe injects into a storage-initializer from the namespace's ServiceAccount.
        ignore_configured_endpoint_urls=True,
    )
    session = boto3.session.Session(
        aws_access_key_id=keys.access_key_id if keys else None,
        aws_secret_access_key=keys.secret_access_key if keys else None,
        aws_session_token=keys.session_token if keys else None,
    )
    return session.client("s3", endpoint_url=settings.endpoint, verify=settings.verify_tls, config=config)


def download(uri: str, target: Path, settings: S3Settings, keys: Keys | None, where: Where = SOURCE,
             s3: Any = None) -> Path:
    """Streams the object to `target`. Raises SourceUnavailable when only a person can fix it
    (bucket, object, keys, settings) and FetchError when trying again later may work. `where`:
    the settings the reasons point at (a Model's spec.source.s3, or the model store's); `s3`: a
    client() of the same settings and keys to reuse (making one costs ~0.1 s)."""
    bucket, key = split_uri(uri)
    refuse_metadata_endpoint(settings, where)
    s3 = s3 or client(settings, keys)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    quiet = warnings.catch_warnings()
    try:
        with quiet:
            # verifyTls: false was asked for: urllib3's warning at every request would only break
            # the promise of one stderr line per failure.
            warnings.filterwarnings("ignore", message="Unverified HTTPS request")
            answer = s3.get_object(Bucket=bucket, Key=key)
            expected = int(answer.get("ContentLength", -1))
            md5, written = hashlib.md5(usedforsecurity=False), 0
            with partial.open("wb") as out:
                for block in answer["Body"].iter_chunks(BLOCK):
                    out.write(block)
                    md5.update(block)
                    written += len(block)
    except Exception as exc:  # botocore raises its own hierarchy; each is sorted below
        partial.unlink(missing_ok=True)
        raise _reason(exc, uri, bucket, key, settings, keys, where) from exc
    if expected >= 0 and written != expected:
        partial.unlink(missing_ok=True)
        raise FetchError(f"cannot fetch {uri}: the answer ended after {written} of {expected} bytes")
    # A single-part upload's ETag is the MD5 of its bytes: a free check that nothing was changed on
    # the way. Not for a multipart upload's, nor under SSE-KMS or SSE-C, whose ETags are not the
    # MD5 of the data; botocore has then checked the CRC the server stored, where it has one, and
    # the artifact's sha256 covers the rest.
    etag = _MD5_ETAG.match(str(answer.get("ETag", "")))
    encrypted = str(answer.get("ServerSideEncryption", "")).startswith("aws:kms") or "SSECustomerAlgorithm" in answer
    if etag and not encrypted and etag.group(1) != md5.hexdigest():
        partial.unlink(missing_ok=True)
        raise FetchError(f"cannot fetch {uri}: the bytes received do not match the object's ETag")
    try:
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise FetchError(f"cannot fetch {uri}: {first_line(exc)}") from exc
    return target


def put_new(uri: str, data: bytes, settings: S3Settings, keys: Keys | None, where: Where, s3: Any = None) -> None:
    """Writes the object `uri`, which must not exist yet (a conditional write, If-None-Match: *),
    or must already hold exactly `data` (an earlier try of the same step wrote it). Never
    overwrites: what the store holds under a version's name stays what was first published
    there. The SHA-256 sent with the bytes is checked by the server. Raises StoreRefused when
    only a person can fix it, StoreUnavailable when trying again later may work."""
    from botocore.exceptions import ClientError

    bucket, key = split_uri(uri)
    try:
        refuse_metadata_endpoint(settings, where)
    except SourceUnavailable as exc:
        raise StoreRefused(exc.message) from None
    s3 = s3 or client(settings, keys)
    sha256 = hashlib.sha256(data)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Unverified HTTPS request")
            s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*",
                          ChecksumSHA256=base64.b64encode(sha256.digest()).decode())
        return
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        code = str(error.get("Code", ""))
        if code == "ConditionalRequestConflict" or status == 409:  # a concurrent conditional write
            raise StoreUnavailable(f"cannot write {uri}: another write of it was under way") from exc
        if code == "NotImplemented" or status == 501:
            raise StoreRefused(f"cannot write {uri}: {settings.where} does not support conditional writes "
                               "(If-None-Match), which the model store needs never to overwrite a version") from exc
        if code != "PreconditionFailed" and status != 412:
            raise _store_reason(_reason(exc, uri, bucket, key, settings, keys, where, action="write")) from exc
    except Exception as exc:
        raise _store_reason(_reason(exc, uri, bucket, key, settings, keys, where, action="write")) from exc
    # The object exists. The same bytes: this step was tried before and got that far (or a retry
    # of the PUT itself found its first try done).
    try:
        if _holds(s3, bucket, key, sha256.hexdigest(), len(data)):
            return
    except Exception as exc:
        raise _store_reason(_reason(exc, uri, bucket, key, settings, keys, where, action="write")) from exc
    raise StoreRefused(f"cannot write {uri}: it already holds other bytes, and a published version is never "
                       "overwritten (a Model deleted and made again under the same name? its versions are "
                       "still in the store)")


def _holds(s3: Any, bucket: str, key: str, sha256_hex: str, size: int) -> bool:
    """Whether the object has exactly these bytes: by the SHA-256 the server keeps when it has one
    (stored with our write), else by reading it (an ETag is no digest under SSE-KMS or SSE-C)."""
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    if int(head.get("ContentLength", -1)) != size:
        return False
    stored = head.get("ChecksumSHA256")
    if stored and "-" not in stored:  # a whole-object checksum, not one of parts
        return bool(base64.b64decode(stored).hex() == sha256_hex)
    digest = hashlib.sha256()
    for block in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(BLOCK):
        digest.update(block)
    return digest.hexdigest() == sha256_hex


def _store_reason(exc: Exception) -> Exception:
    """A reason of _reason() as the store's: a person must act, or a retry may work."""
    message = exc.message if isinstance(exc, ConversionError) else first_line(exc)
    return StoreUnavailable(message) if isinstance(exc, FetchError) else StoreRefused(message)


def _reason(exc: Exception, uri: str, bucket: str, key: str, settings: S3Settings,
            keys: Keys | None, where: Where | None = None, action: str = "fetch") -> Exception:
    from botocore.exceptions import (
        ClientError,
        FlexibleChecksumError,
        HTTPClientError,
        ParamValidationError,
        SSLError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )

    where = where or SOURCE
    endpoint = settings.where
    if isinstance(exc, FlexibleChecksumError):  # the object's stored CRC, checked by botocore
        return FetchError(f"cannot {action} {uri}: the bytes received do not match the object's checksum "
                          f"({first_line(exc)})")
    if isinstance(exc, SSLError):
        said = first_line(exc)
        if "certificate verify failed" in said.lower():  # only a new certificate or setting helps
            return SourceUnavailable(f"cannot {action} {uri}: {endpoint}'s TLS certificate is not trusted ({said}); "
                                     f"check {where.settings}.endpoint and the certificate it serves")
        return FetchError(f"cannot {action} {uri}: TLS with {endpoint} failed ({said})")
    if isinstance(exc, HTTPClientError) and isinstance(exc.kwargs.get("error"), ValueError):
        # The HTTP layer refused a header before sending: a key with a character no header may hold.
        # Its text would quote the key: not repeated.
        return SourceUnavailable(f"cannot {action} {uri}: a key in the Secret cannot be sent in a request header "
                                 "(a character such as a newline inside it?)")
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return FetchError(f"cannot {action} {uri}: {endpoint} cannot be reached or dropped the connection "
                          f"({type(exc).__name__}); is {where.settings}.endpoint right?")
    if isinstance(exc, ParamValidationError):
        return SourceUnavailable(f"cannot {action} {uri}: {first_line(exc)}")
    if not isinstance(exc, ClientError):
        return FetchError(f"cannot {action} {uri}: {first_line(exc)}")
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), first_line(Exception(error.get("Message", "")))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    who = f"access key {keys.access_key_id}" if keys else "anonymous requests (no Secret named)"
    template = _REFUSED.get(code)
    if template is not None:
        text = template.format(bucket=bucket, key=key, endpoint=endpoint, uri=uri, message=message, who=who,
                               key_id=keys.access_key_id if keys else "(none)", field=where.settings)
        if code == "AccessDenied" and keys is None:
            text += f"; {where.no_keys}"
        return SourceUnavailable(f"cannot {action} {uri}: {text}")
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return FetchError(f"cannot {action} {uri}: {endpoint} answered {status} {code or ''} {message}".rstrip())
    if status == 404:  # a 404 without an S3 error code: something else answers at that address
        return SourceUnavailable(f"cannot {action} {uri}: {endpoint} answered 404 without an S3 error; is it an "
                                 f"S3 endpoint ({where.settings}.endpoint)?")
    if status == 403:
        return SourceUnavailable(f"cannot {action} {uri}: {endpoint} refused {who} ({code or 403}: {message})")
    return SourceUnavailable(f"cannot {action} {uri}: {endpoint} answered {status} {code}: {message}")
