"""Serving benchmark: Serin's runtime against the floor of its own stack and against KServe-SDK
ModelServers, measured side by side in one run (issue 16).

Models: (forest) RandomForestClassifier, 100 trees, max depth 12, 30 float features: fast, ~20 µs
a row in a tight loop; (mlp) MLPClassifier with two hidden layers of 1,024, 30 features: slow,
~0.1 ms a row, where batching pays. Both are given the batching proof the converter writes
(profile.json `batching`), as a converted model has it. Requests: KServe V2 `POST
/v2/models/NAME/infer` with one row, 64 different rows in turn, the same bodies for every server.
Load: wrk (C, one thread, 8 keep-alive connections, Lua script for the bodies) on loopback: a C
load generator takes far less of the 2 shared cores than a Python client would, and the same one
drives all servers. Servers, each with the same number of worker processes (--workers, default
1: with 2 cores the other core is left to wrk):
  (f) the floor: a bare ASGI app on the same stack (uvicorn, httptools, uvloop) that reads the
      body and answers a fixed JSON (bench/runtime_floor.py): no server of this stack is faster
  (m) the floor that also runs the model on one row (64 rows in turn), without decoding the
      request: the floor plus the model's own cost in a server
  (a) KServe SDK ModelServer, kserve.Model calling scikit-learn (what sklearnserver does)
  (b) KServe SDK ModelServer, kserve.Model calling onnxruntime
  (c) Serin runtime as deployed: monitoring and drift on (a /metrics scrape every 2 s, like
      Prometheus), batching as the profile allows
  (d) Serin runtime, --no-monitoring
  (e) Serin runtime, monitoring on, --batch-rows 0 (no batching)
  (p) (q) (r) Serin as (c), capturing 1 %, 10 %, 100 % of the requests to a local directory
      (issue 34; not run by default: --only cpqr)

Interleaved slices: all servers of a model start and warm up first, then wrk loads one server at
a time for --seconds/--rounds seconds, cycling f-m-a-...-e, e-...-f, ... until each has had
--seconds. On a shared VM the speed of a core drifts by +-15 % within seconds; one long run per
server would measure the machine's mood as much as the server, while short alternating slices
give every server the same mix of fast and slow moments. Per server: req/s is the mean over its
slices, p50 and p99 the median of its slices' percentiles, errors the sum.

Then a duel (--duel-rounds, with one worker): (c) and (d) pinned to the same core and loaded at
the same time, each by its own wrk pinned to the other core. Two busy processes share a core
fairly, so their req/s ratio is the ratio of their CPU cost per request, measured in the same
moments: a sharper figure for the cost of monitoring than the interleaved slices give.

    python bench/runtime_bench.py [--models forest,mlp] [--seconds 30] [--rounds 15] [--only fmabcde]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "runtime"))
import model_factory as mf  # noqa: E402 - shared fixture generator
import numpy as np  # noqa: E402

PY = sys.executable
LUA = Path(__file__).with_name("runtime_wrk_post.lua")
ROWS_IN_TURN = 64


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class Bench:
    """One model's run: its name on the URL paths, files, and the bodies wrk sends in turn."""

    name: str
    title: str
    onnx_dir: Path
    pickle: Path
    bodies: Path

    @property
    def path(self) -> str:
        return f"/v2/models/{self.name}/infer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server not ready")


