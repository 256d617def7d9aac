"""What a turn's replies look like on the user's phone, and the suite's assertions evaluated on them.

The replies are the Graph API request bodies warelay sent (as the simulator recorded them): a
:class:`Reply` reads the text a user would see in each (a text body, a caption, an interactive
message's header, body, footer, button titles and list rows) and the options they can tap. Pure
functions, no I/O: the runner fetches replies and the conversation's state, this module judges.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from warelay.evaluation.suite import (
    ButtonCheck,
    Check,
    ContainsCheck,
    HandoffCheck,
    NotContainsCheck,
    RegexCheck,
    StateCheck,
)

__all__ = ["Option", "Outcome", "Reply", "describe_check", "evaluate", "quote", "received"]

_SHORT: Final = 60  # characters of a text shown inside an assertion's description


def quote(text: str, limit: int = _SHORT) -> str:
    """A text in quotes, shortened to ``limit`` characters."""
    one_line = " ".join(text.split())
    return repr(one_line if len(one_line) <= limit else one_line[: limit - 1] + "…")


@dataclass(frozen=True, slots=True)
class Option:
    """Something the user can tap: a reply button or a list row of a message warelay sent."""

    kind: Literal["button", "row"]
    id: str
    title: str
    description: str | None
    message_id: str


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _part(content: Mapping[str, Any], key: str) -> str | None:
    value = content.get(key)
    return _text(value.get("text")) if isinstance(value, Mapping) else None


@dataclass(frozen=True, slots=True)
class Reply:
    """One message warelay sent in a turn, as the user sees it."""

    message_id: str
    type: str
    text: str
    options: tuple[Option, ...]
    summary: str
    body: Mapping[str, Any]

    @classmethod
    def from_body(cls, message_id: str, body: Mapping[str, Any]) -> Reply:
        """Read a Graph API send request body."""
        mtype = body.get("type", "text")
        mtype = mtype if isinstance(mtype, str) else "text"
        content = body.get(mtype)
        content = content if isinstance(content, Mapping) else {}
        if mtype == "interactive":
            return cls._interactive(message_id, body, content)
        parts: list[str]
        if mtype == "text":
            parts = [content.get("body") or ""]
            summary = parts[0]
        elif mtype in ("image", "video", "document", "audio", "sticker"):
            parts = [x for x in (_text(content.get("caption")), _text(content.get("filename"))) if x]
            name = _text(content.get("filename")) or _text(content.get("link")) or _text(content.get("id"))
            summary = f"[{mtype}{' ' + name if name else ''}]" + (
                f" {content['caption']}" if _text(content.get("caption")) else ""
            )
        elif mtype == "location":
            parts = [x for x in (_text(content.get("name")), _text(content.get("address"))) if x]
            summary = "[location] " + ", ".join(parts) if parts else "[location]"
        elif mtype == "reaction":
            parts = []
            summary = f"[reaction {content.get('emoji') or 'removed'}]"
        elif mtype == "template":
            parts = []
            summary = f"[template {content.get('name') or ''}]".replace(" ]", "]")
        else:
            parts = []
            summary = f"[{mtype}]"
        return cls(message_id, mtype, "\n".join(parts), (), summary, body)

    @classmethod
    def _interactive(cls, message_id: str, body: Mapping[str, Any], content: Mapping[str, Any]) -> Reply:
        kind = content.get("type")
        action = content.get("action")
        action = action if isinstance(action, Mapping) else {}
        header, text, footer = _part(content, "header"), _part(content, "body"), _part(content, "footer")
        parts = [x for x in (header, text, footer) if x]
        options: list[Option] = []
        extra = ""
        if kind == "button":
            for button in action.get("buttons") or []:
                reply = button.get("reply") if isinstance(button, Mapping) else None
                if isinstance(reply, Mapping) and _text(reply.get("title")):
                    options.append(
                        Option("button", str(reply.get("id", "")), reply["title"], None, message_id)
                    )
            extra = " ".join(f"[{o.title}]" for o in options)
        elif kind == "list":
            label = _text(action.get("button"))
            if label:
                parts.append(label)
            for section in action.get("sections") or []:
                if not isinstance(section, Mapping):
                    continue
                if _text(section.get("title")):
                    parts.append(section["title"])
                for row in section.get("rows") or []:
                    if isinstance(row, Mapping) and _text(row.get("title")):
                        description = _text(row.get("description"))
                        options.append(
                            Option("row", str(row.get("id", "")), row["title"], description, message_id)
                        )
                        if description:
                            parts.append(description)
            extra = f"≡ {label or 'list'}: " + " | ".join(o.title for o in options)
        elif kind == "cta_url":
            params = action.get("parameters")
            params = params if isinstance(params, Mapping) else {}
            shown = [x for x in (_text(params.get("display_text")), _text(params.get("url"))) if x]
            parts.extend(shown)
            extra = f"[{' → '.join(shown)}]" if shown else ""
        elif kind == "location_request_message":
            extra = "[send location]"
        parts.extend(o.title for o in options)
        summary = " ".join(x for x in (header, text, footer, extra) if x)
        return cls(message_id, "interactive", "\n".join(parts), tuple(options), summary, body)


def received(replies: Sequence[Reply]) -> str:
    """The turn's replies in a few lines, for the report."""
    return "\n".join(r.summary for r in replies) if replies else "(no reply)"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One assertion's verdict; ``detail`` says why it failed (empty when it passed)."""

    assertion: str
    passed: bool
    detail: str = ""


