"""Tenants, their WhatsApp numbers and their API keys, as stored: create, read, change, remove.

Where it sits: the admin side, beside :mod:`warelay.agents.catalog` (agents) — the admin API
(``api/routes/admin.py``) and the CLI (``warelay tenants|numbers|keys …``) both call it, and the
message path never does (it reads numbers through :class:`warelay.numbers.NumberRegistry`). Every
function takes the tenant it acts in, so a caller scoped to one tenant cannot reach another's rows
by naming them. Secrets (a number's app secret, access token and verify token) are encrypted with
:class:`~warelay.crypto.SecretBox` before they are written and never read back here: records say
only whether each one is set. API keys are returned in full once, by :func:`create_key`, and stored
as keyed hashes.

Writes that would collide (a subdomain or phone number id already taken) raise :class:`ConflictError`
and leave nothing behind: the database's unique constraints decide, so two callers racing for the
same name cannot both win.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from warelay.config import Settings
from warelay.crypto import SecretBox, new_api_key
from warelay.numbers import NumberFields
from warelay.storage.models import Agent, ApiKey, Number, Tenant, utcnow

__all__ = [
    "KEY_SCOPES",
    "NUMBER_STATUSES",
    "SUBDOMAIN_PATTERN",
    "ConflictError",
    "KeyRecord",
    "NumberRecord",
    "TenantRecord",
    "agent_id_by_name",
    "create_key",
    "create_number",
    "create_tenant",
    "delete_number",
    "delete_tenant",
    "env_number_id",
    "env_tenant",
    "get_key",
    "get_number",
    "get_tenant",
    "list_keys",
    "list_numbers",
    "list_tenants",
    "owned_numbers",
    "revoke_key",
    "update_key",
    "update_number",
    "update_tenant",
    "webhook_url",
]

SUBDOMAIN_PATTERN: Final = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
KEY_SCOPES: Final = ("admin", "messages:send", "conversations:read", "conversations:write")
NUMBER_STATUSES: Final = ("active", "inactive")
# The number fields an update may change (phone_number_id names the number; the channel is fixed).
NUMBER_CHANGES: Final = frozenset(
    {
        "display_phone_number",
        "display_name",
        "status",
        "agent_id",
        "app_id",
        "business_id",
        "app_secret",
        "access_token",
        "verify_token",
        "api_version",
        "graph_url",
        "throughput_mps",
    }
)
_SECRETS: Final = ("app_secret", "access_token", "verify_token")
KEY_PREFIX_LENGTH: Final = 12


class ConflictError(Exception):
    """A write that cannot be made as asked: the name is taken, or the environment owns the row."""


def webhook_url(settings: Settings) -> str:
    """The URL to paste into Meta's webhook configuration (every number shares it; routed by id)."""
    return f"{settings.public_url.rstrip('/')}/webhooks/whatsapp"


def env_number_id(settings: Settings) -> str | None:
    """The phone number id configured through ``WARELAY_WHATSAPP__*``: upserted at every start."""
    return settings.whatsapp.phone_number_id


def env_tenant(settings: Settings) -> str | None:
    """The tenant that owns the env-configured number (recreated at every start), if there is one."""
    return settings.whatsapp.tenant if settings.whatsapp.phone_number_id else None


def check_subdomain(subdomain: str) -> None:
    """ValueError unless ``subdomain`` is a DNS label in lower case (what seed 002 routes by)."""
    if not re.fullmatch(SUBDOMAIN_PATTERN, subdomain):
        raise ValueError(
            f"invalid subdomain {subdomain!r}: 1-63 lower-case letters, digits or '-', "
            "not starting or ending with '-'"
        )


