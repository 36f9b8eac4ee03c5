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
from dataclasses import dataclass
from typing import Any

import orjson
from serin.runtime import batching
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


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The value of header `name` (lowercase), the first if repeated."""
    return next((value for key, value in scope["headers"] if key == name), None)


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
        batch_rows: int = 0,
        grpc: tuple[str, int, bool] | None = None,
        feedback: Any = None,  # serin.runtime.feedback.Feedback: prediction ids and the endpoint
        capture: Any = None,  # serin.runtime.capture.Capture: a share of the answers, and their truth
    ) -> None:
        self.model = model
        self.feedback = feedback
        self.capture = capture
        self._ids = feedback.ids if feedback is not None and feedback.ids.enabled else None
        # Feedback touches SQLite (feedback.SeenStore), whose lock another worker may hold: off the loop.
        self._feedback_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serin-feedback")
        # Rows in one batched run of requests that arrive together (batching.py); 0 or 1: none.
        self.batch_rows = batch_rows
        if batch_rows > 1 and not model.has_batch_dimension:
            log.warning("batching off: the model declares a fixed first dimension")
            self.batch_rows = 0
        # Every answer names the revision that gave it: which version served a request is then
        # visible behind any router (a Service over several predictors, a Gateway's weights).
        self._headers = [(REVISION_HEADER, revision.encode())] if revision else []
        self.revision_header_line = b"%s: %s\r\n" % self._headers[0] if revision else b""
        self.monitor = monitor
        self.drift = drift
        self.metrics = metrics
        self.max_body = max_body
        self.drift_interval = drift_interval
        self._tasks: list[asyncio.Task[None]] = []
        # One thread: runs stay serial per worker, as inline; parallelism comes from workers.
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="serin-inference")
        self._queue = _InferenceQueue(self)
        # (host, port, shared by several workers): V2 over gRPC too, from lifespan startup.
        self.grpc_address = grpc
        self._grpc: Any = None
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
                if self.grpc_address is not None:
                    from serin.runtime import grpc_v2

                    try:
                        host, port, shared = self.grpc_address
                        self._grpc = await grpc_v2.start(self, host, port, self.max_body, shared)
                    except Exception as exc:  # a taken port: the worker must not half-start
                        await send({"type": "lifespan.startup.failed",
                                    "message": f"gRPC: {exc}"})
                        return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in self._tasks:
                    task.cancel()
                if self._grpc is not None:
                    await self._grpc.stop(5)  # in-flight calls get 5 s to finish
                if self.monitor is not None:
                    self.monitor.flush()  # uvicorn has drained in-flight requests by now
                if self.drift is not None:
                    self.drift.close()
                self._inference.shutdown(wait=False)
                self._feedback_thread.shutdown(wait=True)
                if self.feedback is not None:
                    self.feedback.close()
                if self.capture is not None:
                    # Off the loop: the last batch's write may take seconds (uvicorn has drained).
                    await asyncio.get_running_loop().run_in_executor(None, self.capture.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, send: Send, status: int, body: bytes, ctype: bytes = JSON,
                       extra: list[tuple[bytes, bytes]] | None = None) -> None:
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *self._headers,
                        *(extra or ())],
        })
        await send({"type": "http.response.body", "body": body})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST":
            protocol, name = self.inference_route(path)
            if protocol is not None:
                await self._infer(protocol, name, scope, receive, send)
                return
            feedback_of = self.feedback_route(path)
            if feedback_of is not None:
                await self._feedback(feedback_of, scope, receive, send)
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

    def inference_route(self, path: str) -> tuple[str | None, str]:
        """(protocol, model name) of an inference path, (None, "") for any other path."""
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            return "v1", path[len("/v1/models/") : -len(":predict")]
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            parts = path[len("/v2/models/") : -len("/infer")].split("/")
            # /v2/models/{name}/versions/{version}/infer: one version is served per process.
            if len(parts) == 1 or (len(parts) == 3 and parts[1] == "versions"):
                return "v2", parts[0]
        return None, ""

    def feedback_route(self, path: str) -> str | None:
        """The model name of a feedback path (V2 `/v2/models/{name}/feedback`, V1
        `/v1/models/{name}:feedback`), None for any other path."""
        if path.startswith("/v2/models/") and path.endswith("/feedback"):
            name = path[len("/v2/models/") : -len("/feedback")]
            return name if "/" not in name else None
        if path.startswith("/v1/models/") and path.endswith(":feedback"):
            return path[len("/v1/models/") : -len(":feedback")]
        return None

    async def _feedback(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        from serin.runtime.feedback import FORWARDED_ANSWER_HEADER, FORWARDED_HEADER, FeedbackError

        forwarded = _header(scope, FORWARDED_HEADER) is not None  # by another replica (feedback.Forwarder)
        nonce = None  # of a forwarded request that opened here: the answer carries its tag
        try:
            body = await self._body(scope, receive)
            if name != self.model.name:
                raise RequestError(f"model {name!r} not found", 404)
            if self.feedback is None or self._ids is None:
                raise RequestError("this model takes no feedback: "
                                   + ("monitoring is disabled" if self.feedback is None else
                                      "its task (classification or regression) is unknown"), 404)
            if forwarded:
                opened = self._ids.open_forwarded(body)
                if opened is None:
                    raise FeedbackError("forwarded feedback that does not open here: this replica did not issue "
                                        "the prediction, or is not this Model's", 421)
                nonce, body = opened
            else:
                self.feedback.senders.check(_header(scope, b"authorization"))
            payload = parse_json(body)
            route = "received" if forwarded else "here"
            if not forwarded:  # never forwarded twice
                issuer = self.feedback.issuer_to_ask(payload)
                if issuer is not None:  # another replica's: its store decides (feedback.Forwarder)
                    reply = await self.feedback.forwarder.send(issuer, f"/v2/models/{self.model.name}/feedback",
                                                               body, self._ids)
                    if reply is not None:  # the issuer's answer: it counts the truth and the request
                        if reply.status == 200:
                            self._routed("forwarded")
                        await self._respond(send, reply.status, reply.body)
                        self._answered(reply.status)
                        return
                    route = "issuer_gone"
            answer = await asyncio.get_running_loop().run_in_executor(
                self._feedback_thread, self.feedback.take, payload)
            self._routed(route)
            if self.capture is not None:  # taken: kept beside the captured prediction it names
                self.capture.offer_truth(payload["id"], payload["truth"], answer["revision"], answer["rows"])
            status, out = 200, orjson.dumps(answer)
        except ConnectionResetError:
            return
        except RequestError as exc:
            status, out = exc.status, _error(exc.message)
        except Exception as exc:
            log.error("feedback failed", exc_info=exc)
            status, out = 500, _error(f"internal error: {type(exc).__name__}")
        if nonce is not None and self._ids is not None:
            await self._respond(send, status, out,
                                extra=[(FORWARDED_ANSWER_HEADER, self._ids.answer_tag(nonce, status, out))])
        else:
            await self._respond(send, status, out)
        if not forwarded:  # a forwarded request is counted where the sender sent it
            self._answered(status)

    def _answered(self, status: int) -> None:
        if self.feedback is not None and self.feedback.metrics is not None:
            self.feedback.metrics.answered(status)

    def _routed(self, route: str) -> None:
        if self.feedback is not None and self.feedback.metrics is not None:
            self.feedback.metrics.routed(route)

    def _miss(self, method: str, path: str) -> tuple[int, str]:
        for prefix in ("/v1/models/", "/v2/models/"):
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/")[0].split(":")[0]
                if name != self.model.name:
                    return 404, f"model {name!r} not found"
        known = (
            path in self._static
            or path == "/metrics"
            or self.inference_route(path)[0] is not None
            or self.feedback_route(path) is not None
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

    # --- inference -------------------------------------------------------------------------
    def runs_inline(self) -> bool:
        """True while the model's recent runs fit INLINE_RUN_BUDGET_S: it may run on the loop."""
        return self.model.recent_run_seconds < INLINE_RUN_BUDGET_S

    def _decode(self, protocol: str, name: str, body: bytes) -> Request:
        if name != self.model.name:  # before parsing: another model's path is a 404, any body
            raise RequestError(f"model {name!r} not found", 404)
        return self.decode_payload(protocol, parse_json(body))

    def decode_payload(self, protocol: str, payload: Any) -> Request:
        """A parsed V1 or V2 payload (V2 also from gRPC, grpc_v2.py) for this model, as a
        validated request; the caller has checked the model's name."""
        model = self.model
        if protocol == "v2":
            feeds, rows = decode_v2(payload, model.inputs)
            return Request(feeds, rows, requested_outputs(payload, model.output_names), payload.get("id"))
        feeds, rows = decode_v1(payload, model.inputs)
        return Request(feeds, rows, None, None)

    def prediction_id(self, request: Request, results: dict[str, Any]) -> str | None:
        """The signed id feedback names this answer by (feedback.py), None when feedback is off or
        the answer is too large to carry one."""
        return self._ids.issue(request.rows, results) if self._ids is not None else None

    def _encode(self, protocol: str, request: Request, results: dict[str, Any]) -> Answer:
        """The 200 answer: its body, and the prediction id it carries (captured with it)."""
        if protocol == "grpc":  # grpc_v2.py builds its message from the results, and names the id
            return Answer(200, b"", request, results)
        pid = self.prediction_id(request, results)
        body = (self.model.v2_response(results, request.id, pid) if protocol == "v2"
                else self.model.v1_response(results, pid))
        return Answer(200, body, request, results, prediction_id=pid)

    def answer_inline(self, protocol: str, name: str, body: bytes) -> Answer:
        """The whole request on the calling thread: for the direct path (serin.runtime.direct),
        which calls it only while `runs_inline()`."""
        decoded = self.decode_inline(protocol, name, body)
        return decoded if isinstance(decoded, Answer) else self._answer_one(protocol, decoded)

    def decode_inline(self, protocol: str, name: str, body: bytes) -> Request | Answer:
        """The decoded request, or the error answer when it does not decode."""
        try:
            return self._decode(protocol, name, body)
        except Exception as exc:
            return failed(exc, None)

    def _answer_one(self, protocol: str, request: Request) -> Answer:
        try:
            results = self.model.run(request.feeds, request.outputs)
            return self._encode(protocol, request, results)
        except Exception as exc:
            return failed(exc, request)

    def answer_many(self, requests: list[tuple[str, Request]]) -> list[Answer]:
        """Decoded (protocol, request) pairs answered in order, consecutive ones that fit run as
        one batch (batching.py) while `batch_rows` > 1. Never raises."""
        answers: list[Answer] = []
        start = 0
        while start < len(requests):
            end, rows = start + 1, requests[start][1].rows
            key = batching.batch_key(requests[start][1].feeds) if self.batch_rows > 1 else None
            while (key is not None and end < len(requests)
                   and rows + requests[end][1].rows <= self.batch_rows
                   and batching.batch_key(requests[end][1].feeds) == key):
                rows += requests[end][1].rows
                end += 1
            answers += self._answer_batch(requests[start:end])
            start = end
        return answers

    def _answer_batch(self, group: list[tuple[str, Request]]) -> list[Answer]:
        if len(group) == 1:
            return [self._answer_one(*group[0])]
        try:
            results = self.model.run(batching.merge([r.feeds for _, r in group]), None)
        except Exception:
            # One request's rows may fail the model: run them one by one so that only it fails.
            return [self._answer_one(p, r) for p, r in group]
        parts = batching.split(results, [r.rows for _, r in group])
        if parts is None:
            log.warning("the model's outputs do not have one entry per input row: batching off")
            self.batch_rows = 0
            return [self._answer_one(p, r) for p, r in group]
        answers = []
        for (protocol, request), part in zip(group, parts, strict=True):
            if request.outputs is not None:
                part = {name: part[name] for name in request.outputs}
            try:
                answers.append(self._encode(protocol, request, part))
            except Exception as exc:
                answers.append(failed(exc, request))
        return answers

    def observe(self, protocol: str, answer: Answer, seconds: float) -> None:
        if self.capture is not None and answer.results is not None and answer.request is not None:
            self.capture.offer_prediction(answer.request.feeds, answer.results, answer.request.rows,
                                          answer.prediction_id)
        if self.monitor is not None:
            request = answer.request
            if answer.results is None or request is None:  # only answered rows are counted
                self.monitor.observe(protocol, answer.status, seconds, 0, None)
            else:
                self.monitor.observe(protocol, 200, seconds, request.rows, answer.results,
                                     request.feeds)

    async def answer(self, protocol: str, request: Request) -> Answer:
        """A decoded request answered off the direct path (ASGI, gRPC): inline while the model
        is fast, else on the inference thread, batched with what is queued there. Never raises."""
        if self.batch_rows > 1 and not self.runs_inline():
            return await self._queue.submit(protocol, request)
        try:
            results = await self._run(self.model, request.feeds, request.outputs)
            return self._encode(protocol, request, results)
        except Exception as exc:
            return failed(exc, request)

    async def _run(self, model: OnnxModel, feeds: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
        if self.runs_inline():
            return model.run(feeds, names)
        return await asyncio.get_running_loop().run_in_executor(self._inference, model.run, feeds, names)

    async def _infer(
        self, protocol: str, name: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        start = time.perf_counter()
        request = None
        try:
            body = await self._body(scope, receive)
            answer = await self.answer(protocol, self._decode(protocol, name, body))
        except ConnectionResetError:
            return
        except Exception as exc:
            answer = failed(exc, request)
        await self._respond(send, answer.status, answer.body)
        self.observe(protocol, answer, time.perf_counter() - start)


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded inference request."""

    feeds: dict[str, Any]
    rows: int
    outputs: list[str] | None  # the V2 `outputs` selection; None: all
    id: Any  # the V2 request id, echoed in the answer


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    request: Request | None = None  # None when the body did not decode
    results: dict[str, Any] | None = None  # None unless status is 200
    error: str = ""  # the message in `body`, when status is not 200
    prediction_id: str | None = None  # the id the answer carries (feedback on), for capture


def failed(exc: Exception, request: Request | None) -> Answer:
    """The answer to a request that raised `exc`."""
    if isinstance(exc, RequestError):
        return Answer(exc.status, _error(exc.message), request, error=exc.message)
    log.error("inference failed", exc_info=exc)  # a server bug: answer 500, keep the worker alive
    message = f"internal error: {type(exc).__name__}"
    return Answer(500, _error(message), request, error=message)


class _InferenceQueue:
    """Requests for a slow model (one that does not run inline) waiting for the inference thread,
    run as batches (App.answer_many): each run takes whatever has queued up while the previous
    one ran, up to `batch_rows` rows. A request that finds the thread idle runs at once, alone,
    so the wait is bounded by one run and nothing waits for company."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.pending: list[tuple[str, Request, asyncio.Future[Answer]]] = []
        self.draining = False

    async def submit(self, protocol: str, request: Request) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.pending.append((protocol, request, future))
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                group, rows = 0, 0
                while group < len(self.pending) and (
                        group == 0 or rows + self.pending[group][1].rows <= self.app.batch_rows):
                    rows += self.pending[group][1].rows
                    group += 1
                taken, self.pending = self.pending[:group], self.pending[group:]
                try:
                    answers = await loop.run_in_executor(
                        self.app._inference, self.app.answer_many, [(p, r) for p, r, _ in taken])
                except Exception as exc:  # the executor itself failed (shut down): answer 500
                    answers = [failed(exc, r) for _, r, _ in taken]
                for (_, _, future), answer in zip(taken, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self.draining = False
