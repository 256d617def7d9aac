"""Response schemas of warelay's own API (``*Public``) and the page envelope."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Generic, TypeVar

from fastapi import HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A page of a list; pass ``next_cursor`` back as ``?cursor=`` for the next one (null: no more)."""

    items: list[T]
    next_cursor: str | None = None


class HandoffPublic(BaseModel):
    """The agent's request for a human: why, and when."""

    reason: str
    at: datetime


class ConversationPublic(BaseModel):
    """A conversation (session) as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="the session id, `<bot>_<user>_<epoch>_<random>`")
    number: str = Field(description="phone_number_id of the business number")
    tenant: str
    user: str = Field(description="the user's phone number (wa_id), or business-scoped user id")
    user_name: str | None = None
    is_active: bool
    intent: str | None = None
    step: str | None = None
    previous_intent: str | None = None
    previous_step: str | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    handoff: HandoffPublic | None = Field(
        default=None, description="set when the agent asked for a human to take over"
    )
    last_activity: datetime
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


class MessagePublic(BaseModel):
    """A message in or out."""

    id: int
    direction: str = Field(description="`in` from the user, `out` from the business")
    type: str
    text: str | None = None
    content: dict[str, Any]
    status: str
    provider_message_id: str | None = None
    reply_to: str | None = None
    error: dict[str, Any] | None = None
    provider_timestamp: datetime | None = None
    turn_notes: dict[str, Any] | None = Field(
        default=None,
        description="on the first message of a turn: the agent's kind and model, the passages it "
        "used and the turn's messages",
    )
    created_at: datetime
    updated_at: datetime


class FailurePublic(BaseModel):
    """A dead-lettered work item: a turn or a send that failed for good."""

    id: int
    kind: str = Field(description="`turn` (the agent failed) or `send` (delivery failed)")
    conversation_id: str
    message_id: int
    attempts: int
    last_error: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime


def encode_cursor(*values: Any) -> str:
    """An opaque cursor for keyset pagination."""
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    """Decode a cursor made by :func:`encode_cursor` (422 when it is not one)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != arity:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor")
    return values


def decode_id_cursor(cursor: str) -> int:
    """Decode a cursor holding one row id (422 when it is not one)."""
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, int) or isinstance(value, bool):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor")
    return value
