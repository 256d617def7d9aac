"""Seed 000's inbound endpoint: an external AI platform replies to a WhatsApp contact through warelay.

``POST /api/v1/integration/ai/send-message`` with the API key in ``x-api-key`` (or
``Authorization: Bearer``; scope ``messages:send``) and the seed's body: ``to``, ``type`` (``text``,
``image``, ``video``, ``document``, ``catalog``, ``flow``), ``text``, ``url``, ``catalog``, ``flow``,
``label``, plus warelay's optional ``from`` (the sending number, needed only when the tenant has
several). It answers ``202 {"success": true, "data": {"message_id", "status": "queued"}}`` once the
message is in the outbox; from there it is sent like an agent's reply (see
:mod:`warelay.outbound.api_send`: active contacts only, audit, ``Idempotency-Key``).

How each type maps to WhatsApp (docs/seed-000-send-message.md shows the requests):

- ``text`` → a text message (markdown made WhatsApp markup, split at 4096 characters);
- ``image`` / ``video`` / ``document`` → media by link; ``label`` is the caption, and a document's
  file name is the last part of its URL's path;
- ``catalog`` ``{"body", "thumbnail_product_retailer_id"?}`` → an interactive catalog message;
  ``{"body", "catalog_id", "sections": [{"title", "product_retailer_ids"}]}`` → a product list, whose
  header (WhatsApp requires one) is ``label``;
- ``flow`` ``{"flow_id", "flow_cta", "body", "flow_token"?, "flow_action"?, "screen"?, "data"?}`` →
  an interactive Flow message; ``label`` may give the button text instead of ``flow_cta``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Final, Literal
from urllib.parse import unquote, urlsplit

import orjson
from fastapi import APIRouter, Depends, Header, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from warelay.api.deps import Principal, RuntimeDep
from warelay.api.seed_envelope import AuditedRoute, caller_of, envelope, require_scope
from warelay.domain import (
    OutboundContent,
    OutCatalog,
    OutFlow,
    OutMedia,
    OutProductList,
    OutText,
    ProductSection,
)
from warelay.outbound.api_send import ApiSend, SendQueued, SendRejectedError, audit_rejection, send_via_api

__all__ = [
    "ROUTE",
    "SendMessageRequest",
    "recipient_key",
    "rejected",
    "request_hash",
    "router",
]

ROUTE: Final = "/api/v1/integration/ai/send-message"
# A phone number (digits, optionally with +, spaces, dashes, dots or brackets) or a business-scoped
# user id (protocol A13: country code, a dot, alphanumerics).
RECIPIENT_PATTERN: Final = r"^(\+?[0-9][0-9 ().-]{3,30}|[A-Z]{2}\.[A-Za-z0-9.]{1,150})$"
_BSUID = re.compile(r"^[A-Z]{2}\.")
_FILENAME_MAX: Final = 240

router = APIRouter(tags=["seed 000: AI agent"], route_class=AuditedRoute)

SenderDep = Annotated[Principal, Depends(require_scope("messages:send"))]
IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e][\x20-\x7e]*$",
        description="a key of your choosing (printable ASCII, up to 255): a retried request with the "
        "same key and body answers the first result instead of sending again (kept 24 hours)",
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductSectionRequest(_Strict):
    """A section of a product list: its title and the products (their retailer ids, SKUs) in it."""

    title: str | None = Field(default=None, description="required when there are several sections")
    product_retailer_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1)


class CatalogRequest(_Strict):
    """A catalog message (``body``, ``thumbnail_product_retailer_id``) or, with ``catalog_id`` and
    ``sections``, a product list."""

    body: str = Field(min_length=1)
    thumbnail_product_retailer_id: str | None = Field(default=None, min_length=1, max_length=200)
    catalog_id: str | None = Field(default=None, min_length=1, max_length=100)
    sections: list[ProductSectionRequest] | None = None


class FlowRequest(_Strict):
    """A WhatsApp Flow message."""

    flow_id: str = Field(min_length=1, max_length=100)
    flow_cta: str | None = Field(default=None, description="the button's text (≤ 20); else `label`")
    body: str = Field(min_length=1)
    flow_token: str | None = Field(default=None, min_length=1, max_length=1000)
    flow_action: Literal["navigate", "data_exchange"] | None = None
    screen: str | None = Field(default=None, min_length=1, max_length=200)
    data: dict[str, Any] | None = None


class SendMessageRequest(_Strict):
    """Seed 000's body (``from`` is warelay's addition)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {"to": "628123456789", "type": "text", "text": "Halo, ada yang bisa kami bantu?"},
                {
                    "to": "628123456789",
                    "type": "document",
                    "url": "https://website.com/brosur.pdf",
                    "label": "Brosur Produk Kami",
                },
                {
                    "to": "628123456789",
                    "type": "image",
                    "url": "https://cdn.website.com/promo.jpg",
                    "label": "Promo Ramadhan 2025",
                },
            ]
        },
    )

    to: str = Field(
        pattern=RECIPIENT_PATTERN,
        description="the contact's WhatsApp number (62xxx), or their business-scoped user id",
    )
    type: Literal["text", "image", "video", "document", "catalog", "flow"]
    text: str | None = Field(default=None, description="the message, for `type=text`")
    url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+\S*$",
        description="the media's http(s) URL, for `type=image/video/document`",
    )
    catalog: CatalogRequest | None = None
    flow: FlowRequest | None = None
    label: str | None = Field(
        default=None,
        description="caption of an image, video or document; header of a product list; button of a flow",
    )
    sender: str | None = Field(
        default=None,
        alias="from",
        min_length=1,
        max_length=64,
        description="warelay: the sending number (phone_number_id or display number); needed only "
        "when the tenant has several",
    )


