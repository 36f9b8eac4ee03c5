"""Rollout benchmark on the local platform, with the Model CRD's default rollout settings.

  detection → rollback: from the first failed answer of a bad canary (the erroring model) to the
                        last request the canary serves (traffic really back at 0 %), over N runs
  false rollbacks:      healthy versions (retrained models) rolled out M times; none may roll back
  apply → step 1:       `kubectl apply` of a new version to the canary serving its first weight

Real parts only: Go-built kube-apiserver + etcd, the operator, the KServe stand-in's real runtime
processes behind its router, Debian's Prometheus, 40 requests/s of 20 rows throughout.

    bash hack/venv.sh && ~/.cache/serin/venv-py311/bin/python bench/rollout_bench.py --bad 10 --healthy 20
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import Cluster, OperatorProcess, standin
from serin.local import demo_models
from serin.local.controlplane import start_control_plane
from serin.local.dev import CRD_PATHS
from serin.local.kserve_controller import install_crds as install_kserve_crds
from serin.local.loadgen import LoadGenerator
from serin.local.prometheus import start_prometheus


def apply(c: Cluster, files: demo_models.VersionFiles) -> float:
    body = {"apiVersion": "serin.dev/v1alpha1", "kind": "Model", "metadata": {"name": c.name, "namespace": c.namespace},
            "spec": {"source": {"uri": files.model.as_uri(), "format": files.format,
                                "sampleUri": files.sample.as_uri()}}}  # rollout: all defaults
    t = time.monotonic()
    c.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
    return t


def one_run(cp, prom, root: Path, i: int, bad: bool, versions: dict) -> dict:  # type: ignore[no-untyped-def]
    ns = f"bench-{'bad' if bad else 'ok'}-{i}"
    cp.kubectl("create", "namespace", ns)
    work = root / ns
    work.mkdir()
    with standin(cp, ns, work, data_plane=True, file_sd=prom.targets_file):
        op = OperatorProcess(cp, ns, prom.url, work / "store", work / "operator.log").start()
        c = Cluster(cp, ns, None, op)  # type: ignore[arg-type]
        try:
            apply(c, versions["v1"])
            c.wait_phase("Promoted", generation=1, timeout=180)
            url = (c.isvc() or {})["status"]["url"]
            load = LoadGenerator(url, c.name, rate=40, rows=20, max_seconds=900).start()
            try:
                time.sleep(3)
                t_apply = apply(c, versions["bad" if bad else f"good{i % 3}"])
                c.wait("canary at step 1",
                       lambda m: bool((m.get("status") or {}).get("canary", {}).get("trafficSince")),
                       timeout=180)
                t_step1 = time.monotonic() - t_apply
                end = c.wait("rollout finished", lambda m: (m.get("status") or {}).get("observedGeneration") == 2
                             and (m.get("status") or {}).get("phase") in ("Promoted", "RolledBack"), timeout=600)
                time.sleep(4)
            finally:
                load.stop()
            phase = end["status"]["phase"]
            out = {"ns": ns, "bad": bad, "phase": phase, "apply_to_step1": t_step1}
            if bad:
                canary = end["status"]["failed"]["generation"]
                rev = f"{c.name}-predictor-00002"
                fails = [a.t for a in load.answers if a.revision == rev and a.status >= 500]
                served = [a.t for a in load.answers if a.revision == rev]
                out |= {"detect_to_zero": max(served) - min(fails) if fails else None, "canary_gen": canary}
            return out
        finally:
            op.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bad", type=int, default=10)
    ap.add_argument("--healthy", type=int, default=20)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="serin-bench-"))
    cp = start_control_plane(root / "cp")
    prom = start_prometheus(root / "prometheus", cp.bin_dir)
    try:
        for path in CRD_PATHS:
            cp.kubectl("apply", "--server-side", "-f", str(path))
        install_kserve_crds(cp)
        cp.kubectl("wait", "--for=condition=Established", "crd/models.serin.dev",
                   "crd/inferenceservices.serving.kserve.io")
        versions = {"v1": demo_models.sklearn_version(root / "v1", seed=1),
                    "bad": demo_models.erroring_version(root / "bad")}
        versions |= {f"good{k}": demo_models.sklearn_version(root / f"good{k}", seed=2 + k) for k in range(3)}
        results = []
        plan = [True] * args.bad + [False] * args.healthy
        for i, bad in enumerate(plan):
            r = one_run(cp, prom, root, i, bad, versions)
            results.append(r)
            print(f"run {i + 1}/{len(plan)} {'bad    ' if bad else 'healthy'} → {r['phase']:<10} "
                  f"apply→step1 {r['apply_to_step1']:.1f}s"
                  + (f"  detection→0% {r['detect_to_zero']:.1f}s" if r.get("detect_to_zero") is not None else ""),
                  flush=True)
    finally:
        prom.stop()
        cp.stop()
    bad = [r for r in results if r["bad"]]
    ok = [r for r in results if not r["bad"]]
    detect = [r["detect_to_zero"] for r in bad if r.get("detect_to_zero") is not None]
    step1 = [r["apply_to_step1"] for r in results]
    print("\nrollout benchmark (default rollout settings: steps 10%/50% x 30s, analysis every 10s, failureLimit 2)")
    if detect:
        print(f"  detection → traffic at 0%  median {statistics.median(detect):.1f}s  "
              f"min {min(detect):.1f}s  max {max(detect):.1f}s  over {len(detect)} runs (goal ≤ 30 s median)")
    print(f"  bad versions rolled back    {sum(r['phase'] == 'RolledBack' for r in bad)} / {len(bad)}")
    print(f"  false rollbacks             {sum(r['phase'] == 'RolledBack' for r in ok)} / {len(ok)} healthy rollouts")
    print(f"  apply → canary at step 1    median {statistics.median(step1):.1f}s  max {max(step1):.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
