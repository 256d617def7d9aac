"""Run a suite: warelay and the WhatsApp simulator on loopback, the suite's users talking to the agent.

Where it sits: outside the message path, driving all of it. The simulator plays the users and
Meta's Graph API; warelay runs unchanged (signed webhook → inbox → worker → agent → outbox → send)
on a throwaway SQLite file unless given a database. Each conversation gets a fresh user; each step
is delivered as a signed webhook, then the runner waits until warelay has nothing left to do for
that conversation (no turn or send waiting, pending or leased in its queue), so a turn's replies
are all in the simulator before they are judged. The conversation's state and hand-off come from
warelay's own API, as an operator sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import uvicorn
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from warelay.agents.catalog import save_agent
from warelay.agents.config import AgentConfigError
from warelay.app import create_app
from warelay.config import Settings, load_settings
from warelay.crypto import SecretBox
from warelay.evaluation.checks import Outcome, Reply, describe_check, evaluate
from warelay.evaluation.results import ConversationResult, StepResult, SuiteResult
from warelay.evaluation.suite import ConversationSpec, HandoffCheck, StateCheck, Step, Suite, SuiteAgent
from warelay.knowledge.ingest import (
    KnowledgeFileError,
    add_sources,
    list_documents,
    remove_document,
)
from warelay.numbers import ensure_tenant
from warelay.runtime import Runtime
from warelay.simulator.server import Simulator, SimulatorConfig, create_simulator_app
from warelay.storage.db import create_engine, upgrade
from warelay.storage.models import WorkItem

if TYPE_CHECKING:
    from pydantic_ai.models import Model

__all__ = ["EVAL_TENANT", "EvalRunError", "EvalSetupError", "run_suite"]

log = logging.getLogger("warelay.evaluation")

# The suite's agent lives in a tenant of its own, so that a run against a real database
# (--database-url) never changes the configuration or knowledge of an agent in use.
EVAL_TENANT: Final = "eval"
EVAL_NUMBER_ID: Final = "100000000000077"
EVAL_DISPLAY_NUMBER: Final = "15550100077"
START_TIMEOUT: Final = 60.0  # seconds for warelay (migrations included) and the simulator to start
_UNFINISHED: Final = ("waiting", "pending", "leased")
_POLL: Final = 0.03


class EvalSetupError(Exception):
    """The run cannot be set up as asked: the suite's agent (configuration, knowledge files, model
    endpoint) or the database URL."""


class EvalRunError(Exception):
    """warelay or the simulator could not be started, or stopped working during the run."""


class _StepError(Exception):
    """A step that cannot run to the end; the message says why, for the report."""


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: Ctrl+C stops the whole run, not just one server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals to the caller."""
        yield


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        old = merged.get(key)
        merged[key] = _merge(old, value) if isinstance(old, Mapping) and isinstance(value, Mapping) else value
    return merged


def eval_settings(
    base: Settings,
    *,
    database_url: str,
    throwaway: bool,
    port: int,
    sim_url: str,
    workdir: Path,
    kind: str,
    name: str,
) -> tuple[Settings, str, str]:
    """Settings for the run's warelay (from ``base``), with the simulator's app secret and access token."""
    app_secret, access_token = secrets.token_hex(16), secrets.token_urlsafe(24)
    overrides: dict[str, Any] = {
        "database_url": database_url,
        "sqlite_synchronous": "NORMAL" if throwaway else base.sqlite_synchronous,
        "secret_key": base.secret_key or SecretStr(secrets.token_urlsafe(48)),
        "admin_token": SecretStr(secrets.token_urlsafe(24)),
        "public_url": f"http://127.0.0.1:{port}",
        "host": "127.0.0.1",
        "port": port,
        "whatsapp": {
            "phone_number_id": EVAL_NUMBER_ID,
            "display_phone_number": EVAL_DISPLAY_NUMBER,
            "display_name": "warelay eval",
            "access_token": SecretStr(access_token),
            "app_secret": SecretStr(app_secret),
            "verify_token": SecretStr(secrets.token_urlsafe(12)),
            "graph_url": sim_url,
            "throughput_mps": 1000,
            "tenant": EVAL_TENANT,
            "insecure_skip_signature": False,
        },
        # The runner sets up the agent and its knowledge itself (see _prepare_agent).
        "agent": {"kind": kind, "name": name, "knowledge_dir": None},
        "agents_file": None,
        "worker": {
            "enabled": True,
            "processes": 0,
            "poll_interval_seconds": 0.05,
            "backoff_base_seconds": 0.1,
            "backoff_max_seconds": 1.0,
        },
        # Files users send are kept with the run (ignored by a warelay without a media store).
        "media": {"directory": workdir / "media"},
    }
    return Settings(**_merge(base.model_dump(), overrides)), app_secret, access_token


