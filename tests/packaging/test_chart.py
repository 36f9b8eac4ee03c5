"""The chart as files: lint, render, schema, single sources (CRD, serving runtime), generated docs.
No cluster here; tests/packaging/test_cluster.py applies the same renders to the real apiserver."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging_helpers import (
    ALL_MONITORING,
    CHART,
    CUSTOM_IMAGES,
    KUBE_VERSION,
    REPO,
    Helm,
    find,
    values_args,
)
from serin.runtime import metric_names

pytestmark = pytest.mark.packaging

# Value sets exercised by lint, render and (test_cluster.py) server-side dry runs.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "monitoring": ALL_MONITORING,
    "custom-images": CUSTOM_IMAGES,
    "namespaced-monitoring": {"watchNamespaces": ["team-a"], **ALL_MONITORING},
}

# What the operator needs, exactly (docs/install.md has the reasons). (group, resource) -> verbs.
# Exactly the calls the operator makes (see templates/_rbac.tpl); test_cluster.py proves them
# sufficient by running the operator with them.
NAMESPACED_RULES = {
    ("serin.dev", "models"): {"get", "list", "watch", "patch"},
    ("serin.dev", "models/status"): {"patch"},
    ("serin.dev", "models/finalizers"): {"update"},
    ("serving.kserve.io", "inferenceservices"): {"list", "watch", "create", "patch"},
    ("apps", "deployments"): {"list", "watch"},
    ("", "services"): {"list", "watch", "create", "patch"},
    ("batch", "jobs"): {"get", "list", "create", "delete"},
    ("", "secrets"): {"create"},
    ("", "secrets", "serin-notify"): {"get"},
    ("", "pods"): {"list", "watch"},
    ("", "events"): {"create"},
}
LEASE_RULES = {("coordination.k8s.io", "leases"): {"create"},
               ("coordination.k8s.io", "leases", "serin-operator"): {"get", "update"}}
KSERVE_CONFIG_RULES = {("", "configmaps", "inferenceservice-config"): {"get"}}
GATEWAY_RULES = {("gateway.networking.k8s.io", "httproutes"): {"list", "watch", "create", "patch"},
                 ("discovery.k8s.io", "endpointslices"): {"list", "watch"}}


def rules_of(role: dict[str, Any]) -> dict[tuple[str, ...], set[str]]:
    """(group, resource[, resourceName]) -> verbs."""
    out: dict[tuple[str, ...], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for name in rule.get("resourceNames") or [None]:
                    key = (group, resource) if name is None else (group, resource, name)
                    out.setdefault(key, set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_strict(helm: Helm, values: dict[str, Any]) -> None:
    out = helm.run("lint", "--strict", str(CHART), *values_args(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_rendered_object_is_labelled_and_namespaced_as_expected(
        helm: Helm, values: dict[str, Any]) -> None:
    objects = helm.objects(values, namespace="ops")
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "ClusterServingRuntime", "ValidatingAdmissionPolicy",
                      "ValidatingAdmissionPolicyBinding"}
    for obj in objects:
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/instance"] == "serin", meta["name"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "serin", meta["name"]
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta, meta["name"]
        else:
            assert meta.get("namespace"), f"{obj['kind']}/{meta['name']} has no namespace"


# -- the operator Deployment ---------------------------------------------------------------------

def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = find(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(("values", "namespace_args"), [
    ({}, []),
    ({"watchNamespaces": ["team-a", "team-b"]}, ["--namespace=team-a", "--namespace=team-b"]),
], ids=["cluster-wide", "namespaced"])
def test_operator_command_and_args(helm: Helm, values: dict[str, Any],
                                   namespace_args: list[str]) -> None:
    container = operator_container(helm.objects(values))
    assert container["command"] == ["serin", "operator"]
    assert container["args"] == [*namespace_args, "--executor=job", "--max-conversions=4",
                                 "--max-conversions-per-namespace=0", "--require-analysis=true",
                                 "--prometheus-url=http://prometheus-operated.monitoring.svc:9090",
                                 "--metrics-port=8080", "--health-port=8081"]


def test_operator_env_probes_and_ports(helm: Helm) -> None:
    container = operator_container(helm.objects())
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["SERIN_CONVERTER_IMAGE"]["value"] == "ghcr.io/serin/converter:0.1.0"
    assert env["SERIN_CONVERSION_SERVICE_ACCOUNT"]["value"] == "serin-converter"
    assert env["SERIN_MODEL_STORE"]["value"] == "pvc://serin-models"
    assert "KUBECONFIG" not in env  # in a Pod the operator uses its ServiceAccount (auto-detected)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_operator_runs_locked_down(helm: Helm) -> None:
    objects = helm.objects()
    (deployment,) = find(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(objects)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "serin-operator"
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert deployment["spec"]["replicas"] == 2
    assert find(objects, "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1


def test_custom_images_and_digests(helm: Helm) -> None:
    objects = helm.objects(CUSTOM_IMAGES)
    container = operator_container(objects)
    assert container["image"] == "registry.example/ml/serin-operator@sha256:" + "a" * 64
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SERIN_CONVERTER_IMAGE"] == "registry.example/ml/serin-converter:0.1.0-rc1"
    assert env["SERIN_MODEL_STORE"] == "pvc://models/serin" and env["EXTRA"] == "1"
    assert container["args"][-1] == "--log-level=debug"
    (runtime,) = find(objects, "ClusterServingRuntime")
    images = {c["name"]: c["image"] for c in runtime["spec"]["containers"]}
    assert images["kserve-container"] == "registry.example/ml/serin-runtime:0.1.0-rc1"
    assert not find(objects, "PodDisruptionBudget"), "one replica: a PDB would block every drain"


# -- RBAC -------------------------------------------------------------------------------------

def test_cluster_wide_rbac_is_exactly_what_the_operator_needs(helm: Helm) -> None:
    objects = helm.objects()
    (cluster_role,) = find(objects, "ClusterRole")
    assert rules_of(cluster_role) == NAMESPACED_RULES
    (leases,) = find(objects, "Role", namespace="serin-system")
    assert rules_of(leases) == LEASE_RULES
    (kserve_config,) = find(objects, "Role", namespace="kserve")
    assert rules_of(kserve_config) == KSERVE_CONFIG_RULES
    (binding,) = find(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "serin-operator",
                                    "namespace": "serin-system"}]
    assert not find(objects, "RoleBinding", namespace="team-a")


def test_namespaced_rbac_has_a_role_per_namespace_and_nothing_cluster_wide(helm: Helm) -> None:
    objects = helm.objects({"watchNamespaces": ["team-a", "team-b"]})
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    for ns in ("team-a", "team-b"):
        (role,) = find(objects, "Role", namespace=ns)
        assert rules_of(role) == NAMESPACED_RULES
        (binding,) = find(objects, "RoleBinding", namespace=ns)
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"][0]["namespace"] == "serin-system"
    (leases,) = find(objects, "Role", namespace="serin-system")
    assert rules_of(leases) == LEASE_RULES


def test_httproutes_only_with_a_gateway_and_the_kserve_config_role_is_optional(helm: Helm) -> None:
    with_gateway = helm.objects({"gateway": {"name": "serin", "namespace": "gw", "listener": "web"}})
    (cluster_role,) = find(with_gateway, "ClusterRole")
    assert rules_of(cluster_role) == NAMESPACED_RULES | GATEWAY_RULES
    (operator,) = find(with_gateway, "Deployment")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SERIN_GATEWAY"] == "gw/serin/web" and env["SERIN_KSERVE_NAMESPACE"] == "kserve"
    without = helm.objects({"kserve": {"readConfig": False}})
    assert not find(without, "Role", namespace="kserve") and not find(without, "RoleBinding", namespace="kserve")
    refused = helm.template({"gateway": {"name": "serin"}}, check=False)
    assert refused.returncode != 0 and "gateway.namespace is required" in refused.stderr


def test_an_s3_model_store_brings_its_storage_container_and_reaches_the_operator(helm: Helm) -> None:
    """Issue 34 #3: the operator gets the store, its settings and the name of the chart's
    ClusterStorageContainer, which runs the runtime image's fetch with the namespace's Secret."""
    s3 = {"endpoint": "http://s3.storage:7070", "region": "eu-west-1", "secretName": "store-keys"}
    objects = helm.objects({"conversion": {"modelStore": "s3://models/serin", "modelStoreS3": s3},
                            "servingRuntime": {"image": {"repository": "registry.example/serin/runtime",
                                                         "tag": "7"}}}, "serin-system", "prod")
    (operator,) = find(objects, "Deployment")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SERIN_MODEL_STORE"] == "s3://models/serin"
    assert json.loads(env["SERIN_MODEL_STORE_S3"])["secretName"] == "store-keys"
    (csc,) = find(objects, "ClusterStorageContainer", name=env["SERIN_MODEL_STORE_CONTAINER"])
    assert csc["metadata"]["name"] == "prod-serin-model-store"
    assert csc["spec"]["supportedUriFormats"] == [{"prefix": "s3://models/serin/"}]
    container = csc["spec"]["container"]
    assert container["image"] == "registry.example/serin/runtime:7"
    assert container["command"] == ["python", "-P", "-m", "serin.runtime.fetch"]
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert keys == dict.fromkeys(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), "store-keys")
    settings = json.loads(next(e["value"] for e in container["env"] if e["name"] == "SERIN_MODEL_STORE_S3"))
    assert settings == {"endpoint": "http://s3.storage:7070", "region": "eu-west-1", "addressing": "",
                        "verifyTls": True}
    # Moved to a claim, the versions still served from the bucket are still fetched by it.
    moved = helm.objects({"conversion": {"modelStore": "pvc://serin-models", "modelStoreS3": s3,
                                         "formerModelStores": ["s3://models/serin", "s3://older"]}})
    (csc,) = find(moved, "ClusterStorageContainer")
    assert csc["spec"]["supportedUriFormats"] == [{"prefix": "s3://models/serin/"}, {"prefix": "s3://older/"}]
    (operator,) = find(moved, "Deployment")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SERIN_MODEL_STORE"] == "pvc://serin-models" and env["SERIN_MODEL_STORE_CONTAINER"]
    # A claim: no storage container, no S3 settings.
    plain = helm.objects()
    assert not find(plain, "ClusterStorageContainer")
    (operator,) = find(plain, "Deployment")
    assert {"SERIN_MODEL_STORE_S3", "SERIN_MODEL_STORE_CONTAINER"}.isdisjoint(
        e["name"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"])


def test_the_charts_notification_sinks_reach_the_operator_with_a_read_of_one_secret(helm: Helm) -> None:
    sinks = [{"name": "platform", "urlSecretKey": "slack-url", "format": "Slack", "events": ["RolledBack"]}]
    objects = helm.objects({"notifications": {"sinks": sinks, "attempts": 4, "firstRetrySeconds": 2}})
    (role,) = find(objects, "Role", name="serin-operator-notify")
    assert role["metadata"]["namespace"] == "serin-system"
    assert rules_of(role) == {("", "secrets", "serin-notify"): {"get"}}
    (operator,) = find(objects, "Deployment")
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["SERIN_NOTIFY_SINKS"]) == sinks
    assert (env["SERIN_NOTIFY_ATTEMPTS"], env["SERIN_NOTIFY_RETRY_SECONDS"]) == ("4", "2")
    assert not find(helm.objects(), "Role", name="serin-operator-notify"), "no chart sinks, no read"
    refused = helm.template({"notifications": {"sinks": [{"name": "x", "url": "ftp://x"}]}}, check=False)
    assert refused.returncode != 0 and "/notifications/sinks/0/url" in refused.stderr


def test_every_rbac_rule_says_why(helm: Helm) -> None:
    text = helm.template({"watchNamespaces": ["team-a"]}).stdout + helm.template().stdout
    lines = text.splitlines()
    rule_lines = [i for i, line in enumerate(lines) if re.match(r"^\s*- apiGroups:", line)]
    assert rule_lines
    for i in rule_lines:
        assert lines[i - 1].strip().startswith("#"), \
            f"rule without a reason:\n{lines[i - 1]}\n{lines[i]}\n{lines[i + 1]}"


@pytest.mark.parametrize(("values", "expected"), [
    ({}, {"serin-system"}),
    ({"conversion": {"serviceAccount": {"namespaces": ["ml", "serin-system"]}}}, {"serin-system", "ml"}),
    ({"watchNamespaces": ["team-a", "team-b"]}, {"serin-system", "team-a", "team-b"}),
    ({"watchNamespaces": ["serin-system"]}, {"serin-system"}),
], ids=["cluster-wide", "cluster-wide-listed-namespaces", "namespaced", "namespaced-release-namespace"])
def test_converter_service_account_has_no_token_and_no_bindings(
        helm: Helm, values: dict[str, Any], expected: set[str]) -> None:
    """Conversion Jobs run in the Model's namespace: the ServiceAccount must exist there."""
    objects = helm.objects(values)
    converters = find(objects, "ServiceAccount", name="serin-converter")
    assert {sa["metadata"]["namespace"] for sa in converters} == expected
    assert all(sa["automountServiceAccountToken"] is False for sa in converters)
    for binding in find(objects, "RoleBinding") + find(objects, "ClusterRoleBinding"):
        assert {s["name"] for s in binding["subjects"]} == {"serin-operator"}


