"""FastAPI dependencies, each declared once as an ``Annotated`` alias ending in ``Dep``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import select, update

from warelay.crypto import constant_time_equals
from warelay.runtime import Runtime
from warelay.storage.models import ApiKey, utcnow


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the platform admin, or a key of one tenant (``tenant_id``) with scopes."""

    tenant_id: int | None
    scopes: frozenset[str]
    key_id: int | None = None

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
    return principal


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
                    select(ApiKey.id, ApiKey.tenant_id, ApiKey.scopes).where(
                        ApiKey.key_hash.in_(hashes), ApiKey.revoked_at.is_(None)
                    )
                )
            ).first()
        principal = (
            None
            if row is None
            else Principal(tenant_id=row.tenant_id, scopes=frozenset(row.scopes), key_id=row.id)
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
