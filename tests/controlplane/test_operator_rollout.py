"""The operator end to end on the control plane: real apiserver, real operator process, real
conversions, the KServe stand-in, and a real Prometheus answering the analysis queries.

Analysis verdicts are steered with user PromQL that real Prometheus evaluates: `vector(1)` passes
`min: 0.5`, `vector(0)` fails it, and a series nobody exports is "no data"."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from harness import FAST_ROLLOUT, Cluster
from prometheus_client.parser import text_string_to_metric_families
from serin.local.controlplane import free_port

pytestmark = pytest.mark.controlplane

FAILING = copy.deepcopy(FAST_ROLLOUT)
FAILING["analysis"]["metrics"] = [{"name": "score", "query": "vector(0)", "min": 0.5}]
NO_DATA = copy.deepcopy(FAST_ROLLOUT)
NO_DATA["analysis"]["metrics"] = [{"name": "score", "query": "sum(serin_series_nobody_exports)", "min": 0.5}]
LONG_STEPS = copy.deepcopy(FAST_ROLLOUT)
LONG_STEPS["steps"] = [{"weight": 10, "pause": "1h"}, {"weight": 50, "pause": "1h"}]


def status(m: dict[str, Any]) -> dict[str, Any]:
    return m.get("status") or {}


def serve_v1(c: Cluster) -> dict[str, Any]:
    c.apply(c.artifacts.good_v1)
    return c.wait_phase("Promoted", generation=1)


def predictor(c: Cluster) -> dict[str, Any]:
    isvc = c.isvc()
    assert isvc is not None
    return isvc["spec"]["predictor"]


def test_first_version_goes_straight_to_100(cluster: Cluster) -> None:
    cluster.operator.start()
    m = serve_v1(cluster)
    s = status(m)
    assert s["stable"]["generation"] == 1 and s["stable"]["confirmed"] is True
    assert s["conversion"]["passed"] is True and s["conversion"]["generation"] == 1
    pred = predictor(cluster)
    assert "canaryTrafficPercent" not in pred
    assert pred["model"]["runtime"] == "serin-onnx" and pred["model"]["storageUri"] == s["stable"]["storageUri"]
    isvc = cluster.isvc()
    assert isvc is not None and isvc["metadata"]["ownerReferences"][0]["uid"] == m["metadata"]["uid"]
    conditions = {c["type"]: c for c in s["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Converted"]["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in conditions.values())
    assert [e["reason"] for e in cluster.events("ConversionSucceeded")] == ["ConversionSucceeded"]
    row = cluster.cp.kubectl("get", "model", cluster.name, "-n", cluster.namespace).stdout.splitlines()[1].split()
    # ... PHASE HEALTH AGE: monitoring of the promoted version waits for traffic to judge.
    assert row[1] == "1" and row[-3:-1] == ["Promoted", "Waiting"]


def test_second_version_walks_the_steps_and_is_promoted(cluster: Cluster) -> None:
    cluster.operator.start()
    v1 = status(serve_v1(cluster))
    cluster.apply(cluster.artifacts.good_v2)
    s = status(cluster.wait_phase("Promoted", generation=2))
    assert s["stable"]["generation"] == 2 and "canary" not in s
    assert cluster.weights_seen() == [10, 50]
    pred = predictor(cluster)
    assert "canaryTrafficPercent" not in pred and pred["model"]["storageUri"] == s["stable"]["storageUri"]
    assert s["stable"]["storageUri"] != v1["stable"]["storageUri"]
    assert [h["outcome"] for h in s["history"]] == ["Promoted", "Promoted"]
    assert len(cluster.events("StepAdvanced")) == 1 and len(cluster.events("Promoted")) == 1


def test_failed_analysis_rolls_back_to_the_stable_version(cluster: Cluster) -> None:
    cluster.operator.start()
    v1 = status(serve_v1(cluster))
    cluster.apply(cluster.artifacts.good_v2, rollout=FAILING)
    s = status(cluster.wait_phase("RolledBack", generation=2))
    assert s["failed"]["kind"] == "RolledBack" and "score = 0 < min 0.5" in s["failed"]["reason"]
    assert "(2 failed measurements)" in s["failed"]["reason"]
    assert cluster.weights_seen() == [10, 0], "rollback sends 0% to the canary before restoring the stable model"
    pred = predictor(cluster)
    assert "canaryTrafficPercent" not in pred and pred["model"]["storageUri"] == v1["stable"]["storageUri"]
    assert s["stable"]["generation"] == 1
    assert {c["type"]: c["status"] for c in s["conditions"]}["Degraded"] == "True"
    assert [a["verdict"] for a in s["analysis"]] == ["Failed", "Failed"]


def test_no_data_pauses_and_never_promotes_then_resumes(cluster: Cluster) -> None:
    cluster.operator.start()
    serve_v1(cluster)
    cluster.apply(cluster.artifacts.good_v2, rollout=NO_DATA)
    m = cluster.wait_phase("Paused", generation=2)
    assert "analysis inconclusive" in status(m)["message"] and "no data" in status(m)["message"]
    assert predictor(cluster)["canaryTrafficPercent"] == 10
    # Data arrives (the query now returns a passing value): the rollout resumes on its own.
    cluster.patch({"spec": {"rollout": {"analysis": {"metrics": FAST_ROLLOUT["analysis"]["metrics"]}}}})
    s = status(cluster.wait_phase("Promoted", generation=3))
    assert s["stable"]["generation"] == 2  # the metric change is not a new version
    assert len(cluster.events("AnalysisResumed")) == 1


def test_conversion_failure_leaves_stable_serving(cluster: Cluster) -> None:
    cluster.operator.start()
    v1 = status(serve_v1(cluster))
    cluster.apply(cluster.artifacts.corrupt)
    s = status(cluster.wait_phase("Failed", generation=2))
    assert s["conversion"]["passed"] is False and s["conversion"]["generation"] == 2
    assert s["failed"]["kind"] == "ConversionFailed" and s["failed"]["reason"]
    assert s["stable"] == v1["stable"]
    pred = predictor(cluster)
    assert pred["model"]["storageUri"] == v1["stable"]["storageUri"] and "canaryTrafficPercent" not in pred
    conditions = {c["type"]: c["status"] for c in s["conditions"]}
    # Monitoring watches the version still serving: nothing judged in this short a time.
    assert conditions == {"Ready": "True", "Progressing": "False", "Degraded": "True", "Converted": "False",
                          "Drifted": "Unknown", "PerformanceDegraded": "Unknown"}
    assert s["monitoring"]["revision"] == v1["stable"]["revision"] and s["monitoring"]["health"] == "Waiting"


def serin(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serin.operator.cli", *args, c.name, "-n", c.namespace,
                           "--kubeconfig", str(c.cp.kubeconfig)], capture_output=True, text=True)


def test_manual_pause_resume_and_promote(cluster: Cluster) -> None:
    cluster.operator.start()
    serve_v1(cluster)
    cluster.apply(cluster.artifacts.good_v2, rollout=LONG_STEPS)
    cluster.wait("canary serving", lambda m: bool(status(m).get("canary", {}).get("trafficSince")))
    assert serin(cluster, "pause").returncode == 0
    cluster.wait_phase("Paused")
    assert serin(cluster, "resume").returncode == 0
    cluster.wait_phase("Progressing")
    out = serin(cluster, "promote")
    assert out.returncode == 0 and "promote requested for generation 2" in out.stdout
    s = status(cluster.wait("promoted", lambda m: status(m).get("stable", {}).get("generation") == 2
                            and status(m).get("phase") == "Promoted"))
    assert s["history"][-1]["reason"] == "promoted by user"
    assert "serin.dev/promote" not in (cluster.model()["metadata"].get("annotations") or {})
    text = serin(cluster, "status")
    assert text.returncode == 0 and "Promoted" in text.stdout and "stable  generation 2" in text.stdout
    as_json = serin(cluster, "status", "-o", "json")
    assert as_json.returncode == 0
    document = json.loads(as_json.stdout)
    assert (document["name"], document["namespace"]) == (cluster.name, cluster.namespace)
    assert document["status"]["phase"] == "Promoted" and document["status"]["stable"]["generation"] == 2
    assert {c["type"] for c in document["status"]["conditions"]} >= {"Ready", "Progressing"}
    again = serin(cluster, "promote")
    assert again.returncode == 1 and "has no canary in progress" in again.stderr
    # Monitoring of the serving version silenced for 2h: recorded, the annotation cleared.
    silenced = serin(cluster, "silence", "--for", "2h")
    assert silenced.returncode == 0 and "monitoring of generation 2 silenced until" in silenced.stdout, silenced
    s = status(cluster.wait("silence recorded", lambda m: bool(status(m).get("monitoring", {}).get("silencedUntil"))))
    assert s["monitoring"]["silencedUntil"] in silenced.stdout
    assert "serin.dev/silence" not in (cluster.model()["metadata"].get("annotations") or {})
    assert len(cluster.events("MonitoringSilenced")) == 1
    shown = serin(cluster, "status")
    assert "monitoring  Waiting  revision" in shown.stdout and "silenced until" in shown.stdout, shown.stdout
    bad = serin(cluster, "silence", "--for", "two hours")
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    # A rebaseline to a window without traffic (this platform serves none): read from Prometheus,
    # refused with a Warning saying why, the annotation cleared, nothing recorded.
    asked = serin(cluster, "rebaseline", "--window", "1h", "--reason", "new market")
    assert asked.returncode == 0 and "rebaseline of generation 2 to the traffic of" in asked.stdout, asked
    cluster.wait("rebaseline read", lambda m: "serin.dev/rebaseline" not in (m["metadata"].get("annotations") or {})
                 and bool(cluster.events("RebaselineRefused")))
    [refused] = cluster.events("RebaselineRefused")
    assert "no rows with features were counted" in refused["message"], refused
    assert "baseline" not in status(cluster.model())["monitoring"]
    assert serin(cluster, "rebaseline", "--window", "800h").returncode == 2


def test_an_annotation_is_removed_only_while_it_holds_the_value_acted_upon(cluster: Cluster) -> None:
    """A command written between the operator's read and its removal of the one it read is kept
    (a JSON patch whose test fails, answered 422 by the real apiserver, changes nothing)."""
    import asyncio

    from kubernetes_asyncio import client, config
    from serin.operator.kube import Kube

    cluster.apply(cluster.artifacts.good_v1)
    cluster.cp.kubectl("annotate", "model", cluster.name, "-n", cluster.namespace, "serin.dev/silence=2/newer")

    async def remove(value: str) -> None:
        await config.load_kube_config(config_file=str(cluster.cp.kubeconfig))
        async with client.ApiClient() as api:
            await Kube(api).remove_annotation(cluster.model(), "serin.dev/silence", value)

    asyncio.run(remove("1/older"))
    assert (cluster.model()["metadata"].get("annotations") or {}).get("serin.dev/silence") == "2/newer"
    asyncio.run(remove("2/newer"))
    assert "serin.dev/silence" not in (cluster.model()["metadata"].get("annotations") or {})
    asyncio.run(remove("2/newer"))  # gone already: nothing to do, nothing raised


def test_manual_abort_rolls_back(cluster: Cluster) -> None:
    cluster.operator.start()
    v1 = status(serve_v1(cluster))
    cluster.apply(cluster.artifacts.good_v2, rollout=LONG_STEPS)
    cluster.wait("canary serving", lambda m: bool(status(m).get("canary", {}).get("trafficSince")))
    assert serin(cluster, "abort").returncode == 0
    s = status(cluster.wait_phase("RolledBack"))
    assert s["failed"]["reason"] == "aborted by user"
    assert predictor(cluster)["model"]["storageUri"] == v1["stable"]["storageUri"]


def operator_series(port: int, model: str) -> dict[str, float]:
    """The operator's /metrics samples labelled with `model`, by series."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model") == model:
                out[f"{sample.name}{sorted(sample.labels.items())}"] = sample.value
    return out


