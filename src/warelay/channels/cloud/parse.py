"""Meta Cloud API webhook parser: provider JSON → domain events.

Where it sits in the message path::

    Meta POST ─▶ verify X-Hub-Signature-256 (webhook.py) ─▶ **parse.py** ─▶ inbox (store, then 200)

The body walks ``entry[] → changes[] → value``. A ``value`` of ``field == "messages"`` may hold inbound
``messages`` (with their ``contacts``), delivery ``statuses`` of what the business sent, and out-of-band
``errors``; every event is routed by ``value.metadata.phone_number_id``. Other fields (template, account and
group updates) are only recorded in ``ParsedWebhook.ignored``.

Parsing is lenient on purpose (protocol.md A14: Meta's own OpenAPI schema rejects real payloads): unknown
keys are ignored, unknown message types become :class:`~warelay.domain.UnsupportedContent`, and one malformed
message or status is skipped (logged at WARNING and recorded as ``invalid:…``) without losing the others of
the same delivery. Domain models are built straight from the dicts, with no intermediate wire models,
because this runs on every webhook.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from warelay.domain import (
    ButtonContent,
    ChannelErrorEvent,
    ContactPhone,
    ContactsContent,
    EditContent,
    InboundContent,
    InboundMessage,
    InteractiveReplyContent,
    LocationContent,
    MediaContent,
    MediaKind,
    MessageContext,
    OrderContent,
    OrderItem,
    ParsedWebhook,
    ProviderError,
    ReactionContent,
    Referral,
    ReferredProduct,
    RevokeContent,
    SharedContact,
    StatusUpdate,
    SystemContent,
    TextContent,
    UnsupportedContent,
    UserRef,
)

__all__ = ["entry_number_ids", "parse_webhook", "parse_webhook_bytes"]

_LOG = logging.getLogger(__name__)

_WABA_OBJECT = "whatsapp_business_account"


class _InvalidError(Exception):
    """A message or status too malformed to keep; ``reason`` goes into ``ignored``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _UnknownTypeError(Exception):
    """A type (or interactive sub-type) this parser does not know; kept as UnsupportedContent."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


# ------------------------------------------------------------------------------------ scalar helpers


def _str(value: Any) -> str | None:
    """A string field, accepting integers (some payloads send ids as numbers)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _int(value: Any) -> int | None:
    """An integer field, accepting digit strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _float(value: Any) -> float | None:
    """A finite number, accepting numeric strings; None for anything else."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _timestamp(value: Any) -> datetime | None:
    """Unix seconds (Meta sends them as strings) → aware UTC datetime; None when unusable."""
    if isinstance(value, str):
        try:
            seconds: float = int(value)
        except ValueError:
            try:
                seconds = float(value)
            except ValueError:
                return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value
    else:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _errors(value: Any) -> tuple[ProviderError, ...]:
    """``errors[]`` as Meta reports them: code, title, message, error_data.details, href."""
    if not isinstance(value, list) or not value:
        return ()
    out: list[ProviderError] = []
    for item in value:
        if not isinstance(item, dict):
            continue
        data = item.get("error_data")
        out.append(
            ProviderError(
                code=_int(item.get("code")),
                title=_str(item.get("title")),
                message=_str(item.get("message")),
                details=_str(data.get("details")) if isinstance(data, dict) else None,
                href=_str(item.get("href")),
            )
        )
    return tuple(out)


def _required_object(msg: dict[str, Any], key: str) -> dict[str, Any]:
    """The type-specific object of a message (``msg[msg.type]``); its absence makes the message invalid."""
    obj = msg.get(key)
    if not isinstance(obj, dict):
        raise _InvalidError(f"{key}_object_missing")
    return obj


# ------------------------------------------------------------------------------------ content parsers


def _parse_text(msg: dict[str, Any]) -> InboundContent:
    body = _required_object(msg, "text").get("body")
    if not isinstance(body, str):
        raise _InvalidError("text_without_body")
    # Inbound text may exceed the 4096 outbound limit (protocol.md A9): never truncate it.
    return TextContent(body=body)


