"""Conversation state for the ``llm`` agent: tools to read and update the session, and to hand off.

Where it sits: inside the agent stage (worker → ``LLMAgent.respond`` → model ⇄ *these tools*). The
session is seed 002's model: an ``intent``, a ``step`` in it, and a free ``context`` object (a cart
in ``context.selectedItems``, say). The model reads it with :func:`get_conversation_state` and
changes it with :func:`update_conversation_state`; :func:`handoff` marks the conversation as needing
a human, with a reason. Every change is validated here (lengths, JSON, size) and only recorded in
the run's :class:`~warelay.agents.actions.TurnActions`: the worker commits it in the transaction
that ends the turn, so it is kept exactly when the reply is, and a failed turn changes nothing. The
previous intent and step are kept by :func:`warelay.conversations.service.apply_state_changes`.

Enable them per agent with ``tools: [state, handoff]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson
from pydantic_ai import ModelRetry, RunContext

from warelay.agents.actions import TurnActions

__all__ = [
    "MAX_CONTEXT_BYTES",
    "STATE_TOOLS",
    "get_conversation_state",
    "handoff",
    "update_conversation_state",
]

MAX_LABEL_CHARS: Final = 200  # the database's intent/step columns
MAX_CONTEXT_BYTES: Final = 16 * 1024
MAX_REASON_CHARS: Final = 500


def _state(actions: TurnActions) -> dict[str, Any]:
    session = actions.session
    return {
        "intent": actions.intent or (session.intent if session else None),
        "step": actions.step or (session.step if session else None),
        "previous_intent": session.previous_intent if session else None,
        "previous_step": session.previous_step if session else None,
        "context": dict(actions.current_context),
        "handoff_requested": actions.handoff is not None,
    }


async def get_conversation_state(ctx: RunContext[TurnActions]) -> str:
    """Read this conversation's state: intent, step, the previous ones, and the context object (e.g. a cart).

    Returns it as JSON.
    """
    return orjson.dumps(_state(ctx.deps)).decode()


def _label(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ModelRetry(f"{what} must not be empty; leave it out to keep the current one.")
    if len(value) > MAX_LABEL_CHARS:
        raise ModelRetry(f"{what} is {len(value)} characters; at most {MAX_LABEL_CHARS}.")
    return value


async def update_conversation_state(
    ctx: RunContext[TurnActions],
    intent: str | None = None,
    step: str | None = None,
    context: dict[str, Any] | None = None,
    replace_context: bool = False,
) -> str:
    """Update this conversation's state; it is saved together with your reply.

    Args:
        intent: What the customer wants now (e.g. "order", "booking"); leave out to keep it.
        step: Where you are in that intent (e.g. "choose_items", "confirm"); leave out to keep it.
        context: Fields to set in the context object (e.g. {"selectedItems": [...]}); a field set
            to null is removed. Other fields are kept unless replace_context is true.
        replace_context: Replace the whole context with `context` instead of merging.
    """
    actions = ctx.deps
    new_intent = _label(intent, "intent")
    new_step = _label(step, "step")
    if context is not None:
        merged = {} if replace_context else dict(actions.current_context)
        for key, value in context.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        try:
            size = len(orjson.dumps(merged))
        except TypeError as exc:  # not reachable from JSON tool arguments, but never store what is not JSON
            raise ModelRetry(f"context must be plain JSON: {exc}") from exc
        if size > MAX_CONTEXT_BYTES:
            raise ModelRetry(
                f"context would be {size} bytes; keep it under {MAX_CONTEXT_BYTES} "
                "(store ids, not descriptions)."
            )
        actions.context = merged
    if new_intent is not None:
        actions.intent = new_intent
    if new_step is not None:
        actions.step = new_step
    return "Saved (it is kept when your reply is sent). State now: " + orjson.dumps(_state(actions)).decode()


async def handoff(ctx: RunContext[TurnActions], reason: str) -> str:
    """Pass this conversation to a human colleague (the customer asks for a person, or you cannot help).

    Tell the customer in your answer that a colleague will follow up.

    Args:
        reason: Why, in one sentence, for the colleague who takes over.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise ModelRetry("Give the reason in one sentence.")
    ctx.deps.handoff = reason[:MAX_REASON_CHARS]
    return "Recorded: a colleague will take over this conversation. Tell the customer so."


STATE_TOOLS: Final[dict[str, tuple[Callable[..., Any], ...]]] = {
    "state": (get_conversation_state, update_conversation_state),
    "handoff": (handoff,),
}
