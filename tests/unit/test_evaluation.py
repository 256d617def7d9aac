"""warelay eval without a server: the suite file (schema, errors at their YAML line), the assertions
judged on Graph request bodies, and the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from warelay.agents.base import agent_kinds
from warelay.cli import demo_knowledge_dir
from warelay.evaluation import SuiteError, SuiteResult, load_suite, summary_line, verdict_table
from warelay.evaluation.checks import Outcome, Reply, describe_check, evaluate
from warelay.evaluation.results import ConversationResult, StepResult
from warelay.evaluation.suite import Check, Step

DEMO_SUITE = demo_knowledge_dir().parent / "eval.yaml"


def suite_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    path = suite_file(tmp_path, text)
    with pytest.raises(SuiteError) as caught:
        load_suite(path)
    return [p.removeprefix(f"{path}:") for p in caught.value.problems]


def check(yaml_item: str, tmp_path: Path) -> Check:
    """One assertion parsed the way a suite file's are."""
    path = suite_file(
        tmp_path,
        f"agent: {{kind: knowledge}}\nconversations:\n  - name: c\n    steps:\n      - user: hi\n"
        f"        expect:\n          - {yaml_item}\n",
    )
    return load_suite(path).conversations[0].steps[0].expect[0]


# ------------------------------------------------------------------------------------------ the file


def test_the_demo_suite_loads_with_paths_resolved() -> None:
    suite = load_suite(DEMO_SUITE)
    assert suite.agent.kind == "knowledge"
    assert suite.agent.knowledge == [demo_knowledge_dir().resolve()]
    assert 6 <= len(suite.conversations) <= 10
    assert any(len(c.steps) > 1 for c in suite.conversations)
    assert suite.assertions == sum(len(s.expect) for c in suite.conversations for s in c.steps)


def test_every_problem_is_reported_at_its_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """agent:
  kind: knowledgee
  knowledge: [nowhere]
conversations:
  - name: one
    steps:
      - user: hi
        expect:
          - contains: hi
            regex: x
          - just text
          - regex: "(unclosed"
          - state: {}
          - handoff: maybe
          - contains: []
      - tap: X
        user: hello
      - media: {file: missing.png}
      - user: "   "
""",
    )
    assert found == [
        # Other tests may have registered kinds of their own: the known ones are whatever is registered.
        f"2:9: agent.kind: unknown agent kind 'knowledgee'; known: {', '.join(agent_kinds())}",
        f"3:14: agent.knowledge: no such file or folder: {tmp_path / 'nowhere'}",
        "9:13: conversations[0].steps[0].expect[0]: an assertion is a mapping with exactly one of: "
        "contains, not_contains, regex, button, state, handoff",
        "11:13: conversations[0].steps[0].expect[1]: an assertion is a mapping with exactly one of: "
        "contains, not_contains, regex, button, state, handoff",
        "12:20: conversations[0].steps[0].expect[2].regex: not a valid regular expression: "
        "missing ), unterminated subpattern at position 0",
        "13:20: conversations[0].steps[0].expect[3].state: say what to compare: intent, step and/or context",
        "14:22: conversations[0].steps[0].expect[4].handoff: Input should be a valid boolean, "
        "unable to interpret input",
        "15:23: conversations[0].steps[0].expect[5].contains: Value should have at least 1 item after "
        "validation, not 0",
        "16:9: conversations[0].steps[1]: a step sends exactly one of: user (text), media, tap, message "
        "(this one has user, tap)",
        f"18:23: conversations[0].steps[2].media.file: no such file: {tmp_path / 'missing.png'}",
        "19:9: conversations[0].steps[3]: user: the message is empty",
    ]


def test_missing_and_unknown_keys(tmp_path: Path) -> None:
    assert problems(tmp_path, "conversations:\n  - name: a\n    steps: [{user: hi}]\n") == [
        "1:1: agent: Field required"
    ]
    assert problems(
        tmp_path,
        "agent: {kind: knowledge}\nconversations:\n  - name: a\n    steps: [{user: hi, expct: []}]\n",
    ) == ["4:31: conversations[0].steps[0].expct: Extra inputs are not permitted"]
    assert problems(
        tmp_path,
        "agent: {kind: knowledge}\nconversations:\n  - {name: a, steps: [{user: hi}]}\n"
        "  - {name: a, steps: [{user: hello}]}\n",
    ) == ["3:3: conversations: two conversations are named 'a'"]