def _media_parser(kind: MediaKind) -> Callable[[dict[str, Any]], InboundContent]:
    def parse(msg: dict[str, Any]) -> InboundContent:
        obj = _required_object(msg, kind)
        return MediaContent(
            media_type=kind,
            media_id=_str(obj.get("id")),
            mime_type=_str(obj.get("mime_type")),
            sha256=_str(obj.get("sha256")),
            caption=_str(obj.get("caption")),
            filename=_str(obj.get("filename")),
            voice=obj.get("voice") is True,
            animated=obj.get("animated") is True,
            # Newer payloads may carry a direct url (protocol.md A4); the media id stays the way to fetch.
            url=_str(obj.get("url")),
        )

    return parse


def _parse_location(msg: dict[str, Any]) -> InboundContent:
    obj = _required_object(msg, "location")
    latitude = _float(obj.get("latitude"))
    longitude = _float(obj.get("longitude"))
    if latitude is None or longitude is None or abs(latitude) > 90 or abs(longitude) > 180:
        raise _InvalidError("bad_coordinates")
    # A shared current-location pin has coordinates only, although SPEC marks name/address required.
    return LocationContent(
        latitude=latitude,
        longitude=longitude,
        name=_str(obj.get("name")),
        address=_str(obj.get("address")),
        url=_str(obj.get("url")),
    )


def _shared_contact(card: dict[str, Any]) -> SharedContact:
    name = _dict(card.get("name")) or {}
    org = _dict(card.get("org")) or {}
    phones = card.get("phones")
    emails = card.get("emails")
    urls = card.get("urls")
    addresses = card.get("addresses")
    return SharedContact(
        formatted_name=_str(name.get("formatted_name")),
        first_name=_str(name.get("first_name")),
        last_name=_str(name.get("last_name")),
        phones=tuple(
            ContactPhone(phone=_str(p.get("phone")), wa_id=_str(p.get("wa_id")), type=_str(p.get("type")))
            for p in (phones if isinstance(phones, list) else ())
            if isinstance(p, dict)
        ),
        emails=tuple(
            email
            for e in (emails if isinstance(emails, list) else ())
            if isinstance(e, dict) and (email := _str(e.get("email")))
        ),
        organization=_str(org.get("company")),
        urls=tuple(
            url
            for u in (urls if isinstance(urls, list) else ())
            if isinstance(u, dict) and (url := _str(u.get("url")))
        ),
        birthday=_str(card.get("birthday")),
        addresses=tuple(a for a in (addresses if isinstance(addresses, list) else ()) if isinstance(a, dict)),
    )


def _parse_contacts(msg: dict[str, Any]) -> InboundContent:
    cards = msg.get("contacts")
    if not isinstance(cards, list):
        raise _InvalidError("contacts_object_missing")
    return ContactsContent(contacts=tuple(_shared_contact(c) for c in cards if isinstance(c, dict)))


def _parse_button_reply(obj: dict[str, Any]) -> InboundContent:
    reply = _dict(obj.get("button_reply")) or {}
    return InteractiveReplyContent(
        reply_type="button_reply", id=_str(reply.get("id")), title=_str(reply.get("title"))
    )


def _parse_list_reply(obj: dict[str, Any]) -> InboundContent:
    reply = _dict(obj.get("list_reply")) or {}
    return InteractiveReplyContent(
        reply_type="list_reply",
        id=_str(reply.get("id")),
        title=_str(reply.get("title")),
        description=_str(reply.get("description")),
    )


