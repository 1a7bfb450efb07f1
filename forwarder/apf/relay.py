"""One multiplexed ttrpc connection to kata-agent, shared by every relayed call.

The connection is dialled lazily by the first call, retrying while the agent is not up
yet (up to 150 s, as upstream). Every call is forwarded with its payload undecoded, its
service, method, remaining deadline and metadata; the agent's status comes back unchanged.
When the agent connection drops (agent restart), the next call dials again. Calls never
wait for each other: a blocking ``WaitProcess`` holds only its own stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from protocols.ttrpc import CallContext, Client, Code, ConnectionClosed, TTRPCError

log = logging.getLogger(__name__)

DEFAULT_DIAL_TIMEOUT = 150.0
_FIRST_RETRY_DELAY = 0.05
_MAX_RETRY_DELAY = 1.0

Dialer = Callable[[str], Awaitable[Client]]


class AgentUnavailable(TTRPCError):
    """kata-agent could not be reached; relayed calls fail with UNAVAILABLE."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.UNAVAILABLE, message)


def _consume_result(task: asyncio.Task[Client]) -> None:
    # Every waiter may have given up (deadline) before the dial ended: retrieve the
    # outcome so an unwatched failure is not reported as "never retrieved".
    if not task.cancelled():
        task.exception()


class AgentRelay:
    """Forwards ttrpc calls to kata-agent at ``socket_path`` over one shared connection."""

    def __init__(
        self,
        socket_path: str,
        *,
        dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
        dialer: Dialer = Client.connect_unix,
    ) -> None:
        self._path = socket_path
        self._dial_timeout = dial_timeout
        self._dialer = dialer
        self._client: Client | None = None
        self._dialing: asyncio.Task[Client] | None = None
        self._closed = False
        self.connects = 0  # successful dials so far (1 + reconnects)

    @property
    def socket_path(self) -> str:
        return self._path

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._client.closed

    async def forward(self, ctx: CallContext, payload: bytes) -> bytes:
        """Relay one call (a raw ttrpc handler): same service, method, deadline, metadata."""
        client = await self.client()
        try:
            return await client.forward(ctx, payload)
        except ConnectionClosed as exc:
            log.warning("agent=%s: connection lost during %s/%s: %s",
                        self._path, ctx.service, ctx.method, exc)
            raise AgentUnavailable(f"kata-agent connection closed: {exc}") from None

    async def client(self) -> Client:
        """The live agent connection, dialling (once, shared by all waiting calls) if needed."""
        if self._closed:
            raise AgentUnavailable("agent-protocol-forwarder is shutting down")
        client = self._client
        if client is not None and not client.closed:
            return client
        if client is not None:
            log.info("agent=%s: connection was closed, reconnecting", self._path)
            self._client = None
        if self._dialing is None or self._dialing.done():
            self._dialing = asyncio.get_running_loop().create_task(self._dial())
            self._dialing.add_done_callback(_consume_result)
        # Shielded: a caller whose deadline passes stops waiting, the dial goes on for others.
        return await asyncio.shield(self._dialing)

    async def _dial(self) -> Client:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._dial_timeout
        delay = _FIRST_RETRY_DELAY
        attempts = 0
        log.info("agent=%s: trying to establish agent connection", self._path)
        while True:
            attempts += 1
            try:
                client = await self._dialer(self._path)
            except OSError as exc:
                if loop.time() + delay >= give_up:
                    message = (f"failed to establish agent connection to {self._path} "
                               f"after {attempts} attempts: {exc.strerror or exc}")
                    log.error("agent=%s: %s", self._path, message)
                    raise AgentUnavailable(message) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_DELAY)
                continue
            if self._closed:
                await client.aclose()
                raise AgentUnavailable("agent-protocol-forwarder is shutting down")
            log.info("agent=%s: established agent connection (attempt %d)",
                     self._path, attempts)
            self._client = client
            self.connects += 1
            return client

    async def aclose(self) -> None:
        """Stop dialling and close the agent connection; later calls fail with UNAVAILABLE."""
        self._closed = True
        if self._dialing is not None and not self._dialing.done():
            self._dialing.cancel()
            with contextlib.suppress(asyncio.CancelledError, TTRPCError):
                await self._dialing
        if self._client is not None:
            await self._client.aclose()
            self._client = None
