"""The conversion Job's entrypoint: `python -m serin.converters.job [all|fetch|convert|publish]`.

The operator launches this in its own Pod (it never imports the converters: they unpickle
models), as three containers that trust each other differently (docs/security.md):

- `fetch` (trusted, an init container): copies the artifact and the sample to WORK_DIR/input and
  checks the artifact's digest. It alone mounts the source claims and holds the S3 keys of the
  Model's Secret (spec.source.s3.secretName).
- `convert` (untrusted, an init container): gives up the network (sandbox.py), then loads the
  artifact (unpickling runs its code), converts and proves parity, writing only WORK_DIR/output.
  It mounts neither the sources nor the store, and input/ read-only.
- `publish` (trusted, never unpickles): checks what convert wrote (publish.py), computes the
  model's digest and input signature itself, and writes them to `out`: the Model's own directory
  of the store, the only part of the store its Pod mounts (subPath); or, with an S3 store, the
  version's place there (`out` an s3:// URI, `outS3` the store's settings), each file written
  once, with the keys of the namespace's store Secret, which the Job gives this step alone.

`all` runs the three in one process (the local executor). Each gets the whole request as one JSON
document in SERIN_CONVERSION_REQUEST, shaped as the Model's spec.source and spec.conversion plus
the output directory:

    {"source": {"uri": "pvc://models/fraud/model.joblib", "sampleUri": "pvc://models/fraud/sample.csv",
                "format": "sklearn", "sha256": "…",                       # format and sha256 optional
                "s3": {"endpoint": "http://s3.storage:7070", "region": "us-east-1",  # s3:// only, optional
                       "addressing": "path", "verifyTls": true, "secretName": "team-s3"}},
     "conversion": {"targetOpset": 17,
                    "tolerance": {"absolute": 1e-4, "relative": 1e-3, "labelAgreement": 1.0}},
     "out": "/mnt/serin-store/ml/fraud-g3-1a2b3c4d"}

SERIN_TERMINATION_LOG says where the summary goes (default /dev/termination-log, the Pod's
termination message). Exit codes are those of `serin convert` (errors.py). The summary is one
compact JSON object (at most 4096 bytes, Kubernetes' limit) of report.json, see summary(): the
operator stores it as status.conversion.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serin.converters.cli import PROG, fail_early
from serin.converters.errors import EXIT_USER_ERROR, ConversionError, StoreRefused

if TYPE_CHECKING:
    from serin.converters.conversion import Request
    from serin.converters.publish import Sink

REQUEST_ENV = "SERIN_CONVERSION_REQUEST"
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LIMIT = 4096
FORMATS = ("sklearn", "xgboost", "lightgbm", "onnx")
STEPS = ("all", "fetch", "convert", "publish")
# The Job's three containers share WORK_DIR: input/ (written by fetch, read-only for the others)
# and output/ (the convert step's scratch, read by publish).
WORK_ENV = "SERIN_WORK_DIR"
WORK_DIR = "/work"

# The request document's fields: name → (type, required). Nested objects list their own.
_Shape = dict[str, tuple[type, bool]]
_SOURCE: _Shape = {"uri": (str, True), "sampleUri": (str, True), "format": (str, False), "sha256": (str, False),
                   "sampleLabels": (str, False), "s3": (dict, False)}
# secretName is the operator's (it fills the fetch step's keys from that Secret); listed so the
# document stays the Model's spec.source as written.
_S3: _Shape = {"endpoint": (str, False), "region": (str, False), "addressing": (str, False),
               "verifyTls": (bool, False), "secretName": (str, False)}
_TOLERANCE: _Shape = {"absolute": (float, False), "relative": (float, False), "labelAgreement": (float, False)}
_CONVERSION: _Shape = {"targetOpset": (int, False), "tolerance": (dict, False)}
_STORE: _Shape = {"endpoint": (str, False), "region": (str, False), "addressing": (str, False),
                  "verifyTls": (bool, False)}
_TOP: _Shape = {"source": (dict, True), "conversion": (dict, False), "out": (str, True), "outS3": (dict, False)}


def _fields(doc: Any, shape: _Shape, where: str) -> dict[str, Any]:
    """Checks one object of the request against its shape; the error names the field."""
    if not isinstance(doc, dict):
        raise ConversionError(f"{where or 'the request'} must be a JSON object")
    for key in doc:
        if key not in shape:
            raise ConversionError(f"unknown field {where}{key} in {REQUEST_ENV}")
    for key, (kind, required) in shape.items():
        if key not in doc or doc[key] is None:
            if required:
                raise ConversionError(f"{where}{key} is required in {REQUEST_ENV}")
            continue
        value = doc[key]
        if not _is(value, kind):
            raise ConversionError(f"{where}{key} must be {'a number' if kind is float else kind.__name__}, "
                                  f"not {json.dumps(value)[:60]}")
    return doc


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # JSON true is no number, though Python's bool is an int
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def parse_request(text: str | None) -> Request:
    """The request document → the conversion Request. Raises ConversionError naming the field."""
    from serin.converters.conversion import DEFAULT_OPSET, Request
    from serin.converters.parity import Tolerance
    from serin.converters.s3 import S3Settings

    if not text or not text.strip():
        raise ConversionError(f"{REQUEST_ENV} is not set: the conversion request is missing")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConversionError(f"{REQUEST_ENV} is not valid JSON: {exc}") from None
    top = _fields(doc, _TOP, "")
    source = _fields(top["source"], _SOURCE, "source.")
    s3 = _fields(source.get("s3") or {}, _S3, "source.s3.")
    if s3.get("addressing") not in (None, "path", "virtual"):
        raise ConversionError(f"source.s3.addressing must be path or virtual, not {s3['addressing']!r}")
    conversion = _fields(top.get("conversion") or {}, _CONVERSION, "conversion.")
    tol = _fields(conversion.get("tolerance") or {}, _TOLERANCE, "conversion.tolerance.")
    if source.get("format") not in (None, *FORMATS):
        raise ConversionError(f"source.format must be one of {', '.join(FORMATS)}, not {source['format']!r}")
    if not top["out"]:
        raise ConversionError(f"out must name the output directory in {REQUEST_ENV}")
    store = top["out"] if top["out"].startswith("s3://") else None
    out_s3 = _fields(top.get("outS3") or {}, _STORE, "outS3.")
    if out_s3.get("addressing") not in (None, "path", "virtual"):
        raise ConversionError(f"outS3.addressing must be path or virtual, not {out_s3['addressing']!r}")
    if store is None and top.get("outS3") is not None:
        raise ConversionError("outS3 is for an s3:// out (the S3 model store), not a directory")
    if store is not None and (not store[len("s3://"):].partition("/")[2].strip("/") or store.endswith("/")):
        raise ConversionError(f"out {store} must name the version's place in the store (s3://BUCKET/PATH)")
    d = Tolerance()
    return Request(
        source=source["uri"], sample=source["sampleUri"], out=Path(top["out"]) if store is None else Path("/dev/null"),
        store=store, store_s3=S3Settings.parse(out_s3) if store is not None else None,
        format=source.get("format"), sha256=source.get("sha256"), sample_labels=source.get("sampleLabels"),
        opset=int(conversion.get("targetOpset") or DEFAULT_OPSET), s3=S3Settings.parse(s3) if s3 else None,
        tolerance=Tolerance(absolute=float(tol.get("absolute", d.absolute)),
                            relative=float(tol.get("relative", d.relative)),
                            label_agreement=float(tol.get("labelAgreement", d.label_agreement))),
    )


def _out_of(text: str | None) -> Path | None:
    """The output directory of a request that did not parse, if it names one: a report goes there."""
    try:
        out = json.loads(text or "").get("out")
    except (ValueError, AttributeError):
        return None
    return Path(out) if isinstance(out, str) and out else None


def summary(rep: dict[str, Any], exit_code: int, error_kind: str | None) -> str:
    """The summary document, status.conversion's shape (the operator adds the generation)."""
    parity = rep.get("parity") or {}
    doc: dict[str, Any] = {
        "passed": rep.get("passed", False), "exitCode": exit_code, "error": error_kind,
        "reason": rep.get("reason"), "format": rep.get("format"), "task": rep.get("task"),
        "estimator": rep.get("estimator"), "rows": rep.get("rows"), "seconds": rep.get("seconds"),
        "labelAgreement": parity.get("label_agreement"), "maxAbsDiff": parity.get("max_abs_diff"),
        "maxRelDiff": parity.get("max_rel_diff"), "mismatchedRows": parity.get("mismatched_rows"),
        "sha256": (rep.get("sha256") or {}).get("source"),
        "onnxSha256": (rep.get("sha256") or {}).get("onnx"),
        # The whole signature can be long (a Pipeline over hundreds of columns): its digest is what
        # the operator compares, and the text, shortened below if need be, is what it quotes.
        "inputSignature": _digest(accepted_requests(rep["inputs"])) if rep.get("inputs") else None,
        "inputs": rep.get("inputs"),
    }
    from serin.converters.report import to_json

    text = to_json(doc, indent=None)
    for key in ("inputs", "estimator", "reason"):  # shorten the free-text fields until it fits
        while len(text.encode()) > TERMINATION_LIMIT and doc[key]:
            doc[key] = doc[key][: max(0, len(doc[key]) - 256)] + "…" if len(doc[key]) > 257 \
                else None
            text = to_json(doc, indent=None)
    return text


