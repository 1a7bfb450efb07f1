"""The real daemon as a subprocess: restarts with running pods, interrupted StartVMs, signals,
sd_notify and rolling updates. Its pod VMs live in a loopback fake cloud in this process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adaptor.sandbox import SandboxState
from protocols import apf
from protocols.kata import health_pb2
from protocols.ttrpc import ConnectionClosed
from tests.adaptor.agentclient import ReconnectingAgentClient
from tests.adaptor.daemonproc import AdaptorProcess
from tests.adaptor.helpers import eventually
from tests.adaptor.shim import Shim, shim_annotations
from tests.fakes.cloudapi import CloudAPI

SERVING = health_pb2.HealthCheckResponse.SERVING


class Env:
    def __init__(self, root: str, api: CloudAPI) -> None:
        self.root = root
        self.api = api
        self.procs: list[AdaptorProcess] = []

    def adaptor(self, **env: str) -> AdaptorProcess:
        proc = AdaptorProcess(self.root, self.api.url, self.api.cloud.port, env=env)
        self.procs.append(proc)
        return proc

    @property
    def instances(self) -> dict[str, object]:
        return dict(self.api.provider.instances)

    def record(self, pods_dir: str, sid: str) -> dict[str, object]:
        return dict(json.loads(Path(pods_dir, sid, "sandbox.json").read_text()))


@pytest.fixture
async def env(short_dir: str) -> AsyncIterator[Env]:
    api = CloudAPI(short_dir)
    await api.start()
    state = Env(short_dir, api)
    try:
        yield state
    finally:
        for proc in state.procs:
            await proc.aclose()
        await api.aclose()


async def refused(shim: Shim, timeout: float = 10.0) -> None:
    """Poll until the hypervisor socket no longer accepts calls (the daemon is shutting
    down)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                await shim.version()
            except (OSError, ConnectionClosed):
                return
            await asyncio.sleep(0.05)


def vxlan_id(pods_dir: str, sid: str) -> int:
    network = apf.loads(Path(pods_dir, sid, "apf.json").read_text()).pod_network
    assert network is not None
    return network.vxlan_id


async def test_killed_during_start_vm_leaves_no_instance(env: Env) -> None:
    first = env.adaptor()
    await first.start()
    shim = Shim(first.socket)
    await shim.create_vm("sb-kill")
    env.api.slow_create = 60  # the instance exists, the cloud API has not answered yet
    start = asyncio.create_task(shim.start_vm("sb-kill"))
    await eventually(lambda: len(env.instances) == 1, timeout=10)
    await first.kill()
    with pytest.raises(Exception):  # noqa: B017 - the connection just drops
        await start
    assert env.record(first.pods_dir, "sb-kill")["state"] == SandboxState.STARTING.value

    env.api.slow_create = 0
    second = env.adaptor()
    await second.start()
    # The interrupted StartVM's instance is deleted at startup (no grace period needed:
    # nothing but the dead process could have been using it).
    await eventually(lambda: env.instances == {}, timeout=10)
    await eventually(lambda: env.record(second.pods_dir, "sb-kill")["state"] == "created")
    # The shim retries: exactly one VM, and it serves.
    await shim.start_vm("sb-kill")
    assert len(env.instances) == 1
    assert env.api.provider.create_calls == 2
    client = ReconnectingAgentClient(os.path.join(second.pods_dir, "sb-kill", "agent.ttrpc"))
    assert await client.check() == SERVING
    await client.aclose()
    await shim.stop_vm("sb-kill")
    assert env.instances == {}
    assert "interrupted by an adaptor restart" in second.log()


