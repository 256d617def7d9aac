"""The simulator's request validator: Meta's own examples pass, malformed requests get Meta's codes."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from warelay.simulator.validate import (
    GraphRequestError,
    graph_error,
    validate_send_request,
)

SPEC = Path(__file__).resolve().parents[4] / "shared" / "spec" / "business-messaging-api_v23.0.yaml"
SEND_PATH = "/{Version}/{Phone-Number-ID}/messages"

# Examples in the spec that Meta's docs say are wrong: name -> (code, text in details, reason).
WRONG_EXAMPLES: dict[str, tuple[int, str, str]] = {
    "Send Reply to List Message": (
        131008,
        "Param text is required",
        "it has no `type`, which Meta defaults to `text`, and it carries no `text` object "
        "(its `interactive` object is never looked at)",
    ),
    "Send Multi-Product Message": (
        131009,
        "interactive['header']['type']",
        "a product_list header must be of type `text`; `<HEADER_TYPE>` is a placeholder, not a header type",
    ),
    "Send Sample Issue Resolution Template": (
        100,
        "['parameters'][0]['text'] must be a string",
        "a `text` parameter's `text` must be a string; the example sends the booleans true/false",
    ),
}


@functools.cache
def _send_examples() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC.open("rb") as handle:
        spec = yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader, chosen for speed
    body = spec["paths"][SEND_PATH]["post"]["requestBody"]
    examples: dict[str, Any] = {}
    for media in body["content"].values():
        for name, example in media.get("examples", {}).items():
            examples[name] = example["value"]
    return examples


def _example_params() -> list[Any]:
    if not SPEC.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"Meta's spec not found at {SPEC}"))]
    return sorted(_send_examples())


@pytest.mark.parametrize("name", _example_params())
def test_spec_example(name: str) -> None:
    body = copy.deepcopy(_send_examples()[name])
    wrong = WRONG_EXAMPLES.get(name)
    if wrong is None:
        validate_send_request(body)
        return
    code, fragment, _reason = wrong
    with pytest.raises(GraphRequestError) as caught:
        validate_send_request(body)
    assert caught.value.code == code
    assert fragment in (caught.value.details or "")


@pytest.mark.skipif(not SPEC.exists(), reason=f"Meta's spec not found at {SPEC}")
def test_spec_has_all_fifty_examples_and_the_wrong_ones_exist() -> None:
    examples = _send_examples()
    assert len(examples) == 50
    assert set(WRONG_EXAMPLES) <= set(examples)


# ------------------------------------------------------------------------------------ hand-written


def msg(mtype: str, content: Any, **extra: Any) -> dict[str, Any]:
    """A send request of ``mtype`` to a test number."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "15551234567",
        "type": mtype,
        mtype: content,
    }
    body.update(extra)
    return body


def buttons(*titles: str) -> dict[str, Any]:
    """An interactive reply-button message with these titles."""
    return {
        "type": "button",
        "body": {"text": "Pick one"},
        "action": {
            "buttons": [{"type": "reply", "reply": {"id": f"b{i}", "title": t}} for i, t in enumerate(titles)]
        },
    }


def list_message(*row_counts: int, titled: bool = True) -> dict[str, Any]:
    """An interactive list message with sections holding ``row_counts`` rows each."""
    sections = []
    n = 0
    for index, count in enumerate(row_counts):
        rows = []
        for _ in range(count):
            rows.append({"id": f"row-{n}", "title": f"Row {n}", "description": "A row"})
            n += 1
        section: dict[str, Any] = {"rows": rows}
        if titled:
            section["title"] = f"Section {index}"
        sections.append(section)
    return {
        "type": "list",
        "header": {"type": "text", "text": "Menu"},
        "body": {"text": "Choose from the menu"},
        "footer": {"text": "Thanks"},
        "action": {"button": "Open menu", "sections": sections},
    }


