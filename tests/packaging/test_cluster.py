"""The chart against the real kube-apiserver (RBAC on): server-side dry runs of several value sets,
helm install / upgrade / uninstall, and the operator's rights proven with `kubectl auth can-i`
using a real ServiceAccount token (TokenRequest), not impersonation."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import FAST_ROLLOUT, Artifacts, Cluster, OperatorProcess, standin, webhook_receiver
from packaging_helpers import ALL_MONITORING, CHART, CONVERTER_IMAGE, CUSTOM_IMAGES, KUBE_VERSION, Helm, values_args
from serin.local.controlplane import ControlPlane
from serin.local.prometheus import Prometheus
from serin.operator import notify

pytestmark = pytest.mark.packaging


def dry_run(cp: ControlPlane, rendered: str) -> str:
    """Server-side dry run with strict field validation: the apiserver's admission, schema (the
    CRDs' included) and defaulting all run, nothing is stored."""
    out = cp.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                     input=rendered, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("values", [{}, CUSTOM_IMAGES, {"servingRuntime": {"create": False}}],
                         ids=["default", "custom-images", "no-serving-runtime"])
def test_dry_run_server(helm: Helm, crds: ControlPlane, namespace: str,
                        values: dict[str, Any]) -> None:
    rendered = helm.template(values, namespace, "serin", "--include-crds").stdout
    out = dry_run(crds, rendered)
    assert "deployment.apps/serin-operator created (server dry run)" in out
    assert "customresourcedefinition.apiextensions.k8s.io/models.serin.dev" in out


def test_operator_pod_meets_the_restricted_pod_security_standard(
        helm: Helm, crds: ControlPlane, namespace: str) -> None:
    """The apiserver's PodSecurity admission warns about a Deployment whose Pods a namespace
    labelled `restricted` would refuse; the operator's Deployment draws no warning."""
    crds.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                 "pod-security.kubernetes.io/warn=restricted")
    rendered = helm.template(None, namespace).stdout
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered, check=False)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr
    # ...and the check has teeth: a root container in the same namespace is warned about.
    bad = rendered.replace("runAsNonRoot: true", "runAsNonRoot: false")
    out = crds.kubectl("apply", "--dry-run=server", "-f", "-", input=bad, check=False)
    assert "would violate PodSecurity" in out.stderr


def test_dry_run_server_namespaced(helm: Helm, crds: ControlPlane, namespace: str,
                                   make_namespace: Callable[[str], str]) -> None:
    watched = [make_namespace("team"), make_namespace("team")]
    out = dry_run(crds, helm.template({"watchNamespaces": watched}, namespace).stdout)
    # One Role and one RoleBinding per watched namespace (kubectl's summary omits namespaces).
    assert out.count("role.rbac.authorization.k8s.io/serin-operator created") == len(watched)
    assert out.count("rolebinding.rbac.authorization.k8s.io/serin-operator created") == len(watched)
    # Namespaced mode asks for no cluster-scoped right at all.
    assert "clusterrole" not in out


@pytest.mark.parametrize("values", [ALL_MONITORING, {"watchNamespaces": ["default"], **ALL_MONITORING}],
                         ids=["monitoring", "namespaced-monitoring"])
def test_dry_run_server_monitoring(helm: Helm, monitoring_crds: ControlPlane, namespace: str,
                                   values: dict[str, Any]) -> None:
    """ServiceMonitor, PodMonitor and PrometheusRule against minimal typed monitoring.coreos.com
    CRDs (tests/packaging/monitoring-crds.yaml): a misspelled field is refused."""
    out = dry_run(monitoring_crds, helm.template(values, namespace).stdout)
    for kind in ("servicemonitor", "podmonitor", "prometheusrule"):
        assert f"{kind}.monitoring.coreos.com/serin" in out
    assert "configmap/serin-dashboard created (server dry run)" in out


def test_dry_run_refuses_a_misspelled_monitoring_field(monitoring_crds: ControlPlane,
                                                       namespace: str) -> None:
    """The monitoring fixture CRDs are strict enough to catch the mistakes they exist for."""
    bad = f"""
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {{name: bad, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{a: b}}}}
  podMetricEndpoints: [{{port: http}}]
"""
    out = monitoring_crds.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-",
                                  input=bad, check=False)
    assert out.returncode != 0 and "podMetricEndpoints" in out.stderr


