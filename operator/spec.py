"""The Model spec, parsed once at the edge into frozen dataclasses. The CRD schema has already
validated and defaulted it; parsing here gives the core typed values (durations as seconds,
enums for closed vocabularies) and the same defaults for a spec that was never defaulted by an
apiserver (unit tests, `serin` commands). Each default is written once, here; a test checks that
the CRD's defaults (the ones the apiserver applies) are the same."""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go-style duration ("1m30s", "500ms") → seconds. The CRD pattern guarantees the shape."""
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r}")
    return total


@dataclass(frozen=True)
class Duration:
    """A spec duration: seconds for arithmetic, the text as the user wrote it for messages."""

    text: str

    @property
    def seconds(self) -> float:
        return parse_duration(self.text)


class Builtin(enum.StrEnum):
    ERROR_RATE = "errorRate"
    LATENCY_P99_SECONDS = "latencyP99Seconds"
    INPUT_PSI = "inputPSI"
    INPUT_DRIFT_P_VALUE = "inputDriftPValue"
    PREDICTION_SHIFT = "predictionShift"
    # Canary against stable: the canary's figure minus (or over) the stable's over the same period.
    ACCURACY = "accuracy"  # canary - stable accuracy on ground truth (feedback), since the canary serves
    ESTIMATED_ACCURACY = "estimatedAccuracy"  # canary - stable label-free (CBPE) accuracy estimate
    MEAN_ABSOLUTE_ERROR = "meanAbsoluteError"  # canary MAE / stable MAE - 1, on ground truth
    ERROR_RATE_VS_STABLE = "errorRateVsStable"  # canary - stable share of 5xx answers
    LATENCY_P99_VS_STABLE = "latencyP99VsStable"  # canary p99 / stable p99
    # The canary's share of 5xx as the Gateway answered requests routed to it: its own 5xx and the
    # requests its Pods never answered (a crash, an OOM kill, a reset connection). gateway_metrics.py.
    GATEWAY_ERROR_RATE = "gatewayErrorRate"


# Builtins judged on a confidence interval (analysis.assess): Failed only when the whole interval
# is past the limit, Successful only when it is all within, Inconclusive while it straddles it.
WITH_CONFIDENCE = frozenset({Builtin.ACCURACY, Builtin.ESTIMATED_ACCURACY, Builtin.MEAN_ABSOLUTE_ERROR})
DEFAULT_CONFIDENCE = 0.99


class ModelFormat(enum.StrEnum):
    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    ONNX = "onnx"


class Protocol(enum.StrEnum):
    V1 = "v1"
    V2 = "v2"


class DeploymentMode(enum.StrEnum):
    """KServe's deployment modes, by what runs them (KServe calls Knative's "Serverless")."""

    KNATIVE = "Knative"
    STANDARD = "Standard"


S3_KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class S3Source:
    """spec.source.s3: how the conversion's fetch step reads s3:// URIs."""

    endpoint: str | None = None
    region: str | None = None
    addressing: str | None = None  # path | virtual (the converter's default when absent)
    verifyTls: bool = True
    secretName: str | None = None  # the Model's Secret with the keys, given to the fetch step only

    def keys_env(self) -> list[dict[str, Any]]:
        """The container variables that take the keys from the Secret (none without one): the AWS
        SDKs' names, each from the Secret's key of the same name as in KServe's S3 Secrets, read by
        the kubelet (the operator never reads a Secret); the session token optional."""
        if not self.secretName:
            return []
        return [{"name": var, "valueFrom": {"secretKeyRef": {
            "name": self.secretName, "key": var, **({"optional": True} if var == "AWS_SESSION_TOKEN" else {})}}}
            for var in S3_KEY_VARIABLES]


@dataclass(frozen=True)
class SourceSpec:
    uri: str
    sampleUri: str
    format: ModelFormat | None = None  # detected from the artifact when absent
    sha256: str | None = None
    sampleLabels: str | None = None  # the sample's column of true labels: calibrates estimatedAccuracy
    s3: S3Source | None = None


@dataclass(frozen=True)
class Tolerance:
    """How close ONNX predictions must be to the native model's (the converter's parity.Tolerance)."""

    absolute: float = 1e-4
    relative: float = 1e-3
    labelAgreement: float = 1.0


