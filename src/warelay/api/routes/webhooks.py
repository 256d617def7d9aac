"""Webhook intake: verify, parse, route by number, store durably, then answer 200.

Where it sits: the first stage of the path. Nothing slow happens before the answer: the signature
is checked over the raw bytes, the JSON parsed into domain events, and the events stored in one
(group-committed) transaction; agents and sends run later in the workers. The same handlers serve
``/webhooks/whatsapp`` and the seeds' ``/webhook``, ``/whatsapp/webhook`` and ``/api/meta-webhook``.
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from warelay.api.deps import RuntimeDep
from warelay.channels.cloud.parse import parse_webhook
from warelay.channels.cloud.webhook import SIGNATURE_HEADER, matching_secrets, verify_subscription
from warelay.errors import WebhookRejectedError
from warelay.inbox.store import Delivery
from warelay.numbers import NumberInfo

log = logging.getLogger("warelay.webhooks")

WEBHOOK_PATHS = ("/webhooks/whatsapp", "/webhook", "/whatsapp/webhook", "/api/meta-webhook")

router = APIRouter(tags=["webhooks"])


def _error(status_code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw request body, refusing (413) anything over ``limit`` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise WebhookRejectedError(413, f"body larger than {limit} bytes")
        except ValueError:
            raise WebhookRejectedError(400, "invalid Content-Length") from None
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WebhookRejectedError(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def verify(request: Request, runtime: RuntimeDep) -> Response:
    """Meta's subscription handshake: echo ``hub.challenge`` when the verify token matches."""
    try:
        challenge = verify_subscription(request.url.query, runtime.registry.verify_tokens())
    except WebhookRejectedError as exc:
        runtime.metrics.webhooks.labels("verify_rejected").inc()
        return PlainTextResponse("Forbidden", status_code=exc.status_code)
    runtime.metrics.webhooks.labels("verified").inc()
    return PlainTextResponse(challenge)


async def receive(request: Request, runtime: RuntimeDep) -> Response:
    """Store a webhook delivery; 200 only once it is durable."""
    metrics = runtime.metrics
    try:
        body = await read_body(request, runtime.settings.max_body_bytes)
        allowed = _allowed_numbers(runtime, body, request.headers.get(SIGNATURE_HEADER))
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise WebhookRejectedError(415, "Content-Type must be application/json")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise WebhookRejectedError(400, "body is not valid JSON") from None
        try:
            parsed = parse_webhook(payload)
        except ValueError as exc:
            raise WebhookRejectedError(400, str(exc)) from None
    except WebhookRejectedError as exc:
        metrics.webhooks.labels(f"rejected_{exc.status_code}").inc()
        log.warning("webhook rejected (%d): %s", exc.status_code, exc.reason)
        return _error(exc.status_code, exc.reason)

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
        return JSONResponse({"received": 0, "duplicates": 0})

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
    return JSONResponse({"received": len(result.stored), "duplicates": len(result.duplicates)})


def _allowed_numbers(runtime: RuntimeDep, body: bytes, signature: str | None) -> set[str] | None:
    """Phone number ids the signature vouches for (None: every number, when signatures are skipped)."""
    if runtime.settings.whatsapp.insecure_skip_signature:
        return None
    by_secret = runtime.registry.app_secrets()
    matched = matching_secrets(body, signature, by_secret.keys())
    return {n.phone_number_id for secret in matched for n in by_secret[secret]}


def _route(
    runtime: RuntimeDep, allowed: set[str] | None, phone_number_id: str, wamid: str
) -> NumberInfo | None:
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


for _path in WEBHOOK_PATHS:
    router.add_api_route(
        _path, verify, methods=["GET"], response_class=PlainTextResponse, summary="Verify webhook"
    )
    router.add_api_route(_path, receive, methods=["POST"], summary="Receive WhatsApp events")
