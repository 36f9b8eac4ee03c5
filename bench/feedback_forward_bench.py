"""What counting each truth once across replicas costs (issue 32 #5), measured side by side.

Truth for another replica's prediction is forwarded to the replica that issued it
(runtime/feedback.py, Forwarder): one more local HTTP request. This starts three real runtimes
(`serin serve`, one worker each) of one Model, two knowing their address ($SERIN_POD_IP) and one
not, answers predictions on each, and times feedback taken end to end over HTTP from a client
with keep-alive, in alternating rounds:

- `issuer`: truth sent to the replica that issued the id (taken there, as before);
- `forwarded`: truth sent to the other replica, which forwards it to the issuer;
- `no issuer`: ids that name no replica (no $SERIN_POD_IP), taken where they arrive, as before
  the change; the baseline.

It also times issuing an id with and without an issuer (the request path's share).

    python bench/feedback_forward_bench.py [--feedback 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "runtime"))
import model_factory as mf  # noqa: E402 - shared fixture generator
import numpy as np  # noqa: E402
from serin.runtime import feedback as fb  # noqa: E402
from serin.runtime.model import Task  # noqa: E402

SERIN = str(Path(sys.executable).parent / "serin")
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    def __init__(self, model_dir: Path, state: Path, log: Path, address: bool) -> None:
        self.port = free_port()
        env = {**os.environ, "SERIN_FEEDBACK_KEY": "bench-key", "SERIN_FEEDBACK_TOKEN": TOKEN}
        if address:
            env["SERIN_POD_IP"] = "127.0.0.1"
        else:
            env.pop("SERIN_POD_IP", None)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [SERIN, "serve", "--model-dir", str(model_dir), "--name", "m", "--port", str(self.port),
                 "--host", "127.0.0.1", "--state-dir", str(state), "--feedback-rate", "0", "--log-level", "warning"],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90
        while True:
            try:
                if self.request("GET", "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"replica did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)

    def request(self, method: str, path: str, body: object = None,
                conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
        own = conn is None
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path, body=None if body is None else json.dumps(body),
                      headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            resp = c.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                c.close()

    def answers(self, n: int) -> list[tuple[str, list[int]]]:
        rows = np.random.default_rng(self.port).normal(size=(n, 4)).astype(np.float32)
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        for row in rows:
            status, body = self.request("POST", "/v2/models/m/infer", {"inputs": [
                {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row.tolist()}]}, conn)
            assert status == 200, body
            answer = json.loads(body)
            out.append((answer["id"], next(o for o in answer["outputs"] if o["name"] == "label")["data"]))
        conn.close()
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def seconds_per_feedback(to: Replica, batch: list[tuple[str, list[int]]]) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", to.port, timeout=30)
    t = time.perf_counter()
    for token, truth in batch:
        status, body = to.request("POST", "/v2/models/m/feedback", {"id": token, "truth": truth}, conn)
        assert status == 200, body
    elapsed = time.perf_counter() - t
    conn.close()
    return elapsed / len(batch)


def issue_cost() -> tuple[float, float]:
    task = Task(kind="classification", output="label", classes=("0", "1"))
    results = {"label": np.array([1]), "probabilities": np.array([[0.2, 0.8]])}
    plain = fb.PredictionIds(fb.key_from("k"), "m", "r1", task, "probabilities")
    named = fb.PredictionIds(fb.key_from("k"), "m", "r1", task, "probabilities",
                             fb.Issuer("10.244.0.17", 8080, b"12345678"))
    n = 50_000
    times = {"plain": [], "named": []}  # type: dict[str, list[float]]
    for _ in range(5):
        for key, ids in (("plain", plain), ("named", named)):
            times[key].append(timeit.timeit(lambda ids=ids: ids.issue(1, results), number=n) / n)
    return statistics.median(times["plain"]), statistics.median(times["named"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feedback", type=int, default=1000, help="feedback per round and variant")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = mf.numeric_classifier(tmp / "model")
        a = Replica(model, tmp / "a", tmp / "a.log", address=True)
        b = Replica(model, tmp / "b", tmp / "b.log", address=True)
        c = Replica(model, tmp / "c", tmp / "c.log", address=False)
        try:
            results: dict[str, list[float]] = {"issuer": [], "forwarded": [], "no issuer": []}
            for r in range(args.rounds):
                batches = {"issuer": (a, a.answers(args.feedback)), "forwarded": (b, a.answers(args.feedback)),
                           "no issuer": (c, c.answers(args.feedback))}
                order = list(batches) if r % 2 == 0 else list(reversed(batches))
                for key in order:
                    to, batch = batches[key]
                    results[key].append(seconds_per_feedback(to, batch))
        finally:
            for replica in (a, b, c):
                replica.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    plain, named = issue_cost()
    print(f"feedback over HTTP (keep-alive, one client), median of {args.rounds} rounds of {args.feedback}:")
    for key, value in med.items():
        print(f"  {key:>10}: {value * 1e6:8.1f} us")
    print(f"  ratio forwarded / issuer:  {med['forwarded'] / med['issuer']:.2f}")
    print(f"  ratio issuer / no issuer:  {med['issuer'] / med['no issuer']:.2f}")
    print(f"issuing a one-row id: without an issuer {plain * 1e6:.2f} us, with {named * 1e6:.2f} us "
          f"(ratio {named / plain:.2f})")


if __name__ == "__main__":
    main()
