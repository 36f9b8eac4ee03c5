"""Scale benchmark: many Models on one operator, on the real apiserver (etcd + kube-apiserver from
hack/provision.sh), converting through the real converter within the conversion limit.

  fleet      N Models (1,000 by default) in one namespace, the KServe stand-in playing KServe's
             controller without a data plane (statuses only; local/kserve_standin.py), every
             version converted by `python -m serin.converters.job`, --limit at a time
  canaries   R Models (50) in another namespace, the stand-in with its data plane (real runtime
             processes, scraped by a real Prometheus), each under steady load

One operator process watches both. Printed, in order:
  ramp       time until all N are serving (Promoted), converters seen running at once (never
             above the limit), peak RSS of the operator and of the whole platform
  idle       over a window with nothing to do: the operator's CPU share, its RSS and RSS per
             Model (idle RSS with N Models less RSS before the first), the apiserver requests
             per second by resource (its own counter, apiserver_request_total); and monitoring,
             on by default for every serving Model: the queries Prometheus answered per second
             (its own prometheus_http_requests_total), the operator's monitoring reads by
             outcome, and the fleet's monitoring states (make --idle-seconds at least the
             monitoring interval, 300 s, to see every Model read)
  rollouts   canaries held at step 1 (50 %) under analysis (every 10 s, failureLimit 2), then
             made to fail: the load's inputs shift so that the canary model raises on most
             requests. Detection → 0 %: the canary's first failed answer to the last answer it
             gives. One rollout at a time first (--solo-runs of them, their median is the
             baseline), then R at once, side by side. A detection depends on where the shift
             falls between two of the canary's rounds, so each canary's shift is placed after
             one of its own rounds, evenly over the interval in both groups (--shift together:
             all R at one instant instead, wherever their rounds fall); each group prints its
             wait from the shift to the next round, to show the mix is alike. Per group: the
             median of each stage of a detection (first failed answer → start of the deciding
             round → decision persisted → InferenceService write → last canary answer), the
             operator's own mean cost per analysis round (its histograms: queries, their wait
             for a slot, judging and the status write), and the CPU of each part of the
             platform from the first shift to the last rollback

    bash hack/venv.sh && ~/.cache/serin/venv-py311/bin/python bench/scale_bench.py --models 1000 --rollouts 50
    ... bench/scale_bench.py --rollouts 0 --solo-runs 0 --idle-seconds 600   # the fleet and idle only

Goals (issue 13): idle ≤ 2 % of a core, ≤ 1 apiserver request/s, RSS ≤ 300 MB at 1,000 Models;
the ramp never above the limit; R concurrent rollouts detect within 10 % of a single one.
Figures only, no assertions: the machine is shared and noisy, read the ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import OperatorProcess, standin
from prometheus_client.parser import text_string_to_metric_families
from serin.local import demo_models
from serin.local.controlplane import ControlPlane, free_port, start_control_plane
from serin.local.dev import CRD_PATHS
from serin.local.kserve_controller import install_crds as install_kserve_crds
from serin.local.loadgen import LoadGenerator
from serin.local.prometheus import Prometheus, start_prometheus

FLEET, CANARIES = "fleet", "canaries"
# Per canary Model. R of them share 2 cores with their 2R runtimes, the stand-in's Python router,
# Prometheus and this process's load generators: R x RATE requests/s must stay well inside what
# the machine serves, or every latency and timeout measures the overload, not the operator.
RATE, ROWS = 2, 20
# The canary raises on rows with |f0| >= LIMIT: none of the traffic reaches it until the load's
# inputs shift by SHIFT, then about 16 % of rows do, so nearly every 20-row request fails.
LIMIT, SHIFT = 4.0, 3.0
# Half the traffic on the canary: enough requests per analysis round at this low rate.
HOLD = {"steps": [{"weight": 50, "pause": "30m"}], "progressDeadline": "10m"}  # analysis: the defaults
INTERVAL = 10.0  # the default analysis interval, seconds


def model_doc(namespace: str, name: str, files: demo_models.VersionFiles,
              rollout: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": {"uri": files.model.as_uri(), "format": files.format,
                                       "sampleUri": files.sample.as_uri()}}
    if rollout:
        spec["rollout"] = rollout
    return {"apiVersion": "serin.dev/v1alpha1", "kind": "Model",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def apply_all(cp: ControlPlane, docs: list[dict[str, Any]], batch: int = 100) -> None:
    for k in range(0, len(docs), batch):
        cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs[k:k + batch]))


def statuses(cp: ControlPlane, namespace: str) -> dict[str, dict[str, Any]]:
    # JSON, not YAML: PyYAML's pure-Python parser takes ~0.9 s of CPU for 50 Models' statuses (timed
    # on a synthetic document of their size); at a poll a second the bench took a core of the 2 from
    # the rollouts it measures.
    out = cp.kubectl("get", "models", "-n", namespace, "-o", "json")
    return {m["metadata"]["name"]: m.get("status") or {} for m in (json.loads(out.stdout) or {}).get("items", [])}


def phases(cp: ControlPlane, namespace: str) -> list[str]:
    out = cp.kubectl("get", "models", "-n", namespace, "-o",
                     "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}")
    return out.stdout.splitlines()


def counter_totals(text: str, wanted: Callable[[str, dict[str, str]], str | None]) -> dict[str, float]:
    """Counters of a /metrics page summed by the key `wanted` gives a sample (None: not counted)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = wanted(sample.name, sample.labels) if sample.name.endswith("_total") else None
            if key is not None:
                out[key] = out.get(key, 0.0) + sample.value
    return out


