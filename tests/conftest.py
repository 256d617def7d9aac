"""Shared fixtures: a migrated database on each engine (SQLite always, PostgreSQL when configured).

``make test`` runs the suite through ``scripts/with-postgres.sh``, which sets ``TEST_DATABASE_URL``;
without it the PostgreSQL half of each parametrised test is skipped with a reason (CI never
skips it: ``.ci/run`` sets ``WARELAY_REQUIRE_POSTGRES=1``, which turns the skip into a failure).
Each test gets its own database: a copy of a migrated SQLite template file, or a PostgreSQL
database created from a migrated template database.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from warelay.storage.db import create_engine, upgrade
from warelay.storage.direct import Database

PG_URL = os.environ.get("TEST_DATABASE_URL")
REQUIRE_PG = os.environ.get("WARELAY_REQUIRE_POSTGRES") == "1"
_counter = itertools.count()


def _run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]  # a coroutine object, typed loosely for brevity


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file to copy for each test."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    _run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


def _admin_url(url: str) -> str:
    return make_url(url).set(database="postgres").render_as_string(hide_password=False)


async def _pg_exec(url: str, *statements: str) -> None:
    engine = create_async_engine(_admin_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """The name of a migrated PostgreSQL template database."""
    if PG_URL is None:
        if REQUIRE_PG:
            pytest.fail("WARELAY_REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL not configured (set TEST_DATABASE_URL, or run `make test`)")
    name = f"warelay_tpl_{os.getpid()}"
    _run(_pg_exec(PG_URL, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"))
    _run(_migrate(make_url(PG_URL).set(database=name).render_as_string(hide_password=False)))
    yield name
    _run(_pg_exec(PG_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, migrated database, once per engine."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "warelay.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template_name: str = request.getfixturevalue("pg_template")
    assert PG_URL is not None
    name = f"warelay_t_{os.getpid()}_{next(_counter)}"
    _run(_pg_exec(PG_URL, f"CREATE DATABASE {name} TEMPLATE {template_name}"))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    _run(_pg_exec(PG_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A fresh, migrated SQLite database (for tests that need only one engine)."""
    path = tmp_path / "warelay.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh, migrated database, once per engine kind."""
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    """The message path's direct-driver access to the same fresh database as ``engine``."""
    db = Database(db_url)
    yield db
    await db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database nothing was migrated in, once per engine (for tests of the migrations themselves)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    request.getfixturevalue("pg_template")  # skips (or fails in CI) without PostgreSQL, like db_url
    assert PG_URL is not None
    name = f"warelay_empty_{os.getpid()}_{next(_counter)}"
    _run(_pg_exec(PG_URL, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    _run(_pg_exec(PG_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
