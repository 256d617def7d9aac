"""The seed APIs' envelope, ``{"success": …, "message": …, "data": …}``, for answers and for errors.

Seeds 000 and 004 answer in this envelope; so do their errors here. :class:`EnvelopeRoute` turns
what FastAPI would answer as ``{"detail": …}`` — a missing key (401), a missing scope (403), a
body that does not validate (422), any ``HTTPException`` — into ``{"success": false, "message":
<reason>, "data": null}`` with the same status and headers (``WWW-Authenticate``, ``Retry-After``).
A validation failure lists each problem in ``data.errors`` as ``{"field", "message"}``.

The key is checked before the body: FastAPI reads (and may refuse) a body that is not JSON
before any dependency runs, so for such a body the route authenticates the caller itself and a
caller without a valid key gets 401, never a hint about the body. On the send routes
(:class:`AuditedRoute`) a refused body is also audited, with the caller's tenant and key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Final

from fastapi import HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from warelay.api.deps import Principal, PrincipalDep, get_principal, get_runtime
from warelay.outbound.api_send import Caller, audit_rejection

__all__ = [
    "PRINCIPAL_STATE",
    "AuditedRoute",
    "EnvelopeRoute",
    "ReaderRoute",
    "caller_of",
    "envelope",
    "require_scope",
]

# Where an authenticating dependency leaves the caller for the route class (request.state).
PRINCIPAL_STATE: Final = "warelay_principal"
_BODY_FIELDS: Final = ("to", "type", "phoneNumber")


def envelope(
    success: bool,
    message: str | None,
    data: Any,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An answer in the seeds' envelope (``message`` is left out when None, as in the seeds' examples)."""
    body: dict[str, Any] = {"success": success}
    if message is not None:
        body["message"] = message
    body["data"] = data
    return JSONResponse(body, status_code=status_code, headers=dict(headers) if headers else None)


def caller_of(principal: Principal) -> Caller:
    """The sender an API principal is, for the send service."""
    return Caller(tenant_id=principal.tenant_id, key_id=principal.key_id)


def require_scope(scope: str) -> Callable[[Request, Principal], Awaitable[Principal]]:
    """A dependency: the caller, who must hold ``scope`` (403 otherwise); kept for the route class."""

    async def check(request: Request, principal: PrincipalDep) -> Principal:
        if not principal.allows(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key lacks the {scope!r} scope")
        setattr(request.state, PRINCIPAL_STATE, principal)
        return principal

    return check


def _field(loc: Sequence[Any]) -> str:
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def _problems(exc: RequestValidationError) -> list[dict[str, str]]:
    problems = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid"))
        # pydantic prefixes the messages of validators' ValueErrors; the reason reads better without.
        message = message.removeprefix("Value error, ")
        field = _field(error.get("loc", ()))
        if error.get("type") == "json_invalid":
            # Its loc is ("body", <character position>), not a field.
            field, message = (
                "body",
                f"the body is not valid JSON ({error.get('ctx', {}).get('error', message)})",
            )
        problems.append({"field": field, "message": message})
    return problems


class EnvelopeRoute(APIRoute):
    """A route answering errors in the seeds' envelope (see the module docstring)."""

    scope: str | None = None  # the scope the route's dependency requires (for bodies refused early)
    audited = False

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, with its errors answered in the envelope."""
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                return envelope(False, str(exc.detail), None, exc.status_code, exc.headers)
            except RequestValidationError as exc:
                return await self._invalid(request, exc)

        return route

    async def _invalid(self, request: Request, exc: RequestValidationError) -> Response:
        principal: Principal | None = getattr(request.state, PRINCIPAL_STATE, None)
        if principal is None:
            # The body was refused before the route's dependencies ran: the key comes first.
            try:
                principal = await get_principal(request, get_runtime(request))
            except HTTPException as auth:
                return envelope(False, str(auth.detail), None, auth.status_code, auth.headers)
            if self.scope is not None and not principal.allows(self.scope):
                return envelope(False, f"this key lacks the {self.scope!r} scope", None, 403)
        problems = _problems(exc)
        reason = "invalid request: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        if self.audited:
            known = _known_fields(exc.body)
            await audit_rejection(
                get_runtime(request),
                caller_of(principal),
                route=self.path,
                reason=reason,
                recipient=known.get("to") or known.get("phoneNumber"),
                kind=known.get("type") or ("text" if "phoneNumber" in known else None),
            )
        return envelope(False, reason, {"errors": problems}, status.HTTP_422_UNPROCESSABLE_CONTENT)


def _known_fields(body: Any) -> dict[str, str]:
    """The recipient and type of a refused body, when it has them as strings (for the audit)."""
    if not isinstance(body, dict):
        return {}
    return {k: body[k] for k in _BODY_FIELDS if isinstance(body.get(k), str)}


class AuditedRoute(EnvelopeRoute):
    """A send route: ``messages:send`` required, and refused bodies audited."""

    scope = "messages:send"
    audited = True


class ReaderRoute(EnvelopeRoute):
    """A route that reads conversations (or runs an agent on a text): ``conversations:read`` required."""

    scope = "conversations:read"
