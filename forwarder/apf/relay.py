"""The forwarder's connections to kata-agent: one per connection from the adaptor.

A connection is dialled by the first call made on a connection from the adaptor, retrying
while the agent is not up yet (up to 150 s, as upstream). Frames pass both ways unchanged
(:mod:`protocols.ttrpc.relay`): stream ids, service, method, deadline, metadata and payload
of the call, the agent's answer and status. When the agent connection drops (agent
restart), the calls in flight fail with UNAVAILABLE and the next call dials again. Calls
never wait for each other: a blocking ``WaitProcess`` holds only its own stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from protocols.ttrpc import Code, TTRPCError
from protocols.ttrpc.relay import RelayConnection, Upstream

log = logging.getLogger(__name__)

DEFAULT_DIAL_TIMEOUT = 150.0
_FIRST_RETRY_DELAY = 0.05
_MAX_RETRY_DELAY = 1.0

CONNECTION_CLOSED = "kata-agent connection closed: ttrpc: closed"

Dialer = Callable[[Callable[[], Upstream], str], Awaitable[Upstream]]


async def connect_unix(factory: Callable[[], Upstream], path: str) -> Upstream:
    _, up = await asyncio.get_running_loop().create_unix_connection(factory, path)
    return up


class AgentUnavailable(TTRPCError):
    """kata-agent could not be reached; relayed calls fail with UNAVAILABLE."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.UNAVAILABLE, message)


class AgentRelay:
    """Dials kata-agent at ``socket_path`` for each connection the forwarder relays."""

    def __init__(
        self,
        socket_path: str,
        *,
        dial_timeout: float = DEFAULT_DIAL_TIMEOUT,
        dialer: Dialer = connect_unix,
    ) -> None:
        self._path = socket_path
        self._dial_timeout = dial_timeout
        self._dialer = dialer
        self._upstreams: set[Upstream] = set()
        self._dials: set[asyncio.Task[Upstream]] = set()
        self._closed = False
        self.connects = 0  # successful dials so far

    @property
    def socket_path(self) -> str:
        return self._path

    @property
    def connected(self) -> bool:
        self._upstreams = {up for up in self._upstreams if up.is_open}
        return bool(self._upstreams)

    async def connect(self, down: RelayConnection, deadline: float | None) -> Upstream:
        """An agent connection for ``down`` (a relay connector; the call deadlines are kept
        by the relay, the dial goes on up to the dial timeout)."""
        if self._closed:
            raise AgentUnavailable("agent-protocol-forwarder is shutting down")
        if down.connects:
            log.info("agent=%s: connection was closed, reconnecting", self._path)
        task = asyncio.get_running_loop().create_task(self._dial())
        self._dials.add(task)
        try:
            up = await task
        finally:
            self._dials.discard(task)
        self._upstreams.add(up)
        return up

    async def _dial(self) -> Upstream:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._dial_timeout
        delay = _FIRST_RETRY_DELAY
        attempts = 0
        log.info("agent=%s: trying to establish agent connection", self._path)
        while True:
            attempts += 1
            try:
                up = await self._dialer(Upstream, self._path)
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
                up.close()
                raise AgentUnavailable("agent-protocol-forwarder is shutting down")
            log.info("agent=%s: established agent connection (attempt %d)",
                     self._path, attempts)
            self.connects += 1
            return up

    def connection_lost(self, calls: int, reason: str) -> None:
        log.warning("agent=%s: connection lost with %d call(s) in flight: %s", self._path,
                    calls, reason)

    async def aclose(self) -> None:
        """Stop dialling and close the agent connections; later calls fail with UNAVAILABLE."""
        self._closed = True
        for task in list(self._dials):
            task.cancel()
        for task in list(self._dials):
            with contextlib.suppress(asyncio.CancelledError, TTRPCError):
                await task
        for up in self._upstreams:
            up.close()
        self._upstreams.clear()
