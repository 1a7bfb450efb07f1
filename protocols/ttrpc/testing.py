"""In-memory client/server pairs for tests: a real socketpair, no filesystem, no port."""

from __future__ import annotations

import socket

from protocols.ttrpc.client import Client
from protocols.ttrpc.server import Server


async def connect_pair(server: Server) -> Client:
    """A client connected to ``server`` over a unix socketpair."""
    client_sock, server_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    await server.accept_socket(server_sock)
    return await Client.connect_socket(client_sock)