class SendMessageData(BaseModel):
    """What was queued: warelay's outbox message id (every part's, when a long text was split)."""

    message_id: str
    message_ids: list[str]
    status: Literal["queued"]


class SendMessageAccepted(BaseModel):
    """``202``: the message is in the outbox."""

    success: Literal[True]
    data: SendMessageData


class SeedProblem(BaseModel):
    """One thing wrong with a request."""

    field: str
    message: str


class SeedErrorData(BaseModel):
    """The problems of a request that did not validate."""

    errors: list[SeedProblem]


class SeedError(BaseModel):
    """A refusal, in the seeds' envelope."""

    success: Literal[False]
    message: str
    data: SeedErrorData | None = None


ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    401: {"model": SeedError, "description": "no API key, or not a valid one"},
    403: {"model": SeedError, "description": "the key lacks the route's scope"},
    404: {"model": SeedError, "description": "`from` names no number of the key's tenant"},
    422: {"model": SeedError, "description": "invalid request, or `to` is not an active contact"},
    429: {"model": SeedError, "description": "the key's rate limit (see `Retry-After`)"},
}


class InvalidRequestError(ValueError):
    """A request that is well-formed JSON but does not say one sendable thing."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def recipient_key(to: str) -> str:
    """The key warelay files a recipient under: the digits of a phone number, or the user id as is."""
    to = to.strip()
    return to if _BSUID.match(to) else "".join(ch for ch in to if ch.isdigit())


def request_hash(route: str, payload: dict[str, Any]) -> str:
    """The identity of a request for its Idempotency-Key: the route and the body, canonically."""
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(route.encode() + b"\n" + canonical).hexdigest()


_ALLOWED: Final[dict[str, frozenset[str]]] = {
    "text": frozenset({"text"}),
    "image": frozenset({"url", "label"}),
    "video": frozenset({"url", "label"}),
    "document": frozenset({"url", "label"}),
    "catalog": frozenset({"catalog", "label"}),
    "flow": frozenset({"flow", "label"}),
}
_CONTENT_FIELDS: Final = ("text", "url", "catalog", "flow", "label")


def _required(value: str | None, field: str, kind: str) -> str:
    if value is None or not value.strip():
        raise InvalidRequestError(field, f"is required for type {kind!r}")
    return value


def document_filename(url: str) -> str | None:
    """A document's file name, from its URL: the last part of the path (``…/brosur.pdf`` → ``brosur.pdf``)."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name.strip()
    if not name:
        return None
    return name if len(name) <= _FILENAME_MAX else name[-_FILENAME_MAX:]


def content_of(request: SendMessageRequest) -> OutboundContent:
    """What to send, from the seed's fields (raises :class:`InvalidRequestError`)."""
    kind = request.type
    for name in _CONTENT_FIELDS:
        if getattr(request, name) is not None and name not in _ALLOWED[kind]:
            raise InvalidRequestError(name, f"does not apply to type {kind!r}")
    if kind == "text":
        return OutText(body=_required(request.text, "text", kind))
    if kind in ("image", "video", "document"):
        url = _required(request.url, "url", kind)
        return OutMedia(
            media_type=kind,
            link=url,
            caption=request.label or None,
            filename=document_filename(url) if kind == "document" else None,
        )
    if kind == "catalog":
        return _catalog(request)
    return _flow(request)


