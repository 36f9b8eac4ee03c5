"""The chart's ValidatingAdmissionPolicies (issue 32 #3) against the real kube-apiserver: as the
operator's own ServiceAccount (a real token), what the operator writes is admitted, and each way a
compromised or confused operator could use its RBAC rights to reach further (another image,
another ServiceAccount, the host, a NodePort, a token Secret, an object that is not Serin's) is
refused by the apiserver, naming the rule. The bodies admitted are built by the operator's own
code (job_body, the routers, secret_body), so a change on either side that breaks the other fails
here. Every request is a server-side dry run unless it needs an object to exist: admission runs
the same, nothing is stored."""

from __future__ import annotations

import copy
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import wait_for
from packaging_helpers import CHART, CONVERTER_IMAGE, Helm, values_args
from serin.local.controlplane import ControlPlane
from serin.local.gateway import gateway_dir
from serin.operator import retrain
from serin.operator.actions import ApplyServing, Served
from serin.operator.executors import ConversionRequest
from serin.operator.executors.job import JobSettings, job_body
from serin.operator.feedback_secret import secret_body
from serin.operator.routing.base import Seen
from serin.operator.routing.knative import KnativeRouter
from serin.operator.routing.standard import GatewayRouter, ReplicaRatioRouter, split_service
from serin.operator.spec import parse_spec

pytestmark = pytest.mark.packaging

GATEWAY_NS, GATEWAY = "serin-gateway", "serin"
SPEC_SOURCE = {"uri": "pvc://models/m.joblib", "sampleUri": "pvc://models/s.csv", "sha256": "a" * 64,
               "format": "sklearn"}
SPEC = parse_spec({"source": SPEC_SOURCE, "conversion": {"timeout": "5m"}})


@dataclass
class Policed:
    cp: ControlPlane
    operator: Path  # kubeconfig with the operator's token
    ns: str  # a namespace it watches
    release: str

    def as_operator(self, *args: str, input: str | None = None) -> tuple[bool, str]:
        out = self.cp.kubectl(*args, input=input, kubeconfig=self.operator, check=False)
        return out.returncode == 0, out.stdout + out.stderr

    def create(self, body: dict[str, Any]) -> tuple[bool, str]:
        return self.as_operator("create", "--dry-run=server", "-f", "-", input=json.dumps(body))


@pytest.fixture(scope="module")
def policed(cluster_helm: Helm, crds: ControlPlane) -> Iterator[Policed]:
    """A cluster-wide release with a Gateway configured (every policy has work to do), and the
    Gateway API's CRDs (as the cluster tier installs them) so HTTPRoutes can be sent."""
    for crd in sorted((gateway_dir() / "crds").glob("*.yaml")):
        crds.kubectl("apply", "--server-side", "-f", str(crd))
    crds.wait_established([f"{p}.gateway.networking.k8s.io" for p in ("gateways", "httproutes")])
    yield from install_policed(cluster_helm, crds, "serin-vap", lambda team: {
        "servingRuntime": {"create": False}, "gateway": {"name": GATEWAY, "namespace": GATEWAY_NS}})


def install_policed(cluster_helm: Helm, crds: ControlPlane, name: str,
                    values: Callable[[str], dict[str, Any]]) -> Iterator[Policed]:
    """A release `name`-<suffix> of the chart with `values(team)` (team: the namespace its operator
    writes to), once its policies are enforced; uninstalled after."""
    suffix = uuid.uuid4().hex[:6]
    ns, team = f"serin-{suffix}", f"team-{suffix}"
    for n in (ns, team):
        crds.kubectl("create", "namespace", n)
    release = f"{name}-{suffix}"
    cluster_helm.run("install", release, str(CHART), "--namespace", ns, *values_args(values(team)))
    try:
        policed = Policed(crds, crds.service_account_kubeconfig(ns, "serin-operator"), team, release)
        # The apiserver loads new policies from its informer, a moment after helm wrote them (a
        # test that ran first on a busy machine once saw a Model admitted that the policy refuses).
        probe = service(team)
        probe["spec"]["type"] = "NodePort"
        wait_for("the release's admission policies enforced", lambda: not policed.create(probe)[0], timeout=60)
        yield policed
    finally:
        cluster_helm.run("uninstall", release, "--namespace", ns, check=False)
        for n in (ns, team):
            crds.kubectl("delete", "namespace", n, "--wait=false", check=False)


def owner(name: str = "fraud") -> dict[str, Any]:
    return {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "name": name, "uid": str(uuid.uuid4()),
            "controller": True, "blockOwnerDeletion": True}


# -- what the operator writes, built by its own code ---------------------------------------------

def conversion_job(ns: str) -> dict[str, Any]:
    req = ConversionRequest(ns, "fraud", str(uuid.uuid4()), 3, "abcdef0123456789", 1, SPEC.source, SPEC.conversion)
    return job_body(req, JobSettings(image=CONVERTER_IMAGE, model_store="pvc://serin-models"))


S3_SPEC = parse_spec({"source": {"uri": "s3://team/m.joblib", "sampleUri": "s3://team/s.csv",
                                 "s3": {"endpoint": "http://s3.storage:7070", "secretName": "team-s3"}}})


def conversion_job_from_s3(ns: str) -> dict[str, Any]:
    """The fetch step given the S3 keys of the Model's Secret (spec.source.s3.secretName)."""
    req = ConversionRequest(ns, "fraud", str(uuid.uuid4()), 3, "abcdef0123456789", 1, S3_SPEC.source,
                            S3_SPEC.conversion)
    return job_body(req, JobSettings(image=CONVERTER_IMAGE, model_store="pvc://serin-models"))


