"""The served model: an onnxruntime session, its V2 signature, and response encoding."""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
from serin.runtime.decode import RequestError
from serin.runtime.profile import PROFILE_DIGEST_KEY, Profile, ProfileError, parse_profile_bytes
from serin.runtime.signature import TensorSpec, datatype_of, tensor_spec

log = logging.getLogger("serin.runtime")

_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True)
class Task:
    """What the predictions mean, for the prediction metrics."""

    kind: str | None  # "classification" | "regression" | None (unknown: no prediction metrics)
    output: str | None  # the output holding labels (classification) or values (regression)
    classes: tuple[str, ...] = ()
    cuts: tuple[float, ...] = ()
    calibration: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # profile.Prediction's


class ModelRefused(Exception):
    """The model directory holds something this runtime must not serve (the message says why)."""


def verified_bytes(path: Path, sha256: str) -> bytes:
    """model.onnx's bytes, if they have the digest its conversion recorded. The store may be
    reachable by other writers (a volume shared across claims, a person with access to it): what
    is served must be what was converted and analysed, never what a file now holds."""
    import hashlib

    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256.strip().lower():
        raise ModelRefused(f"refusing to serve {path}: its sha256 is {actual}, not {sha256.strip().lower()} as its "
                           "conversion recorded (the file was replaced after it was converted)")
    return data


def _session(path: Path | bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # One thread per worker process: parallelism comes from processes (one per core), and a
    # thread pool per process would oversubscribe the cores and add wake-up latency to tiny runs.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts,
                                providers=["CPUExecutionProvider"])


def _nan_inputs(meta: dict[str, str], profile: Profile | None, allow_all: bool) -> set[str] | bool:
    if allow_all:
        return True
    names: set[str] = set(profile.nan_inputs) if profile else set()
    # ONNX metadata_props `serin.allow_nan`: "true" (every input) or a comma-separated input list.
    flag = meta.get("serin.allow_nan", "").strip()
    if flag.lower() == "true":
        return True
    names.update(n.strip() for n in flag.split(",") if n.strip())
    return names


