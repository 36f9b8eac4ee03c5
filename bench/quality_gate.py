"""The quality gate, measured: does the accuracy builtin roll back a worse canary in time without
rolling back equal ones, and does the label-free estimate land on the realised accuracy?

    python bench/quality_gate.py [--trials 200] [--equal-trials 100] [--nannyml PYTHON]

1. Gate. A canary at `--weight` % of `--rate` one-row requests per second; ground truth for
   `--feedback` of the answers, arriving `--label-delay` seconds late. Every `--interval` the gate
   does what the operator does on the counters Prometheus would hold: the canary's and the
   stable's labelled rows and correct rows since the canary started
   (serin.operator.queries.accuracy_difference, the Agresti-Caffo interval at `--confidence`),
   judged against `min: -tolerance` (serin.operator.analysis.judge_round, failureLimit 2). The
   statistics and the judgement are the operator's own code; the traffic and the labels are drawn
   (binomial), in simulated time, so hundreds of trials take seconds. Prometheus' increase()
   extrapolation is left out: the counts are exact.
2. Label-free estimate. Models trained on a world with noisy labels; each calibrated on a
   1,000-row labelled reference sample exactly as the converter does (converters/profile.py
   performance: isotonic regression of "was right" on the predicted class's probability), then
   estimated on 1,000-row windows of unseen traffic, with and without covariate shift, exactly
   as the runtime does (runtime/monitoring.py AccuracyEstimate), against the realised accuracy of
   each window. With --nannyml, NannyML's CBPE on the same windows and reference (binary,
   bench/cbpe_nannyml.py), and the raw, uncalibrated confidence beside both.
3. Drift: bench/drift_power.py (power and false alarms of the drift tests beside Evidently's).
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
from serin.converters.profile import performance
from serin.converters.registry import Outputs
from serin.operator.analysis import judge_round
from serin.operator.observations import MeasuredValue
from serin.operator.queries import accuracy_difference
from serin.operator.spec import AnalysisSpec, Builtin, MetricSpec
from serin.runtime.model import Task
from serin.runtime.monitoring import AccuracyEstimate

# -- 1. the gate ----------------------------------------------------------------------------------

def trial(args: argparse.Namespace, rng: np.random.Generator, canary_accuracy: float,
          horizon: float) -> tuple[float | None, float | None]:
    """One canary: (seconds to rollback or None, seconds to its first Successful round or None)."""
    metric = MetricSpec("accuracy", builtin=Builtin.ACCURACY, min=-args.tolerance, confidence=args.confidence)
    spec = AnalysisSpec(interval=args.interval, failure_limit=2, metrics=(metric,))
    labelled_per_s = args.rate * args.feedback
    share = args.weight / 100
    counts = np.zeros(4)  # canary rows, canary correct, stable rows, stable correct
    failures: dict[str, int] = {}
    passed_at = None
    t = 0.0
    while t < horizon:
        t += args.interval
        # Labels for the predictions of the last interval, `label_delay` ago (none before that).
        span = min(args.interval, max(0.0, t - args.label_delay))
        if span > 0:
            n_c = rng.poisson(labelled_per_s * share * span)
            n_s = rng.poisson(labelled_per_s * (1 - share) * span)
            counts += (n_c, rng.binomial(n_c, canary_accuracy), n_s, rng.binomial(n_s, args.stable_accuracy))
        got = accuracy_difference((counts[0], counts[1]), (counts[2], counts[3]), args.confidence)
        measured = MeasuredValue("accuracy", got.value, got.why_none, interval=got.interval)
        judged = judge_round(spec, (measured,), failures, 2, "t")
        failures = judged.failures
        if judged.over_limit is not None:
            return t, passed_at
        if passed_at is None and judged.successful:
            passed_at = t
    return None, passed_at


def gate(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    canary_per_s = args.rate * args.feedback * args.weight / 100
    print(f"1. Gate: {args.rate:g} req/s (1 row each), ground truth for {args.feedback:.0%} of answers "
          f"{args.label_delay:g} s late, canary at {args.weight}% ({canary_per_s:g} labelled canary rows/s); "
          f"accuracy builtin min -{args.tolerance:g} at {args.confidence:.0%} confidence, failureLimit 2, "
          f"interval {args.interval:g} s; stable accuracy {args.stable_accuracy:.2f}")
    started = time.perf_counter()
    worse = args.stable_accuracy - args.worse
    bad = [trial(args, rng, worse, args.limit * 4)[0] for _ in range(args.trials)]
    caught = [t for t in bad if t is not None and t <= args.limit]
    times = np.array([t for t in bad if t is not None])
    print(f"   canary {args.worse * 100:g} points worse ({worse:.2f}), {args.trials} trials: rolled back within "
          f"{args.limit / 60:g} min in {len(caught)}/{args.trials} = {len(caught) / args.trials:.1%} "
          f"(goal >= 95 %); time to rollback median {np.median(times):.0f} s, "
          f"p95 {np.percentile(times, 95):.0f} s, max {times.max():.0f} s; never rolled back: "
          f"{sum(t is None for t in bad)}")
    equal = [trial(args, rng, args.stable_accuracy, args.horizon) for _ in range(args.equal_trials)]
    false = sum(r is not None for r, _ in equal)
    passed = np.array([p for _, p in equal if p is not None])
    print(f"   equal canaries, {args.equal_trials} trials over {args.horizon / 60:g} min each: {false} rolled back "
          f"(goal 0 in >= 20); first Successful round (the step may progress) median {np.median(passed):.0f} s, "
          f"p95 {np.percentile(passed, 95):.0f} s, in {len(passed)}/{args.equal_trials} trials")
    print(f"   [{time.perf_counter() - started:.1f} s]")


# -- 2. the label-free estimate ---------------------------------------------------------------------

def p_positive(x: np.ndarray) -> np.ndarray:
    """The world's own P(y=1|x)."""
    return 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.5 * x[:, 1] + x[:, 2] * x[:, 3])))