# -- values.schema.json -------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "named"), [
    ({"replicas": 3}, "replicas"),
    ({"operator": {"replica": 2}}, "replica"),
    ({"operator": {"replicas": "two"}}, "replicas"),
    ({"operator": {"replicas": 0}}, "replicas"),
    ({"operator": {"executor": "subprocess"}}, "executor"),
    ({"operator": {"metricsPort": 70000}}, "metricsPort"),
    ({"operator": {"prometheusUrl": "prometheus:9090"}}, "prometheusUrl"),
    ({"operator": {"image": {"digest": "latest"}}}, "digest"),
    ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "pullPolicy"),
    ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
    ({"watchNamespaces": "team-a"}, "watchNamespaces"),
    ({"conversion": {"modelStore": "ftp://models"}}, "modelStore"),
    ({"conversion": {"modelStore": "s3://"}}, "modelStore"),
    ({"conversion": {"modelStore": "s3://Models_X/serin"}}, "modelStore"),
    ({"conversion": {"modelStore": "s3://models/serin/"}}, "modelStore"),
    ({"conversion": {"modelStoreS3": {"endpoint": "s3.storage:7070"}}}, "endpoint"),
    ({"conversion": {"modelStoreS3": {"secret": "x"}}}, "secret"),
    ({"conversion": {"modelStore": ""}}, "modelStore"),
    ({"monitoring": {"serviceMonitor": {"interval": "30 seconds"}}}, "interval"),
    # Gone: drift alerts follow each Model's spec.monitoring verdict (an upgrade keeping it is told).
    ({"monitoring": {"prometheusRule": {"driftThreshold": 0.25}}}, "driftThreshold"),
    ({"monitoring": {"podMonitor": {"enabled": "yes"}}}, "enabled"),
    ({"servingRuntime": {"resources": {"request": {"cpu": "100m"}}}}, "request"),
    ({"servingRuntime": {"resources": {"limits": {"memory": ["1Gi"]}}}}, "memory"),
    ({"operator": {"requireAnalysis": "no"}}, "requireAnalysis"),
], ids=["unknown-top-level-key", "misspelled-nested-key", "replicas-not-an-integer", "zero-replicas",
        "unknown-executor", "port-out-of-range", "prometheus-url-without-scheme", "digest-not-sha256",
        "unknown-pull-policy", "invalid-namespace-name", "namespaces-not-a-list",
        "model-store-bad-scheme", "model-store-s3-without-bucket", "model-store-bad-bucket", "model-store-trailing-slash",
        "model-store-empty",
        "store-endpoint-without-scheme", "store-settings-misspelled",
        "interval-not-a-duration", "negative-drift-threshold",
        "enabled-not-a-boolean", "runtime-resources-misspelled", "runtime-resource-not-a-quantity",
        "require-analysis-not-a-boolean"])
