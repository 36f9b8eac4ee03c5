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
             per second by resource (its own counter, apiserver_request_total)
  rollouts   canaries held at step 1 (50 %) under analysis (every 10 s, failureLimit 2), then
             made to fail at one instant: the load's inputs shift so that the canary model
             raises on most requests. Detection → 0 %: the canary's first failed answer to the
             last answer it gives. One rollout at a time first (--solo-runs of them, their
             median is the baseline, their shifts placed evenly between two analysis rounds as
             the R canaries' fall by their start times), then R at once, side by side; each
             group prints its wait from the shift to the next round, to show the mix is alike,
             and the median of each stage of a detection (first failed answer → start of the
             deciding round → decision persisted → InferenceService write → last canary answer)

    bash hack/venv.sh && ~/.cache/serin/venv-py311/bin/python bench/scale_bench.py --models 1000 --rollouts 50

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
from serin.local.controlplane import ControlPlane, start_control_plane
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


def requests_by_resource(cp: ControlPlane) -> dict[str, float]:
    """Every request the apiserver has served (apiserver_request_total), by resource and verb."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(cp.kubectl("get", "--raw", "/metrics").stdout):
        if family.name == "apiserver_request":
            for s in family.samples:
                if s.name.endswith("_total"):
                    resource = "/".join(x for x in (s.labels.get("resource"), s.labels.get("subresource")) if x)
                    key = f"{resource or '-'} {s.labels.get('verb', '')}"
                    out[key] = out.get(key, 0.0) + s.value
    return out


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
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            op = tree(self.operator_pid)
            self.peak_operator = max(self.peak_operator, rss(op[:1]))
            self.most_converters = max(self.most_converters, converters(op[1:]))
            everything = {p.pid: p for pid in self.platform_pids for p in tree(pid)}
            self.peak_platform = max(self.peak_platform, rss(list(everything.values())))


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


def idle(cp: ControlPlane, op: OperatorProcess, n: int, window: float, rss_before: int) -> dict[str, Any]:
    assert op.proc is not None
    proc = psutil.Process(op.proc.pid)
    time.sleep(10)  # the last writes' own watch events settle
    before, cpu0, t0 = requests_by_resource(cp), proc.cpu_times(), time.monotonic()
    time.sleep(window)
    after, cpu1, wall = requests_by_resource(cp), proc.cpu_times(), time.monotonic() - t0
    # One scrape of /metrics is itself a request: the bench's own, not counted.
    grown = {k: after[k] - before.get(k, 0.0) for k in after if after[k] > before.get(k, 0.0)}
    grown.pop("- GET", None)
    cpu = max(0.0, (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall)  # clock ticks: never -0.00 %
    resident = proc.memory_info().rss
    total = sum(grown.values()) / wall
    print(f"idle ({window:.0f}s, {n} Models): operator CPU {cpu:.2%} of a core, RSS {mb(resident)} "
          f"({(resident - rss_before) / max(n, 1) / 1024:.1f} KB per Model over {mb(rss_before)} before any); "
          f"apiserver {total:.2f} requests/s from every client: "
          + (", ".join(f"{k} {v / wall:.2f}/s" for k, v in sorted(grown.items(), key=lambda kv: -kv[1])) or "none"),
          flush=True)
    return {"cpu": cpu, "rss": resident, "requests_per_s": total, "by_resource": grown}


@dataclass
class Canary:
    name: str
    load: LoadGenerator
    shifted_at: float = 0.0  # on the load's clock


def under_analysis(s: dict[str, Any]) -> bool:
    return (s.get("observedGeneration") == 2 and bool((s.get("canary") or {}).get("trafficSince"))
            and any(a.get("generation") == 2 for a in s.get("analysis") or []))


def finished(s: dict[str, Any]) -> bool:
    return s.get("observedGeneration") == 2 and s.get("phase") in ("RolledBack", "Promoted") and not s.get("canary")


@dataclass
class Detections:
    seconds: list[float | None]  # detection → 0 % per canary (None: never rolled back)
    waits: list[float]  # per canary: from the shift to its next analysis round (as scheduled)
    stages: list[dict[str, float]] = field(default_factory=list)  # per canary: stage → seconds


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


def print_stages(per_canary: list[dict[str, float]]) -> None:
    if not per_canary:
        return
    print("  stages, median (min-max) over the rolled back: " + "; ".join(
        f"{stage} {statistics.median(v):.2f}s ({min(v):.2f}-{max(v):.2f})"
        for stage in per_canary[0]
        if (v := [s[stage] for s in per_canary if stage in s])), flush=True)


def canaries(cp: ControlPlane, names: list[str], v1: demo_models.VersionFiles,
             bad: demo_models.VersionFiles, operator_log: Path, phase: float | None = None) -> Detections:
    """`names` served from v1, under load, their bad version held at step 1, then all made to fail
    at one instant: detection → 0 % for each. Detection depends on where the shift falls between
    two analysis rounds (a round right after it sees too few failures for the hard path and the
    next one decides): `phase` (seconds after a round) places it, else it falls where it falls,
    which for many canaries started at different times spreads over the whole interval."""
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
        if phase is not None:
            before = last_rounds(cp, names)
            while (last := last_rounds(cp, names)) == before:  # until the next round is written
                time.sleep(0.2)
            time.sleep(max(0.0, max(last.values()) + phase - time.time()))
        last = last_rounds(cp, names)
        shifted = time.time()
        for c in running:
            c.shifted_at = c.load.now()
            c.load.set_shift(SHIFT)
        waits = [(last[n] + INTERVAL - shifted) % INTERVAL for n in names]
        end = wait_all(cp, names, finished, 600, "rolled back")
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
            wall = shifted - c.shifted_at  # the load's clock → wall clock
            steps.append(stages(log_lines, end[c.name], min(failed) + wall, max(served) + wall,
                                f"{CANARIES}/{c.name}"))
    for n in names:  # back to nothing, for the next measurement
        cp.kubectl("delete", "model", n, "-n", CANARIES, "--wait=false")
    return Detections(out, waits, [x for x in steps if x])


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
        time.sleep(1)


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
    ap.add_argument("--solo-runs", type=int, default=5, help="single rollouts measured one after another")
    ap.add_argument("--data-plane-nice", type=int, default=0,
                    help="niceness of the canaries' data plane (the stand-in's router and runtime processes): "
                         "in a cluster they run on other nodes than the operator and the apiserver; here they "
                         "share 2 cores, and a positive value gives the control plane the first claim on them")
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
        op = OperatorProcess(cp, None, prom.url, root / "store", root / "operator.log",
                             env={"SERIN_MAX_CONVERSIONS": str(args.limit)}).start()
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
        idle(cp, op, args.models, args.idle_seconds, rss_before)

        # One rollout at a time, several times: a single detection depends on where the shift falls
        # between two analysis rounds, so the baseline is a median too.
        # The baseline's shifts are spread evenly over the interval, as the many canaries' are by
        # their different start times: both medians then weigh the same mix of waits for a round.
        solo = [canaries(cp, [f"solo{i}"], v1, bad, op.log, phase=(i + 0.5) / args.solo_runs * INTERVAL)
                for i in range(args.solo_runs)]
        alone = [d for r in solo for d in r.seconds if d is not None]
        print(f"rollouts: 1 at a time, {args.solo_runs} times: {len(alone)} rolled back, "
              f"detection → 0 % {spread(alone)}; wait for the next round {spread([w for r in solo for w in r.waits])}",
              flush=True)
        print_stages([x for r in solo for x in r.stages])
        many = canaries(cp, [f"c{i:02d}" for i in range(args.rollouts)], v1, bad, op.log)
        found = [d for d in many.seconds if d is not None]
        print(f"rollouts: {args.rollouts} at once: {len(found)} rolled back, detection → 0 % {spread(found)}; "
              f"wait for the next round {spread(many.waits)}", flush=True)
        print_stages(many.stages)
        if alone and found:
            print(f"  ratio, median of {args.rollouts} at once / median of one at a time: "
                  f"{statistics.median(found) / statistics.median(alone):.2f}")
        print(f"\n{op.tail(5)}")
    print(f"done in {(time.monotonic() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
