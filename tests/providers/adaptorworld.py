"""What the cloud providers' namespace worlds (AWS on moto, Azure on the loopback ARM, GCP on
the loopback Compute API) share: the directory the adaptor under test keeps its socket,
pods and the stand-in agents in, the adaptor's provider-independent environment, the wait
until its hypervisor socket answers, and pods driven through it as the shim drives them."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from protocols.kata import agent_pb2, health_pb2, hypervisor_pb2
from protocols.ttrpc import Client, ConnectionClosed, TTRPCError
from tests.adaptor.shim import Shim, shim_annotations
from tests.fakes.agent import TestAgent
from tests.providers.aws.fleet import agent_socket

REPO = str(Path(__file__).resolve().parents[2])


@dataclass
class WorldDir:
    """A world's directory: ``hv.sock``, ``pods/``, ``agents/`` and the log files."""

    root: str

    @property
    def socket(self) -> str:
        return os.path.join(self.root, "hv.sock")

    @property
    def pods_dir(self) -> str:
        return os.path.join(self.root, "pods")

    @property
    def agents_dir(self) -> str:
        return os.path.join(self.root, "agents")

    def read(self, name: str) -> str:
        """A file of the world's directory ("" while it does not exist)."""
        try:
            return Path(self.root, name).read_text(errors="replace")
        except FileNotFoundError:
            return ""


def adaptor_env(world: WorldDir, *, node: str, forwarder_port: int,
                log_level: str = "debug") -> dict[str, str]:
    """The settings every world's adaptor runs with, besides its provider's own: no tunnel,
    the world's socket and pods directory, a free probe port, short timeouts."""
    return {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "PYTHONPATH": REPO,
        "HOME": world.root,
        "TUNNEL_TYPE": "none",
        "NODE_NAME": node,
        "FORWARDER_PORT": str(forwarder_port),
        "REMOTE_HYPERVISOR_ENDPOINT": world.socket,
        "PODS_DIR": world.pods_dir,
        "PROBE_PORT": "0",
        "PROXY_TIMEOUT": "30s",
        "LOG_LEVEL": log_level,
        "SHUTDOWN_GRACE_PERIOD": "5s",
    }


async def wait_serving(proc: subprocess.Popen[bytes], socket: str, log: Callable[[], str],
                       timeout: float = 60.0) -> None:
    """Return once the adaptor's hypervisor socket answers Version; fail with the end of its
    log if it exits first."""
    async with asyncio.timeout(timeout):
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"cloud-api-adaptor exited with {proc.returncode}: {log()[-3000:]}"
                )
            try:
                async with await Client.connect_unix(socket) as client:
                    await client.call("hypervisor.Hypervisor", "Version",
                                      hypervisor_pb2.VersionRequest(),
                                      hypervisor_pb2.VersionResponse, timeout=2)
                return
            except (OSError, ConnectionClosed, TTRPCError):
                await asyncio.sleep(0.1)


async def _one_pod(agents_dir: str, shim: Shim, n: int, namespace: str,
                   agents: list[TestAgent]) -> tuple[str, str, str]:
    sid = secrets.token_hex(32)  # the shim's sandbox ids are 64 hex digits
    pod = f"pod-{n}"
    agent = TestAgent(agent_socket(agents_dir, sid))
    agents.append(agent)
    await agent.start()
    socket_path = await shim.create_vm(sid, shim_annotations(pod=pod, namespace=namespace),
                                       netns=f"/var/run/netns/cni-{sid[:8]}")
    await shim.start_vm(sid, timeout=60)
    instance_id = await shim.get_info(pod, namespace)
    async with await Client.connect_unix(socket_path) as conn:
        health = await conn.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                 health_pb2.HealthCheckResponse, timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        create = agent_pb2.CreateSandboxRequest(hostname=pod, sandbox_id=sid
                                                ).SerializeToString()
        await conn.call_raw("grpc.AgentService", "CreateSandbox", create, timeout=10)
    assert [(c.method, c.payload) for c in agent.calls] == [("CreateSandbox", create)]
    await shim.stop_vm(sid)
    assert not Path(socket_path).exists()  # noqa: ASYNC240
    await shim.stop_vm(sid)  # a second StopVM is fine
    return sid, pod, instance_id


async def pods_through_the_adaptor(agents_dir: str, shim: Shim, count: int,
                                   namespace: str) -> list[tuple[str, str, str]]:
    """``count`` pods at once, as the shim drives them: each sandbox created and started with
    a stand-in agent behind its VM, Health and a CreateSandbox (arriving byte for byte)
    through the agent proxy, then StopVM twice. Returns (sandbox id, pod, instance id) of
    each, in pod order."""
    agents: list[TestAgent] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_one_pod(agents_dir, shim, n, namespace, agents))
                     for n in range(count)]
    finally:
        for agent in agents:
            await agent.aclose()
    return [task.result() for task in tasks]