def accepted_requests(signature: str) -> str:
    """The signature as far as requests tell: the runtime takes FP16, FP32 or FP64 for any float
    input, so a version whose inputs widened from float to double takes the same requests."""
    return re.sub(r":(float16|float|double)\[", ":floating[", signature)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_termination_log(text: str, path: str) -> bool:
    target = Path(path)
    writable = os.access(target, os.W_OK) if target.exists() else os.access(target.parent, os.W_OK)
    if not writable:
        return False
    try:
        target.write_text(text)
    except OSError:
        return False
    return True


def main(env: dict[str, str] | None = None, step: str = "all") -> int:
    """One step of a conversion (the Job runs fetch, convert and publish as three containers of
    one Pod; the local executor runs `all` in one process). Returns the exit code."""
    environ = dict(os.environ) if env is None else env
    text = environ.get(REQUEST_ENV)
    termination = environ.get("SERIN_TERMINATION_LOG", TERMINATION_LOG)
    work = Path(environ.get(WORK_ENV, WORK_DIR))
    try:
        request = parse_request(text)
        if step not in STEPS:
            raise ConversionError(f"unknown step {step!r} (one of {', '.join(STEPS)})")
    except ConversionError as exc:
        code = fail_early(exc.message, _out_of(text) if step == "all" else None)
        write_termination_log(summary({"passed": False, "reason": exc.message}, code, "user-error"),
                              termination)
        return EXIT_USER_ERROR
    if step == "all":
        with tempfile.TemporaryDirectory(prefix="serin-conversion-") as tmp:
            return _all(request, Path(tmp), termination)
    if step == "fetch":
        return _fetch_step(request, work / "input", termination)
    if step == "convert":
        return _convert_step(request, work / "input", work / "output", termination)
    return _publish_step(request, work / "input", work / "output", termination)


