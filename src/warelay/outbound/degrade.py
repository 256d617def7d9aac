"""Rich replies as readable text, for channels that cannot send them.

Where it sits: in the sender, just before the channel call. A channel lists the content kinds it
cannot send (``Channel.unsupported``; the Cloud API sends them all, a WhatsApp Web bridge may not
render buttons or lists); the sender then sends :func:`as_text` of the reply instead of failing it:
buttons and list rows become numbered options the user can answer with a number or the words, a
link button a line with its address, a location a maps link, media its caption and link, a
product list its products by section, and a catalog or Flow message its text alone (a text channel
has no catalog or form to open, so no button is promised). The conversation's history keeps the
reply as the agent made it.
"""

from __future__ import annotations

from warelay.domain import (
    OutboundContent,
    OutButtons,
    OutCatalog,
    OutCtaUrl,
    OutFlow,
    OutList,
    OutLocation,
    OutLocationRequest,
    OutMedia,
    OutProductList,
    OutText,
)

__all__ = ["as_text"]

MAPS_URL = "https://maps.google.com/?q={lat},{lng}"


def _framed(header: str | None, body: str, lines: list[str], footer: str | None) -> str:
    parts = [f"*{header}*"] if header else []
    parts.append(body)
    if lines:
        parts.append("\n".join(lines))
    if footer:
        parts.append(f"_{footer}_")
    return "\n\n".join(parts)


def as_text(content: OutboundContent) -> OutText | None:
    """``content`` as a text message; ``None`` when it has no text form (a reaction, a raw body)."""
    if isinstance(content, OutText):
        return content
    if isinstance(content, OutButtons):
        options = [f"{n}. {b.title}" for n, b in enumerate(content.buttons, 1)]
        options.append("Reply with the number or the words.")
        return OutText(body=_framed(content.header, content.body, options, content.footer))
    if isinstance(content, OutList):
        lines: list[str] = []
        n = 0
        for section in content.sections:
            if section.title:
                lines.append(f"*{section.title}*")
            for row in section.rows:
                n += 1
                lines.append(f"{n}. {row.title}" + (f" — {row.description}" if row.description else ""))
        lines.append("Reply with the number or the words.")
        return OutText(body=_framed(content.header, content.body, lines, content.footer))
    if isinstance(content, OutCtaUrl):
        link = [f"{content.display_text}: {content.url}"]
        return OutText(body=_framed(content.header, content.body, link, content.footer), preview_url=True)
    if isinstance(content, OutLocation):
        place = [x for x in (content.name, content.address) if x]
        place.append(MAPS_URL.format(lat=content.latitude, lng=content.longitude))
        return OutText(body="\n".join(place), preview_url=True)
    if isinstance(content, OutLocationRequest):
        return OutText(body=f"{content.body}\n\nPlease share your location: 📎 → Location.")
    if isinstance(content, OutProductList):
        products: list[str] = []
        for group in content.sections:
            if group.title:
                products.append(f"*{group.title}*")
            products.extend(f"• {product}" for product in group.product_retailer_ids)
        products.append("Reply with the products you would like.")
        return OutText(body=_framed(content.header, content.body, products, content.footer))
    if isinstance(content, OutCatalog):
        return OutText(body=_framed(None, content.body, [], content.footer))
    if isinstance(content, OutFlow):
        return OutText(body=_framed(content.header, content.body, [], content.footer))
    if isinstance(content, OutMedia):
        if content.link is None:
            return None  # an uploaded media id has no address to show
        return OutText(body="\n".join(x for x in (content.caption, content.link) if x), preview_url=True)
    return None
