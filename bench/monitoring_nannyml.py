"""NannyML's univariate drift on month-long streams, for bench/monitoring_bench.py (run in a Python
that has `nannyml`; Serin does not depend on it):

    PYTHON bench/monitoring_nannyml.py SEED TMPDIR

The same world as the bench: 30 N(0, 1) features, 100 rows every 5 minutes (1,200 an hour), a
week of the same traffic as the reference; NannyML's defaults for continuous features (Jensen-Shannon distance,
thresholds at the reference chunks' mean +- 3 standard deviations). Prints one JSON line per case:
alerting chunks per undrifted month (any feature), and hours from a shift of one feature to its
first alert, for 1 h and 1 d chunks.
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


def frame(rng: np.random.Generator, hours: int, shift_after_hours: float | None = None,
          delta: float = 0.0) -> pd.DataFrame:
    x = rng.normal(size=(hours * ROWS_PER_HOUR, FEATURES))
    if shift_after_hours is not None:
        x[int(shift_after_hours * ROWS_PER_HOUR):, 0] += delta
    return pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)])


def alerts(reference: pd.DataFrame, analysis: pd.DataFrame, chunk_rows: int) -> np.ndarray:
    """(chunks, features) booleans: NannyML's alert per chunk and feature."""
    import nannyml

    calculator = nannyml.UnivariateDriftCalculator(column_names=list(reference.columns),
                                                   continuous_methods=["jensen_shannon"], chunk_size=chunk_rows)
    calculator.fit(reference)
    result = calculator.calculate(analysis).filter(period="analysis").to_df()
    return np.stack([result[(c, "jensen_shannon", "alert")].to_numpy(bool) for c in reference.columns], axis=1)


def main(seed: int) -> int:
    warnings.filterwarnings("ignore")
    import nannyml

    rng = np.random.default_rng(seed)
    # A week of traffic as the reference: seven daily chunks for the 1 d thresholds, 168 hourly ones.
    reference = frame(rng, 7 * 24)
    for chunk_hours, label in ((1, "1h"), (24, "1d")):
        chunk_rows = chunk_hours * ROWS_PER_HOUR
        months = 3
        alerting = [int(alerts(reference, frame(rng, HOURS), chunk_rows).any(axis=1).sum()) for _ in range(months)]
        print(json.dumps({"nannyml": nannyml.__version__, "chunks": label, "case": "undrifted",
                          "Model-months": months, "alerting chunks per month": float(np.mean(alerting)),
                          "months with an alert": sum(a > 0 for a in alerting)}))
        for delta in (0.25, 0.5):
            runs, delays = 3, []
            for _ in range(runs):
                flags = alerts(reference, frame(rng, 10 * 24, shift_after_hours=24, delta=delta), chunk_rows)
                shifted = np.flatnonzero(flags[:, 0])
                after = shifted[shifted * chunk_hours >= 24]
                delays.append(float((after[0] + 1) * chunk_hours - 24) if after.size else float("inf"))
            print(json.dumps({"nannyml": nannyml.__version__, "chunks": label, "case": f"{delta} sd shift of f0",
                              "hours to first alert (runs)": delays}))
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
