"""NannyML's CBPE on windows written by bench/quality_gate.py, for a side-by-side comparison.

Run by quality_gate.py with a Python that has `nannyml` installed (Serin does not depend on it):
    PYTHON bench/cbpe_nannyml.py DATA.npz
The file holds the reference sample (`ref_proba`: probability of class 1, `ref_pred`, `ref_true`)
and the windows (`win_proba`, `win_pred`: windows x rows). Prints one JSON line per window with
NannyML's estimated accuracy (binary CBPE, one chunk per window, calibrated on the reference).
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pandas as pd


def main(path: str) -> int:
    warnings.filterwarnings("ignore")
    import nannyml

    data = np.load(path)
    rows = data["win_proba"].shape[1]
    reference = pd.DataFrame({"y_pred_proba": data["ref_proba"], "y_pred": data["ref_pred"],
                              "y_true": data["ref_true"]})
    analysis = pd.DataFrame({"y_pred_proba": data["win_proba"].ravel(), "y_pred": data["win_pred"].ravel()})
    estimator = nannyml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true",
                             problem_type="classification_binary", metrics=["accuracy"], chunk_size=rows)
    estimator.fit(reference)
    frame = estimator.estimate(analysis).filter(period="analysis").to_df()
    values = frame[("accuracy", "value")].to_numpy()
    for value in values[: data["win_proba"].shape[0]]:
        print(json.dumps({"estimated_accuracy": float(value)}), flush=True)
    print(json.dumps({"nannyml": nannyml.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
