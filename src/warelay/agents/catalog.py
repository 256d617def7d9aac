"""The agents of each tenant, as stored: create, change, list, remove, link to numbers, seed from a file.

Where it sits: the admin side of agents (CLI ``warelay agents …``, the admin API, start-up). The
message path never calls it: :class:`warelay.agents.provider.AgentProvider` reads the rows and
builds agents. Every write validates the configuration (:class:`AgentConfig`) and the kind (one
registered with :func:`warelay.agents.base.register_agent`), so what is stored can be built.

The agents file (``WARELAY_AGENTS_FILE``) declares agents in YAML and is applied at every start,
as the ``WARELAY_WHATSAPP__*`` number is: agents it names are created or updated to what it says,
others are left alone. Its shape::

    agents:
      - tenant: acme                  # created if missing (default: WARELAY_WHATSAPP__TENANT)
        name: support
        kind: llm
        numbers: ["106540352242922"]  # phone number ids this agent answers (optional)
        knowledge: [knowledge/]       # files or folders indexed for it, relative to the file (optional)
        config:                       # any AgentConfig key
          business_name: Acme Coffee
          system_prompt_file: prompts/support.md
          tools: [buttons, state, handoff]
          reply_language: auto
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

import warelay.agents.external
import warelay.agents.knowledge
import warelay.agents.llm  # noqa: F401  # the built-in kinds register themselves on import
from warelay.agents.base import agent_kinds
from warelay.agents.config import AgentConfig, AgentConfigError
from warelay.agents.external import EXTERNAL
from warelay.crypto import SecretBox
from warelay.errors import ConfigError
from warelay.numbers import ensure_tenant
from warelay.storage.models import Agent, Number, Tenant, utcnow

__all__ = [
    "AgentRecord",
    "delete_agent",
    "get_agent",
    "link_numbers",
    "list_agents",
    "save_agent",
    "seed_agents_file",
]

log = logging.getLogger("warelay.agents")

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """A stored agent with the numbers it answers."""

    id: int
    tenant: str
    name: str
    kind: str
    config: AgentConfig
    numbers: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    # Set when this call made the agent a new signing secret (external agents): shown once.
    new_signing_secret: str | None = None


def new_signing_secret() -> str:
    """A secret for signing an external agent's events (X-Warelay-Signature)."""
    return f"whsec_{secrets.token_urlsafe(32)}"


def _check_kind(kind: str) -> None:
    if kind not in agent_kinds():
        raise AgentConfigError(f"unknown agent kind {kind!r}; known: {', '.join(agent_kinds())}")


def _check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise AgentConfigError(f"invalid agent name {name!r}: 1-100 letters, digits, '.', '_' or '-'")


async def _tenant_id(engine: AsyncEngine, subdomain: str, *, create: bool) -> int | None:
    if create:
        return await ensure_tenant(engine, subdomain)
    async with engine.connect() as conn:
        found = (await conn.execute(select(Tenant.id).where(Tenant.subdomain == subdomain))).scalar()
    return int(found) if found is not None else None


async def save_agent(
    engine: AsyncEngine,
    box: SecretBox,
    *,
    tenant: str,
    name: str,
    kind: str | None = None,
    changes: Mapping[str, Any] | None = None,
    unset: Sequence[str] = (),
    replace: bool = False,
    create: bool = True,
) -> AgentRecord:
    """Create agent ``name`` of ``tenant`` or change it: ``changes`` merged into its configuration
    (``replace``: instead of it), ``unset`` keys removed. Raises AgentConfigError on invalid input
    (nothing is written) and LookupError when ``create`` is off and the agent does not exist."""
    _check_name(name)
    if kind is not None:
        _check_kind(kind)
    tenant_id = await _tenant_id(engine, tenant, create=create)
    if tenant_id is None:
        raise LookupError(f"no tenant {tenant!r}")
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                select(Agent.__table__).where(Agent.tenant_id == tenant_id, Agent.name == name)
            )
        ).first()
        now = utcnow()
        if row is None:
            if not create:
                raise LookupError(f"no agent {name!r} in tenant {tenant!r}")
            if kind is None:
                raise AgentConfigError("a new agent needs a kind")
            config = AgentConfig.parse(changes or {}).merged({}, tuple(unset))
            config, generated = _with_signing_secret(kind, config)
            await conn.execute(
                insert(Agent).values(
                    tenant_id=tenant_id,
                    name=name,
                    kind=kind,
                    config=config.stored(box),
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            current = AgentConfig() if replace else AgentConfig.from_stored(row.config or {}, box)
            config = current.merged(changes or {}, tuple(unset))
            if replace and config.signing_secret is None and not current.signing_secret:
                # Replacing the configuration keeps the secret the platform already verifies with.
                kept = AgentConfig.from_stored(row.config or {}, box).signing_secret
                if kept is not None:
                    config = config.merged({"signing_secret": kept.get_secret_value()})
            config, generated = _with_signing_secret(kind or row.kind, config)
            await conn.execute(
                update(Agent)
                .where(Agent.id == row.id)
                .values(kind=kind or row.kind, config=config.stored(box), updated_at=now)
            )
    found = await get_agent(engine, box, tenant=tenant, name=name)
    assert found is not None  # written above
    return dataclasses.replace(found, new_signing_secret=generated)


def _with_signing_secret(kind: str, config: AgentConfig) -> tuple[AgentConfig, str | None]:
    """An external agent gets a signing secret when it has none (returned, to be shown once)."""
    if kind != EXTERNAL or config.signing_secret is not None:
        return config, None
    secret = new_signing_secret()
    return config.merged({"signing_secret": secret}), secret


async def rotate_signing_secret(engine: AsyncEngine, box: SecretBox, *, tenant: str, name: str) -> str:
    """Give an agent a new signing secret (the old one stops working at once); returns it, once."""
    secret = new_signing_secret()
    await save_agent(engine, box, tenant=tenant, name=name, changes={"signing_secret": secret}, create=False)
    return secret


async def list_agents(engine: AsyncEngine, box: SecretBox, *, tenant: str | None = None) -> list[AgentRecord]:
    """Agents (of one tenant, or all), by tenant and name."""
    query = select(*Agent.__table__.c, Tenant.subdomain).join(Tenant, Tenant.id == Agent.tenant_id)
    if tenant is not None:
        query = query.where(Tenant.subdomain == tenant)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(Tenant.subdomain, Agent.name))).all()
        linked = (
            await conn.execute(
                select(Number.agent_id, Number.phone_number_id)
                .where(Number.agent_id.in_([r.id for r in rows]))
                .order_by(Number.phone_number_id)
            )
        ).all()
    numbers: dict[int, list[str]] = {}
    for agent_id, phone_number_id in linked:
        if agent_id is not None:
            numbers.setdefault(int(agent_id), []).append(phone_number_id)
    return [
        AgentRecord(
            id=r.id,
            tenant=r.subdomain,
            name=r.name,
            kind=r.kind,
            config=AgentConfig.from_stored(r.config or {}, box),
            numbers=tuple(numbers.get(r.id, ())),
            created_at=r.created_at,
            updated_at=r.updated_at,
        )
        for r in rows
    ]


