"""The Model spec, parsed once at the edge into frozen dataclasses. The CRD schema has already
validated and defaulted it; parsing here only gives the core typed values (durations as seconds)."""

from __future__ import annotations

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
class Step:
    weight: int
    pause: float  # seconds of successful analysis this step needs


@dataclass(frozen=True)
class MetricSpec:
    name: str
    builtin: str | None = None
    query: str | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class AnalysisSpec:
    interval: float = 10.0
    failure_limit: int = 2
    inconclusive_limit: int = 3
    metrics: tuple[MetricSpec, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    source: dict[str, Any]
    conversion: dict[str, Any] = field(default_factory=dict)
    serving: dict[str, Any] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()
    paused: bool = False
    progress_deadline: float = 600.0
    analysis: AnalysisSpec = AnalysisSpec()

    @property
    def version_key(self) -> str:
        """Identifies a model version: what is converted (source + conversion settings). Changing
        replicas or rollout steps bumps metadata.generation but is not a new version."""
        blob = json.dumps({"source": self.source, "conversion": self.conversion}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def conversion_timeout(self) -> float:
        return parse_duration(str(self.conversion.get("timeout", "10m")))


def parse_spec(spec: dict[str, Any]) -> ModelSpec:
    rollout = spec.get("rollout") or {}
    analysis = rollout.get("analysis") or {}
    return ModelSpec(
        source=dict(spec["source"]),
        conversion=dict(spec.get("conversion") or {}),
        serving=dict(spec.get("serving") or {}),
        steps=tuple(
            Step(weight=int(s["weight"]), pause=parse_duration(str(s.get("pause", "0s"))))
            for s in rollout.get("steps", [])
        ),
        paused=bool(rollout.get("paused", False)),
        progress_deadline=parse_duration(str(rollout.get("progressDeadline", "10m"))),
        analysis=AnalysisSpec(
            interval=parse_duration(str(analysis.get("interval", "10s"))),
            failure_limit=int(analysis.get("failureLimit", 2)),
            inconclusive_limit=int(analysis.get("inconclusiveLimit", 3)),
            metrics=tuple(
                MetricSpec(
                    name=m["name"], builtin=m.get("builtin"), query=m.get("query"),
                    min=_float_or_none(m.get("min")), max=_float_or_none(m.get("max")),
                )
                for m in analysis.get("metrics", [])
            ),
        ),
    )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)
