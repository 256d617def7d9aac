"""The agent seam: a turn goes in, replies and state changes come out.

Where it sits: the worker claims a turn from the inbox, builds a :class:`Turn` (the user's
message(s), the conversation's state and history window) and calls :meth:`Agent.respond`. The
returned :class:`AgentReply` is committed with the turn: its replies become outbox rows, its state
change updates the session. An agent never sends anything itself and never touches the database
except through the narrow services handed to it in :class:`AgentDeps`.

Implementers register a factory under a ``kind`` with :func:`register_agent`; the number's agent
configuration names the kind. Raise :class:`warelay.errors.AgentError` (or let any exception
escape) to have the turn retried with backoff and, after the last attempt, dead-lettered with the
fallback message sent to the user.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from warelay.domain import (
    ButtonContent,
    ContactsContent,
    EditContent,
    InboundMessage,
    InteractiveReplyContent,
    LocationContent,
    MediaContent,
    MediaKind,
    OrderContent,
    OutboundContent,
    ReactionContent,
    RevokeContent,
    SharedContact,
    SystemContent,
    TextContent,
    UnsupportedContent,
)


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One earlier message of the conversation, as the agent sees it."""

    role: Literal["user", "assistant"]
    text: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SessionState:
    """The conversation's state (seed 002's session): intent, step, context and metadata."""

    session_id: str
    intent: str | None = None
    step: str | None = None
    previous_intent: str | None = None
    previous_step: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)


AttachmentStatus = Literal["stored", "failed", "too_large", "unsupported", "expired"]


@dataclass(frozen=True, slots=True)
class Attachment:
    """An inbound media file as prepared for a turn (:mod:`warelay.media`).

    ``status`` says what became of the file: ``stored`` in the media store under ``storage_key``;
    ``failed`` to download; ``too_large`` for its type's limit; ``unsupported`` (the channel cannot
    fetch it, or it has no media id); ``expired`` (removed after the retention period). ``text`` is
    a voice note's transcript or a document's extracted text (cut at the configured length, then
    ``text_truncated``); ``reason`` says, for operators, why a file or its text is missing. ``data``
    holds the bytes of images and static stickers, for models that see images.
    """

    media_type: MediaKind
    status: AttachmentStatus
    mime_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    filename: str | None = None
    storage_key: str | None = None
    text: str | None = None
    text_truncated: bool = False
    reason: str | None = None
    data: bytes | None = field(default=None, repr=False)

    @property
    def stored(self) -> bool:
        """Whether the file is in the media store."""
        return self.status == "stored"


@dataclass(frozen=True, slots=True)
class Turn:
    """What the agent answers: the user's message(s) with everything known about the conversation.

    ``attachments`` holds the fetched media of the messages, keyed by their provider message id.
    """

    tenant_id: int
    tenant: str
    number_id: int
    phone_number_id: str
    agent_id: int | None
    user_key: str
    user_name: str | None
    session: SessionState
    messages: tuple[InboundMessage, ...]
    history: tuple[HistoryItem, ...] = ()
    attachments: Mapping[str, Attachment] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The user's message(s) rendered as text for a model or a search, with their media's text."""
        return "\n".join(
            describe_inbound(m, self.attachments.get(m.provider_message_id)) for m in self.messages
        )


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change to the session's state; ``None`` leaves a field as it is.

    ``handoff`` asks for a human: the reason is recorded on the conversation with the time.
    """

    intent: str | None = None
    step: str | None = None
    context: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None
    handoff: str | None = None


