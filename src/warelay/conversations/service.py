"""Conversations: what a turn knows (session state, history window) and how its state changes are kept.

Where it sits: between the inbox and the agent. Sessions are opened and expired by the inbox
when messages arrive (one active conversation per number and user); here the worker loads, for a
batch of claimed turns, the message, the session and the last ``history_window`` messages in
three queries, and commits the agent's state change with the turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    """Commit agents' state changes; the previous intent/step are kept when they change, a
    hand-off request is recorded with its time, and the conversation's version goes up by one."""
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
            # Column names come from the fixed set above; every value is a bound parameter. Each
            # change counts in the conversation's version (the sync API's optimistic concurrency).
            assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(values, start=3))
            await tx.execute(
                f"UPDATE conversations SET updated_at = $2, version = version + 1, {assignments}"  # noqa: S608
                " WHERE id = $1",
                conversation_id,
                now,
                *values.values(),
            )


@dataclass(frozen=True, slots=True)
class Follower:
    """A message queued behind a turn in its conversation, taken into that turn (a burst)."""

    item_id: int  # its work item, finished (or dead-lettered) together with the turn's own
    message_id: int
    message: InboundMessage


async def load_followers(tx: Tx, conversation_id: str, after_item: int, limit: int) -> list[Follower]:
    """The user's messages waiting behind work item ``after_item`` in the conversation's turn lane.

    A message that no longer reads as a domain message is left for its own turn (which dead-letters it).
    """
    rows = await tx.fetch(
        "SELECT w.id, m.id, m.content, m.raw FROM work_items AS w JOIN messages AS m ON m.id = w.message_id"
        " WHERE w.conversation_id = $1 AND w.kind = 'turn' AND w.state = 'waiting' AND w.id > $2"
        " ORDER BY w.id LIMIT $3",
        conversation_id,
        after_item,
        limit,
    )
    followers: list[Follower] = []
    for item_id, message_id, content, raw in rows:
        try:
            message = message_from_record(tx.json(content), tx.json(raw))
        except ValueError:
            break  # keep order: the unreadable one and everything after it wait for their own turns
        followers.append(Follower(int(item_id), int(message_id), message))
    return followers


async def newest_waiting(tx: Tx, conversation_id: str) -> tuple[int, str | None] | None:
    """The newest user message queued in the conversation's turn lane: (work item id, provider id)."""
    rows = await tx.fetch(
        "SELECT w.id, m.provider_message_id FROM work_items AS w JOIN messages AS m ON m.id = w.message_id"
        " WHERE w.conversation_id = $1 AND w.kind = 'turn' AND w.state = 'waiting'"
        " ORDER BY w.id DESC LIMIT 1",
        conversation_id,
    )
    return (int(rows[0][0]), rows[0][1]) if rows else None


async def close_followers(
    tx: Tx, turns: Sequence[tuple[int, str, Sequence[int]]], *, error: dict[str, Any] | None, now: datetime
) -> None:
    """End the followers taken into turns ``(head item id, head lease, follower item ids)`` whose
    head is still leased to us: deleted when the turn is done, dead-lettered with it (``error``).

    Runs before the heads are finished, so the lane's next head is the first message after them.
    """
    rows = [(list(ids), head, lease) for head, lease, ids in turns if ids]
    if not rows:
        return
    guard = "EXISTS (SELECT 1 FROM work_items AS h WHERE h.id = $2 AND h.lease_owner = $3)"
    if error is None:
        await tx.executemany(
            f"DELETE FROM work_items WHERE id = ANY($1) AND state = 'waiting' AND {guard}",  # noqa: S608
            rows,
        )
    else:
        dead = "UPDATE work_items SET state = 'dead', last_error = $4, updated_at = $5"
        await tx.executemany(
            f"{dead} WHERE id = ANY($1) AND state = 'waiting' AND {guard}",
            [(*row, error, now) for row in rows],
        )


async def stale_turns(tx: Tx, newest_taken: Mapping[str, int]) -> set[str]:
    """Conversations in which a user message arrived after the newest one a turn took (abort on newer)."""
    if not newest_taken:
        return set()
    rows = await tx.fetch(
        "SELECT conversation_id, max(id) FROM work_items WHERE kind = 'turn' AND state = 'waiting'"
        " AND conversation_id = ANY($1) GROUP BY conversation_id",
        sorted(newest_taken),
    )
    return {conv for conv, newest in rows if int(newest) > newest_taken[conv]}


async def record_turn_notes(tx: Tx, notes: Sequence[tuple[int, Mapping[str, Any]]]) -> None:
    """Keep what agents reported about their turns on each turn's first message (for operators)."""
    if notes:
        await tx.executemany(
            "UPDATE messages SET turn_notes = $2 WHERE id = $1", [(m, dict(n)) for m, n in notes]
        )
