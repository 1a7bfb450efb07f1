"""Failures at the edges: the cloud, the pod VM's forwarder, the caller going away."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from adaptor.manager import RetryPolicy
from adaptor.sandbox import SandboxState
from adaptor.server import Daemon
from protocols.kata import agent_pb2, health_pb2
from protocols.ttrpc import Client, Code
from providers.base import QuotaExceeded
from tests.adaptor.conftest import FAST_RETRY, make_settings
from tests.adaptor.helpers import eventually, expect_error
from tests.adaptor.shim import Shim
from tests.fakes.cloud import FakeCloud
from tests.fakes.network import FakeWorkerNetwork


async def test_provider_fails_on_create(
    daemon: Daemon, cloud: FakeCloud, shim: Shim, network: FakeWorkerNetwork
) -> None:
    await shim.create_vm("sb-quota")
    cloud.provider.faults.fail_create = QuotaExceeded("no capacity for t3.small in us-east-1a")
    exc = await expect_error(shim.start_vm("sb-quota"))
    assert exc.code == Code.RESOURCE_EXHAUSTED
    assert exc.message == "creating an instance : no capacity for t3.small in us-east-1a"
    assert network.active == {}
    # The sandbox stays and a retry of StartVM works once the cloud recovers.
    cloud.provider.faults.fail_create = None
    await shim.start_vm("sb-quota")
    assert len(cloud.provider.instances) == 1
    await shim.stop_vm("sb-quota")
    assert cloud.provider.instances == {}


async def test_instance_without_ip(daemon: Daemon, cloud: FakeCloud, shim: Shim) -> None:
    await shim.create_vm("sb-noip")
    cloud.provider.faults.no_ips = True
    exc = await expect_error(shim.start_vm("sb-noip"))
    assert exc.message == "instance IP is not available"
    assert cloud.provider.instances == {}  # deleted again
    assert cloud.provider.deleted == cloud.provider.created


async def test_tunnel_setup_failure_deletes_instance(
    daemon: Daemon, cloud: FakeCloud, shim: Shim, network: FakeWorkerNetwork
) -> None:
    await shim.create_vm("sb-tun")
    network.fail_setup = True
    exc = await expect_error(shim.start_vm("sb-tun"))
    assert "injected tunnel setup failure" in exc.message
    assert cloud.provider.instances == {}


async def test_forwarder_never_answers(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork
) -> None:
    cloud.boot = False
    settings = make_settings(short_dir, cloud.port, proxy_timeout=timedelta(seconds=0.6))
    async with Daemon(settings, cloud.provider, network=network, delete_retry=FAST_RETRY):
        shim = Shim(settings.socket)
        await shim.create_vm("sb-dead")
        loop = asyncio.get_running_loop()
        started = loop.time()
        exc = await expect_error(shim.start_vm("sb-dead"))
        assert loop.time() - started < 3
        assert exc.code == Code.DEADLINE_EXCEEDED
        assert "did not answer within 0.6s" in exc.message
        assert cloud.provider.instances == {}
        assert network.active == {}
        assert ("teardown", "sb-dead") in network.calls
        # The caller's own deadline bounds StartVM too (proxy timeout 5 s here).
        assert (await shim.version()) == "0.0.0"


async def test_caller_deadline_bounds_start(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    cloud.boot = False
    await shim.create_vm("sb-deadline")
    exc = await expect_error(shim.start_vm("sb-deadline", timeout=0.5))
    assert exc.code == Code.DEADLINE_EXCEEDED
    await eventually(lambda: cloud.provider.instances == {} and len(cloud.provider.deleted) == 1)
    manager = daemon.manager
    assert manager is not None
    record = manager.record("sb-deadline")
    assert record is not None and record.state is SandboxState.CREATED
    assert record.instance_id == ""


async def test_delete_fails_then_succeeds(daemon: Daemon, cloud: FakeCloud, shim: Shim) -> None:
    await shim.create_vm("sb-del")
    await shim.start_vm("sb-del")
    cloud.provider.faults.fail_delete_times = 2  # FAST_RETRY makes 3 attempts
    await shim.stop_vm("sb-del")
    assert cloud.provider.instances == {}
    assert cloud.provider.delete_calls == 3


async def test_delete_keeps_failing(
    daemon: Daemon, cloud: FakeCloud, shim: Shim, network: FakeWorkerNetwork
) -> None:
    await shim.create_vm("sb-stuck")
    await shim.start_vm("sb-stuck")
    instance_id = cloud.provider.created[0]
    cloud.provider.faults.fail_delete_times = 100
    exc = await expect_error(shim.stop_vm("sb-stuck"))
    assert exc.code == Code.UNAVAILABLE
    assert f"deleting instance {instance_id} failed after 3 attempts" in exc.message
    manager = daemon.manager
    assert manager is not None
    record = manager.record("sb-stuck")
    assert record is not None and record.state is SandboxState.STOP_FAILED
    assert record.instance_id == instance_id
    # StartVM does not make a second VM for it; a later StopVM finishes the job.
    exc = await expect_error(shim.start_vm("sb-stuck"))
    assert "could not be deleted yet" in exc.message
    cloud.provider.faults.fail_delete_times = 0
    await shim.stop_vm("sb-stuck")
    assert cloud.provider.instances == {}
    assert manager.record("sb-stuck") is None
    assert "sb-stuck" not in network.allocated


async def test_forwarder_connection_drops_and_proxy_reconnects(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    path = await shim.create_vm("sb-drop")
    await shim.start_vm("sb-drop")
    agent, forwarder = cloud.agents["sb-drop"], cloud.forwarders["sb-drop"]
    async with await Client.connect_unix(path) as conn:
        wait = asyncio.create_task(conn.call(
            "grpc.AgentService", "WaitProcess",
            agent_pb2.WaitProcessRequest(container_id="c1"), agent_pb2.WaitProcessResponse))
        await eventually(lambda: agent.waiting > 0)
        await forwarder.drop_connections()
        exc = await expect_error(wait)
        assert exc.code == Code.UNAVAILABLE
        # The shim's connection to the proxy survives; the next call dials again.
        health = await conn.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                 health_pb2.HealthCheckResponse, timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        await conn.call_raw("grpc.AgentService", "StartContainer", b"\x0a\x02c1", timeout=10)
        assert agent.methods()[-1] == "StartContainer"
    await shim.stop_vm("sb-drop")


@pytest.mark.parametrize("how", ["deadline", "disconnect"])
async def test_start_cancelled_while_creating(
    daemon: Daemon, cloud: FakeCloud, shim: Shim, how: str
) -> None:
    cloud.provider.faults.create_delay = 0.5
    await shim.create_vm("sb-cancel")
    if how == "deadline":
        exc = await expect_error(shim.start_vm("sb-cancel", timeout=0.1))
        assert exc.code == Code.DEADLINE_EXCEEDED
    else:
        call = asyncio.create_task(shim.start_vm("sb-cancel"))
        await eventually(lambda: cloud.provider.create_calls == 1)
        call.cancel()  # closes the shim's connection
        with pytest.raises(asyncio.CancelledError):
            await call
    assert cloud.provider.created == []  # still being created
    await eventually(lambda: len(cloud.provider.deleted) == 1)
    assert cloud.provider.instances == {}
    # A retry after the clean-up makes exactly one new VM.
    cloud.provider.faults.create_delay = 0
    await shim.start_vm("sb-cancel")
    assert len(cloud.provider.instances) == 1
    await shim.stop_vm("sb-cancel")


async def test_retry_while_abandoned_create_is_pending(
    daemon: Daemon, cloud: FakeCloud, shim: Shim
) -> None:
    cloud.provider.faults.create_delay = 0.4
    await shim.create_vm("sb-race")
    await expect_error(shim.start_vm("sb-race", timeout=0.1))
    # This StartVM arrives while the abandoned creation is still running: it waits for its
    # clean-up and then creates its own VM, so there is never more than one.
    await shim.start_vm("sb-race")
    assert len(cloud.provider.instances) == 1
    assert cloud.provider.create_calls == 2
    await shim.stop_vm("sb-race")
    assert cloud.provider.instances == {}


async def test_shutdown_finishes_the_clean_up_of_an_abandoned_start(
    short_dir: str, cloud: FakeCloud, network: FakeWorkerNetwork
) -> None:
    """The caller of StartVM left, and the daemon is stopped while the instance is being
    deleted: shutdown waits for the deletion instead of abandoning it."""
    cloud.boot = False  # the forwarder never answers: StartVM waits until the caller leaves
    settings = make_settings(short_dir, cloud.port, proxy_timeout=timedelta(seconds=30))
    slow_retry = RetryPolicy(attempts=3, initial_delay=0.5, max_delay=0.5)
    daemon = Daemon(settings, cloud.provider, network=network, delete_retry=slow_retry)
    await daemon.start()
    try:
        shim = Shim(settings.socket)
        await shim.create_vm("sb-left")
        cloud.provider.faults.fail_delete_times = 1  # the clean-up needs a retry, 0.5 s later
        call = asyncio.create_task(shim.start_vm("sb-left"))
        await eventually(lambda: len(cloud.provider.created) == 1)
        call.cancel()  # the shim goes away: StartVM starts deleting the instance
        with pytest.raises(asyncio.CancelledError):
            await call
        await eventually(lambda: cloud.provider.delete_calls == 1)
    finally:
        await daemon.aclose()  # SIGTERM arrives during the clean-up's retry delay
    assert cloud.provider.instances == {}
    assert cloud.provider.delete_calls == 2
