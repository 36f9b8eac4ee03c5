"""The conversion's last step, which never unpickles: what the untrusted step wrote, checked and
copied to the model store.

The untrusted step (it ran the artifact's code) writes model.onnx, profile.json and report.json to
a scratch directory; it has no access to the store. This step reads those files as untrusted
input: regular files only (a symlink could point anywhere this step can read), bounded in size,
model.onnx parsed as an ONNX model with its tensors inside it (external data would make the
runtime read other files), profile.json and report.json as JSON objects. Then it computes itself
what the operator and the runtime rely on: the model's digest (which the runtime checks before it
serves the bytes), the artifact's digest and the input signature, and writes the three files to
the Model's own directory of the store (the only part of the store this step's Pod mounts).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from serin.converters import report
from serin.converters.errors import ConversionError

MAX_MODEL_BYTES = (2 << 30) - 1  # protobuf's own limit for one message
MAX_PROFILE_BYTES = 16 << 20
MAX_REPORT_BYTES = 4 << 20


class PublishError(ConversionError):
    kind = "untrusted-output"


def read_regular(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file that is not a symlink, at most `limit` of them."""
    try:
        # O_NONBLOCK: a FIFO left in place of a file must not hang this step.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PublishError(f"the conversion wrote no {what} ({path.name})") from None
    except OSError as exc:
        raise PublishError(f"the conversion's {what} ({path.name}) cannot be read as a file: "
                           f"{os.strerror(exc.errno or 0) or exc}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PublishError(f"the conversion's {what} ({path.name}) is not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise PublishError(f"the conversion's {what} ({path.name}) is larger than {limit} bytes")
    return data


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise PublishError(f"the conversion's {what} is not JSON") from None
    if not isinstance(doc, dict):
        raise PublishError(f"the conversion's {what} is not a JSON object")
    return doc


def _onnx_model(data: bytes) -> Any:
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError, and what onnx wraps it in
        raise PublishError(f"the conversion's model.onnx is not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise PublishError("the conversion's model.onnx has an empty graph")
    from onnx.external_data_helper import _get_all_tensors

    if any(uses_external_data(t) for t in _get_all_tensors(model)):
        raise PublishError("the conversion's model.onnx refers to external data files; a served model "
                           "must hold its tensors itself")
    return model


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish(src: Path, dst: Path, artifact: Path | None) -> dict[str, Any]:
    """Checks what the untrusted step left in `src` and writes it to `dst`. Returns the report,
    whose digests and input signature this step computed. A report that did not pass is returned
    as it is, and nothing is written (the caller reports the failure)."""
    from serin.converters.conversion import input_signature

    rep = _json_object(read_regular(src / report.REPORT_FILE, MAX_REPORT_BYTES, "report"), "report")
    if rep.get("passed") is not True:
        return rep
    model_bytes = read_regular(src / report.MODEL_FILE, MAX_MODEL_BYTES, "model")
    model = _onnx_model(model_bytes)
    profile_bytes = read_regular(src / report.PROFILE_FILE, MAX_PROFILE_BYTES, "profile")
    _json_object(profile_bytes, "profile")
    claimed = rep.get("sha256")
    digests: dict[str, Any] = claimed if isinstance(claimed, dict) else {}
    digests["onnx"] = sha256_hex(model_bytes)
    if artifact is not None:
        from serin.converters.artifacts import sha256_of

        digests["source"] = sha256_of(artifact)
    rep["sha256"] = digests
    rep["inputs"] = input_signature(model)
    dst.mkdir(parents=True, exist_ok=True)
    # model.onnx and profile.json first, report.json last: a passing report implies both exist.
    report.write_atomic(dst / report.MODEL_FILE, model_bytes)
    report.write_atomic(dst / report.PROFILE_FILE, profile_bytes)
    report.write_report(dst, rep)
    return rep
