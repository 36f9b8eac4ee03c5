"""/metrics: request counters and latency histogram by code, rows, predictions, and drift (PSI)
against the reference profile, with several worker processes exporting one coherent series."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import harness
import model_factory as mf
import numpy as np
import pytest
from conftest import Server, serve, stop_server
from prometheus_client.parser import text_string_to_metric_families
from serin.runtime import metric_names as mn


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    """Sum of the samples named `name` whose labels include `labels` (None if there are none)."""
    hits = [v for (n, ls), v in samples(text).items()
            if n == name and set(labels.items()) <= set(ls)]
    return sum(hits) if hits else None


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    harness.wait_for("the condition", condition, timeout=timeout, every=0.2)


def rows_input(x: np.ndarray) -> dict[str, object]:
    return {"name": "input", "shape": list(x.shape), "datatype": "FP32",
            "data": x.ravel().tolist()}


def test_request_counters_and_histogram_by_code(server: Server) -> None:
    labels = {"model": "iris", "revision": "iris-predictor-00001", "protocol": "v2"}
    before = server.metrics()
    for _ in range(3):
        assert server.infer([rows_input(np.zeros((2, 4), np.float32))]).status == 200
    for _ in range(2):
        assert server.infer([rows_input(np.zeros((2, 3), np.float32))]).status == 400
    assert server.post("/v2/models/nope/infer", {}).status == 404
    after = server.metrics()

    def delta(name: str, **extra: str) -> float:
        return (value(after, name, **labels, **extra) or 0) - (
            value(before, name, **labels, **extra) or 0)

    assert delta(mn.REQUESTS_TOTAL, code="200") == 3
    assert delta(mn.REQUESTS_TOTAL, code="400") == 2
    assert delta(mn.REQUESTS_TOTAL, code="404") == 1
    assert delta(f"{mn.REQUEST_DURATION_SECONDS}_count") == 6
    assert delta(f"{mn.REQUEST_DURATION_SECONDS}_bucket", le="+Inf") == 6
    assert delta(f"{mn.REQUEST_DURATION_SECONDS}_sum") > 0
    rows_before = value(before, mn.INFERENCE_ROWS_TOTAL, model="iris") or 0
    assert value(after, mn.INFERENCE_ROWS_TOTAL, model="iris") == rows_before + 6
    preds_before = value(before, mn.PREDICTIONS_TOTAL, model="iris") or 0
    assert value(after, mn.PREDICTIONS_TOTAL, model="iris") == preds_before + 6


def test_revision_label_precedence(server: Server, mixed_server: Server) -> None:
    # `server` has K_REVISION and SERIN_REVISION set: Knative's wins. `mixed_server` has --revision.
    assert 'revision="iris-predictor-00001"' in server.metrics()
    assert 'revision="r2"' in mixed_server.metrics()


@pytest.fixture(scope="module")
def drift_servers(models: dict[str, Path], tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Two 2-worker servers of the same model: one gets reference data, one shifted data."""
    args = ("--workers", "2", "--drift-interval", "0.3", "--drift-window", "2000",
            "--drift-min-rows", "500")
    ref = serve(tmp_path, models["numeric"], "ref", *args, "--revision", "stable")
    try:
        shifted = serve(tmp_path, models["numeric"], "shifted", *args, "--revision", "canary")
    except Exception:
        stop_server(ref)
        raise
    yield ref, shifted
    stop_server(ref)
    stop_server(shifted)


@pytest.fixture(scope="module")
def tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("drift")


def feed(server: Server, x: np.ndarray, batch: int = 100) -> None:
    for i in range(0, len(x), batch):
        reply = server.infer([rows_input(x[i : i + batch])])
        assert reply.status == 200, reply.body


def test_psi_absent_until_window_has_enough_rows(drift_servers: tuple[Server, Server]) -> None:
    ref, _ = drift_servers
    feed(ref, mf.reference_rows(200, seed=11))
    wait_for(lambda: value(ref.metrics(), mn.DRIFT_WINDOW_ROWS) == 200)
    text = ref.metrics()
    assert value(text, mn.INPUT_PSI) is None
    assert value(text, mn.FEATURE_PSI) is None


