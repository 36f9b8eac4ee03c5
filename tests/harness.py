"""Running the real operator (as a process, so tests can kill it) against the real apiserver,
the KServe stand-in and a real Prometheus, with real model artifacts converted by the real
converters."""

from __future__ import annotations

import atexit
import contextlib
import http.server
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from serin.local.controlplane import ControlPlane
from serin.local.demo_models import VersionFiles
from serin.local.loadgen import Answer
from serin.local.prometheus import Prometheus
from serin.local.stack import operator_argv, standin_argv

FAST_ROLLOUT: dict[str, Any] = {
    "steps": [{"weight": 10, "pause": "2s"}, {"weight": 50, "pause": "2s"}],
    "progressDeadline": "60s",
    "analysis": {"interval": "1s", "failureLimit": 2, "inconclusiveLimit": 2,
                 "metrics": [{"name": "score", "query": "vector(1)", "min": 0.5}]},
}



def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120.0, every: float = 0.5) -> Any:
    """Polls `probe` until it returns something truthy, and returns that; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class Artifacts:
    good_v1: Path
    good_v2: Path
    corrupt: Path
    sample: Path


def make_artifacts(directory: Path) -> Artifacts:
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, c in (("v1", 1.0), ("v2", 0.1)):
        path = directory / f"model-{name}.joblib"
        joblib.dump(LogisticRegression(C=c).fit(x, y), path)
        paths[name] = path
    corrupt = directory / "model-corrupt.joblib"
    corrupt.write_bytes(paths["v1"].read_bytes()[:200])  # truncated: not loadable
    sample = directory / "sample.csv"
    pd.DataFrame(x[:200], columns=[f"f{i}" for i in range(4)]).to_csv(sample, index=False)
    return Artifacts(paths["v1"], paths["v2"], corrupt, sample)


class OperatorProcess:
    """`serin operator` as a real process: for one namespace (or all, namespace=None), as the
    cluster admin or as the identity in `kubeconfig` (e.g. the Helm chart's ServiceAccount)."""

    def __init__(self, cp: ControlPlane, namespace: str | None, prometheus_url: str, store: Path | str, log: Path,
                 kubeconfig: Path | None = None, env: dict[str, str] | None = None, metrics_port: int = 0) -> None:
        self.cp, self.namespace, self.prometheus_url, self.store, self.log = cp, namespace, prometheus_url, store, log
        self.kubeconfig = kubeconfig or cp.kubeconfig
        self.env = env or {}
        self.metrics_port = metrics_port  # 0: no metrics endpoint
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, failpoint: str = "") -> OperatorProcess:
        env = os.environ | {"KUBECONFIG": str(self.kubeconfig), "SERIN_TICK_SECONDS": "0.5",
                            "SERIN_FAILPOINT": failpoint} | self.env
        with self.log.open("ab") as out:
            out.write(f"\n=== start failpoint={failpoint!r} ===\n".encode())
            # Conversions as subprocesses, unless this operator was given SERIN_EXECUTOR (job).
            executor = self.env.get("SERIN_EXECUTOR", "local")
            self.proc = subprocess.Popen(operator_argv(self.prometheus_url, self.store, self.namespace,
                                                       metrics_port=self.metrics_port, executor=executor),
                                         env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"operator did not exit within {timeout}s\n{self.tail()}") from None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Cluster:
    """What one test needs to drive Models in its namespace."""

    cp: ControlPlane
    namespace: str
    artifacts: Artifacts
    operator: OperatorProcess
    name: str = "fraud"
    timeline: list[dict[str, Any]] = field(default_factory=list)
    # Every canaryTrafficPercent the InferenceService had, from a watch (kubectl get -w): the
    # operator moves through a step in milliseconds when the serving layer settles at once, which
    # polling would miss.
    weights: list[int] = field(default_factory=list)
    standin_log: Path | None = None  # the KServe stand-in's log, shown when a wait times out
    _watch: subprocess.Popen[str] | None = None

    def apply(self, uri: Path | str, rollout: dict[str, Any] | None = None, conversion: dict[str, Any] | None = None,
              notify: dict[str, Any] | None = None, **source: Any) -> None:
        body: dict[str, Any] = {
            "apiVersion": "serin.dev/v1alpha1", "kind": "Model",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"source": {"uri": uri if isinstance(uri, str) else uri.as_uri(), "sampleUri": self.artifacts.sample.as_uri()} | source,
                     "rollout": rollout or FAST_ROLLOUT},
        }
        if conversion:
            body["spec"]["conversion"] = conversion
        if notify:
            body["spec"]["notify"] = notify
        self.cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))
        self.watch_weights()

    def patch(self, patch: dict[str, Any]) -> None:
        self.cp.kubectl("patch", "model", self.name, "-n", self.namespace, "--type=merge", "-p", json.dumps(patch))

    def model(self) -> dict[str, Any]:
        return json.loads(self.cp.kubectl("get", "model", self.name, "-n", self.namespace, "-o", "json").stdout)

    def isvc(self) -> dict[str, Any] | None:
        out = self.cp.kubectl("get", "inferenceservice", self.name, "-n", self.namespace, "-o", "json", check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        items = json.loads(self.cp.kubectl("get", "events", "-n", self.namespace, "-o", "json").stdout)["items"]
        return [e for e in items if e["involvedObject"].get("kind") == "Model"
                and (reason is None or e["reason"] == reason)]

    def wait(self, what: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120) -> dict[str, Any]:
        """Polls the Model (recording the canary weights seen on the InferenceService) until
        `predicate(model)` holds."""
        deadline = time.monotonic() + timeout
        model: dict[str, Any] = {}
        while time.monotonic() < deadline:
            model = self.model()
            isvc = self.isvc()
            if isvc:
                pred = isvc["spec"]["predictor"]
                point = {"phase": model.get("status", {}).get("phase"),
                         "canaryTrafficPercent": pred.get("canaryTrafficPercent"),
                         "storageUri": pred["model"]["storageUri"]}
                if not self.timeline or self.timeline[-1] != point:
                    self.timeline.append(point)
            if predicate(model):
                return model
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}\n{self.diagnosis(model)}")

    def diagnosis(self, model: dict[str, Any]) -> str:
        """What a person needs to tell which side is stuck: the Model's status, the
        InferenceService as the apiserver holds it (spec and KServe-shaped status), the timeline
        this test saw, the operator's log and the stand-in's."""
        # The InferenceService and the timeline first, one line each: a log cut short (CI keeps a
        # part) still shows which side is stuck.
        isvc = self.isvc() or {}
        pred = (isvc.get("spec") or {}).get("predictor") or {}
        served = {"resourceVersion": (isvc.get("metadata") or {}).get("resourceVersion"),
                  "canaryTrafficPercent": pred.get("canaryTrafficPercent"),
                  "storageUri": (pred.get("model") or {}).get("storageUri"),
                  "predictor status": ((isvc.get("status") or {}).get("components") or {}).get("predictor"),
                  "conditions": [(c.get("type"), c.get("status"), c.get("reason"))
                                 for c in (isvc.get("status") or {}).get("conditions") or []]}
        model_status = dict(model.get("status") or {})
        brief = {k: model_status.pop(k) for k in ("phase", "message", "canary", "waiting", "serving")
                 if k in model_status}
        text = (f"inferenceservice: {json.dumps(served)}\ntimeline: {self.timeline[-12:]}\n"
                f"status: {json.dumps(brief)}\nrest of status: {json.dumps(model_status)[:3000]}\n"
                f"operator log:\n{self.operator.tail()}")
        if self.standin_log is not None and self.standin_log.exists():
            lines = self.standin_log.read_text(errors="replace").splitlines()[-40:]
            text += "\nKServe stand-in log:\n" + "\n".join(lines)
        return text

    def wait_phase(self, phase: str, generation: int | None = None, timeout: float = 120) -> dict[str, Any]:
        def ok(m: dict[str, Any]) -> bool:
            s = m.get("status") or {}
            return s.get("phase") == phase and (generation is None or s.get("observedGeneration") == generation)
        return self.wait(f"phase {phase}", ok, timeout)

    def watch_weights(self) -> None:
        """Starts recording the InferenceService's canary weights (once per Cluster)."""
        if self._watch is not None:
            return
        argv = [str(self.cp.bin_dir / "kubectl"), "--kubeconfig", str(self.cp.kubeconfig), "get",
                "inferenceservices", "-n", self.namespace, "--field-selector", f"metadata.name={self.name}",
                "--watch", "-o", 'jsonpath={.spec.predictor.canaryTrafficPercent}{"\\n"}']
        self._watch = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        atexit.register(self.stop_watch)

        def record(out: Any) -> None:
            for line in out:
                if line.strip().isdigit():
                    self.weights.append(int(line))
        threading.Thread(target=record, args=(self._watch.stdout,), daemon=True).start()

    def stop_watch(self) -> None:
        if self._watch is not None and self._watch.poll() is None:
            self._watch.kill()
            self._watch.wait(5)

    def weights_seen(self) -> list[int]:
        time.sleep(0.5)  # let the watch deliver what the last read already showed
        source = self.weights if self._watch is not None else [
            p["canaryTrafficPercent"] for p in self.timeline if p["canaryTrafficPercent"] is not None]
        out: list[int] = []
        for w in source:
            if not out or out[-1] != w:
                out.append(w)
        return out


