"""The durable inbox: insert-once storage of webhooks, and the work queue (claim, lease, retry, dead-letter).

Where it sits: the webhook route hands parsed deliveries to :meth:`Inbox.store`, which writes
contacts, conversations, messages, turn work items and delivery receipts in ONE transaction per
group of deliveries (group commit via :class:`warelay.batching.Batcher`); the route answers 200
only after that commit. Workers then :meth:`claim` work items in order within a conversation and
concurrently across conversations, under leases that lapse when a process dies.

Insert-once: a message is unique per (number, provider message id). A redelivery is recognised
before anything is written and, when redeliveries race across processes, by the unique index
(``ON CONFLICT DO NOTHING``), so a message is stored once and gets one work item: one reply.
Lanes: the work items of one conversation and kind form a lane that runs one item at a time, in
id order. Only a lane's head is ``pending`` (claimable); the items behind it wait in ``waiting``
and the next one is promoted when the head finishes or is dead-lettered, so a claim is a plain
indexed scan of ready items, however long the queue. Writers that touch a lane lock its
conversation row first (PostgreSQL), so an insert and a promotion never miss each other.

Every statement here is written for both SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased

from warelay.agents.base import describe_inbound
from warelay.domain import DeliveryStatus, InboundMessage, StatusUpdate, UserRef
from warelay.numbers import NumberInfo
from warelay.storage.db import read_only
from warelay.storage.models import Contact, Conversation, Message, StatusEvent, WorkItem, utcnow
from warelay.storage.sql import is_postgres, upsert

log = logging.getLogger("warelay.inbox")

TURN = "turn"
SEND = "send"
_ACTIVE_STATES = ("waiting", "pending", "leased")
_HEAD_STATES = ("pending", "leased")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook's worth of routed events: messages and statuses for numbers warelay knows."""

    messages: Sequence[tuple[NumberInfo, InboundMessage]] = ()
    statuses: Sequence[tuple[NumberInfo, StatusUpdate]] = ()


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What storing a delivery did: the new messages (with their conversations) and duplicates skipped."""

    stored: tuple[tuple[str, int, str], ...] = ()  # (provider message id, message id, conversation id)
    duplicates: tuple[str, ...] = ()
    statuses_new: int = 0


@dataclass(frozen=True, slots=True)
class Claimed:
    """A work item this process holds a lease on; ``lease`` fences every later write."""

    id: int
    kind: str
    conversation_id: str
    message_id: int
    attempts: int
    lease: str


@dataclass(slots=True)
class _Batch:
    messages: list[tuple[NumberInfo, InboundMessage]] = field(default_factory=list)
    statuses: list[tuple[NumberInfo, StatusUpdate]] = field(default_factory=list)


def new_session_id(phone_number_id: str, user_key: str, now: datetime) -> str:
    """A session id in the seeds' shape: ``<bot>_<user>_<epoch>_<random>``."""
    return f"{phone_number_id}_{user_key[:128]}_{int(now.timestamp())}_{secrets.token_hex(4)}"


def _by_number(
    fresh: Sequence[tuple[NumberInfo, InboundMessage]], contacts: dict[tuple[int, str], int]
) -> dict[tuple[NumberInfo, str], int]:
    """Contact ids keyed by (number, user key) for the messages of a batch."""
    return {(n, m.sender.key): contacts[(n.id, m.sender.key)] for n, m in fresh}


def _clip(value: str | None, limit: int) -> str | None:
    return value if value is None or len(value) <= limit else value[:limit]


def message_record(message: InboundMessage) -> dict[str, Any]:
    """The stored ``content`` of an inbound message: the domain model without the raw payload."""
    return message.model_dump(mode="json", exclude={"raw"}, exclude_none=True)


def message_from_record(content: dict[str, Any], raw: dict[str, Any] | None) -> InboundMessage:
    """Rebuild the domain message stored by :func:`message_record`."""
    return InboundMessage.model_validate({**content, "raw": raw or {}})


