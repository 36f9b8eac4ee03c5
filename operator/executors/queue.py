"""The conversion queue: at most `limit` conversions run at once, whichever executor runs them; the
rest wait in line, oldest request first (a Model has one pending version at a time, so no Model
can crowd out the others). 200 Models applied at once start `limit` converters, not 200.

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
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError(f"the conversion limit must be at least 1, not {limit}")
        self.inner = inner
        self.limit = limit
        self.started = started  # wakes a Model whose conversion left the line
        self.clock = clock
        self.running: set[QueueKey] = set()
        self.waiting: list[_Waiting] = []
        self._seq = 0
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
        if len(self.running) < self.limit and not self.waiting:
            await self._run(key, req)
            return
        self._seq += 1
        bisect.insort(self.waiting, _Waiting(req.requested_at, self._seq, key, req))
        log.info("%s/%s: conversion queued at position %d (%d running, limit %d)", req.namespace, req.name,
                 self.position(key), len(self.running), self.limit)

    async def poll(self, req: ConversionRequest) -> ConversionResult:
        key = queue_key(req)
        await self._fill()
        position = self.position(key)
        if position:
            return ConversionResult(ConversionState.QUEUED, position=position,
                                    reason=f"{len(self.running)} of {self.limit} conversion slots in use, "
                                           f"{len(self.waiting)} waiting")
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
        await self.inner.cancel(req)
        if key in self.running:
            self.running.discard(key)
            await self._fill(force=True)

    async def forget(self, namespace: str, name: str) -> None:
        """A deleted Model: its waiting conversion leaves the line (a running one ends on its own,
        or with its Job, which the garbage collector removes with the Model)."""
        self.waiting = [w for w in self.waiting if (w.req.namespace, w.req.name) != (namespace, name)]
        await self._fill(force=True)

    def position(self, key: QueueKey) -> int:
        for i, w in enumerate(self.waiting):
            if w.key == key:
                return i + 1
        return 0

    async def _refresh(self, force: bool = False) -> None:
        now = self.clock()
        if force or now - self._refreshed >= REFRESH_SECONDS:
            self.running = await self.inner.active()
            self._refreshed = now

    async def _fill(self, force: bool = False) -> None:
        if not self.waiting:
            return
        await self._refresh(force)
        while self.waiting and len(self.running) < self.limit:
            w = self.waiting.pop(0)
            await self._run(w.key, w.req)
            self.started(w.req.namespace, w.req.name)

    async def _run(self, key: QueueKey, req: ConversionRequest) -> None:
        await self.inner.start(req)
        self.running.add(key)
        self.peak = max(self.peak, len(self.running))
