"""The adapters' pure parts: InferenceService bodies and patches, KServe status → observation,
Prometheus responses → measurements, conversion Job bodies and Pod reports, PromQL validity."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from serin.operator import gateway_metrics
from serin.operator.executors import ConversionRequest, result_from_summary
from serin.operator.executors.base import REQUEST_ENV
from serin.operator.executors.job import (
    JobSettings,
    job_body,
    job_name,
    parse_store_s3,
    result_from_pod,
    storage_uri,
)
from serin.operator.prometheus import parse_response
from serin.operator.queries import QueryContext, builtin_query, render, window_for
from serin.operator.spec import MetricSpec, parse_duration, parse_spec

SPEC = parse_spec({"source": {"uri": "file:///m.joblib", "sampleUri": "file:///s.csv"},
                   "serving": {"minReplicas": 1, "maxReplicas": 3, "protocol": "v2"}})
OWNER = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "name": "fraud", "uid": "u1", "controller": True}


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1.5m", 90)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "s", "1m 30s", "-1s", "1d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("body", "value", "error"), [
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "0.25"]}]}}, 0.25, ""),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}, 3.0, ""),
    ({"status": "success", "data": {"resultType": "vector", "result": []}}, None, ""),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "NaN"]}]}}, None, ""),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "1"]}, {"value": [1, "2"]}]}}, None,
     "query returned 2 series; aggregate it to one"),
    ({"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}, None, "prometheus error: parse error at char 5"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, None, "unsupported result type 'matrix'"),
    ("<html>", None, "prometheus error: unexpected response"),
    ({"status": "success", "data": {"resultType": "scalar", "result": None}}, None,
     "prometheus error: malformed scalar result"),
], ids=["vector", "scalar", "no-series", "nan", "many-series", "error", "matrix", "not-json-object", "bad-scalar"])
def test_prometheus_responses(body: object, value: float | None, error: str) -> None:
    m = parse_response("x", body)
    assert (m.value, m.error) == (value, error)


REQ_SPEC = parse_spec({"source": {"uri": "s3://b/m.joblib", "sampleUri": "s3://b/s.csv", "sha256": "a" * 64,
                                   "format": "sklearn"},
                        "conversion": {"targetOpset": 17, "timeout": "5m", "tolerance": {"absolute": 0.0001}}})
REQ = ConversionRequest("ml", "fraud", "uid-1", 7, "abcdef0123456789", 1, REQ_SPEC.source, REQ_SPEC.conversion)


def test_conversion_job_is_locked_down() -> None:
    settings = JobSettings(image="ghcr.io/serin/converter:0.1.0", model_store="pvc://models/serin")
    job = job_body(REQ, settings)
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "serin-converter"
    assert pod["securityContext"]["runAsNonRoot"] is True
    steps = [*pod["initContainers"], *pod["containers"]]
    assert [c["name"] for c in steps] == ["fetch", "convert", "publish"]
    for container in steps:
        # Nothing writable on the import path (-P, workingDir /), and the untrusted step's /tmp its
        # own: with a shared /tmp as the working directory, `python -m` would import what convert
        # left there into publish (found by review).
        assert container["command"] == ["python", "-P", "-m", "serin.converters.job", container["name"]]
        assert container["workingDir"] == "/"
        tmp = next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert tmp == ("convert-tmp" if container["name"] == "convert" else "tmp")
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}
        assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert job["spec"]["activeDeadlineSeconds"] == 300 and job["spec"]["backoffLimit"] == 0
    env = {e["name"]: e["value"] for e in steps[-1]["env"]}
    request = json.loads(env[REQUEST_ENV])
    # publish writes the Model version's directory, which is all of the store its Pod mounts
    assert request["out"] == "/mnt/serin-store"
    assert request["source"]["sha256"] == "a" * 64 and request["conversion"]["tolerance"]["absolute"] == 0.0001
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job_name(REQ) == "serin-convert-fraud-g7-abcdef01-a1"
    assert storage_uri(REQ, settings) == "pvc://models/serin/ml/fraud-g7-abcdef01"


def test_only_the_trusted_publish_step_mounts_the_store_and_only_its_own_directory() -> None:
    """Issue 32 #1 and #2: the step that unpickles (convert) mounts neither the store nor a source
    claim, and reads its input read-only; publish mounts the store at the version's directory."""
    spec = parse_spec({"source": {"uri": "pvc://sources/m.joblib", "sampleUri": "pvc://sources/s.csv"}})
    req = ConversionRequest("ml", "fraud", "uid-1", 7, "abcdef0123456789", 2, spec.source, spec.conversion)
    pod = job_body(req, JobSettings(image="i", model_store="pvc://models/serin"))["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    fetch, convert = pod["initContainers"]
    (publish,) = pod["containers"]

    def mounts(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {m["name"]: m for m in c["volumeMounts"]}

    assert not set(mounts(convert)) & set(claims), "the unpickling step must mount no claim"
    assert mounts(convert)["input"]["readOnly"] is True and mounts(convert)["output"]["readOnly"] is False
    assert {claims[n] for n in mounts(fetch) if n in claims} == {"sources"}
    assert all(m["readOnly"] for n, m in mounts(fetch).items() if n in claims)
    store = [m for n, m in mounts(publish).items() if n in claims]
    assert store == [{"name": "store", "mountPath": "/mnt/serin-store", "subPath": "serin/ml/fraud-g7-abcdef01-a2"}]
    assert mounts(publish)["output"]["readOnly"] is True
    assert all("env" not in c or all("valueFrom" not in e for e in c["env"]) for c in (fetch, convert, publish))


def test_only_the_fetch_step_gets_the_s3_keys_and_from_the_models_own_secret() -> None:
    """Issue 32 #2: credentials per namespace, to the trusted step only. The kubelet reads them from
    the Secret the Model names, in the Model's namespace; the operator never reads a Secret."""
    spec = parse_spec({"source": {"uri": "s3://team-a/m.joblib", "sampleUri": "s3://team-a/s.csv",
                                  "s3": {"endpoint": "http://s3.storage:7070", "region": "eu-west-1",
                                         "secretName": "team-a-s3"}}})
    req = ConversionRequest("team-a", "fraud", "uid-1", 7, "abcdef0123456789", 1, spec.source, spec.conversion)
    pod = job_body(req, JobSettings(image="i"))["spec"]["template"]["spec"]
    fetch, convert = pod["initContainers"]
    (publish,) = pod["containers"]
    secret_env = [e for e in fetch["env"] if "valueFrom" in e]
    assert secret_env == [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "team-a-s3", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": "team-a-s3", "key": "AWS_SECRET_ACCESS_KEY"}}},
        {"name": "AWS_SESSION_TOKEN",
         "valueFrom": {"secretKeyRef": {"name": "team-a-s3", "key": "AWS_SESSION_TOKEN", "optional": True}}},
    ]
    assert all("valueFrom" not in e for c in (convert, publish) for e in c["env"])
    # The settings travel in the request, as the Model's spec.source.s3 reads (absent fields absent).
    request = json.loads(next(e["value"] for e in fetch["env"] if e["name"] == REQUEST_ENV))
    assert request["source"]["s3"] == {"endpoint": "http://s3.storage:7070", "region": "eu-west-1",
                                       "secretName": "team-a-s3", "verifyTls": True}
    # Without a Secret: no keys at all (anonymous requests), and never the node's identity.
    anonymous = parse_spec({"source": {"uri": "s3://public/m.onnx", "sampleUri": "s3://public/s.csv"}})
    req = ConversionRequest("team-a", "m", "uid-1", 1, "abcdef0123456789", 1, anonymous.source, anonymous.conversion)
    pod = job_body(req, JobSettings(image="i"))["spec"]["template"]["spec"]
    assert all("valueFrom" not in e for c in pod["initContainers"] for e in c["env"])


def test_a_fetch_step_that_cannot_read_its_secret_names_the_field() -> None:
    pod = {"status": {"initContainerStatuses": [{"name": "fetch", "state": {"waiting": {
        "reason": "CreateContainerConfigError", "message": 'secret "team-a-s3" not found'}}}]}}
    result = result_from_pod(pod, "pvc://x")
    assert result is not None and result.retryable
    assert 'secret "team-a-s3" not found (the Secret named by spec.source.s3.secretName)' in (result.reason or "")


@pytest.mark.parametrize(("source", "sample", "claims"), [
    pytest.param("s3://b/m.joblib", "s3://b/s.csv", [], id="no-claim"),
    pytest.param("pvc://models/fraud/m.joblib", "pvc://models/fraud/s.csv", ["models"], id="one-claim-mounted-once"),
    pytest.param("pvc://models/m.joblib", "pvc://samples/s.csv", ["models", "samples"], id="two-claims"),
    pytest.param("s3://b/m.joblib", "pvc://samples/s.csv", ["samples"], id="sample-on-a-claim"),
])
def test_pvc_sources_are_mounted_read_only_where_the_converter_reads_them(source: str, sample: str,
                                                                        claims: list[str]) -> None:
    spec = parse_spec({"source": {"uri": source, "sampleUri": sample}})
    req = ConversionRequest("ml", "fraud", "uid-1", 7, "abcdef0123456789", 1, spec.source, spec.conversion)
    pod = job_body(req, JobSettings(image="i"))["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in pod["initContainers"][0]["volumeMounts"] if m["mountPath"].startswith("/mnt/pvc/")]
    assert [m["mountPath"] for m in mounts] == [f"/mnt/pvc/{c}" for c in claims]
    assert all(m["readOnly"] for m in mounts)
    assert [volumes[m["name"]]["persistentVolumeClaim"] for m in mounts] == \
        [{"claimName": c, "readOnly": True} for c in claims]


def pod_with(message: str, exit_code: int = 0) -> dict[str, Any]:
    return {"status": {"containerStatuses": [{"state": {"terminated": {
        "exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error", "message": message}}}]}}


def test_pod_report_read_back() -> None:
    ok = result_from_pod(pod_with(json.dumps({"passed": True, "onnxSha256": "f" * 64})), "pvc://m/x")
    assert ok is not None and (ok.state, ok.storageUri, ok.sha256) == ("Succeeded", "pvc://m/x", "f" * 64)
    bad = result_from_pod(pod_with(json.dumps({"passed": False, "reason": "label agreement 0.91 < 1.0"}), 1), "u")
    assert bad is not None and (bad.state, bad.reason) == ("Failed", "label agreement 0.91 < 1.0")
    crashed = result_from_pod(pod_with("", 137), "u")
    assert crashed is not None and crashed.state == "Failed" and "exit" in crashed.reason and "137" in crashed.reason
    assert result_from_pod({"status": {"containerStatuses": [{"state": {"running": {}}}]}}, "u") is None
    assert result_from_pod({"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}},
                           "u") is None
    missing = result_from_pod({"status": {"containerStatuses": [{"image": "ghcr.io/serin/converter:nope", "state": {
        "waiting": {"reason": "ErrImageNeverPull", "message": 'Container image "ghcr.io/serin/converter:nope" is not '
                    "present with pull policy of Never"}}}]}}, "u")
    assert missing is not None and missing.state == "Failed" and missing.retryable
    assert missing.reason.startswith("the converter container cannot start: ErrImageNeverPull: Container image")
    assert result_from_summary(None, "u").reason == "the conversion ended without a report"


def steps_pod(convert: dict[str, Any], publish: dict[str, Any] | None = None) -> dict[str, Any]:
    done = {"state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": ""}}}
    return {"status": {"initContainerStatuses": [{"name": "fetch", **done}, {"name": "convert", **convert}],
                       "containerStatuses": [{"name": "publish", **(publish or {"state": {"waiting": {
                           "reason": "PodInitializing"}}})}]}}


def test_only_the_publish_step_can_say_a_conversion_passed() -> None:
    """The convert step runs the artifact's code: its termination message is read for why it
    failed, never for a pass, and a pass it claims while exiting 0 is not the result either."""
    claims = json.dumps({"passed": True, "onnxSha256": "e" * 64})
    lying = result_from_pod(steps_pod({"state": {"terminated": {"exitCode": 1, "message": claims}}}), "u")
    assert lying is not None and lying.state == "Failed"
    honest = result_from_pod(steps_pod({"state": {"terminated": {"exitCode": 1, "message": json.dumps(
        {"passed": False, "reason": "parity failed: 3 of 200 rows"})}}}), "u")
    assert honest is not None and (honest.state, honest.reason) == ("Failed", "parity failed: 3 of 200 rows")
    oom = result_from_pod(steps_pod({"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}), "u")
    assert oom is not None and oom.reason == "the convert step exited with code 137 (OOMKilled)"
    # exit 0 with a message claiming a pass: publish, still initialising, decides; nothing yet
    assert result_from_pod(steps_pod({"state": {"terminated": {"exitCode": 0, "message": claims}}}), "u") is None
    published = result_from_pod(steps_pod({"state": {"terminated": {"exitCode": 0, "message": claims}}},
                                          {"state": {"terminated": {"exitCode": 0, "message": json.dumps(
                                              {"passed": True, "onnxSha256": "f" * 64})}}}), "pvc://m/x")
    assert published is not None and (published.state, published.sha256) == ("Succeeded", "f" * 64)
    assert result_from_summary({"reason": "no verdict"}, "u").reason == "the conversion's report is malformed"


def promtool() -> str:
    found = shutil.which("promtool", path=os.environ.get("SERIN_BIN", "") + os.pathsep + os.environ.get("PATH", ""))
    assert found, "promtool (Debian package prometheus, installed by hack/provision.sh) is not on PATH"
    return found


def test_builtin_queries_are_valid_promql(tmp_path: Path) -> None:
    """Checked by Prometheus' own parser, so a typo in a query template fails here, not mid-rollout."""
    ctx = QueryContext("fraud", "ml", "fraud-predictor-00002", "fraud-predictor-00001", window_for(10))
    exprs = [builtin_query(b, ctx) for b in
             ("errorRate", "latencyP99Seconds", "inputPSI", "inputDriftPValue", "predictionShift")]
    exprs.append(gateway_metrics.Traefik('namespace="traefik",job=~"traefik|gw"').error_share(
        "ml", "fraud-gen2-predictor", 80, window_for(10)))
    exprs.append(render(MetricSpec("biz", query='sum(rate(x{revision="{{revision}}"}[1m]))', min=1), ctx))
    rules = {"groups": [{"name": "serin", "rules": [{"record": f"serin:check{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "7 rules found" in out.stdout
    assert "{{" not in exprs[-1] and 'revision="fraud-predictor-00002"' in exprs[-1]


@pytest.mark.parametrize("builtin", ["errorRate", "latencyP99Seconds", "inputPSI", "inputDriftPValue",
                                     "predictionShift"])
def test_every_builtin_selector_is_scoped_to_the_models_namespace(builtin: str) -> None:
    """Revision names repeat across namespaces (`<isvc>-predictor-00002`); a selector without the
    namespace lets a namesake's series answer for the canary."""
    ctx = QueryContext("fraud", "ml", "fraud-predictor-00002", "fraud-predictor-00001", window_for(10))
    selectors = re.findall(r"serin_\w+\{([^}]*)\}", builtin_query(builtin, ctx))
    assert selectors
    assert all('namespace="ml"' in sel and 'model="fraud"' in sel for sel in selectors), selectors


async def test_local_executor_reports_a_crash_without_report(tmp_path: Path) -> None:
    """A conversion that dies without writing its summary fails with its last log line."""
    from serin.operator.executors import LocalExecutor

    executor = LocalExecutor(tmp_path, python=str(tmp_path / "fake-python"))
    (tmp_path / "fake-python").write_text("#!/bin/sh\necho 'Fatal Python error: Aborted' >&2\nkill -ABRT $$\n")
    (tmp_path / "fake-python").chmod(0o755)
    assert (await executor.poll(REQ)).state == "Missing"
    await executor.start(REQ)
    for _ in range(100):
        result = await executor.poll(REQ)
        if result.state != "Running":
            break
        import asyncio
        await asyncio.sleep(0.05)
    assert result.state == "Failed"
    assert result.reason == "the conversion process exited without a report: Fatal Python error: Aborted"


@pytest.mark.parametrize(("old", "new", "patch"), [
    ({}, {"phase": "Converting"}, {"phase": "Converting"}),
    ({"pending": {"attempt": 2, "retryAt": "t"}}, {"pending": {"attempt": 2}}, {"pending": {"attempt": 2, "retryAt": None}}),
    ({"canary": {"step": 1}, "phase": "Progressing"}, {"canary": None, "phase": "Promoted"}, {"canary": None, "phase": "Promoted"}),
    ({"stable": {"revision": "r1"}}, {}, {"stable": None}),
    ({"analysis": [{"a": 1}, {"a": 2}]}, {"analysis": [{"a": 2}]}, {"analysis": [{"a": 2}]}),  # lists are replaced
    ({"canary": "x"}, {"canary": {"step": 0}}, {"canary": {"step": 0}}),
])
def test_status_merge_patch_removes_what_is_gone(old: dict, new: dict, patch: dict) -> None:
    from serin.operator.kube import merge_patch

    assert merge_patch(old, new) == patch


def test_status_merge_patch_round_trips() -> None:
    """Applying the patch to the old document (RFC 7386) gives exactly the new one."""
    from serin.operator.kube import merge_patch

    def apply(target: Any, patch: Any) -> Any:
        if not isinstance(patch, dict):
            return patch
        out = dict(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = apply(out.get(k), v)
        return out

    old = {"phase": "Converting", "pending": {"generation": 1, "attempt": 2, "retryAt": "t"},
           "conversion": {"passed": False, "reason": "x"}, "analysis": [1, 2]}
    new = {"phase": "Promoted", "stable": {"generation": 1}, "conversion": {"passed": True}, "analysis": []}
    assert apply(old, merge_patch(old, new)) == new


# -- conversion Job names: unique per version and attempt, valid whatever the Model's name ----------

# A Job's name becomes its Pods' job-name label: a DNS-1123 label of at most 63 characters.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def conversion(name: str, generation: int = 7, attempt: int = 1, key: str = "abcdef0123456789") -> ConversionRequest:
    return ConversionRequest("ml", name, "uid-1", generation, key, attempt, REQ_SPEC.source, REQ_SPEC.conversion)


@pytest.mark.parametrize("length", [5, 20, 36, 47, 63, 64, 200, 253],
                         ids=lambda n: f"model-name-{n}-chars")
def test_job_names_are_unique_per_version_and_attempt_and_always_valid(length: int) -> None:
    """From 36 characters of Model name every attempt shared one Job name (cut at 63), from 47
    every generation did: a new version read the old one's summary. Cut names keep a readable
    prefix and end with a hash of the whole identity, as Kubernetes and KServe do."""
    name = ("fraud-model-" * 30)[:length - 1] + "x"
    requests = [conversion(name, g, a, k) for g in (1, 2, 10, 11) for a in (1, 2, 3)
                for k in ("abcdef0123456789", "0123456789abcdef")]
    names = [job_name(r) for r in requests]
    assert len(set(names)) == len(requests), "two versions or attempts share a Job"
    for n in names:
        assert len(n) <= 63 and DNS_LABEL.match(n), n
        assert n.startswith("serin-convert-" + name[:10])  # still says whose it is
    labels = job_body(requests[0], JobSettings(image="i"))["metadata"]["labels"]
    assert all(len(v) <= 63 and LABEL_VALUE.match(v) for v in labels.values()), labels
    # The directory each attempt writes to in the model store: one path component, its own.
    slugs = [r.slug for r in requests]
    assert len(set(slugs)) == len(requests) and all(len(s) <= 255 for s in slugs)


def test_short_job_names_are_unchanged() -> None:
    """A Job started by an earlier operator is found again under the same name after an upgrade."""
    assert job_name(conversion("fraud")) == "serin-convert-fraud-g7-abcdef01-a1"
    assert job_name(conversion("fraud", attempt=2)) == "serin-convert-fraud-g7-abcdef01-a2-a2"


def test_with_an_s3_store_the_publish_step_writes_it_with_the_namespaces_store_keys_only() -> None:
    """Issue 34 #3: no claim of the store is mounted anywhere; the publish step (trusted) gets the
    keys of the namespace's store Secret, the other steps none of them, and the version's place:
    {prefix}/{namespace}/{slug}, a place per attempt, as in a claim."""
    settings = JobSettings(image="i", model_store="s3://serin-models/versions",
                           store_s3=parse_store_s3('{"endpoint": "http://s3.storage:7070", "addressing": "path", '
                                                   '"secretName": "team-store"}'))
    req = ConversionRequest("team-a", "fraud", "uid-1", 7, "abcdef0123456789", 2, REQ_SPEC.source, REQ_SPEC.conversion)
    pod = job_body(req, settings)["spec"]["template"]["spec"]
    assert storage_uri(req, settings) == "s3://serin-models/versions/team-a/fraud-g7-abcdef01-a2"
    assert all("persistentVolumeClaim" not in v for v in pod["volumes"])
    fetch, convert = pod["initContainers"]
    (publish,) = pod["containers"]
    assert all("mnt/serin-store" not in m["mountPath"] for c in (fetch, convert, publish) for m in c["volumeMounts"])
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in publish["env"] if "valueFrom" in e}
    assert keys == {"AWS_ACCESS_KEY_ID": {"name": "team-store", "key": "AWS_ACCESS_KEY_ID"},
                    "AWS_SECRET_ACCESS_KEY": {"name": "team-store", "key": "AWS_SECRET_ACCESS_KEY"},
                    "AWS_SESSION_TOKEN": {"name": "team-store", "key": "AWS_SESSION_TOKEN", "optional": True}}
    assert all("valueFrom" not in e for e in convert["env"])
    assert all(e["valueFrom"]["secretKeyRef"]["name"] != "team-store" for e in fetch["env"] if "valueFrom" in e)
    request = json.loads(next(e["value"] for e in publish["env"] if e["name"] == REQUEST_ENV))
    assert request["out"] == "s3://serin-models/versions/team-a/fraud-g7-abcdef01-a2"
    # The settings travel in the request; the Secret's name is the operator's, not the converter's.
    assert request["outS3"] == {"endpoint": "http://s3.storage:7070", "addressing": "path", "verifyTls": True}


@pytest.mark.parametrize(("raw", "error"), [
    ('["x"]', "must be a JSON object"),
    ('{"endpoint": "http://x", "bucket": "b"}', "unknown fields: bucket"),
    ('{"addressing": "host"}', "addressing must be path or virtual"),
])
def test_the_store_settings_are_refused_at_start_when_wrong(raw: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_store_s3(raw)


def test_a_store_that_cannot_be_written_is_retried_and_one_that_refuses_is_not() -> None:
    def summary(error: str) -> dict[str, Any]:
        return {"passed": False, "exitCode": 5 if error == "store-unavailable" else 2, "error": error,
                "reason": f"cannot write s3://m/v/model.onnx: {error}"}

    assert result_from_summary(summary("store-unavailable"), "s3://m/v").retryable
    assert not result_from_summary(summary("store-refused"), "s3://m/v").retryable
