"""Admin API: tenants, their WhatsApp numbers, agents and API keys, under ``/api/v1/tenants``.

Who may do what: a platform admin (``WARELAY_ADMIN_TOKEN``, or a platform-wide key with the
``admin`` scope) manages every tenant and alone creates and deletes tenants and sets what reaches
beyond one tenant (a number's Graph API URL, a key's rate limit). A tenant's key with the
``admin`` scope manages that tenant only: any other tenant answers 404, as one that does not
exist, so a key learns nothing about its neighbours. Any other key gets 403, no key 401.

Writes go through :mod:`warelay.tenancy` and :mod:`warelay.agents.catalog`, the same functions as
the CLI. A changed number is reloaded into this process's registry at once (other processes
reload theirs within 30 s), and a revoked key stops working here at once (elsewhere within the
key cache's 10 s). Validation errors never echo what was sent: a rejected secret stays out of the
response.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from warelay.agents.catalog import (
    AgentRecord,
    delete_agent,
    get_agent,
    link_numbers,
    list_agents,
    save_agent,
)
from warelay.agents.config import AgentConfigError
from warelay.api.admin_schemas import (
    AgentCreate,
    AgentPublic,
    AgentUpdate,
    KeyCreate,
    KeyCreated,
    KeyPublic,
    KeyUpdate,
    NumberCreate,
    NumberPublic,
    NumberUpdate,
    TenantCreate,
    TenantPublic,
    TenantUpdate,
)
from warelay.api.deps import KeyCache, Principal, PrincipalDep, RuntimeDep
from warelay.api.schemas import Page, decode_cursor, decode_id_cursor, encode_cursor
from warelay.config import Settings
from warelay.numbers import NumberFields
from warelay.runtime import Runtime
from warelay.tenancy import (
    ConflictError,
    KeyRecord,
    NumberRecord,
    TenantRecord,
    agent_id_by_name,
    create_key,
    create_number,
    create_tenant,
    delete_number,
    delete_tenant,
    env_number_id,
    env_tenant,
    get_key,
    get_number,
    get_tenant,
    list_keys,
    list_numbers,
    list_tenants,
    owned_numbers,
    revoke_key,
    update_key,
    update_number,
    update_tenant,
    webhook_url,
)


class _NoEchoRoute(APIRoute):
    """A route whose validation errors leave out the values sent (they may be secrets)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, with ``input`` removed from each validation error."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
                raise RequestValidationError(errors) from None

        return handle


router = APIRouter(prefix="/api/v1/tenants", tags=["admin"], route_class=_NoEchoRoute)

LimitQuery = Annotated[int, Query(ge=1, le=500, description="page size")]
CursorQuery = Annotated[str | None, Query(max_length=500, description="`next_cursor` of the previous page")]
NO_CONTENT: dict[str, Any] = {"status_code": status.HTTP_204_NO_CONTENT, "response_class": Response}
MAX_ID = 2**63 - 1  # ids are BIGINT on PostgreSQL
KeyIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="the key's id")]


def _fail(code: int, detail: str) -> HTTPException:
    return HTTPException(code, detail)


async def require_admin(principal: PrincipalDep) -> Principal:
    """Callers with the ``admin`` scope (platform-wide, or of one tenant)."""
    if "admin" not in principal.scopes:
        raise _fail(status.HTTP_403_FORBIDDEN, "this key lacks the 'admin' scope")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


def _platform_only(principal: Principal, action: str) -> None:
    if not principal.platform_admin:
        raise _fail(status.HTTP_403_FORBIDDEN, f"only a platform admin {action}")


async def _tenant(runtime: Runtime, principal: Principal, subdomain: str) -> TenantRecord:
    """The tenant the path names, if the caller may manage it; 404 otherwise (existing or not)."""
    record = await get_tenant(runtime.reader, subdomain=subdomain)
    if record is None or (principal.tenant_id is not None and principal.tenant_id != record.id):
        raise _fail(status.HTTP_404_NOT_FOUND, f"no tenant {subdomain!r}")
    return record