def test_the_agent_configuration_is_checked_as_it_would_be_stored(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        "agent:\n  kind: llm\n  config:\n    temperature: 7\n    tools: [buttons]\n"
        "conversations: [{name: a, steps: [{user: hi}]}]\n",
    )
    assert found == [
        "4:5: agent.config: invalid agent configuration: temperature: Input should be less than or equal to 2"
    ]
    (tmp_path / "prompt.txt").write_text("You sell coffee.")
    path = suite_file(
        tmp_path,
        "agent: {kind: llm, config: {system_prompt_file: prompt.txt}}\n"
        "conversations: [{name: a, steps: [{user: hi}]}]\n",
    )
    assert load_suite(path).agent.config == {"system_prompt_file": str(tmp_path / "prompt.txt")}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("agent: [\n", ["2:1: not valid YAML: expected the node content, but found '<stream end>'"]),
        ("agent: {kind: knowledge}\nagent: {kind: llm}\n", ["2:1: 'agent' is given twice"]),
        ("- 1\n", ["1:1: a suite is a mapping with agent and conversations"]),
    ],
)
def test_files_that_are_not_suites(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert problems(tmp_path, text) == expected


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no such file"):
        load_suite(tmp_path / "missing.yaml")
    with pytest.raises(SuiteError, match="the file is empty"):
        load_suite(suite_file(tmp_path, ""))
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SuiteError, match="not UTF-8"):
        load_suite(tmp_path / "latin1.yaml")
    with pytest.raises(SuiteError, match="a folder"):
        load_suite(tmp_path)


def test_yes_and_numbers_stay_text(tmp_path: Path) -> None:
    path = suite_file(
        tmp_path,
        "agent: {kind: knowledge}\nconversations:\n  - name: a\n    steps:\n"
        "      - tap: Yes\n        expect: [{contains: 2019}, {button: No}, {handoff: true}]\n",
    )
    step = load_suite(path).conversations[0].steps[0]
    assert step.tap == "Yes"
    assert [describe_check(c) for c in step.expect] == ["contains '2019'", "button 'No'", "handoff true"]


def test_media_types_are_guessed_and_checked(tmp_path: Path) -> None:
    for name in ("photo.png", "menu.pdf", "note.ogg", "blob.unknownext"):
        (tmp_path / name).write_bytes(b"x")
    path = suite_file(
        tmp_path,
        "agent: {kind: knowledge}\nconversations:\n  - name: a\n    steps:\n"
        "      - media: {file: photo.png, caption: look}\n"
        "      - media: {file: menu.pdf, filename: Menu.pdf}\n"
        "      - media: {file: note.ogg, voice: true}\n",
    )
    media = [s.media for s in load_suite(path).conversations[0].steps]
    assert [(m.kind, m.mime, m.voice) for m in media if m is not None] == [
        ("image", "image/png", False),
        ("document", "application/pdf", False),
        ("audio", "audio/ogg", True),
    ]
    assert problems(
        tmp_path,
        "agent: {kind: knowledge}\nconversations:\n  - name: a\n    steps:\n"
        "      - media: {file: note.ogg, caption: hi}\n"
        "      - media: {file: blob.unknownext}\n",
    ) == [
        "5:16: conversations[0].steps[0].media: WhatsApp audio messages have no caption",
        "6:16: conversations[0].steps[1].media: cannot tell the type of blob.unknownext: give mime_type",
    ]


# ------------------------------------------------------------------------------------------ judging

