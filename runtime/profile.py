"""The reference profile (profile.json, version 1, see docs/formats.md), parsed once at load."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# model.onnx's metadata_props key naming profile.json's sha256: written by the conversion's publish
# step (converters/publish.py) into the model whose digest the operator records, checked at load.
PROFILE_DIGEST_KEY = "serin.profile_sha256"

class ProfileError(ValueError):
    """profile.json is unreadable or does not match the contract."""


@dataclass(frozen=True)
class Feature:
    name: str
    input: str
    column: int
    kind: str  # "numeric" | "categorical"
    # numeric: k-1 interior cuts, k proportions. categorical: one bin per category, then "other".
    cuts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    categories: tuple[str, ...] = ()
    proportions: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def bins(self) -> int:
        return int(self.proportions.shape[0])


@dataclass(frozen=True)
class Prediction:
    kind: str  # "classification" | "regression"
    output: str
    classes: tuple[str, ...] = ()
    cuts: tuple[float, ...] = ()
    # Classifiers: the isotonic map from the predicted class's probability to the chance of being
    # right, fitted on the reference sample's true labels (knots: confidence, accuracy); None: the
    # probabilities are taken as calibrated (no labels in the sample).
    calibration: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    reference_accuracy: float | None = None  # on the sample's true labels, when it had them
    # Classifiers: the share of each class among the reference sample's predictions (`classes`'
    # order); regressors: of each bin between `cuts`.
    proportions: tuple[float, ...] = ()


@dataclass(frozen=True)
class Profile:
    rows: int
    features: tuple[Feature, ...]
    prediction: Prediction | None
    # Serin extension (optional, absent from version 1 writers): inputs that may carry NaN.
    nan_inputs: frozenset[str] = frozenset()
    # Serin extension: the conversion ran the reference sample row by row and as one batch and
    # got the same outputs, so requests may be batched (serin.runtime.batching).
    rows_independent: bool = False


def _feature(raw: dict[str, Any]) -> Feature:
    name = str(raw["name"])
    kind = raw.get("kind")
    source, column = str(raw["input"]), int(raw.get("column", 0))
    if kind == "numeric":
        cuts = np.asarray(raw["cuts"], dtype=np.float64)
        props = np.asarray(raw["proportions"], dtype=np.float64)
        if props.shape[0] != cuts.shape[0] + 1:
            raise ProfileError(
                f"feature {name!r}: {len(cuts)} cuts need {len(cuts) + 1} proportions"
            )
        if np.any(np.diff(cuts) < 0):
            raise ProfileError(f"feature {name!r}: cuts must be sorted")
        return Feature(name, source, column, "numeric", cuts=cuts,
                       proportions=props)
    if kind == "categorical":
        cats: dict[str, float] = raw["categories"]
        props = np.asarray([*cats.values(), float(raw.get("other", 0.0))], dtype=np.float64)
        return Feature(name, source, column, "categorical",
                       categories=tuple(str(c) for c in cats), proportions=props)
    raise ProfileError(f"feature {name!r}: unknown kind {kind!r}")


def _prediction(raw: dict[str, Any] | None) -> Prediction | None:
    if not raw:
        return None
    kind = raw.get("kind")
    if kind not in ("classification", "regression"):
        raise ProfileError(f"prediction: unknown kind {kind!r}")
    performance = raw.get("performance") or {}
    calibration = performance.get("calibration")
    knots = None
    if calibration:
        xs = tuple(float(x) for x in calibration["confidence"])
        ys = tuple(float(y) for y in calibration["accuracy"])
        if len(xs) != len(ys) or not xs or bool(np.any(np.diff(xs) < 0)):
            raise ProfileError("prediction.performance.calibration: confidence must be sorted and as long as accuracy")
        knots = (xs, ys)
    accuracy = performance.get("accuracy")
    return Prediction(
        kind=kind,
        output=str(raw.get("output", "")),
        classes=tuple(str(c) for c in raw.get("classes", ())),
        cuts=tuple(float(c) for c in raw.get("cuts", ())),
        calibration=knots,
        reference_accuracy=float(accuracy) if accuracy is not None else None,
        proportions=tuple(float(p) for p in raw.get("proportions", ())),
    )


def parse_profile(raw: dict[str, Any]) -> Profile:
    if raw.get("version") != 1:
        raise ProfileError(f"unsupported profile version {raw.get('version')!r} (expected 1)")
    try:
        features = tuple(_feature(f) for f in raw.get("features", ()))
        nan_inputs = frozenset(
            str(i["name"]) for i in raw.get("inputs", ()) if i.get("allow_nan") is True
        )
        return Profile(
            rows=int(raw.get("rows", 0)),
            features=features,
            prediction=_prediction(raw.get("prediction")),
            nan_inputs=nan_inputs,
            rows_independent=(raw.get("batching") or {}).get("rowsIndependent") is True,
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"malformed profile: {exc!r}") from exc


def load_profile(path: Path) -> Profile:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{path}: {exc}") from exc
    return parse_profile_bytes(data, path)


def parse_profile_bytes(data: bytes, where: Path) -> Profile:
    """A profile from the bytes read (and, by the runtime, checked), `where` naming them."""
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{where}: {exc}") from exc
    return parse_profile(raw)
