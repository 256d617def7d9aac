"""Splitting long replies at 4096 code points: structure first, graphemes always whole, nothing lost."""

from __future__ import annotations

import random

import pytest
import regex  # type: ignore[import-untyped]  # the regex package ships no stubs (types-regex absent)

from warelay.outbound.splitter import TEXT_LIMIT, split_text, truncate_graphemes

FAMILY = "👨\u200d👩\u200d👧\u200d👦"  # 7 code points, one grapheme
FLAG = "🇧🇷"  # 2 regional indicators
THUMB = "👍🏽"  # emoji + skin tone
E_ACUTE = "e\u0301"  # e + combining acute

ARABIC = "مرحبا بك في متجرنا. كيف يمكنني مساعدتك اليوم؟ نحن هنا لخدمتك! "
HEBREW = "שלום וברוכים הבאים לחנות שלנו. איך אפשר לעזור היום? אנחנו כאן בשבילך! "


def no_space(text: str) -> str:
    return "".join(text.split())


def graphemes(text: str) -> list[str]:
    return [g for g in regex.findall(r"\X", text) if not g.isspace()]


def check_invariants(text: str, parts: list[str], limit: int) -> None:
    """Every part fits, is stripped and non-empty; no visible character or cluster is lost or torn."""
    assert all(0 < len(part) <= limit for part in parts)
    assert all(part == part.strip() for part in parts)
    assert no_space("".join(parts)) == no_space(text)
    # Each part segments into whole clusters of the original: no cluster straddles a cut.
    assert [g for part in parts for g in graphemes(part)] == graphemes(text)


# ------------------------------------------------------------------------------------------- basics


@pytest.mark.parametrize("text", ["", " ", "\n\n\t  \n", "\u00a0\u2003"])
def test_empty_or_whitespace_gives_no_parts(text: str) -> None:
    assert split_text(text) == []


def test_short_text_is_one_stripped_part() -> None:
    assert split_text("  Hello 👋🏽  \n") == ["Hello 👋🏽"]
    assert split_text("x" * TEXT_LIMIT) == ["x" * TEXT_LIMIT]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_text("abc", 0)


# ---------------------------------------------------------------------------------- boundary choice


def test_5000_characters_split_at_the_paragraph_boundary() -> None:
    first = ("Our shop opens at nine. " * 120).strip()  # 2879 chars
    second = ("Delivery is free above 50 euros. " * 64).strip()  # 2111 chars
    text = f"{first}\n\n{second}"
    assert len(text) > 4900
    assert split_text(text) == [first, second]


def test_paragraph_boundary_is_preferred_over_a_later_sentence_end() -> None:
    first = "A" * 2000 + "."
    second = " ".join(["Word."] * 700)
    parts = split_text(f"{first}\n\n{second}")
    assert parts[0] == first


def test_line_break_is_used_when_there_is_no_paragraph_break() -> None:
    lines = [f"{i:03d}. item with some words in it" for i in range(200)]
    text = "\n".join(lines)
    parts = split_text(text, 1000)
    check_invariants(text, parts, 1000)
    for part in parts:
        assert all(line in lines for line in part.split("\n"))


def test_a_single_paragraph_of_sentences_is_cut_after_sentence_ends() -> None:
    sentences = [f"Sentence number {i} talks about the weather today!" for i in range(150)]
    text = " ".join(sentences)
    parts = split_text(text)
    assert len(parts) == 2
    check_invariants(text, parts, TEXT_LIMIT)
    assert parts[0].endswith("!")
    assert parts[1].startswith("Sentence number")


def test_sentence_ends_include_other_scripts() -> None:
    text = "这是第一句话。" * 700  # no spaces at all
    parts = split_text(text)
    check_invariants(text, parts, TEXT_LIMIT)
    assert all(part.endswith("。") for part in parts)


def test_words_are_kept_whole_when_there_are_no_sentences() -> None:
    words = [f"word{i}" for i in range(2000)]
    text = " ".join(words)
    parts = split_text(text)
    check_invariants(text, parts, TEXT_LIMIT)
    assert [w for part in parts for w in part.split(" ")] == words


def test_no_break_spaces_are_not_cut_points() -> None:
    text = "x" * 4090 + " 10\u00a0000\u00a0€ tail"
    parts = split_text(text)
    assert parts == ["x" * 4090, "10\u00a0000\u00a0€ tail"]


def test_20000_characters_without_spaces_are_hard_cut() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(20_000))
    parts = split_text(text)
    assert [len(p) for p in parts] == [4096, 4096, 4096, 4096, 3616]
    assert "".join(parts) == text


def test_a_structural_break_too_early_loses_to_a_finer_one_later() -> None:
    text = "Hi!\n\n" + " ".join(["lorem"] * 1500)
    parts = split_text(text)
    assert len(parts[0]) > TEXT_LIMIT // 2
    check_invariants(text, parts, TEXT_LIMIT)


