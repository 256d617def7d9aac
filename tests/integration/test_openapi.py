"""The OpenAPI schema at /openapi.json covers every route, the seeds' APIs included, as served."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from tests.integration.stack import run_stack

# The APIs of the seed documents (../shared/seeds), exactly as they are served.
SEED_ROUTES = {
    # 000: the AI Agent module (OAuth + PKCE connection, send-message)
    ("get", "/master-data/ai-agent/connect"),
    ("get", "/master-data/ai-agent/complete"),
    ("get", "/master-data/ai-agent"),
    ("post", "/master-data/ai-agent/disconnect"),
    ("post", "/api/v1/integration/ai/send-message"),
    # 001: the webhook routed by phone_number_id
    ("get", "/api/meta-webhook"),
    ("post", "/api/meta-webhook"),
    # 002: Conversation Sync API
    ("get", "/api/v1/whatsapp/lookup/tenant/{phoneNumber}"),
    ("get", "/api/v1/whatsapp/lookup/conversation/{phoneNumber}"),
    ("put", "/api/v1/whatsapp/agent/conversations/{sessionId}/sync"),
    ("post", "/api/v1/whatsapp/agent/conversations/{sessionId}/messages"),
    ("get", "/api/v1/whatsapp/health"),
    # 003: the handler's webhook
    ("get", "/whatsapp/webhook"),
    ("post", "/whatsapp/webhook"),
    # 004: ClariOps API
    ("get", "/webhook"),
    ("post", "/webhook"),
    ("get", "/api/health"),
    ("post", "/api/send-message"),
    ("get", "/api/session/{phoneNumber}"),
    ("post", "/api/generate-response"),
}
# warelay's own API beside them.
OWN_ROUTES = {
    ("get", "/webhooks/whatsapp"),
    ("post", "/webhooks/whatsapp"),
    ("get", "/api/v1/integration/ai/messages"),
    ("get", "/api/v1/tenants"),
    ("post", "/api/v1/tenants/{subdomain}/numbers"),
    ("post", "/api/v1/tenants/{subdomain}/agents"),
    ("post", "/api/v1/tenants/{subdomain}/keys"),
    ("get", "/api/v1/conversations/{conversation_id}/messages"),
    ("get", "/healthz"),
    ("get", "/readyz"),
}


def _routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Every route, looking into included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _routes(included.routes)
        else:
            yield route


async def test_the_schema_covers_the_seed_apis_and_every_route_the_app_serves(sqlite_url: str) -> None:
    async with run_stack(sqlite_url) as stack:
        response = await stack.http.get(f"{stack.url}/openapi.json")
        assert response.status_code == 200
        schema = response.json()
        served = {
            (method.lower(), getattr(route, "path", ""))
            for route in _routes(stack.app.routes)
            if getattr(route, "include_in_schema", False)
            for method in getattr(route, "methods", None) or ()
            if method != "HEAD"
        }
    assert len(served) >= len(SEED_ROUTES | OWN_ROUTES)
    documented = {(method, path) for path, ops in schema["paths"].items() for method in ops}
    assert SEED_ROUTES - documented == set()
    assert OWN_ROUTES - documented == set()
    assert served - documented == set()
    for method, path in SEED_ROUTES:
        assert schema["paths"][path][method].get("summary") or schema["paths"][path][method].get(
            "description"
        )
