"""The parity proof: native and onnxruntime predictions on the same rows, compared.

Rules (docs/converters.md, "Tolerances"):
- classifiers: labels must agree on at least `label_agreement` of the rows; on the rows whose
  labels agree, probabilities must be within `absolute` (decision scores: absolute + relative).
- regressors: every value within `absolute + relative * scale`, scale = max(|native|, mean
  |native| over the sample): onnxruntime computes in float32, so large targets differ by ~1e-6
  relative, not absolute.
Mismatches are counted and reported row by row, never hidden by loosening a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from serin.converters.registry import CLASSIFICATION, Outputs


@dataclass(frozen=True)
class Tolerance:
    absolute: float = 1e-4
    relative: float = 1e-3
    label_agreement: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return {"absolute": self.absolute, "relative": self.relative,
                "label_agreement": self.label_agreement}


@dataclass
class Parity:
    passed: bool
    label_agreement: float | None
    max_abs_diff: float
    max_rel_diff: float
    mismatched_rows: int
    tolerance: Tolerance
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    rows: int = 0
    # The rows furthest off, worst first: what a refused conversion would have served.
    worst: list[dict[str, Any]] = field(default_factory=list)
    # The loosest setting each tolerance would need for this sample to pass (None: as it is).
    would_pass_with: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"label_agreement": self.label_agreement, "max_abs_diff": self.max_abs_diff,
                "max_rel_diff": self.max_rel_diff, "mismatched_rows": self.mismatched_rows,
                "rows_off_share": (round(self.mismatched_rows / self.rows, 6) if self.rows
                                   else None),
                "worst_rows": self.worst, "tolerance": self.tolerance.as_dict()}


def session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own warnings would break the one-line stderr
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def run_onnx(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(o) for o in session(model_bytes).run(None, feeds)]


BATCH_CHECK_ROWS = 64


def batching(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """Whether the model's rows are independent: the first BATCH_CHECK_ROWS rows of the sample
    run one by one and as one batch give the same outputs (floats within float32 rounding; the
    kernels for one row and for many may sum in another order). The runtime batches requests
    that arrive together only for such a model (serin.runtime.batching)."""
    n = min(BATCH_CHECK_ROWS, min(len(v) for v in feeds.values()))
    sess = session(model_bytes)
    head = {name: value[:n] for name, value in feeds.items()}
    together = [np.asarray(o) for o in sess.run(None, head)]
    alone = [[np.asarray(o) for o in sess.run(None, {k: v[i:i + 1] for k, v in head.items()})]
             for i in range(n)]
    worst = 0.0
    for k, batch_out in enumerate(together):
        if batch_out.ndim == 0 or batch_out.shape[0] != n:
            return {"rowsIndependent": False, "rows": n,
                    "reason": f"output {k} has shape {list(batch_out.shape)}, not one entry per row"}
        rows = np.concatenate([a[k] for a in alone])
        if rows.shape != batch_out.shape:
            return {"rowsIndependent": False, "rows": n,
                    "reason": f"output {k}: shape {list(rows.shape)} row by row, "
                              f"{list(batch_out.shape)} as a batch"}
        if batch_out.dtype.kind == "f":
            a, b = rows.astype(np.float64), batch_out.astype(np.float64)
            with np.errstate(invalid="ignore"):
                diff = np.where(a == b, 0.0, np.abs(a - b))  # equal infinities: 0, not NaN
            same = (diff <= 1e-6 + 1e-5 * np.abs(b)) | (np.isnan(a) & np.isnan(b))
            if not same.all():
                worst_diff = float(np.nanmax(np.where(same, 0.0, diff), initial=0.0))
                return {"rowsIndependent": False, "rows": n,
                        "reason": f"output {k} differs by up to {worst_diff:.3g}"}
            worst = max(worst, float(np.nanmax(np.where(same & ~np.isnan(diff), diff, 0.0),
                                               initial=0.0)))
        elif not np.array_equal(rows, batch_out):
            return {"rowsIndependent": False, "rows": n, "reason": f"output {k} differs"}
    return {"rowsIndependent": True, "rows": n, "maxAbsDiff": worst}


def onnx_outputs(raw: list[np.ndarray], task: str) -> Outputs:
    if task == CLASSIFICATION:
        return Outputs(raw[0].ravel(), raw[1].astype(np.float64), "probabilities")
    values = raw[0].astype(np.float64)
    return Outputs(None, values.ravel() if values.ndim == 2 and values.shape[1] == 1 else values,
                   "values")


def _align_scores(native: np.ndarray, onnx: np.ndarray) -> np.ndarray:
    """ONNX gives [N, 2] scores (or [N, 1]) where a binary decision_function gives [N]."""
    if native.ndim == 1 and onnx.ndim == 2:
        return onnx[:, -1] if onnx.shape[1] in (1, 2) else onnx
    return onnx


def labels_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.asarray(a.astype(np.float64) == b.astype(np.float64))
    except (TypeError, ValueError):  # string labels
        return np.asarray(a.astype(str) == b.astype(str))


def compare(native: Outputs, onnx: Outputs, task: str, tol: Tolerance,
            classes: list[Any] | None = None) -> Parity:
    """`classes`: the label of each probability column, to tell a tie-break from a flip."""
    a = native.scores
    b = _align_scores(a, onnx.scores)
    n = len(a)
    if a.shape != b.shape:
        return Parity(False, None, float("nan"), float("nan"), n, tol,
                      reason=f"parity failed: output shapes differ (native {a.shape}, ONNX {b.shape})")
    diff = np.abs(a - b)
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, diff)
    # float32 rounding grows with the size of the terms summed, not with the row's result: a
    # prediction that cancels to ~0 in a model whose outputs are ~1e3 still carries ~1e-4 of
    # error. Relative error is measured against max(|value|, mean |value| over the sample).
    scale = np.maximum(np.abs(a), np.nanmean(np.abs(a)) if np.isfinite(a).any() else 0.0)
    rel = diff / np.maximum(scale, np.finfo(np.float32).tiny)
    rel = np.where(both_nan, 0.0, rel)
    max_abs = float(np.nanmax(diff, initial=0.0)) if not np.isnan(diff).all() else float("nan")
    max_rel = float(np.nanmax(rel, initial=0.0)) if not np.isnan(rel).all() else float("nan")
    per_row = diff.reshape(n, -1)
    nan_rows = np.isnan(per_row).any(axis=1)  # NaN on one side only
    if native.score_kind == "probabilities":
        allowed = np.full_like(per_row, tol.absolute)
    else:  # unbounded decision scores and regression values: relative matters
        allowed = tol.absolute + tol.relative * scale.reshape(n, -1)
    values_ok = ~nan_rows & np.all(np.nan_to_num(per_row, nan=np.inf) <= allowed, axis=1)

    if task == CLASSIFICATION:
        assert native.labels is not None and onnx.labels is not None
        label_ok = labels_equal(native.labels, onnx.labels)
        ties = _tie_broken_otherwise(native, onnx, values_ok, classes) & ~label_ok
        label_ok |= ties
        tied_rows = int(ties.sum())
        agreement = float(label_ok.mean())
        # A flipped label implies a large probability gap on that row: it is judged by the label
        # agreement tolerance alone, so label_agreement < 1.0 is a meaningful setting.
        bad_values = label_ok & ~values_ok
        row_ok = label_ok & values_ok
        passed = agreement >= tol.label_agreement and not bad_values.any()
    else:
        agreement, label_ok, bad_values, row_ok = None, np.ones(n, bool), ~values_ok, values_ok
        passed = bool(values_ok.all())
        tied_rows = 0
    mismatched = int((~row_ok).sum())
    result = Parity(passed, agreement, max_abs, max_rel, mismatched, tol, rows=n,
                    worst=_worst_rows(native, onnx, b, per_row, ~row_ok))
    if mismatched:
        rows = ", ".join(str(i) for i in np.flatnonzero(~row_ok)[:10])
        result.warnings.append(f"{mismatched} of {n} rows differ beyond tolerance (rows {rows}"
                               f"{', ...' if mismatched > 10 else ''})")
    if tied_rows:
        result.warnings.append(
            f"{tied_rows} of {n} rows have tied top probabilities (within {TIE:g}) and ONNX picked "
            "another of the tied classes than the native predict: counted as agreeing")
    flipped = int((~label_ok).sum())
    if flipped:
        result.warnings.append(
            f"{flipped} of {n} rows predict a different label in ONNX: onnxruntime compares in "
            "float32, so rows near a decision threshold can flip (docs/converters.md, float32)"
        )
    if not passed:
        problems = []
        if agreement is not None and agreement < tol.label_agreement:
            problems.append(f"label agreement {agreement:.4g} < {tol.label_agreement:g} "
                            f"({flipped} of {n} rows)")
        if bad_values.any():
            what = "probabilities" if native.score_kind == "probabilities" else "values"
            limit = (f"{tol.absolute:g}" if native.score_kind == "probabilities"
                     else f"{tol.absolute:g} + {tol.relative:g}*scale")
            problems.append(f"{what} differ by up to {max_abs:.3g} (> {limit}) on "
                            f"{int(bad_values.sum())} of {n} rows")
        result.would_pass_with = _would_pass_with(native.score_kind, per_row[label_ok], scale.reshape(
            n, -1)[label_ok], agreement, tol)
        advice = ", ".join(f"{k}: {v:.3g}" for k, v in result.would_pass_with.items())
        worst = result.worst[0] if result.worst else None
        if worst is not None:
            problems.append(f"worst row {worst['row']}: native {_brief(worst['native'])}, ONNX "
                            f"{_brief(worst['onnx'])}")
        result.reason = "parity failed: " + "; ".join(problems or ["outputs differ"])
        if advice:
            result.reason += f" (this sample passes with spec.conversion.tolerance {advice})"
    return result


WORST_ROWS = 5
# Two classes whose probabilities are this close are tied: float32 sums of a forest's votes differ
# from float64 ones by ~1e-7, so either label is the model's answer (a forest of 100 trees split
# 50/50 is the common case).
TIE = 1e-6


def _tie_broken_otherwise(native: Outputs, onnx: Outputs, values_ok: np.ndarray,
                          classes: list[Any] | None) -> np.ndarray:
    """Rows where the native probabilities tie at the top and ONNX's label is one of the tied
    classes' (its probabilities agreeing within tolerance)."""
    n = len(native.scores)
    out = np.zeros(n, dtype=bool)
    if native.score_kind != "probabilities" or native.scores.ndim != 2 or onnx.labels is None:
        return out
    proba = native.scores
    top = np.nanmax(proba, axis=1, keepdims=True)
    tied = np.abs(proba - top) <= TIE  # [N, K]: which classes share the top
    if classes is None or len(classes) != proba.shape[1]:
        return out
    order = np.asarray(classes)
    for i in np.flatnonzero(values_ok & (tied.sum(axis=1) > 1)):
        picked = np.flatnonzero(labels_equal(order, np.repeat(onnx.labels[i:i + 1], len(order))))
        out[i] = bool(picked.size and tied[i, picked[0]])
    return out