def requests_by_resource(cp: ControlPlane) -> dict[str, float]:
    """Every request the apiserver has served (apiserver_request_total), by resource and verb."""
    def key(name: str, labels: dict[str, str]) -> str | None:
        if name != "apiserver_request_total":
            return None
        resource = "/".join(x for x in (labels.get("resource"), labels.get("subresource")) if x)
        return f"{resource or '-'} {labels.get('verb', '')}"
    return counter_totals(cp.kubectl("get", "--raw", "/metrics").stdout, key)


def tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        with suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def converters(procs: list[psutil.Process]) -> int:
    n = 0
    for p in procs:
        with suppress(psutil.NoSuchProcess):
            n += "serin.converters.job" in " ".join(p.cmdline())
    return n


class Ticker:
    """Calls `tick` every `every` seconds on a daemon thread, from start() until stop()."""

    def __init__(self, every: float, tick: Callable[[], None]) -> None:
        self.every, self.tick = every, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.tick()


@dataclass
class Sampler:
    """Samples, every `every` seconds: RSS of the operator (its own process), converters running
    (its children), and RSS of every process of the platform (the operator's tree, stand-ins,
    their runtimes, apiserver, etcd, Prometheus)."""

    operator_pid: int
    platform_pids: list[int]
    every: float = 0.5
    peak_operator: int = 0
    peak_platform: int = 0
    most_converters: int = 0
    _ticker: Ticker | None = None

    def __enter__(self) -> Sampler:
        self._ticker = Ticker(self.every, self._sample)
        self._ticker.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._ticker:
            self._ticker.stop()

    def _sample(self) -> None:
        op = tree(self.operator_pid)
        self.peak_operator = max(self.peak_operator, rss(op[:1]))
        self.most_converters = max(self.most_converters, converters(op[1:]))
        everything = {p.pid: p for pid in self.platform_pids for p in tree(pid)}
        self.peak_platform = max(self.peak_platform, rss(list(everything.values())))


@dataclass
class CpuMeter:
    """CPU seconds used by each role's process trees while in use, sampled every `every` seconds
    so that processes which start and exit inside the window (a runtime replaced on a rollback)
    are counted up to their last sample."""

    roles: dict[str, list[int]]  # role → the pids whose trees it covers
    # Walking ~150 processes' /proc costs this bench CPU the rollouts share: not more often.
    every: float = 2.0
    _first: dict[int, float] = field(default_factory=dict)  # pid → its CPU seconds when first seen
    _last: dict[int, float] = field(default_factory=dict)  # pid → its CPU seconds when last seen
    _role: dict[int, str] = field(default_factory=dict)
    _ticker: Ticker | None = None
    _t0: float = 0.0
    wall: float = 0.0

    def __enter__(self) -> CpuMeter:
        self._t0 = time.monotonic()
        self._sample(first=True)
        self._ticker = Ticker(self.every, lambda: self._sample(first=False))
        self._ticker.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._ticker:
            self._ticker.stop()
        self._sample(first=False)
        self.wall = time.monotonic() - self._t0

    def _sample(self, first: bool) -> None:
        for role, pids in self.roles.items():
            for proc in (p for pid in pids for p in tree(pid)):
                with suppress(psutil.NoSuchProcess):
                    t = proc.cpu_times()
                    used = t.user + t.system
                    self._role.setdefault(proc.pid, role)
                    # A process born inside the window counts from zero.
                    self._first.setdefault(proc.pid, used if first else 0.0)
                    self._last[proc.pid] = used

    def used(self) -> dict[str, float]:
        """Each role's CPU seconds over the window."""
        out = dict.fromkeys(self.roles, 0.0)
        for pid, role in self._role.items():
            out[role] += self._last[pid] - self._first[pid]
        return out


