"""The Model status: the whole rollout state, so that a restarted operator resumes exactly where
the last one stopped. Times are ISO-8601 strings in status, datetimes in the core."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, TypeVar

T = TypeVar("T")

ANALYSIS_RECORDS_KEPT = 12
HISTORY_KEPT = 10


# The vocabulary of the persisted state. StrEnum members are their CRD enum strings, so they are
# written to the API as they are and compare equal to what is read back.
class Phase(enum.StrEnum):
    PENDING = "Pending"
    CONVERTING = "Converting"
    DEPLOYING = "Deploying"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    ROLLING_BACK = "RollingBack"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class CanaryState(enum.StrEnum):
    PROGRESSING = "Progressing"
    PROMOTING = "Promoting"
    ROLLING_BACK = "RollingBack"


class RollbackStage(enum.StrEnum):
    """A rollback's two moves (see rollout.desired_serving): all traffic off the canary, then the
    canary removed. Finalize is only read: operators before the router split wrote it for the last
    part of Knative's restore, which the Knative router now does by itself."""

    NONE = ""
    ZERO_TRAFFIC = "ZeroTraffic"
    RESTORE = "Restore"
    FINALIZE = "Finalize"


class RollbackReason(enum.StrEnum):
    """Why a canary is rolled back: a bounded label for metrics, carried beside the prose."""

    ANALYSIS = "analysis"
    MANUAL = "manual"
    DEADLINE = "deadline"
    SUPERSEDED = "superseded"
    REVERTED = "reverted"
    UNSUPPORTED = "unsupported"  # the serving layer cannot split traffic for a canary here
    CRASHED = "crashed"  # the canary's containers restarted more than spec.analysis.maxRestarts
    OTHER = "other"  # recorded by no decision: a rollback an older operator started


class Outcome(enum.StrEnum):
    """How a version's rollout ended (status.history)."""

    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"


class FailureKind(enum.StrEnum):
    CONVERSION_FAILED = "ConversionFailed"
    ROLLED_BACK = "RolledBack"
    # Converted, but it takes other inputs than the stable version: refused before any traffic.
    INPUTS_CHANGED = "InputsChanged"
    # Refused before conversion: the operator requires analysis (requireAnalysis) and the spec has
    # no canary steps or no metric that is not dryRun. Admitted again once it has them.
    ANALYSIS_REQUIRED = "AnalysisRequired"


class Verdict(enum.StrEnum):
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


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
    # What its requests must carry (the converter's digest of input names, types and shapes), and
    # the signature in words: a canary's is compared with the stable's before it gets traffic.
    # "" for versions converted by an operator that did not record it.
    inputSignature: str = ""
    inputs: str = ""
    task: str = ""  # classification | regression: how predictionShift is measured
    # What it was converted from (spec.source when its conversion started): a retraining Job is
    # told the serving version's artifact, not whatever the spec names now (a version rolled back
    # since, say). "" for versions converted by an operator that did not record it.
    sourceUri: str = ""
    sampleUri: str = ""


@dataclass(frozen=True)
class Canary(Version):
    state: CanaryState = CanaryState.PROGRESSING
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
    rollbackStage: RollbackStage = RollbackStage.NONE
    rollbackReason: RollbackReason | None = None
    # The share the canary actually got at this step: `weight` with exact routing, the replica
    # ratio without (KServe's spec.canary sizes replicas and routes nothing).
    observedWeight: int | None = None

    def version(self) -> Version:
        """The version itself, without its rollout state: what becomes the stable one."""
        return Version(**{f.name: getattr(self, f.name) for f in fields(Version)})


@dataclass(frozen=True)
class Serving:
    """status.serving: how the Model is served, as last observed."""

    mode: str = ""  # KServe deployment mode: Knative | Standard
    traffic: str = ""  # knative | replicaRatio | gateway
    url: str = ""


@dataclass(frozen=True)
class Pending:
    """A version being converted."""

    generation: int
    versionKey: str
    startedAt: str
    attempt: int = 1
    sourceUri: str = ""  # spec.source.uri of this generation (Version.sourceUri)
    sampleUri: str = ""
    # Set while backing off after a transient failure (the artifact could not be fetched): the
    # attempt above starts at this time.
    retryAt: str | None = None
    # Set while it waits for a conversion slot (the operator's concurrency limit): its place in line,
    # 1 being next. startedAt is reset when it leaves the queue, so the timeout counts its run only.
    queuePosition: int | None = None
    # Kubernetes' reason the conversion's Pod does not run (Unschedulable, ...), "" when none: told
    # once per reason with an Event, and in status.message while it lasts.
    blocked: str = ""


