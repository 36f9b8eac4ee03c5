"""Leader election judged by our own clock only (security review, issue 32, item 14).

As client-go's leaderelection does: another replica's Lease is expired when we have seen no change
to it for its leaseDuration, measured on our clock from when we saw it change. Its renewTime is
another machine's clock and is never compared with ours, so a skewed clock can neither make two
replicas lead at once nor keep a dead leader's Lease alive. No apiserver: a fake Lease API and an
injected clock, stepped as the elector's own loop would (renew_seconds apart)."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from serin.operator.leader import LeaderElector

LEASE, RENEW = 15, 5
T0 = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> dt.datetime:
        return self.at

    def step(self, seconds: float) -> None:
        self.at += dt.timedelta(seconds=seconds)


class FakeLeases:
    """One Lease, with the apiserver's optimistic concurrency (resourceVersion) and nothing else."""

    def __init__(self) -> None:
        self.spec: client.V1LeaseSpec | None = None
        self.version = 0

    def held_by(self, holder: str, renewed: dt.datetime, duration: int = LEASE) -> None:
        """Another replica writes the Lease (a take-over or a renewal) at `renewed`, its own clock."""
        self.spec = client.V1LeaseSpec(holder_identity=holder, lease_duration_seconds=duration,
                                       acquire_time=renewed, renew_time=renewed, lease_transitions=0)
        self.version += 1

    def _lease(self) -> client.V1Lease:
        assert self.spec is not None
        return client.V1Lease(metadata=client.V1ObjectMeta(name="serin-operator", namespace="ns",
                                                           resource_version=str(self.version)),
                              spec=copy.copy(self.spec))  # what the caller changes is not stored

    async def read_namespaced_lease(self, name: str, namespace: str) -> client.V1Lease:
        if self.spec is None:
            raise ApiException(status=404)
        return self._lease()

    async def create_namespaced_lease(self, namespace: str, body: client.V1Lease) -> client.V1Lease:
        if self.spec is not None:
            raise ApiException(status=409)
        self.spec, self.version = body.spec, self.version + 1
        return self._lease()

    async def replace_namespaced_lease(self, name: str, namespace: str, body: client.V1Lease) -> client.V1Lease:
        if body.metadata.resource_version != str(self.version):
            raise ApiException(status=409)
        self.spec, self.version = body.spec, self.version + 1
        return self._lease()

    @property
    def holder(self) -> str:
        assert self.spec is not None
        return str(self.spec.holder_identity)


def elector(leases: FakeLeases, clock: Clock) -> LeaderElector:
    api: Any = None  # never used: the Lease API is the fake
    return LeaderElector(api, "ns", lease_seconds=LEASE, renew_seconds=RENEW, identity="us",
                         coordination=leases, now=clock)


@pytest.mark.parametrize("skew", [
    pytest.param(-30, id="their-clock-30s-behind"),
    pytest.param(0, id="same-clock"),
    pytest.param(+30, id="their-clock-30s-ahead"),
])
def test_another_leader_is_judged_by_our_clock_only(skew: int) -> None:
    """While the other replica renews, we never take over, however far its renewTime is from our
    clock; once it stops, we take over after exactly leaseDuration of our own time without a change."""
    clock, leases = Clock(), FakeLeases()
    us = elector(leases, clock)
    their_clock = dt.timedelta(seconds=skew)

    async def scenario() -> None:
        for _ in range(12):  # a minute of the other replica renewing every RENEW seconds
            leases.held_by("them", clock() + their_clock)
            await us.try_acquire_or_renew()
            assert leases.holder == "them" and not us.is_leader, f"took a live Lease at {clock() - T0}"
            clock.step(RENEW)
        last_seen_change = clock() - dt.timedelta(seconds=RENEW)
        while clock() - last_seen_change <= dt.timedelta(seconds=LEASE):  # it stopped renewing
            await us.try_acquire_or_renew()
            assert leases.holder == "them" and not us.is_leader, f"took over {clock() - last_seen_change} after"
            clock.step(RENEW)
        await us.try_acquire_or_renew()  # 20 s (> LEASE) of our time since the Lease last changed
        assert leases.holder == "us" and us.is_leader
        assert leases.spec is not None and leases.spec.lease_transitions == 1
        assert leases.spec.acquire_time == leases.spec.renew_time == clock()

    asyncio.run(scenario())


def test_a_lease_first_seen_is_waited_out_in_full() -> None:
    """A renewTime long past (or a clock far ahead) proves nothing: a Lease we have just found is
    someone's until we have watched it not change for its leaseDuration."""
    clock, leases = Clock(), FakeLeases()
    leases.held_by("them", T0 - dt.timedelta(hours=1))
    us = elector(leases, clock)

    async def scenario() -> None:
        for _ in range(LEASE // RENEW + 1):  # 0, 5, 10, 15 s: not yet
            await us.try_acquire_or_renew()
            assert leases.holder == "them"
            clock.step(RENEW)
        await us.try_acquire_or_renew()
        assert leases.holder == "us"

    asyncio.run(scenario())


def test_a_released_lease_is_taken_after_its_short_duration() -> None:
    """release() leaves the Lease 1 s long: a standby takes it on its first tick past that second."""
    clock, leases = Clock(), FakeLeases()
    them = LeaderElector(None, "ns", lease_seconds=LEASE, renew_seconds=RENEW, identity="them",  # type: ignore[arg-type]
                         coordination=leases, now=clock)
    us = elector(leases, clock)

    async def scenario() -> None:
        await them.try_acquire_or_renew()
        await us.try_acquire_or_renew()
        assert them.is_leader and not us.is_leader
        clock.step(RENEW)
        await them.release()
        assert not them.is_leader
        await us.try_acquire_or_renew()  # sees the release: the Lease changed just now
        assert leases.holder == "them"
        clock.step(RENEW)
        await us.try_acquire_or_renew()
        assert leases.holder == "us" and us.is_leader

    asyncio.run(scenario())


def test_the_leader_stops_acting_before_its_lease_could_expire_for_others() -> None:
    """is_leader's margin: a leader that cannot renew stops acting renew_seconds before the others'
    leaseDuration (from when they last saw its renewal) is up."""
    clock, leases = Clock(), FakeLeases()
    us = elector(leases, clock)

    async def scenario() -> None:
        await us.try_acquire_or_renew()
        assert us.is_leader
        clock.step(LEASE - RENEW - 0.001)
        assert us.is_leader
        clock.step(0.001)
        assert not us.is_leader
        await us.try_acquire_or_renew()  # still ours: renewed
        assert us.is_leader

    asyncio.run(scenario())
