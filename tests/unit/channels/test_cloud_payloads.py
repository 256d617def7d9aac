"""Graph request bodies for every outbound content type, WhatsApp's limits, and Meta's example shapes."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from warelay.channels.cloud.payloads import ContentLimitError, mark_read_body, message_body
from warelay.domain import (
    ListRow,
    ListSection,
    OutboundContent,
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
from warelay.simulator.validate import validate_send_request

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT.parent / "shared" / "spec" / "business-messaging-api_v23.0.yaml"
TO = "5511976543210"
WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUYzMjEzNDM2RTZGQ0MzMDJBRgA="


def _rows(n: int) -> tuple[ListRow, ...]:
    return tuple(ListRow(id=f"r{i}", title=f"Row {i}") for i in range(n))


# --------------------------------------------------------------------------------------- every type


def test_text_body() -> None:
    assert message_body(TO, OutText(body="Hello *there* 👋", preview_url=True)) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": TO,
        "type": "text",
        "text": {"body": "Hello *there* 👋", "preview_url": True},
    }


def test_reply_context_bsuid_recipient_and_tracker() -> None:
    body = message_body(
        "US.13491208655302741918",
        OutText(body="hi"),
        reply_to=WAMID,
        recipient_is_user_id=True,
        tracker="turn-42",
    )
    assert body["recipient"] == "US.13491208655302741918"
    assert "to" not in body
    assert body["context"] == {"message_id": WAMID}
    assert body["biz_opaque_callback_data"] == "turn-42"


def test_optional_envelope_fields_are_absent_by_default() -> None:
    body = message_body(TO, OutText(body="hi"))
    assert set(body) == {"messaging_product", "recipient_type", "to", "type", "text"}


@pytest.mark.parametrize(
    ("content", "expected_type", "expected"),
    [
        (
            OutMedia(media_type="image", media_id="123", caption="Menu"),
            "image",
            {"id": "123", "caption": "Menu"},
        ),
        (OutMedia(media_type="image", link="https://x.y/a.jpg"), "image", {"link": "https://x.y/a.jpg"}),
        (
            OutMedia(media_type="video", link="https://x.y/a.mp4", caption="c"),
            "video",
            {"link": "https://x.y/a.mp4", "caption": "c"},
        ),
        (OutMedia(media_type="audio", media_id="9"), "audio", {"id": "9"}),
        (
            OutMedia(media_type="sticker", link="https://x.y/s.webp"),
            "sticker",
            {"link": "https://x.y/s.webp"},
        ),
        (
            OutMedia(media_type="document", media_id="7", caption="Invoice", filename="invoice.pdf"),
            "document",
            {"id": "7", "caption": "Invoice", "filename": "invoice.pdf"},
        ),
    ],
)
def test_media_bodies(content: OutMedia, expected_type: str, expected: dict[str, Any]) -> None:
    body = message_body(TO, content)
    assert body["type"] == expected_type
    assert body[expected_type] == expected


def test_location_body() -> None:
    body = message_body(
        TO, OutLocation(latitude=37.4847, longitude=-122.1486, name="Meta HQ", address="1 Hacker Way")
    )
    assert body["location"] == {
        "latitude": 37.4847,
        "longitude": -122.1486,
        "name": "Meta HQ",
        "address": "1 Hacker Way",
    }
    bare = message_body(TO, OutLocation(latitude=0.0, longitude=0.0))
    assert bare["location"] == {"latitude": 0.0, "longitude": 0.0}


def test_reaction_body_and_removal() -> None:
    body = message_body(TO, OutReaction(message_id=WAMID, emoji="👍🏽"), reply_to=WAMID)
    assert body["type"] == "reaction"
    assert body["reaction"] == {"message_id": WAMID, "emoji": "👍🏽"}
    assert "context" not in body  # a reaction names its message itself
    removal = message_body(TO, OutReaction(message_id=WAMID, emoji=""))
    assert removal["reaction"] == {"message_id": WAMID, "emoji": ""}


def test_reply_buttons_body() -> None:
    content = OutButtons(
        body="Pick one",
        buttons=(ReplyButton(id="yes", title="Yes ✅"), ReplyButton(id="no", title="No")),
        header="Question",
        footer="Tap a button",
    )
    assert message_body(TO, content)["interactive"] == {
        "type": "button",
        "header": {"type": "text", "text": "Question"},
        "body": {"text": "Pick one"},
        "footer": {"text": "Tap a button"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": "yes", "title": "Yes ✅"}},
                {"type": "reply", "reply": {"id": "no", "title": "No"}},
            ]
        },
    }


def test_list_body() -> None:
    content = OutList(
        body="Our menu",
        button="See menu",
        sections=(
            ListSection(
                title="Pizza", rows=(ListRow(id="p1", title="Margherita", description="Tomato, basil"),)
            ),
            ListSection(title="Pasta", rows=(ListRow(id="s1", title="Carbonara"),)),
        ),
        footer="Prices incl. VAT",
    )
    assert message_body(TO, content)["interactive"] == {
        "type": "list",
        "body": {"text": "Our menu"},
        "footer": {"text": "Prices incl. VAT"},
        "action": {
            "button": "See menu",
            "sections": [
                {
                    "title": "Pizza",
                    "rows": [{"id": "p1", "title": "Margherita", "description": "Tomato, basil"}],
                },
                {"title": "Pasta", "rows": [{"id": "s1", "title": "Carbonara"}]},
            ],
        },
    }


def test_a_single_section_needs_no_title() -> None:
    body = message_body(TO, OutList(body="b", button="Open", sections=(ListSection(rows=_rows(3)),)))
    assert body["interactive"]["action"]["sections"] == [
        {
            "rows": [
                {"id": "r0", "title": "Row 0"},
                {"id": "r1", "title": "Row 1"},
                {"id": "r2", "title": "Row 2"},
            ]
        }
    ]


def test_cta_url_body() -> None:
    content = OutCtaUrl(
        body="Track your order", display_text="Track", url="https://shop.example/t/1", header="📦"
    )
    assert message_body(TO, content)["interactive"] == {
        "type": "cta_url",
        "header": {"type": "text", "text": "📦"},
        "body": {"text": "Track your order"},
        "action": {
            "name": "cta_url",
            "parameters": {"display_text": "Track", "url": "https://shop.example/t/1"},
        },
    }


def test_location_request_body_passes_the_simulators_validator() -> None:
    body = message_body(TO, OutLocationRequest(body="Where should we deliver?"), reply_to=WAMID)
    assert body["interactive"] == {
        "type": "location_request_message",
        "body": {"text": "Where should we deliver?"},
        "action": {"name": "send_location"},
    }
    validate_send_request(body)  # Meta's rules as the simulator knows them: no header, action name only
    assert _limit_error(OutLocationRequest(body="b" * 1025)).field == "interactive.body.text"
    assert _limit_error(OutLocationRequest(body="")).field == "interactive.body.text"


def test_raw_content_is_passed_through() -> None:
    template = {"name": "hello_world", "language": {"code": "en_US"}}
    body = message_body(TO, OutRaw(type="template", payload=template), tracker="t1")
    assert body["type"] == "template"
    assert body["template"] == template
    assert body["biz_opaque_callback_data"] == "t1"


@pytest.mark.parametrize("typing", [False, True])
def test_mark_read_body(typing: bool) -> None:
    body = mark_read_body(WAMID, typing=typing)
    expected: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": WAMID}
    if typing:
        expected["typing_indicator"] = {"type": "text"}
    assert body == expected


# -------------------------------------------------------------------------------------------- limits


def _limit_error(content: OutboundContent, **kwargs: Any) -> ContentLimitError:
    with pytest.raises(ContentLimitError) as info:
        message_body(TO, content, **kwargs)
    assert isinstance(info.value, ValueError)
    return info.value


def test_text_limits() -> None:
    assert message_body(TO, OutText(body="x" * 4096))["text"]["body"] == "x" * 4096
    err = _limit_error(OutText(body="x" * 4097))
    assert (err.field, err.limit, err.actual) == ("text.body", 4096, 4097)
    assert "4096" in str(err)
    assert _limit_error(OutText(body="")).field == "text.body"
    assert _limit_error(OutText(body="  \n ")).field == "text.body"


def test_text_limit_counts_code_points() -> None:
    emoji = "👨\u200d👩\u200d👧"  # 5 code points
    assert message_body(TO, OutText(body=emoji * 819))["type"] == "text"  # 4095
    assert _limit_error(OutText(body=emoji * 820)).actual == 4100


def test_caption_limit() -> None:
    ok = OutMedia(media_type="image", media_id="1", caption="c" * 1024)
    assert message_body(TO, ok)["image"]["caption"] == "c" * 1024
    err = _limit_error(OutMedia(media_type="video", media_id="1", caption="c" * 1025))
    assert (err.field, err.limit) == ("video.caption", 1024)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (OutMedia(media_type="image"), "image.id/image.link"),
        (OutMedia(media_type="image", media_id="1", link="https://x.y/a.jpg"), "image.id/image.link"),
        (OutMedia(media_type="image", link="ftp://x.y/a.jpg"), "image.link"),
        (OutMedia(media_type="image", link="/local/file.jpg"), "image.link"),
        (OutMedia(media_type="audio", media_id="1", caption="no captions on audio"), "audio.caption"),
        (OutMedia(media_type="sticker", media_id="1", caption="nor on stickers"), "sticker.caption"),
        (OutMedia(media_type="image", media_id="1", filename="a.jpg"), "image.filename"),
        (OutLocation(latitude=91.0, longitude=0.0), "location.latitude"),
        (OutLocation(latitude=0.0, longitude=-180.5), "location.longitude"),
        (OutReaction(message_id="", emoji="👍"), "reaction.message_id"),
    ],
)
def test_media_location_and_reaction_rules(content: OutboundContent, field: str) -> None:
    assert _limit_error(content).field == field


def _buttons(
    *titles: str, body: str = "Pick", header: str | None = None, footer: str | None = None
) -> OutButtons:
    buttons = tuple(ReplyButton(id=f"b{i}", title=t) for i, t in enumerate(titles))
    return OutButtons(body=body, buttons=buttons, header=header, footer=footer)


@pytest.mark.parametrize(
    ("content", "field", "limit"),
    [
        (_buttons(), "interactive.action.buttons", 3),
        (_buttons("a", "b", "c", "d"), "interactive.action.buttons", 3),
        (_buttons("x" * 21), "interactive.action.buttons[0].reply.title", 20),
        (_buttons("ok", ""), "interactive.action.buttons[1].reply.title", None),
        (_buttons("Same", "Same"), "interactive.action.buttons[].reply.title", None),
        (_buttons("a", body="b" * 1025), "interactive.body.text", 1024),
        (_buttons("a", body=""), "interactive.body.text", None),
        (_buttons("a", header="h" * 61), "interactive.header.text", 60),
        (_buttons("a", footer="f" * 61), "interactive.footer.text", 60),
        (
            OutButtons(body="b", buttons=(ReplyButton(id="i" * 257, title="t"),)),
            "interactive.action.buttons[0].reply.id",
            256,
        ),
        (
            OutButtons(
                body="b", buttons=(ReplyButton(id="same", title="a"), ReplyButton(id="same", title="b"))
            ),
            "interactive.action.buttons[].reply.id",
            None,
        ),
    ],
)
def test_button_limits(content: OutButtons, field: str, limit: int | None) -> None:
    err = _limit_error(content)
    assert err.field == field
    assert err.limit == limit


def test_button_limits_at_the_edge_pass() -> None:
    content = _buttons("a" * 20, "b", "c", body="x" * 1024, header="h" * 60, footer="f" * 60)
    assert len(message_body(TO, content)["interactive"]["action"]["buttons"]) == 3


def _list(*sections: ListSection, button: str = "Open") -> OutList:
    return OutList(body="Choose", button=button, sections=sections)


@pytest.mark.parametrize(
    ("content", "field", "limit"),
    [
        (_list(ListSection(rows=_rows(1)), button="b" * 21), "interactive.action.button", 20),
        (_list(ListSection(rows=_rows(1)), button=""), "interactive.action.button", None),
        (_list(), "interactive.action.sections", 10),
        (
            _list(*(ListSection(title=f"S{i}", rows=_rows(1)) for i in range(11))),
            "interactive.action.sections",
            10,
        ),
        # 10 rows is the total across sections, not per section (M-LIST).
        (
            _list(ListSection(title="A", rows=_rows(6)), ListSection(title="B", rows=_rows(5))),
            "interactive.action.sections[].rows",
            10,
        ),
        (_list(ListSection(rows=())), "interactive.action.sections[].rows", 10),
        (
            _list(ListSection(title="A", rows=_rows(1)), ListSection(rows=_rows(1))),
            "interactive.action.sections[1].title",
            None,
        ),
        (_list(ListSection(title="t" * 25, rows=_rows(1))), "interactive.action.sections[0].title", 24),
        (
            _list(ListSection(rows=(ListRow(id="i" * 201, title="t"),))),
            "interactive.action.sections[0].rows[0].id",
            200,
        ),
        (
            _list(ListSection(rows=(ListRow(id="i", title="t" * 25),))),
            "interactive.action.sections[0].rows[0].title",
            24,
        ),
        (
            _list(ListSection(rows=(ListRow(id="i", title="t", description="d" * 73),))),
            "interactive.action.sections[0].rows[0].description",
            72,
        ),
        (
            _list(
                ListSection(title="A", rows=(ListRow(id="dup", title="a"),)),
                ListSection(title="B", rows=(ListRow(id="dup", title="b"),)),
            ),
            "interactive.action.sections[].rows[].id",
            None,
        ),
    ],
)
def test_list_limits(content: OutList, field: str, limit: int | None) -> None:
    err = _limit_error(content)
    assert err.field == field
    assert err.limit == limit


def test_list_limits_at_the_edge_pass() -> None:
    rows_a = tuple(ListRow(id=f"a{i}" + "i" * 190, title="t" * 24, description="d" * 72) for i in range(5))
    rows_b = tuple(ListRow(id=f"b{i}", title=f"B{i}") for i in range(5))
    content = _list(
        ListSection(title="x" * 24, rows=rows_a), ListSection(title="B", rows=rows_b), button="b" * 20
    )
    sections = message_body(TO, content)["interactive"]["action"]["sections"]
    assert sum(len(s["rows"]) for s in sections) == 10


@pytest.mark.parametrize(
    ("content", "field", "limit"),
    [
        (
            OutCtaUrl(body="b", display_text="d" * 21, url="https://x.y"),
            "interactive.action.parameters.display_text",
            20,
        ),
        (
            OutCtaUrl(body="b", display_text="", url="https://x.y"),
            "interactive.action.parameters.display_text",
            None,
        ),
        (
            OutCtaUrl(body="b", display_text="Go", url="javascript:alert(1)"),
            "interactive.action.parameters.url",
            None,
        ),
        (OutCtaUrl(body="b" * 1025, display_text="Go", url="https://x.y"), "interactive.body.text", 1024),
        (
            OutCtaUrl(body="b", display_text="Go", url="https://x.y", footer="f" * 61),
            "interactive.footer.text",
            60,
        ),
    ],
)
def test_cta_url_limits(content: OutCtaUrl, field: str, limit: int | None) -> None:
    err = _limit_error(content)
    assert err.field == field
    assert err.limit == limit


def test_tracker_limit() -> None:
    assert message_body(TO, OutText(body="hi"), tracker="t" * 512)["biz_opaque_callback_data"] == "t" * 512
    err = _limit_error(OutText(body="hi"), tracker="t" * 513)
    assert (err.field, err.limit) == ("biz_opaque_callback_data", 512)


def test_recipient_and_message_id_are_required() -> None:
    with pytest.raises(ContentLimitError):
        message_body("", OutText(body="hi"))
    with pytest.raises(ContentLimitError):
        mark_read_body("", typing=False)


# ------------------------------------------------------------------------------- Meta's spec examples


@functools.cache
def spec_examples() -> dict[str, Any]:
    """The request-body examples of operation sendMessage (``/{Version}/{Phone-Number-ID}/messages``)."""
    # The C loader is the same safe loader, several times faster on this 1 MB file.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open(encoding="utf-8") as fh:
        spec = yaml.load(fh, Loader=loader)  # noqa: S506 - a SafeLoader, never the unsafe one
    operation = spec["paths"]["/{Version}/{Phone-Number-ID}/messages"]["post"]
    assert operation["operationId"] == "sendMessage"
    examples: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["examples"]
    return {name: example["value"] for name, example in examples.items()}


def shape(value: Any) -> Any:
    """Keys, not values: dicts become their key structure, lists the shape of each item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return None


