"""Business numbers: the env-configured one upserted at start, all of them cached for routing.

Webhooks are routed by ``phone_number_id`` and verified against the app secret of the app the
number belongs to; the sender needs each number's token, Graph URL and throughput tier. Those are
read on every request, so :class:`NumberRegistry` keeps them in memory (decrypted) and reloads
them from the database periodically and whenever this process changes one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from warelay.config import Settings
from warelay.crypto import SecretBox
from warelay.storage.models import Agent, Number, Tenant, utcnow

log = logging.getLogger("warelay.numbers")


@dataclass(frozen=True, slots=True)
class NumberInfo:
    """A number with everything needed to receive and send for it (secrets decrypted, in memory only)."""

    id: int
    tenant_id: int
    tenant: str
    channel: str
    phone_number_id: str
    display_phone_number: str | None
    status: str
    agent_id: int | None
    app_id: str | None
    app_secret: str | None
    access_token: str | None
    verify_token: str | None
    api_version: str
    graph_url: str
    throughput_mps: int

    @property
    def active(self) -> bool:
        """Whether inbound traffic for this number is processed."""
        return self.status == "active"

    def __repr__(self) -> str:  # secrets never reach logs through a repr
        return f"NumberInfo(id={self.id}, phone_number_id={self.phone_number_id!r}, tenant={self.tenant!r})"


class NumberRegistry:
    """In-memory view of every number, refreshed from the database."""

    def __init__(self, engine: AsyncEngine, box: SecretBox, *, refresh_seconds: float = 30.0) -> None:
        self._engine = engine
        self._box = box
        self._refresh_seconds = refresh_seconds
        self._by_phone_id: dict[str, NumberInfo] = {}
        self._by_id: dict[int, NumberInfo] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """(Re)load every number from the database."""
        async with self._lock:
            stmt = select(Number, Tenant.subdomain).join(Tenant, Tenant.id == Number.tenant_id)
            async with self._engine.connect() as conn:
                rows = (await conn.execute(stmt)).all()
            by_phone: dict[str, NumberInfo] = {}
            for row in rows:
                info = NumberInfo(
                    id=row.id,
                    tenant_id=row.tenant_id,
                    tenant=row.subdomain,
                    channel=row.channel,
                    phone_number_id=row.phone_number_id,
                    display_phone_number=row.display_phone_number,
                    status=row.status,
                    agent_id=row.agent_id,
                    app_id=row.app_id,
                    app_secret=self._box.decrypt_optional(row.app_secret_enc),
                    access_token=self._box.decrypt_optional(row.access_token_enc),
                    verify_token=self._box.decrypt_optional(row.verify_token_enc),
                    api_version=row.api_version,
                    graph_url=row.graph_url,
                    throughput_mps=row.throughput_mps,
                )
                by_phone[info.phone_number_id] = info
            self._by_phone_id = by_phone
            self._by_id = {n.id: n for n in by_phone.values()}
            self._loaded_at = time.monotonic()

    async def refresh_if_stale(self) -> None:
        """Reload when the cached view is older than the refresh interval."""
        if time.monotonic() - self._loaded_at > self._refresh_seconds:
            await self.load()

    def by_phone_number_id(self, phone_number_id: str) -> NumberInfo | None:
        """The number a webhook's ``metadata.phone_number_id`` names, if warelay knows it."""
        return self._by_phone_id.get(phone_number_id)

    def by_id(self, number_id: int) -> NumberInfo | None:
        """A number by warelay's own id."""
        return self._by_id.get(number_id)

    def all(self) -> list[NumberInfo]:
        """Every known number."""
        return list(self._by_id.values())

    def app_secrets(self) -> dict[str, list[NumberInfo]]:
        """Numbers grouped by app secret (numbers without a secret are left out)."""
        grouped: dict[str, list[NumberInfo]] = {}
        for info in self._by_id.values():
            if info.app_secret:
                grouped.setdefault(info.app_secret, []).append(info)
        return grouped

    def verify_tokens(self) -> list[str]:
        """Every configured verify token."""
        return [n.verify_token for n in self._by_id.values() if n.verify_token]


