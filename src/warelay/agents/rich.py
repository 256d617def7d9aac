"""Rich replies for the ``llm`` agent: tools the model calls to answer with more than text.

Where it sits: inside the agent stage (worker → ``LLMAgent.respond`` → model ⇄ *these tools*).
Each tool turns the model's arguments into a domain message (:class:`OutButtons`, :class:`OutList`,
:class:`OutCtaUrl`, :class:`OutMedia`, :class:`OutLocation`, :class:`OutLocationRequest`,
:class:`OutReaction`) and checks it
against WhatsApp's limits before anything is sent: a reply that breaks one (a 21-character button
title, a fourth button, eleven list rows) goes back to the model as a retry with the reason, so
it can shorten or regroup instead of the send failing later. Accepted replies collect in the run's
:class:`~warelay.agents.actions.TurnActions` and go out after the model's text, in the order the
model made them (a reaction first: it belongs to the user's message, not to the answer).

An agent enables the tools it wants with ``tools`` in its configuration (names in :data:`TOOLS`);
none are on by default, so a model that is not told about them costs nothing extra per turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

from pydantic import BaseModel, Field
from pydantic_ai import ModelRetry, RunContext, Tool

from warelay.agents.actions import TurnActions
from warelay.agents.state import STATE_TOOLS
from warelay.domain import (
    ListRow,
    ListSection,
    OutButtons,
    OutCtaUrl,
    OutList,
    OutLocation,
    OutLocationRequest,
    OutMedia,
    OutReaction,
    ReplyButton,
)

__all__ = ["TOOLS", "rich_tools"]


class ListItem(BaseModel):
    """One choice in a list message."""

    title: str = Field(description="At most 24 characters.")
    description: str | None = Field(default=None, description="Optional, at most 72 characters.")


class ListGroup(BaseModel):
    """A titled group of choices in a list message."""

    title: str | None = Field(
        default=None, description="At most 24 characters; required with several groups."
    )
    items: list[ListItem]


def _option_id(prefix: str, n: int) -> str:
    return f"{prefix}_{n}"


async def send_buttons(
    ctx: RunContext[TurnActions],
    body: str,
    buttons: list[str],
    header: str | None = None,
    footer: str | None = None,
) -> str:
    """Send a message with up to three reply buttons the customer can tap.

    Args:
        body: The message text, at most 1024 characters.
        buttons: One to three distinct button titles, each at most 20 characters.
        header: Optional bold first line, at most 60 characters.
        footer: Optional small print, at most 60 characters.
    """
    choices = tuple(ReplyButton(id=_option_id("button", n), title=t) for n, t in enumerate(buttons, 1))
    return ctx.deps.add(OutButtons(body=body, buttons=choices, header=header, footer=footer))


async def send_list(
    ctx: RunContext[TurnActions],
    body: str,
    button: str,
    groups: list[ListGroup],
    header: str | None = None,
    footer: str | None = None,
) -> str:
    """Send a menu: a button that opens a list of up to ten choices, in one or more titled groups.

    Args:
        body: The message text, at most 1024 characters.
        button: The label of the button that opens the list, at most 20 characters.
        groups: One to ten groups holding ten choices in all.
        header: Optional bold first line, at most 60 characters.
        footer: Optional small print, at most 60 characters.
    """
    counter = 0
    sections: list[ListSection] = []
    for group in groups:
        rows: list[ListRow] = []
        for item in group.items:
            counter += 1
            rows.append(
                ListRow(id=_option_id("item", counter), title=item.title, description=item.description)
            )
        sections.append(ListSection(title=group.title, rows=tuple(rows)))
    content = OutList(body=body, button=button, sections=tuple(sections), header=header, footer=footer)
    return ctx.deps.add(content)


async def send_link_button(
    ctx: RunContext[TurnActions], body: str, button_text: str, url: str, footer: str | None = None
) -> str:
    """Send a message with one button that opens a web page.

    Args:
        body: The message text, at most 1024 characters.
        button_text: The button's label, at most 20 characters.
        url: The page to open, an https:// URL.
        footer: Optional small print, at most 60 characters.
    """
    return ctx.deps.add(OutCtaUrl(body=body, display_text=button_text, url=url, footer=footer))


async def send_media(
    ctx: RunContext[TurnActions],
    kind: Literal["image", "video", "document"],
    url: str,
    caption: str | None = None,
    filename: str | None = None,
) -> str:
    """Send an image, a video or a document from a public https:// URL, with an optional caption.

    Args:
        kind: image, video or document.
        url: Where WhatsApp downloads the file from.
        caption: Optional text shown with it, at most 1024 characters.
        filename: For a document, the name the customer sees.
    """
    content = OutMedia(
        media_type=kind, link=url, caption=caption, filename=filename if kind == "document" else None
    )
    return ctx.deps.add(content)


async def send_location(
    ctx: RunContext[TurnActions],
    latitude: float,
    longitude: float,
    name: str | None = None,
    address: str | None = None,
) -> str:
    """Send a location pin, e.g. of the shop.

    Args:
        latitude: Between -90 and 90.
        longitude: Between -180 and 180.
        name: Optional name of the place.
        address: Optional street address.
    """
    return ctx.deps.add(OutLocation(latitude=latitude, longitude=longitude, name=name, address=address))


async def ask_for_location(ctx: RunContext[TurnActions], body: str) -> str:
    """Ask the customer to share their location, with a "Send location" button (e.g. for delivery).

    Args:
        body: Why you ask, at most 1024 characters.
    """
    return ctx.deps.add(OutLocationRequest(body=body))


async def react(ctx: RunContext[TurnActions], emoji: str) -> str:
    """React to the customer's message with one emoji (e.g. 👍 or ❤️).

    Args:
        emoji: A single emoji.
    """
    if ctx.deps.reply_to is None:
        raise ModelRetry("There is no customer message to react to.")
    if any(isinstance(r, OutReaction) for r in ctx.deps.replies):
        raise ModelRetry("You already reacted to this message.")
    if not emoji.strip():
        raise ModelRetry("Give one emoji.")
    return ctx.deps.add(OutReaction(message_id=ctx.deps.reply_to, emoji=emoji.strip()))


MAX_RETRIES: Final = 3  # a model may need a few tries to fit a reply to WhatsApp's limits

TOOLS: Final[dict[str, Callable[..., Any]]] = {
    "buttons": send_buttons,
    "list": send_list,
    "link_button": send_link_button,
    "media": send_media,
    "location": send_location,
    "location_request": ask_for_location,
    "reaction": react,
}


def rich_tools(names: Sequence[str]) -> list[Tool[TurnActions]]:
    """The tools an agent configuration enables (``tools: [buttons, list, state, …]``); unknown names
    are refused. Besides the replies here: ``state`` and ``handoff`` (:mod:`warelay.agents.state`)."""
    unknown = sorted(set(names) - set(TOOLS) - set(STATE_TOOLS))
    if unknown:
        raise ValueError(f"unknown agent tools {unknown}; known: {sorted({*TOOLS, *STATE_TOOLS})}")
    functions: list[Callable[..., Any]] = []
    for name in dict.fromkeys(names):
        functions.extend([TOOLS[name]] if name in TOOLS else STATE_TOOLS[name])
    return [Tool(f, takes_ctx=True, docstring_format="google", max_retries=MAX_RETRIES) for f in functions]
