"""External agents: each inbound message is stored first, then delivered to the platform in order per
conversation, never twice — pushed (signed, retried with backoff until dead-lettered) or polled with a
cursor that acknowledges what came before it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.fake_agent_platform import FakeAgentPlatform
from tests.fake_ai_platform import running_platform
from tests.integration.stack import PHONE_NUMBER_ID, Stack, run_stack
from tests.integration.test_ai_agent_oauth import ai_config, connect
from tests.integration.test_workers import worker_process
from warelay.crypto import new_api_key
from warelay.integrations.ai_platform import CALLBACK_PATH
from warelay.storage.models import ApiKey, Tenant, utcnow

SECRET = "whsec_test-signing-secret-0123456789"


def agents_file(tmp_path: Path, **config: Any) -> str:
    lines = "".join(f"      {k}: {v!r}\n" for k, v in config.items())
    path = tmp_path / "agents.yaml"
    path.write_text(
        f"agents:\n  - name: platform-bot\n    kind: external\n    numbers: ['{PHONE_NUMBER_ID}']\n"
        f"    config:\n      signing_secret: '{SECRET}'\n{lines}",
        encoding="utf-8",
    )
    return str(path)


async def wait_until(predicate: Any, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def event_states(stack: Stack) -> list[tuple[str, str, int]]:
    async with stack.runtime.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT delivery_id, state, attempts FROM agent_events ORDER BY id")
        )
        return [(r[0], r[1], int(r[2])) for r in rows]


async def settled(stack: Stack, expected: list[tuple[str, int]], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait until the events' (state, attempts) are ``expected`` (recorded just after each answer)."""
    deadline = time.monotonic() + timeout
    while (found := [(s, a) for _, s, a in await event_states(stack)]) != expected:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)


async def tenant_key(stack: Stack, scope: str = "conversations:read") -> str:
    key = new_api_key()
    async with stack.runtime.engine.begin() as conn:
        tenant_id = (
            await conn.execute(sa.select(Tenant.id).where(Tenant.subdomain == "default"))
        ).scalar_one()
        await conn.execute(
            sa.insert(ApiKey).values(
                tenant_id=tenant_id,
                name="platform",
                prefix=key[:12],
                key_hash=stack.runtime.box.hash_key(key),
                scopes=[scope],
                created_at=utcnow(),
            )
        )
    return key


async def test_events_are_pushed_signed_in_order_and_nothing_is_sent_to_the_user(
    db_url: str, tmp_path: Path
) -> None:
    async with FakeAgentPlatform() as platform:
        path = agents_file(tmp_path, webhook_url=f"{platform.url}/hooks/whatsapp")
        async with run_stack(db_url, agents_file=path) as stack:
            user = "15551300001"
            await stack.simulator.user_sends(user, "hello", name="Ana")
            await stack.simulator.user_sends(user, "I want two lattes")
            await wait_until(lambda: len(platform.accepted()) == 2)
            first, second = platform.accepted()
            assert [d.payload["message"]["text"] for d in (first, second)] == ["hello", "I want two lattes"]
            for delivery in (first, second):
                assert delivery.path == "/hooks/whatsapp"
                assert delivery.signature_valid(SECRET)
                assert not delivery.signature_valid("another secret")
                assert delivery.headers["x-warelay-event"] == "message.received"
                assert delivery.headers["x-warelay-delivery"] == delivery.payload["id"]
                assert "authorization" not in delivery.headers  # the tenant connected no platform
            event = first.payload
            assert event["event"] == "message.received"
            assert event["tenant"] == "default"
            assert event["number"] == {"phone_number_id": PHONE_NUMBER_ID}
            assert event["contact"]["userId"] == user
            assert event["contact"]["name"] == "Ana"
            assert event["conversation"]["sessionId"] == second.payload["conversation"]["sessionId"]
            assert event["message"]["type"] == "text"
            await asyncio.sleep(0.5)
            assert stack.simulator.messages_to(user) == []  # the platform answers through send-message
            assert len(platform.deliveries) == 2
            await settled(stack, [("delivered", 1), ("delivered", 1)])


async def test_failed_pushes_are_retried_in_order_then_dead_lettered(db_url: str, tmp_path: Path) -> None:
    async with FakeAgentPlatform(failures=3) as platform:
        path = agents_file(tmp_path, webhook_url=f"{platform.url}/hook", max_delivery_attempts=3)
        async with run_stack(db_url, agents_file=path) as stack:
            user = "15551300002"
            await stack.simulator.user_sends(user, "first")
            await stack.simulator.user_sends(user, "second")
            await wait_until(lambda: len(platform.accepted()) == 1)
            # The first event failed three times (its last attempt) and is dead; only then did the
            # second one go, and it got through.
            texts = [(d.payload["message"]["text"], d.answered) for d in platform.deliveries]
            assert texts == [("first", 500), ("first", 500), ("first", 500), ("second", 200)]
            await settled(stack, [("dead", 3), ("delivered", 1)])


