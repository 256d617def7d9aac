"""What the ``llm`` agent's tools do during one run: replies to send, state to keep, a hand-off.

Where it sits: inside the agent stage. :class:`TurnActions` is the run's pydantic-ai ``deps``; the
tools (:mod:`warelay.agents.rich` for replies, :mod:`warelay.agents.state` for the conversation's
state and the hand-off) record into it, and :class:`warelay.agents.llm.LLMAgent` turns it into the
turn's :class:`warelay.agents.base.AgentReply` when the model is done. Nothing here is written
anywhere until the worker commits the turn, so a run that fails leaves no trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import ModelRetry

# WhatsApp's content limits; the Cloud API body builder is where they are written down once.
from warelay.agents.base import SessionState, StateChange
from warelay.channels.cloud.payloads import ContentLimitError, message_body
from warelay.domain import OutboundContent, OutReaction

__all__ = ["TurnActions"]


@dataclass
class TurnActions:
    """What the model did during one run, in order: rich replies, state updates, a hand-off."""

    reply_to: str | None
    session: SessionState | None = None
    replies: list[OutboundContent] = field(default_factory=list)
    intent: str | None = None
    step: str | None = None
    context: dict[str, Any] | None = None  # the whole new context, when the model changed it
    handoff: str | None = None

    def add(self, content: OutboundContent) -> str:
        """Check ``content`` against WhatsApp's limits and keep it; a broken limit asks the model again."""
        try:
            message_body("0", content)
        except ContentLimitError as exc:
            raise ModelRetry(f"Not sent: {exc}. Fix it and call the tool again.") from exc
        self.replies.append(content)
        return "Queued; it is sent after your text answer."

    def around(self, text: OutboundContent | None) -> tuple[OutboundContent, ...]:
        """The replies in order: a reaction first (it answers the user's message), the text, the rest."""
        reactions = [r for r in self.replies if isinstance(r, OutReaction)]
        others = [r for r in self.replies if not isinstance(r, OutReaction)]
        return (*reactions, *([text] if text is not None else []), *others)

    @property
    def current_context(self) -> Mapping[str, Any]:
        """The conversation's context as the model last left it."""
        if self.context is not None:
            return self.context
        return self.session.context if self.session is not None else {}

    def state_change(self) -> StateChange | None:
        """The run's changes to the conversation, or None when it made none."""
        if self.intent is None and self.step is None and self.context is None and self.handoff is None:
            return None
        return StateChange(intent=self.intent, step=self.step, context=self.context, handoff=self.handoff)
