"""Seed 004's API (ClariOps): send a message, read a session, generate a reply; health is in ``health``.

- ``POST /api/send-message`` ``{"phoneNumber", "message"}`` (scope ``messages:send``): the text goes
  through the outbox like any reply (:mod:`warelay.outbound.api_send`: to active contacts only,
  audited, ``Idempotency-Key``), and the route waits up to 10 s (``?wait=`` shortens it) for Graph's
  answer, which it returns in ``data`` in Graph's shape (``messaging_product``, ``contacts``,
  ``messages``); still pending then, it answers ``202`` with the outbox message id; refused by
  WhatsApp, ``502`` with Meta's error.
- ``GET /api/session/{phoneNumber}`` (scope ``conversations:read``): the contact's current
  conversation — ``conversationId`` is its session id — with the last 10 messages as
  ``context.previousMessages``.
- ``POST /api/generate-response`` ``{"message", "conversationId", "context"}`` (scope
  ``conversations:read``): runs the number's agent on the text and returns its reply, sending and
  storing nothing; ``metadata.model`` and ``metadata.tokens`` are what the agent reports (the
  knowledge agent: model ``knowledge``, 0 tokens).

Every answer uses the seed's envelope, ``{"success", "message", "data"}``. The one deliberate
difference from the seed: these routes need an API key (``x-api-key`` or ``Authorization:
Bearer``), because an open send route would let anyone message a business's customers, and an open
session route would show anyone their conversations. ``/api/health`` stays open, as in the seed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Path, Query, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from warelay.agents.base import HistoryItem, SessionState, Turn
from warelay.api.deps import Principal, RuntimeDep
from warelay.api.routes.integration import (
    ERROR_RESPONSES,
    RECIPIENT_PATTERN,
    IdempotencyKeyHeader,
    recipient_key,
    rejected,
    request_hash,
)
from warelay.api.seed_envelope import (
    AuditedRoute,
    ReaderRoute,
    caller_of,
    envelope,
    require_scope,
)
from warelay.domain import InboundMessage, OutText, TextContent, UserRef
from warelay.numbers import NumberInfo
from warelay.outbound.api_send import (
    ApiSend,
    NumberChoiceError,
    SendQueued,
    SendRejectedError,
    SendState,
    pick_number,
    send_via_api,
    tenant_numbers,
    wait_for_sends,
)
from warelay.outbound.degrade import as_text
from warelay.runtime import Runtime
from warelay.storage.direct import Tx
from warelay.storage.models import Contact, Conversation, Message, Number, utcnow

__all__ = ["SEND_ROUTE", "router"]

log = logging.getLogger("warelay.api.seed004")

SEND_ROUTE: Final = "/api/send-message"
SEND_WAIT_SECONDS: Final = 10.0
SESSION_MESSAGES: Final = 10  # seed 004: "Conversation context is maintained for up to 10 messages"
_MESSAGE_MAX: Final = 10_000

SenderDep = Annotated[Principal, Depends(require_scope("messages:send"))]
ReaderDep = Annotated[Principal, Depends(require_scope("conversations:read"))]
FromQuery = Annotated[
    str | None,
    Query(
        alias="from",
        min_length=1,
        max_length=64,
        description="warelay: which of the tenant's numbers (phone_number_id or display number)",
    ),
]

_send = APIRouter(tags=["seed 004: ClariOps API"], route_class=AuditedRoute)
_read = APIRouter(tags=["seed 004: ClariOps API"], route_class=ReaderRoute)
router = APIRouter()


def _iso(value: datetime) -> str:
    """A time as the seed writes it: ``2024-01-15T12:00:00.000Z``."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------- send-message


