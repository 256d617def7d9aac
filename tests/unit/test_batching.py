"""Group commit: concurrent submissions share handler calls; a bad item fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from warelay.batching import Batcher


async def test_concurrent_items_are_batched_and_each_gets_its_result() -> None:
    calls: list[list[int]] = []

    async def handler(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        await asyncio.sleep(0.01)
        return [i * 2 for i in items]

    batcher: Batcher[int, int] = Batcher(handler, max_batch=50)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(120)))
    assert results == [i * 2 for i in range(120)]
    assert sum(len(c) for c in calls) == 120
    assert len(calls) < 10  # batched, not one call per item
    assert all(len(c) <= 50 for c in calls)
    await batcher.close()


async def test_single_item_has_no_added_wait() -> None:
    async def handler(items: Sequence[str]) -> list[str]:
        return [s.upper() for s in items]

    batcher: Batcher[str, str] = Batcher(handler)
    assert await asyncio.wait_for(batcher.submit("a"), timeout=0.5) == "A"
    await batcher.close()


async def test_failing_batch_is_retried_item_by_item() -> None:
    async def handler(items: Sequence[int]) -> list[int]:
        if 13 in items:
            raise ValueError("unlucky")
        return list(items)

    batcher: Batcher[int, int] = Batcher(handler)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)), return_exceptions=True)
    assert isinstance(results[13], ValueError)
    assert [r for i, r in enumerate(results) if i != 13] == [i for i in range(20) if i != 13]
    await batcher.close()


async def test_closed_batcher_refuses() -> None:
    async def handler(items: Sequence[int]) -> list[int]:
        return list(items)

    batcher: Batcher[int, int] = Batcher(handler)
    await batcher.submit(1)
    await batcher.close()
    with pytest.raises(RuntimeError):
        await batcher.submit(2)
