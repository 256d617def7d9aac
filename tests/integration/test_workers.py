"""Separate worker processes: crash recovery after SIGKILL, and several workers sharing PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.integration.stack import Stack, run_stack, settings_env
from warelay.storage.models import WorkItem

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def worker_process(stack: Stack, grace: float = 5, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """A `warelay worker` process (with the test agent) configured like ``stack``."""
    environment = {**os.environ, **settings_env(stack.settings), "WARELAY_LOG_LEVEL": "WARNING", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.worker_main", "worker", "--grace", str(grace)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _leased(stack: Stack) -> bool:
    async with stack.runtime.engine.connect() as conn:
        state = (await conn.execute(select(WorkItem.state).where(WorkItem.kind == "turn"))).scalar()
    return state == "leased"


async def test_worker_killed_mid_turn_recovers_exactly_once(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False, worker={"lease_seconds": 5}) as stack:
        with worker_process(stack, TEST_ECHO_HANG="1") as doomed:
            await stack.simulator.user_sends("15551240001", "hang then answer")
            deadline = time.monotonic() + 20
            while not await _leased(stack):
                assert time.monotonic() < deadline, "the worker never claimed the turn"
                assert doomed.poll() is None, doomed.stderr.read().decode() if doomed.stderr else ""
                await asyncio.sleep(0.05)
            doomed.kill()  # SIGKILL: no chance to release the lease
            doomed.wait()
        assert stack.simulator.messages_to("15551240001") == []
        with worker_process(stack):
            texts = await stack.replies_to("15551240001", 1, timeout=30)
            assert texts == ["echo: hang then answer"]
            await asyncio.sleep(1.0)
            assert len(stack.simulator.messages_to("15551240001")) == 1


async def test_sigterm_finishes_in_flight_work(db_url: str) -> None:
    async with run_stack(db_url, run_workers=False) as stack:
        with worker_process(stack, grace=30, WARELAY_LOG_LEVEL="INFO") as proc:
            await stack.simulator.user_sends("15551240002", "sleep:1.0 slow goodbye")
            deadline = time.monotonic() + 20
            while not await _leased(stack):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 60) == 0
            log = proc.stderr.read().decode() if proc.stderr else ""
        texts = [m.text for m in stack.simulator.messages_to("15551240002")]
        assert texts == ["echo: sleep:1.0 slow goodbye"], log


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # many workers at once: a PostgreSQL setup
async def test_three_postgres_workers_answer_each_message_once_in_order(db_url: str) -> None:
    users, per_user = 100, 10
    async with run_stack(db_url, run_workers=False) as stack:
        with worker_process(stack), worker_process(stack), worker_process(stack):

            async def converse(u: int) -> None:
                for i in range(per_user):
                    await stack.simulator.user_sends(f"1555125{u:04d}", f"u{u} m{i}")

            await asyncio.gather(*(converse(u) for u in range(users)))
            await stack.simulator.wait_for(lambda: len(stack.simulator.sent) >= users * per_user, timeout=120)
            await asyncio.sleep(1.0)
        assert len(stack.simulator.sent) == users * per_user
        for u in range(users):
            texts = [m.text for m in stack.simulator.messages_to(f"1555125{u:04d}")]
            assert texts == [f"echo: u{u} m{i}" for i in range(per_user)], texts
