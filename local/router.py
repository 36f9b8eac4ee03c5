"""One HTTP router per InferenceService on a loopback port: the stand-in's Knative ingress.

Each request goes to one revision, picked at random with the route's percentages as weights (as
Knative's ingress splits by weight per request). `Knative-Serving-Tag: prev|latest` pins a
request to a tagged revision, like Knative's tag-header routing. The chosen revision is echoed
in the `Serin-Standin-Revision` response header so tests and people can see the split.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import aiohttp
from aiohttp import web

# RFC 9110 §7.6.1 hop-by-hop fields, plus the ones aiohttp recomputes for the new message.
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                  "transfer-encoding", "upgrade", "host", "content-length"})
REVISION_HEADER = "Serin-Standin-Revision"
TAG_HEADER = "Knative-Serving-Tag"


class Router:
    def __init__(self, name: str, rng: random.Random | None = None) -> None:
        self.name = name
        self._rng = rng or random.Random()
        self._backends: dict[str, str] = {}  # revision → base URL
        self._weights: dict[str, int] = {}
        self._tags: dict[str, str] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gives up cancels its upstream request, as Knative's
        # Go proxies do. Without it (aiohttp's default) an overloaded revision keeps every
        # abandoned request's socket open until the upstream answers: under load that grew to
        # thousands of CLOSE-WAIT sockets and "Too many open files" (bench/scale_bench.py).
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        # No pooled keep-alive: a revision's process may be replaced on the same port.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                              timeout=aiohttp.ClientTimeout(total=60))

    async def stop(self) -> None:
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    def set_routes(self, routes: Mapping[str, int], backends: Mapping[str, str],
                   tags: Mapping[str, str] | None = None) -> None:
        """Replaces the split atomically (one assignment each, no await in between)."""
        self._weights = {r: p for r, p in routes.items() if p > 0 and r in backends}
        self._backends = dict(backends)
        self._tags = dict(tags or {})

    def pick(self, tag: str | None = None) -> str | None:
        if tag and tag in self._tags and self._tags[tag] in self._backends:
            return self._tags[tag]
        if not self._weights:
            return None
        revisions = list(self._weights)
        return self._rng.choices(revisions, weights=[self._weights[r] for r in revisions])[0]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        revision = self.pick(request.headers.get(TAG_HEADER))
        if revision is None:
            return web.json_response({"error": f"{self.name}: no ready revision to route to"}, status=503)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        try:
            async with self._session.request(request.method, self._backends[revision] + request.path_qs,
                                             data=body, headers=headers, allow_redirects=False) as upstream:
                payload = await upstream.read()
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
                out_headers[REVISION_HEADER] = revision
                return web.Response(status=upstream.status, body=payload, headers=out_headers)
        except aiohttp.ClientError as exc:
            return web.json_response({"error": f"revision {revision} unreachable: {exc}"}, status=502,
                                     headers={REVISION_HEADER: revision})
