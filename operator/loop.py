"""The per-Model reconcile loops: one asyncio task per Model, started on its first watch event,
woken at once by every later one, ticking every TICK_SECONDS in between (a canary's steps and
analysis are due by time, not by events), stopped when the Model is deleted. Only the leader ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os

from kubernetes_asyncio.client.rest import ApiException
from serin.operator import opmetrics
from serin.operator.kube import Conflict
from serin.operator.leader import LeaderElector
from serin.operator.reconcile import Deps, reconcile

log = logging.getLogger("serin.operator")
TICK_SECONDS = float(os.environ.get("SERIN_TICK_SECONDS", "1"))
MAX_BACKOFF = 30.0


class Registry:
    """One reconcile loop per Model, started on its first event, stopped on deletion."""

    def __init__(self) -> None:
        self.deps: Deps | None = None
        self.leader: LeaderElector | None = None
        self.leader_task: asyncio.Task[None] | None = None  # referenced, or the loop may drop it
        self.tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.wakeups: dict[tuple[str, str], asyncio.Event] = {}

    def touch(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key not in self.tasks:
            self.wakeups[key] = asyncio.Event()
            self.tasks[key] = asyncio.create_task(self._loop(key), name=f"reconcile {namespace}/{name}")
        self.wakeups[key].set()

    def forget(self, namespace: str, name: str) -> None:
        task = self.tasks.pop((namespace, name), None)
        self.wakeups.pop((namespace, name), None)
        if task:
            task.cancel()

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        self.tasks.clear()

    async def _loop(self, key: tuple[str, str]) -> None:
        namespace, name = key
        backoff = TICK_SECONDS
        while True:
            delay = TICK_SECONDS
            if self.deps is not None and (self.leader is None or self.leader.is_leader):
                try:
                    decision = await reconcile(self.deps, namespace, name)
                    backoff = TICK_SECONDS
                    if decision is None:
                        self.forget(namespace, name)
                        return
                except Conflict:
                    delay = 0.1  # someone wrote in between: read again right away
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


def _short(err: BaseException) -> str:
    if isinstance(err, ApiException):
        # The apiserver's Status message says what was refused and why (e.g. which RBAC verb).
        try:
            message = json.loads(err.body or "{}").get("message", "")
        except (ValueError, AttributeError):
            message = ""
        return f"API {err.status} {err.reason}" + (f": {message}" if message else "")
    return f"{type(err).__name__}: {err}"
