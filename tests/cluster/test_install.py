"""Serin installed on a real node by `helm install charts/serin`, from the images its own
Dockerfiles build: the operator runs as Pods with leader election, conversions run as Kubernetes
Jobs from the converter image, reading pvc:// sources and writing the model store claim."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import wait_for
from serin.local.cluster import Cluster
from serin.local.cluster_platform import image_values
from serin.local.node import HOST_ADDRESS
from serin.local.s3 import S3Server, start_s3

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "serin"
RELEASE, SYSTEM, MODELS = "serin", "serin-system", "models"

# One real node on the host at a time: the tier runs whole on one xdist worker (hack/test.sh).
pytestmark = pytest.mark.xdist_group("node")


def get(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def installed(real_cluster: Cluster) -> Iterator[Cluster]:
    """Serin installed once for the tier (helm install --wait: the operator Deployment available).
    Conversions run in namespace `models`, which gets the converter's ServiceAccount from the chart."""
    real_cluster.kubectl("create", "namespace", MODELS)
    t0 = time.monotonic()
    real_cluster.helm("install", RELEASE, str(CHART), "-n", SYSTEM, "--create-namespace", *image_values(real_cluster),
                      "--set", f"conversion.serviceAccount.namespaces={{{MODELS}}}", "--wait", "--timeout", "240s")
    print(f"\nhelm install -> operator available: {time.monotonic() - t0:.1f}s")
    yield real_cluster


def test_helm_install_runs_the_operator_pods_with_one_leader(installed: Cluster) -> None:
    deploy = get(installed, "deployment", "serin-operator", "-n", SYSTEM)
    assert deploy["status"]["availableReplicas"] == deploy["spec"]["replicas"] == 2
    pods = [p["metadata"]["name"] for p in get(installed, "pods", "-n", SYSTEM, "-l",
                                               "app.kubernetes.io/name=serin")["items"]]
    assert len(pods) == 2
    lease = wait_for("the leader Lease", lambda: get(installed, "lease", "serin-operator", "-n", SYSTEM)
                     if installed.kubectl("get", "lease", "serin-operator", "-n", SYSTEM, check=False).returncode == 0
                     else None, timeout=60)
    (leader,) = [p for p in pods if lease["spec"]["holderIdentity"].startswith(f"{p}-")]
    logs = installed.kubectl("logs", "-n", SYSTEM, leader).stdout
    assert "serin operator started: executor=job (4 at a time, no limit per namespace), require analysis=True, " \
           "leader election=True" in logs, logs


@pytest.fixture(scope="module")
def models_ns(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """Namespace `models` with two claims on hostPath volumes of the node: `sources` (artifacts
    and samples, read by the conversion Pods through pvc://) and `serin-models` (the model store
    the Jobs write). Yields (namespace, sources dir, store dir)."""
    base = tmp_path_factory.mktemp("volumes")
    base.chmod(0o755)
    dirs = {"sources": base / "sources", "serin-models": base / "store"}
    for claim, path in dirs.items():
        installed.hostpath_claim(MODELS, claim, path)
    yield MODELS, dirs["sources"], dirs["serin-models"]


def apply_model(cluster: Cluster, ns: str, name: str, uri: str, sample: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Model", "metadata": {"name": name, "namespace": ns},
        "spec": {"source": {"uri": uri, "sampleUri": sample}}}))


