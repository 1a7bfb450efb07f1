"""The real ``agent-protocol-forwarder`` process: sd_notify, relay, signals, exit codes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocols.kata import agent_pb2, health_pb2
from protocols.ttrpc import Client
from runtime.tlsprofile import client_context
from tests.forwarder.apf.helpers import SERVER_NAME, FakeAgent, Pki, wait_until


def command() -> list[str]:
    script = shutil.which("agent-protocol-forwarder", path=os.path.dirname(sys.executable))
    return [script] if script else [sys.executable, "-m", "forwarder.apf_main"]


@dataclass
class Running:
    process: asyncio.subprocess.Process
    notify: socket.socket
    port: int
    log: Path

    async def next_notification(self, limit: float = 20.0) -> str:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.notify, 4096), limit)
        return data.decode()

    async def client(self, pki: Pki) -> Client:
        context = client_context(pki.client.cert_pem, pki.client.key_pem, pki.ca.cert_pem)
        return await Client.connect_tcp("127.0.0.1", self.port, ssl=context,
                                        server_hostname=SERVER_NAME)


@pytest.fixture
async def running(pki: Pki, agent: FakeAgent, tmp_path: Path) -> AsyncIterator[Running]:
    config = tmp_path / "apf.json"
    config.write_text(pki.apf_json(**{"pod-network": {"tunnel-type": "none"}}))
    notify_path = str(tmp_path / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.setblocking(False)
    log = tmp_path / "forwarder.log"
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env["NOTIFY_SOCKET"] = notify_path
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *command(), "-config", str(config), "-listen", "127.0.0.1:0",
            "-kata-agent-socket", agent.path, "-pod-namespace", "/run/netns/podns-test",
            stdout=log_file, stderr=log_file, env=env)
    run = Running(process, notify, 0, log)
    try:
        ready = await run.next_notification()
        assert ready.startswith("READY=1\n"), ready
        status = dict(line.split("=", 1) for line in ready.splitlines())["STATUS"]
        run.port = int(status.rsplit(":", 1)[1])
        yield run
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        notify.close()


async def test_serves_and_stops_cleanly_on_sigterm(running: Running, pki: Pki,
                                                   agent: FakeAgent) -> None:
    async with await running.client(pki) as client:
        resp = await client.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                 health_pb2.HealthCheckResponse, timeout=20)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        await client.call_raw("grpc.AgentService", "CreateSandbox", agent_pb2.CreateSandboxRequest(
            hostname="h", dns=["nameserver 10.96.0.10"]).SerializeToString(), timeout=20)
    got = agent_pb2.CreateSandboxRequest.FromString(agent.calls("CreateSandbox")[0].payload)
    assert got.hostname == "h" and list(got.dns) == []

    running.process.send_signal(signal.SIGTERM)
    assert await running.next_notification() == "STOPPING=1"
    assert await asyncio.wait_for(running.process.wait(), 20) == 0
    text = running.log.read_text()
    assert "signal SIGTERM received, shutting down" in text
    assert pki.server.key_pem.splitlines()[1] not in text  # no key material in the log


async def test_second_signal_exits_at_once(running: Running, pki: Pki,
                                           agent: FakeAgent) -> None:
    async with await running.client(pki) as client:
        request = agent_pb2.WaitProcessRequest(container_id="c", exec_id="e")
        waiting = asyncio.create_task(client.call_raw(
            "grpc.AgentService", "WaitProcess", request.SerializeToString(), timeout=60))
        await wait_until(lambda: bool(agent.calls("WaitProcess")), limit=20)
        running.process.send_signal(signal.SIGTERM)
        assert await running.next_notification() == "STOPPING=1"
        # The in-flight call holds the shutdown in its grace period; a second signal ends it.
        await asyncio.sleep(0.2)
        assert running.process.returncode is None
        running.process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(running.process.wait(), 3) == 1
        waiting.cancel()
    assert "received again, force exiting" in running.log.read_text()


async def test_startup_failure_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "apf.json"
    process = await asyncio.create_subprocess_exec(
        *command(), "-config", str(missing), "-listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert f"failed to open {missing}: No such file or directory" in err.decode()
