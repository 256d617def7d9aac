"""FastAPI dependencies, each declared once as an ``Annotated`` alias ending in ``Dep``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select, update

from warelay.api.ratelimit import count_request, effective_limit
from warelay.crypto import constant_time_equals
from warelay.runtime import Runtime
from warelay.storage.models import ApiKey, utcnow


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the platform admin, or a key of one tenant (``tenant_id``) with scopes."""

    tenant_id: int | None
    scopes: frozenset[str]
    key_id: int | None = None
    # The key's own requests per minute (None: WARELAY_API__RATE_LIMIT_PER_MINUTE, 0: unlimited).
    rate_limit_per_minute: int | None = None

    @property
    def platform_admin(self) -> bool:
        """True for the admin token and platform-wide admin keys."""
        return self.tenant_id is None and "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        """Whether the caller holds ``scope`` (``admin`` holds every scope)."""
        return "admin" in self.scopes or scope in self.scopes


def get_runtime(request: Request) -> Runtime:
    """The process's runtime, set up by the app's lifespan."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

_KEY_CACHE_SECONDS = 10.0
_LAST_USED_EVERY = 60.0


class KeyCache:
    """Recently checked API keys, so a busy client does not cost a query per request."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[float, Principal | None]] = {}
        self.last_used_written: dict[int, float] = {}

    def forget(self, *, key_id: int | None = None, tenant_id: int | None = None) -> None:
        """Drop cached keys (one key, or a tenant's) after they were revoked, changed or deleted."""
        self.entries = {
            digest: entry
            for digest, entry in self.entries.items()
            if entry[1] is None
            or not (
                (key_id is not None and entry[1].key_id == key_id)
                or (tenant_id is not None and entry[1].tenant_id == tenant_id)
            )
        }


def _bearer_or_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.headers.get("x-api-key") or None


async def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    """Authenticate the caller by ``Authorization: Bearer`` or ``x-api-key``."""
    token = _bearer_or_key(request)
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing API key", headers={"WWW-Authenticate": "Bearer"}
        )
    admin = runtime.settings.admin_token
    if admin is not None and constant_time_equals(admin.get_secret_value(), token):
        return Principal(tenant_id=None, scopes=frozenset({"admin"}))
    principal = await _lookup_key(request, runtime, token)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid API key", headers={"WWW-Authenticate": "Bearer"}
        )
    await _check_rate_limit(runtime, principal)
    return principal


async def _check_rate_limit(runtime: Runtime, principal: Principal) -> None:
    """Count the request against the key's limit (in the database); 429 with Retry-After when over."""
    limit = effective_limit(principal.rate_limit_per_minute, runtime.settings.api.rate_limit_per_minute)
    if principal.key_id is None or limit == 0:
        return
    decision = await count_request(runtime.db, key_id=principal.key_id, limit=limit)
    if not decision.allowed:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit exceeded: this API key may make {limit} requests per minute; "
            f"retry in {decision.retry_after} s",
            headers={"Retry-After": str(decision.retry_after)},
        )


async def _lookup_key(request: Request, runtime: Runtime, token: str) -> Principal | None:
    cache: KeyCache = request.app.state.key_cache
    hashes = runtime.box.key_hashes(token)
    now = time.monotonic()
    cached = cache.entries.get(hashes[0])
    if cached is not None and now - cached[0] < _KEY_CACHE_SECONDS:
        principal = cached[1]
    else:
        async with runtime.reader.connect() as conn:
            row = (
                await conn.execute(
                    select(ApiKey.id, ApiKey.tenant_id, ApiKey.scopes, ApiKey.rate_limit_per_minute).where(
                        ApiKey.key_hash.in_(hashes), ApiKey.revoked_at.is_(None)
                    )
                )
            ).first()
        principal = (
            None
            if row is None
            else Principal(
                tenant_id=row.tenant_id,
                scopes=frozenset(row.scopes),
                key_id=row.id,
                rate_limit_per_minute=row.rate_limit_per_minute,
            )
        )
        cache.entries[hashes[0]] = (now, principal)
    if principal is not None and principal.key_id is not None:
        last = cache.last_used_written.get(principal.key_id, 0.0)
        if now - last > _LAST_USED_EVERY:
            cache.last_used_written[principal.key_id] = now
            async with runtime.engine.begin() as conn:
                await conn.execute(
                    update(ApiKey).where(ApiKey.id == principal.key_id).values(last_used_at=utcnow())
                )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_conversations_read(principal: PrincipalDep) -> Principal:
    """Callers allowed to read conversations, messages and failures."""
    if not principal.allows("conversations:read"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this key lacks the 'conversations:read' scope")
    return principal


ReaderDep = Annotated[Principal, Depends(require_conversations_read)]
