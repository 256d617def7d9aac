"""Migration 0008 (send audit, idempotency records) on both engines: up from 0007, as modelled, and down."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from tests.migrations import migrate, model_diff
from warelay.storage.db import create_engine

TABLES = ("api_send_audit", "idempotency_records")


def _diff(connection: Connection) -> list[Any]:
    """Differences between the models of the two tables and what the migration made."""
    return model_diff(connection, TABLES)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


_INSERT = (
    "INSERT INTO idempotency_records (owner, idempotency_key, route, request_hash, result, created_at)"
    " VALUES ('key:1', 'retry-1', '/api/send-message', 'h', '{}', CURRENT_TIMESTAMP)"
)


async def test_0008_creates_the_tables_as_modelled_and_drops_them(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "upgrade", "0007")
            assert not set(TABLES) & await conn.run_sync(_tables)
            await conn.run_sync(migrate, "upgrade", "0008")
            assert set(TABLES) <= await conn.run_sync(_tables)
            assert await conn.run_sync(_diff) == []
            indexes = await conn.run_sync(
                lambda c: {i["name"] for i in inspect(c).get_indexes("api_send_audit")}
            )
        assert {"ix_api_send_audit_tenant", "ix_api_send_audit_message_id"} <= indexes
        async with engine.begin() as conn:
            await conn.execute(text(_INSERT))
        # One Idempotency-Key per caller: the same caller cannot store it twice.
        async with engine.begin() as conn:
            with pytest.raises(Exception, match=r"(?i)unique"):
                async with conn.begin_nested():
                    await conn.execute(text(_INSERT))
            await conn.execute(text(_INSERT.replace("'key:1'", "'key:2'")))
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "downgrade", "0007")
            assert not set(TABLES) & await conn.run_sync(_tables)
    finally:
        await engine.dispose()
