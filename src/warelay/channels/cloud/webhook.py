"""Cloud API webhook security: the verification handshake and the payload signature (protocol.md A1, A2).

Several numbers may belong to different Meta apps, each with its own app secret, all posting to
the same URL. The signature is therefore checked against every configured secret, in constant
time, over the raw bytes and before anything is parsed; the caller then processes only entries
whose number belongs to an app whose secret matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import parse_qs

from warelay.errors import WebhookRejectedError

SIGNATURE_HEADER = "x-hub-signature-256"
_PREFIX = "sha256="


def sign(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` value Meta would send for ``body``."""
    return _PREFIX + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def _hexdigest(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()


def matching_secrets(body: bytes, header: str | None, secrets: Iterable[str]) -> list[str]:
    """The app secrets whose signature of ``body`` equals ``header``.

    Raises WebhookRejectedError(401) when the header is missing and (403) when no secret matches.
    """
    if not header:
        raise WebhookRejectedError(401, "missing X-Hub-Signature-256 header")
    header = header.strip()
    received = header[len(_PREFIX) :] if header.lower().startswith(_PREFIX) else header
    received_bytes = received.lower().encode()
    matched = [
        secret
        for secret in secrets
        # compare_digest on every secret, with no early exit, keeps the timing independent of which matched
        if hmac.compare_digest(
            hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode(), received_bytes
        )
    ]
    if not matched:
        raise WebhookRejectedError(403, "invalid webhook signature")
    return matched


def verify_subscription(raw_query: str, verify_tokens: Iterable[str]) -> str:
    """Answer Meta's verification GET: the challenge when mode and token match, else a 403 rejection.

    The raw query string is read so that ``hub.mode`` and the PHP-style ``hub_mode`` both work.
    """
    params = parse_qs(raw_query, keep_blank_values=True)

    def first(name: str) -> str | None:
        for key in (name, name.replace(".", "_")):
            values = params.get(key)
            if values:
                return values[0]
        return None

    mode = first("hub.mode")
    token = first("hub.verify_token")
    challenge = first("hub.challenge")
    if mode != "subscribe" or token is None or challenge is None:
        raise WebhookRejectedError(403, "verification failed")
    token_bytes = token.encode()
    ok = False
    for expected in verify_tokens:
        ok |= hmac.compare_digest(expected.encode(), token_bytes)
    if not ok:
        raise WebhookRejectedError(403, "verification failed")
    return challenge
