"""A test kata agent: a real ttrpc server on a unix socket.

It answers ``grpc.Health/Check`` and ``Version``, and records every ``grpc.AgentService``
call as received (raw payload, metadata, timeout). ``WaitProcess`` blocks until
:meth:`TestAgent.release_wait` is called. ``errors`` maps a method name to the status the
agent answers with.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from protocols.kata import agent_pb2, health_pb2
from protocols.ttrpc import CallContext, Method, Server, TTRPCError


@dataclass(frozen=True)
class AgentCall:
    method: str
    payload: bytes
    metadata: tuple[tuple[str, str], ...]
    timeout_nano: int


@dataclass
class TestAgent:
    __test__ = False  # not a pytest class

    socket_path: str
    errors: dict[str, TTRPCError] = field(default_factory=dict)
    calls: list[AgentCall] = field(default_factory=list)
    health_checks: int = 0
    _server: Server | None = None
    _wait_release: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0

    async def start(self) -> None:
        server = Server()
        server.register_service(
            "grpc.Health",
            {
                "Check": Method(self._check, health_pb2.CheckRequest,
                                health_pb2.HealthCheckResponse),
                "Version": Method(self._version, health_pb2.CheckRequest,
                                  health_pb2.VersionCheckResponse),
            },
        )
        server.register_raw("grpc.AgentService", self._agent)
        await server.start_unix(self.socket_path)
        self._server = server

    async def aclose(self) -> None:
        if self._server is not None:
            self._wait_release.set()
            await self._server.shutdown(grace=0.5)
            self._server = None

    def release_wait(self) -> None:
        self._wait_release.set()

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    async def _check(
        self, request: health_pb2.CheckRequest, ctx: CallContext
    ) -> health_pb2.HealthCheckResponse:
        self.health_checks += 1
        if "Check" in self.errors:
            raise self.errors["Check"]
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def _version(
        self, request: health_pb2.CheckRequest, ctx: CallContext
    ) -> health_pb2.VersionCheckResponse:
        return health_pb2.VersionCheckResponse(grpc_version="test", agent_version="test-agent")

    async def _agent(self, ctx: CallContext, payload: bytes) -> bytes:
        self.calls.append(AgentCall(ctx.method, payload, ctx.metadata, ctx.timeout_nano))
        if ctx.method in self.errors:
            raise self.errors[ctx.method]
        if ctx.method == "WaitProcess":
            self.waiting += 1
            try:
                await self._wait_release.wait()
            finally:
                self.waiting -= 1
            return agent_pb2.WaitProcessResponse(status=7).SerializeToString()
        return b""
