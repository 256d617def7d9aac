"""The llm agent end to end: simulator → warelay → OpenAI-compatible model on loopback → reply."""

from __future__ import annotations

from typing import Any

from tests.fakes_openai import FakeOpenAIError, OpenAICompatibleServer, ToolCall
from tests.integration.stack import run_stack


async def test_llm_agent_answers_with_history_and_markdown_converted(db_url: str) -> None:
    def responder(body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        return f"**Sure!** You said: {last}"

    async with OpenAICompatibleServer(responder) as model:
        async with run_stack(
            db_url,
            agent={"kind": "llm", "system_prompt": "You are the assistant of {business_name}."},
            llm={"base_url": model.base_url, "model": "test-model"},
        ) as stack:
            await stack.simulator.user_sends("15551260001", "first question", name="Ana")
            assert await stack.replies_to("15551260001", 1) == ["*Sure!* You said: first question"]
            await stack.simulator.user_sends("15551260001", "second question")
            texts = await stack.replies_to("15551260001", 2)
            assert texts[1] == "*Sure!* You said: second question"
            assert stack.simulator.rejected == []

        request = model.requests[-1]
        assert request["model"] == "test-model"
        roles = [m["role"] for m in request["messages"]]
        assert roles[0] in ("system", "developer")
        assert "You are the assistant of" in request["messages"][0]["content"]
        contents = [m["content"] for m in request["messages"][1:]]
        # History holds what the user saw: the reply as sent, in WhatsApp markup.
        assert contents == ["first question", "*Sure!* You said: first question", "second question"]


async def test_llm_failures_retry_then_fallback(db_url: str) -> None:
    def broken(body: dict[str, Any]) -> str:
        raise FakeOpenAIError(500, "model exploded")

    async with (
        OpenAICompatibleServer(broken) as model,
        run_stack(
            db_url,
            agent={"kind": "llm"},
            llm={"base_url": model.base_url, "model": "test-model"},
            worker={"max_attempts": 2},
        ) as stack,
    ):
        await stack.simulator.user_sends("15551260002", "hello?")
        texts = await stack.replies_to("15551260002", 1, timeout=20)
        assert texts == [stack.settings.agent.fallback_text]
        failures = (await stack.api("/api/v1/failures", kind="turn"))["items"]
        assert len(failures) == 1


async def test_llm_agent_sends_reply_buttons_the_simulator_accepts(db_url: str) -> None:
    def responder(body: dict[str, Any]) -> str | ToolCall:
        offered = [tool["function"]["name"] for tool in body.get("tools", [])]
        assert offered == ["send_buttons"]
        if body["messages"][-1]["role"] != "tool":
            return ToolCall("send_buttons", {"body": "Hot or iced?", "buttons": ["Hot", "Iced"]})
        return "Good choice, a latte it is."

    async with OpenAICompatibleServer(responder) as model:
        async with run_stack(
            db_url,
            agent={"kind": "llm", "tools": ["buttons"]},
            llm={"base_url": model.base_url, "model": "test-model"},
        ) as stack:
            await stack.simulator.user_sends("15551260003", "One latte please")
            await stack.simulator.wait_for(
                lambda: len(stack.simulator.messages_to("15551260003")) >= 2, timeout=15
            )
            text, buttons = stack.simulator.messages_to("15551260003")
            assert stack.simulator.rejected == []
        assert text.body["text"]["body"] == "Good choice, a latte it is."
        assert buttons.type == "interactive"
        interactive = buttons.body["interactive"]
        assert interactive["type"] == "button"
        assert interactive["body"]["text"] == "Hot or iced?"
        titles = [b["reply"]["title"] for b in interactive["action"]["buttons"]]
        assert titles == ["Hot", "Iced"]
        assert len(model.requests) == 2  # the tool call, then the answer after its result


async def test_state_tools_commit_with_the_turn_and_a_failed_turn_changes_nothing(db_url: str) -> None:
    def responder(body: dict[str, Any]) -> str | ToolCall:
        last = body["messages"][-1]
        user_text = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        if "refund" in user_text:
            if last["role"] != "tool":
                return ToolCall("update_conversation_state", {"intent": "refund", "context": {"cart": None}})
            raise FakeOpenAIError(500, "model exploded after the tool call")
        if last["role"] != "tool":
            if "person" in user_text:
                return ToolCall("handoff", {"reason": "Asked for a person."})
            cart = {"selectedItems": [{"sku": "latte", "qty": 2}]}
            return ToolCall("update_conversation_state", {"intent": "order", "step": "cart", "context": cart})
        return "Noted."

    async with (
        OpenAICompatibleServer(responder) as model,
        run_stack(
            db_url,
            agent={"kind": "llm", "tools": ["state", "handoff"]},
            llm={"base_url": model.base_url, "model": "test-model"},
            worker={"max_attempts": 2},
        ) as stack,
    ):
        user = "15551260004"
        await stack.simulator.user_sends(user, "Two lattes please")
        assert await stack.replies_to(user, 1) == ["Noted."]
        (conversation,) = (await stack.api("/api/v1/conversations", user=user))["items"]
        assert (conversation["intent"], conversation["step"]) == ("order", "cart")
        assert conversation["context"] == {"selectedItems": [{"sku": "latte", "qty": 2}]}
        assert conversation["handoff"] is None

        await stack.simulator.user_sends(user, "I want a refund")
        await stack.replies_to(user, 2, timeout=20)  # the fallback, after the last attempt failed
        after_failure = await stack.api(f"/api/v1/conversations/{conversation['id']}")
        assert after_failure["intent"] == "order"
        assert after_failure["context"] == conversation["context"]

        await stack.simulator.user_sends(user, "Can I talk to a person?")
        assert (await stack.replies_to(user, 3))[2] == "Noted."
        final = await stack.api(f"/api/v1/conversations/{conversation['id']}")
        assert final["handoff"]["reason"] == "Asked for a person."
        assert (final["intent"], final["previous_intent"]) == ("order", None)
        assert stack.simulator.rejected == []
