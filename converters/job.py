"""The conversion Job's entrypoint: `python -m serin.converters.job [ARGS]`.

The operator launches this in its own Pod (it never imports the converters: they unpickle
models). Every setting comes from an argument or, when the argument is absent, the environment:

  SERIN_SOURCE_URI   artifact URI (path, file://, pvc://, s3://, gs://, https://)   required
  SERIN_SAMPLE_URI   sample rows URI                                                 required
  SERIN_OUT          output directory (a mounted volume)                             required
  SERIN_FORMAT       sklearn | xgboost | lightgbm | onnx (detected when empty)
  SERIN_SHA256       expected artifact digest
  SERIN_TARGET_OPSET, SERIN_ATOL, SERIN_RTOL, SERIN_MIN_LABEL_AGREEMENT, SERIN_BINS
  SERIN_TERMINATION_LOG  where the Pod termination message goes (default /dev/termination-log)

Exit codes are those of `serin convert` (errors.py). The termination message is one compact
JSON object (at most 4096 bytes, Kubernetes' limit) summarising report.json, see summary().
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from serin.converters.cli import fail_early, out_from, parser
from serin.converters.errors import EXIT_USER_ERROR, ConversionError

TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LIMIT = 4096

# argument flag → environment variable, used when the flag is absent from argv.
ENV: dict[str, str] = {
    "--sample": "SERIN_SAMPLE_URI", "--out": "SERIN_OUT", "--format": "SERIN_FORMAT",
    "--sha256": "SERIN_SHA256", "--target-opset": "SERIN_TARGET_OPSET", "--atol": "SERIN_ATOL",
    "--rtol": "SERIN_RTOL", "--min-label-agreement": "SERIN_MIN_LABEL_AGREEMENT",
    "--bins": "SERIN_BINS",
}


def merged_argv(argv: list[str], env: dict[str, str]) -> list[str]:
    """argv, completed from the environment (arguments win over environment variables)."""
    args = list(argv)
    given = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    positional = [a for i, a in enumerate(args)
                  if not a.startswith("-") and (i == 0 or not args[i - 1].startswith("--"))]
    for flag, var in ENV.items():
        if flag not in given and env.get(var, "").strip():
            args += [flag, env[var].strip()]
    if not positional and env.get("SERIN_SOURCE_URI", "").strip():
        args.insert(0, env["SERIN_SOURCE_URI"].strip())
    return args


def summary(rep: dict[str, Any], exit_code: int, error_kind: str | None) -> str:
    """The Pod termination message: what the operator needs for status.conversion."""
    parity = rep.get("parity") or {}
    doc: dict[str, Any] = {
        "passed": rep.get("passed", False), "exitCode": exit_code, "error": error_kind,
        "reason": rep.get("reason"), "format": rep.get("format"), "task": rep.get("task"),
        "estimator": rep.get("estimator"), "rows": rep.get("rows"), "seconds": rep.get("seconds"),
        "labelAgreement": parity.get("label_agreement"), "maxAbsDiff": parity.get("max_abs_diff"),
        "maxRelDiff": parity.get("max_rel_diff"), "mismatchedRows": parity.get("mismatched_rows"),
        "sha256": (rep.get("sha256") or {}).get("source"),
        "onnxSha256": (rep.get("sha256") or {}).get("onnx"),
    }
    from serin.converters.report import to_json

    text = to_json(doc, indent=None)
    for key in ("estimator", "reason"):  # shorten the free-text fields until it fits
        while len(text.encode()) > TERMINATION_LIMIT and doc[key]:
            doc[key] = doc[key][: max(0, len(doc[key]) - 256)] + "…" if len(doc[key]) > 257 \
                else None
            text = to_json(doc, indent=None)
    return text


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


def main(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    environ = dict(os.environ) if env is None else env
    args_list = merged_argv(sys.argv[1:] if argv is None else argv, environ)
    termination = environ.get("SERIN_TERMINATION_LOG", TERMINATION_LOG)
    try:
        parser().parse_args(args_list)
    except ConversionError as exc:
        message = f"{exc.message}; job settings come from arguments or SERIN_* variables"
        code = fail_early(message, out_from(args_list))
        write_termination_log(summary({"passed": False, "reason": message}, code, "user-error"),
                              termination)
        return EXIT_USER_ERROR
    from serin.converters import cli
    from serin.converters.conversion import Outcome

    captured: list[Outcome] = []
    code = cli.main(args_list, on_outcome=captured.append)
    if captured:
        outcome = captured[0]
        write_termination_log(summary(outcome.report, code, outcome.error_kind), termination)
    return code


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.exit(main())