# -- helm install / upgrade / uninstall ----------------------------------------------------------

def kget(cp: ControlPlane, *args: str) -> bool:
    return cp.kubectl("get", *args, check=False).returncode == 0


def test_chart_kube_version_is_enforced(cluster_helm: Helm, server_version: str, namespace: str,
                                        tmp_path: Path) -> None:
    """The apiserver reports the pinned release (provision.sh stamps it), the shipped chart installs
    against it, and a chart demanding a newer Kubernetes is refused by that same check."""
    assert server_version == f"v{KUBE_VERSION}"
    ok = cluster_helm.run("install", "kv", str(CHART), "--namespace", namespace, "--dry-run=client")
    assert ok.returncode == 0, ok.stderr
    newer = tmp_path / "serin"
    shutil.copytree(CHART, newer)
    chart_yaml = newer / "Chart.yaml"
    chart_yaml.write_text(re.sub(r"(?m)^kubeVersion:.*$", 'kubeVersion: ">=9.0.0-0"', chart_yaml.read_text()))
    out = cluster_helm.run("install", "kv", str(newer), "--namespace", namespace, "--dry-run=client", check=False)
    assert out.returncode != 0 and "chart requires kubeVersion: >=9.0.0-0" in out.stderr


def test_install_upgrade_uninstall(cluster_helm: Helm, crds: ControlPlane, namespace: str,
                                   install_chart: Path,
                                   make_namespace: Callable[[str], str]) -> None:
    release = f"serin-{namespace}"
    name = release  # the release name contains the chart name, so it is the full name
    install = cluster_helm.run("install", release, str(install_chart), "--namespace", namespace)
    assert "STATUS: deployed" in install.stdout
    assert f"kubectl -n {namespace} get deployment {name}-operator" in install.stdout  # NOTES.txt
    assert kget(crds, "-n", namespace, "deployment", f"{name}-operator")
    assert kget(crds, "clusterrole", f"{name}-operator")
    assert kget(crds, "clusterservingruntime", "serin-onnx")
    assert kget(crds, "crd", "models.serin.dev")

    # Upgrade into namespaced mode: the cluster-wide role goes, per-namespace Roles come.
    watched = make_namespace("team")
    cluster_helm.run("upgrade", release, str(install_chart), "--namespace", namespace,
                     *values_args({"watchNamespaces": [watched], "operator": {"replicas": 1}}))
    replicas = crds.kubectl("get", "-n", namespace, "deployment", f"{name}-operator",
                            "-o", "jsonpath={.spec.replicas}").stdout
    assert replicas == "1"
    assert not kget(crds, "clusterrole", f"{name}-operator")
    assert not kget(crds, "clusterrolebinding", f"{name}-operator")
    assert kget(crds, "-n", watched, "role", f"{name}-operator")
    assert kget(crds, "-n", watched, "serviceaccount", "serin-converter")
    history = cluster_helm.run("history", release, "--namespace", namespace).stdout
    assert "Upgrade complete" in history

    cluster_helm.run("uninstall", release, "--namespace", namespace)
    assert not kget(crds, "-n", namespace, "deployment", f"{name}-operator")
    assert not kget(crds, "-n", watched, "role", f"{name}-operator")
    assert not kget(crds, "clusterservingruntime", "serin-onnx")
    # Helm never deletes CRDs from crds/: Models (and the data in them) outlive the release.
    assert kget(crds, "crd", "models.serin.dev")


# -- RBAC, proven as the ServiceAccounts themselves ----------------------------------------------

@dataclass
class Release:
    namespace: str
    operator: Path  # kubeconfig with the serin-operator token
    converter: Path  # kubeconfig with the serin-converter token
    watched: list[str]
    unwatched: str


@pytest.fixture(scope="module")
def cluster_wide(cluster_helm: Helm, crds: ControlPlane, install_chart: Path) -> Iterator[Release]:
    yield from _release(cluster_helm, crds, install_chart, namespaced=False)


@pytest.fixture(scope="module")
def namespaced(cluster_helm: Helm, crds: ControlPlane, install_chart: Path) -> Iterator[Release]:
    yield from _release(cluster_helm, crds, install_chart, namespaced=True)