def _worst_rows(native: Outputs, onnx: Outputs, onnx_scores: np.ndarray, per_row: np.ndarray,
                off: np.ndarray) -> list[dict[str, Any]]:
    """The rows beyond tolerance, furthest first, with what each side predicted."""
    rows = np.flatnonzero(off)
    if not rows.size:
        return []
    gap = np.nan_to_num(per_row.max(axis=1), nan=np.inf)[rows]
    out = []
    for i in rows[np.argsort(-gap, kind="stable")][:WORST_ROWS]:
        entry: dict[str, Any] = {"row": int(i), "diff": _number(float(gap[rows == i][0])),
                                 "native": _values(native.scores[i]), "onnx": _values(onnx_scores[i])}
        if native.labels is not None and onnx.labels is not None:
            entry["native_label"] = _label(native.labels[i])
            entry["onnx_label"] = _label(onnx.labels[i])
        out.append(entry)
    return out


def _would_pass_with(kind: str, per_row: np.ndarray, scale: np.ndarray, agreement: float | None,
                     tol: Tolerance) -> dict[str, float]:
    """The tolerance settings that accept this sample: the observed label agreement, and the
    absolute (probabilities) or relative (values, scores) difference that covers every row."""
    advice: dict[str, float] = {}
    if agreement is not None and agreement < tol.label_agreement:
        advice["labelAgreement"] = float(np.floor(agreement * 1000) / 1000)
    finite = np.nan_to_num(per_row, nan=np.inf)
    if not finite.size or not np.isfinite(finite).all():
        return advice
    if kind == "probabilities":
        need = float(finite.max())
        if need > tol.absolute:
            advice["absolute"] = _round_up(need)
    else:
        over = (finite - tol.absolute) / np.maximum(scale, np.finfo(np.float32).tiny)
        need = float(over.max())
        if need > tol.relative:
            advice["relative"] = _round_up(need)
    return advice


def _round_up(x: float) -> float:
    """Two significant digits, rounded up, so the advice itself passes."""
    if x <= 0:
        return 0.0
    digits = 1 - int(np.floor(np.log10(x)))
    return float(np.ceil(x * 10**digits) / 10**digits)


def _number(x: float) -> float | None:
    return round(x, 9) if np.isfinite(x) else None


def _values(row: Any) -> list[float | None] | float | None:
    arr = np.atleast_1d(np.asarray(row, dtype=np.float64))
    values = [_number(float(v)) for v in arr]
    return values[0] if len(values) == 1 else values


def _label(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _brief(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join("nan" if x is None else f"{x:.4g}" for x in v[:4]) + (
            ", ...]" if len(v) > 4 else "]")
    return "nan" if v is None else f"{v:.6g}"
