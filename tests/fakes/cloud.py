"""A fake cloud: the in-memory provider whose instances "boot" a test agent and a test
forwarder on their own loopback address (127.0.0.N:<port>)."""

from __future__ import annotations

import os
import socket

from providers.base import Instance, InstanceRequest, InstanceTypeCatalogue
from providers.fake import Faults, InMemoryProvider
from tests.fakes.agent import TestAgent
from tests.fakes.forwarder import TestForwarder


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeCloud:
    """``boot=False`` makes VMs whose forwarder never answers."""

    def __init__(
        self,
        workdir: str,
        *,
        port: int | None = None,
        catalogue: InstanceTypeCatalogue | None = None,
        faults: Faults | None = None,
        boot: bool = True,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.boot = boot
        self.agents: dict[str, TestAgent] = {}  # by sandbox id
        self.forwarders: dict[str, TestForwarder] = {}
        self.provider = InMemoryProvider(
            catalogue=catalogue, faults=faults, on_create=self._boot, on_delete=self._halt
        )

    async def _boot(self, request: InstanceRequest, instance: Instance) -> None:
        if not self.boot or not instance.ips:
            return
        sid = request.sandbox_id
        agent = TestAgent(os.path.join(self.workdir, f"agent-{instance.id}.sock"))
        await agent.start()
        forwarder = TestForwarder(
            request.user_data, str(instance.ips[0]), self.port, agent.socket_path
        )
        await forwarder.start()
        self.agents[sid] = agent
        self.forwarders[sid] = forwarder

    async def _halt(self, request: InstanceRequest, instance: Instance) -> None:
        forwarder = self.forwarders.pop(request.sandbox_id, None)
        if forwarder is not None:
            await forwarder.stop()
        agent = self.agents.pop(request.sandbox_id, None)
        if agent is not None:
            await agent.aclose()

    async def aclose(self) -> None:
        for forwarder in self.forwarders.values():
            await forwarder.stop()
        for agent in self.agents.values():
            await agent.aclose()
        self.forwarders.clear()
        self.agents.clear()
