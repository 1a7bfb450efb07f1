"""peerpod-ctrl with ``--leader-elect``: of two replicas only the Lease holder reconciles (and
deletes pod VMs); the other takes over once the holder's lease runs out or is released; a
replica that loses the Lease stops reconciling and exits with status 1."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from k8s.access import make_client
from k8s.controller import PeerPodController
from k8s.ctrl_main import CtrlSettings, run
from k8s.leader import JITTER, LEASE_NAME, NO_NAMESPACE, LeaderElector, run_elected
from providers.base import ProviderUnavailable
from runtime.settings import parse_settings
from tests.adaptor.helpers import eventually
from tests.fakes.kubeapi import FakeKubeAPI
from tests.k8s.conftest import FAST, target_for
from tests.k8s.test_controller import peerpod
from tests.k8s.test_ctrl_main import get
from tests.k8s.test_leader import NS, QUICK, lease_spec


@dataclass
class Cloud:
    """The provider of one replica: records each delete; ``down`` makes them fail."""

    down: bool = False
    attempts: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    async def delete_instance(self, instance_id: str) -> None:
        self.attempts.append(instance_id)
        if self.down:
            raise ProviderUnavailable("cloud API unreachable")
        self.deleted.append(instance_id)

    async def aclose(self) -> None:
        pass


@dataclass
class Replica:
    elector: LeaderElector
    controller: PeerPodController
    cloud: Cloud
    stop: asyncio.Event
    task: asyncio.Task[bool] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(run_elected(self.elector, self.controller.run,
                                                    self.stop))

    async def kill(self) -> None:
        """A crash: no release, nothing reconciled any more."""
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.controller.aclose()


@pytest.fixture
async def replicas(kubeapi: FakeKubeAPI, tmp_path: Path) -> AsyncIterator[Callable[[str], Replica]]:
    made: list[Replica] = []
    client = make_client(target_for(kubeapi, tmp_path, "ctrl-token"), field_manager="test",
                         timeout=QUICK.request_timeout)

    def make(identity: str) -> Replica:
        cloud = Cloud()
        controller = PeerPodController(client, lambda _name: cloud,  # type: ignore[arg-type, return-value]
                                       backoff=FAST)
        elector = LeaderElector(client, NS, identity=identity, timing=QUICK)
        made.append(Replica(elector, controller, cloud, asyncio.Event()))
        return made[-1]

    yield make
    for replica in made:
        replica.stop.set()
        if replica.task is not None:
            await asyncio.gather(replica.task, return_exceptions=True)
        await replica.controller.aclose()
    await client.close()


def deleting(name: str, instance_id: str) -> dict[str, Any]:
    """A PeerPod whose Pod is gone: being deleted, its finalizer still there."""
    obj = peerpod(name, instance_id, f"uid-{name}")
    obj["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    return obj


async def test_only_the_leader_deletes_vms_and_the_other_takes_over(
        kubeapi: FakeKubeAPI, replicas: Callable[[str], Replica]) -> None:
    first, second = replicas("first"), replicas("second")
    first.start()
    await asyncio.wait_for(first.elector.leading.wait(), timeout=5)
    second.start()
    kubeapi.put("peerpods", deleting("web-resource-00001", "i-1"))
    await kubeapi.wait_for(lambda: kubeapi.get("peerpods", "web-resource-00001", "prod") is None)
    assert first.cloud.deleted == ["i-1"]

    # The leader's cloud calls fail, so the PeerPod stays; the waiting replica leaves it be.
    first.cloud.down = True
    kubeapi.put("peerpods", deleting("web-resource-00002", "i-2"))
    await eventually(lambda: first.cloud.attempts.count("i-2") >= 3, timeout=10)
    assert second.cloud.attempts == [] and not second.controller.watching.is_set()
    assert not second.elector.leading.is_set()
    assert lease_spec(kubeapi)["holderIdentity"] == "first"

    await first.kill()
    killed = time.monotonic()
    await asyncio.wait_for(second.elector.leading.wait(), timeout=QUICK.lease_duration + 5)
    elapsed = time.monotonic() - killed
    # once the lease it last renewed ran out, within about a lease duration
    slack = 2 * (1 + JITTER) * QUICK.retry_period
    assert QUICK.lease_duration - 2 * QUICK.retry_period <= elapsed
    assert elapsed <= QUICK.lease_duration + slack + 1.0
    spec = lease_spec(kubeapi)
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("second", 1)
    await kubeapi.wait_for(lambda: kubeapi.get("peerpods", "web-resource-00002", "prod") is None)
    assert second.cloud.deleted == ["i-2"] and first.cloud.deleted == ["i-1"]


async def test_a_leader_cut_off_from_the_api_server_stops_reconciling(
        kubeapi: FakeKubeAPI, replicas: Callable[[str], Replica]) -> None:
    leader = replicas("leader")
    leader.start()
    await asyncio.wait_for(leader.controller.watching.wait(), timeout=5)
    assert leader.task is not None
    await kubeapi.stop()
    try:
        kept = await asyncio.wait_for(leader.task, timeout=QUICK.lease_duration + 5)
    finally:
        await kubeapi.start()
    assert kept is False and not leader.elector.leading.is_set()


def settings(kubeapi: FakeKubeAPI, tmp_path: Path, port: int) -> CtrlSettings:
    kubeconfig = kubeapi.kubeconfig(tmp_path / "ctrl-kubeconfig", "ctrl-token")
    return parse_settings(CtrlSettings, [
        "--leader-elect", "--kubeconfig", str(kubeconfig),
        "--health-probe-bind-address", f"127.0.0.1:{port}"], {})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_account(tmp_path: Path) -> str:
    directory = tmp_path / "serviceaccount"
    directory.mkdir(exist_ok=True)
    (directory / "namespace").write_text(NS)
    return str(directory)


async def test_leader_election_needs_the_in_cluster_namespace(
        kubeapi: FakeKubeAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="peerpod-ctrl"):
        code = await run(settings(kubeapi, tmp_path, free_port()), {}, asyncio.Event(),
                         service_account_dir=str(tmp_path / "none"))
    assert code == 1
    assert any(NO_NAMESPACE in r.getMessage() for r in caplog.records)
    assert not [c for c in kubeapi.calls if c.resource == "leases"]


async def test_peerpod_ctrl_replicas_hand_over_and_exit_1_on_a_lost_lease(
        kubeapi: FakeKubeAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sa_dir = service_account(tmp_path)
    ports = free_port(), free_port()
    stops = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(run(settings(kubeapi, tmp_path, ports[0]), {}, stops[0],
                                    timing=QUICK, service_account_dir=sa_dir))
    await kubeapi.wait_for(lambda: kubeapi.get("leases", LEASE_NAME, NS) is not None)
    holder = lease_spec(kubeapi)["holderIdentity"]
    assert holder.startswith(f"{socket.gethostname()}_")
    second = asyncio.create_task(run(settings(kubeapi, tmp_path, ports[1]), {}, stops[1],
                                     timing=QUICK, service_account_dir=sa_dir))
    # waiting to lead: alive, not ready (no PeerPod watch)
    await until_status(ports[1], "/healthz", 200)
    assert await get(ports[1], "/readyz") == 503
    await until_status(ports[0], "/readyz", 200)

    stops[0].set()  # SIGTERM: stop reconciling, release the lease
    assert await first == 0
    released = time.monotonic()
    await kubeapi.wait_for(lambda: lease_spec(kubeapi)["holderIdentity"] not in ("", holder))
    assert time.monotonic() - released < QUICK.lease_duration  # no wait for it to run out
    assert lease_spec(kubeapi)["leaseTransitions"] == 1
    await until_status(ports[1], "/readyz", 200)

    with caplog.at_level(logging.ERROR, logger="peerpod-ctrl"):
        await kubeapi.stop()
        try:
            code = await asyncio.wait_for(second, timeout=QUICK.lease_duration + 5)
        finally:
            await kubeapi.start()
    assert code == 1
    assert any(r.getMessage() == "leader election lost" for r in caplog.records)


async def until_status(port: int, path: str, status: int, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                if await get(port, path) == status:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.02)


async def test_without_leader_election_it_reconciles_at_once_and_leaves_leases_alone(
        kubeapi: FakeKubeAPI, tmp_path: Path) -> None:
    port = free_port()
    kubeconfig = kubeapi.kubeconfig(tmp_path / "ctrl-kubeconfig", "ctrl-token")
    alone = parse_settings(CtrlSettings, ["--kubeconfig", str(kubeconfig),
                                          "--health-probe-bind-address", f"127.0.0.1:{port}"], {})
    stop = asyncio.Event()
    task = asyncio.create_task(run(alone, {}, stop, timing=QUICK,
                                   service_account_dir=service_account(tmp_path)))
    await until_status(port, "/readyz", 200)
    stop.set()
    assert await task == 0
    assert not [c for c in kubeapi.calls if c.resource == "leases"]
    assert kubeapi.get("leases", LEASE_NAME, NS) is None
