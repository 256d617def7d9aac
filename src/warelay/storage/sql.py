"""Small helpers for writing one statement that works on both SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def upsert(conn: AsyncConnection, table: Table | Any) -> Any:
    """An INSERT that supports ``on_conflict_do_nothing/do_update`` on the connection's engine."""
    target = table.__table__ if hasattr(table, "__table__") else table
    if conn.dialect.name == "postgresql":
        return postgresql.insert(target)
    return sqlite.insert(target)


def is_postgres(conn: AsyncConnection) -> bool:
    """Whether the connection is to PostgreSQL."""
    return conn.dialect.name == "postgresql"
