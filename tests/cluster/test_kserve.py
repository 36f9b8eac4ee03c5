"""Rollouts on the real KServe (v0.20's own controller, CRDs and webhooks) in Standard mode, with
real Pods of Serin's runtime image: the split made by the ready-replica ratio behind Serin's
Service, then exactly by Traefik through an HTTPRoute. Serin runs as installed by Helm; a real
Prometheus discovers the runtime Pods through the Kubernetes API.

The tests run in order, on one cluster: first without a Gateway, then (after a `helm upgrade`
that points the operator at Traefik) with one."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import from_first_served, wait_for, webhook_receiver
from serin.local import demo_models, trainer
from serin.local.cluster import Cluster
from serin.local.cluster_platform import (
    MODEL_RESOURCES,
    RELEASE,
    S3_SECRET,
    STORE_BUCKET,
    STORE_PREFIX,
    STORE_SECRET,
    SYSTEM,
    ClusterPlatform,
    bring_up,
)
from serin.local.loadgen import Answer, LoadGenerator, sender_token
from serin.local.node import HOST_ADDRESS

MODELS = "models"

# One real node on the host at a time: the tier runs whole on one xdist worker (hack/test.sh).
pytestmark = pytest.mark.xdist_group("node")


def get(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@dataclass
class Platform:
    cluster: Cluster
    platform: ClusterPlatform
    versions: dict[str, demo_models.VersionFiles]


@pytest.fixture(scope="module")
def platform(real_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    work = tmp_path_factory.mktemp("platform")
    up = bring_up(work, MODELS, cluster=real_cluster)
    print("\nplatform up: " + ", ".join(f"{k} {v:.1f}s" for k, v in up.started_in.items()))
    versions = {
        "v1": demo_models.sklearn_version(work / "v1", seed=1),
        "v2": demo_models.sklearn_version(work / "v2", seed=2),
        "v3": demo_models.sklearn_version(work / "v3", seed=3),
        "erroring": demo_models.erroring_version(work / "erroring"),
        "slow": demo_models.slow_version(work / "slow"),
        "drifted": demo_models.drifted_version(work / "drifted"),
    }
    try:
        yield Platform(real_cluster, up, versions)
    finally:
        up.prometheus.stop()
        up.s3.stop()


def apply_model(p: Platform, name: str, version: str, serving: dict[str, Any] | None = None,
                spec: dict[str, Any] | None = None, **rollout: Any) -> None:
    files = p.versions[version]
    # From the platform's S3 server, with the namespace's keys (the fetch step of each conversion Job).
    source = p.platform.upload(name, version, files)
    p.cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "serin.dev/v1alpha1", "kind": "Model", "metadata": {"name": name, "namespace": MODELS},
        "spec": {"source": {**source, "format": files.format},
                 "serving": {"resources": MODEL_RESOURCES} | (serving or {}),
                 "rollout": {"steps": [{"weight": 10, "pause": "10s"}, {"weight": 50, "pause": "10s"}]} | rollout}
        | (spec or {})}))


def status(p: Platform, name: str) -> dict[str, Any]:
    return dict(get(p.cluster, "model", name, "-n", MODELS).get("status") or {})


def print_state(p: Platform, name: str, kinds: str = "pods,deploy,jobs,isvc") -> None:
    """What a wait that timed out leaves for the reader: the Model's status, its objects, and
    KServe's controller's last lines."""
    print(json.dumps(status(p, name), indent=1)[-3000:])
    print(p.cluster.kubectl("get", kinds, "-n", MODELS, "-o", "wide").stdout)
    if p.cluster.kserve is not None:
        print(p.cluster.kserve.log(40))


def wait_phase(p: Platform, name: str, phase: str, generation: int, timeout: float = 300) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        s = status(p, name)
        stable = (s.get("stable") or {}).get("generation")
        if s.get("phase") == phase and (phase == "RolledBack" or stable == generation):
            return s
        return None
    try:
        return wait_for(f"{name} {phase} at generation {generation}", reached, timeout=timeout)
    except AssertionError:
        print_state(p, name)
        raise


def wait_canary_routed(p: Platform, name: str, timeout: float = 420) -> None:
    """Until generation 2 has weight on the Model's HTTPRoute: its conversion (a Job) and its
    Pods come first, which on a 2-core machine shared with the other test worker take minutes."""
    try:
        wait_for(f"{name}'s canary on the route", lambda: route_weights(p, name).get("gen2", 0) > 0,
                 timeout=timeout, every=0.25)
    except AssertionError:
        print_state(p, name)
        raise


def events(p: Platform, name: str, reason: str) -> list[dict[str, Any]]:
    return list(get(p.cluster, "events", "-n", MODELS, "--field-selector",
                     f"involvedObject.name={name},reason={reason}")["items"])


def service_ip(p: Platform, name: str) -> str:
    return str(get(p.cluster, "service", name, "-n", MODELS)["spec"]["clusterIP"])


def by_revision(answers: list[Answer]) -> Counter[str]:
    return Counter(a.revision for a in answers if a.status == 200)


def failed(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.status != 200]


# The route may carry a new weight up to this long before the test reads it (it polls every 0.25 s
# and each read is a kubectl call): requests sent that early may already have gone to the canary.
ROUTE_LAG = 2.0


# -- without a Gateway: KServe's spec.canary and the replica ratio -------------------------------


def test_first_version_serves_in_standard_mode_from_real_pods(platform: Platform) -> None:
    p, name = platform, "iris"
    t0 = time.monotonic()
    # Capturing every answer into the namespace's bucket, with the namespace's keys (issue 34 #4).
    apply_model(p, name, "v1", serving={"capture": {
        "share": 1, "uri": f"s3://{p.platform.bucket}/capture", "flushInterval": "2s",
        "s3": {"endpoint": p.platform.s3.url, "secretName": S3_SECRET}}})
    s = wait_phase(p, name, "Promoted", 1)
    print(f"\napply -> first version serving (conversion Job, KServe Deployment, runtime Pod): "
          f"{time.monotonic() - t0:.1f}s")
    assert s["serving"] == {"mode": "Standard", "traffic": "replicaRatio",
                            "url": f"http://{name}-serin.{MODELS}.svc.cluster.local"}
    assert s["stable"]["revision"] == "gen1"
    isvc = get(p.cluster, "inferenceservice", name, "-n", MODELS)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["status"]["deploymentMode"] == "Standard"
    (pod,) = get(p.cluster, "pods", "-n", MODELS, "-l", f"app=isvc.{name}-gen1-predictor")["items"]
    assert pod["spec"]["containers"][0]["image"] == p.cluster.images["runtime"].ref
    # The version is in the S3 model store, under the namespace's part (issue 34 #3); KServe's
    # pod-mutating webhook injected its storage-initializer, merged with the chart's
    # ClusterStorageContainer the predictor names: Serin's fetch, with the namespace's store keys.
    place = s["stable"]["storageUri"]
    assert place.startswith(f"s3://{STORE_BUCKET}/{STORE_PREFIX}/{MODELS}/{name}-g1-"), place
    assert isvc["spec"]["predictor"]["storageContainerName"] == f"{RELEASE}-model-store"
    (init,) = pod["spec"]["initContainers"]
    assert init["name"] == "storage-initializer" and init["image"] == p.cluster.images["runtime"].ref
    assert init["command"] == ["python", "-P", "-m", "serin.runtime.fetch"] and init["args"] == [place, "/mnt/models"]
    keys = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in init["env"] if "valueFrom" in e}
    assert keys == dict.fromkeys(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"), STORE_SECRET)
    assert not any("persistentVolumeClaim" in v for v in pod["spec"]["volumes"]), "no claim: the store is S3"
    stored = p.platform.s3.client().list_objects_v2(Bucket=STORE_BUCKET, Prefix=place.split("/", 3)[3] + "/")
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in stored["Contents"]) == ["model.onnx", "profile.json",
                                                                               "report.json"]
    # The feedback key: a Secret the operator made for the Model (owned by it), read by the Pod;
    # the state volume where the ids that got their truth outlive container restarts.
    secret = get(p.cluster, "secret", f"{name}-serin-feedback", "-n", MODELS)
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Model" and set(secret["data"]) == {"key"}
    sender = get(p.cluster, "secret", f"{name}-serin-feedback-sender", "-n", MODELS)
    assert sender["metadata"]["ownerReferences"][0]["kind"] == "Model" and set(sender["data"]) == {"token"}
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["SERIN_FEEDBACK_KEY"]["valueFrom"]["secretKeyRef"]["name"] == f"{name}-serin-feedback"
    assert env["SERIN_FEEDBACK_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": f"{name}-serin-feedback-sender",
                                                                        "key": "token", "optional": True}
    assert {"name": "serin-state", "mountPath": "/var/lib/serin"} in [
        {k: m[k] for k in ("name", "mountPath")} for m in pod["spec"]["containers"][0]["volumeMounts"]]
    load = LoadGenerator(f"http://{service_ip(p, f'{name}-serin')}", name, rate=20, max_seconds=30,
                         keep_alive=False).start()
    time.sleep(3)
    load.stop()
    assert failed(load.answers) == [] and by_revision(load.answers).keys() == {"gen1"}, by_revision(load.answers)
    # The predictor Pod wrote what it answered to S3, under the Model's namespace, name and revision.
    s3 = p.platform.s3.client(p.platform.s3_user)
    prefix = f"capture/{MODELS}/{name}/gen1/predictions/"

    def captured_rows() -> int:
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=p.platform.bucket, Prefix=prefix).get("Contents", [])]
        return sum(json.loads(line)["rows"] for key in keys for line in gzip.decompress(
            s3.get_object(Bucket=p.platform.bucket, Key=key)["Body"].read()).splitlines())

    answered = sum(1 for a in load.answers if a.status == 200)
    rows = wait_for("the answers captured in S3", lambda: (n := captured_rows()) >= answered * load.rows and n,
                    timeout=60)
    print(f"captured {rows} rows of {answered} answers in s3://{p.platform.bucket}/{prefix}")


def test_replica_ratio_canary_reports_the_weight_it_achieved_and_promotes(platform: Platform) -> None:
    p, name = platform, "iris"
    # A Service balances connections: a new one per request, as many clients do (with keep-alive
    # a client stays on the Pods it first reached, which is why exact weights need a Gateway).
    load = LoadGenerator(f"http://{service_ip(p, f'{name}-serin')}", name, rate=20, max_seconds=300,
                         keep_alive=False).start()
    try:
        apply_model(p, name, "v2")
        step1 = wait_for("the canary serving at step 1", lambda: (c := status(p, name).get("canary") or {}).get(
            "trafficSince") and c.get("step") == 0 and c, timeout=240)
        # One stable and one canary replica: half the requests, whatever the step asks.
        assert (step1["weight"], step1["observedWeight"]) == (10, 50)
        (warning,) = events(p, name, "WeightNotExact")[:1]
        assert "gets 50% of traffic, not 10%" in warning["message"]
        t_step1 = load.now()
        s = wait_phase(p, name, "Promoted", 2)
    finally:
        load.stop()
    assert s["stable"]["revision"] == "gen2"
    during = load.window(t_step1 + 1, t_step1 + 8)
    counts = by_revision(during)
    assert counts["gen1"] > 0 and counts["gen2"] > 0, counts
    assert failed(load.answers) == [], Counter((a.status, a.revision) for a in failed(load.answers))
    isvc = get(p.cluster, "inferenceservice", name, "-n", MODELS)
    assert isvc["spec"]["predictor"]["name"] == "gen2" and not isvc["spec"].get("canary")
    names = {d["metadata"]["name"] for d in get(p.cluster, "deployments", "-n", MODELS, "-l",
                                                 f"serving.kserve.io/inferenceservice={name}")["items"]}
    assert names == {f"{name}-gen2-predictor"}  # promoted by retargeting: the canary's Deployment kept


def test_a_store_that_refuses_the_namespaces_keys_fails_the_version_and_says_which_key(platform: Platform) -> None:
    """Issue 34 #3: the model store refuses the keys the namespace's Secret holds (rotated on the
    server, not in the Secret): the conversion's publish step fails for good (no retry can help),
    status.conversion says which key is refused, and nothing is served from a version the store
    does not hold. The other Models of the namespace serve on (their Pods fetched at start)."""
    p, name = platform, "refused-store"
    secret = get(p.cluster, "secret", STORE_SECRET, "-n", MODELS)
    key_id = base64.b64decode(secret["data"]["AWS_ACCESS_KEY_ID"]).decode()
    p.cluster.kubectl("patch", "secret", STORE_SECRET, "-n", MODELS, "--type", "merge", "-p",
                      json.dumps({"stringData": {"AWS_SECRET_ACCESS_KEY": "rotated-elsewhere"}}))
    try:
        apply_model(p, name, "v1")

        def failed_conversion() -> dict[str, Any] | None:
            c = status(p, name).get("conversion") or {}
            return c if c.get("passed") is False else None

        conversion = wait_for("the conversion failed by the store", failed_conversion, timeout=300)
    finally:
        p.cluster.kubectl("patch", "secret", STORE_SECRET, "-n", MODELS, "--type", "merge", "-p",
                          json.dumps({"data": {"AWS_SECRET_ACCESS_KEY": secret["data"]["AWS_SECRET_ACCESS_KEY"]}}))
    try:
        assert conversion["error"] == "store-refused", conversion
        assert "the secret access key does not match the access key ID" in conversion["reason"], conversion
        assert key_id in conversion["reason"] and "AWS_SECRET_ACCESS_KEY" in conversion["reason"]
        s = status(p, name)
        assert not s.get("stable") and (s.get("pending") or {}).get("retryAt") is None, s
        assert p.cluster.kubectl("get", "inferenceservice", name, "-n", MODELS, check=False).returncode != 0
    finally:
        p.cluster.kubectl("delete", "model", name, "-n", MODELS, "--wait=false")


def test_a_combination_kserve_cannot_serve_is_refused_with_the_reason(platform: Platform) -> None:
    """Never rolled out blind: here the Model pins Knative mode for an InferenceService that KServe
    runs in Standard mode (KServe cannot change it), and the canary is refused, saying why."""
    p, name = platform, "iris"
    apply_model(p, name, "v3", serving={"deploymentMode": "Knative"})
    s = wait_phase(p, name, "RolledBack", 3)
    assert "KServe cannot change the mode of an InferenceService" in s["message"], s["message"]
    assert s["stable"]["generation"] == 2 and s["failed"]["generation"] == 3
    (rolled,) = events(p, name, "RolledBack")
    assert "KServe cannot change the mode" in rolled["message"]


# -- with a Gateway: exact weights ----------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    t0 = time.monotonic()
    gw = platform.platform.use_gateway(tmp_path_factory.mktemp("gateway"))
    print(f"\nTraefik, the Gateway, and the operator pointed at it: {time.monotonic() - t0:.1f}s")
    yield gw


def gateway_load(gw: Any, name: str, rate: float = 40, feedback: float = 0.0, token: str = "") -> LoadGenerator:
    return LoadGenerator(gw.address, name, rate=rate, max_seconds=600, host=f"{name}.{MODELS}.example.com",
                         feedback=feedback, feedback_delay=0.5, feedback_token=token).start()


def route_weights(p: Platform, name: str) -> dict[str, int]:
    route = get(p.cluster, "httproute", name, "-n", MODELS)
    return {b["name"].removeprefix(f"{name}-").removesuffix("-predictor"): b["weight"]
            for b in route["spec"]["rules"][0]["backendRefs"]}


def through_gateway(gw: Any, host: str, path: str, body: Any = None) -> int:
    """The status of a GET (or, with `body`, a JSON POST) of `path` at `host` through the Gateway."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{gw.address}{path}", data=data,
                                     headers={"Host": host, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_gateway_walks_10_50_and_promotes_with_exact_weights_and_no_failed_request(platform: Platform, gateway: Any) -> None:
    p, name = platform, "fraud"
    apply_model(p, name, "v1")
    s = wait_phase(p, name, "Promoted", 1)
    assert s["serving"]["traffic"] == "gateway" and s["serving"]["url"] == f"http://{name}.{MODELS}.example.com"
    # Ground truth for a third of the answers, through the same route: truth for a canary answer
    # often reaches a stable Pod and the other way round, which only a shared key makes work.
    load = gateway_load(gateway, name, feedback=0.33, token=sender_token(p.cluster.kubectl, name, MODELS))
    seen: dict[int, tuple[float, dict[str, int]]] = {}
    try:
        wait_for("the Gateway to serve the first version", lambda: by_revision(load.answers)["gen1"] > 20, timeout=60)
        t_apply = load.now()
        apply_model(p, name, "v2", steps=[{"weight": 10, "pause": "12s"}, {"weight": 50, "pause": "12s"}])

        def step_serving() -> bool:
            c = status(p, name).get("canary") or {}
            if c.get("trafficSince") and c.get("step") not in seen:
                seen[c["step"]] = (load.now(), route_weights(p, name))
            return bool(status(p, name).get("phase") == "Promoted" and status(p, name)["stable"]["generation"] == 2)

        wait_for("the promotion", step_serving, timeout=300, every=0.5)
    finally:
        load.stop()
    assert seen[0][1] == {"gen1": 90, "gen2": 10} and seen[1][1] == {"gen1": 50, "gen2": 50}, seen
    first_canary = min(a.t for a in load.answers if a.revision == "gen2")
    print(f"\nkubectl apply -> canary serving at step 1 (Gateway): {first_canary - t_apply:.1f}s")
    for step, share in ((0, 0.10), (1, 0.50)):
        t = seen[step][0]
        counts = by_revision(load.window(t + 1, t + 9))
        got = counts["gen2"] / max(1, counts["gen1"] + counts["gen2"])
        assert abs(got - share) < 0.06, (step, counts)  # exact weights, counted on real answers
    bad = failed(from_first_served(load.answers))
    assert bad == [], f"{len(bad)} of {len(load.answers)} requests failed: {Counter(a.status for a in bad)}"
    assert route_weights(p, name) == {"gen2": 100}
    told = Counter((a.revision, a.status) for a in load.feedback_answers)
    assert told[("gen2", 200)] > 10 and told[("gen1", 200)] > 10, told
    assert all(status == 200 for _, status in told), told
    # One count per prediction (issue 32 #5): truth that the Gateway took to the other revision's
    # Pod went on, over the node's Pod network, to the Pod that answered, and was counted there.
    def routed(route: str) -> float:
        found = p.platform.prometheus.query(
            f'sum(max_over_time(serin_feedback_routed_total{{model="{name}",route="{route}"}}[15m]))')
        return float(found["data"]["result"][0]["value"][1]) if found["data"]["result"] else 0.0

    wait_for("forwarded truth in Prometheus", lambda: routed("forwarded") > 0 and routed("received") > 0,
             timeout=60)
    # The Gateway publishes the protocols (feedback included, above), not the Pods' /metrics
    # (issue 32 #5): Prometheus scrapes those from the Pods.
    host = f"{name}.{MODELS}.example.com"
    assert through_gateway(gateway, host, f"/v2/models/{name}") == 200
    assert through_gateway(gateway, host, "/metrics") == 404
    # An inference client holds ids (it got the answers) but not the sender token: its "truth" is
    # refused, on the real route as on the Pods.
    answer_id = load.told_ids[-1]
    assert through_gateway(gateway, host, f"/v2/models/{name}/feedback", {"id": answer_id, "truth": [0]}) == 401


def test_a_bad_version_is_rolled_back_with_the_stable_serving_throughout(platform: Platform, gateway: Any) -> None:
    p, name = platform, "fraud"
    load = gateway_load(gateway, name)
    load_wall0 = time.time() - load.now()
    try:
        wait_for("steady load on the stable", lambda: by_revision(load.answers)["gen2"] > 20, timeout=60)
        apply_model(p, name, "erroring", steps=[{"weight": 20, "pause": "60s"}, {"weight": 50, "pause": "60s"}],
                    analysis={"interval": "5s", "failureLimit": 3, "metrics": [
                        {"name": "errors", "builtin": "errorRate", "max": 0.01}]})
        s = wait_phase(p, name, "RolledBack", 3, timeout=300)
        t_done = load.now()
        wait_for("answers after the rollback", lambda: load.now() > t_done + 3, timeout=10)
    finally:
        load.stop()
    assert s["stable"]["generation"] == 2 and "errors" in s["message"], s["message"]
    assert s["failed"]["kind"] == "RolledBack"
    # The canary's model raises on most requests: the fast path rolls it back on the first round
    # that measured it, not after failureLimit rounds.
    assert "a hard failure" in s["message"], s["message"]
    served_by_canary = [a for a in load.answers if a.revision == "gen3"]
    canary_errors = [a for a in load.answers if a.status == 500]
    started = next(e for e in events(p, name, "RollbackStarted") if "generation 3" in e["message"])
    first_failed = min(dt.datetime.fromisoformat(m["at"].replace("Z", "+00:00")) for m in s["analysis"]
                       if m["verdict"] == "Failed" and m["generation"] == 3)
    last_canary_answer = max(a.t for a in load.answers if a.revision == "gen3")
    zero_at = dt.datetime.fromtimestamp(load_wall0 + last_canary_answer, dt.UTC)
    print(f"\nfirst failed measurement -> 0 % traffic on the canary (last answer it gave): "
          f"{(zero_at - first_failed).total_seconds():.1f}s; {len(canary_errors)} canary 500s, "
          f"{len(load.answers)} requests; {started['message']}")
    # The stable served throughout: every failure is the canary's own (its model raises), none is
    # a request lost to a weight change.
    stable_failed = [a for a in failed(load.answers) if a.status != 500]
    assert stable_failed == [], Counter((a.status, a.revision) for a in stable_failed)
    assert served_by_canary and canary_errors
    after = load.window(t_done + 0.5)
    assert after and by_revision(after).keys() == {"gen2"}
    assert route_weights(p, name) == {"gen2": 100}
    assert not get(p.cluster, "inferenceservice", name, "-n", MODELS)["spec"].get("canary")


def leader_pod(p: Platform) -> str:
    holder = get(p.cluster, "lease", "serin-operator", "-n", SYSTEM)["spec"]["holderIdentity"]
    pods = [x["metadata"]["name"] for x in get(p.cluster, "pods", "-n", SYSTEM, "-l",
                                               "app.kubernetes.io/name=serin")["items"]]
    (leader,) = [x for x in pods if holder.startswith(f"{x}-")]
    return leader


def test_operator_pod_and_kserve_controller_killed_mid_rollout(platform: Platform, gateway: Any) -> None:
    """The operator's Pod killed at step 1, KServe's controller killed and restarted at step 2: the
    rollout resumes from status and finishes once, with no step repeated and no request failed."""
    p, name = platform, "fraud"
    assert p.cluster.kserve is not None
    load = gateway_load(gateway, name, rate=20)
    try:
        wait_for("steady load", lambda: by_revision(load.answers)["gen2"] > 20, timeout=60)
        apply_model(p, name, "v3", steps=[{"weight": 10, "pause": "15s"}, {"weight": 50, "pause": "15s"}])
        wait_for("step 1 serving", lambda: (c := status(p, name).get("canary") or {}).get("trafficSince")
                 and c.get("step") == 0, timeout=240)
        p.cluster.kubectl("delete", "pod", leader_pod(p), "-n", SYSTEM, "--grace-period=0", "--force")
        wait_for("step 2 serving", lambda: (c := status(p, name).get("canary") or {}).get("trafficSince")
                 and c.get("step") == 1, timeout=240)
        p.cluster.kserve.restart(downtime=5)
        s = wait_phase(p, name, "Promoted", 4)
    finally:
        load.stop()
    assert s["stable"]["revision"] == "gen4"
    assert len([e for e in events(p, name, "CanaryStarted") if "generation 4" in e["message"]]) == 1
    assert len([e for e in events(p, name, "StepAdvanced") if "generation 4" in e["message"]]) == 1
    assert len([e for e in events(p, name, "Promoted") if "generation 4" in e["message"]]) == 1
    bad = failed(load.answers)
    assert bad == [], f"{len(bad)} of {len(load.answers)} requests failed: {Counter(a.status for a in bad)}"


# -- kill points (tests/controlplane/test_operator_rollout.py's KILL_POINTS) on the real cluster ---

# (failpoint, the new version, its end). The operator's container exits at the failpoint as a crash
# would (exit 137) and the kubelet restarts it; the failpoint is then removed from the Deployment
# (a failpoint before a persist would be hit again on every restart: the same tick is re-decided).
REAL_KILL_POINTS = [
    ("after-persist:ConversionStarted", "v2", "Promoted"),  # the conversion Job runs on alone
    ("before-persist:StepAdvanced", "v2", "Promoted"),
    ("after-persist:StepsPassed", "v2", "Promoted"),
    ("after-persist:RollbackStarted", "erroring", "RolledBack"),
    ("before-persist:RolledBack", "erroring", "RolledBack"),
]


def v1_served_under_load(p: Platform, gw: Any, name: str) -> LoadGenerator:
    """A new Model's first version Promoted, and 20 requests/s flowing to it through the Gateway."""
    apply_model(p, name, "v1")
    wait_phase(p, name, "Promoted", 1)
    load = gateway_load(gw, name, rate=20)
    try:
        wait_for("steady load", lambda: by_revision(load.answers)["gen1"] > 10, timeout=60)
    except BaseException:
        load.stop()
        raise
    return load


def set_failpoint(p: Platform, failpoint: str) -> None:
    setting = f"SERIN_FAILPOINT={failpoint}" if failpoint else "SERIN_FAILPOINT-"
    p.cluster.kubectl("set", "env", f"deployment/{RELEASE}-operator", "-n", SYSTEM, setting)
    p.cluster.kubectl("rollout", "status", f"deployment/{RELEASE}-operator", "-n", SYSTEM, "--timeout=180s")


def operator_crashed(p: Platform) -> bool:
    for pod in get(p.cluster, "pods", "-n", SYSTEM, "-l", "app.kubernetes.io/name=serin")["items"]:
        for c in (pod.get("status") or {}).get("containerStatuses") or []:
            ended = [(c.get(k) or {}).get("terminated") or {} for k in ("state", "lastState")]
            if any(t.get("exitCode") == 137 for t in ended):
                return True
    return False


@pytest.mark.parametrize(("failpoint", "version", "end"), REAL_KILL_POINTS, ids=[k[0] for k in REAL_KILL_POINTS])
def test_operator_crash_at_a_kill_point_resumes_correctly(platform: Platform, gateway: Any, failpoint: str,
                                                          version: str, end: str) -> None:
    p, name = platform, f"kp-{failpoint.split(':')[1].lower()}"
    load = v1_served_under_load(p, gateway, name)
    try:
        set_failpoint(p, failpoint)
        try:
            apply_model(p, name, version, analysis={"interval": "3s", "failureLimit": 2})
            wait_for(f"the operator to crash at {failpoint}", lambda: operator_crashed(p), timeout=240)
        finally:
            set_failpoint(p, "")
        s = wait_phase(p, name, end, 2)
        time.sleep(2)  # answers after the end
    finally:
        load.stop()
    early = len(load.answers) - len(from_first_served(load.answers))
    print(f"\n{failpoint}: {len(load.answers)} requests, {early} answered before the route served v1")

    def emitted(reason: str) -> int:  # for generation 2; an Event repeated is one object with a count
        return sum(e.get("count") or 1 for e in events(p, name, reason) if re.search(r"\bgeneration 2\b", e["message"]))

    # Nothing done twice: one conversion, one canary, one step, one end. A crash after the persist
    # loses that tick's actions, its Event among them: that one may be missing, never doubled.
    try:
        lost = failpoint.split(":")[1] if failpoint.startswith("after-persist:") else ""
        reasons = ["ConversionStarted", "ConversionSucceeded", "CanaryStarted"]
        reasons += ["StepAdvanced", "Promoted"] if end == "Promoted" else ["RolledBack"]
        counts = {r: emitted(r) for r in reasons}
        assert all(n == 1 or (r == lost and n == 0) for r, n in counts.items()), counts
        if end == "Promoted":
            assert s["stable"]["revision"] == "gen2"
            assert route_weights(p, name) == {"gen2": 100}
            bad = failed(from_first_served(load.answers))
        else:
            assert s["stable"]["generation"] == 1 and s["failed"]["generation"] == 2
            assert route_weights(p, name) == {"gen1": 100}
            bad = [a for a in failed(from_first_served(load.answers)) if not (a.revision == "gen2" and a.status == 500)]
        assert bad == [], f"{len(bad)} of {len(load.answers)} requests failed: {Counter((a.status, a.revision) for a in bad)}"
    finally:  # the node has room for a few Models at a time
        p.cluster.kubectl("delete", "model", name, "-n", MODELS, "--wait=false")


# -- the e2e tier's bad versions (tests/e2e/test_e2e.py) on real KServe, through the Gateway ------

# (id, the new version, the one metric that judges it): each is bad by its own behaviour, and
# judged by the metric it breaks, with the series from Prometheus' Kubernetes discovery of its Pods.
POSITIVE_RATE = ('sum(rate(serin_predictions_total{namespace="{{namespace}}",model="{{model}}",'
                 'revision="{{revision}}",class="1"}[30s])) / sum(rate(serin_predictions_total{'
                 'namespace="{{namespace}}",model="{{model}}",revision="{{revision}}"}[30s]))')
REAL_BAD = [
    ("slow", "slow", {"name": "p99-latency", "builtin": "latencyP99Seconds", "max": 0.1}),
    ("drifted", "drifted", {"name": "input-drift", "builtin": "inputPSI", "max": 0.2}),
    ("user-promql", "v2", {"name": "positive-rate", "max": 0.3, "query": POSITIVE_RATE}),
]


@pytest.mark.timeout(900)  # a conversion that waits on a busy CPU, then a rollout
@pytest.mark.parametrize(("case", "version", "metric"), REAL_BAD, ids=[b[0] for b in REAL_BAD])
def test_a_version_bad_by_its_own_behaviour_is_rolled_back(platform: Platform, gateway: Any, case: str,
                                                           version: str, metric: dict[str, Any]) -> None:
    p, name = platform, f"bad-{case}"
    load = v1_served_under_load(p, gateway, name)
    try:
        apply_model(p, name, version, analysis={"interval": "3s", "failureLimit": 2, "metrics": [metric]})
        wait_canary_routed(p, name)
        weighted = load.now() - ROUTE_LAG
        s = wait_phase(p, name, "RolledBack", 2)
        done = load.now()
        wait_for("answers after the rollback", lambda: load.now() > done + 3, timeout=10)
    finally:
        load.stop()
    try:
        assert f"analysis failed: {metric['name']} = " in s["failed"]["reason"], s["failed"]["reason"]
        assert s["stable"]["generation"] == 1 and s["failed"]["generation"] == 2
        assert route_weights(p, name) == {"gen1": 100}
        assert by_revision(load.answers)["gen2"] > 0, "the canary never served: the test proves nothing"
        # A request the slow canary never answered (the client's 10 s timeout, so no revision)
        # is the canary's own failure when it was sent while the canary had weight: from the
        # route's change to the rollback, and for ROUTE_LAG after it, while Traefik applies the
        # route without the canary (a run under load saw requests sent just after the status read
        # RolledBack still reach it and time out). Any other failure, and any later one, is not.
        def own(a: Answer) -> bool:
            return case == "slow" and a.status == 0 and not a.revision and weighted <= a.t <= done + ROUTE_LAG

        bad = [a for a in failed(from_first_served(load.answers)) if not own(a)]
        assert bad == [], f"{len(bad)} of {len(load.answers)} requests failed: {Counter((a.status, a.revision) for a in bad)}"
        after = load.window(done + 1)
        assert after and by_revision(after).keys() == {"gen1"}, by_revision(after)
    finally:  # the node has room for a few Models at a time
        p.cluster.kubectl("delete", "model", name, "-n", MODELS, "--wait=false")


# -- issue 32 #8: a canary that dies is rolled back, though no request it answered failed --------

def canary_selector(p: Platform, name: str) -> dict[str, str]:
    """The labels of the canary's (generation 2's) predictor Pods, read while its Deployment exists."""
    return dict(get(p.cluster, "deployment", f"{name}-gen2-predictor", "-n", MODELS)["spec"]["selector"]["matchLabels"])


def runtimes(p: Platform, selector: dict[str, str]) -> list[dict[str, Any]]:
    """The status of each runtime container of the Pods `selector` selects."""
    pods = json.loads(p.cluster.kubectl("get", "pods", "-n", MODELS, "-o", "json", "-l",
                                        ",".join(f"{k}={v}" for k, v in selector.items())).stdout)["items"]
    return [cs for pod in pods for cs in pod["status"].get("containerStatuses") or []
            if cs["name"] == "kserve-container"]


def kill_container(container_id: str) -> int:
    """SIGKILL every process of one container, from the host (as a segfault or the kernel's OOM
    killer would end it): the node keeps each container in a cgroup of its own under /serin-node
    (local/node.py). Returns how many processes were killed."""
    cid = container_id.partition("://")[2]
    procs = list(Path("/sys/fs/cgroup/pids/serin-node").rglob(f"*{cid}*/cgroup.procs"))
    pids = {int(x) for f in procs for x in f.read_text().split()}
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return len(pids)


def test_a_canary_that_dies_is_rolled_back_though_no_request_failed(platform: Platform, gateway: Any) -> None:
    p, name = platform, "crashy"
    load = v1_served_under_load(p, gateway, name)
    try:
        # A step long enough that only its death can end it; error rate as the only metric, which
        # sees no error: the runtime counts errors of requests it answers, and a dead one answers none.
        apply_model(p, name, "v2", steps=[{"weight": 50, "pause": "10m"}],
                    analysis={"interval": "3s", "metrics": [{"name": "errors", "builtin": "errorRate", "max": 0.05}]})
        wait_canary_routed(p, name)
        wait_for("the canary answering", lambda: by_revision(load.answers)["gen2"] > 5, timeout=60)
        [runtime] = runtimes(p, canary_selector(p, name))
        assert kill_container(runtime["containerID"]) > 0
        s = wait_phase(p, name, "RolledBack", 2, timeout=120)
        done = load.now()
        wait_for("answers after the rollback", lambda: load.now() > done + 3, timeout=10)
    finally:
        load.stop()
    try:
        reason = s["failed"]["reason"]
        assert "the canary's containers restarted 1 time (0 allowed: spec.analysis.maxRestarts)" in reason, reason
        assert "container kserve-container" in reason and "(exit 137)" in reason, reason
        assert s["stable"]["generation"] == 1 and route_weights(p, name) == {"gen1": 100}
        assert all(r["verdict"] != "Failed" for r in s.get("analysis") or []), "no metric saw it"
        after = load.window(done + 1)
        assert after and by_revision(after).keys() == {"gen1"} and not failed(after), by_revision(after)
    finally:
        p.cluster.kubectl("delete", "model", name, "-n", MODELS, "--wait=false")


def test_requests_a_dying_canary_never_answered_fail_it_as_the_gateway_counted_them(
        platform: Platform, gateway: Any) -> None:
    """Issue 32 #8, the rest: the canary is killed under load, its restarts are tolerated
    (maxRestarts), and the runtime counts no error (a dead process answers nothing); the requests
    Traefik sent it meanwhile got 502s, which gatewayErrorRate reads from Traefik's own counters."""
    p, name = platform, "dropper"
    load = v1_served_under_load(p, gateway, name)
    try:
        apply_model(p, name, "v2", steps=[{"weight": 50, "pause": "10m"}],
                    analysis={"interval": "3s", "failureLimit": 1, "maxRestarts": 100, "metrics": [
                        {"name": "errors", "builtin": "errorRate", "max": 0.05},
                        {"name": "gateway-errors", "builtin": "gatewayErrorRate", "max": 0.001}]})
        wait_canary_routed(p, name)
        wait_for("the canary answering", lambda: by_revision(load.answers)["gen2"] > 5, timeout=60)
        selector = canary_selector(p, name)  # once: the Deployment goes with the rollback

        def kill_the_canary() -> bool:  # again while it lives: each death fails the requests in flight
            for cs in runtimes(p, selector):
                if cs.get("state", {}).get("running"):
                    kill_container(cs["containerID"])
            return status(p, name).get("phase") == "RolledBack"

        wait_for("the rollback", kill_the_canary, timeout=180, every=5)
        s = wait_phase(p, name, "RolledBack", 2, timeout=30)
    finally:
        load.stop()
    try:
        reason = s["failed"]["reason"]
        assert "analysis failed: gateway-errors = " in reason, reason
        assert "restarted" not in reason, reason
        assert s["stable"]["generation"] == 1 and route_weights(p, name) == {"gen1": 100}
        # What the Gateway counted was not the runtime's: no round of errorRate failed.
        assert all(r["verdict"] != "Failed" for r in s.get("analysis") or [] if r["metric"] == "errors"), s
        gateway_5xx = p.platform.prometheus.query(
            f'sum(max_over_time(traefik_service_requests_total{{service="{MODELS}-{name}-gen2-predictor-http-80'
            '@kubernetesgateway",code=~"5.."}[15m]))')["data"]["result"]
        assert gateway_5xx and float(gateway_5xx[0]["value"][1]) > 0, gateway_5xx
    finally:
        p.cluster.kubectl("delete", "model", name, "-n", MODELS, "--wait=false")


def trainer_template(p: Platform, name: str) -> dict[str, Any]:
    """The example trainer (serin.local.trainer) in Serin's converter image, as a team would run
    its own: its ServiceAccount may get and patch this one Model, its S3 keys are the namespace's."""
    p.cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                            "items": trainer.rbac(MODELS, name)}))
    return trainer.job_template(name, p.cluster.images["converter"].ref, f"s3://{p.platform.bucket}/retrained",
                                S3_SECRET)


