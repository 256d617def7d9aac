"""The llm agent's conversation-state tools: read, update (validated), hand off; kept only with the reply."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.models.function import FunctionModel

from tests.unit.agents.test_llm_agent import FakeRetriever, make_settings, make_spec, make_turn
from tests.unit.agents.test_rich_replies import Script
from warelay.agents.base import AgentDeps, SessionState, StateChange, Turn
from warelay.agents.llm import LLMAgent
from warelay.agents.state import MAX_CONTEXT_BYTES
from warelay.errors import AgentError


def agent(script: Any, tools: Any = ("state", "handoff")) -> LLMAgent:
    deps = AgentDeps(retriever=FakeRetriever(), settings=make_settings())
    return LLMAgent(make_spec(tools=list(tools)), deps, model=FunctionModel(script, model_name="fn-model"))


def with_session(turn: Turn, **state: Any) -> Turn:
    session = SessionState(session_id="s-1", **state)
    return Turn(**{**{f: getattr(turn, f) for f in turn.__slots__}, "session": session})


async def test_the_model_is_offered_the_state_and_handoff_tools() -> None:
    script = Script(text="ok")
    reply = await agent(script).respond(make_turn())
    assert script.tools == ["get_conversation_state", "update_conversation_state", "handoff"]
    assert reply.state is None  # no tool called: nothing changes


async def test_update_merges_context_and_sets_intent_and_step() -> None:
    cart = {"selectedItems": [{"sku": "latte", "qty": 2}]}
    script = Script(
        ("get_conversation_state", {}),
        ("update_conversation_state", {"intent": "order", "step": "choose_items", "context": cart}),
        ("update_conversation_state", {"step": "confirm", "context": {"coupon": None, "note": "oat"}}),
        text="Two lattes with oat milk, right?",
    )
    turn = with_session(make_turn(), intent="browse", step="menu", context={"coupon": "X1", "lang": "en"})
    reply = await agent(script).respond(turn)
    assert reply.state == StateChange(
        intent="order",
        step="confirm",
        context={"lang": "en", "selectedItems": [{"sku": "latte", "qty": 2}], "note": "oat"},
    )


async def test_get_returns_the_state_as_left_by_earlier_calls_in_the_run() -> None:
    seen: list[str] = []

    class Reader(Script):
        def __call__(self, messages: Any, info: Any) -> Any:
            for message in messages:
                for part in getattr(message, "parts", []):
                    if getattr(part, "tool_name", None) == "get_conversation_state" and hasattr(
                        part, "model_response_str"
                    ):
                        seen.append(part.model_response_str())
            return super().__call__(messages, info)

    script = Reader(
        ("update_conversation_state", {"intent": "booking", "context": {"day": "Friday"}}),
        ("get_conversation_state", {}),
        text="Friday it is.",
    )
    await agent(script).respond(with_session(make_turn(), intent="greeting"))
    assert len(seen) == 1
    assert '"intent":"booking"' in seen[0]
    assert '"context":{"day":"Friday"}' in seen[0]


async def test_replace_context_drops_the_old_fields() -> None:
    script = Script(
        ("update_conversation_state", {"context": {"fresh": True}, "replace_context": True}), text="ok"
    )
    reply = await agent(script).respond(with_session(make_turn(), context={"old": 1}))
    assert reply.state == StateChange(context={"fresh": True})


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"intent": "x" * 201}, "intent is 201 characters; at most 200"),
        ({"step": "   "}, "step must not be empty"),
        ({"context": {"blob": "x" * MAX_CONTEXT_BYTES}}, f"keep it under {MAX_CONTEXT_BYTES}"),
    ],
)
async def test_invalid_updates_go_back_to_the_model_and_change_nothing(
    args: dict[str, Any], reason: str
) -> None:
    script = Script(("update_conversation_state", args), text="Sorry, let me try again.")
    reply = await agent(script).respond(with_session(make_turn(), intent="order", context={"a": 1}))
    assert len(script.retries) == 1
    assert reason in script.retries[0]
    assert reply.state is None


async def test_handoff_is_recorded_with_its_reason() -> None:
    script = Script(
        ("handoff", {"reason": "  Customer wants  to talk\nto a person about a refund. "}),
        text="A colleague will get back to you shortly.",
    )
    reply = await agent(script).respond(make_turn())
    assert reply.state == StateChange(handoff="Customer wants to talk to a person about a refund.")
    assert reply.replies[0].kind == "text"


async def test_tools_are_only_offered_when_enabled() -> None:
    script = Script(text="ok")
    await agent(script, tools=["handoff"]).respond(make_turn())
    assert script.tools == ["handoff"]


async def test_a_run_that_fails_after_updating_state_changes_nothing() -> None:
    calls = 0

    def model(messages: Any, info: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return ModelResponse(parts=[ToolCallPart("update_conversation_state", {"intent": "order"})])
        raise RuntimeError("model endpoint went away")

    with pytest.raises(AgentError, match="model endpoint went away"):
        await agent(model).respond(make_turn())