# The CRD's limits (CEL rules on spec.conversion.timeout and spec.rollout.progressDeadline), applied
# here too: the apiserver lets a Model stored before them keep its value (validation ratcheting).
# A conversion holds one of the operator's few slots while it runs; no serving layer starts a
# version within less than the shortest deadline.
MAX_CONVERSION_TIMEOUT = Duration("1h")
MIN_PROGRESS_DEADLINE = 10.0


@dataclass(frozen=True)
class ConversionSpec:
    targetOpset: int = 17
    timeout: Duration = Duration("10m")
    tolerance: Tolerance = Tolerance()


@dataclass(frozen=True)
class CaptureSpec:
    """spec.serving.capture: what the predictors keep of their traffic, and where (S3)."""

    share: float
    uri: str
    retention: float = 720 * 3600.0  # seconds
    flush_interval: float = 30.0  # seconds
    s3: S3Source | None = None


@dataclass(frozen=True)
class ServingSpec:
    minReplicas: int = 1
    maxReplicas: int = 1
    protocol: Protocol = Protocol.V2
    # None: the InferenceService's mode when it exists, else KServe's configured default.
    deploymentMode: DeploymentMode | None = None
    # Kubernetes quantities, passed to the predictor container as they are.
    resources: dict[str, dict[str, str | int]] = field(default_factory=dict)
    capture: CaptureSpec | None = None


@dataclass(frozen=True)
class Step:
    weight: int
    pause: float = 30.0  # seconds of successful analysis this step needs


@dataclass(frozen=True)
class MetricSpec:
    name: str
    builtin: Builtin | None = None
    query: str | None = None
    min: float | None = None
    max: float | None = None
    # Measured, judged and recorded in status.analysis like any metric, never acted on: a new
    # metric's limits can be watched on live rollouts before they can roll one back.
    dry_run: bool = False
    # For WITH_CONFIDENCE builtins: the two-sided confidence of the interval judged against the
    # limits, so each of "worse" and "not worse" is claimed with at least this confidence.
    confidence: float = DEFAULT_CONFIDENCE


@dataclass(frozen=True)
class AnalysisSpec:
    interval: float = 10.0
    failure_limit: int = 2
    inconclusive_limit: int = 3
    # Restarts of the canary's containers (and its Pods failed outright) tolerated before rollback:
    # a model that OOMs or crashes on some inputs answers no error for them (issue 32 #8).
    max_restarts: int = 0
    metrics: tuple[MetricSpec, ...] = ()


class Signal(enum.StrEnum):
    """What spec.monitoring watches on the serving version (monitoring.py)."""

    INPUT_DRIFT = "inputDrift"  # each profiled feature's bins against the reference profile
    PREDICTION_SHIFT = "predictionShift"  # the predicted classes against the reference's
    ERROR_RATE = "errorRate"  # the share of 5xx answers
    LATENCY = "latency"  # the share of answers slower than an SLO threshold
    ACCURACY = "accuracy"  # wrong answers among those whose ground truth came back (feedback)
    ESTIMATED_ACCURACY = "estimatedAccuracy"  # the label-free estimate's expected wrong answers


DRIFT_SIGNALS = frozenset({Signal.INPUT_DRIFT, Signal.PREDICTION_SHIFT})


@dataclass(frozen=True)
class SignalSpec:
    enabled: bool = True
    # Evaluated and shown in status.monitoring, never raising a condition, an Event or an alert:
    # a tolerance can be tried on live traffic before it can wake anyone.
    dry_run: bool = False
    # Drift: the PSI beyond which drift matters (a smaller one is never an alarm, however much
    # traffic shows it). errorRate / latency: the largest tolerated share of answers (5xx; slower
    # than `threshold_seconds`). accuracy / estimatedAccuracy: the tolerated drop in points below
    # the reference accuracy, unless `minimum` gives the accuracy itself.
    tolerance: float = 0.0
    threshold_seconds: float = 0.0  # latency only
    minimum: float | None = None  # accuracy signals: an absolute floor instead of reference - tolerance


# Defaults: conservative (an alarm means something) and usable without any knowledge of the model.
DEFAULT_SIGNALS: dict[Signal, SignalSpec] = {
    Signal.INPUT_DRIFT: SignalSpec(tolerance=0.02),
    Signal.PREDICTION_SHIFT: SignalSpec(tolerance=0.02),
    Signal.ERROR_RATE: SignalSpec(tolerance=0.01),
    Signal.LATENCY: SignalSpec(tolerance=0.01, threshold_seconds=1.0),
    Signal.ACCURACY: SignalSpec(tolerance=0.03),
    Signal.ESTIMATED_ACCURACY: SignalSpec(tolerance=0.03),
}


