"""What the operator observed this tick, gathered by the adapters, read by the pure decision."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from serin.operator.status import ConversionSummary


class ConversionState(enum.StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    MISSING = "Missing"  # nothing running and no result: start it


@dataclass(frozen=True)
class ConversionResult:
    state: ConversionState
    storageUri: str = ""
    sha256: str = ""
    reason: str = ""
    summary: ConversionSummary | None = None  # what the converter reported, when it did
    retryable: bool = False  # Failed, but transiently (fetch failed): another attempt may pass


@dataclass(frozen=True)
class ServingObservation:
    """The InferenceService as KServe reports it (spec fields Serin owns + predictor status)."""

    exists: bool = False
    storageUri: str | None = None
    canaryPercent: int | None = None
    upToDate: bool = False  # status.observedGeneration == metadata.generation
    latestCreated: str = ""
    latestReady: str = ""
    latestRolledout: str = ""
    traffic: dict[str, int] = field(default_factory=dict)  # revision -> percent

    def serves_latest_at(self, storage_uri: str, canary_percent: int | None, percent: int) -> bool:
        """KServe has caught up with this spec and routes `percent` to its newest revision."""
        return (
            self.exists and self.upToDate
            and self.storageUri == storage_uri and self.canaryPercent == canary_percent
            and self.latestReady != "" and self.latestReady == self.latestCreated
            and self.traffic.get(self.latestReady, 0) == percent
        )


@dataclass(frozen=True)
class MeasuredValue:
    metric: str
    value: float | None
    error: str = ""


@dataclass(frozen=True)
class Observations:
    generation: int
    annotations: dict[str, str] = field(default_factory=dict)
    serving: ServingObservation = ServingObservation()
    conversion: ConversionResult | None = None  # for status.pending, when there is one
    measurements: tuple[MeasuredValue, ...] | None = None  # None: not measured this tick
