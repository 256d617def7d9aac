"""Split long replies into WhatsApp-sized parts, right after formatting in the outbound stage.

Where it sits in the path::

    agent reply ──▶ markdown_to_whatsapp ──▶ split_text (≤ 4096 per part) ──▶ outbox rows ──▶ send

Meta counts the text body limit (4096) in code points, which is Python's ``len``. Cuts prefer, in order:
paragraph breaks, line breaks, sentence ends, whitespace, and only then a hard cut on a grapheme-cluster
boundary (``\\X``), so emoji ZWJ sequences, flags, skin tones and combining marks are never torn apart.
Whitespace at a cut is dropped; no other character is ever lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

import regex  # type: ignore[import-untyped]  # the regex package ships no stubs (types-regex absent)

__all__ = ["TEXT_LIMIT", "split_text", "truncate_graphemes"]

TEXT_LIMIT: Final = 4096
"""Meta's maximum text body length in code points (SPEC ``TextMessage_1.body.maxLength``)."""

_GRAPHEME: Final = regex.compile(r"\X")
# A paragraph break is a line break followed by a blank (or whitespace-only) line.
_PARAGRAPH: Final = regex.compile(r"\r?\n[^\S\n]*\r?\n")
_LINE: Final = regex.compile(r"\r?\n")
# Sentence ends: Latin/Arabic/Indic/Ethiopic terminators need following whitespace; the full-width CJK ones
# end sentences in scripts written without spaces, so they count on their own. Closing quotes and
# brackets right after the terminator stay with their sentence.
_SENTENCE: Final = regex.compile(r"[.!?…‼⁇⁈⁉؟۔।॥።][\"'”’»)\]]*(?=\s)|[。！？｡][\"'”’」』）)]*")
# Whitespace a line may break at; the no-break spaces (U+00A0, U+2007, U+202F) are glue, not breaks.
_BREAK_SPACE: Final = regex.compile(r"[^\S\u00a0\u2007\u202f]+")
_FENCE: Final = regex.compile(r"`{3,}")
# Characters that cling to their neighbour inside a grapheme cluster (UAX #29 GB9, GB9a, GB9b, GB11).
_CLINGS_BACK: Final = regex.compile(r"[\p{GCB=Extend}\p{GCB=ZWJ}\p{GCB=SpacingMark}]")
_CLINGS_FORWARD: Final = regex.compile(r"[\p{GCB=Prepend}\p{GCB=ZWJ}]")
# A boundary always falls before these unless the previous character is one of _GLUES_NEXT (UAX #29
# GB5, GB6, GB9b, GB11, GB999) or an Indic conjunct continues: checking two characters is enough, no
# segmentation from the part's start.
_BREAKS_BEFORE: Final = regex.compile(
    r"[\p{GCB=Other}\p{GCB=Control}\p{GCB=CR}\p{GCB=L}\p{GCB=LV}\p{GCB=LVT}]"
)
_GLUES_NEXT: Final = regex.compile(r"[\p{GCB=Prepend}\p{GCB=ZWJ}\p{GCB=L}]")
# Indic conjuncts (GB9c, Unicode 15.1): consonant + virama + consonant is one cluster. Checked loosely (any
# joiner before a consonant); a doubtful spot is simply left to full segmentation.
_INDIC_CONSONANT: Final = regex.compile(r"\p{InCB=Consonant}")
_INDIC_JOINER: Final = regex.compile(r"[\p{InCB=Linker}\p{InCB=Extend}]")
_PLAIN_SCAN: Final = 32

# A structural break is taken only when it leaves the part at least this full; otherwise a finer break
# further along is preferred (one long message reads better than a stub followed by another message).
_MIN_FILL: Final = 3

_Finder = Callable[[str, int, int], Iterator[int]]


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split ``text`` into stripped parts of at most ``limit`` code points, cutting at the best boundary."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    n = len(text)
    start = _skip_space(text, 0)
    if start == n:
        return []
    if n - start <= limit:
        return [text[start:].rstrip()]
    # A fence that could never fit in one part will be cut anyway; only shorter ones are kept whole.
    fences = [span for span in _fence_spans(text) if span[1] - span[0] <= limit]
    parts: list[str] = []
    while n - start > limit:
        cut = _find_cut(text, start, limit, fences)
        parts.append(text[start:cut].rstrip())
        start = _skip_space(text, cut)
    tail = text[start:].rstrip()
    if tail:
        parts.append(tail)
    return parts


