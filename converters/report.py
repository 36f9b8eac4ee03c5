"""report.json, metadata stamping and the atomic writes of the output directory (docs/formats.md)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx

MODEL_FILE = "model.onnx"
PROFILE_FILE = "profile.json"
REPORT_FILE = "report.json"

# Distribution names → report keys. xgboost ships as xgboost-cpu in Serin's images.
_DISTRIBUTIONS = {"skl2onnx": ("skl2onnx",), "onnxmltools": ("onnxmltools",),
                  "onnxruntime": ("onnxruntime",), "onnx": ("onnx",), "sklearn": ("scikit-learn",),
                  "xgboost": ("xgboost-cpu", "xgboost"), "lightgbm": ("lightgbm",),
                  "serin": ("serin",)}


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for key, names in _DISTRIBUTIONS.items():
        for name in names:
            with contextlib.suppress(metadata.PackageNotFoundError):
                found[key] = metadata.version(name)
                break
    return found


def new_report() -> dict[str, Any]:
    """Every key of the contract, so a failure at any step still writes a complete document."""
    return {"passed": False, "reason": None, "error": None, "format": None, "estimator": None, "task": None,
            "opset": None, "rows": None, "parity": None, "seconds": None,
            "sha256": {"source": None, "onnx": None}, "versions": versions(), "warnings": []}


def stamp(model: onnx.ModelProto, source_sha256: str, fmt: str, vers: dict[str, str]) -> None:
    props = {"serin.source_sha256": source_sha256, "serin.format": fmt,
             "serin.converter_versions": json.dumps(vers, sort_keys=True),
             "serin.created_by": f"serin.converters {vers.get('serin', 'dev')}"}
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def default_opset(model: onnx.ModelProto) -> int | None:
    versions_ = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return max(versions_) if versions_ else None


def _json_safe(value: Any) -> Any:
    """JSON has no NaN/Infinity: they become null rather than invalid JSON for other readers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def to_json(value: Any, indent: int | None = 2) -> str:
    return json.dumps(_json_safe(value), indent=indent, allow_nan=False)


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def clear_outputs(out: Path) -> None:
    """A failed run must not leave an older model next to its failing report."""
    for name in (MODEL_FILE, PROFILE_FILE):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()


def report_bytes(report: dict[str, Any]) -> bytes:
    return (to_json(report) + "\n").encode()


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / REPORT_FILE, report_bytes(report))