class BaselineSource(enum.StrEnum):
    """What drift is judged against (spec.monitoring.baseline.from)."""

    PROFILE = "profile"  # the conversion's reference profile, or what `serin rebaseline` accepted
    TRAILING = "trailing"  # the traffic just before each evaluation's window: a change detector
    LAST_WEEK = "lastWeek"  # the same hours a week earlier: traffic that follows the hour and weekday


# A moving baseline's window when the spec gives none: a day behind for `trailing` (many rows, one
# whole daily cycle), two hours around the same instant a week earlier for `lastWeek`.
DEFAULT_BASELINE_WINDOW = {BaselineSource.PROFILE: 0.0, BaselineSource.TRAILING: 24 * 3600.0,
                           BaselineSource.LAST_WEEK: 2 * 3600.0}


@dataclass(frozen=True)
class BaselineSpec:
    source: BaselineSource = BaselineSource.PROFILE
    window: float = 0.0  # seconds of traffic that stand for the reference (moving baselines)


class Approval(enum.StrEnum):
    AUTOMATIC = "Automatic"
    MANUAL = "Manual"  # waits for `serin approve MODEL --generation G`


@dataclass(frozen=True)
class RetrainSpec:
    """spec.monitoring.retrain: a Job from the user's template when the serving version's alarm
    lasts (retrain.py). The template is passed to the Job as written (the CRD keeps its fields)."""

    template: dict[str, Any]
    conditions: tuple[str, ...] = ("Drifted", "PerformanceDegraded")  # whose alarms trigger it
    after: float = 1800.0  # seconds the alarm must last (`for`)
    cooldown: float = 86400.0  # seconds between two retrainings' triggers
    approval: Approval = Approval.AUTOMATIC
    window: float = 7 * 86400.0  # the traffic (seconds before the trigger) handed to the trainer


@dataclass(frozen=True)
class MonitoringSpec:
    """spec.monitoring: the serving version watched over time (monitoring.py, sequential.py)."""

    enabled: bool = True
    interval: float = 300.0  # seconds between evaluations
    # Expected false alarms per Model per month, all signals together: the budget sequential.py
    # holds by construction (a CUSUM of e-values with threshold log(detectors * evaluations / budget)).
    false_alarms_per_month: float = 0.05
    min_rows: int = 200  # an evaluation waits for at least this many rows (up to MAX_WAIT)
    trailing: float = 3600.0  # seconds of traffic behind each bet
    resolve_after: int = 3  # evaluations back within tolerance that end an alarm
    signals: dict[Signal, SignalSpec] = field(default_factory=lambda: dict(DEFAULT_SIGNALS))
    baseline: BaselineSpec = BaselineSpec()  # what the drift signals are judged against
    retrain: RetrainSpec | None = None

    def active(self) -> dict[Signal, SignalSpec]:
        return {name: s for name, s in self.signals.items() if s.enabled}


class SinkFormat(enum.StrEnum):
    CLOUDEVENTS = "CloudEvents"  # a structured CloudEvents 1.0 JSON document
    SLACK = "Slack"  # {"text": ...}: Slack's incoming webhooks, Mattermost, Rocket.Chat, Teams workflows


# The one Secret per namespace the operator may read (RBAC resourceNames): the keys of notification
# sinks (a signing key, a URL that is itself a credential such as Slack's). Chart-level sinks read
# the one in the operator's namespace.
NOTIFY_SECRET = "serin-notify"


@dataclass(frozen=True)
class SinkSpec:
    """A webhook told of a Model's transitions (notify.py): spec.notify.sinks[] or the chart's."""

    name: str
    url: str = ""  # or url_secret_key
    url_secret_key: str = ""  # the URL is this key of the Secret serin-notify
    format: SinkFormat = SinkFormat.CLOUDEVENTS
    signing_secret_key: str = ""  # HMAC-SHA256 with this key of the Secret serin-notify ("": unsigned)
    events: tuple[str, ...] = ()  # Event reasons sent; (): every reason notify.TYPES names
    shared: bool = False  # a chart-level sink (its Secret in the operator's namespace)