def truncate_graphemes(text: str, limit: int, ellipsis: str = "…") -> str:
    """Shorten ``text`` to at most ``limit`` code points on a grapheme boundary, ending with ``ellipsis``."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    room = limit - len(ellipsis)
    if room <= 0:
        return _grapheme_prefix(text, 0, limit)
    head = _grapheme_prefix(text, 0, room).rstrip()
    return head + ellipsis if head else ellipsis


# ------------------------------------------------------------------------------------------- internals


def _skip_space(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos].isspace():
        pos += 1
    return pos


def _fence_spans(text: str) -> list[tuple[int, int]]:
    """Spans of ``` code: each run of three or more backticks opens, the next one closes."""
    marks = [m.span() for m in _FENCE.finditer(text)]
    spans: list[tuple[int, int]] = []
    for i in range(0, len(marks), 2):
        opening = marks[i][0]
        closing = marks[i + 1][1] if i + 1 < len(marks) else len(text)
        spans.append((opening, closing))
    return spans


def _inside(pos: int, spans: list[tuple[int, int]]) -> bool:
    return any(opening < pos < closing for opening, closing in spans)


def _paragraph_cuts(text: str, start: int, end: int) -> Iterator[int]:
    for m in _PARAGRAPH.finditer(text, start, end):
        yield m.start()


def _line_cuts(text: str, start: int, end: int) -> Iterator[int]:
    for m in _LINE.finditer(text, start, end):
        yield m.start()


def _sentence_cuts(text: str, start: int, end: int) -> Iterator[int]:
    for m in _SENTENCE.finditer(text, start, end):
        yield m.end()


def _word_cuts(text: str, start: int, end: int) -> Iterator[int]:
    for m in _BREAK_SPACE.finditer(text, start, end):
        yield m.start()


_LEVELS: Final[tuple[_Finder, ...]] = (_paragraph_cuts, _line_cuts, _sentence_cuts, _word_cuts)


def _safe(text: str, pos: int) -> bool:
    """Whether a cut before ``text[pos]`` leaves every grapheme cluster whole."""
    return not (
        _CLINGS_BACK.match(text, pos) or _CLINGS_FORWARD.match(text, pos - 1) or _indic_joined(text, pos)
    )


def _indic_joined(text: str, pos: int) -> bool:
    return bool(_INDIC_CONSONANT.match(text, pos) and _INDIC_JOINER.match(text, pos - 1))


def _find_cut(text: str, start: int, limit: int, fences: list[tuple[int, int]]) -> int:
    """The end (exclusive) of the next part, which starts at ``text[start]`` (not whitespace)."""
    end = start + limit
    # One character past the window, so a break exactly at the limit (or the space after a sentence
    # end) is still seen.
    search_end = min(len(text), end + 1)
    floor = start + limit // _MIN_FILL
    found: dict[int, list[int]] = {}

    def cuts(level: int) -> list[int]:
        # Found lazily: a window of prose usually settles on a paragraph or sentence, never words.
        if level not in found:
            finder = _LEVELS[level]
            found[level] = [c for c in finder(text, start, search_end) if start < c <= end]
        return found[level]

    # Outside code fences first (full enough, then any), then anywhere (full enough, then any).
    for allow_fence in (False, True):
        for minimum in (floor, start + 1):
            for level in range(len(_LEVELS)):
                for c in reversed(cuts(level)):
                    if c < minimum:
                        break
                    if (allow_fence or not _inside(c, fences)) and _safe(text, c):
                        return c
    return _hard_cut(text, start, end)


def _hard_cut(text: str, start: int, end: int) -> int:
    """The last grapheme-cluster boundary in (start, end] (``end`` itself only if no cluster fits)."""
    for i in range(end, max(start, end - _PLAIN_SCAN), -1):
        if (
            _BREAKS_BEFORE.match(text, i)
            and not _GLUES_NEXT.match(text, i - 1)
            and not _indic_joined(text, i)
        ):
            return i
    # Flags are pairs of regional indicators (GB12/GB13). Counted here: the regex module's \X looks back
    # over the whole run for every match, which is quadratic on a long row of flags.
    if _is_regional(text[end - 1]):
        run = end - 1
        while run > start and _is_regional(text[run - 1]):
            run -= 1
        cut = run + (end - run) // 2 * 2
        if cut > start and not _CLINGS_BACK.match(text, cut):
            return cut
    hard = start + len(_grapheme_prefix(text, start, end - start))
    # A single grapheme longer than the limit (pathological stacks of combining marks) must be cut.
    return hard if hard > start else end


def _is_regional(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def _grapheme_prefix(text: str, start: int, limit: int) -> str:
    """The longest run of whole grapheme clusters from ``start`` that fits in ``limit`` code points."""
    end = start + limit
    stop = start
    for m in _GRAPHEME.finditer(text, start):
        if m.end() > end:
            break
        stop = m.end()
    return text[start:stop]
