"""Seed 002's Conversation Sync API, exactly as the seed documents it (docs/seed-002-conversation-sync.md).

An external agent finds the conversation of a phone number, reads its state, records its
transcript and writes its state back. Every answer is seed 002's envelope: ``{"type": "1",
"message": …, "data": …}`` on success, ``{"type": "0", "message": <reason>, "data": null}`` with
the HTTP status on failure (authentication, validation and unexpected errors included).

Keys: a tenant's key sees its own tenant only (a phone number that only another tenant talks to
is a 404); lookups need ``conversations:read``, ``sync`` and ``messages`` need
``conversations:write``; the admin token and platform-wide admin keys see every tenant.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from warelay.api.deps import Principal, PrincipalDep, RuntimeDep, get_principal, get_runtime
from warelay.conversations.sync import (
    MAX_CONTENT_CHARS,
    ConversationSync,
    ConversationView,
    StateUpdate,
    SyncError,
    js_time,
)
from warelay.storage.models import utcnow

log = logging.getLogger("warelay.api.sync")

T = TypeVar("T")


# ------------------------------------------------------------------------------------------ envelope


class Envelope(BaseModel, Generic[T]):
    """Seed 002's success envelope."""

    type: Literal["1"] = "1"
    message: str
    data: T


class Failure(BaseModel):
    """Seed 002's failure envelope; the HTTP status says what kind of failure."""

    type: Literal["0"] = "0"
    message: str = Field(description="why the request failed")
    data: None = None


def failure(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A failure in seed 002's envelope."""
    return JSONResponse(
        {"type": "0", "message": message, "data": None}, status_code=status_code, headers=headers
    )


def _validation_message(errors: Sequence[Any]) -> str:
    """One readable line from FastAPI's validation errors (``context: Input should be a valid …``)."""
    parts = []
    for error in errors:
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})")
            continue
        loc = [str(p) for p in error.get("loc", ())]
        where = ".".join(loc[1:] if len(loc) > 1 and loc[0] in ("body", "query", "path") else loc)
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


class Seed002Route(APIRoute):
    """A route whose every failure answers in seed 002's envelope (FastAPI's own say ``{"detail"}``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler: dependencies (keys, scopes), validation and the route itself."""
        handler = super().get_route_handler()
        template = self.path_format  # logged instead of the path, which holds phone numbers

        async def envelope_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SyncError as exc:
                return failure(exc.status, str(exc))
            except HTTPException as exc:
                return failure(exc.status_code, str(exc.detail), exc.headers)
            except RequestValidationError as exc:
                errors = exc.errors()
                if any(e.get("type") == "json_invalid" for e in errors):
                    # FastAPI reads the body before any dependency runs: authenticate first, so a
                    # caller without a valid key learns nothing but that (401).
                    try:
                        await get_principal(request, get_runtime(request))
                    except HTTPException as refused:
                        return failure(refused.status_code, str(refused.detail), refused.headers)
                return failure(status.HTTP_422_UNPROCESSABLE_CONTENT, _validation_message(errors))
            except Exception:
                log.exception("unhandled error on %s %s", request.method, template)
                return failure(status.HTTP_500_INTERNAL_SERVER_ERROR, "internal error")

        return envelope_handler


router = APIRouter(prefix="/api/v1/whatsapp", tags=["conversation sync (seed 002)"], route_class=Seed002Route)

_FAILURES: dict[int | str, dict[str, Any]] = {
    code: {"model": Failure, "description": description}
    for code, description in (
        (401, "missing or invalid API key"),
        (403, "the key lacks the scope"),
        (404, "no active conversation (in the key's tenant)"),
        (422, "invalid request"),
        (429, "the key's rate limit was exceeded (see Retry-After)"),
    )
}


# --------------------------------------------------------------------------------------- data shapes


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class TenantInfo(_Camel):
    """Which tenant (subdomain) a phone number's active conversation belongs to."""

    sub_domain: str
    bot_id: str = Field(description="the id of the agent handling the conversation")
    session_id: str
    is_active: bool


class ConversationData(_Camel):
    """A conversation in seed 002's shape, plus warelay's ``version``."""

    session_id: str
    user_id: str = Field(description="`+<digits>` for a phone number, else the business-scoped user id")
    bot_id: str = Field(description="the id of the agent handling the conversation")
    sub_domain: str
    current_intent: str | None
    current_step: str | None
    previous_intent: str | None
    previous_step: str | None
    context: dict[str, Any] = Field(
        description="the agent's keys, plus `previousMessages` and `lastUserMessage` kept by warelay"
    )
    metadata: dict[str, Any]
    is_active: bool
    last_activity: str
    expires_at: str
    created_at: str
    updated_at: str
    version: int = Field(description="warelay's extension: counts state changes; send it back to sync")


class SyncRequest(BaseModel):
    """The state an agent writes; a field left out (or null) keeps its value."""

    model_config = ConfigDict(alias_generator=to_camel, extra="ignore")

    intent: str | None = None
    step: str | None = None
    context: dict[str, Any] | None = Field(
        default=None,
        description="replaces the agent's context (`?merge=true`: merges one level deep); "
        "`previousMessages` and `lastUserMessage` are warelay's and ignored here",
    )
    metadata: dict[str, Any] | None = Field(default=None, description="merged one level deep")
    is_active: bool | None = Field(default=None, description="false ends the conversation")
    version: int | None = Field(
        default=None, ge=1, description="warelay's extension: the version read; 409 when it changed since"
    )


class MessageRequest(BaseModel):
    """One message of the agent's transcript."""

    role: Literal["user", "bot"]
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)


