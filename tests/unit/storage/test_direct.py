"""The direct driver layer: dialect translation, ordered batch inserts, rollback, lock waits off the loop."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import make_url

from warelay.storage.direct import Database, Tx, sqlite_sql, sqlite_time
from warelay.storage.models import Base

TENANTS = Base.metadata.tables["tenants"]


def test_statements_are_translated_for_sqlite() -> None:
    assert sqlite_sql("SELECT id FROM t WHERE a = $1 AND b = ANY($2) AND c = $1") == (
        "SELECT id FROM t WHERE a = ?1 AND b IN (SELECT value FROM json_each(?2)) AND c = ?1"
    )
    assert sqlite_sql("SELECT id FROM t WHERE k = $1::text ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED") == (
        "SELECT id FROM t WHERE k = ?1 ORDER BY id LIMIT ?2"
    )
    assert sqlite_sql("SELECT id FROM c WHERE id = ANY($1) ORDER BY id FOR UPDATE OF c") == (
        "SELECT id FROM c WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id"
    )


def test_sqlite_timestamps_match_sqlalchemy_storage() -> None:
    assert sqlite_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02 03:04:05.000000"
    assert sqlite_time(datetime(2026, 1, 2, 3, 4, 5, 7)) == "2026-01-02 03:04:05.000007"


async def _insert(tx: Tx, names: list[str]) -> list[tuple[int, str]]:
    rows = await tx.insert_many(
        TENANTS,
        ("subdomain", "created_at"),
        [(name, datetime.now(UTC)) for name in names],
        suffix="ON CONFLICT (subdomain) DO NOTHING",
        returning="id, subdomain",
    )
    return [(int(r[0]), r[1]) for r in rows]


async def _names(tx: Tx, names: list[str]) -> list[str]:
    rows = await tx.fetch("SELECT subdomain FROM tenants WHERE subdomain = ANY($1) ORDER BY id", names)
    return [r[0] for r in rows]


async def test_batch_insert_assigns_ids_in_row_order_and_skips_conflicts(database: Database) -> None:
    names = [f"t{i:03d}" for i in range(120)]
    inserted = sorted(await database.write(_insert, names))
    assert [name for _, name in inserted] == names  # ascending ids follow the rows' order
    again = await database.write(_insert, ["t005", "new", "t010"])
    assert [name for _, name in again] == ["new"]
    assert await database.read(_names, ["new", "t010", "absent"]) == ["t010", "new"]


async def test_failed_transaction_changes_nothing(database: Database) -> None:
    async def insert_then_fail(tx: Tx) -> None:
        await _insert(tx, ["doomed"])
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await database.write(insert_then_fail)
    assert await database.read(_names, ["doomed"]) == []


async def test_sqlite_transaction_may_only_await_its_tx(sqlite_url: str) -> None:
    db = Database(sqlite_url)

    async def awaits_the_loop(tx: Tx) -> None:
        await _insert(tx, ["half"])
        await asyncio.sleep(0)

    try:
        with pytest.raises(RuntimeError, match="awaited something other than its Tx"):
            await db.write(awaits_the_loop)
        assert await db.read(_names, ["half"]) == []
    finally:
        await db.close()


async def test_sqlite_write_waits_for_a_foreign_lock_without_blocking_the_event_loop(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    path = make_url(sqlite_url).database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        write = asyncio.create_task(db.write(_insert, ["waited"]))
        # The event loop runs on while the write waits (were it blocked, this test's own commit
        # below could never run).
        await asyncio.sleep(0.2)
        assert not write.done()
        holder.execute("COMMIT")
        assert [name for _, name in await asyncio.wait_for(write, timeout=10)] == ["waited"]
        # With the lock free again, writes and reads run inline.
        assert [name for _, name in await db.write(_insert, ["inline"])] == ["inline"]
        assert await db.read(_names, ["waited", "inline"]) == ["waited", "inline"]
    finally:
        holder.close()
        await db.close()


async def test_sqlite_write_gives_up_when_a_foreign_lock_is_held_too_long(sqlite_url: str) -> None:
    db = Database(sqlite_url, lock_wait_seconds=0.3)
    path = make_url(sqlite_url).database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match=r"held it for over 0\.3 s"):
            await db.write(_insert, ["never"])
        holder.execute("COMMIT")
        assert await db.read(_names, ["never"]) == []
    finally:
        holder.close()
        await db.close()
