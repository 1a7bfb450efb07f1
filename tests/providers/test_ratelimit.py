"""Token bucket and retry helper, driven by a fake clock (no real sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from providers.ratelimit import Backoff, RateLimitTimeout, TokenBucket, retry


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Concurrent sleepers overlap: time moves to the latest wake-up, not their sum."""
        self.sleeps.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, target)


class Throttle(Exception):
    pass


class Fatal(Exception):
    pass


def test_bucket_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 10)
    with pytest.raises(ValueError):
        TokenBucket(1, 0.5)


async def test_burst_then_refill_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=5, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert await bucket.acquire() == 0.0
    assert clock.sleeps == []
    assert await bucket.acquire() == pytest.approx(0.2)
    assert await bucket.acquire() == pytest.approx(0.2)
    assert clock.now == pytest.approx(1000.4)


async def test_refill_is_capped_at_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=2, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    await bucket.acquire()
    clock.now += 60
    assert bucket.tokens == pytest.approx(2)
    assert bucket.try_acquire() and bucket.try_acquire()
    assert not bucket.try_acquire()
    assert bucket.wait_time() == pytest.approx(0.1)


async def test_concurrent_waiters_are_spaced_by_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=4, burst=1, clock=clock, sleep=clock.sleep)
    start = clock.now
    finished: list[float] = []

    async def take() -> None:
        await bucket.acquire()
        finished.append(clock.now - start)

    await asyncio.gather(*(take() for _ in range(5)))
    # One token at once, then one every 0.25 s of fake time, in arrival order.
    assert sorted(clock.sleeps) == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert max(finished) == pytest.approx(1.0)


async def test_acquire_past_deadline_raises_without_taking() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock, sleep=clock.sleep)
    await bucket.acquire()
    with pytest.raises(RateLimitTimeout):
        await bucket.acquire(deadline=clock.now + 0.5)
    assert clock.sleeps == []
    assert bucket.tokens == pytest.approx(0)
    assert await bucket.acquire(deadline=clock.now + 2) == pytest.approx(1.0)


async def test_cancelled_waiter_returns_its_reservation() -> None:
    clock = FakeClock()
    gate = asyncio.Event()

    async def blocking_sleep(seconds: float) -> None:
        await gate.wait()

    bucket = TokenBucket(rate=1, burst=1, clock=clock, sleep=blocking_sleep)
    await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    assert bucket.tokens == pytest.approx(-1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bucket.tokens == pytest.approx(0)


def test_backoff_full_jitter_bounds() -> None:
    policy = Backoff(base=0.1, cap=2.0)
    assert [policy.bound(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0])
    assert policy.delay(3, rng=lambda: 0.0) == 0.0
    assert policy.delay(3, rng=lambda: 0.5) == pytest.approx(0.4)
    assert policy.bound(10_000) == 2.0


def classify(exc: Exception) -> Backoff | None:
    if isinstance(exc, Throttle):
        return Backoff(base=0.1, cap=1.0)
    return None


async def test_retry_until_success_with_jittered_sleeps() -> None:
    clock = FakeClock()
    outcomes: list[Exception | None] = [Throttle(), Throttle(), Throttle(), None]
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return "ok"

    seen: list[int] = []
    result = await retry(call, classify=classify, clock=clock, sleep=clock.sleep,
                         rng=lambda: 1.0, on_retry=lambda exc, n, d: seen.append(n))
    assert result == "ok" and calls == 4
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert seen == [1, 2, 3]


async def test_retry_does_not_retry_unclassified_errors() -> None:
    clock = FakeClock()
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise Fatal("no")

    with pytest.raises(Fatal):
        await retry(call, classify=classify, clock=clock, sleep=clock.sleep)
    assert calls == 1 and clock.sleeps == []


async def test_retry_gives_up_with_the_last_error_at_the_deadline() -> None:
    clock = FakeClock()
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise Throttle(calls)

    with pytest.raises(Throttle) as caught:
        await retry(call, classify=classify, deadline=clock.now + 5, clock=clock,
                    sleep=clock.sleep, rng=lambda: 1.0)
    assert clock.now <= 1005
    assert sum(clock.sleeps) <= 5
    assert caught.value.args == (calls,)
    assert calls >= 5


async def test_retry_respects_max_attempts() -> None:
    clock = FakeClock()
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise Throttle()

    with pytest.raises(Throttle):
        await retry(call, classify=lambda exc: Backoff(base=0.01, max_attempts=3),
                    clock=clock, sleep=clock.sleep)
    assert calls == 3 and len(clock.sleeps) == 2


async def test_retry_takes_a_token_per_attempt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=1, clock=clock, sleep=clock.sleep)
    outcomes: list[Exception | None] = [Throttle(), None]

    async def call() -> int:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return 7

    assert await retry(call, classify=classify, limiter=bucket, clock=clock,
                       sleep=clock.sleep, rng=lambda: 0.0) == 7
    # The backoff slept 0 s, so the second attempt waited 0.5 s for its token.
    assert clock.sleeps == pytest.approx([0.0, 0.5])


async def test_retry_limiter_deadline_raises_rate_limit_timeout() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=0.1, burst=1, clock=clock, sleep=clock.sleep)
    await bucket.acquire()

    async def call() -> None:
        raise AssertionError("must not be called")

    with pytest.raises(RateLimitTimeout):
        await retry(call, classify=classify, limiter=bucket, deadline=clock.now + 1,
                    clock=clock, sleep=clock.sleep)