def operator_counts(port: int) -> dict[tuple[str, str], float]:
    """Observations so far of the operator's histograms without a Model label, by (name, stage or phase)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(family.name, sample.labels.get("stage") or sample.labels.get("phase", "")): sample.value
            for family in text_string_to_metric_families(text) if family.type == "histogram"
            for sample in family.samples if sample.name == f"{family.name}_count" and "model" not in sample.labels}


def test_a_deleted_model_leaves_no_operator_series(cluster: Cluster) -> None:
    """Else serin_canary_weight keeps its last value and the stuck-rollout alert fires for a
    Model that no longer exists."""
    port = free_port()
    cluster.operator.env["SERIN_METRICS_PORT"] = str(port)
    cluster.operator.start()
    serve_v1(cluster)
    cluster.apply(cluster.artifacts.good_v2, rollout=LONG_STEPS)
    cluster.wait("canary serving", lambda m: bool(status(m).get("canary", {}).get("trafficSince")))
    series = operator_series(port, cluster.name)
    weight = [v for k, v in series.items() if k.startswith("serin_canary_weight[")]
    assert weight == [10.0] and any(k.startswith("serin_rollouts_started_total") for k in series)
    # Where analysis rounds spend their time, across Models: every round measured and persisted,
    # its one query waited for a slot and ran.
    cluster.wait("an analysis round", lambda m: bool(status(m).get("analysis")))
    counts = operator_counts(port)
    assert counts[("serin_analysis_round_seconds", "measure")] >= 1, counts
    assert counts[("serin_analysis_round_seconds", "persist")] >= 1, counts
    assert counts[("serin_prometheus_query_seconds", "wait")] >= counts[("serin_analysis_round_seconds", "measure")]
    assert counts[("serin_prometheus_query_seconds", "query")] >= 1, counts
    cluster.cp.kubectl("delete", "model", cluster.name, "-n", cluster.namespace, "--wait=true")
    deadline = time.monotonic() + 30
    while (left := operator_series(port, cluster.name)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == {}, f"series of the deleted Model still exported: {sorted(left)}"


def test_a_canary_nothing_could_stop_is_refused_by_default(cluster: Cluster) -> None:
    """The operator's --require-analysis is on unless turned off: a Model whose metrics are all
    taken out serves its first version, and its next version is refused in status (not promoted
    on time alone, not left hanging); with a metric back it is rolled out."""
    ungated = copy.deepcopy(FAST_ROLLOUT)
    ungated["analysis"]["metrics"] = []
    cluster.operator.start()
    cluster.apply(cluster.artifacts.good_v1, rollout=ungated)
    cluster.wait_phase("Promoted", generation=1)
    cluster.apply(cluster.artifacts.good_v2, rollout=ungated)
    m = cluster.wait_phase("Failed", generation=2)
    assert status(m)["failed"]["kind"] == "AnalysisRequired"
    assert "requireAnalysis" in status(m)["message"] and "no metrics" in status(m)["message"]
    assert status(m)["stable"]["generation"] == 1 and "pending" not in status(m)
    assert [e["type"] for e in cluster.events("AnalysisRequired")] == ["Warning"]
    cluster.patch({"spec": {"rollout": {"analysis": {"metrics": FAST_ROLLOUT["analysis"]["metrics"]}}}})
    m = cluster.wait_phase("Promoted", generation=3)
    assert status(m)["history"][-1]["generation"] == 3


def test_a_feedback_secret_the_model_did_not_create_is_never_used(cluster: Cluster) -> None:
    """A Secret of the Model's feedback-key name is already there, owned by nothing (made by hand,
    or orphaned by an earlier Model): the first deployment waits, saying so, instead of starting
    predictors that would sign with someone else's key; once it is gone the Model gets its own."""
    secret = f"{cluster.name}-serin-feedback"
    cluster.cp.kubectl("create", "secret", "generic", secret, "-n", cluster.namespace, "--from-literal=key=not-yours")
    cluster.operator.start()
    cluster.apply(cluster.artifacts.good_v1)
    m = cluster.wait("the first deployment held", lambda m: "is not this Model's" in status(m).get("message", ""))
    assert status(m)["phase"] == "Deploying" and cluster.isvc() is None
    assert f"Secret {cluster.namespace}/{secret} exists and is not this Model's (no owner)" in status(m)["message"]
    assert [e["type"] for e in cluster.events("FeedbackSecret")] == ["Warning"]
    cluster.cp.kubectl("delete", "secret", secret, "-n", cluster.namespace)
    m = cluster.wait_phase("Promoted", generation=1)
    mine = json.loads(cluster.cp.kubectl("get", "secret", secret, "-n", cluster.namespace, "-o", "json").stdout)
    assert [r["uid"] for r in mine["metadata"]["ownerReferences"]] == [m["metadata"]["uid"]]
    assert "Secret" not in status(m)["message"]


