"""Workers: run turns (inbound message → agent → outbox) and sends (outbox → channel).

Where it sits: after the inbox. A :class:`TurnWorker` takes turn work items (the oldest
unfinished one of each conversation, so replies keep the user's order while conversations run
concurrently) — handed over by the transaction that created them when it ran in this process
(:meth:`_Loop.offer` / :meth:`_Loop.adopt`, see ``inbox.store.LeaseOffer``), claimed otherwise —
loads them in a few queries, shows the read receipt and typing indicator, calls the agent under a
timeout and a concurrency bound, and commits the replies as outbox rows together with the end of
the turn (group commit), handing their sends to this process's :class:`SendWorker`. Failures
retry with exponential backoff and jitter; after the last attempt the turn is dead-lettered and
the user gets the fallback message.

A :class:`SendWorker` takes send work items the same way, paces each number to its throughput
tier, calls the channel and records the provider's message id. Transient errors retry (a recipient
who hit the pair rate limit backs off alone, because later sends of a conversation wait for
earlier ones); permanent errors mark the message failed.

Both stop gracefully: on shutdown they stop claiming and taking hand-overs, give in-flight work
``grace`` seconds to finish and hand the rest back to the queue.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import logging
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from warelay.agents.base import Agent, AgentEventDraft, AgentReply, StateChange, Turn
from warelay.agents.external import EXTERNAL
from warelay.agents.provider import AgentProvider
from warelay.batching import Batcher
from warelay.channels.base import Channel
from warelay.config import Settings
from warelay.conversations.service import (
    Follower,
    TurnData,
    apply_state_changes,
    close_followers,
    load_followers,
    load_turns,
    newest_waiting,
    record_turn_notes,
    stale_turns,
)
from warelay.domain import OutboundContent, OutText, UserRef
from warelay.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from warelay.inbox.store import (
    SEND,
    TURN,
    Claimed,
    Finished,
    Inbox,
    LeaseOffer,
    dead_letter_items,
    finish_items,
    lock_conversations,
)
from warelay.integrations.events import insert_events
from warelay.numbers import NumberInfo, NumberRegistry
from warelay.observability import Metrics
from warelay.outbound.degrade import as_text
from warelay.outbound.format import markdown_to_whatsapp
from warelay.outbound.outbox import (
    Draft,
    PendingSend,
    Queued,
    enqueue,
    load_pending,
    record_failed,
    record_sent,
)
from warelay.outbound.ratelimit import Pacer
from warelay.outbound.retry import backoff_delay
from warelay.outbound.splitter import split_text
from warelay.storage.direct import Database, Tx
from warelay.storage.models import utcnow

log = logging.getLogger("warelay.worker")
send_log = logging.getLogger("warelay.sender")


def worker_id() -> str:
    """An id for this worker process, used in lease tokens."""
    return f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(3)}"


def render_replies(reply: AgentReply) -> list[OutboundContent]:
    """Agent replies as WhatsApp sends: markdown turned into WhatsApp markup, long text split."""
    out: list[OutboundContent] = []
    for content in reply.replies:
        if isinstance(content, OutText):
            for part in split_text(markdown_to_whatsapp(content.body)):
                out.append(OutText(body=part, preview_url=content.preview_url))
        else:
            out.append(content)
    return out


def error_record(exc: BaseException) -> dict[str, Any]:
    """How an error is stored on a work item or a message."""
    if isinstance(exc, DeliveryError):
        return exc.as_dict()
    if isinstance(exc, TimeoutError):
        return {"type": "TimeoutError", "message": "the agent did not answer in time"}
    return {"type": type(exc).__name__, "message": str(exc)[:1000]}


class LoopLag:
    """How late this process's event loop runs a timer: how far behind its work the process is.

    For worker processes that share the queue with others (``warelay worker``, and the worker
    processes of ``serve --worker-processes``). Without it, the process that first claimed a
    conversation keeps it: each finished turn hands the conversation's next message to the same
    process, which also claims at once whatever else it left unleased, so with CPU-heavy turns
    (an LLM framework costs ~10 ms per turn) one process ran three quarters of all turns while the
    other idled. While its loop lags more than :attr:`BUSY`, a process takes no new turns by
    hand-over and claims only at its regular poll, the same pace as every other process, whose
    loops keep up and so claim first. A process that runs alone does not measure this.
    """

    BUSY = 0.02  # seconds; a loop that keeps up runs a timer within a millisecond or two
    EVERY = 0.01

    def __init__(self) -> None:
        self.seconds = 0.0

    @property
    def busy(self) -> bool:
        """Whether the loop is behind."""
        return self.seconds > self.BUSY

    async def run(self) -> None:
        """Measure until cancelled: a lag counts at once and fades over a few timer runs."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.EVERY)
            late = max(0.0, loop.time() - start - self.EVERY)
            self.seconds = late if late > self.seconds else 0.7 * self.seconds + 0.3 * late