@dataclass(frozen=True)
class NotifySpec:
    sinks: tuple[SinkSpec, ...] = ()
    include_defaults: bool = True  # also the chart's sinks (notifications.sinks)


def parse_sinks(raw: list[dict[str, Any]] | None, shared: bool = False) -> tuple[SinkSpec, ...]:
    """spec.notify.sinks, or the chart's (the operator's $SERIN_NOTIFY_SINKS, the same schema)."""
    return tuple(SinkSpec(name=str(s["name"]), url=str(s.get("url") or ""),
                          url_secret_key=str(s.get("urlSecretKey") or ""),
                          format=SinkFormat(s.get("format") or SinkFormat.CLOUDEVENTS),
                          signing_secret_key=str(s.get("signingSecretKey") or ""),
                          events=tuple(str(e) for e in s.get("events") or ()), shared=shared)
                 for s in raw or ())


@dataclass(frozen=True)
class ModelSpec:
    source: SourceSpec
    # Identifies a model version: what is converted (source + conversion settings), hashed as the
    # apiserver stored them. Changing replicas or rollout steps bumps metadata.generation but is
    # not a new version.
    version_key: str
    conversion: ConversionSpec = ConversionSpec()
    serving: ServingSpec = ServingSpec()
    steps: tuple[Step, ...] = ()
    paused: bool = False
    allow_input_change: bool = False  # a canary may take other inputs than the stable
    progress_deadline: float = 600.0
    analysis: AnalysisSpec = AnalysisSpec()
    monitoring: MonitoringSpec = MonitoringSpec()
    notify: NotifySpec = NotifySpec()


def parse_spec(spec: dict[str, Any]) -> ModelSpec:
    raw_source = dict(spec["source"])
    raw_conversion = dict(spec.get("conversion") or {})
    rollout = spec.get("rollout") or {}
    analysis = rollout.get("analysis") or {}
    d, da = ModelSpec(SourceSpec("", ""), ""), AnalysisSpec()
    return ModelSpec(
        source=_source(raw_source),
        version_key=version_key(raw_source, raw_conversion),
        conversion=_conversion(raw_conversion),
        serving=_serving(spec.get("serving") or {}),
        steps=tuple(Step(weight=int(s["weight"]), pause=_seconds(s, "pause", Step(0).pause))
                    for s in rollout.get("steps", [])),
        paused=bool(rollout.get("paused", d.paused)),
        allow_input_change=bool(rollout.get("allowInputChange", d.allow_input_change)),
        progress_deadline=max(_seconds(rollout, "progressDeadline", d.progress_deadline), MIN_PROGRESS_DEADLINE),
        analysis=AnalysisSpec(
            interval=_seconds(analysis, "interval", da.interval),
            failure_limit=int(analysis.get("failureLimit", da.failure_limit)),
            inconclusive_limit=int(analysis.get("inconclusiveLimit", da.inconclusive_limit)),
            max_restarts=int(analysis.get("maxRestarts", da.max_restarts)),
            metrics=tuple(
                MetricSpec(
                    name=m["name"], builtin=Builtin(m["builtin"]) if m.get("builtin") else None,
                    query=m.get("query"), min=_float_or_none(m.get("min")), max=_float_or_none(m.get("max")),
                    dry_run=bool(m.get("dryRun", False)),
                    confidence=float(m.get("confidence", DEFAULT_CONFIDENCE)),
                )
                for m in analysis.get("metrics", [])
            ),
        ),
        monitoring=_monitoring(spec.get("monitoring") or {}),
        notify=NotifySpec(sinks=parse_sinks((spec.get("notify") or {}).get("sinks")),
                          include_defaults=bool((spec.get("notify") or {}).get("includeDefaults", True))),
    )


