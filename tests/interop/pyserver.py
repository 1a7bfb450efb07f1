"""The Python side of the interop peer contract: hypervisor.Hypervisor and grpc.Health on the
project's ttrpc Server, behaving as the Go peer's server does (tests/interop/README.md), so
the Go client's scenarios run against it unchanged.

Every CreateVM the handler starts is recorded in ``PeerServer.calls`` with what it saw
(metadata, deadline, timeout_nano) and how it ended (ok, a status code, or cancelled).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from protocols.kata import health_pb2, hypervisor_pb2
from protocols.ttrpc import CallContext, Code, Method, Server, TTRPCError

ANNOTATION_PREFIX = "peer."


@dataclass(frozen=True, slots=True)
class Behaviour:
    sleep_ms: int = 0
    status_code: int = 0
    status_message: str = ""
    response_bytes: int = 0

    @classmethod
    def parse(cls, get: Callable[[str], str]) -> Behaviour:
        def number(key: str) -> int:
            raw = get(key)
            if not raw:
                return 0
            if not raw.isdigit():
                raise TTRPCError(
                    Code.INVALID_ARGUMENT, f"peer: {key}={raw!r} is not a non-negative integer"
                )
            return int(raw)

        return cls(
            sleep_ms=number("sleep-ms"),
            status_code=number("status-code"),
            status_message=get("status-message"),
            response_bytes=number("response-bytes"),
        )

    async def run(self) -> None:
        # The server applies the call's deadline to the handler (cancels it, answers
        # DEADLINE_EXCEEDED), as Go's handler returns ctx.Err().
        if self.sleep_ms:
            await asyncio.sleep(self.sleep_ms / 1000)
        if self.status_code:
            raise TTRPCError(self.status_code, self.status_message)


def metadata_map(ctx: CallContext) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in ctx.metadata:
        grouped.setdefault(key, []).append(value)
    return grouped


def report(ctx: CallContext, id_: str, response_bytes: int) -> str:
    """The JSON report, padded so it is at least ``response_bytes`` long."""
    remaining = ctx.remaining()
    body: dict[str, Any] = {
        "id": id_,
        "metadata": metadata_map(ctx),
        "deadline_ms": None if remaining is None else remaining * 1000,
    }
    text = json.dumps(body, ensure_ascii=False)
    missing = response_bytes - len(text.encode())
    if missing > 0:
        body["pad"] = "x" * missing
        text = json.dumps(body, ensure_ascii=False)
    return text


@dataclass
class PeerServer:
    server: Server = field(default_factory=Server)
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        H = hypervisor_pb2
        self.server.register_service(
            "hypervisor.Hypervisor",
            {
                "CreateVM": Method(self.create_vm, H.CreateVMRequest, H.CreateVMResponse),
                "StartVM": Method(self.start_vm, H.StartVMRequest, H.StartVMResponse),
                "StopVM": Method(self.stop_vm, H.StopVMRequest, H.StopVMResponse),
                "Version": Method(self.version, H.VersionRequest, H.VersionResponse),
            },
        )
        G = health_pb2
        self.server.register_service(
            "grpc.Health",
            {
                "Check": Method(self.check, G.CheckRequest, G.HealthCheckResponse),
                "Version": Method(self.health_version, G.CheckRequest, G.VersionCheckResponse),
            },
        )

    def find(self, id_: str) -> dict[str, Any] | None:
        return next((c for c in self.calls if c["id"] == id_), None)

    async def create_vm(
        self, request: hypervisor_pb2.CreateVMRequest, ctx: CallContext
    ) -> hypervisor_pb2.CreateVMResponse:
        annotations = request.annotations
        remaining = ctx.remaining()
        call: dict[str, Any] = {
            "id": request.id,
            "metadata": metadata_map(ctx),
            "timeout_nano": ctx.timeout_nano,
            "deadline_ms": None if remaining is None else remaining * 1000,
            "outcome": "running",
        }
        self.calls.append(call)
        try:
            behaviour = Behaviour.parse(lambda k: annotations.get(ANNOTATION_PREFIX + k, ""))
            text = report(ctx, request.id, behaviour.response_bytes)
            await behaviour.run()
        except asyncio.CancelledError:
            call["outcome"] = "cancelled"
            raise
        except TTRPCError as exc:
            call["outcome"] = f"status {exc.code}"
            raise
        call["outcome"] = "ok"
        return hypervisor_pb2.CreateVMResponse(agentSocketPath=text)

    async def start_vm(
        self, request: hypervisor_pb2.StartVMRequest, ctx: CallContext
    ) -> hypervisor_pb2.StartVMResponse:
        return hypervisor_pb2.StartVMResponse()

    async def stop_vm(
        self, request: hypervisor_pb2.StopVMRequest, ctx: CallContext
    ) -> hypervisor_pb2.StopVMResponse:
        return hypervisor_pb2.StopVMResponse()

    async def version(
        self, request: hypervisor_pb2.VersionRequest, ctx: CallContext
    ) -> hypervisor_pb2.VersionResponse:
        return hypervisor_pb2.VersionResponse(version="0.0.0")

    async def check(
        self, request: health_pb2.CheckRequest, ctx: CallContext
    ) -> health_pb2.HealthCheckResponse:
        if request.service:
            await _health_behaviour(request).run()
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def health_version(
        self, request: health_pb2.CheckRequest, ctx: CallContext
    ) -> health_pb2.VersionCheckResponse:
        behaviour = _health_behaviour(request)
        text = report(ctx, "", behaviour.response_bytes)
        await behaviour.run()
        return health_pb2.VersionCheckResponse(grpc_version="ttrpc-python", agent_version=text)


def _health_behaviour(request: health_pb2.CheckRequest) -> Behaviour:
    query = parse_qs(request.service)
    return Behaviour.parse(lambda k: query.get(k, [""])[0])
