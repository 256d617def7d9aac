"""AgentProvider: one agent instance per stored configuration, even when many turns ask at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from warelay.agents.base import AgentDeps, AgentReply, AgentSpec, Passage, Turn, register_agent
from warelay.agents.provider import AgentProvider
from warelay.config import Settings
from warelay.crypto import SecretBox
from warelay.numbers import NumberFields, NumberRegistry, ensure_agent, ensure_tenant, upsert_number
from warelay.storage.models import Agent as AgentRow

BUILT: list[CountingAgent] = []


class CountingAgent:
    """Records every instance built and whether it was closed."""

    kind = "test-counting"

    def __init__(self, spec: AgentSpec, deps: AgentDeps) -> None:
        self.spec = spec
        self.closed = False
        BUILT.append(self)

    async def respond(self, turn: Turn) -> AgentReply:
        return AgentReply()

    async def aclose(self) -> None:
        self.closed = True


register_agent("test-counting")(CountingAgent)


class NoKnowledge:
    async def search(self, *, tenant_id: int, agent_id: int, query: str, limit: int = 5) -> Sequence[Passage]:
        return []


async def test_concurrent_turns_build_one_agent_and_config_changes_replace_it(engine: AsyncEngine) -> None:
    BUILT.clear()
    box = SecretBox(["p" * 32])
    tenant = await ensure_tenant(engine, "shop")
    agent_id = await ensure_agent(engine, tenant_id=tenant, name="bot", kind="test-counting")
    await upsert_number(
        engine, box, tenant_id=tenant, agent_id=agent_id, fields=NumberFields(phone_number_id="p1")
    )
    registry = NumberRegistry(engine, box)
    await registry.load()
    number = registry.by_phone_number_id("p1")
    assert number is not None
    settings = Settings()
    provider = AgentProvider(
        engine, AgentDeps(retriever=NoKnowledge(), settings=settings), settings, refresh_seconds=0
    )

    results = await asyncio.gather(*(provider.for_number(number) for _ in range(50)))
    assert len(BUILT) == 1
    assert {id(agent) for _, agent in results} == {id(BUILT[0])}

    await provider.for_number(number)  # refreshed, same configuration: same instance
    assert len(BUILT) == 1
    async with engine.begin() as conn:
        await conn.execute(
            update(AgentRow).where(AgentRow.id == agent_id).values(config={"temperature": 0.5})
        )
    spec, _ = await provider.for_number(number)
    assert spec.config["temperature"] == 0.5
    assert len(BUILT) == 2
    assert BUILT[0].closed
    await provider.aclose()
    assert BUILT[1].closed


async def test_a_removed_default_agent_is_made_again_for_unlinked_numbers(engine: AsyncEngine) -> None:
    box = SecretBox(["p" * 32])
    tenant = await ensure_tenant(engine, "shop2")
    await upsert_number(
        engine, box, tenant_id=tenant, agent_id=None, fields=NumberFields(phone_number_id="p2")
    )
    registry = NumberRegistry(engine, box)
    await registry.load()
    number = registry.by_phone_number_id("p2")
    assert number is not None
    settings = Settings(agent={"kind": "test-counting", "name": "front"})
    provider = AgentProvider(
        engine, AgentDeps(retriever=NoKnowledge(), settings=settings), settings, refresh_seconds=0
    )
    first, _ = await provider.for_number(number)
    async with engine.begin() as conn:
        await conn.execute(delete(AgentRow).where(AgentRow.id == first.id))
    again, _ = await provider.for_number(number)  # raised LookupError before the default was made again
    assert again.name == "front"
    async with engine.connect() as conn:
        rows = (await conn.execute(select(AgentRow.id).where(AgentRow.tenant_id == tenant))).all()
    assert [r.id for r in rows] == [again.id]
    await provider.aclose()
