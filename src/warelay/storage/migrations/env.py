"""Alembic environment: runs warelay's migrations on the connection handed in by ``storage.db``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from warelay.storage.models import Base

target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    """Apply migrations on an already open (sync-facing) connection."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("warelay migrations run through `warelay db upgrade`, which supplies the connection")
run_migrations(connection)
