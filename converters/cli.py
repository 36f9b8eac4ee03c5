"""`serin convert`: a trained model to ONNX with a parity proof and a reference profile.

Exit codes (errors.py): 0 parity passed, 1 parity failed, 2 user error, 3 internal error,
4 artifact/sample could not be fetched. Errors are one line on stderr; report.json always
records the outcome when --out is known.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from serin.converters.errors import EXIT_USER_ERROR, ConversionError

if TYPE_CHECKING:
    from serin.converters.conversion import Outcome, Request

PROG = "serin convert"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints usage plus the error (two lines); we promise one line.
        raise ConversionError(f"{message} (see '{PROG} --help')")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("artifact", help="model file or URI (path, file://, pvc://, s3://, gs://, https://)")
    p.add_argument("--sample", required=True, help="CSV with header, .npy or .parquet rows")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--sample-labels", dest="sample_labels", metavar="COLUMN",
                   help="the sample's column of true labels (or values): not a model input; "
                   "calibrates the label-free accuracy estimate and records reference performance")
    p.add_argument("--format", choices=["sklearn", "xgboost", "lightgbm", "onnx"],
                   help="detected from the file when omitted")
    p.add_argument("--sha256", help="expected digest, verified before the artifact is loaded")
    p.add_argument("--target-opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 1e-4)")
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance (default 1e-3)")
    p.add_argument("--min-label-agreement", type=float, default=None,
                   help="share of rows whose labels must agree (default 1.0)")
    p.add_argument("--bins", type=int, default=10, help="profile bins per numeric feature")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stdout")
    return p


def out_from(argv: list[str]) -> Path | None:
    """--out, found without argparse, so even a bad command line leaves a report behind."""
    for i, arg in enumerate(argv):
        if arg == "--out" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--out="):
            return Path(arg.split("=", 1)[1])
    return None


def fail_early(message: str, out: Path | None) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    if out is not None:
        from serin.converters import report

        rep = report.new_report()
        rep["reason"] = message
        try:
            report.clear_outputs(out)
            report.write_report(out, rep)
        except OSError:
            pass
    return EXIT_USER_ERROR


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    try:
        args = parser().parse_args(args_list)
    except ConversionError as exc:
        return fail_early(exc.message, out_from(args_list))
    from serin.converters.conversion import DEFAULT_OPSET, Request
    from serin.converters.parity import Tolerance

    defaults = Tolerance()
    request = Request(
        source=args.artifact, sample=args.sample, out=args.out, format=args.format,
        sha256=args.sha256, opset=args.target_opset or DEFAULT_OPSET, bins=args.bins,
        sample_labels=args.sample_labels,
        tolerance=Tolerance(
            absolute=defaults.absolute if args.atol is None else args.atol,
            relative=defaults.relative if args.rtol is None else args.rtol,
            label_agreement=(defaults.label_agreement if args.min_label_agreement is None
                             else args.min_label_agreement),
        ),
    )
    return execute(request, quiet=args.quiet).exit_code


def execute(request: Request, quiet: bool = False) -> Outcome:
    """Runs a conversion and says how it went: one line on stderr when it failed, a summary on
    stdout when it passed (unless quiet). Shared by `serin convert` and the conversion Job."""
    from serin.converters.conversion import run

    outcome = run(request)
    rep = outcome.report
    if not outcome.passed:
        print(f"{PROG}: error: {rep['reason']}", file=sys.stderr)
    elif not quiet:
        p = rep["parity"]
        agreement = "n/a" if p["label_agreement"] is None else f"{p['label_agreement']:g}"
        print(f"converted {rep['estimator']} ({rep['format']}, {rep['task']}): parity passed on "
              f"{rep['rows']} rows, label agreement {agreement}, max abs diff "
              f"{p['max_abs_diff']:.3g}; wrote {request.out}/model.onnx in {rep['seconds']:.2f}s")
    return outcome


if __name__ == "__main__":
    sys.exit(main())