TEXT = Reply.from_body("wamid.1", {"type": "text", "text": {"body": "We open at 8:00, Monday to Friday."}})
BUTTONS = Reply.from_body(
    "wamid.2",
    {
        "type": "interactive",
        "interactive": {
            "type": "button",
            "header": {"type": "text", "text": "Beans"},
            "body": {"text": "Which one?"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "b1", "title": "Gayo"}},
                    {"type": "reply", "reply": {"id": "b2", "title": "Kintamani"}},
                ]
            },
        },
    },
)
LIST = Reply.from_body(
    "wamid.3",
    {
        "type": "interactive",
        "interactive": {
            "type": "list",
            "body": {"text": "Pick a size"},
            "action": {
                "button": "Sizes",
                "sections": [
                    {"title": "Bags", "rows": [{"id": "r1", "title": "500 g", "description": "best"}]}
                ],
            },
        },
    },
)
IMAGE = Reply.from_body(
    "wamid.4", {"type": "image", "image": {"link": "https://x.example/a.jpg", "caption": "Our café"}}
)
CONVERSATION: dict[str, Any] = {
    "intent": "order",
    "step": "confirm",
    "context": {"beans": "Gayo", "bag": {"grams": 500}},
    "handoff": None,
}


def test_replies_read_as_the_user_sees_them() -> None:
    assert TEXT.summary == "We open at 8:00, Monday to Friday."
    assert BUTTONS.text == "Beans\nWhich one?\nGayo\nKintamani"
    assert BUTTONS.summary == "Beans Which one? [Gayo] [Kintamani]"
    assert [(o.kind, o.id, o.title, o.message_id) for o in BUTTONS.options] == [
        ("button", "b1", "Gayo", "wamid.2"),
        ("button", "b2", "Kintamani", "wamid.2"),
    ]
    assert LIST.text == "Pick a size\nSizes\nBags\nbest\n500 g"
    assert LIST.summary == "Pick a size ≡ Sizes: 500 g"
    assert LIST.options[0].description == "best"
    assert IMAGE.summary == "[image https://x.example/a.jpg] Our café"
    assert Reply.from_body(
        "w", {"type": "reaction", "reaction": {"message_id": "m", "emoji": "👍"}}
    ).summary == ("[reaction 👍]")


def judge(
    item: str, tmp_path: Path, *replies: Reply, ignore_case: bool = False, **conversation: Any
) -> Outcome:
    state = {**CONVERSATION, **conversation}
    return evaluate(check(item, tmp_path), replies, state, ignore_case=ignore_case)


def test_contains_and_not_contains(tmp_path: Path) -> None:
    assert judge("contains: ['8:00', Monday]", tmp_path, TEXT).passed
    assert judge("contains: Gayo", tmp_path, TEXT, BUTTONS).passed  # button titles are text the user reads
    failed = judge("contains: ['8:00', Sunday, '9:00']", tmp_path, TEXT)
    assert (failed.passed, failed.detail) == (False, "missing 'Sunday', '9:00'")
    assert not judge("contains: monday", tmp_path, TEXT).passed
    assert judge("contains: monday", tmp_path, TEXT, ignore_case=True).passed  # the suite's default
    assert not judge("{contains: monday, ignore_case: false}", tmp_path, TEXT, ignore_case=True).passed
    assert judge("not_contains: [Sunday, dentist]", tmp_path, TEXT).passed
    failed = judge("not_contains: [Sunday, Monday]", tmp_path, TEXT)
    assert (failed.passed, failed.detail) == (False, "found 'Monday'")
    assert not judge("contains: anything", tmp_path).passed  # no reply at all


def test_regex(tmp_path: Path) -> None:
    assert judge(r"regex: 'open at \d+:00'", tmp_path, TEXT).passed
    failed = judge(r"regex: 'OPEN AT \d+:00'", tmp_path, TEXT)
    assert (failed.passed, failed.detail) == (False, "no match")
    assert judge(r"{regex: 'OPEN AT \d+:00', ignore_case: true}", tmp_path, TEXT).passed


def test_button(tmp_path: Path) -> None:
    assert judge("button: Kintamani", tmp_path, TEXT, BUTTONS).passed
    assert judge("button: 500 g", tmp_path, LIST).passed  # a list row counts
    assert not judge("button: Which one?", tmp_path, BUTTONS).passed  # a body is not a button
    failed = judge("button: Toraja", tmp_path, BUTTONS, LIST)
    assert (failed.passed, failed.detail) == (False, "buttons and list rows: 'Gayo', 'Kintamani', '500 g'")
    assert judge("button: toraja", tmp_path, TEXT).detail == "buttons and list rows: none"
    assert judge("{button: gayo, ignore_case: true}", tmp_path, BUTTONS).passed