class OnnxModel:
    def __init__(
        self, name: str, model_dir: Path, *, allow_nan: bool = False, threads: int = 1, sha256: str = ""
    ) -> None:
        self.name = name
        self.recent_run_seconds = 0.0  # how long session.run has taken lately (see App._run)
        self.runs = 0  # session.run calls so far (serin_model_runs_total)
        # Ids for V2 answers to requests without one: unique across processes and restarts (a
        # random prefix per process) without a uuid4 per request (an os.urandom call each).
        self._id_prefix = f"{uuid.uuid4().hex[:16]}-"
        self._ids = itertools.count(1)
        self.model_dir = Path(model_dir)
        onnx_path = self.model_dir / "model.onnx"
        if not onnx_path.is_file():
            raise FileNotFoundError(f"{onnx_path} not found (a Serin model dir holds model.onnx)")
        # The bytes checked are the bytes loaded: no window for a swap between the two.
        self.session = _session(verified_bytes(onnx_path, sha256) if sha256 else onnx_path, threads)
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        self.version = meta.get("serin.source_sha256", "")[:12] or None
        self.profile = self._load_profile(meta.get(PROFILE_DIGEST_KEY, ""))
        nan = _nan_inputs(meta, self.profile, allow_nan)
        self.inputs: dict[str, TensorSpec] = {}
        for arg in self.session.get_inputs():
            allowed = nan is True or (isinstance(nan, set) and arg.name in nan)
            spec = tensor_spec(arg.name, arg.type, list(arg.shape), allowed)
            if spec is None:
                raise ValueError(f"input {arg.name!r} has type {arg.type}: only tensors are served")
            self.inputs[arg.name] = spec
        self.outputs: dict[str, TensorSpec] = {}
        for arg in self.session.get_outputs():
            spec = tensor_spec(arg.name, arg.type, list(arg.shape))
            if spec is None:
                # ZipMap's sequence of maps has no V2 representation: convert with zipmap off.
                log.warning("output %r (%s) is not a tensor: not served", arg.name, arg.type)
                continue
            self.outputs[arg.name] = spec
        if not self.outputs:
            raise ValueError("the model has no tensor outputs to serve")
        self.output_names = list(self.outputs)
        self.task = self._task()

    def _load_profile(self, sha256: str = "") -> Profile | None:
        """profile.json, refused unless it has `sha256` when the model names one (its publish
        step did: the reference the gates judge by is then the one published, as model.onnx is)."""
        path = self.model_dir / "profile.json"
        if not path.is_file():
            if sha256:
                raise ModelRefused(f"refusing to serve {self.model_dir}: its profile.json is missing, and the "
                                   "model names the one published with it")
            log.warning("%s not found: serving without drift metrics", path)
            return None
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ProfileError(f"{path}: {exc}") from exc
        if sha256:
            import hashlib

            actual = hashlib.sha256(data).hexdigest()
            if actual != sha256.strip().lower():
                raise ModelRefused(f"refusing to serve {self.model_dir}: profile.json's sha256 is {actual}, not "
                                   f"{sha256.strip().lower()} as model.onnx names it (the file was replaced after "
                                   "it was published)")
        try:
            return parse_profile_bytes(data, path)
        except ProfileError as exc:
            # A bad profile must not stop serving: drift monitoring is an add-on to inference.
            log.error("ignoring profile: %s", exc)
            return None

    def _task(self) -> Task:
        pred = self.profile.prediction if self.profile else None
        if pred and pred.output in self.outputs:
            return Task(pred.kind, pred.output, pred.classes, pred.cuts, pred.calibration)
        first = self.outputs[self.output_names[0]]
        if "label" in self.outputs or not first.is_float:
            return Task("classification", "label" if "label" in self.outputs else first.name)
        if len(self.outputs) == 1:
            return Task("regression", first.name)
        return Task(None, None)

    @property
    def has_batch_dimension(self) -> bool:
        """Every input and output declares a dynamic first dimension (or no shape at all): rows
        of several requests can then be stacked along it (serin.runtime.batching)."""
        specs = [*self.inputs.values(), *self.outputs.values()]
        return all(not spec.shape or spec.shape[0] is None for spec in specs)

    @property
    def primary_output(self) -> str:
        return self.task.output or self.output_names[0]

    def run(self, feeds: dict[str, np.ndarray], names: list[str] | None = None) -> dict[str, Any]:
        names = names or self.output_names
        self.runs += 1
        started = time.perf_counter()
        try:
            values = self.session.run(names, feeds)
        except InvalidArgument as exc:
            # The request already passed validation against the input signature, so a failure
            # inside the graph is the model failing on valid input: a server error (5xx), which
            # is what canary analysis counts, not the client's fault (4xx).
            raise RequestError(f"the model failed on this input: {exc}", status=500) from None
        finally:
            # Rises at once with a slow run and decays over about 50 fast ones.
            self.recent_run_seconds = max(time.perf_counter() - started, self.recent_run_seconds * 0.9)
        return dict(zip(names, values, strict=True))

    def new_id(self) -> str:
        """An answer id for a request that brought none (V2 over HTTP and gRPC)."""
        return f"{self._id_prefix}{next(self._ids)}"

    # --- responses -------------------------------------------------------------------------
    def v2_response(self, results: dict[str, Any], request_id: Any, prediction_id: str | None = None) -> bytes:
        """The V2 answer. Its `id` is the client's when it sent one (the protocol echoes it; the
        prediction id then goes in `parameters.prediction_id`), else the prediction id."""
        outputs = []
        for name, value in results.items():
            arr = np.asarray(value)
            flat = arr.ravel()
            outputs.append({
                "name": name,
                "shape": list(arr.shape),
                "datatype": datatype_of(arr),
                "data": flat.tolist() if flat.dtype.kind in "OUS" else flat,
            })
        # The V2 spec and KServe's InferResponse need a string id.
        answer_id = str(request_id) if request_id is not None else prediction_id or self.new_id()
        body: dict[str, Any] = {"model_name": self.name, "id": answer_id, "outputs": outputs}
        if self.version:
            body["model_version"] = self.version
        if request_id is not None and prediction_id is not None:
            body["parameters"] = {"prediction_id": prediction_id}
        return orjson.dumps(body, option=_ORJSON_OPTS)

    def v1_response(self, results: dict[str, Any], prediction_id: str | None = None) -> bytes:
        arr = np.asarray(results[self.primary_output])
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.ravel()
        preds = arr.tolist() if arr.dtype.kind in "OUS" else arr
        body: dict[str, Any] = {"predictions": preds}
        if prediction_id is not None:
            body["id"] = prediction_id  # what `:feedback` names this answer by
        return orjson.dumps(body, option=_ORJSON_OPTS)

    def v2_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "inputs": [s.as_metadata() for s in self.inputs.values()],
            "outputs": [s.as_metadata() for s in self.outputs.values()],
        }
        if self.version:
            meta["versions"] = [self.version]
        return meta
