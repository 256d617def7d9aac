"""Migration 0006 (conversation sync) on both engines: up from 0005 with data in place, as modelled, and down.

Upgrading numbers existing conversations at version 1; downgrading drops the column in place, so the
conversations' messages (which cascade from them) survive it on SQLite too.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.migrations import migrate, model_diff
from warelay.storage.db import create_engine


def _diff(connection: Connection) -> list[Any]:
    """Differences between the model and what 0006 made (its table, column and index)."""
    return model_diff(connection, ("transcript_entries", "ix_contacts_user_key", "'version'"))


def _shape(connection: Connection) -> tuple[set[str], set[str], set[str]]:
    found = inspect(connection)
    return (
        set(found.get_table_names()),
        {c["name"] for c in found.get_columns("conversations")},
        {i["name"] for i in found.get_indexes("contacts") if i["name"]},
    )


async def _scalar(conn: AsyncConnection, sql: str) -> Any:
    return (await conn.execute(text(sql))).scalar_one()


_ROWS = (
    "INSERT INTO tenants (id, subdomain, created_at) VALUES (1, 'shop', CURRENT_TIMESTAMP)",
    "INSERT INTO numbers (id, tenant_id, channel, phone_number_id, status, api_version, graph_url,"
    " throughput_mps, created_at, updated_at) VALUES (1, 1, 'cloud', '106540352242922', 'active', 'v23.0',"
    " 'https://graph.facebook.com', 80, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    "INSERT INTO contacts (id, number_id, user_key, wa_id, created_at)"
    " VALUES (1, 1, '51999999999', '51999999999', CURRENT_TIMESTAMP)",
    "INSERT INTO conversations (id, number_id, contact_id, is_active, context, metadata, last_activity,"
    " expires_at, created_at, updated_at) VALUES ('s1', 1, 1, true, '{}', '{}', CURRENT_TIMESTAMP,"
    " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    "INSERT INTO messages (conversation_id, number_id, direction, type, provider_message_id, text, content,"
    " status, status_rank, part, created_at, updated_at) VALUES ('s1', 1, 'in', 'text', 'wamid.1', 'Hola',"
    " '{}', 'received', 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
)


async def test_0006_adds_versions_and_transcripts_keeping_data_both_ways(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "upgrade", "0005")
            for statement in _ROWS:
                await conn.execute(text(statement))
            await conn.run_sync(migrate, "upgrade", "0006")
            tables, columns, indexes = await conn.run_sync(_shape)
            assert "transcript_entries" in tables
            assert "version" in columns
            assert "ix_contacts_user_key" in indexes
            assert await conn.run_sync(_diff) == []
            assert await _scalar(conn, "SELECT version FROM conversations WHERE id = 's1'") == 1
            await conn.execute(
                text(
                    "INSERT INTO transcript_entries (conversation_id, role, content, created_at)"
                    " VALUES ('s1', 'bot', 'Perfecto', CURRENT_TIMESTAMP)"
                )
            )
            # New conversations (written without the column, as the inbox writes them) start at 1.
            await conn.execute(
                text(
                    "INSERT INTO conversations (id, number_id, contact_id, is_active, context, metadata,"
                    " last_activity, expires_at, created_at, updated_at) VALUES ('s2', 1, 1, false, '{}',"
                    " '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
            assert await _scalar(conn, "SELECT version FROM conversations WHERE id = 's2'") == 1
        async with engine.begin() as conn:
            with pytest.raises(Exception, match=r"(?i)foreign key"):
                async with conn.begin_nested():
                    await conn.execute(
                        text(
                            "INSERT INTO transcript_entries (conversation_id, role, content, created_at)"
                            " VALUES ('nope', 'bot', 'x', CURRENT_TIMESTAMP)"
                        )
                    )
        async with engine.begin() as conn:
            await conn.run_sync(migrate, "downgrade", "0005")
            tables, columns, indexes = await conn.run_sync(_shape)
            assert "transcript_entries" not in tables
            assert "version" not in columns
            assert "ix_contacts_user_key" not in indexes
            assert await _scalar(conn, "SELECT count(*) FROM messages WHERE conversation_id = 's1'") == 1
            assert await _scalar(conn, "SELECT count(*) FROM conversations") == 2
            await conn.run_sync(migrate, "upgrade", "0006")
            assert await _scalar(conn, "SELECT sum(version) FROM conversations") == 2
    finally:
        await engine.dispose()
