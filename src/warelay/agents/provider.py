"""Which agent answers a number: its linked agent from the database, else the tenant's default agent.

Agent objects are built once per stored configuration and reused (they must be safe to call
concurrently); a configuration edited in the database is picked up within ``refresh_seconds``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from warelay.agents.base import Agent, AgentDeps, AgentSpec, build_agent
from warelay.agents.config import AgentConfig, AgentConfigError
from warelay.config import Settings
from warelay.crypto import SecretBox
from warelay.numbers import NumberInfo, ensure_agent
from warelay.storage.db import read_only
from warelay.storage.models import Agent as AgentRow


def env_agent_defaults(settings: Settings) -> dict[str, Any]:
    """Agent settings from ``WARELAY_AGENT__*``; stored configurations inherit them unless they override."""
    a = settings.agent
    defaults: dict[str, Any] = {
        "fallback_text": a.fallback_text,
        "timeout_seconds": a.timeout_seconds,
        "abort_on_newer": a.abort_on_newer,
        "burst_window_ms": a.burst_window_ms,
        "burst_max_ms": a.burst_max_ms,
    }
    for key in ("system_prompt", "unknown_text", "acknowledgement"):
        value = getattr(a, key)
        if value is not None:
            defaults[key] = value
    if a.system_prompt_file is not None:
        defaults["system_prompt_file"] = str(a.system_prompt_file)
    if a.tools:
        defaults["tools"] = list(a.tools)
    defaults["history_window"] = settings.conversations.history_window
    return defaults


class AgentProvider:
    """Resolves and caches the agent of each number."""

    def __init__(
        self,
        engine: AsyncEngine,
        deps: AgentDeps,
        settings: Settings,
        *,
        refresh_seconds: float = 30,
        box: SecretBox | None = None,
    ) -> None:
        self._engine = engine
        self._box = box  # decrypts an agent's own api_key (see warelay.agents.config)
        self._reader = read_only(engine)
        self._deps = deps
        self._settings = settings
        self._refresh = refresh_seconds
        self._cache: dict[int, tuple[float, AgentSpec, Agent]] = {}
        self._default_ids: dict[int, int] = {}
        self._lock = asyncio.Lock()
        self._default_lock = asyncio.Lock()

    async def for_number(self, number: NumberInfo) -> tuple[AgentSpec, Agent]:
        """The agent spec and instance that answer ``number``'s conversations."""
        if number.agent_id is not None:
            return await self._agent(number.agent_id, number)
        agent_id = await self._default_agent_id(number.tenant_id)
        try:
            return await self._agent(agent_id, number)
        except LookupError:
            # The tenant's default agent was removed since it was looked up: make it again.
            self._default_ids.pop(number.tenant_id, None)
            self._cache.pop(agent_id, None)
            return await self._agent(await self._default_agent_id(number.tenant_id), number)

    async def _agent(self, agent_id: int, number: NumberInfo) -> tuple[AgentSpec, Agent]:
        cached = self._cache.get(agent_id)
        if cached is not None and time.monotonic() - cached[0] < self._refresh:
            return cached[1], cached[2]
        async with self._lock:  # turns dispatched together build the agent once, not once each
            cached = self._cache.get(agent_id)
            if cached is not None and time.monotonic() - cached[0] < self._refresh:
                return cached[1], cached[2]
            return await self._load(agent_id, number, cached)

    async def _load(
        self, agent_id: int, number: NumberInfo, cached: tuple[float, AgentSpec, Agent] | None
    ) -> tuple[AgentSpec, Agent]:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(AgentRow).where(AgentRow.id == agent_id))).first()
        if row is None:
            raise LookupError(f"agent {agent_id} of number {number.phone_number_id} does not exist")
        try:
            config = AgentConfig.from_stored(row.config or {}, self._box).runtime()
        except AgentConfigError as exc:
            raise LookupError(f"agent {row.name!r} cannot be built: {exc}") from None
        spec = AgentSpec(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            kind=row.kind,
            config={**env_agent_defaults(self._settings), **config},
        )
        if cached is not None and cached[1] == spec:
            agent = cached[2]
        else:
            agent = build_agent(spec, self._deps)
            if cached is not None:  # the configuration changed: the old instance is done
                close = getattr(cached[2], "aclose", None)
                if close is not None:
                    await close()
        self._cache[agent_id] = (time.monotonic(), spec, agent)
        return spec, agent

    async def aclose(self) -> None:
        """Release what cached agents hold (an LLM agent's HTTP client, say)."""
        for _, _, agent in self._cache.values():
            close = getattr(agent, "aclose", None)
            if close is not None:
                await close()
        self._cache.clear()

    async def _default_agent_id(self, tenant_id: int) -> int:
        found = self._default_ids.get(tenant_id)
        if found is None:
            async with self._default_lock:
                found = await ensure_agent(
                    self._engine,
                    tenant_id=tenant_id,
                    name=self._settings.agent.name,
                    kind=self._settings.agent_kind,
                )
                self._default_ids[tenant_id] = found
        return found
