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

Hand-over: a process that runs workers passes a :class:`LeaseOffer` to the transactions that
queue or promote work (storing a webhook, finishing a turn or a send); the lane heads they create
are leased to that process in the same statement and handed to its worker in memory, so in the
steady state no separate claim transaction runs at all. Claims remain for everything else: work
queued by processes without workers, retries, leases that lapsed, and whatever exceeded the offer.

Every statement here runs on both SQLite and PostgreSQL through :mod:`warelay.storage.direct`
(plain drivers: this is the busiest code in warelay).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from warelay.agents.base import describe_inbound
from warelay.domain import DeliveryStatus, InboundMessage, StatusUpdate, UserRef
from warelay.integrations.events import status_events
from warelay.numbers import NumberInfo
from warelay.storage.direct import Database, Tx
from warelay.storage.models import Base, utcnow

TABLES = Base.metadata.tables

log = logging.getLogger("warelay.inbox")

TURN = "turn"
SEND = "send"
L = TypeVar("L")


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


class LeaseOffer:
    """How many lane heads a transaction may lease to this process's worker as it creates them."""

    __slots__ = ("lease", "limit", "seconds")

    def __init__(self, owner: str, *, seconds: float, limit: int) -> None:
        self.lease = lease_token(owner)
        self.seconds = seconds
        self.limit = limit

    def take(self, count: int) -> bool:
        """Use ``count`` of the offer, all or nothing."""
        if count > self.limit:
            return False
        self.limit -= count
        return True


def lease_token(owner: str) -> str:
    """A lease token: the worker's id and a nonce, so a lapsed lease can never finish an item."""
    return f"{owner}:{time.monotonic_ns():x}"


@dataclass(frozen=True, slots=True)
class Stored:
    """What :meth:`Inbox.store` did: one result per delivery, and the turns leased to this process."""

    results: list[DeliveryResult]
    leased: list[Claimed]