def _catalog(request: SendMessageRequest) -> OutboundContent:
    catalog = request.catalog
    if catalog is None:
        raise InvalidRequestError("catalog", "is required for type 'catalog'")
    if catalog.catalog_id is None and catalog.sections is None:
        if request.label is not None:
            raise InvalidRequestError("label", "does not apply to a catalog message (it has no header)")
        return OutCatalog(
            body=catalog.body, thumbnail_product_retailer_id=catalog.thumbnail_product_retailer_id
        )
    # A product list: it names its catalog and sections; WhatsApp shows no thumbnail on it.
    if catalog.thumbnail_product_retailer_id is not None:
        raise InvalidRequestError(
            "catalog.thumbnail_product_retailer_id", "applies to a catalog message, not a product list"
        )
    if catalog.catalog_id is None:
        raise InvalidRequestError("catalog.catalog_id", "is required for a product list (catalog.sections)")
    if not catalog.sections:
        raise InvalidRequestError("catalog.sections", "is required for a product list (catalog.catalog_id)")
    header = _required(request.label, "label", "catalog").strip()
    return OutProductList(
        header=header,
        body=catalog.body,
        catalog_id=catalog.catalog_id,
        sections=tuple(
            ProductSection(title=s.title, product_retailer_ids=tuple(s.product_retailer_ids))
            for s in catalog.sections
        ),
    )


def _flow(request: SendMessageRequest) -> OutboundContent:
    flow = request.flow
    if flow is None:
        raise InvalidRequestError("flow", "is required for type 'flow'")
    if flow.flow_cta is not None and request.label is not None and flow.flow_cta != request.label:
        raise InvalidRequestError("label", "differs from flow.flow_cta; give the button's text once")
    cta = flow.flow_cta if flow.flow_cta is not None else request.label
    if cta is None or not cta.strip():
        raise InvalidRequestError("flow.flow_cta", "is required for type 'flow' (the button's text)")
    return OutFlow(
        body=flow.body,
        flow_id=flow.flow_id,
        flow_cta=cta,
        flow_token=flow.flow_token,
        flow_action=flow.flow_action,
        screen=flow.screen,
        data=flow.data,
    )


def invalid_response(exc: InvalidRequestError) -> JSONResponse:
    """The 422 for a request that does not say one sendable thing."""
    return envelope(
        False,
        f"invalid request: {exc.field}: {exc.message}",
        {"errors": [{"field": exc.field, "message": exc.message}]},
        status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def rejected(exc: SendRejectedError) -> JSONResponse:
    """A refusal of the send service (the Graph field at fault listed when a limit was broken)."""
    data = None
    if exc.field is not None:
        data = {"errors": [{"field": exc.field, "message": exc.problem or exc.reason}]}
    return envelope(False, exc.reason, data, exc.status)


def accepted(queued: SendQueued) -> JSONResponse:
    """The 202 of a send (the first one's again for a replayed Idempotency-Key)."""
    ids = [str(i) for i in queued.message_ids]
    response = envelope(
        True, None, {"message_id": ids[0], "message_ids": ids, "status": "queued"}, status.HTTP_202_ACCEPTED
    )
    if queued.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@router.post(
    ROUTE,
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SendMessageAccepted,
    responses=ERROR_RESPONSES,
    summary="Send a message to an active contact (seed 000)",
)
async def send_message(
    body: SendMessageRequest,
    principal: SenderDep,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Queue a text, media, catalog, product list or Flow message for a contact who wrote recently."""
    caller = caller_of(principal)
    try:
        content = content_of(body)
    except InvalidRequestError as exc:
        await audit_rejection(
            runtime, caller, route=ROUTE, reason=str(exc), recipient=body.to, kind=body.type
        )
        return invalid_response(exc)
    send = ApiSend(
        route=ROUTE,
        to=recipient_key(body.to),
        recipient=body.to,
        type=body.type,
        contents=(content,),
        sender=body.sender,
        idempotency_key=idempotency_key,
        request_hash=request_hash(ROUTE, body.model_dump(mode="json", by_alias=True, exclude_none=True)),
    )
    try:
        queued = await send_via_api(runtime, caller, send)
    except SendRejectedError as exc:
        return rejected(exc)
    return accepted(queued)
