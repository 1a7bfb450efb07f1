"""Client with the adaptor's certificate -> forwarder (in-process, TLS) -> fake kata-agent."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from forwarder.apf.daemon import Forwarder
from forwarder.apf.options import Options
from protocols.apf import loads
from protocols.kata import agent_pb2, health_pb2, oci_pb2
from protocols.ttrpc import Client, Code, ConnectionClosed, TTRPCError
from runtime.tlsprofile import client_context
from tests.forwarder.apf.helpers import SERVER_NAME, FakeAgent, Pki, wait_until

POD_NETNS = "/run/netns/podns"
AGENT = "grpc.AgentService"


@pytest.fixture
async def forwarder(pki: Pki, agent: FakeAgent, tmp_path: Path) -> AsyncIterator[Forwarder]:
    options = Options(config_path=str(tmp_path / "apf.json"), listen_host="127.0.0.1",
                      listen_port=0, kata_agent_socket=agent.path, pod_namespace=POD_NETNS)
    fwd = Forwarder(options, loads(pki.apf_json()), environ={})
    await fwd.start()
    yield fwd
    agent.release.set()
    await fwd.aclose(grace=1.0)


async def connect(fwd: Forwarder, pki: Pki, *, cert: bool = True,
                  other: bool = False) -> Client:
    assert fwd.address is not None
    pair = pki.other_client if other else pki.client
    context = client_context(pair.cert_pem if cert else None, pair.key_pem if cert else None,
                             pki.ca.cert_pem)
    return await Client.connect_tcp(*fwd.address, ssl=context, server_hostname=SERVER_NAME)


@pytest.fixture
async def client(forwarder: Forwarder, pki: Pki) -> AsyncIterator[Client]:
    async with await connect(forwarder, pki) as c:
        yield c


async def check(client: Client, timeout: float = 10.0) -> int:
    resp = await client.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                             health_pb2.HealthCheckResponse, timeout=timeout)
    return int(resp.status)


async def test_health_check_is_relayed(client: Client, agent: FakeAgent) -> None:
    assert await check(client) == health_pb2.HealthCheckResponse.SERVING
    version = await client.call("grpc.Health", "Version", health_pb2.CheckRequest(),
                                health_pb2.VersionCheckResponse, timeout=10)
    assert version.agent_version == "fake-3.0"
    assert [s.method for s in agent.seen] == ["Check", "Version"]


async def test_create_sandbox_loses_dns(client: Client, agent: FakeAgent) -> None:
    request = agent_pb2.CreateSandboxRequest(
        hostname="nginx", dns=["nameserver 10.96.0.10", "search default.svc"],
        sandbox_id="0123456789abcdef", sandbox_pidns=True)
    await client.call(AGENT, "CreateSandbox", request, agent_pb2.CreateSandboxRequest,
                      timeout=10)
    (seen,) = agent.calls("CreateSandbox")
    got = agent_pb2.CreateSandboxRequest.FromString(seen.payload)
    assert list(got.dns) == []
    assert (got.hostname, got.sandbox_id, got.sandbox_pidns) == ("nginx", "0123456789abcdef",
                                                                 True)


async def test_create_container_joins_pod_netns(client: Client, agent: FakeAgent) -> None:
    spec = oci_pb2.Spec(Version="1.1.0", Hostname="nginx", Linux=oci_pb2.Linux(
        CgroupsPath="/kubepods/x",
        Namespaces=[oci_pb2.LinuxNamespace(Type="ipc"), oci_pb2.LinuxNamespace(Type="mount")]))
    request = agent_pb2.CreateContainerRequest(container_id="c1", exec_id="c1", OCI=spec)
    await client.call(AGENT, "CreateContainer", request, agent_pb2.CreateContainerRequest,
                      timeout=10)
    got = agent_pb2.CreateContainerRequest.FromString(agent.calls("CreateContainer")[0].payload)
    assert [(n.Type, n.Path) for n in got.OCI.Linux.Namespaces] == [
        ("ipc", ""), ("mount", ""), ("network", POD_NETNS)]
    assert got.OCI.Linux.CgroupsPath == "/kubepods/x"
    assert got.OCI.Hostname == "nginx"
    assert got.container_id == "c1"


async def test_unintercepted_payload_passes_byte_for_byte(client: Client,
                                                          agent: FakeAgent) -> None:
    # Field 99 is unknown to every schema: a decode/re-encode would still keep it, but the
    # exact bytes (including this odd field order) only survive an undecoded relay.
    payload = b"\x12\x02e1\x0a\x02c1" + b"\x98\x06\x01"
    await client.call_raw(AGENT, "CloseStdin", payload, timeout=10)
    assert agent.calls("CloseStdin")[0].payload == payload


async def test_unknown_method_reaches_agent(client: Client, agent: FakeAgent) -> None:
    await client.call_raw(AGENT, "SomeFutureMethod", b"\x0a\x01x", timeout=10)
    assert agent.calls("SomeFutureMethod")[0].payload == b"\x0a\x01x"


async def test_error_status_passes_unchanged(client: Client) -> None:
    request = agent_pb2.SignalProcessRequest(container_id="c1", exec_id="e1", signal=9)
    with pytest.raises(TTRPCError) as info:
        await client.call(AGENT, "SignalProcess", request, agent_pb2.SignalProcessRequest,
                          timeout=10)
    assert info.value.code == Code.NOT_FOUND
    assert info.value.message == "process fake not found"
    assert info.value.details == (FakeAgent.ERROR_DETAIL,)


async def test_metadata_and_deadline_reach_agent(client: Client, agent: FakeAgent) -> None:
    metadata = (("traceparent", "00-abc-def-01"), ("x-multi", "1"), ("x-multi", "2"))
    await client.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                      health_pb2.HealthCheckResponse, timeout=30, metadata=metadata)
    (seen,) = agent.calls("Check")
    assert seen.metadata == metadata
    assert 25e9 < seen.timeout_nano <= 30e9
    await client.call_raw("grpc.Health", "Check", b"")  # no deadline stays no deadline
    assert agent.calls("Check")[1].timeout_nano == 0


async def test_deadline_expires_at_forwarder(client: Client, agent: FakeAgent) -> None:
    request = agent_pb2.WaitProcessRequest(container_id="c1", exec_id="e1")
    with pytest.raises(TTRPCError) as info:
        await client.call(AGENT, "WaitProcess", request, agent_pb2.WaitProcessResponse,
                          timeout=0.3)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert await check(client) == health_pb2.HealthCheckResponse.SERVING


async def test_fifty_concurrent_calls_share_one_agent_connection(
    client: Client, agent: FakeAgent, forwarder: Forwarder
) -> None:
    results = await asyncio.gather(*(
        client.call_raw(AGENT, "CloseStdin",
                        agent_pb2.CloseStdinRequest(container_id=f"c{i}").SerializeToString(),
                        timeout=20)
        for i in range(50)))
    assert results == [b""] * 50
    ids = sorted(agent_pb2.CloseStdinRequest.FromString(s.payload).container_id
                 for s in agent.calls("CloseStdin"))
    assert ids == sorted(f"c{i}" for i in range(50))
    assert forwarder.relay.connects == 1


async def test_blocking_call_does_not_delay_others(client: Client, agent: FakeAgent) -> None:
    request = agent_pb2.WaitProcessRequest(container_id="c1", exec_id="e1")
    waiting = asyncio.create_task(client.call(AGENT, "WaitProcess", request,
                                              agent_pb2.WaitProcessResponse, timeout=60))
    await wait_until(lambda: bool(agent.calls("WaitProcess")))
    for _ in range(5):
        assert await check(client, timeout=5) == health_pb2.HealthCheckResponse.SERVING
    assert not waiting.done()
    agent.release.set()
    assert (await asyncio.wait_for(waiting, 10)).status == 7


async def test_agent_restart_is_survived(client: Client, agent: FakeAgent,
                                         forwarder: Forwarder) -> None:
    assert await check(client) == health_pb2.HealthCheckResponse.SERVING
    await agent.stop()
    await wait_until(lambda: not forwarder.relay.connected)
    # A call made while the agent is down waits for it to come back.
    pending = asyncio.create_task(check(client, timeout=20))
    await asyncio.sleep(0.3)
    assert not pending.done()
    await agent.start()
    assert await asyncio.wait_for(pending, 20) == health_pb2.HealthCheckResponse.SERVING
    assert await check(client) == health_pb2.HealthCheckResponse.SERVING
    assert forwarder.relay.connects == 2


async def test_in_flight_call_fails_cleanly_when_agent_dies(
    client: Client, agent: FakeAgent
) -> None:
    request = agent_pb2.WaitProcessRequest(container_id="c1", exec_id="e1")
    waiting = asyncio.create_task(client.call(AGENT, "WaitProcess", request,
                                              agent_pb2.WaitProcessResponse, timeout=20))
    await wait_until(lambda: bool(agent.calls("WaitProcess")))
    await agent.stop()
    with pytest.raises(TTRPCError) as info:
        await waiting
    assert info.value.code in (Code.UNAVAILABLE, Code.CANCELLED)
    await agent.start()
    assert await check(client) == health_pb2.HealthCheckResponse.SERVING


async def _rejected(forwarder: Forwarder, pki: Pki, **kwargs: bool) -> None:
    try:
        conn = await connect(forwarder, pki, **kwargs)
    except (ssl.SSLError, ConnectionError):
        return  # TLS 1.2: the handshake itself fails
    # TLS 1.3: the server checks the client certificate after the client's handshake ends,
    # so the refusal shows up on first use.
    async with conn:
        with pytest.raises((ConnectionClosed, TTRPCError)):
            await check(conn, timeout=5)


async def test_client_without_certificate_is_rejected(
    forwarder: Forwarder, pki: Pki, agent: FakeAgent
) -> None:
    await _rejected(forwarder, pki, cert=False)
    assert agent.seen == []


async def test_client_with_untrusted_certificate_is_rejected(
    forwarder: Forwarder, pki: Pki, agent: FakeAgent
) -> None:
    await _rejected(forwarder, pki, other=True)
    assert agent.seen == []


async def test_plain_tcp_client_is_rejected(forwarder: Forwarder, agent: FakeAgent) -> None:
    assert forwarder.address is not None
    async with await Client.connect_tcp(*forwarder.address) as plain:
        with pytest.raises((ConnectionClosed, TTRPCError)):
            await plain.call_raw("grpc.Health", "Check", b"", timeout=5)
    assert agent.seen == []