def _key_cache(request: Request) -> KeyCache:
    cache: KeyCache = request.app.state.key_cache
    return cache


def _page_size_query(limit: int) -> int:
    return limit + 1  # one more than asked says whether there is a next page


def _id_cursor(cursor: str | None) -> int | None:
    """The row id in a cursor (422 when it is not one a page of ours gave)."""
    if cursor is None:
        return None
    value = decode_id_cursor(cursor)
    if not 0 <= value <= MAX_ID:
        raise _fail(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor")
    return value


def _name_cursor(cursor: str | None) -> str | None:
    """The name in a cursor (422 when it is not one a page of ours gave)."""
    if cursor is None:
        return None
    (value,) = decode_cursor(cursor, 1)
    if not isinstance(value, str):
        raise _fail(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor")
    return value


# ------------------------------------------------------------------------------------------ tenants


def _tenant_public(record: TenantRecord) -> TenantPublic:
    return TenantPublic(
        subdomain=record.subdomain,
        name=record.name,
        numbers=record.numbers,
        agents=record.agents,
        keys=record.keys,
        created_at=record.created_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TenantPublic)
async def create_tenant_route(body: TenantCreate, runtime: RuntimeDep, principal: AdminDep) -> TenantPublic:
    """Create a tenant (platform admins only); 409 when the subdomain is taken."""
    _platform_only(principal, "creates tenants")
    try:
        record = await create_tenant(runtime.engine, subdomain=body.subdomain, name=body.name)
    except ConflictError as exc:
        raise _fail(status.HTTP_409_CONFLICT, str(exc)) from None
    return _tenant_public(record)


@router.get("", response_model=Page[TenantPublic])
async def list_tenants_route(
    runtime: RuntimeDep, principal: AdminDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[TenantPublic]:
    """Tenants by subdomain (a tenant's key sees its own tenant only)."""
    records = await list_tenants(
        runtime.reader, after=_name_cursor(cursor), limit=_page_size_query(limit), only_id=principal.tenant_id
    )
    items = [_tenant_public(r) for r in records[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].subdomain) if len(records) > limit else None)


@router.get("/{subdomain}", response_model=TenantPublic)
async def get_tenant_route(subdomain: str, runtime: RuntimeDep, principal: AdminDep) -> TenantPublic:
    """One tenant."""
    return _tenant_public(await _tenant(runtime, principal, subdomain))


@router.patch("/{subdomain}", response_model=TenantPublic)
async def update_tenant_route(
    subdomain: str, body: TenantUpdate, runtime: RuntimeDep, principal: AdminDep
) -> TenantPublic:
    """Change a tenant's display name."""
    record = await _tenant(runtime, principal, subdomain)
    if "name" in body.model_fields_set:
        updated = await update_tenant(runtime.engine, subdomain=subdomain, name=body.name)
        if updated is None:
            raise _fail(status.HTTP_404_NOT_FOUND, f"no tenant {subdomain!r}")
        record = updated
    return _tenant_public(record)


@router.delete("/{subdomain}", **NO_CONTENT)
async def delete_tenant_route(
    subdomain: str, request: Request, runtime: RuntimeDep, principal: AdminDep
) -> None:
    """Delete a tenant with everything it owns: numbers, conversations, agents, knowledge, keys
    (platform admins only)."""
    await _tenant(runtime, principal, subdomain)
    _platform_only(principal, "deletes tenants")
    if subdomain == env_tenant(runtime.settings):
        raise _fail(
            status.HTTP_409_CONFLICT,
            f"tenant {subdomain!r} owns the number configured through WARELAY_WHATSAPP__* "
            "(it would be created again at the next start); remove that configuration first",
        )
    tenant_id = await delete_tenant(runtime.engine, subdomain=subdomain)
    if tenant_id is None:
        raise _fail(status.HTTP_404_NOT_FOUND, f"no tenant {subdomain!r}")
    _key_cache(request).forget(tenant_id=tenant_id)
    await runtime.registry.load()


# ------------------------------------------------------------------------------------------ numbers


def _number_public(record: NumberRecord, settings: Settings) -> NumberPublic:
    fields = dataclasses.asdict(record)
    fields.pop("id")
    return NumberPublic(
        **fields,
        answered_by=record.agent or settings.agent.name,
        webhook_url=webhook_url(settings),
        configured_by_env=record.phone_number_id == env_number_id(settings),
    )


def _not_env_number(settings: Settings, phone_number_id: str) -> None:
    if phone_number_id == env_number_id(settings):
        raise _fail(
            status.HTTP_409_CONFLICT,
            f"number {phone_number_id!r} is configured through WARELAY_WHATSAPP__* and rewritten at "
            "every start; change it there",
        )


async def _agent_id(runtime: Runtime, tenant: TenantRecord, name: str) -> int:
    agent_id = await agent_id_by_name(runtime.reader, tenant_id=tenant.id, name=name)
    if agent_id is None:
        raise _fail(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"no agent {name!r} in tenant {tenant.subdomain!r}"
        )
    return agent_id


async def _number(runtime: Runtime, tenant: TenantRecord, phone_number_id: str) -> NumberRecord:
    record = await get_number(runtime.reader, tenant_id=tenant.id, phone_number_id=phone_number_id)
    if record is None:
        raise _fail(
            status.HTTP_404_NOT_FOUND, f"no number {phone_number_id!r} in tenant {tenant.subdomain!r}"
        )
    return record


@router.post("/{subdomain}/numbers", status_code=status.HTTP_201_CREATED, response_model=NumberPublic)
async def create_number_route(
    subdomain: str, body: NumberCreate, runtime: RuntimeDep, principal: AdminDep
) -> NumberPublic:
    """Add a WhatsApp number with its Meta credentials; 409 when its phone number id is registered."""
    tenant = await _tenant(runtime, principal, subdomain)
    if body.graph_url is not None:
        _platform_only(principal, "sets a number's graph_url")
    agent_id = await _agent_id(runtime, tenant, body.agent) if body.agent is not None else None
    fields = NumberFields(
        phone_number_id=body.phone_number_id,
        access_token=body.access_token.get_secret_value(),
        app_secret=body.app_secret.get_secret_value(),
        verify_token=body.verify_token.get_secret_value() if body.verify_token is not None else None,
        display_phone_number=body.display_phone_number,
        display_name=body.display_name,
        app_id=body.app_id,
        business_id=body.business_id,
        api_version=body.api_version,
        throughput_mps=body.throughput_mps,
        status=body.status,
        **({"graph_url": body.graph_url} if body.graph_url is not None else {}),
    )
    try:
        record = await create_number(
            runtime.engine, runtime.box, tenant_id=tenant.id, agent_id=agent_id, fields=fields
        )
    except ConflictError as exc:
        raise _fail(status.HTTP_409_CONFLICT, str(exc)) from None
    await runtime.registry.load()
    return _number_public(record, runtime.settings)


@router.get("/{subdomain}/numbers", response_model=Page[NumberPublic])
async def list_numbers_route(
    subdomain: str,
    runtime: RuntimeDep,
    principal: AdminDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[NumberPublic]:
    """The tenant's numbers in the order they were added, each with the webhook URL to give Meta."""
    tenant = await _tenant(runtime, principal, subdomain)
    records = await list_numbers(
        runtime.reader,
        tenant_id=tenant.id,
        after_id=_id_cursor(cursor),
        limit=_page_size_query(limit),
    )
    items = [_number_public(r, runtime.settings) for r in records[:limit]]
    return Page(
        items=items, next_cursor=encode_cursor(records[limit - 1].id) if len(records) > limit else None
    )


@router.get("/{subdomain}/numbers/{phone_number_id}", response_model=NumberPublic)
async def get_number_route(
    subdomain: str, phone_number_id: str, runtime: RuntimeDep, principal: AdminDep
) -> NumberPublic:
    """One number (secrets only as set or not)."""
    tenant = await _tenant(runtime, principal, subdomain)
    return _number_public(await _number(runtime, tenant, phone_number_id), runtime.settings)


@router.patch("/{subdomain}/numbers/{phone_number_id}", response_model=NumberPublic)
async def update_number_route(
    subdomain: str, phone_number_id: str, body: NumberUpdate, runtime: RuntimeDep, principal: AdminDep
) -> NumberPublic:
    """Change some of a number's fields; a secret sent replaces the stored one."""
    tenant = await _tenant(runtime, principal, subdomain)
    await _number(runtime, tenant, phone_number_id)
    _not_env_number(runtime.settings, phone_number_id)
    if "graph_url" in body.model_fields_set:
        _platform_only(principal, "sets a number's graph_url")
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if name == "agent":
            changes["agent_id"] = await _agent_id(runtime, tenant, value) if value is not None else None
        elif name in ("app_secret", "access_token", "verify_token"):
            changes[name] = value.get_secret_value() if value is not None else None
        else:
            changes[name] = value
    record = await update_number(
        runtime.engine, runtime.box, tenant_id=tenant.id, phone_number_id=phone_number_id, changes=changes
    )
    if record is None:
        raise _fail(status.HTTP_404_NOT_FOUND, f"no number {phone_number_id!r} in tenant {subdomain!r}")
    await runtime.registry.load()
    return _number_public(record, runtime.settings)


@router.delete("/{subdomain}/numbers/{phone_number_id}", **NO_CONTENT)
async def delete_number_route(
    subdomain: str, phone_number_id: str, runtime: RuntimeDep, principal: AdminDep
) -> None:
    """Remove a number with its contacts, conversations and messages."""
    tenant = await _tenant(runtime, principal, subdomain)
    await _number(runtime, tenant, phone_number_id)
    _not_env_number(runtime.settings, phone_number_id)
    if not await delete_number(runtime.engine, tenant_id=tenant.id, phone_number_id=phone_number_id):
        raise _fail(status.HTTP_404_NOT_FOUND, f"no number {phone_number_id!r} in tenant {subdomain!r}")
    await runtime.registry.load()


# ------------------------------------------------------------------------------------------ agents


def _agent_public(record: AgentRecord, settings: Settings) -> AgentPublic:
    return AgentPublic(
        tenant=record.tenant,
        name=record.name,
        kind=record.kind,
        config=record.config.public(),
        numbers=list(record.numbers),
        default=record.name == settings.agent.name,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


async def _check_numbers(runtime: Runtime, tenant: TenantRecord, numbers: list[str]) -> None:
    """422 unless every phone number id is one of the tenant's; 409 for the env-configured number."""
    if not numbers:
        return
    owned = await owned_numbers(runtime.reader, tenant_id=tenant.id, phone_number_ids=numbers)
    missing = sorted(set(numbers) - owned)
    if missing:
        raise _fail(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"no number {', '.join(map(repr, missing))} in tenant {tenant.subdomain!r}",
        )
    for number in numbers:
        _not_env_number(runtime.settings, number)


async def _agent(runtime: Runtime, tenant: TenantRecord, name: str) -> AgentRecord:
    record = await get_agent(runtime.reader, runtime.box, tenant=tenant.subdomain, name=name)
    if record is None:
        raise _fail(status.HTTP_404_NOT_FOUND, f"no agent {name!r} in tenant {tenant.subdomain!r}")
    return record


@router.post("/{subdomain}/agents", status_code=status.HTTP_201_CREATED, response_model=AgentPublic)
async def create_agent_route(
    subdomain: str, body: AgentCreate, runtime: RuntimeDep, principal: AdminDep
) -> AgentPublic:
    """Add a named agent (its configuration validated, secrets stored encrypted); 409 when the name is
    taken in the tenant."""
    tenant = await _tenant(runtime, principal, subdomain)
    if await get_agent(runtime.reader, runtime.box, tenant=subdomain, name=body.name) is not None:
        raise _fail(status.HTTP_409_CONFLICT, f"agent {body.name!r} exists in tenant {subdomain!r}")
    await _check_numbers(runtime, tenant, body.numbers)
    try:
        record = await save_agent(
            runtime.engine, runtime.box, tenant=subdomain, name=body.name, kind=body.kind, changes=body.config
        )
    except AgentConfigError as exc:
        raise _fail(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    if body.numbers:
        await link_numbers(runtime.engine, tenant=subdomain, name=body.name, numbers=body.numbers)
        await runtime.registry.load()
        record = await _agent(runtime, tenant, body.name)
    return _agent_public(record, runtime.settings)


@router.get("/{subdomain}/agents", response_model=Page[AgentPublic])
async def list_agents_route(
    subdomain: str,
    runtime: RuntimeDep,
    principal: AdminDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[AgentPublic]:
    """The tenant's agents by name (secrets masked)."""
    tenant = await _tenant(runtime, principal, subdomain)
    after = _name_cursor(cursor)
    # A tenant has a handful of agents: list_agents reads them all, and the page is cut here.
    records = [
        r
        for r in await list_agents(runtime.reader, runtime.box, tenant=tenant.subdomain)
        if after is None or r.name > after
    ]
    items = [_agent_public(r, runtime.settings) for r in records[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].name) if len(records) > limit else None)


@router.get("/{subdomain}/agents/{name}", response_model=AgentPublic)
async def get_agent_route(subdomain: str, name: str, runtime: RuntimeDep, principal: AdminDep) -> AgentPublic:
    """One agent's configuration (secrets masked) and the numbers it answers."""
    tenant = await _tenant(runtime, principal, subdomain)
    return _agent_public(await _agent(runtime, tenant, name), runtime.settings)


@router.patch("/{subdomain}/agents/{name}", response_model=AgentPublic)
async def update_agent_route(
    subdomain: str, name: str, body: AgentUpdate, runtime: RuntimeDep, principal: AdminDep
) -> AgentPublic:
    """Change an agent: configuration keys merged (``null`` goes back to the default), its kind, and
    more numbers to answer."""
    tenant = await _tenant(runtime, principal, subdomain)
    await _agent(runtime, tenant, name)
    await _check_numbers(runtime, tenant, body.numbers)
    try:
        record = await save_agent(
            runtime.engine,
            runtime.box,
            tenant=subdomain,
            name=name,
            kind=body.kind,
            changes={k: v for k, v in body.config.items() if v is not None},
            unset=tuple(k for k, v in body.config.items() if v is None),
            create=False,
        )
    except AgentConfigError as exc:
        raise _fail(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except LookupError:
        raise _fail(status.HTTP_404_NOT_FOUND, f"no agent {name!r} in tenant {subdomain!r}") from None
    if body.numbers:
        await link_numbers(runtime.engine, tenant=subdomain, name=name, numbers=body.numbers)
        await runtime.registry.load()
        record = await _agent(runtime, tenant, name)
    return _agent_public(record, runtime.settings)


@router.delete("/{subdomain}/agents/{name}", **NO_CONTENT)
async def delete_agent_route(subdomain: str, name: str, runtime: RuntimeDep, principal: AdminDep) -> None:
    """Remove an agent and its knowledge; the numbers it answered go back to the default agent."""
    tenant = await _tenant(runtime, principal, subdomain)
    await _agent(runtime, tenant, name)
    if name == runtime.settings.agent.name:
        raise _fail(
            status.HTTP_409_CONFLICT,
            f"agent {name!r} is the tenant's default agent (WARELAY_AGENT__NAME): it answers every number "
            "linked to no agent, so it cannot be removed; change its configuration instead",
        )
    if not await delete_agent(runtime.engine, tenant=subdomain, name=name):
        raise _fail(status.HTTP_404_NOT_FOUND, f"no agent {name!r} in tenant {subdomain!r}")
    await runtime.registry.load()


# ------------------------------------------------------------------------------------------ keys


def _key_public(record: KeyRecord) -> KeyPublic:
    fields = dataclasses.asdict(record)
    fields["scopes"] = list(record.scopes)
    return KeyPublic(**fields)


async def _key(runtime: Runtime, tenant: TenantRecord, key_id: int) -> KeyRecord:
    record = await get_key(runtime.reader, key_id=key_id, tenant_id=tenant.id)
    if record is None:
        raise _fail(status.HTTP_404_NOT_FOUND, f"no key {key_id} in tenant {tenant.subdomain!r}")
    return record


@router.post("/{subdomain}/keys", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
async def create_key_route(
    subdomain: str, body: KeyCreate, runtime: RuntimeDep, principal: AdminDep
) -> KeyCreated:
    """Create an API key of the tenant; the key is in this answer only (it is stored hashed)."""
    tenant = await _tenant(runtime, principal, subdomain)
    if body.rate_limit_per_minute is not None:
        _platform_only(principal, "sets a key's rate limit")
    record, key = await create_key(
        runtime.engine,
        runtime.box,
        tenant_id=tenant.id,
        scopes=body.scopes,
        name=body.name,
        rate_limit_per_minute=body.rate_limit_per_minute,
    )
    return KeyCreated(**_key_public(record).model_dump(), key=key)


@router.get("/{subdomain}/keys", response_model=Page[KeyPublic])
async def list_keys_route(
    subdomain: str,
    runtime: RuntimeDep,
    principal: AdminDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Page[KeyPublic]:
    """The tenant's keys, oldest first, revoked ones included (prefixes only)."""
    tenant = await _tenant(runtime, principal, subdomain)
    records = await list_keys(
        runtime.reader,
        tenant_id=tenant.id,
        after_id=_id_cursor(cursor),
        limit=_page_size_query(limit),
    )
    items = [_key_public(r) for r in records[:limit]]
    return Page(items=items, next_cursor=encode_cursor(items[-1].id) if len(records) > limit else None)


@router.get("/{subdomain}/keys/{key_id}", response_model=KeyPublic)
async def get_key_route(
    subdomain: str, key_id: KeyIdPath, runtime: RuntimeDep, principal: AdminDep
) -> KeyPublic:
    """One key: its prefix, scopes, limit, and when it was last used."""
    tenant = await _tenant(runtime, principal, subdomain)
    return _key_public(await _key(runtime, tenant, key_id))


@router.patch("/{subdomain}/keys/{key_id}", response_model=KeyPublic)
async def update_key_route(
    subdomain: str,
    key_id: KeyIdPath,
    body: KeyUpdate,
    request: Request,
    runtime: RuntimeDep,
    principal: AdminDep,
) -> KeyPublic:
    """Rename a key or change its rate limit (the limit: platform admins only)."""
    tenant = await _tenant(runtime, principal, subdomain)
    await _key(runtime, tenant, key_id)
    if "rate_limit_per_minute" in body.model_fields_set:
        _platform_only(principal, "sets a key's rate limit")
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    record = await update_key(runtime.engine, key_id=key_id, tenant_id=tenant.id, changes=changes)
    if record is None:
        raise _fail(status.HTTP_404_NOT_FOUND, f"no key {key_id} in tenant {subdomain!r}")
    _key_cache(request).forget(key_id=key_id)
    return _key_public(record)


@router.delete("/{subdomain}/keys/{key_id}", **NO_CONTENT)
async def revoke_key_route(
    subdomain: str, key_id: KeyIdPath, request: Request, runtime: RuntimeDep, principal: AdminDep
) -> None:
    """Revoke a key (it stays listed, with ``revoked_at``); revoking it again changes nothing."""
    tenant = await _tenant(runtime, principal, subdomain)
    if await revoke_key(runtime.engine, key_id=key_id, tenant_id=tenant.id) is None:
        raise _fail(status.HTTP_404_NOT_FOUND, f"no key {key_id} in tenant {subdomain!r}")
    _key_cache(request).forget(key_id=key_id)