@dataclass(frozen=True, slots=True)
class Finished:
    """What finishing items did: the ids that were still ours, and the lanes that moved on."""

    ours: set[int]
    leased: list[Claimed]  # next items leased to this process (see LeaseOffer)
    pending: int  # next items left for any worker to claim


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

    def __init__(self, db: Database, *, conversation_expiry: timedelta) -> None:
        self.db = db
        self.expiry = conversation_expiry

    # ------------------------------------------------------------------------------------ storing

    async def store(self, deliveries: Sequence[Delivery], *, offer: LeaseOffer | None = None) -> Stored:
        """Store a group of deliveries in one transaction; one result per delivery."""
        return await self.db.write(self._store, deliveries, offer)

    async def _store(self, tx: Tx, deliveries: Sequence[Delivery], offer: LeaseOffer | None) -> Stored:
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

        existing = await _existing_ids(tx, list(first_owner))
        fresh = [(n, m) for n, m in batch.messages if (n.id, m.provider_message_id) not in existing]
        inserted: dict[tuple[int, str], tuple[int, str]] = {}
        leased: list[Claimed] = []
        if fresh:
            inserted, leased = await self._insert_messages(tx, fresh, now, offer)
        new_statuses = await _insert_statuses(tx, batch.statuses, now) if batch.statuses else 0

        # A message redelivered inside this very batch counts as stored for its first delivery only.
        results = []
        for index, keys in enumerate(owners):
            mine = [k for k in keys if k in inserted and first_owner[k] == index]
            stored = tuple((pid, *inserted[(nid, pid)]) for nid, pid in mine)
            dupes = tuple(pid for nid, pid in keys if (nid, pid) not in mine)
            results.append(DeliveryResult(stored=stored, duplicates=dupes, statuses_new=new_statuses))
        return Stored(results, leased)

    async def _insert_messages(
        self, tx: Tx, fresh: list[tuple[NumberInfo, InboundMessage]], now: datetime, offer: LeaseOffer | None
    ) -> tuple[dict[tuple[int, str], tuple[int, str]], list[Claimed]]:
        contacts = await upsert_contacts(tx, [(n, m.sender) for n, m in fresh], now, inbound=True)
        conversations = await self.active_conversations(
            tx, {cid: (number, key) for (number, key), cid in _by_number(fresh, contacts).items()}, now
        )

        # Keep the user's order inside each conversation: by provider timestamp, then arrival.
        ordered = sorted(enumerate(fresh), key=lambda pair: (pair[1][1].timestamp, pair[0]))
        rows = []
        for _, (number, message) in ordered:
            rows.append(
                (
                    conversations[contacts[(number.id, message.sender.key)]],
                    number.id,
                    "in",
                    _clip(message.type, 40) or "unknown",
                    message.provider_message_id,
                    describe_inbound(message),
                    message_record(message),
                    "received",
                    0,
                    message.raw,
                    _clip(message.context.reply_to_id if message.context else None, 200),
                    0,
                    message.timestamp,
                    now,
                    now,
                )
            )
        returned = await tx.insert_many(
            TABLES["messages"],
            _INBOUND_COLUMNS,
            rows,
            suffix="ON CONFLICT (number_id, provider_message_id) DO NOTHING",
            returning="id, number_id, provider_message_id, conversation_id",
        )
        inserted = {(r[1], r[2]): (int(r[0]), r[3]) for r in returned}

        wants_reply = {(n.id, m.provider_message_id) for n, m in fresh if m.wants_reply}
        leased = await add_work(
            tx,
            TURN,
            [
                (conv_id, msg_id)
                for key, (msg_id, conv_id) in sorted(inserted.items(), key=lambda kv: kv[1][0])
                if key in wants_reply
            ],
            now,
            offer,
        )
        return inserted, leased

    async def active_conversations(
        self, tx: Tx, contacts: dict[int, tuple[NumberInfo, str]], now: datetime
    ) -> dict[int, str]:
        """The active conversation of each contact (id → (number, user key)), opening new ones where needed.

        Every conversation returned counts as active now: its expiry moves to now + expiry.
        """
        contact_ids = sorted(contacts)
        rows = await tx.fetch(
            "SELECT id, contact_id, expires_at FROM conversations WHERE is_active AND contact_id = ANY($1)",
            contact_ids,
        )
        active: dict[int, str] = {}
        expired: list[str] = []
        for conversation_id, contact_id, expires_at in rows:
            if tx.time(expires_at) <= now:
                expired.append(conversation_id)
            else:
                active[contact_id] = conversation_id
        if expired:
            await tx.execute(
                "UPDATE conversations SET is_active = false, updated_at = $2 WHERE id = ANY($1)", expired, now
            )
        missing = [cid for cid in contact_ids if cid not in active]
        if missing:
            expires = now + self.expiry
            new_rows: list[tuple[Any, ...]] = [
                (
                    new_session_id(contacts[cid][0].phone_number_id, contacts[cid][1], now),
                    contacts[cid][0].id,
                    cid,
                    True,
                    {},
                    {},
                    now,
                    expires,
                    now,
                    now,
                )
                for cid in missing
            ]
            # Another process may open one first: the partial unique index keeps it single.
            await tx.insert_many(
                TABLES["conversations"],
                _CONVERSATION_COLUMNS,
                new_rows,
                suffix="ON CONFLICT (number_id, contact_id) WHERE is_active DO NOTHING",
            )
            opened = await tx.fetch(
                "SELECT id, contact_id FROM conversations WHERE is_active AND contact_id = ANY($1)", missing
            )
            active.update({contact_id: conversation_id for conversation_id, contact_id in opened})
        await lock_conversations(tx, active.values())
        await tx.execute(
            "UPDATE conversations SET last_activity = $1, expires_at = $2, updated_at = $1"
            " WHERE id = ANY($3)",
            now,
            now + self.expiry,
            list(active.values()),
        )
        return active

    # ------------------------------------------------------------------------------------- queue

    async def claim(
        self,
        kind: str,
        *,
        limit: int,
        owner: str,
        lease_seconds: float,
        load: Callable[[Tx, list[Claimed]], Coroutine[Any, Any, L]],
    ) -> tuple[list[Claimed], L | None]:
        """Lease up to ``limit`` ready items of ``kind`` (lane heads only, so one per conversation).

        ``load`` reads what the claimed items need in the same transaction (None when nothing was claimed).
        """
        return await self.db.write(
            _claim, kind, limit, f"{owner}:{time.monotonic_ns():x}", lease_seconds, load
        )

    async def retry(self, item: Claimed, *, delay: float, error: dict[str, Any]) -> bool:
        """Give a leased item back to the queue, to be tried again after ``delay`` seconds."""
        now = utcnow()
        changed = await self.db.write(
            _execute,
            "UPDATE work_items SET state = 'pending', available_at = $3, lease_owner = NULL,"
            " leased_until = NULL, last_error = $4, updated_at = $5 WHERE id = $1 AND lease_owner = $2",
            item.id,
            item.lease,
            now + timedelta(seconds=delay),
            error,
            now,
        )
        return bool(changed)

    async def release(self, items: Sequence[Claimed]) -> None:
        """Give leased items back untouched (graceful shutdown): their attempt does not count."""
        if items:
            await self.db.write(_release, items, utcnow())

    async def queue_depth(self) -> dict[str, int]:
        """Unfinished work items by kind (for metrics)."""
        rows = await self.db.read(
            _fetch,
            "SELECT kind, count(*) FROM work_items"
            " WHERE state IN ('waiting', 'pending', 'leased') GROUP BY kind",
        )
        return {kind: int(count) for kind, count in rows}


