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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from warelay.domain import (
    ButtonContent,
    ContactsContent,
    EditContent,
    InboundMessage,
    InteractiveReplyContent,
    LocationContent,
    MediaContent,
    OrderContent,
    OutboundContent,
    ReactionContent,
    RevokeContent,
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


@dataclass(frozen=True, slots=True)
class Turn:
    """What the agent answers: the user's message(s) with everything known about the conversation."""

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

    @property
    def text(self) -> str:
        """The user's message(s) rendered as text for a model or a search."""
        return "\n".join(describe_inbound(m) for m in self.messages)


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
    """The agent's answer to a turn: zero or more replies, an optional state change, notes for operators."""

    replies: tuple[OutboundContent, ...] = ()
    state: StateChange | None = None
    notes: Mapping[str, Any] = field(default_factory=dict)


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


def describe_inbound(message: InboundMessage) -> str:
    """Render any inbound message as one line of text an agent (or a search) can use."""
    return _DESCRIBERS.get(type(message.content), _describe_unsupported)(message)


def _describe_text(m: InboundMessage) -> str:
    assert isinstance(m.content, TextContent)
    return m.content.body


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


def _describe_location(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, LocationContent)
    place = ", ".join(p for p in (c.name, c.address) if p)
    return f"[location {c.latitude:.6f},{c.longitude:.6f}{' ' + place if place else ''}]"


def _describe_contacts(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, ContactsContent)
    cards = []
    for card in c.contacts:
        phones = ", ".join(p.phone for p in card.phones if p.phone)
        cards.append(f"{card.formatted_name or 'contact'}{' ' + phones if phones else ''}")
    return "[shared contacts: " + "; ".join(cards) + "]"


def _describe_interactive(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, InteractiveReplyContent)
    if c.reply_type == "flow_reply":
        return f"[form submitted: {c.flow_response or {}}]"
    return c.title or c.id or ""


def _describe_button(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, ButtonContent)
    return c.text or c.payload or ""


def _describe_reaction(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, ReactionContent)
    return "[reaction removed]" if c.removed else f"[reacted {c.emoji}]"


def _describe_order(m: InboundMessage) -> str:
    c = m.content
    assert isinstance(c, OrderContent)
    items = ", ".join(f"{i.quantity or 1}× {i.product_retailer_id}" for i in c.items)
    return f"[order: {items}]" + (f" {c.text}" if c.text else "")


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
