"""The stand-in's real data plane: a Serin runtime process per revision, a router per
InferenceService splitting requests by the canary percentages, and the Prometheus file_sd file."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from standin_helpers import Isvcs, StandIn, condition, settled, traffic, write_model

pytestmark = [pytest.mark.controlplane, pytest.mark.e2e]
REQUESTS = 400
BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}).encode()


def rev(n: int) -> str:
    return f"m-predictor-{n:05d}"


def infer(url: str, headers: dict[str, str] | None = None) -> tuple[str, float]:
    req = urllib.request.Request(f"{url}/v2/models/m/infer", data=BODY, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as resp:
        out: dict[str, Any] = json.load(resp)
        return resp.headers["Serin-Standin-Revision"], float(out["outputs"][0]["data"][0])


def file_sd(path: Path) -> set[tuple[str, str]]:
    try:
        groups = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return {(g["labels"]["revision"], g["targets"][0]) for g in groups}


def test_router_splits_canary_traffic(isvcs: Isvcs, start_standin: Callable[..., StandIn], tmp_path: Path) -> None:
    sd = tmp_path / "prometheus" / "serin-runtimes.json"
    start_standin("--data-plane", "--file-sd", str(sd))
    isvcs.create("m", write_model(tmp_path / "a", 1.0))
    obj = isvcs.wait("m", lambda o: condition(o, "Ready")["status"] == "True", timeout=180)
    url = obj["status"]["url"]
    assert url.startswith("http://127.0.0.1:") and obj["status"]["address"]["url"] == url
    assert infer(url) == (rev(1), 4.0)

    isvcs.patch("m", {"canaryTrafficPercent": 10, "model": {"storageUri": write_model(tmp_path / "b", 2.0)}})
    obj = isvcs.wait("m", lambda o: settled(o) and traffic(o) == [(rev(2), True, 10, ""), (rev(1), False, 90, "prev")],
                     timeout=180)
    assert obj["status"]["url"] == url  # the router keeps its port while revisions change behind it
    assert {r for r, _ in file_sd(sd)} == {rev(1), rev(2)}
    labels = json.loads(sd.read_text())[0]["labels"]
    assert labels["namespace"] == isvcs.namespace and labels["isvc"] == "m"

    served = Counter()
    for _ in range(REQUESTS):
        revision, value = infer(url)
        assert value == {rev(1): 4.0, rev(2): 8.0}[revision]  # the body reached that revision's model
        served[revision] += 1
    # Binomial(400, 0.1): sd 6 requests; ±5 sd keeps a correct router from failing in practice.
    assert 10 <= served[rev(2)] <= 70, served
    assert infer(url, {"Knative-Serving-Tag": "prev"})[0] == rev(1)

    isvcs.patch("m", {"canaryTrafficPercent": None})
    isvcs.wait("m", lambda o: settled(o) and traffic(o) == [(rev(2), True, 100, "")])
    assert {infer(url)[0] for _ in range(20)} == {rev(2)}
    # Revision 1 is no longer referenced: its runtime stops and leaves the scrape targets.
    isvcs.wait("m", lambda o: {r for r, _ in file_sd(sd)} == {rev(2)})


def test_unservable_revision_fails_with_runtime_reason(isvcs: Isvcs, start_standin: Callable[..., StandIn],
                                                       tmp_path: Path) -> None:
    start_standin("--data-plane")
    isvcs.create("m", write_model(tmp_path / "a", 1.0))
    obj = isvcs.wait("m", lambda o: condition(o, "Ready")["status"] == "True", timeout=180)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    isvcs.patch("m", {"canaryTrafficPercent": 10, "model": {"storageUri": f"file://{broken}"}})
    obj = isvcs.wait("m", lambda o: settled(o) and condition(o, "PredictorReady")["status"] == "False", timeout=180)
    assert traffic(obj) == [(rev(1), True, 10, ""), (rev(1), False, 90, "prev")]
    assert condition(obj, "PredictorReady")["reason"] == "RevisionFailed"
    assert infer(obj["status"]["url"])[0] == rev(1)
