"""The test service behind every ttrpc test server, and a way to see that a call reached it."""

from __future__ import annotations

import asyncio

from protocols.ttrpc import CallContext, TTRPCError

#: Payloads of ``sleep:`` calls that the handler is running now.
IN_FLIGHT: list[bytes] = []


async def echo(ctx: CallContext, payload: bytes) -> bytes:
    """Test service: the payload says what to do."""
    if payload.startswith(b"sleep:"):
        IN_FLIGHT.append(payload)
        try:
            await asyncio.sleep(float(payload[6:]))
        finally:
            IN_FLIGHT.remove(payload)
        return payload
    if payload.startswith(b"error:"):
        code, _, message = payload[6:].decode().partition(":")
        raise TTRPCError(int(code), message)
    if payload == b"boom":
        raise RuntimeError("handler exploded")
    if payload.startswith(b"big:"):
        return b"x" * int(payload[4:])
    if payload == b"metadata":
        return repr(ctx.metadata).encode()
    if payload == b"deadline":
        return repr(ctx.remaining()).encode()
    return payload


async def until_handling(payload: bytes, limit: float = 5.0) -> None:
    """Wait until the server runs the handler for ``payload`` (polled, with a deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while payload not in IN_FLIGHT:
        if loop.time() > deadline:
            raise AssertionError(f"no handler started for {payload!r} within {limit}s")
        await asyncio.sleep(0.005)
