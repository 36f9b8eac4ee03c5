"""Monitoring over time: false alarms per Model-month and detection delays of Serin's detectors
(operator/sequential.py, the same functions the operator runs), on simulated streams.

    python bench/monitoring_bench.py                                  # ~10 minutes on one core
    python bench/monitoring_bench.py --model-months 10000 --edge-months 2000 --workers 2 \
        --nannyml PY1 --alibi PY2 --evidently PY3                    # the issue's scale, side by side

PY1/PY2/PY3: Pythons with nannyml, alibi-detect, evidently (not Serin dependencies; see
docs/monitoring.md for the venvs). --only 15 runs sections 1 and 5 only.

The world (as bench/drift_power.py's): Models of 30 numeric features, each binned into the
reference profile's 10 deciles; one evaluation every 5 minutes (8,640 a month); the default
budget of 0.05 false alarms per Model-month spread over 31 detectors (30 features, and the error
rate held at exactly its limit, the hardest undrifted case for a share). Traffic follows a daily
cycle (nights at a fifth of the day's volume) and, in half the rows, a weekly one (weekends at
half); the undrifted streams' distributions wobble within the tolerance with the hour (PSI up to
0.01 of a 0.02 tolerance, each feature in one of 24 phases): the bound must hold for any sequence of
tolerated distributions, not only one.

Printed side by side in one run:
1. false alarms per Model-month on those streams at 10, 100 and 1,000 rows an evaluation, with and
   without the weekly cycle, with the exact one-sided 95 % upper bound (Poisson) on the rate;
2. a feature drifted below the tolerance (true PSI 0.01, tolerance 0.02) at 100 rows/s (30,000
   rows an evaluation) for 30 days: its alarms per Model-month;
3. detection delay of a 0.1, 0.25 and 0.5 sd shift of one feature of 30, abrupt and as a 7-day
   ramp, at 10, 100 and 1,000 rows an evaluation (median and p90 in hours), with the default
   tolerance (0.02) and a tight one (0.005): a shift below the tolerance is never an alarm by design;
4. performance: accuracy 3 and 5 points below the reference (tolerated drop 2 points) seen by
   ground truth for 10 % of rows, and by the label-free estimate on every row: hours to the alarm;
5. the same kind of streams judged by NannyML's univariate drift on 1 h chunks at its default
   thresholds and at a threshold matched to Serin's budget (bench/monitoring_nannyml.py),
   alibi-detect's online Cramer-von Mises detector (bench/monitoring_alibi.py) and Evidently's
   data drift report per hourly chunk (bench/monitoring_evidently.py);
6. the operator's CPU for one judged monitoring read of a 30-feature classifier (JSON decoding,
   parsing, the bets): what monitoring costs a Model with traffic, beyond the idle read.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Callable
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


def volume(tick: np.ndarray, mean_rows: float, weekly: bool = True) -> np.ndarray:
    """Rows per evaluation with a daily cycle (and a weekly one: weekends at half), averaging
    `mean_rows`."""
    hours = (tick * INTERVAL / 3600.0) % 24
    days = (tick * INTERVAL / 86400.0) % 7
    daily = 0.2 + 0.8 * (0.5 - 0.5 * np.cos(2 * np.pi * hours / 24))
    if not weekly:
        return mean_rows * daily / 0.6  # 0.6: the mean of the daily cycle
    weekly_shape = np.where(days >= 5, 0.5, 1.0)
    return mean_rows * daily * weekly_shape / 0.514  # 0.514: the mean of daily * weekly over a week


PHASES = 24  # undrifted streams wobble in one of 24 phases of the day (tables below, not per-stream cdfs)
TICKS_PER_DAY = int(86400 / INTERVAL)
# WOBBLE[t, k]: bin probabilities at tick-of-day t for phase k. Each stream's mean moves with the
# hour of the day by up to 0.07 sd (PSI <= 0.01 against the reference, half the default tolerance).
WOBBLE = shifted(0.07 * np.sin(2 * np.pi * np.arange(TICKS_PER_DAY)[:, None] / TICKS_PER_DAY
                               + 2 * np.pi * np.arange(PHASES)[None, :] / PHASES))


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
        # Rings with running sums (a month is 8,640 steps of up to 15,000 streams: summing the
        # rings again each step was most of the bench's time).
        self.ring = np.zeros((TRAILING_TICKS, streams, BINS))  # per 5-minute tick
        self.hour = np.zeros((streams, BINS))  # the ring's sum: the last hour
        self.windows = np.zeros((TRAILING_WINDOWS, streams, BINS))  # the last judged windows, per stream
        self.slot = np.zeros(streams, np.int64)  # each stream's next window slot
        self.recent = np.zeros((streams, BINS))  # the windows' sum
        self.pending = np.zeros((streams, BINS))
        self.cusum = np.zeros(streams)
        self.alarms = np.zeros(streams, np.int64)
        self.first_alarm = np.full(streams, -1)

    def step(self, tick: int, counts: np.ndarray) -> None:
        self.pending += counts
        due = np.flatnonzero(self.pending.sum(axis=1) >= MIN_ROWS)
        if due.size:
            hour, windows = self.hour[due], self.recent[due]
            trailing = np.where((windows.sum(axis=1) > hour.sum(axis=1))[:, None], windows, hour)
            bet = sq.categorical_bet(trailing, np.broadcast_to(REFERENCE, trailing.shape), self.tolerance)
            judged = self.pending[due]
            cusum = np.maximum(0.0, self.cusum[due] + bet.log_e(judged))
            fired = cusum >= self.h
            self.cusum[due] = np.where(fired, 0.0, cusum)  # an alarm ends the episode's evidence
            self.alarms[due] += fired
            first = due[fired & (self.first_alarm[due] < 0)]
            self.first_alarm[first] = tick
            slot = self.slot[due]
            self.recent[due] += judged - self.windows[slot, due]
            self.windows[slot, due] = judged
            self.slot[due] = (slot + 1) % TRAILING_WINDOWS
            self.pending[due] = 0.0
        at = tick % TRAILING_TICKS
        self.hour += counts - self.ring[at]
        self.ring[at] = counts


def upper95(count: int, exposure: float) -> float:
    """Exact one-sided 95 % upper bound on a Poisson rate from `count` events in `exposure`."""
    return chi2.ppf(0.95, 2 * count + 2) / 2 / exposure


def rate_log_e(past_events: np.ndarray, past_rows: np.ndarray, events: np.ndarray, rows: np.ndarray,
               limit: float) -> np.ndarray:
    """sq.rate_bet(past_events, past_rows, limit).log_e(events, rows), for arrays (the operator's
    function one Model at a time is too slow for 10,000 Model-months; `check_rate_log_e` holds the
    two equal)."""
    past_rows = np.maximum(past_rows, 0.0)
    past = np.clip(past_events, 0.0, past_rows)
    estimate = np.minimum((past + sq.PRIOR_ROWS * limit) / (past_rows + sq.PRIOR_ROWS), 1.0 - 1e-9)
    betting = estimate > limit
    up = np.where(betting, np.log(np.maximum(estimate, limit) / limit), 0.0)
    down = np.where(betting, np.log((1.0 - estimate) / (1.0 - limit)), 0.0)
    events = np.clip(events, 0.0, rows)
    return events * up + (rows - events) * down


def check_rate_log_e(seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for limit in (0.01, 0.1, 0.12, 0.5):
        rows = rng.integers(0, 3000, 2000).astype(float)
        past_rows = rng.integers(0, 3000, 2000).astype(float)
        past = rng.binomial(past_rows.astype(int), np.minimum(limit * rng.uniform(0, 3, 2000), 1)).astype(float)
        events = rng.binomial(rows.astype(int), limit).astype(float)
        want = [sq.rate_bet(pe, pn, limit).log_e(e, n)
                for pe, pn, e, n in zip(past, past_rows, events, rows, strict=True)]
        got = rate_log_e(past, past_rows, events, rows, limit)
        if not np.allclose(got, want, rtol=1e-12, atol=1e-9):
            raise SystemExit(f"the vectorised rate bet differs from operator/sequential.py's at limit {limit}")


def false_alarms_batch(models: int, mean_rows: float, weekly: bool, seed: int) -> int:
    """Alarms over `models` Model-months of undrifted traffic, 30 features and the error rate."""
    rng = np.random.default_rng(seed)
    h = sq.threshold(DETECTORS, PER_MONTH, BUDGET)
    features = Streams(models * FEATURES, 0.02, h)
    phase = rng.integers(0, PHASES, models * FEATURES)
    limit = 0.01
    error_cusum = np.zeros(models)
    error_alarms = 0
    ring_errors = np.zeros((TRAILING_TICKS, models))
    ring_rows = np.zeros((TRAILING_TICKS, models))
    expected = volume(np.arange(PER_MONTH), mean_rows, weekly)
    for tick in range(PER_MONTH):
        rows = rng.poisson(expected[tick], models)
        features.step(tick, rng.multinomial(np.repeat(rows, FEATURES), WOBBLE[tick % TICKS_PER_DAY, phase]))
        # The error rate exactly at its limit: the worst undrifted case for a share.
        errors = rng.binomial(rows, limit)
        log_e = rate_log_e(ring_errors.sum(axis=0), ring_rows.sum(axis=0), errors.astype(float),
                           rows.astype(float), limit)
        error_cusum = np.maximum(0.0, error_cusum + log_e)
        error_alarms += int((error_cusum >= h).sum())
        error_cusum[error_cusum >= h] = 0.0
        ring_errors[tick % TRAILING_TICKS], ring_rows[tick % TRAILING_TICKS] = errors, rows
    return int(features.alarms.sum()) + error_alarms


BATCH = 500  # Model-months simulated at once (memory: about 100 MB a batch)


def in_batches(batch: Callable[..., int], models: int, size: int, seed: int, *args: object, pool=None) -> int:
    """Alarms of `models` Model-months simulated `size` at a time by `batch(size, *args, seed)`,
    each batch with a seed of its own, on `pool` when given."""
    tasks = [(min(size, models - start), *args, seed * 100_003 + i) for i, start in enumerate(range(0, models, size))]
    return sum(pool.starmap(batch, tasks) if pool else [batch(*t) for t in tasks])


def false_alarms(models: int, mean_rows: float, seed: int, weekly: bool = True, pool=None) -> tuple[int, float]:
    """Alarms over `models` Model-months of undrifted traffic: (alarms, the 95 % upper bound)."""
    alarms = in_batches(false_alarms_batch, models, BATCH, seed, mean_rows, weekly, pool=pool)
    return alarms, upper95(alarms, models)


def below_tolerance_batch(models: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    q = shifted(0.1)  # N(0.1, 1) over deciles: PSI ~0.0101
    streams = Streams(models, 0.02, sq.threshold(DETECTORS, PER_MONTH, BUDGET))
    for tick in range(PER_MONTH):
        streams.step(tick, rng.multinomial(30_000, np.broadcast_to(q, (models, BINS))))
    return int(streams.alarms.sum())


def below_tolerance(models: int, seed: int, pool=None) -> tuple[int, float]:
    """One feature at true PSI 0.01 (tolerance 0.02), 30,000 rows an evaluation, for a month."""
    assert 0.0095 < float(sq.psi(shifted(0.1), REFERENCE)) < 0.0105
    alarms = in_batches(below_tolerance_batch, models, BATCH * 4, seed, pool=pool)
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
        log_e = rate_log_e(past_w, past_n, wrong, n, limit)
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


def read_cost(repeats: int = 200) -> dict[str, float]:
    """The operator's CPU for one judged monitoring read of a 30-feature classifier: decoding
    Prometheus' JSON answer (the window's and the reference's samples, summed over Pods, as
    monitoring_queries.window_query asks for them), parsing it (operator/prometheus.py,
    operator/monitoring_queries.py), and the 30 features' and the classes' bets with their
    evidence (operator/sequential.py). Milliseconds per read, mean over `repeats`."""
    from serin.operator import monitoring_queries as mq
    from serin.operator.prometheus import parse_samples
    from serin.runtime import metric_names as mn

    rng = np.random.default_rng(0)
    result: list[dict[str, object]] = []

    def add(labels: dict[str, str], value: float) -> None:
        result.append({"metric": labels, "value": [1.7e9, repr(float(value))]})
    for f in range(FEATURES):
        for b in range(BINS):
            add({"name": mn.FEATURE_BIN_ROWS_TOTAL, mn.FEATURE: f"f{f}", mn.BIN: str(b)}, rng.integers(0, 500))
            add({"name": mn.FEATURE_BIN_REFERENCE_RATIO, mn.FEATURE: f"f{f}", mn.BIN: str(b)}, 0.1)
    for c in ("0", "1"):
        add({"name": mn.PREDICTIONS_TOTAL, mn.CLASS: c}, 1000)
        add({"name": mn.PREDICTION_REFERENCE_RATIO, mn.CLASS: c}, 0.5)
    for le in (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf")):
        add({"name": f"{mn.REQUEST_DURATION_SECONDS}_bucket", "le": repr(le)}, 1000)
    add({"name": mn.REQUESTS_TOTAL, mn.CODE: "200"}, 1000)
    add({"name": mn.INFERENCE_ROWS_TOTAL}, 2000)
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
    reference = np.full((FEATURES, BINS), 0.1)
    started = time.process_time()
    for _ in range(repeats):
        samples, problem = parse_samples(json.loads(body))
        assert not problem, problem
        counts, _ref = mq.parse(samples)
        window = np.array([[counts.features[f"f{f}"][b] for b in range(BINS)] for f in range(FEATURES)])
        bets = sq.categorical_bet(window, reference, 0.02)
        bets.log_e(window)
        predicted = np.array([[1000.0, 1000.0]])
        sq.categorical_bet(predicted, np.array([[0.5, 0.5]]), 0.02).log_e(predicted)
    per_read = (time.process_time() - started) / repeats
    return {"samples": len(result), "bytes": len(body), "ms": per_read * 1000}


def side(python: str, script: str, *args: str) -> list[dict[str, object]]:
    """Run a comparison script in its own Python (NannyML, alibi-detect, Evidently are not Serin
    dependencies) and read its JSON lines."""
    out = subprocess.run([python, str(Path(__file__).with_name(script)), *args], capture_output=True, text=True,
                         timeout=6 * 3600)
    if out.returncode != 0:
        raise SystemExit(f"{script} failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-months", type=int, default=300, help="Model-months per row at 100 rows/eval")
    parser.add_argument("--edge-months", type=int, default=0,
                        help="Model-months per row at 10 and 1,000 rows/eval (default: --model-months)")
    parser.add_argument("--runs", type=int, default=40, help="runs per detection-delay cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes for the false-alarm months")
    parser.add_argument("--only", default="123456", help="sections to run (digits)")
    parser.add_argument("--levels", default="10,100,1000", help="section 1's rows per evaluation")
    parser.add_argument("--volumes", default="weekly,daily", help="section 1's volume cycles: weekly, daily")
    parser.add_argument("--nannyml", default="", help="a Python with nannyml installed")
    parser.add_argument("--nannyml-months", type=int, default=100, help="undrifted months calibrating NannyML")
    parser.add_argument("--alibi", default="", help="a Python with alibi-detect installed")
    parser.add_argument("--evidently", default="", help="a Python with evidently installed")
    args = parser.parse_args()
    started = time.monotonic()
    check_rate_log_e()
    h = sq.threshold(DETECTORS, PER_MONTH, BUDGET)
    print("# python bench/monitoring_bench.py " + " ".join(sys.argv[1:]))
    print(f"budget {BUDGET} false alarms per Model-month, {DETECTORS} detectors, {PER_MONTH} evaluations a month: "
          f"threshold h = {h:.2f} (log-evidence)\n")
    pool = multiprocessing.get_context("fork").Pool(args.workers) if args.workers > 1 else None

    if "1" in args.only:
        print("1. false alarms per Model-month, undrifted (daily volume cycle, with and without a weekly one; "
              "distributions wobbling within tolerance)")
        print(f"   {'volume':>14} {'rows/evaluation':>16} {'Model-months':>13} {'alarms':>7} {'rate':>8} "
              f"{'95% upper':>10}")
        for weekly in [v == "weekly" for v in args.volumes.split(",")]:
            for rows in [int(x) for x in args.levels.split(",")]:
                months = args.model_months if rows == 100 else (args.edge_months or args.model_months)
                alarms, upper = false_alarms(months, rows, args.seed + rows + 7 * weekly, weekly, pool)
                label = "daily + weekly" if weekly else "daily only"
                print(f"   {label:>14} {rows:>16} {months:>13} {alarms:>7} "
                      f"{alarms / months:>8.4f} {upper:>10.4f}", flush=True)

    if "2" in args.only:
        print("\n2. one feature drifted below its tolerance (PSI 0.01, tolerance 0.02), 30,000 rows an evaluation")
        alarms, upper = below_tolerance(args.model_months, args.seed + 7, pool)
        rate = alarms / args.model_months
        print(f"   {args.model_months} months: {alarms} alarms, rate {rate:.4f}, 95% upper {upper:.4f}", flush=True)

    if "3" in args.only:
        print("\n3. detection delay of one shifted feature of 30: median / p90 (hours after the shift starts)")
        print(f"   {'tolerance':>9} {'shift':>6} {'PSI':>6} {'kind':>8} " + " ".join(
            f"{r:>16}" for r in ("10 rows/eval", "100 rows/eval", "1000 rows/eval")))
        for tolerance in (0.02, 0.005):
            for delta in (0.1, 0.25, 0.5):
                psi_value = float(sq.psi(shifted(delta), REFERENCE))
                for ramp in (0.0, 7.0):
                    cells = [quantiles(delays(delta, rows, ramp, tolerance, args.runs, args.seed + int(rows)))
                             for rows in (10, 100, 1000)]
                    kind = "abrupt" if ramp == 0 else "7d ramp"
                    row = " ".join(f"{c:>16}" for c in cells)
                    print(f"   {tolerance:>9} {delta:>6} {psi_value:>6.3f} {kind:>8} {row}", flush=True)

    if "4" in args.only:
        print("\n4. accuracy below the reference's 0.90 (tolerated drop 0.02): hours to PerformanceDegraded, "
              "median / p90")
        for drop in (0.03, 0.05):
            labels = quantiles(performance(drop, 0.10, 100, args.runs, args.seed + 11))
            estimate = quantiles(performance(drop, 1.0, 100, args.runs, args.seed + 12))
            print(f"   drop {drop:.2f} at 100 rows/eval: ground truth (10 % of rows) {labels:>14}, "
                  f"label-free estimate (every row) {estimate:>14}", flush=True)
    if pool:
        pool.close()

    if "6" in args.only:
        cost = read_cost()
        print(f"\n6. the operator's CPU for one judged monitoring read of a 30-feature classifier "
              f"({cost['samples']} samples, {cost['bytes']:,} bytes of JSON): {cost['ms']:.2f} ms; "
              f"1,000 Models judged every 5 minutes: {cost['ms'] * 1000 / 300 / 10:.2f} % of a core", flush=True)

    if "5" in args.only and args.nannyml:
        print("\n5. NannyML univariate drift (Jensen-Shannon) on 1 h chunks of the same kind of streams "
              "(100 rows/eval, wobbling within tolerance): at its default thresholds, and at a threshold "
              "raised until it too raises at most 0.05 alarms a month")
        for row in side(args.nannyml, "monitoring_nannyml.py", str(args.seed), str(args.nannyml_months)):
            print(f"   {row}", flush=True)
    if "5" in args.only and args.alibi:
        print("\n5b. alibi-detect's online Cramer-von Mises detector (CVMDriftOnline), one feature, "
              "100 rows/eval: its expected run time configured by simulation, false alarms and delays")
        for row in side(args.alibi, "monitoring_alibi.py", str(args.seed)):
            print(f"   {row}", flush=True)
    if "5" in args.only and args.evidently:
        print("\n5c. Evidently's DataDriftPreset (its defaults) on 1 h chunks of undrifted streams")
        for row in side(args.evidently, "monitoring_evidently.py", str(args.seed)):
            print(f"   {row}", flush=True)
    print(f"\n({time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
