"""containerd's Go ttrpc client (ttrpc-peer) against the project's Python ttrpc server."""

from __future__ import annotations

import asyncio

import pytest

from protocols.ttrpc import MESSAGE_LENGTH_MAX, Code
from tests.interop.peer import run_client
from tests.interop.pyserver import PeerServer

pytestmark = pytest.mark.interop

PyServer = tuple[PeerServer, str]
OK = {"code": 0, "message": "", "error": ""}


async def test_concurrent_calls_on_one_connection_complete_out_of_order(
    py_server: PyServer,
) -> None:
    peer, address = py_server
    result = await run_client(address, "concurrent", calls=100)
    assert result["calls"] == 100
    assert result["ok"] == 100, [r for r in result["results"] if r["error"]][:3]
    assert result["matched"] == 100  # every response belongs to its own request
    assert result["out_of_order"] is True
    # call i sleeps (100 - i) * 3 ms: the last call issued finishes well before the first
    order = result["completion_order"]
    assert order.index(99) < order.index(0)
    assert sorted(c["id"] for c in peer.calls) == [f"call-{i:03d}" for i in range(100)]


async def test_error_status_round_trip(py_server: PyServer) -> None:
    _, address = py_server
    result = await run_client(address, "error")
    assert result["status"]["code"] == Code.NOT_FOUND
    assert result["status"]["message"] == 'peer: sandbox "sb-ø" not found'
    assert result["health_status"]["code"] == Code.INTERNAL
    assert result["health_status"]["message"] == "health failed"
    # the same words a Go server uses
    assert result["unknown_method"]["code"] == Code.UNIMPLEMENTED
    assert result["unknown_method"]["message"] == "method NoSuchMethod"
    assert result["unknown_service"]["code"] == Code.UNIMPLEMENTED
    assert result["unknown_service"]["message"] == "service no.SuchService"
    assert result["after"] == OK


async def test_deadline_reaches_the_handler_and_expires(py_server: PyServer) -> None:
    peer, address = py_server
    result = await run_client(address, "deadline", timeout_ms=200)
    # a 2 s context deadline arrives as timeout_nano and becomes the handler's deadline
    assert 1000 < result["seen_deadline_ms"] <= 2000
    seen = peer.find("seen")
    assert seen is not None and 1.0e9 < seen["timeout_nano"] <= 2.0e9
    assert result["none_deadline_ms"] is None
    assert peer.find("none") == {
        "id": "none", "metadata": {}, "timeout_nano": 0, "deadline_ms": None, "outcome": "ok"
    }
    # the caller gives up at its deadline (Go reports its own context error, or the
    # server's DEADLINE_EXCEEDED if that arrives first) ...
    expired = result["expired"]
    assert result["expired_is_context_deadline"] or expired["code"] == Code.DEADLINE_EXCEEDED
    assert result["expired_elapsed_ms"] < 2000
    # ... and the handler saw the deadline and was stopped at it, not after its 5 s sleep
    call = peer.find("expire")
    assert call is not None
    assert 0 < call["timeout_nano"] <= 200_000_000
    for _ in range(50):
        if call["outcome"] != "running":
            break
        await asyncio.sleep(0.02)
    assert call["outcome"] == "cancelled"
    assert result["after"] == OK


async def test_oversized_messages(py_server: PyServer) -> None:
    peer, address = py_server
    result = await run_client(address, "oversize")
    # This Go ttrpc (1.1.x) sends an oversized request; the Python server reads and drops
    # the frame, answers RESOURCE_EXHAUSTED on that stream and keeps the connection.
    assert result["request_bytes"] > MESSAGE_LENGTH_MAX
    assert result["request"]["code"] == Code.RESOURCE_EXHAUSTED
    assert "exceed maximum message size of 4194304" in result["request"]["message"]
    assert result["after_request"] == OK
    assert peer.find("big-request") is None  # the handler never ran
    # The Python server refuses to send a response over 4 MiB: the Go client gets a
    # RESOURCE_EXHAUSTED status instead, and its connection stays usable.
    response = result["response"]
    assert response["exit_code"] == 0, response
    inner = response["result"]
    assert inner["error"]["code"] == Code.RESOURCE_EXHAUSTED
    assert inner["after"] == OK
    call = peer.find("big-response")
    assert call is not None and call["outcome"] == "ok"


async def test_metadata_reaches_the_handler(py_server: PyServer) -> None:
    peer, address = py_server
    result = await run_client(address, "metadata")
    sent = result["sent"]
    assert sent == {"x-peer-one": ["1"], "x-peer-case": ["Mixed Value"], "x-peer-multi": ["a", "b"]}
    assert result["echoed"] == sent
    assert result["health_echoed"] == sent
    call = peer.find("metadata")
    assert call is not None and call["metadata"] == sent


async def test_bench_scenario_runs(py_server: PyServer) -> None:
    _, address = py_server
    result = await run_client(address, "bench", calls=200)
    assert "error" not in result, result
    assert result["calls"] == 200
    assert 0 < result["p50_us"] <= result["p99_us"]
    assert result["calls_per_s"] > 0
