"""Migration 0007 (OAuth states, AI platform tokens) on both engines: as modelled, constrained, reversible."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from warelay.storage.db import MIGRATIONS, create_engine
from warelay.storage.models import Base

TABLES = {"oauth_states", "ai_agent_tokens"}
STATE = (
    "INSERT INTO oauth_states (state_hash, tenant_id, code_verifier_enc, redirect_uri, created_at)"
    " VALUES ('h', :tenant, 'v', 'https://x/cb', CURRENT_TIMESTAMP)"
)
TOKEN = (
    "INSERT INTO ai_agent_tokens (tenant_id, access_token_enc, token_type, issued_at, connected_at)"
    " VALUES (:tenant, 'a', 'Bearer', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nothing was migrated in, once per engine."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    request.getfixturevalue("pg_template")  # skips (or fails in CI) without PostgreSQL, like db_url
    url = os.environ["TEST_DATABASE_URL"]
    name = f"warelay_oauth_mig_{os.getpid()}"
    admin = make_url(url).set(database="postgres").render_as_string(hide_password=False)

    async def admin_sql(*statements: str) -> None:
        engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                for statement in statements:
                    await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(admin_sql(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"))
    yield make_url(url).set(database=name).render_as_string(hide_password=False)
    asyncio.run(admin_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _migrate(connection: Connection, action: str, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    getattr(command, action)(cfg, revision)


def _diff(connection: Connection) -> list[Any]:
    """Differences between the models of the two tables and what the migration made."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [d for d in compare_metadata(context, Base.metadata) if any(t in repr(d) for t in TABLES)]


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_0007_creates_the_tables_as_modelled_and_drops_them(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "upgrade", "0006")
            assert not TABLES & await conn.run_sync(_tables)
            await conn.run_sync(_migrate, "upgrade", "0007")
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
            await conn.run_sync(_migrate, "downgrade", "0006")
            assert not TABLES & await conn.run_sync(_tables)
            await conn.run_sync(_migrate, "upgrade", "0007")
            assert await conn.run_sync(_tables) >= TABLES
    finally:
        await engine.dispose()