# (failpoint, rollout, expected end phase). The operator exits abruptly at the failpoint; a fresh
# operator must finish the rollout with no step repeated or skipped and the rollback not lost.
KILL_POINTS = [
    ("after-persist:ConversionStarted", FAST_ROLLOUT, "Promoted"),
    ("before-persist:ConversionSucceeded", FAST_ROLLOUT, "Promoted"),
    ("after-persist:CanaryStarted", FAST_ROLLOUT, "Promoted"),
    ("before-persist:StepAdvanced", FAST_ROLLOUT, "Promoted"),
    ("after-persist:StepAdvanced", FAST_ROLLOUT, "Promoted"),
    ("after-persist:StepsPassed", FAST_ROLLOUT, "Promoted"),
    ("after-persist:Promoted", FAST_ROLLOUT, "Promoted"),
    ("after-persist:AnalysisFailed", FAILING, "RolledBack"),
    ("after-persist:RollbackStarted", FAILING, "RolledBack"),
    ("after-persist:TrafficRestored", FAILING, "RolledBack"),
    ("before-persist:RolledBack", FAILING, "RolledBack"),
]


@pytest.mark.parametrize(("failpoint", "rollout", "end"), KILL_POINTS, ids=[k[0] for k in KILL_POINTS])
def test_operator_killed_resumes_correctly(cluster: Cluster, failpoint: str, rollout: dict, end: str) -> None:
    cluster.operator.start()
    v1 = status(serve_v1(cluster))
    cluster.operator.stop()
    cluster.operator.start(failpoint=failpoint)
    cluster.apply(cluster.artifacts.good_v2, rollout=rollout)
    assert cluster.operator.wait_exit(timeout=120) == 137, "the failpoint was not reached"
    cluster.operator.start()
    s = status(cluster.wait_phase(end, generation=2))
    pred = predictor(cluster)
    assert "canaryTrafficPercent" not in pred
    if end == "Promoted":
        assert s["stable"]["generation"] == 2 and pred["model"]["storageUri"] == s["stable"]["storageUri"]
        assert cluster.weights_seen()[-2:] != [50, 10], "a step was repeated"
        assert len(cluster.events("StepAdvanced")) <= 1 and len(cluster.events("CanaryStarted")) <= 1
        assert [h["outcome"] for h in s["history"]] == ["Promoted", "Promoted"]
    else:
        assert s["stable"]["generation"] == 1 and pred["model"]["storageUri"] == v1["stable"]["storageUri"]
        assert "(2 failed measurements)" in s["failed"]["reason"]
        assert len(cluster.events("RolledBack")) <= 1