_INBOUND_COLUMNS = (
    "conversation_id",
    "number_id",
    "direction",
    "type",
    "provider_message_id",
    "text",
    "content",
    "status",
    "status_rank",
    "raw",
    "reply_to",
    "part",
    "provider_timestamp",
    "created_at",
    "updated_at",
)
_CONVERSATION_COLUMNS = (
    "id",
    "number_id",
    "contact_id",
    "is_active",
    "context",
    "metadata",
    "last_activity",
    "expires_at",
    "created_at",
    "updated_at",
)
_CONTACT_COLUMNS = (
    "number_id",
    "user_key",
    "wa_id",
    "user_id",
    "username",
    "profile_name",
    "last_inbound_at",
    "created_at",
)
_CONTACT_UPSERT = (
    "ON CONFLICT (number_id, user_key) DO UPDATE SET"
    " wa_id = coalesce(excluded.wa_id, contacts.wa_id),"
    " user_id = coalesce(excluded.user_id, contacts.user_id),"
    " username = coalesce(excluded.username, contacts.username),"
    " profile_name = coalesce(excluded.profile_name, contacts.profile_name),"
    " last_inbound_at = coalesce(excluded.last_inbound_at, contacts.last_inbound_at)"
)
_STATUS_COLUMNS = (
    "number_id",
    "provider_message_id",
    "status",
    "status_rank",
    "timestamp",
    "errors",
    "pricing",
    "raw",
    "created_at",
)
_WORK_COLUMNS = (
    "kind",
    "conversation_id",
    "message_id",
    "state",
    "attempts",
    "available_at",
    "created_at",
    "updated_at",
    "lease_owner",
    "leased_until",
)


async def _fetch(tx: Tx, query: str, *args: Any) -> list[Any]:
    return await tx.fetch(query, *args)


async def _execute(tx: Tx, query: str, *args: Any) -> int:
    return await tx.execute(query, *args)


async def _existing_ids(tx: Tx, keys: list[tuple[int, str]]) -> set[tuple[int, str]]:
    by_number: dict[int, list[str]] = {}
    for number_id, pid in keys:
        by_number.setdefault(number_id, []).append(pid)
    found: set[tuple[int, str]] = set()
    for number_id, pids in by_number.items():
        rows = await tx.fetch(
            "SELECT provider_message_id FROM messages WHERE number_id = $1 AND provider_message_id = ANY($2)",
            number_id,
            pids,
        )
        found.update((number_id, pid) for (pid,) in rows)
    return found