@dataclass(frozen=True)
class Failure:
    """The last version that failed (conversion) or was rolled back; not retried while the spec
    still names it."""

    generation: int
    versionKey: str
    kind: FailureKind
    reason: str
    at: str


@dataclass(frozen=True)
class Waiting:
    """What the serving layer was asked to do and has not shown yet, since when: every phase that
    waits on it is held to the progressDeadline (as a Deployment's Progressing condition)."""

    what: str  # in words, and its identity: a new wait starts when this changes
    since: str
    exceeded: bool = False  # past the deadline (reported once, with a Warning Event)
    # Kubernetes' reason a Pod does not serve (Unschedulable, ImagePullBackOff, CrashLoopBackOff,
    # OOMKilled, ...) while this wait lasts, "" when none: told once per reason with an Event.
    blocked: str = ""


@dataclass(frozen=True)
class Measurement:
    metric: str
    verdict: Verdict
    at: str
    generation: int
    value: float | None = None
    reason: str = ""
    dryRun: bool | None = None  # True: a dry-run metric's, shown and never acted on (None: omitted)


@dataclass(frozen=True)
class ConversionSummary:
    """status.conversion: the last conversion's outcome, one shape whichever executor ran it.

    The converter writes it (serin.converters.job.summary: the Pod's termination message, and the
    same document in the local executor's output directory); the operator adds `generation`, or
    writes only passed/reason when the conversion never reported (timeout, lost attempts)."""

    passed: bool
    generation: int = 0
    reason: str | None = None
    error: str | None = None  # the converter's error kind (user-error, fetch-failed, internal, …)
    exitCode: int | None = None
    format: str | None = None
    task: str | None = None
    estimator: str | None = None
    rows: int | None = None
    seconds: float | None = None
    labelAgreement: float | None = None
    maxAbsDiff: float | None = None
    maxRelDiff: float | None = None
    mismatchedRows: int | None = None
    sha256: str | None = None  # of the source artifact
    onnxSha256: str | None = None
    inputSignature: str | None = None  # digest of `inputs`
    inputs: str | None = None  # each input's name:type[shape past the batch dimension], space-separated


@dataclass(frozen=True)
class HistoryEntry:
    generation: int
    outcome: Outcome
    at: str
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
class FeatureEvidence:
    """One of the most drifted features of an inputDrift signal."""

    feature: str
    evidence: float  # CUSUM over its alarm threshold: 1 raises the alarm
    psi: float  # the trailing window's PSI against the reference (bias-corrected)


@dataclass(frozen=True)
class SignalStatus:
    """status.monitoring.signals[]: one watched signal of the serving version."""

    signal: str
    state: str  # Watching | Alarm | NoBaseline
    since: str
    evidence: float = 0.0  # the most advanced detector's CUSUM over its threshold (1: alarm)
    message: str = ""
    episode: int = 0  # alarms raised for this revision so far
    announced: str = ""  # "<state>/<episode>" of the last transition told by an Event
    calm: int = 0  # in Alarm: evaluations in a row back within tolerance
    dryRun: bool | None = None
    # Each detector's CUSUM (log-evidence; a feature's name for inputDrift, "" otherwise), rounded
    # down: the state an operator restart resumes from. Only non-zero entries are kept.
    cusum: dict[str, float] = field(default_factory=dict)
    worst: tuple[FeatureEvidence, ...] = ()


@dataclass(frozen=True)
class Baseline:
    """status.monitoring.baseline: live traffic accepted as the reference (`serin rebaseline`),
    judged against instead of the profile's from then on, for this revision only."""

    start: str  # the traffic of [start, end] is the baseline
    end: str
    takenAt: str  # when the operator recorded it
    rows: float = 0.0
    reason: str = ""  # the user's words (`--reason`)
    # feature -> share of each bin (index = bin), predicted class -> share; empty: the profile's kept
    features: dict[str, list[float]] = field(default_factory=dict)
    classes: dict[str, float] = field(default_factory=dict)
    # The lower end of a 95 % interval (None: the profile's kept): from ground truth for accuracy,
    # from the label-free estimate for estimatedAccuracy, each from its own rows.
    accuracy: float | None = None
    estimatedAccuracy: float | None = None
    signals: list[str] = field(default_factory=list)  # the signals judged against it


@dataclass(frozen=True)
class Monitoring:
    """status.monitoring: the serving version watched over time (monitoring.py)."""

    revision: str
    generation: int
    startedAt: str
    evaluatedAt: str  # counts up to this instant have been judged; the next window starts here
    health: str = ""  # monitoring.health: the `kubectl get models` column
    evaluations: int = 0
    threshold: float = 0.0  # log-evidence an alarm needs (sequential.threshold)
    silencedUntil: str | None = None
    problem: str = ""  # why the last evaluation could not judge ("" when it could)
    signals: tuple[SignalStatus, ...] = ()
    baseline: Baseline | None = None

    def signal(self, name: str) -> SignalStatus | None:
        return next((x for x in self.signals if x.signal == name), None)


