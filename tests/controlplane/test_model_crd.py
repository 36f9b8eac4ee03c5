"""The Model CRD, served by the real kube-apiserver: schema defaults, printer columns, and
server-side rejection of bad manifests with a message that names the offending field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from serin.local.controlplane import ControlPlane

SHA = "a" * 64
VALID: dict[str, Any] = {
    "apiVersion": "serin.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "fraud"},
    "spec": {
        "source": {
            "uri": "s3://models/fraud/v7/model.joblib",
            "format": "sklearn",
            "sha256": SHA,
            "sampleUri": "s3://models/fraud/v7/sample.csv",
        }
    },
}


def manifest(name: str, **paths: Any) -> str:
    """VALID with dotted paths set (value None deletes the key)."""
    doc = copy.deepcopy(VALID)
    doc["metadata"]["name"] = name
    for dotted, value in paths.items():
        *parents, leaf = dotted.split("__")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return yaml.safe_dump(doc)


def apply(cp: ControlPlane, namespace: str, text: str) -> Any:
    return cp.kubectl("apply", "-n", namespace, "-f", "-", input=text, check=False)


def test_valid_model_round_trips_with_defaults(crds: ControlPlane, namespace: str) -> None:
    out = apply(crds, namespace, manifest("fraud"))
    assert out.returncode == 0, out.stderr
    got = json.loads(crds.kubectl("get", "model", "fraud", "-n", namespace, "-o", "json").stdout)
    spec = got["spec"]
    assert spec["source"] == VALID["spec"]["source"]
    assert spec["conversion"] == {
        "targetOpset": 17, "timeout": "10m",
        "tolerance": {"absolute": 0.0001, "relative": 0.001, "labelAgreement": 1.0},
    }
    assert spec["serving"] == {"minReplicas": 1, "maxReplicas": 1, "protocol": "v2"}
    assert spec["rollout"]["steps"] == [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}]
    assert spec["rollout"]["paused"] is False
    analysis = spec["rollout"]["analysis"]
    assert (analysis["interval"], analysis["failureLimit"], analysis["inconclusiveLimit"]) == ("10s", 2, 3)
    assert [m["builtin"] for m in analysis["metrics"]] == ["errorRate", "latencyP99Seconds", "inputPSI"]


def test_short_name_and_category(crds: ControlPlane, namespace: str) -> None:
    assert apply(crds, namespace, manifest("short")).returncode == 0
    assert "short" in crds.kubectl("get", "mdl", "-n", namespace).stdout
    assert "short" in crds.kubectl("get", "serin", "-n", namespace).stdout


def test_printer_columns_show_rollout_state(crds: ControlPlane, namespace: str) -> None:
    assert apply(crds, namespace, manifest("cols")).returncode == 0
    status = {"status": {"phase": "Progressing", "stable": {"generation": 1},
                         "canary": {"generation": 2, "weight": 10, "step": 0},
                         "monitoring": {"revision": "cols-predictor-00001", "generation": 1, "health": "Drifted",
                                        "startedAt": "2026-12-01T00:00:00Z", "evaluatedAt": "2026-12-01T00:05:00Z"}}}
    crds.kubectl("patch", "model", "cols", "-n", namespace, "--subresource=status",
                 "--type=merge", "-p", json.dumps(status))
    lines = crds.kubectl("get", "models", "-n", namespace).stdout.splitlines()
    assert lines[0].split() == ["NAME", "STABLE", "CANARY", "WEIGHT", "PHASE", "HEALTH", "AGE"]
    assert lines[1].split()[:6] == ["cols", "1", "2", "10", "Progressing", "Drifted"]


# (id, overrides, words the apiserver's message must contain: the field path and the reason)
INVALID = [
    ("no-spec", {"spec": None}, ["spec", "Required"]),
    ("no-source", {"spec__source": None}, ["spec.source", "Required"]),
    ("no-uri", {"spec__source__uri": None}, ["spec.source.uri", "Required"]),
    ("uri-ftp-scheme", {"spec__source__uri": "ftp://host/m.pkl"}, ["spec.source.uri", "scheme"]),
    ("uri-plain-path", {"spec__source__uri": "/models/m.pkl"}, ["spec.source.uri", "scheme"]),
    ("uri-with-space", {"spec__source__uri": "s3://b/my model.pkl"}, ["spec.source.uri", "no spaces"]),
    ("format-unknown", {"spec__source__format": "pytorch"}, ["spec.source.format", "Unsupported value"]),
    ("sha256-short", {"spec__source__sha256": "abc123"}, ["spec.source.sha256", "should match"]),
    ("sha256-not-hex", {"spec__source__sha256": "z" * 64}, ["spec.source.sha256", "should match"]),
    ("no-sample", {"spec__source__sampleUri": None}, ["spec.source.sampleUri", "Required"]),
    ("sample-http", {"spec__source__sampleUri": "http://x/s.csv"}, ["spec.source.sampleUri", "scheme"]),
    ("opset-too-low", {"spec__conversion__targetOpset": 3}, ["spec.conversion.targetOpset", "greater than or equal to 9"]),
    ("opset-string", {"spec__conversion__targetOpset": "17"}, ["spec.conversion.targetOpset", "integer"]),
    ("tolerance-negative", {"spec__conversion__tolerance": {"absolute": -1}}, ["spec.conversion.tolerance.absolute", "greater than or equal to 0"]),
    ("label-agreement-above-1", {"spec__conversion__tolerance": {"labelAgreement": 1.5}}, ["spec.conversion.tolerance.labelAgreement", "less than or equal to 1"]),
    ("conversion-timeout-words", {"spec__conversion__timeout": "ten minutes"}, ["spec.conversion.timeout", "should match"]),
    # A conversion holds one of a few slots while it runs: a day-long timeout lets four sleeping
    # pickles hold them all for a day.
    ("conversion-timeout-over-1h", {"spec__conversion__timeout": "61m"}, ["spec.conversion.timeout", "between 1s and 1h"]),
    ("conversion-timeout-zero", {"spec__conversion__timeout": "0s"}, ["spec.conversion.timeout", "between 1s and 1h"]),
    ("progress-deadline-zero", {"spec__rollout": {"progressDeadline": "0s"}}, ["spec.rollout.progressDeadline", "at least 10s"]),
    ("progress-deadline-9s", {"spec__rollout": {"progressDeadline": "9s"}}, ["spec.rollout.progressDeadline", "at least 10s"]),
    ("min-above-max-replicas", {"spec__serving": {"minReplicas": 3, "maxReplicas": 2}}, ["spec.serving.minReplicas", "maxReplicas"]),
    ("max-replicas-zero", {"spec__serving": {"maxReplicas": 0}}, ["spec.serving.maxReplicas", "greater than or equal to 1"]),
    ("protocol-grpc", {"spec__serving": {"protocol": "grpc"}}, ["spec.serving.protocol", "Unsupported value"]),
    ("step-weight-zero", {"spec__rollout": {"steps": [{"weight": 0}]}}, ["spec.rollout.steps[0].weight", "greater than or equal to 1"]),
    ("step-weight-100", {"spec__rollout": {"steps": [{"weight": 100}]}}, ["spec.rollout.steps[0].weight", "less than or equal to 99"]),
    ("steps-decreasing", {"spec__rollout": {"steps": [{"weight": 50}, {"weight": 10}]}}, ["spec.rollout.steps", "strictly increasing"]),
    ("steps-repeated", {"spec__rollout": {"steps": [{"weight": 10}, {"weight": 10}]}}, ["spec.rollout.steps", "strictly increasing"]),
    ("steps-too-many", {"spec__rollout": {"steps": [{"weight": w} for w in range(1, 23)]}}, ["spec.rollout.steps", "must have at most 20 items"]),
    ("step-pause-words", {"spec__rollout": {"steps": [{"weight": 10, "pause": "30 seconds"}]}}, ["spec.rollout.steps[0].pause", "should match"]),
    ("interval-too-short", {"spec__rollout": {"analysis": {"interval": "100ms"}}}, ["spec.rollout.analysis.interval", "between 1s and 1h"]),
    ("failure-limit-zero", {"spec__rollout": {"analysis": {"failureLimit": 0}}}, ["spec.rollout.analysis.failureLimit", "greater than or equal to 1"]),
    ("metric-builtin-and-query", {"spec__rollout": {"analysis": {"metrics": [{"name": "m", "builtin": "errorRate", "query": "up", "max": 1}]}}}, ["spec.rollout.analysis.metrics[0]", "exactly one of builtin or query"]),
    ("metric-neither", {"spec__rollout": {"analysis": {"metrics": [{"name": "m", "max": 1}]}}}, ["spec.rollout.analysis.metrics[0]", "exactly one of builtin or query"]),
    ("metric-no-bound", {"spec__rollout": {"analysis": {"metrics": [{"name": "m", "builtin": "errorRate"}]}}}, ["spec.rollout.analysis.metrics[0]", "at least one of min or max"]),
    ("metric-min-above-max", {"spec__rollout": {"analysis": {"metrics": [{"name": "m", "query": "up", "min": 2, "max": 1}]}}}, ["spec.rollout.analysis.metrics[0].min", "less than or equal to max"]),
    ("metric-builtin-unknown", {"spec__rollout": {"analysis": {"metrics": [{"name": "m", "builtin": "f1Score", "max": 1}]}}}, ["spec.rollout.analysis.metrics[0].builtin", "Unsupported value"]),
    ("metric-confidence-elsewhere", {"spec__rollout": {"analysis": {"metrics": [{"name": "m", "builtin": "errorRate", "max": 0.01, "confidence": 0.95}]}}}, ["spec.rollout.analysis.metrics[0].confidence", "only to the builtins accuracy, estimatedAccuracy and meanAbsoluteError"]),
    ("metric-confidence-one", {"spec__rollout": {"analysis": {"metrics": [{"name": "m", "builtin": "accuracy", "min": -0.01, "confidence": 1}]}}}, ["spec.rollout.analysis.metrics[0].confidence", "must be at least 0.5 and below 1"]),
    ("metric-duplicate-name", {"spec__rollout": {"analysis": {"metrics": [{"name": "m", "builtin": "errorRate", "max": 1}, {"name": "m", "builtin": "inputPSI", "max": 1}]}}}, ["spec.rollout.analysis.metrics[1]", "Duplicate value"]),
    ("metric-dry-run-string", {"spec__rollout": {"analysis": {"metrics": [{"name": "m", "builtin": "inputDriftPValue", "min": 0.01, "dryRun": "yes"}]}}}, ["spec.rollout.analysis.metrics[0].dryRun", "boolean"]),
    ("metric-name-uppercase", {"spec__rollout": {"analysis": {"metrics": [{"name": "Errors", "builtin": "errorRate", "max": 1}]}}}, ["spec.rollout.analysis.metrics[0].name", "should match"]),
    ("sample-labels-empty", {"spec__source__sampleLabels": ""}, ["spec.source.sampleLabels", "at least 1 chars long"]),
    ("unknown-field", {"spec__source__url": "s3://typo/m.pkl"}, ["spec.source.url", "unknown field"]),
    ("s3-on-claims", {"spec__source__uri": "pvc://m/a.joblib", "spec__source__sampleUri": "pvc://m/s.csv", "spec__source__s3": {"secretName": "k"}}, ["spec.source", "applies to s3:// URIs only"]),
    ("s3-endpoint-with-path", {"spec__source__s3": {"endpoint": "http://s3.local:7070/bucket"}}, ["spec.source.s3.endpoint", "with no path"]),
    ("s3-endpoint-no-scheme", {"spec__source__s3": {"endpoint": "s3.local:7070"}}, ["spec.source.s3.endpoint", "http://HOST[:PORT]"]),
    ("s3-addressing-unknown", {"spec__source__s3": {"addressing": "dns"}}, ["spec.source.s3.addressing", "Unsupported value"]),
    ("s3-secret-name-invalid", {"spec__source__s3": {"secretName": "Team_Keys"}}, ["spec.source.s3.secretName", "should match"]),
    ("s3-secret-serins-feedback", {"spec__source__s3": {"secretName": "fraud-serin-feedback"}}, ["spec.source.s3.secretName", "one of Serin's feedback Secrets"]),
    ("capture-share-zero", {"spec__serving": {"capture": {"share": 0, "uri": "s3://bk1/c"}}}, ["spec.serving.capture.share", "above 0 and at most 1"]),
    ("capture-no-uri", {"spec__serving": {"capture": {"share": 0.1}}}, ["spec.serving.capture.uri", "Required value"]),
    ("capture-on-a-claim", {"spec__serving": {"capture": {"share": 0.1, "uri": "pvc://store/c"}}}, ["spec.serving.capture.uri", "s3://BUCKET[/PREFIX]"]),
    ("capture-retention-10m", {"spec__serving": {"capture": {"share": 0.1, "uri": "s3://bk1/c", "retention": "10m"}}}, ["spec.serving.capture.retention", "between 1h and 8760h"]),
    ("capture-flush-500ms", {"spec__serving": {"capture": {"share": 0.1, "uri": "s3://bk1/c", "flushInterval": "500ms"}}}, ["spec.serving.capture.flushInterval", "between 1s and 1h"]),
    ("capture-keys-from-feedback", {"spec__serving": {"capture": {"share": 0.1, "uri": "s3://bk1/c", "s3": {"secretName": "x-serin-feedback-sender"}}}}, ["spec.serving.capture.s3.secretName", "one of Serin's feedback Secrets"]),
    ("monitoring-budget-zero", {"spec__monitoring": {"falseAlarmsPerMonth": 0}}, ["spec.monitoring.falseAlarmsPerMonth", "above 0 and at most 10"]),
    ("monitoring-interval-5s", {"spec__monitoring": {"interval": "5s"}}, ["spec.monitoring.interval", "between 10s and 24h"]),
    ("monitoring-trailing-shorter", {"spec__monitoring": {"interval": "10m", "trailingWindow": "5m"}}, ["spec.monitoring", "trailingWindow must be at least one interval"]),
    ("monitoring-tolerance-negative", {"spec__monitoring": {"inputDrift": {"tolerance": -0.1}}}, ["spec.monitoring.inputDrift.tolerance", "above 0"]),
    ("monitoring-share-one", {"spec__monitoring": {"errorRate": {"maxShare": 1}}}, ["spec.monitoring.errorRate.maxShare", "below 1"]),
    ("monitoring-latency-10s", {"spec__monitoring": {"latency": {"threshold": "10s"}}}, ["spec.monitoring.latency.threshold", "at most 5s"]),
    ("monitoring-accuracy-min-above-1", {"spec__monitoring": {"accuracy": {"min": 1.5}}}, ["spec.monitoring.accuracy", "min must be above 0 and below 1"]),
    ("monitoring-min-rows-zero", {"spec__monitoring": {"minRows": 0}}, ["spec.monitoring.minRows", "greater than or equal to 1"]),
    ("monitoring-baseline-unknown", {"spec__monitoring": {"baseline": {"from": "yesterday"}}}, ["spec.monitoring.baseline.from", "Unsupported value"]),
    ("monitoring-baseline-5m", {"spec__monitoring": {"baseline": {"from": "trailing", "window": "5m"}}}, ["spec.monitoring.baseline.window", "between 10m and 168h"]),
    ("monitoring-last-week-25h", {"spec__monitoring": {"baseline": {"from": "lastWeek", "window": "25h"}}}, ["spec.monitoring.baseline", "at most 24h with from: lastWeek"]),
    ("monitoring-unknown-signal", {"spec__monitoring": {"inputDrfit": {"tolerance": 0.1}}}, ["spec.monitoring.inputDrfit", "unknown field"]),
    ("retrain-no-template", {"spec__monitoring": {"retrain": {"for": "1h"}}}, ["spec.monitoring.retrain.template", "Required value"]),
    ("retrain-no-containers", {"spec__monitoring": {"retrain": {"template": {"spec": {"template": {"spec": {"serviceAccountName": "bad-trainer"}}}}}}}, ["spec.monitoring.retrain.template.spec.template.spec.containers", "Required value"]),
    ("retrain-no-image", {"spec__monitoring": {"retrain": {"template": {"spec": {"template": {"spec": {"serviceAccountName": "bad-trainer", "containers": [{"name": "t"}]}}}}}}}, ["spec.monitoring.retrain.template.spec.template.spec.containers[0].image", "Required value"]),
    ("retrain-restart-always", {"spec__monitoring": {"retrain": {"template": {"spec": {"template": {"spec": {"serviceAccountName": "bad-trainer", "restartPolicy": "Always", "containers": [{"name": "t", "image": "i"}]}}}}}}}, ["spec.monitoring.retrain.template.spec.template.spec.restartPolicy", "Unsupported value"]),
    ("retrain-no-service-account", {"spec__monitoring": {"retrain": {"template": {"spec": {"template": {"spec": {"containers": [{"name": "t", "image": "i"}]}}}}}}}, ["spec.monitoring.retrain.template.spec.template.spec.serviceAccountName", "Required value"]),
    ("retrain-another-service-account", {"spec__monitoring": {"retrain": {"template": {"spec": {"template": {"spec": {"serviceAccountName": "admin", "containers": [{"name": "t", "image": "i"}]}}}}}}}, ["must be the Model's name followed by -trainer"]),
    ("retrain-cooldown-10s", {"spec__monitoring": {"retrain": {"cooldown": "10s", "template": {"spec": {"template": {"spec": {"serviceAccountName": "bad-trainer", "containers": [{"name": "t", "image": "i"}]}}}}}}}, ["spec.monitoring.retrain.cooldown", "between 1m and 8760h"]),
    ("retrain-conditions-unknown", {"spec__monitoring": {"retrain": {"conditions": ["Degraded"], "template": {"spec": {"template": {"spec": {"serviceAccountName": "bad-trainer", "containers": [{"name": "t", "image": "i"}]}}}}}}}, ["spec.monitoring.retrain.conditions[0]", "Unsupported value"]),
    ("retrain-approval-unknown", {"spec__monitoring": {"retrain": {"approval": "Auto", "template": {"spec": {"template": {"spec": {"serviceAccountName": "bad-trainer", "containers": [{"name": "t", "image": "i"}]}}}}}}}, ["spec.monitoring.retrain.approval", "Unsupported value"]),
    ("retrain-window-30m", {"spec__monitoring": {"retrain": {"window": "30m", "template": {"spec": {"template": {"spec": {"serviceAccountName": "bad-trainer", "containers": [{"name": "t", "image": "i"}]}}}}}}}, ["spec.monitoring.retrain.window", "between 1h and 8760h"]),
    ("notify-no-url", {"spec__notify": {"sinks": [{"name": "ops"}]}}, ["spec.notify.sinks[0]", "exactly one of url and urlSecretKey"]),
    ("notify-url-and-key", {"spec__notify": {"sinks": [{"name": "ops", "url": "https://h/x", "urlSecretKey": "u"}]}}, ["spec.notify.sinks[0]", "exactly one of url and urlSecretKey"]),
    ("notify-url-ftp", {"spec__notify": {"sinks": [{"name": "ops", "url": "ftp://h/x"}]}}, ["spec.notify.sinks[0].url", "http:// or https:// URL"]),
    ("notify-url-credentials", {"spec__notify": {"sinks": [{"name": "ops", "url": "https://user:pw@h/x"}]}}, ["spec.notify.sinks[0].url", "belong in the Secret serin-notify"]),
    ("notify-url-no-host", {"spec__notify": {"sinks": [{"name": "ops", "url": "http://:8080/x"}]}}, ["spec.notify.sinks[0].url", "http:// or https:// URL"]),
    ("notify-sink-name", {"spec__notify": {"sinks": [{"name": "Ops", "url": "https://h/x"}]}}, ["spec.notify.sinks[0].name", "should match"]),
    ("notify-sink-twice", {"spec__notify": {"sinks": [{"name": "ops", "url": "https://h/x"}, {"name": "ops", "url": "https://h/y"}]}}, ["spec.notify.sinks[1]", "Duplicate value"]),
    ("notify-event-unknown", {"spec__notify": {"sinks": [{"name": "ops", "url": "https://h/x", "events": ["StepAdvanced"]}]}}, ["spec.notify.sinks[0].events[0]", "Unsupported value"]),
    ("notify-format-unknown", {"spec__notify": {"sinks": [{"name": "ops", "url": "https://h/x", "format": "Teams"}]}}, ["spec.notify.sinks[0].format", "Unsupported value"]),
    ("notify-key-path", {"spec__notify": {"sinks": [{"name": "ops", "url": "https://h/x", "signingSecretKey": "../k"}]}}, ["spec.notify.sinks[0].signingSecretKey", "should match"]),
]


@pytest.mark.parametrize(("overrides", "expected"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_model_is_rejected_server_side(
    crds: ControlPlane, namespace: str, overrides: dict[str, Any], expected: list[str]
) -> None:
    # Server-side dry run: the verdict is the apiserver's (OpenAPI schema + CEL), not kubectl's.
    out = crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                       input=manifest("bad", **overrides), check=False)
    assert out.returncode != 0, f"accepted: {out.stdout}"
    for word in expected:
        assert word in out.stderr, f"{word!r} not in apiserver message:\n{out.stderr}"
    # Nothing was stored.
    assert crds.kubectl("get", "model", "bad", "-n", namespace, check=False).returncode != 0


# A Model's name names its InferenceService (KServe takes only a DNS-1035 label, and used to refuse
# it only after a conversion had been spent) and is the first label of its hostname
# {model}.{namespace}.{domain}: refused at apply, naming the field.
@pytest.mark.parametrize("name", ["fraud.v2", "a" * 64, "7fraud", "fraud-", "Fraud"])
def test_a_name_that_is_not_a_dns_label_is_refused(crds: ControlPlane, namespace: str, name: str) -> None:
    out = crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest(name), check=False)
    assert out.returncode != 0, f"accepted: {out.stdout}"
    # "Fraud" is refused by the apiserver itself (not even a DNS subdomain); the others by the CRD.
    assert ("metadata.name" in out.stderr and "DNS" in out.stderr), out.stderr


@pytest.mark.parametrize("name", ["a", "fraud-v2", "x" * 63])
def test_a_dns_label_name_is_accepted(crds: ControlPlane, namespace: str, name: str) -> None:
    out = crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest(name), check=False)
    assert out.returncode == 0, out.stderr


def test_valid_manifest_passes_the_same_dry_run(crds: ControlPlane, namespace: str) -> None:
    """The negative table is only meaningful if its baseline is accepted by the same path."""
    out = crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest("good"))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("overrides", [
    {"spec__conversion__timeout": "1h", "spec__rollout": {"progressDeadline": "10s"}},
    {"spec__conversion__timeout": "1s", "spec__rollout": {"progressDeadline": "24h"}},
    {"spec__monitoring": {"baseline": {"from": "lastWeek", "window": "24h"}}},
    {"spec__monitoring": {"baseline": {"from": "trailing", "window": "168h"}}},
    {"spec__monitoring": {"baseline": {"from": "trailing", "window": "10m"}}},
    {"spec__source__s3": {"endpoint": "https://s3.eu-west-1.amazonaws.com", "region": "eu-west-1",
                          "addressing": "virtual", "verifyTls": True, "secretName": "team.s3-keys"}},
    {"spec__source__uri": "pvc://m/a.joblib", "spec__source__s3": {"endpoint": "http://10.250.0.1:7070"}},
    {"spec__serving": {"capture": {"share": 1, "uri": "s3://team-a.models", "retention": "8760h", "flushInterval": "1s",
                                   "s3": {"endpoint": "http://s3.storage:7070", "secretName": "team-a-s3"}}}},
    {"spec__serving": {"capture": {"share": 0.001, "uri": "s3://bk1/capture/fraud", "retention": "1h",
                                   "flushInterval": "1h"}}},
], ids=["longest-timeout-shortest-deadline", "shortest-timeout-long-deadline", "last-week-24h", "trailing-168h",
        "trailing-10m", "s3-every-field", "s3-for-the-sample-only", "capture-every-field", "capture-bounds"])
def test_duration_limits_accept_their_bounds(crds: ControlPlane, namespace: str, overrides: dict[str, Any]) -> None:
    out = crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=manifest("edge", **overrides),
                       check=False)
    assert out.returncode == 0, out.stderr


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "examples").rglob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[f"{p.parent.name}/{p.stem}" for p in EXAMPLES])
def test_examples_are_valid(crds: ControlPlane, namespace: str, path: Path) -> None:
    """Every example passes the schema; the local platform's name their namespace (`models`) and
    are applied as they are (tests/cluster/test_dev_cluster.py serves them)."""
    if path.parent.name == "platform":
        crds.kubectl("create", "namespace", "models", check=False)
        out = crds.kubectl("apply", "--dry-run=server", "-f", str(path), check=False)
    else:
        out = crds.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert out.returncode == 0, out.stderr
