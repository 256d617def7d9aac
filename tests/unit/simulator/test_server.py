"""The simulator's Graph API, statuses, faults, media and inbound webhooks, driven over ASGI.

warelay's webhook endpoint is faked at the transport (``httpx.MockTransport``): it verifies every
signature over the raw bytes, exactly as warelay must, and records what it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from warelay.simulator.server import (
    Fault,
    Simulator,
    SimulatorConfig,
    create_simulator_app,
    run_simulator,
)

SECRET = "app-secret-1"
TOKEN = "token-1"
WEBHOOK = "http://warelay.test/webhooks/whatsapp"
NUMBER = "106540352242922"
USER = "15551234567"
MESSAGES = f"/v23.0/{NUMBER}/messages"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class FakeWarelay:
    """warelay's webhook route at the transport: checks X-Hub-Signature-256, answers as scripted."""

    secrets: dict[str, str]
    answers: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    bad_signatures: int = 0
    attempts: int = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        body = request.content
        secret = self.secrets[request.url.path]
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Hub-Signature-256", ""), expected):
            self.bad_signatures += 1
            return httpx.Response(403)
        if self.answers:
            status = self.answers.pop(0)
            if status != 200:
                return httpx.Response(status)
        self.raw.append(body)
        self.received.append(json.loads(body))
        return httpx.Response(200, text="ok")

    def values(self) -> list[dict[str, Any]]:
        return [change["value"] for p in self.received for e in p["entry"] for change in e["changes"]]

    @property
    def statuses(self) -> list[dict[str, Any]]:
        return [s for value in self.values() for s in value.get("statuses", [])]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [m for value in self.values() for m in value.get("messages", [])]

    @property
    def status_posts(self) -> list[dict[str, Any]]:
        return [value for value in self.values() if "statuses" in value]


@dataclass
class Env:
    sim: Simulator
    graph: httpx.AsyncClient
    fake: FakeWarelay

    async def send(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.graph.post(MESSAGES, json=body, headers=AUTH if headers is None else headers)


def text_to(to: str = USER, body: str = "Hello") -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}}


@contextlib.asynccontextmanager
async def environment(**overrides: Any) -> AsyncIterator[Env]:
    fake = FakeWarelay(secrets={"/webhooks/whatsapp": SECRET})
    settings: dict[str, Any] = {
        "webhook_url": WEBHOOK,
        "app_secret": SECRET,
        "access_token": TOKEN,
        "base_url": "http://sim.test",
        "status_batch_window": 0.05,
        "webhook_retry_base": 0.01,
        "webhook_max_attempts": 3,
    }
    settings.update(overrides)
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake.handler))
    sim = Simulator(SimulatorConfig(**settings), http=http)
    await sim.start()
    graph = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_simulator_app(sim)), base_url="http://sim.test"
    )
    try:
        yield Env(sim, graph, fake)
    finally:
        await graph.aclose()
        await sim.stop()
        await http.aclose()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with environment() as value:
        yield value


# ------------------------------------------------------------------------------------------ sending


async def test_send_is_accepted_and_recorded(env: Env) -> None:
    response = await env.send(text_to("+1 555 123 4567", "Hi *there*"))

    assert response.status_code == 200
    data = response.json()
    assert data["messaging_product"] == "whatsapp"
    assert data["contacts"] == [{"input": "+1 555 123 4567", "wa_id": USER}]
    wamid = data["messages"][0]["id"]
    assert wamid.startswith("wamid.")
    [sent] = env.sim.messages_to(f"+{USER}")
    assert (sent.wamid, sent.number_id, sent.text, sent.type) == (wamid, NUMBER, "Hi *there*", "text")
    assert sent.body == text_to("+1 555 123 4567", "Hi *there*")
    assert env.sim.rejected == []


async def test_template_send_reports_message_status(env: Env) -> None:
    body = {
        "messaging_product": "whatsapp",
        "to": USER,
        "type": "template",
        "template": {"name": "hello_world", "language": {"code": "en_US"}},
    }
    response = await env.send(body)
    assert response.json()["messages"][0]["message_status"] == "accepted"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "An access token is required to request this resource."),
        ({"Authorization": "Bearer wrong"}, "Invalid OAuth access token - Cannot parse access token"),
        ({"Authorization": f"Basic {TOKEN}"}, "An access token is required to request this resource."),
    ],
)
async def test_missing_or_wrong_bearer_is_401_code_190(
    env: Env, headers: dict[str, str], message: str
) -> None:
    response = await env.send(text_to(), headers=headers)

    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["type"], error["message"]) == (190, "OAuthException", message)
    assert response.headers["WWW-Authenticate"].startswith('OAuth "Facebook Platform" "invalid_token"')
    assert env.sim.sent == []


