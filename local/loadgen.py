"""A steady load of real inference requests (KServe V2) at an InferenceService's URL, recording
every answer: when, which revision served it (the stand-in router's header, else the runtime's
own), status, latency.

Bounded by design: a fixed request rate, a hard stop after `max_seconds`, targets on this machine
only: loopback, or a Service address of the local cluster (its node lives in a network namespace
here).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import aiohttp
import numpy as np
from serin.local.demo_models import production_rows, true_labels

REVISION_HEADER = "Serin-Standin-Revision"
RUNTIME_REVISION_HEADER = "serin-revision"  # runtime/app.py
POOL_ROWS, POOL_SEED = 2000, 42  # the production-like rows requests are cut from
LOCAL_CLUSTER_NETWORKS = (ipaddress.ip_network("10.0.0.0/24"),)  # local/controlplane.py SERVICE_CIDR


@dataclass(frozen=True)
class Answer:
    t: float  # seconds since the generator started
    status: int  # HTTP status, or 0 when the connection failed
    revision: str
    latency: float


@dataclass
class LoadGenerator:
    url: str
    model: str
    rate: float = 40.0  # requests per second
    rows: int = 20  # rows per request
    shift: float = 0.0  # added to features 0 and 1: traffic from another distribution
    max_seconds: float = 1800.0
    host: str = ""  # a Host header (a Gateway routes by it)
    # False: a new connection per request. A Kubernetes Service balances connections, not
    # requests, so a keep-alive client stays on the Pods it first reached.
    keep_alive: bool = True
    # The share of answered requests whose ground truth (demo_models.true_labels) is sent to the
    # feedback endpoint, `feedback_delay` seconds after the answer: labels that arrive later.
    feedback: float = 0.0
    feedback_delay: float = 0.0
    feedback_token: str = ""  # the Model's sender token (its Secret {model}-serin-feedback-sender, key "token")
    answers: list[Answer] = field(default_factory=list)
    feedback_answers: list[Answer] = field(default_factory=list)
    told_ids: list[str] = field(default_factory=list)  # the prediction ids truth was sent for
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _t0: float = 0.0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _chosen: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))  # feedback's requests

    def __post_init__(self) -> None:
        host = urlparse(self.url).hostname or ""
        if not (host == "localhost" or host.startswith("127.") or host == "::1" or _in_local_cluster(host)):
            raise ValueError(f"load is only ever sent to loopback or local cluster addresses, not {host!r}")

    def start(self) -> LoadGenerator:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="loadgen", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(30)

    def now(self) -> float:
        return time.monotonic() - self._t0

    def set_shift(self, shift: float) -> None:
        self.shift = shift

    def window(self, since: float, until: float | None = None) -> list[Answer]:
        until = until if until is not None else float("inf")
        return [a for a in list(self.answers) if since <= a.t < until]

    def pool(self) -> np.ndarray:
        """The rows requests are cut from, `rows` at a time, in order, over and over."""
        return production_rows(POOL_ROWS, seed=POOL_SEED)[: POOL_ROWS - POOL_ROWS % self.rows]

    async def _run(self) -> None:
        pool = self.pool()
        body_rows = len(pool)
        timeout = aiohttp.ClientTimeout(total=10)
        headers = {"Host": self.host} if self.host else {}
        connector = aiohttp.TCPConnector(force_close=not self.keep_alive)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers, connector=connector) as session:
            tasks = self._tasks
            i = 0
            while not self._stop.is_set() and self.now() < self.max_seconds:
                start = (i * self.rows) % body_rows
                rows = pool[start:start + self.rows].copy()
                rows[:, :2] += np.float32(self.shift)
                task = asyncio.create_task(self._one(session, rows))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
                # Fixed schedule (not "after the last answer"): a slow revision does not slow the load.
                delay = self._t0 + i / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if tasks:
                await asyncio.wait(tasks, timeout=10)

    async def _one(self, session: aiohttp.ClientSession, rows: np.ndarray) -> None:
        payload = {"inputs": [{"name": "input", "shape": list(rows.shape), "datatype": "FP32",
                               "data": rows.ravel().tolist()}]}
        sent = time.monotonic()
        body = b""
        try:
            async with session.post(f"{self.url}/v2/models/{self.model}/infer", json=payload) as resp:
                body = await resp.read()
                revision = resp.headers.get(REVISION_HEADER) or resp.headers.get(RUNTIME_REVISION_HEADER) or ""
                answer = Answer(sent - self._t0, resp.status, revision, time.monotonic() - sent)
        except (TimeoutError, aiohttp.ClientError):
            answer = Answer(sent - self._t0, 0, "", time.monotonic() - sent)
        self.answers.append(answer)
        if answer.status == 200 and self.feedback > 0 and self._chosen.random() < self.feedback:
            task = asyncio.create_task(self._tell(session, json.loads(body)["id"], rows, answer.revision))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _tell(self, session: aiohttp.ClientSession, prediction_id: str, rows: np.ndarray, revision: str) -> None:
        """The ground truth of an answered request, sent to the feedback endpoint (any replica)."""
        if self.feedback_delay > 0:
            await asyncio.sleep(self.feedback_delay)
        truth = true_labels(rows).tolist()  # the rows as sent: the world they came from
        self.told_ids.append(prediction_id)
        sent = time.monotonic()
        status = 0
        # As a labelling pipeline does: a 503 (the replica that answered is restarting or gone, the
        # store full) is retried, here for up to 90 s: a gone replica's truth is taken elsewhere
        # after 60 s (docs/runtime.md#feedback).
        while True:
            try:
                async with session.post(f"{self.url}/v2/models/{self.model}/feedback",
                                        json={"id": prediction_id, "truth": truth},
                                        headers={"Authorization": f"Bearer {self.feedback_token}"}) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError):
                status = 0
            if status != 503 or time.monotonic() - sent > 90:
                break
            if self._stop.is_set():  # the run ended while this truth waited: nothing was told
                return
            await asyncio.sleep(2)
        self.feedback_answers.append(Answer(sent - self._t0, status, revision, time.monotonic() - sent))


def sender_token(kubectl: Callable[..., Any], model: str, namespace: str) -> str:
    """The Model's feedback sender token, read as its labelling pipeline would: the key "token" of
    the Secret {model}-serin-feedback-sender the operator made (`kubectl` runs kubectl with its
    arguments and returns the CompletedProcess)."""
    out = kubectl("get", "secret", f"{model}-serin-feedback-sender", "-n", namespace, "-o",
                  "jsonpath={.data.token}")
    return base64.b64decode(out.stdout).decode()


def _in_local_cluster(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in LOCAL_CLUSTER_NETWORKS)
