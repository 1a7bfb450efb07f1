"""Backpressure: a peer that floods requests and never reads its responses does not make the
server buffer without bound, and other connections are still served."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from protocols.ttrpc import CallContext, Client, MessageType, Request, Server, encode_frame
from protocols.ttrpc.messages import encode_request

RESPONSE_SIZE = 4096
FLOOD_CALLS = 20_000  # unbounded buffering would hold ~80 MiB of responses


async def _big(ctx: CallContext, payload: bytes) -> bytes:
    return b"x" * RESPONSE_SIZE


class _Hold:
    """A handler that never answers (it only holds a call slot); counts the calls it got."""

    def __init__(self, expected: int) -> None:
        self.entered = 0
        self.all_in = asyncio.Event()
        self._expected = expected

    async def __call__(self, ctx: CallContext, payload: bytes) -> bytes:
        self.entered += 1
        if self.entered >= self._expected:
            self.all_in.set()
        await asyncio.Event().wait()
        return b""


def _request(stream_id: int, method: str = "Big") -> bytes:
    return encode_frame(stream_id, MessageType.REQUEST,
                        encode_request(Request("test.Flood", method, b"", 0, ())))


async def _flood(sock: socket.socket, calls: int) -> int:
    """Send requests until the kernel refuses more (the server stopped reading) or all sent."""
    data = b"".join(_request(2 * i + 1) for i in range(calls))
    sent = 0
    while sent < len(data):
        try:
            sent += sock.send(data[sent:])
        except BlockingIOError:
            break
        await asyncio.sleep(0)  # let the server run between sends
    return sent


def _buffered(server: Server) -> int:
    return sum(conn.transport.get_write_buffer_size() for conn in server._connections
               if conn.transport is not None)


async def test_flood_without_reading_stays_bounded(tmp_path: Path) -> None:
    server = Server(max_calls=64)  # at most 64 responses of 4 KiB waiting
    server.register_raw("test.Flood/Big", _big)
    path = str(tmp_path / "flood.sock")
    await server.start_unix(path)
    flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flood.connect(path)
    flood.setblocking(False)
    try:
        sent = await _flood(flood, FLOOD_CALLS)
        async with await Client.connect_unix(path) as other:
            assert await other.call_raw("test.Flood", "Big", b"", timeout=10) == b"x" * 4096
        # The server stopped reading: the flood did not all get through, and what the server
        # holds for the flooding peer is a few high-water marks, not 20 000 responses.
        assert sent < len(_request(1)) * FLOOD_CALLS
        assert _buffered(server) < 1 << 20
    finally:
        flood.close()
        await server.shutdown(grace=0)


async def test_calls_in_flight_are_capped(tmp_path: Path) -> None:
    server = Server(max_calls=8)
    hold = _Hold(8)
    server.register_raw("test.Flood/Hold", hold)
    path = str(tmp_path / "cap.sock")
    await server.start_unix(path)
    _reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(b"".join(_request(2 * i + 1, "Hold") for i in range(100)))
        await writer.drain()
        await asyncio.wait_for(hold.all_in.wait(), 10)
        for _ in range(200):  # let the loop run on: no further request may be taken
            await asyncio.sleep(0)
        assert hold.entered == 8
        assert server.active_calls == 8  # the other 92 wait, unread or unparsed
        connection = next(iter(server._connections))
        assert connection.transport is not None
        assert not connection.transport.is_reading()
    finally:
        writer.close()
        await server.shutdown(grace=0)
