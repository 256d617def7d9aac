"""Separate worker processes: crash recovery after SIGKILL, several workers sharing the database, and
the worker processes `warelay serve --worker-processes` supervises."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from tests.integration.stack import Stack, free_port, run_stack, settings_env, stack_settings
from warelay.runtime import Runtime
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


@contextmanager
def serve_process(
    stack: Stack, log: Path, *args: str, port: int | None = None, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`warelay serve ARGS` (with the test agent) configured like ``stack``, logging to ``log``."""
    environment = {**os.environ, **settings_env(stack.settings), "WARELAY_LOG_LEVEL": "INFO", **env}
    port = port or free_port()
    argv = [sys.executable, "-m", "tests.integration.worker_main", "serve", "--port", str(port), *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except FileNotFoundError:
        return set()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; its parent has not collected it yet


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _until(check: Callable[[], bool], what: str, log: Path, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {within} s:\n{_tail(log)}"
        await asyncio.sleep(0.05)


def _running_workers(log: Path) -> int:
    return log.read_text(errors="replace").count("running; SIGTERM stops it")


async def _conversation(stack: Stack, user: str, texts: list[str]) -> None:
    for text in texts:
        await stack.simulator.user_sends(user, text)
    replies = await stack.replies_to(user, len(texts), timeout=30)
    assert replies == [f"echo: {text}" for text in texts]


async def _served_metrics(
    stack: Stack, port: int, settled: Callable[[dict[str, float]], bool]
) -> dict[str, float]:
    """Sample name + sorted labels → value, from a serve process's /metrics, once ``settled`` (or 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        text = (await stack.http.get(f"http://127.0.0.1:{port}/metrics")).raise_for_status().text
        metrics = {
            sample.name + str(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        if settled(metrics) or time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.05)


async def test_serve_supervises_its_worker_processes(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    port = free_port()
    sent = "warelay_outbound_messages_total[('result', 'accepted'), ('type', 'text')]"
    answered = "warelay_agent_latency_seconds_count[('kind', 'test-echo')]"
    # The test stack takes the webhooks and runs no workers: every answer below comes from the worker
    # processes of the `serve` process started here.
    async with run_stack(db_url, run_workers=False) as stack:
        with serve_process(stack, log, "--worker-processes", "2", port=port) as serve:
            await _until(
                lambda: _running_workers(log) == 2 and len(_children(serve.pid)) == 2, "2 workers", log
            )
            first = _children(serve.pid)
            # They yield the CPU to serve when both want it (nice 5; field 19 of /proc/PID/stat).
            assert {_niceness(pid) for pid in first} == {_niceness(serve.pid) + 5}
            await asyncio.gather(
                *(_conversation(stack, f"155512600{u}", [f"u{u} m{i}" for i in range(3)]) for u in range(4))
            )

            # serve's /metrics counts what its workers did (their multiprocess files, summed); a
            # worker counts a send once Graph has answered, a moment after the simulator has it.
            metrics = await _served_metrics(stack, port, settled=lambda m: m.get(sent) == 12)
            assert metrics[sent] == metrics[answered] == 12
            assert metrics["warelay_inflight[('kind', 'turn')]"] == 0

            doomed = min(first)
            os.kill(doomed, signal.SIGKILL)
            # The supervisor starts a new worker in its place (after a 1 s pause).
            await _until(
                lambda: len(_children(serve.pid) - first) == 1 and _running_workers(log) == 3,
                "a restart",
                log,
            )
            assert _children(serve.pid) == (first - {doomed}) | (_children(serve.pid) - first)
            await _conversation(stack, "1555126010", ["after the restart"])
            metrics = await _served_metrics(stack, port, settled=lambda m: m.get(sent) == 13)
            assert metrics[sent] == metrics[answered] == 13  # the killed worker's counts stay

            serve.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(serve.wait, 20)  # nothing in flight: no grace period to wait out
            # uvicorn ends by re-raising the signal that stopped it, once everything has shut down.
            assert code in (0, -signal.SIGTERM), _tail(log)
            assert not any(_alive(pid) for pid in first | _children(serve.pid))
            text = _tail(log)
            assert "exited with status -9; restarting it" in text
            assert "worker processes stopped" in text
        assert len(stack.simulator.sent) == 4 * 3 + 1


async def test_worker_processes_stop_when_serve_dies(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    async with run_stack(db_url, run_workers=False) as stack:
        with serve_process(stack, log, WARELAY_WORKER__PROCESSES="1") as serve:
            await _until(lambda: _running_workers(log) == 1, "the worker", log)
            (orphan,) = _children(serve.pid)
            serve.kill()  # no chance to stop its workers
            serve.wait()
            await _until(lambda: not _alive(orphan), "the orphaned worker stopping", log, within=20)
            assert "serve process that started this worker is gone" in _tail(log)


async def _eventually(check: Callable[[], bool], within: float = 5) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_worker_process_behind_its_work_leaves_new_turns_to_the_others(db_url: str) -> None:
    settings = stack_settings(db_url, warelay_port=free_port(), sim_url=f"http://127.0.0.1:{free_port()}")
    alone = Runtime(settings, run_workers=True)
    sharing = Runtime(settings, run_workers=True, migrate=False, setup=False, share_work=True)
    await alone.start()
    await sharing.start()
    try:
        assert sharing.lag is not None
        assert alone.lag is None
        assert await _eventually(
            lambda: sharing.turns.offer() is not None and alone.turns.offer() is not None
        )
        time.sleep(0.15)  # noqa: ASYNC251  # the event loop held up, as by a burst of CPU-heavy turns
        assert await _eventually(lambda: sharing.lag is not None and sharing.lag.busy, within=1)
        # Behind: new turns are left to the other processes; this process's sends are not.
        assert sharing.turns.offer() is None
        assert sharing.sender.offer() is not None
        # A process that runs alone takes everything, however busy.
        assert alone.turns.offer() is not None
        # Caught up, it takes turns again.
        assert await _eventually(lambda: sharing.turns.offer() is not None)
    finally:
        await sharing.stop(1)
        await alone.stop(1)


async def test_serve_wakes_its_worker_processes_when_it_stores_turns(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    port = free_port()
    async with run_stack(db_url, run_workers=False) as stack:
        # Workers that would look for work only every 60 s: the reply below comes from a wake-up.
        slow_poll = {"WARELAY_WORKER__POLL_INTERVAL_SECONDS": "60"}
        with serve_process(stack, log, "--worker-processes", "2", port=port, **slow_poll):
            await _until(lambda: _running_workers(log) == 2, "2 workers", log)
            await asyncio.sleep(0.5)  # their first claims (at start) have found nothing
            body, headers, _ = stack.simulator.build_inbound("15551260201", "wake up")
            response = await stack.http.post(
                f"http://127.0.0.1:{port}/webhooks/whatsapp", content=body, headers=headers
            )
            assert response.status_code == 200
            assert await stack.replies_to("15551260201", 1, timeout=15) == ["echo: wake up"]