def _failed(exc: ConversionError, termination: str) -> int:
    """A step that failed: one line on stderr, the summary as its termination message."""
    from serin.converters import report

    print(f"{PROG}: error: {exc.message}", file=sys.stderr)
    rep = report.new_report()
    rep["passed"], rep["reason"], rep["error"] = False, exc.message, exc.kind
    write_termination_log(summary(rep, exc.exit_code, exc.kind), termination)
    return exc.exit_code


def _fetch_step(request: Request, inputs: Path, termination: str) -> int:
    """Trusted, with the network: the artifact and the sample, copied to `inputs` and the
    artifact's digest checked before anything can unpickle it."""
    from serin.converters import artifacts

    try:
        for uri, what in ((request.source, "artifact"), (request.sample, "sample")):
            found = artifacts.fetch(uri, inputs / "download", what, request.s3)
            target = inputs / what / found.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found, target)
            if what == "artifact":
                artifacts.verify_digest(target, request.sha256)
        shutil.rmtree(inputs / "download", ignore_errors=True)
    except ConversionError as exc:
        return _failed(exc, termination)
    return 0


def _fetched(inputs: Path, what: str) -> Path:
    files = sorted((inputs / what).iterdir()) if (inputs / what).is_dir() else []
    if len(files) != 1:
        raise ConversionError(f"expected the fetched {what} in {inputs / what}, found {len(files)} files")
    return files[0]


