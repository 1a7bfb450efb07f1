"""Leader election (k8s/leader.py) against the loopback kube-apiserver's Lease, as client-go's
``tools/leaderelection`` behaves: the record's fields, optimistic concurrency through
``resourceVersion``, renewal, loss and release."""

from __future__ import annotations

import asyncio
import copy
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from k8s.access import make_client
from k8s.leader import LEASE_NAME, LeaderElector, Timing, micro_time, new_identity
from runtime.errors import UsageError
from tests.fakes.kubeapi import FakeKubeAPI
from tests.k8s.conftest import target_for

NS = "confidential-containers-system"
# short enough for tests, in the ratios client-go requires
QUICK = Timing(lease_duration=2.0, renew_deadline=1.0, retry_period=0.2)
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

Clients = Callable[[], AsyncClient]


@pytest.fixture
async def clients(kubeapi: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[Clients]:
    made: list[AsyncClient] = []

    def make() -> AsyncClient:
        client = make_client(target_for(kubeapi, tmp_path, "ctrl-token"), field_manager="test",
                             timeout=QUICK.request_timeout)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def candidate(clients: Clients, identity: str | None = None) -> LeaderElector:
    return LeaderElector(clients(), NS, identity=identity or new_identity(), timing=QUICK)


def lease_spec(api: FakeKubeAPI) -> dict[str, Any]:
    lease = api.get("leases", LEASE_NAME, NS)
    assert lease is not None
    return dict(lease["spec"])


def rival_takes(api: FakeKubeAPI, holder: str = "rival") -> Callable[[], None]:
    """Another candidate's write of the Lease, landing first."""

    def write() -> None:
        now = micro_time()
        spec = {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": now,
                "renewTime": now, "leaseTransitions": 7}
        lease = copy.deepcopy(api.get("leases", LEASE_NAME, NS)) or {
            "metadata": {"name": LEASE_NAME, "namespace": NS}}
        api.put("leases", {**lease, "spec": spec})

    return write


def test_identity_is_hostname_and_a_random_suffix() -> None:
    first, second = new_identity(), new_identity()
    host = socket.gethostname()
    assert first.startswith(f"{host}_") and second.startswith(f"{host}_")
    assert first != second
    uuid.UUID(first.removeprefix(f"{host}_"))


def test_timing_is_checked_as_client_go_does() -> None:
    assert (Timing().lease_duration, Timing().renew_deadline, Timing().retry_period) == (
        15.0, 10.0, 2.0)
    assert Timing().request_timeout == 5.0
    for bad in ((10.0, 10.0, 2.0), (15.0, 2.0, 2.0), (0.5, 0.4, 0.1)):
        with pytest.raises(UsageError):
            Timing(*bad)


async def test_acquire_renew_release_and_take_over(kubeapi: FakeKubeAPI,
                                                   clients: Clients) -> None:
    first, second = candidate(clients), candidate(clients)
    await first.acquire()
    assert first.leading.is_set() and first.is_leader()
    created = lease_spec(kubeapi)
    assert created["holderIdentity"] == first.identity
    assert created["leaseDurationSeconds"] == 2 and created["leaseTransitions"] == 0
    assert MICRO_TIME.match(created["acquireTime"]) and MICRO_TIME.match(created["renewTime"])
    assert [c.verb for c in kubeapi.calls if c.resource == "leases"] == ["get", "create"]

    # the other candidate sees a valid lease held by someone else
    assert not await second.try_acquire_or_renew()
    assert lease_spec(kubeapi) == created

    rv = kubeapi.get("leases", LEASE_NAME, NS)["metadata"]["resourceVersion"]  # type: ignore[index]
    assert await first.try_acquire_or_renew()
    renewed = lease_spec(kubeapi)
    assert renewed["acquireTime"] == created["acquireTime"]
    assert renewed["renewTime"] >= created["renewTime"]
    assert renewed["leaseTransitions"] == 0
    assert kubeapi.get("leases", LEASE_NAME, NS)["metadata"]["resourceVersion"] != rv  # type: ignore[index]
    assert [c.verb for c in kubeapi.calls if c.resource == "leases"][-1] == "update"  # fast path

    await first.release()
    released = lease_spec(kubeapi)
    assert released["holderIdentity"] == "" and released["leaseDurationSeconds"] == 1
    assert released["leaseTransitions"] == 0 and not first.leading.is_set()

    # released: taken at once, with one more transition
    assert await second.try_acquire_or_renew()
    taken = lease_spec(kubeapi)
    assert taken["holderIdentity"] == second.identity and taken["leaseTransitions"] == 1
    assert taken["acquireTime"] > created["acquireTime"]
    assert not first.is_leader()
    await first.release()  # not the holder: nothing is written
    assert lease_spec(kubeapi) == taken


async def test_an_expired_lease_is_taken_once_unchanged_for_its_duration(
        kubeapi: FakeKubeAPI, clients: Clients) -> None:
    crashed = candidate(clients)
    assert await crashed.try_acquire_or_renew()  # then never renews
    waiting = candidate(clients)
    start = time.monotonic()
    await asyncio.wait_for(waiting.acquire(), timeout=QUICK.lease_duration + 5)
    elapsed = time.monotonic() - start
    # not before the lease ran out, by the waiting candidate's own clock
    assert elapsed >= QUICK.lease_duration - 0.05
    spec = lease_spec(kubeapi)
    assert spec["holderIdentity"] == waiting.identity and spec["leaseTransitions"] == 1


async def test_a_conflict_on_update_loses_the_race_cleanly(
        kubeapi: FakeKubeAPI, clients: Clients) -> None:
    now = micro_time()
    kubeapi.put("leases", {"metadata": {"name": LEASE_NAME, "namespace": NS}, "spec": {
        "holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now,
        "renewTime": now, "leaseTransitions": 6}})
    loser = candidate(clients)
    kubeapi.before(rival_takes(kubeapi), verb="update", resource="leases")
    assert not await loser.try_acquire_or_renew()  # its update carried a stale resourceVersion
    assert not loser.is_leader() and not loser.leading.is_set()
    assert lease_spec(kubeapi)["holderIdentity"] == "rival"
    assert not await loser.try_acquire_or_renew()  # now it sees the rival's fresh lease
    assert lease_spec(kubeapi)["holderIdentity"] == "rival"
    updates = [c for c in kubeapi.calls if (c.resource, c.verb) == ("leases", "update")]
    assert len(updates) == 1


async def test_a_conflict_on_create_loses_the_race_cleanly(
        kubeapi: FakeKubeAPI, clients: Clients) -> None:
    loser = candidate(clients)
    kubeapi.before(rival_takes(kubeapi), verb="create", resource="leases")
    assert not await loser.try_acquire_or_renew()  # 409 AlreadyExists
    assert not await loser.try_acquire_or_renew()
    assert not loser.is_leader()
    assert lease_spec(kubeapi)["holderIdentity"] == "rival"


async def test_a_leader_whose_lease_was_taken_steps_down_at_once(
        kubeapi: FakeKubeAPI, clients: Clients) -> None:
    leader = candidate(clients)
    await leader.acquire()
    holding = asyncio.create_task(leader.hold())
    rival_takes(kubeapi)()
    # the next renewal gets a 409, reads the Lease again and finds the rival
    await asyncio.wait_for(holding, timeout=QUICK.renew_deadline)
    assert not leader.leading.is_set() and not leader.is_leader()
    assert lease_spec(kubeapi)["holderIdentity"] == "rival"


async def test_the_api_server_down_past_the_renew_deadline_ends_leadership(
        kubeapi: FakeKubeAPI, clients: Clients) -> None:
    leader = candidate(clients)
    await leader.acquire()
    holding = asyncio.create_task(leader.hold())
    await kubeapi.wait_for(lambda: lease_spec(kubeapi)["renewTime"]
                           != lease_spec(kubeapi)["acquireTime"], timeout=5)
    await kubeapi.stop()
    down = time.monotonic()
    try:
        await asyncio.wait_for(holding, timeout=QUICK.lease_duration + 5)
        elapsed = time.monotonic() - down
    finally:
        await kubeapi.start()
    assert not leader.leading.is_set()
    # renewals were retried up to the deadline, and it stepped down before the lease it
    # last wrote ran out for the others
    assert QUICK.renew_deadline - QUICK.retry_period <= elapsed < QUICK.lease_duration


async def test_renewal_survives_a_short_outage(kubeapi: FakeKubeAPI, clients: Clients) -> None:
    leader = candidate(clients)
    await leader.acquire()
    holding = asyncio.create_task(leader.hold())
    kubeapi.fail(500, resource="leases", times=2)  # fast path and first re-read fail
    before = lease_spec(kubeapi)["renewTime"]
    await kubeapi.wait_for(lambda: lease_spec(kubeapi)["renewTime"] != before, timeout=5)
    assert not holding.done() and leader.leading.is_set()
    holding.cancel()
    await asyncio.gather(holding, return_exceptions=True)
