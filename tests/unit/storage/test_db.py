"""Migrations apply on both engines, are idempotent, and create the full-text index."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from warelay.storage.db import create_engine, current_revision, head_revision, upgrade


async def test_migrated_to_head_and_idempotent(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision()
    await upgrade(engine)
    assert await current_revision(engine) == head_revision()


async def test_concurrent_upgrades_do_not_collide(db_url: str) -> None:
    engines = [create_engine(db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(upgrade(e) for e in engines))
        assert await current_revision(engines[0]) == head_revision()
    finally:
        for e in engines:
            await e.dispose()


async def test_sqlite_pragmas(sqlite_url: str) -> None:
    eng = create_engine(sqlite_url)
    try:
        async with eng.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await eng.dispose()