_DRIVERS: Final = ("sqlite+aiosqlite", "postgresql+asyncpg")


def _check_database_url(url: str) -> None:
    try:
        driver: str | None = make_url(url).drivername
    except ArgumentError:
        driver = None
    if driver not in _DRIVERS:
        # The URL itself is not repeated: it may hold a password.
        what = "is not a database URL" if driver is None else f"names the driver {driver!r}"
        raise EvalSetupError(
            f"--database-url {what}; warelay uses sqlite+aiosqlite:///path.db "
            "or postgresql+asyncpg://user:password@host/database"
        )


async def _prepare_agent(settings: Settings, agent: SuiteAgent, knowledge: list[Path]) -> None:
    """Create the eval tenant's agent with the suite's configuration, and only the suite's knowledge."""
    box = SecretBox(settings.secret_keys)
    engine = create_engine(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        try:
            await upgrade(engine)
        except (OSError, SQLAlchemyError) as exc:
            where = make_url(settings.database_url).render_as_string(hide_password=True)
            raise EvalRunError(f"cannot use the database {where}: {type(exc).__name__}: {exc}") from None
        try:
            record = await save_agent(
                engine,
                box,
                tenant=EVAL_TENANT,
                name=agent.name,
                kind=agent.kind,
                changes=agent.config,
                replace=True,
            )
        except AgentConfigError as exc:
            raise EvalSetupError(str(exc)) from None
        tenant_id = await ensure_tenant(engine, EVAL_TENANT)
        # A database kept between runs may hold the files of an earlier version of the suite.
        for doc in await list_documents(engine, tenant_id=tenant_id, agent_id=record.id):
            await remove_document(engine, tenant_id=tenant_id, agent_id=record.id, name=doc.name)
        # Indexed as the application indexes them: embeddings too, when configured.
        try:
            await add_sources(
                engine,
                tenant_id=tenant_id,
                agent_id=record.id,
                sources=knowledge,
                embeddings=settings.embeddings,
                decrypt=box.decrypt,
            )
        except (KnowledgeFileError, OSError) as exc:
            raise EvalSetupError(f"knowledge: {exc}") from None
    finally:
        await engine.dispose()


@dataclass
class _Stack:
    """The running warelay and simulator of one suite run."""

    settings: Settings
    runtime: Runtime
    simulator: Simulator
    url: str
    http: httpx.AsyncClient
    servers: tuple[asyncio.Task[None], ...]

    def check_alive(self) -> None:
        """Raise when a server stopped on its own."""
        for task in self.servers:
            if task.done():
                raise EvalRunError("warelay or the simulator stopped during the run (see the log above)")

    async def api(self, path: str, **params: Any) -> Any:
        """GET warelay's API as the admin."""
        token = self.settings.admin_token.get_secret_value() if self.settings.admin_token else ""
        try:
            response = await self.http.get(
                f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise _StepError(f"warelay's API did not answer {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise _StepError(
                f"warelay's API answered {path} with {response.status_code}: {response.text[:200]}"
            )
        return response.json()


async def _serve(server: uvicorn.Server, what: str) -> asyncio.Task[None]:
    task = asyncio.create_task(server.serve(), name=f"eval-{what}")
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if task.done():
            exc = task.exception()
            raise EvalRunError(f"{what} did not start: {exc or 'see the log above'}")
        if time.monotonic() > deadline:
            await _stop(server, task)
            raise EvalRunError(f"{what} did not start within {START_TIMEOUT:g}s")
        await asyncio.sleep(0.02)
    return task


async def _stop(server: uvicorn.Server, task: asyncio.Task[None] | None) -> None:
    """Ask a server to shut down gracefully; cancel it after 30 s (its failures were reported already)."""
    server.should_exit = True
    if task is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _running(
    settings: Settings, app_secret: str, access_token: str, llm_model: Model | None
) -> AsyncIterator[_Stack]:
    port = settings.port
    sim_url = settings.whatsapp.graph_url
    sim_port = int(sim_url.rsplit(":", 1)[1])
    simulator = Simulator(
        SimulatorConfig(
            webhook_url=f"http://127.0.0.1:{port}/webhooks/whatsapp",
            app_secret=app_secret,
            access_token=access_token,
            phone_number_id=EVAL_NUMBER_ID,
            display_phone_number=EVAL_DISPLAY_NUMBER,
            base_url=sim_url,
        )
    )
    app = create_app(settings, run_workers=True, llm_model=llm_model)
    sim_server = _Server(
        uvicorn.Config(
            create_simulator_app(simulator),
            host="127.0.0.1",
            port=sim_port,
            log_level="warning",
            access_log=False,
        )
    )
    app_server = _Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=10,
        )
    )
    await simulator.start()
    sim_task: asyncio.Task[None] | None = None
    app_task: asyncio.Task[None] | None = None
    try:
        sim_task = await _serve(sim_server, "the simulator")
        app_task = await _serve(app_server, "warelay")
        async with httpx.AsyncClient(timeout=10) as http:
            yield _Stack(
                settings, app.state.runtime, simulator, f"http://127.0.0.1:{port}", http, (sim_task, app_task)
            )
    finally:
        await _stop(app_server, app_task)
        await _stop(sim_server, sim_task)
        await simulator.stop()


