"""The webhook front (``warelay.api.intake``) on every webhook path, driven over ASGI against SQLite.

The app is ``create_app``'s, its runtime started by the app's own lifespan. Requests go through
httpx's ASGI transport, or as raw ASGI messages where a test needs a ``receive`` the transport
cannot give (a disconnect, one that must never be called). The FastAPI routes, which stay as the
documented definition, are checked to answer alike on their own. Real HTTP through uvicorn is
covered end to end in ``tests/integration/test_pipeline.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.integration.stack import APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN, stack_settings
from warelay.api.routes.webhooks import WEBHOOK_PATHS, router
from warelay.app import create_app
from warelay.runtime import Runtime
from warelay.simulator.webhooks import (
    encode_payload,
    inbound_message,
    messages_payload,
    new_wamid,
    signed_headers,
    unix_timestamp,
)
from warelay.storage.models import Message as MessageRow

LIMIT = 4096
SIGNATURE = "X-Hub-Signature-256"


def delivery(wa_id: str = "15551230001") -> bytes:
    """A webhook body for one new inbound text message to the configured number, as Meta encodes it."""
    message = inbound_message(wa_id, "hello", message_id=new_wamid(wa_id), timestamp=unix_timestamp())
    payload = messages_payload(
        waba_id="102290129340398",
        phone_number_id=PHONE_NUMBER_ID,
        display_phone_number="15550783881",
        wa_id=wa_id,
        name="Ada",
        message=message,
    )
    return encode_payload(payload)


@dataclass
class Warelay:
    """A started app and an HTTP client on it."""

    app: FastAPI
    http: httpx.AsyncClient

    @property
    def runtime(self) -> Runtime:
        """The app's runtime."""
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def stored(self) -> int:
        """How many messages the database holds."""
        async with self.runtime.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(MessageRow))).scalar_one())

    async def asgi(
        self, path: str, receive: Receive, headers: dict[str, str], method: str = "POST"
    ) -> tuple[int, bytes]:
        """One request as raw ASGI messages; the response's status and body."""
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
async def warelay(sqlite_url: str) -> AsyncIterator[Warelay]:
    """warelay on a fresh SQLite database, without workers, refusing bodies over ``LIMIT`` bytes."""
    settings = stack_settings(
        sqlite_url, warelay_port=8000, sim_url="http://127.0.0.1:9", max_body_bytes=LIMIT
    )
    app = create_app(settings, run_workers=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://warelay.test") as http,
    ):
        yield Warelay(app, http)


@pytest.fixture(params=WEBHOOK_PATHS)
def path(request: pytest.FixtureRequest) -> str:
    """Each webhook path in turn."""
    value: str = request.param
    return value


async def test_verification_echoes_the_challenge_or_answers_403(warelay: Warelay, path: str) -> None:
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    ok = await warelay.http.get(path, params=params)
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert ok.headers["content-type"] == "text/plain; charset=utf-8"

    for bad_params in (params | {"hub.verify_token": "wrong"}, params | {"hub.mode": "unsubscribe"}, {}):
        bad = await warelay.http.get(path, params=bad_params)
        assert (bad.status_code, bad.text) == (403, "Forbidden")
        assert bad.headers["content-type"] == "text/plain; charset=utf-8"


async def test_signed_delivery_is_stored_once(warelay: Warelay, path: str) -> None:
    body = delivery()
    first = await warelay.http.post(path, content=body, headers=signed_headers(body, APP_SECRET))
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.json() == {"received": 1, "duplicates": 0}
    again = await warelay.http.post(path, content=body, headers=signed_headers(body, APP_SECRET))
    assert again.json() == {"received": 0, "duplicates": 1}
    assert await warelay.stored() == 1


@dataclass(frozen=True)
class Bad:
    """A refused delivery: its body, header changes (None drops one) and the expected answer."""

    body: bytes
    status: int
    detail: str
    headers: dict[str, str | None] = field(default_factory=dict)
    streamed: bool = False


VALID = delivery()
REJECTIONS = {
    "signature missing": Bad(VALID, 401, "missing X-Hub-Signature-256 header", {SIGNATURE: None}),
    "signature wrong": Bad(VALID, 403, "invalid webhook signature", {SIGNATURE: "sha256=" + "0" * 64}),
    "signed other bytes": Bad(
        VALID, 403, "invalid webhook signature", {SIGNATURE: signed_headers(b"{}", APP_SECRET)[SIGNATURE]}
    ),
    "declared too large": Bad(b" " * (LIMIT + 1), 413, f"body larger than {LIMIT} bytes"),
    "streamed too large": Bad(b" " * (LIMIT + 1024), 413, f"body larger than {LIMIT} bytes", streamed=True),
    "invalid content-length": Bad(VALID, 400, "invalid Content-Length", {"Content-Length": "12x"}),
    "not json content type": Bad(
        VALID, 415, "Content-Type must be application/json", {"Content-Type": "text/plain"}
    ),
    "invalid json": Bad(b"{not json", 400, "body is not valid JSON"),
    "invalid utf-8": Bad(b'{"entry": "\xff"}', 400, "body is not valid JSON"),
    "json not an object": Bad(b"[1, 2]", 400, "a Cloud API webhook body must be a JSON object"),
    "not a webhook": Bad(b'{"object": "x"}', 400, "a Cloud API webhook body needs an 'entry' list"),
}