def print_cpu(meters: list[CpuMeter]) -> None:
    """The mean share of a core of each role from the first shift to the last rollback."""
    wall = sum(m.wall for m in meters)
    used = {role: sum(m.used()[role] for m in meters) for role in meters[0].roles}
    print(f"  CPU from the shift to the rollbacks ({wall:.0f}s), in cores of {os.cpu_count()}: " + ", ".join(
        f"{role} {u / max(wall, 1e-9):.2f}" for role, u in used.items()), flush=True)


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def ramp(cp: ControlPlane, op: OperatorProcess, platform_pids: list[int], n: int, files: demo_models.VersionFiles,
         limit: int) -> dict[str, Any]:
    assert op.proc is not None
    docs = [model_doc(FLEET, f"m{i:04d}", files) for i in range(n)]
    requests_before, cpu_before = requests_by_resource(cp), psutil.Process(op.proc.pid).cpu_times()
    t0 = time.monotonic()
    with Sampler(op.proc.pid, platform_pids) as s:
        apply_all(cp, docs)
        applied = time.monotonic() - t0
        last = -1
        while True:
            ph = phases(cp, FLEET)
            done = sum(p == "Promoted" for p in ph)
            if done != last and (done % 100 == 0 or done == n):
                print(f"  {time.monotonic() - t0:6.0f}s  {done:5d} / {n} serving, "
                      f"{sum(p == 'Failed' for p in ph)} failed", flush=True)
                last = done
            if done + sum(p == "Failed" for p in ph) >= n:
                break
            time.sleep(2)
    took = time.monotonic() - t0
    print(f"ramp: {n} Models applied in {applied:.0f}s, all serving after {took:.0f}s "
          f"({took / n:.2f}s per Model at {limit} conversions at once); converters at once: at most "
          f"{s.most_converters} (limit {limit}); peak RSS: operator {mb(s.peak_operator)}, "
          f"platform {mb(s.peak_platform)}", flush=True)
    requests, cpu = requests_by_resource(cp), psutil.Process(op.proc.pid).cpu_times()
    grown = {k: requests[k] - requests_before.get(k, 0.0) for k in requests}
    print(f"  during the ramp: operator CPU {(cpu.user + cpu.system - cpu_before.user - cpu_before.system) / took:.0%} "
          f"of a core; apiserver {sum(grown.values()) / took:.1f} requests/s, most: "
          + ", ".join(f"{k} {v / took:.1f}/s" for k, v in sorted(grown.items(), key=lambda kv: -kv[1])[:5]),
          flush=True)
    return {"seconds": took, "most_converters": s.most_converters, "peak_operator": s.peak_operator,
            "peak_platform": s.peak_platform}


def prometheus_queries(url: str) -> dict[str, float]:
    """Queries Prometheus has answered (its own prometheus_http_requests_total), by API."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return counter_totals(text, lambda name, labels: labels.get("handler") if (
        name == "prometheus_http_requests_total" and labels.get("handler", "").startswith("/api/v1/query")) else None)


def monitoring_reads(port: int) -> dict[str, float]:
    """The operator's monitoring reads by outcome (serin_monitoring_reads_total)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return counter_totals(text, lambda name, labels: labels.get("outcome", "")
                          if name == "serin_monitoring_reads_total" else None)


def monitoring_states(cp: ControlPlane, namespace: str) -> dict[str, int]:
    """How many Models are monitored, by their health (the HEALTH column) and what held them."""
    states: dict[str, int] = {}
    for item in json.loads(cp.kubectl("get", "models", "-n", namespace, "-o", "json").stdout)["items"]:
        m = (item.get("status") or {}).get("monitoring")
        state = "not monitored" if not m else f"{m.get('health') or '-'}: {(m.get('problem') or 'judged')[:60]}"
        states[state] = states.get(state, 0) + 1
    return states