async def _check_agent(stack: _Stack, kind: str) -> None:
    """Build the agent as the first turn would, so a bad configuration stops the run before it starts."""
    number = stack.runtime.registry.by_phone_number_id(EVAL_NUMBER_ID)
    if number is None:
        raise EvalRunError("warelay did not set up the eval number")
    try:
        await stack.runtime.agents.for_number(number)
    except Exception as exc:  # whatever the agent's constructor refuses is the suite's configuration
        raise EvalSetupError(
            f"the {kind} agent cannot be built from the suite's configuration: {exc}"
        ) from None


class _Player:
    """Plays the suite's conversations against a running stack."""

    def __init__(self, stack: _Stack, suite: Suite) -> None:
        self.stack = stack
        self.suite = suite
        self.sim = stack.simulator
        self.reader = stack.runtime.reader
        # Fresh users: a run's own prefix, then the conversation's index.
        self.prefix = f"1999{secrets.randbelow(10**6):06d}"

    async def conversation(self, index: int, spec: ConversationSpec) -> ConversationResult:
        """Play one conversation; steps after one that did not finish are reported, not run."""
        wa_id = f"{self.prefix}{index:04d}"
        results: list[StepResult] = []
        stopped: str | None = None
        for number, step in enumerate(spec.steps, 1):
            if stopped is not None:
                results.append(self._not_run(number, step, stopped))
                continue
            result = await self.step(wa_id, spec, number, step)
            results.append(result)
            if result.error is not None:
                stopped = f"not run: step {number} did not complete"
        return ConversationResult(spec.name, wa_id, tuple(results))

    def _not_run(self, number: int, step: Step, why: str) -> StepResult:
        return StepResult(
            number, step.describe(), outcomes=_unjudged(step, "not run"), error=why, played=False
        )

    async def step(self, wa_id: str, spec: ConversationSpec, number: int, step: Step) -> StepResult:
        """Send one step's message, wait for the turn to finish, judge the replies."""
        started = time.monotonic()
        timeout = step.timeout_seconds or self.suite.timeout_seconds
        before = len(self.sim.messages_to(wa_id))
        try:
            last_work = await self._last_work_id()
            message = await self._message(wa_id, step)
            conversation_id = await self._deliver(wa_id, spec.user_name, message, timeout)
            await self._finish(conversation_id, started + timeout, timeout)
        except _StepError as exc:
            return StepResult(
                number,
                step.describe(),
                self._replies(wa_id, before),
                _unjudged(step, "not evaluated: the step did not complete"),
                error=str(exc),
                seconds=time.monotonic() - started,
            )
        replies = self._replies(wa_id, before)
        warnings = await self._dead_work(conversation_id, last_work)
        conversation = None
        if any(isinstance(c, StateCheck | HandoffCheck) for c in step.expect):
            try:
                conversation = await self.stack.api(f"/api/v1/conversations/{conversation_id}")
            except _StepError as exc:
                warnings = (*warnings, str(exc))
        outcomes = tuple(
            evaluate(check, replies, conversation, ignore_case=self.suite.ignore_case)
            for check in step.expect
        )
        return StepResult(
            number, step.describe(), replies, outcomes, warnings=warnings, seconds=time.monotonic() - started
        )

    def _replies(self, wa_id: str, before: int) -> tuple[Reply, ...]:
        return tuple(Reply.from_body(m.wamid, m.body) for m in self.sim.messages_to(wa_id)[before:])

    async def _message(self, wa_id: str, step: Step) -> str | dict[str, Any]:
        """The Cloud API message object the user sends in this step."""
        if step.user is not None:
            return step.user
        if step.message is not None:
            return dict(step.message)
        if step.media is not None:
            media = step.media
            try:
                data = await asyncio.to_thread(media.file.read_bytes)
            except OSError as exc:
                raise _StepError(f"cannot read {media.file}: {exc.strerror}") from None
            kind = media.kind
            media_id = self.sim.add_media(
                data,
                media.mime or "application/octet-stream",
                number_id=EVAL_NUMBER_ID,
                filename=media.file.name,
            )
            content: dict[str, Any] = {"id": media_id}
            if media.caption is not None:
                content["caption"] = media.caption
            if kind == "document":
                content["filename"] = media.filename or media.file.name
            if kind == "audio":  # Meta says whether audio was recorded as a voice note
                content["voice"] = media.voice
            return {"type": kind, kind: content}
        if step.tap is not None:
            return self._tap(wa_id, step.tap)
        raise _StepError("the step sends nothing")  # not reached: a Step's validator requires one

    def _tap(self, wa_id: str, tap: str) -> dict[str, Any]:
        """A button or list-row reply to the latest message that offers ``tap`` (by title, else by id)."""
        offered = [o for m in self.sim.messages_to(wa_id) for o in Reply.from_body(m.wamid, m.body).options]
        offered.reverse()  # the latest message first
        option = (
            next((o for o in offered if o.title == tap), None)
            or next((o for o in offered if o.id == tap), None)
            or next((o for o in offered if o.title.casefold() == tap.casefold()), None)
        )
        if option is None:
            titles = ", ".join(repr(o.title) for o in reversed(offered)) or "none"
            raise _StepError(f"nothing to tap called {tap!r} in warelay's replies so far (offered: {titles})")
        reply: dict[str, Any] = {"id": option.id, "title": option.title}
        if option.kind == "row" and option.description:
            reply["description"] = option.description
        kind = "button_reply" if option.kind == "button" else "list_reply"
        return {
            "type": "interactive",
            "interactive": {"type": kind, kind: reply},
            "context": {"from": EVAL_DISPLAY_NUMBER, "id": option.message_id},
        }

    async def _deliver(self, wa_id: str, name: str, message: str | dict[str, Any], timeout: float) -> str:  # noqa: ASYNC109
        """Deliver the signed webhook; the id of the conversation warelay stored it in."""
        try:
            _, result = await asyncio.wait_for(
                self.sim.deliver_inbound(wa_id, message, name=name, number_id=EVAL_NUMBER_ID), timeout
            )
        except TimeoutError:
            raise _StepError(f"warelay did not acknowledge the message within {timeout:g}s") from None
        except ValueError as exc:  # a raw message the simulator cannot build
            raise _StepError(f"cannot send this message: {exc}") from None
        if not result.ok:
            status = f"HTTP {result.status}" if result.status is not None else result.error or "no answer"
            raise _StepError(f"warelay refused the message ({status}, after {result.attempts} attempts)")
        page = await self.stack.api("/api/v1/conversations", user=wa_id, number=EVAL_NUMBER_ID, limit=1)
        if not page["items"]:
            raise _StepError("warelay accepted the message but shows no conversation for the user")
        return str(page["items"][0]["id"])

    async def _finish(self, conversation_id: str, deadline: float, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until nothing is waiting, pending or leased in the conversation's queue (turns and sends)."""
        query = (
            select(func.count())
            .select_from(WorkItem)
            .where(WorkItem.conversation_id == conversation_id, WorkItem.state.in_(_UNFINISHED))
        )
        while True:
            self.stack.check_alive()
            async with self.reader.connect() as conn:
                if not (await conn.execute(query)).scalar_one():
                    return
            if time.monotonic() > deadline:
                raise _StepError(f"warelay did not finish the turn within {timeout:g}s")
            await asyncio.sleep(_POLL)

    async def _last_work_id(self) -> int:
        async with self.reader.connect() as conn:
            return int((await conn.execute(select(func.max(WorkItem.id)))).scalar() or 0)

    async def _dead_work(self, conversation_id: str, after: int) -> tuple[str, ...]:
        """Turns and sends of this step that failed for good (the user got the fallback, or nothing)."""
        query = select(WorkItem.kind, WorkItem.attempts, WorkItem.last_error).where(
            WorkItem.conversation_id == conversation_id, WorkItem.state == "dead", WorkItem.id > after
        )
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return tuple(
            f"a {row.kind} failed after {row.attempts} attempt(s): {_error_text(row.last_error)}"
            for row in rows
        )


def _unjudged(step: Step, why: str) -> tuple[Outcome, ...]:
    return tuple(Outcome(describe_check(check), False, why) for check in step.expect)


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        text = error.get("message") or error.get("error") or json.dumps(error, default=str)
        return str(text)[:300]
    return str(error)[:300] if error else "no reason recorded"


async def run_suite(
    suite: Suite,
    settings: Settings | None = None,
    *,
    name: str = "suite",
    database_url: str | None = None,
    llm_model: Model | None = None,
    concurrency: int = 4,
    on_conversation: Callable[[ConversationResult], None] | None = None,
) -> SuiteResult:
    """Run ``suite`` against warelay and the simulator on loopback; the verdicts of every step.

    ``settings`` (default: from the environment) supply what the suite leaves out, such as the llm
    agent's endpoint (``WARELAY_LLM__*``); ``database_url`` defaults to a throwaway SQLite file.
    ``llm_model`` is a pydantic-ai model that ``llm`` agents use instead of any endpoint (e.g. a
    ``FunctionModel`` in tests). Raises :class:`EvalSetupError` when the agent cannot be set up and
    :class:`EvalRunError` when warelay or the simulator fails; failed assertions are results.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    base = settings if settings is not None else load_settings()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="warelay-eval-") as tmp:
        workdir = Path(tmp)
        if database_url is not None:
            _check_database_url(database_url)
        url = database_url or f"sqlite+aiosqlite:///{workdir / 'eval.db'}"
        port = _free_port()
        run_settings, app_secret, access_token = eval_settings(
            base,
            database_url=url,
            throwaway=database_url is None,
            port=port,
            sim_url=f"http://127.0.0.1:{_free_port()}",
            workdir=workdir,
            kind=suite.agent.kind,
            name=suite.agent.name,
        )
        knowledge = list(suite.agent.knowledge)
        if not knowledge and base.agent.knowledge_dir is not None:
            knowledge = [base.agent.knowledge_dir]
        await _prepare_agent(run_settings, suite.agent, knowledge)
        async with _running(run_settings, app_secret, access_token, llm_model) as stack:
            log.info(
                "eval %s: warelay on %s, simulator on %s, %d conversation(s)",
                name,
                stack.url,
                run_settings.whatsapp.graph_url,
                len(suite.conversations),
            )
            await _check_agent(stack, suite.agent.kind)
            player = _Player(stack, suite)
            slots = asyncio.Semaphore(concurrency)

            async def play(index: int, spec: ConversationSpec) -> ConversationResult:
                async with slots:
                    result = await player.conversation(index, spec)
                if on_conversation is not None:
                    on_conversation(result)
                return result

            tasks = [asyncio.create_task(play(i, c)) for i, c in enumerate(suite.conversations)]
            try:
                results = await asyncio.gather(*tasks)
            finally:  # one failed (warelay stopped, say): the others stop too
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    return SuiteResult(name, suite.agent.kind, tuple(results), seconds=time.monotonic() - started)
