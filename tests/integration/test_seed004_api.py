"""Seed 004's API end to end (warelay + simulator on loopback): send-message, session,
generate-response and health, in the seed's ``{"success", "message", "data"}`` envelope."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

import warelay
from tests.fakes_openai import OpenAICompatibleServer
from tests.integration.send_helpers import add_number, audit_rows, make_key, user_writes_first
from tests.integration.stack import Stack, run_stack
from warelay.storage.models import Conversation, Message, utcnow

USER = "1234567890"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
DEMO_KNOWLEDGE = Path(warelay.__file__).parent / "demo" / "knowledge"
# Seed 004's examples, as written there.
SEND_EXAMPLE = {"phoneNumber": "1234567890", "message": "Hello from ClariOps!"}
GENERATE_EXAMPLE = {
    "message": "What are your pricing plans?",
    "conversationId": "test_123",
    "context": {"previousMessages": []},
}


async def call(stack: Stack, method: str, path: str, key: str | None, body: Any = None) -> Any:
    """Call a seed 004 route with the key in ``x-api-key``."""
    headers = {"x-api-key": key} if key is not None else {}
    return await stack.http.request(method, f"{stack.url}{path}", json=body, headers=headers)


def ok(response: Any, status: int = 200) -> dict[str, Any]:
    """The ``data`` of a successful answer, after checking the envelope."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


