"""Process model: one uvicorn server per worker process, supervised when there are several.

Each worker runs onnxruntime with one intra-op thread: fast runs inline on the event loop, runs
that lately took longer than app.INLINE_RUN_BUDGET_S on one inference thread, so /metrics and the
probes still answer while a slow model has a queue (app.py). Runs stay serial per worker either
way: throughput scales with processes, one per core. Workers
bind the port with SO_REUSEPORT so the kernel spreads connections across them; the supervisor
holds a bound, non-listening socket on the port so a port taken by someone else fails at once.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serin.runtime.app import App
    from serin.runtime.capture import Capture, CaptureSettings
    from serin.runtime.feedback import Feedback
    from serin.runtime.model import OnnxModel

log = logging.getLogger("serin.runtime")


@dataclass(frozen=True)
class ServeConfig:
    model_dir: Path
    name: str
    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    revision: str = "local"
    monitoring: bool = True
    max_body: int = 8 * 1024 * 1024
    drift_window: int = 2000
    drift_min_rows: int = 500
    drift_interval: float = 2.0
    allow_nan: bool = False
    log_level: str = "INFO"
    direct_path: bool = True  # small inference requests answered in the protocol (direct.py)
    batch_rows: int | None = None  # None: batching.DEFAULT_BATCH_ROWS if the profile allows it
    grpc_port: int | None = None  # V2 over gRPC too (grpc_v2.py)
    # Feedback (feedback.py): the key prediction ids are signed with (shared by every replica of the
    # Model), where the ids that got their truth are kept, and for how long truth is taken.
    feedback_key: str = ""
    state_dir: Path | None = None
    feedback_max_age: float = 7 * 24 * 3600.0
    feedback_max_ids: int = 1_000_000  # feedback.DEFAULT_MAX_IDS
    feedback_rate: float = 50.0  # feedback.DEFAULT_RATE, per worker; 0: no limit
    feedback_token: str = ""  # who may send truth (feedback.Senders): holders of this token ...
    feedback_senders_anyone: bool = False  # ... or anyone; with neither, feedback is refused
    # This replica's Pod address ($SERIN_POD_IP, from the downward API): ids name it, and truth for
    # them is forwarded here by the other replicas, so each prediction's truth counts once.
    pod_ip: str = ""
    feedback_gone_after: float = 60.0  # feedback.GONE_AFTER_S
    model_sha256: str = ""  # model.onnx must have this digest ("" : not checked)
    # Payload capture (capture.py): a share of the answers and the truth sent back, written in
    # batches to object storage or a directory. Each worker captures its own requests.
    capture: CaptureSettings | None = None
    # When the runtime started: set once where the config is made (the first process), so every
    # worker (spawned with a copy) exports the same instant (serin_start_time_seconds).
    started_at: float = field(default_factory=time.time)


def _bind(host: str, port: int, reuse_port: bool, listen: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
        sock.set_inheritable(True)
    return sock


def build_app(cfg: ServeConfig) -> App:
    from serin.runtime.app import App
    from serin.runtime.batching import DEFAULT_BATCH_ROWS
    from serin.runtime.model import OnnxModel

    model = OnnxModel(cfg.name, cfg.model_dir, allow_nan=cfg.allow_nan, sha256=cfg.model_sha256)
    batch_rows = cfg.batch_rows
    if batch_rows is None:
        proven = model.profile is not None and model.profile.rows_independent
        batch_rows = DEFAULT_BATCH_ROWS if proven else 0
    if batch_rows > 1 and not cfg.direct_path:
        log.warning("batching needs the direct path: off")
    log.info("loaded %s: inputs %s, outputs %s, task %s, batching %s", cfg.model_dir,
             [s.as_metadata() for s in model.inputs.values()], model.output_names, model.task.kind,
             f"up to {batch_rows} rows" if batch_rows > 1 else "off")
    grpc = (cfg.host, cfg.grpc_port, cfg.workers > 1) if cfg.grpc_port else None
    capture = build_capture(cfg)
    if not cfg.monitoring:
        return App(model, max_body=cfg.max_body, revision=cfg.revision, batch_rows=batch_rows,
                   grpc=grpc, capture=capture)

    from serin.runtime.drift import Binner, Drift
    from serin.runtime.monitoring import Monitor

    drift = None
    if model.profile is not None:
        binner = Binner(model.profile.features, model.inputs)
        if binner.features:
            drift = Drift(
                binner, window=cfg.drift_window, workers=cfg.workers,
                min_rows=cfg.drift_min_rows, state_dir=Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]),
                reference_rows=model.profile.rows,
            )
    from serin.runtime.feedback import probability_output

    monitor = Monitor(cfg.name, cfg.revision, model.task, drift, runs=lambda: model.runs,
                      probability_output=probability_output(model.task, model.outputs),
                      reference=model.profile.prediction if model.profile is not None else None,
                      started_at=cfg.started_at)
    return App(
        model, monitor=monitor, drift=drift, metrics=monitor.exposition,
        max_body=cfg.max_body, drift_interval=cfg.drift_interval, revision=cfg.revision,
        batch_rows=batch_rows, grpc=grpc, feedback=build_feedback(cfg, model), capture=capture,
    )


def build_capture(cfg: ServeConfig) -> Capture | None:
    """The worker's capture, writing from a thread of its own (counted when monitoring is on)."""
    if cfg.capture is None:
        return None
    from serin.runtime.capture import Capture, sink_for

    metrics = None
    if cfg.monitoring:
        from serin.runtime.monitoring import CaptureMetrics

        metrics = CaptureMetrics(cfg.name, cfg.revision)
    log.info("capturing %.3g of the answers and the truth sent back to %s", cfg.capture.share, cfg.capture.uri)
    return Capture(cfg.capture, sink_for(cfg.capture), metrics).start()


