"""Markdown → WhatsApp markup: every Markdown construct, and text that must come through untouched."""

from __future__ import annotations

import random

import pytest

from warelay.outbound.format import markdown_to_whatsapp

# ------------------------------------------------------------------------------ left exactly as written

UNCHANGED = [
    "Hello! Your order #1234 ships tomorrow 🚚",
    "Your table for 4 is booked 👨‍👩‍👧‍👦 🇧🇷 👍🏽",
    "مرحبا! كيف يمكنني مساعدتك اليوم؟ الطلب رقم ١٢٣ جاهز.",
    "שלום! ההזמנה שלך מוכנה. תודה רבה",
    "Mixed: Hello שלום مرحبا 123",
    "Hi *Maria*, your _booking_ is ~cancelled~ confirmed",  # WhatsApp markup already
    "2*3*4 = 24 and 5 * 3 = 15",
    "set the env var MAX_RETRY_COUNT or use my_snake_case_name",
    "Paths like ~/.config and C:\\Users\\me stay as they are",
    "a < b > c & d; <b>not html</b>",
    "Call us at +1 (555) 010-9999 | open 9-17",
    "C# and F# are languages; #1 priority; #hashtag",
    "[citation needed] and [1] and (parenthesis)",
    "1 + 1 = 2, x += 1, a == b",
    "- first\n- second\n\n1. one\n2. two",  # WhatsApp lists
    "> a quoted line\nand the answer",  # WhatsApp quote
    "Use `pip install warelay` to start",  # WhatsApp inline code
    "```\nprint('hi')\n```",  # WhatsApp monospace block
    "```one line monospace```",
    "* star bullet\n* another",  # WhatsApp accepts "* " bullets too
    "Line one\nLine two\n\n\n\nLine after three blank lines  ",
    "   leading spaces kept",
    "Total\n-----\n42",  # would be a setext heading; ambiguous, so left alone
    "",
    "   ",
    "\u200f\u202bRTL marks\u202c",
    "email me at first_last@example.com",
]


@pytest.mark.parametrize("text", UNCHANGED)
def test_text_without_markdown_only_syntax_is_unchanged(text: str) -> None:
    assert markdown_to_whatsapp(text) == text


# ------------------------------------------------------------------------------------------ inline


@pytest.mark.parametrize(
    ("markdown", "whatsapp"),
    [
        ("**bold**", "*bold*"),
        ("__bold__", "*bold*"),
        ("**bold** and *italic*", "*bold* and _italic_"),
        ("**bold** and _italic_", "*bold* and _italic_"),
        ("~~gone~~", "~gone~"),
        ("**bold** and `code`", "*bold* and `code`"),
        ("***both***", "_*both*_"),
        ("**a *b* c**", "*a _b_ c*"),
        ("**Price:** 10 €", "*Price:* 10 €"),
        ("**מחיר:** 10 ₪", "*מחיר:* 10 ₪"),
        ("**السعر:** ١٠ ريال", "*السعر:* ١٠ ريال"),
        ("**hi** 👋🏽 👨‍👩‍👧", "*hi* 👋🏽 👨‍👩‍👧"),
    ],
)
def test_inline_markup(markdown: str, whatsapp: str) -> None:
    assert markdown_to_whatsapp(markdown) == whatsapp


def test_intraword_asterisks_and_snake_case_survive_in_a_markdown_text() -> None:
    text = "**Maths:** 2*3*4 = 24, see my_snake_case_name and 5 * 3"
    assert markdown_to_whatsapp(text) == "*Maths:* 2*3*4 = 24, see my_snake_case_name and 5 * 3"


def test_line_breaks_inside_a_paragraph_are_kept() -> None:
    assert markdown_to_whatsapp("**a**\nb\nc") == "*a*\nb\nc"


# ------------------------------------------------------------------------------------------- links


@pytest.mark.parametrize(
    ("markdown", "whatsapp"),
    [
        ("See [our menu](https://example.com/menu)", "See our menu (https://example.com/menu)"),
        ("[https://example.com](https://example.com)", "https://example.com"),
        ("[example.com](https://example.com/)", "https://example.com/"),
        ("Go to <https://example.com/a> **now**", "Go to https://example.com/a *now*"),
        ("[write us](mailto:help@example.com)", "write us (help@example.com)"),
        ("[Café](https://example.com/café)", "Café (https://example.com/café)"),
        ("[top](#top) of page", "top of page"),
        ("![Our logo](https://example.com/logo.png)", "Our logo (https://example.com/logo.png)"),
        ("![](https://example.com/x.png)", "https://example.com/x.png"),
        ("**[bold link](https://x.org)**", "*bold link (https://x.org)*"),
    ],
)
def test_links_and_images(markdown: str, whatsapp: str) -> None:
    assert markdown_to_whatsapp(markdown) == whatsapp