# ----------------------------------------------------------------------------------------- graphemes


@pytest.mark.parametrize("cluster", [FAMILY, FLAG, THUMB, E_ACUTE, "🏳️‍🌈", "क्षि"])
@pytest.mark.parametrize("offset", range(1, 8))
def test_clusters_at_the_cut_point_stay_whole(cluster: str, offset: int) -> None:
    # A run with no spaces, shifted so the limit lands on every position inside the cluster.
    text = "a" * (TEXT_LIMIT - offset) + cluster * 3 + "b" * 100
    parts = split_text(text)
    check_invariants(text, parts, TEXT_LIMIT)
    assert "".join(parts) == text


@pytest.mark.parametrize("cluster", [FAMILY, FLAG, THUMB, E_ACUTE])
def test_text_made_only_of_clusters(cluster: str) -> None:
    text = cluster * (12_000 // len(cluster))
    parts = split_text(text)
    check_invariants(text, parts, TEXT_LIMIT)
    assert all(len(part) % len(cluster) == 0 for part in parts)


def test_flags_with_odd_alignment_are_not_split_into_letters() -> None:
    text = "x" + FLAG * 3000
    parts = split_text(text)
    check_invariants(text, parts, TEXT_LIMIT)
    assert all(len(regex.findall(r"\X", p)) * 2 >= len(p) for p in parts)


def test_one_grapheme_longer_than_the_limit_is_cut_anyway() -> None:
    text = "a" + "\u0301" * 50
    parts = split_text(text, 10)
    assert "".join(parts) == text
    assert all(len(p) <= 10 for p in parts)


# ----------------------------------------------------------------------------------------- RTL text


def test_arabic_text_splits_at_sentence_ends() -> None:
    text = ARABIC * 120
    parts = split_text(text)
    check_invariants(text, parts, TEXT_LIMIT)
    assert len(parts) == 2
    assert parts[0][-1] in ".؟!"


def test_hebrew_text_splits_on_words_or_sentences() -> None:
    text = HEBREW * 100
    parts = split_text(text, 1000)
    check_invariants(text, parts, 1000)
    assert all(p[-1] in ".?!" for p in parts[:-1])


# ------------------------------------------------------------------------------------------- fences


def test_code_fence_is_not_split_when_a_cut_before_it_exists() -> None:
    prose = " ".join(["text"] * 500)  # 2499 chars
    code = "```\n" + "x = 1\n" * 300 + "```"  # 1807 chars
    text = f"{prose}\n\n{code}\n\nAfter the code."
    parts = split_text(text)
    assert parts[0] == prose
    assert parts[1] == f"{code}\n\nAfter the code."


def test_a_fence_longer_than_the_limit_is_cut_at_a_line_inside_it() -> None:
    code = "```\n" + "".join(f"line {i}\n" for i in range(900)) + "```"
    text = "Here:\n\n" + code
    parts = split_text(text)
    check_invariants(text, parts, TEXT_LIMIT)
    assert len(parts) == 2
    assert parts[1].startswith("line ")


# ---------------------------------------------------------------------------------------- property


def test_random_texts_keep_every_invariant() -> None:
    rng = random.Random(4096)
    pieces = ["word", "ab", " ", "  ", "\n", "\n\n", ". ", "! ", "؟ ", "。", FAMILY, FLAG, THUMB, E_ACUTE]
    pieces += ["```", "שלום", "مرحبا", "\u00a0", "\t", "x" * 30]
    for _ in range(150):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 400)))
        limit = rng.choice([7, 16, 50, 120, 500])
        check_invariants(text, split_text(text, limit), limit)


# ----------------------------------------------------------------------------------------- truncate


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("Hello wonderful world", 10, "Hello won…"),
        ("Hello world and more", 7, "Hello…"),  # whitespace before the ellipsis is dropped
        (f"ab{FAMILY}cd", 8, "ab…"),  # the family (7 code points) does not fit whole
        (f"ab{FLAG}cd", 5, f"ab{FLAG}…"),
        (f"ab{FLAG}cd", 4, "ab…"),
        ("abcdef", 1, "a"),  # no room for the ellipsis
        ("abcdef", 0, ""),
        ("مرحبا بالعالم", 6, "مرحبا…"),
    ],
)
def test_truncate_graphemes(text: str, limit: int, expected: str) -> None:
    assert truncate_graphemes(text, limit) == expected
    assert len(truncate_graphemes(text, limit)) <= max(limit, 0)


def test_truncate_with_a_custom_ellipsis() -> None:
    assert truncate_graphemes("abcdefghij", 8, ellipsis="...") == "abcde..."
    assert truncate_graphemes("abcdefghij", 5, ellipsis="") == "abcde"
