"""The conversion flow shared by `serin convert` and the conversion Job.

fetch → verify sha256 → load → check estimator → read sample → native predictions → convert →
stamp → onnxruntime predictions → parity → profile → write model.onnx, profile.json, report.json.
Every failure ends in a report.json with passed=false and a one-line reason.
"""

from __future__ import annotations

import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
from serin.converters import artifacts, parity, profile, report
from serin.converters.errors import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_PARITY_FAILED,
    ConversionError,
    SampleError,
    first_line,
)
from serin.converters.parity import Tolerance
from serin.converters.registry import NativePredictError, Outputs, converter_for
from serin.converters.s3 import S3Settings
from serin.converters.sample import Sample, has_nan, read_sample

DEFAULT_OPSET = 17
MAX_LIBRARY_WARNINGS = 5
# Library warnings about deprecations are noise for the person reading a report.
_QUIET = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@dataclass(frozen=True)
class Request:
    source: str
    sample: str
    out: Path
    format: str | None = None
    sha256: str | None = None
    opset: int = DEFAULT_OPSET
    tolerance: Tolerance = field(default_factory=Tolerance)
    bins: int = 10
    sample_labels: str | None = None  # the sample's column of true labels, not a model input
    s3: S3Settings | None = None  # how s3:// URIs are read (spec.source.s3); None: the AWS variables
    # The S3 model store's place for this version (s3://bucket/prefix/namespace/version) and its
    # settings, where the publish step writes instead of `out` (then /dev/null: nothing else may
    # write there). Its keys are the publish step's environment, from the namespace's Secret.
    store: str | None = None
    store_s3: S3Settings | None = None


@dataclass
class Outcome:
    report: dict[str, Any]
    exit_code: int
    error_kind: str | None = None  # errors.ConversionError.kind, or "internal"

    @property
    def passed(self) -> bool:
        return bool(self.report["passed"])


def run(request: Request) -> Outcome:
    started = time.perf_counter()
    rep = report.new_report()
    outcome = Outcome(rep, EXIT_INTERNAL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _convert(request, rep)
            outcome.exit_code = EXIT_OK if rep["passed"] else EXIT_PARITY_FAILED
        except ConversionError as exc:
            rep["passed"], rep["reason"] = False, exc.message
            outcome.exit_code, outcome.error_kind = exc.exit_code, exc.kind
            rep["error"] = exc.kind
        except Exception as exc:  # a bug: keep the traceback, but still report
            traceback.print_exc()
            rep["passed"] = False
            rep["reason"] = f"internal error: {type(exc).__name__}: {first_line(exc, 200)}"
            outcome.error_kind = rep["error"] = "internal"
    rep["warnings"] += _library_warnings(caught)
    rep["seconds"] = round(time.perf_counter() - started, 4)
    if not rep["passed"]:
        report.clear_outputs(request.out)
    report.write_report(request.out, rep)
    return outcome


def _convert(request: Request, rep: dict[str, Any]) -> None:
    request.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="serin-convert-") as tmp:
        workdir = Path(tmp)
        source = artifacts.fetch(request.source, workdir, "artifact", request.s3)
        # The digest is checked before anything is unpickled: a pickle runs code when loaded.
        rep["sha256"]["source"] = artifacts.sha256_of(source)
        artifacts.verify_digest(source, request.sha256)
        artifact = artifacts.load(source, request.format)
        rep["format"] = artifact.format
        converter = converter_for(artifact.format)
        model = artifact.model
        rep["warnings"] += converter.check(model)
        rep["estimator"] = converter.describe(model)
        task = converter.task(model)
        rep["task"] = task
        frame = read_sample(artifacts.fetch(request.sample, workdir, "sample", request.s3))

    truth = None
    if request.sample_labels:
        if request.sample_labels not in frame.columns:
            shown = ", ".join(str(c) for c in list(frame.columns)[:12])
            raise SampleError(f"sampleLabels: the sample has no column {request.sample_labels!r} "
                              f"(its columns: {shown})")
        truth = frame.pop(request.sample_labels).to_numpy()
        rep["sampleLabels"] = request.sample_labels
    sample = converter.prepare(model, frame)
    rep["rows"] = sample.rows
    try:
        native = converter.predict(model, sample)
    except NativePredictError as exc:
        nan_columns = has_nan(sample.frame)
        if nan_columns:
            raise SampleError(
                f"sample has missing values (NaN) in column(s) {', '.join(nan_columns[:8])} and "
                f"{rep['estimator']} cannot take them ({exc.message[:120]})"
            ) from exc
        raise SampleError(f"the native model rejects the sample: {exc.message}") from exc

    classes = converter.classes(model)
    attempt = _attempt(converter.convert(model, sample, request.opset), sample, native, task,
                       request.tolerance, classes)
    if not attempt.result.passed and attempt.has_float32_inputs:
        # float32 inputs put some sample value on the other side of a threshold or a decision
        # boundary: the same model with float64 inputs may be exact. Kept only if it passes.
        widened = converter.widened(model, sample, request.opset)
        second = None
        if widened is not None:
            try:
                second = _attempt(widened, sample, native, task, request.tolerance, classes)
            except ConversionError as exc:  # keep the float32 result and say why this one failed
                attempt.result.reason = f"{attempt.result.reason}; with float64 inputs: {exc.message}"
        if second is not None:
            if second.result.passed:
                second.result.warnings.insert(0, (
                    "converted with float64 inputs: with float32 inputs "
                    f"{(attempt.result.reason or '').removeprefix('parity failed: ')}"))
                attempt = second
            else:
                again = (second.result.reason or "").removeprefix("parity failed: ")
                attempt.result.reason = f"{attempt.result.reason}; with float64 inputs: {again}"
    onnx_model, sample, converted, result = (attempt.model, attempt.sample, attempt.outputs,
                                             attempt.result)
    report.stamp(onnx_model, rep["sha256"]["source"], artifact.format, rep["versions"])
    rep["opset"] = report.default_opset(onnx_model)
    model_bytes = onnx_model.SerializeToString()
    rep["parity"] = result.as_dict()
    rep["warnings"] += result.warnings
    rep["passed"], rep["reason"] = result.passed, result.reason
    if not result.passed:
        rep["reason"] = (result.reason or "parity failed").replace(
            "parity failed: ", f"parity failed: {rep['estimator']}: ", 1)
        return

    output_name = onnx_model.graph.output[0].name  # "label" for classifiers, values otherwise
    prof = profile.build(sample, converted, task, classes, output_name,
                         request.bins, truth=truth)
    prof["batching"] = parity.batching(model_bytes, sample.feeds())
    rep["batching"] = prof["batching"]
    rep["sha256"]["onnx"] = sha256_hex(model_bytes)
    rep["inputs"] = input_signature(onnx_model)
    # model.onnx and profile.json first, report.json last: a passing report implies both exist.
    report.write_atomic(request.out / report.MODEL_FILE, model_bytes)
    report.write_atomic(request.out / report.PROFILE_FILE, (report.to_json(prof) + "\n").encode())