def test_schema_rejects_bad_values_naming_the_value(helm: Helm, values: dict[str, Any],
                                                    named: str) -> None:
    out = helm.template(values, check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr
    assert named in out.stderr, out.stderr


# -- single sources: the CRD and the serving runtime --------------------------------------------

def crd_files() -> list[Path]:
    return sorted((REPO / "manifests" / "crds").glob("*.yaml"))


def test_chart_crds_are_manifests_crds(helm: Helm) -> None:
    link = CHART / "crds"
    assert link.is_symlink() and link.resolve() == (REPO / "manifests" / "crds").resolve()
    shown = helm.run("show", "crds", str(CHART)).stdout
    for path in crd_files():
        assert path.read_text() in shown, f"helm show crds lacks {path.name} byte for byte"
    rendered = [d for d in yaml.safe_load_all(helm.template(None, "serin-system", "serin",
                                                            "--include-crds").stdout) if d]
    for path in crd_files():
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc in rendered, f"helm template --include-crds lacks {doc['metadata']['name']}"


def test_packaged_chart_carries_the_crds_and_runtime_byte_for_byte(helm: Helm, tmp_path: Path) -> None:
    helm.run("package", str(CHART), "--destination", str(tmp_path))
    (tgz,) = tmp_path.glob("serin-0.1.0.tgz")
    with tarfile.open(tgz) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for path in crd_files():
            member = members[f"serin/crds/{path.name}"]
            assert member.isfile(), "helm package must dereference the symlink"
            assert tar.extractfile(member).read() == path.read_bytes()  # type: ignore[union-attr]
        runtime_path = "serin/files/manifests/serving-runtime/serin-onnx.yaml"
        runtime = tar.extractfile(members[runtime_path]).read()  # type: ignore[union-attr]
        assert runtime == (REPO / "manifests" / "serving-runtime" / "serin-onnx.yaml").read_bytes()
        # files/manifests links to all of manifests/: .helmignore keeps only the runtime.
        extra = [n for n in members if n.startswith("serin/files/manifests/")
                 and not n.startswith("serin/files/manifests/serving-runtime/")]
        assert not extra, f"packaged beyond the serving runtime: {extra}"
    # The packaged chart renders like the directory does.
    assert helm.run("template", "serin", str(tgz), "--kube-version", KUBE_VERSION).stdout == \
        helm.template(None, "default").stdout


def test_serving_runtime_is_the_manifest_with_only_image_and_labels_changed(helm: Helm) -> None:
    link = CHART / "files" / "manifests"
    assert link.is_symlink() and link.resolve() == (REPO / "manifests").resolve()
    source = yaml.safe_load((REPO / "manifests" / "serving-runtime" / "serin-onnx.yaml").read_text())
    assert source["kind"] == "ClusterServingRuntime" and source["metadata"]["name"] == "serin-onnx"
    (default,) = find(helm.objects(), "ClusterServingRuntime")
    assert default["spec"] == source["spec"], "default values must not change the runtime's spec"
    assert source["metadata"].get("labels", {}).items() <= default["metadata"]["labels"].items()
    (custom,) = find(helm.objects(CUSTOM_IMAGES), "ClusterServingRuntime")
    for src, got in zip(source["spec"]["containers"], custom["spec"]["containers"], strict=True):
        if src["name"] == "kserve-container":
            assert got["image"] == "registry.example/ml/serin-runtime:0.1.0-rc1"
            got = {**got, "image": src["image"]}
        assert got == src
    assert not find(helm.objects({"servingRuntime": {"create": False}}), "ClusterServingRuntime")


def test_serving_runtime_resources_are_small_by_default_and_set_by_a_value(helm: Helm) -> None:
    """Issue 33: every predictor of a Model without resources of its own requested a whole CPU,
    so a canary never fitted beside its stable on a 2-core node. The default requests are small;
    the chart's servingRuntime.resources replaces them (a Model's spec.serving.resources wins in
    KServe's merge)."""
    (default,) = find(helm.objects(), "ClusterServingRuntime")
    (container,) = [c for c in default["spec"]["containers"] if c["name"] == "kserve-container"]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    mine = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    (custom,) = find(helm.objects({"servingRuntime": {"resources": mine}}), "ClusterServingRuntime")
    (container,) = [c for c in custom["spec"]["containers"] if c["name"] == "kserve-container"]
    assert container["resources"] == mine and container["image"] == "ghcr.io/serin/runtime:0.1.0"


# -- monitoring: rules, dashboard ---------------------------------------------------------------

def _operator_metrics() -> set[str]:
    """The exposed names of the operator's metrics, from the module that defines them."""
    from prometheus_client.metrics import MetricWrapperBase
    from serin.operator import opmetrics

    return {m._name + ("_total" if m._type == "counter" else "")
            for m in vars(opmetrics).values() if isinstance(m, MetricWrapperBase)}


OPERATOR_METRICS = _operator_metrics()
RUNTIME_METRICS = {getattr(metric_names, n) for n in dir(metric_names)
                   if n.isupper() and isinstance(getattr(metric_names, n), str)
                   and getattr(metric_names, n).startswith("serin_")}
PROMQL_FUNCTIONS_AND_KEYWORDS = {
    "sum", "max", "by", "rate", "increase", "histogram_quantile", "label_values", "scalar",
}


def metric_names_in(expr: str) -> set[str]:
    names = set(re.findall(r"\bserin_[a-z_]+", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count"))
            and re.sub(r"_(bucket|sum|count)$", "", n) in OPERATOR_METRICS | RUNTIME_METRICS else n
            for n in names}


def prometheus_rule(helm: Helm) -> dict[str, Any]:
    (rule,) = find(helm.objects(ALL_MONITORING), "PrometheusRule")
    return rule


def test_operator_exports_the_metrics_the_chart_was_written_against() -> None:
    assert {"serin_rollouts_started_total", "serin_rollouts_promoted_total",
            "serin_rollouts_rolled_back_total", "serin_canary_weight",
            "serin_analysis_verdicts_total", "serin_conversion_seconds",
            "serin_reconcile_errors_total", "serin_monitoring_alarm"} <= OPERATOR_METRICS, OPERATOR_METRICS


def test_alerts_use_only_contract_metrics(helm: Helm) -> None:
    rules = prometheus_rule(helm)["spec"]["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == ["SerinRollbacks", "SerinRolloutStuck",
                                            "SerinModelDrifted", "SerinModelDegraded", "SerinReconcileErrors",
                                            "SerinNotificationsFailing"]
    for rule in rules:
        assert metric_names_in(rule["expr"]) <= OPERATOR_METRICS | RUNTIME_METRICS, rule["expr"]
        assert rule["annotations"]["summary"] and rule["labels"]["severity"]


PROMTOOL_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'serin_rollouts_rolled_back_total{namespace="ml",model="fraud",reason="error-rate"}'
        values: '0 0 1 1 1'
      - series: 'serin_canary_weight{namespace="ml",model="stuck"}'
        values: '10x70'
      - series: 'serin_canary_weight{namespace="ml",model="moving"}'
        values: '10x20 0x50'
      - series: 'serin_monitoring_alarm{namespace="ml",model="fraud",signal="inputDrift",dry_run="false",silenced="false"}'
        values: '0x5 1x10 0x5'
      - series: 'serin_monitoring_alarm{namespace="ml",model="trial",signal="inputDrift",dry_run="true",silenced="false"}'
        values: '1x20'
      - series: 'serin_monitoring_alarm{namespace="ml",model="quiet",signal="inputDrift",dry_run="false",silenced="true"}'
        values: '1x20'
      - series: 'serin_monitoring_alarm{namespace="ml",model="fraud",signal="accuracy",dry_run="false",silenced="false"}'
        values: '0x10 1x10'
      - series: 'serin_monitoring_alarm{namespace="ml",model="fresh",signal="accuracy",dry_run="false",silenced="false"}'
        values: '-1x20'
      - series: 'serin_reconcile_errors_total{namespace="ml",model="broken"}'
        values: '0+1x30'
      - series: 'serin_notifications_failed_total{namespace="ml",sink="ops"}'
        values: '0x5 1x30'
      - series: 'serin_reconcile_errors_total{namespace="ml",model="blip"}'
        values: '0x5 1x5 2x40'  # two errors five minutes apart: not an operator that keeps failing
    alert_rule_test:
      - {eval_time: 4m, alertname: SerinRollbacks, exp_alerts: [{exp_labels: {severity: warning, namespace: ml, model: fraud, reason: error-rate}, exp_annotations: {summary: "Model ml/fraud was rolled back (error-rate)", description: "Traffic went back to the stable version (analysis: the canary failed its analysis; manual: serin abort; deadline, crashed, superseded, reverted: as named). See: kubectl describe model -n ml fraud"}}]}
      - {eval_time: 30m, alertname: SerinRolloutStuck, exp_alerts: []}
      - {eval_time: 65m, alertname: SerinRolloutStuck, exp_alerts: [{exp_labels: {severity: warning, namespace: ml, model: stuck}, exp_annotations: {summary: "Canary of ml/stuck has held 10% of traffic for 1h", description: "The rollout neither promoted nor rolled back: check the Model's status (paused? inconclusive analysis? Prometheus reachable?), then serin promote or serin abort."}}]}
      - {eval_time: 3m, alertname: SerinModelDrifted, exp_alerts: []}
      - {eval_time: 8m, alertname: SerinModelDrifted, exp_alerts: [{exp_labels: {severity: warning, namespace: ml, model: fraud, signal: inputDrift}, exp_annotations: {summary: "Model ml/fraud drifted (inputDrift)", description: "The serving version's traffic moved beyond the Model's tolerance. Which feature and by how much: kubectl describe model -n ml fraud (condition Drifted, status.monitoring)."}}]}
      - {eval_time: 18m, alertname: SerinModelDrifted, exp_alerts: []}
      - {eval_time: 5m, alertname: SerinModelDegraded, exp_alerts: []}
      - {eval_time: 12m, alertname: SerinModelDegraded, exp_alerts: [{exp_labels: {severity: warning, namespace: ml, model: fraud, signal: accuracy}, exp_annotations: {summary: "Model ml/fraud degraded (accuracy)", description: "The serving version's performance is worse than the Model's limit. The measurement: kubectl describe model -n ml fraud (condition PerformanceDegraded, status.monitoring)."}}]}
      - {eval_time: 4m, alertname: SerinNotificationsFailing, exp_alerts: []}
      - {eval_time: 10m, alertname: SerinNotificationsFailing, exp_alerts: [{exp_labels: {severity: warning, namespace: ml, sink: ops}, exp_annotations: {summary: "Serin gave up notifications to sink ops of namespace ml", description: "A notification was not delivered: see the NotificationFailed Events (kubectl get events -n ml --field-selector reason=NotificationFailed) for the sink's answer."}}]}
      - {eval_time: 30m, alertname: SerinNotificationsFailing, exp_alerts: []}
      - {eval_time: 25m, alertname: SerinReconcileErrors, exp_alerts: [{exp_labels: {severity: warning, namespace: ml, model: broken}, exp_annotations: {summary: "The Serin operator keeps failing to reconcile ml/broken", description: "Reconcile errors for 15m: see the Model's Events and the operator's logs."}}]}
"""


def test_alerts_fire_when_they_should_promtool(helm: Helm, tmp_path: Path) -> None:
    """The PrometheusRule's groups checked and unit-tested by Prometheus' own promtool."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": prometheus_rule(helm)["spec"]["groups"]}))
    (tmp_path / "tests.yaml").write_text(PROMTOOL_TESTS)
    for args in (["check", "rules", "rules.yaml"], ["test", "rules", "tests.yaml"]):
        out = subprocess.run(["promtool", *args], cwd=tmp_path, capture_output=True, text=True)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"


