"""Catalog, product-list and Flow messages: Graph bodies, WhatsApp's limits, Meta's example shapes, the
simulator's validator, their text forms, and their round trip through the outbox's stored JSON."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from tests.unit.channels.test_cloud_payloads import SPEC, TO, shape, spec_examples
from warelay.channels.cloud.payloads import ContentLimitError, message_body
from warelay.domain import OutboundContent, OutCatalog, OutFlow, OutProductList, ProductSection
from warelay.outbound.degrade import as_text
from warelay.outbound.outbox import content_text, content_type
from warelay.simulator.validate import GraphRequestError, validate_send_request


def _products(*counts: int, titled: bool = True) -> tuple[ProductSection, ...]:
    return tuple(
        ProductSection(
            title=f"Section {s}" if titled else None,
            product_retailer_ids=tuple(f"sku-{s}-{p}" for p in range(count)),
        )
        for s, count in enumerate(counts)
    )


def _product_list(**changes: Any) -> OutProductList:
    values: dict[str, Any] = {
        "header": "Today's picks",
        "body": "Fresh from the oven",
        "catalog_id": "146265584024623",
        "sections": _products(2, 1),
    }
    return OutProductList(**{**values, **changes})


def _flow(**changes: Any) -> OutFlow:
    values: dict[str, Any] = {"body": "Book a visit", "flow_id": "1234567890", "flow_cta": "Book now"}
    return OutFlow(**{**values, **changes})


# ------------------------------------------------------------------------------------------ bodies


def test_catalog_message_with_and_without_a_thumbnail() -> None:
    body = message_body(
        TO, OutCatalog(body="Our menu", thumbnail_product_retailer_id="sku-1", footer="Fresh daily")
    )
    assert body["type"] == "interactive"
    assert body["interactive"] == {
        "type": "catalog_message",
        "body": {"text": "Our menu"},
        "footer": {"text": "Fresh daily"},
        "action": {"name": "catalog_message", "parameters": {"thumbnail_product_retailer_id": "sku-1"}},
    }
    plain = message_body(TO, OutCatalog(body="Our menu"))
    # No parameters at all: WhatsApp then shows the catalog's first product.
    assert plain["interactive"]["action"] == {"name": "catalog_message"}
    validate_send_request(body)
    validate_send_request(plain)


def test_product_list_body() -> None:
    body = message_body(TO, _product_list(footer="While stocks last"))
    assert body["interactive"] == {
        "type": "product_list",
        "header": {"type": "text", "text": "Today's picks"},
        "body": {"text": "Fresh from the oven"},
        "footer": {"text": "While stocks last"},
        "action": {
            "catalog_id": "146265584024623",
            "sections": [
                {
                    "title": "Section 0",
                    "product_items": [{"product_retailer_id": "sku-0-0"}, {"product_retailer_id": "sku-0-1"}],
                },
                {"title": "Section 1", "product_items": [{"product_retailer_id": "sku-1-0"}]},
            ],
        },
    }
    validate_send_request(body)
    single = message_body(TO, _product_list(sections=_products(3, titled=False)))
    assert "title" not in single["interactive"]["action"]["sections"][0]
    validate_send_request(single)


def test_flow_bodies() -> None:
    full = message_body(
        TO,
        _flow(
            flow_token="booking-42",
            flow_action="navigate",
            screen="WELCOME",
            data={"clinic": "north"},
            header="Visits",
            footer="Takes a minute",
        ),
    )
    assert full["interactive"] == {
        "type": "flow",
        "header": {"type": "text", "text": "Visits"},
        "body": {"text": "Book a visit"},
        "footer": {"text": "Takes a minute"},
        "action": {
            "name": "flow",
            "parameters": {
                "flow_message_version": "3",
                "flow_id": "1234567890",
                "flow_cta": "Book now",
                "flow_token": "booking-42",
                "flow_action": "navigate",
                "flow_action_payload": {"screen": "WELCOME", "data": {"clinic": "north"}},
            },
        },
    }
    minimal = message_body(TO, _flow())
    assert minimal["interactive"]["action"]["parameters"] == {
        "flow_message_version": "3",
        "flow_id": "1234567890",
        "flow_cta": "Book now",
    }
    exchange = message_body(TO, _flow(flow_action="data_exchange"))
    assert exchange["interactive"]["action"]["parameters"]["flow_action"] == "data_exchange"
    assert "flow_action_payload" not in exchange["interactive"]["action"]["parameters"]
    screen_only = message_body(TO, _flow(screen="FIRST"))
    assert screen_only["interactive"]["action"]["parameters"]["flow_action_payload"] == {"screen": "FIRST"}
    for body in (full, minimal, exchange, screen_only):
        validate_send_request(body)


# ------------------------------------------------------------------------------------------ limits


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (OutCatalog(body=""), "interactive.body.text"),
        (OutCatalog(body="x" * 1025), "interactive.body.text"),
        (OutCatalog(body="Menu", footer="f" * 61), "interactive.footer.text"),
        (
            OutCatalog(body="Menu", thumbnail_product_retailer_id=" "),
            "interactive.action.parameters.thumbnail_product_retailer_id",
        ),
        (_product_list(header=""), "interactive.header.text"),
        (_product_list(header="h" * 61), "interactive.header.text"),
        (_product_list(catalog_id=""), "interactive.action.catalog_id"),
        (_product_list(sections=()), "interactive.action.sections"),
        (_product_list(sections=_products(*[1] * 11)), "interactive.action.sections"),
        (_product_list(sections=_products(20, 11)), "interactive.action.sections[].product_items"),
        (_product_list(sections=_products(1, 1, titled=False)), "interactive.action.sections[0].title"),
        (
            _product_list(sections=(ProductSection(title="t" * 25, product_retailer_ids=("a",)),)),
            "interactive.action.sections[0].title",
        ),
        (
            _product_list(sections=(ProductSection(title="A", product_retailer_ids=()),)),
            "interactive.action.sections[0].product_items",
        ),
        (
            _product_list(sections=(ProductSection(title="A", product_retailer_ids=("",)),)),
            "interactive.action.sections[0].product_items[0].product_retailer_id",
        ),
        (_flow(flow_id=""), "interactive.action.parameters.flow_id"),
        (_flow(flow_cta=""), "interactive.action.parameters.flow_cta"),
        (_flow(flow_cta="c" * 21), "interactive.action.parameters.flow_cta"),
        (_flow(flow_token=""), "interactive.action.parameters.flow_token"),
        (_flow(screen=""), "interactive.action.parameters.flow_action_payload.screen"),
        (_flow(data={"a": 1}), "interactive.action.parameters.flow_action_payload.data"),
        (_flow(screen="S", data={}), "interactive.action.parameters.flow_action_payload.data"),
        (_flow(flow_action="data_exchange", screen="S"), "interactive.action.parameters.flow_action_payload"),
        (_flow(body="b" * 1025), "interactive.body.text"),
    ],
)
def test_limits(content: OutboundContent, field: str) -> None:
    with pytest.raises(ContentLimitError) as caught:
        message_body(TO, content)
    assert caught.value.field == field


def test_limits_at_the_edge_pass() -> None:
    edge: list[OutboundContent] = [
        _product_list(sections=_products(*[3] * 10)),  # 10 sections, 30 products
        _product_list(header="h" * 60, body="b" * 1024),
        _flow(flow_cta="c" * 20),
        OutCatalog(body="b" * 1024, footer="f" * 60),
    ]
    for content in edge:
        validate_send_request(message_body(TO, content))


# ------------------------------------------------------------------------- Meta's examples, the simulator


@pytest.mark.parametrize(
    ("example", "content"),
    [
        ("Send Catalog Message", OutCatalog(body="b", thumbnail_product_retailer_id="sku", footer="f")),
        ("Send Multi-Product Message", _product_list(footer="f", sections=_products(2, 2))),
        (
            "Send Published Flow by ID",
            _flow(
                header="h",
                footer="f",
                flow_token="t",
                flow_action="navigate",
                screen="S",
                data={"<CUSTOM_KEY>": "<CUSTOM_VALUE>"},
            ),
        ),
    ],
)
def test_bodies_have_the_shape_of_metas_examples(example: str, content: OutboundContent) -> None:
    if not SPEC.exists():
        pytest.skip(f"Meta's OpenAPI file is not present at {SPEC} (the shared references are absent)")
    assert shape(message_body(TO, content)) == shape(spec_examples()[example])


def _interactive(kind: str, action: dict[str, Any], **parts: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "to": TO,
        "type": "interactive",
        "interactive": {"type": kind, "body": {"text": "b"}, "action": action, **parts},
    }


@pytest.mark.parametrize(
    ("body", "code"),
    [
        # A catalog message's parameters, when given, name the thumbnail's product.
        (_interactive("catalog_message", {"name": "catalog_message", "parameters": {}}), 131008),
        (
            _interactive(
                "catalog_message",
                {"name": "catalog_message", "parameters": {"thumbnail_product_retailer_id": ""}},
            ),
            131009,
        ),
        (
            _interactive(
                "catalog_message", {"name": "catalog_message"}, header={"type": "text", "text": "h"}
            ),
            100,
        ),
        # A product list needs its header.
        (
            _interactive(
                "product_list",
                {"catalog_id": "1", "sections": [{"product_items": [{"product_retailer_id": "a"}]}]},
            ),
            131008,
        ),
        # A Flow's first screen is named, never empty.
        (
            _interactive(
                "flow",
                {
                    "name": "flow",
                    "parameters": {
                        "flow_message_version": "3",
                        "flow_id": "1",
                        "flow_cta": "Go",
                        "flow_action_payload": {"screen": ""},
                    },
                },
            ),
            131009,
        ),
    ],
)
def test_the_simulator_refuses_what_meta_refuses(body: dict[str, Any], code: int) -> None:
    with pytest.raises(GraphRequestError) as caught:
        validate_send_request(body)
    assert caught.value.code == code


# ---------------------------------------------------------------------------- text forms, the outbox


def test_text_forms() -> None:
    products = as_text(_product_list(footer="While stocks last"))
    assert products is not None
    assert products.body == (
        "*Today's picks*\n\nFresh from the oven\n\n"
        "*Section 0*\n• sku-0-0\n• sku-0-1\n*Section 1*\n• sku-1-0\n"
        "Reply with the products you would like.\n\n_While stocks last_"
    )
    catalog = as_text(OutCatalog(body="Our menu", footer="Fresh daily"))
    assert catalog is not None
    assert catalog.body == "Our menu\n\n_Fresh daily_"
    flow = as_text(_flow(header="Visits"))
    assert flow is not None
    # No button is promised where a form cannot open.
    assert flow.body == "*Visits*\n\nBook a visit"


def test_stored_as_interactive_and_read_back_whole() -> None:
    adapter = TypeAdapter[OutboundContent](OutboundContent)
    for content in (OutCatalog(body="Menu"), _product_list(), _flow(screen="S", data={"a": [1, 2]})):
        assert content_type(content) == "interactive"
        assert content_text(content) == content.body
        assert adapter.validate_python(content.model_dump(mode="json")) == content
