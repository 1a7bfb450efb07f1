"""``cloud-api-adaptor`` with its client-side rate limiter timed (benchmarks only).

    python -m tests.providers.aws.timed_adaptor WAITS.json aws [flags]   # from the repo root

Wraps :meth:`providers.ratelimit.TokenBucket.acquire` so that every wait longer than zero is
kept as an interval (``time.monotonic``, shared by all processes of the machine), then runs
the real entry point. The intervals are written to WAITS.json once it returns (SIGTERM).
"""

from __future__ import annotations

import json
import sys
import time

from adaptor.__main__ import main
from providers import ratelimit

WAITS: list[tuple[float, float]] = []
_acquire = ratelimit.TokenBucket.acquire


async def _timed_acquire(
    self: ratelimit.TokenBucket, tokens: float = 1.0, *, deadline: float | None = None
) -> float:
    started = time.monotonic()
    waited = await _acquire(self, tokens, deadline=deadline)
    if waited > 0:
        WAITS.append((started, time.monotonic()))
    return waited


def run(argv: list[str]) -> int:
    if not argv:
        print("usage: timed_adaptor WAITS.json <provider> [flags]", file=sys.stderr)
        return 2
    ratelimit.TokenBucket.acquire = _timed_acquire  # type: ignore[method-assign]
    try:
        return main(argv[1:])
    finally:
        with open(argv[0], "w") as out:
            json.dump({"limiter_waits": WAITS}, out)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