def trainer(model: str = "fraud") -> dict[str, Any]:
    """A team's trainer: its image, run as the Model's ServiceAccount {model}-trainer."""
    return {"metadata": {"labels": {"team": model}}, "spec": {"backoffLimit": 0, "template": {"spec": {
        "serviceAccountName": f"{model}-trainer",
        "containers": [{"name": "train", "image": f"registry.example/{model}/trainer:7", "command": ["python", "train.py"],
                        "envFrom": [{"secretRef": {"name": "team-s3"}}]}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "team-data"}},
                    {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]}}}}


def retraining_job(ns: str) -> dict[str, Any]:
    """A retraining Job: the user's template as the operator sends it (retrain.job_body)."""
    return retrain.job_body(trainer(), "fraud-retrain-0a1b2c3d", ns, "fraud",
                            (("SERIN_MODEL", "fraud"), ("SERIN_SIGNAL", "inputDrift")), owner())


def knative_isvc(ns: str) -> dict[str, Any]:
    seen = Seen(ns, "fraud", uid="u")
    [write] = KnativeRouter().plan(seen, ApplyServing(Served(1, f"pvc://serin-models/{ns}/fraud-g1", "b" * 64)),
                                   SPEC, owner())
    return write.body


def standard_isvc_with_canary(ns: str) -> dict[str, Any]:
    seen = Seen(ns, "fraud", uid="u")
    want = ApplyServing(Served(1, f"pvc://serin-models/{ns}/fraud-g1", "b" * 64),
                        Served(2, f"pvc://serin-models/{ns}/fraud-g2", "c" * 64), 10)
    writes = ReplicaRatioRouter().plan(seen, want, SPEC, owner())
    isvc = next(w.body for w in writes if w.kind == "isvc")
    # What KServe's defaulting webhook adds (this tier has KServe's schema, not its webhook), and
    # its schema requires on a canary's model.
    isvc["spec"]["canary"][0]["predictor"]["model"]["name"] = ""
    return isvc


CAPTURE_SPEC = parse_spec({"source": SPEC_SOURCE, "serving": {"capture": {
    "share": 0.1, "uri": "s3://team/capture", "s3": {"endpoint": "http://s3.storage:7070", "secretName": "team-s3"}}}})


def standard_isvc_capturing(ns: str) -> dict[str, Any]:
    """Predictors given the capture settings and the S3 keys of the Secret the Model names."""
    writes = ReplicaRatioRouter().plan(Seen(ns, "fraud", uid="u"), ApplyServing(
        Served(1, f"pvc://serin-models/{ns}/fraud-g1", "b" * 64)), CAPTURE_SPEC, owner())
    return next(w.body for w in writes if w.kind == "isvc")


def service(ns: str) -> dict[str, Any]:
    return split_service(Seen(ns, "fraud", uid="u"), owner())


def route(ns: str) -> dict[str, Any]:
    return GatewayRouter(GATEWAY_NS, GATEWAY).route_body(Seen(ns, "fraud", uid="u"), owner(),
                                                         {"fraud-gen1-predictor": 90, "fraud-gen2-predictor": 10}, 10)


def secret(ns: str) -> dict[str, Any]:
    return secret_body({"name": "fraud", "namespace": ns}, owner())


def sender_secret(ns: str) -> dict[str, Any]:
    return secret_body({"name": "fraud", "namespace": ns}, owner(), sender=True)


BUILDERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "job": conversion_job, "job-s3": conversion_job_from_s3, "retraining-job": retraining_job, "knative-isvc": knative_isvc, "standard-isvc": standard_isvc_with_canary,
    "standard-isvc-capture": standard_isvc_capturing,
    "service": service, "httproute": route, "secret": secret, "sender-secret": sender_secret}


@pytest.mark.parametrize("kind", BUILDERS)
def test_what_the_operator_writes_is_admitted(policed: Policed, kind: str) -> None:
    ok, out = policed.create(BUILDERS[kind](policed.ns))
    assert ok, out


# -- what it must not write ----------------------------------------------------------------------

def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _step(job: dict[str, Any], name: str) -> dict[str, Any]:
    pod = _pod(job)
    return next(c for c in [*pod["initContainers"], *pod["containers"]] if c["name"] == name)


def _predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    return isvc["spec"]["predictor"]  # type: ignore[no-any-return]


def _env(isvc: dict[str, Any], name: str, source: dict[str, Any]) -> None:
    """The predictor's variable `name` given from `source` instead of the operator's own."""
    env = _predictor(isvc)["model"]["env"]
    env[:] = [e for e in env if e["name"] != name] + [{"name": name, **source}]


