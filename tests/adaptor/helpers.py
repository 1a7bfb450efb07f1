"""Small async helpers shared by the adaptor tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from protocols.ttrpc import TTRPCError


async def expect_error(call: Awaitable[Any]) -> TTRPCError:
    """Await ``call``, which must fail with a ttrpc status; return that error."""
    try:
        await call
    except TTRPCError as exc:
        return exc
    raise AssertionError("the call should have failed")


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``check`` (state changes in another task) until it holds or ``timeout`` passes."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - polling a condition owned by another task
            await asyncio.sleep(0.01)