def test_reference_data_stays_below_0_1(drift_servers: tuple[Server, Server]) -> None:
    ref, _ = drift_servers
    # Each worker holds half the window (1000 rows, 10 requests of 100): with 30 requests spread
    # at random over 2 workers, one got fewer than 10 about 2 % of the time; with 60, ~1e-6.
    feed(ref, mf.reference_rows(6000, seed=12))
    wait_for(lambda: value(ref.metrics(), mn.DRIFT_WINDOW_ROWS) == 2000)
    wait_for(lambda: value(ref.metrics(), mn.INPUT_PSI) is not None)
    text = ref.metrics()
    psi = value(text, mn.INPUT_PSI, model="ref", revision="stable")
    assert psi is not None and psi < mn.PSI_MODERATE
    features = {dict(ls)["feature"]: v for (n, ls), v in samples(text).items()
                if n == mn.FEATURE_PSI}
    assert set(features) == {"f0", "f1", "f2", "f3"}
    assert max(features.values()) == pytest.approx(psi)
    # The test's view of the same window: no feature drifted (at a family-wise 0.1 %: the data
    # is drawn from the reference's distribution, so a lower p-value would be a 1-in-1,000 draw).
    pvalues = {dict(ls)["feature"]: v for (n, ls), v in samples(text).items()
               if n == mn.FEATURE_DRIFT_PVALUE}
    assert set(pvalues) == set(features)
    assert value(text, mn.INPUT_DRIFT_PVALUE) == pytest.approx(min(pvalues.values()))
    assert min(pvalues.values()) > 0.001


def test_shifted_data_rises_above_0_2(drift_servers: tuple[Server, Server]) -> None:
    _, shifted = drift_servers
    x = mf.reference_rows(2500, seed=13)
    x[:, 2] += 1.0  # one feature moves by one standard deviation
    feed(shifted, x)
    features: dict[str, float] = {}
    pvalues: dict[str, float] = {}

    def drifted() -> bool:
        # One scrape for both the overall and the per-feature PSI: consecutive scrapes may reach
        # different workers, and one may not have merged the shared window yet.
        text = shifted.metrics()
        features.clear()
        features.update({dict(ls)["feature"]: v for (n, ls), v in samples(text).items() if n == mn.FEATURE_PSI})
        pvalues.clear()
        pvalues.update({dict(ls)["feature"]: v for (n, ls), v in samples(text).items()
                        if n == mn.FEATURE_DRIFT_PVALUE})
        return (value(text, mn.INPUT_PSI) or 0) > mn.PSI_SIGNIFICANT

    wait_for(drifted)
    assert max(features, key=lambda k: features[k]) == "f2"
    assert features["f0"] < mn.PSI_MODERATE
    # The drift tests flag the moved feature, and only it (family-wise 0.1 %).
    assert pvalues["f2"] < 1e-6
    assert min(v for k, v in pvalues.items() if k != "f2") > 0.001


def test_workers_export_one_coherent_series(drift_servers: tuple[Server, Server]) -> None:
    """Each scrape may reach either worker; once both have flushed their counts (every 0.5 s),
    every one must report the same, exact totals."""
    _, shifted = drift_servers
    v1_ok = {"protocol": "v1", "code": "200"}  # this module sends V1 to `shifted` only here
    before = value(shifted.metrics(), mn.REQUESTS_TOTAL, **v1_ok) or 0
    for _ in range(40):  # a fresh connection each: SO_REUSEPORT spreads them over workers
        assert shifted.predict([[0.0, 0.0, 0.0, 0.0]]).status == 200

    def totals() -> set[float | None]:
        return {value(shifted.metrics(), mn.REQUESTS_TOTAL, **v1_ok) for _ in range(10)}

    wait_for(lambda: totals() == {before + 40})
    assert totals() == {before + 40}  # exact: flushing again adds nothing
    assert {value(shifted.metrics(), f"{mn.REQUEST_DURATION_SECONDS}_count", protocol="v1")
            for _ in range(10)} == {before + 40}
    # PSI merges every worker's window in a background update; once rows stop arriving, every
    # worker must converge on the same value (updates land at different times until then).
    deadline = time.monotonic() + 15
    while True:
        psis = {value(shifted.metrics(), mn.INPUT_PSI) for _ in range(10)}
        if len(psis) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(psis) == 1, psis