@dataclass(frozen=True)
class Retrain:
    """The latest retraining (retrain.py): what triggered it, its Job, how it ended."""

    state: str  # AwaitingApproval | Running | Succeeded | Failed
    job: str  # the Job's name, fixed by the trigger: created once whatever happens in between
    generation: int  # the serving generation whose alarm triggered it (`serin approve` names it)
    revision: str
    signal: str
    episode: int
    alarmSince: str
    triggeredAt: str  # decided (the cooldown counts from here)
    windowStart: str  # the served traffic handed to the trainer
    windowEnd: str
    modelGeneration: int = 0  # the Model's metadata.generation when triggered: the trainer's change bumps it
    jobSeen: bool = False  # the Job was observed: gone afterwards means deleted, never created again
    finishedAt: str | None = None
    message: str = ""
    # The key (retrain._alarm_key) of the last alarm told RetrainSkipped (once per alarm).
    skipped: str = ""
    monitoringStartedAt: str = ""  # the alarm's monitoring (a restarted monitoring counts episodes anew)
    approved: bool = False  # approval: Manual: `serin approve` named it (it may still wait: a rollout, a silence)
    producedGeneration: int = 0  # Succeeded: the Model generation its trainer's change made (0: none)


@dataclass(frozen=True)
class Notification:
    """One transition on its way to one sink (notify.py): written with the status that decided the
    transition, before anything is sent, so a kill at any point resends it under the same id."""

    id: str  # the CloudEvent id, the same for every sink and every attempt
    sink: str  # notify.sink_key: the Model's sink name, or "chart/<name>" for the chart's
    reason: str
    event: str  # the CloudEvent, compact JSON: every attempt sends these bytes (the same signature)
    attempts: int = 0  # attempts that failed
    nextAttemptAt: str | None = None  # None: at once
    lastError: str = ""


@dataclass(frozen=True)
class Notifications:
    pending: tuple[Notification, ...] = ()
    # "<id> <sink>" of the latest delivered or given up: a transition told again (an Event posted
    # again after a kill) is not sent again.
    sent: tuple[str, ...] = ()


@dataclass(frozen=True)
class Status:
    phase: Phase = Phase.PENDING
    message: str = ""
    observedGeneration: int = 0
    stable: Version | None = None
    stableConfirmed: bool = False  # KServe reported the stable version serving 100 %
    canary: Canary | None = None
    pending: Pending | None = None
    failed: Failure | None = None
    conversion: ConversionSummary | None = None
    analysis: tuple[Measurement, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    conditions: tuple[Condition, ...] = ()
    serving: Serving | None = None
    waiting: Waiting | None = None
    monitoring: Monitoring | None = None
    notifications: Notifications | None = None
    retrain: Retrain | None = None

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
        "conversion": _drop_none(asdict(status.conversion)) if status.conversion else None,
        "analysis": [_drop_none(asdict(m)) for m in status.analysis],
        "history": [_drop_empty(asdict(h)) for h in status.history],
        "conditions": [asdict(c) for c in status.conditions],
        "serving": _drop_empty(asdict(status.serving)) if status.serving else None,
        "waiting": asdict(status.waiting) if status.waiting else None,
        "monitoring": _monitoring_to_dict(status.monitoring) if status.monitoring else None,
        # Written whole (a merge patch replaces lists): None once nothing is pending or remembered.
        "notifications": {"pending": [_drop_empty(asdict(n)) | {"attempts": n.attempts}
                                      for n in status.notifications.pending],
                          "sent": list(status.notifications.sent)} if status.notifications else None,
        "retrain": _drop_empty(asdict(status.retrain)) | {"jobSeen": status.retrain.jobSeen,
                                                           "approved": status.retrain.approved}
        if status.retrain else None,
    }
    return out


def _monitoring_to_dict(m: Monitoring) -> dict[str, Any]:
    out = _drop_empty({k: v for k, v in asdict(m).items() if k not in ("signals", "baseline")})
    out["evaluations"] = m.evaluations
    # None removes an earlier revision's baseline from the stored status (a merge patch).
    out["baseline"] = _drop_empty({k: v for k, v in asdict(m.baseline).items() if v not in ({}, [])}) \
        if m.baseline else None
    out["signals"] = [_drop_empty({**_drop_none(asdict(x)), "worst": [asdict(w) for w in x.worst] or None,
                                   "cusum": dict(x.cusum) or None}) | {"evidence": x.evidence, "episode": x.episode}
                      for x in m.signals]
    return out


