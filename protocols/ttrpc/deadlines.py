"""Many call deadlines on one event-loop timer.

A relay may see thousands of calls a second, each with a deadline (the Kata shim sets one
on most calls) that almost never passes. One loop timer per call costs more than relaying
the call; here calls go into a heap and one timer is armed for the earliest deadline.
Finished calls are dropped from the heap lazily, and the heap is rebuilt when it holds
many more entries than live calls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Loop timers may fire a hair early (uvloop rounds to the millisecond).
_EARLY = 0.001


class Deadlines(Generic[K, V]):
    """Calls ``expire(key)`` once ``key``'s deadline has passed, if ``live[key]`` is still
    the value it was added with."""

    def __init__(self, live: Mapping[K, V], expire: Callable[[K, V], None]) -> None:
        self._live = live
        self._expire = expire
        self._heap: list[tuple[float, int, K, V]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = float("inf")
        self._loop = asyncio.get_running_loop()

    def add(self, key: K, value: V, deadline: float) -> None:
        heap = self._heap
        if len(heap) > 64 + 2 * len(self._live):
            self._heap = heap = [entry for entry in heap
                                 if self._live.get(entry[2]) is entry[3]]
            heapq.heapify(heap)
        heapq.heappush(heap, (deadline, next(self._order), key, value))
        if deadline < self._armed_at:
            self._arm(deadline)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._fire)
        self._armed_at = when

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = float("inf")
        heap, live = self._heap, self._live
        now = self._loop.time() + _EARLY
        while heap and heap[0][0] <= now:
            _, _, key, value = heapq.heappop(heap)
            if live.get(key) is value:
                self._expire(key, value)
        while heap and live.get(heap[0][2]) is not heap[0][3]:
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