@dataclass
class _Attempt:
    model: onnx.ModelProto
    sample: Sample  # with the input dtypes the graph declares
    outputs: Outputs
    result: parity.Parity

    @property
    def has_float32_inputs(self) -> bool:
        return any(s.dtype == "float32" for s in self.sample.inputs)


def _attempt(onnx_model: onnx.ModelProto, sample: Sample, native: Outputs, task: str,
             tolerance: Tolerance, classes: list[Any] | None) -> _Attempt:
    """One converted graph run by onnxruntime on the sample and compared with the native model."""
    sample = sample.with_dtypes(_input_dtypes(onnx_model))
    try:
        raw = parity.run_onnx(onnx_model.SerializeToString(), sample.feeds())
    except Exception as exc:  # onnxruntime's Fail / InvalidArgument / NotImplemented
        raise ConversionError(
            f"onnxruntime cannot run the converted model on the sample: {first_line(exc, 200)}"
        ) from exc
    converted = parity.onnx_outputs(raw, task)
    return _Attempt(onnx_model, sample, converted,
                    parity.compare(native, converted, task, tolerance, classes))


def input_signature(model: onnx.ModelProto) -> str:
    """What a request must carry, as the runtime checks it: each input's name, element type and
    shape past the batch dimension. Two versions with the same signature take the same requests;
    the operator compares a canary's with the stable's before giving it traffic."""
    parts = []
    for i in model.graph.input:
        tensor = i.type.tensor_type
        dims = [str(d.dim_value) if d.HasField("dim_value") else "?" for d in tensor.shape.dim][1:]
        dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        parts.append(f"{i.name}:{dtype}[{','.join(dims)}]")
    return " ".join(parts)


def _input_dtypes(model: onnx.ModelProto) -> dict[str, str]:
    names: dict[int, str] = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.DOUBLE: "float64",
             onnx.TensorProto.INT64: "int64", onnx.TensorProto.STRING: "string"}
    return {i.name: names[i.type.tensor_type.elem_type] for i in model.graph.input
            if i.type.tensor_type.elem_type in names}


def sha256_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _library_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    seen: list[str] = []
    for w in caught:
        if issubclass(w.category, _QUIET):
            continue
        text = f"{w.category.__name__}: {first_line(w.message, 200)}"  # type: ignore[arg-type]
        if text not in seen:
            seen.append(text)
    return seen[:MAX_LIBRARY_WARNINGS]

