"""Evidently's data drift report per 1 h chunk of the bench's streams, for bench/monitoring_bench.py
(run in a Python that has `evidently`; Serin does not depend on it):

    PYTHON bench/monitoring_evidently.py SEED [CHUNKS]

The same world as the bench (bench/monitoring_nannyml.py's frames): 30 N(0, 1) features wobbling
with the hour within Serin's default tolerance, 1,200 rows an hour, a day of the same traffic as the
reference (a week's 201,600 rows made each report take 30 s). Evidently's DataDriftPreset at its
defaults (its per-column method and threshold for this reference size) judges each hourly chunk on
its own, as a scheduled job would. Prints JSON lines: the share of undrifted chunks with a drifted
column, as alerting chunks per month; and for a 0.25 / 0.5 sd shift of f0, the share of shifted
chunks in which f0 is called drifted.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pandas as pd
from monitoring_nannyml import ROWS_PER_HOUR, frame


def judge(reference: pd.DataFrame, chunk: pd.DataFrame) -> tuple[int, bool, set[str]]:
    """(drifted columns, f0 drifted, methods used) for one chunk."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    result = Report([DataDriftPreset()]).run(chunk, reference).dict()["metrics"]
    count = next(m for m in result if m["metric_name"].startswith("DriftedColumnsCount"))
    f0 = next((m for m in result if "ValueDrift" in m["metric_name"] and "column=f0" in m["metric_name"]), None)
    methods = {m["config"]["method"] for m in result if "method" in m.get("config", {})}
    threshold = f0["config"].get("threshold") if f0 else None
    f0_drifted = bool(f0 and threshold is not None and (
        f0["value"] < threshold if "p_value" in str(f0["config"].get("method", "")).lower() or
        "K-S" in str(f0["config"].get("method", "")) else f0["value"] >= threshold))
    return int(count["value"]["count"]), f0_drifted, methods


def main(seed: int, chunks: int) -> int:
    warnings.filterwarnings("ignore")
    import evidently

    rng = np.random.default_rng(seed)
    # A day of traffic as the reference (a week's 201,600 rows took 30 s a report here).
    reference = frame(rng, 24)
    data = frame(rng, chunks)
    alerting, methods = 0, set()
    for i in range(chunks):
        drifted, _, used = judge(reference, data.iloc[i * ROWS_PER_HOUR:(i + 1) * ROWS_PER_HOUR])
        alerting += drifted > 0
        methods |= used
    print(json.dumps({"evidently": evidently.__version__, "chunks": "1h", "reference rows": len(reference),
                      "methods": sorted(methods), "case": "undrifted", "chunks judged": chunks,
                      "chunks with a drifted column": alerting,
                      "alerting chunks per month": round(alerting / chunks * 720, 1)}), flush=True)
    for delta in (0.25, 0.5):
        shifted = frame(rng, 10, shift_after_hours=0, delta=delta)
        flagged = [judge(reference, shifted.iloc[i * ROWS_PER_HOUR:(i + 1) * ROWS_PER_HOUR])[1] for i in range(10)]
        first = next((i + 1 for i, f in enumerate(flagged) if f), None)
        print(json.dumps({"evidently": evidently.__version__, "chunks": "1h", "case": f"{delta} sd shift of f0",
                          "shifted chunks calling f0 drifted": f"{sum(flagged)} of 10",
                          "hours to the first": first}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 60))