class Inbox:
    """Durable storage of inbound traffic and the queue of work it creates."""

    def __init__(self, engine: AsyncEngine, *, conversation_expiry: timedelta) -> None:
        self.engine = engine
        self.expiry = conversation_expiry

    # ------------------------------------------------------------------------------------ storing

    async def store(self, deliveries: Sequence[Delivery]) -> list[DeliveryResult]:
        """Store a group of deliveries in one transaction; one result per delivery."""
        async with self.engine.begin() as conn:
            return await self._store(conn, deliveries)

    async def _store(self, conn: AsyncConnection, deliveries: Sequence[Delivery]) -> list[DeliveryResult]:
        now = utcnow()
        first_owner: dict[tuple[int, str], int] = {}
        batch = _Batch()
        owners: list[list[tuple[int, str]]] = []
        for index, delivery in enumerate(deliveries):
            keys = []
            for number, message in delivery.messages:
                key = (number.id, message.provider_message_id)
                keys.append(key)
                if key not in first_owner:
                    first_owner[key] = index
                    batch.messages.append((number, message))
            owners.append(keys)
            batch.statuses.extend(delivery.statuses)

        existing = await self._existing_ids(conn, list(first_owner))
        fresh = [(n, m) for n, m in batch.messages if (n.id, m.provider_message_id) not in existing]
        inserted: dict[tuple[int, str], tuple[int, str]] = {}
        if fresh:
            inserted = await self._insert_messages(conn, fresh, now)
        new_statuses = await self._insert_statuses(conn, batch.statuses, now) if batch.statuses else 0

        # A message redelivered inside this very batch counts as stored for its first delivery only.
        results = []
        for index, keys in enumerate(owners):
            mine = [k for k in keys if k in inserted and first_owner[k] == index]
            stored = tuple((pid, *inserted[(nid, pid)]) for nid, pid in mine)
            dupes = tuple(pid for nid, pid in keys if (nid, pid) not in mine)
            results.append(DeliveryResult(stored=stored, duplicates=dupes, statuses_new=new_statuses))
        return results

    async def _existing_ids(self, conn: AsyncConnection, keys: list[tuple[int, str]]) -> set[tuple[int, str]]:
        if not keys:
            return set()
        by_number: dict[int, list[str]] = {}
        for number_id, pid in keys:
            by_number.setdefault(number_id, []).append(pid)
        found: set[tuple[int, str]] = set()
        for number_id, pids in by_number.items():
            rows = await conn.execute(
                select(Message.provider_message_id).where(
                    Message.number_id == number_id, Message.provider_message_id.in_(pids)
                )
            )
            found.update((number_id, pid) for (pid,) in rows if pid is not None)
        return found

    async def _insert_messages(
        self, conn: AsyncConnection, fresh: list[tuple[NumberInfo, InboundMessage]], now: datetime
    ) -> dict[tuple[int, str], tuple[int, str]]:
        contacts = await self.upsert_contacts(conn, [(n, m.sender) for n, m in fresh], now, inbound=True)
        conversations = await self.active_conversations(
            conn, {cid: (number, key) for (number, key), cid in _by_number(fresh, contacts).items()}, now
        )

        # Keep the user's order inside each conversation: by provider timestamp, then arrival.
        ordered = sorted(enumerate(fresh), key=lambda pair: (pair[1][1].timestamp, pair[0]))
        rows = []
        for _, (number, message) in ordered:
            contact_id = contacts[(number.id, message.sender.key)]
            rows.append(
                {
                    "conversation_id": conversations[contact_id],
                    "number_id": number.id,
                    "direction": "in",
                    "type": _clip(message.type, 40) or "unknown",
                    "provider_message_id": message.provider_message_id,
                    "text": describe_inbound(message),
                    "content": message_record(message),
                    "status": "received",
                    "status_rank": 0,
                    "raw": message.raw,
                    "reply_to": _clip(message.context.reply_to_id if message.context else None, 200),
                    "part": 0,
                    "provider_timestamp": message.timestamp,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        stmt = (
            upsert(conn, Message)
            .on_conflict_do_nothing(index_elements=["number_id", "provider_message_id"])
            .returning(Message.id, Message.number_id, Message.provider_message_id, Message.conversation_id)
        )
        returned = (await conn.execute(stmt, rows)).all()
        inserted = {(r.number_id, r.provider_message_id): (r.id, r.conversation_id) for r in returned}

        wants_reply = {(n.id, m.provider_message_id) for n, m in fresh if m.wants_reply}
        await add_work(
            conn,
            TURN,
            [
                (conv_id, msg_id)
                for key, (msg_id, conv_id) in sorted(inserted.items(), key=lambda kv: kv[1][0])
                if key in wants_reply
            ],
            now,
        )
        return inserted

    async def upsert_contacts(
        self,
        conn: AsyncConnection,
        users: Sequence[tuple[NumberInfo, UserRef]],
        now: datetime,
        *,
        inbound: bool,
    ) -> dict[tuple[int, str], int]:
        """Create or refresh contacts; returns their ids by (number id, user key)."""
        values: dict[tuple[int, str], dict[str, Any]] = {}
        for number, sender in users:
            values[(number.id, sender.key)] = {
                "number_id": number.id,
                "user_key": _clip(sender.key, 160),
                "wa_id": _clip(sender.wa_id, 32),
                "user_id": _clip(sender.user_id, 160),
                "username": _clip(sender.username, 100),
                "profile_name": _clip(sender.profile_name, 200),
                "last_inbound_at": now if inbound else None,
                "created_at": now,
            }
        stmt = upsert(conn, Contact)
        excluded = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["number_id", "user_key"],
            set_={
                "wa_id": func.coalesce(excluded.wa_id, Contact.wa_id),
                "user_id": func.coalesce(excluded.user_id, Contact.user_id),
                "username": func.coalesce(excluded.username, Contact.username),
                "profile_name": func.coalesce(excluded.profile_name, Contact.profile_name),
                "last_inbound_at": func.coalesce(excluded.last_inbound_at, Contact.last_inbound_at),
            },
        ).returning(Contact.id, Contact.number_id, Contact.user_key)
        rows = (await conn.execute(stmt, list(values.values()))).all()
        return {(r.number_id, r.user_key): r.id for r in rows}

    async def active_conversations(
        self, conn: AsyncConnection, contacts: dict[int, tuple[NumberInfo, str]], now: datetime
    ) -> dict[int, str]:
        """The active conversation of each contact (id → (number, user key)), opening new ones where needed.

        Every conversation returned counts as active now: its expiry moves to now + expiry.
        """
        contact_ids = sorted(contacts)
        rows = (
            await conn.execute(
                select(Conversation.id, Conversation.contact_id, Conversation.expires_at).where(
                    Conversation.is_active.is_(True), Conversation.contact_id.in_(contact_ids)
                )
            )
        ).all()
        active: dict[int, str] = {}
        expired: list[str] = []
        for row in rows:
            if row.expires_at <= now:
                expired.append(row.id)
            else:
                active[row.contact_id] = row.id
        if expired:
            await conn.execute(
                update(Conversation)
                .where(Conversation.id.in_(expired))
                .values(is_active=False, updated_at=now)
            )
        missing = [cid for cid in contact_ids if cid not in active]
        if missing:
            new_rows = [
                {
                    "id": new_session_id(contacts[cid][0].phone_number_id, contacts[cid][1], now),
                    "number_id": contacts[cid][0].id,
                    "contact_id": cid,
                    "is_active": True,
                    "context": {},
                    "metadata": {},
                    "last_activity": now,
                    "expires_at": now + self.expiry,
                    "created_at": now,
                    "updated_at": now,
                }
                for cid in missing
            ]
            stmt = upsert(conn, Conversation).on_conflict_do_nothing(
                index_elements=["number_id", "contact_id"], index_where=text("is_active")
            )
            await conn.execute(stmt, new_rows)
            # Another process may have opened one first (the partial unique index kept it single).
            opened = (
                await conn.execute(
                    select(Conversation.id, Conversation.contact_id).where(
                        Conversation.is_active.is_(True), Conversation.contact_id.in_(missing)
                    )
                )
            ).all()
            active.update({r.contact_id: r.id for r in opened})
        await lock_conversations(conn, active.values())
        await conn.execute(
            update(Conversation)
            .where(Conversation.id.in_(list(active.values())))
            .values(last_activity=now, expires_at=now + self.expiry, updated_at=now)
        )
        return active

    async def _insert_statuses(
        self, conn: AsyncConnection, statuses: Sequence[tuple[NumberInfo, StatusUpdate]], now: datetime
    ) -> int:
        rows = []
        seen: set[tuple[int, str, str]] = set()
        for number, status in statuses:
            key = (number.id, status.provider_message_id, status.status)
            if key in seen:
                continue
            seen.add(key)
            known = status.known_status
            rows.append(
                {
                    "number_id": number.id,
                    "provider_message_id": _clip(status.provider_message_id, 200),
                    "status": _clip(status.status, 20),
                    "status_rank": known.rank if known else -1,
                    "timestamp": status.timestamp,
                    "errors": [e.model_dump(exclude_none=True) for e in status.errors] or None,
                    "pricing": status.pricing,
                    "raw": status.raw,
                    "created_at": now,
                }
            )
        stmt = (
            upsert(conn, StatusEvent)
            .on_conflict_do_nothing(index_elements=["number_id", "provider_message_id", "status"])
            .returning(
                StatusEvent.number_id,
                StatusEvent.provider_message_id,
                StatusEvent.status,
                StatusEvent.status_rank,
                StatusEvent.errors,
            )
        )
        new = (await conn.execute(stmt, rows)).all()
        await apply_status_events(
            conn, [(r.number_id, r.provider_message_id, r.status, r.status_rank, r.errors) for r in new], now
        )
        return len(new)

    # ------------------------------------------------------------------------------------- queue

    async def claim(self, kind: str, *, limit: int, owner: str, lease_seconds: float) -> list[Claimed]:
        """Lease up to ``limit`` ready items of ``kind`` (lane heads only, so one per conversation)."""
        now = utcnow()
        ready = or_(
            and_(WorkItem.state == "pending", WorkItem.available_at <= now),
            and_(WorkItem.state == "leased", WorkItem.leased_until < now),
        )
        pick = select(WorkItem.id).where(WorkItem.kind == kind, ready).order_by(WorkItem.id).limit(limit)
        lease = f"{owner}:{time.monotonic_ns():x}"
        until = now + timedelta(seconds=lease_seconds)
        async with self.engine.begin() as conn:
            if is_postgres(conn):
                pick = pick.with_for_update(skip_locked=True, of=WorkItem)
            ids = list((await conn.execute(pick)).scalars())
            if not ids:
                return []
            rows = (
                await conn.execute(
                    update(WorkItem)
                    .where(WorkItem.id.in_(ids))
                    .values(
                        state="leased",
                        lease_owner=lease,
                        leased_until=until,
                        attempts=WorkItem.attempts + 1,
                        updated_at=now,
                    )
                    .returning(WorkItem.id, WorkItem.conversation_id, WorkItem.message_id, WorkItem.attempts)
                )
            ).all()
        return sorted(
            (Claimed(r.id, kind, r.conversation_id, r.message_id, r.attempts, lease) for r in rows),
            key=lambda c: c.id,
        )

    async def retry(self, item: Claimed, *, delay: float, error: dict[str, Any]) -> bool:
        """Give a leased item back to the queue, to be tried again after ``delay`` seconds."""
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(WorkItem)
                .where(WorkItem.id == item.id, WorkItem.lease_owner == item.lease)
                .values(
                    state="pending",
                    available_at=now + timedelta(seconds=delay),
                    lease_owner=None,
                    leased_until=None,
                    last_error=error,
                    updated_at=now,
                )
            )
        return bool(result.rowcount)

    async def release(self, items: Sequence[Claimed]) -> None:
        """Give leased items back untouched (graceful shutdown): their attempt does not count."""
        if not items:
            return
        now = utcnow()
        async with self.engine.begin() as conn:
            for item in items:
                await conn.execute(
                    update(WorkItem)
                    .where(WorkItem.id == item.id, WorkItem.lease_owner == item.lease)
                    .values(
                        state="pending",
                        available_at=now,
                        lease_owner=None,
                        leased_until=None,
                        attempts=WorkItem.attempts - 1,
                        updated_at=now,
                    )
                )

    async def queue_depth(self) -> dict[str, int]:
        """Unfinished work items by kind (for metrics)."""
        async with read_only(self.engine).connect() as conn:
            rows = (
                await conn.execute(
                    select(WorkItem.kind, func.count())
                    .where(WorkItem.state.in_(_ACTIVE_STATES))
                    .group_by(WorkItem.kind)
                )
            ).all()
        return {kind: int(count) for kind, count in rows}


