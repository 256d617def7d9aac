"""Per-key rate limits of warelay's API, counted in the database so every process shares one count.

Where it sits: in the API's authentication (``api.deps.get_principal``), after an API key has been
recognised and before the route runs. Each request of a limited key is one UPSERT into
``api_key_usage`` — the row of the key and the current fixed one-minute window — returning the
count so far; the first request of a window also deletes the key's older windows, so the table
holds about one row per active key. Fixed windows make ``Retry-After`` exact (the seconds left
in the window) at the price of allowing up to twice the limit across a window boundary.

Requests refused with 429 are counted too: a client that keeps hammering gains nothing, and the
window still ends on time. The admin token is not a key and is never limited.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from warelay.storage.direct import Database, Tx

WINDOW_SECONDS = 60

_COUNT = """
INSERT INTO api_key_usage (key_id, window_start, requests) VALUES ($1, $2, 1)
ON CONFLICT (key_id, window_start) DO UPDATE SET requests = api_key_usage.requests + 1
RETURNING requests
"""
_FORGET_OLDER = "DELETE FROM api_key_usage WHERE key_id = $1 AND window_start < $2"


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of counting one request against a key's limit."""

    allowed: bool
    limit: int
    count: int
    retry_after: int  # seconds until the window ends (when refused, when to try again)


def effective_limit(key_limit: int | None, default: int) -> int:
    """A key's requests per minute: its own limit, else the default; 0 means unlimited."""
    return default if key_limit is None else key_limit


async def _count(tx: Tx, key_id: int, window_start: int) -> int:
    row = await tx.fetchrow(_COUNT, key_id, window_start)
    assert row is not None  # an upsert with RETURNING always returns its row
    count = int(row[0])
    if count == 1:  # first request of a new window: the previous windows are done with
        await tx.execute(_FORGET_OLDER, key_id, window_start)
    return count


async def count_request(db: Database, *, key_id: int, limit: int, now: float | None = None) -> RateDecision:
    """Count one request of key ``key_id`` in the current window and decide whether it may proceed."""
    now = time.time() if now is None else now
    window_start = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
    count = await db.write(_count, key_id, window_start)
    retry_after = max(1, math.ceil(window_start + WINDOW_SECONDS - now))
    return RateDecision(allowed=count <= limit, limit=limit, count=count, retry_after=retry_after)