def _release(helm: Helm, cp: ControlPlane, chart: Path, namespaced: bool) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    ns, team_a, team_b, other = (f"{p}-{suffix}" for p in ("serin", "team-a", "team-b", "other"))
    for n in (ns, team_a, team_b, other):
        cp.kubectl("create", "namespace", n)
    values: dict[str, Any] = {"servingRuntime": {"create": False}}  # cluster-scoped: one owner
    if namespaced:
        values["watchNamespaces"] = [team_a, team_b]
    release = f"serin-rbac-{suffix}"
    helm.run("install", release, str(chart), "--namespace", ns, *values_args(values))
    try:
        yield Release(ns, cp.service_account_kubeconfig(ns, "serin-operator"),
                      cp.service_account_kubeconfig(ns, "serin-converter"),
                      [team_a, team_b] if namespaced else [team_a, team_b, other],
                      other if namespaced else "")
    finally:
        helm.run("uninstall", release, "--namespace", ns, check=False)
        for n in (ns, team_a, team_b, other):
            cp.kubectl("delete", "namespace", n, "--wait=false", check=False)


def can_i(cp: ControlPlane, kubeconfig: Path, verb: str, resource: str,
          namespace: str | None) -> bool:
    where = ["--all-namespaces"] if namespace is None else ["-n", namespace]
    resource, _, name = resource.partition(":")
    resource, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, f"{resource}/{name}" if name else resource, *where]
    if sub:
        args.append(f"--subresource={sub}")
    out = cp.kubectl(*args, kubeconfig=kubeconfig, check=False)
    answer = out.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {out.stdout} {out.stderr}"
    return answer == "yes"


# (verb, resource) the operator needs in every namespace it watches: exactly the calls it makes
# (see charts/serin/templates/_rbac.tpl for which call needs which). test_operator_as_its_*
# below prove the set sufficient by running the operator with this identity.
NEEDED_IN_WATCHED = [
    *[(v, "models.serin.dev") for v in ("get", "list", "watch", "patch")],
    ("patch", "models.serin.dev/status"),
    ("update", "models.serin.dev/finalizers"),
    *[(v, "inferenceservices.serving.kserve.io") for v in ("list", "watch", "create", "patch")],
    *[(v, "deployments.apps") for v in ("list", "watch")],
    *[(v, "services") for v in ("list", "watch", "create", "patch")],
    *[(v, "jobs.batch") for v in ("get", "list", "create", "delete")],
    *[(v, "pods") for v in ("list", "watch")],
    ("create", "events"),
    ("create", "secrets"),  # each Model's feedback key, once; never read back
    ("get", "secrets:serin-notify"),  # its notification sinks' keys (spec.notify): that one Secret by name
]
# What the operator does not use, so it must not have, in the namespaces it watches.
UNUSED_IN_WATCHED = [
    ("update", "models.serin.dev/status"), ("get", "models.serin.dev/status"),
    *[(v, "inferenceservices.serving.kserve.io") for v in ("get", "update", "delete")],
    ("watch", "jobs.batch"),
    ("get", "pods"), ("get", "pods/log"),
    ("patch", "events"), ("create", "events.events.k8s.io"),
    *[(v, "deployments.apps") for v in ("get", "create", "patch", "delete")],
    *[(v, "services") for v in ("get", "update", "delete")],
    *[(v, "secrets") for v in ("update", "patch", "delete")],
    *[(v, "httproutes.gateway.networking.k8s.io") for v in ("list", "watch", "create", "patch")],  # no Gateway
]
# What it must never do, anywhere (None: checked across all namespaces).
FORBIDDEN = [
    ("get", "secrets", None), ("list", "secrets", None), ("watch", "secrets", None),
    ("get", "secrets:another", None), ("get", "secrets:serin-notify-x", None),
    ("create", "pods/exec", None), ("create", "pods", None), ("delete", "pods", None),
    ("create", "roles.rbac.authorization.k8s.io", None),
    ("patch", "roles.rbac.authorization.k8s.io", None),
    ("create", "rolebindings.rbac.authorization.k8s.io", None),
    ("create", "clusterroles.rbac.authorization.k8s.io", None),
    ("patch", "clusterroles.rbac.authorization.k8s.io", None),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
    ("delete", "namespaces", None), ("get", "namespaces", None), ("create", "namespaces", None),
    ("patch", "nodes", None), ("create", "serviceaccounts/token", None),
    ("create", "serviceaccounts", None), ("get", "configmaps", None),
    ("update", "models.serin.dev", None), ("create", "models.serin.dev", None),
    ("delete", "models.serin.dev", None), ("update", "jobs.batch", None),
    ("patch", "jobs.batch", None), ("update", "inferenceservices.serving.kserve.io/status", None),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", None),
    ("create", "clusterservingruntimes.serving.kserve.io", None),
    ("list", "leases.coordination.k8s.io", None), ("delete", "leases.coordination.k8s.io", None),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", None),
    ("bind", "clusterroles.rbac.authorization.k8s.io", None),
    ("impersonate", "serviceaccounts", None),
]
# kopf's cluster scanning is off (serin.operator.handlers): no reads of CRDs or namespaces.
NO_CLUSTER_READS = [*[(v, "customresourcedefinitions.apiextensions.k8s.io") for v in ("get", "list", "watch")],
                    *[(v, "namespaces") for v in ("get", "list", "watch")]]
