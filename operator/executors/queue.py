"""The conversion queue: at most `limit` conversions run at once, whichever executor runs them; the
rest wait in line. 200 Models applied at once start `limit` converters, not 200.

The line is fair across namespaces (tenants): a free slot goes to the namespace that got one least
recently, and within a namespace to its oldest request (a Model has one pending version at a time,
so no Model can crowd out the others). One namespace applying a thousand Models first does not
make the others wait behind all of them. With `per_namespace` (--max-conversions-per-namespace) a
namespace never runs more than that many at once, so slots stay free for the others even while
it is alone: a conversion may hold its slot up to its timeout (at most 1h).

The count of what runs is the executor's own (`active()`: live processes, unfinished Jobs),
re-read whenever a slot might be free, so conversions started by an earlier operator count, and a
conversion whose Model is gone frees its slot when it ends. The line itself is memory: after a
restart each pending Model queues again (the decision re-queues a version that never ran as the
same attempt) in the order its version was admitted.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from serin.operator.executors.base import ConversionExecutor, ConversionRequest
from serin.operator.observations import ConversionResult, ConversionState

log = logging.getLogger("serin.queue")

QueueKey = tuple[str, str]  # (namespace, request slug): one conversion attempt
REFRESH_SECONDS = 1.0  # the executor's count is read at most this often while conversions wait


@dataclass(order=True)
class _Waiting:
    requested_at: str
    seq: int
    key: QueueKey = field(compare=False)
    req: ConversionRequest = field(compare=False)


def queue_key(req: ConversionRequest) -> QueueKey:
    return (req.namespace, req.slug)


class ConversionQueue:
    """A ConversionExecutor that runs at most `limit` of the wrapped executor's conversions."""

    def __init__(self, inner: ConversionExecutor, limit: int, started: Callable[[str, str], None] = lambda ns, n: None,
                 clock: Callable[[], float] = time.monotonic, per_namespace: int = 0) -> None:
        if limit < 1:
            raise ValueError(f"the conversion limit must be at least 1, not {limit}")
        if per_namespace < 0:
            raise ValueError(f"the conversion limit per namespace must be at least 1 (0: none), not {per_namespace}")
        self.inner = inner
        self.limit = limit
        self.per_namespace = per_namespace  # 0: no limit of its own
        self.started = started  # wakes a Model whose conversion left the line
        self.clock = clock
        self.running: set[QueueKey] = set()
        self.waiting: list[_Waiting] = []  # oldest request first
        self._seq = 0
        self._served: dict[str, int] = {}  # namespace -> the turn it last got a slot
        self._turn = 0
        self._line: dict[QueueKey, int] | None = None  # the order slots will be given in (cached)
        self._refreshed = float("-inf")
        self.peak = 0  # the most conversions seen running at once (the benchmark prints it)

    @property
    def poll_seconds(self) -> float | None:
        return getattr(self.inner, "poll_seconds", None)

    async def active(self) -> set[QueueKey]:
        return await self.inner.active()

    async def start(self, req: ConversionRequest) -> None:
        key = queue_key(req)
        if key in self.running or any(w.key == key for w in self.waiting):
            return
        await self._refresh()
        if key in self.running:
            return  # an earlier operator started it
        if len(self.running) < self.limit and not self.waiting and self._has_room(req.namespace):
            await self._run(key, req)
            return
        self._seq += 1
        bisect.insort(self.waiting, _Waiting(req.requested_at, self._seq, key, req))
        self._line = None
        await self._fill(caller=key)  # a slot a capped namespace leaves free may be this one's
        if self.position(key):
            log.info("%s/%s: conversion queued at position %d (%d running, limit %d)", req.namespace, req.name,
                     self.position(key), len(self.running), self.limit)

    async def poll(self, req: ConversionRequest) -> ConversionResult:
        key = queue_key(req)
        await self._fill()
        position = self.position(key)
        if position:
            capped = (f"; at most {self.per_namespace} per namespace, {self._running_in(req.namespace)} running "
                      "in this one") if self.per_namespace else ""
            return ConversionResult(ConversionState.QUEUED, position=position,
                                    reason=f"{len(self.running)} of {self.limit} conversion slots in use, "
                                           f"{len(self.waiting)} waiting{capped}")
        result = await self.inner.poll(req)
        if result.state == ConversionState.RUNNING:
            self.running.add(key)  # started by an earlier operator: it counts
        elif key in self.running:
            self.running.discard(key)
            await self._fill(force=True)
        return result

    async def cancel(self, req: ConversionRequest) -> None:
        key = queue_key(req)
        self.waiting = [w for w in self.waiting if w.key != key]
        self._line = None
        await self.inner.cancel(req)
        if key in self.running:
            self.running.discard(key)
            await self._fill(force=True)

    async def forget(self, namespace: str, name: str) -> None:
        """A deleted Model: its waiting conversion leaves the line (a running one ends on its own,
        or with its Job, which the garbage collector removes with the Model)."""
        self.waiting = [w for w in self.waiting if (w.req.namespace, w.req.name) != (namespace, name)]
        self._line = None
        await self._fill(force=True)

    def position(self, key: QueueKey) -> int:
        """Its place in the order free slots will be given in, 1 being next (0: not waiting).
        A namespace at its own limit may be passed over when its turn comes."""
        return self.line().get(key, 0)

    def line(self) -> dict[QueueKey, int]:
        """Round robin over namespaces, the least recently served first (then the one whose oldest
        request is oldest): each one's oldest, then each one's second, and so on."""
        if self._line is None:
            by_ns: dict[str, list[_Waiting]] = {}
            for w in self.waiting:  # oldest first, so each namespace's list is too
                by_ns.setdefault(w.key[0], []).append(w)
            turns = sorted(by_ns.values(), key=lambda ws: (self._served.get(ws[0].key[0], -1), ws[0]))
            order = [ws[i] for i in range(max((len(ws) for ws in turns), default=0))
                     for ws in turns if i < len(ws)]
            self._line = {w.key: n for n, w in enumerate(order, 1)}
        return self._line

    def _running_in(self, namespace: str) -> int:
        return sum(1 for ns, _ in self.running if ns == namespace)

    def _has_room(self, namespace: str) -> bool:
        return not self.per_namespace or self._running_in(namespace) < self.per_namespace

    async def _refresh(self, force: bool = False) -> None:
        now = self.clock()
        if force or now - self._refreshed >= REFRESH_SECONDS:
            self.running = await self.inner.active()
            self._refreshed = now

    async def _fill(self, force: bool = False, caller: QueueKey | None = None) -> None:
        """Give free slots in line order, passing over a namespace at its own limit; wake each
        Model whose conversion starts (but the caller, which is awake)."""
        if not self.waiting:
            return
        await self._refresh(force)
        while self.waiting and len(self.running) < self.limit:
            line = self.line()
            ready = [w for w in self.waiting if self._has_room(w.key[0])]
            if not ready:
                return
            w = min(ready, key=lambda w: line[w.key])
            self.waiting.remove(w)
            self._line = None
            await self._run(w.key, w.req)
            if w.key != caller:
                self.started(w.req.namespace, w.req.name)

    async def _run(self, key: QueueKey, req: ConversionRequest) -> None:
        await self.inner.start(req)
        self.running.add(key)
        self._turn += 1
        self._served[req.namespace] = self._turn
        self._line = None
        self.peak = max(self.peak, len(self.running))
