"""The outbox: outbound messages as rows, written in the transaction that finishes a turn.

Where it sits: the worker's turn completion calls :func:`enqueue` inside its transaction, so a
reply exists exactly when its turn is done (a crash before the commit re-runs the turn, a crash
after it sends the reply). The sender then claims ``send`` work items in order per conversation
and records what the channel answered with :func:`record_sent` / :func:`record_failed`.

The one window in which a reply can go out twice: Graph accepts a send and the process dies
before :func:`record_sent` commits (a single transaction right after the HTTP response). The
lease then lapses and another worker sends again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter

from warelay.domain import DeliveryStatus, OutboundContent, OutText
from warelay.inbox.store import (
    SEND,
    Claimed,
    LeaseOffer,
    add_work,
    apply_status_events,
    lock_conversations,
    lock_receipts,
)
from warelay.integrations.events import status_events
from warelay.storage.direct import Tx
from warelay.storage.models import Base

_CONTENT = TypeAdapter[OutboundContent](OutboundContent)
_OUTBOUND_COLUMNS = (
    "conversation_id",
    "number_id",
    "direction",
    "type",
    "text",
    "content",
    "status",
    "status_rank",
    "reply_to",
    "turn_message_id",
    "part",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True, slots=True)
class Draft:
    """An outbound message to queue."""

    conversation_id: str
    number_id: int
    content: OutboundContent
    reply_to: str | None = None
    turn_message_id: int | None = None
    part: int = 0


@dataclass(frozen=True, slots=True)
class PendingSend:
    """A queued outbound message with what is needed to send it."""

    message_id: int
    conversation_id: str
    number_id: int
    content: OutboundContent
    reply_to: str | None
    wa_id: str | None
    user_id: str | None


def content_text(content: OutboundContent) -> str | None:
    """The readable text of outbound content (for history and the API)."""
    if isinstance(content, OutText):
        return content.body
    for attr in ("body", "caption"):
        value = getattr(content, attr, None)
        if isinstance(value, str):
            return value
    return None


def content_type(content: OutboundContent) -> str:
    """The message type name stored for outbound content."""
    if content.kind == "media":
        return str(getattr(content, "media_type", "media"))
    if content.kind in ("buttons", "list", "cta_url", "location_request", "catalog", "product_list", "flow"):
        return "interactive"
    if content.kind == "raw":
        return str(getattr(content, "type", "raw"))
    return content.kind


@dataclass(frozen=True, slots=True)
class Queued:
    """Outbound messages queued: their ids in order, and the sends leased to this process (LeaseOffer)."""

    ids: list[int]
    leased: list[Claimed]

    @property
    def left(self) -> int:
        """Sends queued but not leased to this process: any worker's to claim."""
        return len(self.ids) - len(self.leased)


async def enqueue(tx: Tx, drafts: Sequence[Draft], now: datetime, offer: LeaseOffer | None = None) -> Queued:
    """Insert outbound messages and their send work items, in order."""
    if not drafts:
        return Queued([], [])
    await lock_conversations(tx, (d.conversation_id for d in drafts))
    rows = [
        (
            d.conversation_id,
            d.number_id,
            "out",
            content_type(d.content),
            content_text(d.content),
            d.content.model_dump(mode="json"),
            DeliveryStatus.QUEUED.value,
            DeliveryStatus.QUEUED.rank,
            d.reply_to,
            d.turn_message_id,
            d.part,
            now,
            now,
        )
        for d in drafts
    ]
    # Ids are assigned in the order of the rows (see Tx.insert_many), whatever order RETURNING uses.
    ids = sorted(
        int(r[0])
        for r in await tx.insert_many(
            Base.metadata.tables["messages"], _OUTBOUND_COLUMNS, rows, returning="id"
        )
    )
    leased = await add_work(
        tx, SEND, [(d.conversation_id, mid) for d, mid in zip(drafts, ids, strict=True)], now, offer
    )
    return Queued(ids, leased)


async def load_pending(tx: Tx, message_ids: Sequence[int]) -> dict[int, PendingSend]:
    """The queued messages behind claimed send items, with their recipients."""
    if not message_ids:
        return {}
    rows = await tx.fetch(
        "SELECT m.id, m.conversation_id, m.number_id, m.content, m.reply_to, c.wa_id, c.user_id"
        " FROM messages AS m JOIN conversations AS v ON v.id = m.conversation_id"
        " JOIN contacts AS c ON c.id = v.contact_id WHERE m.id = ANY($1)",
        list(message_ids),
    )
    return {
        int(r[0]): PendingSend(
            message_id=int(r[0]),
            conversation_id=r[1],
            number_id=int(r[2]),
            content=_CONTENT.validate_python(tx.json(r[3])),
            reply_to=r[4],
            wa_id=r[5],
            user_id=r[6],
        )
        for r in rows
    }


async def record_sent(tx: Tx, sent: Sequence[tuple[int, int, str]], now: datetime) -> None:
    """Record accepted sends ``(message id, number id, wamid)`` and apply receipts that arrived first."""
    if not sent:
        return
    # A receipt being stored concurrently waits for this commit, or this waits for its (see lock_receipts).
    await lock_receipts(tx, ((number_id, wamid) for _, number_id, wamid in sent))
    await tx.executemany(
        "UPDATE messages SET provider_message_id = $2, status = $3, status_rank = $4, updated_at = $5"
        " WHERE id = $1",
        [
            (mid, wamid, DeliveryStatus.ACCEPTED.value, DeliveryStatus.ACCEPTED.rank, now)
            for mid, _, wamid in sent
        ],
    )
    # The simulator (and Meta) may deliver the "sent" receipt before this commit: apply it now.
    # (By number first: receipts are unique per number, wamid and status, and that index finds them.)
    by_number: dict[int, list[str]] = {}
    for _, number_id, wamid in sent:
        by_number.setdefault(number_id, []).append(wamid)
    early = []
    for number_id, wamids in sorted(by_number.items()):
        early += await tx.fetch(
            "SELECT number_id, provider_message_id, status, status_rank, errors FROM status_events"
            " WHERE number_id = $1 AND provider_message_id = ANY($2)",
            number_id,
            wamids,
        )
    if early:
        await apply_status_events(tx, [(r[0], r[1], r[2], r[3], tx.json(r[4])) for r in early], now)


async def record_failed(tx: Tx, failed: Sequence[tuple[int, dict[str, Any]]], now: datetime) -> None:
    """Mark outbound messages failed for good, with the error."""
    status, rank = DeliveryStatus.FAILED.value, DeliveryStatus.FAILED.rank
    await status_events(tx, [(m, None, None, status, rank, [e]) for m, e in failed], now)
    await tx.executemany(
        "UPDATE messages SET status = $2, status_rank = $3, error = $4, updated_at = $5 WHERE id = $1",
        [
            (message_id, DeliveryStatus.FAILED.value, DeliveryStatus.FAILED.rank, error, now)
            for message_id, error in failed
        ],
    )
