"""The conversion's last step, which never unpickles: what the untrusted step wrote, checked and
copied to the model store.

The untrusted step (it ran the artifact's code) writes model.onnx, profile.json and report.json to
a scratch directory; it has no access to the store. This step reads those files as untrusted
input: regular files only (a symlink could point anywhere this step can read), bounded in size,
model.onnx parsed as an ONNX model with its tensors inside it (external data would make the
runtime read other files), profile.json and report.json as JSON objects. Then it computes itself
what the operator and the runtime rely on: the model's digest (which the runtime checks before it
serves the bytes), the artifact's digest, the input signature, and the reference profile the gates
judge against (`reference`: drift bins, prediction shares, calibration knots, batching), and
writes the three files to the Model's own directory of the store (the only part of the store this
step's Pod mounts).

The profile is rebuilt here from the sample and the ONNX model run by onnxruntime, so a candidate
cannot write its own gate inputs (a calibration `accuracy: [1, 1]` would make its estimated
accuracy always 1, a flat reference would hide drift). Of the untrusted profile only two claims
are kept, each checked: which sample column feeds which model input (the ONNX graph names its
inputs but not the columns behind them; the claim must cover every input's width exactly once with
distinct columns the sample has), and the order of the classes (the graph's probability columns;
the claim must have one per column and name every class the model predicts). Neither can make a
candidate look better: a wrong column mapping misnames features and moves the reference away from
live traffic (alarms, not silence), and a wrong class order can only lower the probability a row
is credited with (the predicted class has the highest).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from serin.converters import report
from serin.converters.errors import ConversionError
from serin.converters.s3 import Keys, S3Settings
from serin.runtime.profile import PROFILE_DIGEST_KEY

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
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError, and what onnx wraps it in
        raise PublishError(f"the conversion's model.onnx is not an ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise PublishError("the conversion's model.onnx has an empty graph")
    if any(uses_external_data(t) for t in _get_all_tensors(model)):
        raise PublishError("the conversion's model.onnx refers to external data files; a served model "
                           "must hold its tensors itself")
    return model


@dataclass(frozen=True)
class SampleSource:
    """What the reference profile is computed from, as the trusted fetch step copied it."""

    path: Path
    labels: str | None = None  # the column of true labels (spec.source.sampleLabels)
    bins: int = 10


def reference(claimed: dict[str, Any], model_bytes: bytes, model: Any, source: SampleSource) -> dict[str, Any]:
    """The reference profile (profile.build) computed by this step: the sample as read here, fed
    to the ONNX model by onnxruntime here. `claimed` (the untrusted profile) gives only the column
    of each input and the class order, both checked (module docstring)."""
    from serin.converters import parity, profile
    from serin.converters.conversion import _input_dtypes
    from serin.converters.registry import CLASSIFICATION, REGRESSION
    from serin.converters.sample import InputSpec, Sample, read_sample

    frame = read_sample(source.path)
    truth = None
    if source.labels:
        if source.labels not in frame.columns:
            raise PublishError(f"the sample has no column {source.labels!r} (sampleLabels)")
        truth = frame.pop(source.labels).to_numpy()
    graph = [(i.name, i.type.tensor_type) for i in model.graph.input]
    dtypes = _input_dtypes(model)
    if len(dtypes) != len(graph):
        raise PublishError("the conversion's model.onnx has an input of a type the runtime does not take")
    features = claimed.get("features")
    if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
        raise PublishError("the conversion's profile has no features list")
    columns: dict[str, dict[int, str]] = {name: {} for name, _ in graph}
    for f in features:
        name, where, index = f.get("name"), f.get("input"), f.get("column")
        if not (isinstance(name, str) and isinstance(where, str) and type(index) is int):
            raise PublishError("the conversion's profile has a feature without a name, input and column")
        if where not in columns or index in columns[where]:
            raise PublishError(f"the conversion's profile maps feature {name[:80]!r} to {where[:80]!r} column "
                               f"{index}, which the model does not have or which is mapped twice")
        columns[where][index] = name
    names = [n for by_index in columns.values() for n in by_index.values()]
    if len(set(names)) != len(names) or not set(names) <= set(frame.columns):
        raise PublishError("the conversion's profile maps a sample column twice, or one the sample does not have")
    specs = []
    for name, tensor in graph:
        dims = tensor.shape.dim
        width = dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value") else None
        mapped = columns[name]
        if sorted(mapped) != list(range(len(mapped))) or not mapped or (width is not None and width != len(mapped)):
            raise PublishError(f"the conversion's profile does not map every column of input {name[:80]!r} "
                               f"({len(mapped)} mapped, the model takes {width if width is not None else '?'})")
        specs.append(InputSpec(name, dtypes[name], tuple(mapped[i] for i in range(len(mapped)))))
    sample = Sample(frame[names], tuple(specs), native_frame=False,
                    layout="columns" if all(len(s.columns) == 1 for s in specs) and len(specs) > 1 else "matrix")
    prediction = claimed.get("prediction")
    kind = prediction.get("kind") if isinstance(prediction, dict) else None
    task = {"classification": CLASSIFICATION, "regression": REGRESSION}.get(str(kind))
    if task is None:
        raise PublishError("the conversion's profile says neither classification nor regression")
    feeds = sample.feeds()
    try:
        raw = parity.run_onnx(model_bytes, feeds)
    except Exception as exc:  # onnxruntime's Fail / InvalidArgument / NotImplemented
        raise PublishError(f"onnxruntime cannot run the conversion's model on the sample: "
                           f"{' '.join(str(exc).split())[:200]}") from None
    classes: list[Any] | None = None
    if task == CLASSIFICATION:
        if len(raw) < 2 or raw[0].size != sample.rows or raw[1].ndim != 2 or len(raw[1]) != sample.rows:
            raise PublishError("the conversion's model.onnx does not answer labels and probabilities per row, "
                               "as a classifier's does")
        claimed_classes = prediction.get("classes") if isinstance(prediction, dict) else None
        if not isinstance(claimed_classes, list) or not all(isinstance(c, str) for c in claimed_classes):
            raise PublishError("the conversion's profile has no list of classes")
        predicted = {profile.class_key(v) for v in raw[0].tolist()}
        if not predicted <= set(claimed_classes) or len(set(claimed_classes)) != len(claimed_classes):
            raise PublishError("the conversion's profile's classes miss a class the model predicts, or repeat one")
        if 1 < raw[1].shape[1] < len(claimed_classes):
            # More classes than probability columns: no honest profile has it (its classes are the
            # model's), and it would leave the probabilities unrelated to classes, uncalibrated.
            # (One column is a binary decision function's score, as a LinearSVC's: no probability.)
            raise PublishError(f"the conversion's profile names {len(claimed_classes)} classes for "
                               f"{raw[1].shape[1]} probability columns")
        classes = claimed_classes
    elif not raw or len(raw[0]) != sample.rows or raw[0].dtype.kind != "f":
        raise PublishError("the conversion's model.onnx does not answer one number per row, as a regressor's does")
    outputs = parity.onnx_outputs(raw, task)
    built = profile.build(sample, outputs, task, classes, model.graph.output[0].name, source.bins, truth=truth)
    built["batching"] = parity.batching(model_bytes, feeds)
    return built


def with_profile_digest(model: Any, digest: str) -> bytes:
    """The model's bytes naming its profile's digest (whatever the untrusted step claimed under
    that key is dropped). Metadata only: the graph, and so every answer, is the one proved."""
    kept = [p for p in model.metadata_props if p.key != PROFILE_DIGEST_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=PROFILE_DIGEST_KEY, value=digest)
    data: bytes = model.SerializeToString()
    if len(data) > MAX_MODEL_BYTES:
        raise PublishError(f"the conversion's model.onnx is larger than {MAX_MODEL_BYTES} bytes")
    return data


class Sink(Protocol):
    """Where a checked version is written: the Model's directory of the store."""

    def write(self, name: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class DirectorySink:
    """A directory: the store claim's, mounted by subPath, or a local one (`serin convert`)."""

    path: Path

    def write(self, name: str, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        report.write_atomic(self.path / name, data)


@dataclass
class S3Sink:
    """A prefix of the S3 model store, `s3://bucket/prefix/namespace/version`: each file written
    once (s3.put_new: never over other bytes), with the keys of the namespace's Secret, by one
    client."""

    uri: str
    settings: S3Settings
    keys: Keys | None
    _client: Any = None

    def write(self, name: str, data: bytes) -> None:
        from serin.converters import s3

        if self._client is None:
            self._client = s3.client(self.settings, self.keys)
        s3.put_new(f"{self.uri.rstrip('/')}/{name}", data, self.settings, self.keys, s3.MODEL_STORE, self._client)


def publish(src: Path, dst: Path | Sink, artifact: Path | None, sample: SampleSource) -> dict[str, Any]:
    """Checks what the untrusted step left in `src` and writes it to `dst` (a directory or a
    Sink). Returns the report,
    whose digests, input signature, task and reference profile (from `sample`) this step computed;
    its parity figures remain the untrusted step's claim (docs/security.md).
    A report that did not pass is returned as it is, and nothing is written (the caller reports
    the failure)."""
    from serin.converters.conversion import input_signature, sha256_hex

    rep = _json_object(read_regular(src / report.REPORT_FILE, MAX_REPORT_BYTES, "report"), "report")
    if rep.get("passed") is not True:
        return rep
    model_bytes = read_regular(src / report.MODEL_FILE, MAX_MODEL_BYTES, "model")
    model = _onnx_model(model_bytes)
    profile_bytes = read_regular(src / report.PROFILE_FILE, MAX_PROFILE_BYTES, "profile")
    claimed_profile = _json_object(profile_bytes, "profile")
    built = reference(claimed_profile, model_bytes, model, sample)
    profile_bytes = (report.to_json(built) + "\n").encode()
    # The profile's digest goes into model.onnx, whose own digest the runtime checks against the
    # one the operator recorded: so the runtime can refuse a profile.json changed in the store.
    model_bytes = with_profile_digest(model, sha256_hex(profile_bytes))
    rep["batching"] = built["batching"]
    rep["task"] = built["prediction"]["kind"]  # what the operator picks its prediction-shift query by
    claimed = rep.get("sha256")
    digests: dict[str, Any] = claimed if isinstance(claimed, dict) else {}
    digests["onnx"] = sha256_hex(model_bytes)
    if artifact is not None:
        from serin.converters.artifacts import sha256_of

        digests["source"] = sha256_of(artifact)
    rep["sha256"] = digests
    rep["inputs"] = input_signature(model)
    sink = DirectorySink(dst) if isinstance(dst, Path) else dst
    # model.onnx and profile.json first, report.json last: a passing report implies both exist.
    sink.write(report.MODEL_FILE, model_bytes)
    sink.write(report.PROFILE_FILE, profile_bytes)
    sink.write(report.REPORT_FILE, report.report_bytes(rep))
    return rep
