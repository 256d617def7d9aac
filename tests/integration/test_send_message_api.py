"""Seed 000's ``POST /api/v1/integration/ai/send-message`` end to end: warelay + simulator on loopback.

Every request warelay makes to Graph passes the simulator's validator (``run_stack`` fails a test
otherwise), so each type below is also checked against Meta's rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.integration.send_helpers import add_number, audit_rows, make_key, user_writes_first
from tests.integration.stack import PHONE_NUMBER_ID, Stack, run_stack
from warelay.storage.models import Conversation, IdempotencyRecord, StatusEvent, utcnow

ROUTE = "/api/v1/integration/ai/send-message"
USER = "628123456789"

# Seed 000, section 3.4, exactly as written there.
TEXT_EXAMPLE = {"to": "628123456789", "type": "text", "text": "Halo, ada yang bisa kami bantu?"}
DOCUMENT_EXAMPLE = {
    "to": "628123456789",
    "type": "document",
    "url": "https://website.com/brosur.pdf",
    "label": "Brosur Produk Kami",
}
IMAGE_EXAMPLE = {
    "to": "628123456789",
    "type": "image",
    "url": "https://cdn.website.com/promo.jpg",
    "label": "Promo Ramadhan 2025",
}


async def send(stack: Stack, key: str | None, body: Any, **headers: str) -> Any:
    """POST the send route with the key in ``x-api-key`` (as seed 000 does)."""
    if key is not None:
        headers["x-api-key"] = key
    return await stack.http.post(f"{stack.url}{ROUTE}", json=body, headers=headers)


async def outbound(stack: Stack, wa_id: str) -> list[dict[str, Any]]:
    """The outbound messages of the user's conversation, as warelay's own API shows them."""
    conversations = (await stack.api("/api/v1/conversations", user=wa_id))["items"]
    assert conversations, f"no conversation with {wa_id}"
    messages = (await stack.api(f"/api/v1/conversations/{conversations[0]['id']}/messages"))["items"]
    return [m for m in messages if m["direction"] == "out"]


async def eventually(
    check: Callable[[], Awaitable[bool]],
    timeout: float = 10.0,  # noqa: ASYNC109  # a deadline for a condition
    explain: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Wait until ``check()`` is true (polling warelay's API); ``explain()`` says what was seen instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            seen = await explain() if explain is not None else None
            raise AssertionError(f"condition not met in {timeout} s; seen: {seen}")
        await asyncio.sleep(0.05)


def accepted_id(response: Any) -> str:
    """The outbox message id of a 202, after checking the seed's envelope."""
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["success"] is True
    assert body["data"]["status"] == "queued"
    assert body["data"]["message_ids"][0] == body["data"]["message_id"]
    message_id: str = body["data"]["message_id"]
    assert message_id.isdigit()
    return message_id


