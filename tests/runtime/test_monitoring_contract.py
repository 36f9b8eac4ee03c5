"""Monitoring over time as the operator reads it: a real Prometheus scrapes a real runtime, and
the operator's own monitoring query (operator/monitoring_queries.py) returns exact counts of the
rows served between two instants, with the reference the runtime exports; judged by the operator's
decision (operator/monitoring.py), a shifted feature raises an alarm naming it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from dataclasses import replace
from pathlib import Path

import model_factory as mf
import numpy as np
import pytest
from conftest import serve, stop_server
from serin.local.controlplane import provision
from serin.local.prometheus import start_prometheus
from serin.operator import monitoring as mon
from serin.operator import monitoring_queries
from serin.operator.prometheus import Prometheus as Provider
from serin.operator.reconcile import observe_monitoring, observe_rebaseline
from serin.operator.spec import BaselineSource, BaselineSpec, MonitoringSpec
from serin.operator.status import Monitoring, Version
from serin.runtime import metric_names as mn
from test_metrics import rows_input, wait_for
from test_prometheus_contract import scalar, target

REVISION = "watched-predictor-00001"


def test_the_monitoring_query_counts_exactly_the_rows_served_in_its_window(tmp_path: Path) -> None:
    model_dir = mf.numeric_classifier(tmp_path / "model")
    profile = json.loads((model_dir / "profile.json").read_text())
    srv = serve(tmp_path, model_dir, "watched", "--revision", REVISION, "--drift-interval", "0.2")
    prom = start_prometheus(tmp_path / "prometheus", provision(), scrape_interval="1s")
    provider = Provider(prom.url)
    rng = np.random.default_rng(0)
    sent = {"rows": 0}

    def send(n: int, shift: float = 0.0) -> None:
        for _ in range(n):
            x = rng.normal(size=(1, 4)).astype(np.float32)
            x[0, 2] += shift
            assert srv.infer([rows_input(x)]).status == 200
        sent["rows"] += n

    def scraped_rows() -> float:
        return scalar(prom, f'sum({mn.FEATURE_BIN_ROWS_TOTAL}{{namespace="mon",feature="f0"}})') or 0.0

    def observe(m: Monitoring, now: dt.datetime) -> mon.MonitoringObservation:
        async def read() -> mon.MonitoringObservation:
            try:
                return await observe_monitoring(provider, "mon", "watched", spec, m, now)
            finally:
                await provider.close()
        return asyncio.run(read())

    spec = MonitoringSpec(interval=10.0, min_rows=100, trailing=3600.0)
    stable = Version(1, "k1", "file:///m", revision=REVISION)
    try:
        prom.targets_file.write_text(json.dumps([target(srv, "mon", REVISION)]))
        wait_for(lambda: scalar(prom, f'count({mn.FEATURE_BIN_ROWS_TOTAL}{{namespace="mon"}})') is not None,
                 timeout=30)
        time.sleep(2.5)  # two scrapes of the zero-valued counters: the window's start
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        m = mon.evaluate(spec, None, stable, None, start, "watched").monitoring
        assert m is not None
        time.sleep(1.1)
        send(300)
        wait_for(lambda: scraped_rows() >= 300, timeout=30)
        end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
        time.sleep(1.2)
        obs = observe(m, end)
        assert not obs.error, obs.error
        w = obs.window
        # Exact: differences of counters, no extrapolation.
        assert w.rows == 300 and w.requests == 300 and w.errors == 0
        assert sorted(w.features) == ["f0", "f1", "f2", "f3"]
        assert all(sum(bins.values()) == 300 for bins in w.features.values()), w.features
        assert sum(w.classes.values()) == 300
        assert w.latency[float("inf")] == 300
        # The reference, as the profile has it.
        ref = obs.reference
        f0 = next(f for f in profile["features"] if f["name"] == "f0")
        assert [round(ref.features["f0"][b], 6) for b in range(len(f0["proportions"]))] == \
            [round(p / sum(f0["proportions"]), 6) for p in f0["proportions"]]
        assert ref.classes == {c: p for c, p in zip(profile["prediction"]["classes"],
                                                      profile["prediction"]["proportions"], strict=True)}
        assert obs.trailing is not None and obs.trailing.rows == 0  # nothing served before the window
        judged = mon.evaluate(spec, m, stable, obs, end, "watched")
        first_end = end
        assert judged.monitoring is not None and judged.monitoring.evaluations == 1 and not judged.emits
        m = mon.mark_told(judged.monitoring)

        # f2 shifted by 3 sd: two more windows (the first's drift is what the second bets on).
        events: list[str] = []
        for _ in range(2):
            assert m is not None
            send(300, shift=3.0)
            wait_for(lambda: scraped_rows() >= sent["rows"], timeout=30)
            end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
            time.sleep(1.2)
            obs = observe(m, end)
            assert not obs.error and obs.window.rows == 300, (obs.error, obs.window.rows)
            assert obs.trailing is not None and obs.trailing.rows == sent["rows"] - 300
            out = mon.evaluate(spec, m, stable, obs, end, "watched")
            events += [f"{e.reason}: {e.message}" for e in out.emits]
            m = mon.mark_told(out.monitoring)
        assert m is not None
        drift = m.signal("inputDrift")
        assert drift is not None and drift.state == mon.ALARM and drift.worst[0].feature == "f2", drift
        assert any(e.startswith("DriftDetected") and "feature f2" in e for e in events), events

        # `serin rebaseline`: the counts of a window that ended earlier, read later (an offset), exact.
        def rebaseline_counts(since: dt.datetime, until: dt.datetime) -> mon.Counts:
            req = mon.RebaselineRequest(1, since.isoformat(), until.isoformat())

            async def read() -> mon.RebaselineObservation:
                try:
                    return await observe_rebaseline(provider, "mon", "watched", REVISION, req,
                                                    dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
                finally:
                    await provider.close()
            got = asyncio.run(read())
            assert not got.error and got.counts is not None, got.error
            assert got.reference.features == ref.features  # the profile's, for the message
            return got.counts

        # A trailing baseline (spec.monitoring.baseline): the 10 minutes before the window, read as a
        # third query: every row served before this window (all within them), exactly.
        trailing_spec = replace(spec, baseline=BaselineSpec(BaselineSource.TRAILING, 600.0))
        send(300)
        wait_for(lambda: scraped_rows() >= sent["rows"], timeout=30)
        later = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
        time.sleep(1.2)
        spec = trailing_spec
        obs = observe(m, later)
        assert not obs.error and obs.window.rows == 300 and obs.baseline is not None, obs.error
        assert obs.baseline.rows == sent["rows"] - 300 == 900
        assert all(sum(b.values()) == 900 for b in obs.baseline.features.values())

        unshifted, shifted = rebaseline_counts(start, first_end), rebaseline_counts(first_end, end)
        assert unshifted.rows == 300 and shifted.rows == 600
        assert all(sum(b.values()) == 600 for b in shifted.features.values())
        top = max(shifted.features["f2"])  # the shifted feature's rows sit in its top bins now
        assert shifted.features["f2"].get(top, 0) > 3 * unshifted.features["f2"].get(top, 0) + 100
    finally:
        prom.stop()
        stop_server(srv)


def test_a_pod_older_than_its_first_sample_in_a_window_is_left_out_not_counted_from_its_birth(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime that served rows before Prometheus first saw it (a scrape gap longer than the
    lookback, or data past retention): its counters then hold history from before the window.
    Counting such a series from zero made all of that history one window's rows (a huge, false
    drift evidence, or a rebaseline of traffic the user meant to replace); now a series without a
    sample at the window's start counts only if its Pod was scraped there or its runtime started
    after the window's start less a lookback. The lookback is 5 minutes; 2 seconds here, so that
    a runtime started seconds before the window is "older" without a 5-minute wait."""
    monkeypatch.setattr(monitoring_queries, "LOOKBACK", 2)
    model_dir = mf.numeric_classifier(tmp_path / "model")
    srv = serve(tmp_path, model_dir, "gap", "--revision", REVISION, "--drift-interval", "0.2")
    prom = start_prometheus(tmp_path / "prometheus", provision(), scrape_interval="1s")
    provider = Provider(prom.url)
    rng = np.random.default_rng(1)
    spec = MonitoringSpec(interval=10.0, min_rows=1, trailing=3600.0)
    stable = Version(1, "k1", "file:///m", revision=REVISION)

    def send(n: int) -> None:
        for _ in range(n):
            assert srv.infer([rows_input(rng.normal(size=(1, 4)).astype(np.float32))]).status == 200

    def observe(m: Monitoring, now: dt.datetime) -> mon.MonitoringObservation:
        async def read() -> mon.MonitoringObservation:
            try:
                return await observe_monitoring(provider, "gap", "gap", spec, m, now)
            finally:
                await provider.close()
        return asyncio.run(read())

    try:
        send(300)  # history Prometheus never sees
        time.sleep(3.1)
        window_start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
        m = mon.evaluate(spec, None, stable, None, window_start, "gap").monitoring
        assert m is not None
        time.sleep(2.2)  # the window has started: only now is the runtime scraped, for the first time
        prom.targets_file.write_text(json.dumps([target(srv, "gap", REVISION)]))
        wait_for(lambda: (scalar(prom, f'sum({mn.INFERENCE_ROWS_TOTAL}{{namespace="gap"}})') or 0) >= 300, timeout=30)
        send(100)
        wait_for(lambda: (scalar(prom, f'sum({mn.INFERENCE_ROWS_TOTAL}{{namespace="gap"}})') or 0) >= 400, timeout=30)
        end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
        time.sleep(1.2)
        obs = observe(m, end)
        assert not obs.error, obs.error
        # Before: 400 rows (its whole history as this window's). Now: left out, nothing invented.
        assert obs.window.rows == 0 and not obs.window.features, obs.window
        # A runtime started inside a window is still counted from zero: all its rows belong there.
        late = serve(tmp_path, model_dir, "gap", "--revision", REVISION, "--drift-interval", "0.2")
        try:
            prom.targets_file.write_text(json.dumps([target(srv, "gap", REVISION), target(late, "gap", REVISION)]))
            wait_for(lambda: (scalar(prom, f'count({mn.START_TIME_SECONDS}{{namespace="gap"}})') or 0) >= 2,
                     timeout=30)
            for _ in range(50):
                assert late.infer([rows_input(rng.normal(size=(1, 4)).astype(np.float32))]).status == 200
            wait_for(lambda: (scalar(prom, f'sum({mn.INFERENCE_ROWS_TOTAL}{{namespace="gap"}})') or 0) >= 450,
                     timeout=30)
            end = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=1)
            time.sleep(1.2)
            obs = observe(m, end)
            assert not obs.error and obs.window.rows == 50, (obs.error, obs.window.rows)
        finally:
            stop_server(late)
    finally:
        prom.stop()
        stop_server(srv)
