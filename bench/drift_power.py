"""Drift detection: power and false alarms of PSI and of the drift tests, side by side.

For each scenario a profile is built the converter's way (serin.converters.profile, 10 quantile
bins) from `profile rows` rows of 30 independent N(0, 1) features, and windows of `window rows`
fresh rows go through the runtime's own drift code (serin.runtime.drift.Drift: binning, merging,
PSI, the KS tests and Holm's correction the server runs). Feature 0 of every window row is moved
by `shift` standard deviations; shift 0 is nothing drifted, so what is flagged there is a false
alarm. A window is flagged

- by PSI when serin_input_psi (the largest feature PSI) is above the limit: the operator's default
  inputPSI limit (read from the CRD's default analysis metrics) and the 0.1 "moderate" band;
- by the tests when serin_input_drift_pvalue (the smallest Holm-adjusted p-value) is <= alpha:
  "some feature drifted" at a family-wise error rate alpha over the 30 features.

    python bench/drift_power.py [--profiles 10] [--windows 40] [--seed 0]
        [--evidently PYTHON [--evidently-windows 40]]

With --evidently (a Python with the `evidently` package; Serin does not depend on it), the
4000-row profile with 1,000-row windows is also judged by Evidently's DataDriftPreset, with its
default per-column tests and thresholds (bench/drift_evidently.py), on the same raw rows: the
share of windows where it calls any column drifted, and its dataset-drift verdict (half the
columns or more).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from psi_false_alarm import FEATURES, default_input_psi_limit, profile, rows
from serin.runtime import metric_names as mn
from serin.runtime.drift import Binner, Drift, DriftResult
from serin.runtime.profile import parse_profile
from serin.runtime.signature import TensorSpec

SHIFTS = (0.0, 0.25, 0.5)
ALPHAS = (0.05, 0.01)


def binner_for(reference: np.ndarray) -> Binner:
    """The runtime's binning for a profile computed from `reference`, the converter's way."""
    spec = TensorSpec("input", "FP32", np.dtype(np.float32), (None, FEATURES))
    return Binner(parse_profile(profile(reference)).features, {"input": spec})


def judge(binner: Binner, window: np.ndarray, profile_rows: int, state: Path) -> DriftResult:
    """What the runtime's drift code makes of one full window."""
    drift = Drift(binner, window=len(window), workers=1, min_rows=len(window), state_dir=state,
                  reference_rows=profile_rows)
    drift.add({"input": window}, len(window))
    drift.tick()
    drift.close()
    assert drift.result is not None and drift.result.input_pvalue is not None
    return drift.result


def flagged(args: argparse.Namespace, rng: np.random.Generator, state: Path, profile_rows: int,
            window_rows: int, shift: float) -> tuple[list[float], list[float]]:
    """(serin_input_psi, serin_input_drift_pvalue) of every window of this scenario."""
    psis, pvalues = [], []
    for _ in range(args.profiles):
        binner = binner_for(rows(rng, profile_rows))
        for _ in range(args.windows):
            x = rows(rng, window_rows)
            x[:, 0] += shift
            result = judge(binner, x, profile_rows, state)
            psis.append(result.input_psi)
            pvalues.append(result.input_pvalue)  # type: ignore[arg-type]  # judge asserts it is set
    return psis, pvalues


def evidently_side_by_side(args: argparse.Namespace, rng: np.random.Generator, state: Path) -> None:
    """Serin's tests and Evidently's defaults on the same windows (one profile's sample as the
    reference, 1,000-row windows)."""
    profile_rows, window_rows, alpha = 4000, 1000, 0.05
    print(f"\nSide by side with Evidently ({args.evidently}): profile {profile_rows} rows, windows of "
          f"{window_rows}, {args.evidently_windows} windows per shift, the same raw rows for both")
    head = (f"{'shift':>6}   {'Serin p<=' + format(alpha, 'g'):>14} {'Evidently: any column':>22} "
            f"{'Evidently: dataset drift':>25}")
    print(head + "\n" + "-" * len(head))
    methods: list[str] = []
    for shift in SHIFTS:
        reference = rows(rng, profile_rows)
        binner = binner_for(reference)
        windows = np.stack([rows(rng, window_rows) for _ in range(args.evidently_windows)])
        windows[:, :, 0] += shift
        serin = [judge(binner, x, profile_rows, state).input_pvalue <= alpha  # type: ignore[operator]
                 for x in windows]
        path = state / "windows.npz"
        np.savez(path, reference=reference, windows=windows)
        out = subprocess.run([args.evidently, str(Path(__file__).with_name("drift_evidently.py")), str(path)],
                             capture_output=True, text=True, check=True)
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        verdicts = [v for v in lines if "drifted_columns" in v]
        methods = next((v["methods"] for v in lines if "methods" in v), methods)
        any_column = np.asarray([v["drifted_columns"] > 0 for v in verdicts])
        dataset = np.asarray([v["dataset_drift"] for v in verdicts])
        print(f"{shift:>6.2f}   {share(np.asarray(serin)):>14} {share(any_column):>22} {share(dataset):>25}",
              flush=True)
    print(f"Evidently's per-column method(s) here: {', '.join(methods)} (its defaults for these sizes).")


def share(hits: np.ndarray) -> str:
    return f"{hits.mean():7.1%}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=10, help="profiles per scenario")
    ap.add_argument("--windows", type=int, default=40, help="windows per profile")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--evidently", metavar="PYTHON", help="a Python with evidently installed")
    ap.add_argument("--evidently-windows", type=int, default=40, help="windows per shift for Evidently")
    args = ap.parse_args()
    limit = default_input_psi_limit()
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  {FEATURES} N(0,1) features, feature 0 moved by "
          f"`shift` sd; {args.profiles} profiles x {args.windows} windows per scenario; seed "
          f"{args.seed}")
    print(f"# flagged: PSI > {limit:g} (operator default inputPSI) or > {mn.PSI_MODERATE:g}; tests: "
          f"smallest Holm-adjusted p-value <= alpha (KS per feature)")
    head = (f"{'profile rows':>12} {'window rows':>11} {'shift':>6}   {'PSI>' + format(limit, 'g'):>8} "
            f"{'PSI>' + format(mn.PSI_MODERATE, 'g'):>8}   "
            + " ".join(f"{'p<=' + format(a, 'g'):>8}" for a in ALPHAS))
    print("\n" + head + "\n" + "-" * len(head))
    with tempfile.TemporaryDirectory(prefix="serin-drift-") as state:
        for profile_rows in (4000, 512):
            for window_rows in (500, 1000, 2000):
                for shift in SHIFTS:
                    psis, pvalues = flagged(args, rng, Path(state), profile_rows, window_rows, shift)
                    psi, p = np.asarray(psis), np.asarray(pvalues)
                    print(f"{profile_rows:>12} {window_rows:>11} {shift:>6.2f}   "
                          f"{share(psi > limit):>8} {share(psi > mn.PSI_MODERATE):>8}   "
                          + " ".join(f"{share(p <= a):>8}" for a in ALPHAS), flush=True)
        if args.evidently:
            evidently_side_by_side(args, rng, Path(state))
    print("\nshift 0: false alarms (nothing drifted); shift > 0: detection power. Goal (issue 14): "
          ">= 95 % power for a 0.5 sd shift in one feature at <= 5 % false alarms.")
    print(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