@dataclass(frozen=True, slots=True)
class Services:
    """What every worker uses: the database, the queue, numbers, channels, pacing, settings, metrics."""

    db: Database
    inbox: Inbox
    registry: NumberRegistry
    channels: Mapping[str, Channel]
    pacer: Pacer
    settings: Settings
    metrics: Metrics
    lag: LoopLag | None = None  # set in processes that share the queue with others (see LoopLag)
    # Completes a turn before the agent sees it (media fetched, transcribed, extracted: warelay.media).
    prepare_turn: Callable[[Turn, NumberInfo], Awaitable[Turn]] | None = None


class _Loop(abc.ABC):
    """Shared claim loop: lease work while there is capacity, run each item in its own task."""

    kind: str
    log: logging.Logger
    _completer: Batcher[Any, Any]  # group-commits the results of finished items

    def __init__(self, services: Services, *, concurrency: int) -> None:
        self.db = services.db
        self.inbox = services.inbox
        self.registry = services.registry
        self.channels = services.channels
        self.pacer = services.pacer
        self.settings = services.settings
        self.metrics = services.metrics
        # Turns are what costs CPU; a turn's sends go on in the process that ran it.
        self.lag = services.lag if self.kind == TURN else None
        self.prepare_turn = services.prepare_turn
        self.concurrency = concurrency
        self.owner = worker_id()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Event()
        self._inflight: dict[int, tuple[Claimed, asyncio.Task[None]]] = {}
        self._stopping = False
        self._running = asyncio.Event()
        self._exited = asyncio.Event()
        self._adoptions: set[asyncio.Task[None]] = set()
        self._adopting = 0
        self._idle_since = 0.0
        self.rng = random.Random()  # noqa: S311  # jitter only

    def wake(self) -> None:
        """New work may be ready: claim now instead of at the next poll."""
        self._wakeup.set()

    def nudge(self) -> None:
        """Another process stored new work: claim now if idle.

        A worker with work in flight claims again as that work finishes and at its polls; a claim
        for every nudge under load cost the worker processes more CPU than their turns did and
        held up serve's commits (ack p99 at 200 webhooks/s went from 18 to 99 ms, bench
        gateway-sqlite-workers). Idle, the nudge saves a user up to a poll interval of waiting.
        """
        if not self._inflight and not self._adopting and not self._behind():
            self._wakeup.set()

    def offer(self) -> LeaseOffer | None:
        """What this worker can take on now, for transactions that create work (see LeaseOffer)."""
        if self._stopping or not self._running.is_set() or self._behind():
            return None
        free = min(self.concurrency - len(self._inflight) - self._adopting, self.settings.worker.batch_size)
        return (
            LeaseOffer(self.owner, seconds=self.settings.worker.lease_seconds, limit=free)
            if free > 0
            else None
        )

    def hand_over(self, leased: Sequence[Claimed], *, left: int = 0) -> None:
        """Take what a transaction created: run the items it leased to this worker (no claim needed).

        ``left`` counts items it created without a lease: the worker claims at once instead of at
        its next poll.
        """
        if left and not self._behind():
            self.wake()
        if not leased:
            return
        self._adopting += len(leased)
        task = asyncio.create_task(self._adopt(list(leased)), name=f"adopt-{self.kind}")
        self._adoptions.add(task)
        task.add_done_callback(self._adoptions.discard)

    def _behind(self) -> bool:
        """Whether this process should leave new work to the other processes for now (see LoopLag)."""
        return self.lag is not None and self.lag.busy

    async def _adopt(self, leased: list[Claimed]) -> None:
        try:
            loaded = await self.db.read(self._load, leased)
            if self._stopping:
                await self.inbox.release(leased)
                return
            await self._dispatch(leased, loaded)
        except Exception:
            # Their leases lapse and the items are claimed again (the attempt counted): nothing is lost.
            self.log.exception("starting %d %s items handed over failed", len(leased), self.kind)
        finally:
            self._adopting -= len(leased)

    async def run(self) -> None:
        """Claim and process work until :meth:`stop`."""
        self._running.set()
        try:
            await self._claim_loop()
        finally:
            self._exited.set()

    async def _claim_loop(self) -> None:
        w = self.settings.worker
        while not self._stopping:
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                self._slots.clear()
                await self._slots.wait()
                continue
            self._wakeup.clear()
            claim_started = time.monotonic()
            try:
                claimed, loaded = await self.inbox.claim(
                    self.kind,
                    limit=min(free, w.batch_size),
                    owner=self.owner,
                    lease_seconds=w.lease_seconds,
                    load=self._load,
                )
            except Exception:
                self.log.exception("claiming %s work failed; retrying", self.kind)
                await asyncio.sleep(w.poll_interval_seconds)
                continue
            if not claimed and not self._inflight:
                # The time the empty claim *started*: work committed after that was not looked for.
                self._idle_since = claim_started
            if claimed:
                try:
                    await self._dispatch(claimed, loaded)
                except Exception:
                    # The database hiccupped while settling unusable items: their leases lapse and
                    # they are claimed again (their attempt counted), so nothing is lost.
                    self.log.exception("dispatching %d claimed %s items failed", len(claimed), self.kind)
                    await asyncio.sleep(w.poll_interval_seconds)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=w.poll_interval_seconds)

    @abc.abstractmethod
    async def _load(self, tx: Tx, claimed: list[Claimed]) -> Any:
        """Read what the items need (in the claiming transaction, or on their own for hand-overs)."""

    @abc.abstractmethod
    async def _dispatch(self, claimed: list[Claimed], loaded: Any) -> None:
        """Start a task for each claimed item."""

    async def _number(self, number_id: int) -> NumberInfo:
        """A number from the registry, reloading it once when the number is new to this process."""
        number = self.registry.by_id(number_id)
        if number is None:
            await self.registry.load()
            number = self.registry.by_id(number_id)
        if number is None:
            raise PermanentDeliveryError(f"number {number_id} is not configured")
        return number

    def _start(self, item: Claimed, coro: Any) -> None:
        task = asyncio.create_task(coro, name=f"{self.kind}:{item.id}")
        self._inflight[item.id] = (item, task)
        self.metrics.inflight.labels(self.kind).inc()
        task.add_done_callback(functools.partial(self._done, item.id))

    def _done(self, item_id: int, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(item_id, None)
        self.metrics.inflight.labels(self.kind).dec()
        self._slots.set()

    async def idle(self, timeout: float) -> bool:  # noqa: ASYNC109  # a deadline for a state, not one await
        """Wait until the loop found nothing ready and has nothing in flight (after now); False on timeout."""
        asked = time.monotonic()
        deadline = asked + timeout
        self.wake()
        while not (self._idle_since > asked and not self._inflight and not self._adoptions):
            if time.monotonic() > deadline or self._stopping:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self, grace: float) -> None:
        """Stop claiming; let in-flight work finish for ``grace`` seconds, then hand the rest back."""
        self._stopping = True
        self._wakeup.set()
        self._slots.set()
        if self._running.is_set():
            # Items claimed in the loop's current round start their tasks before it exits; waiting
            # for it means nothing claimed is left neither run nor released.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), timeout=grace)
        if self._adoptions:  # they start their items or hand them back (see _adopt)
            await asyncio.wait(list(self._adoptions), timeout=grace)
        pending = [task for _, task in self._inflight.values()]
        if pending:
            await asyncio.wait(pending, timeout=grace)
        leftovers = [(item, task) for item, task in self._inflight.values() if not task.done()]
        for _, task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.gather(*(t for _, t in leftovers), return_exceptions=True)
            await self.inbox.release([item for item, _ in leftovers])
            self.log.info("released %d unfinished %s items at shutdown", len(leftovers), self.kind)
        await self._completer.close()


