"""Graph API request bodies for ``POST /{version}/{phone-number-id}/messages``, built from domain content.

Where it sits in the path::

    outbox row (OutboundContent) ──▶ message_body() ──▶ cloud client POST ──▶ Graph API

Pure functions, no I/O. WhatsApp's hard limits (protocol A9) are checked here, before a request is spent:
a violation raises :class:`ContentLimitError` naming the field and the limit, so the caller can shorten,
degrade (for example buttons → plain text) or fail the message without asking Meta.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

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
    OutRaw,
    OutReaction,
    OutText,
)

__all__ = [
    "BUTTON_ID_MAX",
    "BUTTON_TITLE_MAX",
    "CAPTION_MAX",
    "CTA_DISPLAY_TEXT_MAX",
    "FLOW_CTA_MAX",
    "FOOTER_MAX",
    "HEADER_TEXT_MAX",
    "INTERACTIVE_BODY_MAX",
    "LIST_BUTTON_MAX",
    "LIST_ROWS_MAX",
    "LIST_SECTIONS_MAX",
    "PRODUCTS_MAX",
    "PRODUCT_SECTIONS_MAX",
    "REPLY_BUTTONS_MAX",
    "ROW_DESCRIPTION_MAX",
    "ROW_ID_MAX",
    "ROW_TITLE_MAX",
    "SECTION_TITLE_MAX",
    "TEXT_BODY_MAX",
    "TRACKER_MAX",
    "ContentLimitError",
    "mark_read_body",
    "message_body",
]

# WhatsApp limits in code points (protocol A9; SPEC schema names in brackets).
TEXT_BODY_MAX: Final = 4096  # [TextMessage_1.body]
CAPTION_MAX: Final = 1024  # [MediaObject_1.caption]
INTERACTIVE_BODY_MAX: Final = 1024  # [BodyObject.text]
HEADER_TEXT_MAX: Final = 60  # [HeaderObject.text]
FOOTER_MAX: Final = 60  # [FooterObject.text]
REPLY_BUTTONS_MAX: Final = 3  # [ActionObject.buttons]
BUTTON_TITLE_MAX: Final = 20
BUTTON_ID_MAX: Final = 256
LIST_BUTTON_MAX: Final = 20  # [ActionObject.button]
LIST_SECTIONS_MAX: Final = 10  # [ActionObject.sections]
LIST_ROWS_MAX: Final = 10  # across all sections (M-LIST)
ROW_ID_MAX: Final = 200  # [SectionObject.rows]
ROW_TITLE_MAX: Final = 24
ROW_DESCRIPTION_MAX: Final = 72
SECTION_TITLE_MAX: Final = 24  # [SectionObject.title]
CTA_DISPLAY_TEXT_MAX: Final = 20  # PYWA URLButton
FLOW_CTA_MAX: Final = 20  # SPEC advises 30; PYWA says 20, no emoji: stay within 20 (protocol A9)
PRODUCT_SECTIONS_MAX: Final = 10  # [ActionObject.sections]
PRODUCTS_MAX: Final = 30  # across all sections (protocol A9: the stricter reading)
TRACKER_MAX: Final = 512  # biz_opaque_callback_data

# Meta accepts a caption on these media types only, and a filename on documents only (protocol A7).
_CAPTIONED: Final = frozenset({"image", "video", "document"})


class ContentLimitError(ValueError):
    """Outbound content breaks a WhatsApp limit; ``field`` is the Graph field, ``limit`` the maximum."""

    def __init__(
        self,
        field: str,
        *,
        limit: int | None = None,
        actual: int | None = None,
        unit: str = "characters",
        reason: str | None = None,
    ) -> None:
        if reason is None:
            reason = f"is {actual} {unit}; WhatsApp allows at most {limit}"
        super().__init__(f"{field} {reason}")
        self.field = field
        self.limit = limit
        self.actual = actual
        self.unit = unit
        self.reason = reason


def message_body(
    to: str,
    content: OutboundContent,
    *,
    reply_to: str | None = None,
    recipient_is_user_id: bool = False,
    tracker: str | None = None,
) -> dict[str, Any]:
    """The JSON body that sends ``content`` to ``to`` (a phone number, or a BSUID when flagged)."""
    if not to:
        raise ContentLimitError("to", reason="is empty; a recipient is required")
    builder = _BUILDERS.get(type(content))
    if builder is None:
        raise TypeError(f"no Cloud API body for {type(content).__name__}")
    message_type, payload = builder(content)
    body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
    # Users known only by their business-scoped user id are addressed with `recipient` (protocol A13).
    body["recipient" if recipient_is_user_id else "to"] = to
    body["type"] = message_type
    body[message_type] = payload
    # A reaction already names its message; a quoted context on it is meaningless to Graph.
    if reply_to and message_type != "reaction":
        body["context"] = {"message_id": reply_to}
    if tracker is not None:
        _max_len("biz_opaque_callback_data", tracker, TRACKER_MAX)
        if tracker:
            body["biz_opaque_callback_data"] = tracker
    return body


def mark_read_body(message_id: str, *, typing: bool) -> dict[str, Any]:
    """The body that marks an inbound message read and, with ``typing``, shows the typing indicator."""
    if not message_id:
        raise ContentLimitError("message_id", reason="is empty; the inbound message id is required")
    body: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
    if typing:
        # The indicator disappears when the reply arrives or after 25 s (M-TYP).
        body["typing_indicator"] = {"type": "text"}
    return body


# ------------------------------------------------------------------------------------------- builders


def _text(content: OutText) -> tuple[str, dict[str, Any]]:
    _required("text.body", content.body)
    _max_len("text.body", content.body, TEXT_BODY_MAX)
    return "text", {"body": content.body, "preview_url": content.preview_url}


def _media(content: OutMedia) -> tuple[str, dict[str, Any]]:
    kind = content.media_type
    if bool(content.media_id) == bool(content.link):
        raise ContentLimitError(f"{kind}.id/{kind}.link", reason="needs exactly one of a media id or a link")
    obj: dict[str, Any]
    if content.media_id:
        obj = {"id": content.media_id}
    else:
        link = content.link or ""
        # Meta fetches links itself and accepts HTTP(S) only [SPEC MediaObject_1.link].
        if not link.lower().startswith(("https://", "http://")):
            raise ContentLimitError(f"{kind}.link", reason="must be an http(s) URL")
        obj = {"link": link}
    if content.caption:
        if kind not in _CAPTIONED:
            raise ContentLimitError(f"{kind}.caption", reason=f"is not supported on {kind} messages")
        _max_len(f"{kind}.caption", content.caption, CAPTION_MAX)
        obj["caption"] = content.caption
    if content.filename:
        if kind != "document":
            raise ContentLimitError(f"{kind}.filename", reason="is supported on document messages only")
        obj["filename"] = content.filename
    return kind, obj


def _location(content: OutLocation) -> tuple[str, dict[str, Any]]:
    if not -90.0 <= content.latitude <= 90.0:
        raise ContentLimitError("location.latitude", reason="must be between -90 and 90")
    if not -180.0 <= content.longitude <= 180.0:
        raise ContentLimitError("location.longitude", reason="must be between -180 and 180")
    obj: dict[str, Any] = {"latitude": content.latitude, "longitude": content.longitude}
    if content.name:
        obj["name"] = content.name
    if content.address:
        obj["address"] = content.address
    return "location", obj


def _reaction(content: OutReaction) -> tuple[str, dict[str, Any]]:
    _required("reaction.message_id", content.message_id)
    # An empty emoji is how the business takes its reaction back (protocol A7).
    return "reaction", {"message_id": content.message_id, "emoji": content.emoji}


def _buttons(content: OutButtons) -> tuple[str, dict[str, Any]]:
    count = len(content.buttons)
    if not 1 <= count <= REPLY_BUTTONS_MAX:
        raise ContentLimitError(
            "interactive.action.buttons",
            limit=REPLY_BUTTONS_MAX,
            actual=count,
            unit="buttons",
            reason=f"has {count} buttons; WhatsApp needs 1 to {REPLY_BUTTONS_MAX}",
        )
    buttons: list[dict[str, Any]] = []
    for i, button in enumerate(content.buttons):
        field = f"interactive.action.buttons[{i}].reply"
        _required(f"{field}.id", button.id)
        _max_len(f"{field}.id", button.id, BUTTON_ID_MAX)
        _required(f"{field}.title", button.title)
        _max_len(f"{field}.title", button.title, BUTTON_TITLE_MAX)
        buttons.append({"type": "reply", "reply": {"id": button.id, "title": button.title}})
    _unique("interactive.action.buttons[].reply.title", (b.title for b in content.buttons))
    _unique("interactive.action.buttons[].reply.id", (b.id for b in content.buttons))
    return "interactive", _interactive("button", content, {"buttons": buttons})


def _list(content: OutList) -> tuple[str, dict[str, Any]]:
    _required("interactive.action.button", content.button)
    _max_len("interactive.action.button", content.button, LIST_BUTTON_MAX)
    sections = content.sections
    if not 1 <= len(sections) <= LIST_SECTIONS_MAX:
        raise ContentLimitError(
            "interactive.action.sections",
            limit=LIST_SECTIONS_MAX,
            actual=len(sections),
            unit="sections",
            reason=f"has {len(sections)} sections; WhatsApp needs 1 to {LIST_SECTIONS_MAX}",
        )
    total_rows = sum(len(section.rows) for section in sections)
    if not 1 <= total_rows <= LIST_ROWS_MAX:
        raise ContentLimitError(
            "interactive.action.sections[].rows",
            limit=LIST_ROWS_MAX,
            actual=total_rows,
            unit="rows",
            reason=f"has {total_rows} rows in all; WhatsApp needs 1 to {LIST_ROWS_MAX} across all sections",
        )
    built: list[dict[str, Any]] = []
    for s, section in enumerate(sections):
        field = f"interactive.action.sections[{s}]"
        out: dict[str, Any] = {}
        if section.title:
            _max_len(f"{field}.title", section.title, SECTION_TITLE_MAX)
            out["title"] = section.title
        elif len(sections) > 1:
            raise ContentLimitError(f"{field}.title", reason="is required when a list has several sections")
        if not section.rows:
            raise ContentLimitError(f"{field}.rows", reason="is empty; every section needs a row")
        rows: list[dict[str, Any]] = []
        for r, row in enumerate(section.rows):
            row_field = f"{field}.rows[{r}]"
            _required(f"{row_field}.id", row.id)
            _max_len(f"{row_field}.id", row.id, ROW_ID_MAX)
            _required(f"{row_field}.title", row.title)
            _max_len(f"{row_field}.title", row.title, ROW_TITLE_MAX)
            item: dict[str, Any] = {"id": row.id, "title": row.title}
            if row.description:
                _max_len(f"{row_field}.description", row.description, ROW_DESCRIPTION_MAX)
                item["description"] = row.description
            rows.append(item)
        out["rows"] = rows
        built.append(out)
    _unique("interactive.action.sections[].rows[].id", (row.id for sec in sections for row in sec.rows))
    return "interactive", _interactive("list", content, {"button": content.button, "sections": built})


def _cta_url(content: OutCtaUrl) -> tuple[str, dict[str, Any]]:
    field = "interactive.action.parameters"
    _required(f"{field}.display_text", content.display_text)
    _max_len(f"{field}.display_text", content.display_text, CTA_DISPLAY_TEXT_MAX)
    if not content.url.lower().startswith(("https://", "http://")):
        raise ContentLimitError(f"{field}.url", reason="must be an http(s) URL")
    action = {"name": "cta_url", "parameters": {"display_text": content.display_text, "url": content.url}}
    return "interactive", _interactive("cta_url", content, action)


def _location_request(content: OutLocationRequest) -> tuple[str, dict[str, Any]]:
    # Meta's docs, "location request messages": body text only (no header), action {"name": "send_location"}.
    _required("interactive.body.text", content.body)
    _max_len("interactive.body.text", content.body, INTERACTIVE_BODY_MAX)
    action = {"name": "send_location"}
    return "interactive", {
        "type": "location_request_message",
        "body": {"text": content.body},
        "action": action,
    }


def _catalog(content: OutCatalog) -> tuple[str, dict[str, Any]]:
    # Meta's "catalog messages": no header; parameters only when a thumbnail product is named.
    action: dict[str, Any] = {"name": "catalog_message"}
    if content.thumbnail_product_retailer_id is not None:
        field = "interactive.action.parameters.thumbnail_product_retailer_id"
        _required(field, content.thumbnail_product_retailer_id)
        action["parameters"] = {"thumbnail_product_retailer_id": content.thumbnail_product_retailer_id}
    return "interactive", _framed("catalog_message", None, content.body, content.footer, action)


def _product_list(content: OutProductList) -> tuple[str, dict[str, Any]]:
    # A product list needs a text header [SPEC HeaderObject: "Required for 'product_list' type"].
    _required("interactive.header.text", content.header)
    _required("interactive.action.catalog_id", content.catalog_id)
    sections = content.sections
    if not 1 <= len(sections) <= PRODUCT_SECTIONS_MAX:
        raise ContentLimitError(
            "interactive.action.sections",
            limit=PRODUCT_SECTIONS_MAX,
            actual=len(sections),
            unit="sections",
            reason=f"has {len(sections)} sections; WhatsApp needs 1 to {PRODUCT_SECTIONS_MAX}",
        )
    total = sum(len(section.product_retailer_ids) for section in sections)
    if total > PRODUCTS_MAX:
        raise ContentLimitError(
            "interactive.action.sections[].product_items",
            limit=PRODUCTS_MAX,
            actual=total,
            unit="products",
            reason=f"has {total} products in all; WhatsApp allows at most {PRODUCTS_MAX}",
        )
    built: list[dict[str, Any]] = []
    for s, section in enumerate(sections):
        field = f"interactive.action.sections[{s}]"
        out: dict[str, Any] = {}
        if section.title:
            _max_len(f"{field}.title", section.title, SECTION_TITLE_MAX)
            out["title"] = section.title
        elif len(sections) > 1:
            raise ContentLimitError(f"{field}.title", reason="is required when a list has several sections")
        if not section.product_retailer_ids:
            raise ContentLimitError(
                f"{field}.product_items", reason="is empty; every section needs a product"
            )
        for p, retailer_id in enumerate(section.product_retailer_ids):
            _required(f"{field}.product_items[{p}].product_retailer_id", retailer_id)
        out["product_items"] = [{"product_retailer_id": pid} for pid in section.product_retailer_ids]
        built.append(out)
    action = {"catalog_id": content.catalog_id, "sections": built}
    return "interactive", _framed("product_list", content.header, content.body, content.footer, action)


def _flow(content: OutFlow) -> tuple[str, dict[str, Any]]:
    field = "interactive.action.parameters"
    _required(f"{field}.flow_id", content.flow_id)
    _required(f"{field}.flow_cta", content.flow_cta)
    _max_len(f"{field}.flow_cta", content.flow_cta, FLOW_CTA_MAX)
    params: dict[str, Any] = {
        "flow_message_version": "3",
        "flow_id": content.flow_id,
        "flow_cta": content.flow_cta,
    }
    if content.flow_token is not None:
        _required(f"{field}.flow_token", content.flow_token)
        params["flow_token"] = content.flow_token
    if content.flow_action is not None:
        params["flow_action"] = content.flow_action
    payload: dict[str, Any] = {}
    if content.screen is not None:
        _required(f"{field}.flow_action_payload.screen", content.screen)
        payload["screen"] = content.screen
    if content.data is not None:
        if not content.data:
            raise ContentLimitError(f"{field}.flow_action_payload.data", reason="must be a non-empty object")
        if content.screen is None:
            raise ContentLimitError(
                f"{field}.flow_action_payload.data", reason="needs the screen it is for (screen)"
            )
        payload["data"] = content.data
    if payload:
        # Meta's Flows guide: flow_action_payload goes with "navigate" and is omitted otherwise.
        if content.flow_action == "data_exchange":
            raise ContentLimitError(
                f"{field}.flow_action_payload",
                reason="applies to flow_action 'navigate' only ('data_exchange' lets the endpoint choose)",
            )
        params["flow_action_payload"] = payload
    action = {"name": "flow", "parameters": params}
    return "interactive", _framed("flow", content.header, content.body, content.footer, action)


def _raw(content: OutRaw) -> tuple[str, dict[str, Any]]:
    _required("type", content.type)
    return content.type, content.payload


def _interactive(
    kind: str, content: OutButtons | OutList | OutCtaUrl, action: dict[str, Any]
) -> dict[str, Any]:
    return _framed(kind, content.header, content.body, content.footer, action)


def _framed(
    kind: str, header: str | None, body: str, footer: str | None, action: dict[str, Any]
) -> dict[str, Any]:
    """An interactive object: text header (optional), body, footer (optional) around ``action``."""
    _required("interactive.body.text", body)
    _max_len("interactive.body.text", body, INTERACTIVE_BODY_MAX)
    obj: dict[str, Any] = {"type": kind}
    if header:
        _max_len("interactive.header.text", header, HEADER_TEXT_MAX)
        obj["header"] = {"type": "text", "text": header}
    obj["body"] = {"text": body}
    if footer:
        _max_len("interactive.footer.text", footer, FOOTER_MAX)
        obj["footer"] = {"text": footer}
    obj["action"] = action
    return obj


# Route by content class, not an if-chain (DESIGN 5.2).
_BUILDERS: Final[dict[type, Callable[[Any], tuple[str, dict[str, Any]]]]] = {
    OutText: _text,
    OutMedia: _media,
    OutLocation: _location,
    OutLocationRequest: _location_request,
    OutReaction: _reaction,
    OutButtons: _buttons,
    OutList: _list,
    OutCtaUrl: _cta_url,
    OutCatalog: _catalog,
    OutProductList: _product_list,
    OutFlow: _flow,
    OutRaw: _raw,
}


# ------------------------------------------------------------------------------------------- checks


def _max_len(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ContentLimitError(field, limit=limit, actual=len(value))


def _required(field: str, value: str) -> None:
    if not value or value.isspace():
        raise ContentLimitError(field, reason="is empty; WhatsApp requires it")


def _unique(field: str, values: Iterable[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ContentLimitError(field, reason=f"repeats {value!r}; values must be unique")
        seen.add(value)