# ------------------------------------------------------------------------------------------ tenants


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A tenant with how much it holds."""

    id: int
    subdomain: str
    name: str | None
    numbers: int
    agents: int
    keys: int
    created_at: datetime


def _tenant_query() -> Select[Any]:
    numbers = select(func.count()).where(Number.tenant_id == Tenant.id).scalar_subquery()
    agents = select(func.count()).where(Agent.tenant_id == Tenant.id).scalar_subquery()
    keys = (
        select(func.count())
        .where(ApiKey.tenant_id == Tenant.id, ApiKey.revoked_at.is_(None))
        .scalar_subquery()
    )
    return select(
        Tenant.id,
        Tenant.subdomain,
        Tenant.name,
        Tenant.created_at,
        numbers.label("numbers"),
        agents.label("agents"),
        keys.label("keys"),
    )


def _tenant_record(row: Any) -> TenantRecord:
    return TenantRecord(
        id=int(row.id),
        subdomain=row.subdomain,
        name=row.name,
        numbers=int(row.numbers),
        agents=int(row.agents),
        keys=int(row.keys),
        created_at=row.created_at,
    )


async def create_tenant(engine: AsyncEngine, *, subdomain: str, name: str | None = None) -> TenantRecord:
    """Create a tenant; ConflictError when the subdomain is taken."""
    check_subdomain(subdomain)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(Tenant).values(subdomain=subdomain, name=name, created_at=utcnow()))
    except IntegrityError:
        raise ConflictError(f"tenant {subdomain!r} already exists") from None
    found = await get_tenant(engine, subdomain=subdomain)
    assert found is not None  # just created
    return found


async def get_tenant(engine: AsyncEngine, *, subdomain: str) -> TenantRecord | None:
    """One tenant by subdomain, or None."""
    async with engine.connect() as conn:
        row = (await conn.execute(_tenant_query().where(Tenant.subdomain == subdomain))).first()
    return None if row is None else _tenant_record(row)


async def list_tenants(
    engine: AsyncEngine, *, after: str | None = None, limit: int | None = None, only_id: int | None = None
) -> list[TenantRecord]:
    """Tenants by subdomain, those after ``after``; ``only_id`` restricts the list to one tenant."""
    query = _tenant_query()
    if after is not None:
        query = query.where(Tenant.subdomain > after)
    if only_id is not None:
        query = query.where(Tenant.id == only_id)
    query = query.order_by(Tenant.subdomain)
    if limit is not None:
        query = query.limit(limit)
    async with engine.connect() as conn:
        return [_tenant_record(r) for r in (await conn.execute(query)).all()]


async def update_tenant(engine: AsyncEngine, *, subdomain: str, name: str | None) -> TenantRecord | None:
    """Rename a tenant (its display name; the subdomain is its identity); None when it does not exist."""
    async with engine.begin() as conn:
        result = await conn.execute(update(Tenant).where(Tenant.subdomain == subdomain).values(name=name))
    if not result.rowcount:
        return None
    return await get_tenant(engine, subdomain=subdomain)


async def delete_tenant(engine: AsyncEngine, *, subdomain: str) -> int | None:
    """Delete a tenant and everything it owns (numbers, conversations, agents, keys, knowledge).

    Returns the deleted tenant's id, or None when there was none.
    """
    async with engine.begin() as conn:
        tenant_id = (await conn.execute(select(Tenant.id).where(Tenant.subdomain == subdomain))).scalar()
        if tenant_id is None:
            return None
        await conn.execute(delete(Tenant).where(Tenant.id == tenant_id))
    return int(tenant_id)


# ------------------------------------------------------------------------------------------ numbers


@dataclass(frozen=True, slots=True)
class NumberRecord:
    """A number as an operator sees it: secrets only as set or not."""

    id: int
    tenant: str
    phone_number_id: str
    display_phone_number: str | None
    display_name: str | None
    status: str
    agent: str | None
    channel: str
    app_id: str | None
    business_id: str | None
    app_secret_set: bool
    access_token_set: bool
    verify_token_set: bool
    api_version: str
    graph_url: str
    throughput_mps: int
    created_at: datetime
    updated_at: datetime


def _number_query() -> Select[Any]:
    return (
        select(*Number.__table__.c, Tenant.subdomain, Agent.name.label("agent_name"))
        .join(Tenant, Tenant.id == Number.tenant_id)
        .outerjoin(Agent, Agent.id == Number.agent_id)
    )


def _number_record(row: Any) -> NumberRecord:
    return NumberRecord(
        id=int(row.id),
        tenant=row.subdomain,
        phone_number_id=row.phone_number_id,
        display_phone_number=row.display_phone_number,
        display_name=row.display_name,
        status=row.status,
        agent=row.agent_name,
        channel=row.channel,
        app_id=row.app_id,
        business_id=row.business_id,
        app_secret_set=row.app_secret_enc is not None,
        access_token_set=row.access_token_enc is not None,
        verify_token_set=row.verify_token_enc is not None,
        api_version=row.api_version,
        graph_url=row.graph_url,
        throughput_mps=int(row.throughput_mps),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def agent_id_by_name(engine: AsyncEngine, *, tenant_id: int, name: str) -> int | None:
    """The id of the tenant's agent ``name``, or None."""
    async with engine.connect() as conn:
        found = (
            await conn.execute(select(Agent.id).where(Agent.tenant_id == tenant_id, Agent.name == name))
        ).scalar()
    return None if found is None else int(found)


