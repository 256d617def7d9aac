"""Conversation sync (seed 002): an external agent reads and writes the state of warelay's conversations.

Where it sits: beside the worker, on the same rows. The inbox opens a conversation when a user
writes; an agent running elsewhere then finds it by the user's phone number, reads its state
(intent, step, context, metadata) with the history warelay keeps, records its own transcript and
writes the state back. The API in :mod:`warelay.api.routes.sync` is a thin shell around this module.

What warelay keeps and the agent cannot overwrite: ``context.previousMessages`` (the WhatsApp
messages of the conversation in both directions, merged with the agent's transcript) and
``context.lastUserMessage``. Every other context key is the agent's (and the built-in agents').
``version`` counts state changes, so a writer can refuse to overwrite a state it has not seen.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import orjson
from sqlalchemy import Select, and_, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased

from warelay.numbers import ensure_agent
from warelay.storage.db import read_only
from warelay.storage.models import (
    Agent,
    Contact,
    Conversation,
    Message,
    Number,
    Tenant,
    TranscriptEntry,
    utcnow,
)

Role = Literal["user", "bot"]
ROLES: Final = ("user", "bot")
# previousMessages shows the newest HISTORY_LIMIT entries of the merged history.
HISTORY_LIMIT: Final = 50
# Context keys warelay computes; in a sync body they are ignored (read-modify-write clients send them back).
RESERVED_CONTEXT_KEYS: Final = frozenset({"previousMessages", "lastUserMessage"})
MAX_STATE_BYTES: Final = 64 * 1024  # each of context and metadata, as JSON
MAX_JSON_DEPTH: Final = 32
MAX_CONTENT_CHARS: Final = 16_384  # one transcript entry (WhatsApp's own limit is 4096 per message)
MAX_LABEL_CHARS: Final = 200  # intent and step (their columns)

# History rows fetched beyond the limit, so transcript entries near the window's edge still find
# the WhatsApp message they record.
_PAIRING_SLACK = 50
_PHONE_SEPARATORS = re.compile(r"[\s().-]")
_PHONE = re.compile(r"\d{5,20}")
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,159}")
_WHITESPACE = re.compile(r"\s+")
_SESSION_ID = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, as new_session_id makes them


class SyncError(Exception):
    """A sync request that cannot be served; ``status`` is the HTTP status that says why."""

    status = 400


class InvalidRequestError(SyncError):
    """The request is malformed (422)."""

    status = 422


class ConversationNotFoundError(SyncError):
    """No active conversation matches (404)."""

    status = 404


class VersionConflictError(SyncError):
    """The conversation changed since the version the writer read (409)."""

    status = 409

    def __init__(self, sent: int, current: int) -> None:
        super().__init__(
            f"conversation is at version {current}, not {sent}: it changed since it was read;"
            " read it again and retry"
        )
        self.current = current


class _NoDefaultAgentError(Exception):
    """The conversation's number has no linked agent and its tenant's default agent does not exist yet."""

    def __init__(self, tenant_id: int) -> None:
        super().__init__(tenant_id)
        self.tenant_id = tenant_id


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One entry of ``context.previousMessages``."""

    role: Role
    content: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ConversationView:
    """A conversation as seed 002 shows it (the agent's context without the keys warelay computes)."""

    session_id: str
    user_id: str
    bot_id: int
    sub_domain: str
    intent: str | None
    step: str | None
    previous_intent: str | None
    previous_step: str | None
    context: Mapping[str, Any]
    metadata: Mapping[str, Any]
    is_active: bool
    last_activity: datetime
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    version: int
    previous_messages: tuple[HistoryEntry, ...]
    last_user_message: str | None

    def full_context(self) -> dict[str, Any]:
        """The context as the API shows it: the agent's keys plus previousMessages and lastUserMessage."""
        return {
            **self.context,
            "previousMessages": [
                {"role": e.role, "content": e.content, "timestamp": js_time(e.at)}
                for e in self.previous_messages
            ],
            "lastUserMessage": self.last_user_message,
        }


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """What a sync writes; a field left at None keeps its value."""

    intent: str | None = None
    step: str | None = None
    context: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    is_active: bool | None = None
    version: int | None = None  # the version the writer read: a different current one is a conflict