async def upsert_contacts(
    tx: Tx, users: Sequence[tuple[NumberInfo, UserRef]], now: datetime, *, inbound: bool
) -> dict[tuple[int, str], int]:
    """Create or refresh contacts; returns their ids by (number id, user key)."""
    values: dict[tuple[int, str], tuple[Any, ...]] = {}
    for number, sender in users:
        values[(number.id, sender.key)] = (
            number.id,
            _clip(sender.key, 160),
            _clip(sender.wa_id, 32),
            _clip(sender.user_id, 160),
            _clip(sender.username, 100),
            _clip(sender.profile_name, 200),
            now if inbound else None,
            now,
        )
    rows = await tx.insert_many(
        TABLES["contacts"],
        _CONTACT_COLUMNS,
        list(values.values()),
        suffix=_CONTACT_UPSERT,
        returning="id, number_id, user_key",
    )
    return {(r[1], r[2]): int(r[0]) for r in rows}


async def _insert_statuses(tx: Tx, statuses: Sequence[tuple[NumberInfo, StatusUpdate]], now: datetime) -> int:
    await lock_receipts(tx, ((n.id, s.provider_message_id) for n, s in statuses))
    rows = []
    seen: set[tuple[int, str, str]] = set()
    for number, status in statuses:
        key = (number.id, status.provider_message_id, status.status)
        if key in seen:
            continue
        seen.add(key)
        known = status.known_status
        rows.append(
            (
                number.id,
                _clip(status.provider_message_id, 200),
                _clip(status.status, 20),
                known.rank if known else -1,
                status.timestamp,
                [e.model_dump(exclude_none=True) for e in status.errors] or None,
                status.pricing,
                status.raw,
                now,
            )
        )
    new = await tx.insert_many(
        TABLES["status_events"],
        _STATUS_COLUMNS,
        rows,
        suffix="ON CONFLICT (number_id, provider_message_id, status) DO NOTHING",
        returning="number_id, provider_message_id, status, status_rank, errors",
    )
    await apply_status_events(tx, [(r[0], r[1], r[2], r[3], tx.json(r[4])) for r in new], now)
    return len(new)


async def _claim(
    tx: Tx,
    kind: str,
    limit: int,
    lease: str,
    lease_seconds: float,
    load: Callable[[Tx, list[Claimed]], Coroutine[Any, Any, L]],
) -> tuple[list[Claimed], L | None]:
    now = utcnow()
    # A plain indexed scan: only lane heads are ever pending or leased (see the module docstring).
    ids = [
        r[0]
        for r in await tx.fetch(
            "SELECT id FROM work_items WHERE kind = $1"
            " AND ((state = 'pending' AND available_at <= $2) OR (state = 'leased' AND leased_until < $2))"
            " ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
            kind,
            now,
            limit,
        )
    ]
    if not ids:
        return [], None
    rows = await tx.fetch(
        "UPDATE work_items SET state = 'leased', lease_owner = $2, leased_until = $3,"
        " attempts = attempts + 1, updated_at = $4 WHERE id = ANY($1)"
        " RETURNING id, conversation_id, message_id, attempts",
        ids,
        lease,
        now + timedelta(seconds=lease_seconds),
        now,
    )
    claimed = sorted(
        (Claimed(int(r[0]), kind, r[1], int(r[2]), int(r[3]), lease) for r in rows), key=lambda c: c.id
    )
    return claimed, await load(tx, claimed)


async def _release(tx: Tx, items: Sequence[Claimed], now: datetime) -> None:
    await tx.executemany(
        "UPDATE work_items SET state = 'pending', available_at = $3, lease_owner = NULL, leased_until = NULL,"
        " attempts = attempts - 1, updated_at = $3 WHERE id = $1 AND lease_owner = $2",
        [(item.id, item.lease, now) for item in items],
    )


async def lock_conversations(tx: Tx, conversation_ids: Iterable[str]) -> None:
    """Lock conversation rows (in id order, so writers never deadlock) before touching their lanes.

    SQLite needs nothing: its write transactions already run one at a time.
    """
    ids = sorted(set(conversation_ids))
    if ids and tx.postgres:
        await tx.fetch("SELECT id FROM conversations WHERE id = ANY($1) ORDER BY id FOR UPDATE", ids)