def test_the_loop_drift_is_told_retrained_canaried_and_promoted(platform: Platform, gateway: Any) -> None:
    """Issue 35 on the real node: v1 serves and captures its traffic into S3; the traffic drifts;
    monitoring raises Drifted; Serin tells the team's webhook, starts the trainer Job (the example
    trainer, a real Pod), which learns from the captured rows since the alarm and their truth and
    sets spec.source; the retrained version is converted, canaried and promoted; its drift is gone.
    Each transition reaches the webhook once."""
    p, name = platform, "loop"
    t0 = time.monotonic()
    capture = {"share": 1, "uri": f"s3://{p.platform.bucket}/capture", "flushInterval": "2s",
               "s3": {"endpoint": p.platform.s3.url, "secretName": S3_SECRET}}
    monitoring = {"interval": "10s", "minRows": 500, "trailingWindow": "20s", "resolveAfter": 2,
                  "retrain": {"for": "0s", "cooldown": "1h", "conditions": ["Drifted"], "window": "1h",
                              "template": trainer_template(p, name)}}
    rollout = {"analysis": {"interval": "5s", "failureLimit": 2, "metrics": [
        {"name": "errors", "builtin": "errorRate", "max": 0.01},
        {"name": "drift", "builtin": "inputPSI", "max": 0.2}]}}
    with webhook_receiver(HOST_ADDRESS) as receiver:
        spec = {"monitoring": monitoring, "notify": {"sinks": [{"name": "team", "url": receiver.url}]}}
        apply_model(p, name, "v1", serving={"capture": capture}, spec=spec, **rollout)
        wait_phase(p, name, "Promoted", 1)
        load = gateway_load(gateway, name, feedback=0.5, token=sender_token(p.cluster.kubectl, name, MODELS))
        try:
            wait_for("two calm evaluations", lambda: (status(p, name).get("monitoring") or {}).get(
                "evaluations", 0) >= 2 and status(p, name)["monitoring"].get("health") == "Healthy", timeout=120)
            load.set_shift(1.0)
            t_shift = time.monotonic()
            wait_for("Drifted", lambda: (status(p, name).get("monitoring") or {}).get("health") == "Drifted",
                     timeout=120)
            t_drifted = time.monotonic()
            retrained = wait_phase(p, name, "Promoted", 2, timeout=600)
            t_promoted = time.monotonic()
            healthy = wait_for("the retrained version healthy", lambda: (s := status(p, name)).get(
                "monitoring", {}).get("revision") == "gen2" and s["monitoring"].get("evaluations", 0) >= 2
                and s["monitoring"].get("health") == "Healthy" and s, timeout=180)
            wait_for("every notification sent", lambda: not (status(p, name).get("notifications") or {}).get(
                "pending"), timeout=60)
        finally:
            load.stop()
    r = healthy["retrain"]
    print(f"\nthe loop: shift -> Drifted {t_drifted - t_shift:.0f}s -> retrained version promoted "
          f"{t_promoted - t_drifted:.0f}s (apply -> the end {time.monotonic() - t0:.0f}s); Job {r['job']}: {r['message']}")
    assert r["state"] == "Succeeded" and r["signal"] in ("inputDrift", "predictionShift") and r["generation"] == 1
    model = get(p.cluster, "model", name, "-n", MODELS)
    assert model["spec"]["source"]["uri"].startswith(f"s3://{p.platform.bucket}/retrained/{r['job']}/")
    assert retrained["stable"]["revision"] == "gen2" and retrained["history"][-1]["outcome"] == "Promoted"
    reasons = [e["data"]["reason"] for e in receiver.delivered()]
    for reason in ("Serving", "RetrainTriggered", "RetrainSucceeded", "CanaryStarted", "Promoted"):
        assert reasons.count(reason) == 1, (reason, reasons)
    # One DriftDetected per drifted signal (a shifted input also shifts the predictions), each once.
    raised = [e["data"]["signal"]["signal"] for e in receiver.delivered() if e["data"]["reason"] == "DriftDetected"]
    assert raised and len(raised) == len(set(raised)) and r["signal"] in raised, raised
    assert reasons.index("DriftDetected") < reasons.index("RetrainTriggered") < reasons.index("RetrainSucceeded") \
        < reasons.index("CanaryStarted") < reasons.index("Promoted"), reasons
    assert len({e["id"] for e in receiver.delivered()}) == len(reasons)
    drift = next(e for e in receiver.delivered() if e["data"]["reason"] == "DriftDetected")
    assert drift["type"] == "dev.serin.model.drift.detected" and drift["data"]["signal"]["state"] == "Alarm"
    job = get(p.cluster, "job", r["job"], "-n", MODELS)
    assert job["status"].get("succeeded") == 1 and job["metadata"]["ownerReferences"][0]["name"] == name

