"""Many Models on one operator, on the real apiserver: conversions never exceed the limit, and at
idle the operator makes no reads at all (the apiserver's own request counter says so), yet a
change is still reconciled at once."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import FAST_ROLLOUT, Cluster, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.controlplane

MODELS = 100  # the idle figure: 100 Models, ~4 min of conversions at 2 at once
PROMOTED_WITHIN = 900  # seconds: 2 CI cores convert ~1 Model/2.4 s, with room for a slow machine
LIMIT = 2
READ_VERBS = {"GET", "LIST"}


def reads_by_resource(c: Cluster) -> dict[str, float]:
    """apiserver_request_total for GET and LIST, by resource (the apiserver counts every request)."""
    text = c.cp.kubectl("get", "--raw", "/metrics").stdout
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for s in family.samples:
            if s.name.endswith("_total") and s.labels.get("verb") in READ_VERBS:
                key = s.labels.get("resource", "")
                out[key] = out.get(key, 0.0) + s.value
    return out


def converters_running(operator_pid: int) -> int:
    """Conversion processes this operator started (its children): the other xdist worker's
    operators convert at the same time on the same host."""
    running = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # exited while listed
        running += ppid == operator_pid and b"serin.converters.job" in cmdline
    return running


def models(c: Cluster) -> list[dict[str, Any]]:
    return json.loads(c.cp.kubectl("get", "models", "-n", c.namespace, "-o", "json").stdout)["items"]


def test_many_models_convert_within_the_limit_then_cost_no_reads_at_idle(cluster: Cluster) -> None:
    c = cluster
    c.operator.env = {"SERIN_MAX_CONVERSIONS": str(LIMIT)}
    c.operator.start()
    assert c.operator.proc is not None
    docs = [{"apiVersion": "serin.dev/v1alpha1", "kind": "Model",
             "metadata": {"name": f"m{i:03d}", "namespace": c.namespace},
             "spec": {"source": {"uri": c.artifacts.good_v1.as_uri(), "sampleUri": c.artifacts.sample.as_uri()},
                      "rollout": FAST_ROLLOUT}} for i in range(MODELS)]
    c.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    most, queued_seen = 0, set()
    deadline = time.monotonic() + PROMOTED_WITHIN
    while time.monotonic() < deadline:
        most = max(most, converters_running(c.operator.proc.pid))
        items = models(c)
        queued_seen |= {m["metadata"]["name"] for m in items
                        if ((m.get("status") or {}).get("pending") or {}).get("queuePosition")}
        if sum((m.get("status") or {}).get("phase") == "Promoted" for m in items) == MODELS:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"not all {MODELS} Models promoted in {PROMOTED_WITHIN}s\n{c.operator.tail()}")
    assert 1 <= most <= LIMIT, f"{most} conversions ran at once, limit {LIMIT}"
    assert queued_seen, f"no Model was ever shown queued, with {MODELS} applied at once and {LIMIT} slots"
    assert len(c.events("ConversionQueued")) >= MODELS - LIMIT - 2  # each queued version says so once

    time.sleep(3)  # the last writes' own watch events settle
    before = reads_by_resource(c)
    time.sleep(20)
    after = reads_by_resource(c)
    grown = {r: after.get(r, 0) - before.get(r, 0) for r in after if after.get(r, 0) > before.get(r, 0)}
    # Not Services: kube-apiserver's own bootstrap controller LISTs them every few minutes (its
    # ClusterIP and NodePort repair loops), and in this mode (Knative) Serin never reads one.
    ours = {r: n for r, n in grown.items() if r in ("models", "inferenceservices", "deployments",
                                                  "httproutes", "jobs", "pods")}
    assert not ours, f"reads at idle over 20 s with {MODELS} Models: {ours}"

    # Still prompt on change: a new version of one Model starts converting at once.
    target = "m007"
    c.cp.kubectl("patch", "model", target, "-n", c.namespace, "--type=merge", "-p",
                 json.dumps({"spec": {"source": {"uri": c.artifacts.good_v2.as_uri()}}}))
    t0 = time.monotonic()
    wait_for("the new version to be taken up", lambda: any(
        e["reason"] == "ConversionStarted" and e["involvedObject"]["name"] == target and "generation 2" in e["message"]
        for e in c.events()), timeout=30, every=0.1)
    took = time.monotonic() - t0
    print(f"{target}: new version taken up {took:.2f}s after the change; idle reads by resource: {grown}")
