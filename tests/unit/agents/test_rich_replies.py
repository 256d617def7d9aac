"""Rich replies of the llm agent: tools the model calls, checked against WhatsApp's limits before sending."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.unit.agents.test_llm_agent import FakeRetriever, make_settings, make_spec, make_turn
from warelay.agents.base import AgentDeps
from warelay.agents.llm import LLMAgent
from warelay.agents.provider import env_agent_defaults
from warelay.agents.rich import TOOLS
from warelay.agents.state import STATE_TOOLS
from warelay.config import AgentTool, Settings
from warelay.domain import (
    ListRow,
    ListSection,
    OutButtons,
    OutList,
    OutLocation,
    OutLocationRequest,
    OutReaction,
    OutText,
    ReplyButton,
)
from warelay.errors import AgentError


class Script:
    """A model that makes the given tool calls one request at a time, then answers ``text``."""

    def __init__(self, *calls: tuple[str, dict[str, Any]], text: str = "") -> None:
        self.calls = list(calls)
        self.text = text
        self.tools: list[str] = []
        self.retries: list[str] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.tools = [t.name for t in info.function_tools]
        last = messages[-1]
        if isinstance(last, ModelRequest):  # a retry asked for by a tool comes back as its return
            self.retries += [
                str(p.content)
                for p in last.parts
                if isinstance(p, RetryPromptPart)
                or (isinstance(p, ToolReturnPart) and p.outcome == "retried")
            ]
        if self.calls:
            name, args = self.calls.pop(0)
            return ModelResponse(parts=[ToolCallPart(name, args)])
        return ModelResponse(parts=[TextPart(self.text)])


def agent(script: Script, tools: Any = None) -> LLMAgent:
    deps = AgentDeps(retriever=FakeRetriever(), settings=make_settings())
    config: dict[str, Any] = {} if tools is None else {"tools": tools}
    return LLMAgent(make_spec(**config), deps, model=FunctionModel(script, model_name="fn-model"))


async def test_without_tools_configured_the_model_is_offered_none() -> None:
    script = Script(text="plain")
    reply = await agent(script).respond(make_turn())
    assert script.tools == []
    assert reply.replies == (OutText(body="plain"),)


async def test_buttons_go_out_after_the_text() -> None:
    call = (
        "send_buttons",
        {"body": "Which size?", "buttons": ["Small", "Large"], "footer": "Prices incl. tax"},
    )
    script = Script(call, text="Here are our sizes.")
    reply = await agent(script, ["buttons", "list"]).respond(make_turn())
    assert script.tools == ["send_buttons", "send_list"]
    assert reply.replies == (
        OutText(body="Here are our sizes."),
        OutButtons(
            body="Which size?",
            buttons=(ReplyButton(id="button_1", title="Small"), ReplyButton(id="button_2", title="Large")),
            footer="Prices incl. tax",
        ),
    )
    assert reply.notes["rich"] == ["buttons"]


async def test_a_reply_over_whatsapps_limits_goes_back_to_the_model_with_the_reason() -> None:
    too_long = ("send_buttons", {"body": "Pick one", "buttons": ["A title far longer than twenty"]})
    four = ("send_buttons", {"body": "Pick one", "buttons": ["a", "b", "c", "d"]})
    fixed = ("send_buttons", {"body": "Pick one", "buttons": ["Short title"]})
    script = Script(too_long, four, fixed)
    reply = await agent(script, ["buttons"]).respond(make_turn())
    assert len(script.retries) == 2
    assert "title is 30 characters; WhatsApp allows at most 20" in script.retries[0]
    assert "has 4 buttons; WhatsApp needs 1 to 3" in script.retries[1]
    # Only the accepted one is sent; with no text, the rich reply is the whole answer.
    assert reply.replies == (
        OutButtons(body="Pick one", buttons=(ReplyButton(id="button_1", title="Short title"),)),
    )


async def test_reaction_first_then_text_then_the_rest_in_order() -> None:
    menu = {
        "body": "Our menu",
        "button": "See drinks",
        "groups": [
            {"title": "Coffee", "items": [{"title": "Latte"}, {"title": "Espresso", "description": "Double"}]}
        ],
    }
    calls: list[tuple[str, dict[str, Any]]] = [
        ("send_location", {"latitude": -6.2, "longitude": 106.8, "name": "Kopi Nusantara"}),
        ("react", {"emoji": "👍"}),
        ("send_list", menu),
    ]
    script = Script(*calls, text="Sure!")
    reply = await agent(script, ["location", "reaction", "list"]).respond(make_turn())
    rows = (ListRow(id="item_1", title="Latte"), ListRow(id="item_2", title="Espresso", description="Double"))
    assert reply.replies == (
        OutReaction(message_id="wamid.TEST1", emoji="👍"),
        OutText(body="Sure!"),
        OutLocation(latitude=-6.2, longitude=106.8, name="Kopi Nusantara"),
        OutList(body="Our menu", button="See drinks", sections=(ListSection(title="Coffee", rows=rows),)),
    )


async def test_asking_for_the_customers_location() -> None:
    script = Script(("ask_for_location", {"body": "Where should we deliver?"}))
    reply = await agent(script, ["location_request"]).respond(make_turn())
    assert reply.replies == (OutLocationRequest(body="Where should we deliver?"),)


async def test_one_reaction_per_turn() -> None:
    script = Script(("react", {"emoji": "👍"}), ("react", {"emoji": "❤️"}), text="ok")
    reply = await agent(script, ["reaction"]).respond(make_turn())
    assert script.retries == ["You already reacted to this message."]
    reactions = [r for r in reply.replies if isinstance(r, OutReaction)]
    assert reactions == [OutReaction(message_id="wamid.TEST1", emoji="👍")]


async def test_link_button_needs_a_web_address() -> None:
    bad = ("send_link_button", {"body": "Order online", "button_text": "Open shop", "url": "ftp://shop"})
    script = Script(bad, text="See above.")
    reply = await agent(script, ["link_button"]).respond(make_turn())
    assert "must be an http(s) URL" in script.retries[0]
    assert reply.replies == (OutText(body="See above."),)


async def test_neither_text_nor_rich_reply_is_an_empty_answer() -> None:
    with pytest.raises(AgentError, match="empty answer"):
        await agent(Script(text="  "), ["buttons"]).respond(make_turn())


@pytest.mark.parametrize("tools", [["buttons", "carousel"], "buttons"])
def test_unknown_or_malformed_tool_configuration_is_refused(tools: Any) -> None:
    with pytest.raises(ValueError, match="tool"):
        agent(Script(), tools)


def test_the_settings_know_every_tool_and_hand_them_to_the_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(get_args(AgentTool)) == set(TOOLS) | set(STATE_TOOLS)
    monkeypatch.setenv("WARELAY_AGENT__TOOLS", '["buttons", "reaction"]')
    assert env_agent_defaults(Settings())["tools"] == ["buttons", "reaction"]
    monkeypatch.setenv("WARELAY_AGENT__TOOLS", '["carousel"]')
    with pytest.raises(ValidationError):
        Settings()
