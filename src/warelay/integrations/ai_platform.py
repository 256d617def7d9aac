"""Connecting an external AI platform over OAuth 2.0 + PKCE (seed 000): the client, its states, its tokens.

Where it sits: beside the message path, on the admin side. A tenant's admin starts the connection
(:func:`start_authorization`, behind ``GET /master-data/ai-agent/connect``): warelay keeps a random
``state`` (only its SHA-256) and a PKCE ``code_verifier`` (encrypted) in ``oauth_states`` and sends
the browser to ``{AI_BASE_URL}/integration-request`` with ``code_challenge =
BASE64URL(SHA256(code_verifier))``. The platform sends the browser back to
``{WARELAY_PUBLIC_URL}/master-data/ai-agent/complete`` (:func:`complete_authorization`), which takes
the state once (unknown, reused or older than ten minutes: refused), exchanges the code with the
verifier at ``{AI_BASE_URL}/integration-token`` and stores the token in ``ai_agent_tokens``,
encrypted. The push of events to the platform (:mod:`warelay.integrations.events`) asks
:func:`current_access_token` for the tenant's token, refreshed when it is due.
:func:`disconnect` deletes the token and revokes it at the platform (RFC 7009) when
``WARELAY_AI__REVOCATION_URL`` is set.

The PKCE and OAuth mechanics are Authlib's (``AsyncOAuth2Client`` with ``code_challenge_method``
``S256``; ``authlib.oauth2.rfc7636`` for the challenge). Tokens, codes, states and verifiers are
never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import httpx2
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from authlib.oauth2.client import OAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from warelay.config import AISettings, Settings
from warelay.crypto import SecretBox
from warelay.errors import TransientDeliveryError, WarelayError
from warelay.storage.models import AIAgentToken, OAuthState, Tenant, utcnow

__all__ = [
    "CALLBACK_PATH",
    "STATE_TTL",
    "AuthorizationError",
    "AuthorizationStart",
    "Completed",
    "Connection",
    "Disconnection",
    "NotConfiguredError",
    "callback_url",
    "code_challenge",
    "complete_authorization",
    "current_access_token",
    "disconnect",
    "get_connection",
    "new_code_verifier",
    "start_authorization",
]

log = logging.getLogger("warelay.integrations.ai_platform")

CALLBACK_PATH: Final = "/master-data/ai-agent/complete"
# Seed 000: the state expires after ten minutes.
STATE_TTL: Final = timedelta(minutes=10)
# Used and expired states are kept a day (so a reused one is told apart from an unknown one), then purged.
STATE_RETENTION: Final = timedelta(days=1)
# A token is refreshed this long before it expires (at most half its lifetime).
REFRESH_LEEWAY: Final = timedelta(seconds=60)
VERIFIER_LENGTH: Final = 64
MAX_STATE_LENGTH: Final = 512
MAX_CODE_LENGTH: Final = 4096
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_BEARER = "Bearer"
_STATE_COLUMNS = OAuthState.__table__.c
_TOKEN_COLUMNS = AIAgentToken.__table__.c


class NotConfiguredError(WarelayError):
    """The AI platform's settings are incomplete, so no tenant can connect."""

    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__("the AI platform is not configured: set " + ", ".join(missing))
        self.missing = list(missing)


