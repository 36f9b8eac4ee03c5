"""What the cluster admin requires of every Model: operator settings, as opposed to what a Model
asks for in its spec. Pure; the decision (rollout.py) applies it."""

from __future__ import annotations

from dataclasses import dataclass

from serin.operator.spec import ModelSpec


@dataclass(frozen=True)
class Policy:
    """What the cluster admin requires of every Model (operator settings), as opposed to what a
    Model asks for in its spec."""

    # No canary without analysis that can stop it: a new version next to a serving one needs canary
    # steps and a metric that is not dryRun, else it is refused (and a canary already running is
    # held at its step). `serin operator --require-analysis`, the chart's operator.requireAnalysis.
    require_analysis: bool = True


DEFAULT = Policy()  # the operator's defaults (serin operator with no flags)


def ungated(spec: ModelSpec, policy: Policy) -> str | None:
    """Why a canary of this spec would be promoted with nothing able to stop it, when the policy
    requires analysis; None when it is gated (or nothing is required). A first version has nothing
    to be compared with and is never held by this."""
    if not policy.require_analysis:
        return None
    if not spec.steps:
        why = "spec.rollout.steps is empty: the version would be promoted at once"
    elif not any(not m.dry_run for m in spec.analysis.metrics):
        what = "only dryRun metrics" if spec.analysis.metrics else "no metrics"
        why = f"spec.rollout.analysis has {what}: nothing could stop the canary"
    else:
        return None
    return (f"the operator requires analysis (requireAnalysis): {why}; give it canary steps and a metric "
            "that is not dryRun")
