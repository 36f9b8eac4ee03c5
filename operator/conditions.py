"""status.conditions, derived from the rollout status. Kubernetes conventions: one entry per type,
observedGeneration on each, lastTransitionTime moves only when the status value changes."""

from __future__ import annotations

from serin.operator.monitoring import conditions as monitoring_conditions
from serin.operator.spec import ModelSpec
from serin.operator.status import CanaryState, Condition, FailureKind, Status


def derive_conditions(spec: ModelSpec, s: Status, generation: int, now: str) -> tuple[Condition, ...]:
    key = spec.version_key
    failed_here = s.failed is not None and s.failed.versionKey == key
    wanted: list[tuple[str, str, str, str]] = []  # (type, status, reason, message)

    if s.stable is not None and s.stableConfirmed:
        wanted.append(("Ready", "True", "Serving", f"generation {s.stable.generation} is serving"))
    else:
        wanted.append(("Ready", "False", "NotServing", "no version is serving yet"))

    busy = s.canary is not None or s.pending is not None or (s.stable is not None and not s.stableConfirmed)
    if s.waiting is not None and s.waiting.exceeded:
        # A Deployment's convention: Progressing False, ProgressDeadlineExceeded, while still trying.
        wanted.append(("Progressing", "False", "ProgressDeadlineExceeded", s.message))
    elif s.waiting is not None and s.waiting.blocked:
        # Still progressing (the deadline has not passed), but the reason says what holds it.
        wanted.append(("Progressing", "True", s.waiting.blocked, s.message))
    elif s.pending is not None and s.pending.blocked:
        wanted.append(("Progressing", "True", s.pending.blocked, s.message))
    else:
        wanted.append(("Progressing", "True" if busy else "False", s.phase, s.message))

    if failed_here:
        assert s.failed is not None
        wanted.append(("Degraded", "True", s.failed.kind, s.failed.reason))
    elif s.canary is not None and s.canary.state == CanaryState.ROLLING_BACK:
        wanted.append(("Degraded", "True", "RollingBack", s.canary.reason))
    else:
        wanted.append(("Degraded", "False", "AsExpected", ""))

    if s.pending is not None and s.pending.versionKey == key:
        wanted.append(("Converted", "Unknown", "Converting", f"converting generation {s.pending.generation}"))
    elif failed_here and s.failed is not None and s.failed.kind == FailureKind.CONVERSION_FAILED:
        wanted.append(("Converted", "False", "ConversionFailed", s.failed.reason))
    elif failed_here and s.failed is not None and s.failed.kind == FailureKind.ANALYSIS_REQUIRED \
            and not any(v is not None and v.versionKey == key for v in (s.stable, s.canary)):
        wanted.append(("Converted", "Unknown", "NotStarted", "refused before conversion: " + s.failed.reason))
    elif any(v is not None and v.versionKey == key for v in (s.stable, s.canary, s.failed)):
        wanted.append(("Converted", "True", "ParityPassed", "ONNX predictions match the native model"))
    else:
        wanted.append(("Converted", "Unknown", "NotStarted", ""))

    if spec.monitoring.enabled or s.monitoring is not None:
        wanted.extend(monitoring_conditions(s.monitoring))

    previous = {c.type: c for c in s.conditions}
    out = []
    for type_, status, reason, message in wanted:
        old = previous.get(type_)
        since = old.lastTransitionTime if old is not None and old.status == status else now
        out.append(Condition(type_, status, reason, message, generation, since))
    return tuple(out)
