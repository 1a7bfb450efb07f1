"""One loop timer for many call deadlines."""

from __future__ import annotations

import asyncio

from protocols.ttrpc.deadlines import Deadlines


async def test_only_live_calls_expire_in_deadline_order() -> None:
    live: dict[int, object] = {}
    expired: list[int] = []
    done = asyncio.Event()

    def expire(key: int, value: object) -> None:
        del live[key]
        expired.append(key)
        if key == 5:
            done.set()

    deadlines: Deadlines[int, object] = Deadlines(live, expire)
    now = asyncio.get_running_loop().time()
    for key, delay in [(1, 0.05), (3, 0.02), (5, 0.08), (7, 0.01)]:
        live[key] = object()
        deadlines.add(key, live[key], now + delay)
    del live[7]  # answered in time
    live[3] = object()  # a new call reusing the key: its own deadline is not the old one
    deadlines.add(3, live[3], now + 60)
    await asyncio.wait_for(done.wait(), 5)
    assert expired == [1, 5]
    assert list(live) == [3]
    deadlines.close()


async def test_finished_calls_do_not_pile_up() -> None:
    live: dict[int, object] = {}
    deadlines: Deadlines[int, object] = Deadlines(live, lambda key, value: None)
    far = asyncio.get_running_loop().time() + 60
    for key in range(10_000):
        live[key] = value = object()
        deadlines.add(key, value, far + key)
        del live[key]  # each call answered before the next
    assert len(deadlines._heap) <= 64 + 2
    deadlines.close()
