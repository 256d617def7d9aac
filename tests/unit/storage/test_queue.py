"""The work queue on both engines: lanes, claims, leases, promotion, redelivery, dead letters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from warelay.crypto import SecretBox
from warelay.domain import InboundMessage, OutText, StatusUpdate, TextContent, UserRef
from warelay.inbox.store import (
    TURN,
    Claimed,
    Delivery,
    Inbox,
    LeaseOffer,
    dead_letter_items,
    finish_items,
    promote_stranded,
)
from warelay.numbers import NumberFields, NumberInfo, NumberRegistry, ensure_tenant, upsert_number
from warelay.outbound.outbox import Draft, enqueue, record_sent
from warelay.storage.direct import Database, Tx
from warelay.storage.models import WorkItem

BOX = SecretBox(["q" * 32])


async def _number(engine: AsyncEngine) -> NumberInfo:
    tenant = await ensure_tenant(engine, "shop")
    await upsert_number(
        engine, BOX, tenant_id=tenant, agent_id=None, fields=NumberFields(phone_number_id="pn1")
    )
    registry = NumberRegistry(engine, BOX)
    await registry.load()
    number = registry.by_phone_number_id("pn1")
    assert number is not None
    return number


def _text(number: NumberInfo, wa_id: str, wamid: str, second: int) -> InboundMessage:
    return InboundMessage(
        provider_message_id=wamid,
        number_id=number.phone_number_id,
        sender=UserRef(wa_id=wa_id, profile_name="U"),
        timestamp=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=second),
        type="text",
        content=TextContent(body=wamid),
    )


async def _ids(tx: Tx, claimed: list[Claimed]) -> list[int]:
    return [c.message_id for c in claimed]


async def _claim(inbox: Inbox, owner: str, limit: int = 10) -> list[Claimed]:
    claimed, loaded = await inbox.claim(TURN, limit=limit, owner=owner, lease_seconds=30, load=_ids)
    # The loader ran in the claiming transaction, over exactly the claimed items.
    assert loaded == ([c.message_id for c in claimed] if claimed else None)
    return claimed


async def _states(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(WorkItem.state).order_by(WorkItem.id))).scalars())


async def test_lane_runs_one_item_at_a_time_in_order(engine: AsyncEngine, database: Database) -> None:
    number = await _number(engine)
    inbox = Inbox(database, conversation_expiry=timedelta(hours=24))
    msgs = [(number, _text(number, "111", f"w{i}", i)) for i in range(3)]
    other = [(number, _text(number, "222", "x0", 0))]
    (result,) = (await inbox.store([Delivery(messages=msgs + other)])).results
    assert len(result.stored) == 4
    ids = {pid: message_id for pid, message_id, _ in result.stored}
    # Items are ordered by the users' timestamps: w0, x0, w1, w2; only lane heads are pending.
    assert await _states(engine) == ["pending", "pending", "waiting", "waiting"]

    claimed = await _claim(inbox, "t", 10)
    assert len(claimed) == 2  # the two lane heads only
    first = next(c for c in claimed if c.conversation_id == result.stored[0][2])
    assert await _claim(inbox, "t", 10) == []

    assert (await database.write(finish_items, [first])).ours == {first.id}
    (nxt,) = await _claim(inbox, "t", 10)
    assert nxt.message_id == ids["w1"]

    assert await database.write(dead_letter_items, [(nxt, {"message": "boom"})], datetime.now(UTC)) == {
        nxt.id
    }
    (last,) = await _claim(inbox, "t", 10)
    assert last.message_id == ids["w2"]


async def test_redelivery_in_one_batch_and_later_is_stored_once(
    engine: AsyncEngine, database: Database
) -> None:
    number = await _number(engine)
    inbox = Inbox(database, conversation_expiry=timedelta(hours=24))
    msg = (number, _text(number, "111", "dup", 0))
    results = (await inbox.store([Delivery(messages=[msg]), Delivery(messages=[msg])])).results
    assert [len(r.stored) for r in results] == [1, 0]
    assert results[1].duplicates == ("dup",)
    (again,) = (await inbox.store([Delivery(messages=[msg])])).results
    assert again.stored == ()
    assert again.duplicates == ("dup",)
    assert await _states(engine) == ["pending"]


async def test_expired_lease_is_claimed_again_and_fences_the_old_owner(
    engine: AsyncEngine, database: Database
) -> None:
    number = await _number(engine)
    inbox = Inbox(database, conversation_expiry=timedelta(hours=24))
    await inbox.store([Delivery(messages=[(number, _text(number, "111", "w", 0))])])
    (old,) = await _claim(inbox, "a", 1)
    async with engine.begin() as conn:
        await conn.execute(update(WorkItem).values(leased_until=datetime.now(UTC) - timedelta(seconds=1)))
    (new,) = await _claim(inbox, "b", 1)
    assert new.id == old.id
    assert new.attempts == 2
    assert (await database.write(finish_items, [old])).ours == set()  # the lapsed lease cannot finish it
    assert (await database.write(finish_items, [new])).ours == {new.id}


async def test_stranded_lane_is_promoted(engine: AsyncEngine, database: Database) -> None:
    number = await _number(engine)
    inbox = Inbox(database, conversation_expiry=timedelta(hours=24))
    await inbox.store([Delivery(messages=[(number, _text(number, "111", f"w{i}", i)) for i in range(2)])])
    async with engine.begin() as conn:
        await conn.execute(update(WorkItem).where(WorkItem.state == "pending").values(state="dead"))
    assert await database.write(promote_stranded) == 1
    assert await database.write(promote_stranded) == 0
    assert await _states(engine) == ["dead", "pending"]


async def test_new_lane_heads_are_leased_to_the_offering_process(
    engine: AsyncEngine, database: Database
) -> None:
    number = await _number(engine)
    inbox = Inbox(database, conversation_expiry=timedelta(hours=24))
    msgs = [(number, _text(number, "111", f"w{i}", i)) for i in range(2)]
    other = [(number, _text(number, "222", "x0", 0))]
    stored = await inbox.store([Delivery(messages=msgs + other)], offer=LeaseOffer("me", seconds=30, limit=5))
    # The two lane heads are ours at once (attempt 1); the second message of 111 waits behind its head.
    assert [c.attempts for c in stored.leased] == [1, 1]
    assert await _states(engine) == ["leased", "leased", "waiting"]
    assert await _claim(inbox, "other") == []  # nothing left to claim

    head = next(c for c in stored.leased if c.message_id == stored.results[0].stored[0][1])
    finished = await database.write(finish_items, [head], LeaseOffer("me", seconds=30, limit=1))
    assert finished.ours == {head.id}
    (nxt,) = finished.leased  # the conversation's next message, leased to us in the same transaction
    assert (nxt.conversation_id, nxt.attempts, finished.pending) == (head.conversation_id, 1, 0)


async def test_an_offer_too_small_leases_nothing_and_leaves_work_ready(
    engine: AsyncEngine, database: Database
) -> None:
    number = await _number(engine)
    inbox = Inbox(database, conversation_expiry=timedelta(hours=24))
    msgs = [(number, _text(number, f"{i}", f"w{i}", i)) for i in range(3)]
    stored = await inbox.store([Delivery(messages=msgs)], offer=LeaseOffer("me", seconds=30, limit=2))
    assert stored.leased == []  # all or nothing: three new heads, room for two
    assert await _states(engine) == ["pending", "pending", "pending"]
    assert len(await _claim(inbox, "other")) == 3


# PostgreSQL only: SQLite runs one write transaction at a time, so the race cannot happen there (and
# its transactions never wait inside, as this test's first one must).
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_receipt_stored_while_its_send_is_being_recorded_is_applied(
    engine: AsyncEngine, database: Database
) -> None:
    # The race behind "accepted forever" on PostgreSQL: the "sent" receipt arrives while the
    # transaction recording the send's wamid is still open. Without lock_receipts neither saw the other.
    number = await _number(engine)
    inbox = Inbox(database, conversation_expiry=timedelta(hours=24))
    await inbox.store([Delivery(messages=[(number, _text(number, "62811", "wamid.in1", 0))])])
    conversation_id = (await database.read(_fetch_one, "SELECT conversation_id FROM messages"))[0]
    queued = await database.write(
        enqueue,
        [Draft(conversation_id=conversation_id, number_id=number.id, content=OutText(body="hi"))],
        _now(),
    )
    (message_id,) = queued.ids
    recording = asyncio.Event()
    release = asyncio.Event()

    async def record(tx: Tx) -> None:
        await record_sent(tx, [(message_id, number.id, "wamid.out1")], _now())
        recording.set()
        await release.wait()  # the transaction stays open while the receipt comes in

    sender = asyncio.create_task(database.write(record))
    await recording.wait()
    receipt = StatusUpdate(
        provider_message_id="wamid.out1", number_id=number.phone_number_id, status="sent", timestamp=_now()
    )
    intake = asyncio.create_task(inbox.store([Delivery(statuses=[(number, receipt)])]))
    await asyncio.sleep(0.3)
    release.set()
    await asyncio.gather(sender, intake)
    status = await database.read(
        _fetch_one, "SELECT status FROM messages WHERE provider_message_id = 'wamid.out1'"
    )
    assert status[0] == "sent"


async def _fetch_one(tx: Tx, query: str) -> Any:
    return (await tx.fetch(query))[0]


def _now() -> datetime:
    return datetime.now(UTC)
