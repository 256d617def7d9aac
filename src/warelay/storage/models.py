"""SQLAlchemy table models: the durable state behind every stage of the path.

Tenants own numbers and agents; a number's inbound messages open conversations with contacts; every
message (in and out) is a row in ``messages``; ``work_items`` is the queue (turns to run, sends to
make), claimed under leases; ``status_events`` keeps every delivery receipt once. The schema is
created by the Alembic migrations in ``migrations/``; these classes mirror it for queries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; SQLite gets a naive UTC value so string comparison stays correct."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return aware UTC datetimes whatever the engine gave back."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with a stable constraint naming convention (for migrations)."""

    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    """A business (or a platform's customer) that owns numbers, agents, keys and knowledge."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subdomain: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Agent(Base):
    """A named agent of a tenant; ``kind`` picks the implementation from the registry."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(30))
    config: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Number(Base):
    """A WhatsApp business number with its (encrypted) provider credentials."""

    __tablename__ = "numbers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(20), default="cloud")
    phone_number_id: Mapped[str] = mapped_column(String(64), unique=True)
    display_phone_number: Mapped[str | None] = mapped_column(String(32))
    display_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="active")
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    app_id: Mapped[str | None] = mapped_column(String(64))
    business_id: Mapped[str | None] = mapped_column(String(64))
    app_secret_enc: Mapped[str | None] = mapped_column(Text)
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    verify_token_enc: Mapped[str | None] = mapped_column(Text)
    api_version: Mapped[str] = mapped_column(String(10), default="v23.0")
    graph_url: Mapped[str] = mapped_column(String(300), default="https://graph.facebook.com")
    throughput_mps: Mapped[int] = mapped_column(Integer, default=80)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Contact(Base):
    """A WhatsApp user as seen by one business number (keyed by phone number, else BSUID)."""

    __tablename__ = "contacts"
    # user_key alone: seed 002 looks a user up by phone number across a tenant's (or every) number.
    __table_args__ = (UniqueConstraint("number_id", "user_key"), Index("ix_contacts_user_key", "user_key"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number_id: Mapped[int] = mapped_column(ForeignKey("numbers.id", ondelete="CASCADE"))
    user_key: Mapped[str] = mapped_column(String(160))
    wa_id: Mapped[str | None] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(160))
    username: Mapped[str | None] = mapped_column(String(100))
    profile_name: Mapped[str | None] = mapped_column(String(200))
    last_inbound_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Conversation(Base):
    """A session between a number and a contact; its id is the seeds' session id."""

    __tablename__ = "conversations"
    __table_args__ = (
        Index(
            "uq_conversations_active",
            "number_id",
            "contact_id",
            unique=True,
            sqlite_where=text("is_active"),
            postgresql_where=text("is_active"),
        ),
        Index("ix_conversations_contact", "contact_id", "last_activity"),
    )

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    number_id: Mapped[int] = mapped_column(ForeignKey("numbers.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    intent: Mapped[str | None] = mapped_column(String(200))
    step: Mapped[str | None] = mapped_column(String(200))
    previous_intent: Mapped[str | None] = mapped_column(String(200))
    previous_step: Mapped[str | None] = mapped_column(String(200))
    context: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)
    # Set when the agent asked for a human (its ``handoff`` tool): why, and when.
    handoff_reason: Mapped[str | None] = mapped_column(Text)
    handoff_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_activity: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Counts state changes (sync API, warelay's own agents): the sync API's optimistic concurrency.
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")


class TranscriptEntry(Base):
    """A message an external agent recorded in a conversation's history (seed 002's ``POST …/messages``)."""

    __tablename__ = "transcript_entries"
    __table_args__ = (Index("ix_transcript_entries_conversation", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(10))
    content: Mapped[str] = mapped_column(Text)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Message(Base):
    """One message in or out; outbound rows are the outbox (status ``queued`` until sent)."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("number_id", "provider_message_id"),
        Index("ix_messages_conversation", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    number_id: Mapped[int] = mapped_column(ForeignKey("numbers.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(3))
    type: Mapped[str] = mapped_column(String(40))
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    text: Mapped[str | None] = mapped_column(Text)
    content: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    status: Mapped[str] = mapped_column(String(20))
    status_rank: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    raw: Mapped[dict[str, Any] | None] = mapped_column(Json)
    reply_to: Mapped[str | None] = mapped_column(String(200))
    turn_message_id: Mapped[int | None] = mapped_column(BigId)
    part: Mapped[int] = mapped_column(Integer, default=0)
    # On a turn's first inbound message: what the agent reported (kind, model, passages used, the
    # turn's messages), so an operator can see why it answered as it did.
    turn_notes: Mapped[dict[str, Any] | None] = mapped_column(Json)
    provider_timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WorkItem(Base):
    """A unit of queued work: a ``turn`` to run for an inbound message, or a ``send`` of an outbox row."""

    __tablename__ = "work_items"
    __table_args__ = (
        Index("ix_work_items_ready", "state", "kind", "available_at"),
        Index("ix_work_items_lane", "conversation_id", "kind", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AgentEvent(Base):
    """An event for an external agent platform (``message.received``, ``message.status``).

    Stored in the transaction that produced it; delivered in id order per conversation (pushed to
    the platform's webhook, or read with a cursor from the poll endpoint), never twice: a pushed
    event is ``delivered`` once the platform answered 2xx, ``dead`` after its last attempt.
    """

    __tablename__ = "agent_events"
    __table_args__ = (
        Index("ix_agent_events_lane", "conversation_id", "state", "id"),
        Index("ix_agent_events_due", "state", "available_at"),
        Index("ix_agent_events_tenant", "tenant_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    event: Mapped[str] = mapped_column(String(40))
    delivery: Mapped[str] = mapped_column(String(8))  # push | poll
    delivery_id: Mapped[str] = mapped_column(String(64), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    state: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    available_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StatusEvent(Base):
    """A delivery receipt, stored once per (number, provider message id, status)."""

    __tablename__ = "status_events"
    __table_args__ = (UniqueConstraint("number_id", "provider_message_id", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    number_id: Mapped[int] = mapped_column(ForeignKey("numbers.id", ondelete="CASCADE"))
    provider_message_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    status_rank: Mapped[int] = mapped_column(Integer)
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(Json)
    pricing: Mapped[dict[str, Any] | None] = mapped_column(Json)
    raw: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """An API key, stored as a keyed hash; ``tenant_id`` NULL means platform-wide."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(Json, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Requests per minute; NULL: WARELAY_API__RATE_LIMIT_PER_MINUTE, 0: unlimited.
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer)


class ApiKeyUsage(Base):
    """Requests an API key made in one fixed one-minute window (its rate limit, shared by all processes)."""

    __tablename__ = "api_key_usage"

    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    # Unix seconds at which the window starts (a multiple of 60).
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)


class KnowledgeDocument(Base):
    """A knowledge file added for a tenant's agent; re-adding the same name replaces its passages."""

    __tablename__ = "knowledge_documents"
    __table_args__ = (UniqueConstraint("tenant_id", "agent_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    passages: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The embeddings model its passages' vectors come from (None: not embedded), or why they are not.
    embedding_model: Mapped[str | None] = mapped_column(String(200))
    embedding_error: Mapped[str | None] = mapped_column(Text)


class KnowledgePassage(Base):
    """A retrievable chunk of a knowledge document; ``search_text`` holds the stemmed terms."""

    __tablename__ = "knowledge_passages"
    __table_args__ = (Index("ix_knowledge_passages_scope", "tenant_id", "agent_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("knowledge_documents.id", ondelete="CASCADE"))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    title: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(20))
    search_text: Mapped[str] = mapped_column(Text)
    # Unit-length float32 vector (little-endian) and its sign bits (warelay.knowledge.embeddings).
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_sign: Mapped[bytes | None] = mapped_column(LargeBinary)


class MediaFile(Base):
    """An inbound media file fetched for a turn: where it is stored, what was read from it, until when.

    One row per inbound message with media, written by :mod:`warelay.media` whether the fetch
    succeeded or not (``status``/``error``), so a retried turn reuses it instead of downloading
    again. Tenant and number are plain columns, not foreign keys, and the message's id is set to
    NULL when the message goes: the row outlives them until the purge has removed the file.
    """

    __tablename__ = "media_files"
    __table_args__ = (
        UniqueConstraint("number_id", "provider_message_id"),
        Index(
            "ix_media_files_due",
            "expires_at",
            sqlite_where=text("purged_at IS NULL"),
            postgresql_where=text("purged_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(BigId)
    number_id: Mapped[int] = mapped_column(BigId)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"), index=True)
    provider_message_id: Mapped[str] = mapped_column(String(200))
    media_id: Mapped[str | None] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    mime_type: Mapped[str | None] = mapped_column(String(200))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(Text)
    store: Mapped[str | None] = mapped_column(String(10))
    storage_key: Mapped[str | None] = mapped_column(String(500))
    text: Mapped[str | None] = mapped_column(Text)
    text_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    text_error: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OAuthState(Base):
    """An OAuth 2.0 + PKCE authorization a tenant's admin started (seed 000): single use, 10 minutes.

    Only the SHA-256 of the state is kept (the state itself travels through the browser); the PKCE
    verifier is encrypted and leaves warelay only in the token request. ``redirect_uri`` is the one
    sent to the platform, because the token request must repeat it exactly.
    """

    __tablename__ = "oauth_states"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    code_verifier_enc: Mapped[str] = mapped_column(Text)
    redirect_uri: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AIAgentToken(Base):
    """A tenant's token for the external AI platform (seed 000's ``ai_agent_token``), encrypted at rest.

    One row per connected tenant. A refresh is leased (``refresh_owner`` until ``refresh_lease_until``)
    so that one process at a time refreshes a tenant's token; ``last_error`` says why the platform
    refused a refresh (the refresh token is then dropped and the tenant must connect again).
    """

    __tablename__ = "ai_agent_tokens"

    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    access_token_enc: Mapped[str] = mapped_column(Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    token_type: Mapped[str] = mapped_column(String(40))
    scope: Mapped[str | None] = mapped_column(Text)
    # When the current access token was issued, and when it expires (NULL: the platform did not say).
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refresh_owner: Mapped[str | None] = mapped_column(String(64))
    refresh_lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class ApiSendAudit(Base):
    """The audit of the send APIs (seed 000's and seed 004's send-message): who sent what, when, and
    what became of it.

    One row per outbound message a request queued (``message_id``; a long text split in parts has
    a row per part, sharing ``request_id``), or one row with ``result`` ``rejected`` and the
    ``reason`` for a request refused (422 and the like). Written in the transaction that queues the
    messages; the delivery status itself lives on the message.
    """

    __tablename__ = "api_send_audit"
    __table_args__ = (Index("ix_api_send_audit_tenant", "tenant_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(32))
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    route: Mapped[str] = mapped_column(String(100))
    number_id: Mapped[int | None] = mapped_column(ForeignKey("numbers.id", ondelete="SET NULL"))
    recipient: Mapped[str | None] = mapped_column(String(160))
    type: Mapped[str | None] = mapped_column(String(20))
    summary: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"), index=True)
    result: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyRecord(Base):
    """A send request made with an ``Idempotency-Key``, and what it queued, kept 24 hours.

    ``owner`` is who made it (``key:<api key id>``, or ``admin`` for the admin token): a retry with
    the same key and the same request gets the first answer again; with another request, a 422.
    """

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("owner", "idempotency_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    owner: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    route: Mapped[str] = mapped_column(String(100))
    request_hash: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
