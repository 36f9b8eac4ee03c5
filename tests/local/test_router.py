"""The stand-in's per-InferenceService router: weighted choice, tag pinning, forwarding."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from serin.local.router import REVISION_HEADER, Router


@pytest.mark.parametrize(("routes", "tag", "want"), [
    pytest.param({"r1": 100}, None, {"r1"}, id="single-revision"),
    pytest.param({"r1": 0, "r2": 100}, None, {"r2"}, id="zero-percent-never-chosen"),
    pytest.param({"r1": 90, "r2": 10}, "prev", {"r1"}, id="tag-header-pins-revision"),
    pytest.param({"r1": 90, "r2": 10}, "unknown", {"r1", "r2"}, id="unknown-tag-falls-back-to-split"),
    pytest.param({"gone": 100}, None, set(), id="revision-without-backend-is-not-routed"),
])
def test_pick(routes: dict[str, int], tag: str | None, want: set[str]) -> None:
    router = Router("ns/m", random.Random(1))
    router.set_routes(routes, {r: f"http://127.0.0.1:{i}" for i, r in enumerate(routes) if r != "gone"}, {"prev": "r1"})
    picked = {router.pick(tag) for _ in range(200)}
    assert picked == (want or {None})


def test_pick_follows_weights() -> None:
    router = Router("ns/m", random.Random(7))
    router.set_routes({"r1": 75, "r2": 25}, {"r1": "http://a", "r2": "http://b"})
    counts = Counter(router.pick() for _ in range(4000))
    assert 0.70 < counts["r1"] / 4000 < 0.80  # ±5 sd of Binomial(4000, 0.75)


async def revision(handler: Any, **runner_args: Any) -> tuple[web.AppRunner, int]:
    """A revision's server on a loopback port, answering every path with `handler`."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, **runner_args)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_forwards_method_path_body_and_status() -> None:
    seen: list[tuple[str, str, bytes]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append((request.method, request.path_qs, await request.read()))
        return web.json_response({"ok": True}, status=201, headers={"X-Backend": "yes"})

    runner, port = await revision(echo)
    router = Router("ns/m")
    await router.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(router.url + "/v2/models/m/infer?x=1", data=b'{"a": 1}') as resp:
                assert resp.status == 503  # no route yet: nothing is ready
            router.set_routes({"r1": 100}, {"r1": f"http://127.0.0.1:{port}"})
            async with session.post(router.url + "/v2/models/m/infer?x=1", data=b'{"a": 1}') as resp:
                assert resp.status == 201
                assert resp.headers[REVISION_HEADER] == "r1" and resp.headers["X-Backend"] == "yes"
                assert await resp.json() == {"ok": True}
    finally:
        await router.stop()
        await runner.cleanup()
    assert seen == [("POST", "/v2/models/m/infer?x=1", b'{"a": 1}')]


async def test_client_that_gives_up_cancels_its_upstream_request() -> None:
    # Under overload clients time out; an ingress that kept waiting on the revision for every
    # abandoned request would hold its socket (CLOSE-WAIT) until the revision answered, and ran
    # out of file descriptors in the scale benchmark.
    cancelled = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.json_response({})

    runner, port = await revision(stuck, handler_cancellation=True)
    router = Router("ns/m")
    await router.start()
    router.set_routes({"r1": 100}, {"r1": f"http://127.0.0.1:{port}"})
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session:
            with pytest.raises(asyncio.TimeoutError):
                async with session.post(router.url + "/v2/models/m/infer", data=b"{}"):
                    pass
        await asyncio.wait_for(cancelled.wait(), 5)  # the router dropped its upstream request
    finally:
        await router.stop()
        await runner.cleanup()
