"""Conversation sync: conversation versions and the agent's transcript.

``conversations.version`` counts state changes (syncs, and warelay's own agents' changes) for the
sync API's optimistic concurrency; ``transcript_entries`` keeps the messages an external agent
records through ``POST /api/v1/whatsapp/agent/conversations/{sessionId}/messages``; contacts get
an index on ``user_key`` for the lookups by phone number.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ALTER TABLE on both engines (no batch copy of ``conversations`` on SQLite: with foreign
    # keys on, dropping the old copy would cascade into messages and work items).
    op.add_column("conversations", sa.Column("version", sa.Integer(), server_default="1", nullable=False))
    op.create_table(
        "transcript_entries",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("conversation_id", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("api_key_id", _BIG_ID, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_transcript_entries_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_transcript_entries_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_entries")),
    )
    op.create_index(
        "ix_transcript_entries_conversation", "transcript_entries", ["conversation_id", "id"], unique=False
    )
    # Seed 002 finds a user's conversation by phone number across a tenant's (or every) number.
    op.create_index("ix_contacts_user_key", "contacts", ["user_key"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_contacts_user_key", table_name="contacts")
    op.drop_index("ix_transcript_entries_conversation", table_name="transcript_entries")
    op.drop_table("transcript_entries")
    # SQLite 3.35+ drops the column in place (see upgrade for why not a batch copy).
    op.drop_column("conversations", "version")