@dataclass(frozen=True, slots=True)
class AgentReply:
    """The agent's answer to a turn: zero or more replies, an optional state change, notes for
    operators, and events for an external agent platform (stored with the turn, then delivered)."""

    replies: tuple[OutboundContent, ...] = ()
    state: StateChange | None = None
    notes: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[AgentEventDraft, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentEventDraft:
    """An event for the external platform of agent ``agent_id`` (see warelay.integrations.events).

    ``provider_message_id`` names the inbound message it is about; ``payload`` is the JSON body the
    platform receives (its ``id`` is the delivery id, unique per event).
    """

    agent_id: int
    event: str
    delivery: str  # push | poll
    provider_message_id: str | None
    payload: Mapping[str, Any]


class Agent(Protocol):
    """Something that answers turns. Implementations must be safe to call concurrently."""

    kind: str

    async def respond(self, turn: Turn) -> AgentReply:
        """Answer one turn."""
        ...


@dataclass(frozen=True, slots=True)
class Passage:
    """A knowledge passage found for a query, with its retrieval score (higher is better)."""

    id: int
    document: str
    title: str | None
    content: str
    answer: str | None
    score: float


class Retriever(Protocol):
    """Finds a tenant agent's knowledge passages for a query."""

    async def search(self, *, tenant_id: int, agent_id: int, query: str, limit: int = 5) -> Sequence[Passage]:
        """Best passages first; empty when nothing matches."""
        ...


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """An agent's stored configuration: its kind, name, and kind-specific settings."""

    id: int | None
    tenant_id: int
    name: str
    kind: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentDeps:
    """Services an agent may use, handed in by the application (never reached through globals)."""

    retriever: Retriever
    settings: Any  # warelay.config.Settings; typed loosely so agents stay importable on their own
    # A pydantic-ai model the ``llm`` agent uses instead of the endpoint its configuration names
    # (``warelay eval`` and tests hand in a FunctionModel); None: the configured endpoint.
    llm_model: Any = None


AgentFactory = Callable[[AgentSpec, AgentDeps], Agent]

_REGISTRY: dict[str, AgentFactory] = {}


def register_agent(kind: str) -> Callable[[AgentFactory], AgentFactory]:
    """Register a factory for agents of ``kind`` (a decorator)."""

    def decorate(factory: AgentFactory) -> AgentFactory:
        _REGISTRY[kind] = factory
        return factory

    return decorate


def agent_kinds() -> tuple[str, ...]:
    """The kinds of agent that can be configured."""
    return tuple(sorted(_REGISTRY))


def build_agent(spec: AgentSpec, deps: AgentDeps) -> Agent:
    """Instantiate the agent a spec describes."""
    try:
        factory = _REGISTRY[spec.kind]
    except KeyError:
        raise ValueError(f"unknown agent kind {spec.kind!r}; known: {', '.join(agent_kinds())}") from None
    return factory(spec, deps)


def describe_inbound(message: InboundMessage, attachment: Attachment | None = None) -> str:
    """Render any inbound message as text an agent (or a search) can use.

    Without ``attachment`` a media message reads as its kind, filename and caption (``[image]
    caption``), as stored in the conversation's history. With the attachment prepared for the turn
    it also carries what was read from the file (a transcript, a document's text) or says plainly
    why it could not be (a placeholder the agent can answer). The message's context comes first,
    one bracketed line each: a Click-to-WhatsApp ad, a catalog product asked about, a forward.
    """
    body = _DESCRIBERS.get(type(message.content), _describe_unsupported)(message)
    if isinstance(message.content, MediaContent) and attachment is not None:
        body = _describe_attachment(message.content, attachment)
    lines = _context_lines(message)
    if not lines:
        return body
    if body:
        lines.append(body)
    return "\n".join(lines)


def _context_lines(m: InboundMessage) -> list[str]:
    lines: list[str] = []
    r = m.referral
    if r is not None:
        source = "post" if r.source_type == "post" else "ad"
        details = "; ".join(
            x
            for x in (_quoted(r.headline), r.body, r.welcome_message and f"welcome: {r.welcome_message}")
            if x
        )
        link = r.source_url or r.image_url or r.video_url
        lines.append(
            f"[came from your {source}{' ' + r.source_id if r.source_id else ''}"
            f"{': ' + details if details else ''}{' — ' + link if link else ''}]"
        )
    c = m.context
    if c is not None:
        product = c.referred_product
        if product is not None and (product.product_retailer_id or product.catalog_id):
            catalog = f" (catalog {product.catalog_id})" if product.catalog_id else ""
            lines.append(f"[asking about product {product.product_retailer_id or 'unknown'}{catalog}]")
        if c.frequently_forwarded:
            lines.append("[forwarded many times]")
        elif c.forwarded:
            lines.append("[forwarded]")
    return lines


def _quoted(value: str | None) -> str | None:
    return f'"{value}"' if value else None


def _media_label(c: MediaContent) -> str:
    if c.media_type == "audio":
        return "voice note" if c.voice else "audio"
    if c.media_type == "sticker" and c.animated:
        return "animated sticker"
    return c.media_type


def _describe_media(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, MediaContent)
    what = "voice note" if c.voice else c.media_type
    parts = [f"[{what}"]
    if c.filename:
        parts.append(f" {c.filename}")
    parts.append("]")
    if c.caption:
        parts.append(f" {c.caption}")
    return "".join(parts)


# What the agent is told when a file could not be read, in words it can pass on to the customer.
_UNAVAILABLE: Final[dict[str, str]] = {
    "failed": "it could not be downloaded",
    "too_large": "it is too large to open",
    "unsupported": "I cannot open it",
    "expired": "it is no longer available",
}


def _describe_attachment(c: MediaContent, a: Attachment) -> str:
    what = _media_label(c)
    name = a.filename or c.filename
    head = f"{what} {name}" if name and c.media_type == "document" else what
    caption = f" {c.caption}" if c.caption else ""
    if not a.stored:
        return f"[{head}: {_UNAVAILABLE[a.status]}]{caption}"
    if c.media_type == "audio":
        if a.text:
            return f"[{what}, transcribed]{caption} {a.text}".rstrip()
        article = "a" if what == "voice note" else "an"
        return f"[{what}: the customer sent {article} {what} I cannot listen to]{caption}"
    if c.media_type == "video":
        return f"[video: the customer sent a video I cannot watch]{caption}"
    if c.media_type == "document":
        if not a.text:
            return f"[{head}: I cannot read the contents of this file]{caption}"
        label = name or "the document"
        more = "\n[only the beginning of the document is shown]" if a.text_truncated else ""
        return f'[{head}]{caption}\nText of {label}:\n"""\n{a.text}\n"""{more}'
    return f"[{head}]{caption}"


def _describe_location(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, LocationContent)
    parts = [f"[location] latitude {c.latitude:.6f}, longitude {c.longitude:.6f}"]
    parts.extend(
        f"{label}: {value}"
        for label, value in (("name", c.name), ("address", c.address), ("url", c.url))
        if value
    )
    return "; ".join(parts)


def _describe_contacts(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, ContactsContent)
    cards = [_describe_card(card) for card in c.contacts]
    return "\n".join(cards) if cards else "[shared contacts: none]"


def _describe_card(card: SharedContact) -> str:
    name = card.formatted_name or " ".join(x for x in (card.first_name, card.last_name) if x) or "unnamed"
    fields: list[str] = []
    phones = []
    for p in card.phones:
        number = p.phone or p.wa_id
        if not number:
            continue
        extras = [x for x in (p.type, f"WhatsApp {p.wa_id}" if p.wa_id else None) if x]
        phones.append(f"{number} ({', '.join(extras)})" if extras else number)
    for label, values in (
        ("phones", phones),
        ("emails", list(card.emails)),
        ("organization", [card.organization] if card.organization else []),
        ("websites", list(card.urls)),
        ("birthday", [card.birthday] if card.birthday else []),
        ("addresses", [_address(a) for a in card.addresses if _address(a)]),
    ):
        if values:
            fields.append(f"{label}: {', '.join(values)}")
    return f"[shared contact] {name}" + ("; " + "; ".join(fields) if fields else "")


def _address(address: Mapping[str, Any]) -> str:
    keys = ("street", "city", "state", "zip", "country")
    return ", ".join(str(address[k]) for k in keys if address.get(k))


def _describe_interactive(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, InteractiveReplyContent)
    if c.reply_type == "flow_reply":
        fields = {k: v for k, v in (c.flow_response or {}).items() if k != "flow_token"}
        answers = "; ".join(
            f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
            for k, v in fields.items()
        )
        name = f' "{c.flow_name}"' if c.flow_name and c.flow_name != "flow" else ""
        return f"[form{name} submitted]" + (f" {answers}" if answers else " (no answers)")
    label = "reply button" if c.reply_type == "button_reply" else "list choice"
    title = c.title or c.id or ""
    description = f" — {c.description}" if c.description else ""
    ident = f" (id: {c.id})" if c.id and c.id != c.title else ""
    return f"[{label}] {title}{description}{ident}"


def _describe_button(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, ButtonContent)
    text = c.text or c.payload or ""
    payload = f" (payload: {c.payload})" if c.payload and c.payload != text else ""
    return f"[template button] {text}{payload}"


def _describe_reaction(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, ReactionContent)
    return "[reaction removed]" if c.removed else f"[reacted {c.emoji}]"


def _price(value: float) -> str:
    return f"{value:.2f}"


def _describe_order(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, OrderContent)
    lines = []
    for i in c.items:
        price = f" at {_price(i.item_price)} {i.currency or ''}".rstrip() if i.item_price is not None else ""
        lines.append(f"{i.quantity if i.quantity is not None else 1} × {i.product_retailer_id}{price}")
    catalog = f" from catalog {c.catalog_id}" if c.catalog_id else ""
    text = f"[order{catalog}] " + ("; ".join(lines) if lines else "no items")
    currencies = {i.currency for i in c.items}
    if c.items and len(currencies) == 1 and all(i.item_price is not None for i in c.items):
        total = sum((i.item_price or 0.0) * (i.quantity if i.quantity is not None else 1) for i in c.items)
        text += f"; total {_price(total)} {currencies.pop() or ''}".rstrip()
    return text + (f"\nNote with the order: {c.text}" if c.text else "")


def _describe_text(m: InboundMessage) -> str:
    assert isinstance(m.content, TextContent)
    return m.content.body


def _describe_system(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, SystemContent)
    return f"[system: {c.body or c.system_type or ''}]"


def _describe_edit(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, EditContent)
    return f"[edited message] {c.body or ''}".rstrip()


def _describe_revoke(_m: InboundMessage) -> str:
    return "[message deleted]"


def _describe_unsupported(m: InboundMessage) -> str:
    original = m.content.original_type if isinstance(m.content, UnsupportedContent) else m.type
    return f"[unsupported message: {original or 'unknown'}]"


_DESCRIBERS: dict[type, Callable[[InboundMessage], str]] = {
    TextContent: _describe_text,
    MediaContent: _describe_media,
    LocationContent: _describe_location,
    ContactsContent: _describe_contacts,
    InteractiveReplyContent: _describe_interactive,
    ButtonContent: _describe_button,
    ReactionContent: _describe_reaction,
    OrderContent: _describe_order,
    SystemContent: _describe_system,
    EditContent: _describe_edit,
    RevokeContent: _describe_revoke,
    UnsupportedContent: _describe_unsupported,
}
