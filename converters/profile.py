"""The reference profile (docs/formats.md, profile.json version 1) computed from the sample rows.

Numeric values are binned as onnxruntime sees them (float32 inputs are rounded to float32
first), so the runtime's drift monitor bins a replay of the sample exactly like this profile.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from serin.converters.registry import CLASSIFICATION, Outputs
from serin.converters.sample import Sample

PROFILE_VERSION = 1
MAX_CATEGORIES = 50  # rarer categories are summed into "other"


def numeric_bins(values: np.ndarray, bins: int) -> dict[str, list[float]]:
    """Interior cut points and the share of values per bin (`searchsorted(cuts, x, "right")`).

    Few distinct values (flags, counts): one bin per value, cut halfway between neighbours, so a
    value never sits on a cut and float32/float64 rounding cannot move it across one. Otherwise
    quantile cuts, de-duplicated (ties at a quantile would make empty, meaningless bins).
    """
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return {"cuts": [], "proportions": [0.0]}
    distinct = np.unique(values)
    if len(distinct) <= bins:
        cuts = (distinct[:-1] + distinct[1:]) / 2.0
    else:
        cuts = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(cuts, values, side="right"), minlength=len(cuts) + 1)
    return {"cuts": [float(c) for c in cuts],
            "proportions": [float(c) for c in counts / len(values)]}


def categorical_shares(values: Any) -> dict[str, Any]:
    shares = values.astype(str).value_counts(normalize=True, dropna=False)
    top = shares.iloc[:MAX_CATEGORIES]
    return {"categories": {str(k): float(v) for k, v in top.items()},
            "other": max(0.0, float(1.0 - top.sum()))}


def class_key(label: Any) -> str:
    """Classes as strings: 1, 1.0 and np.int64(1) all become "1" (ONNX labels are int64)."""
    if isinstance(label, (int, float, np.integer, np.floating)) and float(label).is_integer():
        return str(int(label))
    return str(label)


MAX_CALIBRATION_KNOTS = 64


def performance(onnx_out: Outputs, keys: list[str], labels: list[str], truth: np.ndarray | None) -> dict[str, Any]:
    """What the label-free accuracy estimate needs (runtime/estimate.py), and the reference
    performance when the sample has true labels.

    Confidence-based performance estimation (NannyML's CBPE): a row's chance of being right is
    the calibrated probability of its predicted class, so the expected accuracy of a window is the
    mean of those. Calibration is isotonic regression of "was right" on that probability over the
    reference sample, as CBPE's; without true labels the probabilities are taken as calibrated."""
    out: dict[str, Any] = {"rows": len(labels)}
    index = {k: i for i, k in enumerate(keys)}
    probabilities = np.asarray(onnx_out.scores, dtype=np.float64)
    confidence = None
    if onnx_out.score_kind == "probabilities" and probabilities.ndim == 2 and probabilities.shape[1] == len(keys):
        columns = np.fromiter((index.get(label, -1) for label in labels), dtype=np.int64, count=len(labels))
        if (columns >= 0).all():
            confidence = probabilities[np.arange(len(labels)), columns]
            out["confidence"] = float(confidence.mean())
    if truth is None:
        return out
    correct = np.asarray([class_key(t) == label for t, label in zip(truth.tolist(), labels, strict=True)],
                         dtype=np.float64)
    out["accuracy"] = float(correct.mean())
    if confidence is not None and len(labels) >= 20:
        from sklearn.isotonic import IsotonicRegression

        def isotonic() -> IsotonicRegression:
            return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")

        # Calibrate only where it helps: a model trained on log loss is often calibrated already,
        # and an isotonic map fitted on a thousand rows adds noise of its own. Out-of-fold squared
        # error of the calibrated chance of being right against the raw one decides.
        folds = np.arange(len(labels)) % 5
        calibrated = np.empty_like(confidence)
        for k in range(5):
            fitted = isotonic().fit(confidence[folds != k], correct[folds != k])
            calibrated[folds == k] = fitted.predict(confidence[folds == k])
        raw_error = float(((confidence - correct) ** 2).mean())
        calibrated_error = float(((calibrated - correct) ** 2).mean())
        out["calibrationError"] = {"raw": raw_error, "calibrated": calibrated_error}
        if calibrated_error >= raw_error:
            return out  # the probabilities are taken as they are
        iso = isotonic().fit(confidence, correct)
        xs, ys = np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64)
        if len(xs) > MAX_CALIBRATION_KNOTS:  # a step function with many steps: keep its shape
            xs = np.quantile(confidence, np.linspace(0.0, 1.0, MAX_CALIBRATION_KNOTS))
            ys = iso.predict(xs)
        out["calibration"] = {"confidence": [float(x) for x in xs], "accuracy": [float(y) for y in ys]}
    return out


def build(sample: Sample, onnx_out: Outputs, task: str, classes: list[Any] | None,
          output_name: str, bins: int = 10, truth: np.ndarray | None = None) -> dict[str, Any]:
    features: list[dict[str, Any]] = []
    for spec in sample.inputs:
        for column_index, column in enumerate(spec.columns):
            series = sample.frame[column]
            entry: dict[str, Any] = {"name": str(column), "input": spec.name,
                                     "column": column_index}
            if spec.dtype == "string":
                entry.update(kind="categorical", **categorical_shares(series))
            else:
                values = series.to_numpy(dtype=np.float64)
                if spec.dtype == "float32":
                    values = values.astype(np.float32).astype(np.float64)
                entry.update(kind="numeric", **numeric_bins(values, bins))
            features.append(entry)

    prediction: dict[str, Any]
    if task == CLASSIFICATION:
        assert onnx_out.labels is not None
        labels = [class_key(v) for v in onnx_out.labels]
        keys = [class_key(c) for c in classes] if classes else sorted(set(labels))
        counts = {k: 0 for k in keys}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        prediction = {"kind": "classification", "output": output_name, "classes": list(counts),
                      "proportions": [c / len(labels) for c in counts.values()],
                      "performance": performance(onnx_out, list(counts), labels, truth)}
    else:
        values = np.asarray(onnx_out.scores, dtype=np.float64).reshape(len(sample.frame), -1)[:, 0]
        prediction = {"kind": "regression", "output": output_name, **numeric_bins(values, bins)}
        if truth is not None:
            error = values - np.asarray(truth, dtype=np.float64)
            prediction["performance"] = {"rows": len(values), "mae": float(np.abs(error).mean()),
                                         "rmse": float(np.sqrt((error**2).mean()))}

    return {
        "version": PROFILE_VERSION,
        "rows": sample.rows,
        "inputs": [{"name": s.name, "dtype": s.dtype, "shape": [None, len(s.columns)]}
                   for s in sample.inputs],
        "features": features,
        "prediction": prediction,
    }
