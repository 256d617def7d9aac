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
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from warelay.domain import DeliveryStatus, OutboundContent, OutText
from warelay.inbox.store import SEND, add_work, apply_status_events, lock_conversations
from warelay.storage.models import Contact, Conversation, Message, StatusEvent

_CONTENT = TypeAdapter[OutboundContent](OutboundContent)


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
    if content.kind in ("buttons", "list", "cta_url"):
        return "interactive"
    if content.kind == "raw":
        return str(getattr(content, "type", "raw"))
    return content.kind


async def enqueue(conn: AsyncConnection, drafts: Sequence[Draft], now: datetime) -> list[int]:
    """Insert outbound messages and their send work items, in order; returns the message ids."""
    if not drafts:
        return []
    await lock_conversations(conn, (d.conversation_id for d in drafts))
    rows = [
        {
            "conversation_id": d.conversation_id,
            "number_id": d.number_id,
            "direction": "out",
            "type": content_type(d.content),
            "provider_message_id": None,
            "text": content_text(d.content),
            "content": d.content.model_dump(mode="json"),
            "status": DeliveryStatus.QUEUED.value,
            "status_rank": DeliveryStatus.QUEUED.rank,
            "reply_to": d.reply_to,
            "turn_message_id": d.turn_message_id,
            "part": d.part,
            "created_at": now,
            "updated_at": now,
        }
        for d in drafts
    ]
    result = await conn.execute(insert(Message).returning(Message.id, sort_by_parameter_order=True), rows)
    ids = [int(r.id) for r in result]
    await add_work(conn, SEND, [(d.conversation_id, mid) for d, mid in zip(drafts, ids, strict=True)], now)
    return ids


async def load_pending(conn: AsyncConnection, message_ids: Sequence[int]) -> dict[int, PendingSend]:
    """The queued messages behind claimed send items, with their recipients."""
    if not message_ids:
        return {}
    rows = await conn.execute(
        select(
            Message.id,
            Message.conversation_id,
            Message.number_id,
            Message.content,
            Message.reply_to,
            Contact.wa_id,
            Contact.user_id,
        )
        .join(Conversation, Conversation.id == Message.conversation_id)
        .join(Contact, Contact.id == Conversation.contact_id)
        .where(Message.id.in_(list(message_ids)))
    )
    return {
        r.id: PendingSend(
            message_id=r.id,
            conversation_id=r.conversation_id,
            number_id=r.number_id,
            content=_CONTENT.validate_python(r.content),
            reply_to=r.reply_to,
            wa_id=r.wa_id,
            user_id=r.user_id,
        )
        for r in rows
    }


async def record_sent(conn: AsyncConnection, sent: Sequence[tuple[int, int, str]], now: datetime) -> None:
    """Record accepted sends ``(message id, number id, wamid)`` and apply receipts that arrived first."""
    if not sent:
        return
    await conn.execute(
        update(Message)
        .where(Message.id == bindparam("b_id"))
        .values(
            provider_message_id=bindparam("b_wamid"),
            status=DeliveryStatus.ACCEPTED.value,
            status_rank=DeliveryStatus.ACCEPTED.rank,
            updated_at=bindparam("b_now", type_=Message.updated_at.type),
        ),
        [{"b_id": mid, "b_wamid": wamid, "b_now": now} for mid, _, wamid in sent],
    )
    # The simulator (and Meta) may deliver the "sent" receipt before this commit: apply it now.
    early = await conn.execute(
        select(
            StatusEvent.number_id,
            StatusEvent.provider_message_id,
            StatusEvent.status,
            StatusEvent.status_rank,
            StatusEvent.errors,
        ).where(StatusEvent.provider_message_id.in_([wamid for _, _, wamid in sent]))
    )
    events = [(r.number_id, r.provider_message_id, r.status, r.status_rank, r.errors) for r in early]
    if events:
        await apply_status_events(conn, events, now)


async def record_failed(
    conn: AsyncConnection, failed: Sequence[tuple[int, dict[str, Any]]], now: datetime
) -> None:
    """Mark outbound messages failed for good, with the error."""
    for message_id, error in failed:
        await conn.execute(
            update(Message)
            .where(Message.id == message_id)
            .values(
                status=DeliveryStatus.FAILED.value,
                status_rank=DeliveryStatus.FAILED.rank,
                error=error,
                updated_at=now,
            )
        )