def test_regressor_prediction_histogram(models: dict[str, Path], tmp_path: Path) -> None:
    srv = serve(tmp_path, models["regressor"], "reg")
    try:
        x = np.array([[3, 0, 0], [-3, 0, 0], [0.1, 0, 0]], np.float32)  # y = x0 + 2 x1 + 3 x2
        reply = srv.infer([{"name": "input", "shape": [3, 3], "datatype": "FP32",
                            "data": x.ravel().tolist()}])
        assert reply.status == 200, reply.body
        text = srv.metrics()
        assert value(text, f"{mn.PREDICTION_VALUE}_count") == 3
        assert value(text, f"{mn.PREDICTION_VALUE}_bucket", le="-2.0") == 1
        assert value(text, f"{mn.PREDICTION_VALUE}_bucket", le="2.0") == 2
        assert value(text, mn.PREDICTIONS_TOTAL) is None
        # The profile's share of each value bucket, labelled as the histogram labels its buckets,
        # so the operator's predictionShift over time pairs them (monitoring_queries.value_bins).
        for le in ("-2.0", "0.0", "2.0", "+Inf"):
            assert value(text, mn.PREDICTION_VALUE_REFERENCE_RATIO, le=le) == 0.25, le
            assert value(text, f"{mn.PREDICTION_VALUE}_bucket", le=le) is not None, le
    finally:
        stop_server(srv)


def test_no_profile_serves_without_drift(models: dict[str, Path], tmp_path: Path) -> None:
    srv = serve(tmp_path, models["noprofile"], "plain")
    try:
        assert srv.predict([[0.0, 1.0, 2.0, 3.0]]).status == 200
        text = srv.metrics()
        assert value(text, mn.REQUESTS_TOTAL, code="200") == 1
        assert value(text, mn.DRIFT_WINDOW_ROWS) is None
        assert "profile.json not found" in srv.logs()
    finally:
        stop_server(srv)


def test_no_monitoring(models: dict[str, Path], tmp_path: Path) -> None:
    srv = serve(tmp_path, models["numeric"], "quiet", "--no-monitoring")
    try:
        assert srv.predict([[0.0, 1.0, 2.0, 3.0]]).status == 200
        assert srv.request("GET", "/metrics").status == 404
    finally:
        stop_server(srv)


def test_nan_allowed_by_profile(models: dict[str, Path], tmp_path: Path) -> None:
    srv = serve(tmp_path, models["nan"], "nanok")
    try:
        body = (b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", '
                b'"data": [1, NaN, 3, 4]}]}')
        assert srv.post("/v2/models/nanok/infer", body).status == 200
        inf = body.replace(b"NaN", b"Infinity")
        reply = srv.post("/v2/models/nanok/infer", inf)
        assert reply.status == 400 and "infinite values are not allowed" in reply.json()["error"]
    finally:
        stop_server(srv)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_directory_removed_on_sigterm(models: dict[str, Path], tmp_path: Path,
                                              workers: str) -> None:
    """Every server makes a private metrics directory; stopping it must not leave it behind."""
    state = tmp_path / f"state-{workers}"
    state.mkdir()
    srv = serve(tmp_path, models["numeric"], f"tidy{workers}", "--workers", workers,
                env={"TMPDIR": str(state)})
    try:
        assert srv.predict([[0.0, 1.0, 2.0, 3.0]]).status == 200
        assert len(list(state.glob("serin-metrics-*"))) == 1
    finally:
        stop_server(srv)
    assert srv.proc.returncode in (0, 143)  # not -15: killed by the signal before cleaning up
    assert list(state.glob("serin-metrics-*")) == []
