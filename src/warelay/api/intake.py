"""The webhook front: a raw ASGI handler that answers the webhook paths before FastAPI sees them.

Where it sits: outermost. ``WarelayApp.__call__`` (``warelay.app``) hands every HTTP request for
exactly one of ``WEBHOOK_PATHS`` to ``WebhookIntake`` and everything else (other paths, the
trailing-slash redirects, lifespan, websockets) to FastAPI untouched. Overriding ``__call__`` of a
FastAPI subclass, rather than wrapping the app or its middleware stack, keeps ``create_app``
returning a FastAPI (``app.state``, TestClient and uvicorn work as before) and skips all of
FastAPI's per-request code, including the telemetry check it makes on every request.

Why: webhooks are the hot path. FastAPI's middleware, routing, dependency solving and exception
machinery cost 0.4-1 ms of event-loop CPU per request, several times the intake's own work (HMAC
check, json.loads, parsing); here a request costs a header scan and two ``send`` calls on top.

What it keeps: the status codes, bodies and content types of the FastAPI routes in
``warelay.api.routes.webhooks``, which stay registered for OpenAPI and share the decisions
(``answer_verification``, ``answer_delivery``), and of ``BodyLimit``, whose Content-Length check
applies to every method here too. On purpose it differs in three places: the 405 lists both
methods in ``Allow`` (FastAPI named only the first route's, ``GET``); a client gone mid-body is a
refused delivery (400), not an unhandled error; and a bug is logged and answered 500 ``{"detail":
"internal error"}`` without being re-raised to the server, which would only log it a second time.
"""

from __future__ import annotations

import logging

import orjson
from starlette.types import Receive, Scope, Send

from warelay.api.routes.webhooks import WEBHOOK_PATHS, answer_delivery, answer_verification
from warelay.channels.cloud.webhook import SIGNATURE_HEADER
from warelay.runtime import Runtime

# The logger and message of the app's own handler for unexpected errors, so logs read the same.
log = logging.getLogger("warelay.api")

Reply = tuple[int, list[tuple[bytes, bytes]], bytes]

_PATHS = frozenset(WEBHOOK_PATHS)
_SIGNATURE = SIGNATURE_HEADER.encode()


def content_length_refusal(value: bytes | None, limit: int) -> tuple[int, str] | None:
    """The (status, detail) refusing a declared Content-Length, before any of the body is read."""
    if value is None:
        return None
    if not value.isdigit():
        return 400, "invalid Content-Length"
    if int(value) > limit:
        return 413, f"body larger than {limit} bytes"
    return None


class WebhookIntake:
    """Answers GET (verification) and POST (deliveries) on the webhook paths; 405 for other methods."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.limit = runtime.settings.max_body_bytes

    @staticmethod
    def serves(scope: Scope) -> bool:
        """Whether this request is one for the front (an HTTP request for exactly a webhook path)."""
        return scope["type"] == "http" and scope["path"] in _PATHS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one webhook request; a bug becomes a logged 500, never a crashed connection."""
        try:
            reply = await self._reply(scope, receive)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            reply = _json(500, {"detail": "internal error"})
        status, headers, body = reply
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _reply(self, scope: Scope, receive: Receive) -> Reply:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first of repeated headers counts, as in Starlette
        refusal = content_length_refusal(headers.get(b"content-length"), self.limit)
        if refusal is not None:
            return _json(refusal[0], {"detail": refusal[1]})
        method = scope["method"]
        if method == "POST":
            signature = headers.get(_SIGNATURE)
            status, content = await answer_delivery(
                self.runtime,
                receive,
                headers.get(b"content-type", b"").decode("latin-1"),
                None if signature is None else signature.decode("latin-1"),
            )
            return _json(status, content)
        if method == "GET":
            status, text = answer_verification(self.runtime, scope["query_string"])
            return status, [(b"content-type", b"text/plain; charset=utf-8")], text.encode()
        return _json(405, {"detail": "Method Not Allowed"}, (b"allow", b"GET, POST"))


def _json(status: int, content: object, *headers: tuple[bytes, bytes]) -> Reply:
    # The bytes of Starlette's JSONResponse (compact, UTF-8), so they match the FastAPI routes'.
    body = orjson.dumps(content)
    return status, [(b"content-type", b"application/json"), *headers], body