async def test_a_polling_platform_reads_events_with_a_cursor_and_a_long_poll(
    db_url: str, tmp_path: Path
) -> None:
    path = agents_file(tmp_path, delivery="poll")
    async with run_stack(db_url, agents_file=path) as stack:
        key = await tenant_key(stack)
        headers = {"x-api-key": key}
        url = f"{stack.url}/api/v1/integration/ai/messages"
        empty = await stack.http.get(url, headers=headers)
        assert empty.status_code == 200
        assert empty.json() == {"items": [], "next_cursor": "0"}

        waiting = asyncio.create_task(stack.http.get(url, params={"wait": 10}, headers=headers, timeout=20))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await stack.simulator.user_sends("15551300003", "hello")
        first = await waiting
        assert time.monotonic() - started < 5
        assert [e["message"]["text"] for e in first.json()["items"]] == ["hello"]
        cursor = first.json()["next_cursor"]

        await stack.simulator.user_sends("15551300003", "still there?")
        await settled(stack, [("pending", 0), ("pending", 0)])
        again = await stack.http.get(url, params={"wait": 10}, headers=headers, timeout=20)
        # Without the cursor the first event is still unacknowledged; with it, only the new one comes.
        assert [e["message"]["text"] for e in again.json()["items"]] == ["hello", "still there?"]
        page = await stack.http.get(url, params={"after": cursor, "wait": 10}, headers=headers, timeout=20)
        assert [e["message"]["text"] for e in page.json()["items"]] == ["still there?"]
        states = await event_states(stack)
        assert [s for _, s, _ in states] == ["delivered", "pending"]

        assert (await stack.http.get(url)).status_code == 401
        admin_only = await stack.http.get(
            url, headers={"x-api-key": await tenant_key(stack, "messages:send")}
        )
        assert admin_only.status_code == 403
        assert (await stack.http.get(url, params={"after": "x"}, headers=headers)).status_code == 422
        assert (await stack.http.get(url, params={"wait": 99}, headers=headers)).status_code == 422


async def test_a_worker_killed_while_pushes_fail_delivers_each_event_once_after_restart(
    db_url: str, tmp_path: Path
) -> None:
    async with FakeAgentPlatform(failures=2) as platform:
        path = agents_file(tmp_path, webhook_url=f"{platform.url}/hook")
        # A push the killed worker had claimed is another worker's once its lease lapses (8 s here).
        async with run_stack(
            db_url,
            agents_file=path,
            run_workers=False,
            worker={"lease_seconds": 5},
            outbound={"request_timeout_seconds": 3},
        ) as stack:
            user = "15551300004"
            with worker_process(stack) as doomed:
                await stack.simulator.user_sends(user, "one")
                await stack.simulator.user_sends(user, "two")
                await wait_until(lambda: len(platform.deliveries) >= 1, timeout=20)
                doomed.kill()
                doomed.wait()
            with worker_process(stack):
                await wait_until(lambda: len(platform.accepted()) == 2, timeout=30)
                await asyncio.sleep(1.0)
            accepted = platform.accepted()
            assert [d.payload["message"]["text"] for d in accepted] == ["one", "two"]
            assert len({d.headers["x-warelay-delivery"] for d in accepted}) == 2
            assert len(platform.accepted()) == 2


async def test_pushes_carry_the_tenants_oauth_token_to_the_agent_base_url(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tenant connected its AI platform over OAuth (seed 000); events go to AI_AGENT_BASE_URL +
    # /webhooks/warelay with the tenant's access token.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # Authlib's server refuses plain HTTP otherwise
    path = agents_file(tmp_path)
    with running_platform() as oauth:
        async with FakeAgentPlatform() as platform:
            ai = ai_config(oauth, agent_base_url=platform.url)
            async with run_stack(db_url, agents_file=path, ai=ai) as stack:
                oauth.allow_redirect(stack.url + CALLBACK_PATH)
                async with stack.runtime.engine.connect() as conn:
                    tenant_id = (
                        await conn.execute(sa.select(Tenant.id).where(Tenant.subdomain == "default"))
                    ).scalar_one()
                token = await connect(stack.runtime.engine, stack.runtime.box, stack.settings, tenant_id)
                await stack.simulator.user_sends("15551300005", "hello platform")
                await wait_until(lambda: len(platform.accepted()) == 1)
            (delivery,) = platform.accepted()
            assert delivery.path == "/webhooks/warelay"
            assert delivery.headers["authorization"] == f"Bearer {token}"
            assert delivery.signature_valid(SECRET)


async def test_a_reply_sent_through_send_message_reports_its_statuses_to_the_platform(
    db_url: str, tmp_path: Path
) -> None:
    async with FakeAgentPlatform() as platform:
        path = agents_file(tmp_path, webhook_url=f"{platform.url}/hook")
        async with run_stack(db_url, agents_file=path) as stack:
            user = "15551300006"
            await stack.simulator.user_sends(user, "is the shop open?")
            await wait_until(lambda: len(platform.accepted()) == 1)
            key = await tenant_key(stack, "messages:send")
            sent = await stack.http.post(
                f"{stack.url}/api/v1/integration/ai/send-message",
                json={"to": user, "type": "text", "text": "Yes, until 20:00."},
                headers={"x-api-key": key},
            )
            assert sent.status_code == 202, sent.text
            message_id = sent.json()["data"]["message_id"]
            assert await stack.replies_to(user, 1) == ["Yes, until 20:00."]
            # The simulator reports sent, delivered and read; each reaches the platform, in order.
            await wait_until(lambda: len(platform.accepted()) == 4)
            statuses = [d.payload for d in platform.accepted()[1:]]
            assert [s["event"] for s in statuses] == ["message.status"] * 3
            assert [s["message"]["status"] for s in statuses] == ["sent", "delivered", "read"]
            assert {s["message"]["id"] for s in statuses} == {str(message_id)}
            assert all(d.signature_valid(SECRET) for d in platform.accepted())