def js_time(value: datetime) -> str:
    """A UTC timestamp as JavaScript's ``Date.toISOString()`` writes it (``2025-12-29T10:00:00.000Z``)."""
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_key(phone_number: str) -> str:
    """The key warelay files a user under, from a path segment: a phone number with or without ``+``
    (spaces, dots, dashes and parentheses ignored), or a business-scoped user id."""
    value = phone_number.strip()
    digits = _PHONE_SEPARATORS.sub("", value.removeprefix("+"))
    if _PHONE.fullmatch(digits):
        return digits
    if not value.startswith("+") and not digits.isdigit() and _USER_ID.fullmatch(value):
        return value
    raise InvalidRequestError(
        f"{phone_number[:40]!r} is not a phone number (5 to 20 digits, optionally after '+')"
    )


def public_user_id(wa_id: str | None, key: str) -> str:
    """``userId`` as seed 002 shows it: ``+<digits>`` for a phone number, else the business-scoped id."""
    return f"+{wa_id}" if wa_id else key


def check_json(value: Any, what: str) -> int:
    """Refuse JSON a database cannot store faithfully (NaN, NUL characters, lone surrogates, absurd
    nesting); returns its size."""
    _check_value(value, what, 0)
    try:
        return len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError) as exc:  # keys that are not strings, say
        raise InvalidRequestError(f"{what} is not valid JSON: {exc}") from None