def build_feedback(cfg: ServeConfig, model: OnnxModel) -> Feedback | None:
    from serin.runtime import feedback as fb
    from serin.runtime.monitoring import FeedbackMetrics

    if not cfg.feedback_key or cfg.state_dir is None:
        return None
    store = fb.SeenStore(cfg.state_dir / "feedback-seen.sqlite", cfg.feedback_max_age, cfg.feedback_max_ids)
    address = fb.own_address(cfg.pod_ip, cfg.port)
    ids = fb.PredictionIds(fb.key_from(cfg.feedback_key), cfg.name, cfg.revision, model.task,
                           fb.probability_output(model.task, model.outputs),
                           fb.Issuer(address[0], address[1], store.identity) if address else None)
    senders = fb.Senders(cfg.feedback_token, cfg.feedback_senders_anyone, f"{cfg.name}-serin-feedback-sender")
    return fb.Feedback(ids, store, FeedbackMetrics(cfg.name, cfg.revision, model.task), cfg.feedback_max_age,
                       cfg.feedback_rate, senders, cfg.feedback_gone_after)


def run_worker(cfg: ServeConfig, sock: socket.socket | None = None) -> None:
    import uvicorn

    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(process)d %(name)s "
                        "%(levelname)s %(message)s")
    if sock is None:
        sock = _bind(cfg.host, cfg.port, reuse_port=True)
    from serin.runtime.direct import direct_protocol

    app = build_app(cfg)
    config = uvicorn.Config(
        app, loop="uvloop", http=direct_protocol(app) if cfg.direct_path else "httptools",
        lifespan="on", access_log=False, log_config=None, log_level="warning",
        # No X-Forwarded-* rewriting: nothing here reads the client address or scheme.
        proxy_headers=False,
        # Longer than typical proxy idle timeouts (Envoy/Istio), as KServe does.
        timeout_keep_alive=65,
    )
    log.info("worker %d serving %r on %s:%d (%s)", os.getpid(), cfg.name, cfg.host, cfg.port,
             "direct path for small inference requests" if not isinstance(config.http, str)
             else "every request through ASGI")
    uvicorn.Server(config).run(sockets=[sock])


def serve(cfg: ServeConfig) -> int:
    if cfg.workers <= 1:
        # uvicorn drains on SIGTERM, restores the handler it found, and raises the signal again.
        # With the default handler that kills the process before the CLI removes its metrics
        # directory; SystemExit unwinds through it and still exits with 143.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        run_worker(cfg, _bind(cfg.host, cfg.port, reuse_port=False))
        return 0
    return _supervise(cfg)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _supervise(cfg: ServeConfig) -> int:
    guard = _bind(cfg.host, cfg.port, reuse_port=True, listen=False)
    ctx = mp.get_context("spawn")  # no fork: onnxruntime and uvloop state must not be shared
    procs: dict[int, mp.process.BaseProcess] = {}
    started: dict[int, float] = {}
    fast_failures = 0
    stopping = False

    def start(slot: int) -> None:
        p = ctx.Process(target=run_worker, args=(cfg,), name=f"serin-worker-{slot}", daemon=False)
        p.start()
        procs[slot], started[slot] = p, time.monotonic()

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)  # uvicorn drains in-flight requests on SIGTERM

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for slot in range(cfg.workers):
        start(slot)
    try:
        while procs:
            sentinels = {p.sentinel: slot for slot, p in procs.items()}
            for ready in multiprocessing.connection.wait(list(sentinels), timeout=1.0):
                slot = sentinels[ready]  # type: ignore[index]
                p = procs.pop(slot)
                p.join()
                _forget(p.pid)
                if stopping:
                    continue
                lived = time.monotonic() - started[slot]
                fast_failures = fast_failures + 1 if lived < 10 else 0
                log.error("worker %s exited with %s after %.1fs", p.pid, p.exitcode, lived)
                if fast_failures >= 3:
                    log.error("workers keep failing at start: giving up")
                    stop(signal.SIGTERM, None)
                    return 1
                start(slot)
    finally:
        guard.close()
    return 0


def _forget(pid: int | None) -> None:
    """Drop a dead worker's drift share; its counter files stay (counters must not go back)."""
    state = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if pid is not None and state:
        Path(state, f"drift-{pid}.bin").unlink(missing_ok=True)


if __name__ == "__main__":  # pragma: no cover - spawn children import this module by name
    sys.exit(0)