class ClariOpsSendRequest(BaseModel):
    """Seed 004's body (``from`` is warelay's addition, for tenants with several numbers)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"examples": [{"phoneNumber": "1234567890", "message": "Hello from ClariOps!"}]},
    )

    phoneNumber: str = Field(pattern=RECIPIENT_PATTERN, description="the contact's WhatsApp number")  # noqa: N815  # the seed's field name
    message: str = Field(min_length=1, max_length=_MESSAGE_MAX)
    sender: str | None = Field(default=None, alias="from", min_length=1, max_length=64)


class GraphContact(BaseModel):
    """Graph's ``contacts[]`` entry: the recipient as sent and as WhatsApp knows them."""

    input: str
    wa_id: str | None = None
    user_id: str | None = None


class GraphMessage(BaseModel):
    """Graph's ``messages[]`` entry: the wamid of a message it accepted."""

    id: str


class GraphAnswer(BaseModel):
    """Graph's answer to the send (one ``messages`` entry per part of a long text)."""

    messaging_product: Literal["whatsapp"]
    contacts: list[GraphContact]
    messages: list[GraphMessage]


class SendMessageResponse(BaseModel):
    """``200``: WhatsApp accepted the message."""

    success: Literal[True]
    message: str
    data: GraphAnswer


def graph_answer(queued: SendQueued, states: list[SendState]) -> dict[str, Any]:
    """Graph's answer, as it was: warelay sent the contact's wa_id (or user id) and got these wamids."""
    if queued.wa_id is not None:
        contact: dict[str, Any] = {"input": queued.wa_id, "wa_id": queued.wa_id}
    else:
        contact = {"input": queued.user_id, "user_id": queued.user_id}
    return {
        "messaging_product": "whatsapp",
        "contacts": [contact],
        "messages": [{"id": s.wamid} for s in states],
    }


def _pending(queued: SendQueued, states: list[SendState]) -> JSONResponse:
    ids = [str(i) for i in queued.message_ids]
    settled = sum(1 for s in states if s.settled)
    return envelope(
        True,
        f"Message queued; WhatsApp has not answered yet ({settled} of {len(ids)} parts accepted)",
        {"message_id": ids[0], "message_ids": ids, "status": "queued"},
        status.HTTP_202_ACCEPTED,
    )


def _failed(queued: SendQueued, state: SendState) -> JSONResponse:
    error = state.error or {}
    reason = error.get("message") or "the message failed"
    return envelope(
        False,
        f"WhatsApp did not accept the message: {reason}",
        {
            "message_id": str(state.message_id),
            "message_ids": [str(i) for i in queued.message_ids],
            "status": "failed",
            "error": {k: error.get(k) for k in ("code", "message", "details")},
        },
        status.HTTP_502_BAD_GATEWAY,
    )


@_send.post(
    SEND_ROUTE,
    response_model=SendMessageResponse,
    responses={
        202: {"description": "queued; WhatsApp had not answered within the wait"},
        502: {"description": "WhatsApp refused the message (Meta's error in `data.error`)"},
        **ERROR_RESPONSES,
    },
    summary="Send a WhatsApp message (seed 004)",
)
async def send_message(
    body: ClariOpsSendRequest,
    principal: SenderDep,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKeyHeader = None,
    wait: Annotated[
        float, Query(ge=0, le=SEND_WAIT_SECONDS, description="warelay: seconds to wait for Graph (≤ 10)")
    ] = SEND_WAIT_SECONDS,
) -> JSONResponse:
    """Queue a text for a contact who wrote recently and return Graph's answer (waits up to 10 s)."""
    send = ApiSend(
        route=SEND_ROUTE,
        to=recipient_key(body.phoneNumber),
        recipient=body.phoneNumber,
        type="text",
        contents=(OutText(body=body.message),),
        sender=body.sender,
        idempotency_key=idempotency_key,
        request_hash=request_hash(SEND_ROUTE, body.model_dump(mode="json", by_alias=True, exclude_none=True)),
    )
    try:
        queued = await send_via_api(runtime, caller_of(principal), send)
    except SendRejectedError as exc:
        return rejected(exc)
    states = await wait_for_sends(runtime, queued.message_ids, wait)
    failed = next((s for s in states if s.status == "failed"), None)
    if failed is not None:
        response = _failed(queued, failed)
    elif not all(s.settled for s in states):
        response = _pending(queued, states)
    else:
        response = envelope(True, "Message sent successfully", graph_answer(queued, states))
    if queued.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


