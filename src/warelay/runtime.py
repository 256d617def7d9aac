"""The running parts of a warelay process, wired together once and shut down in order.

``warelay serve`` runs a :class:`Runtime` inside the web app's lifespan (HTTP + in-process
workers); ``warelay worker`` runs one without HTTP. Start-up applies migrations (unless told not
to), upserts the env-configured number and loads the number registry; shutdown stops claiming,
lets in-flight turns and sends finish (or hands them back), then closes connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

# Importing the agent modules registers their kinds.
import warelay.agents.external
import warelay.agents.knowledge
import warelay.agents.llm  # noqa: F401
from warelay.agents.base import AgentDeps
from warelay.agents.catalog import seed_agents_file
from warelay.agents.config import AgentConfig
from warelay.agents.provider import AgentProvider
from warelay.batching import Batcher
from warelay.channels.base import Channel
from warelay.channels.cloud.client import CloudChannel
from warelay.config import Settings
from warelay.crypto import SecretBox
from warelay.errors import ConfigError
from warelay.inbox.store import Delivery, DeliveryResult, Inbox, promote_stranded
from warelay.inbox.worker import LoopLag, SendWorker, Services, TurnWorker
from warelay.integrations.ai_platform import current_access_token
from warelay.integrations.events import EventPusher, Notifier
from warelay.knowledge.ingest import add_folder
from warelay.knowledge.search import DatabaseRetriever
from warelay.media import MediaPreparer, build_media
from warelay.numbers import NumberRegistry, ensure_agent, ensure_tenant, upsert_env_number
from warelay.observability import Metrics
from warelay.outbound.ratelimit import Pacer
from warelay.storage.db import create_engine, read_only, upgrade
from warelay.storage.direct import Database
from warelay.storage.models import Agent as AgentRow

if TYPE_CHECKING:
    from pydantic_ai.models import Model

log = logging.getLogger("warelay.runtime")


class Runtime:
    """Engine, registry, inbox, agents, channels and workers of one process."""

    def __init__(
        self,
        settings: Settings,
        *,
        run_workers: bool | None = None,
        migrate: bool = True,
        setup: bool = True,
        share_work: bool = False,
        llm_model: Model | None = None,
    ) -> None:
        self.settings = settings
        self.run_workers = settings.worker.enabled if run_workers is None else run_workers
        self.migrate = migrate
        # Worker processes started by serve skip the set-up serve has just done.
        self.setup = setup
        self.metrics = Metrics()
        self.box = SecretBox(settings.secret_keys)
        # SQLAlchemy serves set-up, numbers and the API; the message path has its own connections
        # (self.db), so this pool stays small.
        self.engine: AsyncEngine = create_engine(
            settings.database_url, sqlite_synchronous=settings.sqlite_synchronous, pool_size=5
        )
        self.reader = read_only(self.engine)
        # The message path's statements run on the drivers directly (see storage.direct).
        self.db = Database(settings.database_url, sqlite_synchronous=settings.sqlite_synchronous)
        self.registry = NumberRegistry(self.reader, self.box)
        self.inbox = Inbox(self.db, conversation_expiry=settings.conversations.expiry)
        self.channels: Mapping[str, Channel] = {
            "cloud": CloudChannel(
                timeout=settings.outbound.request_timeout_seconds,
                media_timeout=settings.media.download_timeout_seconds,
            )
        }
        self.pacer = Pacer()
        # Hybrid retrieval when an embeddings endpoint is configured (globally or per agent).
        self.retriever = DatabaseRetriever(self.db, embeddings=settings.embeddings, decrypt=self.box.decrypt)
        deps = AgentDeps(retriever=self.retriever, settings=settings, llm_model=llm_model)
        self.agents = AgentProvider(self.engine, deps, settings, box=self.box)
        # A worker process beside others measures how far behind it is, to leave them new work.
        self.lag = LoopLag() if share_work and self.run_workers else None
        # Inbound media is fetched, stored and read before the agent sees a turn (warelay.media).
        self.media: MediaPreparer | None = (
            build_media(settings, db=self.db, channels=self.channels) if settings.media.enabled else None
        )
        services = Services(
            lag=self.lag,
            db=self.db,
            inbox=self.inbox,
            registry=self.registry,
            channels=self.channels,
            pacer=self.pacer,
            settings=settings,
            metrics=self.metrics,
            prepare_turn=self.media.prepare if self.media is not None else None,
        )
        self.sender = SendWorker(services)
        self.turns = TurnWorker(services, agents=self.agents, sender=self.sender)
        # Events for external agent platforms that push (warelay.integrations.events).
        self.events = EventPusher(
            self.db,
            agent_config=self._stored_agent,
            access_token=self._platform_token,
            base_url=self._platform_url,
            backoff_base=settings.worker.backoff_base_seconds,
            backoff_max=settings.worker.backoff_max_seconds,
            timeout=settings.outbound.request_timeout_seconds,
            lease_seconds=settings.worker.lease_seconds,
        )
        self.event_polls = Notifier()
        self.turns.events_stored = self._events_stored
        self.intake: Batcher[Delivery, DeliveryResult] = Batcher(self._store, name="inbox")
        # Called when turns were stored that no worker of this process took: serve's worker processes.
        self.wake_others: Callable[[], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _store(self, deliveries: Sequence[Delivery]) -> list[DeliveryResult]:
        # With workers here, the new turns are leased to them as they are stored (no claim needed).
        stored = await self.inbox.store(deliveries, offer=self.turns.offer() if self.run_workers else None)
        stored_count = sum(len(r.stored) for r in stored.results)
        left = stored_count - len(stored.leased)
        self.turns.hand_over(stored.leased, left=left)
        # A turn generating here for a conversation that just got a message re-runs with it.
        self.turns.arrived(conv for result in stored.results for _, _, conv in result.stored)
        if left and self.wake_others is not None:
            self.wake_others()
        return stored.results

    async def store(self, delivery: Delivery) -> DeliveryResult:
        """Durably store one webhook's events (group-committed with concurrent ones)."""
        return await self.intake.submit(delivery)

    async def start(self) -> None:
        """Migrate, set up the env number and knowledge folder, load numbers, start workers, housekeeping."""
        if self.migrate:
            await upgrade(self.engine)
        if self.setup:
            await upsert_env_number(self.engine, self.box, self.settings)
            if self.settings.agents_file is not None:
                await seed_agents_file(
                    self.engine,
                    self.box,
                    self.settings.agents_file,
                    default_tenant=self.settings.whatsapp.tenant,
                    embeddings=self.settings.embeddings,
                )
            await self._load_knowledge_dir()
        await self.registry.load()
        if self.lag is not None:
            self._tasks.append(asyncio.create_task(self.lag.run(), name="loop-lag"))
        if self.run_workers:
            self._tasks.append(asyncio.create_task(self.turns.run(), name="turn-worker"))
            self._tasks.append(asyncio.create_task(self.sender.run(), name="send-worker"))
            self._tasks.append(asyncio.create_task(self.events.run(), name="event-pusher"))
            if self.media is not None:
                self._tasks.append(asyncio.create_task(self._purge_media(self.media), name="media-purge"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        log.info(
            "warelay started: %d number(s), workers %s, database %s",
            len(self.registry.all()),
            "on" if self.run_workers else "off",
            self.engine.dialect.name,
        )

    async def _load_knowledge_dir(self) -> None:
        """Index the folder named by ``WARELAY_AGENT__KNOWLEDGE_DIR`` for the env number's agent."""
        folder = self.settings.agent.knowledge_dir
        if folder is None:
            return
        if not folder.is_dir():
            raise ConfigError(f"WARELAY_AGENT__KNOWLEDGE_DIR names {str(folder)!r}, which is not a folder")
        tenant_id = await ensure_tenant(self.engine, self.settings.whatsapp.tenant)
        agent_id = await ensure_agent(
            self.engine, tenant_id=tenant_id, name=self.settings.agent.name, kind=self.settings.agent_kind
        )
        await add_folder(
            self.engine,
            tenant_id=tenant_id,
            agent_id=agent_id,
            folder=folder,
            embeddings=self.settings.embeddings,
            decrypt=self.box.decrypt,
        )

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(5)
            try:
                await self.registry.refresh_if_stale()
                if self.run_workers:
                    stranded = await self.db.write(promote_stranded)
                    if stranded:
                        log.warning("promoted %d queue items that had no lane head", stranded)
                        self.turns.wake()
                        self.sender.wake()
                for kind, depth in (await self.inbox.queue_depth()).items():
                    self.metrics.queue_depth.labels(kind).set(depth)
            except Exception:
                log.exception("housekeeping failed")

    async def _purge_media(self, media: MediaPreparer) -> None:
        """Delete media files past their retention, now and then (one indexed query when none are due)."""
        while True:
            try:
                purged = await media.purge()
                if purged:
                    log.info("purged %d expired media file(s)", purged)
            except Exception:
                log.exception("media purge failed")
            await asyncio.sleep(self.settings.media.purge_interval_seconds)

    def _events_stored(self) -> None:
        self.events.wake()
        self.event_polls.notify()

    async def _stored_agent(self, agent_id: int) -> tuple[int, AgentConfig] | None:
        """An agent's stored configuration, secrets decrypted (for event delivery)."""
        async with self.reader.connect() as conn:
            stored = (await conn.execute(select(AgentRow.config).where(AgentRow.id == agent_id))).scalar()
        return None if stored is None else (agent_id, AgentConfig.from_stored(stored, self.box))

    async def _platform_token(self, tenant_id: int) -> str | None:
        """The tenant's OAuth access token for its external AI platform, when it connected one."""
        return await current_access_token(self.engine, self.box, self.settings, tenant_id)

    def _platform_url(self) -> str | None:
        """Where external agents' events are pushed when an agent names no webhook_url."""
        return self.settings.ai.agent_base_url

    async def ready(self) -> bool:
        """Whether the database answers."""
        try:
            async with self.reader.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            log.exception("database not reachable")
            return False
        return True

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, finish or release in-flight work, close everything."""
        await self.intake.close()
        started = time.monotonic()
        await self.turns.stop(grace)
        if self.run_workers:
            # Replies of the turns that just finished go out now rather than waiting for the next start.
            await self.sender.idle(max(1.0, grace - (time.monotonic() - started)))
        await self.sender.stop(grace)
        await self.events.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for channel in self.channels.values():
            await channel.aclose()
        if self.media is not None:
            await self.media.aclose()
        await self.agents.aclose()
        await self.retriever.aclose()
        await self.db.close()
        await self.engine.dispose()
        log.info("warelay stopped")
