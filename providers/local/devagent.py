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

``--allow-exec`` (off by default; the local provider never turns it on, only the pod VM
image's development variant does) makes ``ExecProcess`` real, without any isolation: the
process's ``Args`` run as a plain child of the stand-in, as its user, in the VM's (or the
host's) namespaces, with ``Env`` as their whole environment, in ``Cwd`` (default ``/``) and
with no stdin (``WriteStdin`` and ``CloseStdin`` stay no-ops). The exec must name a
container the stand-in saw created. ``ReadStdout``/``ReadStderr`` with its ``exec_id``
return its output in chunks of at most ``len`` bytes and, once the stream ends, fail as
kata-agent's ``read_stream`` does ("read meet eof"); ``WaitProcess`` returns its exit status
(128 + signal when killed) and forgets the exec; ``SignalProcess`` signals its process group;
``RemoveContainer`` and ``DestroySandbox`` kill what is left. Never enable this where the
caller is not trusted with a root shell.
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

from google.protobuf import empty_pb2, json_format, message_factory
from google.protobuf.message import DecodeError, Message

from protocols.kata import agent_pb2, health_pb2
from protocols.ttrpc import CallContext, Code, Method, Server, TTRPCError

log = logging.getLogger("providers.local.devagent")

AGENT_SERVICE = "grpc.AgentService"
HEALTH_SERVICE = "grpc.Health"
NAME = "peerpods development stand-in for kata-agent"
KILLED_STATUS = 137  # what a container killed by SIGKILL reports
EXEC_EOF = "read meet eof"  # kata-agent's read_stream at the end of a stream
READ_CHUNK = 64 * 1024  # a ReadStdout/ReadStderr without ``len``


@dataclass
class _Container:
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    status: int = 0

    def end(self, status: int) -> None:
        if not self.ended.is_set():
            self.status = status
            self.ended.set()


@dataclass
class _Exec:
    """One ``ExecProcess`` child (``--allow-exec``)."""

    container_id: str
    process: asyncio.subprocess.Process
    locks: dict[str, asyncio.Lock] = field(
        default_factory=lambda: {"ReadStdout": asyncio.Lock(), "ReadStderr": asyncio.Lock()})

    def stream(self, method: str) -> asyncio.StreamReader:
        stream = self.process.stdout if method == "ReadStdout" else self.process.stderr
        assert stream is not None
        return stream

    async def status(self) -> int:
        code = await self.process.wait()
        return 128 - code if code < 0 else code

    def kill(self, signum: int = signal.SIGKILL) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signum)


def _method_types() -> dict[str, tuple[type[Message], type[Message]]]:
    service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
    return {
        m.name: (message_factory.GetMessageClass(m.input_type),
                 message_factory.GetMessageClass(m.output_type))
        for m in service.methods
    }


class DevAgent:
    """The stand-in's state: containers seen, the sandbox, the call record."""

    def __init__(self, record: IO[str] | None = None, *, allow_exec: bool = False) -> None:
        self._record = record
        self._allow_exec = allow_exec
        self._types = _method_types()
        self._containers: dict[str, _Container] = {}
        self._execs: dict[tuple[str, str], _Exec] = {}
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
        if self._allow_exec:
            answer = await self._exec_call(ctx.method, request)
            if answer is not None:
                return answer.SerializeToString()
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
        for key, child in list(self._execs.items()):
            if child.container_id == request.container_id:
                child.kill()
                del self._execs[key]

    def _destroy_sandbox(self, request: Any) -> None:
        for container in self._containers.values():
            container.end(KILLED_STATUS)
        self._containers.clear()
        for child in self._execs.values():
            child.kill()
        self._execs.clear()
        self._sandbox_destroyed.set()

    # --allow-exec --------------------------------------------------------------------------
    async def _exec_call(self, method: str, request: Any) -> Message | None:
        """The answer to a call about an exec'd process, None for any other call."""
        if method == "ExecProcess":
            await self._exec(request)
            return empty_pb2.Empty()
        if method not in ("ReadStdout", "ReadStderr", "WaitProcess", "SignalProcess"):
            return None
        child = self._execs.get((request.container_id, request.exec_id))
        if child is None:
            return None  # a container's own process, or unknown: as without --allow-exec
        if method == "WaitProcess":
            status = await child.status()
            self._execs.pop((request.container_id, request.exec_id), None)
            return agent_pb2.WaitProcessResponse(status=status)
        if method == "SignalProcess":
            child.kill(request.signal)
            return empty_pb2.Empty()
        async with child.locks[method]:
            data = await child.stream(method).read(request.len or READ_CHUNK)
        if not data:
            raise TTRPCError(Code.UNKNOWN, EXEC_EOF)
        return agent_pb2.ReadStreamResponse(data=data)

    async def _exec(self, request: Any) -> None:
        cid, eid = request.container_id, request.exec_id
        if cid not in self._containers:
            raise TTRPCError(Code.NOT_FOUND, f"container {cid} not found")
        if (cid, eid) in self._execs:
            raise TTRPCError(Code.ALREADY_EXISTS, f"exec {eid} already exists in {cid}")
        args = list(request.process.Args)
        if not args:
            raise TTRPCError(Code.INVALID_ARGUMENT, f"exec {eid}: process has no Args")
        env = dict(item.split("=", 1) for item in request.process.Env if "=" in item)
        try:
            process = await asyncio.create_subprocess_exec(
                *args, env=env, cwd=request.process.Cwd or "/",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise TTRPCError(Code.UNKNOWN, f"exec {eid}: {args[0]}: "
                                           f"{exc.strerror or exc}") from None
        self._execs[(cid, eid)] = _Exec(cid, process)
        log.info("devagent: exec %s in %s: pid %d", eid, cid, process.pid)

    async def _wait(self, container_id: str) -> int:
        container = self._containers.get(container_id)
        if container is None:
            raise TTRPCError(Code.NOT_FOUND, f"container {container_id} not found")
        await container.ended.wait()
        return container.status


async def serve(socket_path: str, record: IO[str] | None, *, allow_exec: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    server = Server()
    DevAgent(record, allow_exec=allow_exec).register(server)
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
    parser.add_argument(
        "--allow-exec", action="store_true",
        help="run ExecProcess for real, without isolation, with ReadStdout/ReadStderr and "
             "WaitProcess on it (test images only: whoever reaches the socket gets a shell)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    record: IO[str] | None = None
    if args.record:
        Path(args.record).parent.mkdir(parents=True, exist_ok=True)
        record = open(args.record, "a", encoding="utf-8")
    try:
        asyncio.run(serve(args.socket, record, allow_exec=args.allow_exec))
    except OSError as exc:
        sys.stderr.write(f"devagent: cannot serve on {args.socket}: {exc}\n")
        return 1
    finally:
        if record is not None:
            record.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
