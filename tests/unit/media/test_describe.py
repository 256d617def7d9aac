"""The text form of inbound messages: media with what was read from it, and structured context."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from warelay.agents.base import Attachment, SessionState, Turn, describe_inbound
from warelay.domain import (
    ButtonContent,
    ContactPhone,
    ContactsContent,
    InboundContent,
    InboundMessage,
    InteractiveReplyContent,
    LocationContent,
    MediaContent,
    MessageContext,
    OrderContent,
    OrderItem,
    ReactionContent,
    Referral,
    ReferredProduct,
    SharedContact,
    TextContent,
    UnsupportedContent,
    UserRef,
)


def msg(content: InboundContent, wamid: str = "wamid.1", **extra: Any) -> InboundMessage:
    return InboundMessage(
        provider_message_id=wamid,
        number_id="106540352242922",
        sender=UserRef(wa_id="15551230001"),
        timestamp=datetime(2026, 12, 7, tzinfo=UTC),
        type=getattr(content, "media_type", content.kind),
        content=content,
        **extra,
    )


def test_text_and_media_without_attachments_read_as_before() -> None:
    assert describe_inbound(msg(TextContent(body="Hello there"))) == "Hello there"
    image = MediaContent(media_type="image", media_id="1", caption="this one")
    assert describe_inbound(msg(image)) == "[image] this one"
    voice = MediaContent(media_type="audio", media_id="2", voice=True)
    assert describe_inbound(msg(voice)) == "[voice note]"
    document = MediaContent(media_type="document", media_id="3", filename="menu.pdf")
    assert describe_inbound(msg(document)) == "[document menu.pdf]"


IMAGE = MediaContent(media_type="image", media_id="1", caption="Do you have it in blue?")
VOICE = MediaContent(media_type="audio", media_id="2", voice=True)
AUDIO = MediaContent(media_type="audio", media_id="2")
VIDEO = MediaContent(media_type="video", media_id="3")
DOC = MediaContent(media_type="document", media_id="4", filename="order.pdf", caption="my order")
STICKER = MediaContent(media_type="sticker", media_id="5", animated=True)


@pytest.mark.parametrize(
    ("content", "attachment", "expected"),
    [
        (IMAGE, Attachment("image", "stored", data=b"png"), "[image] Do you have it in blue?"),
        (IMAGE, Attachment("image", "failed"), "[image: it could not be downloaded] Do you have it in blue?"),
        (IMAGE, Attachment("image", "too_large"), "[image: it is too large to open] Do you have it in blue?"),
        (IMAGE, Attachment("image", "unsupported"), "[image: I cannot open it] Do you have it in blue?"),
        (IMAGE, Attachment("image", "expired"), "[image: it is no longer available] Do you have it in blue?"),
        (
            VOICE,
            Attachment("audio", "stored", text="Two loaves, please."),
            "[voice note, transcribed] Two loaves, please.",
        ),
        (
            VOICE,
            Attachment("audio", "stored"),
            "[voice note: the customer sent a voice note I cannot listen to]",
        ),
        (AUDIO, Attachment("audio", "stored"), "[audio: the customer sent an audio I cannot listen to]"),
        (VOICE, Attachment("audio", "failed"), "[voice note: it could not be downloaded]"),
        (VIDEO, Attachment("video", "stored"), "[video: the customer sent a video I cannot watch]"),
        (STICKER, Attachment("sticker", "stored"), "[animated sticker]"),
        (
            DOC,
            Attachment("document", "stored", filename="order.pdf"),
            "[document order.pdf: I cannot read the contents of this file] my order",
        ),
        (DOC, Attachment("document", "too_large"), "[document order.pdf: it is too large to open] my order"),
    ],
)
def test_media_with_attachments(content: MediaContent, attachment: Attachment, expected: str) -> None:
    assert describe_inbound(msg(content), attachment) == expected


def test_document_text_is_quoted_with_its_name_and_cut_marked() -> None:
    attachment = Attachment(
        "document", "stored", filename="order.pdf", text="2 x sourdough\n1 x croissant", text_truncated=True
    )
    assert describe_inbound(msg(DOC), attachment) == (
        '[document order.pdf] my order\nText of order.pdf:\n"""\n2 x sourdough\n1 x croissant\n"""\n'
        "[only the beginning of the document is shown]"
    )
    whole = Attachment("document", "stored", text="hello")
    assert describe_inbound(msg(MediaContent(media_type="document", media_id="9")), whole) == (
        '[document]\nText of the document:\n"""\nhello\n"""'
    )


def test_a_turn_reads_each_message_with_its_own_attachment() -> None:
    voice, text = msg(VOICE, "w.voice"), msg(TextContent(body="and one croissant"), "w.text")
    turn = Turn(
        tenant_id=1,
        tenant="t",
        number_id=1,
        phone_number_id="1",
        agent_id=None,
        user_key="u",
        user_name=None,
        session=SessionState(session_id="s"),
        messages=(voice, text),
        attachments={"w.voice": Attachment("audio", "stored", text="Two loaves")},
    )
    assert turn.text == "[voice note, transcribed] Two loaves\nand one croissant"
    bare = dataclasses.replace(turn, attachments={})
    assert bare.text == "[voice note]\nand one croissant"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            LocationContent(latitude=38.7223, longitude=-9.1393),
            "[location] latitude 38.722300, longitude -9.139300",
        ),
        (
            LocationContent(
                latitude=38.7223,
                longitude=-9.1393,
                name="Sunrise Bakery",
                address="Rua Augusta 1",
                url="https://x.y",
            ),
            "[location] latitude 38.722300, longitude -9.139300; name: Sunrise Bakery;"
            " address: Rua Augusta 1; url: https://x.y",
        ),
        (
            ContactsContent(
                contacts=(
                    SharedContact(
                        formatted_name="Ana Silva",
                        phones=(ContactPhone(phone="+351 912 345 678", wa_id="351912345678", type="CELL"),),
                        emails=("ana@example.com",),
                        organization="Sunrise",
                        addresses=({"street": "Rua Augusta 1", "city": "Lisboa", "type": "HOME"},),
                    ),
                    SharedContact(first_name="Rui", last_name="Costa"),
                )
            ),
            "[shared contact] Ana Silva; phones: +351 912 345 678 (CELL, WhatsApp 351912345678);"
            " emails: ana@example.com; organization: Sunrise; addresses: Rua Augusta 1, Lisboa\n"
            "[shared contact] Rui Costa",
        ),
        (
            InteractiveReplyContent(reply_type="button_reply", id="size-large", title="Large"),
            "[reply button] Large (id: size-large)",
        ),
        (
            InteractiveReplyContent(
                reply_type="list_reply", id="slot-9", title="9:00", description="Tomorrow morning"
            ),
            "[list choice] 9:00 — Tomorrow morning (id: slot-9)",
        ),
        (InteractiveReplyContent(reply_type="button_reply", id="yes", title="yes"), "[reply button] yes"),
        (
            InteractiveReplyContent(
                reply_type="flow_reply",
                flow_name="flow",
                flow_body="Sent",
                flow_response={"flow_token": "tok-1", "date": "2026-12-24", "guests": 4, "diet": ["vegan"]},
            ),
            '[form submitted] date: 2026-12-24; guests: 4; diet: ["vegan"]',
        ),
        (
            InteractiveReplyContent(
                reply_type="flow_reply", flow_name="booking", flow_response={"flow_token": "t"}
            ),
            '[form "booking" submitted] (no answers)',
        ),
        (
            ButtonContent(payload="STOP_PROMOS", text="Stop promotions"),
            "[template button] Stop promotions (payload: STOP_PROMOS)",
        ),
        (ButtonContent(payload="Yes", text="Yes"), "[template button] Yes"),
        (
            OrderContent(
                catalog_id="cat-1",
                text="deliver after 6pm",
                items=(
                    OrderItem(product_retailer_id="sku-bread", quantity=2, item_price=4.5, currency="EUR"),
                    OrderItem(product_retailer_id="sku-cake", quantity=1, item_price=12.0, currency="EUR"),
                ),
            ),
            "[order from catalog cat-1] 2 × sku-bread at 4.50 EUR; 1 × sku-cake at 12.00 EUR;"
            " total 21.00 EUR\nNote with the order: deliver after 6pm",
        ),
        (
            OrderContent(
                items=(OrderItem(product_retailer_id="a"), OrderItem(product_retailer_id="b", quantity=3))
            ),
            "[order] 1 × a; 3 × b",
        ),
        (ReactionContent(message_id="wamid.0", emoji="👍"), "[reacted 👍]"),
        (UnsupportedContent(original_type="poll"), "[unsupported message: poll]"),
    ],
)
def test_structured_context_instead_of_a_bare_title(content: InboundContent, expected: str) -> None:
    assert describe_inbound(msg(content)) == expected


def test_a_product_enquiry_names_the_product() -> None:
    message = msg(
        TextContent(body="Is this available in size M?"),
        context=MessageContext(
            reply_to_id="wamid.catalog",
            referred_product=ReferredProduct(catalog_id="cat-1", product_retailer_id="sku-shirt"),
        ),
    )
    assert (
        describe_inbound(message)
        == "[asking about product sku-shirt (catalog cat-1)]\nIs this available in size M?"
    )


def test_an_ad_referral_comes_first() -> None:
    message = msg(
        TextContent(body="Hi! I saw your ad"),
        referral=Referral(
            source_url="https://fb.me/abc",
            source_id="120212",
            source_type="ad",
            headline="Christmas cakes",
            body="Order by the 20th",
            ctwa_clid="clid",
        ),
        context=MessageContext(forwarded=True),
    )
    assert describe_inbound(message) == (
        '[came from your ad 120212: "Christmas cakes"; Order by the 20th — https://fb.me/abc]\n'
        "[forwarded]\nHi! I saw your ad"
    )
    post = msg(TextContent(body="hello"), referral=Referral(source_type="post"))
    assert describe_inbound(post) == "[came from your post]\nhello"
