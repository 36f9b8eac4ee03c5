"""The per-Model reconcile loops: one asyncio task per Model, started on its first watch event and
stopped when the Model is deleted. A loop sleeps until something wakes it, a change of the Model or
of anything it observes (the watch cache), or until time itself matters to the Model: the next
analysis round, a step's pause, a back-off, a deadline (`rollout.next_due`), or the next poll of a
running conversion. An idle Model sleeps until a change, with a long resync as a safety net (read
from the cache: it costs no request). Only the leader reconciles; a new leader wakes every Model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random

from kubernetes_asyncio.client.rest import ApiException
from serin.operator import opmetrics
from serin.operator.kube import Conflict
from serin.operator.leader import LeaderElector
from serin.operator.reconcile import Deps, reconcile

log = logging.getLogger("serin.operator")
MAX_BACKOFF = 30.0
CONFLICT_DELAY = 0.1
MIN_DELAY = 0.05  # a deadline that passed is acted on at once; this only keeps a slip from spinning
# Resyncs, from the cache: a Model with something in flight at least every ACTIVE_RESYNC seconds,
# an idle one every IDLE_RESYNC (jittered, so 1,000 Models do not resync at once).
ACTIVE_RESYNC = float(os.environ.get("SERIN_ACTIVE_RESYNC_SECONDS", "30"))
IDLE_RESYNC = float(os.environ.get("SERIN_IDLE_RESYNC_SECONDS", "600"))


class Registry:
    """One reconcile loop per Model, started on its first event, stopped on deletion."""

    def __init__(self) -> None:
        self.deps: Deps | None = None
        self.leader: LeaderElector | None = None
        self.leader_task: asyncio.Task[None] | None = None  # referenced, or the loop may drop it
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.wakeups: dict[tuple[str, str], asyncio.Event] = {}
        self.reconciles = 0  # reconciles run (tests and the benchmark read it)

    def touch(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        task = self.tasks.get(key)
        if task is not None and task.done():
            # A loop that ended (it never should: every tick's error is caught) is started again
            # rather than leaving the Model unreconciled until the operator restarts.
            log.error("%s/%s: its reconcile loop had ended (%r); restarting it", namespace, name,
                      task.exception() if not task.cancelled() else "cancelled")
            del self.tasks[key]
        if key not in self.tasks:
            self.wakeups[key] = asyncio.Event()
            self.tasks[key] = asyncio.create_task(self._loop(key), name=f"reconcile {namespace}/{name}")
        self.wakeups[key].set()

    def wake(self, namespace: str, name: str) -> None:
        """A change of something a Model observes: reconcile it if it is one we know."""
        wake = self.wakeups.get((namespace, name))
        if wake is not None:
            wake.set()

    def wake_all(self) -> None:
        for wake in self.wakeups.values():
            wake.set()

    def forget(self, namespace: str, name: str) -> None:
        task = self.tasks.pop((namespace, name), None)
        self.wakeups.pop((namespace, name), None)
        if task and task is not asyncio.current_task():
            task.cancel()

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()

    async def _loop(self, key: tuple[str, str]) -> None:
        namespace, name = key
        backoff = 1.0
        while True:
            delay: float | None = None  # not the leader: sleep until one of us becomes it
            if self.deps is not None and (self.leader is None or self.leader.is_leader):
                try:
                    self.reconciles += 1
                    done = await reconcile(self.deps, namespace, name)
                    backoff = 1.0
                    if done is None:
                        self.forget(namespace, name)
                        return
                    delay = _bounded(done.wake_after, done.idle)
                except Conflict:
                    # Someone wrote in between, or the cache is behind our own write: read afresh.
                    with contextlib.suppress(TimeoutError, ApiException, OSError):
                        await self.deps.kube.refresh_model(namespace, name)
                    delay = CONFLICT_DELAY
                except (TimeoutError, ApiException, OSError) as err:
                    # The apiserver may be restarting: back off, keep going.
                    opmetrics.RECONCILE_ERRORS.labels(namespace, name).inc()
                    log.warning("%s/%s: %s; retrying in %.0fs", namespace, name, _short(err), backoff)
                    delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
                except Exception:
                    opmetrics.RECONCILE_ERRORS.labels(namespace, name).inc()
                    log.exception("%s/%s: reconcile failed; retrying in %.0fs", namespace, name, backoff)
                    delay, backoff = backoff, min(backoff * 2, MAX_BACKOFF)
            wake = self.wakeups.get(key)
            if wake is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)
            wake.clear()


def _bounded(due: float | None, idle: bool) -> float:
    """The sleep until the next reconcile: when time matters, else the resync (jittered)."""
    resync = IDLE_RESYNC * random.uniform(0.9, 1.1) if idle else ACTIVE_RESYNC
    return resync if due is None else min(max(due, MIN_DELAY), resync)


def _short(err: BaseException) -> str:
    if isinstance(err, ApiException):
        # The apiserver's Status message says what was refused and why (e.g. which RBAC verb).
        try:
            message = json.loads(err.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = ""
        return f"API {err.status} {err.reason}" + (f": {message}" if message else "")
    return f"{type(err).__name__}: {err}"
