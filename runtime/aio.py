"""Running a daemon's event loop (uvloop when it is installed, the standard loop otherwise),
and waiting for the first of several things."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop (about 1.5x faster ttrpc round trips and TLS here).

    ``PEERPODS_EVENT_LOOP=asyncio`` selects the standard loop.
    """
    if os.environ.get("PEERPODS_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


async def first_done(*aws: Awaitable[Any]) -> tuple[int, Any]:
    """Run ``aws`` until one ends, then cancel the others and wait for them to end. Returns
    the index of the one that ended and its result (its exception is raised)."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    index = next(i for i, task in enumerate(tasks) if task in done)
    return index, tasks[index].result()
