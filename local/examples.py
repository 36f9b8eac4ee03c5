"""The artifacts behind `manifests/examples/platform/`: one small model per format, trained here
(no downloads), written where those examples point on the local platform's `sources` claim, so
that `kubectl apply -f manifests/examples/platform/` works as it is after `serin dev up --cluster`.

Each example is the platform twin of one in `manifests/examples/` (same name, format and rollout
settings; a pvc://sources URI instead of object storage). tests/cluster/test_dev_cluster.py applies
every one of them and waits for each to serve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from serin.local import demo_models
from serin.local.controlplane import REPO_ROOT

PLATFORM_EXAMPLES = REPO_ROOT / "manifests" / "examples" / "platform"
# Where under the sources claim each example's artifact and sample go: sources/examples/NAME/v1/.
PREFIX = "examples"


def _rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = demo_models.production_rows(1500, seed=seed)
    return x, demo_models.true_labels(x)


def _sample(directory: Path, x: np.ndarray) -> None:
    demo_models._write_sample(directory / "sample.csv", x)


def _fraud(directory: Path) -> None:
    demo_models.sklearn_version(directory, seed=1)


def _churn(directory: Path) -> None:
    import xgboost

    x, y = _rows(2)
    booster = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(x, y).get_booster()
    booster.save_model(str(directory / "model.json"))  # the native format the example names
    _sample(directory, x)


def _demand(directory: Path) -> None:
    import lightgbm

    x, _ = _rows(3)
    demand = 10 + 3 * x[:, 0] - 2 * x[:, 1] + x[:, 2] * x[:, 3]
    model = lightgbm.LGBMRegressor(n_estimators=30, num_leaves=8, verbose=-1).fit(x, demand)
    model.booster_.save_model(str(directory / "model.txt"))
    _sample(directory, x)


def _ranker(directory: Path) -> None:
    import onnx
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor

    x, _ = _rows(4)
    score = x[:, 0] - 0.5 * x[:, 2]
    model = GradientBoostingRegressor(n_estimators=20, max_depth=3).fit(x, score)
    onnx.save(to_onnx(model, x[:1], target_opset=17), str(directory / "model.onnx"))
    _sample(directory, x)


WRITERS = {"fraud": (_fraud, "model.joblib"), "churn": (_churn, "model.json"),
           "demand": (_demand, "model.txt"), "ranker": (_ranker, "model.onnx")}


def stage(sources: Path) -> list[str]:
    """Writes every example's artifact and sample under `sources` (the claim's directory on the
    host), keeping what is already there; returns the examples' names."""
    for name, (write, artifact) in WRITERS.items():
        directory = sources / PREFIX / name / "v1"
        if (directory / artifact).exists() and (directory / "sample.csv").exists():
            continue
        directory.mkdir(parents=True, exist_ok=True)
        write(directory)
        for path in directory.iterdir():
            path.chmod(0o644)  # read by the conversion Pod's non-root user
    return list(WRITERS)