async def create_number(
    engine: AsyncEngine, box: SecretBox, *, tenant_id: int, agent_id: int | None, fields: NumberFields
) -> NumberRecord:
    """Add a number to a tenant; ConflictError when its phone number id is registered already (anywhere)."""
    now = utcnow()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(Number).values(
                    tenant_id=tenant_id,
                    agent_id=agent_id,
                    channel=fields.channel,
                    phone_number_id=fields.phone_number_id,
                    display_phone_number=fields.display_phone_number,
                    display_name=fields.display_name,
                    status=fields.status,
                    app_id=fields.app_id,
                    business_id=fields.business_id,
                    app_secret_enc=box.encrypt_optional(fields.app_secret),
                    access_token_enc=box.encrypt_optional(fields.access_token),
                    verify_token_enc=box.encrypt_optional(fields.verify_token),
                    api_version=fields.api_version,
                    graph_url=fields.graph_url.rstrip("/"),
                    throughput_mps=fields.throughput_mps,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        raise ConflictError(f"number {fields.phone_number_id!r} is registered already") from None
    found = await get_number(engine, tenant_id=tenant_id, phone_number_id=fields.phone_number_id)
    assert found is not None  # just created
    return found


async def get_number(
    engine: AsyncEngine, *, tenant_id: int | None, phone_number_id: str
) -> NumberRecord | None:
    """One number of a tenant (``tenant_id`` None: of any tenant), or None."""
    query = _number_query().where(Number.phone_number_id == phone_number_id)
    if tenant_id is not None:
        query = query.where(Number.tenant_id == tenant_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return None if row is None else _number_record(row)


async def list_numbers(
    engine: AsyncEngine, *, tenant_id: int | None, after_id: int | None = None, limit: int | None = None
) -> list[NumberRecord]:
    """A tenant's numbers (``tenant_id`` None: every tenant's) in the order they were added."""
    query = _number_query()
    if tenant_id is not None:
        query = query.where(Number.tenant_id == tenant_id)
    if after_id is not None:
        query = query.where(Number.id > after_id)
    query = query.order_by(Number.id)
    if limit is not None:
        query = query.limit(limit)
    async with engine.connect() as conn:
        return [_number_record(r) for r in (await conn.execute(query)).all()]


async def update_number(
    engine: AsyncEngine,
    box: SecretBox,
    *,
    tenant_id: int | None,
    phone_number_id: str,
    changes: Mapping[str, Any],
) -> NumberRecord | None:
    """Change some fields of a number (``changes``: names of :data:`NUMBER_CHANGES`, secrets in plain
    text, None clears a field); None when the tenant has no such number."""
    unknown = sorted(set(changes) - NUMBER_CHANGES)
    if unknown:
        raise ValueError(f"these number fields cannot be changed: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if key in _SECRETS:
            values[f"{key}_enc"] = box.encrypt_optional(value)
        elif key == "graph_url":
            values[key] = str(value).rstrip("/")
        else:
            values[key] = value
    where = [Number.phone_number_id == phone_number_id]
    if tenant_id is not None:
        where.append(Number.tenant_id == tenant_id)
    async with engine.begin() as conn:
        result = await conn.execute(update(Number).where(*where).values(**values, updated_at=utcnow()))
    if not result.rowcount:
        return None
    return await get_number(engine, tenant_id=tenant_id, phone_number_id=phone_number_id)


async def owned_numbers(engine: AsyncEngine, *, tenant_id: int, phone_number_ids: Sequence[str]) -> set[str]:
    """Those of ``phone_number_ids`` that are numbers of the tenant."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(Number.phone_number_id).where(
                Number.tenant_id == tenant_id, Number.phone_number_id.in_(list(phone_number_ids))
            )
        )
        return {r[0] for r in rows}


async def delete_number(engine: AsyncEngine, *, tenant_id: int | None, phone_number_id: str) -> bool:
    """Remove a number with its contacts, conversations and messages; False when there was none."""
    where = [Number.phone_number_id == phone_number_id]
    if tenant_id is not None:
        where.append(Number.tenant_id == tenant_id)
    async with engine.begin() as conn:
        result = await conn.execute(delete(Number).where(*where))
    return bool(result.rowcount)


# ------------------------------------------------------------------------------------------ keys


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as listed: its prefix, never the key."""

    id: int
    tenant: str | None
    name: str | None
    prefix: str
    scopes: tuple[str, ...]
    rate_limit_per_minute: int | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _key_query() -> Select[Any]:
    return select(*ApiKey.__table__.c, Tenant.subdomain).outerjoin(Tenant, Tenant.id == ApiKey.tenant_id)


def _key_record(row: Any) -> KeyRecord:
    return KeyRecord(
        id=int(row.id),
        tenant=row.subdomain,
        name=row.name,
        prefix=row.prefix,
        scopes=tuple(row.scopes),
        rate_limit_per_minute=row.rate_limit_per_minute,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _check_scopes(scopes: Sequence[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(KEY_SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(KEY_SCOPES)}")
    if not scopes:
        raise ValueError(f"a key needs at least one scope: {', '.join(KEY_SCOPES)}")
    return sorted(set(scopes))


def _check_rate_limit(value: int | None) -> None:
    if value is not None and not 0 <= value <= 1_000_000:
        raise ValueError("a rate limit is 0 (unlimited) to 1000000 requests per minute")


async def create_key(
    engine: AsyncEngine,
    box: SecretBox,
    *,
    tenant_id: int | None,
    scopes: Sequence[str],
    name: str | None = None,
    rate_limit_per_minute: int | None = None,
) -> tuple[KeyRecord, str]:
    """Create a key of a tenant (None: platform-wide); returns it with the key itself, shown only now."""
    granted = _check_scopes(scopes)
    _check_rate_limit(rate_limit_per_minute)
    key = new_api_key()
    async with engine.begin() as conn:
        result = await conn.execute(
            insert(ApiKey).values(
                tenant_id=tenant_id,
                name=name,
                prefix=key[:KEY_PREFIX_LENGTH],
                key_hash=box.hash_key(key),
                scopes=granted,
                rate_limit_per_minute=rate_limit_per_minute,
                created_at=utcnow(),
            )
        )
        key_id = int(result.inserted_primary_key[0])  # type: ignore[index]  # always present here
    found = await get_key(engine, key_id=key_id, tenant_id=tenant_id)
    assert found is not None  # just created
    return found, key


async def get_key(engine: AsyncEngine, *, key_id: int, tenant_id: int | None) -> KeyRecord | None:
    """One key of a tenant (``tenant_id`` None: of any tenant, or platform-wide), or None."""
    query = _key_query().where(ApiKey.id == key_id)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return None if row is None else _key_record(row)


async def list_keys(
    engine: AsyncEngine, *, tenant_id: int | None, after_id: int | None = None, limit: int | None = None
) -> list[KeyRecord]:
    """A tenant's keys (``tenant_id`` None: every key, platform-wide ones included), oldest first."""
    query = _key_query()
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    if after_id is not None:
        query = query.where(ApiKey.id > after_id)
    query = query.order_by(ApiKey.id)
    if limit is not None:
        query = query.limit(limit)
    async with engine.connect() as conn:
        return [_key_record(r) for r in (await conn.execute(query)).all()]


async def update_key(
    engine: AsyncEngine, *, key_id: int, tenant_id: int | None, changes: Mapping[str, Any]
) -> KeyRecord | None:
    """Rename a key or change its rate limit (``changes``: ``name``, ``rate_limit_per_minute``)."""
    unknown = sorted(set(changes) - {"name", "rate_limit_per_minute"})
    if unknown:
        raise ValueError(f"these key fields cannot be changed: {', '.join(unknown)}")
    _check_rate_limit(changes.get("rate_limit_per_minute"))
    where = [ApiKey.id == key_id]
    if tenant_id is not None:
        where.append(ApiKey.tenant_id == tenant_id)
    if changes:
        async with engine.begin() as conn:
            await conn.execute(update(ApiKey).where(*where).values(**changes))
    return await get_key(engine, key_id=key_id, tenant_id=tenant_id)


async def revoke_key(engine: AsyncEngine, *, key_id: int, tenant_id: int | None) -> KeyRecord | None:
    """Revoke a key; None when there is no such key. Revoking a revoked key changes nothing.

    Processes that checked the key in the last few seconds may accept it until their cache of
    checked keys expires (``api.deps.KeyCache``); the API drops it from its own cache at once.
    """
    where = [ApiKey.id == key_id, ApiKey.revoked_at.is_(None)]
    if tenant_id is not None:
        where.append(ApiKey.tenant_id == tenant_id)
    async with engine.begin() as conn:
        await conn.execute(update(ApiKey).where(*where).values(revoked_at=utcnow()))
    return await get_key(engine, key_id=key_id, tenant_id=tenant_id)