def _flow_response(value: Any) -> dict[str, Any] | None:
    """``response_json`` is a JSON *string* holding flow_token and the form fields (M-FLOW)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            return decoded
        return {"_raw": value}
    return {"_raw": value}


def _parse_nfm_reply(obj: dict[str, Any]) -> InboundContent:
    # SPEC's interactive.type enum omits nfm_reply; it is how a completed WhatsApp Flow comes back.
    reply = _dict(obj.get("nfm_reply")) or {}
    return InteractiveReplyContent(
        reply_type="flow_reply",
        flow_name=_str(reply.get("name")),
        flow_body=_str(reply.get("body")),
        flow_response=_flow_response(reply.get("response_json")),
    )


_INTERACTIVE_PARSERS: dict[str, Callable[[dict[str, Any]], InboundContent]] = {
    "button_reply": _parse_button_reply,
    "list_reply": _parse_list_reply,
    "nfm_reply": _parse_nfm_reply,
}


def _parse_interactive(msg: dict[str, Any]) -> InboundContent:
    obj = msg.get("interactive")
    if not isinstance(obj, dict):
        # Meta sends `type: interactive` with no object plus a value-level 131000 error for answers it
        # cannot render (pywa `interactive_message_with_err`): keep the message, as unsupported.
        raise _UnknownTypeError("interactive")
    sub_type = obj.get("type")
    parser = _INTERACTIVE_PARSERS.get(sub_type) if isinstance(sub_type, str) else None
    if parser is None:
        raise _UnknownTypeError(f"interactive:{sub_type}")
    return parser(obj)


def _parse_button(msg: dict[str, Any]) -> InboundContent:
    obj = _required_object(msg, "button")
    return ButtonContent(payload=_str(obj.get("payload")), text=_str(obj.get("text")))


def _parse_reaction(msg: dict[str, Any]) -> InboundContent:
    obj = _required_object(msg, "reaction")
    # An empty emoji, or no emoji key at all, means the reaction was removed (protocol.md A4).
    return ReactionContent(message_id=_str(obj.get("message_id")), emoji=_str(obj.get("emoji")) or None)


def _order_item(item: dict[str, Any]) -> OrderItem | None:
    retailer_id = _str(item.get("product_retailer_id"))
    if not retailer_id:
        return None
    return OrderItem(
        product_retailer_id=retailer_id,
        quantity=_int(item.get("quantity")),
        item_price=_float(item.get("item_price")),
        currency=_str(item.get("currency")),
    )


def _parse_order(msg: dict[str, Any]) -> InboundContent:
    obj = _required_object(msg, "order")
    items = obj.get("product_items")
    parsed = (_order_item(i) for i in (items if isinstance(items, list) else ()) if isinstance(i, dict))
    return OrderContent(
        catalog_id=_str(obj.get("catalog_id")),
        text=_str(obj.get("text")),
        items=tuple(i for i in parsed if i is not None),
    )


def _parse_system(msg: dict[str, Any]) -> InboundContent:
    obj = _required_object(msg, "system")
    return SystemContent(
        body=_str(obj.get("body")),
        system_type=_str(obj.get("type")),
        # `wa_id` since webhook v12; `new_wa_id` before it. `user_id` is the new BSUID (M-BSUID).
        new_wa_id=_str(obj.get("wa_id")) or _str(obj.get("new_wa_id")),
        new_user_id=_str(obj.get("user_id")),
    )


def _parse_unsupported(msg: dict[str, Any]) -> InboundContent:
    # Meta's own unsupported/unknown: no content, only errors[] (131051) and maybe `unsupported.type`.
    detail = _dict(msg.get("unsupported")) or {}
    return UnsupportedContent(original_type=_str(detail.get("type")) or _str(msg.get("type")))


def _parse_revoke(msg: dict[str, Any]) -> InboundContent:
    obj = _required_object(msg, "revoke")
    return RevokeContent(original_message_id=_str(obj.get("original_message_id")))


def _parse_edit(msg: dict[str, Any]) -> InboundContent:
    obj = _required_object(msg, "edit")
    # `edit.message` is the new message in full (pywa `edited_message.json`): text body, or a caption.
    new = _dict(obj.get("message")) or {}
    new_type = new.get("type")
    inner = _dict(new.get(new_type)) if isinstance(new_type, str) else None
    body = None
    if inner is not None:
        body = _str(inner.get("body")) if new_type == "text" else _str(inner.get("caption"))
    return EditContent(original_message_id=_str(obj.get("original_message_id")), body=body)


_MESSAGE_PARSERS: dict[str, Callable[[dict[str, Any]], InboundContent]] = {
    "text": _parse_text,
    "image": _media_parser("image"),
    "audio": _media_parser("audio"),
    "video": _media_parser("video"),
    "document": _media_parser("document"),
    "sticker": _media_parser("sticker"),
    "location": _parse_location,
    "contacts": _parse_contacts,
    "interactive": _parse_interactive,
    "button": _parse_button,
    "reaction": _parse_reaction,
    "order": _parse_order,
    "system": _parse_system,
    "unsupported": _parse_unsupported,
    "unknown": _parse_unsupported,
    "revoke": _parse_revoke,
    "edit": _parse_edit,
}


# ------------------------------------------------------------------------------- per-message context


def _context(value: Any) -> MessageContext | None:
    ctx = _dict(value)
    if not ctx:
        return None
    product = _dict(ctx.get("referred_product"))
    frequently = ctx.get("frequently_forwarded") is True
    return MessageContext(
        reply_to_id=_str(ctx.get("id")),
        reply_to_from=_str(ctx.get("from")),
        # Meta sends only `frequently_forwarded: true` for a message forwarded many times; it is forwarded.
        forwarded=ctx.get("forwarded") is True or frequently,
        frequently_forwarded=frequently,
        referred_product=ReferredProduct(
            catalog_id=_str(product.get("catalog_id")),
            product_retailer_id=_str(product.get("product_retailer_id")),
        )
        if product is not None
        else None,
    )


def _referral(value: Any) -> Referral | None:
    ref = _dict(value)
    if ref is None:
        return None
    welcome = _dict(ref.get("welcome_message"))
    return Referral(
        source_url=_str(ref.get("source_url")),
        source_id=_str(ref.get("source_id")),
        source_type=_str(ref.get("source_type")),
        headline=_str(ref.get("headline")),
        body=_str(ref.get("body")),
        media_type=_str(ref.get("media_type")),
        image_url=_str(ref.get("image_url")),
        video_url=_str(ref.get("video_url")),
        thumbnail_url=_str(ref.get("thumbnail_url")),
        ctwa_clid=_str(ref.get("ctwa_clid")),
        welcome_message=_str(welcome.get("text")) if welcome is not None else None,
    )


def _contact_index(value: Any) -> dict[str, dict[str, Any]]:
    """``value.contacts`` keyed by wa_id and by user_id: messages are matched by sender, never by index."""
    index: dict[str, dict[str, Any]] = {}
    if not isinstance(value, list):
        return index
    for contact in value:
        if not isinstance(contact, dict):
            continue
        for key in (_str(contact.get("wa_id")), _str(contact.get("user_id"))):
            if key:
                index.setdefault(key, contact)
    return index


def _match_contact(
    index: dict[str, dict[str, Any]], contacts: Any, wa_id: str | None, user_id: str | None
) -> dict[str, Any] | None:
    if wa_id and (found := index.get(wa_id)) is not None:
        return found
    if user_id and (found := index.get(user_id)) is not None:
        return found
    if wa_id is None and user_id is None and isinstance(contacts, list) and len(contacts) == 1:
        # A message naming no sender at all next to exactly one contact cannot be mismatched.
        only = contacts[0]
        return only if isinstance(only, dict) else None
    return None


# ---------------------------------------------------------------------------------- events of a value


class _Collector:
    """Accumulates the events and notes of one delivery."""

    __slots__ = ("errors", "ignored", "messages", "statuses")

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.statuses: list[StatusUpdate] = []
        self.errors: list[ChannelErrorEvent] = []
        self.ignored: list[str] = []

    def result(self) -> ParsedWebhook:
        return ParsedWebhook(
            messages=tuple(self.messages),
            statuses=tuple(self.statuses),
            errors=tuple(self.errors),
            ignored=tuple(self.ignored),
        )


def _build_message(
    msg: dict[str, Any],
    *,
    number_id: str,
    display_phone_number: str | None,
    index: dict[str, dict[str, Any]],
    contacts: Any,
) -> tuple[InboundMessage, str | None]:
    """One inbound message, plus the ``ignored`` note for a type this parser does not know."""
    message_id = _str(msg.get("id"))
    if not message_id:
        raise _InvalidError("missing_id")
    msg_type = msg.get("type")
    if not isinstance(msg_type, str) or not msg_type:
        raise _InvalidError("missing_type")

    parser = _MESSAGE_PARSERS.get(msg_type)
    content: InboundContent
    note: str | None = None
    if parser is None:
        content = UnsupportedContent(original_type=msg_type)
        note = f"type:{msg_type}"
    else:
        try:
            content = parser(msg)
        except _UnknownTypeError as unknown:
            content = UnsupportedContent(original_type=unknown.name)
            note = f"type:{unknown.name}"

    # `from` may be missing for a user known only by username/BSUID (protocol.md A13).
    from_wa_id = _str(msg.get("from"))
    from_user_id = _str(msg.get("from_user_id"))
    contact = _match_contact(index, contacts, from_wa_id, from_user_id)
    if contact is not None:
        profile = _dict(contact.get("profile")) or {}
        sender = UserRef(
            wa_id=from_wa_id or _str(contact.get("wa_id")) or None,
            user_id=from_user_id or _str(contact.get("user_id")) or None,
            parent_user_id=_str(contact.get("parent_user_id")),
            username=_str(profile.get("username")),
            profile_name=_str(profile.get("name")),
        )
        raw = {**msg, "_contact": contact}
    else:
        sender = UserRef(wa_id=from_wa_id or None, user_id=from_user_id or None)
        raw = msg
    if sender.wa_id is None and sender.user_id is None:
        raise _InvalidError("no_sender")

    timestamp = _timestamp(msg.get("timestamp"))
    if timestamp is None:
        _LOG.info("Cloud message %s has no usable timestamp; using the time of receipt", message_id)
        timestamp = datetime.now(UTC)

    message = InboundMessage(
        provider_message_id=message_id,
        number_id=number_id,
        display_phone_number=display_phone_number,
        sender=sender,
        timestamp=timestamp,
        type=msg_type,
        content=content,
        context=_context(msg.get("context")),
        referral=_referral(msg.get("referral")),
        errors=_errors(msg.get("errors")),
        raw=raw,
    )
    return message, note


def _build_status(st: dict[str, Any], *, number_id: str) -> StatusUpdate:
    message_id = _str(st.get("id"))
    if not message_id:
        raise _InvalidError("missing_id")
    status = st.get("status")
    if not isinstance(status, str) or not status:
        raise _InvalidError("missing_status")
    timestamp = _timestamp(st.get("timestamp"))
    if timestamp is None:
        _LOG.info("Cloud status %s/%s has no usable timestamp; using the time of receipt", message_id, status)
        timestamp = datetime.now(UTC)
    callback_data = st.get("biz_opaque_callback_data")
    return StatusUpdate(
        provider_message_id=message_id,
        number_id=number_id,
        # Keep the provider's name even when unknown (`played` is not in SPEC's enum; M-ST lists it).
        status=status,
        timestamp=timestamp,
        recipient_id=_str(st.get("recipient_id")),
        recipient_user_id=_str(st.get("recipient_user_id")),
        errors=_errors(st.get("errors")),
        pricing=_dict(st.get("pricing")),
        conversation=_dict(st.get("conversation")),
        biz_opaque_callback_data=callback_data if isinstance(callback_data, str) else None,
        raw=st,
    )


def _skip(out: _Collector, kind: str, reason: str, provider_id: str | None, number_id: str | None) -> None:
    out.ignored.append(f"invalid:{kind}:{reason}")
    _LOG.warning(
        "skipping malformed Cloud API %s %s on number %s: %s",
        kind,
        provider_id or "(no id)",
        number_id or "(unknown)",
        reason,
    )


def _parse_messages_value(value: dict[str, Any], out: _Collector) -> None:
    metadata = _dict(value.get("metadata")) or {}
    number_id = _str(metadata.get("phone_number_id"))
    display_phone_number = _str(metadata.get("display_phone_number"))

    value_errors = _errors(value.get("errors"))
    if value_errors:
        raw_errors = {"metadata": metadata, "errors": value.get("errors")}
        out.errors.append(ChannelErrorEvent(number_id=number_id, errors=value_errors, raw=raw_errors))

    messages = value.get("messages")
    statuses = value.get("statuses")
    if not messages and not statuses:
        return
    if not number_id:
        # Without the business number an event cannot be routed to a tenant: drop it loudly.
        _skip(out, "value", "missing_phone_number_id", None, None)
        return

    if isinstance(messages, list):
        contacts = value.get("contacts")
        index = _contact_index(contacts)
        for msg in messages:
            if not isinstance(msg, dict):
                _skip(out, "message", "not_an_object", None, number_id)
                continue
            try:
                message, note = _build_message(
                    msg,
                    number_id=number_id,
                    display_phone_number=display_phone_number,
                    index=index,
                    contacts=contacts,
                )
            except _InvalidError as invalid:
                _skip(out, "message", invalid.reason, _str(msg.get("id")), number_id)
                continue
            except ValidationError as exc:
                _skip(out, "message", "validation", _str(msg.get("id")), number_id)
                _LOG.debug("validation errors for Cloud message %s: %s", _str(msg.get("id")), exc)
                continue
            except (ValueError, TypeError, ArithmeticError):
                # A shape no rule above foresaw: one bad message must not cost the rest of the delivery.
                _skip(out, "message", "unexpected_shape", _str(msg.get("id")), number_id)
                _LOG.debug("traceback for Cloud message %s", _str(msg.get("id")), exc_info=True)
                continue
            out.messages.append(message)
            if note is not None:
                out.ignored.append(note)

    if isinstance(statuses, list):
        for st in statuses:
            if not isinstance(st, dict):
                _skip(out, "status", "not_an_object", None, number_id)
                continue
            try:
                out.statuses.append(_build_status(st, number_id=number_id))
            except _InvalidError as invalid:
                _skip(out, "status", invalid.reason, _str(st.get("id")), number_id)
            except ValidationError as exc:
                _skip(out, "status", "validation", _str(st.get("id")), number_id)
                _LOG.debug("validation errors for Cloud status %s: %s", _str(st.get("id")), exc)
            except (ValueError, TypeError, ArithmeticError):
                _skip(out, "status", "unexpected_shape", _str(st.get("id")), number_id)
                _LOG.debug("traceback for Cloud status %s", _str(st.get("id")), exc_info=True)


# ---------------------------------------------------------------------------------------- public API


def _entries(payload: Any) -> list[Any]:
    if not isinstance(payload, dict):
        raise ValueError("a Cloud API webhook body must be a JSON object")
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise ValueError("a Cloud API webhook body needs an 'entry' list")
    return entries


def parse_webhook(payload: dict[str, Any]) -> ParsedWebhook:
    """Split one webhook delivery into inbound messages, statuses and errors; ValueError without `entry`."""
    entries = _entries(payload)
    out = _Collector()
    obj = payload.get("object")
    if obj is not None and obj != _WABA_OBJECT:
        out.ignored.append(f"object:{obj}")
        return out.result()
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            out.ignored.append("invalid:entry")
            continue
        for change in changes:
            if not isinstance(change, dict):
                out.ignored.append("invalid:change")
                continue
            field = change.get("field")
            if field != "messages":
                out.ignored.append(f"field:{field}")
                continue
            value = change.get("value")
            if not isinstance(value, dict):
                out.ignored.append("invalid:change")
                continue
            _parse_messages_value(value, out)
    return out.result()


def parse_webhook_bytes(body: bytes) -> ParsedWebhook:
    """Decode a raw (already signature-checked) webhook body and parse it; ValueError if it is not one."""
    try:
        payload = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both derive from ValueError
        raise ValueError(f"Cloud API webhook body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ValueError("a Cloud API webhook body must be a JSON object")
    return parse_webhook(payload)


def entry_number_ids(payload: dict[str, Any]) -> set[str]:
    """Every ``metadata.phone_number_id`` in a delivery, for routing before full parsing."""
    ids: set[str] = set()
    entries = payload.get("entry") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        return ids
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            continue
        for change in changes:
            value = change.get("value") if isinstance(change, dict) else None
            metadata = value.get("metadata") if isinstance(value, dict) else None
            number_id = _str(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
            if number_id:
                ids.add(number_id)
    return ids