def _receipt_key(number_id: int, wamid: str) -> int:
    """A 64-bit advisory-lock key for one outbound message's receipts (number id and wamid)."""
    digest = hashlib.blake2b(f"{number_id}:{wamid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock_receipts(tx: Tx, keys: Iterable[tuple[int, str]]) -> None:
    """Serialise, per (number, wamid), storing a receipt with recording the send it belongs to.

    On PostgreSQL, a receipt stored while the transaction that records its send's wamid is still
    open matches no message row yet, and that transaction may already have looked for early
    receipts: neither would apply it. Both take this lock first (in key order: no deadlocks), so
    one of them always sees the other's commit. SQLite needs nothing: writes run one at a time.
    """
    ids = sorted({_receipt_key(n, w) for n, w in keys})
    if ids and tx.postgres:
        await tx.fetch("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k", ids)


async def add_work(
    tx: Tx, kind: str, items: Sequence[tuple[str, int]], now: datetime, offer: LeaseOffer | None = None
) -> list[Claimed]:
    """Queue work items ``(conversation id, message id)`` in order at the back of their lanes.

    New lane heads are leased to the offer's process when it can take them all (returned), else
    left ready for any worker. The caller holds the conversations' locks (see :func:`lock_conversations`).
    """
    if not items:
        return []
    busy = {
        r[0]
        for r in await tx.fetch(
            "SELECT DISTINCT conversation_id FROM work_items WHERE kind = $1"
            " AND state IN ('waiting', 'pending', 'leased') AND conversation_id = ANY($2)",
            kind,
            sorted({conv for conv, _ in items}),
        )
    }
    states = []
    for conversation_id, _ in items:
        states.append("waiting" if conversation_id in busy else "pending")
        busy.add(conversation_id)
    lease = offer if offer is not None and offer.take(states.count("pending")) else None
    rows: list[tuple[Any, ...]] = []
    for (conversation_id, message_id), state in zip(items, states, strict=True):
        if lease is not None and state == "pending":
            until = now + timedelta(seconds=lease.seconds)
            rows.append((kind, conversation_id, message_id, "leased", 1, now, now, now, lease.lease, until))
        else:
            rows.append((kind, conversation_id, message_id, state, 0, now, now, now, None, None))
    returned = await tx.insert_many(
        TABLES["work_items"], _WORK_COLUMNS, rows, returning="id, conversation_id, message_id, state"
    )
    if lease is None:
        return []
    return sorted(
        (Claimed(int(r[0]), kind, r[1], int(r[2]), 1, lease.lease) for r in returned if r[3] == "leased"),
        key=lambda c: c.id,
    )


async def _promote(
    tx: Tx, kind: str, conversations: Iterable[str], now: datetime, offer: LeaseOffer | None
) -> tuple[list[Claimed], int]:
    """Make the oldest waiting item of each conversation's lane its new head: leased to the offer's
    process when it can take them all, else ready. Returns (leased items, items left ready)."""
    ids = [
        r[0]
        for r in await tx.fetch(
            "SELECT min(id) FROM work_items WHERE kind = $1 AND state = 'waiting'"
            " AND conversation_id = ANY($2) GROUP BY conversation_id",
            kind,
            sorted(set(conversations)),
        )
    ]
    if not ids:
        return [], 0
    if offer is not None and offer.take(len(ids)):
        rows = await tx.fetch(
            "UPDATE work_items SET state = 'leased', lease_owner = $2, leased_until = $3,"
            " attempts = attempts + 1, available_at = $4, updated_at = $4 WHERE id = ANY($1)"
            " RETURNING id, conversation_id, message_id, attempts",
            ids,
            offer.lease,
            now + timedelta(seconds=offer.seconds),
            now,
        )
        leased = [Claimed(int(r[0]), kind, r[1], int(r[2]), int(r[3]), offer.lease) for r in rows]
        return sorted(leased, key=lambda c: c.id), 0
    await tx.execute(
        "UPDATE work_items SET state = 'pending', available_at = $2 WHERE id = ANY($1)", ids, now
    )
    return [], len(ids)


async def _promote_lanes(
    tx: Tx, lanes: Iterable[tuple[str, str]], now: datetime, offer: LeaseOffer | None = None
) -> tuple[list[Claimed], int]:
    by_kind: dict[str, set[str]] = {}
    for conversation_id, kind in lanes:
        by_kind.setdefault(kind, set()).add(conversation_id)
    leased: list[Claimed] = []
    pending = 0
    for kind, conversations in sorted(by_kind.items()):
        got, left = await _promote(tx, kind, conversations, now, offer)
        leased.extend(got)
        pending += left
    return leased, pending


async def finish_items(tx: Tx, items: Sequence[Claimed], offer: LeaseOffer | None = None) -> Finished:
    """Delete finished work items whose lease is still ours and promote what waited behind them."""
    if not items:
        return Finished(set(), [], 0)
    await lock_conversations(tx, (i.conversation_id for i in items))
    rows = await tx.fetch(
        "DELETE FROM work_items WHERE id = ANY($1) AND lease_owner = ANY($2) RETURNING id, lease_owner",
        [i.id for i in items],
        sorted({i.lease for i in items}),
    )
    leases = {i.id: i.lease for i in items}
    ours = {int(r[0]) for r in rows if leases.get(int(r[0])) == r[1]}
    leased, pending = await _promote_lanes(
        tx, ((i.conversation_id, i.kind) for i in items if i.id in ours), utcnow(), offer
    )
    return Finished(ours, leased, pending)


async def dead_letter_items(
    tx: Tx, items: Sequence[tuple[Claimed, dict[str, Any]]], now: datetime
) -> set[int]:
    """Mark leased items dead with their last error and promote what waited behind them (left ready).

    Returns the ids that were still ours.
    """
    if not items:
        return set()
    await lock_conversations(tx, (item.conversation_id for item, _ in items))
    ours: set[int] = set()
    for item, error in items:
        changed = await tx.execute(
            "UPDATE work_items SET state = 'dead', last_error = $3, leased_until = NULL, updated_at = $4"
            " WHERE id = $1 AND lease_owner = $2",
            item.id,
            item.lease,
            error,
            now,
        )
        if changed:
            ours.add(item.id)
    await _promote_lanes(tx, ((item.conversation_id, item.kind) for item, _ in items if item.id in ours), now)
    return ours


async def promote_stranded(tx: Tx) -> int:
    """Safety net: make the oldest waiting item the head of any lane that has no head (returns how many)."""
    return await tx.execute(
        "UPDATE work_items SET state = 'pending' WHERE id IN ("
        " SELECT h.id FROM ("
        "  SELECT min(id) AS id, conversation_id, kind FROM work_items WHERE state = 'waiting'"
        "  GROUP BY conversation_id, kind) AS h"
        " WHERE NOT EXISTS (SELECT 1 FROM work_items AS a WHERE a.conversation_id = h.conversation_id"
        "  AND a.kind = h.kind AND a.state IN ('pending', 'leased')))"
    )


async def apply_status_events(
    tx: Tx,
    events: Sequence[tuple[int, str, str, int, list[dict[str, Any]] | None]],
    now: datetime,
) -> None:
    """Move outbound messages forward to the newest status among ``events``; never backwards."""
    sent = DeliveryStatus.SENT.rank
    best: dict[tuple[int, str], tuple[str, int, list[dict[str, Any]] | None]] = {}
    for number_id, pid, status, rank, errors in events:
        if rank < sent:
            continue
        key = (number_id, pid)
        if key not in best or rank > best[key][1]:
            best[key] = (status, rank, errors)
    # Platforms that sent a message through the API hear of its progress (before it is written).
    await status_events(
        tx, [(None, n, pid, st, rank, errs) for n, pid, st, rank, errs in events if rank >= sent], now
    )
    await tx.executemany(
        "UPDATE messages SET status = $3, status_rank = $4, error = coalesce($5, error), updated_at = $6"
        " WHERE number_id = $1 AND provider_message_id = $2 AND status_rank < $4",
        [
            (number_id, pid, status, rank, {"errors": errors} if errors else None, now)
            for (number_id, pid), (status, rank, errors) in best.items()
        ],
    )