def stage(cluster: Cluster, ns: str, sources: Path, artifact: Path, sample: Path, prefix: str) -> str:
    """Copies an artifact and its sample onto the `sources` claim and applies a Model naming them."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    (sources / name).mkdir()
    shutil.copy(artifact, sources / name / "model.joblib")
    shutil.copy(sample, sources / name / "sample.csv")
    apply_model(cluster, ns, name, f"pvc://sources/{name}/model.joblib", f"pvc://sources/{name}/sample.csv")
    return name


def passed(cluster: Cluster, ns: str, name: str, timeout: float = 240) -> dict[str, Any]:
    status: dict[str, Any] = wait_for("the conversion to pass", lambda: (s := model_status(cluster, ns, name)).get(
        "conversion", {}).get("passed") and s, timeout=timeout)
    return status


def model_status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get(cluster, "model", name, "-n", ns).get("status") or {}
    return status


def test_a_pvc_model_converts_in_a_job_running_the_converter_image(
        installed: Cluster, models_ns: tuple[str, Path, Path], artifacts: Any) -> None:
    ns, sources, store = models_ns
    t0 = time.monotonic()
    name = stage(installed, ns, sources, artifacts.good_v1, artifacts.sample, "fraud")
    status = passed(installed, ns, name)
    print(f"\napply -> conversion passed (a Job Pod of the converter image): {time.monotonic() - t0:.1f}s")
    conv = status["conversion"]
    assert conv["generation"] == 1 and conv["format"] == "sklearn" and conv["rows"] == 200
    assert conv["labelAgreement"] == 1.0 and conv["maxAbsDiff"] < 1e-4 and len(conv["onnxSha256"]) == 64
    # The operator reads the Pod's termination message; the Job controller marks the Job a moment later.
    (job,) = wait_for("the Job to succeed", lambda: [j for j in get(
        installed, "jobs", "-n", ns, "-l", f"serin.dev/model={name}")["items"] if j["status"].get("succeeded") == 1])
    (pod,) = get(installed, "pods", "-n", ns, "-l", f"job-name={job['metadata']['name']}")["items"]
    assert pod["spec"]["containers"][0]["image"] == installed.images["converter"].ref
    assert pod["status"]["phase"] == "Succeeded"
    # The model store claim holds what the Job wrote; the InferenceService reads it from there.
    uri = status["stable"]["storageUri"]
    assert uri.startswith("pvc://serin-models/models/")
    written = store / uri.removeprefix("pvc://serin-models/")
    assert (written / "model.onnx").stat().st_size > 0 and (written / "profile.json").exists()
    isvc = get(installed, "inferenceservice", name, "-n", ns)
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == uri


def test_a_corrupt_artifact_fails_its_job_with_the_reason_in_status(
        installed: Cluster, models_ns: tuple[str, Path, Path], artifacts: Any) -> None:
    ns, sources, _ = models_ns
    name = stage(installed, ns, sources, artifacts.corrupt, artifacts.sample, "broken")
    status = wait_for("the conversion to fail", lambda: (s := model_status(installed, ns, name)).get(
        "phase") == "Failed" and s, timeout=240)
    assert status["failed"]["kind"] == "ConversionFailed"
    assert status["conversion"]["passed"] is False and status["conversion"]["exitCode"] == 2
    assert "cannot load" in status["conversion"]["reason"] or "unpickl" in status["conversion"]["reason"], status
    assert "stable" not in status


@pytest.fixture(scope="module")
def s3_on_node(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The real S3 server on the host end of the node's veth, where conversion Pods reach it."""
    server = start_s3(tmp_path_factory.mktemp("s3"), listen=HOST_ADDRESS)
    try:
        yield server
    finally:
        server.stop()


