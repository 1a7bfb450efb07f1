"""The project's Python ttrpc client against containerd's Go ttrpc server (ttrpc-peer)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from protocols.kata import health_pb2, hypervisor_pb2
from protocols.ttrpc import MESSAGE_LENGTH_MAX, Client, Code, TTRPCError
from tests.interop.peer import GoServer

pytestmark = pytest.mark.interop

HV = "hypervisor.Hypervisor"


@pytest.fixture
async def client(go_server: GoServer) -> AsyncIterator[Client]:
    path = go_server.address.removeprefix("unix:")
    async with await Client.connect_unix(path) as c:
        yield c


async def create_vm(
    client: Client,
    id_: str,
    behaviour: dict[str, str] | None = None,
    *,
    timeout: float | None = 10.0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    annotations = {f"peer.{k}": v for k, v in (behaviour or {}).items()}
    request = hypervisor_pb2.CreateVMRequest(id=id_, annotations=annotations)
    response = await client.call(
        HV, "CreateVM", request, hypervisor_pb2.CreateVMResponse,
        timeout=timeout, metadata=metadata,
    )
    report: dict[str, Any] = json.loads(response.agentSocketPath)
    return report


async def assert_healthy(client: Client) -> None:
    response = await client.call(
        "grpc.Health", "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse,
        timeout=5.0,
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_check(client: Client) -> None:
    await assert_healthy(client)
    version = await client.call(
        "grpc.Health", "Version", health_pb2.CheckRequest(), health_pb2.VersionCheckResponse
    )
    assert version.grpc_version == "ttrpc-go"


async def test_concurrent_calls_on_one_connection_complete_out_of_order(client: Client) -> None:
    n = 100
    finished: list[int] = []

    async def one(i: int) -> dict[str, Any]:
        report = await create_vm(client, f"call-{i:03d}", {"sleep-ms": str((n - i) * 3)})
        finished.append(i)
        return report

    reports = await asyncio.gather(*(one(i) for i in range(n)))
    assert [r["id"] for r in reports] == [f"call-{i:03d}" for i in range(n)]
    assert sorted(finished) == list(range(n))
    assert finished != list(range(n))
    assert finished.index(n - 1) < finished.index(0)


async def test_error_status_round_trip(client: Client) -> None:
    message = 'peer: sandbox "sb-ø" not found'
    with pytest.raises(TTRPCError) as info:
        await create_vm(client, "err", {"status-code": "5", "status-message": message})
    assert (info.value.code, info.value.message) == (Code.NOT_FOUND, message)

    with pytest.raises(TTRPCError) as info:
        await client.call(HV, "NoSuchMethod", hypervisor_pb2.VersionRequest(),
                          hypervisor_pb2.VersionResponse)
    assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "method NoSuchMethod")

    with pytest.raises(TTRPCError) as info:
        await client.call("no.SuchService", "Check", health_pb2.CheckRequest(),
                          health_pb2.HealthCheckResponse)
    assert (info.value.code, info.value.message) == (
        Code.UNIMPLEMENTED, "service no.SuchService"
    )
    await assert_healthy(client)


async def test_deadline_reaches_the_handler_and_expires(
    client: Client, go_server: GoServer
) -> None:
    seen = await create_vm(client, "seen", timeout=2.0)
    assert 1000 < seen["deadline_ms"] <= 2000
    none = await create_vm(client, "none", timeout=None)
    assert none["deadline_ms"] is None

    started = time.monotonic()
    with pytest.raises(TTRPCError) as info:
        await create_vm(client, "expire", {"sleep-ms": "5000"}, timeout=0.2)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.0
    # the Go handler got the deadline and returned with the context's error at it
    event = await asyncio.to_thread(go_server.wait_event, "expire")
    assert 0 < event["deadline_ms"] <= 200
    assert event["code"] == Code.DEADLINE_EXCEEDED
    assert event["elapsed_ms"] < 2000
    await assert_healthy(client)


async def test_oversized_request_is_refused_before_sending(
    client: Client, go_server: GoServer
) -> None:
    with pytest.raises(TTRPCError) as info:
        await create_vm(client, "big-request", {"pad": "x" * (MESSAGE_LENGTH_MAX + 1024)})
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    await create_vm(client, "after-big-request")
    go_server.wait_event("after-big-request")
    assert all(e["id"] != "big-request" for e in go_server.events)  # nothing reached Go
    await assert_healthy(client)


async def test_oversized_response_fails_that_call_only(client: Client) -> None:
    # This Go ttrpc (1.1.x) sends a response over 4 MiB; the Python client drops the frame,
    # fails that call with RESOURCE_EXHAUSTED and keeps the connection.
    pending = asyncio.ensure_future(create_vm(client, "slow", {"sleep-ms": "300"}))
    with pytest.raises(TTRPCError) as info:
        await create_vm(client, "big-response", {"response-bytes": str(MESSAGE_LENGTH_MAX + 1)})
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert not client.closed
    assert (await pending)["id"] == "slow"  # a call in flight on the same connection survives
    await assert_healthy(client)


async def test_metadata_reaches_the_handler(client: Client, go_server: GoServer) -> None:
    metadata = (("x-peer-one", "1"), ("x-peer-multi", "a"), ("x-peer-multi", "b"))
    report = await create_vm(client, "metadata", metadata=metadata)
    expected = {"x-peer-one": ["1"], "x-peer-multi": ["a", "b"]}
    assert report["metadata"] == expected
    version = await client.call(
        "grpc.Health", "Version", health_pb2.CheckRequest(), health_pb2.VersionCheckResponse,
        metadata=metadata,
    )
    assert json.loads(version.agent_version)["metadata"] == expected
    event = await asyncio.to_thread(go_server.wait_event, "metadata")
    assert event["metadata"] == expected
