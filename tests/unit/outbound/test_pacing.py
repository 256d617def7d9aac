"""Per-number pacing and retry backoff."""

from __future__ import annotations

import random

from warelay.outbound.ratelimit import Pacer
from warelay.outbound.retry import backoff_delay


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_under_the_rate_nothing_waits() -> None:
    clock = FakeClock()
    pacer = Pacer(clock)
    for _ in range(100):
        assert pacer.reserve(1, 80) == 0.0
        clock.now += 1 / 80


def test_a_burst_is_spread_to_the_tier() -> None:
    clock = FakeClock()
    pacer = Pacer(clock)
    waits = [pacer.reserve(1, 80) for _ in range(80)]
    assert waits[:16] == [0.0] * 16  # a fifth of a second's worth goes at once
    assert abs(waits[-1] - (80 - 16) / 80) < 1e-9  # the rest at 80/s: the last one ~0.8 s later
    assert pacer.reserve(2, 80) == 0.0  # other numbers are not affected


def test_backoff_grows_with_jitter_and_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, base=1, cap=30, rng=rng) for a in range(1, 9)]
    for attempt, delay in enumerate(delays, start=1):
        exp = min(30, 2 ** (attempt - 1))
        assert exp / 2 <= delay <= exp
    assert max(delays) <= 30