def test_fetch_failure_is_retried_with_backoff(cluster: Cluster, tmp_path: Path) -> None:
    """The converter's exit 4 (artifact not fetchable: a bucket hiccup, a volume not yet mounted)
    is the one failure worth retrying. Here the model is on a claim (pvc://, mounted where
    SERIN_PVC_MOUNT says, as a Job would mount it) that is empty at first; the artifact appears
    during the back-off, and the next attempt converts it into a place of its own."""
    mount = tmp_path / "pvc"
    cluster.operator.env = {"SERIN_PVC_MOUNT": str(mount)}
    cluster.operator.start()
    cluster.apply("pvc://models/late/model.joblib")
    m = cluster.wait("a retry scheduled", lambda m: bool((status(m).get("pending") or {}).get("retryAt")), timeout=60)
    assert status(m)["pending"]["attempt"] == 2 and status(m)["phase"] == "Converting"
    (retry,) = cluster.events("ConversionRetrying")
    assert "is the claim mounted?" in retry["message"] and "attempt 2 of 3 in 15s" in retry["message"]
    (mount / "models" / "late").mkdir(parents=True)
    shutil.copy(cluster.artifacts.good_v1, mount / "models" / "late" / "model.joblib")
    s = status(cluster.wait_phase("Promoted", generation=1, timeout=90))
    assert s["conversion"]["passed"] is True and s["stable"]["storageUri"].endswith("-a2")
