"""alibi-detect's online drift detector on the bench's streams, for bench/monitoring_bench.py (run in
a Python that has `alibi-detect`; Serin does not depend on it):

    PYTHON bench/monitoring_alibi.py SEED

alibi-detect's online detectors bound false alarms by an expected run time (ERT) counted in rows,
and set their thresholds by simulating null streams: the (1 - 1/ERT) quantile of the statistic at
each step, from `n_bootstraps` simulated streams (the library refuses fewer than about ERT of them
and asks for ten times more). CVMDriftOnline (Cramer-von Mises on sliding windows) is its detector
for continuous tabular features that needs no deep-learning backend.

Measured here, one feature of the bench's world (N(0, 1), its mean wobbling with the hour by up to
0.07 sd, 1,200 rows an hour = 100 rows every 5 minutes), a reference of 1,000 rows drawn across a
day, windows of 100 and 400 rows:
- the time to configure the thresholds for ERT = 1,000 rows (10,000 simulated streams), and the
  library's answer for the ERT a month-long budget needs;
- rows to the first alarm on undrifted streams (20 runs): false alarms per month at this traffic;
- rows from a 0.25 / 0.5 sd shift to its alarm (20 runs each, the detector reset onto the shifted
  stream: at this ERT it would have alarmed falsely long before a shift a day in), in hours.
Prints JSON lines.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np

ROWS_PER_HOUR = 1200
ROWS_PER_MONTH = ROWS_PER_HOUR * 24 * 30
WINDOWS = [100, 400]
REFERENCE_ROWS = 1000


def stream(rng: np.random.Generator, rows: int, start_row: int, shift_at: int | None = None,
           delta: float = 0.0) -> np.ndarray:
    index = start_row + np.arange(rows)
    hour = (index / ROWS_PER_HOUR) % 24
    x = rng.normal(size=rows) + 0.07 * np.sin(2 * np.pi * hour / 24 + rng.uniform(0, 2 * np.pi))
    if shift_at is not None:
        x[index >= shift_at] += delta
    return x


def rows_to_alarm(detector, rng: np.random.Generator, limit: int, shift_at: int | None = None,
                  delta: float = 0.0) -> int | None:
    """Rows fed until the detector's first alarm (counted from `shift_at` when given)."""
    detector.reset_state()
    start = int(rng.integers(0, ROWS_PER_HOUR * 24))  # anywhere in the day's wobble
    fed, chunk = 0, 2000
    while fed < limit:
        for x in stream(rng, chunk, start + fed, None if shift_at is None else start + shift_at, delta):
            fed += 1
            if detector.predict(np.array([x]))["data"]["is_drift"]:
                return fed - (shift_at or 0)
    return None


def main(seed: int) -> int:
    warnings.filterwarnings("ignore")
    import alibi_detect
    from alibi_detect.cd import CVMDriftOnline

    rng = np.random.default_rng(seed)
    np.random.seed(seed)  # the threshold simulation draws from numpy's global generator
    version = alibi_detect.__version__
    # The reference: rows drawn across a whole day, so that it holds the day's wobble as Serin's
    # profile and NannyML's week of reference do.
    day = stream(rng, 24 * ROWS_PER_HOUR, 0)
    reference = rng.choice(day, REFERENCE_ROWS, replace=False)[:, None]

    # 30 features at one ERT: each feature's quantile is 1 - 1/(30 ERT) (its Bonferroni-like
    # correction); the library's own check refuses it from fewer simulations than that needs.
    try:
        CVMDriftOnline(np.repeat(reference, 30, axis=1), ert=1000, window_sizes=WINDOWS, n_bootstraps=1000,
                       verbose=False)
        refusal = "accepted"
    except ValueError as e:
        refusal = str(e)
    print(json.dumps({"alibi-detect": version, "case": "30 features, ERT 1,000 rows, 1,000 simulations",
                      "answer": refusal}), flush=True)

    ert, simulations = 1000, 10_000
    started = time.process_time()
    detector = CVMDriftOnline(reference, ert=ert, window_sizes=WINDOWS, n_bootstraps=simulations, verbose=False)
    configure = time.process_time() - started
    per_simulation = configure / simulations
    # The ERT Serin's default budget means for one of a Model's 30 features: 0.05 false alarms a
    # Model-month over 30 detectors at 100 rows every 5 minutes.
    matched_ert = ROWS_PER_MONTH * 30 / 0.05
    print(json.dumps({"alibi-detect": version, "case": f"configure ERT {ert} rows, {simulations} simulations",
                      "cpu seconds": round(configure, 1),
                      "ERT matching 0.05 alarms a Model-month (30 features, 100 rows/5 min)": f"{matched_ert:.2e} rows",
                      "simulations it needs (10 x ERT, the library's advice)": f"{10 * matched_ert:.1e}",
                      "their CPU at this rate, years": round(10 * matched_ert * per_simulation / 3.15e7, 1)}),
          flush=True)

    runs = 20
    started = time.process_time()
    undrifted = [rows_to_alarm(detector, rng, 50 * ert) for _ in range(runs)]
    per_row = (time.process_time() - started) / max(1, sum(x or 50 * ert for x in undrifted))
    found = [x for x in undrifted if x is not None]
    mean_rows = float(np.mean(found)) if found else float("inf")
    print(json.dumps({"alibi-detect": version, "case": f"undrifted, ERT {ert}, {runs} runs",
                      "rows to the first false alarm, mean": round(mean_rows),
                      "false alarms per month at 100 rows/5 min (one feature)": round(ROWS_PER_MONTH / mean_rows, 1),
                      "microseconds per row": round(per_row * 1e6)}), flush=True)
    # At this ERT an undrifted stream alarms within about 1,000 rows, long before a shift a day in:
    # the delay is measured from a detector reset onto the shifted stream (its windows fill first).
    for delta in (0.25, 0.5):
        hours = []
        for _ in range(runs):
            rows = rows_to_alarm(detector, rng, 200 * ROWS_PER_HOUR, shift_at=0, delta=delta)
            hours.append(float("inf") if rows is None else rows / ROWS_PER_HOUR)
        print(json.dumps({"alibi-detect": version, "case": f"{delta} sd shift from a reset, ERT {ert}, {runs} runs",
                          "hours to alarm, median / p90": [
                              round(float(np.quantile(hours, q, method="inverted_cdf")), 3) for q in (0.5, 0.9)]}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
