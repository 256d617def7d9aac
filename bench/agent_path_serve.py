"""``warelay serve`` with instrumented agents and message-path stages, for ``bench/agent_path.py``.

Where it sits: around the whole path (webhook → inbox → worker → agent → outbox → Graph), in the
serve process itself. Like ``bench/profiled.py`` it runs the ``warelay`` command line in this process,
but first

1. registers, under the built-in kinds ``llm`` and ``knowledge`` (so the stored agent, its
   configuration and everything else stay exactly as shipped), subclasses of
   :class:`~warelay.agents.llm.LLMAgent` and :class:`~warelay.agents.knowledge.KnowledgeAgent` that
   record per turn, on the event loop thread:

   - ``respond``: wall time (``time.time()``, the machine clock the simulator also stamps replies
     with) and CPU (``time.thread_time()``) from the call to its return;
   - the agent framework call (``LLMAgent``'s pydantic-ai ``Agent.run``: pydantic-ai + openai SDK +
     HTTP to the model): its wall time, and the thread's CPU from the call to its return. That is
     everything the loop ran meanwhile: the framework's coroutine, the tasks its graph runs in
     (pydantic-graph uses anyio task groups), the HTTP transport's callbacks — and whatever else was
     ready, which the stages below identify;
   - knowledge retrieval (``Retriever.search``): its wall time and the thread's CPU meanwhile;

2. wraps the coroutines of the message path's stages (the webhook front, each group-commit batcher,
   the turn and send workers' tasks, the mark-read call) so that each step of them — each stretch
   the loop runs them between two awaits — is noted with its label, start time and thread CPU. The
   benchmark sums them per turn (where warelay's CPU goes, outside the agent) and takes those that ran
   inside the agent's or the framework's window back out of it (the turn's mark-read runs in a task
   of its own while the agent works);

3. notes when each mark-read + typing call began and ended (by wamid).

The records stay in memory and are written as JSON to ``$BENCH_AGENT_PATH_OUT`` (default
``agent-path-turns.json`` in the working directory) when the process exits: ``{"turns": [...],
"mark_reads": {wamid: {...}}, "stage_steps": [[label, start, cpu], ...], "stage_calls": [[label,
start, thread CPU clock], ...], "step_overhead_s": ...}``. Stop it with SIGINT, as ``bench/run.py``
stops ``serve`` (uvicorn shuts down gracefully, then re-raises the signal).

``python bench/agent_path_serve.py serve --port P`` is ``warelay serve --port P`` with the records.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from starlette.types import Receive, Scope, Send

import warelay.agents.knowledge as knowledge_module
import warelay.agents.llm as llm_module
from warelay.agents.base import AgentDeps, AgentReply, AgentSpec, Passage, Retriever, Turn, register_agent
from warelay.app import WarelayApp
from warelay.batching import Batcher
from warelay.channels.base import Account
from warelay.channels.cloud.client import CloudChannel
from warelay.cli import main as warelay
from warelay.inbox.worker import SendWorker, TurnWorker, _Loop

T = TypeVar("T")

# The turn worker's task awaits the agent through asyncio.wait_for, which on Python 3.11 runs it in
# a task of its own; the benchmark leaves this stage's steps inside the agent's window out of it.
TURN_TASK = "turn worker: turn task"
HTTP_FRONT = "http: webhook requests (front, parse, answer)"
MARK_READ = "graph: mark-read + typing"


@dataclass(slots=True)
class TurnRecord:
    """What one ``respond`` call cost on the event loop thread (seconds; wall clock as Unix time)."""

    wamid: str
    kind: str
    respond_start: float = 0.0
    respond_end: float = 0.0
    respond_cpu: float = 0.0
    respond_thread_cpu_start: float = 0.0  # the loop thread's CPU clock (thread_time) at the call
    respond_thread_cpu_end: float = 0.0  # and at the return
    framework_calls: int = 0
    framework_start: float = 0.0
    framework_end: float = 0.0
    framework_wall: float = 0.0
    framework_cpu: float = 0.0
    retrieval_calls: int = 0
    retrieval_start: float = 0.0
    retrieval_end: float = 0.0
    retrieval_wall: float = 0.0
    retrieval_cpu: float = 0.0
    failed: str = ""


RECORDS: list[TurnRecord] = []
MARK_READS: dict[str, dict[str, float]] = {}  # wamid → start, end (Unix time) of its mark-read call
STAGE_STEPS: list[tuple[str, float, float]] = []  # label, start (Unix time), thread CPU (s)
STAGE_CALLS: list[tuple[str, float, float]] = []  # label, start (Unix time), thread CPU clock then
_CURRENT: contextvars.ContextVar[TurnRecord | None] = contextvars.ContextVar("bench_turn", default=None)


class Stepped(Generic[T]):
    """Awaits a coroutine, noting in STAGE_STEPS the start time and thread CPU of each of its steps."""

    def __init__(self, coro: Coroutine[Any, Any, T], label: str) -> None:
        self._coro = coro
        self._label = label

    def __await__(self) -> Generator[Any, Any, T]:
        coro, label, steps = self._coro, self._label, STAGE_STEPS
        value: Any = None
        error: BaseException | None = None
        while True:  # one pass per step of the coroutine, which ends by returning or raising
            at, cpu = time.time(), time.thread_time()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                steps.append((label, at, time.thread_time() - cpu))
                result: T = stop.value
                return result
            except BaseException:
                steps.append((label, at, time.thread_time() - cpu))
                raise
            steps.append((label, at, time.thread_time() - cpu))
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like go into the coroutine
                value, error = None, exc


def instrument(cls: type, method: str, label: Callable[[Any], str]) -> None:
    """Replace the coroutine method ``cls.method`` by one whose steps are noted under ``label(self)``."""
    original = getattr(cls, method)  # AttributeError if warelay renamed it: no silent gap

    @functools.wraps(original)
    async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        name = label(self)
        STAGE_CALLS.append((name, time.time(), time.thread_time()))
        return await Stepped(original(self, *args, **kwargs), name)

    setattr(cls, method, timed)


def step_overhead(steps: int = 20_000) -> float:
    """Seconds of thread CPU that noting one step adds (measured on a coroutine that only yields)."""

    async def yielder(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def compare() -> float:
        cpu = time.thread_time()
        await yielder(steps)
        bare = time.thread_time() - cpu
        cpu = time.thread_time()
        await Stepped(yielder(steps), "calibration")
        noted = time.thread_time() - cpu
        return max(0.0, (noted - bare) / steps)

    overhead = asyncio.run(compare())
    STAGE_STEPS.clear()
    return overhead


async def _timed_respond(kind: str, respond: Coroutine[Any, Any, AgentReply], turn: Turn) -> AgentReply:
    record = TurnRecord(wamid=turn.messages[-1].provider_message_id if turn.messages else "", kind=kind)
    token = _CURRENT.set(record)
    record.respond_start = time.time()
    cpu = record.respond_thread_cpu_start = time.thread_time()
    try:
        return await respond
    except BaseException as exc:
        record.failed = type(exc).__name__
        raise
    finally:
        record.respond_thread_cpu_end = time.thread_time()
        record.respond_cpu = record.respond_thread_cpu_end - cpu
        record.respond_end = time.time()
        _CURRENT.reset(token)
        RECORDS.append(record)


class TimedRetriever:
    """A retriever that records the wall time and thread CPU of each search in the turn's record."""

    def __init__(self, inner: Retriever) -> None:
        self._inner = inner

    async def search(self, *, tenant_id: int, agent_id: int, query: str, limit: int = 5) -> Sequence[Passage]:
        """The inner retriever's search, timed."""
        record = _CURRENT.get()
        start, wall, cpu = time.time(), time.perf_counter(), time.thread_time()
        try:
            return await self._inner.search(tenant_id=tenant_id, agent_id=agent_id, query=query, limit=limit)
        finally:
            if record is not None:
                record.retrieval_calls += 1
                record.retrieval_start = record.retrieval_start or start
                record.retrieval_end = time.time()
                record.retrieval_cpu += time.thread_time() - cpu
                record.retrieval_wall += time.perf_counter() - wall


