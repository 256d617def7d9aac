"""Group commit: many concurrent callers, one database transaction.

A :class:`Batcher` queues items from any number of coroutines and hands them to one handler
call. While the handler runs, new items pile up and go together in the next call, so at low load
every item is handled at once (no added latency) and at high load a transaction carries hundreds
of items. When a batch fails as a whole, its items are retried one by one, so a single bad item
fails alone instead of taking its neighbours down with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("warelay.batching")


class Batcher(Generic[T, R]):
    """Runs ``handler`` over batches of submitted items; each caller awaits its own result."""

    def __init__(
        self,
        handler: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 500,
        name: str = "batch",
    ) -> None:
        self._handler = handler
        self._max_batch = max_batch
        self._name = name
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for the handler's result for it."""
        if self._closed:
            raise RuntimeError(f"{self._name} batcher is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"batcher:{self._name}")
        return await future

    async def close(self) -> None:
        """Handle what is queued, then stop."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            await self._handle(batch)

    async def _handle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._handler([item for item, _ in batch])
        except Exception as exc:  # the batch failed; fall back to one item at a time
            if len(batch) == 1:
                _, future = batch[0]
                if not future.done():
                    future.set_exception(exc)
                return
            log.warning("%s batch of %d failed (%s); retrying items one by one", self._name, len(batch), exc)
            for entry in batch:
                await self._handle([entry])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
