"""Engines and migrations: SQLite (aiosqlite, WAL) for one shop, PostgreSQL (asyncpg) for a platform.

``create_engine`` sets the per-connection pragmas SQLite needs; ``upgrade`` applies the Alembic
migrations shipped inside the package, on PostgreSQL under an advisory lock so that processes
starting together do not race each other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger("warelay.storage")

MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same in every warelay process sharing the database.
MIGRATION_LOCK_KEY = 0x57A2E1A7
SQLITE_POOL_SIZE = 6


_READ_ONLY = "warelay_read_only"


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (and pool) for transactions that only read: on SQLite they skip the write lock."""
    return engine.execution_options(**{_READ_ONLY: True})


def is_sqlite(url: str) -> bool:
    """Whether a database URL points at SQLite."""
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 20) -> AsyncEngine:
    """Create the async engine for ``url`` with warelay's connection settings."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # A small fixed pool: overflow connections are closed when returned, and each new aiosqlite
        # connection costs a thread plus its pragmas (the benchmark saw hundreds opened per run);
        # SQLite runs one writer at a time anyway. Measured (gateway-sqlite): default 5+10 overflow
        # 134 msg/s, fixed 20 ~108 msg/s, fixed 6 143 msg/s.
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_size=SQLITE_POOL_SIZE, max_overflow=0
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # aiosqlite opens the connection in its own thread; pragmas apply per connection.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # Let SQLAlchemy's "begin" event below decide how transactions start (pysqlite's own
            # implicit BEGIN would defer the write lock).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # Writers take the write lock up front: read-then-write transactions would otherwise fail
            # with SQLITE_BUSY when two connections upgrade their read locks at once. Readers (see
            # read_only) begin deferred and never wait for writers, thanks to WAL.
            if conn.get_execution_options().get(_READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # No pre-ping: it costs a round trip per checkout; a dropped connection fails its statement and
    # the work is retried (leases and retries already cover any failed transaction).
    # IN lists of every length are distinct statements to asyncpg; a larger prepared-statement cache
    # keeps them prepared (the benchmark saw ~270 distinct statements against the default 100).
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"prepared_statement_cache_size": 1000},
    )


def _alembic_config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade_sync(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    command.upgrade(_alembic_config(connection), "head")


def _current_sync(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest migration shipped with this version of warelay."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every pending migration (idempotent; safe when several processes start at once)."""
    # SQLite's BEGIN IMMEDIATE (see create_engine) and PostgreSQL's advisory lock (in _upgrade_sync)
    # serialise processes that upgrade at the same moment; the second one finds nothing left to do.
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade_sync)
    log.info("database schema at revision %s", head_revision())


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when it has never been migrated."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_sync)
