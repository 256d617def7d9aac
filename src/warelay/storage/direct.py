"""Direct driver access for the message path: plain ``sqlite3`` and ``asyncpg``, no ORM in between.

Why not SQLAlchemy here: every webhook, claim, reply and receipt runs a handful of statements,
and through the async ORM stack each one costs 100-300 µs of CPU on the event loop (statement
caching, result objects, a greenlet and an aiosqlite thread hop per statement), against 5-20 µs
through the driver. The admin API, migrations and set-up keep using SQLAlchemy; the tables are
the same.

A transaction is an ``async def fn(tx, ...)`` handed to :meth:`Database.write` or
:meth:`Database.read`. Its statements are written once, in PostgreSQL's syntax with ``$n``
parameters; on SQLite they are translated (``$n`` → ``?n``, ``= ANY($n)`` → ``IN (SELECT value
FROM json_each(?n))``, ``FOR UPDATE [OF t] [SKIP LOCKED]`` and one-word ``::type`` casts dropped).
That is the whole translation: it is textual, so statements keep ``$``, ``::`` and ``FOR UPDATE``
out of string literals and write other casts as ``CAST(x AS type)``; statements that must differ
(full-text search) are written once per engine.

On PostgreSQL the function runs on the event loop over an asyncpg connection. On SQLite the
``Tx`` never suspends, so the coroutine completes in one step, synchronously: on the event loop
when the database lock is free (see :class:`_Sqlite` for why not in a thread), in a thread that
may wait for the lock when another connection holds it.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import re
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import asyncpg
import orjson
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

P = ParamSpec("P")
R = TypeVar("R")
Row = Sequence[Any]

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


class Tx(abc.ABC):
    """One transaction's statements (see the module docstring for the SQL dialect)."""

    postgres: bool

    @abc.abstractmethod
    async def fetch(self, query: str, *args: Any) -> list[Row]:
        """All rows of a query."""

    async def fetchrow(self, query: str, *args: Any) -> Row | None:
        """The first row of a query, or None."""
        rows = await self.fetch(query, *args)
        return rows[0] if rows else None

    @abc.abstractmethod
    async def execute(self, query: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""

    @abc.abstractmethod
    async def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run a statement once per parameter row."""

    @abc.abstractmethod
    async def insert_many(
        self,
        table: Table,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        suffix: str = "",
        returning: str = "",
    ) -> list[Row]:
        """Insert ``rows`` (values in ``columns`` order) in order; ``suffix`` is an ON CONFLICT clause.

        With ``returning`` (a column list), the returned rows; those of rows skipped by the
        conflict clause are absent. Primary keys are assigned in the order of ``rows``.
        """

    @staticmethod
    @abc.abstractmethod
    def time(value: Any) -> datetime:
        """A stored timestamp as an aware UTC datetime."""

    @staticmethod
    @abc.abstractmethod
    def json(value: Any) -> Any:
        """A stored JSON value, decoded."""


# ------------------------------------------------------------------------------------- SQLite

_ANY = re.compile(r"=\s*ANY\(\$(\d+)\)")
_PARAM = re.compile(r"\$(\d+)")
_CAST = re.compile(r"::[a-z_]+(\[\])?", re.IGNORECASE)
_LOCKING = re.compile(r"\s+FOR\s+UPDATE(\s+OF\s+\w+)?(\s+SKIP\s+LOCKED)?", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def sqlite_sql(query: str) -> str:
    """Translate a statement from the PostgreSQL form used in warelay to SQLite's."""
    query = _LOCKING.sub("", query)
    query = _CAST.sub("", query)
    query = _ANY.sub(r"IN (SELECT value FROM json_each(?\1))", query)
    return _PARAM.sub(r"?\1", query)


@functools.lru_cache(maxsize=512)  # a transaction stamps many rows with the same "now"
def sqlite_time(value: datetime) -> str:
    """How timestamps are stored on SQLite (naive UTC, as SQLAlchemy writes them)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(" ", "microseconds")


def json_text(value: Any) -> str:
    """JSON as stored: compact UTF-8 text (orjson: raw payloads are encoded on every message)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _sqlite_param(value: Any) -> Any:
    kind = type(value)
    if kind is datetime:
        return sqlite_time(value)
    if kind is dict or kind is list or kind is tuple:
        return json_text(value)
    return value


def _sqlite_params(args: Sequence[Any]) -> list[Any]:
    return [_sqlite_param(a) for a in args]


class SqliteTx(Tx):
    """Statements on one sqlite3 connection, run synchronously (in a database thread)."""

    postgres = False

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def fetch(self, query: str, *args: Any) -> list[Row]:
        """All rows of a query."""
        return self.conn.execute(sqlite_sql(query), _sqlite_params(args)).fetchall()

    async def execute(self, query: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        return self.conn.execute(sqlite_sql(query), _sqlite_params(args)).rowcount

    async def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run a statement once per parameter row."""
        self.conn.executemany(sqlite_sql(query), [_sqlite_params(r) for r in rows])

    async def insert_many(
        self,
        table: Table,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        suffix: str = "",
        returning: str = "",
    ) -> list[Row]:
        """Insert row by row (in-process statements cost microseconds; RETURNING needs one each)."""
        if not rows:
            return []
        marks = ", ".join(f"?{i}" for i in range(1, len(columns) + 1))
        # Identifiers come from the table's metadata; every value is a bound parameter.
        query = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks}) {suffix}"  # noqa: S608
        if not returning:
            self.conn.executemany(query, [_sqlite_params(r) for r in rows])
            return []
        query += f" RETURNING {returning}"
        out: list[Row] = []
        for row in rows:
            out.extend(self.conn.execute(query, _sqlite_params(row)).fetchall())
        return out

    @staticmethod
    def time(value: Any) -> datetime:
        """A stored timestamp as an aware UTC datetime."""
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    @staticmethod
    def json(value: Any) -> Any:
        """A stored JSON value, decoded."""
        return orjson.loads(value) if isinstance(value, str | bytes) else value


def _drive(coro: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine that never suspends to completion, synchronously."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a SQLite transaction awaited something other than its Tx")


INLINE_CACHE_KIB = 32 * 1024  # SQLite's default is 2 MiB; the hot tables' pages fit in this


def _connect(path: str, *, synchronous: str, busy_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False, cached_statements=1024
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={busy_ms}")
    return conn


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _finish(conn: sqlite3.Connection, fn: Callable[..., Coroutine[Any, Any, R]], args: Any, kwargs: Any) -> R:
    """Run a transaction function on a connection whose transaction has begun; commit it."""
    try:
        result = _drive(fn(SqliteTx(conn), *args, **kwargs))
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (e.g. on SQLITE_FULL)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class _SqliteThreads:
    """A thread pool whose threads each own one sqlite3 connection (waiting up to 30 s for locks)."""

    def __init__(self, path: str, *, threads: int, synchronous: str, name: str) -> None:
        self.path = path
        self.synchronous = synchronous
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def run(self, begin: str, fn: Callable[..., Coroutine[Any, Any, R]], args: Any, kwargs: Any) -> R:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path, synchronous=self.synchronous, busy_ms=30_000)
            with self._lock:
                self._all.append(conn)
        conn.execute(begin)
        return _finish(conn, fn, args, kwargs)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class _Sqlite:
    """Where SQLite transactions run: on the event loop when the lock is free, else in a thread.

    Inline, a transaction costs its statements and nothing else (SQLite answers in microseconds;
    the commit's fsync is a fraction of a millisecond on an SSD — on a disk whose fsync takes
    milliseconds the loop waits that long per commit, which group commit spreads over many
    deliveries under load; PostgreSQL is the answer for such hosts). Threads would add a hop per
    transaction and, worse, a GIL convoy: sqlite3 releases the GIL around every statement, and a
    busy event loop hands it back only after the switch interval (5 ms), so a 10-statement
    transaction in a thread could take 50 ms. The inline connections never wait for a lock,
    though: when another connection (the SQLAlchemy engine, another process) holds it, the
    transaction goes to a thread that waits, and the event loop keeps serving.
    """

    def __init__(self, path: str, *, synchronous: str, readers: int) -> None:
        self.path = path
        self.synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self.writers = _SqliteThreads(path, threads=1, synchronous=synchronous, name="sqlite-w")
        self.readers = _SqliteThreads(path, threads=readers, synchronous=synchronous, name="sqlite-r")

    def _inline(self) -> sqlite3.Connection:
        # One connection for the loop's reads and writes: they run one after another anyway, and
        # its page cache stays valid across them (another connection's commit would invalidate it).
        if self._conn is None:
            self._conn = _connect(self.path, synchronous=self.synchronous, busy_ms=0)
            self._conn.execute(f"PRAGMA cache_size=-{INLINE_CACHE_KIB}")
        return self._conn

    async def write(self, fn: Callable[..., Coroutine[Any, Any, R]], args: Any, kwargs: Any) -> R:
        conn = self._inline()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        else:  # the write lock is ours: nothing below waits for another connection
            return _finish(conn, fn, args, kwargs)
        return await asyncio.get_running_loop().run_in_executor(
            self.writers.pool, functools.partial(self.writers.run, "BEGIN IMMEDIATE", fn, args, kwargs)
        )

    async def read(self, fn: Callable[..., Coroutine[Any, Any, R]], args: Any, kwargs: Any) -> R:
        conn = self._inline()
        try:
            conn.execute("BEGIN")
            return _finish(conn, fn, args, kwargs)
        except sqlite3.OperationalError as exc:  # reads are safe to run again, wherever they stopped
            if not _busy(exc):
                raise
        return await asyncio.get_running_loop().run_in_executor(
            self.readers.pool, functools.partial(self.readers.run, "BEGIN", fn, args, kwargs)
        )

    def close(self) -> None:
        self.writers.close()
        self.readers.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# --------------------------------------------------------------------------------- PostgreSQL


def _pg_count(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


@functools.lru_cache(maxsize=256)
def _pg_insert(
    table: Table, columns: tuple[str, ...], suffix: str, returning: str
) -> tuple[str, tuple[bool, ...]]:
    """``INSERT … SELECT FROM unnest(arrays)``: one statement (one plan) for any number of rows.

    Also says which columns are JSON: their values go in as text and are cast in the statement.
    """
    arrays = []
    selects = []
    json_columns = []
    for i, name in enumerate(columns, start=1):
        pg_type = table.c[name].type.compile(dialect=_PG)
        json_columns.append(pg_type in ("JSON", "JSONB"))
        if json_columns[-1]:
            arrays.append(f"${i}::text[]")
            selects.append(f"c{i}::jsonb")
        else:
            arrays.append(f"${i}::{pg_type}[]")
            selects.append(f"c{i}")
    aliases = ", ".join(f"c{i}" for i in range(1, len(columns) + 1))
    # Identifiers come from the table's metadata; every value is a bound parameter.
    query = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "  # noqa: S608
        f"SELECT {', '.join(selects)} FROM unnest({', '.join(arrays)}) WITH ORDINALITY AS u({aliases}, ord) "
        f"ORDER BY ord {suffix}"
    )
    return (f"{query} RETURNING {returning}" if returning else query), tuple(json_columns)


def _json_text(value: Any) -> str | None:
    return None if value is None else json_text(value)


class PostgresTx(Tx):
    """Statements on one asyncpg connection inside a transaction."""

    postgres = True

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetch(self, query: str, *args: Any) -> list[Row]:
        """All rows of a query."""
        return list(await self.conn.fetch(query, *args))

    async def execute(self, query: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        return _pg_count(await self.conn.execute(query, *args))

    async def executemany(self, query: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run a statement once per parameter row (pipelined by asyncpg)."""
        rows = list(rows)
        if rows:
            await self.conn.executemany(query, rows)

    async def insert_many(
        self,
        table: Table,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        suffix: str = "",
        returning: str = "",
    ) -> list[Row]:
        """One ``INSERT … SELECT FROM unnest(…)`` for all rows."""
        if not rows:
            return []
        query, json_columns = _pg_insert(table, tuple(columns), suffix, returning)
        arrays = [
            [_json_text(row[i]) for row in rows] if is_json else [row[i] for row in rows]
            for i, is_json in enumerate(json_columns)
        ]
        if returning:
            return list(await self.conn.fetch(query, *arrays))
        await self.conn.execute(query, *arrays)
        return []

    @staticmethod
    def time(value: Any) -> datetime:
        """A stored timestamp as an aware UTC datetime."""
        result: datetime = value
        return result if result.tzinfo else result.replace(tzinfo=UTC)

    @staticmethod
    def json(value: Any) -> Any:
        """A stored JSON value, decoded (asyncpg's codec already did it)."""
        return value


async def _pg_init(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=json_text,
            decoder=orjson.loads,
            schema="pg_catalog",
        )


# ----------------------------------------------------------------------------------- Database

TxFunction = Callable[Concatenate[Tx, P], Coroutine[Any, Any, R]]


class Database:
    """Runs transactions of the message path on SQLite or PostgreSQL (see the module docstring)."""

    def __init__(
        self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 20, readers: int = 1
    ) -> None:
        parsed = make_url(url)
        self.postgres = parsed.get_backend_name() == "postgresql"
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._pool_size = pool_size
        if self.postgres:
            self._dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            return
        database = parsed.database or ""
        if not database or database == ":memory:":
            raise ValueError("warelay needs a SQLite database file (several connections share it)")
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._sqlite = _Sqlite(database, synchronous=sqlite_synchronous, readers=readers)

    @property
    def dialect(self) -> str:
        """``postgresql`` or ``sqlite``."""
        return "postgresql" if self.postgres else "sqlite"

    async def _pg(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=self._pool_size,
                        statement_cache_size=1000,
                        init=_pg_init,
                    )
        return self._pool

    async def write(self, fn: TxFunction[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(tx, …)`` in a write transaction and commit it."""
        if self.postgres:
            pool = await self._pg()
            async with pool.acquire() as conn, conn.transaction():
                return await fn(PostgresTx(conn), *args, **kwargs)
        return await self._sqlite.write(fn, args, kwargs)

    async def read(self, fn: TxFunction[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(tx, …)`` in a read-only transaction."""
        if self.postgres:
            pool = await self._pg()
            async with pool.acquire() as conn, conn.transaction(readonly=True):
                return await fn(PostgresTx(conn), *args, **kwargs)
        return await self._sqlite.read(fn, args, kwargs)

    async def close(self) -> None:
        """Close every connection."""
        if self.postgres:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            return
        await asyncio.get_running_loop().run_in_executor(None, self._sqlite.close)