async def ensure_tenant(engine: AsyncEngine, subdomain: str) -> int:
    """The id of tenant ``subdomain``, created when missing."""
    async with engine.begin() as conn:
        tenant_id = (await conn.execute(select(Tenant.id).where(Tenant.subdomain == subdomain))).scalar()
        if tenant_id is None:
            tenant_id = (
                await conn.execute(insert(Tenant).values(subdomain=subdomain, created_at=utcnow()))
            ).inserted_primary_key[0]  # type: ignore[index]  # insert() always has a primary key here
        return int(tenant_id)


async def ensure_agent(
    engine: AsyncEngine, *, tenant_id: int, name: str, kind: str, update_kind: bool = False
) -> int:
    """The id of the tenant's agent ``name``, created with ``kind`` when missing (or updated, if asked)."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                select(Agent.id, Agent.kind).where(Agent.tenant_id == tenant_id, Agent.name == name)
            )
        ).first()
        now = utcnow()
        if row is None:
            result = await conn.execute(
                insert(Agent).values(
                    tenant_id=tenant_id, name=name, kind=kind, config={}, created_at=now, updated_at=now
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]  # always present here
        if update_kind and row.kind != kind:
            await conn.execute(update(Agent).where(Agent.id == row.id).values(kind=kind, updated_at=now))
        return int(row.id)


@dataclass(frozen=True, slots=True)
class NumberFields:
    """The fields of a number as an operator enters them (secrets in plain text, encrypted on write)."""

    phone_number_id: str
    access_token: str | None = None
    app_secret: str | None = None
    verify_token: str | None = None
    display_phone_number: str | None = None
    display_name: str | None = None
    app_id: str | None = None
    business_id: str | None = None
    api_version: str = "v23.0"
    graph_url: str = "https://graph.facebook.com"
    throughput_mps: int = 80
    status: str = "active"
    channel: str = "cloud"


async def upsert_number(
    engine: AsyncEngine, box: SecretBox, *, tenant_id: int, agent_id: int | None, fields: NumberFields
) -> int:
    """Create or update the number with ``fields.phone_number_id``; returns its id."""
    now = utcnow()
    values = {
        "tenant_id": tenant_id,
        "agent_id": agent_id,
        "channel": fields.channel,
        "phone_number_id": fields.phone_number_id,
        "display_phone_number": fields.display_phone_number,
        "display_name": fields.display_name,
        "status": fields.status,
        "app_id": fields.app_id,
        "business_id": fields.business_id,
        "app_secret_enc": box.encrypt_optional(fields.app_secret),
        "access_token_enc": box.encrypt_optional(fields.access_token),
        "verify_token_enc": box.encrypt_optional(fields.verify_token),
        "api_version": fields.api_version,
        "graph_url": fields.graph_url.rstrip("/"),
        "throughput_mps": fields.throughput_mps,
        "updated_at": now,
    }
    async with engine.begin() as conn:
        existing = (
            await conn.execute(select(Number.id).where(Number.phone_number_id == fields.phone_number_id))
        ).scalar()
        if existing is None:
            result = await conn.execute(insert(Number).values(**values, created_at=now))
            return int(result.inserted_primary_key[0])  # type: ignore[index]  # always present here
        await conn.execute(update(Number).where(Number.id == existing).values(**values))
        return int(existing)


async def upsert_env_number(engine: AsyncEngine, box: SecretBox, settings: Settings) -> int | None:
    """Create or update the number configured through ``WARELAY_WHATSAPP__*`` (None when there is none)."""
    wa = settings.whatsapp
    if not wa.phone_number_id:
        return None
    tenant_id = await ensure_tenant(engine, wa.tenant)
    agent_id = await ensure_agent(
        engine, tenant_id=tenant_id, name=settings.agent.name, kind=settings.agent_kind, update_kind=True
    )
    number_id = await upsert_number(
        engine,
        box,
        tenant_id=tenant_id,
        agent_id=agent_id,
        fields=NumberFields(
            phone_number_id=wa.phone_number_id,
            access_token=wa.access_token.get_secret_value() if wa.access_token else None,
            app_secret=wa.app_secret.get_secret_value() if wa.app_secret else None,
            verify_token=wa.verify_token.get_secret_value() if wa.verify_token else None,
            display_phone_number=wa.display_phone_number,
            display_name=wa.display_name,
            app_id=wa.app_id,
            business_id=wa.business_id,
            api_version=wa.api_version,
            graph_url=wa.graph_url,
            throughput_mps=wa.throughput_mps,
        ),
    )
    log.info("number %s (tenant %s) configured from the environment", wa.phone_number_id, wa.tenant)
    return number_id