# name:NAME asks about one object (RBAC resourceNames): get/update only on the operator's Lease.
LEASES = [("create", "leases.coordination.k8s.io"), ("get", "leases.coordination.k8s.io:serin-operator"),
          ("update", "leases.coordination.k8s.io:serin-operator")]
OTHER_LEASES = [("get", "leases.coordination.k8s.io:another"), ("update", "leases.coordination.k8s.io:another"),
                ("get", "leases.coordination.k8s.io"), ("update", "leases.coordination.k8s.io")]


def ids(cases: list[tuple[Any, ...]]) -> list[str]:
    return [" ".join(str(c) for c in case if c) for case in cases]


@pytest.mark.parametrize(("verb", "resource"), NEEDED_IN_WATCHED, ids=ids(NEEDED_IN_WATCHED))
def test_cluster_wide_operator_can_in_any_namespace(crds: ControlPlane, cluster_wide: Release,
                                                     verb: str, resource: str) -> None:
    for ns in cluster_wide.watched:
        assert can_i(crds, cluster_wide.operator, verb, resource, ns), f"{verb} {resource} -n {ns}"
    assert can_i(crds, cluster_wide.operator, verb, resource, None), f"{verb} {resource} -A"


def test_operator_reads_kserves_config_and_nothing_else_there(crds: ControlPlane, cluster_wide: Release) -> None:
    """KServe's default deployment mode: get on that one ConfigMap, in KServe's namespace only."""
    assert can_i(crds, cluster_wide.operator, "get", "configmaps:inferenceservice-config", "kserve")
    assert not can_i(crds, cluster_wide.operator, "get", "configmaps:another", "kserve")
    assert not can_i(crds, cluster_wide.operator, "list", "configmaps", "kserve")
    assert not can_i(crds, cluster_wide.operator, "get", "configmaps:inferenceservice-config", cluster_wide.watched[0])


@pytest.mark.parametrize(("verb", "resource"), UNUSED_IN_WATCHED, ids=ids(UNUSED_IN_WATCHED))
def test_cluster_wide_operator_lacks_what_it_does_not_use(crds: ControlPlane, cluster_wide: Release,
                                                          verb: str, resource: str) -> None:
    assert not can_i(crds, cluster_wide.operator, verb, resource, cluster_wide.watched[0])


@pytest.mark.parametrize(("verb", "resource"), NO_CLUSTER_READS, ids=ids(NO_CLUSTER_READS))
def test_cluster_wide_operator_reads_nothing_cluster_scoped(crds: ControlPlane, cluster_wide: Release,
                                                             verb: str, resource: str) -> None:
    assert not can_i(crds, cluster_wide.operator, verb, resource, None)


@pytest.mark.parametrize(("verb", "resource"), LEASES, ids=ids(LEASES))
def test_cluster_wide_operator_leases(crds: ControlPlane, cluster_wide: Release, verb: str, resource: str) -> None:
    assert can_i(crds, cluster_wide.operator, verb, resource, cluster_wide.namespace)


