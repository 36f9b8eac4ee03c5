"""Rollout benchmark, side by side in one run: the real cluster and the KServe stand-in, with the
Model CRD's default rollout settings (steps 10 % / 50 % x 30 s, analysis every 10 s, failureLimit 2,
errorRate ≤ 1 %, p99 ≤ 1 s, input PSI ≤ 0.2).

  cluster   a real node, KServe v0.20's own controller in Standard mode, Traefik splitting traffic
            through Serin's HTTPRoute, Serin installed by Helm, Prometheus discovering Pods
            (local/cluster_platform.py; needs root)
  standin   the Knative-mode KServe stand-in: real runtime processes behind its router, one
            operator process per namespace (local/kserve_standin.py)

Each rollout: a first version served, steady load (40 requests/s of 20 rows) through the platform's
front door, then a new version applied:
  healthy   a retrained model: must be promoted (a rollback is a false rollback)
  hard      a model that fails most requests (errors on 5 % of rows): the fast path's case
  subtle    a model that fails exactly 2 % of requests (twice the limit): ordinary analysis
and it prints, per platform:
  detection → 0 %       the bad canary's first failed answer to the last answer it gives
  false rollbacks       healthy versions rolled back
  failed by routing     requests that failed for any reason but the canary model's own 500s,
                        counted from v1's first answer on (the 503s before it are counted apart:
                        a first version's route is Accepted a moment before the proxy has it)
  apply → step 1        `kubectl apply` to the canary serving its first weight

Rollouts run `--parallel` at a time on one platform (the platforms take turns, batch by batch, so
that both see the same machine); each has its own Model. Real parts only.

    bash hack/venv.sh && ~/.cache/serin/venv-py311/bin/python bench/rollout_bench.py \\
        --healthy 20 --hard 4 --subtle 4 --parallel 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import Cluster, OperatorProcess, from_first_served, standin
from serin.local import demo_models
from serin.local.controlplane import ControlPlane, start_control_plane
from serin.local.dev import CRD_PATHS
from serin.local.kserve_controller import install_crds as install_kserve_crds
from serin.local.loadgen import POOL_ROWS, POOL_SEED, Answer, LoadGenerator
from serin.local.prometheus import Prometheus, start_prometheus

RATE, ROWS = 40, 20
# The serving Pods' requests on the cluster. The tests' 50m (MODEL_RESOURCES, to fit many Models on
# a 2-core node) is too little here: CPU is shared by requests, and four conversion Jobs (500m each)
# starved four stable Pods at 50m into timeouts and failed readiness probes (1,761 of 34,853
# requests failed, measured 2026-12-02). 200m covers what a Pod uses at 40 requests/s, and the
# scheduler then queues conversions the node has no room for instead of letting them take it.
SERVING_RESOURCES = {"requests": {"cpu": "200m", "memory": "192Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
SUBTLE_SHARE = 0.02  # of requests: twice errorRate's default limit, below the fast path's bar


@dataclass
class Result:
    platform: str
    kind: str  # healthy | hard | subtle
    model: str
    phase: str
    apply_to_step1: float
    requests: int
    failed_by_routing: int
    detect_to_zero: float | None = None
    note: str = ""
    before_served: int = 0  # failed answers before the front door first served v1 (not counted above)
    routing_failures: str = ""  # what they were: status (0: no answer) and revision, with counts


def judge(platform: str, kind: str, model: str, end: dict[str, Any], t_step1: float, answers: list[Answer],
          canary_revision: str, t_apply: float) -> Result:
    def own_error(a: Answer) -> bool:  # the bad canary's model raising: what the rollout must stop
        return kind != "healthy" and a.revision == canary_revision and a.status == 500

    canary_own = [a for a in answers if own_error(a)]
    by_routing = [a for a in answers if a.status != 200 and not own_error(a)]
    r = Result(platform, kind, model, end["status"]["phase"], t_step1, len(answers), len(by_routing))
    r.routing_failures = ", ".join(f"{n} x {status} {rev or '-'}" for (status, rev), n in
                                   Counter((a.status, a.revision) for a in by_routing).most_common(4))
    if by_routing:  # when, from the new version's apply
        r.routing_failures += f" at {by_routing[0].t - t_apply:+.1f}..{by_routing[-1].t - t_apply:+.1f}s"
    if kind != "healthy":
        served = [a.t for a in answers if a.revision == canary_revision]
        if canary_own and served:
            r.detect_to_zero = max(served) - min(a.t for a in canary_own)
    r.note = (end["status"].get("message") or "")[:90] if r.phase == "RolledBack" else ""
    return r


STOP = threading.Event()  # set on Ctrl-C: every rollout thread gives up, and the platforms go down


def wait(get: Callable[[], dict[str, Any]], what: str, predicate: Callable[[dict[str, Any]], bool],
         timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        if STOP.is_set():
            raise InterruptedError("stopped")
        model = get()
        if predicate(model.get("status") or {}):
            return model
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f}s; status {model.get('status')}")
        time.sleep(0.3)


def at_step1(s: dict[str, Any]) -> bool:
    return bool((s.get("canary") or {}).get("trafficSince"))


def finished(s: dict[str, Any]) -> bool:
    return s.get("observedGeneration") == 2 and s.get("phase") in ("Promoted", "RolledBack") and not s.get("canary")


def rollout(platform: str, kind: str, model: str, get: Callable[[], dict[str, Any]],
            apply: Callable[[str], None], load: Callable[[], LoadGenerator], new: str, canary_revision: str) -> Result:
    """v1 served, load on, `new` applied and followed to its end: the measurements."""
    apply("v1")
    wait(get, f"{model} v1 Promoted", lambda s: s.get("phase") == "Promoted" and s.get("observedGeneration") == 1,
         300)
    gen = load().start()
    try:
        # A first version's route can be Accepted a moment before the proxy has it (docs/serving.md):
        # the rollout's figures start at the first answer v1 gives.
        deadline = time.monotonic() + 30
        while not any(a.status == 200 for a in list(gen.answers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(4)
        t_apply, t_apply_load = time.monotonic(), gen.now()
        apply(new)
        wait(get, f"{model} canary at step 1", at_step1, 300)
        t_step1 = time.monotonic() - t_apply
        end = wait(get, f"{model} rollout finished", finished, 600)
        time.sleep(4)  # answers after the end: a rollback must leave the stable serving
    finally:
        gen.stop()
    answers = list(gen.answers)
    served = from_first_served(answers)
    r = judge(platform, kind, model, end, t_step1, served, canary_revision, t_apply_load)
    r.before_served = len(answers) - len(served)
    return r


class StandinBench:
    """One control plane and Prometheus for the run; per rollout a namespace with its own
    stand-in (data plane) and operator process."""

    name = "standin"

    def __init__(self, root: Path, versions: dict[str, demo_models.VersionFiles]) -> None:
        self.root, self.versions = root, versions
        self.cp: ControlPlane = start_control_plane(root / "cp")
        self.prom: Prometheus = start_prometheus(root / "prometheus", self.cp.bin_dir)
        for path in CRD_PATHS:
            self.cp.kubectl("apply", "--server-side", "-f", str(path))
        install_kserve_crds(self.cp)
        self.cp.kubectl("wait", "--for=condition=Established", "crd/models.serin.dev",
                        "crd/inferenceservices.serving.kserve.io")

    def run(self, i: int, kind: str, new: str) -> Result:
        ns = f"standin-{i}-{kind}"
        self.cp.kubectl("create", "namespace", ns)
        work = self.root / ns
        work.mkdir()
        with standin(self.cp, ns, work, data_plane=True, file_sd=self.prom.targets_file_for(ns)):
            op = OperatorProcess(self.cp, ns, self.prom.url, work / "store", work / "operator.log").start()
            c = Cluster(self.cp, ns, None, op)  # type: ignore[arg-type]
            try:
                def apply(version: str) -> None:
                    files = self.versions[version]
                    c.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump({
                        "apiVersion": "serin.dev/v1alpha1", "kind": "Model",
                        "metadata": {"name": c.name, "namespace": ns},
                        "spec": {"source": {"uri": files.model.as_uri(), "format": files.format,
                                            "sampleUri": files.sample.as_uri()}}}))  # rollout: all defaults

                def load() -> LoadGenerator:
                    return LoadGenerator((c.isvc() or {})["status"]["url"], c.name, rate=RATE, rows=ROWS,
                                         max_seconds=900)

                return rollout(self.name, kind, f"{ns}/{c.name}", c.model, apply, load, new,
                               f"{c.name}-predictor-00002")
            finally:
                op.stop()

    def stop(self) -> list[str]:
        self.prom.stop()
        self.cp.stop()
        return []


class ClusterBench:
    """The real platform, brought up once; one operator (installed by Helm) for every rollout."""

    name = "cluster"

    def __init__(self, root: Path, versions: dict[str, demo_models.VersionFiles]) -> None:
        from serin.local.cluster_platform import bring_up

        self.versions = versions
        self.platform = bring_up(root / "cluster", "bench", gateway=True)
        print("cluster platform up: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.platform.started_in.items()),
              flush=True)

    def run(self, i: int, kind: str, new: str) -> Result:
        p, name = self.platform, f"m{i}-{kind}"
        ns = p.namespace

        def get() -> dict[str, Any]:
            out = p.cluster.kubectl("get", "model", name, "-n", ns, "-o", "yaml", check=False)
            return (yaml.safe_load(out.stdout) or {}) if out.returncode == 0 else {}

        def apply(version: str) -> None:
            files = self.versions[version]
            uri, sample = p.stage(name, version, files)
            p.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump({
                "apiVersion": "serin.dev/v1alpha1", "kind": "Model", "metadata": {"name": name, "namespace": ns},
                "spec": {"source": {"uri": uri, "format": files.format, "sampleUri": sample},
                         "serving": {"resources": SERVING_RESOURCES}}}))  # rollout: all defaults

        def load() -> LoadGenerator:
            assert p.gateway is not None
            return LoadGenerator(p.gateway.address, name, rate=RATE, rows=ROWS, max_seconds=900,
                                 host=f"{name}.{ns}.example.com")

        try:
            return rollout(self.name, kind, f"{ns}/{name}", get, apply, load, new, "gen2")
        finally:
            p.cluster.kubectl("delete", "model", name, "-n", ns, "--wait=false", check=False)

    def stop(self) -> list[str]:
        return self.platform.down()


def summary(results: list[Result], platforms: list[str]) -> None:
    def col(f: Callable[[list[Result]], str]) -> str:
        return "".join(f"{f([r for r in results if r.platform == p]):>34}" for p in platforms)

    def spread(values: list[float]) -> str:
        if not values:
            return "-"
        return f"median {statistics.median(values):.1f}s (min {min(values):.1f}, max {max(values):.1f})"

    def detect(kind: str) -> Callable[[list[Result]], str]:
        return lambda rs: spread([r.detect_to_zero for r in rs if r.kind == kind and r.detect_to_zero is not None])

    def rolled_back(kind: str) -> Callable[[list[Result]], str]:
        def f(rs: list[Result]) -> str:
            bad = [r for r in rs if r.kind == kind]
            return f"{sum(r.phase == 'RolledBack' for r in bad)} / {len(bad)}"
        return f

    def false_rollbacks(rs: list[Result]) -> str:
        ok = [r for r in rs if r.kind == "healthy"]
        return f"{sum(r.phase == 'RolledBack' for r in ok)} / {len(ok)}"

    def routing(rs: list[Result]) -> str:
        return f"{sum(r.failed_by_routing for r in rs)} of {sum(r.requests for r in rs):,}"

    def before_served(rs: list[Result]) -> str:
        return f"{sum(r.before_served for r in rs)} in {sum(r.before_served > 0 for r in rs)} of {len(rs)} runs"

    print("\nrollout benchmark, default rollout settings (steps 10%/50% x 30s, analysis every 10s, failureLimit 2)")
    print(f"{'':34}" + "".join(f"{p:>34}" for p in platforms))
    print(f"{'detection → 0 %, hard (≤ 12 s)':34}" + col(detect("hard")))
    print(f"{'detection → 0 %, subtle (≤ 30 s)':34}" + col(detect("subtle")))
    print(f"{'hard versions rolled back':34}" + col(rolled_back("hard")))
    print(f"{'subtle versions rolled back':34}" + col(rolled_back("subtle")))
    print(f"{'false rollbacks (goal 0)':34}" + col(false_rollbacks))
    print(f"{'requests failed by routing (0)':34}" + col(routing))
    print(f"{'apply → canary at step 1':34}" + col(lambda rs: spread([r.apply_to_step1 for r in rs])))
    print(f"{'v1 Promoted, not yet routed: 503s':34}" + col(before_served))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--healthy", type=int, default=20)
    ap.add_argument("--hard", type=int, default=4)
    ap.add_argument("--subtle", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=4, help="rollouts at once on one platform")
    ap.add_argument("--platforms", default="cluster,standin", help="comma-separated: cluster, standin")
    args = ap.parse_args()
    names = [p.strip() for p in args.platforms.split(",") if p.strip()]
    root = Path(tempfile.mkdtemp(prefix="serin-bench-"))
    limit = demo_models.subtle_limit(demo_models.production_rows(POOL_ROWS, seed=POOL_SEED), ROWS, SUBTLE_SHARE)
    versions = {"v1": demo_models.sklearn_version(root / "v1", seed=1),
                "hard": demo_models.erroring_version(root / "hard"),
                "subtle": demo_models.erroring_version(root / "subtle", seed=12, limit=limit)}
    versions |= {f"good{k}": demo_models.sklearn_version(root / f"good{k}", seed=2 + k) for k in range(3)}
    print(f"subtle version: fails rows with |f0| ≥ {limit:.3f}, {SUBTLE_SHARE:.0%} of requests", flush=True)
    plan = ([("hard", "hard")] * args.hard + [("subtle", "subtle")] * args.subtle
            + [("healthy", f"good{k % 3}") for k in range(args.healthy)])
    benches: dict[str, Any] = {}
    results: list[Result] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    try:
        for name in names:
            benches[name] = (ClusterBench if name == "cluster" else StandinBench)(root / name, versions)
        batches = [plan[k:k + args.parallel] for k in range(0, len(plan), args.parallel)]
        for b, batch in enumerate(batches):
            for name in names:
                def one(item: tuple[int, tuple[str, str]], bench: Any = benches[name]) -> None:
                    i, (kind, new) = item
                    try:
                        r = bench.run(i, kind, new)
                    except Exception as err:  # a rollout that did not finish is a result too
                        r = Result(bench.name, kind, f"#{i}", "Error", float("nan"), 0, 0, note=str(err)[:300])
                    with lock:
                        results.append(r)
                        print(f"{time.monotonic() - t0:6.0f}s {r.platform:<7} {r.kind:<7} {r.model:<24} → "
                              f"{r.phase:<10} apply→step1 {r.apply_to_step1:4.1f}s"
                              + (f"  detection→0% {r.detect_to_zero:4.1f}s" if r.detect_to_zero is not None else "")
                              + f"  failed by routing {r.failed_by_routing}/{r.requests}"
                              + (f" [{r.routing_failures}]" if r.routing_failures else "")
                              + (f"  ({r.note})" if r.note and (r.phase == "Error" or r.kind == "healthy")
                                 else ""), flush=True)
                start = b * args.parallel
                with ThreadPoolExecutor(args.parallel) as pool:
                    try:
                        list(pool.map(one, enumerate(batch, start)))
                    except KeyboardInterrupt:
                        STOP.set()
                        raise
    finally:
        left = []
        for bench in benches.values():
            left += bench.stop()
        if left:
            print(f"left on the host: {left}")
    summary(results, names)
    print(f"\n{len(results)} rollouts in {(time.monotonic() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
