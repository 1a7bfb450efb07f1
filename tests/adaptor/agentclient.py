"""A long-lived agent client that reconnects on failure, as the Kata shim's does."""

from __future__ import annotations

import asyncio

from protocols.kata import health_pb2
from protocols.ttrpc import Client, Code, ConnectionClosed, TTRPCError


class ReconnectingAgentClient:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.client: Client | None = None
        self.reconnects = 0

    async def check(self, timeout: float = 20.0) -> int:
        """grpc.Health/Check, retried over new connections until ``timeout`` passes."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    if self.client is None or self.client.closed:
                        if self.client is not None:
                            self.reconnects += 1
                        self.client = await Client.connect_unix(self.socket_path)
                    response = await self.client.call(
                        "grpc.Health", "Check", health_pb2.CheckRequest(),
                        health_pb2.HealthCheckResponse, timeout=5)
                    return int(response.status)
                except (OSError, ConnectionClosed):
                    if self.client is not None:
                        await self.client.aclose()
                    await asyncio.sleep(0.05)
                except TTRPCError as exc:
                    if exc.code != Code.UNAVAILABLE:
                        raise
                    await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