@pytest.mark.parametrize(("verb", "resource"), OTHER_LEASES, ids=ids(OTHER_LEASES))
def test_no_other_leases_in_the_release_namespace(crds: ControlPlane, cluster_wide: Release,
                                                  verb: str, resource: str) -> None:
    assert not can_i(crds, cluster_wide.operator, verb, resource, cluster_wide.namespace)


@pytest.mark.parametrize(("verb", "resource"), LEASES, ids=ids(LEASES))
def test_leases_only_in_the_release_namespace(crds: ControlPlane, cluster_wide: Release,
                                              verb: str, resource: str) -> None:
    assert not can_i(crds, cluster_wide.operator, verb, resource, cluster_wide.watched[0])


@pytest.mark.parametrize(("verb", "resource", "namespace"), FORBIDDEN, ids=ids(FORBIDDEN))
def test_cluster_wide_operator_cannot(crds: ControlPlane, cluster_wide: Release, verb: str,
                                      resource: str, namespace: str | None) -> None:
    assert not can_i(crds, cluster_wide.operator, verb, resource, namespace)


CONVERTER_FORBIDDEN = [("list", "pods"), ("get", "pods"), ("get", "models.serin.dev"),
                       ("get", "secrets"), ("list", "configmaps"), ("create", "jobs.batch"),
                       ("get", "jobs.batch"), ("create", "serviceaccounts/token"),
                       ("get", "inferenceservices.serving.kserve.io")]


@pytest.mark.parametrize(("verb", "resource"), CONVERTER_FORBIDDEN, ids=ids(CONVERTER_FORBIDDEN))
def test_converter_service_account_can_do_nothing(crds: ControlPlane, cluster_wide: Release,
                                                  verb: str, resource: str) -> None:
    assert not can_i(crds, cluster_wide.converter, verb, resource, cluster_wide.namespace)
    assert not can_i(crds, cluster_wide.converter, verb, resource, None)


@pytest.mark.parametrize(("verb", "resource"), NEEDED_IN_WATCHED, ids=ids(NEEDED_IN_WATCHED))
def test_namespaced_operator_can_only_in_watched_namespaces(crds: ControlPlane, namespaced: Release,
                                                            verb: str, resource: str) -> None:
    for ns in namespaced.watched:
        assert can_i(crds, namespaced.operator, verb, resource, ns), f"{verb} {resource} -n {ns}"
    assert not can_i(crds, namespaced.operator, verb, resource, namespaced.unwatched)
    assert not can_i(crds, namespaced.operator, verb, resource, namespaced.namespace)
    assert not can_i(crds, namespaced.operator, verb, resource, None)


@pytest.mark.parametrize(("verb", "resource"), NO_CLUSTER_READS, ids=ids(NO_CLUSTER_READS))
def test_namespaced_operator_has_no_cluster_scope(crds: ControlPlane, namespaced: Release, verb: str,
                                                  resource: str) -> None:
    assert not can_i(crds, namespaced.operator, verb, resource, None)


@pytest.mark.parametrize(("verb", "resource"), LEASES, ids=ids(LEASES))
def test_namespaced_operator_leases(crds: ControlPlane, namespaced: Release, verb: str,
                                    resource: str) -> None:
    assert can_i(crds, namespaced.operator, verb, resource, namespaced.namespace)
    assert not can_i(crds, namespaced.operator, verb, resource, namespaced.unwatched)


@pytest.mark.parametrize(("verb", "resource", "namespace"), FORBIDDEN, ids=ids(FORBIDDEN))
def test_namespaced_operator_cannot(crds: ControlPlane, namespaced: Release, verb: str,
                                    resource: str, namespace: str | None) -> None:
    assert not can_i(crds, namespaced.operator, verb, resource, namespace)
    assert not can_i(crds, namespaced.operator, verb, resource, namespaced.watched[0])


def test_converter_service_account_is_in_watched_namespaces_without_token(
        crds: ControlPlane, namespaced: Release) -> None:
    for ns in [namespaced.namespace, *namespaced.watched]:
        out = crds.kubectl("get", "-n", ns, "serviceaccount", "serin-converter",
                           "-o", "jsonpath={.automountServiceAccountToken}").stdout
        assert out == "false", ns