def s3_secret(cluster: Cluster, ns: str, name: str, access_key: str, secret_key: str) -> None:
    """A KServe-style S3 Secret: the keys under the AWS SDKs' names (its annotations would not be read)."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name, "namespace": ns},
        "stringData": {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}}))


def s3_team(cluster: Cluster, ns: str, s3: S3Server, artifacts: Any, folder: str,
            secret_key: str | None = None) -> tuple[str, dict[str, Any]]:
    """A team (S3 user and bucket, named alike) holding a good artifact and its sample under
    `folder`, its keys in a Secret of `ns` (`secret_key` instead of the real one, when given): the
    name, and the spec.source that reads them."""
    name = f"s3-{uuid.uuid4().hex[:6]}"
    team = s3.create_user(name)
    s3.create_bucket(name, owner=team)
    uri = s3.put(name, f"{folder}model.joblib", artifacts.good_v1, user=team)
    sample = s3.put(name, f"{folder}sample.csv", artifacts.sample, user=team)
    s3_secret(cluster, ns, f"{name}-keys", team.access_key, secret_key or team.secret_key)
    return name, {"uri": uri, "sampleUri": sample, "s3": {"endpoint": s3.url, "secretName": f"{name}-keys"}}


def test_an_s3_model_converts_with_its_namespaces_keys_and_a_missing_object_leaves_the_stable(
        installed: Cluster, models_ns: tuple[str, Path, Path], artifacts: Any, s3_on_node: S3Server) -> None:
    """Issue 34 #2 and issue 32 #2 on the real node: the conversion Job's fetch step reads s3://
    with the keys of the Secret the Model names (in its own namespace), the unpickling step gets
    none; an object that is not there fails the new version with the reason, the stable serving."""
    ns, _, _ = models_ns
    name, source = s3_team(installed, ns, s3_on_node, artifacts, "v1/")
    model = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "metadata": {"name": name, "namespace": ns},
             "spec": {"source": source}}
    installed.kubectl("apply", "-f", "-", input=json.dumps(model))
    status = passed(installed, ns, name)
    assert status["conversion"]["rows"] == 200 and status["stable"]["generation"] == 1
    (job,) = get(installed, "jobs", "-n", ns, "-l", f"serin.dev/model={name}")["items"]
    fetch, convert = job["spec"]["template"]["spec"]["initContainers"]
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in fetch["env"] if "valueFrom" in e} == {f"{name}-keys"}
    assert all("valueFrom" not in e for e in convert["env"])

    model["spec"]["source"] = {**source, "uri": f"s3://{name}/v2/model.joblib"}
    installed.kubectl("apply", "-f", "-", input=json.dumps(model))
    status = wait_for("generation 2 to fail", lambda: (s := model_status(installed, ns, name)).get(
        "conversion", {}).get("generation") == 2 and s.get("failed") and s, timeout=240)
    conv = status["conversion"]
    assert conv["error"] == "source-unavailable" and conv["exitCode"] == 2, conv
    assert f"no object v2/model.joblib in bucket {name}" in conv["reason"], conv
    assert status["stable"]["generation"] == 1 and status["failed"]["generation"] == 2
    # Tried once: a missing object is not worth a retry.
    assert len(get(installed, "jobs", "-n", ns, "-l", f"serin.dev/model={name},serin.dev/generation=2")["items"]) == 1


def test_an_s3_model_with_keys_the_server_refuses_fails_with_the_reason(
        installed: Cluster, models_ns: tuple[str, Path, Path], artifacts: Any, s3_on_node: S3Server) -> None:
    ns, _, _ = models_ns
    name, source = s3_team(installed, ns, s3_on_node, artifacts, "", secret_key="not-the-secret")
    installed.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Model", "metadata": {"name": name, "namespace": ns},
        "spec": {"source": source}}))
    status = wait_for("the conversion to fail", lambda: (s := model_status(installed, ns, name)).get(
        "phase") == "Failed" and s, timeout=240)
    conv = status["conversion"]
    assert conv["error"] == "source-unavailable" and "refused the signature" in conv["reason"], conv
    assert "stable" not in status


def test_a_converter_image_that_is_not_there_fails_with_a_clear_reason(
        installed: Cluster, models_ns: tuple[str, Path, Path], artifacts: Any) -> None:
    """No silent hang until the conversion timeout: the Pod's image error reaches status and Events."""
    ns, sources, _ = models_ns
    installed.helm("upgrade", RELEASE, str(CHART), "-n", SYSTEM, "--reuse-values",
                   "--set", "conversion.image.tag=not-built", "--wait", "--timeout", "240s")
    try:
        name = stage(installed, ns, sources, artifacts.good_v1, artifacts.sample, "noimage")
        events = wait_for("a ConversionRetrying Event", lambda: [
            e for e in get(installed, "events", "-n", ns, "--field-selector",
                           f"involvedObject.name={name},reason=ConversionRetrying")["items"]], timeout=120)
        assert "the converter container cannot start" in events[0]["message"], events[0]["message"]
        assert "not-built" in events[0]["message"]
    finally:
        installed.helm("upgrade", RELEASE, str(CHART), "-n", SYSTEM, "--reuse-values",
                       *image_values(installed), "--wait", "--timeout", "240s")


def test_invalid_values_are_refused_naming_the_value(installed: Cluster) -> None:
    out = installed.helm("upgrade", RELEASE, str(CHART), "-n", SYSTEM, "--reuse-values",
                         "--set", "operator.replicas=-1", check=False)
    assert out.returncode != 0
    assert "operator.replicas" in out.stderr or "/operator/replicas" in out.stderr, out.stderr