class HealthData(BaseModel):
    """Seed 002's health answer."""

    status: Literal["healthy"]
    timestamp: str


def _conversation_data(view: ConversationView) -> ConversationData:
    return ConversationData(
        session_id=view.session_id,
        user_id=view.user_id,
        bot_id=str(view.bot_id),
        sub_domain=view.sub_domain,
        current_intent=view.intent,
        current_step=view.step,
        previous_intent=view.previous_intent,
        previous_step=view.previous_step,
        context=view.full_context(),
        metadata=dict(view.metadata),
        is_active=view.is_active,
        last_activity=js_time(view.last_activity),
        expires_at=js_time(view.expires_at),
        created_at=js_time(view.created_at),
        updated_at=js_time(view.updated_at),
        version=view.version,
    )


# -------------------------------------------------------------------------------------- dependencies


def _scoped(principal: Principal, scope: str) -> Principal:
    if not principal.allows(scope):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key lacks the '{scope}' scope")
    return principal


async def _reader(principal: PrincipalDep) -> Principal:
    """Callers allowed to look conversations up."""
    return _scoped(principal, "conversations:read")


async def _writer(principal: PrincipalDep) -> Principal:
    """Callers allowed to write conversations' state and transcripts."""
    return _scoped(principal, "conversations:write")


def _service(runtime: RuntimeDep) -> ConversationSync:
    settings = runtime.settings
    return ConversationSync(
        runtime.engine, default_agent=settings.agent.name, default_kind=settings.agent_kind
    )


SyncReaderDep = Annotated[Principal, Depends(_reader)]
SyncWriterDep = Annotated[Principal, Depends(_writer)]
ServiceDep = Annotated[ConversationSync, Depends(_service)]
PhonePath = Annotated[
    str, Path(alias="phoneNumber", max_length=64, description="the user's phone number, with or without +")
]
SessionPath = Annotated[
    str, Path(alias="sessionId", max_length=200, description="the conversation's sessionId")
]


# -------------------------------------------------------------------------------------------- routes


@router.get("/lookup/tenant/{phoneNumber}", response_model=Envelope[TenantInfo], responses=_FAILURES)
async def lookup_tenant(
    phone_number: PhonePath, principal: SyncReaderDep, service: ServiceDep
) -> Envelope[TenantInfo]:
    """The tenant (subdomain), agent and session of the phone number's active conversation."""
    view = await service.find_active(tenant_id=principal.tenant_id, phone_number=phone_number)
    return Envelope(
        message="Tenant information retrieved successfully",
        data=TenantInfo(
            sub_domain=view.sub_domain,
            bot_id=str(view.bot_id),
            session_id=view.session_id,
            is_active=view.is_active,
        ),
    )


@router.get(
    "/lookup/conversation/{phoneNumber}", response_model=Envelope[ConversationData], responses=_FAILURES
)
async def lookup_conversation(
    phone_number: PhonePath,
    principal: SyncReaderDep,
    service: ServiceDep,
    bot_id: Annotated[
        str | None, Query(alias="botId", max_length=64, description="only a conversation of this agent")
    ] = None,
) -> Envelope[ConversationData]:
    """The full state of the phone number's active conversation."""
    view = await service.find_active(tenant_id=principal.tenant_id, phone_number=phone_number, bot_id=bot_id)
    return Envelope(message="Conversation retrieved successfully", data=_conversation_data(view))


@router.put(
    "/agent/conversations/{sessionId}/sync",
    response_model=Envelope[ConversationData],
    responses={**_FAILURES, 409: {"model": Failure, "description": "`version` is stale"}},
)
async def sync_conversation(
    session_id: SessionPath,
    body: SyncRequest,
    principal: SyncWriterDep,
    service: ServiceDep,
    merge: Annotated[
        bool, Query(description="merge `context` one level deep instead of replacing it")
    ] = False,
) -> Envelope[ConversationData]:
    """Write the agent's state after it processed a message."""
    view = await service.sync(
        tenant_id=principal.tenant_id,
        session_id=session_id,
        change=StateUpdate(
            intent=body.intent,
            step=body.step,
            context=body.context,
            metadata=body.metadata,
            is_active=body.is_active,
            version=body.version,
        ),
        merge=merge,
    )
    log.debug("conversation %s synced to version %d", view.session_id, view.version)
    return Envelope(message="Conversation synced successfully from agent", data=_conversation_data(view))


@router.post(
    "/agent/conversations/{sessionId}/messages",
    response_model=Envelope[ConversationData],
    responses=_FAILURES,
)
async def add_message(
    session_id: SessionPath, body: MessageRequest, principal: SyncWriterDep, service: ServiceDep
) -> Envelope[ConversationData]:
    """Record a message of the agent's transcript in ``context.previousMessages`` (nothing is sent)."""
    view = await service.add_message(
        tenant_id=principal.tenant_id,
        session_id=session_id,
        role=body.role,
        content=body.content,
        api_key_id=principal.key_id,
    )
    return Envelope(message="Message added successfully", data=_conversation_data(view))


@router.get(
    "/health",
    response_model=Envelope[HealthData],
    responses={503: {"model": Failure, "description": "the database does not answer"}},
)
async def health(runtime: RuntimeDep) -> Envelope[HealthData] | JSONResponse:
    """Open, as in the seed: warelay is up and its database answers."""
    if not await runtime.ready():
        return failure(status.HTTP_503_SERVICE_UNAVAILABLE, "warelay cannot reach its database")
    return Envelope(message="ok", data=HealthData(status="healthy", timestamp=js_time(utcnow())))
