"""Migration 0002 (media_files) on both engines: up from 0001, agreeing with the model, and back down."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from tests.migrations import migrate, model_diff
from warelay.storage.db import create_engine


def _table_diff(connection: Connection) -> list[Any]:
    """Differences between the model of media_files and the table the migration made."""
    return model_diff(connection, ("media_files",))


async def test_0002_creates_media_files_as_modelled_and_drops_it(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "upgrade", "0001")
            assert "media_files" not in await conn.run_sync(lambda c: inspect(c).get_table_names())
            await conn.run_sync(migrate, "upgrade", "0002")
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("media_files")}
            )
            indexes = await conn.run_sync(
                lambda c: {i["name"] for i in inspect(c).get_indexes("media_files")}
            )
            assert await conn.run_sync(_table_diff) == []
        assert {"provider_message_id", "status", "error", "storage_key", "text", "expires_at"} <= columns
        assert {"ix_media_files_due", "ix_media_files_message_id"} <= indexes
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO media_files (tenant_id, number_id, provider_message_id, media_type, status,"
                    " text_truncated, created_at, updated_at, expires_at) VALUES (1, 2, 'wamid.A', 'image',"
                    " 'stored', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        async with engine.begin() as conn:
            with pytest.raises(Exception, match=r"(?i)unique"):
                async with conn.begin_nested():
                    await conn.execute(
                        text(
                            "INSERT INTO media_files (tenant_id, number_id, provider_message_id, media_type,"
                            " status, text_truncated, created_at, updated_at, expires_at) VALUES (1, 2,"
                            " 'wamid.A', 'audio', 'failed', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP,"
                            " CURRENT_TIMESTAMP)"
                        )
                    )
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "downgrade", "0001")
            assert "media_files" not in await conn.run_sync(lambda c: inspect(c).get_table_names())
    finally:
        await engine.dispose()