class AuthorizationError(WarelayError):
    """The callback could not connect the tenant: an HTTP status, an error code and a reason for people."""

    def __init__(self, status_code: int, error: str, message: str, *, tenant: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.message = message
        self.tenant = tenant


@dataclass(frozen=True, slots=True)
class AuthorizationStart:
    """Where to send the admin's browser, and until when its state is accepted."""

    url: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Connection:
    """A tenant's connection to the AI platform as people and the API see it (no secrets)."""

    status: Literal["connected", "disconnected"]
    token_type: str | None = None
    scope: str | None = None
    expires_at: datetime | None = None
    connected_at: datetime | None = None
    refreshed_at: datetime | None = None
    refreshable: bool = False
    reason: str | None = None

    @property
    def connected(self) -> bool:
        """True when warelay holds a token it can use (now, or after a refresh)."""
        return self.status == "connected"

    def as_json(self) -> dict[str, Any]:
        """The fields of the status JSON."""

        def when(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "status": self.status,
            "token_type": self.token_type,
            "scope": self.scope,
            "expires_at": when(self.expires_at),
            "connected_at": when(self.connected_at),
            "refreshed_at": when(self.refreshed_at),
            "refreshable": self.refreshable,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Completed:
    """A finished authorization: the tenant it connected and its connection."""

    tenant_id: int
    tenant: str
    connection: Connection


@dataclass(frozen=True, slots=True)
class Disconnection:
    """What disconnecting did: whether there was a token, and whether the platform revoked it.

    ``revoked`` is None when there was nothing to revoke or no revocation endpoint is configured.
    """

    was_connected: bool
    revoked: bool | None
    revocation_error: str | None = None


@dataclass(frozen=True, slots=True)
class _Token:
    """A token response checked and normalised."""

    access_token: str
    refresh_token: str | None
    token_type: str
    scope: str | None
    expires_at: datetime | None


# ------------------------------------------------------------------------------------------- PKCE


def new_code_verifier() -> str:
    """A PKCE code verifier: 64 characters from RFC 7636's unreserved set (about 380 random bits)."""
    return str(generate_token(VERIFIER_LENGTH))


def code_challenge(verifier: str) -> str:
    """The S256 challenge of a verifier: BASE64URL(SHA256(ASCII(verifier))) without padding (RFC 7636 4.2)."""
    if not _VERIFIER.match(verifier):
        raise ValueError("a code verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636 4.1)")
    return str(create_s256_code_challenge(verifier))


def callback_url(settings: Settings) -> str:
    """The redirect URI the platform returns to: ``{public_url}/master-data/ai-agent/complete``."""
    return settings.public_url.rstrip("/") + CALLBACK_PATH


def _state_digest(state: str) -> str:
    # The state carries 256 random bits, so a plain SHA-256 is as good as a keyed hash here, and it
    # stays valid when WARELAY_SECRET_KEY is rotated.
    return hashlib.sha256(state.encode()).hexdigest()


def _client_secret(ai: AISettings) -> str | None:
    return None if ai.client_secret is None else ai.client_secret.get_secret_value()


def _http_client(ai: AISettings) -> AsyncOAuth2Client:
    """A client for one exchange: Authlib keeps the last token on it, so clients are never shared."""
    return AsyncOAuth2Client(
        client_id=ai.client_id,
        client_secret=_client_secret(ai),
        token_endpoint_auth_method=ai.client_auth_method,
        revocation_endpoint_auth_method=ai.client_auth_method,
        code_challenge_method="S256",
        timeout=ai.timeout_seconds,
    )


def _require_configured(ai: AISettings) -> tuple[str, str]:
    missing = ai.missing()
    if missing or ai.authorization_endpoint is None or ai.token_endpoint is None:
        raise NotConfiguredError(missing)
    return ai.authorization_endpoint, ai.token_endpoint


# ------------------------------------------------------------------------------- authorization


async def start_authorization(
    engine: AsyncEngine, box: SecretBox, settings: Settings, *, tenant_id: int
) -> AuthorizationStart:
    """Keep a new state and verifier for the tenant; returns the authorization URL to send the browser to."""
    authorize, _ = _require_configured(settings.ai)
    state = secrets.token_urlsafe(32)
    verifier = new_code_verifier()
    redirect_uri = callback_url(settings)
    # Building the URL needs no HTTP client: Authlib's protocol client adds response_type, client_id,
    # redirect_uri, scope, state and the S256 code_challenge computed from the verifier.
    client = OAuth2Client(
        None, client_id=settings.ai.client_id, code_challenge_method="S256", scope=settings.ai.scope
    )
    url, _ = client.create_authorization_url(
        authorize, state=state, code_verifier=verifier, redirect_uri=redirect_uri
    )
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(delete(OAuthState).where(OAuthState.created_at < now - STATE_RETENTION))
        await conn.execute(
            insert(OAuthState).values(
                state_hash=_state_digest(state),
                tenant_id=tenant_id,
                code_verifier_enc=box.encrypt(verifier),
                redirect_uri=redirect_uri,
                created_at=now,
            )
        )
    log.info("tenant %s started connecting the AI platform", tenant_id)
    return AuthorizationStart(url=str(url), expires_at=now + STATE_TTL)


_RESTART = "Start again from Master Data → AI Agent."


def _clip(value: str, limit: int = 200) -> str:
    value = " ".join(value.split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


async def complete_authorization(
    engine: AsyncEngine,
    box: SecretBox,
    settings: Settings,
    *,
    state: str | None,
    code: str | None,
    error: str | None = None,
    error_description: str | None = None,
) -> Completed:
    """Finish authorizing on the platform's redirect: check the state, exchange the code, keep the token.

    Raises :class:`AuthorizationError` (4xx for a missing, unknown, reused or expired state, a
    refusal or a refused code; 502 when the platform could not be reached or answered nonsense).
    """
    if not state:
        raise AuthorizationError(400, "missing_state", f"The link has no state parameter. {_RESTART}")
    row = None
    if len(state) <= MAX_STATE_LENGTH:
        query = (
            select(*_STATE_COLUMNS, Tenant.subdomain)
            .join(Tenant, Tenant.id == OAuthState.tenant_id)
            .where(OAuthState.state_hash == _state_digest(state))
        )
        async with engine.connect() as conn:
            row = (await conn.execute(query)).first()
    if row is None:
        raise AuthorizationError(
            400, "unknown_state", f"This link was not started by warelay (unknown state). {_RESTART}"
        )
    tenant = str(row.subdomain)
    now = utcnow()
    if row.used_at is not None:
        raise AuthorizationError(
            400, "used_state", f"This link was already used; each one works once. {_RESTART}", tenant=tenant
        )
    if now - row.created_at > STATE_TTL:
        raise AuthorizationError(
            400,
            "expired_state",
            f"This link expired: it must be completed within 10 minutes of starting. {_RESTART}",
            tenant=tenant,
        )
    async with engine.begin() as conn:
        claimed = await conn.execute(
            update(OAuthState)
            .where(OAuthState.id == row.id, OAuthState.used_at.is_(None))
            .values(used_at=now)
        )
    if claimed.rowcount != 1:
        raise AuthorizationError(
            400, "used_state", f"This link was already used; each one works once. {_RESTART}", tenant=tenant
        )
    if error:
        why = _clip(error, 80) + (f": {_clip(error_description)}" if error_description else "")
        raise AuthorizationError(
            400,
            "authorization_denied",
            f"The AI platform did not authorize the connection ({why}). {_RESTART}",
            tenant=tenant,
        )
    if not code or len(code) > MAX_CODE_LENGTH:
        raise AuthorizationError(
            400,
            "missing_code",
            f"The AI platform sent no usable authorization code. {_RESTART}",
            tenant=tenant,
        )
    token = await _exchange_code(
        settings,
        code=code,
        verifier=box.decrypt(row.code_verifier_enc),
        redirect_uri=row.redirect_uri,
        tenant=tenant,
    )
    tenant_id = int(row.tenant_id)
    replaced = await _store_token(engine, box, tenant_id=tenant_id, token=token)
    log.info("tenant %s connected the AI platform (scope %s)", tenant, token.scope)
    if replaced and settings.ai.revocation_url:
        # A reconnection replaces the old grant: the platform is told to forget it.
        await _revoke(settings.ai, settings.ai.revocation_url, replaced)
    return Completed(tenant_id=tenant_id, tenant=tenant, connection=await get_connection(engine, tenant_id))


async def _exchange_code(
    settings: Settings, *, code: str, verifier: str, redirect_uri: str, tenant: str
) -> _Token:
    ai = settings.ai
    token_url = ai.token_endpoint
    if ai.missing() or token_url is None:  # the settings changed since the flow started
        raise AuthorizationError(
            503, "not_configured", "The AI platform is not configured on this server any more.", tenant=tenant
        )
    # Seed 000's token request carries client_id in the body; with HTTP Basic authentication
    # Authlib puts it in the header only, so it is repeated in the body.
    extra = {"client_id": ai.client_id} if ai.client_auth_method == "client_secret_basic" else {}
    try:
        async with _http_client(ai) as client:
            raw = await client.fetch_token(
                token_url,
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                redirect_uri=redirect_uri,
                **extra,
            )
    except OAuthError as exc:
        refusal = _clip(str(exc.error), 80) + (f": {_clip(str(exc.description))}" if exc.description else "")
        raise AuthorizationError(
            400,
            "code_refused",
            f"The AI platform refused the authorization code ({refusal}). {_RESTART}",
            tenant=tenant,
        ) from None
    except httpx2.HTTPStatusError as exc:
        raise AuthorizationError(
            502,
            "platform_error",
            f"The AI platform's token endpoint answered HTTP {exc.response.status_code}. {_RESTART}",
            tenant=tenant,
        ) from None
    except httpx2.HTTPError as exc:
        log.warning("tenant %s: the AI platform's token endpoint was not reached: %r", tenant, exc)
        raise AuthorizationError(
            502, "platform_unreachable", f"The AI platform could not be reached. {_RESTART}", tenant=tenant
        ) from None
    except ValueError:
        raise AuthorizationError(
            502, "bad_token_response", f"The AI platform answered with no token. {_RESTART}", tenant=tenant
        ) from None
    try:
        return _parse_token(raw, default_scope=ai.scope)
    except ValueError as exc:
        raise AuthorizationError(
            502,
            "bad_token_response",
            f"The AI platform's token response is unusable: {exc}. {_RESTART}",
            tenant=tenant,
        ) from None


def _parse_token(raw: Mapping[str, Any], *, default_scope: str | None) -> _Token:
    """Check a token response (RFC 6749 5.1); ``default_scope`` when the platform left scope out."""
    access = raw.get("access_token")
    if not isinstance(access, str) or not access:
        raise ValueError("no access_token")
    token_type = raw.get("token_type") or _BEARER
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise ValueError(f"token_type {str(token_type)[:40]!r} is not Bearer")
    refresh = raw.get("refresh_token")
    if refresh is not None and (not isinstance(refresh, str) or not refresh):
        raise ValueError("refresh_token is not a string")
    scope = raw.get("scope")
    if isinstance(scope, list | tuple):
        scope = " ".join(str(s) for s in scope)
    if scope is not None and not isinstance(scope, str):
        raise ValueError("scope is not a string")
    # Authlib turned expires_in into expires_at (unix seconds).
    expires_at = raw.get("expires_at")
    if expires_at is not None and not isinstance(expires_at, int):
        raise ValueError("expires_in is not a number of seconds")
    return _Token(
        access_token=access,
        refresh_token=refresh,
        token_type=_BEARER,
        scope=scope or default_scope,
        expires_at=None if expires_at is None else datetime.fromtimestamp(expires_at, UTC),
    )


def _upsert(conn: AsyncConnection, tenant_id: int, values: dict[str, Any]) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(AIAgentToken).values(tenant_id=tenant_id, **values)
    return stmt.on_conflict_do_update(index_elements=[AIAgentToken.tenant_id], set_=values)


async def _store_token(
    engine: AsyncEngine, box: SecretBox, *, tenant_id: int, token: _Token
) -> list[tuple[str, str]]:
    """Store (or replace) the tenant's token; the tokens it replaced, as (token, RFC 7009 hint) pairs."""
    now = utcnow()
    values: dict[str, Any] = {
        "access_token_enc": box.encrypt(token.access_token),
        "refresh_token_enc": box.encrypt_optional(token.refresh_token),
        "token_type": token.token_type,
        "scope": token.scope,
        "issued_at": now,
        "expires_at": token.expires_at,
        "connected_at": now,
        "refreshed_at": None,
        "refresh_owner": None,
        "refresh_lease_until": None,
        "last_error": None,
    }
    async with engine.begin() as conn:
        previous = (
            await conn.execute(
                select(AIAgentToken.access_token_enc, AIAgentToken.refresh_token_enc).where(
                    AIAgentToken.tenant_id == tenant_id
                )
            )
        ).first()
        await conn.execute(_upsert(conn, tenant_id, values))
    if previous is None:
        return []
    return _held_tokens(box, previous.access_token_enc, previous.refresh_token_enc)


def _held_tokens(box: SecretBox, access_enc: str, refresh_enc: str | None) -> list[tuple[str, str]]:
    tokens = [(box.decrypt(refresh_enc), "refresh_token")] if refresh_enc else []
    return [*tokens, (box.decrypt(access_enc), "access_token")]


# ------------------------------------------------------------------------------------ status


def _leeway(issued_at: datetime, expires_at: datetime) -> timedelta:
    return max(timedelta(0), min(REFRESH_LEEWAY, (expires_at - issued_at) / 2))


def _refresh_due(row: Any, now: datetime) -> bool:
    if row.expires_at is None:
        return False
    return bool(now >= row.expires_at - _leeway(row.issued_at, row.expires_at))


def _expired(row: Any, now: datetime) -> bool:
    return row.expires_at is not None and bool(now >= row.expires_at)


async def _read_token(engine: AsyncEngine, tenant_id: int) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(select(*_TOKEN_COLUMNS).where(AIAgentToken.tenant_id == tenant_id))
        ).first()


async def get_connection(engine: AsyncEngine, tenant_id: int) -> Connection:
    """The tenant's connection: Connected while warelay holds a usable (or refreshable) token."""
    row = await _read_token(engine, tenant_id)
    if row is None:
        return Connection(status="disconnected", reason="not connected")
    refreshable = row.refresh_token_enc is not None
    usable = refreshable or not _expired(row, utcnow())
    reason = None
    if not usable:
        reason = row.last_error or "the access token expired and the platform issued no refresh token"
    elif row.last_error:
        reason = row.last_error
    return Connection(
        status="connected" if usable else "disconnected",
        token_type=row.token_type,
        scope=row.scope,
        expires_at=row.expires_at,
        connected_at=row.connected_at,
        refreshed_at=row.refreshed_at,
        refreshable=refreshable,
        reason=reason,
    )


# -------------------------------------------------------------------------------- disconnect


async def disconnect(
    engine: AsyncEngine, box: SecretBox, settings: Settings, *, tenant_id: int
) -> Disconnection:
    """Delete the tenant's token, then revoke it at the platform when a revocation endpoint is configured."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                delete(AIAgentToken)
                .where(AIAgentToken.tenant_id == tenant_id)
                .returning(AIAgentToken.access_token_enc, AIAgentToken.refresh_token_enc)
            )
        ).first()
    if row is None:
        return Disconnection(was_connected=False, revoked=None)
    log.info("tenant %s disconnected the AI platform", tenant_id)
    url = settings.ai.revocation_url
    if not url:
        return Disconnection(was_connected=True, revoked=None)
    problem = await _revoke(settings.ai, url, _held_tokens(box, row.access_token_enc, row.refresh_token_enc))
    return Disconnection(was_connected=True, revoked=problem is None, revocation_error=problem)


async def _revoke(ai: AISettings, url: str, tokens: Sequence[tuple[str, str]]) -> str | None:
    """Revoke each token (RFC 7009); None when the platform accepted every one, else what went wrong."""
    problems: list[str] = []
    async with _http_client(ai) as client:
        for token, hint in tokens:
            try:
                response = await client.revoke_token(url, token=token, token_type_hint=hint)
            except httpx2.HTTPError as exc:
                problems.append(f"{hint}: {type(exc).__name__}")
                continue
            if not response.is_success:
                problems.append(f"{hint}: HTTP {response.status_code}")
    if problems:
        log.warning("the AI platform did not revoke every token: %s", "; ".join(problems))
        return "the platform did not confirm the revocation (" + "; ".join(problems) + ")"
    return None


# -------------------------------------------------------------------------- the current token

# One refresh at a time per tenant: in this process an asyncio lock per (engine pool, tenant); across
# processes a lease on the token's row (refresh_owner / refresh_lease_until).
_refresh_locks: weakref.WeakKeyDictionary[Any, dict[int, asyncio.Lock]] = weakref.WeakKeyDictionary()
_WAIT_STEP_SECONDS: Final = 0.05


def _refresh_lock(engine: AsyncEngine, tenant_id: int) -> asyncio.Lock:
    locks = _refresh_locks.setdefault(engine.sync_engine.pool, {})
    return locks.setdefault(tenant_id, asyncio.Lock())


async def current_access_token(
    engine: AsyncEngine, box: SecretBox, settings: Settings, tenant_id: int
) -> str | None:
    """The tenant's access token for calling the AI platform, refreshed first when it is due.

    For callers that push events to the platform (``Authorization: Bearer <token>``). Returns None
    when the tenant is not connected: no token stored, or the token expired and cannot be refreshed
    (the platform issued no refresh token, or refused it: ``invalid_grant`` drops the refresh token
    and the tenant must connect again). A token is due a minute before it expires (at most half its
    lifetime); a due token that has not yet expired is returned as is when the refresh fails.

    Safe under concurrency: one refresh at a time per tenant, in this process (an asyncio lock) and
    across processes sharing the database (a lease on the token's row); callers that arrive during a
    refresh wait for it and get the new token. Rotated refresh tokens are stored with the access token.

    Raises :class:`~warelay.errors.TransientDeliveryError` when the token has expired and the refresh
    could not be done now (the platform unreachable, a 5xx, a non-``invalid_grant`` refusal, or
    another process holding the refresh too long): retry later.
    """
    row = await _read_token(engine, tenant_id)
    if row is None:
        return None
    if not _refresh_due(row, utcnow()):
        return box.decrypt(row.access_token_enc)
    async with _refresh_lock(engine, tenant_id):
        return await _refresh(engine, box, settings, tenant_id)


async def _refresh(engine: AsyncEngine, box: SecretBox, settings: Settings, tenant_id: int) -> str | None:
    ai = settings.ai
    lease = timedelta(seconds=ai.timeout_seconds + 5)
    owner = uuid.uuid4().hex
    give_up = time.monotonic() + 2 * lease.total_seconds()
    while True:
        row = await _read_token(engine, tenant_id)
        now = utcnow()
        if row is None:
            return None
        if not _refresh_due(row, now):
            return box.decrypt(row.access_token_enc)
        if row.refresh_token_enc is None or ai.token_endpoint is None:
            return None if _expired(row, now) else box.decrypt(row.access_token_enc)
        # The lease is taken only on the row as read (its access token ciphertext is unique), so a
        # refresh finished by another process meanwhile is not repeated with a spent refresh token.
        async with engine.begin() as conn:
            taken = await conn.execute(
                update(AIAgentToken)
                .where(
                    AIAgentToken.tenant_id == tenant_id,
                    AIAgentToken.access_token_enc == row.access_token_enc,
                    or_(AIAgentToken.refresh_lease_until.is_(None), AIAgentToken.refresh_lease_until < now),
                )
                .values(refresh_owner=owner, refresh_lease_until=now + lease)
            )
        if taken.rowcount == 1:
            break
        if time.monotonic() > give_up:
            if not _expired(row, now):
                return box.decrypt(row.access_token_enc)
            raise TransientDeliveryError("another process is refreshing the AI platform token; retry later")
        await asyncio.sleep(_WAIT_STEP_SECONDS)
    return await _refresh_leased(engine, box, ai, tenant_id=tenant_id, owner=owner, row=row)


async def _refresh_leased(
    engine: AsyncEngine, box: SecretBox, ai: AISettings, *, tenant_id: int, owner: str, row: Any
) -> str | None:
    """Refresh under this process's lease, store the result and release the lease."""
    assert ai.token_endpoint is not None  # checked by the caller
    refresh_token = box.decrypt(row.refresh_token_enc)
    current = box.decrypt(row.access_token_enc)
    mine = (AIAgentToken.tenant_id == tenant_id, AIAgentToken.refresh_owner == owner)
    released = {"refresh_owner": None, "refresh_lease_until": None}
    try:
        async with asyncio.timeout(ai.timeout_seconds), _http_client(ai) as client:
            raw = await client.refresh_token(ai.token_endpoint, refresh_token=refresh_token)
        token = _parse_token(raw, default_scope=row.scope)
    except OAuthError as exc:
        spent = exc.error == "invalid_grant"
        problem = f"the platform refused to refresh the token ({_clip(str(exc.error), 80)})"
        if spent:
            problem += "; connect again"
        log.warning("tenant %s: %s", tenant_id, problem)
        values: dict[str, Any] = {**released, "last_error": problem}
        if spent:
            values["refresh_token_enc"] = None
        async with engine.begin() as conn:
            await conn.execute(update(AIAgentToken).where(*mine).values(**values))
        if not _expired(row, utcnow()):
            return current
        if spent:
            return None
        raise TransientDeliveryError(f"tenant {tenant_id}: {problem}") from None
    except (httpx2.HTTPError, TimeoutError, ValueError) as exc:
        log.warning(
            "tenant %s: the AI platform token could not be refreshed: %s", tenant_id, type(exc).__name__
        )
        async with engine.begin() as conn:
            await conn.execute(update(AIAgentToken).where(*mine).values(**released))
        if not _expired(row, utcnow()):
            return current
        raise TransientDeliveryError(
            f"tenant {tenant_id}: the AI platform token expired and was not refreshed ({type(exc).__name__})"
        ) from None
    now = utcnow()
    async with engine.begin() as conn:
        stored = await conn.execute(
            update(AIAgentToken)
            .where(*mine)
            .values(
                **released,
                access_token_enc=box.encrypt(token.access_token),
                # No refresh_token in the answer: the old one stays valid (RFC 6749 6).
                refresh_token_enc=box.encrypt(token.refresh_token)
                if token.refresh_token
                else row.refresh_token_enc,
                token_type=token.token_type,
                scope=token.scope,
                issued_at=now,
                expires_at=token.expires_at,
                refreshed_at=now,
                last_error=None,
            )
        )
    if stored.rowcount != 1 and await _read_token(engine, tenant_id) is None:
        # Disconnected while refreshing: the new grant must not outlive the connection.
        log.info("tenant %s disconnected during a refresh; revoking the new token", tenant_id)
        if ai.revocation_url:
            fresh = [(token.access_token, "access_token")]
            if token.refresh_token:
                fresh.insert(0, (token.refresh_token, "refresh_token"))
            await _revoke(ai, ai.revocation_url, fresh)
        return None
    log.info("tenant %s: AI platform token refreshed", tenant_id)
    return token.access_token
