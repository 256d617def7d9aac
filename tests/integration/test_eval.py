"""`warelay eval` end to end: suites played through warelay and the simulator on loopback.

The demo suite against the knowledge agent through the command line; failing and invalid suites
and their exit codes; the llm agent driven by pydantic-ai's FunctionModel (the only fake: the
model), with buttons, taps, conversation state, hand-off and media, each assertion kind shown to
pass when it should and to fail when it should.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.messages import (
    BinaryContent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from typer.testing import CliRunner

from warelay.cli import app, demo_knowledge_dir
from warelay.config import Settings, load_settings
from warelay.evaluation import SuiteResult, load_suite, run_suite

DEMO_SUITE = demo_knowledge_dir().parent / "eval.yaml"
runner = CliRunner(env={"COLUMNS": "250"})
# A 1×1 PNG: what a user's photo is to the simulator and warelay.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a0f2e8e30000000049454e44ae426082"
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No WARELAY_* or OpenAI settings from the machine running the tests, no .env file."""
    for name in list(os.environ):
        if name.startswith(("WARELAY_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def rows(result: SuiteResult) -> list[tuple[str, int, str, bool]]:
    """Every verdict as (conversation, step, assertion, passed)."""
    return [
        (c.name, s.number, o.assertion, o.passed)
        for c in result.conversations
        for s in c.steps
        for o in s.rows
    ]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ the knowledge agent


def test_the_demo_suite_passes_against_the_knowledge_agent(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = runner.invoke(app, ["eval", str(DEMO_SUITE), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "Kopi Nusantara FAQ (knowledge agent)" in result.output
    assert "What are your opening hours?" in result.output
    assert "FAIL" not in result.output
    suite = load_suite(DEMO_SUITE)
    assert f"pass rate: 100.0% — {suite.assertions}/{suite.assertions} checks passed" in result.output
    data = json.loads(out.read_text())
    assert data["pass_rate"] == 1.0
    assert data["total"] == suite.assertions == data["passed"]
    assert [c["name"] for c in data["conversations"]] == [c.name for c in suite.conversations]
    hours = next(c for c in data["conversations"] if c["name"] == "opening hours")
    assert "8:00" in hours["steps"][0]["replies"][0]["text"]["body"]  # the Graph request as sent
    multi = next(c for c in data["conversations"] if c["name"] == "order questions, several turns")
    assert len(multi["steps"]) == 5
    assert len({c["user"] for c in data["conversations"]}) == len(suite.conversations)  # fresh users


def test_a_failing_assertion_exits_1_and_shows_why(tmp_path: Path) -> None:
    suite = write(
        tmp_path / "suite.yaml",
        f"""
agent:
  kind: knowledge
  knowledge: {demo_knowledge_dir()}
conversations:
  - name: hours
    steps:
      - user: What are your opening hours?
        expect:
          - contains: "8:00"
          - contains: "7:00"
          - not_contains: "20:00"
          - regex: 'open (24|all) hours'
          - regex: 'OPEN AT 8:00'
            ignore_case: true
          - contains: OUR CAFÉ
""",
    )
    result = runner.invoke(app, ["eval", str(suite)])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output
    assert "missing '7:00'" in result.output
    assert "found '20:00'" in result.output
    assert "no match" in result.output
    assert "pass rate: 33.3% — 2/6 checks passed, 0/1 conversations passed" in result.output


def test_an_invalid_suite_exits_2_naming_the_line(tmp_path: Path) -> None:
    suite = write(
        tmp_path / "suite.yaml",
        """agent:
  kind: knowledge
conversations:
  - name: hours
    steps:
      - user: What are your opening hours?
        expect:
          - contain: "8:00"
""",
    )
    result = runner.invoke(app, ["eval", str(suite)])
    assert result.exit_code == 2, result.output
    assert f"{suite}:8:13: conversations[0].steps[0].expect[0]: an assertion is a mapping" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(app, ["eval", str(tmp_path / "nowhere.yaml")])
    assert missing.exit_code == 2
    assert "no such file" in missing.output


def test_an_agent_that_cannot_be_built_exits_2(tmp_path: Path) -> None:
    suite = write(
        tmp_path / "suite.yaml",
        """agent:
  kind: llm
conversations:
  - name: one
    steps:
      - user: hello
""",
    )
    result = runner.invoke(app, ["eval", str(suite)])
    assert result.exit_code == 2, result.output
    assert "the llm agent has no model endpoint" in result.output


def test_bad_options_are_refused(tmp_path: Path) -> None:
    for url, code, message in [
        ("not a url", 2, "--database-url is not a database URL"),
        ("mysql://user:hunter2@db/shop", 2, "--database-url names the driver 'mysql'"),
        ("postgresql+asyncpg://user:hunter2@127.0.0.1:1/shop", 1, "cannot use the database"),
    ]:
        result = runner.invoke(app, ["eval", str(DEMO_SUITE), "--database-url", url])
        assert result.exit_code == code, result.output
        assert message in result.output
        assert "hunter2" not in result.output
    result = runner.invoke(app, ["eval", str(DEMO_SUITE), "--json", str(tmp_path / "no" / "such.json")])
    assert result.exit_code == 2
    assert "--json: no folder" in result.output


async def test_the_demo_suite_on_a_given_database_twice(db_url: str) -> None:
    suite = load_suite(DEMO_SUITE)
    first = await run_suite(suite, load_settings(), database_url=db_url, concurrency=2)
    second = await run_suite(suite, load_settings(), database_url=db_url)
    assert first.ok, rows(first)
    assert second.ok, rows(second)  # the eval tenant's agent and knowledge are set up again, new users
    assert {c.user for c in first.conversations}.isdisjoint(c.user for c in second.conversations)


# ------------------------------------------------------------------------------ the llm agent

_WORD = re.compile(r"\w{4,}")


def words(text: str) -> set[str]:
    return {w.casefold() for w in _WORD.findall(text)}


def faq_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """A model that answers from the knowledge passages warelay put in its instructions.

    It quotes the answer of the first passage whose question shares a word (of 4+ letters) with the
    customer's message, greets and thanks back, and otherwise says it does not know.
    """
    request = next(m for m in reversed(messages) if isinstance(m, ModelRequest))
    text, _ = user_text(messages)
    if re.fullmatch(r"(hello|hi|hi there)!?", text.strip(), re.IGNORECASE):
        return ModelResponse(parts=[TextPart("Hi! How can I help you today?")])
    if text.lower().startswith("thanks"):
        return ModelResponse(parts=[TextPart("You're welcome!")])
    knowledge = (request.instructions or "").partition("## Knowledge")[2]
    for passage in re.split(r"\n\[\d+\] ", knowledge)[1:]:
        heading, _, body = passage.partition("\n")
        answer = body.partition("Answer: ")[2] or body
        if words(heading.partition(" — ")[2]) & words(text):
            return ModelResponse(parts=[TextPart(answer.strip())])
    return ModelResponse(parts=[TextPart("Sorry, I don't know that yet; I'll ask the team.")])


async def test_the_demo_suite_holds_the_llm_agent_to_the_same_answers() -> None:
    suite = load_suite(DEMO_SUITE)
    as_llm = suite.model_copy(update={"agent": suite.agent.model_copy(update={"kind": "llm"})})
    result = await run_suite(as_llm, load_settings(), llm_model=FunctionModel(faq_model))
    assert result.ok, [r for r in rows(result) if not r[3]]
    assert result.agent_kind == "llm"

    def knows_nothing(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("Sorry, I don't know that yet.")])

    ignorant = await run_suite(as_llm, load_settings(), llm_model=FunctionModel(knows_nothing))
    passed = {c.name for c in ignorant.conversations if c.passed}
    assert passed == {"out of scope"}  # the suite tells a model that ignores the knowledge apart


def user_text(messages: list[ModelMessage]) -> tuple[str, bool]:
    """The latest user message's text, and whether it carried an image."""
    for message in reversed(messages):
        if not isinstance(message, ModelRequest):
            continue
        for part in message.parts:
            if isinstance(part, UserPromptPart):
                if isinstance(part.content, str):
                    return part.content, "[image" in part.content
                texts = [c for c in part.content if isinstance(c, str)]
                image = any(isinstance(c, BinaryContent) and c.is_image for c in part.content)
                return "\n".join(texts), image or any("[image" in t for t in texts)
    return "", False


def shop_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """A model that answers from the message it gets and calls the tools a shop assistant would."""
    tools = {t.name for t in info.function_tools}
    assert {"send_buttons", "update_conversation_state", "handoff"} <= tools
    text, image = user_text(messages)
    answered = any(isinstance(p, ToolReturnPart) for p in messages[-1].parts)
    if image:
        return ModelResponse(parts=[TextPart("Thanks for the photo, we will replace the damaged bag.")])
    if "order" in text.lower():
        if answered:
            return ModelResponse(parts=[TextPart("Which beans would you like?")])
        return ModelResponse(
            parts=[
                ToolCallPart("send_buttons", {"body": "Our beans:", "buttons": ["Gayo", "Kintamani"]}),
                ToolCallPart(
                    "update_conversation_state",
                    {"intent": "order", "step": "choose_beans", "context": {"channel": "whatsapp"}},
                ),
            ]
        )
    if "Gayo" in text:
        if answered:
            return ModelResponse(parts=[TextPart("Gayo it is: 200 g for Rp 95.000. Shall I confirm?")])
        return ModelResponse(
            parts=[
                ToolCallPart("update_conversation_state", {"step": "confirm", "context": {"beans": "Gayo"}})
            ]
        )
    if "person" in text.lower():
        if answered:
            return ModelResponse(parts=[TextPart("A colleague will follow up here shortly.")])
        return ModelResponse(parts=[ToolCallPart("handoff", {"reason": "the customer asks for a person"})])
    return ModelResponse(parts=[TextPart("Kopi Nusantara here, how can I help?")])


ORDER_SUITE = """
agent:
  kind: llm
  config:
    tools: [buttons, state, handoff]
conversations:
  - name: order
    user_name: Ana
    steps:
      - user: I'd like to order some coffee
        expect:
          - contains: Which beans
          - button: Gayo
          - button: kintamani
            ignore_case: true
          - state: {intent: order, step: choose_beans, context: {channel: whatsapp}}
          - handoff: false
          # each of these must fail
          - button: Toraja
          - button: kintamani
          - state: {intent: browse}
          - state: {context: {channel: sms}}
          - handoff: true
          - not_contains: Gayo
          - contains: Toraja
          - regex: 'Rp \\d'
      - tap: Gayo
        expect:
          - state: {step: confirm, context: {beans: Gayo, channel: whatsapp}}
          - regex: 'Rp \\d+\\.\\d{3}'
          - state: {intent: null}
          - state: {context: {beans: Kintamani}}
          - state: {context: {size: 500g}}
      - user: Can I talk to a person, please?
        expect:
          - handoff: true
          - state: {intent: order}
          - contains: colleague
          - handoff: false
  - name: damaged parcel
    steps:
      - media: {file: parcel.png, caption: my beans arrived like this}
        expect:
          - contains: photo
          - not_contains: photo
"""

EXPECTED_ORDER = [
    ("order", 1, "contains 'Which beans'", True),
    ("order", 1, "button 'Gayo'", True),
    ("order", 1, "button 'kintamani' (any case)", True),
    ("order", 1, "state intent='order' step='choose_beans' context={'channel': 'whatsapp'}", True),
    ("order", 1, "handoff false", True),
    ("order", 1, "button 'Toraja'", False),
    ("order", 1, "button 'kintamani'", False),
    ("order", 1, "state intent='browse'", False),
    ("order", 1, "state context={'channel': 'sms'}", False),
    ("order", 1, "handoff true", False),
    ("order", 1, "not_contains 'Gayo'", False),
    ("order", 1, "contains 'Toraja'", False),
    ("order", 1, "regex 'Rp \\\\d'", False),
    ("order", 2, "state step='confirm' context={'beans': 'Gayo', 'channel': 'whatsapp'}", True),
    ("order", 2, "regex 'Rp \\\\d+\\\\.\\\\d{3}'", True),
    ("order", 2, "state intent=None", False),
    ("order", 2, "state context={'beans': 'Kintamani'}", False),
    ("order", 2, "state context={'size': '500g'}", False),
    ("order", 3, "handoff true", True),
    ("order", 3, "state intent='order'", True),
    ("order", 3, "contains 'colleague'", True),
    ("order", 3, "handoff false", False),
    ("damaged parcel", 1, "contains 'photo'", True),
    ("damaged parcel", 1, "not_contains 'photo'", False),
]


def llm_settings(**worker: Any) -> Settings:
    return load_settings(worker=worker) if worker else load_settings()


async def test_the_llm_agent_with_a_function_model(tmp_path: Path) -> None:
    (tmp_path / "parcel.png").write_bytes(PNG)
    suite = load_suite(write(tmp_path / "suite.yaml", ORDER_SUITE))
    result = await run_suite(suite, llm_settings(), llm_model=FunctionModel(shop_model))
    assert rows(result) == EXPECTED_ORDER
    order = result.conversations[0]
    first = order.steps[0]
    assert [r.type for r in first.replies] == ["text", "interactive"]
    assert [o.title for o in first.replies[1].options] == ["Gayo", "Kintamani"]
    assert first.outcomes[5].detail == "buttons and list rows: 'Gayo', 'Kintamani'"
    assert first.outcomes[7].detail == "intent is 'order', expected 'browse'"
    assert first.outcomes[9].detail == "no handoff requested"
    assert order.steps[1].outcomes[4].detail == "context.size is missing, expected '500g'"
    assert order.steps[2].outcomes[3].detail == "handed off: 'the customer asks for a person'"
    assert result.failed == sum(not passed for *_, passed in EXPECTED_ORDER)


async def test_a_step_that_does_not_finish_stops_its_conversation(tmp_path: Path) -> None:
    async def slow(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        text, _ = user_text(messages)
        if "slow" in text:
            await asyncio.sleep(3)
        return ModelResponse(parts=[TextPart(f"you said {text}")])

    suite = load_suite(
        write(
            tmp_path / "suite.yaml",
            """
agent: {kind: llm}
conversations:
  - name: slow
    steps:
      - user: be slow
        timeout_seconds: 0.5
        expect: [{contains: you said}]
      - user: next
        expect: [{contains: next}]
  - name: quick
    steps:
      - user: quick
        expect: [{contains: you said quick}]
""",
        )
    )
    result = await run_suite(suite, llm_settings(), llm_model=FunctionModel(slow))
    slow_conversation, quick = result.conversations
    assert quick.passed
    first, second = slow_conversation.steps
    assert first.error == "warelay did not finish the turn within 0.5s"
    assert [(o.assertion, o.passed, o.detail) for o in first.rows] == [
        ("turn completed", False, "warelay did not finish the turn within 0.5s"),
        ("contains 'you said'", False, "not evaluated: the step did not complete"),
    ]
    assert not second.played
    assert [(o.assertion, o.passed) for o in second.rows] == [
        ("turn completed", False),
        ("contains 'next'", False),
    ]
    assert (result.passed, result.total) == (1, 5)


async def test_a_turn_that_fails_for_good_is_reported(tmp_path: Path) -> None:
    def broken(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise RuntimeError("model exploded")

    suite = load_suite(
        write(
            tmp_path / "suite.yaml",
            """
agent: {kind: llm, config: {fallback_text: "Sorry, try again later."}}
conversations:
  - name: broken
    steps:
      - user: hello
        expect: [{contains: try again later}]
""",
        )
    )
    result = await run_suite(suite, llm_settings(max_attempts=2), llm_model=FunctionModel(broken))
    step = result.conversations[0].steps[0]
    assert step.error is None
    assert len(step.warnings) == 1
    assert step.warnings[0].startswith("a turn failed after 2 attempt(s)")
    assert "model exploded" in step.warnings[0]
    assert [(o.assertion, o.passed) for o in step.rows] == [
        ("turn completed", False),
        ("contains 'try again later'", True),  # the fallback text reached the user
    ]


async def test_tapping_what_was_not_offered_fails_the_step(tmp_path: Path) -> None:
    suite = load_suite(
        write(
            tmp_path / "suite.yaml",
            """
agent: {kind: llm, config: {tools: [buttons, state, handoff]}}
conversations:
  - name: tap
    steps:
      - user: I want to order
        expect: [{button: Gayo}]
      - tap: Toraja
        expect: [{contains: Toraja}]
""",
        )
    )
    result = await run_suite(suite, llm_settings(), llm_model=FunctionModel(shop_model))
    first, second = result.conversations[0].steps
    assert first.passed
    assert (
        second.error
        == "nothing to tap called 'Toraja' in warelay's replies so far (offered: 'Gayo', 'Kintamani')"
    )
