"""A frame-level ttrpc relay: whole frames pass from one connection to the next unchanged.

Each downstream connection gets its own upstream connection, so stream ids, service,
method, payload, deadline and metadata reach the next hop byte for byte, and responses come
back byte for byte. Only the Request envelope is scanned (service and method, see
:func:`~protocols.ttrpc.messages.scan_request`); a method with a *hook* has its payload
handed to the hook, which returns the payload to send on.

What the relay answers itself, as :class:`~protocols.ttrpc.server.Server` does: even,
re-used or streaming stream ids, undecodable envelopes, unknown services, Data frames,
oversized requests; a call whose deadline passes before its answer (DEADLINE_EXCEEDED);
calls in flight when the upstream connection drops (UNAVAILABLE). The next request dials
again.

Backpressure: a side stops being read while the other side's write buffer is above its
high-water mark, and the downstream side while ``max_calls`` calls are in flight.
Frames that are ready in the same read go out in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from protocols.ttrpc.framing import MESSAGE_LENGTH_MAX
from protocols.ttrpc.listeners import Listeners
from protocols.ttrpc.relayconn import RelayConnection
from protocols.ttrpc.relayio import CUT_THROUGH, WRITE_HIGH_WATER, Upstream
from protocols.ttrpc.server import MAX_CALLS_IN_FLIGHT, CallContext

__all__ = ["CUT_THROUGH", "WRITE_HIGH_WATER", "Connector", "Hook", "RelayConnection",
           "RelayPolicy", "RelayServer", "Upstream"]

# A hook returns the payload to send on; a plain function runs in line (so requests stay
# in order), a coroutine function as its own task.
Hook = Callable[[CallContext, bytes], "Awaitable[bytes] | bytes"]
Connector = Callable[[RelayConnection, "float | None"], Awaitable[Upstream]]


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """What one hop relays and where it looks in.

    ``connect(down, deadline)`` opens the upstream connection for ``down`` (an
    :class:`Upstream`, retrying as the hop sees fit until ``deadline``, event-loop time or
    ``None``) and raises :class:`TTRPCError` when it gives up. ``hooks`` maps a method
    name to a function that gets the request payload and returns the payload to send on.
    ``observe(method)`` runs for the methods in ``observed`` (for logging), ``on_error(method,
    code, message)`` for an error answer to a hooked call. ``lost`` is the UNAVAILABLE text
    for calls in flight when the upstream connection drops (``on_lost(calls, reason)`` hears
    of it). ``account(kind, nbytes, code)`` counts request bytes (``"to_agent"``), answers
    from upstream (``"from_agent"``) and answers the relay gave itself to calls it started
    (``"local"``; code -1 for a lost connection).
    """

    services: frozenset[str]
    connect: Connector
    lost: str
    hooks: Mapping[str, Hook] = field(default_factory=dict)
    observed: frozenset[str] = frozenset()
    observe: Callable[[str], None] | None = None
    on_error: Callable[[str, int, str], None] | None = None
    on_lost: Callable[[int, str], None] | None = None
    account: Callable[[str, int, int], None] | None = None
    max_calls: int = MAX_CALLS_IN_FLIGHT
    max_message: int = MESSAGE_LENGTH_MAX


class RelayServer(Listeners):
    """Listeners whose connections are relayed with one :class:`RelayPolicy`."""

    def __init__(self, policy: RelayPolicy,
                 on_idle: Callable[[Upstream], None] | None = None) -> None:
        """``on_idle`` takes the upstream connection of a downstream connection that closed
        with no call in flight (so it can serve the next one); without it, it is closed."""
        super().__init__()
        self.policy = policy
        self.on_idle = on_idle
        self.connections: set[RelayConnection] = set()
        self.closing = False
        self.drained: asyncio.Event | None = None  # set when the last call ends, in shutdown

    def _new_connection(self) -> RelayConnection:
        return RelayConnection(self)

    @property
    def active_calls(self) -> int:
        return sum(len(conn.calls) for conn in self.connections)

    async def shutdown(self, grace: float = 5.0) -> None:
        """Stop accepting, give calls in flight ``grace`` seconds, then cancel and close."""
        self.closing = True
        await self._stop_listening()
        if self.active_calls and grace > 0:
            self.drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self.drained.wait()
        for conn in list(self.connections):
            conn.cancel_all()
            conn.close()