def post(port: int, bench: Bench) -> dict[str, object]:
    body = bench.bodies.read_bytes().split(b"\n", 1)[0]
    req = urllib.request.Request(f"http://127.0.0.1:{port}{bench.path}", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(port: int, seconds: float, conns: int, bench: Bench,
        prefix: tuple[str, ...] = ()) -> Result:
    out = subprocess.run(
        [*prefix, "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", "-s", str(LUA),
         f"http://127.0.0.1:{port}{bench.path}"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "BENCH_BODY_FILE": str(bench.bodies)},
    ).stdout

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * _UNITS[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return Result(rps, pct("50"), pct("99"), errors)


def scraper(port: int, stop: threading.Event) -> None:
    while not stop.wait(2.0):
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()


@dataclass
class Running:
    key: str
    title: str
    port: int
    proc: subprocess.Popen[bytes]
    answer: dict[str, object] | None = None


def start(key: str, title: str, argv: list[str], log: Path) -> Running:
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen([*argv, "--http_port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=REPO)
    return Running(key, title, port, proc)


def stop(server: Running) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


def duel(servers: dict[str, tuple[str, list[str]]], args: argparse.Namespace, bench: Bench,
         tmp: Path) -> float:
    """(c) and (d) pinned to the same core and loaded at the same time, each by its own wrk on
    the other core. The scheduler shares the core fairly between two busy processes, so the
    ratio of their req/s is the ratio of their CPU cost per request, and the machine's speed,
    however it drifts, is the same for both at every moment."""
    pin, load = ("taskset", "-c", "1"), ("taskset", "-c", "0")
    running = {k: start(k, servers[k][0], [*pin, *servers[k][1]], tmp / f"duel-{bench.name}-{k}.log")
               for k in "cd"}
    stop_scraping = threading.Event()
    try:
        for srv in running.values():
            wait_ready(srv.port, srv.proc)
        threading.Thread(target=scraper, args=(running["c"].port, stop_scraping),
                         daemon=True).start()
        ratios = []
        for rnd in range(args.duel_rounds + 1):  # the first round warms up
            with ThreadPoolExecutor(2) as pool:
                futures = {k: pool.submit(wrk, running[k].port, args.duel_seconds,
                                          args.connections, bench, load) for k in "cd"}
                results = {k: f.result() for k, f in futures.items()}
            if rnd:
                ratios.append(results["c"].rps / results["d"].rps)
                print(f"duel round {rnd}: (c) {results['c'].rps:6.0f}/s  (d) "
                      f"{results['d'].rps:6.0f}/s  (c)/(d) {ratios[-1]:.3f}", flush=True)
    finally:
        stop_scraping.set()
        for srv in running.values():
            stop(srv)
    ratio = statistics.median(ratios)
    print(f"(c)/(d) on one shared core (CPU cost per request, d/c): median {ratio:.3f} over "
          f"{len(ratios)} rounds of {args.duel_seconds:g}s")
    return ratio


def aggregate(slices: list[Result]) -> Result:
    return Result(statistics.mean(r.rps for r in slices),
                  statistics.median(r.p50_ms for r in slices),
                  statistics.median(r.p99_ms for r in slices), sum(r.errors for r in slices))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", default="forest,mlp", help="comma-separated: forest, mlp")
    ap.add_argument("--seconds", type=float, default=30, help="measured seconds per server")
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=15, help="slices per server")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--only", default="fmabcde", help="servers to run, e.g. 'fmce'")
    ap.add_argument("--duel-rounds", type=int, default=3,
                    help="rounds of the same-core (c) vs (d) comparison (0: skip it)")
    ap.add_argument("--duel-seconds", type=float, default=15)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (Debian's package)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="serin-bench-"))
    try:
        failed = False
        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  cores={os.cpu_count()}  workers="
              f"{args.workers}  wrk -t1 -c{args.connections}  {args.seconds:g}s per server in "
              f"{args.rounds} interleaved slices of {args.seconds / args.rounds:g}s, after "
              f"{args.warmup:g}s warm-up  loadavg={os.getloadavg()[0]:.2f}", flush=True)
        for name in args.models.split(","):
            failed |= measure(args, prepare(name.strip(), tmp), tmp) != 0
        return 1 if failed else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(name: str, tmp: Path) -> Bench:
    import joblib
    from serin.converters.parity import batching

    if name == "forest":
        clf, x = mf.sklearn_forest(features=30, trees=100, depth=12)
        title = "RandomForest, 100 trees, depth 12, 30 features"
    elif name == "mlp":
        clf, x = mf.sklearn_mlp(features=30, hidden=(1024, 1024))
        title = "MLP, 2 hidden layers of 1,024, 30 features"
    else:
        raise SystemExit(f"unknown model {name!r} (forest, mlp)")
    directory = tmp / name
    directory.mkdir()
    joblib.dump(clf, directory / "model.joblib")
    onnx_dir = mf.forest_dir(directory / "onnx", clf, x)
    # The proof a conversion writes, so the runtime batches as it would for a converted model.
    proof = batching((onnx_dir / "model.onnx").read_bytes(), {"input": x})
    profile = json.loads((onnx_dir / "profile.json").read_text())
    profile["batching"] = proof
    (onnx_dir / "profile.json").write_text(json.dumps(profile))
    bodies = directory / "bodies.jsonl"
    rows = x[np.random.default_rng(7).choice(len(x), ROWS_IN_TURN, replace=False)]
    bodies.write_text("".join(json.dumps({"inputs": [{"name": "input", "shape": [1, x.shape[1]],
                                                      "datatype": "FP32", "data": row.tolist()}]})
                              + "\n" for row in rows))
    print(f"\n## {name}: {title}; rows independent (batching proof): {proof['rowsIndependent']}",
          flush=True)
    return Bench(name, title, onnx_dir, directory / "model.joblib", bodies)


def servers_for(bench: Bench, workers: str) -> dict[str, tuple[str, list[str]]]:
    kserve_args = ["--model_name", bench.name, "--workers", workers, "--enable_grpc", "false"]
    serin_args = [PY, "-m", "serin.runtime", "--model_name", bench.name, "--model_dir",
                  str(bench.onnx_dir), "--host", "127.0.0.1", "--workers", workers]
    floor = [PY, "bench/runtime_floor.py", "--host", "127.0.0.1"]
    return {
        "f": ("floor: bare ASGI app, fixed answer", floor),
        "m": ("floor + the model run (64 rows in turn)", [*floor, "--model",
                                                       str(bench.onnx_dir / "model.onnx")]),
        "a": ("KServe SDK + sklearn pickle", [PY, "bench/runtime_kserve_servers.py", "--kind",
              "sklearn", "--model_path", str(bench.pickle), *kserve_args]),
        "b": ("KServe SDK + onnxruntime", [PY, "bench/runtime_kserve_servers.py", "--kind", "onnx",
              "--model_path", str(bench.onnx_dir / "model.onnx"), *kserve_args]),
        "c": ("Serin, monitoring on (as deployed)", serin_args),
        "d": ("Serin, monitoring off", [*serin_args, "--no-monitoring"]),
        "e": ("Serin, monitoring on, no batching", [*serin_args, "--batch-rows", "0"]),
        # Payload capture (issue 34) on top of (c), to a local directory: what the request path
        # pays (sampling, a queue append) and the writer thread's share of the core.
        **{key: (f"Serin as deployed, capturing {share:g} %", [
            *serin_args, "--capture-share", f"{share / 100:g}", "--capture-uri",
            str(bench.onnx_dir.parent / f"capture-{key}")]) for key, share in (("p", 1), ("q", 10), ("r", 100))},
    }


def measure(args: argparse.Namespace, bench: Bench, tmp: Path) -> int:
    servers = servers_for(bench, str(args.workers))
    keys = [k for k in servers if k in args.only]
    piece = args.seconds / args.rounds
    running: dict[str, Running] = {}
    stop_scraping = threading.Event()
    try:
        for key in keys:
            title, argv = servers[key]
            srv = running[key] = start(key, title, argv, tmp / f"{bench.name}-{key}.log")
            wait_ready(srv.port, srv.proc)
            srv.answer = post(srv.port, bench)
            wrk(srv.port, args.warmup, args.connections, bench)
            if key in "cepqr":
                threading.Thread(target=scraper, args=(srv.port, stop_scraping),
                                 daemon=True).start()
        runs: dict[str, list[Result]] = {k: [] for k in keys}
        for rnd in range(args.rounds):
            line = []
            for key in keys if rnd % 2 == 0 else keys[::-1]:
                res = wrk(running[key].port, piece, args.connections, bench)
                runs[key].append(res)
                line.append(f"({key}) {res.rps:6.0f}/s p99 {res.p99_ms:5.2f}ms")
            print(f"slice round {rnd + 1:2}: " + "  ".join(line), flush=True)
    finally:
        stop_scraping.set()
        for srv in running.values():
            stop(srv)
    labels: dict[str, object] = {}
    for key, srv in running.items():
        if key in "fm":
            continue  # fixed answers
        outputs = (srv.answer or {}).get("outputs")
        labels[key] = outputs[0]["data"] if isinstance(outputs, list) else outputs
    if len({json.dumps(v) for v in labels.values()}) > 1:
        print(f"WARNING: servers disagree on the prediction: {labels}")
    med = {k: aggregate(v) for k, v in runs.items()}
    print(f"\n{bench.name}: {bench.title}\n\n| server | req/s | of the floor | p50 ms | p99 ms | "
          "p99 / floor's | errors |\n|---|---:|---:|---:|---:|---:|---:|")
    floor = med.get("f")
    for key in keys:
        r = med[key]
        share = f"{r.rps / floor.rps:.0%}" if floor else "-"
        p99 = f"{r.p99_ms / floor.p99_ms:.2f}x" if floor else "-"
        print(f"| ({key}) {servers[key][0]} | {r.rps:.0f} | {share} | {r.p50_ms:.2f} | "
              f"{r.p99_ms:.2f} | {p99} | {r.errors} |")
    print()
    spread = {k: statistics.pstdev([r.rps for r in v]) / statistics.mean([r.rps for r in v])
              for k, v in runs.items()}
    print("slice-to-slice spread of req/s (stdev/mean): "
          + ", ".join(f"({k}) {s:.1%}" for k, s in spread.items()))
    duel_ratio = None
    if "c" in runs and "d" in runs:
        paired = sorted(rc.rps / rd.rps for rc, rd in zip(runs["c"], runs["d"], strict=True))
        print(f"(c)/(d) per round (adjacent slices): median {statistics.median(paired):.3f}, "
              f"range {paired[0]:.3f}-{paired[-1]:.3f}")
        cores = os.cpu_count() or 1
        if args.duel_rounds and args.workers == 1 and cores > 1 and shutil.which("taskset"):
            duel_ratio = duel(servers, args, bench, tmp)
    print()
    checks = goals(bench.name, med, duel_ratio)
    for text, ok, goal in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}  (goal {goal})")
    for text in notes(med):
        print(f"      {text}")
    return 0 if all(ok for _, ok, _ in checks) else 1


def goals(model: str, med: dict[str, Result], duel_ratio: float | None
          ) -> list[tuple[str, bool, str]]:
    """Issue 16's goals (the floor's req/s and p99 for the fast model, the cost of monitoring for
    both) and the earlier ones against KServe's servers."""
    checks = []
    c, d, f = med.get("c"), med.get("d"), med.get("f")
    if c and f and model == "forest":
        checks.append((f"(c)/(f) throughput = {c.rps / f.rps:.2f}", c.rps >= 0.55 * f.rps, ">= 0.55"))
        checks.append((f"(c) p99 / (f) p99 = {c.p99_ms / f.p99_ms:.2f}",
                       c.p99_ms <= 1.5 * f.p99_ms, "<= 1.5"))
    if c and d:
        cost = duel_ratio if duel_ratio is not None else c.rps / d.rps
        how = "duel" if duel_ratio is not None else "interleaved"
        checks.append((f"monitoring: (c)/(d) = {cost:.3f} ({how})", cost >= 0.95, ">= 0.95"))
    q = med.get("q")
    if c and q:  # issue 34: 10 % capture costs at most 5 % of the throughput
        checks.append((f"capture 10 %: (q)/(c) throughput = {q.rps / c.rps:.3f}", q.rps >= 0.95 * c.rps, ">= 0.95"))
    if c and med.get("a") and model == "forest":  # (an MLP is fast in scikit-learn too)
        a = med["a"]
        checks.append((f"(c)/(a) throughput = {c.rps / a.rps:.1f}x", c.rps >= 20 * a.rps, ">= 20x"))
    if c and med.get("b"):
        b = med["b"]
        checks.append((f"(c)/(b) throughput = {c.rps / b.rps:.2f}x", c.rps >= 2 * b.rps, ">= 2x"))
        checks.append((f"(c) p99 {c.p99_ms:.2f} ms vs (b) p99 {b.p99_ms:.2f} ms",
                       c.p99_ms <= b.p99_ms, "<="))
    return checks


def notes(med: dict[str, Result]) -> list[str]:
    """Figures with no goal that say where the time goes."""
    out = []
    f, m, c, e = med.get("f"), med.get("m"), med.get("c"), med.get("e")
    if f and m:
        out.append(f"(m)/(f) = {m.rps / f.rps:.2f}: the floor with the model run and nothing else")
    if m and e:
        per = 1e6 / e.rps - 1e6 / m.rps
        out.append(f"(e) vs (m): Serin's own handling without batching ~{per:.0f} µs a request")
    if c and e:
        out.append(f"(c)/(e) = {c.rps / e.rps:.2f}: what batching requests that arrive together gives")
    for key, share in (("p", "1 %"), ("q", "10 %"), ("r", "100 %")):
        if c and (x := med.get(key)):
            out.append(f"capture {share}: ({key})/(c) throughput {x.rps / c.rps:.3f}, p99 {x.p99_ms:.2f} ms vs "
                       f"{c.p99_ms:.2f} ms")
    return out


if __name__ == "__main__":
    sys.exit(main())