async def test_restart_with_running_sandboxes(env: Env) -> None:
    first = env.adaptor()
    await first.start()
    shim = Shim(first.socket)
    sids = [f"sb-{n:02d}" for n in range(20)]

    async def create_and_start(sid: str) -> str:
        path = await shim.create_vm(sid, shim_annotations(pod=f"pod-{sid}"))
        await shim.start_vm(sid)
        return path

    paths = await asyncio.gather(*(create_and_start(sid) for sid in sids))
    clients = [ReconnectingAgentClient(path) for path in paths]
    assert await asyncio.gather(*(c.check() for c in clients)) == [SERVING] * 20
    live_ids = {sid: vxlan_id(first.pods_dir, sid) for sid in sids}
    assert len(set(live_ids.values())) == 20
    creates = env.api.provider.create_calls

    await first.kill()
    second = env.adaptor()
    await second.start()
    # Every proxy serves again and the shim's long-lived connections reconnect.
    assert await asyncio.gather(*(c.check() for c in clients)) == [SERVING] * 20
    assert all(c.reconnects >= 1 for c in clients)
    assert env.api.provider.create_calls == creates  # no VM was recreated
    assert len(env.instances) == 20
    # VXLAN ids of live pods are not handed out again.
    await shim.create_vm("sb-new", shim_annotations(pod="pod-new"))
    assert vxlan_id(second.pods_dir, "sb-new") not in set(live_ids.values())
    # StartVM of a restored running sandbox does not make a second VM.
    await shim.start_vm(sids[0])
    assert env.api.provider.create_calls == creates
    status, metrics = await second.probe("/metrics")
    assert status == 200 and 'peerpods_sandboxes{state="running"} 20.0' in metrics
    for client in clients:
        await client.aclose()


async def test_sigterm_keeps_vms_and_records(env: Env, short_dir: str) -> None:
    notify_path = os.path.join(short_dir, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.setblocking(False)
    proc = env.adaptor(NOTIFY_SOCKET=notify_path)
    try:
        await proc.start()
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(notify, 256), 5) == b"READY=1"
        shim = Shim(proc.socket)
        path = await shim.create_vm("sb-term")
        await shim.start_vm("sb-term")
        proc.signal(signal.SIGTERM)
        assert await proc.wait(15) == 0
        assert await asyncio.wait_for(loop.sock_recv(notify, 256), 5) == b"STOPPING=1"
    finally:
        notify.close()
    assert len(env.instances) == 1  # the pod VM outlives the daemon
    assert env.record(proc.pods_dir, "sb-term")["state"] == "running"
    assert not os.path.exists(proc.socket)  # noqa: ASYNC240
    # The next adaptor serves the pod again without a new VM.
    again = env.adaptor()
    await again.start()
    client = ReconnectingAgentClient(path)
    assert await client.check() == SERVING
    await client.aclose()
    assert env.api.provider.create_calls == 1


async def test_second_signal_exits_at_once(env: Env) -> None:
    proc = env.adaptor(SHUTDOWN_GRACE_PERIOD="60s")
    await proc.start()
    shim = Shim(proc.socket)
    await shim.create_vm("sb-twice")
    env.api.slow_create = 60
    start = asyncio.create_task(shim.start_vm("sb-twice"))
    await eventually(lambda: len(env.instances) == 1, timeout=10)
    proc.signal(signal.SIGTERM)
    await refused(shim)  # it stopped accepting calls...
    assert proc.proc is not None and proc.proc.returncode is None  # ...and waits for StartVM
    loop = asyncio.get_running_loop()
    begin = loop.time()
    proc.signal(signal.SIGTERM)
    assert await proc.wait(10) == 1
    assert loop.time() - begin < 3
    start.cancel()
    with pytest.raises((asyncio.CancelledError, Exception)):
        await start


async def test_rolling_update(env: Env) -> None:
    old = env.adaptor()
    await old.start()
    shim = Shim(old.socket)
    path = await shim.create_vm("sb-roll")
    await shim.start_vm("sb-roll")
    client = ReconnectingAgentClient(path)
    assert await client.check() == SERVING

    new = env.adaptor()  # same node, same /run/peerpod, its own probe port
    await new.start()
    assert "agent proxy listening again" in new.log()
    old.signal(signal.SIGTERM)
    assert await old.wait(15) == 0
    assert "now belongs to another adaptor" in old.log()

    # The hypervisor socket and the sandbox's agent socket are served by the new adaptor.
    assert os.path.exists(old.socket) and os.path.exists(path)  # noqa: ASYNC240
    assert await shim.version() == "0.0.0"
    assert await client.check() == SERVING
    fresh = ReconnectingAgentClient(path)
    assert await fresh.check(timeout=5) == SERVING
    await fresh.aclose()
    await client.aclose()
    assert len(env.instances) == 1 and env.api.provider.create_calls == 1
    status, _ = await new.probe("/healthz")
    assert status == 200
    # The new adaptor owns the sandbox: StopVM through it deletes the VM.
    await shim.stop_vm("sb-roll")
    assert env.instances == {}
