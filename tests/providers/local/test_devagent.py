"""The development stand-in for kata-agent over a real unix socket."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from protocols.kata import agent_pb2, health_pb2, oci_pb2
from protocols.ttrpc import Client, Code, Server, TTRPCError
from providers.local.devagent import DevAgent
from providers.local.layout import poll_until

Empty = empty_pb2.Empty


async def _serve(tmp_path: Path, record: io.StringIO) -> tuple[Server, str]:
    server = Server()
    DevAgent(record).register(server)
    path = str(tmp_path / "agent.sock")
    await server.start_unix(path)
    return server, path


def _records(record: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in record.getvalue().splitlines()]


async def test_health_and_recorded_calls(tmp_path: Path) -> None:
    record = io.StringIO()
    server, path = await _serve(tmp_path, record)
    try:
        async with await Client.connect_unix(path) as client:
            check = await client.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                      health_pb2.HealthCheckResponse, timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            await client.call(
                "grpc.AgentService", "CreateSandbox",
                agent_pb2.CreateSandboxRequest(hostname="web", sandbox_id="sb1",
                                               dns=["nameserver 10.96.0.10"]),
                Empty, timeout=5)
            spec = oci_pb2.Spec(Version="1.1.0", Hostname="web")
            spec.Annotations["io.kubernetes.cri.container-name"] = "nginx"
            await client.call(
                "grpc.AgentService", "CreateContainer",
                agent_pb2.CreateContainerRequest(container_id="c1", exec_id="c1", OCI=spec),
                Empty, timeout=5)
            details = await client.call(
                "grpc.AgentService", "GetGuestDetails", agent_pb2.GuestDetailsRequest(),
                agent_pb2.GuestDetailsResponse, timeout=5)
            assert details == agent_pb2.GuestDetailsResponse()
    finally:
        await server.shutdown(grace=0)
    calls = _records(record)
    assert [c["method"] for c in calls] == ["CreateSandbox", "CreateContainer", "GetGuestDetails"]
    assert calls[0]["request"] == {"hostname": "web", "sandbox_id": "sb1",
                                   "dns": ["nameserver 10.96.0.10"]}
    assert calls[1]["request"]["container_id"] == "c1"
    assert calls[1]["request"]["OCI"]["Annotations"] == {
        "io.kubernetes.cri.container-name": "nginx"}


async def test_wait_process_blocks_until_the_container_is_killed(tmp_path: Path) -> None:
    record = io.StringIO()
    server, path = await _serve(tmp_path, record)
    try:
        async with await Client.connect_unix(path) as client:
            with pytest.raises(TTRPCError) as info:
                await client.call("grpc.AgentService", "WaitProcess",
                                  agent_pb2.WaitProcessRequest(container_id="nope"),
                                  agent_pb2.WaitProcessResponse, timeout=5)
            assert info.value.code == Code.NOT_FOUND
            await client.call("grpc.AgentService", "CreateContainer",
                              agent_pb2.CreateContainerRequest(container_id="c1"), Empty,
                              timeout=5)
            await client.call("grpc.AgentService", "StartContainer",
                              agent_pb2.StartContainerRequest(container_id="c1"), Empty,
                              timeout=5)
            wait = asyncio.ensure_future(client.call(
                "grpc.AgentService", "WaitProcess",
                agent_pb2.WaitProcessRequest(container_id="c1", exec_id="c1"),
                agent_pb2.WaitProcessResponse, timeout=10))
            await asyncio.sleep(0.2)
            assert not wait.done()
            await client.call("grpc.AgentService", "SignalProcess",
                              agent_pb2.SignalProcessRequest(container_id="c1", signal=9),
                              Empty, timeout=5)
            assert (await wait).status == 137
            await client.call("grpc.AgentService", "RemoveContainer",
                              agent_pb2.RemoveContainerRequest(container_id="c1"), Empty,
                              timeout=5)
            await client.call("grpc.AgentService", "DestroySandbox",
                              agent_pb2.DestroySandboxRequest(), Empty, timeout=5)
    finally:
        await server.shutdown(grace=0)
    assert [c["method"] for c in _records(record)] == [
        "WaitProcess", "CreateContainer", "StartContainer", "WaitProcess", "SignalProcess",
        "RemoveContainer", "DestroySandbox"]


async def test_destroy_sandbox_releases_waiters(tmp_path: Path) -> None:
    server, path = await _serve(tmp_path, io.StringIO())
    try:
        async with await Client.connect_unix(path) as client:
            await client.call("grpc.AgentService", "CreateContainer",
                              agent_pb2.CreateContainerRequest(container_id="c2"), Empty,
                              timeout=5)
            wait = asyncio.ensure_future(client.call(
                "grpc.AgentService", "WaitProcess",
                agent_pb2.WaitProcessRequest(container_id="c2"),
                agent_pb2.WaitProcessResponse, timeout=10))
            oom = asyncio.ensure_future(client.call(
                "grpc.AgentService", "GetOOMEvent", agent_pb2.GetOOMEventRequest(),
                agent_pb2.OOMEvent, timeout=10))
            await asyncio.sleep(0.1)
            await client.call("grpc.AgentService", "DestroySandbox",
                              agent_pb2.DestroySandboxRequest(), Empty, timeout=5)
            assert (await wait).status == 137
            with pytest.raises(TTRPCError, match="sandbox destroyed"):
                await oom
    finally:
        await server.shutdown(grace=0)


async def test_garbage_payload_is_invalid_argument_and_server_keeps_serving(
    tmp_path: Path,
) -> None:
    server, path = await _serve(tmp_path, io.StringIO())
    try:
        async with await Client.connect_unix(path) as client:
            with pytest.raises(TTRPCError) as info:
                await client.call_raw("grpc.AgentService", "CreateContainer", b"\xff\xff\xff")
            assert info.value.code == Code.INVALID_ARGUMENT
            with pytest.raises(TTRPCError) as info:
                await client.call_raw("grpc.AgentService", "NoSuchMethod", b"")
            assert info.value.code == Code.UNIMPLEMENTED
            check = await client.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                      health_pb2.HealthCheckResponse, timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.shutdown(grace=0)


async def test_command_line_serves_and_records(tmp_path: Path) -> None:
    sock, rec = tmp_path / "a.sock", tmp_path / "calls.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "providers.local.devagent", "--socket", str(sock),
        "--record", str(rec), stderr=asyncio.subprocess.DEVNULL)
    try:
        assert await poll_until(sock.exists, 10)
        async with await Client.connect_unix(str(sock)) as client:
            await client.call("grpc.AgentService", "SetPolicy",
                              agent_pb2.SetPolicyRequest(policy="package agent_policy"),
                              Empty, timeout=5)
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    [entry] = [json.loads(line) for line in rec.read_text().splitlines()]
    assert entry["method"] == "SetPolicy"
    assert entry["request"] == {"policy": "package agent_policy"}
    assert not sock.exists()


async def _serve_exec(tmp_path: Path, *, allow_exec: bool) -> tuple[Server, str]:
    server = Server()
    DevAgent(io.StringIO(), allow_exec=allow_exec).register(server)
    path = str(tmp_path / "agent.sock")
    await server.start_unix(path)
    return server, path


def _exec_request(cid: str, eid: str, args: list[str], cwd: str = "",
                  env: tuple[str, ...] = ()) -> agent_pb2.ExecProcessRequest:
    return agent_pb2.ExecProcessRequest(
        container_id=cid, exec_id=eid,
        process=oci_pb2.Process(Args=args, Env=list(env), Cwd=cwd))


async def _read_all(client: Client, method: str, cid: str, eid: str,
                    chunk: int = 0) -> list[bytes]:
    """The chunks of one stream, until the agent says it ended."""
    chunks: list[bytes] = []
    while True:
        try:
            reply = await client.call(
                "grpc.AgentService", method,
                agent_pb2.ReadStreamRequest(container_id=cid, exec_id=eid, len=chunk),
                agent_pb2.ReadStreamResponse, timeout=10)
        except TTRPCError as exc:
            assert exc.message == "read meet eof"
            return chunks
        assert reply.data
        chunks.append(reply.data)


SCRIPT = ("import os, sys; print(os.getcwd()); print(os.environ['MARK']); "
          "sys.stdout.write('x' * 10); sys.stderr.write('to stderr'); sys.exit(3)")


async def test_allow_exec_runs_the_process_and_returns_its_output_and_status(
    tmp_path: Path,
) -> None:
    server, path = await _serve_exec(tmp_path, allow_exec=True)
    try:
        async with await Client.connect_unix(path) as client:
            await client.call("grpc.AgentService", "CreateContainer",
                              agent_pb2.CreateContainerRequest(container_id="c1"), Empty,
                              timeout=5)
            await client.call(
                "grpc.AgentService", "ExecProcess",
                _exec_request("c1", "e1", [sys.executable, "-c", SCRIPT], cwd=str(tmp_path),
                              env=("MARK=exec-marker",)),
                Empty, timeout=10)
            out = await _read_all(client, "ReadStdout", "c1", "e1", chunk=4)
            err = await _read_all(client, "ReadStderr", "c1", "e1")
            status = await client.call(
                "grpc.AgentService", "WaitProcess",
                agent_pb2.WaitProcessRequest(container_id="c1", exec_id="e1"),
                agent_pb2.WaitProcessResponse, timeout=10)
    finally:
        await server.shutdown(grace=0)
    assert all(len(c) <= 4 for c in out)
    assert b"".join(out) == f"{tmp_path}\nexec-marker\n".encode() + b"x" * 10
    assert b"".join(err) == b"to stderr"
    assert status.status == 3


async def test_allow_exec_refusals_signals_and_sandbox_end(tmp_path: Path) -> None:
    server, path = await _serve_exec(tmp_path, allow_exec=True)
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    try:
        async with await Client.connect_unix(path) as client:
            async def call(method: str, request: Message, reply: type = Empty) -> Any:
                return await client.call("grpc.AgentService", method, request, reply,
                                         timeout=10)

            with pytest.raises(TTRPCError) as info:
                await call("ExecProcess", _exec_request("nope", "e1", ["true"]))
            assert info.value.code == Code.NOT_FOUND
            await call("CreateContainer", agent_pb2.CreateContainerRequest(container_id="c1"))
            with pytest.raises(TTRPCError) as info:
                await call("ExecProcess", _exec_request("c1", "e0", []))
            assert info.value.code == Code.INVALID_ARGUMENT
            with pytest.raises(TTRPCError, match="no-such-binary"):
                await call("ExecProcess",
                           _exec_request("c1", "e0", [str(tmp_path / "no-such-binary")]))
            await call("ExecProcess", _exec_request("c1", "e1", sleep))
            with pytest.raises(TTRPCError) as info:
                await call("ExecProcess", _exec_request("c1", "e1", sleep))
            assert info.value.code == Code.ALREADY_EXISTS
            await call("SignalProcess",
                       agent_pb2.SignalProcessRequest(container_id="c1", exec_id="e1", signal=9))
            waited = await call("WaitProcess",
                                agent_pb2.WaitProcessRequest(container_id="c1", exec_id="e1"),
                                agent_pb2.WaitProcessResponse)
            assert waited.status == 137
            # what is still running when the sandbox goes is killed
            await call("ExecProcess", _exec_request("c1", "e2", [
                sys.executable, "-c",
                "import os, time; print(os.getpid(), flush=True); time.sleep(60)"]))
            first = await call("ReadStdout",
                               agent_pb2.ReadStreamRequest(container_id="c1", exec_id="e2"),
                               agent_pb2.ReadStreamResponse)
            pid = int(first.data)
            await call("DestroySandbox", agent_pb2.DestroySandboxRequest())
            assert await poll_until(lambda: not _alive(pid), 10)
    finally:
        await server.shutdown(grace=0)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def test_without_allow_exec_exec_process_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = f"import pathlib; pathlib.Path({str(marker)!r}).touch(); print('ran')"
    server, path = await _serve_exec(tmp_path, allow_exec=False)
    try:
        async with await Client.connect_unix(path) as client:
            await client.call("grpc.AgentService", "CreateContainer",
                              agent_pb2.CreateContainerRequest(container_id="c1"), Empty,
                              timeout=5)
            await client.call("grpc.AgentService", "ExecProcess",
                              _exec_request("c1", "e1", [sys.executable, "-c", script]),
                              Empty, timeout=5)
            await client.call("grpc.AgentService", "SignalProcess",
                              agent_pb2.SignalProcessRequest(container_id="c1", signal=9),
                              Empty, timeout=5)
            # the stream is the (ended) container's, not the process's: no output, "EOF"
            with pytest.raises(TTRPCError) as info:
                await client.call(
                    "grpc.AgentService", "ReadStdout",
                    agent_pb2.ReadStreamRequest(container_id="c1", exec_id="e1"),
                    agent_pb2.ReadStreamResponse, timeout=10)
            assert info.value.message == "EOF"
    finally:
        await server.shutdown(grace=0)
    assert not marker.exists()


def test_help_documents_allow_exec(capsys: pytest.CaptureFixture[str]) -> None:
    from providers.local.devagent import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--allow-exec" in text and "without isolation" in text


def test_the_local_provider_starts_the_stand_in_without_exec(tmp_path: Path) -> None:
    from providers.local.layout import VmPaths
    from providers.local.vm import VmConfig, agent_argv

    config = VmConfig(paths=VmPaths(tmp_path), instance_id="i-1", listen="127.0.0.1:15150",
                      pod_netns="/run/netns/podns", process_user_data="pud",
                      forwarder="apf")
    argv = agent_argv(config)
    assert argv[1:3] == ["-m", "providers.local.devagent"]
    assert "--allow-exec" not in argv
