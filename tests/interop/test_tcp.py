"""Both peers over plain loopback TCP (the address form the forwarder's listener uses)."""

from __future__ import annotations

import pytest

from protocols.kata import health_pb2
from protocols.ttrpc import Client, Code, TTRPCError
from tests.interop.peer import GoServer, require_peer, run_client
from tests.interop.pyserver import PeerServer

pytestmark = pytest.mark.interop


async def test_python_client_to_go_server_over_tcp() -> None:
    require_peer()
    async with GoServer("tcp:127.0.0.1:0") as go:
        host, port = go.address.removeprefix("tcp:").rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        async with await Client.connect_tcp(host, int(port)) as client:
            response = await client.call(
                "grpc.Health", "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse
            )
            assert response.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(TTRPCError) as info:
                await client.call(
                    "grpc.Health", "Check",
                    health_pb2.CheckRequest(service="status-code=14&status-message=down"),
                    health_pb2.HealthCheckResponse,
                )
            assert (info.value.code, info.value.message) == (Code.UNAVAILABLE, "down")


async def test_go_client_to_python_server_over_tcp() -> None:
    require_peer()
    peer = PeerServer()
    host, port = await peer.server.start_tcp("127.0.0.1", 0)
    try:
        result = await run_client(f"tcp:{host}:{port}", "metadata")
    finally:
        await peer.server.shutdown(grace=0)
    assert result["echoed"] == result["sent"]
    assert result["sent"]["x-peer-case"] == ["Mixed Value"]