async def test_token_query_parameter_is_accepted(env: Env) -> None:
    response = await env.graph.post(f"{MESSAGES}?access_token={TOKEN}", json=text_to())
    assert response.status_code == 200


async def test_number_the_token_does_not_own_is_graph_method_error(env: Env) -> None:
    response = await env.graph.post("/v23.0/999/messages", json=text_to(), headers=AUTH)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["type"], error["error_subcode"]) == (100, "GraphMethodException", 33)
    assert "Object with ID '999' does not exist" in error["message"]


async def test_invalid_request_gets_metas_error_and_is_recorded(env: Env) -> None:
    body = text_to(body="x" * 4097)
    response = await env.send(body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 131009
    assert error["message"] == "(#131009) Parameter value is not valid"
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert "4096" in error["error_data"]["details"]
    [rejected] = env.sim.rejected
    assert (rejected.body, rejected.code, rejected.number_id) == (body, 131009, NUMBER)
    assert env.sim.sent == []


async def test_body_that_is_not_json_is_rejected_with_code_100(env: Env) -> None:
    response = await env.graph.post(MESSAGES, content=b"{not json", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 100
    assert env.sim.rejected[0].body == "{not json"


async def test_unknown_version_segment_is_refused(env: Env) -> None:
    response = await env.graph.post(f"/latest/{NUMBER}/messages", json=text_to(), headers=AUTH)
    assert response.status_code == 400
    assert env.sim.sent == []


async def test_mark_read_and_typing_are_recorded_not_sent(env: Env) -> None:
    wamid = await env.sim.user_sends(USER, "hi")
    body = {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": wamid,
        "typing_indicator": {"type": "text"},
    }
    response = await env.send(body)

    assert response.json() == {"success": True}
    [read] = env.sim.reads
    assert (read.message_id, read.typing, read.number_id) == (wamid, True, NUMBER)
    assert env.sim.sent == []
    chat = env.sim.chat_view(USER)
    assert chat["typing"] is True
    assert chat["messages"][0]["status"] == "read"
    # The business replying ends the typing indicator (M-TYP).
    await env.send(text_to())
    assert env.sim.chat_view(USER)["typing"] is False


# ----------------------------------------------------------------------------------------- statuses


async def test_statuses_are_signed_and_batched_into_one_webhook(env: Env) -> None:
    ids = []
    for n in range(3):
        response = await env.send({**text_to(body=f"m{n}"), "biz_opaque_callback_data": f"track-{n}"})
        ids.append(response.json()["messages"][0]["id"])

    await env.sim.wait_for(lambda: len(env.fake.statuses) == 9)

    assert env.fake.bad_signatures == 0
    [post] = env.fake.status_posts  # all nine within the batch window: one POST
    assert post["metadata"] == {"display_phone_number": "15550783881", "phone_number_id": NUMBER}
    assert env.fake.received[0]["entry"][0]["id"] == "102290129340398"
    for n, wamid in enumerate(ids):
        mine = [s for s in post["statuses"] if s["id"] == wamid]
        assert [s["status"] for s in mine] == ["sent", "delivered", "read"]
        assert all(s["recipient_id"] == USER and s["timestamp"].isdigit() for s in mine)
        assert all(s["biz_opaque_callback_data"] == f"track-{n}" for s in mine)
        assert mine[0]["pricing"]["category"] == "service"
        assert "pricing" not in mine[2]
    assert env.sim.statuses_delivered == 9
    assert [m["status"] for m in env.sim.chat_view(USER)["messages"]] == ["read"] * 3


async def test_status_body_escapes_non_ascii_like_meta(env: Env) -> None:
    await env.send({**text_to(), "biz_opaque_callback_data": "pedido-café"})
    await env.sim.wait_for(lambda: len(env.fake.statuses) == 3)
    assert b"pedido-caf\\u00e9" in env.fake.raw[0]
    assert env.fake.raw[0].isascii()


async def test_statuses_follow_the_delay_one_post_each() -> None:
    async with environment(status_delay=0.05, status_batch_window=0.005) as env:
        start = time.monotonic()
        await env.send(text_to())
        await env.sim.wait_for(lambda: len(env.fake.statuses) == 3)
        assert time.monotonic() - start >= 0.14
        assert [[s["status"] for s in p["statuses"]] for p in env.fake.status_posts] == [
            ["sent"],
            ["delivered"],
            ["read"],
        ]


async def test_no_read_status_without_read_receipts() -> None:
    async with environment(read_receipts=False) as env:
        await env.send(text_to())
        await env.sim.wait_for(lambda: len(env.fake.statuses) == 2)
        await asyncio.sleep(0.1)
        assert [s["status"] for s in env.fake.statuses] == ["sent", "delivered"]


async def test_no_statuses_when_disabled() -> None:
    async with environment(send_statuses=False) as env:
        await env.send(text_to())
        await asyncio.sleep(0.1)
        assert env.fake.received == []
        assert env.sim.pending_statuses == 0


async def test_status_webhook_is_retried_until_warelay_answers_200(env: Env) -> None:
    env.fake.answers = [500, 503]
    await env.send(text_to())

    await env.sim.wait_for(lambda: env.sim.statuses_delivered == 3)
    assert env.fake.attempts == 3
    assert len(env.fake.status_posts) == 1
    assert env.sim.webhook_failures == []


async def test_status_webhook_gives_up_after_bounded_retries(env: Env) -> None:
    env.fake.answers = [500] * 10
    await env.send(text_to())

    await env.sim.wait_for(lambda: len(env.sim.webhook_failures) == 1)
    [failure] = env.sim.webhook_failures
    assert (failure.kind, failure.status, failure.url) == ("statuses", 500, WEBHOOK)
    assert env.fake.attempts == 3  # webhook_max_attempts


async def test_unfetchable_media_link_fails_later_with_131053(env: Env) -> None:
    body = {"messaging_product": "whatsapp", "to": USER, "type": "image", "image": {"link": "<image-url>"}}
    response = await env.send(body)
    assert response.status_code == 200

    await env.sim.wait_for(lambda: len(env.fake.statuses) == 1)
    [status] = env.fake.statuses
    assert status["status"] == "failed"
    assert status["errors"][0]["code"] == 131053


# ------------------------------------------------------------------------------------------- faults


async def test_fail_next_answers_429_then_recovers(env: Env) -> None:
    env.sim.faults.fail_next(2, 429, 130429)

    first = await env.send(text_to())
    second = await env.send(text_to())
    third = await env.send(text_to())

    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    error = first.json()["error"]
    assert (error["code"], error["message"]) == (130429, "(#130429) Rate limit hit")
    assert len(env.sim.sent) == 1
    assert env.sim.faults.injected == 2


async def test_faults_spare_mark_as_read(env: Env) -> None:
    env.sim.faults.fail_next(1, 429, 130429)
    read = await env.send({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"})
    send = await env.send(text_to())
    assert (read.status_code, send.status_code) == (200, 429)


async def test_status_fault_waits_for_a_valid_request(env: Env) -> None:
    env.sim.faults.fail_next(1, 400, 131026, on_status=True)
    await env.send(text_to(body=""))
    assert env.sim.faults.queued == 1
    env.sim.faults.clear()
    env.sim.faults.set_random(1.0, [Fault(400, 131026, on_status=True)])
    await env.send(text_to(body=""))
    assert env.sim.faults.queued == 0  # a random fault is not turned into a queued one


async def test_faults_over_http(env: Env) -> None:
    plan = {"fail_next": [{"count": 1, "http_status": 500, "code": 1}, {"http_status": 400, "code": 131056}]}
    response = await env.graph.post("/_sim/faults", json=plan)
    assert [f["code"] for f in response.json()["queued"]] == [1, 131056]

    server_error = await env.send(text_to())
    pair_rate = await env.send(text_to())
    assert (server_error.status_code, server_error.json()["error"]["code"]) == (500, 1)
    assert (pair_rate.status_code, pair_rate.json()["error"]["code"]) == (400, 131056)
    assert "pair rate limit" in pair_rate.json()["error"]["message"]

    await env.graph.post("/_sim/faults", json={"fail_next": {"count": 5, "http_status": 500, "code": 1}})
    cleared = await env.graph.delete("/_sim/faults")
    assert cleared.json()["queued"] == []
    assert (await env.send(text_to())).status_code == 200

    bad = await env.graph.post("/_sim/faults", json={"fail_next": {"http_status": 200, "code": 1}})
    assert bad.status_code == 400


async def test_latency_is_added_to_every_call(env: Env) -> None:
    await env.graph.post("/_sim/faults", json={"latency": 0.15})
    start = time.monotonic()
    response = await env.send(text_to())
    assert response.status_code == 200
    assert time.monotonic() - start >= 0.15
    assert (await env.graph.get("/_sim/faults")).json()["latency"] == 0.15


async def test_random_faults_are_repeatable_with_a_seed(env: Env) -> None:
    async def pattern() -> list[int]:
        env.sim.faults.set_random(0.5, [Fault(500, 131000), Fault(429, 130429)], seed=7)
        return [(await env.send(text_to())).status_code for _ in range(20)]

    first, second = await pattern(), await pattern()
    assert first == second
    assert {200, 500, 429} == set(first)


async def test_fault_on_status_accepts_then_reports_failed(env: Env) -> None:
    env.sim.faults.fail_next(1, 400, 131026, details="Receiver is incapable of this message", on_status=True)
    response = await env.send(text_to())
    assert response.status_code == 200

    await env.sim.wait_for(lambda: len(env.fake.statuses) == 1)
    [status] = env.fake.statuses
    assert status["status"] == "failed"
    assert status["id"] == response.json()["messages"][0]["id"]
    assert status["errors"][0]["code"] == 131026
    assert status["errors"][0]["title"] == "Message Undeliverable"
    assert status["errors"][0]["error_data"] == {"details": "Receiver is incapable of this message"}
    assert env.sim.chat_view(USER)["messages"][0]["status"] == "failed"


# -------------------------------------------------------------------------------------------- media


async def test_media_upload_resolve_download_delete(env: Env) -> None:
    data = b"\xff\xd8\xff\xe0 jpeg\r\n--not-a-boundary\r\n\x00\r\n" * 50
    upload = await env.graph.post(
        f"/v23.0/{NUMBER}/media",
        headers=AUTH,
        data={"messaging_product": "whatsapp", "type": "image/jpeg"},
        files={"file": ("photo.jpg", data, "image/jpeg")},
    )
    assert upload.status_code == 200
    media_id = upload.json()["id"]

    resolved = await env.graph.get(f"/v23.0/{media_id}", headers=AUTH)
    info = resolved.json()
    assert info["messaging_product"] == "whatsapp"
    assert (info["id"], info["mime_type"], info["file_size"]) == (media_id, "image/jpeg", len(data))
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["url"].startswith("http://sim.test/media/")

    downloaded = await env.graph.get(info["url"], headers=AUTH)
    assert downloaded.status_code == 200
    assert downloaded.content == data
    assert downloaded.headers["content-type"] == "image/jpeg"

    assert (await env.graph.get(info["url"])).status_code == 401
    wrong = await env.graph.get(info["url"], headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    forged = info["url"].rsplit("hash=", 1)[0] + "hash=" + "0" * 32
    assert (await env.graph.get(forged, headers=AUTH)).status_code == 404

    deleted = await env.graph.delete(f"/v23.0/{media_id}", headers=AUTH)
    assert deleted.json() == {"success": True}
    gone = await env.graph.get(f"/v23.0/{media_id}", headers=AUTH)
    assert (gone.status_code, gone.json()["error"]["code"]) == (400, 100)


@pytest.mark.parametrize(
    ("headers", "form", "mime", "status", "code"),
    [
        ({}, {"messaging_product": "whatsapp"}, "image/png", 401, 190),
        (AUTH, {}, "image/png", 400, 131008),
        (AUTH, {"messaging_product": "whatsapp"}, "application/x-msdownload", 400, 100),
    ],
)
async def test_media_upload_errors(
    env: Env, headers: dict[str, str], form: dict[str, str], mime: str, status: int, code: int
) -> None:
    response = await env.graph.post(
        f"/v23.0/{NUMBER}/media", headers=headers, data=form, files={"file": ("f", b"data", mime)}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


async def test_media_upload_over_the_size_limit(env: Env) -> None:
    response = await env.graph.post(
        f"/v23.0/{NUMBER}/media",
        headers=AUTH,
        data={"messaging_product": "whatsapp"},
        files={"file": ("s.webp", b"x" * (500 * 1024 + 1), "image/webp")},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, 131053)


# ----------------------------------------------------------------------------------------- inbound


def _verify(body: bytes, headers: dict[str, str], secret: str = SECRET) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["X-Hub-Signature-256"], expected)


async def test_user_sends_delivers_a_signed_meta_shaped_webhook(env: Env) -> None:
    text = "Olá 👋 café"
    wamid = await env.sim.user_sends(USER, text, name="Zoë")

    assert env.fake.bad_signatures == 0
    [raw] = env.fake.raw
    assert raw.isascii()
    assert b"Ol\\u00e1 \\ud83d\\udc4b caf\\u00e9" in raw  # lowercase \uXXXX, as Meta signs it
    assert b'"Zo\\u00eb"' in raw
    # Compact separators, as Meta sends.
    assert b": " not in raw
    assert b", " not in raw
    [payload] = env.fake.received
    assert payload["object"] == "whatsapp_business_account"
    [entry] = payload["entry"]
    [change] = entry["changes"]
    assert (entry["id"], change["field"]) == ("102290129340398", "messages")
    value = change["value"]
    assert value["metadata"]["phone_number_id"] == NUMBER
    assert value["contacts"] == [{"profile": {"name": "Zoë"}, "wa_id": USER}]
    [message] = value["messages"]
    assert (message["from"], message["id"], message["type"]) == (USER, wamid, "text")
    assert message["text"] == {"body": text}
    assert message["timestamp"].isdigit()
    assert abs(int(message["timestamp"]) - time.time()) < 5


async def test_user_sends_retries_until_warelay_answers_200(env: Env) -> None:
    env.fake.answers = [500, 503]
    wamid = await env.sim.user_sends(USER, "hi")
    assert env.fake.attempts == 3
    assert [m["id"] for m in env.fake.messages] == [wamid]
    assert env.sim.chat_view(USER)["messages"][0]["status"] == "delivered"


async def test_user_sends_records_a_failure_after_bounded_retries(env: Env) -> None:
    env.fake.answers = [500] * 5
    await env.sim.user_sends(USER, "hi")
    assert env.fake.attempts == 3
    assert [f.kind for f in env.sim.webhook_failures] == ["message"]
    assert env.sim.chat_view(USER)["messages"][0]["status"] == "failed"


async def test_user_sends_media_with_details_of_seeded_file(env: Env) -> None:
    media_id = env.sim.add_media(b"%PDF-1.4", "application/pdf", filename="menu.pdf")
    await env.sim.user_sends(USER, {"type": "document", "document": {"id": media_id, "caption": "menu"}})
    [message] = env.fake.messages
    assert message["document"] == {
        "mime_type": "application/pdf",
        "sha256": hashlib.sha256(b"%PDF-1.4").hexdigest(),
        "id": media_id,
        "caption": "menu",
        "filename": "menu.pdf",
    }
    # warelay downloads it with its own token.
    info = (await env.graph.get(f"/v23.0/{media_id}", headers=AUTH)).json()
    assert (await env.graph.get(info["url"], headers=AUTH)).content == b"%PDF-1.4"


async def test_user_sends_infers_type_and_keeps_context(env: Env) -> None:
    reply = {
        "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}},
        "context": {"from": "15550783881", "id": "wamid.B"},
    }
    await env.sim.user_sends(USER, reply, message_id="wamid.FIXED")
    [message] = env.fake.messages
    assert (message["type"], message["id"]) == ("interactive", "wamid.FIXED")
    assert message["interactive"]["button_reply"] == {"id": "yes", "title": "Yes"}
    assert message["context"] == {"from": "15550783881", "id": "wamid.B"}


async def test_build_inbound_signs_without_sending(env: Env) -> None:
    body, headers, wamid = env.sim.build_inbound("4915112345678", "Grüße", name="Jörg")
    assert _verify(body, headers)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Hub-Signature"].startswith("sha1=")
    payload = json.loads(body)
    assert payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"] == wamid
    assert body.isascii()
    assert env.fake.received == []
    assert env.sim.users() == []


async def test_several_numbers_have_their_own_token_secret_and_webhook(env: Env) -> None:
    env.fake.secrets["/hooks/two"] = "secret-2"
    env.sim.add_number("222", "15550002222", "token-2", "secret-2", "http://warelay.test/hooks/two")

    own = await env.graph.post(
        "/v23.0/222/messages", json=text_to(), headers={"Authorization": "Bearer token-2"}
    )
    foreign = await env.graph.post("/v23.0/222/messages", json=text_to(), headers=AUTH)
    assert (own.status_code, foreign.status_code) == (200, 400)

    await env.sim.wait_for(lambda: len(env.fake.statuses) == 3)
    assert env.fake.bad_signatures == 0
    assert {p["metadata"]["phone_number_id"] for p in env.fake.status_posts} == {"222"}

    await env.sim.user_sends(USER, "hi", number_id="222")
    assert env.fake.messages[0]["from"] == USER
    assert env.fake.values()[-1]["metadata"]["display_phone_number"] == "15550002222"


# ------------------------------------------------------------------------------ control API and page


async def test_person_types_through_the_control_api_and_sees_the_chat(env: Env) -> None:
    typed = await env.graph.post(f"/_sim/users/{USER}/messages", json={"text": "Hola", "name": "Ana"})
    assert typed.json()["delivered"] is True
    assert env.fake.values()[0]["contacts"][0]["profile"]["name"] == "Ana"
    inbound_id = typed.json()["id"]

    await env.send({**text_to(body="Hi Ana"), "context": {"message_id": inbound_id}})
    await env.sim.wait_for(lambda: env.sim.chat_view(USER)["messages"][-1]["status"] == "read")

    chat = (await env.graph.get(f"/_sim/users/{USER}/chat")).json()
    assert chat["name"] == "Ana"
    assert [(m["direction"], m["type"]) for m in chat["messages"]] == [("in", "text"), ("out", "text")]
    assert chat["messages"][0]["message"]["text"]["body"] == "Hola"
    assert chat["messages"][1]["message"]["context"] == {"message_id": inbound_id}
    same = (await env.graph.get(f"/_sim/users/{USER}/chat", params={"version": chat["version"]})).json()
    assert same["unchanged"] is True
    assert "messages" not in same

    users = (await env.graph.get("/_sim/users")).json()["users"]
    assert [(u["wa_id"], u["name"], u["messages"]) for u in users] == [(USER, "Ana", 2)]
    counts = (await env.graph.get("/_sim/state")).json()["counts"]
    assert (counts["sent"], counts["inbound_delivered"], counts["rejected"]) == (1, 1, 0)


async def test_control_api_takes_a_raw_message_and_rejects_junk(env: Env) -> None:
    raw = {
        "message": {"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "r1"}}},
        "name": "Ana",
    }
    assert (await env.graph.post(f"/_sim/users/{USER}/messages", json=raw)).status_code == 200
    assert env.fake.messages[0]["interactive"]["list_reply"] == {"id": "r1"}
    assert (await env.graph.post(f"/_sim/users/{USER}/messages", json={"nothing": 1})).status_code == 400
    assert (await env.graph.post("/_sim/users/abc/messages", json={"text": "x"})).status_code == 400
    unknown = await env.graph.post(f"/_sim/users/{USER}/messages", json={"text": "x", "number_id": "9"})
    assert unknown.status_code == 400


async def test_reset_forgets_messages(env: Env) -> None:
    await env.send(text_to())
    state = (await env.graph.post("/_sim/reset")).json()
    assert state["counts"]["sent"] == 0
    assert env.sim.sent == []


async def test_chat_page_and_assets_are_served(env: Env) -> None:
    page = await env.graph.get("/")
    assert page.status_code == 200
    assert '<script src="/static/chat.js">' in page.text
    script = await env.graph.get("/static/chat.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert (await env.graph.get("/static/chat.css")).status_code == 200
    assert (await env.graph.get("/static/missing.js")).status_code == 404


def test_chat_script_never_writes_html_from_strings() -> None:
    static = Path(__file__).resolve().parents[3] / "src" / "warelay" / "simulator" / "static"
    for name in ("chat.js", "chat.html"):
        source = (static / name).read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in source.replace("never innerHTML", ""), (name, sink)


async def test_wait_for_times_out(env: Env) -> None:
    with pytest.raises(TimeoutError):
        await env.sim.wait_for(lambda: False, timeout=0.05)


def test_config_refuses_unsafe_values() -> None:
    with pytest.raises(ValueError, match="webhook_url"):
        SimulatorConfig(webhook_url="warelay:8000", app_secret="s", access_token="t")
    with pytest.raises(ValueError, match="negative"):
        SimulatorConfig(webhook_url=WEBHOOK, app_secret="s", access_token="t", status_delay=-1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_run_simulator_serves_until_cancelled() -> None:
    fake = FakeWarelay(secrets={"/webhooks/whatsapp": SECRET})
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as http:
        sim = Simulator(
            SimulatorConfig(webhook_url=WEBHOOK, app_secret=SECRET, access_token=TOKEN), http=http
        )
        port = _free_port()
        task = asyncio.create_task(run_simulator(sim, "127.0.0.1", port))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):
                try:
                    response = await client.post(MESSAGES, json=text_to(), headers=AUTH)
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.02)
            assert response.status_code == 200
            await sim.wait_for(lambda: len(fake.statuses) == 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