def test_dashboard_configmap(helm: Helm) -> None:
    (cm,) = find(helm.objects(ALL_MONITORING), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["serin.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("Canary weight per model", "Rollouts by outcome", "Analysis verdicts",
                   "Request rate by revision", "Error rate by revision", "p99 latency by revision",
                   "Input PSI by revision", "Feature PSI by revision and feature",
                   "Input drift test by revision (smallest adjusted p-value)",
                   "Accuracy by revision (ground truth, last hour)",
                   "Log loss and Brier score by revision (ground truth, last hour)",
                   "MAE and RMSE by revision (ground truth, regressors, last hour)", "Ground truth received",
                   "Estimated accuracy by revision (no labels needed, last hour)",
                   "Operator: analysis round time (p95)",
                   "Monitoring verdict per model and signal (1 alarm, 0 watching, -1 no baseline)",
                   "Monitoring evidence towards an alarm (1 raises it)"):
        assert wanted in titles
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for expr in exprs:
        assert metric_names_in(expr) <= OPERATOR_METRICS | RUNTIME_METRICS, expr


def test_dashboard_queries_parse_promtool(helm: Helm, tmp_path: Path) -> None:
    """Every panel query is valid PromQL (Grafana's variables replaced by plausible values)."""
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text())
    rules = []
    for i, panel in enumerate(dashboard["panels"]):
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$namespace", ".*") \
                .replace("$model", ".*")
            rules.append({"record": f"serin:dashboard_check_{i}_{target['refId']}", "expr": expr})
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))
    out = subprocess.run(["promtool", "check", "rules", "rules.yaml"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("values", "selector"), [
    ({}, {"any": True}),
    ({"watchNamespaces": ["team-a", "team-b"]}, {"matchNames": ["team-a", "team-b"]}),
    ({"monitoring": {"podMonitor": {"namespaces": ["ml"]}}}, {"matchNames": ["ml"]}),
], ids=["cluster-wide-any-namespace", "namespaced-follows-watched", "explicit-namespaces"])
def test_pod_monitor_selects_kserve_predictor_pods(helm: Helm, values: dict[str, Any],
                                                   selector: dict[str, Any]) -> None:
    merged = {**values, "monitoring": {"podMonitor": {
        "enabled": True, **values.get("monitoring", {}).get("podMonitor", {})}}}
    (pm,) = find(helm.objects(merged), "PodMonitor")
    assert pm["spec"]["selector"] == {"matchExpressions": [
        {"key": "serving.kserve.io/inferenceservice", "operator": "Exists"}]}
    assert pm["spec"]["namespaceSelector"] == selector
    assert pm["spec"]["podMetricsEndpoints"] == [{"path": "/metrics", "interval": "15s", "targetPort": 8080}]


def test_monitoring_is_off_by_default(helm: Helm) -> None:
    kinds = {o["kind"] for o in helm.objects()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}


# -- generated files ----------------------------------------------------------------------------

def test_chart_readme_is_generated_from_values() -> None:
    out = subprocess.run([sys.executable, str(REPO / "hack" / "chart-readme.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def leaves(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_documented_and_in_the_schema() -> None:
    sys.path.insert(0, str(REPO / "hack"))
    try:
        import importlib

        readme = importlib.import_module("chart-readme")
    finally:
        sys.path.pop(0)
    text = (CHART / "values.yaml").read_text()
    documented = {key for key, _ in readme.documented_keys(text)}
    schema = json.loads((CHART / "values.schema.json").read_text())
    for leaf in leaves(yaml.safe_load(text)):
        assert any(leaf == d or leaf.startswith(d + ".") for d in documented), f"{leaf} undocumented"
        node = schema
        for part in leaf.split("."):
            if "properties" not in node:  # a free-form object (resources, labels): no deeper keys
                break
            assert part in node["properties"], f"{leaf} missing from values.schema.json"
            node = node["properties"][part]
    assert schema["additionalProperties"] is False


def test_install_yaml_is_rendered_from_the_chart() -> None:
    out = subprocess.run(["bash", str(REPO / "hack" / "render-install.sh"), "-"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (REPO / "manifests" / "install.yaml").read_text(), \
        "manifests/install.yaml is stale: run `bash hack/render-install.sh`"
    docs = [d for d in yaml.safe_load_all(io.StringIO(out.stdout)) if d]
    assert docs[0]["kind"] == "Namespace"
    assert {d["kind"] for d in docs} >= {"CustomResourceDefinition", "Deployment", "ClusterRole",
                                        "ClusterServingRuntime", "ServiceAccount"}


# -- the operator's admission policies (issue 32 #3; proven against the apiserver in
# test_admission_policy.py) -----------------------------------------------------------------------

def test_admission_policies_hold_the_operators_identity_to_the_configured_images(helm: Helm) -> None:
    objects = helm.objects(CUSTOM_IMAGES, namespace="ops")
    policies = find(objects, "ValidatingAdmissionPolicy")
    bindings = find(objects, "ValidatingAdmissionPolicyBinding")
    kinds = ("jobs", "services", "secrets", "inferenceservices", "httproutes", "models")
    assert sorted(p["metadata"]["name"] for p in policies) == sorted(
        [*(f"serin-operator-{k}" for k in kinds), "serin-model-secrets"])
    assert {b["spec"]["policyName"] for b in bindings} == {p["metadata"]["name"] for p in policies}
    assert all(b["spec"]["validationActions"] == ["Deny"] for b in bindings)
    assert all(p["spec"]["failurePolicy"] == "Fail" for p in policies)
    # Every user's Models (who names an S3 Secret must be allowed to read it), not only the operator's.
    [model_secrets] = find(objects, "ValidatingAdmissionPolicy", name="serin-model-secrets")
    assert "matchConditions" not in model_secrets["spec"]
    for policy in (p for p in policies if p["metadata"]["name"].startswith("serin-operator-")):
        [condition] = policy["spec"]["matchConditions"]
        assert condition["expression"] == "request.userInfo.username == 'system:serviceaccount:ops:serin-operator'"
    [jobs] = find(objects, "ValidatingAdmissionPolicy", name="serin-operator-jobs")
    rules = json.dumps(jobs["spec"]["validations"])
    assert "'registry.example/ml/serin-converter:0.1.0-rc1'" in rules and "'serin-converter'" in rules


def test_admission_policies_can_be_left_out_and_need_kubernetes_1_30(helm: Helm) -> None:
    assert not find(helm.objects({"operator": {"admissionPolicy": {"enabled": False}}}), "ValidatingAdmissionPolicy")
    out = helm.run("template", "serin", str(CHART), "--kube-version", "1.29.0", check=False)
    assert out.returncode != 0 and "operator.admissionPolicy.enabled=false" in out.stderr
    assert helm.run("template", "serin", str(CHART), "--kube-version", "1.29.0",
                    "--set", "operator.admissionPolicy.enabled=false").returncode == 0