# -------------------------------------------------------------------------------------------- session


class PreviousMessage(BaseModel):
    """One message of the conversation: ``user`` (the contact) or ``assistant`` (the business)."""

    role: Literal["user", "assistant", "bot"]
    content: str
    timestamp: datetime | None = None


class SessionData(BaseModel):
    """Seed 004's session."""

    conversationId: str  # noqa: N815  # the seed's field names
    phoneNumber: str  # noqa: N815
    customerName: str | None  # noqa: N815
    context: dict[str, Any]
    lastActivity: str  # noqa: N815
    active: bool


class SessionResponse(BaseModel):
    """``200``: the contact's current conversation."""

    success: Literal[True]
    data: SessionData


@_read.get(
    "/api/session/{phoneNumber}",
    response_model=SessionResponse,
    responses={404: {"description": "no conversation with this number"}, **ERROR_RESPONSES},
    summary="A contact's current conversation (seed 004)",
)
async def get_session(
    phoneNumber: Annotated[str, Path(pattern=RECIPIENT_PATTERN)],  # noqa: N803  # the seed's name
    principal: ReaderDep,
    runtime: RuntimeDep,
    sender: FromQuery = None,
) -> JSONResponse:
    """The contact's current conversation with the tenant's numbers: session id, state, last messages."""
    key = recipient_key(phoneNumber)
    query = (
        select(
            Conversation.id,
            Conversation.context,
            Conversation.is_active,
            Conversation.expires_at,
            Conversation.last_activity,
            Contact.wa_id,
            Contact.user_key,
            Contact.profile_name,
        )
        .join(Contact, Contact.id == Conversation.contact_id)
        .join(Number, Number.id == Conversation.number_id)
        .where(Contact.user_key == key)
    )
    if principal.tenant_id is not None:
        query = query.where(Number.tenant_id == principal.tenant_id)
    if sender is not None:
        # The same matching as the send routes' `from` (phone_number_id, or the display number's digits).
        try:
            number = pick_number(await runtime.db.read(tenant_numbers, principal.tenant_id), sender)
        except NumberChoiceError as exc:
            return envelope(False, exc.reason, None, exc.status)
        query = query.where(Conversation.number_id == number.id)
    # The open conversation if there is one, else the latest.
    query = query.order_by(Conversation.is_active.desc(), Conversation.last_activity.desc()).limit(1)
    async with runtime.reader.connect() as conn:
        row = (await conn.execute(query)).first()
        if row is None:
            return envelope(False, f"no conversation with {phoneNumber}", None, status.HTTP_404_NOT_FOUND)
        recent = (
            await conn.execute(
                select(Message.direction, Message.text, Message.created_at)
                .where(Message.conversation_id == row.id)
                .order_by(Message.id.desc())
                .limit(SESSION_MESSAGES)
            )
        ).all()
    previous = [
        {
            "role": "user" if m.direction == "in" else "assistant",
            "content": m.text,
            "timestamp": _iso(m.created_at),
        }
        for m in reversed(recent)
        if m.text
    ]
    now = utcnow()
    data = {
        "conversationId": row.id,
        "phoneNumber": row.wa_id or row.user_key,
        "customerName": row.profile_name,
        "context": {**(row.context or {}), "previousMessages": previous},
        "lastActivity": _iso(row.last_activity),
        "active": bool(row.is_active and row.expires_at > now),
    }
    return envelope(True, None, data)


# ---------------------------------------------------------------------------------- generate-response


class GenerateContext(BaseModel):
    """The conversation so far (``previousMessages``, oldest first) and any other context fields."""

    model_config = ConfigDict(extra="allow")

    previousMessages: list[PreviousMessage] = Field(default_factory=list)  # noqa: N815  # the seed's name


