"""Migration 0007 (OAuth states, AI platform tokens) on both engines: as modelled, constrained, reversible."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from tests.migrations import migrate, model_diff
from warelay.storage.db import create_engine

TABLES = {"oauth_states", "ai_agent_tokens"}
STATE = (
    "INSERT INTO oauth_states (state_hash, tenant_id, code_verifier_enc, redirect_uri, created_at)"
    " VALUES ('h', :tenant, 'v', 'https://x/cb', CURRENT_TIMESTAMP)"
)
TOKEN = (
    "INSERT INTO ai_agent_tokens (tenant_id, access_token_enc, token_type, issued_at, connected_at)"
    " VALUES (:tenant, 'a', 'Bearer', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


def _diff(connection: Connection) -> list[Any]:
    """Differences between the models of the two tables and what the migration made."""
    return model_diff(connection, TABLES)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_0007_creates_the_tables_as_modelled_and_drops_them(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "upgrade", "0006")
            assert not TABLES & await conn.run_sync(_tables)
            await conn.run_sync(migrate, "upgrade", "0007")
            assert await conn.run_sync(_tables) >= TABLES
            assert await conn.run_sync(_diff) == []
            await conn.execute(
                text("INSERT INTO tenants (subdomain, created_at) VALUES ('acme', CURRENT_TIMESTAMP)")
            )
            tenant_id = (
                await conn.execute(text("SELECT id FROM tenants WHERE subdomain = 'acme'"))
            ).scalar_one()
            await conn.execute(text(STATE), {"tenant": tenant_id})
            await conn.execute(
                text(TOKEN),
                {"tenant": tenant_id},
            )
        async with engine.begin() as conn:
            # One state hash once; one token row per tenant.
            with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
                async with conn.begin_nested():
                    await conn.execute(text(STATE), {"tenant": tenant_id})
            with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
                async with conn.begin_nested():
                    await conn.execute(
                        text(TOKEN),
                        {"tenant": tenant_id},
                    )
            # A tenant's states and token go with it.
            await conn.execute(text("DELETE FROM tenants WHERE id = :tenant"), {"tenant": tenant_id})
            assert (await conn.execute(text("SELECT count(*) FROM oauth_states"))).scalar_one() == 0
            assert (await conn.execute(text("SELECT count(*) FROM ai_agent_tokens"))).scalar_one() == 0
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "downgrade", "0006")
            assert not TABLES & await conn.run_sync(_tables)
            await conn.run_sync(migrate, "upgrade", "0007")
            assert await conn.run_sync(_tables) >= TABLES
    finally:
        await engine.dispose()
