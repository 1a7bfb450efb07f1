from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from protocols.ttrpc import CallContext, Code, Server
from tests.protocols.ttrpc.echo import echo

Handler = Callable[[CallContext, bytes], Awaitable[bytes]]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every ttrpc test runs on the standard loop and on uvloop (the daemons' loop)."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    srv.register_raw("test.Echo", echo)
    yield srv
    await srv.shutdown(grace=0)


@pytest.fixture
async def unix_path(tmp_path: Path, server: Server) -> str:
    path = str(tmp_path / "ttrpc.sock")
    await server.start_unix(path)
    return path


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    header = await reader.readexactly(10)
    length, stream_id, type_, flags = struct.unpack(">IIBB", header)
    return stream_id, type_, flags, await reader.readexactly(length)


def _unused(code: Code) -> None:  # keep Code imported for helpers in test modules
    del code