# ------------------------------------------------------------------------------------------- blocks


def test_headings_become_bold_lines() -> None:
    text = "# Opening hours\nMon–Fri 9–17\n\n## **Already bold** heading\n\nSetext\n======"
    assert markdown_to_whatsapp(text) == (
        "*Opening hours*\n\nMon–Fri 9–17\n\n*Already bold heading*\n\n*Setext*"
    )


def test_bullet_lists_use_one_marker_and_indent_nested_items() -> None:
    text = "**Menu**\n\n* Pizza\n  + Margherita\n  + Diavola\n    1. small\n    2. large\n* Pasta\n- Salad"
    assert markdown_to_whatsapp(text) == (
        "*Menu*\n\n- Pizza\n  - Margherita\n  - Diavola\n    1. small\n    2. large\n- Pasta\n\n- Salad"
    )


def test_ordered_lists_keep_their_start_and_use_dots() -> None:
    assert markdown_to_whatsapp("**Steps**\n\n3) three\n4) four") == "*Steps*\n\n3. three\n4. four"


def test_block_quotes_are_prefixed_on_every_line() -> None:
    text = "**Note**\n\n> first line\n> second line\n>\n> new paragraph"
    assert markdown_to_whatsapp(text) == "*Note*\n\n> first line\n> second line\n>\n> new paragraph"


def test_horizontal_rule_becomes_a_line() -> None:
    out = markdown_to_whatsapp("**a**\n\n---\n\nb")
    first, rule, last = out.split("\n\n")
    assert (first, last) == ("*a*", "b")
    assert set(rule) == {"─"}


def test_fenced_code_keeps_its_content_untouched_and_drops_the_language() -> None:
    code = "def f(**kwargs):\n    return [x for x in kwargs if x.startswith('__')]  # **not bold**\n"
    out = markdown_to_whatsapp(f"**Example**\n\n```python\n{code}```\n\nDone.")
    assert out == f"*Example*\n\n```\n{code}```\n\nDone."


def test_tilde_fence_and_indented_code_become_triple_backticks() -> None:
    assert markdown_to_whatsapp("~~~\nx = 1\n~~~") == "```\nx = 1\n```"
    assert markdown_to_whatsapp("**Run:**\n\n    make test\n") == "*Run:*\n\n```\nmake test\n```"


def test_tables_become_readable_rows() -> None:
    text = "| Item | Price |\n|:-----|------:|\n| Pizza | 9 € |\n| **Pasta** | 8 € |"
    assert markdown_to_whatsapp(text) == "*Item* | *Price*\nPizza | 9 €\n*Pasta* | 8 €"


def test_paragraphs_are_separated_by_exactly_one_blank_line() -> None:
    assert markdown_to_whatsapp("**a**\n\n\n\n\nb\n\n\nc\n") == "*a*\n\nb\n\nc"


def test_a_full_llm_answer() -> None:
    text = (
        "## Your order\n\n"
        "Thanks, **Ana**! Here is what I found:\n\n"
        "1. **Status:** shipped\n"
        "2. **Tracking:** [DHL 123](https://dhl.example/123)\n\n"
        "> Delivery takes *2–3 days*.\n\n"
        "Anything else? 😊"
    )
    assert markdown_to_whatsapp(text) == (
        "*Your order*\n\n"
        "Thanks, *Ana*! Here is what I found:\n\n"
        "1. *Status:* shipped\n"
        "2. *Tracking:* DHL 123 (https://dhl.example/123)\n\n"
        "> Delivery takes _2–3 days_.\n\n"
        "Anything else? 😊"
    )


def test_converted_output_is_stable_when_converted_again() -> None:
    text = "# T\n\n**b** *i* ~~s~~ `c` [l](https://x.y)\n\n- a\n  - b\n\n| h |\n|---|\n| v |"
    once = markdown_to_whatsapp(text)
    assert once != text
    assert markdown_to_whatsapp(once) == once


# ----------------------------------------------------------------------------------------- robustness


@pytest.mark.parametrize(
    "text",
    [
        ">" * 5000 + " deep",
        "[" * 3000 + "x" + "]" * 3000,
        "*" * 10000,
        "**" + "a" * 100_000 + "**",
        "- " * 2000 + "x",
        "| a |\n|---|\n" + "| b |\n" * 2000,
        "\ud800 lone surrogate **x**",
        "\x00\x01 control **x**",
        "```",
        "**",
        "[x](",
        "![",
    ],
)
def test_never_raises_on_hostile_input(text: str) -> None:
    assert isinstance(markdown_to_whatsapp(text), str)


def test_never_raises_on_random_markdown_soup() -> None:
    rng = random.Random(20260101)
    alphabet = list("*_~`#=[]()!|+->\\\n \t<&;:.1aé😀\u200d\u0301")
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        out = markdown_to_whatsapp(text)
        assert isinstance(out, str)
