"""Inspection API: conversations, their messages, and dead letters (for operators and the dashboard).

A platform admin sees everything; a tenant's key with ``conversations:read`` sees its own tenant only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from sqlalchemy import Select, and_, or_, select

from warelay.api.deps import Principal, ReaderDep, RuntimeDep
from warelay.api.schemas import (
    ConversationPublic,
    FailurePublic,
    HandoffPublic,
    MessagePublic,
    Page,
    decode_cursor,
    decode_id_cursor,
    encode_cursor,
)
from warelay.storage.models import Contact, Conversation, Message, Number, Tenant, WorkItem

router = APIRouter(prefix="/api/v1", tags=["inspection"])

_ConversationSelect = Select[Any]
_CONVERSATION = Conversation.__table__.c
_MESSAGE = Message.__table__.c
_WORK = WorkItem.__table__.c

LimitQuery = Annotated[int, Query(ge=1, le=500, description="page size")]
CursorQuery = Annotated[str | None, Query(max_length=500, description="`next_cursor` of the previous page")]


def _conversation_query() -> _ConversationSelect:
    return (
        select(
            *_CONVERSATION,
            Number.phone_number_id,
            Tenant.subdomain,
            Contact.user_key,
            Contact.profile_name,
        )
        .join(Number, Number.id == Conversation.number_id)
        .join(Tenant, Tenant.id == Number.tenant_id)
        .join(Contact, Contact.id == Conversation.contact_id)
    )


def _scoped(query: _ConversationSelect, principal: Principal) -> _ConversationSelect:
    if principal.tenant_id is not None:
        query = query.where(Number.tenant_id == principal.tenant_id)
    return query


def _conversation_public(row: Any) -> ConversationPublic:
    return ConversationPublic(
        id=row.id,
        number=row.phone_number_id,
        tenant=row.subdomain,
        user=row.user_key,
        user_name=row.profile_name,
        is_active=row.is_active,
        intent=row.intent,
        step=row.step,
        previous_intent=row.previous_intent,
        previous_step=row.previous_step,
        context=row.context or {},
        metadata=row.metadata or {},
        handoff=HandoffPublic(reason=row.handoff_reason, at=row.handoff_at) if row.handoff_at else None,
        last_activity=row.last_activity,
        expires_at=row.expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("/conversations", response_model=Page[ConversationPublic])
async def list_conversations(
    runtime: RuntimeDep,
    principal: ReaderDep,
    number: Annotated[str | None, Query(max_length=64, description="phone_number_id")] = None,
    user: Annotated[
        str | None, Query(max_length=160, description="the user's phone number or user id")
    ] = None,
    active: bool | None = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[ConversationPublic]:
    """Conversations, newest activity first, filtered by number and user."""
    query = _scoped(_conversation_query(), principal)
    if number is not None:
        query = query.where(Number.phone_number_id == number)
    if user is not None:
        query = query.where(Contact.user_key == user.lstrip("+"))
    if active is not None:
        query = query.where(Conversation.is_active.is_(active))
    if cursor is not None:
        at, conv_id = decode_cursor(cursor, 2)
        try:
            when = datetime.fromisoformat(str(at))
        except ValueError:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from None
        query = query.where(
            or_(
                Conversation.last_activity < when,
                and_(Conversation.last_activity == when, Conversation.id < str(conv_id)),
            )
        )
    query = query.order_by(Conversation.last_activity.desc(), Conversation.id.desc()).limit(limit + 1)
    async with runtime.reader.connect() as conn:
        rows = (await conn.execute(query)).all()
    items = [_conversation_public(r) for r in rows[:limit]]
    next_cursor = (
        encode_cursor(items[-1].last_activity.isoformat(), items[-1].id) if len(rows) > limit else None
    )
    return Page(items=items, next_cursor=next_cursor)


async def _get_conversation(
    runtime: RuntimeDep, principal: Principal, conversation_id: str
) -> ConversationPublic:
    query = _scoped(_conversation_query(), principal).where(Conversation.id == conversation_id)
    async with runtime.reader.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "conversation not found")
    return _conversation_public(row)


@router.get("/conversations/{conversation_id}", response_model=ConversationPublic)
async def get_conversation(
    conversation_id: str, runtime: RuntimeDep, principal: ReaderDep
) -> ConversationPublic:
    """One conversation with its session state."""
    return await _get_conversation(runtime, principal, conversation_id)


@router.get("/conversations/{conversation_id}/messages", response_model=Page[MessagePublic])
async def list_messages(
    conversation_id: str,
    runtime: RuntimeDep,
    principal: ReaderDep,
    limit: LimitQuery = 100,
    cursor: CursorQuery = None,
) -> Page[MessagePublic]:
    """A conversation's messages in order, both directions, with status and errors."""
    await _get_conversation(runtime, principal, conversation_id)
    query = select(*_MESSAGE).where(Message.conversation_id == conversation_id)
    if cursor is not None:
        query = query.where(Message.id > decode_id_cursor(cursor))
    query = query.order_by(Message.id).limit(limit + 1)
    async with runtime.reader.connect() as conn:
        rows = (await conn.execute(query)).all()
    items = [MessagePublic.model_validate(row._mapping) for row in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].id) if len(rows) > limit else None)


@router.get("/failures", response_model=Page[FailurePublic])
async def list_failures(
    runtime: RuntimeDep,
    principal: ReaderDep,
    kind: Annotated[str | None, Query(pattern="^(turn|send)$")] = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[FailurePublic]:
    """Dead letters: turns and sends that failed for good, newest first."""
    query = select(*_WORK).where(WorkItem.state == "dead")
    if principal.tenant_id is not None:
        query = (
            query.join(Conversation, Conversation.id == WorkItem.conversation_id)
            .join(Number, Number.id == Conversation.number_id)
            .where(Number.tenant_id == principal.tenant_id)
        )
    if kind is not None:
        query = query.where(WorkItem.kind == kind)
    if cursor is not None:
        query = query.where(WorkItem.id < decode_id_cursor(cursor))
    query = query.order_by(WorkItem.id.desc()).limit(limit + 1)
    async with runtime.reader.connect() as conn:
        rows = (await conn.execute(query)).all()
    items = [FailurePublic.model_validate(row._mapping) for row in rows[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].id) if len(rows) > limit else None)