Spoil = Callable[[dict[str, Any]], object]
# (builder, how it is spoiled, the policy that must refuse it, words of its message)
REFUSED: list[tuple[str, str, Spoil, str, str]] = [
    ("job", "another image", lambda j: _step(j, "convert").update(image="docker.io/library/python:3"),
     "jobs", "runs the steps fetch, convert, publish"),
    ("job", "another ServiceAccount", lambda j: _pod(j).update(serviceAccountName="default"),
     "jobs", "runs as the ServiceAccount serin-converter"),
    ("job", "a mounted token", lambda j: _pod(j).update(automountServiceAccountToken=True),
     "jobs", "with no token mounted"),
    ("job", "the host network", lambda j: _pod(j).update(hostNetwork=True), "jobs", "in no host or shared process"),
    ("job", "a hostPath", lambda j: _pod(j)["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
     "jobs", "mounts only scratch"),
    ("job", "a Secret volume", lambda j: _pod(j)["volumes"].append({"name": "s", "secret": {"secretName": "x"}}),
     "jobs", "mounts only scratch"),
    ("job", "convert mounting the store",
     lambda j: _step(j, "convert")["volumeMounts"].append({"name": "store", "mountPath": "/mnt/store"}),
     "jobs", "convert mounts only scratch"),
    ("job", "publish mounting the whole store",
     lambda j: next(m for m in _step(j, "publish")["volumeMounts"] if m["name"] == "store").pop("subPath"),
     "jobs", "only publish mounts the store"),
    ("job", "another command", lambda j: _step(j, "publish").update(command=["sh", "-c", "id"]),
     "jobs", "runs the steps fetch, convert, publish"),
    ("job", "a Secret in the environment",
     lambda j: _step(j, "fetch")["env"].append({"name": "K", "valueFrom": {"secretKeyRef": {"name": "x", "key": "k"}}}),
     "jobs", "no Secret in its environment"),
    ("job-s3", "the S3 keys given to the step that unpickles",
     lambda j: _step(j, "convert")["env"].extend(e for e in _step(j, "fetch")["env"] if "valueFrom" in e),
     "jobs", "but the fetch step's S3 keys"),
    ("job-s3", "an S3 variable from another key of the Secret",
     lambda j: next(e for e in _step(j, "fetch")["env"] if e["name"] == "AWS_ACCESS_KEY_ID")["valueFrom"][
         "secretKeyRef"].update(key="token"), "jobs", "but the fetch step's S3 keys"),
    ("job-s3", "a Model's feedback key as an S3 key",
     lambda j: next(e for e in _step(j, "fetch")["env"] if e["name"] == "AWS_SECRET_ACCESS_KEY")["valueFrom"][
         "secretKeyRef"].update(name="fraud-serin-feedback"), "jobs", "a Secret that is not Serin's"),
    ("standard-isvc-capture", "the capture keys from a Model's feedback Secret",
     lambda i: _env(i, "AWS_SECRET_ACCESS_KEY", {"valueFrom": {"secretKeyRef": {
         "name": "fraud-serin-feedback", "key": "AWS_SECRET_ACCESS_KEY"}}}),
     "inferenceservices", "the capture store's S3 keys"),
    ("standard-isvc-capture", "a capture key from another key of the Secret",
     lambda i: _env(i, "AWS_ACCESS_KEY_ID", {"valueFrom": {"secretKeyRef": {"name": "team-s3", "key": "key"}}}),
     "inferenceservices", "the capture store's S3 keys"),
    ("standard-isvc-capture", "S3 keys on a predictor that captures nothing",
     lambda i: _predictor(i)["model"].update(env=[e for e in _predictor(i)["model"]["env"]
                                                 if e["name"] != "SERIN_CAPTURE"]),
     "inferenceservices", "the capture store's S3 keys"),
    ("standard-isvc-capture", "a literal S3 key of the operator's",
     lambda i: _env(i, "AWS_ACCESS_KEY_ID", {"value": "AKIAOPERATOR"}),
     "inferenceservices", "the capture store's S3 keys"),
    ("retraining-job", "run as the operator", lambda j: _pod(j).update(serviceAccountName="serin-operator"),
     "jobs", "runs as that Model's ServiceAccount {model}-trainer"),
    ("retraining-job", "run as the converter", lambda j: _pod(j).update(serviceAccountName="serin-converter"),
     "jobs", "runs as that Model's ServiceAccount {model}-trainer"),
    ("retraining-job", "run as another ServiceAccount", lambda j: _pod(j).update(serviceAccountName="default"),
     "jobs", "runs as that Model's ServiceAccount {model}-trainer"),
    ("retraining-job", "another Model's trainer", lambda j: _pod(j).update(serviceAccountName="payments-trainer"),
     "jobs", "runs as that Model's ServiceAccount {model}-trainer"),
    ("retraining-job", "the host network", lambda j: _pod(j).update(hostNetwork=True), "jobs", "no host network"),
    ("retraining-job", "a hostPath", lambda j: _pod(j).update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]),
     "jobs", "hostPath"),
    ("retraining-job", "a CSI volume", lambda j: _pod(j)["volumes"].append(
        {"name": "c", "csi": {"driver": "secrets-store.csi.k8s.io"}}), "jobs", "CSI or flex volume"),
    ("retraining-job", "the model store", lambda j: _pod(j)["volumes"].append(
        {"name": "s", "persistentVolumeClaim": {"claimName": "serin-models"}}), "jobs", "not the model store"),
    ("retraining-job", "a Model's key through a projected volume", lambda j: _pod(j)["volumes"].append(
        {"name": "p", "projected": {"sources": [{"secret": {"name": "fraud-serin-feedback"}}]}}),
     "jobs", "none of Serin's Secrets"),
    ("retraining-job", "a host port", lambda j: _pod(j)["containers"][0].update(
        ports=[{"containerPort": 80, "hostPort": 80}]), "jobs", "host port"),
    ("retraining-job", "an unconfined seccomp profile", lambda j: _pod(j).update(
        securityContext={"seccompProfile": {"type": "Unconfined"}}), "jobs", "unconfined seccomp"),
    ("retraining-job", "a privileged trainer",
     lambda j: _pod(j)["containers"][0].update(securityContext={"privileged": True}), "jobs", "no privileged"),
    ("retraining-job", "a Model's feedback key",
     lambda j: _pod(j)["containers"][0]["env"].append(
         {"name": "K", "valueFrom": {"secretKeyRef": {"name": "fraud-serin-feedback", "key": "key"}}}),
     "jobs", "none of Serin's Secrets"),
    ("retraining-job", "the notification keys",
     lambda j: _pod(j)["containers"][0].update(envFrom=[{"secretRef": {"name": "serin-notify"}}]),
     "jobs", "none of Serin's Secrets"),
    ("retraining-job", "another Model's label", lambda j: j["metadata"]["labels"].update({"serin.dev/model": "payments"}),
     "jobs", "labelled with the Model that owns it"),
    ("job", "PYTHONPATH on the step that holds keys",
     lambda j: _step(j, "publish")["env"].append({"name": "PYTHONPATH", "value": "/work/output"}),
     "jobs", "with no variable but SERIN_CONVERSION_REQUEST and SERIN_WORK_DIR"),
    ("job", "LD_PRELOAD", lambda j: _step(j, "fetch")["env"].append({"name": "LD_PRELOAD", "value": "/work/input/x.so"}),
     "jobs", "no LD_PRELOAD"),
    ("job", "a privileged step",
     lambda j: _step(j, "publish")["securityContext"].update(privileged=True, allowPrivilegeEscalation=True),
     "jobs", "unprivileged"),
    # (Labels left out would be defaulted from the Pod template's: other labels are written instead.)
    ("job", "no Serin labels", lambda j: j["metadata"].update(labels={"app": "nightly"}),
     "jobs", "only Serin's conversion Jobs"),
    ("job", "a step running as root", lambda j: _step(j, "publish")["securityContext"].update(runAsUser=0,
                                                                                        runAsNonRoot=False),
     "jobs", "unprivileged"),
    ("job", "a capability added", lambda j: _step(j, "convert")["securityContext"]["capabilities"].update(
        add=["SYS_PTRACE"]), "jobs", "every capability dropped"),
    ("job", "a shared process namespace", lambda j: _pod(j).update(shareProcessNamespace=True),
     "jobs", "shared process namespace"),
    ("job", "convert as a sidecar", lambda j: _step(j, "convert").update(restartPolicy="Always"),
     "jobs", "runs the steps fetch, convert, publish"),
    ("job", "a writable working directory", lambda j: _step(j, "publish").update(workingDir="/tmp"),
     "jobs", "from /"),
    ("job", "another claim as the store",
     lambda j: next(v for v in _pod(j)["volumes"] if v["name"] == "store")["persistentVolumeClaim"].update(
         claimName="team-b-data"), "jobs", "only publish mounts the store"),
    ("job", "another namespace's directory of the store",
     lambda j: next(m for m in _step(j, "publish")["volumeMounts"] if m["name"] == "store").update(
         subPath="team-b/fraud-g1-0123"), "jobs", "only publish mounts the store"),
    ("service", "a NodePort", lambda s: s["spec"].update(type="NodePort"), "services", "ClusterIP Service"),
    ("service", "external IPs", lambda s: s["spec"].update(externalIPs=["10.0.0.1"]), "services", "no external IPs"),
    ("service", "other Pods selected", lambda s: s["spec"].update(selector={"app": "database"}),
     "services", "selects exactly its Model's predictor Pods"),
    ("service", "no Serin labels", lambda s: s["metadata"].pop("labels"), "services", "labelled managed-by=serin"),
    ("secret", "a ServiceAccount token",
     lambda s: (s.update(type="kubernetes.io/service-account-token"),
                s["metadata"].update(annotations={"kubernetes.io/service-account.name": "default"})),
     "secrets", "Opaque {model}-serin-feedback key"),
    ("secret", "another name", lambda s: s["metadata"].update(name="registry-credentials"),
     "secrets", "Opaque {model}-serin-feedback key"),
    ("knative-isvc", "a container of its own",
     lambda i: _predictor(i).update(containers=[{"name": "x", "image": "docker.io/library/busybox"}]),
     "inferenceservices", "no containers, ServiceAccount"),
    ("knative-isvc", "another ServiceAccount", lambda i: _predictor(i).update(serviceAccountName="admin"),
     "inferenceservices", "no containers, ServiceAccount"),
    ("standard-isvc", "a version of another namespace",
     lambda i: i["spec"]["canary"][0]["predictor"]["model"].update(storageUri="pvc://serin-models/team-b/fraud-g2"),
     "inferenceservices", "its own namespace's part of the model store"),
    ("standard-isvc", "a version of another claim",
     lambda i: _predictor(i)["model"].update(storageUri=_predictor(i)["model"]["storageUri"].replace(
         "serin-models", "team-data")), "inferenceservices", "its own namespace's part of the model store"),
    ("knative-isvc", "a version outside the store",
     lambda i: _predictor(i)["model"].update(storageUri="https://example.com/model.onnx"),
     "inferenceservices", "its own namespace's part of the model store"),
    ("knative-isvc", "a storage container of its own", lambda i: _predictor(i).update(storageContainerName="default"),
     "inferenceservices", "an s3:// one fetched by the ClusterStorageContainer"),
    ("standard-isvc", "KServe's storage Secret annotation",
     lambda i: i["metadata"]["annotations"].update({"serving.kserve.io/storageSecretName": "team-b-s3"}),
     "inferenceservices", "names no storage Secret"),
    ("standard-isvc", "a hostPath on the canary",
     lambda i: i["spec"]["canary"][0]["predictor"].update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]),
     "inferenceservices", "volume of its own but scratch"),
    ("knative-isvc", "another runtime", lambda i: _predictor(i)["model"].update(runtime="kserve-tritonserver"),
     "inferenceservices", "runs the serin-onnx runtime"),
    ("standard-isvc", "another image", lambda i: _predictor(i)["model"].update(image="docker.io/library/busybox"),
     "inferenceservices", "runs the serin-onnx runtime"),
    ("standard-isvc", "another Model's key",
     lambda i: _predictor(i)["model"]["env"].append(
         {"name": "K", "valueFrom": {"secretKeyRef": {"name": "payments-serin-feedback", "key": "key"}}}),
     "inferenceservices", "no Secret but its Model's feedback key"),
    # A stolen operator identity (which cannot read Secrets) must not set a token or key it knows.
    ("standard-isvc", "a sender token of the operator's choosing",
     lambda i: _env(i, "SERIN_FEEDBACK_TOKEN", {"value": "known-to-the-attacker"}),
     "inferenceservices", "each from its own Secret"),
    ("knative-isvc", "a signing key of the operator's choosing",
     lambda i: _env(i, "SERIN_FEEDBACK_KEY", {"value": "known-to-the-attacker"}),
     "inferenceservices", "each from its own Secret"),
    ("standard-isvc", "the sender token read from the key's Secret",
     lambda i: _env(i, "SERIN_FEEDBACK_TOKEN", {"valueFrom": {"secretKeyRef": {"name": "fraud-serin-feedback",
                                                                              "key": "key"}}}),
     "inferenceservices", "each from its own Secret"),
    ("knative-isvc", "the key read from another key of its Secret",
     lambda i: _env(i, "SERIN_FEEDBACK_KEY", {"valueFrom": {"secretKeyRef": {"name": "fraud-serin-feedback",
                                                                            "key": "other"}}}),
     "inferenceservices", "each from its own Secret"),
    ("knative-isvc", "the deprecated serviceAccount field", lambda i: _predictor(i).update(serviceAccount="admin"),
     "inferenceservices", "no containers, ServiceAccount"),
    ("knative-isvc", "a probe that runs a command", lambda i: _predictor(i)["model"].update(
        livenessProbe={"exec": {"command": ["sh", "-c", "id"]}}), "inferenceservices", "no image, command, probe"),
    ("standard-isvc", "PYTHONPATH in the environment",
     lambda i: _predictor(i)["model"]["env"].append({"name": "PYTHONPATH", "value": "/mnt/models"}),
     "inferenceservices", "Serin's environment only"),
    ("knative-isvc", "a payload logger", lambda i: _predictor(i).update(logger={"mode": "all",
                                                                               "url": "http://collector.elsewhere"}),
     "inferenceservices", "logger"),
    ("knative-isvc", "labels that join other Services", lambda i: _predictor(i).update(labels={"app": "payments"}),
     "inferenceservices", "labels"),
    ("knative-isvc", "a transformer",
     lambda i: i["spec"].update(transformer={"containers": [{"name": "t", "image": "docker.io/library/busybox"}]}),
     "inferenceservices", "a predictor only"),
    ("httproute", "another Gateway", lambda r: r["spec"]["parentRefs"][0].update(name="internal"),
     "httproutes", "attaches only to the Gateway"),
    ("httproute", "a Service of another namespace",
     lambda r: r["spec"]["rules"][0]["backendRefs"][0].update(namespace="kube-system"),
     "httproutes", "only to its Model's predictor Services"),
    ("httproute", "another Model's hostname", lambda r: r["spec"].update(hostnames=["payments.team-a.example.com"]),
     "httproutes", "serves only its Model's hostname"),
    ("httproute", "KServe's ambiguous form of its hostname",
     lambda r: r["spec"].update(hostnames=[r["spec"]["hostnames"][0].replace(".", "-", 1)]),
     "httproutes", "serves only its Model's hostname"),
    ("httproute", "a path of its own", lambda r: r["spec"]["rules"][0]["matches"].append(
        {"path": {"type": "PathPrefix", "value": "/login"}}), "httproutes", "on the /v1 and /v2 paths"),
    ("httproute", "a Service that is not a predictor",
     lambda r: r["spec"]["rules"][0]["backendRefs"][0].update(name="payments-db"),
     "httproutes", "only to its Model's predictor Services"),
    ("httproute", "a mirror filter",
     lambda r: r["spec"]["rules"][0].update(filters=[{"type": "RequestMirror", "requestMirror": {
         "backendRef": {"name": "collector", "port": 80}}}]),
     "httproutes", "with no filters"),
]


