"""Backoff for retries: exponential with jitter, capped (turns, sends and webhook deliveries alike)."""

from __future__ import annotations

import random


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random | None = None, factor: float = 2.0
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    "Equal jitter": half the exponential delay is fixed and half random, so retries of many items
    spread out while each one still waits a predictable minimum.
    """
    exp = min(cap, base * factor ** max(0, attempt - 1))
    draw = (rng or random).random()  # jitter, not cryptography
    return exp / 2 + draw * exp / 2
