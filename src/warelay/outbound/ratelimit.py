"""Per-number pacing: every Graph call a number makes waits for a slot in its throughput tier.

Meta limits each business number to its tier (80 messages/s by default, up to 1000/s), inbound
and outbound combined, and answers 130429 past it. A token bucket per number, refilled at the
tier's rate and holding a fifth of a second's worth, spreads calls out without delaying anything
while a number stays under its limit. Recipients are never delayed pre-emptively; a recipient who
hit the pair rate limit (131056) is backed off by the sender's retry, not here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class _Bucket:
    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 5)
        self.tokens = self.capacity
        self.stamp = now


class Pacer:
    """Token buckets keyed by number id."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}

    def reserve(self, key: int, rate: float) -> float:
        """Take a slot for ``key`` at ``rate`` per second; returns how long to wait before using it."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[key] = _Bucket(rate, now)
        bucket.tokens = min(bucket.capacity, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        bucket.tokens -= 1.0
        return 0.0 if bucket.tokens >= 0 else -bucket.tokens / rate

    async def acquire(self, key: int, rate: float) -> None:
        """Wait until ``key`` may make one more call."""
        delay = self.reserve(key, rate)
        if delay > 0:
            await asyncio.sleep(delay)
