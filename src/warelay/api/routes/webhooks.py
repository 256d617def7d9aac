"""Webhook intake: verify, parse, route by number, store durably, then answer 200.

Where it sits: the first stage of the path. Nothing slow happens before the answer: the signature
is checked over the raw bytes, the JSON parsed into domain events, and the events stored in one
(group-committed) transaction; agents and sends run later in the workers. The same handling serves
``/webhooks/whatsapp`` and the seeds' ``/webhook``, ``/whatsapp/webhook`` and ``/api/meta-webhook``.

The decisions are made by ``answer_verification`` and ``answer_delivery``, which take raw ASGI
pieces and return a status and a body, so two thin callers share them: the raw ASGI front in
``warelay.api.intake``, which answers these paths in the running app without FastAPI's per-request
machinery, and the FastAPI routes below, which document the endpoints in OpenAPI and serve them
wherever the front is not in place (the router used on its own).
"""

from __future__ import annotations

import json
import logging

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive

from warelay.api.deps import RuntimeDep
from warelay.channels.cloud.parse import parse_webhook
from warelay.channels.cloud.webhook import SIGNATURE_HEADER, matching_secrets, verify_subscription
from warelay.domain import ParsedWebhook
from warelay.errors import WebhookRejectedError
from warelay.inbox.store import Delivery
from warelay.numbers import NumberInfo
from warelay.runtime import Runtime

log = logging.getLogger("warelay.webhooks")

WEBHOOK_PATHS = ("/webhooks/whatsapp", "/webhook", "/whatsapp/webhook", "/api/meta-webhook")

router = APIRouter(tags=["webhooks"])

JsonBody = dict[str, object]


def answer_verification(runtime: Runtime, query_string: bytes) -> tuple[int, str]:
    """Meta's subscription handshake: (200, ``hub.challenge``) when the verify token matches."""
    try:
        challenge = verify_subscription(
            query_string.decode("utf-8", "replace"), runtime.registry.verify_tokens()
        )
    except WebhookRejectedError as exc:
        runtime.metrics.webhooks.labels("verify_rejected").inc()
        return exc.status_code, "Forbidden"
    runtime.metrics.webhooks.labels("verified").inc()
    return 200, challenge


async def answer_delivery(
    runtime: Runtime, receive: Receive, content_type: str, signature: str | None
) -> tuple[int, JsonBody]:
    """Read, check, parse, route and store one delivery; 200 only once it is durable."""
    try:
        body = await _read_body(receive, runtime.settings.max_body_bytes)
        allowed = _allowed_numbers(runtime, body, signature)
        parsed = _parse(body, content_type)
    except WebhookRejectedError as exc:
        runtime.metrics.webhooks.labels(f"rejected_{exc.status_code}").inc()
        log.warning("webhook rejected (%d): %s", exc.status_code, exc.reason)
        return exc.status_code, {"detail": exc.reason}
    return 200, await _store(runtime, allowed, parsed)


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The raw request body from the ASGI messages, refused (413) as soon as it exceeds ``limit`` bytes."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise WebhookRejectedError(400, "client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise WebhookRejectedError(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse(body: bytes, content_type: str) -> ParsedWebhook:
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise WebhookRejectedError(415, "Content-Type must be application/json")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson is strict (no NaN, no lone surrogates); what the standard library reads still goes in.
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise WebhookRejectedError(400, "body is not valid JSON") from None
    try:
        return parse_webhook(payload)
    except ValueError as exc:
        raise WebhookRejectedError(400, str(exc)) from None


async def _store(runtime: Runtime, allowed: set[str] | None, parsed: ParsedWebhook) -> JsonBody:
    metrics = runtime.metrics
    messages = []
    for message in parsed.messages:
        number = _route(runtime, allowed, message.number_id, message.provider_message_id)
        if number is not None:
            messages.append((number, message))
    statuses = []
    for status in parsed.statuses:
        number = _route(runtime, allowed, status.number_id, status.provider_message_id)
        if number is not None:
            statuses.append((number, status))
    for error in parsed.errors:
        log.warning(
            "provider reported errors for number %s: %s", error.number_id, [e.code for e in error.errors]
        )
    if parsed.ignored:
        log.debug("ignored in webhook: %s", ", ".join(parsed.ignored))
    if not messages and not statuses:
        metrics.webhooks.labels("empty").inc()
        return {"received": 0, "duplicates": 0}

    result = await runtime.store(Delivery(messages=messages, statuses=statuses))
    metrics.webhooks.labels("stored").inc()
    for _, message in messages:
        if message.provider_message_id in result.duplicates:
            metrics.duplicates.inc()
            log.info("redelivery of a stored message ignored", extra={"wamid": message.provider_message_id})
        else:
            metrics.inbound.labels(message.type).inc()
            log.info("message stored", extra={"wamid": message.provider_message_id})
    for _, status in statuses:
        metrics.statuses.labels(status.status).inc()
    return {"received": len(result.stored), "duplicates": len(result.duplicates)}


def _allowed_numbers(runtime: Runtime, body: bytes, signature: str | None) -> set[str] | None:
    """Phone number ids the signature vouches for (None: every number, when signatures are skipped)."""
    if runtime.settings.whatsapp.insecure_skip_signature:
        return None
    by_secret = runtime.registry.app_secrets()
    matched = matching_secrets(body, signature, by_secret.keys())
    return {n.phone_number_id for secret in matched for n in by_secret[secret]}


def _route(runtime: Runtime, allowed: set[str] | None, phone_number_id: str, wamid: str) -> NumberInfo | None:
    number = runtime.registry.by_phone_number_id(phone_number_id)
    if number is None:
        log.warning("event for unknown number %s not processed", phone_number_id, extra={"wamid": wamid})
        return None
    if allowed is not None and phone_number_id not in allowed:
        log.warning(
            "event for number %s signed by another app's secret; not processed",
            phone_number_id,
            extra={"wamid": wamid},
        )
        return None
    if not number.active:
        log.info("event for inactive number %s not processed", phone_number_id, extra={"wamid": wamid})
        return None
    return number


async def verify(request: Request, runtime: RuntimeDep) -> Response:
    """Meta's subscription handshake: echo ``hub.challenge`` when the verify token matches."""
    status, text = answer_verification(runtime, request.scope["query_string"])
    return PlainTextResponse(text, status_code=status)


async def receive(request: Request, runtime: RuntimeDep) -> Response:
    """Store a webhook delivery; 200 only once it is durable."""
    status, content = await answer_delivery(
        runtime,
        request.receive,
        request.headers.get("content-type", ""),
        request.headers.get(SIGNATURE_HEADER),
    )
    return JSONResponse(content, status_code=status)


for _path in WEBHOOK_PATHS:
    router.add_api_route(
        _path, verify, methods=["GET"], response_class=PlainTextResponse, summary="Verify webhook"
    )
    router.add_api_route(_path, receive, methods=["POST"], summary="Receive WhatsApp events")
