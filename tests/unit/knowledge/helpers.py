"""Shared set-up for the knowledge tests."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from warelay.numbers import ensure_agent, ensure_tenant


async def make_agent(engine: AsyncEngine, subdomain: str, name: str = "helper") -> tuple[int, int]:
    """A tenant and one of its knowledge agents; returns (tenant_id, agent_id)."""
    tenant_id = await ensure_tenant(engine, subdomain)
    return tenant_id, await ensure_agent(engine, tenant_id=tenant_id, name=name, kind="knowledge")
