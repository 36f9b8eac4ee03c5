"""What the operator observed this tick, gathered by the adapters, read by the pure decision."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from serin.operator.monitoring import MonitoringObservation, RebaselineObservation
from serin.operator.pods import Crashes, PodTrouble
from serin.operator.status import ConversionSummary


class ConversionState(enum.StrEnum):
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    MISSING = "Missing"  # nothing running and no result: start it
    QUEUED = "Queued"  # waiting for a slot under the concurrency limit


@dataclass(frozen=True)
class JobObservation:
    """The retraining Job as read this tick."""

    exists: bool
    succeeded: bool = False
    failed: bool = False
    reason: str = ""  # the Failed condition's reason and message
    refused: str = ""  # the apiserver refused to create it (its words): retrying sends the same Job


@dataclass(frozen=True)
class ConversionResult:
    state: ConversionState
    storageUri: str = ""
    sha256: str = ""
    reason: str = ""
    summary: ConversionSummary | None = None  # what the converter reported, when it did
    retryable: bool = False  # Failed, but transiently (fetch failed): another attempt may pass
    position: int = 0  # Queued: its place in line, 1 being next
    # Running, but its Pod does not run: Kubernetes' reason (Unschedulable, ...); `reason` has its words.
    blocked: str = ""


@dataclass(frozen=True)
class Variant:
    """One model version as the serving layer runs it, whatever the layer."""

    storageUri: str  # what it serves ("" when the layer does not say: Knative's previous revision)
    revision: str  # the name its metrics carry: a Knative revision, or a Standard-mode predictor
    ready: bool  # its Pods are up and it can take its share
    weight: int  # the share of requests it actually receives, in percent


@dataclass(frozen=True)
class ServingObservation:
    """The InferenceService (and, in Standard mode, its Deployments and Serin's route) as observed,
    in the serving layer's own terms translated to stable / canary / weights. The decision reads
    only this: it never sees KServe fields, so every mode and router speaks the same language."""

    exists: bool = False
    # The layer has acted on everything Serin last wrote: Knative's observedGeneration and traffic
    # table, or Standard mode's Deployments rolled out and the route accepted at its generation.
    settled: bool = False
    stable: Variant | None = None
    canary: Variant | None = None
    # The canary weight the serving spec now asks for (None: no canary). `canary.weight` is what
    # that achieved: the same number with exact routing, the replica ratio without.
    canaryTarget: int | None = None
    # Non-empty when the layer cannot do what Serin needs (e.g. split traffic): why, in words.
    refused: str = ""
    # Why the layer is not serving what it was asked yet, in its own words when it gives them
    # (KServe's Ready condition): what a progressDeadline report says did not happen.
    not_ready: str = ""
    # Kubernetes' own reason one of the Model's Pods does not serve (unschedulable, image, crash
    # loop, OOM kill), as it happens: what a wait on the serving layer is told instead of nothing.
    trouble: PodTrouble | None = None
    # How often the canary's containers died since it was deployed (None: no canary, or its Pods
    # are not known: the Knative stand-in has none).
    canary_crashes: Crashes | None = None
    mode: str = ""  # the KServe deployment mode in use (Knative | Standard)
    traffic: str = ""  # how weights are set: knative | replicaRatio | gateway
    url: str = ""  # the address clients call

    def serves_only(self, storage_uri: str) -> bool:
        """All traffic on `storage_uri`, nothing else running a share."""
        s = self.stable
        return (self.exists and self.settled and self.canary is None and s is not None
                and s.storageUri == storage_uri and s.ready and s.weight == 100)

    def serves_canary(self, storage_uri: str, weight: int) -> bool:
        """The canary `storage_uri` is up and the layer applied the step's `weight` as well as it
        can (`canary.weight` says what it achieved)."""
        c = self.canary
        return (self.exists and self.settled and c is not None and self.canaryTarget == weight
                and c.storageUri == storage_uri and c.ready)

    def canary_drained(self, storage_uri: str) -> bool:
        """No request reaches the canary `storage_uri` any more (or it is gone)."""
        c = self.canary
        if not (self.exists and self.settled):
            return False
        if c is None:
            return self.canaryTarget is None
        return c.storageUri == storage_uri and self.canaryTarget == 0 and c.weight == 0


@dataclass(frozen=True)
class MeasuredValue:
    metric: str
    value: float | None
    error: str = ""
    # How many requests the value stands on, for a rate of requests (errorRate): what the fast
    # path for hard failures weighs its evidence by. None when unknown.
    samples: float | None = None
    # For a builtin judged with confidence (spec.WITH_CONFIDENCE): the interval around `value`.
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class Observations:
    generation: int
    annotations: dict[str, str] = field(default_factory=dict)
    serving: ServingObservation = ServingObservation()
    conversion: ConversionResult | None = None  # for status.pending, when there is one
    measurements: tuple[MeasuredValue, ...] | None = None  # None: not measured this tick
    # Why the Model's feedback Secret is not usable, in words ("" when it is, or none was needed):
    # the operator may not create or read it, or the Secret of its name is not this Model's.
    feedback_secret: str = ""
    # The serving version's counts since its last monitoring evaluation (None: not read this tick).
    monitoring: MonitoringObservation | None = None
    # The traffic `serin rebaseline` asked to accept as the reference, read (None: not asked, or
    # the request names no monitored serving version: rollout says so).
    rebaseline: RebaselineObservation | None = None
    model: str = ""  # the Model's name: monitoring Events are named after it
    namespace: str = ""
    # The retraining Job of status.retrain while it runs (None: not read this tick).
    retrain_job: JobObservation | None = None
