"""The ``external`` agent: an agent platform outside warelay answers, through warelay's API.

Where it sits in the path::

    worker ──Turn──▶ ExternalAgent.respond ──▶ AgentReply(events=message.received, …)
                                                   │ stored with the end of the turn (agent_events)
                                                   ▼
                   warelay.integrations.events ──▶ push: POST {platform}/webhooks/warelay (signed)
                                                   poll: GET /api/v1/integration/ai/messages?after=…
    platform ──▶ POST /api/v1/integration/ai/send-message ──▶ outbox ──▶ WhatsApp

A turn of a number whose agent is external produces one ``message.received`` event per message,
in order, and no reply: the platform answers later through the send-message API (seed 000). The
events are written in the transaction that ends the turn, so each one exists exactly once, and
they reach the platform in order per conversation (see :mod:`warelay.integrations.events`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from warelay.agents.base import (
    AgentDeps,
    AgentEventDraft,
    AgentReply,
    AgentSpec,
    Turn,
    describe_inbound,
    register_agent,
)
from warelay.domain import InboundMessage

__all__ = ["EXTERNAL", "RECEIVED", "ExternalAgent", "received_payload"]

EXTERNAL = "external"  # the agent kind
RECEIVED = "message.received"


def new_delivery_id() -> str:
    """A unique id for one event (the platform's deduplication key: ``X-Warelay-Delivery``)."""
    return f"evt_{secrets.token_hex(12)}"


def conversation_payload(turn: Turn) -> dict[str, Any]:
    """The conversation as events show it (seed 002's field names)."""
    s = turn.session
    return {
        "sessionId": s.session_id,
        "intent": s.intent,
        "step": s.step,
        "previousIntent": s.previous_intent,
        "previousStep": s.previous_step,
        "context": dict(s.context),
        "metadata": dict(s.metadata),
    }


def received_payload(turn: Turn, message: InboundMessage, delivery_id: str, at: str) -> dict[str, Any]:
    """The body of a ``message.received`` event for ``message`` of ``turn``."""
    attachment = turn.attachments.get(message.provider_message_id)
    return {
        "id": delivery_id,
        "event": RECEIVED,
        "timestamp": at,
        "tenant": turn.tenant,
        "number": {"phone_number_id": turn.phone_number_id},
        "conversation": conversation_payload(turn),
        "contact": {
            "userId": turn.user_key,
            "waId": message.sender.wa_id,
            "name": turn.user_name,
        },
        "message": {
            "id": message.provider_message_id,
            "type": message.type,
            "text": describe_inbound(message, attachment),
            "timestamp": message.timestamp.isoformat(),
            "content": message.content.model_dump(mode="json"),
        },
    }


class ExternalAgent:
    """Hands each turn's messages to the external platform as events; answers nothing itself."""

    kind = EXTERNAL

    def __init__(self, spec: AgentSpec, deps: AgentDeps) -> None:
        if spec.id is None:
            raise ValueError("an external agent must be stored (it needs an id for its events)")
        self._agent_id = spec.id
        self._delivery = str(spec.config.get("delivery") or "push")

    async def respond(self, turn: Turn) -> AgentReply:
        """One ``message.received`` event per message of the turn, in order."""
        from warelay.storage.models import utcnow

        at = utcnow().isoformat()
        events = []
        for message in turn.messages:
            delivery_id = new_delivery_id()
            events.append(
                AgentEventDraft(
                    agent_id=self._agent_id,
                    event=RECEIVED,
                    delivery=self._delivery,
                    provider_message_id=message.provider_message_id,
                    payload=received_payload(turn, message, delivery_id, at),
                )
            )
        notes: Mapping[str, Any] = {"events": [e.payload["id"] for e in events], "delivery": self._delivery}
        return AgentReply(events=tuple(events), notes=notes)


@register_agent(EXTERNAL)
def create_external_agent(spec: AgentSpec, deps: AgentDeps) -> ExternalAgent:
    """Build the ``external`` agent of a stored configuration."""
    return ExternalAgent(spec, deps)