class GenerateRequest(BaseModel):
    """Seed 004's body (``from`` is warelay's addition, for tenants with several numbers)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "message": "What are your pricing plans?",
                    "conversationId": "test_123",
                    "context": {"previousMessages": []},
                }
            ]
        },
    )

    message: str = Field(min_length=1, max_length=_MESSAGE_MAX)
    conversationId: str | None = Field(default=None, min_length=1, max_length=200)  # noqa: N815
    context: GenerateContext | None = None
    sender: str | None = Field(default=None, alias="from", min_length=1, max_length=64)


class GenerateMetadata(BaseModel):
    """What produced the reply: the model (or the agent's kind), tokens used, when."""

    model: str
    tokens: int
    timestamp: str


class GenerateData(BaseModel):
    """The agent's reply."""

    reply: str
    conversationId: str | None  # noqa: N815  # the seed's field name
    metadata: GenerateMetadata


class GenerateResponse(BaseModel):
    """``200``: the reply the number's agent would give."""

    success: Literal[True]
    data: GenerateData


class _Known:
    """What a real conversation named by ``conversationId`` gives the turn."""

    def __init__(self, row: Any, history: list[HistoryItem]) -> None:
        self.number_id = int(row[0])
        self.session = SessionState(
            session_id=row[1],
            intent=row[2],
            step=row[3],
            previous_intent=row[4],
            previous_step=row[5],
            context=row[6] or {},
            metadata=row[7] or {},
        )
        self.user_key: str = row[8]
        self.wa_id: str | None = row[9]
        self.user_id: str | None = row[10]
        self.user_name: str | None = row[11]
        self.history = history


async def _known_conversation(tx: Tx, conversation_id: str, tenant_id: int | None) -> _Known | None:
    row = await tx.fetchrow(
        "SELECT v.number_id, v.id, v.intent, v.step, v.previous_intent, v.previous_step, v.context,"
        " v.metadata, c.user_key, c.wa_id, c.user_id, c.profile_name, n.tenant_id"
        " FROM conversations AS v JOIN contacts AS c ON c.id = v.contact_id"
        " JOIN numbers AS n ON n.id = v.number_id WHERE v.id = $1",
        conversation_id,
    )
    if row is None or (tenant_id is not None and int(row[12]) != tenant_id):
        return None
    recent = await tx.fetch(
        "SELECT direction, text, created_at FROM messages WHERE conversation_id = $1"
        " ORDER BY id DESC LIMIT $2",
        conversation_id,
        SESSION_MESSAGES,
    )
    history = [
        HistoryItem(role="user" if d == "in" else "assistant", text=t, at=tx.time(at))
        for d, t, at in reversed(recent)
        if t
    ]
    fixed = [*row[:6], tx.json(row[6]), tx.json(row[7]), *row[8:]]
    return _Known(fixed, history)


async def _number_info(runtime: Runtime, number_id: int) -> NumberInfo | None:
    info = runtime.registry.by_id(number_id)
    if info is None:  # a number added by another process since the registry last loaded
        await runtime.registry.load()
        info = runtime.registry.by_id(number_id)
    return info


@_read.post(
    "/api/generate-response",
    response_model=GenerateResponse,
    responses={
        502: {"description": "the agent failed"},
        504: {"description": "the agent did not answer in time"},
        **ERROR_RESPONSES,
    },
    summary="Run the number's agent on a message, without sending (seed 004)",
)
async def generate_response(body: GenerateRequest, principal: ReaderDep, runtime: RuntimeDep) -> JSONResponse:
    """The reply the number's agent gives to ``message``; nothing is sent or stored."""
    known = (
        await runtime.db.read(_known_conversation, body.conversationId, principal.tenant_id)
        if body.conversationId is not None
        else None
    )
    if known is not None and body.sender is None:
        number_id = known.number_id
    else:
        try:
            number_id = pick_number(
                await runtime.db.read(tenant_numbers, principal.tenant_id), body.sender
            ).id
        except NumberChoiceError as exc:
            return envelope(False, exc.reason, None, exc.status)
        if known is not None and known.number_id != number_id:
            known = None  # the conversation is another number's: the request's own context applies
    number = await _number_info(runtime, number_id)
    if number is None:
        return envelope(False, "the number is no longer configured", None, status.HTTP_404_NOT_FOUND)
    try:
        spec, agent = await runtime.agents.for_number(number)
    except LookupError as exc:
        return envelope(
            False, f"the number's agent cannot be used: {exc}", None, status.HTTP_503_SERVICE_UNAVAILABLE
        )
    if spec.kind == "external":
        return envelope(
            False,
            "this number's agent is an external platform: it answers through "
            "POST /api/v1/integration/ai/send-message, not here",
            None,
            status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    turn = _turn(body, number, spec.id, known)
    timeout = float(spec.config.get("timeout_seconds") or runtime.settings.agent.timeout_seconds)
    try:
        reply = await asyncio.wait_for(agent.respond(turn), timeout=timeout)
    except TimeoutError:
        return envelope(
            False, f"the agent did not answer within {timeout:g} s", None, status.HTTP_504_GATEWAY_TIMEOUT
        )
    except Exception as exc:
        log.warning("generate-response: the agent failed (%s)", type(exc).__name__, exc_info=True)
        return envelope(False, f"the agent failed: {exc}"[:500], None, status.HTTP_502_BAD_GATEWAY)
    texts = [text.body for content in reply.replies if (text := as_text(content)) is not None]
    usage = reply.notes.get("usage")
    tokens = 0
    if isinstance(usage, dict):
        tokens = sum(int(usage.get(k) or 0) for k in ("input_tokens", "output_tokens"))
    model = reply.notes.get("model")
    data = {
        "reply": "\n\n".join(texts),
        "conversationId": body.conversationId,
        "metadata": {
            "model": model if isinstance(model, str) and model else spec.kind,
            "tokens": tokens,
            "timestamp": _iso(utcnow()),
        },
    }
    return envelope(True, None, data)


def _turn(body: GenerateRequest, number: NumberInfo, agent_id: int | None, known: _Known | None) -> Turn:
    """The turn the agent answers: the message, and the conversation the request or the database gives."""
    now = utcnow()
    context: dict[str, Any] | None = None
    history: list[HistoryItem] = []
    if body.context is not None:
        history = [
            HistoryItem(
                role="user" if m.role == "user" else "assistant",
                text=m.content,
                at=m.timestamp or now,
            )
            for m in body.context.previousMessages
            if m.content
        ]
        context = dict(body.context.model_extra or {})
    if known is not None:
        session = (
            known.session
            if context is None
            else SessionState(
                session_id=known.session.session_id,
                intent=known.session.intent,
                step=known.session.step,
                previous_intent=known.session.previous_intent,
                previous_step=known.session.previous_step,
                context=context,
                metadata=known.session.metadata,
            )
        )
        sender = UserRef(wa_id=known.wa_id, user_id=known.user_id, profile_name=known.user_name)
        user_key, user_name = known.user_key, known.user_name
        if body.context is None:
            history = known.history
    else:
        session = SessionState(
            session_id=body.conversationId or f"generate_{secrets.token_hex(6)}", context=context or {}
        )
        sender = UserRef(user_id="generate-response")
        user_key, user_name = "generate-response", None
    message = InboundMessage(
        provider_message_id=f"generate.{secrets.token_hex(8)}",
        number_id=number.phone_number_id,
        sender=sender,
        timestamp=now,
        type="text",
        content=TextContent(body=body.message),
    )
    return Turn(
        tenant_id=number.tenant_id,
        tenant=number.tenant,
        number_id=number.id,
        phone_number_id=number.phone_number_id,
        agent_id=agent_id,
        user_key=user_key,
        user_name=user_name,
        session=session,
        messages=(message,),
        history=tuple(history),
    )


router.include_router(_send)
router.include_router(_read)
