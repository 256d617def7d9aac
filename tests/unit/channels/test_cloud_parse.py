"""Tests of the Cloud API webhook parser against the fixture files and Meta's own spec examples."""

from __future__ import annotations

import copy
import functools
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from warelay.channels.cloud.parse import entry_number_ids, parse_webhook, parse_webhook_bytes
from warelay.domain import (
    ButtonContent,
    ContactsContent,
    DeliveryStatus,
    EditContent,
    InboundMessage,
    InteractiveReplyContent,
    LocationContent,
    MediaContent,
    OrderContent,
    ParsedWebhook,
    ReactionContent,
    RevokeContent,
    SystemContent,
    TextContent,
    UnsupportedContent,
)

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "data" / "cloud"
SPEC = ROOT.parent / "shared" / "spec" / "business-messaging-api_v23.0.yaml"

NUMBER_ID = "106540352242922"
DISPLAY = "15550783881"
USER = "5511976543210"
USER2 = "447700900123"

# Every fixture with (messages, statuses, errors, ignored): the summary every file is checked against.
# A new fixture file must be added here, so no file is ever silently left unparsed.
EXPECTED: dict[str, tuple[int, int, int, tuple[str, ...]]] = {
    "text": (1, 0, 0, ()),
    "text_reply_context": (1, 0, 0, ()),
    "text_forwarded": (1, 0, 0, ()),
    "text_frequently_forwarded": (1, 0, 0, ()),
    "text_long_5000": (1, 0, 0, ()),
    "text_bsuid": (1, 0, 0, ()),
    "text_username_only": (1, 0, 0, ()),
    "image": (1, 0, 0, ()),
    "audio_voice": (1, 0, 0, ()),
    "audio_file": (1, 0, 0, ()),
    "video": (1, 0, 0, ()),
    "document": (1, 0, 0, ()),
    "sticker_animated": (1, 0, 0, ()),
    "location_current": (1, 0, 0, ()),
    "location_place": (1, 0, 0, ()),
    "contacts": (1, 0, 0, ()),
    "interactive_button_reply": (1, 0, 0, ()),
    "interactive_list_reply": (1, 0, 0, ()),
    "interactive_nfm_reply": (1, 0, 0, ()),
    "button_template_quick_reply": (1, 0, 0, ()),
    "reaction": (1, 0, 0, ()),
    "reaction_removed_empty": (1, 0, 0, ()),
    "reaction_removed_no_emoji": (1, 0, 0, ()),
    "order": (1, 0, 0, ()),
    "system_user_changed_number": (1, 0, 0, ()),
    "referral_ad": (1, 0, 0, ()),
    "product_inquiry": (1, 0, 0, ()),
    "unsupported": (1, 0, 0, ()),
    "unknown_type_future": (1, 0, 0, ("type:hologram",)),
    "revoke": (1, 0, 0, ()),
    "edit": (1, 0, 0, ()),
    "batch_two_messages_two_contacts": (2, 0, 0, ()),
    "multi_entry_two_numbers": (2, 0, 0, ()),
    "status_sent": (0, 1, 0, ()),
    "status_delivered": (0, 1, 0, ()),
    "status_read": (0, 1, 0, ()),
    "status_played": (0, 1, 0, ()),
    "status_failed": (0, 1, 0, ()),
    "status_with_pricing_pmp": (0, 1, 0, ()),
    "statuses_batch_out_of_order": (0, 3, 0, ()),
    "value_errors_130429": (0, 0, 1, ()),
    "field_account_update": (0, 0, 0, ("field:account_update",)),
    "field_template_status": (0, 0, 0, ("field:message_template_status_update",)),
    "malformed_message_in_batch": (
        2,
        0,
        0,
        (
            "invalid:message:missing_id",
            "invalid:message:text_without_body",
            "invalid:message:bad_coordinates",
        ),
    ),
}

FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    """A fixture file as a fresh dict."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def parse(name: str) -> ParsedWebhook:
    """A fixture file, parsed from its raw bytes like the webhook route does."""
    return parse_webhook_bytes((FIXTURES / f"{name}.json").read_bytes())


def one(name: str) -> InboundMessage:
    """The single inbound message of a fixture."""
    parsed = parse(name)
    assert len(parsed.messages) == 1
    assert parsed.statuses == ()
    return parsed.messages[0]


def first_message(payload: dict[str, Any]) -> dict[str, Any]:
    """The first ``messages[]`` object of a payload, for building variants of a fixture."""
    msg: dict[str, Any] = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    return msg


def ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# ------------------------------------------------------------------------------- every fixture file


def test_every_fixture_file_is_listed() -> None:
    assert len(FIXTURE_NAMES) == 44
    assert set(FIXTURE_NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_parses_into_expected_events(name: str) -> None:
    payload = load(name)
    parsed = parse(name)
    assert parsed == parse_webhook(payload)
    n_messages, n_statuses, n_errors, ignored = EXPECTED[name]
    assert (len(parsed.messages), len(parsed.statuses), len(parsed.errors)) == (
        n_messages,
        n_statuses,
        n_errors,
    )
    assert parsed.ignored == ignored

    routed = entry_number_ids(payload)
    originals = [
        m
        for entry in payload["entry"]
        for change in entry["changes"]
        for m in change["value"].get("messages", [])
        if "id" in m
    ]
    for message in parsed.messages:
        assert message.number_id in routed
        assert message.timestamp.tzinfo is not None
        assert message.timestamp.utcoffset() == timedelta(0)
        assert message.sender.key
        # Nothing lost: the raw message is kept as sent, with its contact merged in beside it.
        original = next(m for m in originals if m["id"] == message.provider_message_id)
        assert {k: v for k, v in message.raw.items() if k != "_contact"} == original
    for status in parsed.statuses:
        assert status.number_id in routed
        assert status.timestamp.utcoffset() == timedelta(0)
        assert status.raw["id"] == status.provider_message_id


# -------------------------------------------------------------------------------------------- text


def test_text() -> None:
    msg = one("text")
    assert msg.provider_message_id.startswith("wamid.")
    assert msg.number_id == NUMBER_ID
    assert msg.display_phone_number == DISPLAY
    assert msg.type == "text"
    assert isinstance(msg.content, TextContent)
    assert msg.content.body == "Hi! Are you open on Sunday?"
    assert msg.sender.wa_id == USER
    assert msg.sender.profile_name == "Mariana Costa"
    assert msg.sender.user_id is None
    assert msg.timestamp == ts(1750862400)
    assert msg.context is None
    assert msg.referral is None
    assert msg.errors == ()
    assert msg.raw["_contact"] == {"profile": {"name": "Mariana Costa"}, "wa_id": USER}
    assert msg.wants_reply


def test_text_reply_context() -> None:
    msg = one("text_reply_context")
    assert msg.context is not None
    assert msg.context.reply_to_from == DISPLAY
    assert msg.context.reply_to_id is not None
    assert msg.context.reply_to_id.startswith("wamid.")
    assert not msg.context.forwarded
    assert msg.context.referred_product is None


def test_text_forwarded() -> None:
    msg = one("text_forwarded")
    assert msg.context is not None
    assert msg.context.forwarded
    assert not msg.context.frequently_forwarded
    assert msg.context.reply_to_id is None


def test_text_frequently_forwarded() -> None:
    msg = one("text_frequently_forwarded")
    assert msg.context is not None
    assert msg.context.frequently_forwarded
    assert msg.context.forwarded  # forwarded many times is still forwarded
    assert msg.context.reply_to_id is None


def test_text_long_5000_is_not_truncated() -> None:
    msg = one("text_long_5000")
    assert isinstance(msg.content, TextContent)
    assert len(msg.content.body) == 5000
    assert msg.content.body == first_message(load("text_long_5000"))["text"]["body"]
    assert msg.content.body.endswith("😀✅🎉!")
    assert "🚚📦" in msg.content.body


def test_text_bsuid() -> None:
    msg = one("text_bsuid")
    assert msg.sender.wa_id == USER
    assert msg.sender.user_id == "BR.13491208655302741918"
    assert msg.sender.parent_user_id == "BR.ENT.11815799212886844830"
    assert msg.sender.username == "mari.costa"
    assert msg.sender.profile_name == "Mariana Costa"
    assert msg.sender.key == USER


def test_text_username_only() -> None:
    msg = one("text_username_only")
    assert msg.sender.wa_id is None
    assert msg.sender.user_id == "JP.88120947730016453221"
    assert msg.sender.username == "kenji.s"
    assert msg.sender.profile_name == "Kenji Sato"
    assert msg.sender.key == "JP.88120947730016453221"
    assert msg.raw["_contact"]["user_id"] == "JP.88120947730016453221"


# ------------------------------------------------------------------------------------------- media


def test_image() -> None:
    msg = one("image")
    assert isinstance(msg.content, MediaContent)
    assert msg.content.media_type == "image"
    assert msg.content.media_id == "1209384756102938"
    assert msg.content.mime_type == "image/jpeg"
    assert msg.content.sha256 == "q0YxT3bB1w3rL8mB1xqJ4n5dVw0yKdB7mDPbJZf8g2s="
    assert msg.content.caption == "Is this the right part?"
    assert not msg.content.voice
    assert msg.content.url is None


def test_audio_voice() -> None:
    msg = one("audio_voice")
    assert isinstance(msg.content, MediaContent)
    assert msg.content.media_type == "audio"
    assert msg.content.voice
    assert msg.content.mime_type == "audio/ogg; codecs=opus"
    assert msg.content.media_id == "3847561029384756"


def test_audio_file() -> None:
    msg = one("audio_file")
    assert isinstance(msg.content, MediaContent)
    assert msg.content.media_type == "audio"
    assert not msg.content.voice
    assert msg.content.mime_type == "audio/mpeg"


def test_video() -> None:
    msg = one("video")
    assert isinstance(msg.content, MediaContent)
    assert msg.content.media_type == "video"
    assert msg.content.caption == "the noise it makes"
    assert msg.content.media_id == "7261534890716253"


def test_document() -> None:
    msg = one("document")
    assert isinstance(msg.content, MediaContent)
    assert msg.content.media_type == "document"
    assert msg.content.filename == "invoice-2025-06.pdf"
    assert msg.content.caption == "my invoice"
    assert msg.content.mime_type == "application/pdf"


def test_sticker_animated() -> None:
    msg = one("sticker_animated")
    assert isinstance(msg.content, MediaContent)
    assert msg.content.media_type == "sticker"
    assert msg.content.animated
    assert msg.content.mime_type == "image/webp"


def test_media_url_is_kept_when_present() -> None:
    payload = load("image")
    first_message(payload)["image"]["url"] = (
        "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1"
    )
    msg = parse_webhook(payload).messages[0]
    assert isinstance(msg.content, MediaContent)
    assert msg.content.url == "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1"


# ----------------------------------------------------------------------------- location, contacts


def test_location_current_has_coordinates_only() -> None:
    msg = one("location_current")
    assert isinstance(msg.content, LocationContent)
    assert msg.content.latitude == pytest.approx(-23.5613991)
    assert msg.content.longitude == pytest.approx(-46.6565712)
    assert (msg.content.name, msg.content.address, msg.content.url) == (None, None, None)


def test_location_place() -> None:
    msg = one("location_place")
    assert isinstance(msg.content, LocationContent)
    assert msg.content.name == "Parque Ibirapuera"
    assert msg.content.address == "Av. Pedro Álvares Cabral, São Paulo - SP, 04094-050"
    assert msg.content.url == "https://maps.google.com/?cid=1234567890123456789"
    assert msg.content.latitude == pytest.approx(-23.5874162)


@pytest.mark.parametrize(
    ("latitude", "longitude"),
    [("north", 1.0), (None, 1.0), (91.0, 0.0), (0.0, -180.5), (True, 1.0), ("nan", 1.0)],
)
def test_location_with_bad_coordinates_is_skipped(latitude: Any, longitude: Any) -> None:
    payload = load("location_current")
    first_message(payload)["location"] = {"latitude": latitude, "longitude": longitude}
    parsed = parse_webhook(payload)
    assert parsed.messages == ()
    assert parsed.ignored == ("invalid:message:bad_coordinates",)


def test_location_coordinates_as_numeric_strings_are_accepted() -> None:
    payload = load("location_current")
    first_message(payload)["location"] = {"latitude": "12.5", "longitude": "-3"}
    msg = parse_webhook(payload).messages[0]
    assert isinstance(msg.content, LocationContent)
    assert (msg.content.latitude, msg.content.longitude) == (12.5, -3.0)


def test_contacts() -> None:
    msg = one("contacts")
    assert isinstance(msg.content, ContactsContent)
    full, bare = msg.content.contacts
    assert full.formatted_name == "Dra. Lucía Gómez"
    assert (full.first_name, full.last_name) == ("Lucía", "Gómez")
    assert [(p.phone, p.wa_id, p.type) for p in full.phones] == [
        ("+34 612 34 56 78", "34612345678", "CELL"),
        ("+34 910 00 00 00", None, "WORK"),
    ]
    assert full.emails == ("lucia@example.com",)
    assert full.organization == "Clínica Sol"
    assert full.urls == ("https://clinicasol.example",)
    assert full.birthday == "1984-03-12"
    assert full.addresses[0]["city"] == "Madrid"
    # A card with only a name: every other field missing is fine.
    assert bare.formatted_name == "Pedro"
    assert (bare.phones, bare.emails, bare.organization, bare.birthday) == ((), (), None, None)


def test_contact_card_with_nothing_at_all() -> None:
    payload = load("contacts")
    first_message(payload)["contacts"] = [{}, {"name": None, "phones": "not-a-list"}]
    msg = parse_webhook(payload).messages[0]
    assert isinstance(msg.content, ContactsContent)
    assert len(msg.content.contacts) == 2
    assert msg.content.contacts[1].phones == ()


# ------------------------------------------------------------------------------ interactive, button


def test_interactive_button_reply() -> None:
    msg = one("interactive_button_reply")
    assert msg.type == "interactive"
    assert isinstance(msg.content, InteractiveReplyContent)
    assert msg.content.reply_type == "button_reply"
    assert msg.content.id == "confirm-order-8812"
    assert msg.content.title == "Confirm"
    assert msg.context is not None
    assert msg.context.reply_to_from == DISPLAY


def test_interactive_list_reply() -> None:
    msg = one("interactive_list_reply")
    assert isinstance(msg.content, InteractiveReplyContent)
    assert msg.content.reply_type == "list_reply"
    assert msg.content.id == "slot-2025-06-26-10"
    assert msg.content.title == "Thu 10:00"
    assert msg.content.description == "Downtown branch"


def test_interactive_nfm_reply_decodes_response_json() -> None:
    msg = one("interactive_nfm_reply")
    assert isinstance(msg.content, InteractiveReplyContent)
    assert msg.content.reply_type == "flow_reply"
    assert msg.content.flow_name == "flow"
    assert msg.content.flow_body == "Sent"
    assert msg.content.flow_response == {
        "flow_token": "booking-7f3a9c",
        "party_size": "4",
        "date": "2025-06-28",
        "notes": "window seat",
    }


@pytest.mark.parametrize("response_json", ["{not json", "[1, 2]", '"just a string"'])
def test_interactive_nfm_reply_keeps_undecodable_response_raw(response_json: str) -> None:
    payload = load("interactive_nfm_reply")
    first_message(payload)["interactive"]["nfm_reply"]["response_json"] = response_json
    msg = parse_webhook(payload).messages[0]
    assert isinstance(msg.content, InteractiveReplyContent)
    assert msg.content.flow_response == {"_raw": response_json}


def test_interactive_unknown_subtype_becomes_unsupported() -> None:
    payload = load("interactive_button_reply")
    first_message(payload)["interactive"] = {"type": "call_permission_reply", "call_permission_reply": {}}
    parsed = parse_webhook(payload)
    msg = parsed.messages[0]
    assert msg.type == "interactive"
    assert isinstance(msg.content, UnsupportedContent)
    assert msg.content.original_type == "interactive:call_permission_reply"
    assert parsed.ignored == ("type:interactive:call_permission_reply",)


def test_interactive_without_object_next_to_value_errors() -> None:
    # Meta's shape for an answer it could not render: no `interactive` object, a value-level 131000.
    payload = load("interactive_button_reply")
    value = payload["entry"][0]["changes"][0]["value"]
    del first_message(payload)["interactive"]
    value["errors"] = [
        {
            "code": 131000,
            "title": "Something went wrong",
            "error_data": {"details": "Unsupported webhook payload"},
        }
    ]
    parsed = parse_webhook(payload)
    assert len(parsed.messages) == 1
    assert isinstance(parsed.messages[0].content, UnsupportedContent)
    assert parsed.messages[0].content.original_type == "interactive"
    assert [e.code for e in parsed.errors[0].errors] == [131000]
    assert parsed.errors[0].number_id == NUMBER_ID


def test_button_template_quick_reply() -> None:
    msg = one("button_template_quick_reply")
    assert msg.type == "button"
    assert isinstance(msg.content, ButtonContent)
    assert msg.content.payload == "STOP_PROMOS"
    assert msg.content.text == "Stop promotions"
    assert msg.context is not None
    assert msg.context.reply_to_id is not None
    assert msg.wants_reply


# ----------------------------------------------------------------------------------------- reaction


def test_reaction() -> None:
    msg = one("reaction")
    assert isinstance(msg.content, ReactionContent)
    assert msg.content.emoji == "❤️"
    assert msg.content.message_id is not None
    assert msg.content.message_id.startswith("wamid.")
    assert not msg.content.removed
    assert not msg.wants_reply


@pytest.mark.parametrize("name", ["reaction_removed_empty", "reaction_removed_no_emoji"])
def test_reaction_removed(name: str) -> None:
    msg = one(name)
    assert isinstance(msg.content, ReactionContent)
    assert msg.content.emoji is None
    assert msg.content.removed
    assert msg.content.message_id is not None


# ------------------------------------------------------------------------------ order, system, misc


def test_order() -> None:
    msg = one("order")
    assert isinstance(msg.content, OrderContent)
    assert msg.content.catalog_id == "481516234200731"
    assert msg.content.text == "Please deliver after 6pm"
    assert [(i.product_retailer_id, i.quantity, i.item_price, i.currency) for i in msg.content.items] == [
        ("SKU-TSHIRT-M-BLUE", 2, 19.9, "BRL"),
        ("SKU-CAP-RED", 1, 35.0, "BRL"),
    ]


def test_order_with_string_numbers_and_an_item_without_id() -> None:
    payload = load("order")
    first_message(payload)["order"]["product_items"] = [
        {"product_retailer_id": "A", "quantity": "3", "item_price": "9.5", "currency": "EUR"},
        {"quantity": 1},
    ]
    msg = parse_webhook(payload).messages[0]
    assert isinstance(msg.content, OrderContent)
    assert [(i.product_retailer_id, i.quantity, i.item_price) for i in msg.content.items] == [("A", 3, 9.5)]


def test_system_user_changed_number() -> None:
    msg = one("system_user_changed_number")
    assert msg.type == "system"
    assert isinstance(msg.content, SystemContent)
    assert msg.content.system_type == "user_changed_number"
    assert msg.content.new_wa_id == "5511912345678"
    assert msg.content.body == "User Mariana Costa changed from 5511976543210 to 5511912345678"
    # System messages come without contacts: the sender is the old number, with no profile.
    assert msg.sender.wa_id == USER
    assert msg.sender.profile_name is None
    assert "_contact" not in msg.raw
    assert not msg.wants_reply


def test_system_identity_changed_with_bsuid_and_legacy_new_wa_id() -> None:
    payload = load("system_user_changed_number")
    first_message(payload)["system"] = {
        "body": "Security code changed",
        "type": "customer_identity_changed",
        "new_wa_id": "5511900000000",
        "user_id": "BR.99999999999999999999",
    }
    first_message(payload)["identity"] = {
        "acknowledged": False,
        "created_timestamp": "1750862300",
        "hash": "x",
    }
    msg = parse_webhook(payload).messages[0]
    assert isinstance(msg.content, SystemContent)
    assert msg.content.system_type == "customer_identity_changed"
    assert msg.content.new_wa_id == "5511900000000"
    assert msg.content.new_user_id == "BR.99999999999999999999"
    assert msg.raw["identity"]["hash"] == "x"


def test_referral_ad() -> None:
    msg = one("referral_ad")
    assert isinstance(msg.content, TextContent)
    assert msg.referral is not None
    assert msg.referral.source_type == "ad"
    assert msg.referral.source_id == "120219876543210987"
    assert msg.referral.source_url == "https://fb.me/8xQbZ2pLk"
    assert msg.referral.headline == "Summer sale: 30% off"
    assert msg.referral.media_type == "video"
    assert msg.referral.video_url is not None
    assert msg.referral.thumbnail_url is not None
    assert msg.referral.image_url is None
    assert msg.referral.ctwa_clid is not None
    assert msg.referral.ctwa_clid.startswith("ARAk")
    assert msg.referral.welcome_message == "Hi there! Ask us anything about the sale."


def test_product_inquiry() -> None:
    msg = one("product_inquiry")
    assert isinstance(msg.content, TextContent)
    assert msg.context is not None
    assert msg.context.referred_product is not None
    assert msg.context.referred_product.catalog_id == "481516234200731"
    assert msg.context.referred_product.product_retailer_id == "SKU-SNEAKER-42"
    assert msg.context.reply_to_from == DISPLAY


def test_unsupported() -> None:
    parsed = parse("unsupported")
    msg = parsed.messages[0]
    assert msg.type == "unsupported"
    assert isinstance(msg.content, UnsupportedContent)
    assert msg.content.original_type == "poll"
    assert len(msg.errors) == 1
    error = msg.errors[0]
    assert (error.code, error.title, error.message) == (
        131051,
        "Message type unknown",
        "Message type unknown",
    )
    assert error.details == "Message type is currently not supported."
    assert parsed.ignored == ()


def test_unsupported_without_detail_keeps_provider_type() -> None:
    payload = load("unsupported")
    del first_message(payload)["unsupported"]
    first_message(payload)["type"] = "unknown"
    msg = parse_webhook(payload).messages[0]
    assert isinstance(msg.content, UnsupportedContent)
    assert msg.content.original_type == "unknown"


def test_unknown_type_future() -> None:
    parsed = parse("unknown_type_future")
    msg = parsed.messages[0]
    assert msg.type == "hologram"
    assert isinstance(msg.content, UnsupportedContent)
    assert msg.content.original_type == "hologram"
    assert parsed.ignored == ("type:hologram",)
    assert msg.raw["hologram"]["depth_map"] == {"layers": 12, "format": "holo/v2"}
    assert msg.raw["future_top_level_flag"] is True
    assert msg.sender.wa_id == USER


def test_revoke() -> None:
    msg = one("revoke")
    assert isinstance(msg.content, RevokeContent)
    assert msg.content.original_message_id is not None
    assert msg.content.original_message_id.startswith("wamid.")
    assert not msg.wants_reply


def test_edit() -> None:
    msg = one("edit")
    assert isinstance(msg.content, EditContent)
    assert msg.content.original_message_id is not None
    assert msg.content.body == "Sorry, I meant Saturday, not Sunday"
    assert not msg.wants_reply


def test_edit_of_a_caption() -> None:
    payload = load("edit")
    first_message(payload)["edit"]["message"] = {
        "type": "image",
        "image": {"id": "1", "caption": "new caption"},
    }
    msg = parse_webhook(payload).messages[0]
    assert isinstance(msg.content, EditContent)
    assert msg.content.body == "new caption"


# ------------------------------------------------------------------------------------ batches, routing


def test_batch_matches_contacts_by_sender_not_by_index() -> None:
    parsed = parse("batch_two_messages_two_contacts")
    first, second = parsed.messages
    assert (first.sender.wa_id, first.sender.profile_name) == (USER, "Mariana Costa")
    assert (second.sender.wa_id, second.sender.profile_name) == (USER2, "Oliver Hughes")
    assert isinstance(first.content, TextContent)
    assert first.content.body == "first, from Mariana"
    assert first.raw["_contact"]["wa_id"] == USER
    assert second.raw["_contact"]["wa_id"] == USER2


def test_message_whose_sender_has_no_contact_keeps_no_profile() -> None:
    payload = load("batch_two_messages_two_contacts")
    payload["entry"][0]["changes"][0]["value"]["contacts"] = [
        {"profile": {"name": "Oliver Hughes"}, "wa_id": USER2}
    ]
    first, second = parse_webhook(payload).messages
    assert (first.sender.wa_id, first.sender.profile_name) == (USER, None)
    assert "_contact" not in first.raw
    assert second.sender.profile_name == "Oliver Hughes"


def test_multi_entry_two_numbers() -> None:
    payload = load("multi_entry_two_numbers")
    parsed = parse("multi_entry_two_numbers")
    assert [(m.number_id, m.display_phone_number, m.sender.wa_id) for m in parsed.messages] == [
        (NUMBER_ID, DISPLAY, USER),
        ("117893450211876", "15550196402", USER2),
    ]
    assert entry_number_ids(payload) == {NUMBER_ID, "117893450211876"}


# -------------------------------------------------------------------------------------------- statuses


def test_status_sent() -> None:
    parsed = parse("status_sent")
    assert parsed.messages == ()
    status = parsed.statuses[0]
    assert status.provider_message_id.startswith("wamid.")
    assert status.number_id == NUMBER_ID
    assert status.status == "sent"
    assert status.known_status is DeliveryStatus.SENT
    assert status.timestamp == ts(1750862500)
    assert status.recipient_id == USER
    assert status.recipient_user_id is None
    assert status.biz_opaque_callback_data == "turn:7f1c2e9a;part:1"
    assert status.pricing == {"billable": True, "pricing_model": "CBP", "category": "service"}
    assert status.conversation is not None
    assert status.conversation["origin"] == {"type": "service"}
    assert status.conversation["expiration_timestamp"] == "1750948800"
    assert status.errors == ()


def test_status_delivered_with_recipient_user_id() -> None:
    status = parse("status_delivered").statuses[0]
    assert status.known_status is DeliveryStatus.DELIVERED
    assert status.recipient_user_id == "BR.13491208655302741918"
    assert status.biz_opaque_callback_data is None


def test_status_read() -> None:
    status = parse("status_read").statuses[0]
    assert status.status == "read"
    assert status.known_status is DeliveryStatus.READ
    assert status.pricing is None
    assert status.conversation is None


def test_status_played_keeps_provider_name() -> None:
    status = parse("status_played").statuses[0]
    assert status.status == "played"
    assert status.known_status is DeliveryStatus.PLAYED


def test_status_with_a_name_nobody_knows_is_kept() -> None:
    payload = load("status_read")
    payload["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = "held_for_quality_assessment"
    status = parse_webhook(payload).statuses[0]
    assert status.status == "held_for_quality_assessment"
    assert status.known_status is None


def test_status_failed() -> None:
    status = parse("status_failed").statuses[0]
    assert status.status == "failed"
    assert status.known_status is DeliveryStatus.FAILED
    assert status.recipient_id == USER2
    (error,) = status.errors
    assert error.code == 131047
    assert error.title == "Re-engagement message"
    assert error.message == "Re-engagement message"
    assert error.details is not None
    assert error.details.startswith("Message failed to send because more than 24 hours")
    assert error.href == "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


def test_status_with_pricing_pmp() -> None:
    status = parse("status_with_pricing_pmp").statuses[0]
    assert status.pricing == {
        "billable": False,
        "pricing_model": "PMP",
        "category": "service",
        "type": "free_customer_service",
    }
    assert status.conversation is None


def test_statuses_batch_out_of_order_is_kept_in_delivery_order() -> None:
    statuses = parse("statuses_batch_out_of_order").statuses
    assert [s.status for s in statuses] == ["read", "sent", "delivered"]
    assert len({s.provider_message_id for s in statuses}) == 1
    assert [s.timestamp for s in statuses] == [ts(1750862903), ts(1750862901), ts(1750862902)]
    # The later state wins by rank, whatever the order of arrival.
    ranks = [s.known_status.rank for s in statuses if s.known_status is not None]
    assert max(ranks) == DeliveryStatus.READ.rank
    assert statuses[1].pricing is not None
    assert statuses[1].pricing["type"] == "regular"


def test_malformed_status_is_skipped_others_kept(caplog: pytest.LogCaptureFixture) -> None:
    payload = load("statuses_batch_out_of_order")
    statuses = payload["entry"][0]["changes"][0]["value"]["statuses"]
    del statuses[0]["status"]
    statuses[1].pop("id")
    with caplog.at_level(logging.WARNING, logger="warelay.channels.cloud.parse"):
        parsed = parse_webhook(payload)
    assert [s.status for s in parsed.statuses] == ["delivered"]
    assert parsed.ignored == ("invalid:status:missing_status", "invalid:status:missing_id")
    assert any(statuses[0]["id"] in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------ errors, other fields


def test_value_errors_130429() -> None:
    parsed = parse("value_errors_130429")
    assert (parsed.messages, parsed.statuses) == ((), ())
    event = parsed.errors[0]
    assert event.number_id == NUMBER_ID
    (error,) = event.errors
    assert error.code == 130429
    assert error.title == "Rate limit hit"
    assert error.details == "Cloud API message throughput has been reached."
    assert event.raw["metadata"]["phone_number_id"] == NUMBER_ID


def test_field_account_update() -> None:
    parsed = parse("field_account_update")
    assert parsed == ParsedWebhook(ignored=("field:account_update",))
    assert entry_number_ids(load("field_account_update")) == set()


def test_field_template_status() -> None:
    parsed = parse("field_template_status")
    assert parsed == ParsedWebhook(ignored=("field:message_template_status_update",))


def test_malformed_message_in_batch(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="warelay.channels.cloud.parse"):
        parsed = parse("malformed_message_in_batch")
    assert [m.type for m in parsed.messages] == ["text", "image"]
    first, last = parsed.messages
    assert isinstance(first.content, TextContent)
    assert first.content.body == "this one is fine"
    assert isinstance(last.content, MediaContent)
    assert last.content.media_id == "2233445566778899"
    assert parsed.ignored == EXPECTED["malformed_message_in_batch"][3]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    messages = load("malformed_message_in_batch")["entry"][0]["changes"][0]["value"]["messages"]
    logged = "\n".join(r.getMessage() for r in warnings)
    assert messages[2]["id"] in logged  # text without body
    assert messages[3]["id"] in logged  # non-numeric coordinates
    assert "(no id)" in logged


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m.update(type=None), "missing_type"),
        (lambda m: m.update(text="not an object"), "text_object_missing"),
        (lambda m: m.update(text={"body": 42}), "text_without_body"),
        (lambda m: m.update(id=""), "missing_id"),
    ],
)
def test_malformed_message_reasons(mutate: Any, reason: str) -> None:
    payload = load("text")
    mutate(first_message(payload))
    parsed = parse_webhook(payload)
    assert parsed.messages == ()
    assert parsed.ignored == (f"invalid:message:{reason}",)


def test_message_with_no_sender_at_all_is_skipped() -> None:
    payload = load("system_user_changed_number")
    del first_message(payload)["from"]
    parsed = parse_webhook(payload)
    assert parsed.messages == ()
    assert parsed.ignored == ("invalid:message:no_sender",)


def test_message_with_no_sender_beside_a_single_contact_uses_it() -> None:
    payload = load("text_bsuid")
    msg = first_message(payload)
    del msg["from"], msg["from_user_id"]
    sender = parse_webhook(payload).messages[0].sender
    assert (sender.wa_id, sender.user_id) == (USER, "BR.13491208655302741918")


def test_non_object_message_is_skipped_others_kept() -> None:
    payload = load("text")
    payload["entry"][0]["changes"][0]["value"]["messages"].insert(0, "garbage")
    parsed = parse_webhook(payload)
    assert len(parsed.messages) == 1
    assert parsed.ignored == ("invalid:message:not_an_object",)


def test_value_without_phone_number_id_is_not_routed(caplog: pytest.LogCaptureFixture) -> None:
    payload = load("text")
    del payload["entry"][0]["changes"][0]["value"]["metadata"]
    with caplog.at_level(logging.WARNING, logger="warelay.channels.cloud.parse"):
        parsed = parse_webhook(payload)
    assert parsed.messages == ()
    assert parsed.ignored == ("invalid:value:missing_phone_number_id",)
    assert caplog.records


def test_numeric_ids_from_sloppy_payloads_are_read_as_strings() -> None:
    payload = load("text")
    payload["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = int(NUMBER_ID)
    first_message(payload)["from"] = int(USER)
    msg = parse_webhook(payload).messages[0]
    assert msg.number_id == NUMBER_ID
    assert msg.sender.wa_id == USER
    assert msg.sender.profile_name == "Mariana Costa"


# -------------------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize("value", ["not-a-number", None, "", {"s": 1}, "9" * 40, True])
def test_invalid_or_missing_timestamp_falls_back_to_now(value: Any) -> None:
    payload = load("text")
    if value is None:
        del first_message(payload)["timestamp"]
    else:
        first_message(payload)["timestamp"] = value
    before = datetime.now(UTC)
    msg = parse_webhook(payload).messages[0]
    after = datetime.now(UTC)
    assert before <= msg.timestamp <= after


def test_numeric_timestamp_is_accepted() -> None:
    payload = load("text")
    first_message(payload)["timestamp"] = 1750862400
    assert parse_webhook(payload).messages[0].timestamp == ts(1750862400)


def test_status_without_timestamp_falls_back_to_now() -> None:
    payload = load("status_read")
    del payload["entry"][0]["changes"][0]["value"]["statuses"][0]["timestamp"]
    before = datetime.now(UTC)
    status = parse_webhook(payload).statuses[0]
    assert before <= status.timestamp <= datetime.now(UTC)


# ---------------------------------------------------------------------------- robustness, envelope


def _sprinkle_unknown_keys(node: Any) -> None:
    """Add a key nobody knows to every object in a payload."""
    if isinstance(node, dict):
        for child in list(node.values()):
            _sprinkle_unknown_keys(child)
        node["x_future_field"] = {"nested": [1, "two"]}
    elif isinstance(node, list):
        for child in node:
            _sprinkle_unknown_keys(child)


def _without_sprinkles(content: Any) -> Any:
    """Contact-card addresses are passed through as dicts, so they keep the extra key: drop it."""
    if not isinstance(content, ContactsContent):
        return content
    cards = tuple(
        card.model_copy(
            update={
                "addresses": tuple(
                    {k: v for k, v in a.items() if k != "x_future_field"} for a in card.addresses
                )
            }
        )
        for card in content.contacts
    )
    return content.model_copy(update={"contacts": cards})


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_unknown_keys_everywhere_change_nothing(name: str) -> None:
    payload = load(name)
    _sprinkle_unknown_keys(payload)
    expected, parsed = parse(name), parse_webhook(payload)
    assert [
        (m.provider_message_id, _without_sprinkles(m.content), m.sender, m.context, m.referral)
        for m in parsed.messages
    ] == [(m.provider_message_id, m.content, m.sender, m.context, m.referral) for m in expected.messages]
    assert [(s.provider_message_id, s.status, s.errors) for s in parsed.statuses] == [
        (s.provider_message_id, s.status, s.errors) for s in expected.statuses
    ]
    assert parsed.ignored == expected.ignored


def test_other_object_is_ignored() -> None:
    payload = load("text")
    payload["object"] = "instagram"
    assert parse_webhook(payload) == ParsedWebhook(ignored=("object:instagram",))


def test_malformed_entries_and_changes_are_recorded() -> None:
    payload = load("text")
    payload["entry"] = ["nope", {"id": "1"}, {"changes": ["nope", {"field": "messages", "value": []}]}]
    parsed = parse_webhook(payload)
    assert parsed.ignored == ("invalid:entry", "invalid:entry", "invalid:change", "invalid:change")


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[1, 2, 3]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"{}", "'entry' list"),
        (b'{"object": "whatsapp_business_account", "entry": {}}', "'entry' list"),
    ],
)
def test_parse_webhook_bytes_rejects_bodies_that_are_not_webhooks(body: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_webhook_bytes(body)


def test_parse_webhook_bytes_reads_meta_escaped_unicode() -> None:
    # Meta's body escapes non-ASCII as \uXXXX (protocol.md A2).
    payload = load("reaction")
    body = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode()
    assert b"\\u2764" in body
    msg = parse_webhook_bytes(body).messages[0]
    assert isinstance(msg.content, ReactionContent)
    assert msg.content.emoji == "❤️"


def test_entry_number_ids_tolerates_garbage() -> None:
    payload = load("multi_entry_two_numbers")
    payload["entry"].extend(["x", {"changes": [None, {"value": {"metadata": "x"}}]}])
    assert entry_number_ids(payload) == {NUMBER_ID, "117893450211876"}
    assert entry_number_ids({"entry": "nope"}) == set()


def test_parse_does_not_modify_the_payload() -> None:
    payload = load("batch_two_messages_two_contacts")
    snapshot = copy.deepcopy(payload)
    parse_webhook(payload)
    assert payload == snapshot


# ------------------------------------------------------------------------ Meta's own spec examples

SpecCheck = tuple[str | None, type | None, str, Any]

# example name → (message type, content class, dotted attribute, expected value); None type = no message.
SPEC_EXPECTED: dict[str, SpecCheck] = {
    "Text Message": ("text", TextContent, "content.body", "Does it come in another color?"),
    "Text Message with Context (Product Inquiry)": (
        "text",
        TextContent,
        "context.referred_product.product_retailer_id",
        "di9ozbzfi4",
    ),
    "Text Message from Click to WhatsApp Ad": (
        "text",
        TextContent,
        "referral.welcome_message",
        "Hi there! Let us know how we can help!",
    ),
    "Reaction Message": ("reaction", ReactionContent, "content.emoji", "👍"),
    "Image Message": ("image", MediaContent, "content.caption", "Taj Mahal"),
    "Location Message": ("location", LocationContent, "content.name", "Philz Coffee"),
    "Contact Sharing Message": ("contacts", ContactsContent, "content.contacts.0.organization", "Google"),
    "Unsupported Message": ("unsupported", UnsupportedContent, "errors.0.code", 131051),
    "Button Message": ("button", ButtonContent, "content.payload", "Unsubscribe"),
    "Interactive List Reply Message": (
        "interactive",
        InteractiveReplyContent,
        "content.id",
        "priority_express",
    ),
    "Interactive Button Reply Message": (
        "interactive",
        InteractiveReplyContent,
        "content.id",
        "cancel-button",
    ),
    "Order Message": ("order", OrderContent, "content.items.1.product_retailer_id", "nqryix03ez"),
    "System Message": ("system", SystemContent, "content.new_wa_id", "12195555358"),
    "Group Create Message": (None, None, "ignored", ("field:group_lifecycle_update",)),
    "Group Settings Update": (None, None, "ignored", ("field:group_settings_update",)),
    "Group Remove Participants": (None, None, "ignored", ("field:group_participants_update",)),
}


@functools.cache
def spec_examples() -> dict[str, Any]:
    """The request-body examples of the spec's ``/whatsapp/webhooks`` pseudo-path."""
    # The C loader is the same safe loader, six times faster on this 1 MB file.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open(encoding="utf-8") as fh:
        spec = yaml.load(fh, Loader=loader)  # noqa: S506 - a SafeLoader, never the unsafe one
    examples: dict[str, Any] = spec["paths"]["/whatsapp/webhooks"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]
    return examples


def _spec_or_skip() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip(f"Meta's OpenAPI file is not present at {SPEC} (the shared references are absent)")
    return spec_examples()


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def test_spec_has_the_sixteen_webhook_examples() -> None:
    examples = _spec_or_skip()
    assert len(examples) == 16
    assert set(examples) == set(SPEC_EXPECTED)


@pytest.mark.parametrize("example", sorted(SPEC_EXPECTED))
def test_spec_webhook_example_parses(example: str) -> None:
    payload = _spec_or_skip()[example]["value"]
    msg_type, content_cls, dotted, expected = SPEC_EXPECTED[example]
    parsed = parse_webhook(payload)
    assert parsed.statuses == ()
    assert parsed.errors == ()
    if msg_type is None:
        assert parsed.messages == ()
        assert _dig(parsed, dotted) == expected
        return
    assert parsed.ignored == ()
    (msg,) = parsed.messages
    assert msg.type == msg_type
    assert content_cls is not None
    assert isinstance(msg.content, content_cls)
    assert msg.number_id == "106540352242922"
    assert msg.display_phone_number == "15550783881"
    assert msg.sender.wa_id == "16505551234"
    assert _dig(msg, dotted) == expected
