"""The runtime's metrics as the operator reads them: a real Prometheus scrapes a real runtime, and
the operator's own builtin PromQL is evaluated over what it stored.

Why this exists: `rate()` only sees increases between two samples of a series. A counter series
that is born with a value (the first 5xx after a run of 200s) loses that value, so a canary's first
burst of errors would read as a zero error rate and a broken model could pass a canary step. The
runtime therefore exports every status code it can answer at zero from start-up.

And KServe names revisions `<isvc>-predictor-0000N` in every namespace: the operator's queries are
scoped by the scrape target's `namespace` label, so a healthy namesake elsewhere cannot answer for a
canary that has no data of its own yet.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Server, serve, stop_server
from serin.local import demo_models
from serin.local.controlplane import provision
from serin.local.prometheus import Prometheus, start_prometheus
from serin.operator.queries import QueryContext, builtin_query
from serin.runtime import metric_names as mn
from test_metrics import rows_input, samples, wait_for

REVISION = "erroring-predictor-00001"
NAMESPACE = "ns"


@pytest.fixture(scope="module")
def erroring_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The demo's erroring model: onnxruntime raises (HTTP 500) for any row with |f0| >= 2."""
    tmp = tmp_path_factory.mktemp("erroring")
    version = demo_models.erroring_version(tmp / "model")
    srv = serve(tmp, version.model.parent, "erroring", "--revision", REVISION)
    yield srv
    stop_server(srv)


def target(server: Server, namespace: str, revision: str = "") -> dict[str, object]:
    """A file_sd entry labelled as a PodMonitor labels a Pod's target (and, with `revision`, as
    scrape configs that relabel Knative's revision label onto the target do: the local platform's)."""
    labels = {"namespace": namespace, **({"revision": revision} if revision else {})}
    return {"targets": [f"127.0.0.1:{server.port}"], "labels": labels}


@pytest.fixture
def scraping(erroring_server: Server, tmp_path: Path) -> Iterator[Prometheus]:
    prom = start_prometheus(tmp_path / "prometheus", provision(), scrape_interval="1s")
    try:
        prom.targets_file.write_text(json.dumps([target(erroring_server, NAMESPACE)]))
        yield prom
    finally:
        prom.stop()


def test_every_answerable_code_is_exported_at_zero_before_any_request(tmp_path: Path) -> None:
    version = demo_models.erroring_version(tmp_path / "model")
    srv = serve(tmp_path, version.model.parent, "fresh", "--revision", "fresh-00001")
    try:
        exported = {(dict(labels)["protocol"], dict(labels)["code"]): v
                    for (name, labels), v in samples(srv.metrics()).items() if name == mn.REQUESTS_TOTAL}
    finally:
        stop_server(srv)
    want = {(p, c) for p in ("v1", "v2") for c in ("200", "400", "404", "413", "500")}
    assert want <= set(exported), sorted(want - set(exported))
    assert all(v == 0 for v in exported.values()), exported


