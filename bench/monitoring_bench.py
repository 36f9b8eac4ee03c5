"""Monitoring over time: false alarms per Model-month and detection delays of Serin's detectors
(operator/sequential.py, the same functions the operator runs), on simulated streams.

    python bench/monitoring_bench.py                      # ~10 minutes on one core
    python bench/monitoring_bench.py --model-months 10000 # the issue's scale (~2 hours)
    python bench/monitoring_bench.py --nannyml /path/to/python-with-nannyml

The world (as bench/drift_power.py's): Models of 30 numeric features, each binned into the
reference profile's 10 deciles; one evaluation every 5 minutes (8,640 a month); the default
budget of 0.05 false alarms per Model-month spread over 31 detectors (30 features, and the error
rate held at exactly its limit, the hardest undrifted case for a share). Traffic follows a daily
and a weekly cycle (nights at a fifth of the day's volume, weekends at half), and the undrifted
streams' distributions wobble within the tolerance with the hour (PSI up to 0.01 of a 0.02
tolerance): the bound must hold for any sequence of tolerated distributions, not only one.

Printed side by side in one run:
1. false alarms per Model-month on those streams at 10, 100 and 1,000 rows an evaluation, with the
   exact one-sided 95 % upper bound (Poisson) on the rate;
2. a feature drifted below the tolerance (true PSI 0.01, tolerance 0.02) at 100 rows/s (30,000
   rows an evaluation) for 30 days: its alarms per Model-month;
3. detection delay of a 0.1, 0.25 and 0.5 sd shift of one feature of 30, abrupt and as a 7-day
   ramp, at 10, 100 and 1,000 rows an evaluation (median and p90 in hours), with the default
   tolerance (0.02) and a tight one (0.005): a shift below the tolerance is never an alarm by design;
4. performance: accuracy 3 and 5 points below the reference (tolerated drop 2 points) seen by
   ground truth for 10 % of rows, and by the label-free estimate on every row: hours to the alarm;
5. with --nannyml: NannyML's univariate drift (Jensen-Shannon, its default thresholds) on 1 h and
   1 d chunks of the same kind of streams: chunks alerting per month undrifted, and hours to the
   first alert after the shift.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import chi2, norm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from serin.operator import sequential as sq

BINS = 10
FEATURES = 30
INTERVAL = 300.0
PER_MONTH = int(sq.SECONDS_PER_MONTH / INTERVAL)  # 8,640 evaluations
TRAILING_TICKS = 12  # the default trailingWindow (1h) at the default interval
BUDGET = 0.05
DETECTORS = FEATURES + 1
CUTS = norm.ppf(np.arange(1, BINS) / BINS)  # the reference profile's deciles of N(0, 1)
REFERENCE = np.full(BINS, 1.0 / BINS)


def shifted(delta: float | np.ndarray) -> np.ndarray:
    """Bin probabilities of N(delta, 1) over the reference deciles: (..., BINS)."""
    edges = np.concatenate([[-np.inf], CUTS, [np.inf]])
    d = np.asarray(delta, np.float64)[..., None]
    return np.diff(norm.cdf(edges - d), axis=-1)


def volume(tick: np.ndarray, mean_rows: float) -> np.ndarray:
    """Rows per evaluation with a daily and a weekly cycle, averaging `mean_rows`."""
    hours = (tick * INTERVAL / 3600.0) % 24
    days = (tick * INTERVAL / 86400.0) % 7
    daily = 0.2 + 0.8 * (0.5 - 0.5 * np.cos(2 * np.pi * hours / 24))
    weekly = np.where(days >= 5, 0.5, 1.0)
    shape = daily * weekly
    return mean_rows * shape / 0.514  # 0.514: the mean of daily * weekly over a week


def wobble(tick: int, streams: int, rng: np.random.Generator) -> np.ndarray:
    """Undrifted distributions for this evaluation: each stream's mean moves with the hour of the
    day, by up to 0.07 sd (PSI <= 0.01 against the reference, half the default tolerance)."""
    hour = (tick * INTERVAL / 3600.0) % 24
    phase = rng.uniform(0, 2 * np.pi, streams) if tick == 0 else None
    if phase is not None:
        wobble.phase = phase  # type: ignore[attr-defined]
    return shifted(0.07 * np.sin(2 * np.pi * hour / 24 + wobble.phase))  # type: ignore[attr-defined]


MIN_ROWS = 200  # the default minRows
TRAILING_WINDOWS = 10  # monitoring.TRAILING_WINDOWS


class Streams:
    """K independent categorical detectors fed as the operator feeds them: an evaluation every
    5 minutes judges the rows since the last one once there are MIN_ROWS of them (its window stays
    open until then), betting on the trailing window: the last hour, or the last three windows
    when those hold more rows (monitoring.trailing_seconds)."""

    def __init__(self, streams: int, tolerance: float, threshold: float) -> None:
        self.k = streams
        self.tolerance = tolerance
        self.h = threshold
        self.ring = np.zeros((TRAILING_TICKS, streams, BINS))  # per 5-minute tick
        self.windows = np.zeros((TRAILING_WINDOWS, streams, BINS))  # the last judged windows
        self.pending = np.zeros((streams, BINS))
        self.cusum = np.zeros(streams)
        self.alarms = np.zeros(streams, np.int64)
        self.first_alarm = np.full(streams, -1)

    def step(self, tick: int, counts: np.ndarray) -> None:
        self.pending += counts
        due = self.pending.sum(axis=1) >= MIN_ROWS
        if due.any():
            hour, windows = self.ring.sum(axis=0)[due], self.windows.sum(axis=0)[due]
            trailing = np.where((windows.sum(axis=1) > hour.sum(axis=1))[:, None], windows, hour)
            bet = sq.categorical_bet(trailing, np.broadcast_to(REFERENCE, trailing.shape), self.tolerance)
            cusum = np.maximum(0.0, self.cusum[due] + bet.log_e(self.pending[due]))
            fired = np.zeros(self.k, bool)
            fired[due] = cusum >= self.h
            self.cusum[due] = np.where(cusum >= self.h, 0.0, cusum)  # an alarm ends the episode's evidence
            self.alarms += fired
            self.first_alarm = np.where(fired & (self.first_alarm < 0), tick, self.first_alarm)
            self.windows[:, due] = np.concatenate([self.pending[due][None], self.windows[:-1, due]])
            self.pending[due] = 0.0
        self.ring[tick % TRAILING_TICKS] = counts


def upper95(count: int, exposure: float) -> float:
    """Exact one-sided 95 % upper bound on a Poisson rate from `count` events in `exposure`."""
    return chi2.ppf(0.95, 2 * count + 2) / 2 / exposure


def false_alarms(models: int, mean_rows: float, seed: int) -> tuple[int, float]:
    """Alarms over `models` Model-months of undrifted traffic: (alarms, the 95 % upper bound)."""
    rng = np.random.default_rng(seed)
    h = sq.threshold(DETECTORS, PER_MONTH, BUDGET)
    features = Streams(models * FEATURES, 0.02, h)
    error_cusum = np.zeros(models)
    error_alarms = 0
    error_history: list[tuple[np.ndarray, np.ndarray]] = []
    limit = 0.01
    for tick in range(PER_MONTH):
        rows = rng.poisson(volume(np.array([tick]), mean_rows)[0], models * FEATURES // FEATURES)
        per_stream = np.repeat(rows, FEATURES)
        features.step(tick, rng.multinomial(per_stream, wobble(tick, models * FEATURES, rng)))
        # The error rate exactly at its limit: the worst undrifted case for a share.
        errors = rng.binomial(rows, limit)
        past_e = sum(e for e, _ in error_history[-TRAILING_TICKS:]) if error_history else np.zeros(models)
        past_n = sum(n for _, n in error_history[-TRAILING_TICKS:]) if error_history else np.zeros(models)
        log_e = np.array([sq.rate_bet(float(pe), float(pn), limit).log_e(float(e), float(n))
                          for pe, pn, e, n in zip(past_e, past_n, errors, rows, strict=True)])
        error_cusum = np.maximum(0.0, error_cusum + log_e)
        error_alarms += int((error_cusum >= h).sum())
        error_cusum[error_cusum >= h] = 0.0
        error_history.append((errors.astype(float), rows.astype(float)))
    alarms = int(features.alarms.sum()) + error_alarms
    return alarms, upper95(alarms, models)


def below_tolerance(models: int, seed: int) -> tuple[int, float]:
    """One feature at true PSI 0.01 (tolerance 0.02), 30,000 rows an evaluation, for a month."""
    rng = np.random.default_rng(seed)
    delta = 0.1  # N(0.1, 1) over deciles: PSI ~0.0101
    q = shifted(delta)
    assert 0.0095 < float(sq.psi(q, REFERENCE)) < 0.0105
    streams = Streams(models, 0.02, sq.threshold(DETECTORS, PER_MONTH, BUDGET))
    for tick in range(PER_MONTH):
        streams.step(tick, rng.multinomial(30_000, np.broadcast_to(q, (models, BINS))))
    alarms = int(streams.alarms.sum())
    return alarms, upper95(alarms, models)


def delays(delta: float, rows: float, ramp_days: float, tolerance: float, runs: int, seed: int) -> np.ndarray:
    """Hours from the shift's start to the drifted feature's alarm (inf: none within 30 days)."""
    rng = np.random.default_rng(seed)
    streams = Streams(runs, tolerance, sq.threshold(DETECTORS, PER_MONTH, BUDGET))
    warmup = int(86400 / INTERVAL)  # a day of undrifted traffic first
    horizon = warmup + int(30 * 86400 / INTERVAL)
    ramp = max(1, int(ramp_days * 86400 / INTERVAL))
    for tick in range(horizon):
        progress = 0.0 if tick < warmup else min(1.0, (tick - warmup + 1) / ramp) if ramp_days else 1.0
        n = rng.poisson(volume(np.array([tick]), rows)[0], runs)
        streams.step(tick, rng.multinomial(n, np.broadcast_to(shifted(delta * progress), (runs, BINS))))
        if (streams.first_alarm >= warmup).all():
            break
    first = streams.first_alarm.astype(float)
    early = (first >= 0) & (first < warmup)
    out = np.where(first >= warmup, (first - warmup + 1) * INTERVAL / 3600.0, np.inf)
    out[early] = np.nan  # a false alarm before the shift: not a detection
    return out


def performance(drop: float, labelled_share: float, rows: float, runs: int, seed: int) -> np.ndarray:
    """Hours to the accuracy alarm after accuracy falls from 0.90 by `drop` (tolerated: 0.02)."""
    rng = np.random.default_rng(seed)
    limit = 1 - (0.90 - 0.02)
    h = sq.threshold(DETECTORS, PER_MONTH, BUDGET)
    cusum = np.zeros(runs)
    first = np.full(runs, np.inf)
    history: list[tuple[np.ndarray, np.ndarray]] = []
    for tick in range(int(30 * 86400 / INTERVAL)):
        n = rng.binomial(rng.poisson(volume(np.array([tick]), rows)[0], runs), labelled_share).astype(float)
        if labelled_share < 1:  # ground truth: 0/1 wrong answers
            wrong = rng.binomial(n.astype(int), 0.10 + drop).astype(float)
        else:  # the estimate: each row's calibrated chance of being wrong, mean 0.10 + drop
            wrong = np.array([rng.beta(2, 2 / (0.10 + drop) - 2, int(k)).sum() for k in n])
        past_w = sum(w for w, _ in history[-TRAILING_TICKS:]) if history else np.zeros(runs)
        past_n = sum(k for _, k in history[-TRAILING_TICKS:]) if history else np.zeros(runs)
        log_e = np.array([sq.rate_bet(float(pw), float(pn), limit).log_e(float(w), float(k))
                          for pw, pn, w, k in zip(past_w, past_n, wrong, n, strict=True)])
        cusum = np.maximum(0.0, cusum + log_e)
        fired = (cusum >= h) & np.isinf(first)
        first[fired] = (tick + 1) * INTERVAL / 3600.0
        cusum[cusum >= h] = 0.0
        history.append((wrong, n))
        if np.isfinite(first).all():
            break
    return first


def quantiles(hours: np.ndarray) -> str:
    detected = hours[~np.isnan(hours)]
    if np.isinf(detected).any():  # np.quantile warns on inf - inf; "never" sorts last either way
        detected = np.where(np.isinf(detected), 1e12, detected)
    if detected.size == 0:
        return "-"
    median, p90 = np.quantile(detected, [0.5, 0.9], method="inverted_cdf")  # no interpolation with "never"

    def show(x: float) -> str:
        return "never" if not math.isfinite(x) or x >= 1e12 else f"{x:.1f}h"
    return f"{show(median)} / {show(p90)}"


def nannyml_side(python: str, seed: int) -> list[dict[str, object]]:
    """NannyML univariate drift on 1 h and 1 d chunks (run in its own Python, see below)."""
    script = Path(__file__).with_name("monitoring_nannyml.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([python, str(script), str(seed), tmp], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"NannyML run failed:\n{out.stderr[-2000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-months", type=int, default=300, help="Model-months per traffic level")
    parser.add_argument("--runs", type=int, default=40, help="runs per detection-delay cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nannyml", default="", help="a Python with nannyml installed")
    args = parser.parse_args()
    started = time.monotonic()
    h = sq.threshold(DETECTORS, PER_MONTH, BUDGET)
    print(f"# python bench/monitoring_bench.py --model-months {args.model_months} --runs {args.runs} "
          f"--seed {args.seed}{' --nannyml ' + args.nannyml if args.nannyml else ''}")
    print(f"budget {BUDGET} false alarms per Model-month, {DETECTORS} detectors, {PER_MONTH} evaluations a month: "
          f"threshold h = {h:.2f} (log-evidence)\n")

    print("1. false alarms per Model-month, undrifted (daily + weekly volume, distributions wobbling within tolerance)")
    print(f"   {'rows/evaluation':>16} {'Model-months':>13} {'alarms':>7} {'rate':>8} {'95% upper':>10}")
    for rows in (10, 100, 1000):
        alarms, upper = false_alarms(args.model_months, rows, args.seed + rows)
        print(f"   {rows:>16} {args.model_months:>13} {alarms:>7} {alarms / args.model_months:>8.4f} {upper:>10.4f}")

    print("\n2. one feature drifted below its tolerance (PSI 0.01, tolerance 0.02), 30,000 rows an evaluation")
    alarms, upper = below_tolerance(args.model_months, args.seed + 7)
    rate = alarms / args.model_months
    print(f"   {args.model_months} months: {alarms} alarms, rate {rate:.4f}, 95% upper {upper:.4f}")

    print("\n3. detection delay of one shifted feature of 30: median / p90 (hours after the shift starts)")
    print(f"   {'tolerance':>9} {'shift':>6} {'PSI':>6} {'kind':>8} " + " ".join(f"{r:>16}" for r in
                                                                         ("10 rows/eval", "100 rows/eval",
                                                                          "1000 rows/eval")))
    for tolerance in (0.02, 0.005):
        for delta in (0.1, 0.25, 0.5):
            psi_value = float(sq.psi(shifted(delta), REFERENCE))
            for ramp in (0.0, 7.0):
                cells = [quantiles(delays(delta, rows, ramp, tolerance, args.runs, args.seed + int(rows)))
                         for rows in (10, 100, 1000)]
                kind = "abrupt" if ramp == 0 else "7d ramp"
                row = " ".join(f"{c:>16}" for c in cells)
                print(f"   {tolerance:>9} {delta:>6} {psi_value:>6.3f} {kind:>8} {row}")

    print("\n4. accuracy below the reference's 0.90 (tolerated drop 0.02): hours to PerformanceDegraded, median / p90")
    for drop in (0.03, 0.05):
        labels = quantiles(performance(drop, 0.10, 100, args.runs, args.seed + 11))
        estimate = quantiles(performance(drop, 1.0, 100, args.runs, args.seed + 12))
        print(f"   drop {drop:.2f} at 100 rows/eval: ground truth (10 % of rows) {labels:>14}, "
              f"label-free estimate (every row) {estimate:>14}")

    if args.nannyml:
        print("\n5. NannyML univariate drift (Jensen-Shannon, default thresholds), same kind of streams, 100 rows/eval")
        for row in nannyml_side(args.nannyml, args.seed):
            print(f"   {row}")
    print(f"\n({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
