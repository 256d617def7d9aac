"""Conversations: what a turn knows (session state, history window) and how its state changes are kept.

Where it sits: between the inbox and the agent. Sessions are opened and expired by the inbox
when messages arrive (one active conversation per number and user); here the worker loads, for a
batch of claimed turns, the message, the session and the last ``history_window`` messages in
three queries, and commits the agent's state change with the turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from warelay.agents.base import HistoryItem, SessionState, StateChange
from warelay.domain import InboundMessage
from warelay.inbox.store import Claimed, message_from_record
from warelay.storage.models import Contact, Conversation, Message

# Messages newer than a turn (queued behind it) are fetched and then dropped; this margin keeps the
# window full in that case without fetching whole conversations.
_HISTORY_SLACK = 20


@dataclass(frozen=True, slots=True)
class TurnData:
    """Everything stored about one claimed turn."""

    claimed: Claimed
    number_id: int
    message: InboundMessage
    session: SessionState
    user_key: str
    user_name: str | None
    history: tuple[HistoryItem, ...]


async def load_turns(
    conn: AsyncConnection, claimed: Sequence[Claimed], *, history_window: int
) -> dict[int, TurnData | ValueError]:
    """Load the turns behind claimed work items, keyed by work item id.

    A stored message that no longer reads as a domain message (written by an incompatible
    version, say) comes back as the ValueError describing it, so one bad row cannot stall a batch.
    """
    if not claimed:
        return {}
    by_message = {c.message_id: c for c in claimed}
    rows = (
        await conn.execute(
            select(
                Message.id,
                Message.content,
                Message.raw,
                Conversation.id.label("conversation_id"),
                Conversation.number_id,
                Conversation.intent,
                Conversation.step,
                Conversation.previous_intent,
                Conversation.previous_step,
                Conversation.context,
                Conversation.meta.label("meta"),
                Contact.user_key,
                Contact.profile_name,
            )
            .join(Conversation, Conversation.id == Message.conversation_id)
            .join(Contact, Contact.id == Conversation.contact_id)
            .where(Message.id.in_(list(by_message)))
        )
    ).all()
    history = await _load_history(conn, claimed, history_window) if history_window else {}
    turns: dict[int, TurnData | ValueError] = {}
    for r in rows:
        item = by_message[r.id]
        try:
            message = message_from_record(r.content, r.raw)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            turns[item.id] = exc
            continue
        turns[item.id] = TurnData(
            claimed=item,
            number_id=r.number_id,
            message=message,
            session=SessionState(
                session_id=r.conversation_id,
                intent=r.intent,
                step=r.step,
                previous_intent=r.previous_intent,
                previous_step=r.previous_step,
                context=r.context or {},
                metadata=r.meta or {},
            ),
            user_key=r.user_key,
            user_name=r.profile_name,
            history=history.get(item.message_id, ()),
        )
    return turns


async def _load_history(
    conn: AsyncConnection, claimed: Sequence[Claimed], window: int
) -> dict[int, tuple[HistoryItem, ...]]:
    """The last ``window`` messages before each claimed turn's message, oldest first (one query)."""
    conversations = {c.conversation_id for c in claimed}
    before = {c.conversation_id: c.message_id for c in claimed}
    # The newest message of a claimed turn bounds the window; earlier rows are filtered in Python
    # per conversation (a claim holds one turn per conversation, so this is exact).
    ranked = (
        select(
            Message.id,
            Message.conversation_id,
            Message.direction,
            Message.text,
            Message.created_at,
            func.row_number()
            .over(partition_by=Message.conversation_id, order_by=Message.id.desc())
            .label("rn"),
        )
        .where(Message.conversation_id.in_(conversations), Message.id < max(before.values()))
        .subquery()
    )
    rows = (
        await conn.execute(select(ranked).where(ranked.c.rn <= window + _HISTORY_SLACK).order_by(ranked.c.id))
    ).all()
    out: dict[str, list[HistoryItem]] = {}
    for r in rows:
        if r.id >= before[r.conversation_id] or not r.text:
            continue
        out.setdefault(r.conversation_id, []).append(
            HistoryItem(role="user" if r.direction == "in" else "assistant", text=r.text, at=r.created_at)
        )
    return {c.message_id: tuple(out.get(c.conversation_id, [])[-window:]) for c in claimed}


async def apply_state_changes(
    conn: AsyncConnection, changes: Sequence[tuple[str, SessionState, StateChange]], now: datetime
) -> None:
    """Commit agents' state changes; the previous intent/step are kept when they change."""
    for conversation_id, before, change in changes:
        values: dict[str, Any] = {"updated_at": now}
        if change.intent is not None and change.intent != before.intent:
            values["intent"] = change.intent
            values["previous_intent"] = before.intent
        if change.step is not None and change.step != before.step:
            values["step"] = change.step
            values["previous_step"] = before.step
        if change.context is not None:
            values["context"] = dict(change.context)
        if change.metadata is not None:
            values["meta"] = dict(change.metadata)
        if len(values) > 1:
            await conn.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values({getattr(Conversation, k): v for k, v in values.items()})
            )
