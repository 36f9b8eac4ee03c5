"""Serin's HistGradientBoosting converter (serin.converters.hgb) against scikit-learn, row by row.

Rows are built on and one float64 ulp either side of the model's own thresholds: the values a
float32 graph sends down the other branch. Each test also runs through the whole conversion
(`convert` fixture) where that adds something: the report, the float64 inputs, the refusal text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from serin.converters import hgb
from serin.converters.parity import session
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

Convert = Callable[..., Any]
RNG = np.random.default_rng(0)


def onnx_graph(model: Any, width: int, double: bool = True) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    hgb.register()
    kind = DoubleTensorType if double else FloatTensorType
    options = {id(model): {"zipmap": False}} if hasattr(model, "classes_") else None
    return convert_sklearn(model, initial_types=[("input", kind([None, width]))],
                           target_opset={"": 17, "ai.onnx.ml": 3}, options=options)


def run(model: Any, x: np.ndarray, double: bool = True) -> list[np.ndarray]:
    graph = onnx_graph(model, x.shape[1], double)
    return list(session(graph.SerializeToString()).run(
        None, {"input": x.astype(np.float64 if double else np.float32)}))


def on_thresholds(model: Any, base: np.ndarray) -> np.ndarray:
    """Rows of `base` with one feature set on a numeric threshold, or one ulp above or below."""
    rows = []
    for predictors in model._predictors[:20]:
        for node in predictors[0].nodes:
            if node["is_leaf"] or node["is_categorical"] or not np.isfinite(node["num_threshold"]):
                continue
            for value in (node["num_threshold"], np.nextafter(node["num_threshold"], np.inf),
                          np.nextafter(node["num_threshold"], -np.inf)):
                row = base[len(rows) % len(base)].copy()
                row[node["feature_idx"]] = value
                rows.append(row)
    return np.asarray(rows)


def regression_data(n: int = 1500, features: int = 12) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.normal(size=(n, features))
    y = x[:, 0] * 30 + np.sin(x[:, 1] * 3) * 20 + x[:, 2] * x[:, 3] * 10 + RNG.normal(size=n)
    x[RNG.random(x.shape) < 0.05] = np.nan
    return x, y


def test_regressor_is_exact_on_and_beside_every_threshold() -> None:
    x, y = regression_data()
    model = HistGradientBoostingRegressor(max_iter=100).fit(x, y)
    rows = on_thresholds(model, x[:50])
    assert len(rows) > 500
    native = model.predict(rows)
    served = run(model, rows)[0].ravel()
    np.testing.assert_allclose(served, native, rtol=1e-6, atol=1e-4)
    # The same trees fed float32 inputs send some of these rows the other way: why the graph
    # takes float64 (and what skl2onnx's float32 thresholds did to every row near one).
    rounded = run(model, rows, double=False)[0].ravel()
    assert (np.abs(rounded - native) > 1e-3).sum() > 10


def test_classifier_probabilities_and_labels_binary_and_multiclass() -> None:
    x, y = regression_data()
    for classes in (np.array([0, 1]), np.array(["low", "mid", "high"])):
        target = classes[np.digitize(y, np.quantile(y, np.linspace(0, 1, len(classes) + 1)[1:-1]))]
        model = HistGradientBoostingClassifier(max_iter=60).fit(x, target)
        rows = np.vstack([on_thresholds(model, x[:30]), x[:200]])
        labels, proba = run(model, rows)
        np.testing.assert_allclose(proba, model.predict_proba(rows), atol=1e-6)
        assert proba.dtype == np.float64  # the declared output type of a float64 graph
        assert [str(v) for v in labels] == [str(v) for v in model.predict(rows)]


def test_native_categories_with_gaps_missing_negative_and_unknown_values() -> None:
    n = 2000
    x = RNG.normal(size=(n, 4))
    x[:, 0] = RNG.choice([2.0, 3.0, 7.0, 11.0, 40.0], n)  # category values, not codes
    x[:, 1] = RNG.choice([0.0, 1.0, 2.0, np.nan], n)
    y = np.where(np.isin(x[:, 0], [3.0, 40.0]), 50.0, 0.0) + np.nan_to_num(x[:, 1]) * 7 + x[:, 2]
    for make in (lambda: HistGradientBoostingRegressor(max_iter=80, categorical_features=[0, 1]),
                 lambda: HistGradientBoostingClassifier(max_iter=80, categorical_features=[0, 1])):
        model = make()
        model.fit(x, y if isinstance(model, HistGradientBoostingRegressor) else (y > 20).astype(int))
        probe = x[:400].copy()
        probe[:40, 0] = 5.0  # never seen in training: goes where missing values go
        probe[40:80, 0] = np.nan
        probe[80:120, 1] = -1.0  # negative: treated as missing by scikit-learn
        if isinstance(model, HistGradientBoostingRegressor):
            np.testing.assert_allclose(run(model, probe)[0].ravel(), model.predict(probe),
                                       rtol=1e-6, atol=1e-4)
        else:
            labels, proba = run(model, probe)
            np.testing.assert_allclose(proba, model.predict_proba(probe), atol=1e-6)
            assert (labels == model.predict(probe)).all()


def test_poisson_regressor_serves_counts_not_their_logarithm() -> None:
    x, y = regression_data()
    counts = RNG.poisson(np.exp(y / (2 * y.std())))
    model = HistGradientBoostingRegressor(loss="poisson", max_iter=60).fit(x, counts)
    served = run(model, x[:300])[0].ravel()
    np.testing.assert_allclose(served, model.predict(x[:300]), rtol=1e-6)
    assert served.min() > 0


def test_string_categories_are_refused_with_the_pipeline_that_works(tmp_path: Path,
                                                                   convert: Convert) -> None:
    frame = pd.DataFrame({"plan": RNG.choice(["free", "pro"], 300), "usage": RNG.normal(size=300)})
    frame["plan"] = frame["plan"].astype("category")
    model = HistGradientBoostingClassifier(max_iter=10).fit(frame, (frame["usage"] > 0).astype(int))
    joblib.dump(model, tmp_path / "m.joblib")
    frame.head(50).to_csv(tmp_path / "s.csv", index=False)
    outcome = convert(tmp_path / "m.joblib", tmp_path / "s.csv", out=tmp_path / "out")
    assert outcome.exit_code != 0
    reason = outcome.report["reason"]
    assert "non-numeric categories" in reason and "OrdinalEncoder" in reason, reason
    assert not (tmp_path / "out" / "model.onnx").exists()


@pytest.mark.parametrize("nan", [0.0, 0.05])
def test_whole_conversion_of_a_pipeline_takes_float64_and_passes(nan: float, tmp_path: Path,
                                                                convert: Convert) -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = regression_data()
    x = np.where(np.isnan(x), np.nan if nan else 0.0, x)
    model = make_pipeline(SimpleImputer(), StandardScaler(),
                          HistGradientBoostingRegressor(max_iter=100)).fit(x, y)
    frame = pd.DataFrame(np.vstack([x[:100], x[-100:]]), columns=[f"c{i}" for i in range(12)])
    joblib.dump(model, tmp_path / "m.joblib")
    frame.to_csv(tmp_path / "s.csv", index=False)
    outcome = convert(tmp_path / "m.joblib", tmp_path / "s.csv", out=tmp_path / "out")
    assert outcome.exit_code == 0, outcome.report["reason"]
    assert outcome.report["inputs"] == "input:double[12]"
    assert outcome.report["parity"]["mismatched_rows"] == 0
