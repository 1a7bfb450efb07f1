"""Client-side rate limiting and retries for cloud APIs.

Two small tools that any provider can reuse:

- :class:`TokenBucket`: an asyncio token bucket. Callers reserve a token and sleep until it
  is theirs, so waiters are served in arrival order and nobody spins.
- :func:`retry`: calls an async function until it succeeds, sleeping between attempts with
  exponential backoff and full jitter (a uniformly random delay between zero and the capped
  exponential bound). A ``classify`` callback decides, per exception, whether and how to
  retry; an optional absolute ``deadline`` bounds the total time.

Clocks and sleeps are injectable so tests can run with a fake clock. This module imports
nothing else from the project.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from providers.base import Throttled

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class RateLimitTimeout(Throttled, TimeoutError):
    """Waiting for a token would pass the caller's deadline."""


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst`` tokens; it starts full.

    :meth:`acquire` takes tokens at once when they are there and otherwise reserves them and
    sleeps until the refill covers the reservation. A cancelled waiter gives its reservation
    back.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"token bucket rate must be positive, got {rate}")
        if burst < 1:
            raise ValueError(f"token bucket burst must be at least 1, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._stamp = now
        return now

    @property
    def tokens(self) -> float:
        """Tokens available now; negative while reservations are outstanding."""
        self._refill()
        return self._tokens

    def wait_time(self, tokens: float = 1.0) -> float:
        """Seconds until ``tokens`` could be taken, without taking them."""
        self._refill()
        return max(0.0, (tokens - self._tokens) / self.rate)

    def try_acquire(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if they are available right now."""
        self._refill()
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False

    async def acquire(self, tokens: float = 1.0, *, deadline: float | None = None) -> float:
        """Take ``tokens``, sleeping as long as needed; returns the seconds waited.

        With ``deadline`` (an absolute time on this bucket's clock), raise
        :class:`RateLimitTimeout` without taking anything when the wait would pass it.
        """
        now = self._refill()
        wait = max(0.0, (tokens - self._tokens) / self.rate)
        if deadline is not None and now + wait > deadline:
            raise RateLimitTimeout(
                f"rate limit: a token is {wait:.3f}s away, past the deadline"
            )
        self._tokens -= tokens
        if wait <= 0:
            return 0.0
        try:
            await self._sleep(wait)
        except BaseException:
            self._tokens += tokens
            raise
        return wait


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter.

    Before retry number ``n`` (0-based) the delay is uniform in
    ``[0, min(cap, base * 2**n)]``. ``max_attempts`` counts calls, the first included;
    ``None`` keeps retrying until the deadline (or forever without one).
    """

    base: float = 0.1
    cap: float = 10.0
    max_attempts: int | None = None

    def bound(self, retry_index: int) -> float:
        return min(self.cap, self.base * (2.0 ** min(retry_index, 62)))

    def delay(self, retry_index: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * self.bound(retry_index)


RetryHook = Callable[[Exception, int, float], None]


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    classify: Callable[[Exception], Backoff | None],
    deadline: float | None = None,
    limiter: TokenBucket | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    rng: Callable[[], float] = random.random,
    on_retry: RetryHook | None = None,
) -> T:
    """Run ``call`` until it returns, retrying the exceptions ``classify`` accepts.

    ``classify(exc)`` returns the :class:`Backoff` to apply, or ``None`` to re-raise at
    once. When the attempts are used up, or the next sleep would pass ``deadline`` (an
    absolute time on ``clock``), the last exception is re-raised unchanged. Each attempt
    first takes one token from ``limiter`` (which may raise :class:`RateLimitTimeout`).
    ``on_retry(exc, attempt, delay)`` is called before each sleep.
    """
    attempt = 0
    while True:
        if limiter is not None:
            await limiter.acquire(deadline=deadline)
        try:
            return await call()
        except Exception as exc:
            policy = classify(exc)
            if policy is None:
                raise
            attempt += 1
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                raise
            delay = policy.delay(attempt - 1, rng)
            if deadline is not None and clock() + delay >= deadline:
                raise
            if on_retry is not None:
                on_retry(exc, attempt, delay)
        await sleep(delay)
