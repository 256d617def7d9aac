"""Rich replies as text, for channels that cannot send them."""

from __future__ import annotations

from warelay.domain import (
    ListRow,
    ListSection,
    OutButtons,
    OutCtaUrl,
    OutList,
    OutLocation,
    OutLocationRequest,
    OutMedia,
    OutRaw,
    OutReaction,
    OutText,
    ReplyButton,
)
from warelay.outbound.degrade import as_text


def test_buttons_become_numbered_options() -> None:
    content = OutButtons(
        body="Which size?",
        buttons=(ReplyButton(id="a", title="Small"), ReplyButton(id="b", title="Large")),
        header="Latte",
        footer="Prices incl. tax",
    )
    options = "1. Small\n2. Large\nReply with the number or the words."
    assert as_text(content) == OutText(body=f"*Latte*\n\nWhich size?\n\n{options}\n\n_Prices incl. tax_")


def test_list_rows_are_numbered_across_sections() -> None:
    content = OutList(
        body="Our menu",
        button="See drinks",
        sections=(
            ListSection(title="Coffee", rows=(ListRow(id="1", title="Latte", description="Milky"),)),
            ListSection(title="Tea", rows=(ListRow(id="2", title="Jasmine"),)),
        ),
    )
    text = as_text(content)
    assert text is not None
    assert (
        text.body
        == "Our menu\n\n*Coffee*\n1. Latte — Milky\n*Tea*\n2. Jasmine\nReply with the number or the words."
    )


def test_links_locations_and_media_keep_their_address() -> None:
    cta = as_text(OutCtaUrl(body="Order online", display_text="Open shop", url="https://shop.example"))
    assert cta == OutText(body="Order online\n\nOpen shop: https://shop.example", preview_url=True)
    pin = as_text(OutLocation(latitude=-6.2, longitude=106.8, name="Kopi Nusantara"))
    assert pin == OutText(body="Kopi Nusantara\nhttps://maps.google.com/?q=-6.2,106.8", preview_url=True)
    image = as_text(OutMedia(media_type="image", link="https://cdn.example/a.jpg", caption="Our latte"))
    assert image == OutText(body="Our latte\nhttps://cdn.example/a.jpg", preview_url=True)
    ask = as_text(OutLocationRequest(body="Where should we deliver?"))
    assert ask is not None
    assert ask.body.startswith("Where should we deliver?\n\nPlease share your location")


def test_what_has_no_text_form() -> None:
    assert as_text(OutReaction(message_id="wamid.X", emoji="👍")) is None
    assert as_text(OutMedia(media_type="image", media_id="123")) is None
    assert as_text(OutRaw(type="template", payload={})) is None
    assert as_text(OutText(body="as is")) == OutText(body="as is")