def test_state_compares_the_fields_given_and_context_as_a_subset(tmp_path: Path) -> None:
    assert judge("state: {intent: order}", tmp_path).passed
    assert judge("state: {intent: order, step: confirm, context: {beans: Gayo}}", tmp_path).passed
    assert judge("state: {context: {bag: {grams: 500}}}", tmp_path).passed
    failed = judge(
        "state: {intent: browse, context: {beans: Toraja, size: 1kg, bag: {grams: 200}}}", tmp_path
    )
    assert not failed.passed
    assert failed.detail == (
        "intent is 'order', expected 'browse'; context.beans is 'Gayo', expected 'Toraja'; "
        "context.size is missing, expected '1kg'; context.bag is {'grams': 500}, expected {'grams': 200}"
    )
    assert judge("state: {intent: null}", tmp_path, intent=None).passed
    assert judge("state: {intent: null}", tmp_path).detail == "intent is 'order', expected None"
    assert judge("state: {step: confirm}", tmp_path).passed
    assert not judge("state: {step: pay}", tmp_path).passed


def test_handoff(tmp_path: Path) -> None:
    handed = {"reason": "asks for a person", "at": "2026-01-01T00:00:00Z"}
    assert judge("handoff: false", tmp_path).passed
    assert judge("handoff: true", tmp_path).detail == "no handoff requested"
    assert judge("handoff: true", tmp_path, handoff=handed).passed
    assert judge("handoff: false", tmp_path, handoff=handed).detail == "handed off: 'asks for a person'"


def test_state_and_handoff_fail_when_the_conversation_could_not_be_read(tmp_path: Path) -> None:
    outcome = evaluate(check("handoff: false", tmp_path), (), None)
    assert (outcome.passed, outcome.detail) == (False, "the conversation could not be read")


# ------------------------------------------------------------------------------------------ the report


def result() -> SuiteResult:
    ok = StepResult(1, "What are your opening hours?", (TEXT,), (Outcome("contains '8:00'", True),))
    bad = StepResult(
        2,
        "Which beans?",
        (BUTTONS,),
        (Outcome("button 'Toraja'", False, "buttons and list rows: 'Gayo', 'Kintamani'"),),
    )
    quiet = StepResult(3, "[reacted 👍]", ())
    late = StepResult(
        4, "more", (), (Outcome("contains 'x'", False, "not run"),), error="not run: step 3 …", played=False
    )
    conversations = (ConversationResult("shop", "19990000000001", (ok, bad, quiet, late)),)
    return SuiteResult("demo", "knowledge", conversations, seconds=1.25)


def test_counts_and_json() -> None:
    r = result()
    assert (r.total, r.passed, r.failed, r.ok) == (4, 1, 3, False)
    assert r.pass_rate == 0.25
    data = r.to_json()
    assert (data["passed"], data["failed"], data["total"], data["conversations_passed"]) == (1, 3, 4, 0)
    steps = data["conversations"][0]["steps"]
    assert steps[1]["replies"][0]["interactive"]["type"] == "button"
    assert steps[3]["played"] is False
    assert steps[3]["assertions"][0] == {
        "assertion": "turn completed",
        "passed": False,
        "detail": "not run: step 3 …",
    }


def test_table_and_summary() -> None:
    console = Console(record=True, width=250)
    console.print(verdict_table(result()))
    console.print(summary_line(result()))
    text = console.export_text()
    assert "demo (knowledge agent)" in text
    assert "We open at 8:00, Monday to Friday." in text
    assert "buttons and list rows: 'Gayo', 'Kintamani'" in text
    assert "(no assertions)" in text
    assert text.count("FAIL") == 3
    assert "pass rate: 25.0% — 1/4 checks passed, 0/1 conversations passed (1.2 s)" in text


def test_a_step_describes_what_it_sends(tmp_path: Path) -> None:
    (tmp_path / "photo.jpg").write_bytes(b"x")
    assert Step.model_validate({"tap": "Gayo"}).describe() == "[tap Gayo]"
    assert Step.model_validate({"message": {"type": "location"}}).describe() == "[location]"
    media = Step.model_validate(
        {"media": {"file": "photo.jpg", "caption": "broken"}}, context={"base": tmp_path}
    )
    assert media.describe() == "[image photo.jpg] broken"
