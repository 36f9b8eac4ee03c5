"""Serving benchmark: Serin's runtime vs KServe-SDK ModelServers, measured side by side.

Model: RandomForestClassifier, 100 trees, max depth 12, 30 float features. Requests: KServe V2
`POST /v2/models/forest/infer` with one row, the same body for every server. Load: wrk (C, one
thread, 8 keep-alive connections, Lua script for the POST body) on loopback: a C load generator
takes far less of the 2 shared cores than a Python client would, and the same one drives all
servers. Servers:
  (a) KServe SDK ModelServer, kserve.Model calling scikit-learn (what sklearnserver does)
  (b) KServe SDK ModelServer, kserve.Model calling onnxruntime
  (c) Serin runtime, monitoring and drift on (a /metrics scrape every 2 s, like Prometheus)
  (d) Serin runtime, --no-monitoring
Every server gets the same number of worker processes (--workers, default 1: with 2 cores the
other core is left to wrk).

Interleaved slices: all servers start and warm up first, then wrk loads one server at a time for
--seconds/--rounds seconds, cycling a-b-c-d, d-c-b-a, ... until each has had --seconds. On a
shared VM the speed of a core drifts by +-15 % within seconds; one long run per server would
measure the machine's mood as much as the server, while short alternating slices give every server
the same mix of fast and slow moments. Per server: req/s is the mean over its slices, p50 and p99
the median of its slices' percentiles, errors the sum.

Then a duel (--duel-rounds, with one worker): (c) and (d) pinned to the same core and loaded at
the same time, each by its own wrk pinned to the other core. Two busy processes share a core
fairly, so their req/s ratio is the ratio of their CPU cost per request, measured in the same
moments: a sharper figure for the cost of monitoring than the interleaved slices give.

    python bench/runtime_bench.py [--seconds 40] [--rounds 20] [--warmup 3] [--workers 1]
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

PY = sys.executable
LUA = Path(__file__).with_name("runtime_wrk_post.lua")
NAME = "forest"


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


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


def post(port: int, body: bytes) -> dict[str, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{NAME}/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(json.loads(resp.read()))


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(port: int, seconds: float, conns: int, body_file: Path,
        prefix: tuple[str, ...] = ()) -> Result:
    out = subprocess.run(
        [*prefix, "wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", "-s", str(LUA),
         f"http://127.0.0.1:{port}/v2/models/{NAME}/infer"],
        capture_output=True, text=True, check=True, env={**os.environ, "BENCH_BODY_FILE":
                                                         str(body_file)},
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


def duel(servers: dict[str, tuple[str, list[str]]], args: argparse.Namespace, body: Path,
         tmp: Path) -> None:
    """(c) and (d) pinned to the same core and loaded at the same time, each by its own wrk on
    the other core. The scheduler shares the core fairly between two busy processes, so the
    ratio of their req/s is the ratio of their CPU cost per request, and the machine's speed,
    however it drifts, is the same for both at every moment."""
    pin, load = ("taskset", "-c", "1"), ("taskset", "-c", "0")
    running = {k: start(k, servers[k][0], [*pin, *servers[k][1]], tmp / f"duel-{k}.log")
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
                                          args.connections, body, load) for k in "cd"}
                results = {k: f.result() for k, f in futures.items()}
            if rnd:
                ratios.append(results["c"].rps / results["d"].rps)
                print(f"duel round {rnd}: (c) {results['c'].rps:6.0f}/s  (d) "
                      f"{results['d'].rps:6.0f}/s  (c)/(d) {ratios[-1]:.3f}", flush=True)
    finally:
        stop_scraping.set()
        for srv in running.values():
            stop(srv)
    print(f"(c)/(d) on one shared core (CPU cost per request, d/c): median "
          f"{statistics.median(ratios):.3f} over {len(ratios)} rounds of {args.duel_seconds:g}s")


def aggregate(slices: list[Result]) -> Result:
    return Result(statistics.mean(r.rps for r in slices),
                  statistics.median(r.p50_ms for r in slices),
                  statistics.median(r.p99_ms for r in slices), sum(r.errors for r in slices))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=40, help="measured seconds per server")
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=20, help="slices per server")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--only", default="abcd", help="servers to run, e.g. 'cd'")
    ap.add_argument("--duel-rounds", type=int, default=3,
                    help="rounds of the same-core (c) vs (d) comparison (0: skip it)")
    ap.add_argument("--duel-seconds", type=float, default=15)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serin-bench-"))
    try:
        return measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure(args: argparse.Namespace, tmp: Path) -> int:
    import joblib

    clf, x = mf.sklearn_forest(features=30, trees=100, depth=12)
    joblib.dump(clf, tmp / "model.joblib")
    onnx_dir = mf.forest_dir(tmp / "onnx", clf, x)
    body = tmp / "body.json"
    body.write_text(json.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
                                            "data": x[0].tolist()}]}))
    w = str(args.workers)
    kserve_args = ["--model_name", NAME, "--workers", w, "--enable_grpc", "false"]
    serin_args = ["-m", "serin.runtime", "--model_name", NAME, "--model_dir", str(onnx_dir),
                  "--host", "127.0.0.1", "--workers", w]
    servers = {
        "a": ("KServe SDK + sklearn pickle", [PY, "bench/runtime_kserve_servers.py", "--kind",
              "sklearn", "--model_path", str(tmp / "model.joblib"), *kserve_args]),
        "b": ("KServe SDK + onnxruntime", [PY, "bench/runtime_kserve_servers.py", "--kind", "onnx",
              "--model_path", str(onnx_dir / "model.onnx"), *kserve_args]),
        "c": ("Serin runtime, monitoring on", [PY, *serin_args]),
        "d": ("Serin runtime, monitoring off", [PY, *serin_args, "--no-monitoring"]),
    }
    keys = [k for k in servers if k in args.only]
    piece = args.seconds / args.rounds
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  cores={os.cpu_count()}  workers={w}  "
          f"wrk -t1 -c{args.connections}  {args.seconds:g}s per server in {args.rounds} "
          f"interleaved slices of {piece:g}s, after {args.warmup:g}s warm-up  "
          f"loadavg={os.getloadavg()[0]:.2f}", flush=True)
    running: dict[str, Running] = {}
    stop_scraping = threading.Event()
    try:
        for key in keys:
            title, argv = servers[key]
            srv = running[key] = start(key, title, argv, tmp / f"{key}.log")
            wait_ready(srv.port, srv.proc)
            srv.answer = post(srv.port, body.read_bytes())
            wrk(srv.port, args.warmup, args.connections, body)
            if key == "c":
                threading.Thread(target=scraper, args=(srv.port, stop_scraping),
                                 daemon=True).start()
        runs: dict[str, list[Result]] = {k: [] for k in keys}
        for rnd in range(args.rounds):
            line = []
            for key in keys if rnd % 2 == 0 else keys[::-1]:
                res = wrk(running[key].port, piece, args.connections, body)
                runs[key].append(res)
                line.append(f"({key}) {res.rps:6.0f}/s p99 {res.p99_ms:5.2f}ms")
            print(f"slice round {rnd + 1:2}: " + "  ".join(line), flush=True)
    finally:
        stop_scraping.set()
        for srv in running.values():
            stop(srv)
    labels: dict[str, object] = {}
    for key, srv in running.items():
        outputs = (srv.answer or {}).get("outputs")
        labels[key] = outputs[0]["data"] if isinstance(outputs, list) else outputs
    if len({json.dumps(v) for v in labels.values()}) != 1:
        print(f"WARNING: servers disagree on the prediction: {labels}")
    med = {k: aggregate(v) for k, v in runs.items()}
    print("\n| server | req/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|")
    for key in keys:
        r = med[key]
        print(f"| ({key}) {servers[key][0]} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
              f"{r.errors} |")
    print()
    checks = []
    if set(keys) == set(servers):
        a, b, c, d = med["a"], med["b"], med["c"], med["d"]
        checks = [
            (f"(c)/(a) throughput = {c.rps / a.rps:.1f}x", c.rps >= 20 * a.rps, ">= 20x"),
            (f"(c)/(b) throughput = {c.rps / b.rps:.2f}x", c.rps >= 2 * b.rps, ">= 2x"),
            (f"(c) p99 {c.p99_ms:.2f} ms vs (b) p99 {b.p99_ms:.2f} ms", c.p99_ms <= b.p99_ms,
             "<="),
            (f"(c)/(d) throughput = {c.rps / d.rps:.3f}", c.rps >= 0.9 * d.rps, ">= 0.90"),
        ]
        for text, ok, goal in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {text}  (goal {goal})")
    spread = {k: statistics.pstdev([r.rps for r in v]) / statistics.mean([r.rps for r in v])
              for k, v in runs.items()}
    print("slice-to-slice spread of req/s (stdev/mean): "
          + ", ".join(f"({k}) {s:.1%}" for k, s in spread.items()))
    if "c" in runs and "d" in runs:
        paired = sorted(rc.rps / rd.rps for rc, rd in zip(runs["c"], runs["d"], strict=True))
        print(f"(c)/(d) per round (adjacent slices): median {statistics.median(paired):.3f}, "
              f"range {paired[0]:.3f}-{paired[-1]:.3f}")
        cores = os.cpu_count() or 1
        if args.duel_rounds and args.workers == 1 and cores > 1 and shutil.which("taskset"):
            print()
            duel(servers, args, body, tmp)
    return 0 if all(ok for _, ok, _ in checks) else 1

if __name__ == "__main__":
    sys.exit(main())