def cta(display_text: str = "Open site", url: str = "https://example.com/a?b=c") -> dict[str, Any]:
    """An interactive call-to-action URL message."""
    return {
        "type": "cta_url",
        "body": {"text": "See our site"},
        "action": {"name": "cta_url", "parameters": {"display_text": display_text, "url": url}},
    }


def flow(**params: Any) -> dict[str, Any]:
    """An interactive Flow message with these action parameters."""
    base: dict[str, Any] = {"flow_message_version": "3", "flow_name": "signup", "flow_cta": "Sign up"}
    base.update(params)
    return {"type": "flow", "body": {"text": "Sign up"}, "action": {"name": "flow", "parameters": base}}


def template(**changes: Any) -> dict[str, Any]:
    """A template message body."""
    base: dict[str, Any] = {
        "name": "order_update",
        "language": {"code": "en_US"},
        "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Ana"}]},
            {
                "type": "button",
                "sub_type": "quick_reply",
                "index": "0",
                "parameters": [{"type": "payload", "payload": "YES"}],
            },
        ],
    }
    base.update(changes)
    return base


def with_path(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A copy of ``body`` with the value at ``path`` replaced (or deleted when value is DELETE)."""
    out = copy.deepcopy(body)
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


DELETE = object()

VALID: list[tuple[str, Any]] = [
    ("text at the 4096 limit", msg("text", {"body": "x" * 4096})),
    (
        "type omitted defaults to text",
        {"messaging_product": "whatsapp", "to": "1555", "text": {"body": "hi"}},
    ),
    ("BSUID recipient instead of to", {**msg("text", {"body": "hi"}), "to": None, "recipient": "US.1349120"}),
    ("group recipient", msg("text", {"body": "hi"}, recipient_type="group", to="120363025246125486@g.us")),
    ("reply with context", msg("text", {"body": "hi"}, context={"message_id": "wamid.X"})),
    ("tracker at 512", msg("text", {"body": "hi"}, biz_opaque_callback_data="t" * 512)),
    ("document with filename and caption", msg("document", {"id": "1", "caption": "c", "filename": "a.pdf"})),
    ("caption at 1024", msg("image", {"link": "https://example.com/a.jpg", "caption": "c" * 1024})),
    ("location as numeric strings", msg("location", {"latitude": "-33.9", "longitude": "151.2"})),
    ("location at the poles", msg("location", {"latitude": 90, "longitude": -180})),
    ("reaction removal", msg("reaction", {"message_id": "wamid.X", "emoji": ""})),
    ("reaction with a ZWJ emoji", msg("reaction", {"message_id": "wamid.X", "emoji": "👩‍💻"})),
    ("three buttons", msg("interactive", buttons("Yes", "No", "Maybe"))),
    ("button title at 20", msg("interactive", buttons("x" * 20))),
    (
        "button with image header",
        msg("interactive", {**buttons("A"), "header": {"type": "image", "image": {"id": "9"}}}),
    ),
    ("list with 10 rows over 2 sections", msg("interactive", list_message(4, 6))),
    ("list with one untitled section", msg("interactive", list_message(3, titled=False))),
    ("cta_url", msg("interactive", cta())),
    ("flow by name", msg("interactive", flow())),
    ("flow with data_exchange", msg("interactive", flow(flow_action="data_exchange", mode="published"))),
    (
        "location request",
        msg(
            "interactive",
            {
                "type": "location_request_message",
                "body": {"text": "Where?"},
                "action": {"name": "send_location"},
            },
        ),
    ),
    ("template with quick reply", msg("template", template())),
    ("template without components", msg("template", {"name": "hello_world", "language": {"code": "en_US"}})),
    ("mark as read", {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"}),
    (
        "mark as read with typing",
        {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": "wamid.X",
            "typing_indicator": {"type": "text"},
        },
    ),
]


@pytest.mark.parametrize(("case", "body"), VALID, ids=[case for case, _ in VALID])
def test_valid_requests_pass(case: str, body: dict[str, Any]) -> None:
    if body.get("to", "") is None:
        del body["to"]
    validate_send_request(body)


TEXT = msg("text", {"body": "hello"})
IMAGE = msg("image", {"id": "123"})
LOCATION = msg("location", {"latitude": 1.0, "longitude": 2.0})
CONTACTS = msg("contacts", [{"name": {"formatted_name": "Ana Lima", "first_name": "Ana"}}])
REACTION = msg("reaction", {"message_id": "wamid.X", "emoji": "👍"})
BUTTONS = msg("interactive", buttons("Yes", "No"))
LIST = msg("interactive", list_message(2, 2))
CTA = msg("interactive", cta())
FLOW = msg("interactive", flow())
TEMPLATE = msg("template", template())
READ = {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.X"}
PRODUCT = msg("interactive", {"type": "product", "action": {"catalog_id": "1", "product_retailer_id": "sku"}})
PRODUCT_LIST = msg(
    "interactive",
    {
        "type": "product_list",
        "header": {"type": "text", "text": "Our picks"},
        "body": {"text": "Have a look"},
        "action": {
            "catalog_id": "1",
            "sections": [{"title": "All", "product_items": [{"product_retailer_id": "a"}]}],
        },
    },
)

ROWS = ("interactive", "action", "sections", 0, "rows")
BTN = ("interactive", "action", "buttons")
CTA_P = ("interactive", "action", "parameters")
FLOW_P = ("interactive", "action", "parameters")

INVALID: list[tuple[str, Any, int, str]] = [
    # envelope
    ("body not an object", ["a list"], 100, "JSON object"),
    (
        "messaging_product missing",
        with_path(TEXT, ("messaging_product",), DELETE),
        131008,
        "messaging_product",
    ),
    (
        "messaging_product not whatsapp",
        with_path(TEXT, ("messaging_product",), "sms"),
        100,
        "messaging_product",
    ),
    ("no recipient at all", with_path(TEXT, ("to",), DELETE), 131008, "to"),
    ("to is a number", with_path(TEXT, ("to",), 15551234567), 100, "to"),
    ("recipient_type unknown", with_path(TEXT, ("recipient_type",), "broadcast"), 131009, "recipient_type"),
    ("type unknown", with_path(TEXT, ("type",), "carousel"), 100, "carousel"),
    ("type not a string", with_path(TEXT, ("type",), 7), 100, "type"),
    ("declared type has no object", with_path(IMAGE, ("type",), "video"), 131008, "video"),
    ("unknown top-level key", {**TEXT, "priority": "high"}, 100, "priority"),
    ("object of another type alongside", {**TEXT, "image": {"id": "1"}}, 100, "image"),
    ("context without message_id", {**TEXT, "context": {}}, 131008, "message_id"),
    ("context with a stray key", {**TEXT, "context": {"message_id": "w", "from": "x"}}, 100, "from"),
    ("tracker too long", {**TEXT, "biz_opaque_callback_data": "t" * 513}, 131009, "512"),
    # text
    ("text not an object", with_path(TEXT, ("text",), "hello"), 100, "text"),
    ("text body missing", with_path(TEXT, ("text", "body"), DELETE), 131008, "body"),
    ("text body empty", with_path(TEXT, ("text", "body"), ""), 131009, "body"),
    ("text body too long", with_path(TEXT, ("text", "body"), "x" * 4097), 131009, "4096"),
    ("preview_url not a boolean", with_path(TEXT, ("text", "preview_url"), "yes"), 100, "preview_url"),
    ("text with a stray key", with_path(TEXT, ("text", "format"), "md"), 100, "format"),
    # media
    ("media with id and link", with_path(IMAGE, ("image", "link"), "https://x.test/a.jpg"), 100, "not both"),
    ("media with neither id nor link", with_path(IMAGE, ("image", "id"), DELETE), 131008, "'id' or 'link'"),
    ("media id empty", with_path(IMAGE, ("image", "id"), ""), 131009, "id"),
    ("caption too long", with_path(IMAGE, ("image", "caption"), "c" * 1025), 131009, "1024"),
    ("caption on audio", msg("audio", {"id": "1", "caption": "hi"}), 100, "caption"),
    ("caption on sticker", msg("sticker", {"id": "1", "caption": "hi"}), 100, "caption"),
    ("filename on an image", with_path(IMAGE, ("image", "filename"), "a.jpg"), 100, "filename"),
    # location
    ("latitude missing", with_path(LOCATION, ("location", "latitude"), DELETE), 131008, "latitude"),
    ("latitude out of range", with_path(LOCATION, ("location", "latitude"), 90.5), 131009, "latitude"),
    ("longitude out of range", with_path(LOCATION, ("location", "longitude"), -180.1), 131009, "longitude"),
    ("latitude not numeric", with_path(LOCATION, ("location", "latitude"), "north"), 131009, "latitude"),
    ("latitude a boolean", with_path(LOCATION, ("location", "latitude"), True), 100, "latitude"),
    # contacts
    ("contacts empty", with_path(CONTACTS, ("contacts",), []), 131009, "contacts"),
    ("contacts not a list", with_path(CONTACTS, ("contacts",), {"name": "x"}), 100, "array"),
    ("contact without name", with_path(CONTACTS, ("contacts", 0, "name"), DELETE), 131008, "name"),
    (
        "contact name without formatted_name",
        with_path(CONTACTS, ("contacts", 0, "name", "formatted_name"), DELETE),
        131008,
        "formatted_name",
    ),
    (
        "contact birthday format",
        with_path(CONTACTS, ("contacts", 0, "birthday"), "18/08/2012"),
        131009,
        "birthday",
    ),
    # reaction
    (
        "reaction without message_id",
        with_path(REACTION, ("reaction", "message_id"), DELETE),
        131008,
        "message_id",
    ),
    ("reaction without emoji key", with_path(REACTION, ("reaction", "emoji"), DELETE), 131008, "emoji"),
    ("reaction emoji is words", with_path(REACTION, ("reaction", "emoji"), "great job"), 131009, "emoji"),
    # interactive, common parts
    ("interactive type missing", with_path(BUTTONS, ("interactive", "type"), DELETE), 131008, "type"),
    ("interactive type unknown", with_path(BUTTONS, ("interactive", "type"), "carousel"), 100, "carousel"),
    ("interactive action missing", with_path(BUTTONS, ("interactive", "action"), DELETE), 131008, "action"),
    ("button body missing", with_path(BUTTONS, ("interactive", "body"), DELETE), 131008, "body"),
    (
        "interactive body too long",
        with_path(BUTTONS, ("interactive", "body", "text"), "b" * 1025),
        131009,
        "1024",
    ),
    (
        "header text too long",
        with_path(BUTTONS, ("interactive", "header"), {"type": "text", "text": "h" * 61}),
        131009,
        "60",
    ),
    (
        "header text missing",
        with_path(BUTTONS, ("interactive", "header"), {"type": "text"}),
        131008,
        "text",
    ),
    ("footer too long", with_path(BUTTONS, ("interactive", "footer"), {"text": "f" * 61}), 131009, "60"),
    ("stray interactive key", with_path(BUTTONS, ("interactive", "extra"), 1), 100, "extra"),
    # reply buttons
    ("no buttons", with_path(BUTTONS, BTN, []), 131009, "at least 1"),
    ("four buttons", msg("interactive", buttons("A", "B", "C", "D")), 131009, "at most 3"),
    ("button title too long", msg("interactive", buttons("t" * 21)), 131009, "20"),
    ("button title empty", msg("interactive", buttons("")), 131009, "title"),
    ("duplicate button titles", msg("interactive", buttons("Yes", "Yes")), 131009, "unique"),
    ("button id too long", with_path(BUTTONS, (*BTN, 0, "reply", "id"), "i" * 257), 131009, "256"),
    ("button id padded", with_path(BUTTONS, (*BTN, 0, "reply", "id"), " b0"), 131009, "spaces"),
    ("button type not reply", with_path(BUTTONS, (*BTN, 0, "type"), "url"), 131009, "reply"),
    ("button reply missing", with_path(BUTTONS, (*BTN, 0, "reply"), DELETE), 131008, "reply"),
    # list
    ("list label too long", with_path(LIST, ("interactive", "action", "button"), "m" * 21), 131009, "20"),
    ("list label missing", with_path(LIST, ("interactive", "action", "button"), DELETE), 131008, "button"),
    ("eleven sections", msg("interactive", list_message(*([1] * 11))), 131009, "at most 10"),
    ("eleven rows in total", msg("interactive", list_message(5, 6)), 131009, "Total row count"),
    ("row id too long", with_path(LIST, (*ROWS, 0, "id"), "r" * 201), 131009, "200"),
    ("row title too long", with_path(LIST, (*ROWS, 0, "title"), "r" * 25), 131009, "24"),
    ("row description too long", with_path(LIST, (*ROWS, 0, "description"), "d" * 73), 131009, "72"),
    ("row id duplicated", with_path(LIST, (*ROWS, 1, "id"), "row-0"), 131009, "unique"),
    (
        "section title too long",
        with_path(LIST, ("interactive", "action", "sections", 0, "title"), "s" * 25),
        131009,
        "24",
    ),
    ("untitled section among two", msg("interactive", list_message(1, 1, titled=False)), 131008, "title"),
    ("section without rows", with_path(LIST, ROWS, []), 131009, "rows"),
    (
        "list with an image header",
        with_path(LIST, ("interactive", "header"), {"type": "image", "image": {"id": "1"}}),
        131009,
        "header",
    ),
    # cta_url
    ("cta display_text too long", with_path(CTA, (*CTA_P, "display_text"), "d" * 21), 131009, "20"),
    ("cta url not http", with_path(CTA, (*CTA_P, "url"), "ftp://example.com/x"), 131009, "http(s)"),
    ("cta url missing", with_path(CTA, (*CTA_P, "url"), DELETE), 131008, "url"),
    ("cta action name wrong", with_path(CTA, ("interactive", "action", "name"), "url"), 131009, "name"),
    (
        "cta parameters missing",
        with_path(CTA, ("interactive", "action", "parameters"), DELETE),
        131008,
        "parameters",
    ),
    # flow
    (
        "flow version not 3",
        with_path(FLOW, (*FLOW_P, "flow_message_version"), "2"),
        131009,
        "flow_message_version",
    ),
    ("flow id and name", with_path(FLOW, (*FLOW_P, "flow_id"), "123"), 100, "both"),
    ("flow without id or name", with_path(FLOW, (*FLOW_P, "flow_name"), DELETE), 131008, "flow_id"),
    ("flow cta too long", with_path(FLOW, (*FLOW_P, "flow_cta"), "c" * 31), 131009, "30"),
    ("flow mode unknown", with_path(FLOW, (*FLOW_P, "mode"), "test"), 131009, "mode"),
    (
        "flow payload data empty",
        with_path(FLOW, (*FLOW_P, "flow_action_payload"), {"screen": "A", "data": {}}),
        131009,
        "data",
    ),
    # product, product_list, catalog, location request
    (
        "product with a header",
        with_path(PRODUCT, ("interactive", "header"), {"type": "text", "text": "x"}),
        100,
        "header",
    ),
    (
        "product without retailer id",
        with_path(PRODUCT, ("interactive", "action", "product_retailer_id"), DELETE),
        131008,
        "product_retailer_id",
    ),
    (
        "product list without header",
        with_path(PRODUCT_LIST, ("interactive", "header"), DELETE),
        131008,
        "header",
    ),
    (
        "product list with 31 items",
        with_path(
            PRODUCT_LIST,
            ("interactive", "action", "sections", 0, "product_items"),
            [{"product_retailer_id": str(i)} for i in range(31)],
        ),
        131009,
        "30",
    ),
    (
        "catalog message with wrong action name",
        msg(
            "interactive",
            {"type": "catalog_message", "body": {"text": "See"}, "action": {"name": "catalog"}},
        ),
        131009,
        "name",
    ),
    (
        "location request with wrong action name",
        msg(
            "interactive",
            {"type": "location_request_message", "body": {"text": "Where?"}, "action": {"name": "location"}},
        ),
        131009,
        "send_location",
    ),
    # template
    ("template name missing", with_path(TEMPLATE, ("template", "name"), DELETE), 131008, "name"),
    ("template language missing", with_path(TEMPLATE, ("template", "language"), DELETE), 131008, "language"),
    (
        "template language code missing",
        with_path(TEMPLATE, ("template", "language", "code"), DELETE),
        131008,
        "code",
    ),
    (
        "template language policy unknown",
        with_path(TEMPLATE, ("template", "language", "policy"), "fallback"),
        131009,
        "policy",
    ),
    (
        "template component type unknown",
        with_path(TEMPLATE, ("template", "components", 0, "type"), "sidebar"),
        131009,
        "type",
    ),
    (
        "template button index out of range",
        with_path(TEMPLATE, ("template", "components", 1, "index"), 10),
        131009,
        "index",
    ),
    (
        "template button without sub_type",
        with_path(TEMPLATE, ("template", "components", 1, "sub_type"), DELETE),
        131008,
        "sub_type",
    ),
    (
        "template parameter type unknown",
        with_path(TEMPLATE, ("template", "components", 0, "parameters", 0, "type"), "emoji"),
        100,
        "emoji",
    ),
    (
        "template text parameter without text",
        with_path(TEMPLATE, ("template", "components", 0, "parameters", 0, "text"), DELETE),
        131008,
        "text",
    ),
    # mark as read / typing
    ("read status other than read", {**READ, "status": "delivered"}, 131009, "status"),
    ("read without message_id", {"messaging_product": "whatsapp", "status": "read"}, 131008, "message_id"),
    ("typing of another kind", {**READ, "typing_indicator": {"type": "audio"}}, 131009, "typing_indicator"),
    ("read with a recipient", {**READ, "to": "15551234567"}, 100, "to"),
]


@pytest.mark.parametrize(("case", "body", "code", "fragment"), INVALID, ids=[case for case, *_ in INVALID])
def test_malformed_requests_get_metas_code(case: str, body: Any, code: int, fragment: str) -> None:
    with pytest.raises(GraphRequestError) as caught:
        validate_send_request(body)
    error = caught.value
    assert (error.status, error.code) == (400, code), error.details
    assert fragment in (error.details or "")


def test_error_envelope_matches_meta() -> None:
    with pytest.raises(GraphRequestError) as caught:
        validate_send_request(msg("interactive", buttons("t" * 21)))
    envelope = caught.value.to_response()
    error = envelope["error"]
    assert set(envelope) == {"error"}
    assert error["message"] == "(#131009) Parameter value is not valid"
    assert error["type"] == "OAuthException"
    assert error["code"] == 131009
    assert error["error_data"]["messaging_product"] == "whatsapp"
    assert "title" in error["error_data"]["details"]
    assert isinstance(error["fbtrace_id"], str)
    assert len(error["fbtrace_id"]) > 10
    assert caught.value.to_response("TRACE")["error"]["fbtrace_id"] == "TRACE"


def test_graph_error_uses_metas_titles_and_omits_empty_details() -> None:
    rate = graph_error(400, 130429, "too many messages").to_response()["error"]
    assert rate["message"] == "(#130429) Rate limit hit"
    assert rate["error_data"]["details"] == "too many messages"
    auth = GraphRequestError(401, 190, "Invalid OAuth access token - Cannot parse access token", None)
    assert "error_data" not in auth.to_response()["error"]
