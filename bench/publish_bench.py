"""What the trusted publish step adds to a conversion (issue 32 #7), measured side by side.

Publish now rebuilds the reference profile itself: it reads the sample, runs the ONNX model on it
with onnxruntime and repeats the batching proof, besides checking and copying the files. This
times, per zoo model, the conversion proper (load, convert, parity proof, profile: what the
untrusted step does) and publish on its output, in one run, and prints publish's share.

    python bench/publish_bench.py [MODEL_ID ...]     # default: a few realistic zoo models
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from serin.converters import zoo  # noqa: E402
from serin.converters.conversion import Request, run  # noqa: E402
from serin.converters.publish import SampleSource, publish  # noqa: E402

DEFAULT = ["realistic_random_forest_regressor_deep", "realistic_xgboost_classifier_nan",
           "realistic_lightgbm_classifier_nan", "realistic_imputer_scaler_logistic_nan",
           "realistic_onehot_columns_hgb_classifier"]


def main(ids: list[str]) -> None:
    warnings.simplefilter("ignore")
    print(f"{'model':45} {'rows':>6} {'convert s':>10} {'publish s':>10} {'publish/convert':>16}")
    with tempfile.TemporaryDirectory() as d:
        for model_id in ids:
            entry = zoo.by_id_realistic(model_id) if model_id.startswith("realistic_") else zoo.by_id(model_id)
            artifact, sample, _, frame = entry.materialize(Path(d) / model_id)
            out = Path(d) / model_id / "scratch"
            t0 = time.perf_counter()
            outcome = run(Request(str(artifact), str(sample), out))
            t1 = time.perf_counter()
            assert outcome.report["passed"], outcome.report["reason"]
            publish(out, Path(d) / model_id / "store", artifact, SampleSource(sample))
            t2 = time.perf_counter()
            print(f"{model_id:45} {len(frame):6d} {t1 - t0:10.2f} {t2 - t1:10.2f} {(t2 - t1) / (t1 - t0):16.2f}")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
