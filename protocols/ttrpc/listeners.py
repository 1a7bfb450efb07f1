"""The listening side both ttrpc servers share (:class:`protocols.ttrpc.server.Server`, which
serves calls, and :class:`protocols.ttrpc.relay.RelayServer`, which relays them): unix and
TCP listeners, already-connected sockets, and closing the listeners at shutdown. Each
accepted connection gets the protocol object that ``_new_connection`` makes."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl as ssl_module


class Listeners:
    def __init__(self) -> None:
        self._listeners: list[asyncio.AbstractServer] = []

    def _new_connection(self) -> asyncio.BaseProtocol:
        raise NotImplementedError

    async def start_unix(self, path: str, *, mode: int | None = None) -> None:
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(self._new_connection, path=path)
        if mode is not None:
            os.chmod(path, mode)
        self._listeners.append(listener)

    async def start_tcp(
        self, host: str, port: int, *, ssl: ssl_module.SSLContext | None = None
    ) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(
            self._new_connection, host=host, port=port, ssl=ssl, reuse_address=True
        )
        self._listeners.append(listener)
        address = listener.sockets[0].getsockname()
        return address[0], address[1]

    async def accept_socket(
        self, sock: socket.socket, *, ssl: ssl_module.SSLContext | None = None
    ) -> None:
        """Serve one already-connected socket (for in-memory pairs and socket activation)."""
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(self._new_connection, sock=sock, ssl=ssl)

    async def _stop_listening(self) -> None:
        """Close every listener and wait until they are closed (connections stay open)."""
        for listener in self._listeners:
            listener.close()
        for listener in self._listeners:
            await listener.wait_closed()
        self._listeners.clear()
