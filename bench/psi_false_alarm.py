"""PSI false alarms: how high do serin_feature_psi and serin_input_psi go when nothing drifted?

Replays fresh rows drawn from the very distribution a profile.json was computed from through the
runtime's own drift code (serin.runtime.drift.Drift: the window, min rows, binning and PSI the
server runs, with its defaults), one row per request, and reports the distribution of the PSI
figures and how often they cross the operator's default inputPSI limit (read from the CRD's
default analysis metrics) and the 0.1 "moderate" band.

Data: the benchmark's model inputs (bench/runtime_bench.py): 30 independent standard-normal
float32 features. Profiles are built by the converter's code (serin.converters.profile,
10 quantile bins) from a sample of `--profile-rows` rows, so the profile's own sampling noise is
part of the figures, as it is in production. Each scenario draws `--profiles` profiles and, for
each, `--windows` windows of fresh rows; a window holds either the runtime's full drift window or
only its minimum rows (the first figure a new canary publishes).

    python bench/psi_false_alarm.py [--profiles 20] [--windows 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from serin.converters.profile import numeric_bins
from serin.runtime import metric_names as mn
from serin.runtime.drift import Binner, Drift
from serin.runtime.profile import parse_profile
from serin.runtime.server import ServeConfig
from serin.runtime.signature import TensorSpec

REPO = Path(__file__).resolve().parent.parent
CRD = REPO / "manifests" / "crds" / "serin.dev_models.yaml"
FEATURES = 30
BINS = 10


def default_input_psi_limit() -> float:
    """The `max` of the inputPSI entry in the CRD's default analysis metrics."""

    def walk(node: Any) -> float | None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "default" and isinstance(value, list):
                    for item in value:
                        if isinstance(item, dict) and item.get("builtin") == "inputPSI":
                            return float(item["max"])
                found = walk(value)
                if found is not None:
                    return found
        elif isinstance(node, list):
            for value in node:
                found = walk(value)
                if found is not None:
                    return found
        return None

    limit = walk(yaml.safe_load(CRD.read_text()))
    if limit is None:
        raise SystemExit(f"no default inputPSI metric in {CRD}")
    return limit


def rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=(n, FEATURES)).astype(np.float32)


def profile(sample: np.ndarray) -> dict[str, Any]:
    """profile.json (docs/formats.md) as the converter writes it for a float32 matrix input."""
    return {
        "version": 1, "rows": len(sample),
        "inputs": [{"name": "input", "dtype": "float32", "shape": [None, FEATURES]}],
        "features": [{"name": f"f{i}", "input": "input", "column": i, "kind": "numeric",
                      **numeric_bins(sample[:, i].astype(np.float64), BINS)}
                     for i in range(FEATURES)],
    }


@dataclasses.dataclass
class Scenario:
    profile_rows: int
    window_rows: int
    feature_psi: list[float] = dataclasses.field(default_factory=list)
    input_psi: list[float] = dataclasses.field(default_factory=list)


def replay(scn: Scenario, cfg: ServeConfig, args: argparse.Namespace, rng: np.random.Generator,
           state: Path) -> None:
    spec = TensorSpec("input", "FP32", np.dtype(np.float32), (None, FEATURES))
    for _ in range(args.profiles):
        binner = Binner(parse_profile(profile(rows(rng, scn.profile_rows))).features,
                        {"input": spec})
        for _ in range(args.windows):
            drift = Drift(binner, window=cfg.drift_window, workers=1,
                          min_rows=cfg.drift_min_rows, state_dir=state)
            x = rows(rng, scn.window_rows)
            for i in range(len(x)):  # one row per request, as the server sees single-row traffic
                drift.add({"input": x[i : i + 1]}, 1)
            drift.tick()
            assert drift.result is not None and drift.result.rows == scn.window_rows
            scn.feature_psi.extend(drift.result.feature_psi.values())
            scn.input_psi.append(drift.result.input_psi)
            drift.close()


def summary(values: list[float], limit: float) -> str:
    v = np.asarray(values)
    p50, p95, p99 = np.quantile(v, [0.5, 0.95, 0.99])
    over_mod = int((v > mn.PSI_MODERATE).sum())
    over = int((v > limit).sum())
    return (f"{p50:8.4f} {p95:8.4f} {p99:8.4f} {v.max():8.4f}   "
            f"{over_mod:>5}/{len(v):<6} ({over_mod / len(v):6.2%})   "
            f"{over:>5}/{len(v):<6} ({over / len(v):6.2%})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=20, help="profiles per scenario")
    ap.add_argument("--windows", type=int, default=50, help="windows per profile")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = ServeConfig(model_dir=Path("."), name="replay")  # the runtime's drift defaults
    limit = default_input_psi_limit()
    rng = np.random.default_rng(args.seed)
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  {FEATURES} N(0,1) float32 features, {BINS} "
          f"bins  runtime drift window {cfg.drift_window} rows, min rows {cfg.drift_min_rows}  "
          f"{args.profiles} profiles x {args.windows} windows per scenario  seed {args.seed}")
    print(f"# operator default inputPSI limit (CRD default metrics): max {limit:g}; "
          f"moderate band {mn.PSI_MODERATE:g}")
    scenarios = [Scenario(p, w) for p in (4000, 512) for w in (cfg.drift_window, cfg.drift_min_rows)]
    with tempfile.TemporaryDirectory(prefix="serin-psi-") as state:
        for scn in scenarios:
            replay(scn, cfg, args, rng, Path(state))
    head = (f"{'profile rows':>12} {'window rows':>11}  {'metric':<17} {'p50':>8} {'p95':>8} "
            f"{'p99':>8} {'max':>8}   {'> 0.1':<24} {'> ' + format(limit, 'g')}")
    print("\n" + head + "\n" + "-" * len(head))
    for scn in scenarios:
        for name, values in ((mn.FEATURE_PSI, scn.feature_psi), (mn.INPUT_PSI, scn.input_psi)):
            print(f"{scn.profile_rows:>12} {scn.window_rows:>11}  {name:<17} "
                  f"{summary(values, limit)}")
    print("\nserin_feature_psi: every feature of every window; serin_input_psi: the largest "
          "feature PSI per window (what the operator's inputPSI compares with its limit).")
    print("For reference, PSI of pure sampling noise averages about "
          "(bins - 1) * (1/window_rows + 1/profile_rows):")
    for scn in scenarios:
        expected = (BINS - 1) * (1 / scn.window_rows + 1 / scn.profile_rows)
        print(f"  profile {scn.profile_rows:>5}, window {scn.window_rows:>5}: expected "
              f"{expected:.4f}, measured mean {np.mean(scn.feature_psi):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
