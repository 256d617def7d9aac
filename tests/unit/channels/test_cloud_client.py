"""CloudChannel over real loopback HTTP: success, Meta errors by code, network failures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from tests.integration.stack import free_port
from warelay.channels.cloud.client import CloudChannel
from warelay.channels.cloud.errors import NetworkError
from warelay.domain import OutText, UserRef
from warelay.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError


@dataclass(frozen=True)
class Account:
    phone_number_id: str
    access_token: str | None
    api_version: str
    graph_url: str


@pytest.fixture
async def graph() -> AsyncIterator[tuple[str, list[dict[str, Any]], list[tuple[int, dict[str, Any]]]]]:
    """A fake Graph endpoint on loopback: replies are popped from a script, requests recorded."""
    seen: list[dict[str, Any]] = []
    script: list[tuple[int, dict[str, Any]]] = []

    async def messages(request: web.Request) -> web.Response:
        seen.append({"auth": request.headers.get("Authorization"), "body": await request.json()})
        status, body = script.pop(0) if script else (200, {"messages": [{"id": "wamid.OK"}]})
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v23.0/{pnid}/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}", seen, script
    await runner.cleanup()


async def test_send_returns_wamid_with_bearer_and_body(graph: Any) -> None:
    url, seen, _ = graph
    channel = CloudChannel(timeout=5)
    try:
        wamid = await channel.send(
            Account("123", "tok", "v23.0", url),
            UserRef(wa_id="15551234567"),
            OutText(body="héllo"),
            reply_to="w1",
        )
    finally:
        await channel.aclose()
    assert wamid == "wamid.OK"
    assert seen[0]["auth"] == "Bearer tok"
    assert seen[0]["body"]["text"]["body"] == "héllo"
    assert seen[0]["body"]["context"] == {"message_id": "w1"}


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (429, 130429, TransientDeliveryError),
        (500, 1, TransientDeliveryError),
        (400, 131026, PermanentDeliveryError),
    ],
)
async def test_meta_errors_become_classes_by_code(
    graph: Any, status: int, code: int, expected: type[DeliveryError]
) -> None:
    url, _, script = graph
    script.append((status, {"error": {"message": "x", "type": "OAuthException", "code": code}}))
    channel = CloudChannel(timeout=5)
    try:
        with pytest.raises(expected) as info:
            await channel.mark_read(Account("123", "tok", "v23.0", url), "wamid.IN", typing=True)
    finally:
        await channel.aclose()
    assert info.value.code == code


async def test_connection_refused_is_transient_and_not_delivered() -> None:
    channel = CloudChannel(timeout=2)
    try:
        with pytest.raises(NetworkError) as info:
            await channel.send(
                Account("1", "t", "v23.0", f"http://127.0.0.1:{free_port()}"),
                UserRef(wa_id="1"),
                OutText(body="x"),
            )
    finally:
        await channel.aclose()
    assert info.value.maybe_delivered is False


async def test_missing_token_is_permanent() -> None:
    channel = CloudChannel()
    with pytest.raises(PermanentDeliveryError):
        await channel.send(
            Account("1", None, "v23.0", "http://127.0.0.1:1"), UserRef(wa_id="1"), OutText(body="x")
        )
    await channel.aclose()
