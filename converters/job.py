"""The conversion Job's entrypoint: `python -m serin.converters.job`.

The operator launches this in its own Pod (it never imports the converters: they unpickle
models). It gets the whole request as one JSON document in SERIN_CONVERSION_REQUEST, shaped as the
Model's spec.source and spec.conversion plus the output directory:

    {"source": {"uri": "pvc://models/fraud/model.joblib", "sampleUri": "pvc://models/fraud/sample.csv",
                "format": "sklearn", "sha256": "…"},                      # format and sha256 optional
     "conversion": {"targetOpset": 17,
                    "tolerance": {"absolute": 1e-4, "relative": 1e-3, "labelAgreement": 1.0}},
     "out": "/mnt/serin-store/ml/fraud-g3-1a2b3c4d"}

SERIN_TERMINATION_LOG says where the summary goes (default /dev/termination-log, the Pod's
termination message). Exit codes are those of `serin convert` (errors.py). The summary is one
compact JSON object (at most 4096 bytes, Kubernetes' limit) of report.json, see summary(): the
operator stores it as status.conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serin.converters.cli import fail_early
from serin.converters.errors import EXIT_USER_ERROR, ConversionError

if TYPE_CHECKING:
    from serin.converters.conversion import Request

REQUEST_ENV = "SERIN_CONVERSION_REQUEST"
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LIMIT = 4096
FORMATS = ("sklearn", "xgboost", "lightgbm", "onnx")

# The request document's fields: name → (type, required). Nested objects list their own.
_Shape = dict[str, tuple[type, bool]]
_SOURCE: _Shape = {"uri": (str, True), "sampleUri": (str, True), "format": (str, False), "sha256": (str, False),
                   "sampleLabels": (str, False)}
_TOLERANCE: _Shape = {"absolute": (float, False), "relative": (float, False), "labelAgreement": (float, False)}
_CONVERSION: _Shape = {"targetOpset": (int, False), "tolerance": (dict, False)}
_TOP: _Shape = {"source": (dict, True), "conversion": (dict, False), "out": (str, True)}


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

    if not text or not text.strip():
        raise ConversionError(f"{REQUEST_ENV} is not set: the conversion request is missing")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConversionError(f"{REQUEST_ENV} is not valid JSON: {exc}") from None
    top = _fields(doc, _TOP, "")
    source = _fields(top["source"], _SOURCE, "source.")
    conversion = _fields(top.get("conversion") or {}, _CONVERSION, "conversion.")
    tol = _fields(conversion.get("tolerance") or {}, _TOLERANCE, "conversion.tolerance.")
    if source.get("format") not in (None, *FORMATS):
        raise ConversionError(f"source.format must be one of {', '.join(FORMATS)}, not {source['format']!r}")
    if not top["out"]:
        raise ConversionError(f"out must name the output directory in {REQUEST_ENV}")
    d = Tolerance()
    return Request(
        source=source["uri"], sample=source["sampleUri"], out=Path(top["out"]),
        format=source.get("format"), sha256=source.get("sha256"), sample_labels=source.get("sampleLabels"),
        opset=int(conversion.get("targetOpset") or DEFAULT_OPSET),
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


def main(env: dict[str, str] | None = None) -> int:
    environ = dict(os.environ) if env is None else env
    text = environ.get(REQUEST_ENV)
    termination = environ.get("SERIN_TERMINATION_LOG", TERMINATION_LOG)
    try:
        request = parse_request(text)
    except ConversionError as exc:
        code = fail_early(exc.message, _out_of(text))
        write_termination_log(summary({"passed": False, "reason": exc.message}, code, "user-error"),
                              termination)
        return EXIT_USER_ERROR
    from serin.converters import cli

    outcome = cli.execute(request)
    write_termination_log(summary(outcome.report, outcome.exit_code, outcome.error_kind), termination)
    return outcome.exit_code


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.exit(main())
