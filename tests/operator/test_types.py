"""The typed edges agree with the CRD, the single source of truth: every status field the operator
writes survives the structural schema (the apiserver prunes what the schema does not name), every
closed vocabulary is the CRD's enum, and every default is the one the apiserver applies."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from serin.operator import spec as spec_mod
from serin.operator.spec import parse_spec
from serin.operator.status import (
    Canary,
    CanaryState,
    Condition,
    ConversionSummary,
    Failure,
    FailureKind,
    FeatureEvidence,
    HistoryEntry,
    Measurement,
    Monitoring,
    Outcome,
    Pending,
    Phase,
    RollbackReason,
    RollbackStage,
    Serving,
    SignalStatus,
    Status,
    Verdict,
    Version,
    Waiting,
    status_from_dict,
    status_to_dict,
)

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crds" / "serin.dev_models.yaml"
SCHEMA = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def schema_at(path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def pruned(value: Any, schema: dict[str, Any], where: str = "status") -> list[str]:
    """The paths of `value` that a structural schema would prune."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        lost = []
        for key, item in value.items():
            if props is not None and key in props:
                lost += pruned(item, props[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                lost += pruned(item, extra, f"{where}.{key}")
            else:
                lost.append(f"{where}.{key}")
        return lost
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in pruned(item, schema["items"], f"{where}[{i}]")]
    return []


def full_status() -> Status:
    """A status with every field set, so that none escapes the check."""
    t = "2026-12-01T10:00:00.000Z"
    version = Version(3, "k3", "pvc://m/v3", "s" * 64, "m-predictor-00003", "c" * 16, "input:float[4]",
                      "classification")
    canary = Canary(4, "k4", "pvc://m/v4", "t" * 64, "m-predictor-00004", "d" * 16, "input:float[5]", "regression",
                    state=CanaryState.ROLLING_BACK, step=1, weight=50, since=t, stepSince=t, trafficSince=t,
                    stepProgress=12.5, lastAnalysisAt=t, lastRoundOk=True, inconclusiveStreak=2,
                    failures={"error-rate": 2}, reason="analysis failed", rollbackStage=RollbackStage.RESTORE,
                    rollbackReason=RollbackReason.ANALYSIS, observedWeight=50)
    summary = ConversionSummary(True, 4, "r", "internal", 0, "sklearn", "classification", "LogisticRegression",
                                100, 0.4, 1.0, 1e-7, 1e-6, 0, "a" * 64, "b" * 64, "c" * 16, "input:float[4]")
    return Status(Phase.ROLLING_BACK, "m", 4, version, True, canary, Pending(5, "k5", t, 2, t),
                  Failure(2, "k2", FailureKind.INPUTS_CHANGED, "r", t), summary,
                  (Measurement("error-rate", Verdict.FAILED, t, 4, 0.5, "too high"),),
                  (HistoryEntry(3, Outcome.PROMOTED, t, "all steps passed"),),
                  (Condition("Ready", "True", "Serving", "m", 4, t),),
                  Serving("Standard", "gateway", "http://m"), Waiting("all traffic off generation 4", t, True),
                  Monitoring("m-predictor-00003", 3, t, t, "Drifted", 12, 15.6, t, "prometheus busy", (
                      SignalStatus("inputDrift", "Alarm", t, 1.02, "feature f0: PSI 0.08", 2, "Alarm/2", 1, True,
                                   {"f0": 3.25, "f1": 0.5}, (FeatureEvidence("f0", 1.02, 0.08),)),)))


def test_every_status_field_survives_the_crd_schema() -> None:
    written = status_to_dict(full_status())
    assert pruned(written, schema_at("status")) == []


def test_status_reads_back_what_it_wrote() -> None:
    s = full_status()
    assert status_from_dict(status_to_dict(s)) == s


def test_status_from_an_older_operator_still_reads() -> None:
    """Unknown keys (the snake_case report an earlier local executor stored) are dropped, not fatal."""
    old = {"phase": "Promoted", "conversion": {"passed": True, "generation": 1, "parity": {"max_abs_diff": 0}},
           "history": [{"generation": 1, "outcome": "Promoted", "at": "2026-11-01T00:00:00Z"}]}
    s = status_from_dict(old)
    assert s.conversion == ConversionSummary(passed=True, generation=1)
    assert s.history[0].outcome == Outcome.PROMOTED


@pytest.mark.parametrize(("kind", "path"), [
    (Phase, "status.phase"),
    (CanaryState, "status.canary.state"),
    (RollbackStage, "status.canary.rollbackStage"),
    (RollbackReason, "status.canary.rollbackReason"),
    (FailureKind, "status.failed.kind"),
    (Verdict, "status.analysis.[].verdict"),
    (Outcome, "status.history.[].outcome"),
    (spec_mod.Builtin, "spec.rollout.analysis.metrics.[].builtin"),
    (spec_mod.ModelFormat, "spec.source.format"),
    (spec_mod.Protocol, "spec.serving.protocol"),
], ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_every_enum_is_the_crds(kind: type[enum.StrEnum], path: str) -> None:
    assert [m.value for m in kind] == schema_at(path)["enum"]


def crd_default(path: str) -> Any:
    return schema_at(path)["default"]


def test_defaults_are_the_ones_the_apiserver_applies() -> None:
    """Each default is written once in Python (spec.py's dataclasses); the apiserver applies the
    CRD's. They must be the same, or a Model would behave differently in a unit test and in a cluster.
    The converter's defaults (for `serin convert`) are the same again."""
    from serin.converters.conversion import DEFAULT_OPSET
    from serin.converters.parity import Tolerance as ConverterTolerance

    bare = parse_spec({"source": {"uri": "file:///m", "sampleUri": "file:///s"}})
    assert bare.conversion.targetOpset == crd_default("spec.conversion.targetOpset") == DEFAULT_OPSET
    assert bare.conversion.timeout.text == crd_default("spec.conversion.timeout")
    tol, converter_tol = bare.conversion.tolerance, ConverterTolerance()
    assert tol.absolute == crd_default("spec.conversion.tolerance.absolute") == converter_tol.absolute
    assert tol.relative == crd_default("spec.conversion.tolerance.relative") == converter_tol.relative
    assert tol.labelAgreement == crd_default("spec.conversion.tolerance.labelAgreement") == converter_tol.label_agreement
    assert bare.serving.minReplicas == crd_default("spec.serving.minReplicas")
    assert bare.serving.maxReplicas == crd_default("spec.serving.maxReplicas")
    assert bare.serving.protocol == crd_default("spec.serving.protocol")
    assert bare.paused == crd_default("spec.rollout.paused")
    assert bare.progress_deadline == spec_mod.parse_duration(crd_default("spec.rollout.progressDeadline"))
    assert spec_mod.Step(1).pause == spec_mod.parse_duration(crd_default("spec.rollout.steps.[].pause"))
    assert bare.analysis.interval == spec_mod.parse_duration(crd_default("spec.rollout.analysis.interval"))
    assert bare.analysis.failure_limit == crd_default("spec.rollout.analysis.failureLimit")
    assert bare.analysis.inconclusive_limit == crd_default("spec.rollout.analysis.inconclusiveLimit")
    m = bare.monitoring
    assert m.enabled == crd_default("spec.monitoring.enabled")
    assert m.interval == spec_mod.parse_duration(crd_default("spec.monitoring.interval"))
    assert m.false_alarms_per_month == crd_default("spec.monitoring.falseAlarmsPerMonth")
    assert m.min_rows == crd_default("spec.monitoring.minRows")
    assert m.trailing == spec_mod.parse_duration(crd_default("spec.monitoring.trailingWindow"))
    assert m.resolve_after == crd_default("spec.monitoring.resolveAfter")
    signals = m.signals
    for name, key in (("inputDrift", "tolerance"), ("predictionShift", "tolerance"), ("errorRate", "maxShare"),
                      ("latency", "maxShare"), ("accuracy", "maxDrop"), ("estimatedAccuracy", "maxDrop")):
        signal = signals[spec_mod.Signal(name)]
        assert signal.tolerance == crd_default(f"spec.monitoring.{name}.{key}"), name
        assert signal.enabled == crd_default(f"spec.monitoring.{name}.enabled")
        assert signal.dry_run == crd_default(f"spec.monitoring.{name}.dryRun")
    assert signals[spec_mod.Signal.LATENCY].threshold_seconds == spec_mod.parse_duration(
        crd_default("spec.monitoring.latency.threshold"))


def test_a_defaulted_and_an_undefaulted_spec_parse_alike() -> None:
    """What the apiserver stores (defaults filled in) and the bare manifest give the same typed spec,
    except the version key, which hashes the stored form."""
    bare = {"source": {"uri": "file:///m", "sampleUri": "file:///s"}}
    stored = bare | {"conversion": {"targetOpset": 17, "timeout": "10m",
                                    "tolerance": {"absolute": 0.0001, "relative": 0.001, "labelAgreement": 1.0}},
                     "serving": {"minReplicas": 1, "maxReplicas": 1, "protocol": "v2"},
                     "rollout": {"paused": False, "progressDeadline": "10m", "analysis": {
                         "interval": "10s", "failureLimit": 2, "inconclusiveLimit": 3}}}
    a, b = parse_spec(bare), parse_spec(stored)
    assert (a.conversion, a.serving, a.paused, a.progress_deadline, a.analysis) == \
        (b.conversion, b.serving, b.paused, b.progress_deadline, b.analysis)



def test_the_crds_duration_limits_also_hold_for_models_stored_before_them() -> None:
    """The apiserver lets a stored Model keep a value a newer CRD refuses (validation ratcheting):
    a 24h conversion timeout would still hold a conversion slot for a day. The operator applies the
    CRD's limits itself, the same numbers."""
    old = parse_spec({"source": {"uri": "file:///m", "sampleUri": "file:///s"}, "conversion": {"timeout": "24h"},
                      "rollout": {"progressDeadline": "0s"}})
    assert old.conversion.timeout.seconds == 3600 and old.conversion.timeout.text == "1h"
    assert old.progress_deadline == 10
    timeout_rule = schema_at("spec.conversion.timeout")["x-kubernetes-validations"][0]["rule"]
    deadline_rule = schema_at("spec.rollout.progressDeadline")["x-kubernetes-validations"][0]["rule"]
    assert "duration(self) <= duration('1h')" in timeout_rule
    assert "duration(self) >= duration('10s')" in deadline_rule
    within = parse_spec({"source": {"uri": "file:///m", "sampleUri": "file:///s"}, "conversion": {"timeout": "59m"},
                         "rollout": {"progressDeadline": "11s"}})
    assert (within.conversion.timeout.text, within.progress_deadline) == ("59m", 11)


_SCHEMA_KEYWORDS = {"type", "description", "properties", "items", "required", "default", "enum", "format",
                    "minimum", "maximum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "maxProperties",
                    "additionalProperties", "anyOf", "x-kubernetes-validations", "x-kubernetes-int-or-string",
                    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-list-type", "x-kubernetes-list-map-keys"}


def test_the_schema_uses_only_schema_keywords() -> None:
    """A YAML slip (an unquoted comma in a flow mapping) turns prose into keys the apiserver refuses."""
    def walk(node: Any, where: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        bad = [f"{where}.{k}" for k in node if k not in _SCHEMA_KEYWORDS]
        for key in ("properties",):
            bad += [p for name, child in (node.get(key) or {}).items() for p in walk(child, f"{where}.{name}")]
        for key in ("items", "additionalProperties"):
            bad += walk(node.get(key), f"{where}[]")
        return bad

    assert walk(SCHEMA, "") == []
