"""The Kata shim's two clients of the adaptor, for ``peerpodctl`` and the tests.

* :class:`ShimClient` speaks ``hypervisor.Hypervisor`` and ``podvminfo.PodVMInfo`` on the
  adaptor's socket with a new unix connection per call, as the shim does.
* :class:`AgentClient` is one sandbox's agent connection as the shim keeps it: one
  long-lived connection through the per-pod socket, dialled again after it breaks.

Both raise the transport's own errors (``OSError``, :class:`TTRPCError`,
:class:`ConnectionClosed`); callers translate them for their users.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, TypeVar

from adaptor import annotations as ann
from protocols.kata import health_pb2, hypervisor_pb2, podvminfo_pb2
from protocols.ttrpc import Client, Code, ConnectionClosed, TTRPCError
from protocols.ttrpc.server import Message

HYPERVISOR = "hypervisor.Hypervisor"
PODVMINFO = "podvminfo.PodVMInfo"
START_TIMEOUT = 600.0  # the shim's remote_hypervisor_timeout
CALL_TIMEOUT = 300.0
DIAL_TIMEOUT = 30.0  # the shim's agent dial_timeout
DIAL_RETRY_INTERVAL = 0.05

Resp = TypeVar("Resp", bound=Message)


def shim_annotations(
    *, pod: str, namespace: str, instance_type: str = "", image: str = "", vcpus: int = 0,
    memory_mib: int = 0, init_data: str = "", gpus: int = 0, gpu_model: str = "",
) -> dict[str, str]:
    """Exactly the keys the Kata shim sends with CreateVM, empty values included."""
    return {
        ann.SANDBOX_NAME: pod,
        ann.SANDBOX_NAMESPACE: namespace,
        ann.MACHINE_TYPE: instance_type,
        ann.IMAGE: image,
        ann.DEFAULT_VCPUS: str(vcpus),
        ann.DEFAULT_MEMORY: str(memory_mib),
        ann.INITDATA: init_data,
        ann.DEFAULT_GPUS: str(gpus),
        ann.GPU_MODEL: gpu_model,
    }


class ShimClient:
    """The shim's hypervisor client: a new unix connection for every call."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = str(socket_path)

    async def call(self, service: str, method: str, request: Any, response: type[Resp],
                   timeout: float | None = CALL_TIMEOUT) -> Resp:
        async with await Client.connect_unix(self.socket_path) as client:
            return await client.call(service, method, request, response, timeout=timeout)

    async def create_vm(self, sandbox_id: str, annotations: Mapping[str, str],
                        netns: str = "", timeout: float | None = CALL_TIMEOUT) -> str:
        """CreateVM; returns the agent socket path."""
        request = hypervisor_pb2.CreateVMRequest(
            id=sandbox_id, annotations=dict(annotations), networkNamespacePath=netns)
        reply = await self.call(HYPERVISOR, "CreateVM", request,
                                hypervisor_pb2.CreateVMResponse, timeout)
        return reply.agentSocketPath

    async def start_vm(self, sandbox_id: str, timeout: float | None = START_TIMEOUT) -> None:
        await self.call(HYPERVISOR, "StartVM", hypervisor_pb2.StartVMRequest(id=sandbox_id),
                        hypervisor_pb2.StartVMResponse, timeout)

    async def stop_vm(self, sandbox_id: str, timeout: float | None = CALL_TIMEOUT) -> None:
        await self.call(HYPERVISOR, "StopVM", hypervisor_pb2.StopVMRequest(id=sandbox_id),
                        hypervisor_pb2.StopVMResponse, timeout)

    async def version(self, timeout: float | None = 5.0) -> str:
        reply = await self.call(HYPERVISOR, "Version",
                                hypervisor_pb2.VersionRequest(version="0.0.0"),
                                hypervisor_pb2.VersionResponse, timeout)
        return reply.version

    async def get_info(self, pod: str, namespace: str, wait: bool = False,
                       timeout: float | None = 5.0) -> str:
        """``podvminfo.PodVMInfo/GetInfo``: the pod's instance id."""
        request = podvminfo_pb2.GetInfoRequest(PodName=pod, PodNamespace=namespace, Wait=wait)
        reply = await self.call(PODVMINFO, "GetInfo", request,
                                podvminfo_pb2.GetInfoResponse, timeout)
        return reply.VMID


class AgentClient:
    """One sandbox's agent client as the shim keeps it: one connection for all calls, dialled
    with retries for up to ``dial_timeout``; after the connection breaks the next call dials
    again. Only calls made with ``retry=True`` (idempotent ones) are sent a second time."""

    def __init__(self, socket_path: str, *, dial_timeout: float = DIAL_TIMEOUT) -> None:
        self.socket_path = str(socket_path)
        self.dial_timeout = dial_timeout
        self.dials = 0
        self._client: Client | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._client.closed

    @property
    def reconnects(self) -> int:
        """Dials after the first one."""
        return max(self.dials - 1, 0)

    async def _connect(self) -> Client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.dial_timeout
        while True:
            try:
                client = await Client.connect_unix(self.socket_path)
            except OSError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(DIAL_RETRY_INTERVAL)
                continue
            self.dials += 1
            return client

    async def _client_now(self) -> Client:
        if self._client is None or self._client.closed:
            await self._drop()
            self._client = await self._connect()
        return self._client

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def call(self, service: str, method: str, request: Any, response: type[Resp],
                   timeout: float | None = 60.0, *, retry: bool = False) -> Resp:
        client = await self._client_now()
        try:
            return await client.call(service, method, request, response, timeout=timeout)
        except ConnectionClosed:
            await self._drop()
            if not retry:
                raise
        client = await self._client_now()
        return await client.call(service, method, request, response, timeout=timeout)

    async def check(self, timeout: float = 30.0) -> int:
        """``grpc.Health/Check``, tried again (over a new connection when the old one broke)
        until ``timeout`` passes while the agent is unreachable or UNAVAILABLE."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    reply = await self.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                            health_pb2.HealthCheckResponse, timeout=5)
                    return int(reply.status)
                except (OSError, ConnectionClosed):
                    await self._drop()
                except TTRPCError as exc:
                    if exc.code != Code.UNAVAILABLE:
                        raise
                await asyncio.sleep(DIAL_RETRY_INTERVAL)

    async def aclose(self) -> None:
        await self._drop()