# -- the operator as its ServiceAccount: the RBAC proven sufficient by doing the job ---------------
# The operator runs as a process with the chart's ServiceAccount token (what a Pod's in-cluster
# config carries), POD_NAMESPACE set as the Deployment sets it, and the apiserver enforcing
# owner-reference permissions. Any call the RBAC lacks shows as a 403 in its log and a stuck Model.

LONG_STEPS = {**FAST_ROLLOUT, "steps": [{"weight": 10, "pause": "1h"}, {"weight": 50, "pause": "1h"}]}


def operate_as(release: Release, cp: ControlPlane, prometheus: Prometheus, tmp_path: Path, watch: str | None,
               store: Path | str | None = None, **env: str) -> OperatorProcess:
    return OperatorProcess(cp, watch, prometheus.url, store or tmp_path / "store", tmp_path / "operator.log",
                           kubeconfig=release.operator, env={"POD_NAMESPACE": release.namespace, **env})


_LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


# A 403 standing alone (a status), not digits of something longer: the leader's identity is the
# host name, which can read "vm-18177-052403" (it once failed a passing run), as can Pod names.
_STATUS_403 = re.compile(r"(?<![\w.-])403(?![\w.-])")


def forbidden_in_log(op: OperatorProcess) -> list[str]:
    """Lines that report a refused call. The timestamp is left out of the search: its milliseconds
    can read 403 (",403 INFO … StepsPassed" once failed a passing run)."""
    return [line for line in op.log.read_text(errors="replace").splitlines()
            if _STATUS_403.search(_LOG_TIME.sub("", line)) or "orbidden" in line]


def serin_cli(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serin.operator.cli", *args, "--kubeconfig", str(cp.kubeconfig)],
                          capture_output=True, text=True)