async def get_agent(engine: AsyncEngine, box: SecretBox, *, tenant: str, name: str) -> AgentRecord | None:
    """One agent, or None."""
    return next((a for a in await list_agents(engine, box, tenant=tenant) if a.name == name), None)


async def delete_agent(engine: AsyncEngine, *, tenant: str, name: str) -> bool:
    """Remove an agent and its knowledge; its numbers fall back to the tenant's default agent."""
    async with engine.begin() as conn:
        agent_id = (
            await conn.execute(
                select(Agent.id)
                .join(Tenant, Tenant.id == Agent.tenant_id)
                .where(Tenant.subdomain == tenant, Agent.name == name)
            )
        ).scalar()
        if agent_id is None:
            return False
        await conn.execute(update(Number).where(Number.agent_id == agent_id).values(agent_id=None))
        await conn.execute(delete(Agent).where(Agent.id == agent_id))
    return True


async def link_numbers(engine: AsyncEngine, *, tenant: str, name: str, numbers: Sequence[str]) -> None:
    """Have agent ``name`` answer these numbers (phone number ids of the same tenant)."""
    async with engine.begin() as conn:
        found = (
            await conn.execute(
                select(Agent.id, Agent.tenant_id)
                .join(Tenant, Tenant.id == Agent.tenant_id)
                .where(Tenant.subdomain == tenant, Agent.name == name)
            )
        ).first()
        if found is None:
            raise LookupError(f"no agent {name!r} in tenant {tenant!r}")
        owned = {
            r[0]: r[1]
            for r in (
                await conn.execute(
                    select(Number.phone_number_id, Number.tenant_id).where(
                        Number.phone_number_id.in_(numbers)
                    )
                )
            ).all()
        }
        for number in numbers:
            if number not in owned:
                raise LookupError(f"no number {number!r}")
            if owned[number] != found.tenant_id:
                raise LookupError(f"number {number!r} belongs to another tenant")
        await conn.execute(
            update(Number)
            .where(Number.phone_number_id.in_(numbers))
            .values(agent_id=found.id, updated_at=utcnow())
        )


class _FileAgent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str | None = Field(default=None, pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
    name: str = Field(pattern=NAME_PATTERN)
    kind: str
    numbers: list[str] = Field(default_factory=list)
    knowledge: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)


class _AgentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agents: list[_FileAgent]


def read_agents_file(path: Path) -> list[_FileAgent]:
    """Parse and validate an agents file (ConfigError naming the file and the problem)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read agents file {str(path)!r}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"agents file {str(path)!r} is not valid YAML: {exc}") from None
    try:
        agents = _AgentsFile.model_validate(data).agents
        for agent in agents:
            _check_kind(agent.kind)
            AgentConfig.parse(agent.config)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"agents file {str(path)!r}: {problems}") from None
    except AgentConfigError as exc:
        raise ConfigError(f"agents file {str(path)!r}: {exc}") from None
    names = [(a.tenant, a.name) for a in agents]
    if len(set(names)) != len(names):
        raise ConfigError(f"agents file {str(path)!r} names an agent twice")
    return agents


async def seed_agents_file(
    engine: AsyncEngine, box: SecretBox, path: Path, *, default_tenant: str, embeddings: Any = None
) -> int:
    """Create or update the agents a file declares, link their numbers, index their knowledge."""
    from warelay.knowledge.ingest import KnowledgeFileError, add_sources

    agents = read_agents_file(path)
    for agent in agents:
        tenant = agent.tenant or default_tenant
        record = await save_agent(
            engine, box, tenant=tenant, name=agent.name, kind=agent.kind, changes=agent.config, replace=True
        )
        if agent.numbers:
            await link_numbers(engine, tenant=tenant, name=agent.name, numbers=agent.numbers)
        tenant_id = await ensure_tenant(engine, tenant)
        try:
            await add_sources(
                engine,
                tenant_id=tenant_id,
                agent_id=record.id,
                sources=[path.parent / source for source in agent.knowledge],
                embeddings=embeddings,
                decrypt=box.decrypt,
            )
        except KnowledgeFileError as exc:
            raise ConfigError(f"agents file {str(path)!r}: knowledge {exc}") from None
    log.info("%d agent(s) configured from %s", len(agents), path)
    return len(agents)