@pytest.mark.parametrize(("kind", "what", "spoil", "policy", "words"), REFUSED,
                         ids=[f"{k}: {w}" for k, w, *_ in REFUSED])
def test_what_the_operator_must_not_write_is_refused(policed: Policed, kind: str, what: str, spoil: Spoil,
                                                      policy: str, words: str) -> None:
    body = copy.deepcopy(BUILDERS[kind](policed.ns))
    spoil(body)
    ok, out = policed.create(body)
    assert not ok, f"{kind} with {what} was admitted"
    assert f"'{policed.release}-operator-{policy}'" in out and words in out, out


def test_the_policies_bind_the_operator_only(policed: Policed) -> None:
    """Anyone else (here cluster-admin) writes what RBAC lets them: the policies are no cluster
    policy, they hold one identity to the objects it exists to make."""
    body = service(policed.ns)
    body["spec"]["type"] = "NodePort"
    out = policed.cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(body), check=False)
    assert out.returncode == 0, out.stderr


def test_objects_that_are_not_serins_cannot_be_changed_or_deleted(policed: Policed) -> None:
    """What RBAC lets the operator patch or delete (Services, InferenceServices, HTTPRoutes, Jobs
    in the namespaces it watches), it may still not touch when it is someone else's."""
    cp, ns = policed.cp, policed.ns
    theirs = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "payments", "namespace": ns},
         "spec": {"selector": {"app": "payments"}, "ports": [{"port": 80}]}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "nightly", "namespace": ns},
         "spec": {"template": {"spec": {"restartPolicy": "Never",
                                        "containers": [{"name": "c", "image": "docker.io/library/busybox"}]}}}},
        {**knative_isvc(ns), "metadata": {"name": "handmade", "namespace": ns}},
        {**route(ns), "metadata": {"name": "handmade", "namespace": ns}},
    ]}
    cp.kubectl("create", "-f", "-", input=json.dumps(theirs))
    labels = {"app.kubernetes.io/managed-by": "serin", "serin.dev/model": "x"}
    service, _job, isvc, httproute = theirs["items"]  # RBAC gives no patch on Jobs
    for obj, policy in ((service, "services"), (isvc, "inferenceservices"), (httproute, "httproutes")):
        # A patch (server-side apply: kubectl's plain patch would read the object first, which
        # RBAC does not allow) that would label it Serin's.
        takeover = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                    "metadata": {"name": obj["metadata"]["name"], "namespace": ns, "labels": labels}}
        ok, out = policed.as_operator("apply", "--server-side", "--field-manager=serin", "-f", "-",
                                      input=json.dumps(takeover))
        assert not ok and f"-operator-{policy}'" in out and "changes no" in out, out
    # Labelled as Serin's but owned by no Model (KServe copies an InferenceService's labels onto
    # the Services it makes): still not the operator's to change.
    labelled = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fraud-gen1-predictor", "namespace": ns,
                                                                   "labels": dict(labels)},
                "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}
    cp.kubectl("create", "-f", "-", input=json.dumps(labelled))
    ok, out = policed.as_operator("apply", "--server-side", "--field-manager=serin", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fraud-gen1-predictor", "namespace": ns,
                                                             "annotations": {"serin.dev/canary": "gen2"}}}))
    assert not ok and "-operator-services'" in out and "changes no" in out, out
    ok, out = policed.as_operator("delete", "job", "nightly", "-n", ns, "--wait=false")
    assert not ok and "-operator-jobs" in out and "only Serin's conversion Jobs" in out, out
    # A conversion Job of Serin's is the operator's to delete (superseded, or past its timeout).
    ours = conversion_job(ns)
    del ours["metadata"]["ownerReferences"]  # no Model here: the garbage collector would race the delete
    cp.kubectl("create", "-f", "-", input=json.dumps(ours))
    name = ours["metadata"]["name"]
    ok, out = policed.as_operator("delete", "job", name, "-n", ns, "--wait=false")
    assert ok, out


