"""Seed 002's Conversation Sync API over real HTTP: lookups, sync, transcript, health, keys and tenants.

A signed webhook from the simulator opens each conversation (and the test-echo agent answers it),
then the API is called as an external agent would, with tenant keys made as `warelay keys create`
makes them.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from tests.integration.stack import ADMIN_TOKEN, APP_SECRET, PHONE_NUMBER_ID, Stack, run_stack
from warelay.conversations.sync import HISTORY_LIMIT, MAX_STATE_BYTES
from warelay.crypto import new_api_key
from warelay.numbers import NumberFields, ensure_tenant, upsert_number
from warelay.storage.models import Agent, ApiKey, Conversation, Number, Tenant, TranscriptEntry, utcnow

BASE = "/api/v1/whatsapp"
JS_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def make_key(stack: Stack, tenant: str | None, *scopes: str) -> str:
    """An API key of ``tenant`` (None: platform-wide) with ``scopes``, stored as the CLI stores one."""
    key = new_api_key()
    async with stack.runtime.engine.begin() as conn:
        tenant_id = None
        if tenant is not None:
            tenant_id = (await conn.execute(select(Tenant.id).where(Tenant.subdomain == tenant))).scalar_one()
        await conn.execute(
            insert(ApiKey).values(
                tenant_id=tenant_id,
                prefix=key[:12],
                key_hash=stack.runtime.box.hash_key(key),
                scopes=list(scopes),
                created_at=utcnow(),
            )
        )
    return key


class Agent002:
    """An external agent calling the sync API with one key (Bearer, as the seed's clients do)."""

    def __init__(self, stack: Stack, key: str | None) -> None:
        self.stack = stack
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        response = await self.stack.http.request(
            method, f"{self.stack.url}{BASE}{path}", headers=self.headers, **kwargs
        )
        return response.status_code, response.json()

    async def ok(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The ``data`` of a successful answer (asserting the success envelope)."""
        code, body = await self.call(method, path, **kwargs)
        assert code == 200, body
        assert body["type"] == "1"
        assert isinstance(body["message"], str)
        data: dict[str, Any] = body["data"]
        return data

    async def fails(self, code: int, method: str, path: str, **kwargs: Any) -> str:
        """The reason of a failure with status ``code`` (asserting the failure envelope)."""
        got, body = await self.call(method, path, **kwargs)
        assert got == code, body
        assert body["type"] == "0"
        assert body["data"] is None
        message: str = body["message"]
        assert message
        return message


async def open_conversation(stack: Stack, wa_id: str, text: str, **kwargs: Any) -> None:
    """A user writes (signed webhook) and warelay's test-echo agent answers."""
    before = len(stack.simulator.messages_to(wa_id))
    await stack.simulator.user_sends(wa_id, text, **kwargs)
    await stack.replies_to(wa_id, before + 1)


async def env_agent_id(stack: Stack) -> int:
    async with stack.runtime.engine.connect() as conn:
        agent_id = (
            await conn.execute(select(Number.agent_id).where(Number.phone_number_id == PHONE_NUMBER_ID))
        ).scalar_one()
    assert agent_id is not None, "the env number is linked to its agent"
    return agent_id


async def conversation_version(stack: Stack, session_id: str) -> int:
    async with stack.runtime.engine.connect() as conn:
        version = (
            await conn.execute(select(Conversation.version).where(Conversation.id == session_id))
        ).scalar_one()
    return int(version)


async def test_lookups_answer_in_the_seed_shape(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await open_conversation(stack, "51999999901", "Hola")
        agent = Agent002(stack, await make_key(stack, "default", "conversations:read"))
        bot_id = str(await env_agent_id(stack))

        tenant = await agent.ok("GET", "/lookup/tenant/+51999999901")
        assert set(tenant) == {"subDomain", "botId", "sessionId", "isActive"}
        assert tenant["subDomain"] == "default"
        assert tenant["botId"] == bot_id
        assert tenant["sessionId"].startswith(f"{PHONE_NUMBER_ID}_51999999901_")
        assert tenant["isActive"] is True
        assert await agent.ok("GET", "/lookup/tenant/51999999901") == tenant  # with or without +
        assert await agent.ok("GET", "/lookup/tenant/%2B51%20999-999-901") == tenant  # encoded, spaced

        code, body = await agent.call("GET", "/lookup/tenant/+51999999901")
        assert (code, body["message"]) == (200, "Tenant information retrieved successfully")
        code, body = await agent.call("GET", "/lookup/conversation/+51999999901", params={"botId": bot_id})
        assert (code, body["message"]) == (200, "Conversation retrieved successfully")
        conversation = body["data"]
        assert set(conversation) == {
            "sessionId",
            "userId",
            "botId",
            "subDomain",
            "currentIntent",
            "currentStep",
            "previousIntent",
            "previousStep",
            "context",
            "metadata",
            "isActive",
            "lastActivity",
            "expiresAt",
            "createdAt",
            "updatedAt",
            "version",
        }
        assert conversation["sessionId"] == tenant["sessionId"]
        assert conversation["userId"] == "+51999999901"
        assert (conversation["botId"], conversation["subDomain"]) == (bot_id, "default")
        assert conversation["currentIntent"] is conversation["currentStep"] is None
        assert conversation["isActive"] is True
        assert conversation["version"] == 1
        assert conversation["metadata"] == {}
        for field in ("lastActivity", "expiresAt", "createdAt", "updatedAt"):
            assert JS_TIME.match(conversation[field]), conversation[field]
        expires = datetime.fromisoformat(conversation["expiresAt"])
        last = datetime.fromisoformat(conversation["lastActivity"])
        assert timedelta(hours=23, minutes=59) < expires - last <= timedelta(hours=24)
        history = conversation["context"]["previousMessages"]
        assert [(m["role"], m["content"]) for m in history] == [("user", "Hola"), ("bot", "echo: Hola")]
        assert all(JS_TIME.match(m["timestamp"]) for m in history)
        assert history[0]["timestamp"] <= history[1]["timestamp"]
        assert conversation["context"]["lastUserMessage"] == "Hola"

        # botId filters: another agent's id, or something that is no agent id, finds nothing.
        reason = await agent.fails(
            404, "GET", "/lookup/conversation/+51999999901", params={"botId": str(int(bot_id) + 1000)}
        )
        assert "no active conversation" in reason
        await agent.fails(404, "GET", "/lookup/conversation/+51999999901", params={"botId": "67890abcdef"})
        assert (await agent.ok("GET", "/lookup/conversation/51999999901"))["sessionId"] == tenant["sessionId"]

        # Nobody by that number; not a phone number at all.
        reason = await agent.fails(404, "GET", "/lookup/tenant/+51999999999")
        assert reason == "no active conversation for +51999999999"
        await agent.fails(404, "GET", "/lookup/conversation/+51999999999")
        assert "not a phone number" in await agent.fails(422, "GET", "/lookup/tenant/+51abc")
        await agent.fails(422, "GET", "/lookup/tenant/123")
        await agent.fails(422, "GET", "/lookup/conversation/+51999999901", params={"botId": "9" * 65})

        # Keys: none, a wrong one, one without the scope.
        assert (
            await Agent002(stack, None).fails(401, "GET", "/lookup/tenant/+51999999901") == "missing API key"
        )
        await Agent002(stack, "wl_not-a-key").fails(401, "GET", "/lookup/tenant/+51999999901")
        sender = Agent002(stack, await make_key(stack, "default", "messages:send"))
        reason = await sender.fails(403, "GET", "/lookup/tenant/+51999999901")
        assert "conversations:read" in reason
        # x-api-key works as well as Bearer.
        key = await make_key(stack, "default", "conversations:read")
        response = await stack.http.get(
            f"{stack.url}{BASE}/lookup/tenant/51999999901", headers={"x-api-key": key}
        )
        assert response.json()["data"] == tenant


async def test_health_is_open_and_in_the_envelope(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        response = await stack.http.get(f"{stack.url}{BASE}/health")
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"type", "message", "data"}
        assert (body["type"], body["message"], body["data"]["status"]) == ("1", "ok", "healthy")
        assert JS_TIME.match(body["data"]["timestamp"])
        stamp = datetime.fromisoformat(body["data"]["timestamp"])
        assert abs(stamp - utcnow()) < timedelta(seconds=30)


async def test_sync_replaces_merges_keeps_history_and_counts_versions(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await open_conversation(stack, "51999999902", "Quiero una pizza")
        reader = Agent002(stack, await make_key(stack, "default", "conversations:read"))
        writer = Agent002(stack, await make_key(stack, "default", "conversations:write"))
        session = (await reader.ok("GET", "/lookup/tenant/+51999999902"))["sessionId"]
        path = f"/agent/conversations/{session}/sync"

        first = {
            "intent": "order",
            "step": "selecting",
            "context": {
                "selectedItems": [
                    {"id": "item_123", "name": "Pizza Margherita", "quantity": 1, "price": 25.0}
                ],
                "orderTotal": 25.0,
                # warelay's keys: ignored in a sync, computed on every read
                "previousMessages": [{"role": "user", "content": "forged", "timestamp": "x"}],
                "lastUserMessage": "forged",
            },
            "metadata": {"language": "es", "platform": "whatsapp"},
            "isActive": True,
        }
        code, body = await writer.call("PUT", path, json=first)
        assert (code, body["type"], body["message"]) == (
            200,
            "1",
            "Conversation synced successfully from agent",
        )
        synced = body["data"]
        assert synced["sessionId"] == session
        assert (synced["currentIntent"], synced["currentStep"]) == ("order", "selecting")
        assert synced["previousIntent"] is synced["previousStep"] is None
        assert synced["context"]["orderTotal"] == 25.0
        assert [m["content"] for m in synced["context"]["previousMessages"]] == [
            "Quiero una pizza",
            "echo: Quiero una pizza",
        ]
        assert synced["context"]["lastUserMessage"] == "Quiero una pizza"
        assert synced["version"] == 2
        assert JS_TIME.match(synced["lastActivity"])

        # The seed's example: the agent sends the whole context, which replaces the old one.
        second = {
            "intent": "payment",
            "step": "processing_payment",
            "context": {
                "selectedItems": [
                    {"id": "item_123", "name": "Pizza Margherita", "quantity": 2, "price": 50.0}
                ],
                "paymentMethod": "yape",
                "deliveryAddress": {"street": "Av. Principal 123", "city": "Lima"},
            },
            "metadata": {"agentProcessedAt": "2025-12-29T10:06:00.000Z", "agentVersion": "1.0.0"},
            "isActive": True,
            "version": 2,
        }
        synced = await writer.ok("PUT", path, json=second)
        assert (synced["currentIntent"], synced["currentStep"]) == ("payment", "processing_payment")
        assert (synced["previousIntent"], synced["previousStep"]) == ("order", "selecting")
        agent_keys = {
            k: v for k, v in synced["context"].items() if k not in ("previousMessages", "lastUserMessage")
        }
        assert agent_keys == second["context"]  # orderTotal is gone: replaced, not merged
        assert synced["metadata"] == {  # metadata merges one level deep
            "language": "es",
            "platform": "whatsapp",
            "agentProcessedAt": "2025-12-29T10:06:00.000Z",
            "agentVersion": "1.0.0",
        }
        assert synced["version"] == 3

        # ?merge=true: top-level keys sent replace theirs, others stay; nested objects are replaced.
        merged = await writer.ok(
            "PUT",
            path,
            params={"merge": "true"},
            json={"context": {"deliveryAddress": {"city": "Cusco"}, "tip": 5}},
        )
        assert merged["context"]["deliveryAddress"] == {"city": "Cusco"}
        assert merged["context"]["paymentMethod"] == "yape"
        assert merged["context"]["tip"] == 5
        assert (merged["currentIntent"], merged["previousIntent"]) == ("payment", "order")  # left out: kept
        assert merged["version"] == 4

        # Same intent again: the previous one stays what it was.
        same = await writer.ok("PUT", path, json={"intent": "payment", "step": "paid", "version": 4})
        assert (same["previousIntent"], same["previousStep"]) == ("order", "processing_payment")
        assert same["context"]["tip"] == 5  # no context sent: kept
        assert same["version"] == 5

        # A stale version is refused, and changes nothing.
        reason = await writer.fails(409, "PUT", path, json={"intent": "cancel", "version": 3})
        assert "version 5" in reason
        looked = await reader.ok("GET", "/lookup/conversation/+51999999902")
        assert (looked["currentIntent"], looked["version"]) == ("payment", 5)
        assert looked["context"] == same["context"]

        # warelay's own agent changing the state counts too (test-echo sets it from "state:…").
        await open_conversation(stack, "51999999902", "state:support/waiting")
        looked = await reader.ok("GET", "/lookup/conversation/+51999999902")
        assert (looked["currentIntent"], looked["previousIntent"], looked["version"]) == (
            "support",
            "payment",
            6,
        )
        await writer.fails(409, "PUT", path, json={"intent": "payment", "version": 5})

        # isActive false ends the conversation: it is no longer found, nor writable.
        ended = await writer.ok("PUT", path, json={"isActive": False, "version": 6})
        assert ended["isActive"] is False
        await reader.fails(404, "GET", "/lookup/tenant/+51999999902")
        await writer.fails(404, "PUT", path, json={"intent": "again"})
        await writer.fails(
            404, "POST", f"/agent/conversations/{session}/messages", json={"role": "bot", "content": "x"}
        )


async def test_sync_refuses_bad_input_without_storing_anything(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await open_conversation(stack, "51999999903", "Hola")
        reader = Agent002(stack, await make_key(stack, "default", "conversations:read"))
        writer = Agent002(stack, await make_key(stack, "default", "conversations:write"))
        session = (await reader.ok("GET", "/lookup/tenant/51999999903"))["sessionId"]
        path = f"/agent/conversations/{session}/sync"
        await writer.ok("PUT", path, json={"intent": "menu", "context": {"a": 1}})
        url = f"{stack.url}{BASE}{path}"

        bad_bodies: list[tuple[str, str]] = [
            ('{"context": [1, 2]}', "context"),
            ('{"context": "text"}', "context"),
            ('{"metadata": 5}', "metadata"),
            ('{"intent": 7}', "intent"),
            ('{"isActive": "perhaps"}', "isActive"),
            ('{"version": 0}', "version"),
            ('{"version": "two"}', "version"),
            ('{"context": {"total": NaN}}', "finite"),
            ('{"context": {"note": "a\\u0000b"}}', "NUL"),
            ('{"step": "a\\u0000b"}', "NUL"),
            ('{"context": {"note": "a\\ud800"}}', "surrogate"),
            ('{"metadata": {"\\udfff": 1}}', "surrogate"),
            ('{"intent": "\\ud800"}', "surrogate"),
            ('{"intent": "' + "x" * 201 + '"}', "200 characters"),
            ('{"context": {"blob": "' + "x" * MAX_STATE_BYTES + '"}}', "bytes"),
            ('{"context": ' + '{"a": ' * 40 + "1" + "}" * 40 + "}", "nested"),
            ('{"context": {', "not valid JSON"),
            ("[]", "dictionary"),
            ("", "body"),
        ]
        for raw, expected in bad_bodies:
            response = await stack.http.put(
                url, content=raw, headers={**writer.headers, "Content-Type": "application/json"}
            )
            assert response.status_code == 422, (raw[:60], response.text)
            body = response.json()
            assert body["type"] == "0"
            assert body["data"] is None
            assert expected in body["message"], (raw[:60], body["message"])
        await writer.fails(422, "PUT", path, params={"merge": "perhaps"}, json={"intent": "x"})

        # None of it was stored: the state and version are the ones of the last good sync.
        looked = await reader.ok("GET", "/lookup/conversation/+51999999903")
        assert (looked["currentIntent"], looked["version"]) == ("menu", 2)
        assert looked["context"]["a"] == 1
        assert await conversation_version(stack, session) == 2

        # Keys: reading is not writing; unknown sessions are 404.
        reason = await reader.fails(403, "PUT", path, json={"intent": "x"})
        assert "conversations:write" in reason
        await Agent002(stack, None).fails(401, "PUT", path, json={"intent": "x"})
        # The key is checked before the body, even a body that is not JSON.
        for headers in ({}, {"Authorization": "Bearer wl_not-a-key"}):
            response = await stack.http.put(
                url, content=b'{"context": {', headers={**headers, "Content-Type": "application/json"}
            )
            assert response.status_code == 401
            assert response.json()["type"] == "0"
        await writer.fails(
            404, "PUT", f"/agent/conversations/{PHONE_NUMBER_ID}_51999999903_1_nope/sync", json={}
        )
        await writer.fails(404, "PUT", "/agent/conversations/a%00b/sync", json={})
        await writer.fails(
            404, "POST", "/agent/conversations/caf%C3%A9/messages", json={"role": "bot", "content": "x"}
        )
        await writer.fails(422, "PUT", f"/agent/conversations/{'x' * 201}/sync", json={})


async def test_concurrent_syncs_with_one_version_one_wins(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await open_conversation(stack, "51999999904", "Hola")
        writer = Agent002(
            stack, await make_key(stack, "default", "conversations:read", "conversations:write")
        )
        session = (await writer.ok("GET", "/lookup/tenant/51999999904"))["sessionId"]
        path = f"/agent/conversations/{session}/sync"
        results = await asyncio.gather(
            *(
                writer.call("PUT", path, json={"intent": f"i{n}", "context": {"n": n}, "version": 1})
                for n in range(8)
            )
        )
        codes = sorted(code for code, _ in results)
        assert codes == [200] + [409] * 7
        winner = next(body["data"] for code, body in results if code == 200)
        looked = await writer.ok("GET", "/lookup/conversation/51999999904")
        assert looked["version"] == 2
        assert looked["currentIntent"] == winner["currentIntent"]
        assert looked["context"]["n"] == winner["context"]["n"]
        # Without a version, concurrent writers all land, each counted once.
        results = await asyncio.gather(*(writer.call("PUT", path, json={"step": f"s{n}"}) for n in range(6)))
        assert [code for code, _ in results] == [200] * 6
        assert sorted(body["data"]["version"] for _, body in results) == list(range(3, 9))


async def test_agent_transcript_joins_whatsapp_history_and_survives_syncs(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await open_conversation(stack, "51999999905", "Quiero una pizza")
        key = await make_key(stack, "default", "conversations:read", "conversations:write")
        agent = Agent002(stack, key)
        session = (await agent.ok("GET", "/lookup/tenant/+51999999905"))["sessionId"]
        path = f"/agent/conversations/{session}/messages"
        sent_before = len(stack.simulator.messages_to("51999999905"))

        # The user's message is already warelay's: recording it again does not show it twice.
        code, body = await agent.call("POST", path, json={"role": "user", "content": "Quiero  una pizza "})
        assert (code, body["type"], body["message"]) == (200, "1", "Message added successfully")
        added = body["data"]
        assert added["sessionId"] == session
        history = [(m["role"], m["content"]) for m in added["context"]["previousMessages"]]
        assert history == [("user", "Quiero una pizza"), ("bot", "echo: Quiero una pizza")]

        added = await agent.ok("POST", path, json={"role": "bot", "content": "Perfecto! Total: S/ 50.00"})
        history = [(m["role"], m["content"]) for m in added["context"]["previousMessages"]]
        assert history[-1] == ("bot", "Perfecto! Total: S/ 50.00")
        assert len(history) == 3
        assert added["context"]["lastUserMessage"] == "Quiero una pizza"
        added = await agent.ok("POST", path, json={"role": "user", "content": "y una gaseosa"})
        assert added["context"]["lastUserMessage"] == "y una gaseosa"
        assert added["version"] == 1  # the transcript is warelay's to keep, not a state change

        # Nothing went to WhatsApp: sending is send-message's job.
        await asyncio.sleep(0.2)
        assert len(stack.simulator.messages_to("51999999905")) == sent_before

        # A sync (context replaced, even with forged history) keeps warelay's history.
        synced = await agent.ok(
            "PUT",
            f"/agent/conversations/{session}/sync",
            json={"intent": "order", "step": "confirm", "context": {"previousMessages": [], "cart": 1}},
        )
        assert [(m["role"], m["content"]) for m in synced["context"]["previousMessages"]] == [
            *history,
            ("user", "y una gaseosa"),
        ]
        assert synced["context"]["lastUserMessage"] == "y una gaseosa"
        assert synced["context"]["cart"] == 1

        # A later WhatsApp message lands after the transcript, and becomes the last user message.
        await open_conversation(stack, "51999999905", "gracias")
        looked = await agent.ok("GET", "/lookup/conversation/51999999905")
        assert [m["content"] for m in looked["context"]["previousMessages"]][-3:] == [
            "y una gaseosa",
            "gracias",
            "echo: gracias",
        ]
        assert looked["context"]["lastUserMessage"] == "gracias"

        # The window keeps the newest entries, oldest first.
        for n in range(HISTORY_LIMIT + 5):
            await agent.ok("POST", path, json={"role": "bot", "content": f"note {n}"})
        looked = await agent.ok("GET", "/lookup/conversation/51999999905")
        shown = [m["content"] for m in looked["context"]["previousMessages"]]
        assert len(shown) == HISTORY_LIMIT
        assert shown[-1] == f"note {HISTORY_LIMIT + 4}"
        assert shown[0] == "note 5"  # 55 notes, the newest 50
        assert looked["context"]["lastUserMessage"] == "gracias"  # found beyond the window

        async with stack.runtime.engine.connect() as conn:
            stored = (
                await conn.execute(
                    select(func.count())
                    .select_from(TranscriptEntry)
                    .where(TranscriptEntry.conversation_id == session)
                )
            ).scalar_one()
        assert stored == 3 + HISTORY_LIMIT + 5

        # Bad entries are refused.
        for bad in (
            {"role": "assistant", "content": "x"},
            {"role": "bot", "content": ""},
            {"role": "bot", "content": "   "},
            {"role": "bot", "content": "a\u0000b"},
            {"role": "bot", "content": "x" * 16_385},
            {"role": "bot"},
            {"content": "x"},
        ):
            await agent.fails(422, "POST", path, json=bad)
        response = await stack.http.post(
            f"{stack.url}{BASE}{path}",
            content=b'{"role": "bot", "content": "a\\ud800"}',
            headers={**agent.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422  # a lone surrogate is no text a database can store
        assert response.json()["message"].startswith("content: ")
        reader = Agent002(stack, await make_key(stack, "default", "conversations:read"))
        await reader.fails(403, "POST", path, json={"role": "bot", "content": "x"})


async def test_tenants_are_walls_and_the_default_agent_is_the_bot(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        # A second tenant with its own number and no linked agent: its default agent answers.
        bistro_id = await ensure_tenant(stack.runtime.engine, "bistro")
        await upsert_number(
            stack.runtime.engine,
            stack.runtime.box,
            tenant_id=bistro_id,
            agent_id=None,
            fields=NumberFields(
                phone_number_id="999999999999999",
                access_token="other-token",
                app_secret=APP_SECRET,
                graph_url=stack.sim_url,
                throughput_mps=1000,
            ),
        )
        await stack.runtime.registry.load()
        sim = stack.simulator
        sim.add_number("999999999999999", "15559990000", "other-token", APP_SECRET, sim.config.webhook_url)
        await ensure_tenant(stack.runtime.engine, "empty")

        # The same person writes to both businesses, to the bistro last.
        await open_conversation(stack, "51999999906", "hola tienda")
        await open_conversation(stack, "51999999906", "hola bistro", number_id="999999999999999")

        shop = Agent002(stack, await make_key(stack, "default", "conversations:read", "conversations:write"))
        bistro = Agent002(stack, await make_key(stack, "bistro", "conversations:read", "conversations:write"))
        empty = Agent002(stack, await make_key(stack, "empty", "conversations:read", "conversations:write"))
        admin = Agent002(stack, ADMIN_TOKEN)

        mine = await shop.ok("GET", "/lookup/conversation/+51999999906")
        assert mine["subDomain"] == "default"
        assert [m["content"] for m in mine["context"]["previousMessages"]] == [
            "hola tienda",
            "echo: hola tienda",
        ]
        theirs = await bistro.ok("GET", "/lookup/conversation/+51999999906")
        assert theirs["subDomain"] == "bistro"
        assert theirs["sessionId"].startswith("999999999999999_51999999906_")
        async with stack.runtime.engine.connect() as conn:
            default_agent = (
                await conn.execute(
                    select(Agent.id).where(
                        Agent.tenant_id == bistro_id, Agent.name == stack.settings.agent.name
                    )
                )
            ).scalar_one()
        assert theirs["botId"] == str(default_agent)
        assert (await bistro.ok("GET", "/lookup/tenant/51999999906"))["botId"] == str(default_agent)
        await bistro.ok("GET", "/lookup/conversation/51999999906", params={"botId": str(default_agent)})
        await shop.fails(404, "GET", "/lookup/conversation/51999999906", params={"botId": str(default_agent)})

        # Nobody reads or writes across the wall: 404, as for a conversation that does not exist.
        await empty.fails(404, "GET", "/lookup/tenant/+51999999906")
        await empty.fails(404, "GET", "/lookup/conversation/+51999999906")
        for session in (mine["sessionId"], theirs["sessionId"]):
            stranger = bistro if session == mine["sessionId"] else shop
            await stranger.fails(404, "PUT", f"/agent/conversations/{session}/sync", json={"intent": "steal"})
            await stranger.fails(
                404, "POST", f"/agent/conversations/{session}/messages", json={"role": "bot", "content": "x"}
            )
        await empty.fails(404, "PUT", f"/agent/conversations/{mine['sessionId']}/sync", json={"intent": "x"})
        assert (await shop.ok("GET", "/lookup/conversation/51999999906"))["version"] == 1
        assert (await bistro.ok("GET", "/lookup/conversation/51999999906"))["version"] == 1

        # The platform admin sees every tenant: the most recently active conversation wins.
        found = await admin.ok("GET", "/lookup/tenant/+51999999906")
        assert (found["subDomain"], found["sessionId"]) == ("bistro", theirs["sessionId"])
        await admin.ok("PUT", f"/agent/conversations/{mine['sessionId']}/sync", json={"step": "admin"})
        found = await admin.ok("GET", "/lookup/tenant/+51999999906")
        assert (found["subDomain"], found["sessionId"]) == ("default", mine["sessionId"])


async def test_openapi_documents_the_seed_routes(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        response = await stack.http.get(f"{stack.url}/openapi.json")
        assert response.status_code == 200
        paths = response.json()["paths"]
        assert set(paths[f"{BASE}/lookup/tenant/{{phoneNumber}}"]) == {"get"}
        assert set(paths[f"{BASE}/lookup/conversation/{{phoneNumber}}"]) == {"get"}
        assert set(paths[f"{BASE}/agent/conversations/{{sessionId}}/sync"]) == {"put"}
        assert set(paths[f"{BASE}/agent/conversations/{{sessionId}}/messages"]) == {"post"}
        assert set(paths[f"{BASE}/health"]) == {"get"}
        sync = paths[f"{BASE}/agent/conversations/{{sessionId}}/sync"]["put"]
        assert {"200", "404", "409", "422"} <= set(sync["responses"])
        params = {
            p["name"] for p in paths[f"{BASE}/lookup/conversation/{{phoneNumber}}"]["get"]["parameters"]
        }
        assert {"phoneNumber", "botId"} <= params