async def lock_conversations(conn: AsyncConnection, conversation_ids: Iterable[str]) -> None:
    """Lock conversation rows (in id order, so writers never deadlock) before touching their lanes.

    SQLite needs nothing: its write transactions already run one at a time.
    """
    ids = sorted(set(conversation_ids))
    if ids and is_postgres(conn):
        await conn.execute(
            select(Conversation.id)
            .where(Conversation.id.in_(ids))
            .order_by(Conversation.id)
            .with_for_update()
        )


async def add_work(conn: AsyncConnection, kind: str, items: Sequence[tuple[str, int]], now: datetime) -> None:
    """Queue work items ``(conversation id, message id)`` in order at the back of their lanes.

    The caller holds the conversations' locks (see :func:`lock_conversations`).
    """
    if not items:
        return
    conversations = {conv for conv, _ in items}
    busy = set(
        (
            await conn.execute(
                select(WorkItem.conversation_id)
                .where(
                    WorkItem.kind == kind,
                    WorkItem.state.in_(_ACTIVE_STATES),
                    WorkItem.conversation_id.in_(conversations),
                )
                .distinct()
            )
        ).scalars()
    )
    rows = []
    for conversation_id, message_id in items:
        rows.append(
            {
                "kind": kind,
                "conversation_id": conversation_id,
                "message_id": message_id,
                "state": "waiting" if conversation_id in busy else "pending",
                "attempts": 0,
                "available_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
        busy.add(conversation_id)
    await conn.execute(insert(WorkItem), rows)


async def _promote(conn: AsyncConnection, lanes: Iterable[tuple[str, str]], now: datetime) -> None:
    """Make the oldest waiting item of each lane (conversation id, kind) its new head."""
    lanes = sorted(set(lanes))
    if not lanes:
        return
    head = (
        select(func.min(WorkItem.id))
        .where(
            WorkItem.conversation_id == bindparam("b_conv"),
            WorkItem.kind == bindparam("b_kind"),
            WorkItem.state == "waiting",
        )
        .scalar_subquery()
    )
    await conn.execute(
        update(WorkItem)
        .where(WorkItem.id == head)
        .values(state="pending", available_at=bindparam("b_now", type_=WorkItem.available_at.type)),
        [{"b_conv": conv, "b_kind": kind, "b_now": now} for conv, kind in lanes],
    )


async def finish_items(conn: AsyncConnection, items: Sequence[Claimed]) -> set[int]:
    """Delete finished work items whose lease is still ours and promote what waited behind them.

    Returns the ids that were ours.
    """
    if not items:
        return set()
    await lock_conversations(conn, (i.conversation_id for i in items))
    rows = await conn.execute(
        delete(WorkItem)
        .where(
            WorkItem.id.in_([i.id for i in items]),
            WorkItem.lease_owner.in_({i.lease for i in items}),
        )
        .returning(WorkItem.id, WorkItem.lease_owner)
    )
    leases = {i.id: i.lease for i in items}
    ours = {r.id for r in rows if leases.get(r.id) == r.lease_owner}
    await _promote(conn, ((i.conversation_id, i.kind) for i in items if i.id in ours), utcnow())
    return ours


async def dead_letter_items(
    conn: AsyncConnection, items: Sequence[tuple[Claimed, dict[str, Any]]], now: datetime
) -> set[int]:
    """Mark leased items dead with their last error and promote what waited behind them.

    Returns the ids that were still ours.
    """
    if not items:
        return set()
    await lock_conversations(conn, (item.conversation_id for item, _ in items))
    ours: set[int] = set()
    for item, error in items:
        result = await conn.execute(
            update(WorkItem)
            .where(WorkItem.id == item.id, WorkItem.lease_owner == item.lease)
            .values(state="dead", last_error=error, leased_until=None, updated_at=now)
        )
        if result.rowcount:
            ours.add(item.id)
    await _promote(conn, ((item.conversation_id, item.kind) for item, _ in items if item.id in ours), now)
    return ours


async def promote_stranded(conn: AsyncConnection) -> int:
    """Safety net: make the oldest waiting item the head of any lane that has no head (returns how many)."""
    heads = (
        select(func.min(WorkItem.id).label("id"), WorkItem.conversation_id, WorkItem.kind)
        .where(WorkItem.state == "waiting")
        .group_by(WorkItem.conversation_id, WorkItem.kind)
        .subquery()
    )
    active = aliased(WorkItem)
    stranded = select(heads.c.id).where(
        ~exists().where(
            active.conversation_id == heads.c.conversation_id,
            active.kind == heads.c.kind,
            active.state.in_(_HEAD_STATES),
        )
    )
    result = await conn.execute(update(WorkItem).where(WorkItem.id.in_(stranded)).values(state="pending"))
    return int(result.rowcount or 0)


async def apply_status_events(
    conn: AsyncConnection,
    events: Sequence[tuple[int, str, str, int, list[dict[str, Any]] | None]],
    now: datetime,
) -> None:
    """Move outbound messages forward to the newest status among ``events``; never backwards."""
    best: dict[tuple[int, str], tuple[str, int, list[dict[str, Any]] | None]] = {}
    for number_id, pid, status, rank, errors in events:
        if rank < DeliveryStatus.SENT.rank:
            continue
        key = (number_id, pid)
        if key not in best or rank > best[key][1]:
            best[key] = (status, rank, errors)
    if not best:
        return
    stmt = (
        update(Message)
        .where(
            Message.number_id == bindparam("b_number"),
            Message.provider_message_id == bindparam("b_pid"),
            Message.status_rank < bindparam("b_rank"),
        )
        .values(
            status=bindparam("b_status"),
            status_rank=bindparam("b_rank"),
            error=func.coalesce(bindparam("b_error", type_=Message.error.type), Message.error),
            updated_at=bindparam("b_now", type_=Message.updated_at.type),
        )
    )
    await conn.execute(
        stmt,
        [
            {
                "b_number": number_id,
                "b_pid": pid,
                "b_rank": rank,
                "b_status": status,
                "b_error": {"errors": errors} if errors else None,
                "b_now": now,
            }
            for (number_id, pid), (status, rank, errors) in best.items()
        ],
    )