def test_a_models_spec_is_never_the_operators_to_change(policed: Policed) -> None:
    """The operator patches Models only to take off the annotations it acted upon."""
    cp, ns = policed.cp, policed.ns
    model = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model",
             "metadata": {"name": "fraud", "namespace": ns, "annotations": {"serin.dev/abort": "2"}},
             "spec": {"source": {"uri": "pvc://models/m.joblib", "sampleUri": "pvc://models/s.csv"}}}
    cp.kubectl("create", "-f", "-", input=json.dumps(model))
    ok, out = policed.as_operator("patch", "model", "fraud", "-n", ns, "--type=merge", "-p",
                                  json.dumps({"spec": {"source": {"uri": "pvc://models/evil.joblib"}}}))
    assert not ok and "-operator-models'" in out and "never changes a Model's spec" in out, out
    ok, out = policed.as_operator("patch", "model", "fraud", "-n", ns, "--type=merge", "-p",
                                  json.dumps({"metadata": {"annotations": {"serin.dev/abort": None}}}))
    assert ok, out


def test_only_who_may_read_a_secret_may_name_it_as_a_models_s3_keys(policed: Policed) -> None:
    """Issue 32 #2: a Model's conversion signs requests with the keys of the Secret it names, to an
    endpoint its author chooses; so naming a Secret takes the right to read it. Held for every
    user (here a ServiceAccount that may write Models but not read Secrets), at each spec change."""
    cp, ns = policed.cp, policed.ns
    cp.kubectl("create", "serviceaccount", "modeler", "-n", ns)
    cp.kubectl("create", "role", "modeler", "-n", ns, "--verb=get,list,create,update,patch",
               "--resource=models.serin.dev")
    cp.kubectl("create", "rolebinding", "modeler", "-n", ns, "--role=modeler", f"--serviceaccount={ns}:modeler")
    cp.kubectl("create", "secret", "generic", "team-s3", "-n", ns,
               "--from-literal=AWS_ACCESS_KEY_ID=a", "--from-literal=AWS_SECRET_ACCESS_KEY=b")
    modeler = cp.service_account_kubeconfig(ns, "modeler")
    model = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "metadata": {"name": "churn", "namespace": ns},
             "spec": {"source": {"uri": "s3://team/m.joblib", "sampleUri": "s3://team/s.csv",
                                 "s3": {"endpoint": "http://attacker.example:80", "secretName": "team-s3"}}}}

    def create(body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(body), kubeconfig=modeler,
                          check=False)

    refused = wait_until_refused(lambda: create(model))  # the RoleBinding above, learnt by the authorizer
    assert refused.returncode != 0
    assert (f"spec.source.s3.secretName: system:serviceaccount:{ns}:modeler may not get the Secret team-s3 in "
            f"namespace {ns}") in refused.stderr, refused.stderr
    without_keys = copy.deepcopy(model)
    del without_keys["spec"]["source"]["s3"]["secretName"]
    assert create(without_keys).returncode == 0, "a Model naming no Secret needs no right to one"
    cp.kubectl("create", "role", "team-s3-reader", "-n", ns, "--verb=get", "--resource=secrets",
               "--resource-name=team-s3")
    cp.kubectl("create", "rolebinding", "team-s3-reader", "-n", ns, "--role=team-s3-reader",
               f"--serviceaccount={ns}:modeler")
    allowed = wait_until_admitted(lambda: create(model))
    assert allowed.returncode == 0, allowed.stderr
    # The same for the capture store's keys, which the predictors get.
    capturing = copy.deepcopy(without_keys)
    capturing["spec"]["serving"] = {"capture": {"share": 0.5, "uri": "s3://team/capture",
                                                "s3": {"endpoint": "http://attacker.example:80",
                                                       "secretName": "other-s3"}}}
    refused = create(capturing)
    assert refused.returncode != 0 and "spec.serving.capture.s3.secretName" in refused.stderr, refused.stderr
    # And for the keys of serin-notify that a notification sink names (spec.notify): a sink with a
    # URL of its own and no key needs no right; one signing with a key of that Secret does.
    notifying = copy.deepcopy(without_keys)
    notifying["spec"]["notify"] = {"sinks": [{"name": "ops", "url": "https://attacker.example/hook"}]}
    assert create(notifying).returncode == 0, "a sink using no key of serin-notify"
    notifying["spec"]["notify"]["sinks"][0]["signingSecretKey"] = "ops-key"
    refused = create(notifying)
    assert refused.returncode != 0
    assert (f"spec.notify.sinks: system:serviceaccount:{ns}:modeler may not get the Secret serin-notify in "
            f"namespace {ns}") in refused.stderr, refused.stderr
    cp.kubectl("create", "role", "team-notify-reader", "-n", ns, "--verb=get", "--resource=secrets",
               "--resource-name=serin-notify")
    cp.kubectl("create", "rolebinding", "team-notify-reader", "-n", ns, "--role=team-notify-reader",
               f"--serviceaccount={ns}:modeler")
    allowed = wait_until_admitted(lambda: create(notifying))
    assert allowed.returncode == 0, allowed.stderr
    # A retraining template is a Job the operator creates for the author: only for one who may create Jobs.
    retraining = copy.deepcopy(without_keys)
    retraining["spec"]["monitoring"] = {"retrain": {"template": trainer("churn")}}
    refused = create(retraining)
    assert refused.returncode != 0
    assert (f"spec.monitoring.retrain: system:serviceaccount:{ns}:modeler may not create Jobs in namespace {ns}"
            in refused.stderr), refused.stderr
    cp.kubectl("create", "role", "team-trainer", "-n", ns, "--verb=create", "--resource=jobs.batch")
    cp.kubectl("create", "rolebinding", "team-trainer", "-n", ns, "--role=team-trainer",
               f"--serviceaccount={ns}:modeler")
    allowed = wait_until_admitted(lambda: create(retraining))
    assert allowed.returncode == 0, allowed.stderr



