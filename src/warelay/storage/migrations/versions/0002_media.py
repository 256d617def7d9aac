"""Media files fetched for inbound messages.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "media_files",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("tenant_id", _BIG_ID, nullable=False),
        sa.Column("number_id", _BIG_ID, nullable=False),
        sa.Column("message_id", _BIG_ID, nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=False),
        sa.Column("media_id", sa.String(length=200), nullable=True),
        sa.Column("media_type", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", _JSON, nullable=True),
        sa.Column("mime_type", sa.String(length=200), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("store", sa.String(length=10), nullable=True),
        sa.Column("storage_key", sa.String(length=500), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("text_truncated", sa.Boolean(), nullable=False),
        sa.Column("text_error", _JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_media_files_message_id_messages"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media_files")),
        sa.UniqueConstraint("number_id", "provider_message_id", name=op.f("uq_media_files_number_id")),
    )
    with op.batch_alter_table("media_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_media_files_message_id"), ["message_id"], unique=False)
        batch_op.create_index(
            "ix_media_files_due",
            ["expires_at"],
            unique=False,
            sqlite_where=sa.text("purged_at IS NULL"),
            postgresql_where=sa.text("purged_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("media_files", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_media_files_due",
            sqlite_where=sa.text("purged_at IS NULL"),
            postgresql_where=sa.text("purged_at IS NULL"),
        )
        batch_op.drop_index(batch_op.f("ix_media_files_message_id"))
    op.drop_table("media_files")
