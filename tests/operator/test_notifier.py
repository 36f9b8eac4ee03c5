"""The notifier against a real HTTP receiver on loopback (aiohttp's server): what it sends, how it
reads each answer, and where it refuses to send. The Secret is read through the function the
operator passes (Kube.read_secret_data); the control-plane tier reads a real one."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web
from clock import at
from serin.operator import notify
from serin.operator.actions import Emit
from serin.operator.notifier import Notifier, _NoLinkLocal, refused_address
from serin.operator.spec import NOTIFY_SECRET, SinkSpec
from serin.operator.status import Notification, Status


@dataclass
class Receiver:
    """Answers each POST with the next of `answers` (then 200), recording what came."""

    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        await asyncio.sleep(self.delay)
        code = self.answers.pop(0) if self.answers else 200
        if code == 302:
            raise web.HTTPFound("/elsewhere")
        return web.Response(status=code, text="no")


@pytest_asyncio.fixture(loop_scope="function")  # the tests' own loop, which serves it
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    app.router.add_post("/elsewhere", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    r.url = f"http://127.0.0.1:{port}/hook"
    yield r
    await runner.cleanup()


def pending(sink: str = "ops") -> Notification:
    outbox, _ = notify.update(Status(observedGeneration=1), (Emit("Normal", "Promoted", "generation 1 promoted"),),
                              notify.NotifySpec((SinkSpec(sink, url="http://x/"),)), (), {},
                              notify.Identity("team-a", "iris", "u"), at(0))
    assert outbox is not None
    return outbox.pending[0]


class Secrets:
    def __init__(self, data: dict[tuple[str, str], dict[str, bytes]]) -> None:
        self.data, self.reads = data, []

    async def __call__(self, namespace: str, name: str) -> dict[str, bytes] | None:
        self.reads.append((namespace, name))
        return self.data.get((namespace, name))


async def deliver(notifier: Notifier, n: Notification, sink: SinkSpec) -> notify.DeliveryOutcome:
    woken = asyncio.Event()
    notifier.wake = lambda *_: woken.set()
    notifier.submit("team-a", "iris", n, sink)
    notifier.submit("team-a", "iris", n, sink)  # on its way already: not a second attempt
    await asyncio.wait_for(woken.wait(), 30)
    return notifier.outcomes("team-a", "iris")[(n.id, n.sink)]


async def test_delivered_signed_with_the_key_of_the_namespaces_secret(receiver: Receiver) -> None:
    secrets = Secrets({("team-a", NOTIFY_SECRET): {"ops-key": b"s3cret", "ops-url": receiver.url.encode()}})
    notifier = Notifier(secrets, "serin-system", lambda *_: None)
    n = pending()
    sink = SinkSpec("ops", url_secret_key="ops-url", signing_secret_key="ops-key")
    assert await deliver(notifier, n, sink) == notify.Delivered(200)
    [(headers, body)] = receiver.got
    assert body == n.event.encode() and json.loads(body)["id"] == n.id
    assert notify.verify(body, headers[notify.SIGNATURE_HEADER], b"s3cret")
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    assert secrets.reads == [("team-a", NOTIFY_SECRET)]
    # Kept until the status has it: not sent again meanwhile, forgotten once acknowledged.
    notifier.submit("team-a", "iris", n, sink)
    await asyncio.sleep(0.2)
    assert len(receiver.got) == 1
    notifier.acknowledge("team-a", "iris", [(n.id, n.sink)])
    assert notifier.outcomes("team-a", "iris") == {}
    await notifier.close()


async def test_a_chart_sink_reads_the_operators_namespace(receiver: Receiver) -> None:
    secrets = Secrets({("serin-system", NOTIFY_SECRET): {"k": b"platform"}})
    notifier = Notifier(secrets, "serin-system", lambda *_: None)
    n = pending("chart/platform")
    outcome = await deliver(notifier, n, SinkSpec("platform", url=receiver.url, signing_secret_key="k", shared=True))
    assert outcome == notify.Delivered(200) and secrets.reads == [("serin-system", NOTIFY_SECRET)]
    assert notify.verify(receiver.got[0][1], receiver.got[0][0][notify.SIGNATURE_HEADER], b"platform")
    await notifier.close()


@pytest.mark.parametrize(("code", "final"), [(503, False), (429, False), (408, False), (400, True), (401, True),
                                             (404, True), (302, True)])
async def test_each_answer_is_read_for_whether_retrying_can_help(receiver: Receiver, code: int, final: bool) -> None:
    receiver.answers = [code]
    notifier = Notifier(Secrets({}), "", lambda *_: None)
    outcome = await deliver(notifier, pending(), SinkSpec("ops", url=receiver.url))
    assert isinstance(outcome, notify.Failed) and outcome.final is final and f"HTTP {code}" in outcome.error
    assert len(receiver.got) == 1, "a redirect is not followed"
    await notifier.close()


async def test_a_receiver_down_then_up() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notifier = Notifier(Secrets({}), "", lambda *_: None)
    sink = SinkSpec("ops", url=f"http://127.0.0.1:{port}/hook")
    n = pending()
    outcome = await deliver(notifier, n, sink)
    assert isinstance(outcome, notify.Failed) and not outcome.final and str(port) in outcome.error
    notifier.acknowledge("team-a", "iris", [(n.id, n.sink)])
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        assert await deliver(notifier, n, sink) == notify.Delivered(200)
        assert json.loads(r.got[0][1])["id"] == n.id
    finally:
        await runner.cleanup()
        await notifier.close()


async def test_a_receiver_that_does_not_answer_in_time(receiver: Receiver) -> None:
    receiver.delay = 5
    notifier = Notifier(Secrets({}), "", lambda *_: None, timeout=0.5)
    outcome = await deliver(notifier, pending(), SinkSpec("ops", url=receiver.url))
    assert isinstance(outcome, notify.Failed) and outcome.error == "no answer within 0.5s" and not outcome.final
    await notifier.close()


async def test_a_missing_secret_or_key_is_said_and_retried_never_sent_unsigned(receiver: Receiver) -> None:
    notifier = Notifier(Secrets({("team-a", NOTIFY_SECRET): {"other": b"x"}}), "", lambda *_: None)
    outcome = await deliver(notifier, pending(), SinkSpec("ops", url=receiver.url, signing_secret_key="ops-key"))
    assert outcome == notify.Failed(f"Secret team-a/{NOTIFY_SECRET} has no key ops-key")
    notifier = Notifier(Secrets({}), "", lambda *_: None)
    outcome = await deliver(notifier, pending(), SinkSpec("ops", url_secret_key="ops-url"))
    assert isinstance(outcome, notify.Failed) and not outcome.final and "not found" in outcome.error
    assert receiver.got == []
    await notifier.close()


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://[fe80::1]/x",
                                 # the same address in the spellings a resolver or a dual-stack socket accepts
                                 "http://[::ffff:169.254.169.254]/x", "http://[::ffff:a9fe:a9fe]/x",
                                 "http://[0:0:0:0:0:ffff:169.254.169.254]/x", "http://[64:ff9b::a9fe:a9fe]/x",
                                 "http://[2002:a9fe:a9fe::1]/x", "http://[::169.254.169.254]/x",
                                 "http://2852039166/x", "http://0xa9fea9fe/x", "http://0251.0376.0251.0376/x",
                                 "http://[fd00:ec2::254]/x", "ftp://example.com/x", "not a url"])
async def test_refused_destinations(url: str) -> None:
    secrets = Secrets({("team-a", NOTIFY_SECRET): {"u": url.encode()}})
    notifier = Notifier(secrets, "", lambda *_: None)
    outcome = await deliver(notifier, pending(), SinkSpec("ops", url_secret_key="u"))
    assert isinstance(outcome, notify.Failed) and outcome.final
    assert url not in outcome.error, "a URL kept in a Secret is never repeated in status"
    await notifier.close()


def test_addresses_that_are_not_link_local_pass() -> None:
    for host in ("127.0.0.1", "10.0.0.7", "::1", "[2001:db8::1]", "::ffff:10.0.0.7", "hooks.example.com"):
        assert not refused_address(host), host


async def test_a_secret_url_is_never_repeated_even_in_an_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T000/B000/S3CR3TT0K3N"
    notifier = Notifier(Secrets({("team-a", NOTIFY_SECRET): {"u": url.encode()}}), "", lambda *_: None)
    outcome = await deliver(notifier, pending(), SinkSpec("ops", url_secret_key="u"))
    assert isinstance(outcome, notify.Failed) and not outcome.final
    assert "S3CR3T" not in outcome.error and str(port) not in outcome.error and "127.0.0.1" in outcome.error
    await notifier.close()


async def test_a_name_resolving_to_a_link_local_address_is_refused_when_connecting() -> None:
    resolver = _NoLinkLocal()
    with pytest.raises(OSError, match="link-local"):
        await resolver.resolve("169.254.169.254", 80)
    assert (await resolver.resolve("127.0.0.1", 80))[0]["host"] == "127.0.0.1"
    await resolver.close()
