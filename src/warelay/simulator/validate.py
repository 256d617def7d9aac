"""Hand-written check of ``POST /{version}/{phone-number-id}/messages`` bodies, as Meta answers them.

Where it sits: the simulator's Graph API route calls :func:`validate_send_request` on every send before
accepting it, so warelay's ``outbound/`` → ``channels/cloud`` requests are held to Meta's rules in every
test, demo and benchmark. It is written from protocol.md A7/A9 and Meta's docs, not generated from the
OpenAPI schema (whose examples and schemas disagree in places, see protocol.md A14), and it is plain
dict walking so that it stays cheap at ~1,000 requests/s.

Which Meta code a refusal carries (M-ERR, developers.facebook.com/documentation/business-messaging/
whatsapp/support/error-codes):

* ``100`` "Invalid parameter": "unsupported or misspelled parameters" — an unknown key, a value of the
  wrong JSON type, an unsupported message/interactive/parameter type, two keys that exclude each other.
* ``131008`` "Required parameter is missing": a required key is absent (or ``null``).
* ``131009`` "Parameter value is not valid": the key is known and of the right type but its value is out
  of range — too long, empty, too many items, not one of the allowed values, duplicated, bad URL.

Meta writes ``message`` as ``"(#<code>) <title>"`` and puts the human reason in
``error_data.details``; :class:`GraphRequestError` produces that envelope.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "META_ERROR_TITLES",
    "GraphRequestError",
    "graph_error",
    "invalid_parameter",
    "invalid_value",
    "missing_parameter",
    "validate_send_request",
]

# Titles as Meta's error-code table prints them (M-ERR); the message is "(#code) title".
META_ERROR_TITLES: Final[dict[int, str]] = {
    0: "AuthException",
    1: "An unknown error occurred",
    2: "Service temporarily unavailable",
    3: "API Method",
    4: "Application request limit reached",
    10: "Permission denied",
    100: "Invalid parameter",
    190: "Invalid OAuth access token - Cannot parse access token",
    200: "Permission error",
    368: "Temporarily blocked for policies violations",
    80007: "Rate limit issues",
    130429: "Rate limit hit",
    130472: "User's number is part of an experiment",
    131000: "Something went wrong",
    131005: "Access denied",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131016: "Service unavailable",
    131021: "Recipient cannot be sender",
    131026: "Message Undeliverable",
    131031: "Business Account locked",
    131047: "Re-engagement message",
    131048: "Spam rate limit hit",
    131049: "This message was not delivered to maintain healthy ecosystem engagement.",
    131050: "User has stopped marketing messages",
    131051: "Unsupported message type",
    131052: "Media download error",
    131053: "Media upload error",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    131057: "Account in maintenance mode",
    132000: "Number of parameters does not match the expected number of params",
    132001: "Template name does not exist in the translation",
    132015: "Template is paused",
    132016: "Template is disabled",
}


class GraphRequestError(Exception):
    """A Graph API call refused: HTTP status, Meta code, message and details, rendered as Meta's envelope."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        details: str | None,
        *,
        error_type: str = "OAuthException",
        subcode: int | None = None,
    ) -> None:
        super().__init__(f"{message}: {details}" if details else message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.error_type = error_type
        self.subcode = subcode

    def to_response(self, fbtrace_id: str | None = None) -> dict[str, Any]:
        """Meta's error body: ``{"error": {message, type, code, error_data, fbtrace_id}}``."""
        error: dict[str, Any] = {"message": self.message, "type": self.error_type, "code": self.code}
        # Auth and Graph-level errors come without error_data (M-ERR); parsers must cope with both.
        if self.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["fbtrace_id"] = fbtrace_id or secrets.token_urlsafe(17)[:23]
        return {"error": error}


def graph_error(status: int, code: int, details: str | None = None) -> GraphRequestError:
    """A Meta error for ``code`` with its documented title, e.g. ``graph_error(400, 130429)``."""
    title = META_ERROR_TITLES.get(code, "An unknown error occurred")
    return GraphRequestError(status, code, f"(#{code}) {title}", details)


def invalid_parameter(details: str) -> GraphRequestError:
    """Code 100: an unknown key, a wrong JSON type or an unsupported type."""
    return GraphRequestError(400, 100, "(#100) Invalid parameter", details)


def missing_parameter(details: str) -> GraphRequestError:
    """Code 131008: a required key is absent."""
    return GraphRequestError(400, 131008, "(#131008) Required parameter is missing", details)


def invalid_value(details: str) -> GraphRequestError:
    """Code 131009: a known key whose value is out of range."""
    return GraphRequestError(400, 131009, "(#131009) Parameter value is not valid", details)


# ------------------------------------------------------------------------------------------ primitives

_Obj = dict[str, Any]


def _obj(value: Any, path: str) -> _Obj:
    if not isinstance(value, dict):
        raise invalid_parameter(f"Param {path} must be a JSON object")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid_parameter(f"Param {path} must be an array")
    return value


def _keys(obj: _Obj, allowed: frozenset[str], path: str) -> None:
    if not allowed.issuperset(obj):
        extra = sorted(set(obj) - allowed)[0]
        raise invalid_parameter(f'Unexpected key "{extra}" on param {path}')


def _required(obj: _Obj, key: str, path: str) -> Any:
    value = obj.get(key)
    if value is None:
        raise missing_parameter(f"Param {path}['{key}'] is required")
    return value


def _text(value: Any, path: str, max_len: int | None = None, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise invalid_parameter(f"Param {path} must be a string")
    if not allow_empty and not value.strip():
        raise invalid_value(f"Param {path} must be a non-empty string")
    if max_len is not None and len(value) > max_len:
        raise invalid_value(f"Param {path} must be at most {max_len} characters long (got {len(value)})")
    return value


def _req_text(obj: _Obj, key: str, path: str, max_len: int | None = None) -> str:
    return _text(_required(obj, key, path), f"{path}['{key}']", max_len)


def _opt_text(obj: _Obj, key: str, path: str, max_len: int | None = None) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    return _text(value, f"{path}['{key}']", max_len, allow_empty=True)


def _one_of(value: Any, allowed: frozenset[str], path: str) -> str:
    if not isinstance(value, str):
        raise invalid_parameter(f"Param {path} must be a string")
    if value not in allowed:
        raise invalid_value(f"Param {path} must be one of {{{', '.join(sorted(allowed))}}} (got '{value}')")
    return value


def _number(value: Any, path: str) -> float:
    # Meta's examples send numbers; the spec's LocationMessage schema says strings, so accept both.
    if isinstance(value, bool):
        raise invalid_parameter(f"Param {path} must be a number")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise invalid_value(f"Param {path} must be a number (got '{value}')") from None
    raise invalid_parameter(f"Param {path} must be a number")


def _count(items: list[Any], path: str, low: int, high: int) -> None:
    if len(items) < low:
        raise invalid_value(f"Param {path} must have at least {low} element(s)")
    if len(items) > high:
        raise invalid_value(f"Param {path} must have at most {high} elements (got {len(items)})")


_HTTP_URL = re.compile(r"https?://[^\s/?#]+[^\s]*", re.IGNORECASE)
_BIRTHDAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_ASCII_LETTER_OR_SPACE = re.compile(r"[A-Za-z\s]")


# ---------------------------------------------------------------------------------------- media & text

_TEXT_KEYS = frozenset({"body", "preview_url"})
_MEDIA_KEYS: Final[dict[str, frozenset[str]]] = {
    # caption only on image/video/document, filename only on document (A7).
    "image": frozenset({"id", "link", "caption"}),
    "video": frozenset({"id", "link", "caption"}),
    "document": frozenset({"id", "link", "caption", "filename"}),
    "audio": frozenset({"id", "link"}),
    "sticker": frozenset({"id", "link"}),
}
_HEADER_MEDIA_KEYS = frozenset({"id", "link", "filename"})


def _check_text(value: Any, path: str) -> None:
    text = _obj(value, path)
    _keys(text, _TEXT_KEYS, path)
    _req_text(text, "body", path, 4096)
    preview = text.get("preview_url")
    if preview is not None and not isinstance(preview, bool):
        raise invalid_parameter(f"Param {path}['preview_url'] must be a boolean")


def _check_media_ref(media: _Obj, path: str) -> None:
    has_id = media.get("id") is not None
    has_link = media.get("link") is not None
    if has_id and has_link:
        raise invalid_parameter(f"Param {path} must have either 'id' or 'link', not both")
    if not has_id and not has_link:
        raise missing_parameter(f"Param {path} requires 'id' or 'link'")
    key = "id" if has_id else "link"
    # A link is fetched later by Meta; a bad one fails asynchronously (131053), not here.
    _text(media[key], f"{path}['{key}']")


def _media_checker(media_type: str) -> Callable[[Any, str], None]:
    allowed = _MEDIA_KEYS[media_type]

    def check(value: Any, path: str) -> None:
        media = _obj(value, path)
        _keys(media, allowed, path)
        _check_media_ref(media, path)
        _opt_text(media, "caption", path, 1024)
        _opt_text(media, "filename", path, 240)

    return check


# ------------------------------------------------------------------------------- location, contacts, reaction

_LOCATION_KEYS = frozenset({"latitude", "longitude", "name", "address"})


def _check_location(value: Any, path: str) -> None:
    location = _obj(value, path)
    _keys(location, _LOCATION_KEYS, path)
    latitude = _number(_required(location, "latitude", path), f"{path}['latitude']")
    longitude = _number(_required(location, "longitude", path), f"{path}['longitude']")
    if not -90.0 <= latitude <= 90.0:
        raise invalid_value(f"Param {path}['latitude'] must be between -90 and 90")
    if not -180.0 <= longitude <= 180.0:
        raise invalid_value(f"Param {path}['longitude'] must be between -180 and 180")
    _opt_text(location, "name", path, 1000)
    _opt_text(location, "address", path, 1000)


_CONTACT_KEYS = frozenset({"addresses", "birthday", "emails", "name", "org", "phones", "urls"})
_CONTACT_NAME_KEYS = frozenset(
    {"formatted_name", "first_name", "last_name", "middle_name", "suffix", "prefix"}
)
_CONTACT_PART_KEYS: Final[dict[str, frozenset[str]]] = {
    "addresses": frozenset({"street", "city", "state", "zip", "country", "country_code", "type"}),
    "emails": frozenset({"email", "type"}),
    "phones": frozenset({"phone", "type", "wa_id"}),
    "urls": frozenset({"url", "type"}),
}
_CONTACT_ORG_KEYS = frozenset({"company", "department", "title"})


def _check_string_fields(obj: _Obj, allowed: frozenset[str], path: str) -> None:
    _keys(obj, allowed, path)
    for key in obj:
        _opt_text(obj, key, path)


def _check_contacts(value: Any, path: str) -> None:
    contacts = _list(value, path)
    if not contacts:
        raise invalid_value(f"Param {path} must have at least 1 element(s)")
    for index, item in enumerate(contacts):
        cpath = f"{path}[{index}]"
        contact = _obj(item, cpath)
        _keys(contact, _CONTACT_KEYS, cpath)
        name = _obj(_required(contact, "name", cpath), f"{cpath}['name']")
        _check_string_fields(name, _CONTACT_NAME_KEYS, f"{cpath}['name']")
        _req_text(name, "formatted_name", f"{cpath}['name']")
        for part, allowed in _CONTACT_PART_KEYS.items():
            entries = contact.get(part)
            if entries is None:
                continue
            for eindex, entry in enumerate(_list(entries, f"{cpath}['{part}']")):
                epath = f"{cpath}['{part}'][{eindex}]"
                _check_string_fields(_obj(entry, epath), allowed, epath)
        org = contact.get("org")
        if org is not None:
            _check_string_fields(_obj(org, f"{cpath}['org']"), _CONTACT_ORG_KEYS, f"{cpath}['org']")
        birthday = _opt_text(contact, "birthday", cpath)
        if birthday is not None and not _BIRTHDAY.fullmatch(birthday):
            raise invalid_value(f"Param {cpath}['birthday'] must be in YYYY-MM-DD format")


_REACTION_KEYS = frozenset({"message_id", "emoji"})


def _check_reaction(value: Any, path: str) -> None:
    reaction = _obj(value, path)
    _keys(reaction, _REACTION_KEYS, path)
    _req_text(reaction, "message_id", path)
    if "emoji" not in reaction:
        raise missing_parameter(f"Param {path}['emoji'] is required (an empty string removes a reaction)")
    emoji = _text(reaction["emoji"], f"{path}['emoji']", allow_empty=True)
    # One emoji (possibly a ZWJ/skin-tone/flag sequence), not words (Meta: "Emoji to appear on the message").
    if emoji and (len(emoji) > 16 or _ASCII_LETTER_OR_SPACE.search(emoji)):
        raise invalid_value(f"Param {path}['emoji'] must be a single emoji")


# ----------------------------------------------------------------------------------------- interactive

_INTERACTIVE_KEYS = frozenset({"type", "header", "body", "footer", "action"})
_HEADER_KEYS = frozenset({"type", "text", "sub_text", "image", "video", "document"})
_HEADER_TYPES = frozenset({"text", "image", "video", "document"})
_ALL_HEADERS = _HEADER_TYPES
_TEXT_HEADER = frozenset({"text"})
_NO_HEADER: frozenset[str] = frozenset()
_BODY_KEYS = frozenset({"text"})
_FOOTER_KEYS = frozenset({"text"})


def _check_header(value: Any, path: str, allowed: frozenset[str], itype: str) -> None:
    header = _obj(value, path)
    _keys(header, _HEADER_KEYS, path)
    htype = _one_of(_required(header, "type", path), _HEADER_TYPES, f"{path}['type']")
    if htype not in allowed:
        raise invalid_value(f"Param {path}['type'] '{htype}' is not supported for interactive type '{itype}'")
    if htype == "text":
        _req_text(header, "text", path, 60)
    else:
        media_path = f"{path}['{htype}']"
        media = _obj(_required(header, htype, path), media_path)
        _keys(media, _HEADER_MEDIA_KEYS, media_path)
        _check_media_ref(media, media_path)
    _opt_text(header, "sub_text", path, 60)


def _check_text_block(value: Any, path: str, keys: frozenset[str], max_len: int) -> None:
    block = _obj(value, path)
    _keys(block, keys, path)
    _req_text(block, "text", path, max_len)


_ACTION_BUTTONS_KEYS = frozenset({"buttons"})
_BUTTON_KEYS = frozenset({"type", "reply"})
_REPLY_KEYS = frozenset({"id", "title"})


def _check_action_buttons(action: _Obj, path: str) -> None:
    _keys(action, _ACTION_BUTTONS_KEYS, path)
    buttons = _list(_required(action, "buttons", path), f"{path}['buttons']")
    _count(buttons, f"{path}['buttons']", 1, 3)
    titles: set[str] = set()
    ids: set[str] = set()
    for index, item in enumerate(buttons):
        bpath = f"{path}['buttons'][{index}]"
        button = _obj(item, bpath)
        _keys(button, _BUTTON_KEYS, bpath)
        _one_of(_required(button, "type", bpath), frozenset({"reply"}), f"{bpath}['type']")
        rpath = f"{bpath}['reply']"
        reply = _obj(_required(button, "reply", bpath), rpath)
        _keys(reply, _REPLY_KEYS, rpath)
        button_id = _req_text(reply, "id", rpath, 256)
        if button_id != button_id.strip():
            raise invalid_value(f"Param {rpath}['id'] must not have leading or trailing spaces")
        title = _req_text(reply, "title", rpath, 20)
        if title in titles:
            raise invalid_value(f"Param {rpath}['title'] must be unique (duplicate '{title}')")
        if button_id in ids:
            raise invalid_value(f"Param {rpath}['id'] must be unique (duplicate '{button_id}')")
        titles.add(title)
        ids.add(button_id)


_ACTION_LIST_KEYS = frozenset({"button", "sections"})
_LIST_SECTION_KEYS = frozenset({"title", "rows"})
_ROW_KEYS = frozenset({"id", "title", "description"})


def _check_action_list(action: _Obj, path: str) -> None:
    _keys(action, _ACTION_LIST_KEYS, path)
    _req_text(action, "button", path, 20)
    sections = _list(_required(action, "sections", path), f"{path}['sections']")
    _count(sections, f"{path}['sections']", 1, 10)
    row_ids: set[str] = set()
    total = 0
    for index, item in enumerate(sections):
        spath = f"{path}['sections'][{index}]"
        section = _obj(item, spath)
        _keys(section, _LIST_SECTION_KEYS, spath)
        if len(sections) > 1 and section.get("title") is None:
            raise missing_parameter(f"Param {spath}['title'] is required when there is more than one section")
        _opt_text(section, "title", spath, 24)
        rows = _list(_required(section, "rows", spath), f"{spath}['rows']")
        if not rows:
            raise invalid_value(f"Param {spath}['rows'] must have at least 1 element(s)")
        total += len(rows)
        if total > 10:
            # Meta's own wording for this case, as seen in real error responses.
            raise invalid_value("Total row count exceed max allowed count: 10")
        for rindex, raw_row in enumerate(rows):
            rpath = f"{spath}['rows'][{rindex}]"
            row = _obj(raw_row, rpath)
            _keys(row, _ROW_KEYS, rpath)
            row_id = _req_text(row, "id", rpath, 200)
            if row_id in row_ids:
                raise invalid_value(
                    f"Param {rpath}['id'] must be unique across sections (duplicate '{row_id}')"
                )
            row_ids.add(row_id)
            _req_text(row, "title", rpath, 24)
            _opt_text(row, "description", rpath, 72)


_NAMED_ACTION_KEYS = frozenset({"name", "parameters"})
_CTA_PARAM_KEYS = frozenset({"display_text", "url"})


def _check_named(action: _Obj, path: str, name: str, keys: frozenset[str] = _NAMED_ACTION_KEYS) -> None:
    _keys(action, keys, path)
    _one_of(_required(action, "name", path), frozenset({name}), f"{path}['name']")


def _check_action_cta_url(action: _Obj, path: str) -> None:
    _check_named(action, path, "cta_url")
    ppath = f"{path}['parameters']"
    params = _obj(_required(action, "parameters", path), ppath)
    _keys(params, _CTA_PARAM_KEYS, ppath)
    _req_text(params, "display_text", ppath, 20)
    url = _req_text(params, "url", ppath, 2000)
    if not _HTTP_URL.fullmatch(url):
        raise invalid_value(f"Param {ppath}['url'] must be an http(s) URL")


_FLOW_PARAM_KEYS = frozenset(
    {
        "flow_message_version",
        "flow_id",
        "flow_name",
        "flow_cta",
        "mode",
        "flow_token",
        "flow_action",
        "flow_action_payload",
    }
)
_FLOW_PAYLOAD_KEYS = frozenset({"screen", "data"})


def _check_action_flow(action: _Obj, path: str) -> None:
    _check_named(action, path, "flow")
    ppath = f"{path}['parameters']"
    params = _obj(_required(action, "parameters", path), ppath)
    _keys(params, _FLOW_PARAM_KEYS, ppath)
    _one_of(
        _required(params, "flow_message_version", ppath), frozenset({"3"}), f"{ppath}['flow_message_version']"
    )
    has_id = params.get("flow_id") is not None
    has_name = params.get("flow_name") is not None
    if has_id and has_name:
        raise invalid_parameter(f"Param {ppath} cannot have both 'flow_id' and 'flow_name'")
    if not has_id and not has_name:
        raise missing_parameter(f"Param {ppath} requires 'flow_id' or 'flow_name'")
    _req_text(params, "flow_id" if has_id else "flow_name", ppath)
    # SPEC: "Advised 30 characters or less"; warelay itself should stay within 20 (PYWA).
    _req_text(params, "flow_cta", ppath, 30)
    if params.get("mode") is not None:
        _one_of(params["mode"], frozenset({"draft", "published"}), f"{ppath}['mode']")
    _opt_text(params, "flow_token", ppath)
    flow_action = params.get("flow_action")
    if flow_action is not None:
        _one_of(flow_action, frozenset({"navigate", "data_exchange"}), f"{ppath}['flow_action']")
    payload_value = params.get("flow_action_payload")
    if payload_value is not None:
        fpath = f"{ppath}['flow_action_payload']"
        payload = _obj(payload_value, fpath)
        _keys(payload, _FLOW_PAYLOAD_KEYS, fpath)
        # The id of the Flow's first screen [SPEC flow_action_payload.screen]: a name, never empty.
        if payload.get("screen") is not None:
            _req_text(payload, "screen", fpath)
        data = payload.get("data")
        if data is not None and not _obj(data, f"{fpath}['data']"):
            raise invalid_value(f"Param {fpath}['data'] must be a non-empty object")


_PRODUCT_KEYS = frozenset({"catalog_id", "product_retailer_id"})


def _check_action_product(action: _Obj, path: str) -> None:
    _keys(action, _PRODUCT_KEYS, path)
    _req_text(action, "catalog_id", path)
    _req_text(action, "product_retailer_id", path)


_PRODUCT_LIST_KEYS = frozenset({"catalog_id", "sections"})
_PRODUCT_SECTION_KEYS = frozenset({"title", "product_items"})
_PRODUCT_ITEM_KEYS = frozenset({"product_retailer_id"})


def _check_action_product_list(action: _Obj, path: str) -> None:
    _keys(action, _PRODUCT_LIST_KEYS, path)
    _req_text(action, "catalog_id", path)
    sections = _list(_required(action, "sections", path), f"{path}['sections']")
    _count(sections, f"{path}['sections']", 1, 10)
    total = 0
    for index, item in enumerate(sections):
        spath = f"{path}['sections'][{index}]"
        section = _obj(item, spath)
        _keys(section, _PRODUCT_SECTION_KEYS, spath)
        if len(sections) > 1 and section.get("title") is None:
            raise missing_parameter(f"Param {spath}['title'] is required when there is more than one section")
        _opt_text(section, "title", spath, 24)
        items = _list(_required(section, "product_items", spath), f"{spath}['product_items']")
        _count(items, f"{spath}['product_items']", 1, 30)
        total += len(items)
        if total > 30:
            raise invalid_value("Total product count exceed max allowed count: 30")
        for pindex, raw in enumerate(items):
            ipath = f"{spath}['product_items'][{pindex}]"
            product = _obj(raw, ipath)
            _keys(product, _PRODUCT_ITEM_KEYS, ipath)
            _req_text(product, "product_retailer_id", ipath)


_CATALOG_PARAM_KEYS = frozenset({"thumbnail_product_retailer_id"})


def _check_action_catalog(action: _Obj, path: str) -> None:
    _check_named(action, path, "catalog_message")
    params = action.get("parameters")
    if params is not None:
        # Meta's catalog messages: parameters may be left out (the first product is the thumbnail);
        # given, they must name the product [SPEC ActionObject: parameters requires it].
        ppath = f"{path}['parameters']"
        _keys(_obj(params, ppath), _CATALOG_PARAM_KEYS, ppath)
        _req_text(params, "thumbnail_product_retailer_id", ppath)


_NAME_ONLY_KEYS = frozenset({"name"})


def _check_action_location_request(action: _Obj, path: str) -> None:
    # M-docs "location request messages": action is exactly {"name": "send_location"}.
    _check_named(action, path, "send_location", _NAME_ONLY_KEYS)


def _check_action_call_permission(action: _Obj, path: str) -> None:
    _check_named(action, path, "call_permission_request", _NAME_ONLY_KEYS)


def _order_checker(name: str) -> Callable[[_Obj, str], None]:
    def check(action: _Obj, path: str) -> None:
        _check_named(action, path, name)
        ppath = f"{path}['parameters']"
        params = _obj(_required(action, "parameters", path), ppath)
        _req_text(params, "reference_id", ppath)

    return check


class _InteractiveRule:
    """What one interactive type allows: header types, whether body is required, its action check."""

    __slots__ = ("action", "body_required", "header_required", "headers")

    def __init__(
        self,
        action: Callable[[_Obj, str], None],
        *,
        headers: frozenset[str] = _ALL_HEADERS,
        header_required: bool = False,
        body_required: bool = True,
    ) -> None:
        self.action = action
        self.headers = headers
        self.header_required = header_required
        self.body_required = body_required


_INTERACTIVE_RULES: Final[dict[str, _InteractiveRule]] = {
    "button": _InteractiveRule(_check_action_buttons),
    "list": _InteractiveRule(_check_action_list, headers=_TEXT_HEADER),
    "cta_url": _InteractiveRule(_check_action_cta_url),
    "flow": _InteractiveRule(_check_action_flow),
    "product": _InteractiveRule(_check_action_product, headers=_NO_HEADER, body_required=False),
    "product_list": _InteractiveRule(_check_action_product_list, headers=_TEXT_HEADER, header_required=True),
    "catalog_message": _InteractiveRule(_check_action_catalog, headers=_NO_HEADER),
    # Real per Meta's "location request messages" doc though missing from SPEC's InteractiveObject enum.
    "location_request_message": _InteractiveRule(_check_action_location_request, headers=_NO_HEADER),
    "call_permission_request": _InteractiveRule(_check_action_call_permission, headers=_NO_HEADER),
    "order_details": _InteractiveRule(_order_checker("review_and_pay")),
    "order_status": _InteractiveRule(_order_checker("review_order"), headers=_NO_HEADER),
}


def _check_interactive(value: Any, path: str) -> None:
    interactive = _obj(value, path)
    _keys(interactive, _INTERACTIVE_KEYS, path)
    itype = _required(interactive, "type", path)
    if not isinstance(itype, str):
        raise invalid_parameter(f"Param {path}['type'] must be a string")
    rule = _INTERACTIVE_RULES.get(itype)
    if rule is None:
        raise invalid_parameter(f"Param {path}['type'] '{itype}' is not a supported interactive type")
    header = interactive.get("header")
    if header is not None:
        if not rule.headers:
            raise invalid_parameter(f"Param {path}['header'] is not allowed for interactive type '{itype}'")
        _check_header(header, f"{path}['header']", rule.headers, itype)
    elif rule.header_required:
        raise missing_parameter(f"Param {path}['header'] is required for interactive type '{itype}'")
    body = interactive.get("body")
    if body is not None:
        _check_text_block(body, f"{path}['body']", _BODY_KEYS, 1024)
    elif rule.body_required:
        raise missing_parameter(f"Param {path}['body'] is required for interactive type '{itype}'")
    footer = interactive.get("footer")
    if footer is not None:
        _check_text_block(footer, f"{path}['footer']", _FOOTER_KEYS, 60)
    action_path = f"{path}['action']"
    rule.action(_obj(_required(interactive, "action", path), action_path), action_path)


# -------------------------------------------------------------------------------------------- template

_TEMPLATE_KEYS = frozenset({"name", "language", "components"})
_LANGUAGE_KEYS = frozenset({"code", "policy"})
_COMPONENT_KEYS = frozenset({"type", "sub_type", "index", "parameters", "cards"})
_COMPONENT_TYPES = frozenset({"header", "body", "footer", "button", "carousel", "limited_time_offer"})
_BUTTON_SUB_TYPES = frozenset(
    {"quick_reply", "url", "catalog", "flow", "copy_code", "mpm", "voice_call", "order_details", "spm"}
)
_CURRENCY_KEYS = frozenset({"fallback_value", "code", "amount_1000"})


def _param_text(param: _Obj, path: str) -> None:
    _req_text(param, "text", path)


def _param_payload(param: _Obj, path: str) -> None:
    _req_text(param, "payload", path, 1000)


def _param_currency(param: _Obj, path: str) -> None:
    cpath = f"{path}['currency']"
    currency = _obj(_required(param, "currency", path), cpath)
    _keys(currency, _CURRENCY_KEYS, cpath)
    _req_text(currency, "fallback_value", cpath)
    _req_text(currency, "code", cpath)
    amount = _required(currency, "amount_1000", cpath)
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise invalid_parameter(f"Param {cpath}['amount_1000'] must be an integer")


def _param_date_time(param: _Obj, path: str) -> None:
    dpath = f"{path}['date_time']"
    _req_text(_obj(_required(param, "date_time", path), dpath), "fallback_value", dpath)


def _param_media(kind: str) -> Callable[[_Obj, str], None]:
    def check(param: _Obj, path: str) -> None:
        mpath = f"{path}['{kind}']"
        media = _obj(_required(param, kind, path), mpath)
        _check_media_ref(media, mpath)

    return check


def _param_object(kind: str) -> Callable[[_Obj, str], None]:
    def check(param: _Obj, path: str) -> None:
        _obj(_required(param, kind, path), f"{path}['{kind}']")

    return check


def _param_location(param: _Obj, path: str) -> None:
    _check_location(_required(param, "location", path), f"{path}['location']")


def _param_coupon(param: _Obj, path: str) -> None:
    _req_text(param, "coupon_code", path, 15)


_PARAM_CHECKS: Final[dict[str, Callable[[_Obj, str], None]]] = {
    "text": _param_text,
    "payload": _param_payload,
    "currency": _param_currency,
    "date_time": _param_date_time,
    "image": _param_media("image"),
    "video": _param_media("video"),
    "document": _param_media("document"),
    "location": _param_location,
    "action": _param_object("action"),
    "coupon_code": _param_coupon,
    "limited_time_offer": _param_object("limited_time_offer"),
    "expiration_time": _param_object("expiration_time"),
    "product": _param_object("product"),
    "order_status": _param_object("order_status"),
    "tap_target_configuration": _param_object("tap_target_configuration"),
}


def _check_button_index(value: Any, path: str) -> None:
    # Meta's examples send the index as a string ("0") or a number (0); both are accepted.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise invalid_parameter(f"Param {path} must be an integer")
    if isinstance(value, str):
        if not value.isdigit():
            raise invalid_value(f"Param {path} must be a number between 0 and 9")
        value = int(value)
    if not 0 <= value <= 9:
        raise invalid_value(f"Param {path} must be a number between 0 and 9")


def _check_template(value: Any, path: str) -> None:
    template = _obj(value, path)
    _keys(template, _TEMPLATE_KEYS, path)
    _req_text(template, "name", path, 512)
    lpath = f"{path}['language']"
    language = _obj(_required(template, "language", path), lpath)
    _keys(language, _LANGUAGE_KEYS, lpath)
    _req_text(language, "code", lpath, 64)
    if language.get("policy") is not None:
        _one_of(language["policy"], frozenset({"deterministic"}), f"{lpath}['policy']")
    components = template.get("components")
    if components is None:
        return
    for index, item in enumerate(_list(components, f"{path}['components']")):
        cpath = f"{path}['components'][{index}]"
        component = _obj(item, cpath)
        _keys(component, _COMPONENT_KEYS, cpath)
        ctype = _required(component, "type", cpath)
        if not isinstance(ctype, str):
            raise invalid_parameter(f"Param {cpath}['type'] must be a string")
        ctype = _one_of(ctype.lower(), _COMPONENT_TYPES, f"{cpath}['type']")
        if ctype == "button":
            sub_type = _required(component, "sub_type", cpath)
            if not isinstance(sub_type, str):
                raise invalid_parameter(f"Param {cpath}['sub_type'] must be a string")
            _one_of(sub_type.lower(), _BUTTON_SUB_TYPES, f"{cpath}['sub_type']")
            _check_button_index(_required(component, "index", cpath), f"{cpath}['index']")
        cards = component.get("cards")
        if cards is not None:
            for cindex, card in enumerate(_list(cards, f"{cpath}['cards']")):
                _obj(card, f"{cpath}['cards'][{cindex}]")
        parameters = component.get("parameters")
        if parameters is None:
            continue
        for pindex, raw in enumerate(_list(parameters, f"{cpath}['parameters']")):
            ppath = f"{cpath}['parameters'][{pindex}]"
            param = _obj(raw, ppath)
            ptype = _required(param, "type", ppath)
            if not isinstance(ptype, str):
                raise invalid_parameter(f"Param {ppath}['type'] must be a string")
            check = _PARAM_CHECKS.get(ptype)
            if check is None:
                raise invalid_parameter(f"Param {ppath}['type'] '{ptype}' is not a supported parameter type")
            check(param, ppath)


# --------------------------------------------------------------------------------------- the request

_TYPE_CHECKS: Final[dict[str, Callable[[Any, str], None]]] = {
    "text": _check_text,
    "image": _media_checker("image"),
    "audio": _media_checker("audio"),
    "video": _media_checker("video"),
    "document": _media_checker("document"),
    "sticker": _media_checker("sticker"),
    "location": _check_location,
    "contacts": _check_contacts,
    "reaction": _check_reaction,
    "interactive": _check_interactive,
    "template": _check_template,
}
_COMMON_KEYS = frozenset(
    {"messaging_product", "recipient_type", "to", "recipient", "type", "context", "biz_opaque_callback_data"}
)
_ALLOWED_KEYS: Final[dict[str, frozenset[str]]] = {t: _COMMON_KEYS | {t} for t in _TYPE_CHECKS}
_RECIPIENT_TYPES = frozenset({"individual", "group"})
_CONTEXT_KEYS = frozenset({"message_id"})
_STATUS_KEYS = frozenset({"messaging_product", "status", "message_id", "typing_indicator"})
_TYPING_KEYS = frozenset({"type"})


def _check_status_update(body: _Obj) -> None:
    """Mark-as-read, optionally with the typing indicator (M-TYP)."""
    _keys(body, _STATUS_KEYS, "message")
    _one_of(body["status"], frozenset({"read"}), "status")
    message_id = body.get("message_id")
    if message_id is None:
        raise missing_parameter("Param message_id is required")
    _text(message_id, "message_id")
    typing = body.get("typing_indicator")
    if typing is not None:
        _keys(_obj(typing, "typing_indicator"), _TYPING_KEYS, "typing_indicator")
        _one_of(
            _required(typing, "type", "typing_indicator"), frozenset({"text"}), "typing_indicator['type']"
        )


def validate_send_request(body: Any) -> None:
    """Accept a messages-endpoint body as Meta would, or raise :class:`GraphRequestError` with Meta's code."""
    if not isinstance(body, dict):
        raise invalid_parameter("The request body must be a JSON object")
    product = body.get("messaging_product")
    if product is None:
        raise missing_parameter("Param messaging_product is required")
    if product != "whatsapp":
        raise invalid_parameter("Param messaging_product must be 'whatsapp'")
    if "status" in body:
        _check_status_update(body)
        return

    # Meta: "type: Optional. The type of message you want to send. If omitted, defaults to text."
    mtype = body.get("type", "text")
    if not isinstance(mtype, str):
        raise invalid_parameter("Param type must be a string")
    check = _TYPE_CHECKS.get(mtype)
    if check is None:
        raise invalid_parameter(f"Param type '{mtype}' is not a supported message type")
    content = body.get(mtype)
    if content is None:
        raise missing_parameter(f"Param {mtype} is required for messages of type '{mtype}'")
    _keys(body, _ALLOWED_KEYS[mtype], "message")

    to = body.get("to")
    recipient = body.get("recipient")
    if to is None and recipient is None:
        raise missing_parameter("Param to (or recipient) is required")
    if to is not None:
        _text(to, "to", 256)
    if recipient is not None:
        _text(recipient, "recipient", 256)
    recipient_type = body.get("recipient_type")
    if recipient_type is not None:
        _one_of(recipient_type, _RECIPIENT_TYPES, "recipient_type")
    context = body.get("context")
    if context is not None:
        _keys(_obj(context, "context"), _CONTEXT_KEYS, "context")
        _req_text(context, "message_id", "context")
    tracker = body.get("biz_opaque_callback_data")
    if tracker is not None:
        _text(tracker, "biz_opaque_callback_data", 512, allow_empty=True)

    check(content, mtype)
