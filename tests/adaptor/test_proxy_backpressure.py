"""A shim that never reads its answers cannot make the proxy or the forwarder buffer without
bound, and other connections are still served meanwhile."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from adaptor.proxy import AgentProxy, ForwarderDialer
from forwarder.apf.interceptor import Interceptor
from forwarder.apf.relay import AgentRelay
from protocols.kata import health_pb2
from protocols.ttrpc import CallContext, Client, MessageType, Request, Server
from protocols.ttrpc.messages import encode_request
from protocols.ttrpc.relay import WRITE_HIGH_WATER, RelayConnection, RelayServer
from tests.forwarder.apf.helpers import wait_until

CHUNK = 1 << 20
CALLS = 400  # 400 MiB of answers if nothing pushed back
STDOUT = b"\x0a\x80\x80\x40" + b"o" * CHUNK  # ReadStreamResponse{data: 1 MiB}, shared


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def agent(ctx: CallContext, payload: bytes) -> bytes:
    if ctx.method == "ReadStdout":
        return STDOUT
    return health_pb2.HealthCheckResponse(
        status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()


@dataclass
class Hops:
    proxy: AgentProxy
    forwarder: RelayServer


@pytest.fixture
async def hops(short_dir: str) -> AsyncIterator[Hops]:
    server = Server()
    server.register_raw("grpc.AgentService", agent)
    server.register_raw("grpc.Health", agent)
    await server.start_unix(f"{short_dir}/agent.sock")
    relay = AgentRelay(f"{short_dir}/agent.sock", dial_timeout=5)
    forwarder = RelayServer(Interceptor(relay, pod_netns="/run/netns/x").policy())
    _, port = await forwarder.start_tcp("127.0.0.1", 0)
    proxy = AgentProxy("sb", f"{short_dir}/pod/agent.ttrpc",
                       ForwarderDialer("sb", "127.0.0.1", port), proxy_timeout=5)
    await proxy.start()
    yield Hops(proxy, forwarder)
    await proxy.aclose()
    await forwarder.shutdown(grace=0)
    await relay.aclose()
    await server.shutdown(grace=0)


def _relay_buffers(conns: set[RelayConnection]) -> int:
    total = 0
    for conn in conns:
        for side in (conn, conn.up):
            if side is not None and side.transport is not None:
                total += side.transport.get_write_buffer_size() + len(side._partial)
    return total


def _paused(conns: set[RelayConnection]) -> bool:
    return any(conn.up is not None and conn.up._paused_by for conn in conns)


async def test_a_reader_that_stops_does_not_grow_the_hops(hops: Hops) -> None:
    proxy_server = hops.proxy._server
    assert proxy_server is not None
    before = rss()
    _, writer = await asyncio.open_unix_connection(hops.proxy.socket_path)
    request = encode_request(Request("grpc.AgentService", "ReadStdout", b"\x0a\x01c", 0, ()))
    writer.write(b"".join(struct.pack(">IIBB", len(request), 2 * i + 1, MessageType.REQUEST, 0)
                          + request for i in range(CALLS)))
    # The proxy stops reading the forwarder's answers: its buffer to the shim is full.
    await wait_until(lambda: _paused(proxy_server.connections), limit=30)
    await wait_until(lambda: _paused(hops.forwarder.connections), limit=30)
    # Both hops hold a bounded amount, whatever the shim asked for.
    bound = 4 * WRITE_HIGH_WATER + 2 * CHUNK
    assert _relay_buffers(proxy_server.connections) < bound
    assert _relay_buffers(hops.forwarder.connections) < bound
    assert rss() - before < 64 * CHUNK
    # Another shim connection is served meanwhile.
    async with await Client.connect_unix(hops.proxy.socket_path) as other:
        for _ in range(3):
            reply = await other.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                     health_pb2.HealthCheckResponse, timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert _relay_buffers(proxy_server.connections) < bound
    writer.close()


async def test_calls_in_flight_are_capped_per_connection(short_dir: str) -> None:
    """Past ``max_calls`` calls in flight a hop stops reading more requests."""
    release = asyncio.Event()

    async def slow(ctx: CallContext, payload: bytes) -> bytes:
        await release.wait()
        return b""

    server = Server()
    server.register_raw("grpc.AgentService", slow)
    await server.start_unix(f"{short_dir}/agent.sock")
    relay = AgentRelay(f"{short_dir}/agent.sock", dial_timeout=5)
    policy = Interceptor(relay, pod_netns="/run/netns/x").policy()
    forwarder = RelayServer(replace(policy, max_calls=8))
    await forwarder.start_unix(f"{short_dir}/fwd.sock")
    async with await Client.connect_unix(f"{short_dir}/fwd.sock") as client:
        calls = [asyncio.create_task(client.call_raw("grpc.AgentService", "WaitProcess", b"",
                                                     timeout=20)) for _ in range(20)]
        await wait_until(lambda: forwarder.active_calls == 8)
        (conn,) = forwarder.connections
        assert conn._paused_by
        release.set()
        assert await asyncio.gather(*calls) == [b""] * 20
    await forwarder.shutdown(grace=0)
    await relay.aclose()
    await server.shutdown(grace=0)