class Clock(Protocol):
    """Time as the turn worker waits for it (a test drives a fake one)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep(seconds)``."""
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Bursts:
    """How an agent treats messages that come in fragments (``WARELAY_AGENT__ABORT_ON_NEWER``,
    ``…__BURST_WINDOW_MS``, ``…__BURST_MAX_MS``; per agent in its configuration)."""

    abort_on_newer: bool
    window: float  # seconds of quiet that end a burst before the agent starts; 0: start at once
    cap: float  # seconds after the first message when the agent starts anyway

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Bursts:
        """The settings of an agent configuration (which carries the environment's defaults)."""
        window = max(0.0, float(config.get("burst_window_ms") or 0) / 1000)
        cap = max(window, float(config.get("burst_max_ms") or 0) / 1000)
        return cls(bool(config.get("abort_on_newer", False)), window, cap)

    @property
    def merging(self) -> bool:
        """Whether a turn takes the messages queued behind it."""
        return self.abort_on_newer or self.window > 0


MAX_TURN_MESSAGES = 50  # messages one turn takes; the rest wait for the next turn
MAX_RERUNS = 3  # answers discarded for newer messages before one is sent anyway


@dataclass(frozen=True, slots=True)
class _TurnDone:
    item: Claimed
    data: TurnData
    drafts: tuple[Draft, ...]
    state: StateChange | None
    followers: tuple[int, ...] = ()  # work items of the messages the turn took besides its own
    check_newer: bool = False  # discard the answer if a newer message is queued (abort on newer)
    notes: Mapping[str, Any] | None = None
    # Events for an external agent platform: (draft, tenant id, conversation id, number id).
    events: tuple[tuple[AgentEventDraft, int, str, int], ...] = ()


