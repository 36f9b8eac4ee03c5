"""What the decision asks the adapters to do. Each action is idempotent."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StartConversion:
    generation: int
    versionKey: str
    attempt: int


@dataclass(frozen=True)
class CancelConversion:
    generation: int
    versionKey: str
    attempt: int = 1


@dataclass(frozen=True)
class ApplyServing:
    """Make the InferenceService predictor serve `storageUri` with this canaryTrafficPercent
    (None: the field is absent, i.e. 100 % to the latest ready revision)."""

    storageUri: str
    canaryPercent: int | None


@dataclass(frozen=True)
class Emit:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ClearAnnotation:
    key: str


Action = StartConversion | CancelConversion | ApplyServing | Emit | ClearAnnotation