def _convert_step(request: Request, inputs: Path, out: Path, termination: str) -> int:
    """Untrusted: runs the artifact's code, so it first gives up the network for good. It reads
    only what the fetch step copied, and writes only its scratch directory `out`."""
    from serin.converters import sandbox

    try:
        sandbox.deny_network()
        local = replace(request, source=str(_fetched(inputs, "artifact")), sample=str(_fetched(inputs, "sample")),
                        out=out)
    except ConversionError as exc:  # SandboxError included
        return _failed(exc, termination)
    from serin.converters import cli

    outcome = cli.execute(local, quiet=True)
    write_termination_log(summary(outcome.report, outcome.exit_code, outcome.error_kind), termination)
    return outcome.exit_code


def _publish_step(request: Request, inputs: Path, scratch: Path, termination: str) -> int:
    """Trusted, never unpickles: checks what the convert step wrote, computes the digests, the
    input signature and the reference profile itself, and writes the Model's directory of the
    store (request.out)."""
    from serin.converters.errors import EXIT_PARITY_FAILED
    from serin.converters.publish import SampleSource, publish

    try:
        sample = SampleSource(_fetched(inputs, "sample"), request.sample_labels, request.bins)
        rep = publish(scratch, _sink(request), _fetched(inputs, "artifact"), sample)
    except ConversionError as exc:
        return _failed(exc, termination)
    if rep.get("passed") is not True:
        reason = rep.get("reason") if isinstance(rep.get("reason"), str) else None
        rep = {"passed": False, "reason": reason or "the conversion did not pass"}
        write_termination_log(summary(rep, EXIT_PARITY_FAILED, None), termination)
        return EXIT_PARITY_FAILED
    write_termination_log(summary(rep, 0, None), termination)
    return 0


def _sink(request: Request) -> Path | Sink:
    """The Model's directory of the store: `out`, or the S3 store's place with the keys of the
    publish step's environment (the namespace's Secret; the other steps never hold them)."""
    if request.store is None:
        return request.out
    from serin.converters.publish import S3Sink
    from serin.converters.s3 import Keys, S3Settings

    try:
        keys = Keys.from_env(os.environ)
    except ConversionError as exc:
        raise StoreRefused(f"the model store's keys: {exc.message}") from None
    return S3Sink(request.store, request.store_s3 or S3Settings(), keys)


def _all(request: Request, work: Path, termination: str) -> int:
    """The three steps in one process (the local executor): not a boundary, since the convert
    step's code could tamper with the publish step's, but the same code path and no network."""
    from serin.converters import report

    if request.store is not None:
        return _failed(ConversionError("the local executor publishes to a directory, not to an s3:// store"),
                       termination)
    for step in (lambda: _fetch_step(request, work / "input", termination),
                 lambda: _convert_step(request, work / "input", work / "output", termination)):
        code = step()
        if code != 0:
            # The report stays next to where the model would have been, as `serin convert` leaves it.
            with contextlib.suppress(OSError, ValueError):
                rep = json.loads((work / "output" / report.REPORT_FILE).read_text())
                report.clear_outputs(request.out)
                report.write_report(request.out, rep)
            return code
    return _publish_step(request, work / "input", work / "output", termination)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.exit(main(step=sys.argv[1] if len(sys.argv) > 1 else "all"))