@contextlib.contextmanager
def standin(cp: ControlPlane, namespace: str, workdir: Path, data_plane: bool,
            file_sd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """The KServe stand-in for one namespace, as a process (stopped with its runtimes afterwards)."""
    log = workdir / "standin.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(standin_argv(cp.kubeconfig, workdir / "standin", file_sd, namespace, data_plane),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(0.5)
        assert proc.poll() is None, f"KServe stand-in exited:\n{log.read_text()}"
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Versions:
    v1: VersionFiles
    v2: VersionFiles
    erroring: VersionFiles
    slow: VersionFiles
    drifted: VersionFiles
    less_accurate: VersionFiles



@dataclass
class Platform:
    cluster: Cluster
    prometheus: Prometheus
    standin: subprocess.Popen[bytes]


def from_first_served(answers: list[Answer]) -> list[Answer]:
    """The answers from the Gateway's first 200 on. Right after a first version is Promoted (its
    HTTPRoute Accepted by Traefik at its generation) Traefik can still answer 503 for a few hundred
    ms: the route's status is written before the router has it (docs/serving.md). Load started then
    measures that, not the rollout under test."""
    first = next((i for i, a in enumerate(answers) if a.status == 200), len(answers))
    return answers[first:]


@dataclass
class Receiver:
    """A webhook on loopback: answers 503 while `down`, 404 while `refusing`, else 200; records
    every request."""

    down: bool = False
    refusing: bool = False  # answers 404: a sink that will never take it (given up at once)
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each request
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body, code in self.requests if code == 200]

    def reasons(self) -> list[str]:
        return [e["data"]["reason"] for e in self.delivered()]


@contextlib.contextmanager
def webhook_receiver(host: str = "127.0.0.1") -> Iterator[Receiver]:
    """A Receiver serving on `host` (loopback by default) for the block's duration."""
    r = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the stdlib's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            code = 503 if r.down else 404 if r.refusing else 200
            with r.lock:
                r.requests.append((dict(self.headers), body, code))
                r.arrivals.append(time.monotonic())
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    r.url = f"http://{host}:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield r
    server.shutdown()
    server.server_close()