async def _chunked(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 1024):
        yield body[start : start + 1024]


@pytest.mark.parametrize("bad", REJECTIONS.values(), ids=REJECTIONS.keys())
async def test_bad_delivery_is_refused_and_nothing_stored(warelay: Warelay, path: str, bad: Bad) -> None:
    headers = {k: v for k, v in (signed_headers(bad.body, APP_SECRET) | bad.headers).items() if v is not None}
    response = await warelay.http.post(
        path, content=_chunked(bad.body) if bad.streamed else bad.body, headers=headers
    )
    assert response.status_code == bad.status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": bad.detail}
    assert ("content-length" in response.request.headers) is not bad.streamed
    assert await warelay.stored() == 0


async def test_declared_size_is_refused_before_the_body_is_read(warelay: Warelay, path: str) -> None:
    async def receive() -> Message:
        raise AssertionError("the body was read")

    for method in ("POST", "GET", "PUT"):
        status, body = await warelay.asgi(path, receive, {"Content-Length": str(LIMIT + 1)}, method)
        assert (status, body) == (413, b'{"detail":"body larger than 4096 bytes"}')


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
async def test_other_methods_get_405(warelay: Warelay, path: str, method: str) -> None:
    response = await warelay.http.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    if method != "HEAD":
        assert response.json() == {"detail": "Method Not Allowed"}


async def test_client_gone_before_the_whole_body_is_a_400(warelay: Warelay, path: str) -> None:
    part: Message = {"type": "http.request", "body": VALID[:100], "more_body": True}
    messages = iter([part, {"type": "http.disconnect"}])

    async def receive() -> Message:
        return next(messages)

    status, _ = await warelay.asgi(path, receive, signed_headers(VALID, APP_SECRET))
    assert status == 400
    assert await warelay.stored() == 0


async def test_a_failure_behind_the_front_is_a_logged_500(
    warelay: Warelay, caplog: pytest.LogCaptureFixture
) -> None:
    async with warelay.runtime.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE messages RENAME TO messages_elsewhere"))
    body = delivery()
    with caplog.at_level(logging.ERROR, logger="warelay.api"):
        response = await warelay.http.post(
            "/webhooks/whatsapp", content=body, headers=signed_headers(body, APP_SECRET)
        )
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    [record] = [r for r in caplog.records if r.name == "warelay.api"]
    assert record.getMessage() == "unhandled error on POST /webhooks/whatsapp"
    assert record.exc_info is not None
    # The app keeps serving.
    assert (await warelay.http.get("/healthz")).status_code == 200


class Seen:
    """A middleware recording the paths that reach FastAPI's middleware stack."""

    def __init__(self, app: ASGIApp, paths: list[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record, pass on."""
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


async def test_other_paths_are_fastapis_and_webhooks_never_reach_it(warelay: Warelay) -> None:
    seen: list[str] = []
    warelay.app.add_middleware(Seen, paths=seen)
    body = delivery()
    for path in WEBHOOK_PATHS:
        response = await warelay.http.post(path, content=body, headers=signed_headers(body, APP_SECRET))
        assert response.status_code == 200
    assert seen == []

    assert (await warelay.http.get("/healthz")).json() == {"status": "ok"}
    assert (await warelay.http.get("/docs")).headers["content-type"].startswith("text/html")
    openapi = (await warelay.http.get("/openapi.json")).json()
    for path in WEBHOOK_PATHS:
        assert set(openapi["paths"][path]) == {"get", "post"}
    assert (await warelay.http.get("/api/v1/conversations")).status_code == 401
    too_large = await warelay.http.post("/api/v1/conversations", content=b" " * (LIMIT + 1))
    assert too_large.json() == {"detail": f"body larger than {LIMIT} bytes"}  # BodyLimit still guards the API
    slash = await warelay.http.post("/webhooks/whatsapp/", content=body)
    assert (slash.status_code, slash.headers["location"]) == (307, "http://warelay.test/webhooks/whatsapp")
    assert seen == [
        "/healthz",
        "/docs",
        "/openapi.json",
        "/api/v1/conversations",
        "/api/v1/conversations",
        "/webhooks/whatsapp/",
    ]


async def test_fastapi_routes_answer_alike_without_the_front(warelay: Warelay, path: str) -> None:
    plain = FastAPI()
    plain.include_router(router)
    plain.state.runtime = warelay.runtime
    body = delivery()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=plain), base_url="http://warelay.test"
    ) as http:
        params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"}
        assert (await http.get(path, params=params)).text == "42"
        assert (await http.get(path)).status_code == 403
        unsigned = await http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert (unsigned.status_code, unsigned.json()) == (
            401,
            {"detail": "missing X-Hub-Signature-256 header"},
        )
        ok = await http.post(path, content=body, headers=signed_headers(body, APP_SECRET))
        assert ok.json() == {"received": 1, "duplicates": 0}
    assert await warelay.stored() == 1
