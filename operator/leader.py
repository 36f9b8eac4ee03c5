"""Leader election on a coordination.k8s.io Lease, with client-go's semantics: one holder at a
time, renewed well within its duration, taken over only once expired. Only the leader acts, so two
replicas never act twice; since all rollout state is in each Model's status, a new leader simply
resumes."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import uuid
from collections.abc import Callable

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

log = logging.getLogger("serin.leader")


class LeaderElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str = "serin-operator",
                 lease_seconds: int = 15, renew_seconds: float = 5.0, identity: str | None = None) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace, self.name = namespace, name
        self.lease_seconds, self.renew_seconds = lease_seconds, renew_seconds
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._leading_until: dt.datetime | None = None
        # Called on becoming leader (again): the reconcile loops of a standby sleep until then.
        self.on_elected: Callable[[], None] = lambda: None

    @property
    def is_leader(self) -> bool:
        # Stop acting a little before the lease could expire for others: clocks and latency.
        return self._leading_until is not None and dt.datetime.now(dt.UTC) < self._leading_until

    async def run(self) -> None:
        while True:
            try:
                await self._try_acquire_or_renew()
            except (TimeoutError, ApiException, OSError) as err:
                log.warning("lease %s/%s: %s", self.namespace, self.name, err)
            await asyncio.sleep(self.renew_seconds)

    async def release(self) -> None:
        """Hands the lease over at shutdown so a standby takes over without waiting for expiry."""
        if not self.is_leader:
            return
        self._leading_until = None
        try:
            lease = await self.coordination.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.lease_duration_seconds = 1
                lease.spec.renew_time = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
                await self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except (ApiException, OSError) as err:
            log.warning("releasing lease: %s", err)

    async def _try_acquire_or_renew(self) -> None:
        now = dt.datetime.now(dt.UTC)
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
                await self.coordination.create_namespaced_lease(self.namespace, body)
            except ApiException as create_err:
                if create_err.status == 409:
                    return  # someone else created it first
                raise
            self._became_leader(now, first=True)
            return
        spec = lease.spec
        holder = spec.holder_identity
        renewed = spec.renew_time or spec.acquire_time
        expired = renewed is None or now > renewed + dt.timedelta(seconds=spec.lease_duration_seconds or 0)
        if holder != self.identity and not expired:
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
            await self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as err:
            if err.status == 409:
                self._leading_until = None
                return
            raise
        self._became_leader(now, first=taking_over)

    def _became_leader(self, now: dt.datetime, first: bool) -> None:
        if first:
            log.info("became leader as %s", self.identity)
        was_leading = self.is_leader
        self._leading_until = now + dt.timedelta(seconds=self.lease_seconds - self.renew_seconds)
        if not was_leading:
            self.on_elected()
