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
other core is left to wrk). Rounds run the four servers in turn; the median round is reported.

    python bench/runtime_bench.py [--seconds 15] [--warmup 3] [--rounds 2] [--workers 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
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


def wrk(port: int, seconds: float, conns: int, body_file: Path) -> Result:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", "-s", str(LUA),
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


def run_one(key: str, argv: list[str], port: int, args: argparse.Namespace, body: Path,
            log: Path) -> tuple[Result, dict[str, object]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    stop = threading.Event()
    try:
        wait_ready(port, proc)
        answer = post(port, body.read_bytes())
        wrk(port, args.warmup, args.connections, body)
        if key == "c":
            threading.Thread(target=scraper, args=(port, stop), daemon=True).start()
        return wrk(port, args.seconds, args.connections, body), answer
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--only", default="abcd", help="servers to run, e.g. 'cd'")
    args = ap.parse_args()
    import joblib

    tmp = Path(tempfile.mkdtemp(prefix="serin-bench-"))
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
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  cores={os.cpu_count()}  workers={w}  "
          f"wrk -t1 -c{args.connections}  {args.seconds:g}s after {args.warmup:g}s warm-up  "
          f"rounds={args.rounds}  loadavg={os.getloadavg()[0]:.2f}", flush=True)
    runs: dict[str, list[Result]] = {k: [] for k in servers}
    labels: dict[str, object] = {}
    for rnd in range(args.rounds):
        for key, (title, argv) in servers.items():
            if key not in args.only:
                continue
            port = free_port()
            flag = "--http_port"
            res, answer = run_one(key, [*argv, flag, str(port)], port, args, body,
                                  tmp / f"{key}.log")
            outputs = answer.get("outputs")
            labels[key] = outputs[0]["data"] if isinstance(outputs, list) else outputs
            runs[key].append(res)
            print(f"round {rnd + 1} ({key}) {title:<32} {res.rps:9.0f} req/s  p50 "
                  f"{res.p50_ms:7.2f} ms  p99 {res.p99_ms:7.2f} ms  errors {res.errors}",
                  flush=True)
    if set(args.only) != set(servers):
        return 0
    if len({json.dumps(v) for v in labels.values()}) != 1:
        print(f"WARNING: servers disagree on the prediction: {labels}")
    med = {k: sorted(v, key=lambda r: r.rps)[len(v) // 2] for k, v in runs.items()}
    print("\n| server | req/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|")
    for key, (title, _) in servers.items():
        r = med[key]
        print(f"| ({key}) {title} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |")
    a, b, c, d = med["a"], med["b"], med["c"], med["d"]
    checks = [
        (f"(c)/(a) throughput = {c.rps / a.rps:.1f}x", c.rps >= 20 * a.rps, ">= 20x"),
        (f"(c)/(b) throughput = {c.rps / b.rps:.2f}x", c.rps >= 2 * b.rps, ">= 2x"),
        (f"(c) p99 {c.p99_ms:.2f} ms vs (b) p99 {b.p99_ms:.2f} ms", c.p99_ms <= b.p99_ms, "<="),
        (f"(c)/(d) throughput = {c.rps / d.rps:.3f}", c.rps >= 0.9 * d.rps, ">= 0.90"),
    ]
    print()
    for text, ok, goal in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}  (goal {goal})")
    spread = {k: statistics.pstdev([r.rps for r in v]) / statistics.mean([r.rps for r in v])
              for k, v in runs.items()}
    print("round-to-round spread (stdev/mean): "
          + ", ".join(f"({k}) {s:.1%}" for k, s in spread.items()))
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
