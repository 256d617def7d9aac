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
``Tx`` never suspends, so the coroutine completes in one step, synchronously, on the event loop
(see :class:`_Sqlite` for why not in a thread, and how a lock held by another connection is
waited for).
"""

from __future__ import annotations

import abc
import asyncio
import functools
import re
import sqlite3
from collections.abc import Callable, Coroutine, Iterable, Sequence
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


def _connect(path: str, *, synchronous: str) -> sqlite3.Connection:
    # busy timeout 0: a lock held elsewhere is waited for on the event loop (see _Sqlite).
    conn = sqlite3.connect(
        path, timeout=0, isolation_level=None, check_same_thread=False, cached_statements=1024
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
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


_FIRST_RETRY_S = 0.0005
_MAX_RETRY_S = 0.005


class _Sqlite:
    """SQLite transactions, run on the event loop; a lock held elsewhere is waited for on the loop.

    Inline, a transaction costs its statements and nothing else (SQLite answers in microseconds;
    the commit's fsync is a fraction of a millisecond on an SSD — on a disk whose fsync takes
    milliseconds the loop waits that long per commit, which group commit spreads over many
    deliveries under load; PostgreSQL is the answer for such hosts). Threads would add a hop per
    transaction and, worse, a GIL convoy: sqlite3 releases the GIL around every statement, and a
    busy event loop hands it back only after the switch interval (5 ms), so a 10-statement
    transaction in a thread could take 50 ms.

    The connection never waits inside SQLite (busy timeout 0): when another connection holds the
    write lock (another warelay process, the SQLAlchemy engine), ``BEGIN IMMEDIATE`` fails at once
    and the transaction tries again after a short asynchronous sleep (0.5 ms, growing to 5 ms), so
    the event loop keeps serving. SQLite's own busy handler would sleep 1, 2, 5, 10, 15, 20 and
    25 ms between tries while other processes' transactions hold the lock for about a millisecond
    each, which made webhook acknowledgements wait tens of milliseconds with worker processes
    writing beside ``serve``. Reads rarely meet a lock in WAL mode (a checkpoint or recovery of
    the WAL index); they retry the same way, and run again from the start.
    """

    def __init__(self, path: str, *, synchronous: str, lock_wait_seconds: float) -> None:
        self.path = path
        self.synchronous = synchronous
        self.lock_wait_seconds = lock_wait_seconds
        self._conn: sqlite3.Connection | None = None

    def _inline(self) -> sqlite3.Connection:
        # One connection for the loop's reads and writes: they run one after another anyway, and
        # its page cache stays valid across them (another connection's commit would invalidate it).
        if self._conn is None:
            self._conn = _connect(self.path, synchronous=self.synchronous)
            self._conn.execute(f"PRAGMA cache_size=-{INLINE_CACHE_KIB}")
        return self._conn

    async def write(self, fn: Callable[..., Coroutine[Any, Any, R]], args: Any, kwargs: Any) -> R:
        return await self._run("BEGIN IMMEDIATE", fn, args, kwargs)

    async def read(self, fn: Callable[..., Coroutine[Any, Any, R]], args: Any, kwargs: Any) -> R:
        return await self._run("BEGIN", fn, args, kwargs)

    async def _run(self, begin: str, fn: Callable[..., Coroutine[Any, Any, R]], args: Any, kwargs: Any) -> R:
        delay = _FIRST_RETRY_S
        deadline: float | None = None
        while True:
            conn = self._inline()
            try:
                conn.execute(begin)
                # A write holds the write lock from here on, so only its BEGIN can be refused; a
                # read takes its WAL read lock at its first statement and, refused, changed
                # nothing. Either way it is rolled back and safe to run again.
                return _finish(conn, fn, args, kwargs)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.lock_wait_seconds
            elif loop.time() > deadline:
                waited = f"{self.lock_wait_seconds:g} s"
                raise sqlite3.OperationalError(
                    f"database is locked: another connection held it for over {waited}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_RETRY_S)

    def close(self) -> None:
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
        self,
        url: str,
        *,
        sqlite_synchronous: str = "FULL",
        pool_size: int = 20,
        lock_wait_seconds: float = 30.0,
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
        self._sqlite = _Sqlite(database, synchronous=sqlite_synchronous, lock_wait_seconds=lock_wait_seconds)

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
        self._sqlite.close()