def scalar(prom: Prometheus, expr: str) -> float | None:
    result = prom.query(expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_first_burst_of_errors_shows_in_the_operators_error_rate(erroring_server: Server,
                                                                 scraping: Prometheus) -> None:
    ctx = QueryContext(model="erroring", namespace=NAMESPACE, revision=REVISION, stable_revision="", window="30s")
    error_rate = builtin_query("errorRate", ctx)
    good = np.zeros((1, 4), np.float32)
    bad = np.full((1, 4), 3.0, np.float32)

    # Only successes until Prometheus has two scrapes of them: the error rate reads exactly 0.
    def answered_twice() -> bool:
        assert erroring_server.infer([rows_input(good)]).status == 200
        scrapes = scalar(scraping, f'count_over_time({mn.REQUESTS_TOTAL}{{code="200",protocol="v2"}}[30s])')
        return (scrapes or 0) >= 2

    wait_for(answered_twice, timeout=30)
    wait_for(lambda: scalar(scraping, error_rate) is not None, timeout=30)
    assert scalar(scraping, error_rate) == 0

    # One burst of errors, then successes only: the burst must show, not vanish into a new series.
    for _ in range(5):
        assert erroring_server.infer([rows_input(bad)]).status == 500
    for _ in range(5):
        assert erroring_server.infer([rows_input(good)]).status == 200
    wait_for(lambda: (scalar(scraping, f'{mn.REQUESTS_TOTAL}{{code="500",protocol="v2"}}') or 0) == 5, timeout=30)
    time.sleep(2.5)  # two more scrapes with no new error: a born-late series would now read 0
    measured = scalar(scraping, error_rate)
    assert measured is not None and measured > 0.01, measured


def test_a_namesake_in_another_namespace_does_not_answer_for_the_canary(erroring_server: Server,
                                                                       tmp_path: Path) -> None:
    """The CI failure this guards: the previous test's promoted `fraud-predictor-00002` (healthy,
    another namespace) was still in the 30 s window when the next test's erroring canary of the
    same name started; its 200s made the canary's error rate read 0 and the canary passed step 1."""
    neighbour_version = demo_models.erroring_version(tmp_path / "neighbour-model")
    neighbour = serve(tmp_path, neighbour_version.model.parent, "erroring", "--revision", REVISION)
    prom = start_prometheus(tmp_path / "prometheus", provision(), scrape_interval="1s")
    try:
        prom.targets_file.write_text(json.dumps([target(neighbour, "elsewhere")]))
        good = np.zeros((1, 4), np.float32)

        def neighbour_scraped_twice() -> bool:
            assert neighbour.infer([rows_input(good)]).status == 200
            return (scalar(prom, f'count_over_time({mn.REQUESTS_TOTAL}{{code="200",protocol="v2"}}[30s])') or 0) >= 2

        wait_for(neighbour_scraped_twice, timeout=30)

        def error_rate(namespace: str) -> float | None:
            ctx = QueryContext(model="erroring", namespace=namespace, revision=REVISION, stable_revision="",
                               window="30s")
            return scalar(prom, builtin_query("errorRate", ctx))

        wait_for(lambda: error_rate("elsewhere") == 0, timeout=30)
        # The canary is not scraped yet: it has no data, which must read as none (Inconclusive),
        # never as the neighbour's zero.
        assert error_rate(NAMESPACE) is None

        prom.targets_file.write_text(json.dumps([target(neighbour, "elsewhere"), target(erroring_server, NAMESPACE)]))
        bad = np.full((1, 4), 3.0, np.float32)

        def canary_errors_measured() -> bool:
            assert erroring_server.infer([rows_input(bad)]).status == 500
            assert neighbour.infer([rows_input(good)]).status == 200
            return (error_rate(NAMESPACE) or 0) > 0

        wait_for(canary_errors_measured, timeout=30)
        assert (error_rate(NAMESPACE) or 0) > 0.99  # the canary answered nothing but errors
        assert error_rate("elsewhere") == 0
    finally:
        prom.stop()
        stop_server(neighbour)


def test_a_canary_refusing_the_live_requests_reads_as_erroring_and_shared_bad_requests_do_not(
        erroring_server: Server, tmp_path: Path) -> None:
    """A canary answering 400 to what the stable takes (another input schema) fails its users as
    a crashing one does; bad requests that clients send to both versions alike are not its fault."""
    stable_version = demo_models.erroring_version(tmp_path / "stable-model")
    stable = serve(tmp_path, stable_version.model.parent, "erroring", "--revision", "erroring-predictor-00000")
    prom = start_prometheus(tmp_path / "prometheus", provision(), scrape_interval="1s")
    ctx = QueryContext(model="erroring", namespace="refusing", revision=REVISION,
                       stable_revision="erroring-predictor-00000", window="30s")
    good, malformed = np.zeros((1, 4), np.float32), np.zeros((1, 3), np.float32)  # 3 columns: 400
    try:
        prom.targets_file.write_text(json.dumps([target(stable, "refusing"), target(erroring_server, "refusing")]))

        def both_scraped_twice() -> bool:
            for srv in (stable, erroring_server):
                assert srv.infer([rows_input(good)]).status == 200
            counted = scalar(prom, f'count(count_over_time({mn.REQUESTS_TOTAL}{{namespace="refusing",'
                                   f'code="200",protocol="v2"}}[30s]) >= 2)')
            return (counted or 0) >= 2

        wait_for(both_scraped_twice, timeout=30)
        # Clients send one malformed request in four to both: the canary is as good as the stable.
        for _ in range(3):
            for srv in (stable, erroring_server):
                assert srv.infer([rows_input(good)]).status == 200
                for _ in range(2):
                    assert srv.infer([rows_input(good)]).status == 200
                assert srv.infer([rows_input(malformed)]).status == 400
        wait_for(lambda: (scalar(prom, f'sum({mn.REQUESTS_TOTAL}{{namespace="refusing",code="400"}})') or 0) == 6,
                 timeout=30)
        time.sleep(1.5)
        shared = scalar(prom, builtin_query("errorRate", ctx))
        assert shared is not None and abs(shared) < 0.05, shared

        # Now the canary refuses everything the stable answers.
        for _ in range(30):
            assert stable.infer([rows_input(good)]).status == 200
            assert erroring_server.infer([rows_input(malformed)]).status == 400
        wait_for(lambda: (scalar(prom, builtin_query("errorRate", ctx)) or 0) > 0.4, timeout=30)
    finally:
        prom.stop()
        stop_server(stable)


def test_a_regressors_prediction_shift_is_measured_across_versions_with_their_own_buckets(
        tmp_path: Path) -> None:
    """A regressor's predicted values are histograms bucketed by each version's own profile cuts;
    the operator's predictionShift compares the two on what a real Prometheus scraped."""
    import asyncio

    import model_factory as mf
    from serin.operator.prometheus import Prometheus as Provider
    from serin.operator.reconcile import regression_shift

    stable_dir = mf.regressor(tmp_path / "stable")
    canary_dir = mf.regressor(tmp_path / "canary")
    profile = json.loads((canary_dir / "profile.json").read_text())
    profile["prediction"] |= {"cuts": [-9.0, -4.0, -1.0, 1.5, 4.0, 9.0], "proportions": [1 / 7] * 7}
    (canary_dir / "profile.json").write_text(json.dumps(profile))
    stable = serve(tmp_path, stable_dir, "reg", "--revision", "reg-predictor-00001")
    canary = serve(tmp_path, canary_dir, "reg", "--revision", "reg-predictor-00002")
    prom = start_prometheus(tmp_path / "prometheus", provision(), scrape_interval="1s")
    ctx = QueryContext(model="reg", namespace="regress", revision="reg-predictor-00002",
                       stable_revision="reg-predictor-00001", window="60s")
    rng = np.random.default_rng(3)

    def shift() -> float | None:
        return asyncio.run(regression_shift(Provider(prom.url), "shift", ctx)).value

    def send(server: Server, offset: float, n: int = 150) -> None:
        x = (rng.normal(0.0, 1.0, (n, 3)) + offset).astype(np.float32)
        for row in x:
            assert server.infer([rows_input(row[None, :])]).status == 200

    try:
        prom.targets_file.write_text(json.dumps([target(stable, "regress"), target(canary, "regress")]))
        wait_for(lambda: (scalar(prom, f'count(count_over_time({mn.PREDICTION_VALUE}_count{{namespace="regress"}}'
                                       f'[60s]) >= 2)') or 0) >= 2, timeout=30)
        assert shift() is None  # no prediction yet on either side: Inconclusive, never 0
        send(stable, 0.0)
        send(canary, 0.0)
        wait_for(lambda: (scalar(prom, f'sum({mn.PREDICTION_VALUE}_count{{namespace="regress"}})') or 0) >= 300,
                 timeout=30)
        time.sleep(1.5)
        same = shift()
        assert same is not None and same < 0.1, same
        send(canary, 1.5, 300)  # its predictions move up by 9 (y = x·[1, 2, 3])
        wait_for(lambda: (shift() or 0) > 0.5, timeout=30)
    finally:
        prom.stop()
        stop_server(stable)
        stop_server(canary)


def test_accuracy_against_stable_is_read_from_feedback_whichever_replica_took_it(tmp_path: Path) -> None:
    """Ground truth sent to either version is counted under the revision that predicted; the
    operator's accuracy builtin reads both versions' counts from a real Prometheus and compares."""
    import asyncio

    import model_factory as mf
    from serin.operator.prometheus import Prometheus as Provider
    from serin.operator.reconcile import compare_feedback
    from serin.operator.spec import Builtin, MetricSpec

    model_dir = mf.numeric_classifier(tmp_path / "model")
    key = {"SERIN_FEEDBACK_KEY": "shared", "SERIN_FEEDBACK_TOKEN": "sender"}
    stable = serve(tmp_path, model_dir, "acc", "--revision", "acc-predictor-00001", env=key)
    canary = serve(tmp_path, model_dir, "acc", "--revision", "acc-predictor-00002", env=key)
    prom = start_prometheus(tmp_path / "prometheus", provision(), scrape_interval="1s")
    ctx = QueryContext(model="acc", namespace="perf", revision="acc-predictor-00002",
                       stable_revision="acc-predictor-00001", window="60s", lifetime="120s")
    metric = MetricSpec("accuracy", builtin=Builtin.ACCURACY, min=-0.05)
    rng = np.random.default_rng(5)

    def measured() -> tuple[float | None, str]:
        got = asyncio.run(compare_feedback(Provider(prom.url), metric, ctx))
        return got.value, got.error

    def predict_and_tell(predictor: Server, told: Server, n: int, wrong_every: int) -> None:
        for i in range(n):
            answer = json.loads(predictor.infer([rows_input(rng.normal(size=(1, 4)).astype(np.float32))]).body)
            label = next(o for o in answer["outputs"] if o["name"] == "label")["data"][0]
            truth = 1 - label if wrong_every and i % wrong_every == 0 else label
            reply = told.request("POST", "/v2/models/acc/feedback", {"id": answer["id"], "truth": [truth]},
                                 headers={"Authorization": "Bearer sender"})
            assert reply.status == 200, reply.body

    try:
        # Each target labelled with its Pod's revision: a metric's own `revision` that differed would
        # be overwritten (renamed exported_revision), so truth must name its revision another way.
        prom.targets_file.write_text(json.dumps([target(stable, "perf", "acc-predictor-00001"),
                                                 target(canary, "perf", "acc-predictor-00002")]))
        wait_for(lambda: (scalar(prom, f'count(count_over_time({mn.FEEDBACK_ROWS_TOTAL}{{namespace="perf"}}'
                                       f'[60s]) >= 2)') or 0) >= 2, timeout=30)
        value, why = measured()
        assert value is None and "no ground truth yet" in why, (value, why)
        # Each version's truth sent to the other one: the counts must follow the predicting revision.
        predict_and_tell(stable, canary, 100, wrong_every=0)  # stable: 100 %
        predict_and_tell(canary, stable, 100, wrong_every=4)  # canary: 75 %
        wait_for(lambda: (scalar(prom, f'sum({mn.FEEDBACK_ROWS_TOTAL}{{namespace="perf"}})') or 0) >= 200,
                 timeout=30)
        time.sleep(1.5)
        value, why = measured()
        # increase() extrapolates a little past the samples it has: the ratio stays the same.
        assert value is not None and abs(value - (-0.25)) < 0.02, (value, why)
    finally:
        prom.stop()
        stop_server(stable)
        stop_server(canary)
