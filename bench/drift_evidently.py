"""Evidently's default data drift verdicts on windows written by bench/drift_power.py.

Run by drift_power.py with a Python that has `evidently` installed (Serin does not depend on it):
    PYTHON bench/drift_evidently.py WINDOWS.npz
The file holds `reference` (rows x features) and `windows` (windows x rows x features). Prints one
JSON line per window: how many columns Evidently's DataDriftPreset (its default per-column tests
and thresholds) calls drifted, and its dataset-drift verdict (at least half the columns).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset


def main(path: str) -> int:
    data = np.load(path)
    reference, windows = data["reference"], data["windows"]
    columns = [f"f{i}" for i in range(reference.shape[1])]
    ref = pd.DataFrame(reference.astype(np.float64), columns=columns)
    methods: set[str] = set()
    for window in windows:
        result = Report([DataDriftPreset()]).run(pd.DataFrame(window.astype(np.float64), columns=columns), ref)
        metrics = result.dict()["metrics"]
        count = next(m for m in metrics if m["metric_name"].startswith("DriftedColumnsCount"))
        methods |= {m["config"]["method"] for m in metrics if "method" in m.get("config", {})}
        print(json.dumps({"drifted_columns": int(count["value"]["count"]),
                          "dataset_drift": count["value"]["share"] >= 0.5}), flush=True)
    print(json.dumps({"methods": sorted(methods)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
