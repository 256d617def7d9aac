"""Master Data → AI Agent (seed 000): connect a tenant to the external AI platform over OAuth 2.0 + PKCE.

- ``GET /master-data/ai-agent?tenant=SUBDOMAIN``: the connection's status, an HTML page for people
  or ``{"status": "connected" | "disconnected", ...}`` for ``Accept: application/json``.
- ``GET /master-data/ai-agent/connect?tenant=SUBDOMAIN``: starts the flow, 302 to the platform's
  ``/integration-request``.
- ``GET /master-data/ai-agent/complete?code=…&state=…``: where the platform sends the browser back;
  it needs no key (the single-use state is the credential) and answers a page saying whether the
  tenant is now connected, and why not.
- ``POST /master-data/ai-agent/disconnect?tenant=SUBDOMAIN``: deletes the token (revoked at the
  platform when a revocation endpoint is configured).

Status, connect and disconnect take an admin: a key of the tenant with the ``admin`` scope, or the
platform admin for any tenant (a tenant's own key may leave ``tenant`` out). The pages are small,
server-rendered, escaped and script-free. The protocol lives in :mod:`warelay.integrations.ai_platform`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from warelay.api.deps import Principal, PrincipalDep, RuntimeDep
from warelay.integrations.ai_platform import (
    AuthorizationError,
    Connection,
    NotConfiguredError,
    complete_authorization,
    disconnect,
    get_connection,
    start_authorization,
)
from warelay.runtime import Runtime
from warelay.storage.models import Tenant

router = APIRouter(prefix="/master-data/ai-agent", tags=["ai agent (seed 000)"])

TenantQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=63,
        description="the tenant's subdomain (a tenant's own key may leave it out)",
    ),
]

# The callback's URL carries the code and state: no page of this flow may leak it in a Referer.
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "text/html" not in accept


async def _admin_tenant(runtime: Runtime, principal: Principal, tenant: str | None) -> tuple[int, str]:
    """The tenant an admin acts on (id, subdomain); 403 without the admin scope, 404 for another tenant."""
    if not principal.allows("admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this key lacks the 'admin' scope")
    query = select(Tenant.id, Tenant.subdomain)
    if tenant is not None:
        query = query.where(Tenant.subdomain == tenant)
    elif principal.tenant_id is not None:
        query = query.where(Tenant.id == principal.tenant_id)
    else:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "name the tenant: ?tenant=SUBDOMAIN")
    async with runtime.reader.connect() as conn:
        row = (await conn.execute(query)).first()
    # Another tenant's subdomain is as unknown to a tenant's key as one that does not exist.
    if row is None or (principal.tenant_id is not None and row.id != principal.tenant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown tenant")
    return int(row.id), str(row.subdomain)


# ------------------------------------------------------------------------------------- pages

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;color:#222}"
    ".badge{display:inline-block;padding:.2rem .7rem;border-radius:1rem;color:#fff;font-weight:600}"
    ".on{background:#1a7f37}.off{background:#8c959f}.bad{background:#cf222e}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{color:#57606a}"
    "button,a.button{font:inherit;padding:.4rem 1rem;margin-right:.5rem}"
)


def _page(title: str, body: str, *, status_code: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · warelay</title><style>{_STYLE}</style></head>"
        f"<body><h1>AI Agent</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers=_NO_STORE)


def _badge(connection: Connection) -> str:
    if connection.connected:
        return '<span class="badge on">Connected</span>'
    return '<span class="badge off">Disconnected</span>'


def _details(rows: Mapping[str, Any]) -> str:
    cells = "".join(
        f"<dt>{html.escape(name)}</dt><dd>{html.escape(str(value))}</dd>"
        for name, value in rows.items()
        if value is not None
    )
    return f"<dl>{cells}</dl>"


def _connection_details(tenant: str, connection: Connection) -> str:
    return _details(
        {
            "Tenant": tenant,
            "Scope": connection.scope,
            "Token expires": connection.expires_at.isoformat() if connection.expires_at else None,
            "Refreshable": ("yes" if connection.refreshable else "no") if connection.token_type else None,
            "Connected at": connection.connected_at.isoformat() if connection.connected_at else None,
            "Refreshed at": connection.refreshed_at.isoformat() if connection.refreshed_at else None,
            "Note": connection.reason if connection.token_type else None,
        }
    )


def _actions(tenant: str, connection: Connection) -> str:
    query = html.escape("?" + urlencode({"tenant": tenant}), quote=True)
    connect = "Connect again" if connection.connected else "Connect AI Agent"
    buttons = f'<a class="button" href="/master-data/ai-agent/connect{query}">{connect}</a>'
    if connection.token_type:
        buttons += (
            f'<form method="post" action="/master-data/ai-agent/disconnect{query}" style="display:inline">'
            "<button>Disconnect</button></form>"
        )
    return f"<p>{buttons}</p>"


# ------------------------------------------------------------------------------------ routes


@router.get("", summary="The tenant's AI platform connection: Connected or Disconnected")
async def ai_agent_status(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, tenant: TenantQuery = None
) -> Response:
    """HTML for people; ``{"status": "connected" | "disconnected", ...}`` for ``Accept: application/json``."""
    tenant_id, subdomain = await _admin_tenant(runtime, principal, tenant)
    connection = await get_connection(runtime.reader, tenant_id)
    missing = runtime.settings.ai.missing()
    if _wants_json(request):
        return JSONResponse(
            {"tenant": subdomain, **connection.as_json(), "configured": not missing}, headers=_NO_STORE
        )
    body = f"<p>{_badge(connection)}</p>{_connection_details(subdomain, connection)}"
    if missing:
        body += f"<p>The AI platform is not configured: set {html.escape(', '.join(missing))}.</p>"
    else:
        body += _actions(subdomain, connection)
    return _page("AI Agent", body)


@router.get(
    "/connect",
    status_code=status.HTTP_302_FOUND,
    summary="Start connecting the AI platform (302 to its /integration-request)",
    responses={302: {"description": "to the platform's authorization page"}},
)
async def ai_agent_connect(
    runtime: RuntimeDep, principal: PrincipalDep, tenant: TenantQuery = None
) -> Response:
    """Keep a state and PKCE verifier for the tenant and send the browser to the platform to authorize."""
    tenant_id, _ = await _admin_tenant(runtime, principal, tenant)
    try:
        started = await start_authorization(
            runtime.engine, runtime.box, runtime.settings, tenant_id=tenant_id
        )
    except NotConfiguredError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return RedirectResponse(started.url, status_code=status.HTTP_302_FOUND, headers=_NO_STORE)


@router.get(
    "/complete",
    summary="The platform's redirect back (code and state): exchanges the code, stores the token",
    responses={400: {"description": "unknown, reused or expired state; refused authorization or code"}},
)
async def ai_agent_complete(
    request: Request,
    runtime: RuntimeDep,
    code: Annotated[str | None, Query(description="the authorization code")] = None,
    state: Annotated[str | None, Query(description="the state sent with the authorization request")] = None,
    error: Annotated[str | None, Query(description="set instead of code when not authorized")] = None,
    error_description: Annotated[str | None, Query(description="the platform's explanation")] = None,
) -> Response:
    """Finish the flow; no key needed (the single-use state is the credential)."""
    # Lengths are checked by complete_authorization, which answers a page rather than a 422.
    try:
        done = await complete_authorization(
            runtime.engine,
            runtime.box,
            runtime.settings,
            state=state,
            code=code,
            error=error,
            error_description=error_description,
        )
    except AuthorizationError as exc:
        if _wants_json(request):
            return JSONResponse(
                {"status": "error", "error": exc.error, "detail": exc.message, "tenant": exc.tenant},
                status_code=exc.status_code,
                headers=_NO_STORE,
            )
        body = f'<p><span class="badge bad">Not connected</span></p><p>{html.escape(exc.message)}</p>'
        if exc.tenant:
            body += _details({"Tenant": exc.tenant})
        return _page("Not connected", body, status_code=exc.status_code)
    if _wants_json(request):
        return JSONResponse({"tenant": done.tenant, **done.connection.as_json()}, headers=_NO_STORE)
    body = (
        f"<p>{_badge(done.connection)}</p>"
        "<p>warelay is connected to the AI platform; it can now receive this tenant's messages.</p>"
        f"{_connection_details(done.tenant, done.connection)}"
    )
    return _page("Connected", body)


@router.post("/disconnect", summary="Delete the tenant's AI platform token (and revoke it there)")
async def ai_agent_disconnect(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, tenant: TenantQuery = None
) -> Response:
    """Delete the stored token; the platform's revocation endpoint is called when configured."""
    tenant_id, subdomain = await _admin_tenant(runtime, principal, tenant)
    result = await disconnect(runtime.engine, runtime.box, runtime.settings, tenant_id=tenant_id)
    if _wants_json(request):
        return JSONResponse(
            {
                "tenant": subdomain,
                "status": "disconnected",
                "was_connected": result.was_connected,
                "revoked": result.revoked,
                "revocation_error": result.revocation_error,
            },
            headers=_NO_STORE,
        )
    if not result.was_connected:
        note = "There was no connection to remove."
    elif result.revoked:
        note = "The token was deleted and the AI platform revoked it."
    elif result.revocation_error:
        note = f"The token was deleted here, but {result.revocation_error}."
    else:
        note = "The token was deleted (no revocation endpoint is configured)."
    body = (
        f'<p><span class="badge off">Disconnected</span></p><p>{html.escape(note)}</p>'
        + _details({"Tenant": subdomain})
        + _actions(subdomain, Connection(status="disconnected"))
    )
    return _page("Disconnected", body)
