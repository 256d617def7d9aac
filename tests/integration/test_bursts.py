"""Bursts: people type in fragments. One turn (and one reply) for messages that arrive while the agent
answers (abort on newer) or within a quiet window before it starts; every message stored; no
duplicate after a crash."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Any

from tests.integration.agents import ATTEMPTS
from tests.integration.stack import Stack, run_stack
from tests.integration.test_workers import _leased, worker_process
from warelay.runtime import Runtime

BURSTS_ON = {"kind": "test-echo", "abort_on_newer": True}


class ManualClock:
    """A clock that moves only when the test says so; sleepers wake as it passes their deadline."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        await future

    @property
    def sleeping(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def until_sleeping(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait (in real time) until somebody sleeps on this clock."""
        deadline = time.monotonic() + timeout
        while not self.sleeping:
            assert time.monotonic() < deadline, "nobody is waiting on the clock"
            await asyncio.sleep(0.01)

    async def advance(self, seconds: float) -> None:
        """Move time on, waking each sleeper whose deadline passed (and letting it run)."""
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        await asyncio.sleep(0.05)  # the woken worker reads the database and sleeps again (or goes on)


async def _in_generation(stack: Stack, conversation_count: int = 1, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while len(stack.runtime.turns._watched) < conversation_count:
        assert time.monotonic() < deadline, "no turn started generating"
        await asyncio.sleep(0.01)


async def _messages(stack: Stack, user: str) -> list[dict[str, Any]]:
    (conversation,) = (await stack.api("/api/v1/conversations", user=user))["items"]
    messages: list[dict[str, Any]] = (
        await stack.api(f"/api/v1/conversations/{conversation['id']}/messages")
    )["items"]
    return messages


async def test_fragments_within_the_quiet_window_become_one_turn(db_url: str) -> None:
    agent = {**BURSTS_ON, "burst_window_ms": 2000, "burst_max_ms": 10_000}
    async with run_stack(db_url, agent=agent) as stack:
        clock = ManualClock()
        stack.runtime.turns.clock = clock
        user = "15551270001"
        await stack.simulator.user_sends(user, "I want")
        await clock.until_sleeping()
        for fragment in ("two lattes", "and a croissant"):
            await clock.advance(1.5)  # less than the window: it starts again with each fragment
            await stack.simulator.user_sends(user, fragment)
        await clock.advance(0.5)  # the last fragment is noticed (within a fifth of the window)
        await clock.advance(1.4)  # 1.4 s of quiet after noticing it: still inside the window
        await asyncio.sleep(0.3)
        assert stack.simulator.messages_to(user) == []
        for _ in range(4):
            await clock.advance(0.4)
        texts = await stack.replies_to(user, 1)
        assert texts == ["echo: I want\ntwo lattes\nand a croissant"]
        # The typing indicator was renewed for the fragments as they came.
        typing_for = [r.message_id for r in stack.simulator.reads if r.typing]
        assert len(typing_for) >= 2
        await asyncio.sleep(0.3)
        assert len(stack.simulator.messages_to(user)) == 1
        messages = await _messages(stack, user)
        inbound = [m for m in messages if m["direction"] == "in"]
        assert [m["text"] for m in inbound] == ["I want", "two lattes", "and a croissant"]
        assert inbound[0]["turn_notes"]["messages"] == [m["id"] for m in inbound]
        assert inbound[0]["turn_notes"]["agent"] == "default"
        outbound = [m for m in messages if m["direction"] == "out"]
        assert outbound[0]["reply_to"] == inbound[-1]["provider_message_id"]


async def test_the_window_is_capped_for_a_user_who_never_stops(db_url: str) -> None:
    agent = {**BURSTS_ON, "burst_window_ms": 1000, "burst_max_ms": 2500}
    async with run_stack(db_url, agent=agent) as stack:
        clock = ManualClock()
        stack.runtime.turns.clock = clock
        user = "15551270002"
        await stack.simulator.user_sends(user, "one")
        await clock.until_sleeping()
        for n in range(2, 6):
            await stack.simulator.user_sends(user, f"fragment {n}")
            await clock.advance(0.5)
            await clock.advance(0.2)
        # 2.8 s of fake time with a fragment every 0.7 s: past the 2.5 s cap, the agent has started.
        texts = await stack.replies_to(user, 1)
        assert texts[0].startswith("echo: one\nfragment 2")


async def test_a_message_during_generation_reruns_the_turn_with_it(db_url: str) -> None:
    async with run_stack(db_url, agent=BURSTS_ON) as stack:
        user = "15551270003"
        await stack.simulator.user_sends(user, "sleep:0.6 hello")
        await _in_generation(stack)
        await stack.simulator.user_sends(user, "and one more thing")
        texts = await stack.replies_to(user, 1, timeout=15)
        assert texts == ["echo: sleep:0.6 hello\nand one more thing"]
        await asyncio.sleep(0.8)
        assert len(stack.simulator.messages_to(user)) == 1
        assert stack.runtime.metrics.turn_reruns._value.get() == 1
        inbound = [m for m in await _messages(stack, user) if m["direction"] == "in"]
        assert inbound[0]["turn_notes"]["reruns"] == 1


async def test_a_newer_message_stored_by_another_process_is_caught_when_the_turn_commits(db_url: str) -> None:
    # serve without workers stores the messages; a separate runtime runs the turns, so nothing tells
    # it of the new message while the agent generates: the commit finds it queued and re-runs.
    async with run_stack(db_url, agent=BURSTS_ON, run_workers=False) as stack:
        worker = Runtime(stack.settings, run_workers=True, migrate=False)
        await worker.start()
        try:
            user = "15551270004"
            await stack.simulator.user_sends(user, "sleep:0.8 first")
            deadline = time.monotonic() + 10
            while not worker.turns._watched:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            await stack.simulator.user_sends(user, "second")
            texts = await stack.replies_to(user, 1, timeout=15)
            assert texts == ["echo: sleep:0.8 first\nsecond"]
            await asyncio.sleep(0.5)
            assert len(stack.simulator.messages_to(user)) == 1
            assert worker.metrics.turn_reruns._value.get() == 1
        finally:
            await worker.stop()


async def test_with_bursts_off_each_message_gets_its_own_reply(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        user = "15551270005"
        await stack.simulator.user_sends(user, "sleep:0.4 first")
        await stack.simulator.user_sends(user, "second")
        texts = await stack.replies_to(user, 2, timeout=15)
        assert texts == ["echo: sleep:0.4 first", "echo: second"]


async def test_a_failed_burst_is_dead_lettered_whole_with_one_fallback(db_url: str) -> None:
    async with run_stack(db_url, agent=BURSTS_ON, worker={"max_attempts": 1}) as stack:
        user = "15551270006"
        await stack.simulator.user_sends(user, "sleep:0.5 never")
        await _in_generation(stack)
        await stack.simulator.user_sends(user, "hello?")
        texts = await stack.replies_to(user, 1, timeout=15)
        assert texts == [stack.settings.agent.fallback_text]
        await asyncio.sleep(0.5)
        assert len(stack.simulator.messages_to(user)) == 1
        failures = (await stack.api("/api/v1/failures", kind="turn"))["items"]
        assert len(failures) == 2  # the turn's own message and the one it took


async def test_a_worker_killed_mid_burst_answers_once_after_restart(db_url: str) -> None:
    agent = {**BURSTS_ON}
    async with run_stack(db_url, run_workers=False, agent=agent, worker={"lease_seconds": 5}) as stack:
        user = "15551270007"
        with worker_process(stack, TEST_ECHO_HANG="1") as doomed:
            await stack.simulator.user_sends(user, "hang first")
            deadline = time.monotonic() + 20
            while not await _leased(stack):
                assert time.monotonic() < deadline, "the worker never claimed the turn"
                await asyncio.sleep(0.05)
            await stack.simulator.user_sends(user, "second")
            await asyncio.sleep(0.3)
            doomed.kill()
            doomed.wait()
        assert stack.simulator.messages_to(user) == []
        ATTEMPTS.clear()
        with worker_process(stack):
            texts = await stack.replies_to(user, 1, timeout=30)
            assert texts == ["echo: hang first\nsecond"]
            await asyncio.sleep(1.0)
            assert len(stack.simulator.messages_to(user)) == 1