DONE, LOST, STALE = "done", "lost", "stale"


class TurnWorker(_Loop):
    """Runs agent turns."""

    kind = TURN
    log = log

    def __init__(self, services: Services, *, agents: AgentProvider, sender: SendWorker) -> None:
        super().__init__(services, concurrency=services.settings.worker.agent_concurrency)
        self.agents = agents
        self.sender = sender
        self.clock: Clock = SystemClock()
        # Called after turns stored events for external agent platforms (wakes their delivery).
        self.events_stored: Callable[[], None] | None = None
        self._completer: Batcher[_TurnDone, str] = Batcher(self._complete, name="turn-complete")
        # Conversations whose turn is generating here with abort-on-newer, and the event that a
        # newer message for it was stored by this process (see arrived).
        self._watched: dict[str, asyncio.Event] = {}

    def arrived(self, conversation_ids: Iterable[str]) -> None:
        """This process stored new messages in these conversations: interrupt their turns here.

        Turns of other processes learn of the message when they commit (see ``stale_turns``).
        """
        if self._watched:
            for conversation_id in conversation_ids:
                event = self._watched.get(conversation_id)
                if event is not None:
                    event.set()

    async def _load(self, tx: Tx, claimed: list[Claimed]) -> dict[int, TurnData | ValueError]:
        return await load_turns(tx, claimed, history_window=self.settings.conversations.history_window)

    async def _dispatch(self, claimed: list[Claimed], loaded: dict[int, TurnData | ValueError]) -> None:
        for item in claimed:
            data = loaded.get(item.id)
            if data is None:  # the message was deleted under us (tenant removed): nothing to answer
                await self.db.write(finish_items, [item])
                self.wake()
                continue
            if isinstance(data, ValueError):
                log.error("stored message %d cannot be read (%s); dead-lettered", item.message_id, data)
                self.metrics.dead_letters.labels(TURN).inc()
                await self.db.write(dead_letter_items, [(item, error_record(data))], utcnow())
                self.wake()
                continue
            self._start(item, self._process(item, data))

    async def _process(self, item: Claimed, data: TurnData) -> None:
        wamid = data.message.provider_message_id
        extra = {"wamid": wamid, "conversation": item.conversation_id, "work_item": item.id}
        followers: list[Follower] = []
        fallback = self.settings.agent.fallback_text
        try:
            number = await self._number(data.number_id)
            spec, agent = await self.agents.for_number(number)
            fallback = str(spec.config.get("fallback_text") or fallback)
            bursts = Bursts.of(spec.config)
            if item.attempts == 1:
                # An external platform answers later, through the API: no typing indicator meanwhile.
                self._show_activity(number, wamid, typing=spec.kind != EXTERNAL)
                await self._acknowledge(item, data, spec.config.get("acknowledgement"))
            if bursts.window > 0:
                await self._quiet(item, number, bursts)
            timeout = float(spec.config.get("timeout_seconds", self.settings.agent.timeout_seconds))
            reruns = 0
            while True:
                watch = bursts.abort_on_newer and reruns < MAX_RERUNS
                newer = self._watch(item.conversation_id) if watch else None
                try:
                    if bursts.merging:
                        followers = await self.db.read(
                            load_followers, item.conversation_id, item.id, MAX_TURN_MESSAGES - 1
                        )
                    turn = self._turn(number, spec.id, data, followers)
                    if self.prepare_turn is not None:
                        turn = await self.prepare_turn(turn, number)
                    started = time.perf_counter()
                    reply = await self._respond(agent, turn, timeout, newer)
                finally:
                    if newer is not None:
                        self._watched.pop(item.conversation_id, None)
                if reply is None:  # a newer message came in while the agent answered
                    reruns += 1
                    self.metrics.turn_reruns.inc()
                    log.debug("newer message: turn re-run with it", extra=extra)
                    self._show_activity(number, turn.messages[-1].provider_message_id)
                    continue
                self.metrics.agent_latency.labels(spec.kind).observe(time.perf_counter() - started)
                done = self._done_turn(item, data, number, turn, reply, followers, watch, spec.name, reruns)
                result = await self._completer.submit(done)
                if result == STALE:
                    reruns += 1
                    self.metrics.turn_reruns.inc()
                    log.debug("newer message before the answer was kept: turn re-run", extra=extra)
                    continue
                if result == DONE:
                    log.debug("turn done with %d replies", len(done.drafts), extra=extra)
                else:
                    log.warning("turn finished after its lease was taken over; dropped", extra=extra)
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(item, data, exc, extra, followers, fallback)

    def _turn(
        self, number: NumberInfo, agent_id: int | None, data: TurnData, followers: Sequence[Follower]
    ) -> Turn:
        return Turn(
            tenant_id=number.tenant_id,
            tenant=number.tenant,
            number_id=number.id,
            phone_number_id=number.phone_number_id,
            agent_id=agent_id,
            user_key=data.user_key,
            user_name=data.user_name,
            session=data.session,
            messages=(data.message, *(f.message for f in followers)),
            history=data.history,
        )

    async def _respond(
        self, agent: Agent, turn: Turn, limit: float, newer: asyncio.Event | None
    ) -> AgentReply | None:
        """The agent's answer, or None when ``newer`` fires first (the answer is abandoned)."""
        if newer is None:
            return await asyncio.wait_for(agent.respond(turn), timeout=limit)
        answer = asyncio.ensure_future(asyncio.wait_for(agent.respond(turn), timeout=limit))
        interrupted = asyncio.ensure_future(newer.wait())
        try:
            await asyncio.wait((answer, interrupted), return_when=asyncio.FIRST_COMPLETED)
        finally:
            interrupted.cancel()
            if not answer.done():
                answer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await answer
        if answer.cancelled():
            return None
        return answer.result()  # an answer that was ready wins over a message that came with it

    def _watch(self, conversation_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._watched[conversation_id] = event
        return event

    async def _quiet(self, item: Claimed, number: NumberInfo, bursts: Bursts) -> None:
        """Wait until the user has been quiet for the burst window (capped), typing shown meanwhile.

        Each message queued behind the turn restarts the window; it is noticed within a fifth of
        the window (at most every 50 ms), by a read of the conversation's lane.
        """
        start = self.clock.monotonic()
        deadline = start + bursts.window
        step = max(bursts.window / 5, 0.05)
        newest = await self.db.read(newest_waiting, item.conversation_id)
        while (left := deadline - self.clock.monotonic()) > 0:
            await self.clock.sleep(min(step, left))
            latest = await self.db.read(newest_waiting, item.conversation_id)
            if latest is not None and latest != newest:
                newest = latest
                deadline = min(self.clock.monotonic() + bursts.window, start + bursts.cap)
                if latest[1]:
                    self._show_activity(number, latest[1])  # read, and typing renewed for the new message

    def _done_turn(
        self,
        item: Claimed,
        data: TurnData,
        number: NumberInfo,
        turn: Turn,
        reply: AgentReply,
        followers: Sequence[Follower],
        check_newer: bool,
        agent_name: str,
        reruns: int,
    ) -> _TurnDone:
        contents = render_replies(reply)
        quote = turn.messages[-1].provider_message_id
        drafts = tuple(
            Draft(
                conversation_id=item.conversation_id,
                number_id=number.id,
                content=content,
                reply_to=quote if i == 0 else None,
                turn_message_id=item.message_id,
                part=i,
            )
            for i, content in enumerate(contents)
        )
        notes: dict[str, Any] = {"agent": agent_name, **reply.notes}
        if followers:
            notes["messages"] = [item.message_id, *(f.message_id for f in followers)]
        if reruns:
            notes["reruns"] = reruns
        return _TurnDone(
            item,
            data,
            drafts,
            reply.state,
            followers=tuple(f.item_id for f in followers),
            check_newer=check_newer,
            notes=notes,
            events=tuple((e, number.tenant_id, item.conversation_id, number.id) for e in reply.events),
        )

    async def _acknowledge(self, item: Claimed, data: TurnData, text: object) -> None:
        """Queue the configured acknowledgement (seed 003) ahead of the agent's answer."""
        if not isinstance(text, str) or not text.strip():
            return
        draft = Draft(
            conversation_id=item.conversation_id,
            number_id=data.number_id,
            content=OutText(body=text),
            reply_to=data.message.provider_message_id,
            turn_message_id=item.message_id,
        )
        queued = await self.db.write(enqueue, [draft], utcnow(), self.sender.offer())
        self.sender.hand_over(queued.leased, left=queued.left)

    def _show_activity(self, number: NumberInfo, wamid: str, *, typing: bool = True) -> None:
        out = self.settings.outbound
        if not out.mark_read:
            return
        typing = typing and out.typing_indicator
        channel = self.channels.get(number.channel)
        if channel is None:
            return

        async def mark() -> None:
            try:
                await self.pacer.acquire(number.id, number.throughput_mps)
                await channel.mark_read(number, wamid, typing=typing)
            except DeliveryError as exc:  # a missed read receipt never fails a turn
                send_log.info("mark-read failed (%s)", exc, extra={"wamid": wamid})

        task = asyncio.create_task(mark(), name=f"mark-read:{wamid}")
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _failed(
        self,
        item: Claimed,
        data: TurnData,
        exc: Exception,
        extra: dict[str, Any],
        followers: Sequence[Follower] = (),
        fallback: str = "",
    ) -> None:
        error = error_record(exc)
        w = self.settings.worker
        if item.attempts < w.max_attempts:
            delay = backoff_delay(
                item.attempts, base=w.backoff_base_seconds, cap=w.backoff_max_seconds, rng=self.rng
            )
            log.warning(
                "turn attempt %d failed (%s: %s); retrying in %.1fs",
                item.attempts,
                type(exc).__name__,
                exc,
                delay,
                extra=extra,
            )
            self.metrics.retries.labels(TURN).inc()
            await self.inbox.retry(item, delay=delay, error=error)
            return
        log.error("turn failed %d times (%s); dead-lettered", item.attempts, exc, extra=extra)
        self.metrics.dead_letters.labels(TURN).inc()
        draft = Draft(
            conversation_id=item.conversation_id,
            number_id=data.number_id,
            content=OutText(body=fallback),
            reply_to=data.message.provider_message_id,
            turn_message_id=item.message_id,
        )
        taken = [f.item_id for f in followers]
        await self.db.write(_dead_letter_turn, item, taken, error, draft if fallback else None, utcnow())
        self.wake()  # the conversation's next message is ready
        self.sender.wake()

    async def _complete(self, done: Sequence[_TurnDone]) -> list[str]:
        # The replies' sends go to this process's sender, and each conversation's next message to
        # this worker, leased in the same transaction (no claims), as far as both have room.
        finished, queued, stale = await self.db.write(
            _complete_turns, done, utcnow(), turns=self.offer(), sends=self.sender.offer()
        )
        self.hand_over(finished.leased, left=finished.pending)
        self.sender.hand_over(queued.leased, left=queued.left)
        if self.events_stored is not None and any(d.events for d in done):
            self.events_stored()
        return [STALE if d.item.id in stale else DONE if d.item.id in finished.ours else LOST for d in done]


async def _dead_letter_turn(
    tx: Tx,
    item: Claimed,
    followers: Sequence[int],
    error: dict[str, Any],
    fallback: Draft | None,
    now: datetime,
) -> None:
    await close_followers(tx, [(item.id, item.lease, followers)], error=error, now=now)
    ours = await dead_letter_items(tx, [(item, error)], now)
    if ours and fallback is not None:
        await enqueue(tx, [fallback], now)


async def _complete_turns(
    tx: Tx, done: Sequence[_TurnDone], now: datetime, *, turns: LeaseOffer | None, sends: LeaseOffer | None
) -> tuple[Finished, Queued, set[int]]:
    """End finished turns whose lease is still ours: delete them and the messages they took, queue
    their replies, keep their state and notes. A turn that asked for it and has a newer message
    queued behind it is left as it is (stale: its answer is discarded and it runs again)."""
    stale: set[int] = set()
    checked = {d.item.conversation_id: max((d.item.id, *d.followers)) for d in done if d.check_newer}
    if checked:
        await lock_conversations(tx, checked)  # an intake that adds a message waits for this commit
        newer = await stale_turns(tx, checked)
        stale = {d.item.id for d in done if d.check_newer and d.item.conversation_id in newer}
    keep = [d for d in done if d.item.id not in stale]
    await close_followers(tx, [(d.item.id, d.item.lease, d.followers) for d in keep], error=None, now=now)
    finished = await finish_items(tx, [d.item for d in keep], turns)
    ours = [d for d in keep if d.item.id in finished.ours]
    queued = await enqueue(tx, [draft for d in ours for draft in d.drafts], now, sends)
    changes = [(d.item.conversation_id, d.data.session, d.state) for d in ours if d.state is not None]
    if changes:
        await apply_state_changes(tx, changes, now)
    await record_turn_notes(tx, [(d.item.message_id, d.notes) for d in ours if d.notes])
    await insert_events(tx, [e for d in ours for e in d.events], now)
    return finished, queued, stale


_background: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class _SendDone:
    item: Claimed
    pending: PendingSend
    wamid: str | None
    error: dict[str, Any] | None


class SendWorker(_Loop):
    """Delivers outbox rows through their number's channel."""

    kind = SEND
    log = send_log

    def __init__(self, services: Services) -> None:
        super().__init__(services, concurrency=services.settings.worker.send_concurrency)
        self._completer: Batcher[_SendDone, bool] = Batcher(self._complete, name="send-complete")

    async def _load(self, tx: Tx, claimed: list[Claimed]) -> dict[int, PendingSend]:
        return await load_pending(tx, [c.message_id for c in claimed])

    async def _dispatch(self, claimed: list[Claimed], loaded: dict[int, PendingSend]) -> None:
        for item in claimed:
            p = loaded.get(item.message_id)
            if p is None:
                await self.db.write(finish_items, [item])
                self.wake()
                continue
            self._start(item, self._send(item, p))

    async def _send(self, item: Claimed, p: PendingSend) -> None:
        extra = {"conversation": item.conversation_id, "work_item": item.id}
        kind = p.content.kind
        try:
            number = await self._number(p.number_id)
            channel = self.channels.get(number.channel)
            if channel is None:
                raise PermanentDeliveryError(
                    f"no channel {number.channel!r} for number {number.phone_number_id}"
                )
            content = p.content
            if kind in channel.unsupported:
                text = as_text(content)
                if text is None:
                    raise PermanentDeliveryError(f"channel {channel.name!r} cannot send {kind} messages")
                send_log.info(
                    "channel %s cannot send %s; sending it as text", channel.name, kind, extra=extra
                )
                content = text
            await self.pacer.acquire(number.id, number.throughput_mps)
            started = time.perf_counter()
            wamid = await channel.send(
                number, UserRef(wa_id=p.wa_id, user_id=p.user_id), content, reply_to=p.reply_to
            )
            self.metrics.send_latency.observe(time.perf_counter() - started)
        except asyncio.CancelledError:
            raise
        except TransientDeliveryError as exc:
            if item.attempts < self.settings.outbound.max_attempts:
                delay = self._retry_delay(item, exc)
                send_log.warning(
                    "send attempt %d failed (code %s: %s); retrying in %.1fs",
                    item.attempts,
                    exc.code,
                    exc.message,
                    delay,
                    extra=extra,
                )
                self.metrics.retries.labels(SEND).inc()
                await self.inbox.retry(item, delay=delay, error=exc.as_dict())
                return
            send_log.error("send failed %d times (code %s); giving up", item.attempts, exc.code, extra=extra)
            self.metrics.outbound.labels(kind, "failed").inc()
            await self._completer.submit(_SendDone(item, p, None, exc.as_dict()))
            return
        except Exception as exc:
            send_log.error("send failed permanently: %s", exc, extra=extra)
            self.metrics.outbound.labels(kind, "failed").inc()
            await self._completer.submit(_SendDone(item, p, None, error_record(exc)))
            return
        self.metrics.outbound.labels(kind, "accepted").inc()
        send_log.debug("sent", extra={**extra, "wamid": wamid})
        await self._completer.submit(_SendDone(item, p, wamid, None))

    def _retry_delay(self, item: Claimed, exc: TransientDeliveryError) -> float:
        if exc.retry_after is not None:
            return exc.retry_after
        out = self.settings.outbound
        if exc.per_recipient:
            # Pair rate limit (131056): Meta suggests 4^n seconds for that recipient.
            return float(
                min(out.pair_backoff_base_seconds**item.attempts, self.settings.worker.backoff_max_seconds)
            )
        w = self.settings.worker
        return backoff_delay(
            item.attempts, base=w.backoff_base_seconds, cap=w.backoff_max_seconds, rng=self.rng
        )

    async def _complete(self, done: Sequence[_SendDone]) -> list[bool]:
        ours, finished = await self.db.write(_complete_sends, done, utcnow(), self.offer())
        # Each conversation's next reply was leased to us in the same transaction; a failure may
        # have promoted one for anybody.
        failed = sum(1 for d in done if d.wamid is None)
        self.hand_over(finished.leased, left=finished.pending + failed)
        if failed:
            self.metrics.dead_letters.labels(SEND).inc(failed)
        return [d.item.id in ours for d in done]


async def _complete_sends(
    tx: Tx, done: Sequence[_SendDone], now: datetime, offer: LeaseOffer | None
) -> tuple[set[int], Finished]:
    """Record sends (accepted or failed for good) whose lease is still ours; returns their item ids."""
    sent = [d for d in done if d.wamid is not None]
    failed = [d for d in done if d.wamid is None]
    finished = await finish_items(tx, [d.item for d in sent], offer)
    ours = finished.ours
    await record_sent(
        tx,
        [(d.pending.message_id, d.pending.number_id, d.wamid) for d in sent if d.item.id in ours and d.wamid],
        now,
    )
    dead = await dead_letter_items(tx, [(d.item, d.error or {}) for d in failed], now)
    await record_failed(tx, [(d.pending.message_id, d.error or {}) for d in failed if d.item.id in dead], now)
    return ours | dead, finished