def refused(response: Any, status: int, *words: str) -> dict[str, Any]:
    """The body of a refusal in the seed's envelope, after checking its status and reason."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    for word in words:
        assert word in body["message"], body["message"]
    return body


async def test_seed_examples_text_document_image_and_video(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        key = await make_key(stack, ["messages:send"])
        await user_writes_first(stack, USER)
        ids = [accepted_id(await send(stack, key, example)) for example in (TEXT_EXAMPLE, DOCUMENT_EXAMPLE)]
        # The Bearer form of the key works as well as x-api-key.
        response = await stack.http.post(
            f"{stack.url}{ROUTE}", json=IMAGE_EXAMPLE, headers={"Authorization": f"Bearer {key}"}
        )
        ids.append(accepted_id(response))
        video = {"to": "+62 812-3456-789", "type": "video", "url": "https://cdn.website.com/promo.mp4"}
        ids.append(accepted_id(await send(stack, key, video)))
        await stack.simulator.wait_for(lambda: len(stack.simulator.messages_to(USER)) == 5, timeout=10)

        _, text, document, image, clip = stack.simulator.messages_to(USER)
        assert text.body["type"] == "text"
        assert text.body["text"]["body"] == "Halo, ada yang bisa kami bantu?"
        assert document.body["document"] == {
            "link": "https://website.com/brosur.pdf",
            "caption": "Brosur Produk Kami",
            "filename": "brosur.pdf",
        }
        assert image.body["image"] == {
            "link": "https://cdn.website.com/promo.jpg",
            "caption": "Promo Ramadhan 2025",
        }
        assert clip.body["video"] == {"link": "https://cdn.website.com/promo.mp4"}
        assert {m.number_id for m in (text, document, image, clip)} == {PHONE_NUMBER_ID}

        # Stored in the user's conversation as outbound messages, with Graph's wamid and its receipts.
        wamids = [m.wamid for m in (text, document, image, clip)]

        async def receipts() -> set[tuple[str, str]]:
            async with stack.runtime.engine.connect() as conn:
                rows = await conn.execute(
                    select(StatusEvent.provider_message_id, StatusEvent.status).where(
                        StatusEvent.provider_message_id.in_(wamids)
                    )
                )
                return {(r.provider_message_id, r.status) for r in rows}

        async def delivered() -> bool:
            return {(w, "delivered") for w in wamids} <= await receipts()

        await eventually(delivered, timeout=20, explain=receipts)
        rows = {str(m["id"]): m for m in await outbound(stack, USER)}
        assert [rows[i]["type"] for i in ids] == ["text", "document", "image", "video"]
        assert [rows[i]["provider_message_id"] for i in ids] == wamids
        # Not "delivered" on every row: on PostgreSQL a receipt stored while the sender's transaction
        # recording the wamid is still open is not applied to the row (a race between
        # outbox.record_sent and the status webhook's transaction, not in the send API).
        assert all(rows[i]["status"] in ("accepted", "sent", "delivered", "read") for i in ids)

        audit = await audit_rows(stack)
        assert [str(a.message_id) for a in audit] == ids
        assert {a.route for a in audit} == {ROUTE}
        assert {a.result for a in audit} == {"queued"}
        assert [a.type for a in audit] == ["text", "document", "image", "video"]
        assert [a.recipient for a in audit] == [USER, USER, USER, "+62 812-3456-789"]
        assert audit[0].summary == "Halo, ada yang bisa kami bantu?"
        assert audit[1].summary == "https://website.com/brosur.pdf — Brosur Produk Kami"
        assert all(a.api_key_id is not None and a.tenant_id is not None for a in audit)
        assert len({a.request_id for a in audit}) == 4


async def test_catalog_product_list_and_flow_in_meta_shapes(db_url: str) -> None:
    catalog = {
        "to": USER,
        "type": "catalog",
        "catalog": {"body": "Our menu", "thumbnail_product_retailer_id": "sku-1"},
    }
    plain_catalog = {"to": USER, "type": "catalog", "catalog": {"body": "Browse everything"}}
    product_list = {
        "to": USER,
        "type": "catalog",
        "label": "Today's picks",
        "catalog": {
            "body": "Fresh from the oven",
            "catalog_id": "146265584024623",
            "sections": [
                {"title": "Bread", "product_retailer_ids": ["sku-1", "sku-2"]},
                {"title": "Cakes", "product_retailer_ids": ["sku-9"]},
            ],
        },
    }
    flow = {
        "to": USER,
        "type": "flow",
        "flow": {
            "flow_id": "1234567890",
            "flow_cta": "Book now",
            "body": "Pick a time for your visit",
            "flow_token": "booking-42",
            "flow_action": "navigate",
            "screen": "WELCOME",
            "data": {"clinic": "north"},
        },
    }
    flow_by_label = {
        "to": USER,
        "type": "flow",
        "label": "Sign up",
        "flow": {"flow_id": "987", "body": "Join the club", "flow_action": "data_exchange"},
    }
    async with run_stack(db_url) as stack:
        key = await make_key(stack, ["messages:send"])
        await user_writes_first(stack, USER)
        for body in (catalog, plain_catalog, product_list, flow, flow_by_label):
            accepted_id(await send(stack, key, body))
        await stack.simulator.wait_for(lambda: len(stack.simulator.messages_to(USER)) == 6, timeout=10)
        sent = [m.body for m in stack.simulator.messages_to(USER)[1:]]
        types = [m["type"] for m in await outbound(stack, USER)][1:]
        audit = await audit_rows(stack)

    assert all(b["type"] == "interactive" for b in sent)
    assert sent[0]["interactive"] == {
        "type": "catalog_message",
        "body": {"text": "Our menu"},
        "action": {"name": "catalog_message", "parameters": {"thumbnail_product_retailer_id": "sku-1"}},
    }
    assert sent[1]["interactive"]["action"] == {"name": "catalog_message"}
    assert sent[2]["interactive"] == {
        "type": "product_list",
        "header": {"type": "text", "text": "Today's picks"},
        "body": {"text": "Fresh from the oven"},
        "action": {
            "catalog_id": "146265584024623",
            "sections": [
                {
                    "title": "Bread",
                    "product_items": [{"product_retailer_id": "sku-1"}, {"product_retailer_id": "sku-2"}],
                },
                {"title": "Cakes", "product_items": [{"product_retailer_id": "sku-9"}]},
            ],
        },
    }
    assert sent[3]["interactive"] == {
        "type": "flow",
        "body": {"text": "Pick a time for your visit"},
        "action": {
            "name": "flow",
            "parameters": {
                "flow_message_version": "3",
                "flow_id": "1234567890",
                "flow_cta": "Book now",
                "flow_token": "booking-42",
                "flow_action": "navigate",
                "flow_action_payload": {"screen": "WELCOME", "data": {"clinic": "north"}},
            },
        },
    }
    assert sent[4]["interactive"]["action"]["parameters"] == {
        "flow_message_version": "3",
        "flow_id": "987",
        "flow_cta": "Sign up",
        "flow_action": "data_exchange",
    }
    assert types == ["interactive"] * 5
    assert [a.type for a in audit] == ["catalog", "catalog", "catalog", "flow", "flow"]
    assert audit[2].summary == "Today's picks: Fresh from the oven [catalog 146265584024623, 3 products]"
    assert audit[3].summary == "Pick a time for your visit [flow 1234567890: Book now]"


async def test_only_active_contacts_get_messages(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        key = await make_key(stack, ["messages:send"])
        stranger = {**TEXT_EXAMPLE, "to": "628199999999"}
        refused(
            await send(stack, key, stranger), 422, "628199999999 is not an active contact", PHONE_NUMBER_ID
        )

        # A conversation that has expired no longer counts (the user has to write again).
        await user_writes_first(stack, USER)
        async with stack.runtime.engine.begin() as conn:
            await conn.execute(update(Conversation).values(expires_at=utcnow() - timedelta(seconds=1)))
        refused(await send(stack, key, TEXT_EXAMPLE), 422, "not an active contact")
        await user_writes_first(stack, USER, "Halo lagi")
        accepted_id(await send(stack, key, TEXT_EXAMPLE))
        await stack.simulator.wait_for(lambda: len(stack.simulator.messages_to(USER)) == 3, timeout=10)

        assert stack.simulator.messages_to("628199999999") == []
        audit = await audit_rows(stack)
    assert [(a.result, a.recipient) for a in audit] == [
        ("rejected", "628199999999"),
        ("rejected", USER),
        ("queued", USER),
    ]
    assert audit[0].message_id is None
    assert audit[0].reason is not None
    assert "not an active contact" in audit[0].reason
    assert audit[0].number_id is not None  # the number it was to go from
    assert audit[0].summary == "Halo, ada yang bisa kami bantu?"


async def test_keys_scopes_and_tenant_walls(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        await user_writes_first(stack, USER)
        sender = await make_key(stack, ["messages:send"])
        reader = await make_key(stack, ["conversations:read"])

        missing = refused(await send(stack, None, TEXT_EXAMPLE), 401, "missing API key")
        assert missing["data"] is None
        refused(await send(stack, "wrl_not-a-key", TEXT_EXAMPLE), 401, "invalid API key")
        refused(await send(stack, reader, TEXT_EXAMPLE), 403, "messages:send")
        # A key comes before the body: no key and a broken body is still a 401.
        response = await stack.http.post(
            f"{stack.url}{ROUTE}", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        refused(response, 401)

        # Another tenant, with its own number, contact and key.
        await add_number(stack, tenant="acme", phone_number_id="200000000000001", display="15550000001")
        acme = await make_key(stack, ["messages:send"], tenant="acme")
        await user_writes_first(stack, "628777000111", number_id="200000000000001")
        # acme cannot send from the default tenant's number, nor reach its contacts from its own.
        refused(await send(stack, acme, {**TEXT_EXAMPLE, "from": PHONE_NUMBER_ID}), 404, PHONE_NUMBER_ID)
        refused(await send(stack, acme, {**TEXT_EXAMPLE, "from": "15550783881"}), 404)
        refused(await send(stack, acme, TEXT_EXAMPLE), 422, "not an active contact", "200000000000001")
        # ... nor the default tenant acme's.
        refused(
            await send(stack, sender, {**TEXT_EXAMPLE, "to": "628777000111"}), 422, "not an active contact"
        )
        accepted_id(await send(stack, acme, {**TEXT_EXAMPLE, "to": "628777000111"}))
        await stack.simulator.wait_for(
            lambda: len(stack.simulator.messages_to("628777000111")) == 2, timeout=10
        )

        assert len(stack.simulator.messages_to(USER)) == 1  # the agent's answer only
        last = stack.simulator.messages_to("628777000111")[-1]
        assert last.number_id == "200000000000001"
        audit = await audit_rows(stack)
    # 401s and 403s come before anything is known of the caller; the refusals of known callers are audited.
    assert [a.result for a in audit] == ["rejected"] * 4 + ["queued"]
    acme_rows = [a for a in audit if a.tenant_id is not None and a.tenant_id != audit[-1].tenant_id]
    assert len(acme_rows) == 1  # the default tenant's refusal is filed under the default tenant


async def test_idempotency_key_replays_the_first_answer(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        key = await make_key(stack, ["messages:send"])
        other = await make_key(stack, ["messages:send"])
        # Refused requests are not remembered: the same key works once the user has written.
        refused(await send(stack, key, TEXT_EXAMPLE, **{"Idempotency-Key": "reply-1"}), 422)
        await user_writes_first(stack, USER)
        first = await send(stack, key, TEXT_EXAMPLE, **{"Idempotency-Key": "reply-1"})
        again = await send(stack, key, dict(reversed(TEXT_EXAMPLE.items())), **{"Idempotency-Key": "reply-1"})
        assert accepted_id(again) == accepted_id(first)
        assert again.json() == first.json()
        assert again.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        changed = {**TEXT_EXAMPLE, "text": "Something else"}
        refused(await send(stack, key, changed, **{"Idempotency-Key": "reply-1"}), 422, "different request")
        # Keys are kept per API key: another key's "reply-1" is another request.
        third = await send(stack, other, TEXT_EXAMPLE, **{"Idempotency-Key": "reply-1"})
        assert accepted_id(third) != accepted_id(first)
        refused(
            await send(stack, key, TEXT_EXAMPLE, **{"Idempotency-Key": "k" * 256}), 422, "Idempotency-Key"
        )
        # Retries racing each other send once, whichever commits first.
        race = {**TEXT_EXAMPLE, "text": "Race"}
        racing = await asyncio.gather(
            *(send(stack, key, race, **{"Idempotency-Key": "race-1"}) for _ in range(6))
        )
        assert len({accepted_id(r) for r in racing}) == 1
        # After 24 hours a key is forgotten: the same key may name a new message.
        async with stack.runtime.engine.begin() as conn:
            await conn.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.idempotency_key == "reply-1")
                .values(created_at=utcnow() - timedelta(hours=24, seconds=1))
            )
        later = await send(stack, key, changed, **{"Idempotency-Key": "reply-1"})
        assert accepted_id(later) != accepted_id(first)
        await stack.simulator.wait_for(lambda: len(stack.simulator.messages_to(USER)) == 5, timeout=10)
        await asyncio.sleep(0.3)  # a second send of a replayed request would show up by now
        texts = [m.text for m in stack.simulator.messages_to(USER)]
        audit = await audit_rows(stack)
    assert texts[1:] == [TEXT_EXAMPLE["text"], TEXT_EXAMPLE["text"], "Race", "Something else"]
    assert [a.result for a in audit] == [
        "rejected",
        "queued",
        "rejected",
        "queued",
        "rejected",
        "queued",
        "queued",
    ]


async def test_from_picks_the_number_when_the_tenant_has_several(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        key = await make_key(stack, ["messages:send"])
        await add_number(
            stack, tenant="default", phone_number_id="300000000000002", display="+1 555 000 0002"
        )
        await user_writes_first(stack, USER, number_id="300000000000002")
        refused(
            await send(stack, key, TEXT_EXAMPLE), 422, "2 numbers", PHONE_NUMBER_ID, "300000000000002", "from"
        )
        # By phone_number_id, or by display number; the user is a contact of the second number only.
        accepted_id(await send(stack, key, {**TEXT_EXAMPLE, "from": "300000000000002"}))
        accepted_id(await send(stack, key, {**TEXT_EXAMPLE, "from": "15550000002"}))
        refused(
            await send(stack, key, {**TEXT_EXAMPLE, "from": PHONE_NUMBER_ID}), 422, "not an active contact"
        )
        await stack.simulator.wait_for(lambda: len(stack.simulator.messages_to(USER)) == 3, timeout=10)
        assert {m.number_id for m in stack.simulator.messages_to(USER)} == {"300000000000002"}


INVALID: list[tuple[dict[str, Any], str]] = [
    ({"to": USER, "type": "text"}, "text"),
    ({"to": USER, "type": "text", "text": "hi", "url": "https://x.example/a.png"}, "url"),
    ({"to": USER, "type": "image", "url": "ftp://x.example/a.png"}, "url"),
    ({"to": USER, "type": "image"}, "url"),
    ({"to": USER, "type": "sticker", "url": "https://x.example/a.webp"}, "type"),
    ({"to": "not a number", "type": "text", "text": "hi"}, "to"),
    ({"to": USER, "type": "text", "text": "hi", "caption": "x"}, "caption"),
    ({"to": USER, "type": "image", "url": "https://x.example/a.png", "label": "x" * 1025}, "image.caption"),
    ({"to": USER, "type": "catalog"}, "catalog"),
    ({"to": USER, "type": "catalog", "label": "Hi", "catalog": {"body": "Menu"}}, "label"),
    (
        {"to": USER, "type": "catalog", "catalog": {"body": "Menu", "catalog_id": "1", "sections": []}},
        "catalog.sections",
    ),
    (
        {
            "to": USER,
            "type": "catalog",
            "catalog": {"body": "Menu", "catalog_id": "1", "sections": [{"product_retailer_ids": ["a"]}]},
        },
        "label",
    ),
    (
        {
            "to": USER,
            "type": "catalog",
            "label": "Menu",
            "catalog": {
                "body": "Menu",
                "catalog_id": "1",
                "sections": [{"product_retailer_ids": ["a"]}, {"product_retailer_ids": ["b"]}],
            },
        },
        "sections[0].title",
    ),
    ({"to": USER, "type": "flow", "flow": {"flow_id": "1", "body": "Go"}}, "flow.flow_cta"),
    ({"to": USER, "type": "flow", "flow": {"flow_id": "1", "body": "Go", "flow_cta": "x" * 21}}, "flow_cta"),
    (
        {"to": USER, "type": "flow", "flow": {"flow_id": "1", "body": "Go", "flow_cta": "Go", "screen": ""}},
        "flow.screen",
    ),
]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_invalid_requests_are_refused_clearly_and_audited(db_url: str) -> None:
    async with run_stack(db_url) as stack:
        key = await make_key(stack, ["messages:send"])
        await user_writes_first(stack, USER)
        for body, field in INVALID:
            answer = refused(await send(stack, key, body), 422, field)
            if answer["data"] is not None:
                assert any(field in p["field"] for p in answer["data"]["errors"]), (body, answer)
        broken = await stack.http.post(
            f"{stack.url}{ROUTE}",
            content=b"{not json",
            headers={"x-api-key": key, "Content-Type": "application/json"},
        )
        assert refused(broken, 422, "not valid JSON")["data"]["errors"][0]["field"].startswith("body")
        await asyncio.sleep(0.3)
        assert len(stack.simulator.messages_to(USER)) == 1  # the agent's answer only
        audit = await audit_rows(stack)
    assert [a.result for a in audit] == ["rejected"] * (len(INVALID) + 1)
    assert all(a.reason for a in audit)
    assert (audit[0].recipient, audit[0].type) == (USER, "text")


async def test_a_long_text_is_split_into_parts(db_url: str) -> None:
    paragraph = ("Kami punya banyak pilihan untuk Anda. " * 50).strip()
    text = "\n\n".join([paragraph] * 3)  # ~5,700 characters
    async with run_stack(db_url) as stack:
        key = await make_key(stack, ["messages:send"])
        await user_writes_first(stack, USER)
        response = await send(stack, key, {"to": USER, "type": "text", "text": text})
        accepted_id(response)
        ids = response.json()["data"]["message_ids"]
        await stack.simulator.wait_for(lambda: len(stack.simulator.messages_to(USER)) == 3, timeout=10)
        parts = [m.body["text"]["body"] for m in stack.simulator.messages_to(USER)[1:]]
        audit = await audit_rows(stack)
    assert len(ids) == 2
    assert all(len(p) <= 4096 for p in parts)
    assert "\n\n".join(parts) == text
    assert [str(a.message_id) for a in audit] == ids
    assert len({a.request_id for a in audit}) == 1
