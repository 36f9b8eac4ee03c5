"""NannyML's univariate drift on month-long streams, for bench/monitoring_bench.py (run in a Python
that has `nannyml`; Serin does not depend on it):

    PYTHON bench/monitoring_nannyml.py SEED MONTHS

The same world as the bench: 30 N(0, 1) features whose means wobble with the hour of the day by up
to 0.07 sd (PSI <= 0.01, within Serin's default tolerance), 100 rows every 5 minutes (1,200 an hour),
a week of the same traffic as the reference; Jensen-Shannon distance, NannyML's default for
continuous features, on 1 h chunks. Two settings:

- NannyML's default thresholds (the reference chunks' mean +- 3 standard deviations);
- a *matched* threshold: a constant one, raised until at most 5 % of MONTHS undrifted months have
  an alerting chunk (at most 0.05 first alarms a Model-month, Serin's default budget; counting
  months, not chunks, is the generous reading for NannyML). The threshold is the empirical 95th
  percentile of the months' largest distance, computed by NannyML itself on every chunk and feature.

Prints one JSON line per case: alerting chunks per undrifted month, and hours from a shift of one
feature to its first alert (NannyML alerts per chunk: the first chunk ending after the shift whose
distance is past the threshold).
"""

from __future__ import annotations

import json
import os
import sys
import warnings

# NannyML sends usage statistics to a web service by default; nothing leaves this machine.
os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"

import numpy as np
import pandas as pd

FEATURES = 30
ROWS_PER_HOUR = 1200
HOURS = 30 * 24
COLUMNS = [f"f{i}" for i in range(FEATURES)]


def frame(rng: np.random.Generator, hours: int, shift_after_hours: float | None = None,
          delta: float = 0.0) -> pd.DataFrame:
    rows = hours * ROWS_PER_HOUR
    hour_of_day = (np.arange(rows) / ROWS_PER_HOUR) % 24
    phase = rng.uniform(0, 2 * np.pi, FEATURES)
    x = rng.normal(size=(rows, FEATURES)) + 0.07 * np.sin(2 * np.pi * hour_of_day[:, None] / 24 + phase[None, :])
    if shift_after_hours is not None:
        x[int(shift_after_hours * ROWS_PER_HOUR):, 0] += delta
    return pd.DataFrame(x, columns=COLUMNS)


def distances(reference: pd.DataFrame, analysis: pd.DataFrame, threshold: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """(chunks, features) Jensen-Shannon distances and NannyML's alerts, on 1 h chunks; with
    `threshold`, a constant upper threshold instead of the default."""
    import nannyml
    from nannyml.thresholds import ConstantThreshold

    thresholds = {"jensen_shannon": ConstantThreshold(upper=threshold)} if threshold is not None else None
    calculator = nannyml.UnivariateDriftCalculator(
        column_names=COLUMNS, continuous_methods=["jensen_shannon"], chunk_size=ROWS_PER_HOUR,
        **({"thresholds": thresholds} if thresholds else {}))
    calculator.fit(reference)
    result = calculator.calculate(analysis).filter(period="analysis").to_df()
    values = np.stack([result[(c, "jensen_shannon", "value")].to_numpy(float) for c in COLUMNS], axis=1)
    alerts = np.stack([result[(c, "jensen_shannon", "alert")].to_numpy(bool) for c in COLUMNS], axis=1)
    return values, alerts


def first_alert_hours(flags: np.ndarray, after_hours: float) -> float:
    hits = np.flatnonzero(flags)
    hits = hits[(hits + 1) > after_hours]
    return float(hits[0] + 1 - after_hours) if hits.size else float("inf")


def main(seed: int, months: int) -> int:
    warnings.filterwarnings("ignore")
    import nannyml

    rng = np.random.default_rng(seed)
    reference = frame(rng, 7 * 24)
    version = nannyml.__version__
    shifts, runs = (0.25, 0.5), 20

    # Undrifted months: NannyML's own alerts at its defaults, and each month's largest distance.
    alerting, largest = [], []
    for _ in range(months):
        values, alerts = distances(reference, frame(rng, HOURS))
        alerting.append(int(alerts.any(axis=1).sum()))
        largest.append(float(values.max()))
    print(json.dumps({"nannyml": version, "chunks": "1h", "thresholds": "default (mean +- 3 sd)",
                      "case": "undrifted", "Model-months": months,
                      "alerting chunks per month": round(float(np.mean(alerting)), 2),
                      "months with an alert": sum(a > 0 for a in alerting)}), flush=True)
    matched = float(np.quantile(largest, 0.95, method="higher"))
    over = sum(x > matched for x in largest)
    print(json.dumps({"nannyml": version, "chunks": "1h", "thresholds": f"matched: constant {matched:.4f}",
                      "case": "undrifted (the months it was chosen on)", "Model-months": months,
                      "months with an alert": over, "alarm rate per month": round(over / months, 3)}), flush=True)

    # Fresh undrifted months at the matched threshold: does it hold out of sample?
    check = max(20, months // 5)
    fresh = sum(bool(distances(reference, frame(rng, HOURS), matched)[1].any()) for _ in range(check))
    print(json.dumps({"nannyml": version, "chunks": "1h", "thresholds": f"matched: constant {matched:.4f}",
                      "case": "undrifted, fresh months", "Model-months": check, "months with an alert": fresh}),
          flush=True)

    for delta in shifts:
        default_delays, matched_delays = [], []
        for _ in range(runs):
            data = frame(rng, 10 * 24, shift_after_hours=24, delta=delta)
            values, alerts = distances(reference, data)
            default_delays.append(first_alert_hours(alerts[:, 0], 24))
            matched_delays.append(first_alert_hours(values[:, 0] > matched, 24))
        for label, found in (("default (mean +- 3 sd)", default_delays), (f"matched: constant {matched:.4f}",
                                                                           matched_delays)):
            finite = np.array(found)
            print(json.dumps({"nannyml": version, "chunks": "1h", "thresholds": label,
                              "case": f"{delta} sd shift of f0 (abrupt), {runs} runs",
                              "hours to first alert, median / p90": [
                                  float(np.quantile(finite, 0.5, method="inverted_cdf")),
                                  float(np.quantile(finite, 0.9, method="inverted_cdf"))]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100))
