"""Worker processes that ``warelay serve --worker-processes N`` runs beside itself.

Where it sits: around the workers. One Python process runs one event loop, so one process uses
one core; with worker processes, ``serve`` keeps the webhook intake and the API and each worker
process runs turns and sends (``warelay worker --supervised``), claiming them from the shared
database. Intake then never queues behind agent work, and turns use every core.

The supervisor starts the processes once ``serve`` has done the set-up (migrations, the
env-configured number, the knowledge folder), restarts one that exits (after 1 s, doubling to
30 s while it keeps failing quickly), and on shutdown sends each SIGTERM — they finish or hand
back their in-flight work — and kills those still running after their grace period. The workers
run in their own session, so a Ctrl+C in the terminal reaches ``serve`` alone and they stop in
that order. Each worker's standard input is a pipe from ``serve``: a byte on it says new turns
were stored (an idle worker claims at once instead of at its next poll), and its end — ``serve``
is gone, even killed with SIGKILL — stops the worker. The workers keep their Prometheus metrics in
files of a temporary directory (:attr:`WorkerProcesses.metrics_dir`), which ``serve``'s
``/metrics`` adds to its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

log = logging.getLogger("warelay.supervisor")

FIRST_RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 60.0  # a worker that ran this long before exiting is restarted after the first delay
# At most one wake-up per this many seconds (a later one waits for the end of the interval): each
# makes every worker run a claim transaction, and under load, one per stored webhook cost the
# workers more CPU than the turns (measured at 200 webhooks/s) and held up serve's own commits.
WAKE_EVERY = 0.05


def relaunch_command(*args: str) -> list[str]:
    """The command that started this process (interpreter, options, script or ``-m`` module), with ``args``.

    ``sys.orig_argv`` ends with ``sys.argv[1:]``; what comes before is how this program was
    started, so a worker process starts the same way — the same virtual environment, the same
    entry point (with the agent kinds it registers) — whether that was the ``warelay`` script or
    ``python -m …``.
    """
    head = list(sys.orig_argv[: len(sys.orig_argv) - len(sys.argv) + 1])
    head[0] = sys.executable or head[0]
    return [*head, *args]


class WorkerProcesses:
    """``count`` copies of ``command``, kept running until :meth:`stop`."""

    def __init__(self, command: Sequence[str], count: int, *, grace: float = 30.0) -> None:
        if count < 1:
            raise ValueError("WorkerProcesses needs at least one process")
        self.command = list(command)
        self.count = count
        self.grace = grace
        self._procs: dict[int, asyncio.subprocess.Process] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.metrics_dir: Path | None = None
        self._last_wake = float("-inf")
        self._wake_due: asyncio.TimerHandle | None = None

    async def start(self) -> Path:
        """Start the workers and keep them running; returns the directory of their metrics files."""
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="warelay-metrics-"))
        for slot in range(self.count):
            self._tasks.append(asyncio.create_task(self._keep(slot), name=f"worker-process-{slot}"))
        log.info("started %d worker processes", self.count)
        return self.metrics_dir

    async def _spawn(self) -> asyncio.subprocess.Process:
        # A session of their own: a terminal's Ctrl+C goes to serve, which stops them in order.
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        return await asyncio.create_subprocess_exec(
            *self.command, env=env, stdin=asyncio.subprocess.PIPE, start_new_session=True
        )

    def wake(self) -> None:
        """Tell every worker that new work is ready: now, or at the end of the current interval."""
        if self._wake_due is not None or self._stopping:
            return  # a wake-up is due already; it finds this work too
        loop = asyncio.get_running_loop()
        wait = self._last_wake + WAKE_EVERY - loop.time()
        if wait > 0:
            self._wake_due = loop.call_later(wait, self._wake_now)
        else:
            self._wake_now()

    def _wake_now(self) -> None:
        """A byte on each worker's standard input (never blocks)."""
        self._wake_due = None
        self._last_wake = asyncio.get_running_loop().time()
        for proc in self._procs.values():
            pipe = proc.stdin
            if proc.returncode is not None or pipe is None or pipe.is_closing():
                continue
            # A worker that has not read the last few wake-ups yet needs no more of them.
            if pipe.transport.get_write_buffer_size() == 0:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    pipe.write(b"w")

    async def _keep(self, slot: int) -> None:
        loop = asyncio.get_running_loop()
        delay = FIRST_RESTART_DELAY
        while not self._stopping:
            try:
                proc = await self._spawn()
            except OSError:
                log.exception("worker process %d could not be started; trying again in %.0f s", slot, delay)
            else:
                self._procs[slot] = proc
                started = loop.time()
                code = await proc.wait()
                # Its live gauges go; its counts stay in the sums.
                mark_process_dead(proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
                if self._stopping:
                    return
                if loop.time() - started >= STABLE_AFTER:
                    delay = FIRST_RESTART_DELAY
                log.error(
                    "worker process %d (pid %d) exited with status %s; restarting it in %.0f s",
                    slot,
                    proc.pid,
                    code,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)

    async def stop(self) -> None:
        """SIGTERM every worker, wait for them (their grace period and 5 s more), kill what is left."""
        self._stopping = True
        if self._wake_due is not None:
            self._wake_due.cancel()
        for task in self._tasks:  # no restarts from here on
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        running = [p for p in self._procs.values() if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if running:
            waits = [asyncio.create_task(p.wait()) for p in running]
            _, late = await asyncio.wait(waits, timeout=self.grace + 5)
            for proc in running:
                if proc.returncode is None:
                    log.warning("worker process %d did not stop in time; killing it", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if late:
                await asyncio.gather(*late)
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        log.info("worker processes stopped")


async def follow_parent(stop: asyncio.Event, wake: Callable[[], None]) -> None:
    """In a worker started by serve: ``wake()`` for every wake-up on stdin; ``stop`` when the pipe ends."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while not stop.is_set():
        if not await reader.read(4096):
            log.warning("the serve process that started this worker is gone; stopping")
            stop.set()
            return
        wake()