def world(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels: P(y=1|x) is a logistic of the features; a covariate shift moves x0 and leaves
    P(y|x) alone (the shift CBPE is made for: no concept drift)."""
    x = rng.normal(size=(n, 4))
    x[:, 0] += shift
    return x, (rng.random(n) < p_positive(x)).astype(int)


def models(rng: np.random.Generator) -> dict[str, object]:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = world(rng, 3000, 0.0)
    return {
        "random forest, 5 trees (overconfident)": RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y),
        "logistic regression (misses x2*x3)": LogisticRegression().fit(x, y),
        "gradient boosting": HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x, y),
    }


def estimate(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed + 1)
    print(f"\n2. Label-free accuracy estimate: reference {args.reference_rows} labelled rows, "
          f"{args.windows} windows of {args.window_rows} rows per shift of x0 (sd units), "
          "error = estimate - realised accuracy, in points")
    started = time.perf_counter()
    # The oracle knows the world's P(y|x): its estimate is the window's expected accuracy, so its
    # error is the realised accuracy's own sampling noise, the floor any estimator stands on.
    errors: dict[str, list[float]] = {"Serin": [], "uncalibrated confidence": [], "oracle": []}
    if args.nannyml:
        errors["NannyML CBPE"] = []
    for name, model in models(rng).items():
        x_ref, y_ref = world(rng, args.reference_rows, 0.0)
        p_ref = model.predict_proba(x_ref)  # type: ignore[attr-defined]
        pred_ref = model.predict(x_ref)  # type: ignore[attr-defined]
        labels = [str(int(v)) for v in pred_ref]
        perf = performance(Outputs(pred_ref, p_ref, "probabilities"), ["0", "1"], labels, y_ref)
        knots = perf.get("calibration")  # absent when calibrating did not help out of fold
        task = Task("classification", "label", ("0", "1"), (),
                    (tuple(knots["confidence"]), tuple(knots["accuracy"])) if knots else None)
        print(f"   {name}: reference accuracy {perf['accuracy']:.3f}, out-of-fold squared error raw "
              f"{perf['calibrationError']['raw']:.4f} / calibrated {perf['calibrationError']['calibrated']:.4f}: "
              f"{'calibrated' if knots else 'raw probabilities kept'}")
        raw_task = Task("classification", "label", ("0", "1"))
        serin, raw = AccuracyEstimate("m", name, task, "p"), AccuracyEstimate("m", name + " raw", raw_task, "p")
        for shift in args.shifts:
            windows = [world(rng, args.window_rows, shift) for _ in range(args.windows)]
            rows: dict[str, list[float]] = {k: [] for k in errors}
            nml = nannyml_estimates(args, p_ref, pred_ref, y_ref, model, windows) if args.nannyml else None
            realised_all = []
            for i, (x, y) in enumerate(windows):
                p, pred = model.predict_proba(x), model.predict(x)  # type: ignore[attr-defined]
                realised = float((pred == y).mean())
                realised_all.append(realised)
                correct, n = serin.expected([(pred, p)])
                rows["Serin"].append(correct / n - realised)
                correct, n = raw.expected([(pred, p)])
                rows["uncalibrated confidence"].append(correct / n - realised)
                truth_p = p_positive(x)
                rows["oracle"].append(float(np.where(pred == 1, truth_p, 1 - truth_p).mean()) - realised)
                if nml is not None:
                    rows["NannyML CBPE"].append(nml[i] - realised)
            line = ", ".join(f"{k}: mean {np.mean(v) * 100:+.2f}, |max| {np.max(np.abs(v)) * 100:.2f}, "
                             f"within 2 pts {np.mean(np.abs(v) <= 0.02):.0%}" for k, v in rows.items())
            print(f"   {name}, shift {shift:g} (realised {np.mean(realised_all):.3f}): {line}")
            for k, v in rows.items():
                errors[k] += v
    for k, v in errors.items():
        a = np.abs(v)
        print(f"   all windows, {k}: mean |error| {a.mean() * 100:.2f} points, p95 {np.percentile(a, 95) * 100:.2f}, "
              f"within +-2 points {np.mean(a <= 0.02):.1%} of {len(a)} windows")
    print(f"   [{time.perf_counter() - started:.1f} s]")


def nannyml_estimates(args: argparse.Namespace, p_ref: np.ndarray, pred_ref: np.ndarray, y_ref: np.ndarray,
                      model: object, windows: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cbpe.npz"
        np.savez(path, ref_proba=p_ref[:, 1], ref_pred=pred_ref, ref_true=y_ref,
                 win_proba=np.stack([model.predict_proba(x)[:, 1] for x, _ in windows]),  # type: ignore[attr-defined]
                 win_pred=np.stack([model.predict(x) for x, _ in windows]))  # type: ignore[attr-defined]
        out = subprocess.run([args.nannyml, str(Path(__file__).with_name("cbpe_nannyml.py")), str(path)],
                             capture_output=True, text=True, check=True, timeout=600)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if not getattr(args, "_nannyml_said", False):
        print(f"   NannyML {lines[-1].get('nannyml')} ({args.nannyml})")
        args._nannyml_said = True
    return [line["estimated_accuracy"] for line in lines if "estimated_accuracy" in line]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=3000.0, help="requests per second (one row each)")
    ap.add_argument("--feedback", type=float, default=0.10, help="share of answers that get ground truth")
    ap.add_argument("--label-delay", type=float, default=30.0, help="seconds until a label arrives")
    ap.add_argument("--weight", type=int, default=10, help="canary weight, percent")
    ap.add_argument("--interval", type=float, default=10.0, help="analysis interval, seconds")
    ap.add_argument("--stable-accuracy", type=float, default=0.90)
    ap.add_argument("--worse", type=float, default=0.03, help="how much less accurate the bad canary is")
    ap.add_argument("--tolerance", type=float, default=0.01, help="the metric's min is minus this")
    ap.add_argument("--confidence", type=float, default=0.99)
    ap.add_argument("--limit", type=float, default=300.0, help="seconds a bad canary may take to roll back")
    ap.add_argument("--horizon", type=float, default=1800.0, help="seconds each equal canary is judged")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--equal-trials", type=int, default=100)
    ap.add_argument("--reference-rows", type=int, default=1000)
    ap.add_argument("--window-rows", type=int, default=1000)
    ap.add_argument("--windows", type=int, default=50)
    ap.add_argument("--shifts", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--nannyml", metavar="PYTHON", help="a Python with nannyml installed")
    args = ap.parse_args(argv)
    print(f"bench/quality_gate.py {' '.join(argv)}  (seed {args.seed})")
    gate(args)
    estimate(args)
    print("\n3. Drift tests beside Evidently: python bench/drift_power.py --evidently PYTHON "
          "(bench/results/drift-power-2026-12-04.txt)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