def check_text(value: str, where: str) -> None:
    """Refuse text a database cannot store: NUL characters (PostgreSQL), lone surrogates (not UTF-8)."""
    if "\x00" in value:
        raise InvalidRequestError(f"{where} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequestError(f"{where} is not valid Unicode (it holds a lone surrogate)") from None


def _check_value(value: Any, where: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise InvalidRequestError(f"{where} is nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequestError(f"{where} is not a finite number")
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            check_text(key, f"a key in {where}")
            _check_value(inner, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _check_value(inner, f"{where}[{index}]", depth + 1)


def _check_state(value: Mapping[str, Any], what: str) -> None:
    size = check_json(value, what)
    if size > MAX_STATE_BYTES:
        raise InvalidRequestError(f"{what} is {size} bytes as JSON; at most {MAX_STATE_BYTES} are kept")


def _check_label(value: str | None, what: str) -> None:
    if isinstance(value, str):
        if len(value) > MAX_LABEL_CHARS:
            raise InvalidRequestError(f"{what} is longer than {MAX_LABEL_CHARS} characters")
        check_text(value, what)


def _normalised(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def merge_history(
    messages: Sequence[tuple[Role, str, datetime]],
    transcript: Sequence[tuple[Role, str, datetime]],
    *,
    limit: int = HISTORY_LIMIT,
) -> tuple[HistoryEntry, ...]:
    """The conversation's history, oldest first: WhatsApp messages and the agent's transcript (the newest
    ``limit`` of them).

    Both lists come oldest first. A transcript entry that records a WhatsApp message (the same
    role and text, whitespace aside) is shown once: the n-th entry with a given role and text
    pairs with the n-th such message, whichever was stored first. Ties in time go to the WhatsApp
    message.
    """
    available: dict[tuple[Role, str], int] = {}
    for role, text, _ in messages:
        key = (role, _normalised(text))
        available[key] = available.get(key, 0) + 1
    merged: list[tuple[datetime, int, int, HistoryEntry]] = [
        (at, 0, index, HistoryEntry(role, text, at)) for index, (role, text, at) in enumerate(messages)
    ]
    for index, (role, text, at) in enumerate(transcript):
        key = (role, _normalised(text))
        if available.get(key, 0) > 0:
            available[key] -= 1
            continue
        merged.append((at, 1, index, HistoryEntry(role, text, at)))
    merged.sort(key=lambda item: item[:3])
    return tuple(item[3] for item in merged[-limit:]) if limit else ()


# ------------------------------------------------------------------------------------------ service


_Default = aliased(Agent, name="default_agent")


class ConversationSync:
    """Reads and writes conversations for seed 002's API; every call is scoped to a tenant (None: all)."""

    def __init__(self, engine: AsyncEngine, *, default_agent: str, default_kind: str) -> None:
        self._engine = engine
        self._reader = read_only(engine)
        # A number without a linked agent is answered by the tenant's agent of this name (see
        # warelay.agents.provider), created with this kind when missing.
        self._default_agent = default_agent
        self._default_kind = default_kind

    def _query(self, tenant_id: int | None) -> Select[Any]:
        query = (
            select(
                Conversation.id,
                Conversation.is_active,
                Conversation.intent,
                Conversation.step,
                Conversation.previous_intent,
                Conversation.previous_step,
                Conversation.context,
                Conversation.meta.label("meta"),
                Conversation.last_activity,
                Conversation.expires_at,
                Conversation.created_at,
                Conversation.updated_at,
                Conversation.version,
                Number.tenant_id,
                Number.agent_id,
                _Default.id.label("default_agent_id"),
                Tenant.subdomain,
                Contact.user_key,
                Contact.wa_id,
            )
            .join(Number, Number.id == Conversation.number_id)
            .join(Tenant, Tenant.id == Number.tenant_id)
            .join(Contact, Contact.id == Conversation.contact_id)
            .outerjoin(
                _Default, and_(_Default.tenant_id == Number.tenant_id, _Default.name == self._default_agent)
            )
        )
        if tenant_id is not None:
            query = query.where(Number.tenant_id == tenant_id)
        return query

    @staticmethod
    def _active(query: Select[Any], now: datetime) -> Select[Any]:
        return query.where(Conversation.is_active.is_(True), Conversation.expires_at > now)

    async def find_active(
        self, *, tenant_id: int | None, phone_number: str, bot_id: str | None = None
    ) -> ConversationView:
        """The user's active conversation (the most recently active one, if the user writes to several
        numbers), optionally only one handled by agent ``bot_id``."""
        key = user_key(phone_number)
        shown = phone_number[:40]
        query = self._active(self._query(tenant_id), utcnow()).where(Contact.user_key == key)
        if bot_id is not None:
            wanted = bot_id.strip()
            # An agent id is a number; anything else names no agent of warelay's.
            if not wanted.isdigit() or len(wanted) > 18:
                raise ConversationNotFoundError(
                    f"no active conversation for {shown} with botId {bot_id[:40]!r}"
                )
            query = query.where(func.coalesce(Number.agent_id, _Default.id) == int(wanted))
        query = query.order_by(Conversation.last_activity.desc(), Conversation.id.desc()).limit(1)

        async def find() -> ConversationView:
            async with self._reader.connect() as conn:
                row = (await conn.execute(query)).first()
                if row is None:
                    suffix = f" with botId {bot_id[:40]!r}" if bot_id is not None else ""
                    raise ConversationNotFoundError(f"no active conversation for {shown}{suffix}")
                return await self._view(conn, row)

        return await self._retrying(find)

    async def get(self, *, tenant_id: int | None, session_id: str) -> ConversationView:
        """An active conversation by its session id."""

        async def read() -> ConversationView:
            async with self._reader.connect() as conn:
                return await self._view(conn, await self._active_row(conn, tenant_id, session_id))

        return await self._retrying(read)

    async def _active_row(
        self, conn: AsyncConnection, tenant_id: int | None, session_id: str, *, lock: bool = False
    ) -> Row[Any]:
        if not _SESSION_ID.fullmatch(session_id):  # never a session id warelay made (or can store)
            raise ConversationNotFoundError(f"no active conversation with sessionId {session_id[:200]!r}")
        query = self._active(self._query(tenant_id), utcnow()).where(Conversation.id == session_id)
        if lock:  # PostgreSQL; SQLite's writers already run one at a time
            query = query.with_for_update(of=Conversation)
        row: Row[Any] | None = (await conn.execute(query)).first()
        if row is None:
            raise ConversationNotFoundError(f"no active conversation with sessionId {session_id[:200]!r}")
        return row

    async def sync(
        self, *, tenant_id: int | None, session_id: str, change: StateUpdate, merge: bool = False
    ) -> ConversationView:
        """Write an agent's state: intent/step (the previous ones kept when they change), context
        (replaced, or merged one level deep), metadata (merged one level deep), isActive."""
        _check_label(change.intent, "intent")
        _check_label(change.step, "step")
        if change.context is not None:
            _check_state(change.context, "context")
        if change.metadata is not None:
            _check_state(change.metadata, "metadata")
        return await self._retrying(lambda: self._sync(tenant_id, session_id, change, merge))

    async def _sync(
        self, tenant_id: int | None, session_id: str, change: StateUpdate, merge: bool
    ) -> ConversationView:
        now = utcnow()
        async with self._engine.begin() as conn:
            row = await self._active_row(conn, tenant_id, session_id, lock=True)
            if change.version is not None and change.version != row.version:
                raise VersionConflictError(change.version, int(row.version))
            values: dict[str, Any] = {
                "version": Conversation.version + 1,
                "last_activity": now,
                "updated_at": now,
            }
            if change.intent is not None and change.intent != row.intent:
                values["intent"] = change.intent
                values["previous_intent"] = row.intent
            if change.step is not None and change.step != row.step:
                values["step"] = change.step
                values["previous_step"] = row.step
            if change.context is not None:
                sent = {k: v for k, v in change.context.items() if k not in RESERVED_CONTEXT_KEYS}
                values["context"] = {**(row.context or {}), **sent} if merge else sent
            if change.metadata is not None:
                values["meta"] = {**(row.meta or {}), **change.metadata}
            if change.is_active is False:
                values["is_active"] = False
            await conn.execute(update(Conversation).where(Conversation.id == row.id).values(**values))
            # Read back inside the transaction: the answer is exactly the state this write made.
            query = self._query(tenant_id).where(Conversation.id == row.id)
            return await self._view(conn, (await conn.execute(query)).one())

    async def add_message(
        self, *, tenant_id: int | None, session_id: str, role: str, content: str, api_key_id: int | None
    ) -> ConversationView:
        """Record one message of the agent's transcript in an active conversation (nothing is sent)."""
        if role not in ROLES:
            raise InvalidRequestError(f"role must be 'user' or 'bot', not {role[:40]!r}")
        if not content.strip():
            raise InvalidRequestError("content is empty")
        if len(content) > MAX_CONTENT_CHARS:
            raise InvalidRequestError(f"content is longer than {MAX_CONTENT_CHARS} characters")
        check_text(content, "content")
        return await self._retrying(
            lambda: self._add_message(tenant_id, session_id, role, content, api_key_id)
        )

    async def _add_message(
        self, tenant_id: int | None, session_id: str, role: str, content: str, api_key_id: int | None
    ) -> ConversationView:
        now = utcnow()
        async with self._engine.begin() as conn:
            row = await self._active_row(conn, tenant_id, session_id, lock=True)
            await conn.execute(
                insert(TranscriptEntry).values(
                    conversation_id=row.id, role=role, content=content, api_key_id=api_key_id, created_at=now
                )
            )
            await conn.execute(
                update(Conversation)
                .where(Conversation.id == row.id)
                .values(last_activity=now, updated_at=now)
            )
            query = self._query(tenant_id).where(Conversation.id == row.id)
            return await self._view(conn, (await conn.execute(query)).one())

    async def _retrying(self, operation: Callable[[], Awaitable[ConversationView]]) -> ConversationView:
        """Run ``operation``; when it met a tenant whose default agent does not exist yet, create that
        agent (as the worker would for the conversation's first turn) and run it again."""
        try:
            return await operation()
        except _NoDefaultAgentError as missing:
            await ensure_agent(
                self._engine, tenant_id=missing.tenant_id, name=self._default_agent, kind=self._default_kind
            )
            return await operation()

    async def _view(self, conn: AsyncConnection, row: Row[Any]) -> ConversationView:
        bot_id = row.agent_id if row.agent_id is not None else row.default_agent_id
        if bot_id is None:  # created outside this (maybe read-only) transaction, see _retrying
            raise _NoDefaultAgentError(int(row.tenant_id))
        history, last_user = await _history(conn, row.id)
        return ConversationView(
            session_id=row.id,
            user_id=public_user_id(row.wa_id, row.user_key),
            bot_id=int(bot_id),
            sub_domain=row.subdomain,
            intent=row.intent,
            step=row.step,
            previous_intent=row.previous_intent,
            previous_step=row.previous_step,
            context={k: v for k, v in (row.context or {}).items() if k not in RESERVED_CONTEXT_KEYS},
            metadata=row.meta or {},
            is_active=bool(row.is_active),
            last_activity=row.last_activity,
            expires_at=row.expires_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
            version=int(row.version),
            previous_messages=history,
            last_user_message=last_user,
        )


async def _history(
    conn: AsyncConnection, conversation_id: str
) -> tuple[tuple[HistoryEntry, ...], str | None]:
    """previousMessages and lastUserMessage of a conversation."""
    fetch = HISTORY_LIMIT + _PAIRING_SLACK
    message_rows = (
        await conn.execute(
            select(Message.direction, Message.text, Message.created_at)
            .where(Message.conversation_id == conversation_id, Message.text.is_not(None), Message.text != "")
            .order_by(Message.id.desc())
            .limit(fetch)
        )
    ).all()
    transcript_rows = (
        await conn.execute(
            select(TranscriptEntry.role, TranscriptEntry.content, TranscriptEntry.created_at)
            .where(TranscriptEntry.conversation_id == conversation_id)
            .order_by(TranscriptEntry.id.desc())
            .limit(fetch)
        )
    ).all()
    messages: list[tuple[Role, str, datetime]] = [
        ("user" if r.direction == "in" else "bot", r.text, r.created_at) for r in reversed(message_rows)
    ]
    transcript: list[tuple[Role, str, datetime]] = [
        ("user" if r.role == "user" else "bot", r.content, r.created_at) for r in reversed(transcript_rows)
    ]
    history = merge_history(messages, transcript)
    last_user = next((e.content for e in reversed(history) if e.role == "user"), None)
    if last_user is None:  # every shown entry is the agent's: look further back
        last_user = await _last_user_message(conn, conversation_id)
    return history, last_user


async def _last_user_message(conn: AsyncConnection, conversation_id: str) -> str | None:
    inbound = (
        await conn.execute(
            select(Message.text, Message.created_at)
            .where(
                Message.conversation_id == conversation_id,
                Message.direction == "in",
                Message.text.is_not(None),
                Message.text != "",
            )
            .order_by(Message.id.desc())
            .limit(1)
        )
    ).first()
    recorded = (
        await conn.execute(
            select(TranscriptEntry.content, TranscriptEntry.created_at)
            .where(TranscriptEntry.conversation_id == conversation_id, TranscriptEntry.role == "user")
            .order_by(TranscriptEntry.id.desc())
            .limit(1)
        )
    ).first()
    candidates = [(r[1], r[0]) for r in (inbound, recorded) if r is not None]
    return max(candidates)[1] if candidates else None