def test_operator_as_its_service_account_rolls_out_cluster_wide(
        crds: ControlPlane, cluster_wide: Release, prometheus: Prometheus, artifacts: Artifacts,
        tmp_path: Path) -> None:
    ns = cluster_wide.watched[1]
    op = operate_as(cluster_wide, crds, prometheus, tmp_path, watch=None)  # all namespaces
    c = Cluster(crds, ns, artifacts, op)
    with standin(crds, ns, tmp_path, data_plane=False):
        op.start()
        try:
            c.apply(artifacts.good_v1)
            v1 = c.wait_phase("Promoted", generation=1)["status"]
            c.apply(artifacts.good_v2)
            c.wait_phase("Promoted", generation=2)
            assert c.weights_seen() == [10, 50]
            # A manual abort: the operator acts on the annotation and removes it (patch on models).
            c.apply(artifacts.good_v1, rollout=LONG_STEPS)
            c.wait("canary serving", lambda m: bool((m.get("status") or {}).get("canary", {}).get("trafficSince")))
            assert serin_cli(crds, "abort", c.name, "-n", ns).returncode == 0
            c.wait_phase("RolledBack", generation=3)
            c.wait("abort annotation cleared",
                   lambda m: "serin.dev/abort" not in (m["metadata"].get("annotations") or {}))
            assert {"CanaryStarted", "Promoted", "RolledBack"} <= {e["reason"] for e in c.events()}
            lease = json.loads(crds.kubectl("get", "lease", "serin-operator", "-n", cluster_wide.namespace,
                                            "-o", "json").stdout)
            assert lease["spec"]["holderIdentity"], "the operator took the Lease in its own namespace"
            isvc = c.isvc()
            assert isvc is not None and isvc["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
            assert v1["stable"]["storageUri"]
            # Deleting the Model removes what it owns (garbage collection through the owner reference).
            crds.kubectl("delete", "model", c.name, "-n", ns)
            deadline = time.monotonic() + 60
            while c.isvc() is not None:
                assert time.monotonic() < deadline, "InferenceService not garbage-collected"
                time.sleep(0.5)
        finally:
            op.stop()
    assert forbidden_in_log(op) == []


def test_operator_as_its_service_account_rolls_out_namespaced(
        crds: ControlPlane, namespaced: Release, prometheus: Prometheus, artifacts: Artifacts,
        tmp_path: Path) -> None:
    ns = namespaced.watched[0]
    op = operate_as(namespaced, crds, prometheus, tmp_path, watch=ns)
    c = Cluster(crds, ns, artifacts, op)
    outside = Cluster(crds, namespaced.unwatched, artifacts, op)
    with standin(crds, ns, tmp_path, data_plane=False), webhook_receiver() as receiver:
        # Notifications signed with a key of the namespace's serin-notify: the one Secret it may get.
        crds.kubectl("create", "secret", "generic", "serin-notify", "-n", ns, "--from-literal=key=k3y")
        notify_spec = {"sinks": [{"name": "ops", "url": receiver.url, "signingSecretKey": "key"}]}
        op.start()
        try:
            outside.apply(artifacts.good_v1)
            c.apply(artifacts.good_v1, notify=notify_spec)
            c.wait_phase("Promoted", generation=1)
            c.apply(artifacts.good_v2, notify=notify_spec)
            c.wait_phase("Promoted", generation=2)
            assert c.weights_seen() == [10, 50]
            assert "status" not in outside.model(), "a namespaced operator touched a Model outside its namespaces"
            c.wait("notifications sent", lambda m: not ((m.get("status") or {}).get("notifications") or {}).get("pending"))
            assert receiver.reasons() == ["Serving", "CanaryStarted", "Promoted"]
            assert all(notify.verify(body, headers[notify.SIGNATURE_HEADER], b"k3y")
                       for headers, body, _ in receiver.requests)
        finally:
            op.stop()
    assert forbidden_in_log(op) == []


def test_operator_as_its_service_account_runs_conversion_jobs(
        crds: ControlPlane, cluster_wide: Release, prometheus: Prometheus, artifacts: Artifacts,
        tmp_path: Path) -> None:
    """The Job executor's calls (create Job, read it, list its Pod, delete it) as the operator's
    identity. This tier's control plane has no kubelet (tests/cluster has a real node), so the
    conversion times out and the operator cancels it: every verb of the Job rules is used."""
    ns = cluster_wide.watched[0]
    op = operate_as(cluster_wide, crds, prometheus, tmp_path, watch=None, store="pvc://serin-models",
                    SERIN_EXECUTOR="job", SERIN_CONVERTER_IMAGE=CONVERTER_IMAGE)
    c = Cluster(crds, ns, artifacts, op)
    op.start()
    try:
        c.apply(artifacts.good_v1, conversion={"timeout": "4s"})
        job = None
        deadline = time.monotonic() + 30
        while job is None:
            assert time.monotonic() < deadline, f"no conversion Job\n{op.tail()}"
            items = json.loads(crds.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)["items"]
            job = items[0] if items else None
            time.sleep(0.25)
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "serin-converter" and pod["automountServiceAccountToken"] is False
        assert job["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
        s = c.wait_phase("Failed", generation=1, timeout=60)["status"]
        assert "did not finish within 4s" in json.dumps(s)
        c.wait("Job cancelled", lambda m: json.loads(crds.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)
               ["items"] == [], timeout=30)
    finally:
        op.stop()
    assert forbidden_in_log(op) == []


def test_a_conversion_job_the_admission_policy_refuses_fails_the_conversion_saying_why(
        crds: ControlPlane, cluster_wide: Release, prometheus: Prometheus, artifacts: Artifacts,
        tmp_path: Path) -> None:
    """An operator set up with another converter image than the chart's (a misconfiguration, or a
    compromised operator) gets its Jobs refused by the chart's admission policy: the Model's
    conversion fails at once with the apiserver's reason, not after retries as "did not run"."""
    ns = cluster_wide.watched[2]  # a namespace no other test converts in
    op = operate_as(cluster_wide, crds, prometheus, tmp_path, watch=None, store="pvc://serin-models",
                    SERIN_EXECUTOR="job", SERIN_CONVERTER_IMAGE="docker.io/library/python:3.11")
    c = Cluster(crds, ns, artifacts, op)
    op.start()
    try:
        c.apply(artifacts.good_v1)
        reason = c.wait_phase("Failed", generation=1, timeout=60)["status"]["failed"]["reason"]
        assert "the conversion Job was refused" in reason and "-operator-jobs" in reason, reason
        assert "runs the steps fetch, convert, publish of " + CONVERTER_IMAGE in reason, reason
        assert json.loads(crds.kubectl("get", "jobs", "-n", ns, "-o", "json").stdout)["items"] == []
    finally:
        op.stop()
