"""The direct path: small inference requests answered inside the HTTP parser's callbacks.

uvicorn's httptools protocol hands every request to the ASGI app as a new asyncio Task, with a
scope, an Event, receive/send coroutines and two messages, and writes the status line with its
headers and the body in two socket writes. For a single-row request to a model that runs in tens
of microseconds that machinery is a large part of the server's time (bench/runtime_bench.py
measures it: the floor column). `DirectProtocol` is that protocol with one change: a POST to the
served model's V1/V2 inference path whose body is small and announced by Content-Length is
decoded, run and answered synchronously when its last byte arrives, in one write, while the model
runs inline (App.runs_inline). Everything else (health, metadata, /metrics, chunked or large
bodies, `Expect: 100-continue`, requests pipelined behind one still in the ASGI app, a model that
has turned slow) goes through the ASGI app exactly as before, and connection handling (keep-alive
timeouts, graceful shutdown, flow control, parse errors) stays uvicorn's.

The answers are the App's own (App.answer_inline: the same decoding, validation, errors and
metrics), so which path served a request is not visible to the client. The protocol subclasses
uvicorn internals; `direct_protocol` checks that what it relies on is there and otherwise serves
everything through ASGI, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from serin.runtime.app import Answer, App, Request

log = logging.getLogger("serin.runtime")

# Bodies up to this size take the direct path. Larger ones are batches, for which the per-request
# overhead does not matter and the ASGI path's incremental reading and 413 on the way are better.
DIRECT_MAX_BODY = 64 * 1024

_NEEDED = ("on_headers_complete", "on_body", "on_message_complete", "shutdown",
           "_unset_keepalive_if_required", "timeout_keep_alive_handler")


def direct_protocol(app: App) -> type | str:
    """uvicorn's `http` setting for `app`: the direct protocol class, or "httptools" when this
    uvicorn's protocol does not have what the direct path builds on."""
    try:
        from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
    except ImportError as exc:
        log.warning("direct path off, every request goes through ASGI: %s", exc)
        return "httptools"
    missing = [name for name in _NEEDED if not hasattr(HttpToolsProtocol, name)]
    if missing:
        log.warning("direct path off, every request goes through ASGI: uvicorn's "
                    "HttpToolsProtocol has no %s", ", ".join(missing))
        return "httptools"
    revision = app.revision_header_line
    batcher = _Batcher(app)

    class DirectProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._direct: bytearray | None = None  # the body of a request on the direct path
            self._direct_route: tuple[str, str] = ("", "")
            self._direct_keep_alive = True
            self._direct_start = 0.0
            self._defaults: tuple[object, bytes] = (None, b"")
            self._in_batch = 0  # requests of this connection waiting in the batcher
            self._shutting_down = False

        def on_headers_complete(self) -> None:
            route = self._direct_route_of_request()
            if route is None:
                self._direct = None
                super().on_headers_complete()
                return
            self._direct = bytearray()
            self._direct_route = route
            self._direct_keep_alive = (self.parser.get_http_version() != "1.0"
                                       and self.parser.should_keep_alive())
            self._direct_start = time.perf_counter()

        def _direct_route_of_request(self) -> tuple[str, str] | None:
            parser = self.parser
            if parser.get_method() != b"POST" or self.expect_100_continue or parser.should_upgrade():
                return None
            # Nothing of this connection may still be in the ASGI app: answers keep request order
            # (one waiting in the batcher is written before anything the ASGI app answers: the
            # batcher's flush was scheduled first, and the loop runs callbacks in order).
            if self.pipeline or not (self.cycle is None or self.cycle.response_complete):
                return None
            # A client that sends but does not read: the ASGI path waits for the buffer to drain.
            if self.flow.write_paused:
                return None
            if not app.runs_inline():
                return None
            url: bytes = self.url
            if b"%" in url:
                return None  # percent-encoded: the ASGI path decodes it
            path = url.split(b"?", 1)[0].decode("latin-1")
            protocol, name = app.inference_route(path)
            if protocol is None:
                return None
            length = None
            for key, value in self.headers:
                if key == b"content-length":
                    length = value
                elif key == b"transfer-encoding":
                    return None
            if length is None or not length.isdigit() or int(length) > DIRECT_MAX_BODY:
                return None
            return protocol, name

        def on_body(self, body: bytes) -> None:
            if self._direct is None:
                super().on_body(body)
            else:
                self._direct += body  # at most DIRECT_MAX_BODY: the parser holds to Content-Length

        def on_message_complete(self) -> None:
            if self._direct is None:
                super().on_message_complete()
                return
            body, self._direct = bytes(self._direct), None
            protocol, name = self._direct_route
            if app.batch_rows > 1:
                self._in_batch += 1
                batcher.add(self, protocol, app.decode_inline(protocol, name, body),
                            self._direct_keep_alive, self._direct_start)
            else:
                self.answer(protocol, app.answer_inline(protocol, name, body),
                            self._direct_keep_alive, self._direct_start)

        def answer(self, protocol: str, answer: Answer, keep_alive: bool, start: float) -> None:
            keep_alive = keep_alive and not self._shutting_down
            if not self.transport.is_closing():  # else the client has gone: count it only
                self.transport.write(b"".join((
                    STATUS_LINE[answer.status], self._default_header_lines(),
                    b"content-type: application/json\r\ncontent-length: %d\r\n" % len(answer.body),
                    revision, b"" if keep_alive else b"connection: close\r\n", b"\r\n",
                    answer.body,
                )))
            app.observe(protocol, answer, time.perf_counter() - start)
            self._direct_done(keep_alive)

        def _default_header_lines(self) -> bytes:
            # uvicorn replaces the list (its `date` header) once a second: encode once per list.
            headers = self.server_state.default_headers
            if self._defaults[0] is not headers:
                self._defaults = (headers, b"".join(b"%s: %s\r\n" % kv for kv in headers))
            return self._defaults[1]

        def _direct_done(self, keep_alive: bool) -> None:
            # What uvicorn does when a response completes (on_response_complete), for this path.
            self.server_state.total_requests += 1
            if not keep_alive:
                self.transport.close()
                return
            if self.transport.is_closing():
                return
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

        def shutdown(self) -> None:
            if self._direct is None and not self._in_batch:
                super().shutdown()
            else:
                # A body still arriving or an answer still to write: answer, then close (what
                # uvicorn does for a request in flight in the ASGI app).
                self._shutting_down = True

    return DirectProtocol


class _Batcher:
    """Direct-path requests decoded during one pass of the event loop over its connections,
    answered together at the end of it (App.answer_many runs what fits as one batch)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.pending: list[tuple[Any, str, Request | Answer, bool, float]] = []

    def add(self, conn: Any, protocol: str, decoded: Request | Answer, keep_alive: bool,
            start: float) -> None:
        if not self.pending:
            # Runs after the I/O callbacks of this pass: every request that has arrived by now.
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.append((conn, protocol, decoded, keep_alive, start))

    def flush(self) -> None:
        items, self.pending = self.pending, []
        runnable = [(protocol, d) for _, protocol, d, _, _ in items if isinstance(d, Request)]
        answers = iter(self.app.answer_many(runnable))
        for conn, protocol, decoded, keep_alive, start in items:
            conn._in_batch -= 1
            answer = next(answers) if isinstance(decoded, Request) else decoded
            try:
                conn.answer(protocol, answer, keep_alive, start)
            except Exception:
                # One connection's failure (its monitor, its transport) must not leave the other
                # connections of the batch unanswered: this one is closed, the rest go on.
                log.exception("answering a batched request failed: closing its connection")
                conn.transport.close()