def refused(response: Any, status: int, *words: str) -> dict[str, Any]:
    """A refusal in the seed's envelope, after checking its status and reason."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert set(body) == {"success", "message", "data"}
    for word in words:
        assert word in body["message"], body["message"]
    return body


async def message_count(stack: Stack) -> int:
    """How many messages warelay has stored."""
    async with stack.runtime.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(Message))).scalar_one())


async def test_send_message_returns_graphs_answer(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        key = await make_key(stack, ["messages:send"])
        await user_writes_first(stack, USER)
        response = await call(stack, "POST", "/api/send-message", key, SEND_EXAMPLE)
        assert response.json()["message"] == "Message sent successfully"
        data = ok(response)
        sent = stack.simulator.messages_to(USER)[-1]
        assert sent.body["text"]["body"] == "Hello from ClariOps!"
        assert data == {
            "messaging_product": "whatsapp",
            "contacts": [{"input": USER, "wa_id": USER}],
            "messages": [{"id": sent.wamid}],
        }

        # Still pending after the wait (Graph is slow): 202 with the outbox id; it is sent later.
        stack.simulator.faults.set_latency(1.0)
        pending = await call(
            stack, "POST", "/api/send-message?wait=0.2", key, {**SEND_EXAMPLE, "message": "Slow"}
        )
        queued = ok(pending, 202)
        assert queued["status"] == "queued"
        assert queued["message_id"].isdigit()
        await stack.simulator.wait_for(
            lambda: stack.simulator.messages_to(USER)[-1].text == "Slow", timeout=10
        )
        stack.simulator.faults.set_latency(0)

        # WhatsApp refuses it: 502 with Meta's error.
        stack.simulator.faults.fail_next(1, 400, 131026, details="Message Undeliverable.")
        failed = refused(
            await call(stack, "POST", "/api/send-message", key, {**SEND_EXAMPLE, "message": "Lost"}),
            502,
            "WhatsApp did not accept the message",
        )
        assert failed["data"]["status"] == "failed"
        assert failed["data"]["error"]["code"] == 131026

        # Only to active contacts; the key is required and needs messages:send.
        refused(
            await call(stack, "POST", "/api/send-message", key, {**SEND_EXAMPLE, "phoneNumber": "999"}), 422
        )
        refused(
            await call(
                stack, "POST", "/api/send-message", key, {**SEND_EXAMPLE, "phoneNumber": "19995550000"}
            ),
            422,
            "not an active contact",
        )
        refused(await call(stack, "POST", "/api/send-message", None, SEND_EXAMPLE), 401)
        reader = await make_key(stack, ["conversations:read"])
        refused(await call(stack, "POST", "/api/send-message", reader, SEND_EXAMPLE), 403, "messages:send")
        refused(await call(stack, "POST", "/api/send-message", key, {"phoneNumber": USER}), 422, "message")

        # A retried request with its Idempotency-Key answers Graph's answer again, sending nothing more.
        headers = {"x-api-key": key, "Idempotency-Key": "clariops-7"}
        body = {**SEND_EXAMPLE, "message": "Once"}
        first = await stack.http.post(f"{stack.url}/api/send-message", json=body, headers=headers)
        again = await stack.http.post(f"{stack.url}/api/send-message", json=body, headers=headers)
        assert ok(again) == ok(first)
        assert again.headers["Idempotent-Replayed"] == "true"
        await asyncio.sleep(0.3)
        assert [m.text for m in stack.simulator.messages_to(USER)].count("Once") == 1

        # The messages are the conversation's, and audited.
        conversation = (await stack.api("/api/v1/conversations", user=USER))["items"][0]
        history = (await stack.api(f"/api/v1/conversations/{conversation['id']}/messages"))["items"]
        audit = await audit_rows(stack)
    outbound = {m["text"]: m for m in history if m["direction"] == "out"}
    assert outbound["Hello from ClariOps!"]["provider_message_id"] == sent.wamid
    assert outbound["Slow"]["id"] == int(queued["message_id"])
    assert outbound["Lost"]["status"] == "failed"
    assert {a.route for a in audit} == {"/api/send-message"}
    assert [(a.result, a.summary) for a in audit if a.result == "queued"] == [
        ("queued", "Hello from ClariOps!"),
        ("queued", "Slow"),
        ("queued", "Lost"),
        ("queued", "Once"),
    ]
    assert [a.recipient for a in audit if a.result == "rejected"] == ["999", "19995550000", USER]


async def test_session_is_the_current_conversation(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        key = await make_key(stack, ["conversations:read"])
        await stack.simulator.user_sends(USER, "Hi there", name="John Doe")
        await stack.replies_to(USER, 1)
        conversation = (await stack.api("/api/v1/conversations", user=USER))["items"][0]

        data = ok(await call(stack, "GET", f"/api/session/{USER}", key))
        assert data["conversationId"] == conversation["id"]
        assert data["phoneNumber"] == USER
        assert data["customerName"] == "John Doe"
        assert data["active"] is True
        assert TIMESTAMP.match(data["lastActivity"])
        previous = data["context"]["previousMessages"]
        assert [(m["role"], m["content"]) for m in previous] == [
            ("user", "Hi there"),
            ("assistant", "echo: Hi there"),
        ]
        assert all(TIMESTAMP.match(m["timestamp"]) for m in previous)
        assert set(data) == {
            "conversationId",
            "phoneNumber",
            "customerName",
            "context",
            "lastActivity",
            "active",
        }
        # With a leading + as well; the seed's Bearer-less key header or Authorization: Bearer.
        same = await stack.http.get(
            f"{stack.url}/api/session/+{USER}", headers={"Authorization": f"Bearer {key}"}
        )
        assert ok(same)["conversationId"] == conversation["id"]
        # One of the tenant's numbers, by its display number as written anywhere (warelay's ?from=).
        by_number = await call(stack, "GET", f"/api/session/{USER}?from=%2B1%20555-078-3881", key)
        assert ok(by_number)["conversationId"] == conversation["id"]
        refused(await call(stack, "GET", f"/api/session/{USER}?from=999", key), 404, "no number")

        # Only the last 10 messages are the context (seed 004).
        for n in range(6):
            await stack.simulator.user_sends(USER, f"message {n}")
        await stack.replies_to(USER, 7)
        previous = ok(await call(stack, "GET", f"/api/session/{USER}", key))["context"]["previousMessages"]
        assert len(previous) == 10
        assert previous[-1] == {**previous[-1], "role": "assistant", "content": "echo: message 5"}

        # An expired conversation is still the latest one, shown inactive.
        async with stack.runtime.engine.begin() as conn:
            await conn.execute(update(Conversation).values(expires_at=utcnow() - timedelta(seconds=1)))
        assert ok(await call(stack, "GET", f"/api/session/{USER}", key))["active"] is False

        refused(await call(stack, "GET", "/api/session/15550001111", key), 404, "no conversation")
        refused(await call(stack, "GET", f"/api/session/{USER}", None), 401)
        sender = await make_key(stack, ["messages:send"])
        refused(await call(stack, "GET", f"/api/session/{USER}", sender), 403, "conversations:read")
        await add_number(stack, tenant="acme", phone_number_id="200000000000001", display="15550000001")
        foreign = await make_key(stack, ["conversations:read"], tenant="acme")
        refused(await call(stack, "GET", f"/api/session/{USER}", foreign), 404)


async def test_generate_response_runs_the_agent_without_sending(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        key = await make_key(stack, ["conversations:read"])
        await user_writes_first(stack, USER)
        stored = await message_count(stack)
        sent = len(stack.simulator.sent)

        data = ok(await call(stack, "POST", "/api/generate-response", key, GENERATE_EXAMPLE))
        assert data["reply"] == "echo: What are your pricing plans?"
        assert data["conversationId"] == "test_123"
        assert data["metadata"]["model"] == "test-echo"
        assert data["metadata"]["tokens"] == 0
        assert TIMESTAMP.match(data["metadata"]["timestamp"])
        # The seed's curl example: no context at all.
        hello = ok(
            await call(
                stack, "POST", "/api/generate-response", key, {"message": "Hello!", "conversationId": "t"}
            )
        )
        assert hello["reply"] == "echo: Hello!"
        # A real conversation of the tenant may be named.
        conversation = (await stack.api("/api/v1/conversations", user=USER))["items"][0]
        named = {"message": "Again", "conversationId": conversation["id"]}
        assert (
            ok(await call(stack, "POST", "/api/generate-response", key, named))["conversationId"]
            == conversation["id"]
        )

        await asyncio.sleep(0.2)
        assert await message_count(stack) == stored
        assert len(stack.simulator.sent) == sent

        refused(await call(stack, "POST", "/api/generate-response", None, GENERATE_EXAMPLE), 401)
        sender = await make_key(stack, ["messages:send"])
        refused(await call(stack, "POST", "/api/generate-response", sender, GENERATE_EXAMPLE), 403)
        invalid = refused(
            await call(stack, "POST", "/api/generate-response", key, {"conversationId": "x"}), 422
        )
        assert invalid["data"]["errors"] == [{"field": "message", "message": "Field required"}]
        bad_history = {"message": "hi", "context": {"previousMessages": [{"role": "robot", "content": "x"}]}}
        refused(
            await call(stack, "POST", "/api/generate-response", key, bad_history),
            422,
            "previousMessages[0].role",
        )

        # Several numbers: the request says which one's agent answers.
        await add_number(stack, tenant="default", phone_number_id="300000000000002", display="15550000002")
        refused(await call(stack, "POST", "/api/generate-response", key, GENERATE_EXAMPLE), 422, "from")
        chosen = {**GENERATE_EXAMPLE, "from": "300000000000002"}
        assert ok(await call(stack, "POST", "/api/generate-response", key, chosen))["reply"].startswith(
            "echo:"
        )


async def test_generate_response_knowledge_agent_is_honest(sqlite_url: str) -> None:
    async with run_stack(
        sqlite_url, agent={"kind": "knowledge", "knowledge_dir": str(DEMO_KNOWLEDGE)}
    ) as stack:
        key = await make_key(stack, ["conversations:read"])
        data = ok(
            await call(
                stack, "POST", "/api/generate-response", key, {"message": "What are your opening hours?"}
            )
        )
    assert "8:00" in data["reply"]
    assert data["metadata"]["model"] == "knowledge"
    assert data["metadata"]["tokens"] == 0
    assert data["conversationId"] is None


async def test_generate_response_llm_agent_reports_its_model_and_tokens(sqlite_url: str) -> None:
    async with OpenAICompatibleServer(lambda body: "Our plans start at Rp 50.000 a month.") as model:
        async with run_stack(
            sqlite_url, agent={"kind": "llm"}, llm={"base_url": model.base_url, "model": "test-model"}
        ) as stack:
            key = await make_key(stack, ["conversations:read"])
            body = {
                "message": "What are your pricing plans?",
                "conversationId": "test_123",
                "context": {
                    "previousMessages": [
                        {"role": "user", "content": "Hi"},
                        {"role": "bot", "content": "Hello! How can I help?"},
                    ]
                },
            }
            data = ok(await call(stack, "POST", "/api/generate-response", key, body))
        request = model.requests[-1]
    assert data["reply"] == "Our plans start at Rp 50.000 a month."
    assert data["metadata"]["model"] == "test-model"
    # The fake counts words as tokens: the prompt's (instructions, history, question) and the answer's.
    prompt_words = sum(
        len(m["content"].split()) for m in request["messages"] if isinstance(m["content"], str)
    )
    assert data["metadata"]["tokens"] == prompt_words + len(data["reply"].split())
    contents = [m["content"] for m in request["messages"][1:]]
    assert contents == ["Hi", "Hello! How can I help?", "What are your pricing plans?"]


async def test_health_is_open(sqlite_url: str) -> None:
    async with run_stack(sqlite_url) as stack:
        response = await stack.http.get(f"{stack.url}/api/health")
    data = ok(response)
    assert response.json()["message"]
    assert data["status"] == "healthy"
    assert TIMESTAMP.match(data["timestamp"])
