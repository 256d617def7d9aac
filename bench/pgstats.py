"""PostgreSQL introspection for the benchmark: fresh databases, and what warelay made the server do.

Where it sits: beside the durable inbox (webhook → *inbox/outbox in PostgreSQL* → worker). The
benchmark creates one database per run, reads ``pg_stat_database`` and ``pg_stat_user_tables`` around
each load phase (transactions, rollbacks, rows read and written per message, per table), and in a
profiled run reads ``pg_stat_statements`` (loaded by the benchmark's own cluster, tracking only the
profiled run's database) for the statements that cost the server most.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

SERVER_SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")
TABLE_COLUMNS = (
    "seq_scan",
    "seq_tup_read",
    "idx_scan",
    "idx_tup_fetch",
    "n_tup_ins",
    "n_tup_upd",
    "n_tup_del",
)
TABLES_QUERY = f"SELECT relname, {', '.join(TABLE_COLUMNS)} FROM pg_stat_user_tables"  # noqa: S608 - constants


async def _create(server: str, name: str, track_statements: bool) -> dict[str, str]:
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
        settings = {key: str(await conn.fetchval(f"SHOW {key}")) for key in SERVER_SETTINGS}
        if track_statements:
            await conn.execute(f"ALTER DATABASE \"{name}\" SET pg_stat_statements.track = 'top'")
    finally:
        await conn.close()
    if track_statements:
        db = await asyncpg.connect(server.rsplit("/", 1)[0] + f"/{name}")
        try:
            await db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await db.close()
    return settings


def create_database(server: str, name: str, *, track_statements: bool = False) -> dict[str, str]:
    """(Re)create database ``name``; returns the server's durability settings."""
    return asyncio.run(_create(server, name, track_statements))


def drop_database(server: str, name: str) -> None:
    """Drop database ``name`` if it exists."""

    async def drop() -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


def counters(dsn: str) -> dict[str, int]:
    """Cumulative counters of one database: ``pg_stat_database`` and, as ``table.column``, its tables."""

    async def read() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched "
                "FROM pg_stat_database WHERE datname = current_database()"
            )
            out = {str(k): int(v) for k, v in dict(row).items()}
            for table in await conn.fetch(TABLES_QUERY):
                for column in TABLE_COLUMNS:
                    out[f"{table['relname']}.{column}"] = int(table[column] or 0)
            return out
        finally:
            await conn.close()

    return asyncio.run(read())


def per_message(delta: dict[str, int], messages: int) -> dict[str, Any]:
    """Counter deltas of a phase per message: database-wide, then the busiest tables."""
    per = max(1, messages)
    out: dict[str, Any] = {
        "note": "pg_stat_database / pg_stat_user_tables over the phase, per message (statistics lag ~1 s)",
        **{k: round(v / per, 2) for k, v in delta.items() if "." not in k},
    }
    tables: dict[str, dict[str, float]] = {}
    for key, value in delta.items():
        if "." in key:
            table, column = key.split(".", 1)
            tables.setdefault(table, {})[column] = round(value / per, 2)
    busiest = sorted(tables.items(), key=lambda t: -(t[1]["seq_tup_read"] + t[1]["idx_tup_fetch"]))
    out["tables"] = dict(busiest[:8])
    return out


def reset_statements(dsn: str) -> None:
    """Forget the statement statistics gathered so far (start-up, migrations, knowledge loading)."""

    async def reset() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SELECT pg_stat_statements_reset()")
        finally:
            await conn.close()

    asyncio.run(reset())


STATEMENT_TOTALS = (
    "SELECT count(*) AS kinds, sum(calls) AS calls, sum(total_exec_time) AS ms FROM pg_stat_statements "
    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
TOP_STATEMENTS = (
    "SELECT calls, rows, total_exec_time, shared_blks_hit, query FROM pg_stat_statements "
    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "ORDER BY total_exec_time DESC LIMIT $1"
)


def top_statements(dsn: str, messages: int, limit: int = 25) -> str:
    """The statements of this database that took the server longest, as text (with totals per message)."""

    async def read() -> tuple[Any, list[Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            totals = await conn.fetchrow(STATEMENT_TOTALS)
            rows: list[Any] = await conn.fetch(TOP_STATEMENTS, limit)
            return totals, rows
        finally:
            await conn.close()

    totals, rows = asyncio.run(read())
    per = max(1, messages)
    calls, ms = int(totals["calls"] or 0), float(totals["ms"] or 0.0)
    lines = [
        f"{totals['kinds']} distinct statements, {calls} executions ({calls / per:.1f} per message), "
        f"{ms:.0f} ms of execution in total ({ms / per:.2f} ms per message)",
        "",
        "   calls      rows   total ms  ms/call  blocks hit  statement",
    ]
    for r in rows:
        query = " ".join(str(r["query"]).split())
        total = float(r["total_exec_time"])
        lines.append(
            f"{r['calls']:8d}  {r['rows']:8d}  {total:9.1f}  {total / max(1, int(r['calls'])):7.3f}"
            f"  {r['shared_blks_hit']:10d}  {query[:400]}"
        )
    return "\n".join(lines)