def test_a_trainer_that_may_only_patch_its_model_may_set_its_source(policed: Policed) -> None:
    """Issue 35 #3: a retraining Job's ServiceAccount may get and patch its one Model, nothing
    else. It sets spec.source's URIs; the checks guard what it leaves as it was (the S3 Secret and
    endpoint, the sinks' keys, the retraining template) and hold again if it changes them."""
    cp, ns = policed.cp, policed.ns
    cp.kubectl("create", "serviceaccount", "churn-trainer", "-n", ns)
    cp.kubectl("create", "role", "churn-trainer", "-n", ns, "--verb=get,patch", "--resource=models.serin.dev",
               "--resource-name=churn-v2")
    cp.kubectl("create", "rolebinding", "churn-trainer", "-n", ns, "--role=churn-trainer",
               f"--serviceaccount={ns}:churn-trainer")
    model = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "metadata": {"name": "churn-v2", "namespace": ns},
             "spec": {"source": {"uri": "s3://team/m.joblib", "sampleUri": "s3://team/s.csv",
                                 "s3": {"endpoint": "http://s3.storage:7070", "secretName": "team-s3"}},
                      "notify": {"sinks": [{"name": "ops", "url": "https://hooks.example/x", "signingSecretKey": "k"}]},
                      "monitoring": {"retrain": {"template": trainer("churn-v2")}}}}
    cp.kubectl("create", "-f", "-", input=json.dumps(model))
    as_trainer = cp.service_account_kubeconfig(ns, "churn-trainer")

    def patch(spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return cp.kubectl("patch", "model", "churn-v2", "-n", ns, "--type=merge", "--dry-run=server",
                          "-p", json.dumps({"spec": spec}), kubeconfig=as_trainer, check=False)

    allowed = wait_until_admitted(lambda: patch({"source": {"uri": "s3://team/retrained/m.joblib",
                                                            "sampleUri": "s3://team/retrained/s.csv"}}))
    assert allowed.returncode == 0, allowed.stderr
    for spec, field in (({"source": {"s3": {"endpoint": "http://attacker.example:80"}}}, "spec.source.s3.secretName"),
                        ({"monitoring": {"retrain": {"cooldown": "1m"}}}, "spec.monitoring.retrain"),
                        ({"notify": {"sinks": [{"name": "ops", "url": "https://attacker.example/x",
                                                "signingSecretKey": "k"}]}}, "spec.notify.sinks")):
        refused = patch(spec)
        assert refused.returncode != 0 and f"{field}: system:serviceaccount:{ns}:churn-trainer may not" in \
            refused.stderr, (spec, refused.stderr)


def wait_until_refused(attempt: Callable[[], subprocess.CompletedProcess[str]],
                       timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Until the answer is a refusal by the policy (not RBAC's, while the authorizer has not yet
    learnt a new RoleBinding), or the time is up: what is returned is then judged."""
    deadline = time.monotonic() + timeout
    while True:
        out = attempt()
        if (out.returncode != 0 and "ValidatingAdmissionPolicy" in out.stderr) or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def wait_until_admitted(attempt: Callable[[], subprocess.CompletedProcess[str]],
                        timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """The authorizer learns of a new RoleBinding from its informer, a moment after the write."""
    deadline = time.monotonic() + timeout
    while True:
        out = attempt()
        if out.returncode == 0 or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


# -- with the S3 model store (issue 34 #3) ----------------------------------------------------------

STORE = "s3://serin-models/versions"


@pytest.fixture(scope="module")
def policed_s3(cluster_helm: Helm, crds: ControlPlane) -> Iterator[Policed]:
    """A namespaced release whose model store is a bucket: its policies, and its ClusterStorageContainer."""
    yield from install_policed(cluster_helm, crds, "serin-s3", lambda team: {
        "servingRuntime": {"create": False}, "watchNamespaces": [team],
        "conversion": {"modelStore": STORE, "modelStoreS3": {"endpoint": "http://s3.storage:7070"}}})


def container_name(policed: Policed) -> str:
    return f"{policed.release}-model-store"  # the chart's serin.storeContainer (the release names "serin")


def store_job(ns: str) -> dict[str, Any]:
    req = ConversionRequest(ns, "fraud", str(uuid.uuid4()), 3, "abcdef0123456789", 1, S3_SPEC.source,
                            S3_SPEC.conversion)
    return job_body(req, JobSettings(image=CONVERTER_IMAGE, model_store=STORE))


def store_isvc(policed: Policed) -> dict[str, Any]:
    ns = policed.ns
    want = ApplyServing(Served(1, f"{STORE}/{ns}/fraud-g1-aaaaaaaa", "b" * 64),
                        Served(2, f"{STORE}/{ns}/fraud-g2-bbbbbbbb", "c" * 64), 10)
    isvc = next(w.body for w in ReplicaRatioRouter(container_name(policed)).plan(Seen(ns, "fraud", uid="u"), want,
                                                                                 SPEC, owner()) if w.kind == "isvc")
    isvc["spec"]["canary"][0]["predictor"]["model"]["name"] = ""
    return isvc


def test_with_the_s3_store_what_the_operator_writes_is_admitted(policed_s3: Policed) -> None:
    # A retraining Job too: with no claim to keep it from, its volumes are its own (the demo's
    # trainer was once refused here: the store's empty claim name matched every other volume).
    for body in (store_job(policed_s3.ns), store_isvc(policed_s3), retraining_job(policed_s3.ns)):
        ok, out = policed_s3.create(body)
        assert ok, out
    # The chart's ClusterStorageContainer, as every predictor of the store names it.
    csc = json.loads(policed_s3.cp.kubectl("get", "clusterstoragecontainer", container_name(policed_s3),
                                           "-o", "json").stdout)
    assert csc["spec"]["supportedUriFormats"] == [{"prefix": f"{STORE}/"}]
    assert csc["spec"]["container"]["command"] == ["python", "-P", "-m", "serin.runtime.fetch"]


STORE_REFUSED: list[tuple[str, Spoil, str, str]] = [
    ("the store keys given to the step that unpickles",
     lambda j: _step(j, "convert")["env"].extend(e for e in _step(j, "publish")["env"] if "valueFrom" in e),
     "jobs", "the publish step's keys of the model store"),
    ("the store keys given to the fetch step (a Model names the store's Secret)",
     lambda j: _step(j, "fetch")["env"].extend(e for e in _step(j, "publish")["env"] if "valueFrom" in e),
     "jobs", "nor the model store's"),
    ("publish keys from another Secret",
     lambda j: next(e for e in _step(j, "publish")["env"] if e["name"] == "AWS_ACCESS_KEY_ID")["valueFrom"][
         "secretKeyRef"].update(name="team-s3"), "jobs", "from the Secret serin-model-store"),
    ("a claim mounted as the store",
     lambda j: (_pod(j)["volumes"].append({"name": "store", "persistentVolumeClaim": {"claimName": "serin-models"}}),
                _step(j, "publish")["volumeMounts"].append({"name": "store", "mountPath": "/mnt/serin-store"})),
     "jobs", "no claim of it is mounted"),
    ("a version of another namespace",
     lambda i: _predictor(i)["model"].update(storageUri=f"{STORE}/team-b/fraud-g1-aaaaaaaa"),
     "inferenceservices", "its own namespace's part of the model store"),
    ("a version up and out of its namespace's part",
     lambda i: _predictor(i)["model"].update(storageUri=_predictor(i)["model"]["storageUri"] + "/../../team-b/x"),
     "inferenceservices", "its own namespace's part of the model store"),
    ("KServe's default storage initializer",
     lambda i: i["spec"]["canary"][0]["predictor"].update(storageContainerName="default"),
     "inferenceservices", "an s3:// one fetched by the ClusterStorageContainer"),
    ("no storage container named",
     lambda i: _predictor(i).pop("storageContainerName"),
     "inferenceservices", "an s3:// one fetched by the ClusterStorageContainer"),
    ("a version's parent",
     lambda i: _predictor(i)["model"].update(storageUri=_predictor(i)["model"]["storageUri"] + "/.."),
     "inferenceservices", "its own namespace's part of the model store"),
    ("the store keys as the capture store's",
     lambda i: (_predictor(i)["model"]["env"].append({"name": "SERIN_CAPTURE", "value": "{}"}),
                _env(i, "AWS_ACCESS_KEY_ID", {"valueFrom": {"secretKeyRef": {
                    "name": "serin-model-store", "key": "AWS_ACCESS_KEY_ID"}}})),
     "inferenceservices", "nor the model store's"),
    ("a trainer given the store keys",
     lambda j: _pod(j)["containers"][0].update(envFrom=[{"secretRef": {"name": "serin-model-store"}}]),
     "jobs", "the model store's serin-model-store"),
    ("a storage spec annotation",
     lambda i: i["metadata"]["annotations"].update({"internal.serving.kserve.io/storage-spec": "true"}),
     "inferenceservices", "names no storage Secret"),
]


@pytest.mark.parametrize(("what", "spoil", "policy", "words"), STORE_REFUSED, ids=[w for w, *_ in STORE_REFUSED])
def test_with_the_s3_store_what_the_operator_must_not_write_is_refused(policed_s3: Policed, what: str, spoil: Spoil,
                                                                      policy: str, words: str) -> None:
    build = {"jobs": retraining_job if "trainer" in what else store_job,
             "inferenceservices": lambda _: store_isvc(policed_s3)}[policy]
    body = copy.deepcopy(build(policed_s3.ns))
    spoil(body)
    ok, out = policed_s3.create(body)
    assert not ok, f"{what} was admitted"
    assert f"'{policed_s3.release}-operator-{policy}'" in out and words in out, out