def idle(cp: ControlPlane, op: OperatorProcess, n: int, window: float, rss_before: int,
         prometheus_url: str, metrics_port: int) -> dict[str, Any]:
    assert op.proc is not None
    proc = psutil.Process(op.proc.pid)
    time.sleep(10)  # the last writes' own watch events settle
    before, cpu0, t0 = requests_by_resource(cp), proc.cpu_times(), time.monotonic()
    queries0, reads0 = prometheus_queries(prometheus_url), monitoring_reads(metrics_port)
    time.sleep(window)
    after, cpu1, wall = requests_by_resource(cp), proc.cpu_times(), time.monotonic() - t0
    queries1, reads1 = prometheus_queries(prometheus_url), monitoring_reads(metrics_port)
    # One scrape of /metrics is itself a request: the bench's own, not counted.
    grown = {k: after[k] - before.get(k, 0.0) for k in after if after[k] > before.get(k, 0.0)}
    grown.pop("- GET", None)
    cpu = max(0.0, (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall)  # clock ticks: never -0.00 %
    resident = proc.memory_info().rss
    total = sum(grown.values()) / wall
    queries = sum(queries1.values()) - sum(queries0.values())
    reads = {k: v - reads0.get(k, 0.0) for k, v in reads1.items() if v > reads0.get(k, 0.0)}
    print(f"idle ({window:.0f}s, {n} Models): operator CPU {cpu:.2%} of a core, RSS {mb(resident)} "
          f"({(resident - rss_before) / max(n, 1) / 1024:.1f} KB per Model over {mb(rss_before)} before any); "
          f"apiserver {total:.2f} requests/s from every client: "
          + (", ".join(f"{k} {v / wall:.2f}/s" for k, v in sorted(grown.items(), key=lambda kv: -kv[1])) or "none"),
          flush=True)
    print(f"  monitoring: Prometheus answered {queries / wall:.2f} queries/s; the operator's monitoring reads "
          + (", ".join(f"{k} {v / wall:.2f}/s" for k, v in sorted(reads.items())) or "none")
          + f"; the fleet's monitoring: {monitoring_states(cp, FLEET)}", flush=True)
    return {"cpu": cpu, "rss": resident, "requests_per_s": total, "by_resource": grown,
            "queries_per_s": queries / wall}


@dataclass
class Canary:
    name: str
    load: LoadGenerator
    shifted_at: float = 0.0  # on the load's clock
    shifted_wall: float = 0.0  # the same instant, wall clock


def under_analysis(s: dict[str, Any]) -> bool:
    return (s.get("observedGeneration") == 2 and bool((s.get("canary") or {}).get("trafficSince"))
            and any(a.get("generation") == 2 for a in s.get("analysis") or []))


def finished(s: dict[str, Any]) -> bool:
    return s.get("observedGeneration") == 2 and s.get("phase") in ("RolledBack", "Promoted") and not s.get("canary")


@dataclass
class Detections:
    seconds: list[float | None]  # detection → 0 % per canary (None: never rolled back)
    waits: list[float]  # per canary: from the shift to its next analysis round (as scheduled)
    stages: list[dict[str, float]]  # per canary: stage → seconds
    cpu: CpuMeter  # from the first shift to the last rollback


# Where a detection's time goes, from the wall-clock times of its steps: the canary's first failed
# answer and last answer (the load's clock), the start of the analysis round that decided
# (status.analysis[].at, the tick's own clock), the decision persisted (operator.log: Events are
# logged once the status is written) and its InferenceService write (logged just before it is
# sent). Consecutive steps, so the stages add up. Beside them, how late that round started after
# it was due (the previous round's start + interval): the operator's wake-up, not its work.
STEPS = ("first failed", "round start", "decided", "isvc write", "last canary answer")


def log_times(lines: list[str], marker: str, since: float) -> list[float]:
    """Wall-clock times of the operator's log lines containing `marker`, at or after `since` (its
    lines start with Python logging's local `asctime`)."""
    out = []
    for line in lines:
        if marker in line:
            with suppress(ValueError):
                t = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if t >= since:
                    out.append(t)
    return out


def stages(log_lines: list[str], status: dict[str, Any], first_failed: float, last_answer: float,
           ref: str) -> dict[str, float]:
    decided = log_times(log_lines, f"{ref} RollbackStarted:", first_failed - 1.0)[:1]
    written = log_times(log_lines, f"{ref} patch isvc ", decided[0] - 0.001)[:1] if decided else []
    rounds = sorted({dt.datetime.fromisoformat(m["at"]).timestamp() for m in status.get("analysis") or []
                     if m.get("generation") == 2 and not m.get("dryRun")})
    rounds = [r for r in rounds if not decided or r <= decided[0]]
    if not written or len(rounds) < 2:
        return {}
    times = dict(zip(STEPS, (first_failed, rounds[-1], decided[0], written[0], last_answer), strict=True))
    out = {f"{a} → {b}": times[b] - times[a] for a, b in itertools.pairwise(STEPS)}
    out["(round started late by)"] = rounds[-1] - rounds[-2] - INTERVAL
    return out


# The stages on the operator's side of a detection: its round's work, its decision to the write.
OPERATOR_STAGES = ("round start → decided", "decided → isvc write")


def print_operator_share(alone: list[dict[str, float]], many: list[dict[str, float]], baseline: float) -> None:
    """The operator's own part of a detection (the deciding round's start to its InferenceService
    write), one at a time and many at once: what many rollouts add to a detection through the
    operator, apart from when the failure falls and how fast the data plane shows it."""
    def own(group: list[dict[str, float]]) -> list[float]:
        return [sum(s[k] for k in OPERATOR_STAGES) for s in group if all(k in s for k in OPERATOR_STAGES)]

    if own(alone) and own(many):
        a, m = statistics.median(own(alone)), statistics.median(own(many))
        print(f"  the operator's part (deciding round's start → InferenceService write), median: one at a time "
              f"{a:.2f}s, many at once {m:.2f}s; added {m - a:.2f}s = {(m - a) / baseline:.0%} of one detection",
              flush=True)


def print_stages(per_canary: list[dict[str, float]]) -> None:
    if not per_canary:
        return
    print("  stages, median (min-max) over the rolled back: " + "; ".join(
        f"{stage} {statistics.median(v):.2f}s ({min(v):.2f}-{max(v):.2f})"
        for stage in per_canary[0]
        if (v := [s[stage] for s in per_canary if stage in s])), flush=True)


def canaries(cp: ControlPlane, names: list[str], v1: demo_models.VersionFiles, bad: demo_models.VersionFiles,
             operator_log: Path, roles: dict[str, list[int]], phases: list[float] | None = None) -> Detections:
    """`names` served from v1, under load, their bad version held at step 1, then made to fail:
    detection → 0 % for each. Detection depends on where the shift falls between two analysis rounds
    (a round right after it sees too few failures for the hard path and the next one decides):
    `phases[i]` (seconds after a round of canary i) places each canary's shift after its own round,
    else all shift at one instant, where each canary's rounds happen to be."""
    apply_all(cp, [model_doc(CANARIES, n, v1, HOLD) for n in names])
    wait_all(cp, names, lambda s: s.get("phase") == "Promoted" and s.get("observedGeneration") == 1, 900, "v1")
    with ExitStack() as stack:
        running = []
        for n in names:
            isvc = json.loads(cp.kubectl("get", "inferenceservice", n, "-n", CANARIES, "-o", "json").stdout)
            gen = LoadGenerator(isvc["status"]["url"], n, rate=RATE, rows=ROWS, max_seconds=1800).start()
            stack.callback(gen.stop)
            running.append(Canary(n, gen))
        apply_all(cp, [model_doc(CANARIES, n, bad, HOLD) for n in names])
        wait_all(cp, names, under_analysis, 900, "canary at step 1 under analysis")
        time.sleep(INTERVAL + 2)  # every canary through one more round of analysis on healthy traffic
        before = last_rounds(cp, names)
        while (last := last_rounds(cp, names)) == before:  # a fresh round written: the phase is known
            time.sleep(0.2)
        start = time.time() + 0.5
        if phases is None:
            at = {n: start for n in names}
        else:  # each canary's first time after `start` that lies phases[i] after one of its rounds
            at = {n: last[n] + p + INTERVAL * max(0, -((last[n] + p - start) // INTERVAL))
                  for n, p in zip(names, phases, strict=True)}
        time.sleep(max(0.0, min(at.values()) - time.time()))
        with CpuMeter(roles) as cpu:
            for c in sorted(running, key=lambda c: at[c.name]):
                time.sleep(max(0.0, at[c.name] - time.time()))
                c.shifted_wall, c.shifted_at = time.time(), c.load.now()
                c.load.set_shift(SHIFT)
            end = wait_all(cp, names, finished, 600, "rolled back")
        waits = [(last[c.name] - c.shifted_wall) % INTERVAL for c in running]
        time.sleep(3)
    out: list[float | None] = []
    steps: list[dict[str, float]] = []
    log_lines = operator_log.read_text(errors="replace").splitlines()  # once for the group
    for c in running:
        revision = f"{c.name}-predictor-00002"
        answers = [a for a in list(c.load.answers) if a.t >= c.shifted_at]
        failed = [a.t for a in answers if a.revision == revision and a.status == 500]
        served = [a.t for a in answers if a.revision == revision]
        rolled_back = end[c.name].get("phase") == "RolledBack"
        out.append(max(served) - min(failed) if rolled_back and failed and served else None)
        if out[-1] is not None:
            wall = c.shifted_wall - c.shifted_at  # the load's clock → wall clock
            steps.append(stages(log_lines, end[c.name], min(failed) + wall, max(served) + wall,
                                f"{CANARIES}/{c.name}"))
    for n in names:  # back to nothing, for the next measurement
        cp.kubectl("delete", "model", n, "-n", CANARIES, "--wait=false")
    return Detections(out, waits, [x for x in steps if x], cpu)


def evenly(i: int, n: int) -> float:
    """The i-th of n points spread evenly over an analysis interval (the middle of each n-th)."""
    return (i + 0.5) / n * INTERVAL


# The operator's own histograms of where an analysis round's time goes (operator/opmetrics.py).
ROUND_COSTS = {("serin_analysis_round_seconds", "measure"): "measure",
               ("serin_prometheus_query_seconds", "wait"): "of which a query's wait for a slot",
               ("serin_prometheus_query_seconds", "query"): "and a query",
               ("serin_analysis_round_seconds", "persist"): "judge and write status"}


def add_sum_or_count(out: dict[tuple[str, str], list[float]], key: tuple[str, str], sample: Any) -> None:
    """Adds a histogram's _sum or _count sample to out[key] = [sum, count] (summed over its series)."""
    out.setdefault(key, [0.0, 0.0])[0 if sample.name.endswith("_sum") else 1] += sample.value


def round_costs(port: int) -> dict[tuple[str, str], tuple[float, float]]:
    """(histogram, label) → (sum of seconds, count), from the operator's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            label = sample.labels.get("stage") or sample.labels.get("phase") or ""
            if (family.name, label) in ROUND_COSTS and sample.name.endswith(("_sum", "_count")):
                add_sum_or_count(out, (family.name, label), sample)
    return {k: (v[0], v[1]) for k, v in out.items()}


# The apiserver's own time for the operator's writes on a rollback's path (its request histogram):
# beside the operator's status-write time, it says whether a slow write waited in the apiserver.
APISERVER_WRITES = (("models", "status", "PATCH"), ("inferenceservices", "", "PATCH"))
SERVER_SIDE = ("apiserver", "etcd")


def apiserver_write_costs(cp: ControlPlane) -> dict[tuple[str, str], tuple[float, float]]:
    """("apiserver", "models/status PATCH") → (sum of seconds, count), from apiserver_request_duration_seconds,
    and ("etcd", "Model update") from etcd_request_duration_seconds."""
    out: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(cp.kubectl("get", "--raw", "/metrics").stdout):
        if family.name == "etcd_request_duration_seconds":  # the storage part of those writes
            for sample in family.samples:
                if sample.labels.get("operation") == "update" and sample.labels.get("resource") == "models" \
                        and sample.name.endswith(("_sum", "_count")):
                    add_sum_or_count(out, ("etcd", "Model update"), sample)
        if family.name != "apiserver_request_duration_seconds":
            continue
        for sample in family.samples:
            key = (sample.labels.get("resource"), sample.labels.get("subresource", ""), sample.labels.get("verb"))
            if key in APISERVER_WRITES and sample.name.endswith(("_sum", "_count")):
                what = f"{key[0]}{'/' + key[1] if key[1] else ''} {key[2]}"
                add_sum_or_count(out, ("apiserver", what), sample)
    return {k: (v[0], v[1]) for k, v in out.items()}


def cost_since(before: dict[tuple[str, str], tuple[float, float]],
               after: dict[tuple[str, str], tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Mean seconds and count of each histogram between two reads."""
    out = {}
    names = ROUND_COSTS | {k: f"{k[0]} per {k[1]}" for k in after if k[0] in SERVER_SIDE}
    for key, what in names.items():
        s0, n0 = before.get(key, (0.0, 0.0))
        s1, n1 = after.get(key, (0.0, 0.0))
        if n1 > n0:
            out[what] = ((s1 - s0) / (n1 - n0), n1 - n0)
    return out


def print_costs(costs: dict[str, tuple[float, float]]) -> None:
    if costs:
        rounds = costs.get("measure", (0.0, 0.0))[1]
        own = [f"{what} {mean:.3f}s" for what, (mean, _) in costs.items() if not what.startswith(SERVER_SIDE)]
        server = [f"{what} {mean:.3f}s" for what, (mean, _) in costs.items() if what.startswith(SERVER_SIDE)]
        print(f"  operator, mean per analysis round: {', '.join(own)} (over {rounds:.0f} rounds)"
              + (f"; {', '.join(server)}" if server else ""), flush=True)


def last_rounds(cp: ControlPlane, names: list[str]) -> dict[str, float]:
    """Each canary's last analysis round (status.canary.lastAnalysisAt), as a Unix time."""
    s = statuses(cp, CANARIES)
    return {n: dt.datetime.fromisoformat((s[n].get("canary") or {})["lastAnalysisAt"]).timestamp()
            for n in names}


def wait_all(cp: ControlPlane, names: list[str], ok: Any, timeout: float, what: str) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        s = statuses(cp, CANARIES)
        if all(ok(s.get(n) or {}) for n in names):
            return s
        if time.monotonic() > deadline:
            late = [n for n in names if not ok(s.get(n) or {})]
            raise TimeoutError(f"{what}: {len(late)} not after {timeout:.0f}s, e.g. {late[0]}: {s.get(late[0])}")
        # Each poll is a kubectl process and R statuses to parse, CPU the measured rollouts share;
        # nothing is timed from it (detection is timed from the load's answers).
        time.sleep(2)


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):.1f}s (min {min(values):.1f}, max {max(values):.1f})"
            if values else "-")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=1000, help="Models in the fleet")
    ap.add_argument("--rollouts", type=int, default=50, help="canaries judged at once")
    ap.add_argument("--limit", type=int, default=os.cpu_count() or 1, help="conversions at once")
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, etcd) for a look")
    ap.add_argument("--solo-runs", type=int, default=10, help="single rollouts measured one after another")
    ap.add_argument("--data-plane-nice", type=int, default=0,
                    help="niceness of the canaries' data plane (the stand-in's router and runtime processes): "
                         "in a cluster they run on other nodes than the operator and the apiserver; here they "
                         "share 2 cores, and a positive value gives the control plane the first claim on them")
    ap.add_argument("--shift", choices=("spread", "together"), default="spread",
                    help="spread: each of the R canaries starts failing at its own point between two of its "
                         "rounds, evenly spread over the interval as the single rollouts' are, so that both "
                         "medians weigh the same mix of waits for a round; together: all at one instant, "
                         "wherever each canary's rounds happen to fall")
    args = ap.parse_args()
    # SIGTERM (a timeout, a kill) unwinds like Ctrl-C: the ExitStack below stops the apiserver,
    # etcd, Prometheus and the operator, which run in sessions of their own and would outlive us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="serin-scale-"))
    print(f"scale benchmark: {args.models} Models, {args.rollouts} rollouts at once, {args.limit} conversions "
          f"at once, on {os.cpu_count()} cores, the canaries' data plane at nice {args.data_plane_nice}; "
          f"work in {root}", flush=True)
    fleet_files = demo_models.sklearn_version(root / "fleet-v1", seed=1)
    v1 = demo_models.sklearn_version(root / "v1", seed=2)
    bad = demo_models.erroring_version(root / "bad", limit=LIMIT)
    t0 = time.monotonic()
    with ExitStack() as stack:
        if not args.keep:  # runs last: after every process that writes there has stopped
            stack.callback(shutil.rmtree, root, ignore_errors=True)
        cp = start_control_plane(root / "cp", controller_manager=False)
        stack.callback(cp.stop)
        prom: Prometheus = start_prometheus(root / "prometheus", cp.bin_dir)
        stack.callback(prom.stop)
        for path in CRD_PATHS:
            cp.kubectl("apply", "--server-side", "-f", str(path))
        install_kserve_crds(cp)
        cp.kubectl("wait", "--for=condition=Established", "crd/models.serin.dev",
                   "crd/inferenceservices.serving.kserve.io")
        for ns in (FLEET, CANARIES):
            cp.kubectl("create", "namespace", ns)
            (root / ns).mkdir()
        fleet_standin = stack.enter_context(standin(cp, FLEET, root / FLEET, data_plane=False))
        canary_standin = stack.enter_context(standin(cp, CANARIES, root / CANARIES, data_plane=True,
                                                     file_sd=prom.targets_file_for(CANARIES)))
        metrics_port = free_port()
        op = OperatorProcess(cp, None, prom.url, root / "store", root / "operator.log",
                             env={"SERIN_MAX_CONVERSIONS": str(args.limit),
                                  "SERIN_METRICS_PORT": str(metrics_port)}).start()
        stack.callback(op.stop)
        assert op.proc is not None
        time.sleep(5)
        rss_before = psutil.Process(op.proc.pid).memory_info().rss
        # Inherited by every runtime process the stand-in starts from now on.
        psutil.Process(canary_standin.pid).nice(args.data_plane_nice)
        platform_pids = [op.proc.pid, fleet_standin.pid, canary_standin.pid, *cp.pids().values(),
                         *([prom.pid] if prom.pid else [])]
        print(f"platform up in {time.monotonic() - t0:.0f}s; operator RSS with no Model {mb(rss_before)}", flush=True)

        ramp(cp, op, platform_pids, args.models, fleet_files, args.limit)
        idle(cp, op, args.models, args.idle_seconds, rss_before, prom.url, metrics_port)
        if not args.rollouts and not args.solo_runs:
            print(f"\n{op.tail(5)}\ndone in {(time.monotonic() - t0) / 60:.1f} min")
            return 0

        # One rollout at a time, several times: a single detection depends on where the shift falls
        # between two analysis rounds, so the baseline is a median too.
        # The baseline's shifts are spread evenly over the interval, as the many canaries' are by
        # their different start times: both medians then weigh the same mix of waits for a round.
        roles = {"operator": [op.proc.pid], "apiserver": [cp.pids()["kube-apiserver"]], "etcd": [cp.pids()["etcd"]],
                 "prometheus": [prom.pid] if prom.pid else [], "data plane": [canary_standin.pid],
                 "this bench": [os.getpid()]}
        before = round_costs(metrics_port) | apiserver_write_costs(cp)
        solo = [canaries(cp, [f"solo{i}"], v1, bad, op.log, roles, phases=[evenly(i, args.solo_runs)])
                for i in range(args.solo_runs)]
        solo_costs = cost_since(before, round_costs(metrics_port) | apiserver_write_costs(cp))
        alone = [d for r in solo for d in r.seconds if d is not None]
        print(f"rollouts: 1 at a time, {args.solo_runs} times: {len(alone)} rolled back, "
              f"detection → 0 % {spread(alone)}; wait for the next round {spread([w for r in solo for w in r.waits])}",
              flush=True)
        print_stages([x for r in solo for x in r.stages])
        print_costs(solo_costs)
        print_cpu([r.cpu for r in solo])
        before = round_costs(metrics_port) | apiserver_write_costs(cp)
        many = canaries(cp, [f"c{i:02d}" for i in range(args.rollouts)], v1, bad, op.log, roles,
                        phases=None if args.shift == "together" else [evenly(i, args.rollouts)
                                                                      for i in range(args.rollouts)])
        many_costs = cost_since(before, round_costs(metrics_port) | apiserver_write_costs(cp))
        found = [d for d in many.seconds if d is not None]
        print(f"rollouts: {args.rollouts} at once: {len(found)} rolled back, detection → 0 % {spread(found)}; "
              f"wait for the next round {spread(many.waits)}", flush=True)
        print_stages(many.stages)
        print_costs(many_costs)
        print_cpu([many.cpu])
        if alone and found:
            print(f"  ratio, median of {args.rollouts} at once / median of one at a time: "
                  f"{statistics.median(found) / statistics.median(alone):.2f}; of the means "
                  f"({statistics.mean(found):.1f}s / {statistics.mean(alone):.1f}s): "
                  f"{statistics.mean(found) / statistics.mean(alone):.2f}")
            print_operator_share([x for r in solo for x in r.stages], many.stages, statistics.median(alone))
        print(f"\n{op.tail(5)}")
    print(f"done in {(time.monotonic() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