def _monitoring(raw: dict[str, Any]) -> MonitoringSpec:
    d = MonitoringSpec()
    signals = {}
    for name, default in DEFAULT_SIGNALS.items():
        given = raw.get(str(name)) or {}
        tolerance = given.get("maxShare" if name in (Signal.ERROR_RATE, Signal.LATENCY) else
                              "maxDrop" if name in (Signal.ACCURACY, Signal.ESTIMATED_ACCURACY) else "tolerance")
        signals[name] = SignalSpec(
            enabled=bool(given.get("enabled", default.enabled)),
            dry_run=bool(given.get("dryRun", default.dry_run)),
            tolerance=float(tolerance) if tolerance is not None else default.tolerance,
            threshold_seconds=_seconds(given, "threshold", default.threshold_seconds),
            minimum=_float_or_none(given.get("min")),
        )
    given = raw.get("baseline") or {}
    source = BaselineSource(given.get("from") or BaselineSource.PROFILE)
    baseline = BaselineSpec(source, _seconds(given, "window", DEFAULT_BASELINE_WINDOW[source]))
    return MonitoringSpec(
        retrain=_retrain(raw["retrain"]) if raw.get("retrain") else None,
        baseline=baseline,
        enabled=bool(raw.get("enabled", d.enabled)),
        interval=_seconds(raw, "interval", d.interval),
        false_alarms_per_month=float(raw.get("falseAlarmsPerMonth", d.false_alarms_per_month)),
        min_rows=int(raw.get("minRows", d.min_rows)),
        trailing=_seconds(raw, "trailingWindow", d.trailing),
        resolve_after=int(raw.get("resolveAfter", d.resolve_after)),
        signals=signals,
    )


def _retrain(raw: dict[str, Any]) -> RetrainSpec:
    d = RetrainSpec({})
    return RetrainSpec(template=dict(raw.get("template") or {}),
                       conditions=tuple(raw.get("conditions") or d.conditions),
                       after=_seconds(raw, "for", d.after), cooldown=_seconds(raw, "cooldown", d.cooldown),
                       approval=Approval(raw.get("approval") or d.approval), window=_seconds(raw, "window", d.window))


def version_key(source: dict[str, Any], conversion: dict[str, Any]) -> str:
    blob = json.dumps({"source": source, "conversion": conversion}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _source(raw: dict[str, Any]) -> SourceSpec:
    fmt, s3 = raw.get("format"), raw.get("s3")
    return SourceSpec(uri=str(raw["uri"]), sampleUri=str(raw.get("sampleUri", "")),
                      format=ModelFormat(fmt) if fmt else None, sha256=raw.get("sha256") or None,
                      sampleLabels=raw.get("sampleLabels") or None,
                      s3=None if s3 is None else _s3(s3))


def _s3(raw: dict[str, Any]) -> S3Source:
    return S3Source(endpoint=raw.get("endpoint") or None, region=raw.get("region") or None,
                    addressing=raw.get("addressing") or None, verifyTls=bool(raw.get("verifyTls", True)),
                    secretName=raw.get("secretName") or None)


def _conversion(raw: dict[str, Any]) -> ConversionSpec:
    d, tol = ConversionSpec(), raw.get("tolerance") or {}
    timeout = Duration(str(raw.get("timeout", d.timeout.text)))
    return ConversionSpec(
        targetOpset=int(raw.get("targetOpset", d.targetOpset)),
        timeout=min(timeout, MAX_CONVERSION_TIMEOUT, key=lambda t: t.seconds),
        tolerance=Tolerance(
            absolute=float(tol.get("absolute", d.tolerance.absolute)),
            relative=float(tol.get("relative", d.tolerance.relative)),
            labelAgreement=float(tol.get("labelAgreement", d.tolerance.labelAgreement)),
        ),
    )


def _serving(raw: dict[str, Any]) -> ServingSpec:
    d = ServingSpec()
    resources = raw.get("resources") or {}
    return ServingSpec(
        minReplicas=int(raw.get("minReplicas", d.minReplicas)),
        maxReplicas=int(raw.get("maxReplicas", d.maxReplicas)),
        protocol=Protocol(raw.get("protocol", d.protocol)),
        deploymentMode=DeploymentMode(raw["deploymentMode"]) if raw.get("deploymentMode") else None,
        resources={kind: dict(values) for kind, values in resources.items() if values},
        capture=_capture(raw["capture"]) if raw.get("capture") else None,
    )


def _capture(raw: dict[str, Any]) -> CaptureSpec:
    return CaptureSpec(share=float(raw["share"]), uri=str(raw["uri"]),
                       retention=_seconds(raw, "retention", CaptureSpec(0, "").retention),
                       flush_interval=_seconds(raw, "flushInterval", CaptureSpec(0, "").flush_interval),
                       s3=_s3(raw["s3"]) if raw.get("s3") is not None else None)


def _seconds(raw: dict[str, Any], key: str, default: float) -> float:
    return parse_duration(str(raw[key])) if key in raw else default


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