def describe_check(check: Check) -> str:
    """The assertion in a few words: ``contains '8:00'``, ``state intent='order'``…"""
    if isinstance(check, ContainsCheck | NotContainsCheck):
        name = "contains" if isinstance(check, ContainsCheck) else "not_contains"
        texts = check.contains if isinstance(check, ContainsCheck) else check.not_contains
        return f"{name} {', '.join(quote(t) for t in texts)}{_case(check.ignore_case)}"
    if isinstance(check, RegexCheck):
        return f"regex {quote(check.regex)}{_case(check.ignore_case)}"
    if isinstance(check, ButtonCheck):
        return f"button {quote(check.button)}{_case(check.ignore_case)}"
    if isinstance(check, StateCheck):
        fields = check.state.model_dump(include=check.state.model_fields_set)
        return "state " + " ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"handoff {str(check.handoff).lower()}"


def _case(ignore_case: bool | None) -> str:
    return " (any case)" if ignore_case else ""


def evaluate(
    check: Check,
    replies: Sequence[Reply],
    conversation: Mapping[str, Any] | None,
    *,
    ignore_case: bool = False,
) -> Outcome:
    """Judge one assertion on a turn's replies and the conversation as warelay's API shows it."""
    name = describe_check(check)
    fold = ignore_case
    if isinstance(check, ContainsCheck | NotContainsCheck | RegexCheck | ButtonCheck):
        if check.ignore_case is not None:
            fold = check.ignore_case
        name = describe_check(check.model_copy(update={"ignore_case": fold}))
    text = "\n".join(r.text for r in replies)
    if isinstance(check, ContainsCheck):
        missing = [t for t in check.contains if not _found(t, text, fold)]
        return Outcome(
            name, not missing, f"missing {', '.join(quote(t) for t in missing)}" if missing else ""
        )
    if isinstance(check, NotContainsCheck):
        present = [t for t in check.not_contains if _found(t, text, fold)]
        return Outcome(name, not present, f"found {', '.join(quote(t) for t in present)}" if present else "")
    if isinstance(check, RegexCheck):
        matched = re.search(check.regex, text, re.IGNORECASE if fold else 0)
        return Outcome(name, matched is not None, "" if matched else "no match")
    if isinstance(check, ButtonCheck):
        titles = [o.title for r in replies for o in r.options]
        want = check.button.casefold() if fold else check.button
        ok = any((t.casefold() if fold else t) == want for t in titles)
        shown = ", ".join(quote(t) for t in titles) if titles else "none"
        return Outcome(name, ok, "" if ok else f"buttons and list rows: {shown}")
    if conversation is None:
        return Outcome(name, False, "the conversation could not be read")
    if isinstance(check, StateCheck):
        return Outcome(name, *_state_matches(check, conversation))
    if isinstance(check, HandoffCheck):
        handoff = conversation.get("handoff")
        if (handoff is not None) == check.handoff:
            return Outcome(name, True)
        if handoff is None:
            return Outcome(name, False, "no handoff requested")
        return Outcome(name, False, f"handed off: {quote(str(handoff.get('reason') or ''))}")
    raise TypeError(f"unknown assertion {check!r}")


def _found(needle: str, text: str, fold: bool) -> bool:
    return needle.casefold() in text.casefold() if fold else needle in text


def _state_matches(check: StateCheck, conversation: Mapping[str, Any]) -> tuple[bool, str]:
    expected = check.state
    problems: list[str] = []
    for field in ("intent", "step"):
        if field in expected.model_fields_set:
            want, have = getattr(expected, field), conversation.get(field)
            if want != have:
                problems.append(f"{field} is {have!r}, expected {want!r}")
    if "context" in expected.model_fields_set:
        have_context = conversation.get("context") or {}
        for key, want in (expected.context or {}).items():
            if key not in have_context:
                problems.append(f"context.{key} is missing, expected {want!r}")
            elif have_context[key] != want:
                problems.append(f"context.{key} is {have_context[key]!r}, expected {want!r}")
    return not problems, "; ".join(problems)
