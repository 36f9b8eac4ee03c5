"""Sending notifications (notify.py decides which, and when): one small adapter over HTTP.

`submit` starts an attempt in the background and returns at once, so a slow or dead sink never
holds a reconcile; at most `concurrency` attempts run at a time across all Models. An attempt's
outcome is kept until the Model's next tick has written it into the status (`acknowledge`): a
status write that fails (a Conflict) finds it again on the next tick, and an attempt is never
started twice while one is on its way or its outcome waits to be recorded.

Where a notification may go: http(s) only, no redirects followed, never a link-local address
(169.254.0.0/16, fe80::/10: where clouds serve a node's instance metadata and credentials), checked
on the address actually connected to, not on a name resolved beforehand.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from serin.operator import notify, opmetrics
from serin.operator.spec import NOTIFY_SECRET, SinkSpec
from serin.operator.status import Notification

log = logging.getLogger("serin.notify")
ReadSecret = Callable[[str, str], Awaitable[dict[str, bytes] | None]]  # (namespace, name) -> data, None: absent
_METADATA_V6 = ipaddress.ip_address("fd00:ec2::254")


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refused_address(host: str) -> bool:
    """Whether `host`, an address, reaches a link-local one, in any spelling: IPv4 embedded in
    IPv6 (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, 6to4, NAT64) and the numeric forms the
    resolver accepts (2852039166, 0xa9fea9fe, 0251.0376.0251.0376) included. A name: False (the
    connection's resolver checks what it resolves to)."""
    text = host.strip("[]").split("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        try:  # the C library's numeric IPv4 forms, which getaddrinfo resolves without DNS
            address = ipaddress.ip_address(socket.inet_aton(text))
        except OSError:
            return False
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address in _NAT64 or (int(address) >> 32 == 0 and int(address) > 0xFFFF):
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        candidates += [a for a in embedded if a is not None]
    return any(a.is_link_local or a == _METADATA_V6 for a in candidates)


class _NoLinkLocal(AbstractResolver):
    """The resolver the connection uses: a name that resolves to a link-local address is refused
    at the moment of connecting (no window for the name to change between a check and the use)."""

    def __init__(self) -> None:
        self.inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        for a in answers:
            if refused_address(a["host"]):
                raise OSError(f"{host} resolves to {a['host']}, a link-local address: refused")
        return answers

    async def close(self) -> None:
        await self.inner.close()


class Notifier:
    def __init__(self, read_secret: ReadSecret, shared_namespace: str, wake: Callable[[str, str], None],
                 timeout: float = 10.0, concurrency: int = 16) -> None:
        self.read_secret, self.shared_namespace, self.wake = read_secret, shared_namespace, wake
        self.timeout = timeout
        self.slots = asyncio.Semaphore(concurrency)
        self.session: aiohttp.ClientSession | None = None
        self.in_flight: dict[tuple[str, str], set[notify.Key]] = {}
        self.results: dict[tuple[str, str], dict[notify.Key, notify.DeliveryOutcome]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def outcomes(self, namespace: str, name: str) -> dict[notify.Key, notify.DeliveryOutcome]:
        return dict(self.results.get((namespace, name), {}))

    def acknowledge(self, namespace: str, name: str, keys: list[notify.Key]) -> None:
        results = self.results.get((namespace, name))
        for key in keys if results is not None else ():
            results.pop(key, None)  # type: ignore[union-attr]  # checked just above

    def forget(self, namespace: str, name: str) -> None:
        self.results.pop((namespace, name), None)
        self.in_flight.pop((namespace, name), None)

    def submit(self, namespace: str, name: str, n: Notification, sink: SinkSpec) -> None:
        model = (namespace, name)
        key = (n.id, n.sink)
        if key in self.in_flight.get(model, set()) or key in self.results.get(model, {}):
            return
        self.in_flight.setdefault(model, set()).add(key)
        task = asyncio.create_task(self._attempt(model, n, sink), name=f"notify {namespace}/{name} {n.sink}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _attempt(self, model: tuple[str, str], n: Notification, sink: SinkSpec) -> None:
        try:
            async with self.slots:
                outcome = await self.send(model[0], n, sink)
        except Exception as err:  # never lose an attempt's end: it is retried like any failure
            # Its text may carry a URL kept in the Secret: the type only, in status and the log.
            log.error("%s/%s: notification %s to %s: %s", *model, n.id, n.sink, type(err).__name__)
            outcome = notify.Failed(f"unexpected {type(err).__name__}")
        result = "delivered" if isinstance(outcome, notify.Delivered) else "refused" if outcome.final else "failed"
        opmetrics.NOTIFICATION_ATTEMPTS.labels(model[0], n.sink, result).inc()
        if isinstance(outcome, notify.Failed):
            log.warning("%s/%s: %s notification %s to sink %s: %s", *model, n.reason, n.id, n.sink, outcome.error)
        else:
            log.info("%s/%s: %s notification %s delivered to sink %s", *model, n.reason, n.id, n.sink)
        flying = self.in_flight.get(model)
        if flying is not None:
            flying.discard((n.id, n.sink))
            self.results.setdefault(model, {})[(n.id, n.sink)] = outcome
            self.wake(*model)

    async def send(self, namespace: str, n: Notification, sink: SinkSpec) -> notify.DeliveryOutcome:
        where = self.shared_namespace if sink.shared else namespace
        secret: dict[str, bytes] | None = None
        if sink.url_secret_key or sink.signing_secret_key:
            if not where:
                return notify.Failed(f"the chart's sink {sink.name} names keys of the Secret {NOTIFY_SECRET}, "
                                     "and the operator knows no namespace of its own (POD_NAMESPACE)", final=True)
            secret = await self.read_secret(where, NOTIFY_SECRET)
        url = sink.url
        if sink.url_secret_key:
            url = _key(secret, sink.url_secret_key).decode(errors="replace").strip()
            if not url:
                return notify.Failed(_missing(where, sink.url_secret_key, secret))
        signing_key = None
        if sink.signing_secret_key:
            signing_key = _key(secret, sink.signing_secret_key)
            if not signing_key:  # never sent unsigned to a sink that expects a signature
                return notify.Failed(_missing(where, sink.signing_secret_key, secret))
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            where_url = f"the key {sink.url_secret_key} of Secret {where}/{NOTIFY_SECRET}" if sink.url_secret_key \
                else "its url"
            return notify.Failed(f"sink {sink.name}: {where_url} is not an http(s) URL", final=True)
        if refused_address(parts.hostname):
            return notify.Failed(f"sink {sink.name}: {parts.hostname} is a link-local address: refused", final=True)
        body, headers = notify.request(n, sink, signing_key)
        try:
            async with self._session().post(url, data=body, headers=headers, allow_redirects=False) as answer:
                await answer.read()
                code = answer.status
        except TimeoutError:
            return notify.Failed(f"no answer within {self.timeout:g}s")
        except (OSError, aiohttp.ClientError) as err:  # refused, unreachable, a link-local resolution, TLS
            if sink.url_secret_key:  # the URL is a credential: no exception text, which may carry it
                return notify.Failed(f"{type(err).__name__} reaching {parts.hostname}")
            return notify.Failed(f"{type(err).__name__}: {err}" if isinstance(err, aiohttp.ClientError)
                                 else str(err) or type(err).__name__)
        if 200 <= code < 300:
            return notify.Delivered(code)
        # A 4xx says the request itself is refused (retrying sends the same bytes); 408 and 429 ask
        # to come back later, a 5xx may be a receiver restarting.
        final = 300 <= code < 400 or (400 <= code < 500 and code not in (408, 429))
        return notify.Failed(f"HTTP {code}" + (" (redirects are not followed)" if 300 <= code < 400 else ""),
                             final=final)

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=_NoLinkLocal(), limit=64),
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self.session

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()


def _key(secret: dict[str, bytes] | None, key: str) -> bytes:
    return (secret or {}).get(key, b"")


def _missing(namespace: str, key: str, secret: dict[str, Any] | None) -> str:
    if secret is None:
        return f"Secret {namespace}/{NOTIFY_SECRET} not found (or not readable by the operator): it holds key {key}"
    return f"Secret {namespace}/{NOTIFY_SECRET} has no key {key}"
