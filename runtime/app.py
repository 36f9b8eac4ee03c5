"""A lean ASGI app speaking KServe V1 and V2 (Open Inference Protocol) over HTTP.

Why not the kserve SDK's FastAPI app: measured in bench/runtime_bench.py, routing, pydantic
models and per-request bookkeeping cost several times the onnxruntime call for single-row
requests. This app keeps the protocol contract (paths, JSON shapes, status codes, `{"error":
...}` bodies) and does nothing else on the request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from serin.runtime.decode import RequestError, decode_v1, decode_v2, parse_json, requested_outputs
from serin.runtime.drift import Drift
from serin.runtime.model import OnnxModel
from serin.runtime.periodic import every

log = logging.getLogger("serin.runtime")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
DEFAULT_MAX_BODY = 8 * 1024 * 1024
# A model run this long would hold the event loop visibly: /metrics, health probes and the metrics
# flush would queue behind it, and a model slower than its request rate would stop being scraped
# (analysis reads "no data" and pauses) exactly when its latency must be judged. Runs that have
# lately taken longer go to one inference thread (onnxruntime releases the GIL); fast ones stay
# inline, where a thread hand-off would cost more than the run.
INLINE_RUN_BUDGET_S = 0.002


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})


REVISION_HEADER = b"serin-revision"


class App:
    def __init__(
        self,
        model: OnnxModel,
        *,
        monitor: Any = None,  # serin.runtime.monitoring.Monitor, imported only when enabled
        drift: Drift | None = None,
        metrics: Callable[[], bytes] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        drift_interval: float = 2.0,
        revision: str = "",
    ) -> None:
        self.model = model
        # Every answer names the revision that gave it: which version served a request is then
        # visible behind any router (a Service over several predictors, a Gateway's weights).
        self._headers = [(REVISION_HEADER, revision.encode())] if revision else []
        self.monitor = monitor
        self.drift = drift
        self.metrics = metrics
        self.max_body = max_body
        self.drift_interval = drift_interval
        self._tasks: list[asyncio.Task[None]] = []
        # One thread: runs stay serial per worker, as inline; parallelism comes from workers.
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serin-inference")
        name = model.name
        ready = orjson.dumps({"name": name, "ready": True})
        self._static: dict[str, bytes] = {
            "/": orjson.dumps({"status": "alive"}),
            "/v2/health/live": orjson.dumps({"live": True}),
            "/v2/health/ready": orjson.dumps({"ready": True}),
            "/v2": orjson.dumps({"name": "serin-onnx", "version": "1", "extensions": []}),
            "/v1/models": orjson.dumps({"models": [name]}),
            f"/v1/models/{name}": ready,
            f"/v2/models/{name}": orjson.dumps(model.v2_metadata()),
            f"/v2/models/{name}/ready": ready,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.monitor is not None:
                    flush = every(self.monitor.flush_interval, self.monitor.flush, "metrics flush")
                    self._tasks.append(asyncio.create_task(flush))
                if self.drift is not None:
                    update = every(self.drift_interval, self.drift.tick, "drift update")
                    self._tasks.append(asyncio.create_task(update))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in self._tasks:
                    task.cancel()
                if self.monitor is not None:
                    self.monitor.flush()  # uvicorn has drained in-flight requests by now
                if self.drift is not None:
                    self.drift.close()
                self._inference.shutdown(wait=False)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, send: Send, status: int, body: bytes, ctype: bytes = JSON) -> None:
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *self._headers],
        })
        await send({"type": "http.response.body", "body": body})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST":
            protocol, name = self._inference_route(path)
            if protocol is not None:
                await self._infer(protocol, name, scope, receive, send)
                return
        elif method in ("GET", "HEAD"):
            static = self._static.get(path.rstrip("/") or "/")
            if static is not None:
                await self._respond(send, 200, static)
                return
            if path == "/metrics":
                if self.metrics is None:
                    await self._respond(send, 404, _error("monitoring is disabled"))
                else:
                    await self._respond(send, 200, self.metrics(), PROMETHEUS)
                return
        status, message = self._miss(method, path)
        await self._respond(send, status, _error(message))

    def _inference_route(self, path: str) -> tuple[str | None, str]:
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            return "v1", path[len("/v1/models/") : -len(":predict")]
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            parts = path[len("/v2/models/") : -len("/infer")].split("/")
            # /v2/models/{name}/versions/{version}/infer: one version is served per process.
            if len(parts) == 1 or (len(parts) == 3 and parts[1] == "versions"):
                return "v2", parts[0]
        return None, ""

    def _miss(self, method: str, path: str) -> tuple[int, str]:
        for prefix in ("/v1/models/", "/v2/models/"):
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/")[0].split(":")[0]
                if name != self.model.name:
                    return 404, f"model {name!r} not found"
        known = (
            path in self._static
            or path == "/metrics"
            or self._inference_route(path)[0] is not None
        )
        if known:
            return 405, f"method {method} not allowed on {path}"
        return 404, f"not found: {path}"

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length" and int(value) > self.max_body:
                raise RequestError(f"request body exceeds {self.max_body} bytes", 413)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionResetError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise RequestError(f"request body exceeds {self.max_body} bytes", 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _run(self, model: OnnxModel, feeds: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
        if model.recent_run_seconds < INLINE_RUN_BUDGET_S:
            return model.run(feeds, names)
        return await asyncio.get_running_loop().run_in_executor(self._inference, model.run, feeds, names)

    async def _infer(
        self, protocol: str, name: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        start = time.perf_counter()
        model = self.model
        results = None
        feeds: dict[str, Any] = {}
        rows = 0
        try:
            if name != model.name:
                raise RequestError(f"model {name!r} not found", 404)
            payload = parse_json(await self._body(scope, receive))
            if protocol == "v2":
                feeds, rows = decode_v2(payload, model.inputs)
                results = await self._run(model, feeds, requested_outputs(payload, model.output_names))
                body = model.v2_response(results, payload.get("id"))
            else:
                feeds, rows = decode_v1(payload, model.inputs)
                results = await self._run(model, feeds, None)
                body = model.v1_response(results)
            status = 200
        except RequestError as exc:
            status, body, results = exc.status, _error(exc.message), None
        except ConnectionResetError:
            return
        except Exception as exc:  # a server bug: answer 500, keep the worker alive
            log.exception("inference failed")
            status, body, results = 500, _error(f"internal error: {type(exc).__name__}"), None
        await self._respond(send, status, body)
        if self.monitor is not None:
            self.monitor.observe(protocol, status, time.perf_counter() - start, rows, results, feeds)
