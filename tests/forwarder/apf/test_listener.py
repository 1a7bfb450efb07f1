"""Admission control of the forwarder's listener, on loopback (127.0.0.0/8 gives many sources)."""

from __future__ import annotations

import asyncio
import resource
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from forwarder.apf.daemon import Forwarder
from forwarder.apf.listener import (
    AdmissionLimits,
    GuardedListener,
    raise_nofile_limit,
    source_key,
)
from forwarder.apf.options import Options
from protocols.apf import loads
from protocols.kata import health_pb2
from protocols.ttrpc import Client, Server
from runtime.tlsprofile import client_context
from tests.forwarder.apf.helpers import SERVER_NAME, FakeAgent, Pki, wait_until

LIMITS = AdmissionLimits(handshake_timeout=30.0, per_source=4, total=12)


@pytest.fixture
async def forwarder(pki: Pki, agent: FakeAgent, tmp_path: Path) -> AsyncIterator[Forwarder]:
    options = Options(config_path=str(tmp_path / "apf.json"), listen_host="127.0.0.1",
                      listen_port=0, kata_agent_socket=agent.path,
                      pod_namespace="/run/netns/podns")
    fwd = Forwarder(options, loads(pki.apf_json()), environ={}, limits=LIMITS)
    await fwd.start()
    yield fwd
    agent.release.set()
    await fwd.aclose(grace=1.0)


@pytest.fixture
def idle() -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def _open_idle(fwd: Forwarder, source: str, count: int, into: list[socket.socket]) -> None:
    assert fwd.address is not None
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(fwd.address)
        into.append(sock)


async def _check(fwd: Forwarder, pki: Pki) -> int:
    assert fwd.address is not None
    context = client_context(pki.client.cert_pem, pki.client.key_pem, pki.ca.cert_pem)
    async with asyncio.timeout(10):
        async with await Client.connect_tcp(*fwd.address, ssl=context,
                                            server_hostname=SERVER_NAME) as client:
            resp = await client.call("grpc.Health", "Check", health_pb2.CheckRequest(),
                                     health_pb2.HealthCheckResponse, timeout=10)
    return int(resp.status)


def _listener(fwd: Forwarder) -> GuardedListener:
    assert fwd.listener is not None
    return fwd.listener


async def test_per_source_cap(forwarder: Forwarder, pki: Pki, idle: list[socket.socket]) -> None:
    listener = _listener(forwarder)
    await asyncio.to_thread(_open_idle, forwarder, "127.0.0.2", 30, idle)
    await wait_until(lambda: listener.handshaking + listener.refused == 30)
    assert listener.handshaking == LIMITS.per_source
    assert listener.refused == 30 - LIMITS.per_source
    assert await _check(forwarder, pki) == health_pb2.HealthCheckResponse.SERVING


async def test_total_cap_evicts_the_busiest_source(
    forwarder: Forwarder, pki: Pki, idle: list[socket.socket]
) -> None:
    listener = _listener(forwarder)
    for n in range(10):
        await asyncio.to_thread(_open_idle, forwarder, f"127.0.1.{n + 1}", LIMITS.per_source,
                                idle)
    await wait_until(lambda: listener.handshaking + listener.evicted == 40)
    assert listener.handshaking == LIMITS.total
    # The table is full of unauthenticated connections; an mTLS client still gets in.
    for _ in range(3):
        assert await _check(forwarder, pki) == health_pb2.HealthCheckResponse.SERVING
    assert listener.handshaking <= LIMITS.total


async def test_idle_handshake_times_out(pki: Pki, agent: FakeAgent, tmp_path: Path,
                                        idle: list[socket.socket]) -> None:
    options = Options(config_path=str(tmp_path / "apf.json"), listen_host="127.0.0.1",
                      listen_port=0, kata_agent_socket=agent.path,
                      pod_namespace="/run/netns/podns")
    fwd = Forwarder(options, loads(pki.apf_json()), environ={},
                    limits=AdmissionLimits(handshake_timeout=0.3))
    await fwd.start()
    try:
        await asyncio.to_thread(_open_idle, fwd, "127.0.0.3", 3, idle)
        listener = _listener(fwd)
        await wait_until(lambda: listener.handshaking == 3)
        await wait_until(lambda: listener.handshaking == 0, limit=5)
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""  # closed by the forwarder
        assert await _check(fwd, pki) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await fwd.aclose(grace=0)


def test_source_key() -> None:
    assert source_key(("10.0.0.7", 1)) == "10.0.0.7"
    assert source_key(("2001:db8:1:2:aaaa::1", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert source_key(("2001:db8:1:2:bbbb::9", 1, 0, 0)) == "2001:db8:1:2::/64"
    assert source_key(("::ffff:10.0.0.7", 1, 0, 0)) == "10.0.0.7"


def test_limits_must_be_consistent() -> None:
    with pytest.raises(ValueError, match="per_source"):
        GuardedListener(Server(), None, AdmissionLimits(per_source=10, total=5))


def test_raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 64:
        pytest.skip("needs a finite hard limit above 64")
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        assert raise_nofile_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
