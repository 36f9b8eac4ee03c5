"""Builds small Serin model directories (model.onnx + profile.json per docs/formats.md) for the
runtime tests and the benchmark, with skl2onnx on tiny scikit-learn models. Independent of
serin.converters on purpose: the runtime is tested against the contract, not the converter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

BINS = 10


def numeric_feature(name: str, values: np.ndarray, input_: str, column: int) -> dict[str, Any]:
    cuts = np.unique(np.quantile(values, np.linspace(0, 1, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
    return {"name": name, "input": input_, "column": column, "kind": "numeric",
            "cuts": cuts.tolist(), "proportions": (counts / counts.sum()).tolist()}


def categorical_feature(name: str, values: np.ndarray, input_: str) -> dict[str, Any]:
    cats, counts = np.unique(values.astype(str), return_counts=True)
    shares = counts / counts.sum()
    return {"name": name, "input": input_, "column": 0, "kind": "categorical",
            "categories": {str(c): float(p) for c, p in zip(cats, shares, strict=True)},
            "other": 0.0}


def _write(dir_: Path, onx: Any, profile: dict[str, Any] | None) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / "model.onnx").write_bytes(onx.SerializeToString())
    if profile is not None:
        (dir_ / "profile.json").write_text(json.dumps(profile, indent=1))
    return dir_


def _to_onnx(est: Any, features: int, options: dict[str, Any] | None) -> Any:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    # One float matrix input named "input", as the converters write numeric models.
    types = [("input", FloatTensorType([None, features]))]
    return to_onnx(est, initial_types=types, options=options, target_opset=17)


def reference_rows(n: int, features: int = 4, seed: int = 0) -> np.ndarray:
    """The reference distribution the numeric models are trained and profiled on."""
    return np.random.default_rng(seed).normal(size=(n, features)).astype(np.float32)


def numeric_classifier(
    dir_: Path, *, features: int = 4, trees: int = 5, depth: int = 4, rows: int = 2000,
    with_profile: bool = True, allow_nan: bool = False,
) -> Path:
    """RandomForest on `features` float32 columns, one input "input" [N, features]."""
    from sklearn.ensemble import RandomForestClassifier

    x = reference_rows(rows, features)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    clf = RandomForestClassifier(n_estimators=trees, max_depth=depth, random_state=0).fit(x, y)
    onx = _to_onnx(clf, features, {"zipmap": False})
    profile = {
        "version": 1, "rows": rows,
        "inputs": [{"name": onx.graph.input[0].name, "dtype": "float32", "shape": [None, features],
                    **({"allow_nan": True} if allow_nan else {})}],
        "features": [numeric_feature(f"f{i}", x[:, i], onx.graph.input[0].name, i)
                     for i in range(features)],
        "prediction": {"kind": "classification", "output": "label", "classes": ["0", "1"],
                       "proportions": [float((y == 0).mean()), float((y == 1).mean())]},
    }
    return _write(dir_, onx, profile if with_profile else None)


def sklearn_forest(features: int, trees: int, depth: int, rows: int = 4000) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    x = reference_rows(rows, features)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64)
    return RandomForestClassifier(n_estimators=trees, max_depth=depth, random_state=0).fit(x, y), x


def sklearn_mlp(features: int, hidden: tuple[int, ...], rows: int = 4000) -> Any:
    """A slow model for the benchmark: one row costs ~0.1 ms at (1024, 1024), and batches pay
    (the weights are read once per run, not once per row)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x = reference_rows(rows, features)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 3 epochs: accurate enough for a bench
        return MLPClassifier(hidden_layer_sizes=hidden, max_iter=3, random_state=0).fit(x, y), x


def forest_dir(dir_: Path, clf: Any, x: np.ndarray) -> Path:
    """Any scikit-learn classifier on a float matrix (the name is historical)."""
    onx = _to_onnx(clf, x.shape[1], {"zipmap": False})
    name = onx.graph.input[0].name
    profile = {
        "version": 1, "rows": len(x),
        "inputs": [{"name": name, "dtype": "float32", "shape": [None, x.shape[1]]}],
        "features": [numeric_feature(f"f{i}", x[:, i], name, i) for i in range(x.shape[1])],
        "prediction": {"kind": "classification", "output": "label", "classes": ["0", "1"],
                       "proportions": [0.5, 0.5]},
    }
    return _write(dir_, onx, profile)


def regressor(dir_: Path, *, features: int = 3, rows: int = 500) -> Path:
    from sklearn.linear_model import LinearRegression

    x = reference_rows(rows, features, seed=1)
    y = x @ np.arange(1, features + 1, dtype=np.float32)
    reg = LinearRegression().fit(x, y)
    onx = _to_onnx(reg, features, None)
    name = onx.graph.input[0].name
    out = onx.graph.output[0].name
    profile = {
        "version": 1, "rows": rows,
        "inputs": [{"name": name, "dtype": "float32", "shape": [None, features]}],
        "features": [numeric_feature(f"x{i}", x[:, i], name, i) for i in range(features)],
        "prediction": {"kind": "regression", "output": out, "cuts": [-2.0, 0.0, 2.0],
                       "proportions": [0.25, 0.25, 0.25, 0.25]},
    }
    return _write(dir_, onx, profile)


def mixed_classifier(dir_: Path, rows: int = 400) -> Path:
    """A mixed-type pipeline: inputs age, income (float [N,1]) and color (string [N,1])."""
    import pandas as pd
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({
        "age": rng.normal(40, 10, rows).astype(np.float32),
        "income": rng.normal(50, 15, rows).astype(np.float32),
        "color": rng.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2]),
    })
    y = ((frame["age"] > 40) ^ (frame["color"] == "red")).astype(np.int64)
    pipe = Pipeline([
        ("prep", ColumnTransformer([
            ("num", StandardScaler(), ["age", "income"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["color"]),
        ])),
        ("clf", LogisticRegression()),
    ]).fit(frame, y)
    types = [("age", FloatTensorType([None, 1])), ("income", FloatTensorType([None, 1])),
             ("color", StringTensorType([None, 1]))]
    onx = to_onnx(pipe, initial_types=types, options={"zipmap": False}, target_opset=17)
    profile = {
        "version": 1, "rows": rows,
        "inputs": [{"name": "age", "dtype": "float32", "shape": [None, 1]},
                   {"name": "income", "dtype": "float32", "shape": [None, 1]},
                   {"name": "color", "dtype": "string", "shape": [None, 1]}],
        "features": [numeric_feature("age", frame["age"].to_numpy(), "age", 0),
                     numeric_feature("income", frame["income"].to_numpy(), "income", 0),
                     categorical_feature("color", frame["color"].to_numpy(), "color")],
        "prediction": {"kind": "classification", "output": "label", "classes": ["0", "1"],
                       "proportions": [0.5, 0.5]},
    }
    return _write(dir_, onx, profile)
