"""A development stand-in for kata-agent: ``python -m providers.local.devagent --socket PATH``.

It is NOT an agent and runs no containers. It serves the Kata agent's ttrpc API on a unix
socket so that the local provider's pod VMs can carry a pod's whole control flow:

* ``grpc.Health/Check`` answers SERVING, ``grpc.Health/Version`` names this stand-in;
* every ``grpc.AgentService`` call is recorded, with its request decoded to JSON
  (``google.protobuf.json_format``, proto field names), as one JSON line in ``--record``;
* ``WaitProcess`` blocks until the container is signalled (status 128 + signal), removed or
  the sandbox destroyed (status 137); ``ReadStdout``/``ReadStderr`` block likewise and
  then fail with "EOF"; ``GetOOMEvent`` blocks until the sandbox is destroyed;
* every other method answers with an empty (all-default) response.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from google.protobuf import json_format, message_factory
from google.protobuf.message import DecodeError, Message

from protocols.kata import agent_pb2, health_pb2
from protocols.ttrpc import CallContext, Code, Method, Server, TTRPCError

log = logging.getLogger("providers.local.devagent")

AGENT_SERVICE = "grpc.AgentService"
HEALTH_SERVICE = "grpc.Health"
NAME = "peerpods development stand-in for kata-agent"
KILLED_STATUS = 137  # what a container killed by SIGKILL reports


@dataclass
class _Container:
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    status: int = 0

    def end(self, status: int) -> None:
        if not self.ended.is_set():
            self.status = status
            self.ended.set()


def _method_types() -> dict[str, tuple[type[Message], type[Message]]]:
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    return {
        m.name: (message_factory.GetMessageClass(m.input_type),
                 message_factory.GetMessageClass(m.output_type))
        for m in service.methods
    }


class DevAgent:
    """The stand-in's state: containers seen, the sandbox, the call record."""

    def __init__(self, record: IO[str] | None = None) -> None:
        self._record = record
        self._types = _method_types()
        self._containers: dict[str, _Container] = {}
        self._sandbox_destroyed = asyncio.Event()
        self._special: dict[str, Callable[[Any], Any]] = {
            "CreateContainer": self._create_container,
            "SignalProcess": self._signal_process,
            "RemoveContainer": self._remove_container,
            "DestroySandbox": self._destroy_sandbox,
            "CreateSandbox": self._create_sandbox,
        }

    def register(self, server: Server) -> None:
        server.register_raw(AGENT_SERVICE, self._agent_call)
        server.register_service(HEALTH_SERVICE, {
            "Check": Method(self._check, health_pb2.CheckRequest, health_pb2.HealthCheckResponse),
            "Version": Method(self._version, health_pb2.CheckRequest,
                              health_pb2.VersionCheckResponse),
        })

    async def _check(self, request: Any, ctx: CallContext) -> Any:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def _version(self, request: Any, ctx: CallContext) -> Any:
        return health_pb2.VersionCheckResponse(grpc_version="", agent_version=NAME)

    async def _agent_call(self, ctx: CallContext, payload: bytes) -> bytes:
        types = self._types.get(ctx.method)
        if types is None:
            raise TTRPCError(Code.UNIMPLEMENTED, f"{AGENT_SERVICE}/{ctx.method} not implemented")
        request_type, response_type = types
        request = request_type()
        try:
            request.ParseFromString(payload)
        except DecodeError as exc:
            raise TTRPCError(Code.INVALID_ARGUMENT, f"cannot decode {ctx.method}: {exc}") from None
        self._write_record(ctx.method, request)
        special = self._special.get(ctx.method)
        if special is not None:
            special(request)
        if ctx.method == "WaitProcess":
            status = await self._wait(request.container_id)
            return agent_pb2.WaitProcessResponse(status=status).SerializeToString()
        if ctx.method in ("ReadStdout", "ReadStderr"):
            await self._wait(request.container_id)
            raise TTRPCError(Code.UNKNOWN, "EOF")
        if ctx.method == "GetOOMEvent":
            await self._sandbox_destroyed.wait()
            raise TTRPCError(Code.UNKNOWN, "sandbox destroyed")
        return response_type().SerializeToString()

    def _write_record(self, method: str, request: Message) -> None:
        entry = {
            "time": time.time(),
            "method": method,
            "request": json_format.MessageToDict(request, preserving_proto_field_name=True),
        }
        log.info("devagent: %s", method)
        if self._record is not None:
            self._record.write(json.dumps(entry, sort_keys=True) + "\n")
            self._record.flush()

    def _create_sandbox(self, request: Any) -> None:
        self._sandbox_destroyed.clear()

    def _create_container(self, request: Any) -> None:
        self._containers[request.container_id] = _Container()

    def _signal_process(self, request: Any) -> None:
        container = self._containers.get(request.container_id)
        if container is not None and request.signal in (signal.SIGKILL, signal.SIGTERM):
            container.end(128 + request.signal)

    def _remove_container(self, request: Any) -> None:
        container = self._containers.pop(request.container_id, None)
        if container is not None:
            container.end(KILLED_STATUS)

    def _destroy_sandbox(self, request: Any) -> None:
        for container in self._containers.values():
            container.end(KILLED_STATUS)
        self._containers.clear()
        self._sandbox_destroyed.set()

    async def _wait(self, container_id: str) -> int:
        container = self._containers.get(container_id)
        if container is None:
            raise TTRPCError(Code.NOT_FOUND, f"container {container_id} not found")
        await container.ended.wait()
        return container.status


async def serve(socket_path: str, record: IO[str] | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    server = Server()
    DevAgent(record).register(server)
    await server.start_unix(socket_path)
    log.info("devagent: %s listening on %s", NAME, socket_path)
    try:
        await stop.wait()
    finally:
        await server.shutdown(grace=1.0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
        log.info("devagent: stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m providers.local.devagent",
        description=f"{NAME}: answers Health, records agent calls, runs no containers.",
    )
    parser.add_argument("--socket", required=True, help="unix socket to serve on")
    parser.add_argument("--record", help="append every agent call as a JSON line here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    record: IO[str] | None = None
    if args.record:
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        record = open(args.record, "a", encoding="utf-8")
    try:
        asyncio.run(serve(args.socket, record))
    except OSError as exc:
        sys.stderr.write(f"devagent: cannot serve on {args.socket}: {exc}\n")
        return 1
    finally:
        if record is not None:
            record.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