SPEC_CASES: list[tuple[str, OutboundContent, dict[str, Any]]] = [
    ("Send Text Message", OutText(body="hello"), {}),
    ("Send Reply to Text Message", OutText(body="hello"), {"reply_to": WAMID}),
    ("Send Image Message by ID", OutMedia(media_type="image", media_id="1"), {}),
    ("Send Image Message by URL", OutMedia(media_type="image", link="https://x.y/a.jpg"), {}),
    ("Send Reply to Image Message by ID", OutMedia(media_type="image", media_id="1"), {"reply_to": WAMID}),
    ("Send Audio Message by ID", OutMedia(media_type="audio", media_id="1"), {}),
    ("Send Audio Message by URL", OutMedia(media_type="audio", link="https://x.y/a.ogg"), {}),
    (
        "Send Document Message by ID",
        OutMedia(media_type="document", media_id="1", caption="c", filename="f.pdf"),
        {},
    ),
    (
        "Send Document Message by URL",
        OutMedia(media_type="document", link="https://x.y/f.pdf", caption="c"),
        {},
    ),
    ("Send Video Message by ID", OutMedia(media_type="video", media_id="1", caption="c"), {}),
    ("Send Video Message by URL", OutMedia(media_type="video", link="https://x.y/v.mp4", caption="c"), {}),
    (
        "Send Reply to Video Message by URL",
        OutMedia(media_type="video", link="https://x.y/v.mp4", caption="c"),
        {"reply_to": WAMID},
    ),
    ("Send Sticker Message by ID", OutMedia(media_type="sticker", media_id="1"), {}),
    ("Send Sticker Message by URL", OutMedia(media_type="sticker", link="https://x.y/s.webp"), {}),
    ("Send Location Message", OutLocation(latitude=1.0, longitude=2.0, name="n", address="a"), {}),
    (
        "Send Reply to Location Message",
        OutLocation(latitude=1.0, longitude=2.0, name="n", address="a"),
        {"reply_to": WAMID},
    ),
    ("Send Reply with Reaction Message", OutReaction(message_id=WAMID, emoji="😀"), {}),
    ("Send Reply Button", _buttons("One", "Two"), {}),
    (
        "Send List Message",
        OutList(
            body="b",
            button="Open",
            header="h",
            footer="f",
            sections=(
                ListSection(
                    title="A",
                    rows=(
                        ListRow(id="1", title="t", description="d"),
                        ListRow(id="2", title="t", description="d"),
                    ),
                ),
                ListSection(
                    title="B",
                    rows=(
                        ListRow(id="3", title="t", description="d"),
                        ListRow(id="4", title="t", description="d"),
                    ),
                ),
            ),
        ),
        {},
    ),
    (
        "Send Test Message",
        OutRaw(type="template", payload={"name": "hello_world", "language": {"code": "en_US"}}),
        {},
    ),
]


@pytest.mark.parametrize(("example", "content", "options"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_body_has_the_shape_of_metas_example(
    example: str, content: OutboundContent, options: dict[str, Any]
) -> None:
    if not SPEC.exists():
        pytest.skip(f"Meta's OpenAPI file is not present at {SPEC} (the shared references are absent)")
    expected = spec_examples()[example]
    body = message_body(TO, content, **options)
    if "recipient_type" not in expected:
        body.pop("recipient_type")  # "individual" is Graph's default; some examples leave it out
    assert shape(body) == shape(expected)


def test_mark_read_with_typing_has_the_shape_of_metas_example() -> None:
    if not SPEC.exists():
        pytest.skip(f"Meta's OpenAPI file is not present at {SPEC} (the shared references are absent)")
    expected = spec_examples()["Send typing indicator and read receipt"]
    assert shape(mark_read_body(WAMID, typing=True)) == shape(expected)
    assert mark_read_body(WAMID, typing=True)["typing_indicator"] == expected["typing_indicator"]