def events_of(cluster: Cluster, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get(cluster, "events", "-n", ns, "--field-selector",
                                      f"involvedObject.name={name},reason={reason}")["items"]
    return items


def test_the_leader_deleted_mid_conversion_hands_over_and_nothing_runs_twice(
        installed: Cluster, models_ns: tuple[str, Path, Path], artifacts: Any) -> None:
    ns, sources, _ = models_ns
    name = stage(installed, ns, sources, artifacts.good_v1, artifacts.sample, "handover")
    wait_for("the conversion Job", lambda: get(installed, "jobs", "-n", ns, "-l", f"serin.dev/model={name}")["items"])
    holder = get(installed, "lease", "serin-operator", "-n", SYSTEM)["spec"]["holderIdentity"]
    pods = [p["metadata"]["name"] for p in get(installed, "pods", "-n", SYSTEM, "-l",
                                               "app.kubernetes.io/name=serin")["items"]]
    (leader,) = [p for p in pods if holder.startswith(f"{p}-")]
    installed.kubectl("delete", "pod", leader, "-n", SYSTEM, "--wait=false")
    status = passed(installed, ns, name, timeout=180)
    assert status["conversion"]["generation"] == 1
    new_holder = get(installed, "lease", "serin-operator", "-n", SYSTEM)["spec"]["holderIdentity"]
    assert not new_holder.startswith(f"{leader}-")
    jobs = get(installed, "jobs", "-n", ns, "-l", f"serin.dev/model={name}")["items"]
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    assert len(events_of(installed, ns, name, "ConversionStarted")) == 1
    assert len(events_of(installed, ns, name, "ConversionSucceeded")) == 1
    installed.kubectl("rollout", "status", "deployment/serin-operator", "-n", SYSTEM, "--timeout=120s")


# What a hostile artifact tries when it is unpickled (issue 32 #1, #2): the API server through the
# `kubernetes` Service, the cloud metadata address, the operator's Pod, DNS, and the claims. It
# reports in the exception it raises, which ends in status.conversion.reason (120 characters).
PROBE = """
import os, socket
def tcp(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return "OK"
    except OSError as exc:
        return str(exc.errno)
def dns():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return "OK"
    except OSError as exc:
        return str(exc.errno)
seen = {"api": tcp(os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]),
        "meta": tcp("169.254.169.254", 80), "op": tcp(OPERATOR_IP, OPERATOR_PORT), "dns": dns(),
        "store": "yes" if os.path.exists("/mnt/serin-store") else "no",
        "src": "yes" if os.path.exists("/mnt/pvc") else "no"}
MESSAGE = "probe " + " ".join(f"{k}={v}" for k, v in seen.items())
"""


class _Hostile:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code, {}))


def test_a_hostile_pickle_reaches_no_network_and_no_other_models_file(
        installed: Cluster, models_ns: tuple[str, Path, Path], artifacts: Any, tmp_path: Path) -> None:
    """Issue 32 #1 and #2 on the real node. The same probe, run in a plain Pod of the converter
    image, reaches the API server and the operator: the conversion's sandbox is what stops it."""
    import hashlib
    import pickle

    ns, sources, store = models_ns
    victim = stage(installed, ns, sources, artifacts.good_v1, artifacts.sample, "victim")
    victim_status = passed(installed, ns, victim)
    victim_file = store / victim_status["stable"]["storageUri"].removeprefix("pvc://serin-models/") / "model.onnx"
    before = victim_file.read_bytes()
    assert hashlib.sha256(before).hexdigest() == victim_status["conversion"]["onnxSha256"]
    (operator,) = get(installed, "pods", "-n", SYSTEM, "-l", "app.kubernetes.io/name=serin")["items"][:1]
    port = operator["spec"]["containers"][0]["ports"][0]["containerPort"]
    probe = PROBE.replace("OPERATOR_IP", repr(operator["status"]["podIP"])).replace("OPERATOR_PORT", str(port))

    control = f"control-{uuid.uuid4().hex[:6]}"
    converter = {"name": "probe", "image": installed.images["converter"].ref, "imagePullPolicy": "Never",
                 "command": ["python", "-c", probe + "\nprint(MESSAGE)"],
                 "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                     "capabilities": {"drop": ["ALL"]}}}
    installed.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": control, "namespace": ns},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False, "containers": [converter],
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                     "seccompProfile": {"type": "RuntimeDefault"}}}}))
    try:
        wait_for("the control Pod to finish", lambda: get(installed, "pod", control, "-n", ns)["status"].get(
            "phase") in ("Succeeded", "Failed"), timeout=120)
        reached = installed.kubectl("logs", control, "-n", ns).stdout
        print(f"\nwithout the sandbox: {reached.strip()}")
        assert "api=OK" in reached and "op=OK" in reached, reached
    finally:
        installed.kubectl("delete", "pod", control, "-n", ns, "--wait=false", check=False)

    (tmp_path / "evil.joblib").write_bytes(pickle.dumps(
        _Hostile(probe + "\nraise ValueError(MESSAGE)"), protocol=4))
    evil = stage(installed, ns, sources, tmp_path / "evil.joblib", artifacts.sample, "evil")
    status = wait_for("the hostile conversion to fail", lambda: (s := model_status(installed, ns, evil)).get(
        "phase") == "Failed" and s, timeout=240)
    reason = status["conversion"]["reason"]
    print(f"in the conversion: {reason}")
    assert "probe api=13 meta=13 op=13 dns=13 store=no src=no" in reason, reason
    assert victim_file.read_bytes() == before


