"""Migration 0005 (API-key rate limits) on both engines: up from 0004 keeping existing keys, agreeing
with the model, and back down."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from tests.migrations import migrate
from warelay.storage.db import create_engine
from warelay.storage.models import Base

TABLES = ("api_keys", "api_key_usage")


def _diff(connection: Connection) -> list[Any]:
    """Differences between the models of the API-key tables and the tables the migrations made."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [
        d
        for d in compare_metadata(context, Base.metadata)
        if any(f"'{t}'" in repr(d) or f"<{t}>" in repr(d) for t in TABLES)
    ]


def _columns(connection: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(connection).get_columns(table)}


async def test_0005_adds_rate_limits_keeps_keys_and_goes_back(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "upgrade", "0004")
            await conn.execute(
                text(
                    "INSERT INTO api_keys (id, name, prefix, key_hash, scopes, created_at) "
                    "VALUES (7, 'ops', 'wrl_abcdefgh', 'hash-7', '[\"admin\"]', CURRENT_TIMESTAMP)"
                )
            )
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "upgrade", "0005")
            assert "rate_limit_per_minute" in await conn.run_sync(_columns, "api_keys")
            assert await conn.run_sync(_columns, "api_key_usage") == {"key_id", "window_start", "requests"}
            assert await conn.run_sync(_diff) == []
            kept = (await conn.execute(text("SELECT name, rate_limit_per_minute FROM api_keys"))).all()
            assert [tuple(r) for r in kept] == [("ops", None)]
            await conn.execute(text("INSERT INTO api_key_usage VALUES (7, 1800000000, 3)"))
        async with engine.begin() as conn:
            with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
                async with conn.begin_nested():
                    await conn.execute(text("INSERT INTO api_key_usage VALUES (7, 1800000000, 1)"))
            with pytest.raises(Exception, match=r"(?i)foreign key"):
                async with conn.begin_nested():
                    await conn.execute(text("INSERT INTO api_key_usage VALUES (8, 1800000000, 1)"))
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "downgrade", "0004")
            assert "api_key_usage" not in await conn.run_sync(lambda c: inspect(c).get_table_names())
            assert "rate_limit_per_minute" not in await conn.run_sync(_columns, "api_keys")
            kept = (await conn.execute(text("SELECT id, name FROM api_keys"))).all()
            assert [tuple(r) for r in kept] == [(7, "ops")]
    finally:
        await engine.dispose()