class InstrumentedLLMAgent(llm_module.LLMAgent):
    """The ``llm`` agent as shipped, with its framework call and retrieval timed per turn."""

    def __init__(self, spec: AgentSpec, deps: AgentDeps, **kwargs: Any) -> None:
        super().__init__(spec, deps, **kwargs)
        # Fails loudly (AttributeError) if LLMAgent stops keeping these: no silent misattribution.
        self._retriever = TimedRetriever(self._retriever)
        framework_run = self._agent.run

        async def run(*args: Any, **kw: Any) -> Any:
            record = _CURRENT.get()
            start, wall, cpu = time.time(), time.perf_counter(), time.thread_time()
            try:
                return await framework_run(*args, **kw)
            finally:
                if record is not None:
                    record.framework_calls += 1
                    record.framework_cpu += time.thread_time() - cpu
                    record.framework_wall += time.perf_counter() - wall
                    record.framework_start = record.framework_start or start
                    record.framework_end = time.time()

        self._agent.run = run  # type: ignore[method-assign]  # this instance's framework call, timed

    async def respond(self, turn: Turn) -> AgentReply:
        """``LLMAgent.respond``, recorded."""
        return await _timed_respond("llm", super().respond(turn), turn)


class InstrumentedKnowledgeAgent(knowledge_module.KnowledgeAgent):
    """The ``knowledge`` agent as shipped (no model, no framework), with its retrieval timed per turn."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._retriever = TimedRetriever(self._retriever)

    async def respond(self, turn: Turn) -> AgentReply:
        """``KnowledgeAgent.respond``, recorded."""
        return await _timed_respond("knowledge", super().respond(turn), turn)


@register_agent("llm")
def create_instrumented_llm_agent(spec: AgentSpec, deps: AgentDeps) -> InstrumentedLLMAgent:
    """What ``warelay.agents.llm.create_llm_agent`` builds, instrumented."""
    return InstrumentedLLMAgent(spec, deps, model=deps.llm_model)


@register_agent("knowledge")
def create_instrumented_knowledge_agent(spec: AgentSpec, deps: AgentDeps) -> InstrumentedKnowledgeAgent:
    """What ``warelay.agents.knowledge.build_knowledge_agent`` builds, instrumented."""
    return InstrumentedKnowledgeAgent(
        spec=spec,
        retriever=deps.retriever,
        config=knowledge_module.KnowledgeAgentConfig.from_mapping(spec.config),
    )


_mark_read = CloudChannel.mark_read


async def _timed_mark_read(self: CloudChannel, account: Account, message_id: str, *, typing: bool) -> None:
    start = time.time()
    STAGE_CALLS.append((MARK_READ, start, time.thread_time()))
    try:
        await Stepped(_mark_read(self, account, message_id, typing=typing), MARK_READ)
    finally:
        MARK_READS[message_id] = {"start": start, "end": time.time()}


_app_call = WarelayApp.__call__


async def _timed_app_call(self: WarelayApp, scope: Scope, receive: Receive, send: Send) -> None:
    # Its own signature: uvicorn calls the app without arguments to tell an app factory (TypeError) apart.
    STAGE_CALLS.append((HTTP_FRONT, time.time(), time.thread_time()))
    await Stepped(_app_call(self, scope, receive, send), HTTP_FRONT)


def instrument_stages() -> None:
    """Note the steps of the message path's coroutines (see the module docstring)."""
    WarelayApp.__call__ = _timed_app_call  # type: ignore[method-assign]  # as shipped, timed
    instrument(Batcher, "_handle", lambda b: f"transaction: {b._name} batch")
    instrument(_Loop, "_claim_loop", lambda w: f"{w.kind} worker: claim loop")
    instrument(_Loop, "_adopt", lambda w: f"{w.kind} worker: hand-over (load)")
    instrument(TurnWorker, "_process", lambda _: TURN_TASK)
    instrument(SendWorker, "_send", lambda _: "send worker: Graph send and its record")
    CloudChannel.mark_read = _timed_mark_read  # type: ignore[method-assign]  # as shipped, timed


def dump(path: Path, overhead: float) -> None:
    """Write every record (see the module docstring)."""
    path.write_text(
        json.dumps(
            {
                "turns": [asdict(r) for r in RECORDS],
                "mark_reads": MARK_READS,
                "stage_steps": STAGE_STEPS,
                "stage_calls": STAGE_CALLS,
                "step_overhead_s": overhead,
            }
        )
    )


def main() -> None:
    """Run one warelay command with the instrumented agents and stages; write the records at exit."""
    out = Path(os.environ.get("BENCH_AGENT_PATH_OUT", "agent-path-turns.json"))
    overhead = step_overhead()
    instrument_stages()
    sys.argv = ["warelay", *sys.argv[1:]]
    try:
        warelay()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        dump(out, overhead)
    # serve ends by re-raising the signal that stopped it (uvicorn); the records are written by now.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


if __name__ == "__main__":
    main()