def test_a_model_file_replaced_in_the_store_is_refused_by_the_runtime(
        installed: Cluster, models_ns: tuple[str, Path, Path], artifacts: Any) -> None:
    """Issue 32 #1: whoever else can write the store (a volume shared by two claims, a person),
    a predictor serves only the bytes its conversion recorded, and says so when they changed."""
    ns, sources, store = models_ns
    name = stage(installed, ns, sources, artifacts.good_v1, artifacts.sample, "swapped")
    status = passed(installed, ns, name)
    uri = status["stable"]["storageUri"]
    other = stage(installed, ns, sources, artifacts.good_v2, artifacts.sample, "other")
    other_uri = passed(installed, ns, other)["stable"]["storageUri"]
    shutil.copy(store / other_uri.removeprefix("pvc://serin-models/") / "model.onnx",
                store / uri.removeprefix("pvc://serin-models/") / "model.onnx")
    body = runtime_pod(installed, ns, name, uri, sha256=status["conversion"]["onnxSha256"])
    body["spec"]["restartPolicy"] = "Never"
    installed.kubectl("apply", "-f", "-", input=json.dumps(body))
    pod = body["metadata"]["name"]
    try:
        term = wait_for("the runtime to refuse the model", lambda: (get(installed, "pod", pod, "-n", ns)["status"].get(
            "containerStatuses") or [{}])[0].get("state", {}).get("terminated"), timeout=120)
        assert term["exitCode"] == 2
        assert term["message"].startswith("refusing to serve /mnt/models/model.onnx: its sha256 is "), term
        assert status["conversion"]["onnxSha256"] in term["message"]
    finally:
        installed.kubectl("delete", "pod", pod, "-n", ns, "--wait=false", check=False)


def runtime_pod(cluster: Cluster, ns: str, name: str, storage_uri: str, sha256: str = "") -> dict[str, Any]:
    """A predictor Pod as KServe makes it from the `serin-onnx` ServingRuntime (its container read
    from manifests/serving-runtime/, the single source), with the converted model on the store claim."""
    runtime = yaml.safe_load((REPO / "manifests" / "serving-runtime" / "serin-onnx.yaml").read_text())
    container = runtime["spec"]["containers"][0]
    container["image"] = cluster.images["runtime"].ref
    container["args"] = [a.replace("{{.Name}}", name) for a in container["args"]]
    container["env"] = [*container.get("env", []), {"name": "SERIN_REVISION", "value": f"{name}-predictor-00001"},
                        *([{"name": "SERIN_MODEL_SHA256", "value": sha256}] if sha256 else [])]
    container["ports"] = [{"name": "http", "containerPort": 8080}]
    container["readinessProbe"] = {"httpGet": {"path": f"/v2/models/{name}/ready", "port": 8080}, "periodSeconds": 1}
    container["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    container["volumeMounts"] = [{"name": "model", "mountPath": "/mnt/models", "readOnly": True,
                                  "subPath": storage_uri.removeprefix("pvc://serin-models/")}]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-predictor", "namespace": ns,
                         "labels": {"serving.kserve.io/inferenceservice": name, "component": "predictor"}},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [container],
                     "volumes": [{"name": "model", "persistentVolumeClaim": {"claimName": "serin-models",
                                                                             "readOnly": True}}]}}


