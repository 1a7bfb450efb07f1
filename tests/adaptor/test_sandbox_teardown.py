"""What a stop could not remove stays recorded and is retried; ``InstanceRequest.attempt``
counts the creations of a sandbox. The pod network here is the recording fake; the
same retry against real VXLAN devices and iptables rules is in
``tests/adaptor/test_sandbox_netns.py``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from adaptor.lifecycle import ManagerConfig, SandboxContext
from adaptor.record import SandboxRecord
from adaptor.sandbox import Sandbox
from adaptor.server import Daemon
from adaptor.states import Holdings, SandboxState
from adaptor.store import SandboxStore
from adaptor.tls import AgentTLS
from providers.base import (
    NODE_TAG,
    SANDBOX_TAG,
    Instance,
    InstanceSpec,
    ProviderUnavailable,
)
from providers.fake import InMemoryProvider
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.adaptor.helpers import eventually, expect_error
from tests.adaptor.shim import Shim
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork


@pytest.fixture
async def sweeping(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork
) -> AsyncIterator[Daemon]:
    settings = make_settings(short_dir, cloud.port, orphan_sweep_interval=timedelta(0))
    async with Daemon(settings, cloud.provider, network=network,
                      delete_retry=FAST_RETRY) as daemon:
        yield daemon


async def stopped_with_a_stuck_tunnel(
    daemon: Daemon, cloud: FakeCloud, network: FakeWorkerNetwork, sid: str
) -> int:
    """Start ``sid``, then StopVM while its tunnel teardown fails; its VXLAN id."""
    shim = Shim(daemon.settings.socket)
    await shim.create_vm(sid)
    await shim.start_vm(sid)
    vni = network.allocated[sid]
    network.fail_teardowns = 1
    await shim.stop_vm(sid)  # the shim sees success, as before: the VM is gone
    assert cloud.provider.instances == {}
    assert sid in network.active  # the tunnel is still there...
    record = SandboxStore(daemon.settings.pods_dir).load(sid)
    assert record is not None  # ...and recorded, not dropped
    assert record.state is SandboxState.STOP_FAILED and record.tunnel
    assert record.instance_id == "" and record.vxlan_id == vni
    assert network.allocated[sid] == vni  # its VXLAN id is not handed out again
    assert daemon.manager is not None
    sandbox = daemon.manager.sandbox(sid)
    assert sandbox is not None and sandbox.state.holds == Holdings(tunnel=True)
    return vni


async def test_the_sweep_retries_a_failed_tunnel_teardown(
    sweeping: Daemon, cloud: FakeCloud, network: FakeWorkerNetwork
) -> None:
    await stopped_with_a_stuck_tunnel(sweeping, cloud, network, "sb-tun")
    assert sweeping.sweeper is not None
    network.fail_teardowns = 1  # still failing: kept for the next sweep
    assert (await sweeping.sweeper.sweep()).stops_retried == ()
    assert "sb-tun" in network.active and "sb-tun" in network.allocated
    result = await sweeping.sweeper.sweep()
    assert result.stops_retried == ("sb-tun",)
    assert network.active == {} and network.allocated == {}
    assert sweeping.manager is not None and sweeping.manager.record("sb-tun") is None
    assert not os.path.exists(os.path.join(sweeping.settings.pods_dir, "sb-tun"))  # noqa: ASYNC240


async def test_the_next_stop_vm_retries_a_failed_tunnel_teardown(
    daemon: Daemon, cloud: FakeCloud, network: FakeWorkerNetwork, shim: Shim
) -> None:
    await stopped_with_a_stuck_tunnel(daemon, cloud, network, "sb-again")
    # StartVM makes no second VM over a tunnel it still has to remove.
    exc = await expect_error(shim.start_vm("sb-again"))
    assert exc.message == "sandbox sb-again is being stopped: its tunnel could not be removed yet"
    await shim.stop_vm("sb-again")
    assert network.active == {} and network.allocated == {}
    assert daemon.manager is not None and daemon.manager.record("sb-again") is None
    assert cloud.provider.create_calls == 1


async def test_a_stuck_tunnel_survives_a_restart_and_is_retried(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork
) -> None:
    settings = make_settings(short_dir, cloud.port, orphan_sweep_interval=timedelta(0))
    async with Daemon(settings, cloud.provider, network=network,
                      delete_retry=FAST_RETRY) as first:
        vni = await stopped_with_a_stuck_tunnel(first, cloud, network, "sb-restart")
    network.allocator.release("sb-restart")  # a new process: nothing allocated yet
    async with Daemon(settings, cloud.provider, network=network,
                      delete_retry=FAST_RETRY) as second:
        assert network.allocated == {"sb-restart": vni}  # still reserved
        assert second.sweeper is not None
        assert (await second.sweeper.sweep()).stops_retried == ("sb-restart",)
        assert network.active == {} and network.allocated == {}


async def test_an_undone_start_keeps_a_tunnel_it_could_not_remove(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork
) -> None:
    cloud.boot = False  # the forwarder never answers: StartVM undoes itself
    settings = make_settings(short_dir, cloud.port, proxy_timeout=timedelta(seconds=0.3))
    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY) as d:
        shim = Shim(settings.socket)
        await shim.create_vm("sb-undo")
        network.fail_teardowns = 1
        await expect_error(shim.start_vm("sb-undo"))
        assert cloud.provider.instances == {}  # the VM is deleted
        assert d.manager is not None
        record = d.manager.record("sb-undo")
        assert record is not None and record.state is SandboxState.STOP_FAILED
        assert record.tunnel and "sb-undo" in network.active
        await shim.stop_vm("sb-undo")
        assert network.active == {} and d.manager.record("sb-undo") is None


async def test_attempt_counts_creations_after_a_deleted_instance(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    await shim.create_vm("sb-att")
    cloud.provider.faults.no_ips = True  # StartVM fails after the instance exists
    await expect_error(shim.start_vm("sb-att"))
    cloud.provider.faults.no_ips = False
    await shim.start_vm("sb-att")
    first, second = cloud.provider.created
    assert cloud.provider.requests[first].attempt == 0
    assert cloud.provider.requests[second].attempt == 1
    assert daemon.manager is not None
    record = daemon.manager.record("sb-att")
    assert record is not None and record.attempt == 1
    tags = cloud.provider.requests[second].tags
    assert tags["peerpods-sandbox"] == "sb-att" and tags["peerpods-node"] == "node-1"
    await shim.stop_vm("sb-att")


async def test_a_failed_creation_is_retried_with_the_same_attempt(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    await shim.create_vm("sb-same")
    cloud.provider.faults.fail_create = ProviderUnavailable("no capacity")
    await expect_error(shim.start_vm("sb-same"))
    cloud.provider.faults.fail_create = None
    await shim.start_vm("sb-same")
    (only,) = cloud.provider.created
    assert cloud.provider.requests[only].attempt == 0  # no instance was deleted in between
    await shim.stop_vm("sb-same")


async def test_start_vm_takes_over_a_start_that_died_in_another_process(
    daemon: Daemon, cloud: FakeCloud, shim: Shim, caplog: pytest.LogCaptureFixture
) -> None:
    """Rolling update: the old adaptor held the start lock and died mid-StartVM, leaving a
    ``starting`` record and an instance; the new adaptor's StartVM removes that instance
    first and makes exactly one new VM."""
    await shim.create_vm("sb-taken")
    store = SandboxStore(daemon.settings.pods_dir)
    record = store.load("sb-taken")
    assert record is not None
    cloud.provider.add_instance(Instance(id="i-left", name=record.instance_name,
                                         ips=(IPv4Address("127.0.0.250"),),
                                         tags={NODE_TAG: "node-1", SANDBOX_TAG: "sb-taken"}))
    held = store.try_start_lock("sb-taken")  # the other process, mid-StartVM
    assert held is not None
    store.save(record.replace(state=SandboxState.STARTING, instance_id="i-left",
                              instance_ips=("127.0.0.250",)))
    start = asyncio.create_task(shim.start_vm("sb-taken"))
    await eventually(lambda: "another adaptor process is starting this sandbox" in caplog.text)
    assert not start.done()  # waiting for the other process
    store.release_start_lock(held)  # it dies
    await start
    assert "i-left" not in cloud.provider.instances
    assert len(cloud.provider.instances) == 1 and cloud.provider.create_calls == 1
    await shim.stop_vm("sb-taken")


async def test_a_sandbox_keeps_what_its_stop_could_not_remove(tmp_path: Path) -> None:
    """The Sandbox object alone (no daemon, no sockets): a running sandbox whose tunnel
    teardown fails settles in STOP_FAILED holding the tunnel and its VXLAN id, on disk too;
    ``retry_stop()`` finishes the job."""
    network = FakeWorkerNetwork()
    provider = InMemoryProvider()
    store = SandboxStore(str(tmp_path))
    ctx = SandboxContext(ManagerConfig(str(tmp_path), "node-1", delete_retry=FAST_RETRY),
                         provider, network, AgentTLS(disabled=True), store)
    pod_network = await network.inspect("sb-unit", "/run/netns/x")
    provider.add_instance(Instance(id="i-1", name="podvm-x", ips=(IPv4Address("127.0.0.9"),)))
    network.active["sb-unit"] = ("127.0.0.9",)
    record = SandboxRecord(
        sandbox_id="sb-unit", pod_name="p", pod_namespace="ns", netns_path="/run/netns/x",
        instance_name="podvm-x", socket_path=str(tmp_path / "sb-unit" / "agent.ttrpc"),
        spec=InstanceSpec(), pod_network=pod_network, user_data="", fingerprint="f",
        state=SandboxState.RUNNING, instance_id="i-1", instance_ips=("127.0.0.9",),
        tunnel=True,
    )
    store.save(record)
    sandbox = Sandbox(ctx, record)
    network.fail_teardowns = 1
    assert await sandbox.stop() is False
    assert sandbox.state.phase is SandboxState.STOP_FAILED
    assert sandbox.state.holds == Holdings(tunnel=True)
    assert provider.instances == {} and "sb-unit" in network.active
    assert network.allocated == {"sb-unit": pod_network.vxlan_id}
    saved = store.load("sb-unit")
    assert saved is not None and saved.state is SandboxState.STOP_FAILED and saved.tunnel
    assert await sandbox.retry_stop() is True
    assert sandbox.gone and network.active == {} and network.allocated == {}
    assert store.load("sb-unit") is None
