"""Fixtures for the Go <-> Python ttrpc interop tests."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.interop.peer import GoServer, require_peer
from tests.interop.pyserver import PeerServer


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for unix sockets (sun_path is limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="ttrpc-interop-") as path:
        yield Path(path)


@pytest.fixture
async def py_server(sockdir: Path) -> AsyncIterator[tuple[PeerServer, str]]:
    """The Python peer server on a unix socket; yields it and its peer address."""
    require_peer()
    peer = PeerServer()
    path = sockdir / "py.sock"
    await peer.server.start_unix(str(path))
    try:
        yield peer, f"unix:{path}"
    finally:
        await peer.server.shutdown(grace=0)


@pytest.fixture
def go_server(sockdir: Path) -> Iterator[GoServer]:
    """The Go peer server (with events) on a unix socket."""
    require_peer()
    with GoServer(f"unix:{sockdir / 'go.sock'}", events=True) as server:
        yield server
