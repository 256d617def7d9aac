"""Meta-shaped webhook payloads for the simulator: build, encode, sign and deliver them.

Where it sits: this is the simulator's side of protocol.md A2/A3/A4/A5/A11. The simulator plays Meta and
POSTs these bodies to warelay's ``channels/cloud`` webhook route, which must verify
``X-Hub-Signature-256`` over the raw bytes before parsing. Bodies are compact JSON with non-ASCII
escaped as lowercase ``\\uXXXX`` — the form Meta signs (M-GS) — so a receiver that re-serialises
before verifying fails here as it would in production. Load generators use the same functions through
:meth:`warelay.simulator.server.Simulator.build_inbound`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx

__all__ = [
    "INBOUND_TYPES",
    "DeliveryResult",
    "WebhookPoster",
    "encode_payload",
    "inbound_message",
    "messages_payload",
    "new_wamid",
    "sign_body",
    "signed_headers",
    "status_item",
    "statuses_payload",
    "unix_timestamp",
]

logger = logging.getLogger("warelay.simulator.webhooks")

# Inbound message types a user can send (A4); used to infer ``type`` from a content key.
INBOUND_TYPES: Final[tuple[str, ...]] = (
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
    "unsupported",
    "revoke",
    "edit",
)


def new_wamid(wa_id: str = "") -> str:
    """A fresh ``wamid.…`` id shaped like Meta's (base64 of a small binary record holding the number)."""
    digits = wa_id.encode()[:64]
    raw = b"\x1c\x18" + bytes([len(digits)]) + digits + b"\x15\x02\x00\x12\x18\x14"
    raw += secrets.token_hex(10).upper().encode() + b"\x00"
    return "wamid." + base64.b64encode(raw).decode("ascii")


def encode_payload(payload: Mapping[str, Any]) -> bytes:
    """Compact JSON with non-ASCII escaped as lowercase ``\\uXXXX``, the exact bytes Meta signs (A2)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign_body(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` value: ``sha256=`` + lowercase hex HMAC of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signed_headers(body: bytes, app_secret: str) -> dict[str, str]:
    """Headers Meta puts on a webhook POST, both signatures included (the SHA-1 one is legacy)."""
    key = app_secret.encode()
    return {
        "Content-Type": "application/json",
        "User-Agent": "facebookexternalua",
        "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
    }


def inbound_message(
    wa_id: str, message: Mapping[str, Any] | str, *, message_id: str, timestamp: str
) -> dict[str, Any]:
    """A ``messages[]`` item: a str is a text message; a dict holds the type-specific fields (A4)."""
    if isinstance(message, str):
        return {
            "from": wa_id,
            "id": message_id,
            "timestamp": timestamp,
            "type": "text",
            "text": {"body": message},
        }
    item: dict[str, Any] = {"from": wa_id, "id": message_id, "timestamp": timestamp}
    mtype = message.get("type")
    if mtype is None:
        mtype = next((key for key in INBOUND_TYPES if key in message), None)
        if mtype is None:
            raise ValueError("an inbound message dict needs a 'type' or one content key such as 'text'")
    item["type"] = mtype
    for key, value in message.items():
        if key not in ("from", "id", "timestamp", "type"):
            item[key] = value
    return item


def _envelope(
    *, waba_id: str, phone_number_id: str, display_phone_number: str, value: dict[str, Any]
) -> dict[str, Any]:
    value_out: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_phone_number, "phone_number_id": phone_number_id},
    }
    value_out.update(value)
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": value_out, "field": "messages"}]}],
    }


def messages_payload(
    *,
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str,
    wa_id: str,
    name: str,
    message: Mapping[str, Any],
    user_id: str | None = None,
) -> dict[str, Any]:
    """The full webhook for one inbound message, with its ``contacts[]`` entry (A3)."""
    contact: dict[str, Any] = {"profile": {"name": name}, "wa_id": wa_id}
    if user_id is not None:
        contact["user_id"] = user_id
    return _envelope(
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        display_phone_number=display_phone_number,
        value={"contacts": [contact], "messages": [dict(message)]},
    )


def status_item(
    *,
    wamid: str,
    status: str,
    recipient_id: str | None,
    timestamp: str,
    recipient_user_id: str | None = None,
    recipient_type: str | None = None,
    category: str = "service",
    biz_opaque_callback_data: str | None = None,
    errors: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One ``statuses[]`` item (A5): per-message pricing on sent/delivered, ``errors`` on failed."""
    item: dict[str, Any] = {"id": wamid, "status": status, "timestamp": timestamp}
    if recipient_id is not None:
        item["recipient_id"] = recipient_id
    if recipient_user_id is not None:
        item["recipient_user_id"] = recipient_user_id
    if recipient_type == "group":
        item["recipient_type"] = "group"
    if status in ("sent", "delivered"):
        free = category == "service"
        item["pricing"] = {
            "billable": not free,
            "pricing_model": "PMP",
            "category": category,
            "type": "free_customer_service" if free else "regular",
        }
    if biz_opaque_callback_data is not None:
        item["biz_opaque_callback_data"] = biz_opaque_callback_data
    if errors:
        item["errors"] = [dict(error) for error in errors]
    return item


def statuses_payload(
    *,
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str,
    statuses: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """One webhook carrying several statuses of one business number (Meta batches them, A3)."""
    return _envelope(
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        display_phone_number=display_phone_number,
        value={"statuses": [dict(s) for s in statuses]},
    )


def unix_timestamp() -> str:
    """Meta's timestamp form: Unix seconds as a string (A3)."""
    return str(int(time.time()))


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How one webhook delivery ended: the last HTTP status (None when never answered) and attempts used."""

    ok: bool
    status: int | None
    attempts: int
    error: str | None = None


class WebhookPoster:
    """POSTs signed webhook bodies and retries like Meta: anything but 200 is retried with backoff (A11).

    Meta keeps retrying for up to 7 days; the simulator bounds it to ``max_attempts`` so tests end.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        max_attempts: int = 5,
        retry_base: float = 0.05,
        retry_cap: float = 2.0,
        timeout: float = 10.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._http = http
        self._max_attempts = max_attempts
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._timeout = httpx.Timeout(timeout)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> DeliveryResult:
        """Deliver ``body`` until the receiver answers 200 or the attempts run out."""
        delay = self._retry_base
        status: int | None = None
        error: str | None = None
        for attempt in range(1, self._max_attempts + 1):
            try:
                response = await self._http.post(url, content=body, headers=headers, timeout=self._timeout)
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status == 200:
                    return DeliveryResult(ok=True, status=200, attempts=attempt)
                error = f"HTTP {status}"
            if attempt < self._max_attempts:
                logger.debug("webhook to %s failed (%s), retry %s in %.2fs", url, error, attempt, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_cap)
        logger.warning("webhook to %s gave up after %s attempts: %s", url, self._max_attempts, error)
        return DeliveryResult(ok=False, status=status, attempts=self._max_attempts, error=error)
