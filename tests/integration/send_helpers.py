"""Tenants, numbers and API keys for the send-API tests, made the way warelay's own set-up makes them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select

from tests.integration.stack import ACCESS_TOKEN, APP_SECRET, Stack
from warelay.crypto import new_api_key
from warelay.numbers import NumberFields, ensure_tenant, upsert_number
from warelay.storage.models import ApiKey, ApiSendAudit, utcnow


async def make_key(stack: Stack, scopes: Iterable[str], *, tenant: str = "default") -> str:
    """A new API key of ``tenant`` with ``scopes`` (stored hashed, as ``warelay keys create`` does)."""
    runtime = stack.runtime
    tenant_id = await ensure_tenant(runtime.engine, tenant)
    key = new_api_key()
    async with runtime.engine.begin() as conn:
        await conn.execute(
            insert(ApiKey).values(
                tenant_id=tenant_id,
                name="test",
                prefix=key[:12],
                key_hash=runtime.box.hash_key(key),
                scopes=sorted(set(scopes)),
                created_at=utcnow(),
            )
        )
    return key


async def add_number(stack: Stack, *, tenant: str, phone_number_id: str, display: str) -> None:
    """Another business number of ``tenant``, known to warelay and to the simulator."""
    runtime = stack.runtime
    tenant_id = await ensure_tenant(runtime.engine, tenant)
    await upsert_number(
        runtime.engine,
        runtime.box,
        tenant_id=tenant_id,
        agent_id=None,
        fields=NumberFields(
            phone_number_id=phone_number_id,
            access_token=ACCESS_TOKEN,
            app_secret=APP_SECRET,
            display_phone_number=display,
            graph_url=stack.sim_url,
            throughput_mps=1000,
        ),
    )
    await runtime.registry.load()
    stack.simulator.add_number(
        phone_number_id, display, ACCESS_TOKEN, APP_SECRET, f"{stack.url}/webhooks/whatsapp"
    )


async def audit_rows(stack: Stack) -> list[Any]:
    """Every row of the send audit, oldest first."""
    async with stack.runtime.engine.connect() as conn:
        return list((await conn.execute(select(ApiSendAudit).order_by(ApiSendAudit.id))).all())


async def user_writes_first(stack: Stack, wa_id: str, text: str = "Halo", **options: Any) -> None:
    """The user writes to the business and gets the agent's answer: their conversation is open."""
    number_id = options.get("number_id")
    before = len([m for m in stack.simulator.messages_to(wa_id) if number_id in (None, m.number_id)])
    await stack.simulator.user_sends(wa_id, text, **options)
    await stack.simulator.wait_for(
        lambda: (
            len([m for m in stack.simulator.messages_to(wa_id) if number_id in (None, m.number_id)]) > before
        ),
        timeout=10,
    )