def test_a_runtime_pod_serves_the_converted_model_and_prometheus_discovers_it(
        installed: Cluster, models_ns: tuple[str, Path, Path], artifacts: Any,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The runtime image serving what a conversion Job wrote, scraped by a real Prometheus that finds
    the Pod through the Kubernetes API with the chart's PodMonitor relabelling: the series carry the
    namespace, model and revision labels the canary analysis selects on."""
    from serin.local.prometheus import start_prometheus

    ns, sources, _ = models_ns
    name = stage(installed, ns, sources, artifacts.good_v1, artifacts.sample, "served")
    status = passed(installed, ns, name)
    installed.kubectl("apply", "-f", "-", input=json.dumps(runtime_pod(installed, ns, name, status["stable"]["storageUri"],
                                                                       sha256=status["conversion"]["onnxSha256"])))
    pod = f"{name}-predictor"
    installed.kubectl("wait", "--for=condition=Ready", f"pod/{pod}", "-n", ns, "--timeout=120s")
    ip = get(installed, "pod", pod, "-n", ns)["status"]["podIP"]
    prom = start_prometheus(tmp_path_factory.mktemp("prometheus"), installed.control_plane.bin_dir,
                            scrape_interval="1s", kubernetes=installed.prometheus_discovery())
    try:
        rows = [[0.1, -0.2, 0.3, 0.0], [1.5, 0.5, -1.0, 2.0]]
        for _ in range(10):
            request = urllib.request.Request(f"http://{ip}:8080/v1/models/{name}:predict", method="POST",
                                             data=json.dumps({"instances": rows}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200
                assert len(json.load(resp)["predictions"]) == 2
        selector = f'namespace="{ns}",model="{name}",revision="{name}-predictor-00001",pod="{pod}"'

        def served() -> float:
            result = prom.query(f'sum(serin_requests_total{{{selector},code="200"}})')["data"]["result"]
            return float(result[0]["value"][1]) if result else 0.0

        assert wait_for("Prometheus to scrape the Pod it discovered", lambda: served() >= 10, timeout=60)
        targets = json.loads(urllib.request.urlopen(f"{prom.url}/api/v1/targets", timeout=5).read())
        (target,) = [t for t in targets["data"]["activeTargets"] if t["labels"].get("pod") == pod]
        assert target["health"] == "up" and target["labels"]["container"] == "kserve-container"
        assert target["scrapeUrl"] == f"http://{ip}:8080/metrics"
    finally:
        prom.stop()
        installed.kubectl("delete", "pod", pod, "-n", ns, "--wait=false", check=False)


def test_helm_upgrade_then_uninstall_leaves_no_orphan(installed: Cluster) -> None:
    """Last in the tier: it removes the release."""
    installed.helm("upgrade", RELEASE, str(CHART), "-n", SYSTEM, "--reuse-values", "--set", "operator.replicas=1",
                   "--wait", "--timeout", "240s")
    wait_for("one operator Pod", lambda: len(get(installed, "pods", "-n", SYSTEM, "-l",
                                                 "app.kubernetes.io/name=serin")["items"]) == 1, timeout=120)
    installed.helm("uninstall", RELEASE, "-n", SYSTEM, "--wait", "--timeout", "120s")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    for kind, scope in (("deployments,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets", "-A"),
                        ("clusterroles,clusterrolebindings,clusterservingruntimes", None)):
        args = ["get", kind, "-l", selector, "-o", "name", *([scope] if scope else [])]
        assert installed.kubectl(*args).stdout.strip() == "", f"left after uninstall: {installed.kubectl(*args).stdout}"
    wait_for("the operator Pods to go", lambda: get(installed, "pods", "-n", SYSTEM)["items"] == [], timeout=120)
    # CRDs stay (Helm never deletes what crds/ installed), and so do the users' Models.
    assert installed.kubectl("get", "crd", "models.serin.dev", check=False).returncode == 0
