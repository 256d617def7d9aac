"""Helpers for tests of single migrations: move a database to a revision, compare tables to the models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from warelay.storage.db import MIGRATIONS
from warelay.storage.models import Base


def migrate(connection: Connection, action: str, revision: str) -> None:
    """``command.upgrade``/``downgrade`` (``action``) to ``revision`` on an open connection."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    getattr(command, action)(cfg, revision)


def model_diff(connection: Connection, tables: Iterable[str]) -> list[Any]:
    """Differences between the models of ``tables`` and what the migrations made of them."""
    names = tuple(tables)
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [d for d in compare_metadata(context, Base.metadata) if any(t in repr(d) for t in names)]
