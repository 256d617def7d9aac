"""Seed 000's OAuth 2.0 + PKCE connection, end to end against a real authorization server on loopback.

warelay runs as a server on 127.0.0.1 (``run_stack``); the AI platform is Authlib's authorization
server on Flask in a thread (``tests.fake_ai_platform``), which requires PKCE S256 and checks the
verifier itself. The browser is played by an httpx client that follows each redirect by hand.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fake_ai_platform import CLIENT_ID, CLIENT_SECRET, FakeAIPlatform, running_platform
from tests.integration.stack import ADMIN_TOKEN, SECRET_KEY, Stack, run_stack
from warelay.config import Settings
from warelay.crypto import SecretBox, new_api_key
from warelay.errors import TransientDeliveryError
from warelay.integrations.ai_platform import (
    CALLBACK_PATH,
    AuthorizationError,
    NotConfiguredError,
    code_challenge,
    complete_authorization,
    current_access_token,
    disconnect,
    get_connection,
    start_authorization,
)
from warelay.numbers import ensure_tenant
from warelay.storage.db import create_engine
from warelay.storage.models import AIAgentToken, ApiKey, OAuthState, utcnow

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON = {"Accept": "application/json"}
STATUS = "/master-data/ai-agent"
CONNECT = "/master-data/ai-agent/connect"
DISCONNECT = "/master-data/ai-agent/disconnect"
SEED_AUTHORIZE_PARAMS = {
    "response_type",
    "client_id",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "state",
    "scope",
}


@pytest.fixture
def platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAIPlatform]:
    """The AI platform on loopback (Authlib's server side refuses plain HTTP unless told it is a test)."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    with running_platform() as running:
        yield running


def ai_config(platform: FakeAIPlatform, **extra: Any) -> dict[str, Any]:
    """WARELAY_AI__* for the platform."""
    return {
        "base_url": platform.url,
        "client_id": CLIENT_ID,
        "revocation_url": platform.revocation_url,
        **extra,
    }


def query_of(url: str) -> dict[str, str]:
    """A URL's query parameters, each present once."""
    params = parse_qs(urlsplit(url).query, strict_parsing=True, keep_blank_values=True)
    assert all(len(values) == 1 for values in params.values()), params
    return {name: values[0] for name, values in params.items()}


def sha256_hex(value: str) -> str:
    """What warelay stores of a state."""
    return hashlib.sha256(value.encode()).hexdigest()


async def consent(http: httpx.AsyncClient, authorize_url: str) -> str:
    """The browser at the platform's authorization page: the user consents; where it is sent back to."""
    response = await http.get(authorize_url)
    assert response.status_code == 302, response.text
    return response.headers["location"]


@pytest.fixture
async def stack(db_url: str, platform: FakeAIPlatform) -> AsyncIterator[Stack]:
    """warelay on loopback, configured for the platform (tenant ``default`` exists: the env number's)."""
    async with run_stack(db_url, ai=ai_config(platform)) as running:
        platform.allow_redirect(running.url + CALLBACK_PATH)
        yield running


async def start(
    stack: Stack, *, tenant: str | None = "default", headers: dict[str, str] = ADMIN
) -> httpx.Response:
    """GET the connect route."""
    params = {} if tenant is None else {"tenant": tenant}
    return await stack.http.get(f"{stack.url}{CONNECT}", params=params, headers=headers)


async def status_of(stack: Stack, tenant: str = "default") -> dict[str, Any]:
    """The status JSON."""
    response = await stack.http.get(
        f"{stack.url}{STATUS}", params={"tenant": tenant}, headers={**ADMIN, **JSON}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def state_row(engine: AsyncEngine, state: str) -> Any:
    """The stored state."""
    async with engine.connect() as conn:
        return (
            await conn.execute(
                select(*OAuthState.__table__.c).where(OAuthState.state_hash == sha256_hex(state))
            )
        ).one()


async def token_row(engine: AsyncEngine, tenant_id: int) -> Any:
    """The stored token of a tenant, or None."""
    async with engine.connect() as conn:
        query = select(*AIAgentToken.__table__.c).where(AIAgentToken.tenant_id == tenant_id)
        return (await conn.execute(query)).first()


async def make_key(stack: Stack, *, tenant_id: int, scopes: list[str]) -> str:
    """An API key of a tenant."""
    key = new_api_key()
    async with stack.runtime.engine.begin() as conn:
        await conn.execute(
            insert(ApiKey).values(
                tenant_id=tenant_id,
                prefix=key[:12],
                key_hash=stack.runtime.box.hash_key(key),
                scopes=scopes,
                created_at=utcnow(),
            )
        )
    return key


# ------------------------------------------------------------------------------ the routes


async def test_connect_complete_status_and_disconnect(stack: Stack, platform: FakeAIPlatform) -> None:
    http, runtime = stack.http, stack.runtime
    tenant_id = await ensure_tenant(runtime.engine, "default")
    assert (await status_of(stack))["status"] == "disconnected"

    started = await start(stack)
    assert started.status_code == 302
    assert started.headers["cache-control"] == "no-store"
    location = started.headers["location"]
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{platform.url}/integration-request"
    params = query_of(location)
    assert set(params) == SEED_AUTHORIZE_PARAMS
    assert params["response_type"] == "code"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == f"{stack.url}/master-data/ai-agent/complete"
    assert params["code_challenge_method"] == "S256"
    assert params["scope"] == "messaging"
    # The verifier stays in warelay, encrypted; only its S256 challenge and the state travel.
    stored = await state_row(runtime.engine, params["state"])
    verifier = runtime.box.decrypt(stored.code_verifier_enc)
    assert 43 <= len(verifier) <= 128
    assert verifier not in stored.code_verifier_enc
    assert params["code_challenge"] == code_challenge(verifier)
    assert params["code_challenge"] == (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    assert stored.tenant_id == tenant_id
    assert stored.used_at is None

    callback = await consent(http, location)
    assert callback.startswith(f"{stack.url}{CALLBACK_PATH}?")
    back = query_of(callback)
    assert back["state"] == params["state"]
    done = await http.get(callback)  # the browser, with no key: the state is the credential
    assert done.status_code == 200, done.text
    assert done.headers["content-type"].startswith("text/html")
    assert "Connected" in done.text
    assert done.headers["referrer-policy"] == "no-referrer"

    # Seed 000's token request: form-encoded, exactly its five fields.
    [exchange] = platform.token_requests()
    assert exchange.method == "POST"
    assert (exchange.content_type or "").startswith("application/x-www-form-urlencoded")
    assert exchange.form == {
        "grant_type": "authorization_code",
        "code": back["code"],
        "code_verifier": verifier,
        "redirect_uri": f"{stack.url}/master-data/ai-agent/complete",
        "client_id": CLIENT_ID,
    }
    assert exchange.authorization is None  # a public client: PKCE instead of a secret

    # The token is stored encrypted, works at the platform and is what other parts of warelay get.
    row = await token_row(runtime.engine, tenant_id)
    access = runtime.box.decrypt(row.access_token_enc)
    refresh = runtime.box.decrypt(row.refresh_token_enc)
    assert access not in row.access_token_enc
    assert refresh not in row.refresh_token_enc
    assert platform.is_active(access)
    assert platform.refresh_token_of(access) == refresh
    assert await current_access_token(runtime.engine, runtime.box, runtime.settings, tenant_id) == access
    assert (await state_row(runtime.engine, params["state"])).used_at is not None

    status = await status_of(stack)
    assert status["status"] == "connected"
    assert status["tenant"] == "default"
    assert status["scope"] == "messaging"
    assert status["token_type"] == "Bearer"
    assert status["refreshable"] is True
    assert status["configured"] is True
    assert status["expires_at"] is not None
    page = await http.get(f"{stack.url}{STATUS}", params={"tenant": "default"}, headers=ADMIN)
    assert page.headers["content-type"].startswith("text/html")
    assert "Connected" in page.text
    assert access not in page.text
    assert access not in str(status)

    # The same redirect again (a reload, or a replay): the state works once.
    again = await http.get(callback, headers=JSON)
    assert again.status_code == 400
    assert again.json()["error"] == "used_state"
    assert "already used" in again.json()["detail"]
    assert len(platform.token_requests()) == 1

    gone = await http.post(
        f"{stack.url}{DISCONNECT}", params={"tenant": "default"}, headers={**ADMIN, **JSON}
    )
    assert gone.status_code == 200
    assert gone.json() == {
        "tenant": "default",
        "status": "disconnected",
        "was_connected": True,
        "revoked": True,
        "revocation_error": None,
    }
    revoked = platform.recorded("/integration-revoke")
    assert [(r.form["token"], r.form["token_type_hint"]) for r in revoked] == [
        (refresh, "refresh_token"),
        (access, "access_token"),
    ]
    assert not platform.is_active(access)
    assert not platform.refresh_token_active(refresh)
    assert await token_row(runtime.engine, tenant_id) is None
    assert (await status_of(stack))["status"] == "disconnected"
    assert await current_access_token(runtime.engine, runtime.box, runtime.settings, tenant_id) is None
    twice = await http.post(f"{stack.url}{DISCONNECT}", params={"tenant": "default"}, headers=ADMIN)
    assert twice.status_code == 200
    assert "no connection to remove" in twice.text


async def test_unknown_missing_and_expired_states_are_refused(stack: Stack, platform: FakeAIPlatform) -> None:
    http, runtime = stack.http, stack.runtime
    tenant_id = await ensure_tenant(runtime.engine, "default")
    complete = f"{stack.url}{CALLBACK_PATH}"

    unknown = await http.get(complete, params={"code": "abc", "state": "not-one-of-ours"}, headers=JSON)
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "unknown_state"
    assert "unknown state" in unknown.json()["detail"]
    page = await http.get(complete, params={"code": "abc", "state": "x" * 5000})
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "unknown state" in page.text
    missing = await http.get(complete, params={"code": "abc"}, headers=JSON)
    assert missing.status_code == 400
    assert missing.json()["error"] == "missing_state"

    # A state older than ten minutes: refused before the code is exchanged.
    callback = await consent(http, (await start(stack)).headers["location"])
    state = query_of(callback)["state"]
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(OAuthState)
            .where(OAuthState.state_hash == sha256_hex(state))
            .values(created_at=utcnow() - timedelta(minutes=10, seconds=5))
        )
    expired = await http.get(callback, headers=JSON)
    assert expired.status_code == 400
    assert expired.json()["error"] == "expired_state"
    assert "10 minutes" in expired.json()["detail"]
    assert expired.json()["tenant"] == "default"
    assert platform.token_requests() == []
    assert await token_row(runtime.engine, tenant_id) is None
    assert (await status_of(stack))["status"] == "disconnected"

    # One just inside the ten minutes still works.
    callback = await consent(http, (await start(stack)).headers["location"])
    async with runtime.engine.begin() as conn:
        await conn.execute(
            update(OAuthState)
            .where(OAuthState.state_hash == sha256_hex(query_of(callback)["state"]))
            .values(created_at=utcnow() - timedelta(minutes=9, seconds=30))
        )
    assert (await http.get(callback)).status_code == 200
    assert (await status_of(stack))["status"] == "connected"


async def test_a_code_with_another_flows_verifier_is_refused(stack: Stack, platform: FakeAIPlatform) -> None:
    """PKCE's purpose: a code intercepted from one flow is useless with another flow's verifier."""
    http, runtime = stack.http, stack.runtime
    tenant_id = await ensure_tenant(runtime.engine, "default")
    flow_a = query_of(await consent(http, (await start(stack)).headers["location"]))
    flow_b = query_of(await consent(http, (await start(stack)).headers["location"]))

    injected = await http.get(
        f"{stack.url}{CALLBACK_PATH}", params={"code": flow_a["code"], "state": flow_b["state"]}, headers=JSON
    )
    assert injected.status_code == 400
    assert injected.json()["error"] == "code_refused"
    assert "invalid_grant" in injected.json()["detail"]
    [attempt] = platform.token_requests()
    verifier_b = runtime.box.decrypt((await state_row(runtime.engine, flow_b["state"])).code_verifier_enc)
    verifier_a = runtime.box.decrypt((await state_row(runtime.engine, flow_a["state"])).code_verifier_enc)
    assert attempt.form["code"] == flow_a["code"]
    assert attempt.form["code_verifier"] == verifier_b != verifier_a
    assert await token_row(runtime.engine, tenant_id) is None
    assert (await status_of(stack))["status"] == "disconnected"

    # With its own state (so its own verifier) the same code is accepted.
    own = await http.get(f"{stack.url}{CALLBACK_PATH}", params=flow_a, headers=JSON)
    assert own.status_code == 200, own.text
    assert own.json()["status"] == "connected"
    assert platform.token_requests()[-1].form["code_verifier"] == verifier_a


async def test_a_refusal_at_the_platform_is_shown_and_uses_the_state(
    stack: Stack, platform: FakeAIPlatform
) -> None:
    platform.deny_next = True
    callback = await consent(stack.http, (await start(stack)).headers["location"])
    assert query_of(callback)["error"] == "access_denied"
    refused = await stack.http.get(callback, headers=JSON)
    assert refused.status_code == 400
    assert refused.json()["error"] == "authorization_denied"
    assert "access_denied" in refused.json()["detail"]
    assert platform.token_requests() == []
    replay = await stack.http.get(callback, headers=JSON)
    assert replay.json()["error"] == "used_state"

    # Whatever the platform writes in error_description reaches the page escaped.
    started = query_of((await start(stack)).headers["location"])
    crafted = await stack.http.get(
        f"{stack.url}{CALLBACK_PATH}",
        params={
            "state": started["state"],
            "error": "access_denied",
            "error_description": "<script>x()</script>",
        },
    )
    assert crafted.status_code == 400
    assert "<script>" not in crafted.text
    assert "&lt;script&gt;x()&lt;/script&gt;" in crafted.text


async def test_only_admins_of_the_tenant_reach_the_admin_routes(stack: Stack) -> None:
    http, runtime = stack.http, stack.runtime
    own_id = await ensure_tenant(runtime.engine, "default")
    other_id = await ensure_tenant(runtime.engine, "other")
    reader = await make_key(stack, tenant_id=own_id, scopes=["conversations:read"])
    own_admin = await make_key(stack, tenant_id=own_id, scopes=["admin"])
    foreign_admin = await make_key(stack, tenant_id=other_id, scopes=["admin"])

    for method, path in (("GET", STATUS), ("GET", CONNECT), ("POST", DISCONNECT)):
        url = f"{stack.url}{path}"
        assert (await http.request(method, url, params={"tenant": "default"})).status_code == 401
        as_reader = await http.request(
            method, url, params={"tenant": "default"}, headers={"x-api-key": reader}
        )
        assert as_reader.status_code == 403
        foreign = await http.request(
            method, url, params={"tenant": "default"}, headers={"x-api-key": foreign_admin}
        )
        assert foreign.status_code == 404
        assert foreign.json()["detail"] == "unknown tenant"
        unknown = await http.request(method, url, params={"tenant": "nope"}, headers=ADMIN)
        assert unknown.status_code == 404
        assert (await http.request(method, url, headers=ADMIN)).status_code == 422
        assert (await http.request(method, url, params={"tenant": ""}, headers=ADMIN)).status_code == 422

    # The four routes are in the OpenAPI schema, the callback with its query parameters.
    paths = (await http.get(f"{stack.url}/openapi.json")).json()["paths"]
    assert {STATUS, CONNECT, DISCONNECT, CALLBACK_PATH} <= set(paths)
    callback_params = {p["name"] for p in paths[CALLBACK_PATH]["get"]["parameters"]}
    assert callback_params == {"code", "state", "error", "error_description"}

    # A tenant's admin key acts on its own tenant, named or not, with x-api-key (seed 000) or Bearer.
    for headers in ({"x-api-key": own_admin}, {"Authorization": f"Bearer {own_admin}"}):
        for tenant in ("default", None):
            started = await start(stack, tenant=tenant, headers=headers)
            assert started.status_code == 302
            state = query_of(started.headers["location"])["state"]
            assert (await state_row(runtime.engine, state)).tenant_id == own_id
    # The platform admin may act for any tenant.
    other = await start(stack, tenant="other")
    assert other.status_code == 302
    assert (
        await state_row(runtime.engine, query_of(other.headers["location"])["state"])
    ).tenant_id == other_id


# ---------------------------------------------------------------- tokens: refresh, concurrency


def flow_settings(db_url: str, platform: FakeAIPlatform, **ai: Any) -> Settings:
    """Settings for driving the flow through warelay's functions (no HTTP server of warelay's own)."""
    settings = Settings(
        database_url=db_url,
        secret_key=SECRET_KEY,
        public_url="http://127.0.0.1:9",
        ai=ai_config(platform, **ai),
    )
    platform.allow_redirect(settings.public_url + CALLBACK_PATH)
    return settings


async def connect(engine: AsyncEngine, box: SecretBox, settings: Settings, tenant_id: int) -> str:
    """Connect a tenant the way the routes do; its access token."""
    started = await start_authorization(engine, box, settings, tenant_id=tenant_id)
    async with httpx.AsyncClient() as browser:
        back = query_of(await consent(browser, started.url))
    done = await complete_authorization(engine, box, settings, state=back["state"], code=back["code"])
    assert done.connection.connected
    row = await token_row(engine, tenant_id)
    return box.decrypt(row.access_token_enc)


async def age_token(engine: AsyncEngine, tenant_id: int, *, expires_in: timedelta) -> None:
    """Make the stored token an hour old, expiring ``expires_in`` from now (negative: expired)."""
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            update(AIAgentToken)
            .where(AIAgentToken.tenant_id == tenant_id)
            .values(issued_at=now - timedelta(hours=1), expires_at=now + expires_in)
        )


@pytest.fixture
def box() -> SecretBox:
    """The secret box of the flow tests."""
    return SecretBox([SECRET_KEY])


async def test_a_due_token_is_refreshed_once_and_rotated(
    engine: AsyncEngine, db_url: str, box: SecretBox, platform: FakeAIPlatform
) -> None:
    settings = flow_settings(db_url, platform)
    tenant_id = await ensure_tenant(engine, "acme")
    first = await connect(engine, box, settings, tenant_id)
    first_refresh = platform.refresh_token_of(first)
    assert await current_access_token(engine, box, settings, tenant_id) == first
    assert platform.token_requests("refresh_token") == []

    await age_token(engine, tenant_id, expires_in=timedelta(seconds=30))  # within the minute's leeway
    second = await current_access_token(engine, box, settings, tenant_id)
    assert second is not None
    assert second != first
    [refresh] = platform.token_requests("refresh_token")
    assert refresh.form == {
        "grant_type": "refresh_token",
        "refresh_token": first_refresh,
        "client_id": CLIENT_ID,
    }
    assert platform.is_active(second)
    row = await token_row(engine, tenant_id)
    assert box.decrypt(row.refresh_token_enc) == platform.refresh_token_of(second) != first_refresh
    assert first_refresh is not None
    assert not platform.refresh_token_active(first_refresh)  # rotated
    assert row.refreshed_at is not None
    assert row.refresh_owner is None
    assert row.refresh_lease_until is None
    assert await current_access_token(engine, box, settings, tenant_id) == second
    assert len(platform.token_requests("refresh_token")) == 1


async def test_concurrent_callers_in_two_processes_share_one_refresh(
    engine: AsyncEngine, db_url: str, box: SecretBox, platform: FakeAIPlatform
) -> None:
    settings = flow_settings(db_url, platform)
    tenant_id = await ensure_tenant(engine, "acme")
    await connect(engine, box, settings, tenant_id)
    await age_token(engine, tenant_id, expires_in=timedelta(seconds=-1))
    platform.token_delay = 0.3  # the refresh is slow enough for every caller to arrive during it
    other_process = create_engine(db_url)  # a second pool, as another warelay process has
    try:
        tokens = await asyncio.gather(
            *(
                current_access_token(engine if i % 2 else other_process, box, settings, tenant_id)
                for i in range(20)
            )
        )
    finally:
        await other_process.dispose()
    assert len(set(tokens)) == 1
    assert tokens[0] is not None
    assert platform.is_active(tokens[0])
    assert len(platform.token_requests("refresh_token")) == 1


async def test_a_refused_refresh_disconnects_the_tenant(
    engine: AsyncEngine, db_url: str, box: SecretBox, platform: FakeAIPlatform
) -> None:
    settings = flow_settings(db_url, platform)
    tenant_id = await ensure_tenant(engine, "acme")
    await connect(engine, box, settings, tenant_id)
    platform.revoke_all()  # the grant was withdrawn at the platform
    await age_token(engine, tenant_id, expires_in=timedelta(seconds=-1))
    assert await current_access_token(engine, box, settings, tenant_id) is None
    connection = await get_connection(engine, tenant_id)
    assert connection.status == "disconnected"
    assert connection.reason is not None
    assert "invalid_grant" in connection.reason
    assert "connect again" in connection.reason
    # The spent refresh token is not tried again.
    assert await current_access_token(engine, box, settings, tenant_id) is None
    assert len(platform.token_requests("refresh_token")) == 1


async def test_without_refresh_tokens_an_expired_token_means_disconnected(
    engine: AsyncEngine, db_url: str, box: SecretBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    with running_platform(refresh_tokens=False) as platform:
        settings = flow_settings(db_url, platform)
        tenant_id = await ensure_tenant(engine, "acme")
        access = await connect(engine, box, settings, tenant_id)
        assert (await token_row(engine, tenant_id)).refresh_token_enc is None
        await age_token(engine, tenant_id, expires_in=timedelta(seconds=30))
        assert await current_access_token(engine, box, settings, tenant_id) == access  # due, not expired
        assert (await get_connection(engine, tenant_id)).connected
        await age_token(engine, tenant_id, expires_in=timedelta(seconds=-1))
        assert await current_access_token(engine, box, settings, tenant_id) is None
        connection = await get_connection(engine, tenant_id)
        assert connection.status == "disconnected"
        assert connection.reason == "the access token expired and the platform issued no refresh token"
        assert platform.token_requests("refresh_token") == []


async def test_an_unreachable_platform_keeps_a_valid_token_and_fails_an_expired_one_transiently(
    engine: AsyncEngine, db_url: str, box: SecretBox, platform: FakeAIPlatform
) -> None:
    settings = flow_settings(db_url, platform)
    tenant_id = await ensure_tenant(engine, "acme")
    first = await connect(engine, box, settings, tenant_id)

    await age_token(engine, tenant_id, expires_in=timedelta(seconds=30))
    platform.fail_token_requests = 1
    assert await current_access_token(engine, box, settings, tenant_id) == first
    await age_token(engine, tenant_id, expires_in=timedelta(seconds=-1))
    platform.fail_token_requests = 1
    with pytest.raises(TransientDeliveryError, match="not refreshed"):
        await current_access_token(engine, box, settings, tenant_id)
    row = await token_row(engine, tenant_id)
    assert row.refresh_owner is None  # the lease was given back
    assert (await get_connection(engine, tenant_id)).connected  # still refreshable

    refreshed = await current_access_token(engine, box, settings, tenant_id)
    assert refreshed is not None
    assert refreshed != first
    assert platform.is_active(refreshed)
    assert len(platform.token_requests("refresh_token")) == 3


async def test_disconnecting_during_a_refresh_leaves_nothing_behind(
    engine: AsyncEngine, db_url: str, box: SecretBox, platform: FakeAIPlatform
) -> None:
    settings = flow_settings(db_url, platform)
    tenant_id = await ensure_tenant(engine, "acme")
    await connect(engine, box, settings, tenant_id)
    await age_token(engine, tenant_id, expires_in=timedelta(seconds=-1))
    platform.token_delay = 0.5
    platform.token_request_arrived.clear()  # set by the code exchange
    refreshing = asyncio.create_task(current_access_token(engine, box, settings, tenant_id))
    assert await asyncio.to_thread(platform.token_request_arrived.wait, 10)
    result = await disconnect(engine, box, settings, tenant_id=tenant_id)
    assert result.was_connected
    assert await refreshing is None
    assert await token_row(engine, tenant_id) is None
    # The token issued by the refresh that lost the race was revoked too.
    assert not any(platform.is_active(token) for token in list(platform.tokens))


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
async def test_a_confidential_client_authenticates_at_the_token_endpoint(
    engine: AsyncEngine, db_url: str, box: SecretBox, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    with running_platform(client_secret=CLIENT_SECRET, auth_method=method) as platform:
        settings = flow_settings(
            db_url, platform, client_secret=CLIENT_SECRET, token_endpoint_auth_method=method
        )
        tenant_id = await ensure_tenant(engine, "acme")
        access = await connect(engine, box, settings, tenant_id)
        assert platform.is_active(access)
        [exchange] = platform.token_requests()
        assert exchange.form["client_id"] == CLIENT_ID  # in the body, as seed 000 shows, either way
        if method == "client_secret_post":
            assert exchange.form["client_secret"] == CLIENT_SECRET
            assert exchange.authorization is None
        else:
            assert "client_secret" not in exchange.form
            expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            assert exchange.authorization == f"Basic {expected}"


async def test_nothing_starts_without_the_platform_settings(
    engine: AsyncEngine, db_url: str, box: SecretBox
) -> None:
    settings = Settings(database_url=db_url, secret_key=SECRET_KEY, ai={"base_url": "https://p.example"})
    tenant_id = await ensure_tenant(engine, "acme")
    with pytest.raises(NotConfiguredError, match="AI_CLIENT_ID"):
        await start_authorization(engine, box, settings, tenant_id=tenant_id)
    async with engine.connect() as conn:
        assert (await conn.execute(select(OAuthState.id))).first() is None


async def test_a_callback_after_the_platform_settings_were_removed_is_refused(
    engine: AsyncEngine, db_url: str, box: SecretBox, platform: FakeAIPlatform
) -> None:
    settings = flow_settings(db_url, platform)
    tenant_id = await ensure_tenant(engine, "acme")
    started = await start_authorization(engine, box, settings, tenant_id=tenant_id)
    async with httpx.AsyncClient() as browser:
        back = query_of(await consent(browser, started.url))
    unconfigured = Settings(database_url=db_url, secret_key=SECRET_KEY, public_url=settings.public_url)
    with pytest.raises(AuthorizationError) as refused:
        await complete_authorization(engine, box, unconfigured, state=back["state"], code=back["code"])
    assert refused.value.status_code == 503
    assert refused.value.error == "not_configured"
    assert platform.token_requests() == []
    assert await token_row(engine, tenant_id) is None
