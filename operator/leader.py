"""Leader election on a coordination.k8s.io Lease, with client-go's semantics: one holder at a
time, renewed well within its duration, taken over only once expired. Only the leader acts, so two
replicas never act twice; since all rollout state is in each Model's status, a new leader simply
resumes.

Expired is judged on our own clock only, as client-go's leaderelection does: another holder's Lease
is expired once we have seen it unchanged for its leaseDuration, counted from when we saw it change.
Its renewTime was written by another machine's clock: compared with ours, 15 s of skew would let two
replicas lead at once (or keep a dead leader's Lease alive). Only clock *rates* must roughly agree."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

log = logging.getLogger("serin.leader")


class LeaseApi(Protocol):
    """What the elector uses of kubernetes_asyncio's CoordinationV1Api (a fake in unit tests)."""

    def read_namespaced_lease(self, name: str, namespace: str) -> Awaitable[client.V1Lease]: ...

    def create_namespaced_lease(self, namespace: str, body: client.V1Lease) -> Awaitable[client.V1Lease]: ...

    def replace_namespaced_lease(self, name: str, namespace: str,
                                 body: client.V1Lease) -> Awaitable[client.V1Lease]: ...


class LeaderElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str = "serin-operator",
                 lease_seconds: int = 15, renew_seconds: float = 5.0, identity: str | None = None,
                 coordination: LeaseApi | None = None, now: Callable[[], dt.datetime] | None = None) -> None:
        self.coordination: LeaseApi = client.CoordinationV1Api(api) if coordination is None else coordination
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self.namespace, self.name = namespace, name
        self.lease_seconds, self.renew_seconds = lease_seconds, renew_seconds
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._leading_until: dt.datetime | None = None
        # The Lease as last read (what a renewal changes) and our clock when it last changed.
        self._observed: tuple[object, ...] = ()
        self._observed_at = self._now()
        # Called on becoming leader (again): the reconcile loops of a standby sleep until then.
        self.on_elected: Callable[[], None] = lambda: None

    @property
    def is_leader(self) -> bool:
        # Stop acting renew_seconds before the Lease could expire for the others (they count its
        # duration from when they saw our renewal, which is after we wrote it): latency, clock rates.
        return self._leading_until is not None and self._now() < self._leading_until

    async def run(self) -> None:
        while True:
            try:
                await self.try_acquire_or_renew()
            except (TimeoutError, ApiException, OSError) as err:
                log.warning("lease %s/%s: %s", self.namespace, self.name, err)
            await asyncio.sleep(self.renew_seconds)

    async def release(self) -> None:
        """Hands the lease over at shutdown: 1 s long, so a standby takes over on its first tick a
        second after it sees the change instead of waiting out lease_seconds."""
        if not self.is_leader:
            return
        self._leading_until = None
        try:
            lease = await self.coordination.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.lease_duration_seconds = 1
                # Already past on our clock: a replica of an older Serin, which still compares
                # renewTime with its clock, takes over at once during a rolling upgrade too.
                lease.spec.renew_time = self._now() - dt.timedelta(seconds=2)
                await self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except (ApiException, OSError) as err:
            log.warning("releasing lease: %s", err)

    async def try_acquire_or_renew(self) -> None:
        """One round of client-go's tryAcquireOrRenew: create, renew, take over, or stand by."""
        now = self._now()
        try:
            lease = await self.coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=self.lease_seconds,
                                        acquire_time=now, renew_time=now, lease_transitions=0))
            try:
                self._observe(await self.coordination.create_namespaced_lease(self.namespace, body))
            except ApiException as create_err:
                if create_err.status == 409:
                    return  # someone else created it first
                raise
            self._became_leader(now, first=True)
            return
        self._observe(lease)
        spec = lease.spec
        holder = spec.holder_identity
        if holder and holder != self.identity and not self._expired(spec):
            if self._leading_until is not None:
                log.warning("lost the lease to %s", holder)
            self._leading_until = None
            return
        taking_over = holder != self.identity
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.lease_seconds
        spec.renew_time = now
        if taking_over:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        try:
            # The read's resourceVersion rides along: a concurrent taker gets 409 and backs off.
            self._observe(await self.coordination.replace_namespaced_lease(self.name, self.namespace, lease))
        except ApiException as err:
            if err.status == 409:
                self._leading_until = None
                return
            raise
        self._became_leader(now, first=taking_over)

    def _observe(self, lease: client.V1Lease) -> None:
        """Remembers the Lease, and our time if it changed since we last read it. The
        resourceVersion alone would do against an apiserver; the holder's fields make it plain."""
        spec = lease.spec
        record = (lease.metadata.resource_version, spec.holder_identity, spec.renew_time, spec.acquire_time,
                  spec.lease_duration_seconds, spec.lease_transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, self._now()

    def _expired(self, spec: client.V1LeaseSpec) -> bool:
        """Unchanged for its whole duration, on our clock since we saw it change (never its renewTime)."""
        duration = dt.timedelta(seconds=spec.lease_duration_seconds or self.lease_seconds)
        return self._now() > self._observed_at + duration

    def _became_leader(self, now: dt.datetime, first: bool) -> None:
        if first:
            log.info("became leader as %s", self.identity)
        was_leading = self.is_leader
        self._leading_until = now + dt.timedelta(seconds=self.lease_seconds - self.renew_seconds)
        if not was_leading:
            self.on_elected()
