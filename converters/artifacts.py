"""Fetching, digest-checking, format detection and loading of model artifacts.

Order matters for safety: `fetch` → `sha256_of` (compared by the caller) → `detect_format` →
`load`. Unpickling runs arbitrary code, so nothing here unpickles before the caller has checked
the digest; `detect_format` only reads magic bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from serin.converters.errors import (
    ConversionError,
    DigestMismatch,
    FetchError,
    UnsupportedModel,
    first_line,
)

if TYPE_CHECKING:
    from serin.converters.s3 import S3Settings

FORMATS = ("sklearn", "xgboost", "lightgbm", "onnx")
PICKLE_SUFFIXES = {".joblib", ".pkl", ".pickle", ".sav"}
# Schemes handed to kserve-storage (the same code KServe's storage initializer runs); s3:// is
# Serin's own (s3.py).
REMOTE_SCHEMES = ("gs://", "http://", "https://", "hdfs://", "webhdfs://", "hf://")
# The conversion Job mounts each claim a pvc:// URI names at PVC_MOUNT/CLAIM (read-only).
PVC_MOUNT = "/mnt/pvc"
FETCH_TIMEOUT = 300.0  # seconds; SERIN_FETCH_TIMEOUT overrides

# First bytes of the compressions joblib may use: zlib, gzip, bz2, xz, lz4.
_COMPRESSED_MAGIC = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x1f\x8b", b"BZh",
                     b"\xfd7zXZ", b"\x04\x22\x4d\x18")


@dataclass(frozen=True)
class Artifact:
    path: Path
    format: str
    model: Any


def fetch(uri: str, workdir: Path, what: str, s3: S3Settings | None = None) -> Path:
    """Returns a local file for `uri` (a path, file://, pvc:// or a remote URI). s3:// URIs are
    read with `s3` (the Model's spec.source.s3; by default the AWS SDK's environment variables)
    and the keys in the environment, or anonymously without them."""
    if uri.startswith("s3://"):
        from serin.converters import s3 as s3_

        settings = s3 if s3 is not None else s3_.S3Settings.from_env(os.environ)
        _, key = s3_.split_uri(uri)
        path = s3_.download(uri, workdir / f"download-{what}" / key.rsplit("/", 1)[-1], settings,
                            s3_.Keys.from_env(os.environ))
    elif uri.startswith("file://"):
        path = Path(unquote(urlparse(uri).path))
    elif uri.startswith("pvc://"):
        # pvc://CLAIM/path → $SERIN_PVC_MOUNT/CLAIM/path, where the Job mounts the claim: one
        # directory per claim, so an artifact and its sample may live on different claims.
        claim, _, rest = uri[len("pvc://"):].partition("/")
        path = Path(os.environ.get("SERIN_PVC_MOUNT", PVC_MOUNT)) / claim / rest
        if not path.exists():
            raise FetchError(f"cannot fetch {what} {uri}: {path} does not exist (is the claim mounted?)")
    elif "://" not in uri:
        path = Path(uri)
    elif uri.startswith(REMOTE_SCHEMES):
        path = _download(uri, workdir, what)
    else:
        scheme = uri.split("://", 1)[0]
        raise ConversionError(
            f"unsupported {what} URI scheme {scheme}:// (use a path, file://, pvc://, s3://, gs://, "
            "http(s)://)"
        )
    if not path.exists():
        raise ConversionError(f"{what} not found: {path}")
    if path.is_dir():
        raise ConversionError(f"{what} {path} is a directory; point at the file itself")
    return path


def _download(uri: str, workdir: Path, what: str) -> Path:
    # kserve_storage pulls in boto3, google-cloud and azure SDKs: import only when needed.
    from kserve_storage import Storage

    target = workdir / f"download-{what}"
    # kserve_storage logs errors itself (own handler) before raising; the CLI promises a single
    # stderr line, and the raised message says the same thing.
    logging.disable(logging.CRITICAL)
    # Cloud clients can retry for minutes (google-auth probes the metadata server when it has
    # no credentials): bound the wait so the user gets an answer, not a hang.
    timeout = float(os.environ.get("SERIN_FETCH_TIMEOUT", FETCH_TIMEOUT))
    result: dict[str, Any] = {}

    def download() -> None:
        try:
            result["dir"] = Storage.download(uri, out_dir=str(target))
        except BaseException as exc:  # handed to the caller's thread below
            result["error"] = exc

    worker = threading.Thread(target=download, name="serin-fetch", daemon=True)
    try:
        worker.start()
        worker.join(timeout)
    finally:
        logging.disable(logging.NOTSET)
    if worker.is_alive():
        raise FetchError(f"cannot fetch {what} {uri}: no answer within {timeout:g}s "
                         "(network, endpoint or credentials; SERIN_FETCH_TIMEOUT sets the limit)")
    if "error" in result:  # every client raises its own types; all mean "could not fetch"
        exc = result["error"]
        raise FetchError(f"cannot fetch {what} {uri}: {first_line(exc)}") from exc
    local_dir = Path(result["dir"])
    wanted = local_dir / Path(urlparse(uri).path).name
    if wanted.is_file():
        return wanted
    files = [p for p in local_dir.rglob("*") if p.is_file()]
    if len(files) == 1:
        return files[0]
    raise FetchError(f"cannot fetch {what} {uri}: expected one file, found {len(files)}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_digest(path: Path, expected: str | None) -> str:
    actual = sha256_of(path)
    if expected is not None and expected.strip().lower() != actual:
        raise DigestMismatch(
            f"sha256 mismatch for {path.name}: expected {expected.strip().lower()}, got {actual}; "
            "refusing to load it"
        )
    return actual


def sniff(path: Path) -> str | None:
    """The container kind from the suffix and magic bytes: onnx, xgboost, lightgbm, pickle or None."""
    with path.open("rb") as f:
        head = f.read(64)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".json", ".ubj") or head.startswith(b'{"learner"'):
        return "xgboost"
    if suffix == ".txt" or head.startswith((b"tree\n", b"tree\r\n")):
        return "lightgbm"
    # Protocol ≥ 2 pickles start with PROTO (0x80); joblib may compress the whole stream.
    if suffix in PICKLE_SUFFIXES or head[:1] == b"\x80" or head.startswith(_COMPRESSED_MAGIC):
        return "pickle"
    if zipfile.is_zipfile(path):
        return None
    # ONNX has no magic; a ModelProto almost always starts with ir_version (field 1, varint).
    if head[:1] == b"\x08":
        return "onnx"
    return None


def load(path: Path, declared: str | None) -> Artifact:
    """Loads the artifact after its digest has been checked; `declared` is --format, if given."""
    if declared is not None and declared not in FORMATS:
        raise ConversionError(f"unknown format {declared!r}; use one of: {', '.join(FORMATS)}")
    kind = sniff(path)
    if kind is None:
        if declared is None:
            raise ConversionError(
                f"cannot tell the format of {path.name}: not a pickle/joblib, XGBoost .json/.ubj, "
                "LightGBM .txt or .onnx file; pass --format sklearn|xgboost|lightgbm|onnx"
            )
        kind = "pickle" if declared == "sklearn" else declared
    if kind == "pickle":
        model = _unpickle(path)
        found = format_of(model)
        if found is None:
            raise UnsupportedModel(
                f"{path.name} holds a {qualname(model)}, which is not a scikit-learn, XGBoost or "
                "LightGBM model"
            )
    elif kind == "xgboost":
        from serin.converters.xgboost_ import load_native

        model, found = load_native(path), "xgboost"
    elif kind == "lightgbm":
        from serin.converters.lightgbm_ import load_native as load_lgbm

        model, found = load_lgbm(path), "lightgbm"
    else:
        from serin.converters.onnx_ import load_onnx

        model, found = load_onnx(path), "onnx"
    if declared is not None and declared != found:
        raise ConversionError(f"--format {declared} given, but {path.name} holds a {found} model "
                              f"({qualname(model)})")
    return Artifact(path=path, format=found, model=model)


def _unpickle(path: Path) -> Any:
    import joblib  # reads joblib files and plain pickles alike

    try:
        return joblib.load(path)
    except ModuleNotFoundError as exc:
        raise ConversionError(
            f"cannot unpickle {path.name}: it needs the Python module {exc.name!r}, which is not "
            "installed here"
        ) from exc
    except (EOFError, pickle.UnpicklingError, ValueError, KeyError, IndexError, OSError,
            TypeError, AttributeError, ImportError, MemoryError, zipfile.BadZipFile) as exc:
        raise ConversionError(
            f"cannot unpickle {path.name}: the file is corrupt or truncated "
            f"({type(exc).__name__}: {first_line(exc, 120)})"
        ) from exc


def format_of(model: Any) -> str | None:
    """The framework a loaded object belongs to (a Pipeline holding XGBoost is still sklearn)."""
    root = type(model).__module__.split(".")[0]
    if root in ("xgboost", "lightgbm"):
        return root
    if root == "onnx":
        return "onnx"
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - sklearn is a dependency
        return None
    return "sklearn" if isinstance(model, BaseEstimator) else None


def qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
