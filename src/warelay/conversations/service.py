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

from warelay.agents.base import HistoryItem, SessionState, StateChange
from warelay.domain import InboundMessage
from warelay.inbox.store import Claimed, message_from_record
from warelay.storage.direct import Tx

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
    tx: Tx, claimed: Sequence[Claimed], *, history_window: int
) -> dict[int, TurnData | ValueError]:
    """Load the turns behind claimed work items, keyed by work item id.

    A stored message that no longer reads as a domain message (written by an incompatible
    version, say) comes back as the ValueError describing it, so one bad row cannot stall a batch.
    """
    if not claimed:
        return {}
    by_message = {c.message_id: c for c in claimed}
    rows = await tx.fetch(
        "SELECT m.id, m.content, m.raw, v.id, v.number_id, v.intent, v.step, v.previous_intent,"
        " v.previous_step, v.context, v.metadata, c.user_key, c.profile_name"
        " FROM messages AS m JOIN conversations AS v ON v.id = m.conversation_id"
        " JOIN contacts AS c ON c.id = v.contact_id WHERE m.id = ANY($1)",
        list(by_message),
    )
    history = await _load_history(tx, claimed, history_window) if history_window else {}
    turns: dict[int, TurnData | ValueError] = {}
    for r in rows:
        item = by_message[int(r[0])]
        try:
            message = message_from_record(tx.json(r[1]), tx.json(r[2]))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            turns[item.id] = exc
            continue
        turns[item.id] = TurnData(
            claimed=item,
            number_id=int(r[4]),
            message=message,
            session=SessionState(
                session_id=r[3],
                intent=r[5],
                step=r[6],
                previous_intent=r[7],
                previous_step=r[8],
                context=tx.json(r[9]) or {},
                metadata=tx.json(r[10]) or {},
            ),
            user_key=r[11],
            user_name=r[12],
            history=history.get(item.message_id, ()),
        )
    return turns


async def _load_history(
    tx: Tx, claimed: Sequence[Claimed], window: int
) -> dict[int, tuple[HistoryItem, ...]]:
    """The last ``window`` messages before each claimed turn's message, oldest first (one query)."""
    before = {c.conversation_id: c.message_id for c in claimed}
    # The newest message of a claimed turn bounds the window; earlier rows are filtered in Python
    # per conversation (a claim holds one turn per conversation, so this is exact).
    rows = await tx.fetch(
        "SELECT id, conversation_id, direction, text, created_at FROM ("
        " SELECT id, conversation_id, direction, text, created_at,"
        "  row_number() OVER (PARTITION BY conversation_id ORDER BY id DESC) AS rn"
        " FROM messages WHERE conversation_id = ANY($1) AND id < $2) AS ranked"
        " WHERE rn <= $3 ORDER BY id",
        sorted(before),
        max(before.values()),
        window + _HISTORY_SLACK,
    )
    out: dict[str, list[HistoryItem]] = {}
    for message_id, conversation_id, direction, text, created_at in rows:
        if message_id >= before[conversation_id] or not text:
            continue
        out.setdefault(conversation_id, []).append(
            HistoryItem(role="user" if direction == "in" else "assistant", text=text, at=tx.time(created_at))
        )
    return {c.message_id: tuple(out.get(c.conversation_id, [])[-window:]) for c in claimed}


async def apply_state_changes(
    tx: Tx, changes: Sequence[tuple[str, SessionState, StateChange]], now: datetime
) -> None:
    """Commit agents' state changes; the previous intent/step are kept when they change, and a
    hand-off request is recorded with its time."""
    for conversation_id, before, change in changes:
        values: dict[str, Any] = {}
        if change.intent is not None and change.intent != before.intent:
            values["intent"] = change.intent
            values["previous_intent"] = before.intent
        if change.step is not None and change.step != before.step:
            values["step"] = change.step
            values["previous_step"] = before.step
        if change.context is not None:
            values["context"] = dict(change.context)
        if change.metadata is not None:
            values["metadata"] = dict(change.metadata)
        if change.handoff is not None:
            values["handoff_reason"] = change.handoff
            values["handoff_at"] = now
        if values:
            # Column names come from the fixed set above; every value is a bound parameter.
            assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(values, start=3))
            await tx.execute(
                f"UPDATE conversations SET updated_at = $2, {assignments} WHERE id = $1",  # noqa: S608
                conversation_id,
                now,
                *values.values(),
            )