def _monitoring_from_dict(data: dict[str, Any] | None) -> Monitoring | None:
    if not isinstance(data, dict) or not data.get("revision"):
        return None
    signals = []
    for raw in data.get("signals") or []:
        if not isinstance(raw, dict) or not raw.get("signal"):
            continue
        worst = tuple(w for w in (_build(FeatureEvidence, d) for d in raw.get("worst") or []) if w is not None)
        cusum = {str(k): float(v) for k, v in (raw.get("cusum") or {}).items()}
        # `state` here is a monitoring state, not a canary's (no enum conversion).
        base = _build(SignalStatus, {k: v for k, v in raw.items() if k not in ("worst", "cusum")}, enums=False)
        if base is not None:
            signals.append(replace(base, worst=worst, cusum=cusum))
    base_m = _build(Monitoring, {k: v for k, v in data.items() if k not in ("signals", "baseline")})
    return replace(base_m, signals=tuple(signals), baseline=_baseline_from_dict(data.get("baseline"))) \
        if base_m is not None else None


def _baseline_from_dict(data: Any) -> Baseline | None:
    if not isinstance(data, dict) or not data.get("start") or not data.get("end"):
        return None
    base = _build(Baseline, {k: v for k, v in data.items() if k not in ("features", "classes", "signals")},
                  enums=False)
    if base is None:
        return None
    features = {str(k): [float(x) for x in v] for k, v in (data.get("features") or {}).items() if isinstance(v, list)}
    classes = {str(k): float(v) for k, v in (data.get("classes") or {}).items()}
    signals = [str(x) for x in data.get("signals") or []]
    return replace(base, features=features, classes=classes, signals=signals)


def _drop_empty(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v not in (None, "")}


# Fields read back as enums: the API returns their plain strings.
_ENUM_FIELDS: dict[str, type[enum.StrEnum]] = {
    "state": CanaryState, "rollbackStage": RollbackStage, "rollbackReason": RollbackReason,
    "kind": FailureKind, "verdict": Verdict, "outcome": Outcome,
}


def _build(cls: type[T], data: dict[str, Any] | None, enums: bool = True) -> T | None:
    """A dataclass from its status dict. Keys it does not know are dropped (status written by an
    older operator), so reading never fails on them."""
    if not data:
        return None
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # cls is always a dataclass
    values = {k: v for k, v in data.items() if k in names}
    for key, kind in _ENUM_FIELDS.items() if enums else ():
        if key in values and values[key] is not None:
            values[key] = kind(values[key])
    return cls(**values)


def _build_all(cls: type[T], items: list[dict[str, Any]] | None) -> tuple[T, ...]:
    return tuple(x for x in (_build(cls, d) for d in items or []) if x is not None)


def status_from_dict(data: dict[str, Any] | None) -> Status:
    data = data or {}
    stable = data.get("stable") or None
    return Status(
        phase=Phase(data.get("phase") or Phase.PENDING),
        message=data.get("message", ""),
        observedGeneration=int(data.get("observedGeneration", 0)),
        stable=_build(Version, stable),
        stableConfirmed=bool(stable and stable.get("confirmed")),
        canary=_build(Canary, data.get("canary")),
        pending=_build(Pending, data.get("pending")),
        failed=_build(Failure, data.get("failed")),
        conversion=parse_conversion_summary(data.get("conversion")),
        analysis=_build_all(Measurement, data.get("analysis")),
        history=_build_all(HistoryEntry, data.get("history")),
        conditions=_build_all(Condition, data.get("conditions")),
        serving=_build(Serving, data.get("serving")),
        waiting=_build(Waiting, data.get("waiting")),
        monitoring=_monitoring_from_dict(data.get("monitoring")),
        notifications=_notifications_from_dict(data.get("notifications")),
        retrain=_build(Retrain, data.get("retrain"), enums=False)
        if isinstance(data.get("retrain"), dict) and data["retrain"].get("job") else None,
    )


def _notifications_from_dict(data: Any) -> Notifications | None:
    if not isinstance(data, dict):
        return None
    pending = tuple(n for n in (_build(Notification, d, enums=False) for d in data.get("pending") or []
                                if isinstance(d, dict) and d.get("id") and d.get("sink")) if n is not None)
    sent = tuple(str(x) for x in data.get("sent") or [])
    return Notifications(pending, sent) if pending or sent else None


def parse_conversion_summary(data: dict[str, Any] | None) -> ConversionSummary | None:
    """status.conversion, or the converter's summary document (which has no generation yet)."""
    if not isinstance(data, dict) or not isinstance(data.get("passed"), bool):
        return None
    return _build(ConversionSummary, data)
