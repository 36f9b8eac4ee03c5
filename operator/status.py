"""The Model status: the whole rollout state, so that a restarted operator resumes exactly where
the last one stopped. Times are ISO-8601 strings in status, datetimes in the core."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

ANALYSIS_RECORDS_KEPT = 12
HISTORY_KEPT = 10


def to_time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def from_time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Version:
    """One converted model version."""

    generation: int
    versionKey: str
    storageUri: str = ""
    sha256: str = ""
    revision: str = ""  # the KServe revision serving it, once observed


@dataclass(frozen=True)
class Canary(Version):
    # Progressing | Promoting | RollingBack
    state: str = "Progressing"
    step: int = 0
    weight: int = 0
    since: str | None = None  # canary start
    stepSince: str | None = None  # when this step's weight was requested
    trafficSince: str | None = None  # when KServe was first seen serving this step's weight
    stepProgress: float = 0.0  # seconds of successful analysis accrued in this step
    lastAnalysisAt: str | None = None
    lastRoundOk: bool = False  # the latest analysis round was all Successful
    inconclusiveStreak: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    reason: str = ""  # why it is promoting / rolling back
    rollbackStage: str = ""  # "" | ZeroTraffic | Restore


@dataclass(frozen=True)
class Pending:
    """A version being converted."""

    generation: int
    versionKey: str
    startedAt: str
    attempt: int = 1
    # Set while backing off after a transient failure (the artifact could not be fetched): the
    # attempt above starts at this time.
    retryAt: str | None = None


@dataclass(frozen=True)
class Failure:
    """The last version that failed (conversion) or was rolled back; not retried while the spec
    still names it."""

    generation: int
    versionKey: str
    kind: str  # ConversionFailed | RolledBack
    reason: str
    at: str


@dataclass(frozen=True)
class Measurement:
    metric: str
    verdict: str  # Successful | Failed | Inconclusive
    at: str
    generation: int
    value: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    observedGeneration: int
    lastTransitionTime: str


@dataclass(frozen=True)
class Status:
    phase: str = "Pending"
    message: str = ""
    observedGeneration: int = 0
    stable: Version | None = None
    stableConfirmed: bool = False  # KServe reported the stable version serving 100 %
    canary: Canary | None = None
    pending: Pending | None = None
    failed: Failure | None = None
    conversion: dict[str, Any] | None = None
    analysis: tuple[Measurement, ...] = ()
    history: tuple[dict[str, Any], ...] = ()
    conditions: tuple[Condition, ...] = ()

    def evolve(self, **changes: Any) -> Status:
        return replace(self, **changes)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def status_to_dict(status: Status) -> dict[str, Any]:
    """The status as written to the API. Absent parts are written as None so that a merge patch
    removes them (a finished canary must disappear, not linger)."""
    out: dict[str, Any] = {
        "phase": status.phase,
        "message": status.message,
        "observedGeneration": status.observedGeneration,
        "stable": _drop_none(asdict(status.stable)) | {"confirmed": status.stableConfirmed}
        if status.stable else None,
        "canary": _drop_none(asdict(status.canary)) if status.canary else None,
        "pending": _drop_none(asdict(status.pending)) if status.pending else None,
        "failed": asdict(status.failed) if status.failed else None,
        "conversion": status.conversion,
        "analysis": [_drop_none(asdict(m)) for m in status.analysis],
        "history": list(status.history),
        "conditions": [asdict(c) for c in status.conditions],
    }
    return out


def _build(cls: type, data: dict[str, Any] | None) -> Any:
    if not data:
        return None
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def status_from_dict(data: dict[str, Any] | None) -> Status:
    data = data or {}
    stable = data.get("stable") or None
    return Status(
        phase=data.get("phase", "Pending"),
        message=data.get("message", ""),
        observedGeneration=int(data.get("observedGeneration", 0)),
        stable=_build(Version, stable),
        stableConfirmed=bool(stable and stable.get("confirmed")),
        canary=_build(Canary, data.get("canary")),
        pending=_build(Pending, data.get("pending")),
        failed=_build(Failure, data.get("failed")),
        conversion=data.get("conversion"),
        analysis=tuple(_build(Measurement, m) for m in data.get("analysis") or []),
        history=tuple(data.get("history") or []),
        conditions=tuple(_build(Condition, c) for c in data.get("conditions") or []),
    )
