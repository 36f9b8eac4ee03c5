"""The KServe stand-in against the real kube-apiserver (control-plane data plane: a revision is
ready when its model directory is servable). These are the statuses Serin's operator reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from standin_helpers import Isvcs, StandIn, condition, settled, traffic, write_model

pytestmark = pytest.mark.controlplane


def rev(n: int, name: str = "m") -> str:
    return f"{name}-predictor-{n:05d}"


def test_create_writes_kserve_shaped_status(isvcs: Isvcs, standin: StandIn, tmp_path: Path) -> None:
    isvcs.create("m", write_model(tmp_path / "a", 1.0))
    obj = isvcs.wait("m", lambda o: settled(o) and condition(o, "Ready")["status"] == "True")
    pred = obj["status"]["components"]["predictor"]
    assert traffic(obj) == [(rev(1), True, 100, "")]
    assert pred["latestCreatedRevision"] == pred["latestReadyRevision"] == pred["latestRolledoutRevision"] == rev(1)
    assert "previousRolledoutRevision" not in pred
    assert obj["status"]["url"] == f"http://m.{isvcs.namespace}.example.com"
    assert condition(obj, "PredictorReady")["status"] == condition(obj, "IngressReady")["status"] == "True"
    columns = isvcs.cp.kubectl("get", "isvc", "m", "-n", isvcs.namespace).stdout
    assert "True" in columns and rev(1) in columns  # the CRD's printer columns read the same fields


def test_canary_promote_then_rollback(isvcs: Isvcs, standin: StandIn, tmp_path: Path) -> None:
    a, b, c = (write_model(tmp_path / d, w) for d, w in (("a", 1.0), ("b", 2.0), ("c", 3.0)))
    isvcs.create("m", a)
    isvcs.wait("m", lambda o: traffic(o) == [(rev(1), True, 100, "")])

    isvcs.patch("m", {"canaryTrafficPercent": 10, "model": {"storageUri": b}})
    obj = isvcs.wait("m", lambda o: settled(o) and traffic(o) == [(rev(2), True, 10, ""), (rev(1), False, 90, "prev")])
    assert obj["status"]["components"]["predictor"]["latestRolledoutRevision"] == rev(1)

    isvcs.patch("m", {"canaryTrafficPercent": 50})
    isvcs.wait("m", lambda o: settled(o) and traffic(o) == [(rev(2), True, 50, ""), (rev(1), False, 50, "prev")])

    isvcs.patch("m", {"canaryTrafficPercent": None})
    obj = isvcs.wait("m", lambda o: settled(o) and traffic(o) == [(rev(2), True, 100, "")])
    pred = obj["status"]["components"]["predictor"]
    assert (pred["latestRolledoutRevision"], pred["previousRolledoutRevision"]) == (rev(2), rev(1))

    # A bad version: canary, then KServe's documented rollback (0 %), then restore the stable model
    # while keeping 0 % until the restored revision is ready, then remove the percent.
    isvcs.patch("m", {"canaryTrafficPercent": 10, "model": {"storageUri": c}})
    isvcs.wait("m", lambda o: settled(o) and traffic(o) == [(rev(3), True, 10, ""), (rev(2), False, 90, "prev")])
    isvcs.patch("m", {"canaryTrafficPercent": 0})
    isvcs.wait("m", lambda o: settled(o) and traffic(o) == [(rev(3), True, 0, ""), (rev(2), False, 100, "prev")])
    isvcs.patch("m", {"model": {"storageUri": b}})
    isvcs.wait("m", lambda o: settled(o) and o["status"]["components"]["predictor"]["latestReadyRevision"] == rev(4))
    isvcs.patch("m", {"canaryTrafficPercent": None})
    obj = isvcs.wait("m", lambda o: settled(o) and traffic(o) == [(rev(4), True, 100, "")])
    pred = obj["status"]["components"]["predictor"]
    assert (pred["latestRolledoutRevision"], pred["previousRolledoutRevision"]) == (rev(4), rev(2))
    assert condition(obj, "Ready")["status"] == "True"


def test_missing_model_dir_never_becomes_ready(isvcs: Isvcs, standin: StandIn, tmp_path: Path) -> None:
    isvcs.create("m", write_model(tmp_path / "a", 1.0))
    isvcs.wait("m", lambda o: traffic(o) == [(rev(1), True, 100, "")])
    isvcs.patch("m", {"canaryTrafficPercent": 10, "model": {"storageUri": f"file://{tmp_path}/missing"}})
    obj = isvcs.wait("m", lambda o: settled(o) and condition(o, "Ready")["status"] == "False")
    assert traffic(obj) == [(rev(1), True, 10, ""), (rev(1), False, 90, "prev")]  # all on revision 1
    assert condition(obj, "PredictorReady")["reason"] == "RevisionFailed"
    assert "does not exist" in condition(obj, "PredictorReady")["message"]
    assert obj["status"]["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"


def test_restart_continues_from_status(isvcs: Isvcs, start_standin: Callable[..., StandIn], tmp_path: Path) -> None:
    first = start_standin()
    isvcs.create("m", write_model(tmp_path / "a", 1.0))
    isvcs.wait("m", lambda o: traffic(o) == [(rev(1), True, 100, "")])
    first.stop()
    isvcs.patch("m", {"canaryTrafficPercent": 20, "model": {"storageUri": write_model(tmp_path / "b", 2.0)}})
    start_standin()
    obj = isvcs.wait("m", lambda o: settled(o) and traffic(o) == [(rev(2), True, 20, ""), (rev(1), False, 80, "prev")])
    assert obj["status"]["components"]["predictor"]["latestCreatedRevision"] == rev(2)


def test_non_file_scheme_is_trusted(isvcs: Isvcs, standin: StandIn) -> None:
    isvcs.create("s3", "s3://bucket/models/fraud/v7")
    isvcs.wait("s3", lambda o: settled(o) and condition(o, "Ready")["status"] == "True")
