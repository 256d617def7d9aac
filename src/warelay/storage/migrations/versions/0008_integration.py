"""Integration API: idempotency keys and the audit of AI replies.

``api_send_audit`` records every message queued through the send APIs (seed 000's
``/api/v1/integration/ai/send-message``, seed 004's ``/api/send-message``) and every request they
refused: tenant, API key, route, recipient, type, a summary, the outbox message and the result.
``idempotency_records`` keeps, for 24 hours, what a request sent with an ``Idempotency-Key`` queued,
so that a retry answers the same instead of sending twice.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "api_send_audit",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", _BIG_ID, nullable=True),
        sa.Column("api_key_id", _BIG_ID, nullable=True),
        sa.Column("route", sa.String(length=100), nullable=False),
        sa.Column("number_id", _BIG_ID, nullable=True),
        sa.Column("recipient", sa.String(length=160), nullable=True),
        sa.Column("type", sa.String(length=20), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("message_id", _BIG_ID, nullable=True),
        sa.Column("result", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_api_send_audit_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_api_send_audit_api_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["number_id"],
            ["numbers.id"],
            name=op.f("fk_api_send_audit_number_id_numbers"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_api_send_audit_message_id_messages"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_send_audit")),
    )
    op.create_index("ix_api_send_audit_tenant", "api_send_audit", ["tenant_id", "id"], unique=False)
    op.create_index(op.f("ix_api_send_audit_message_id"), "api_send_audit", ["message_id"], unique=False)

    op.create_table(
        "idempotency_records",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("owner", sa.String(length=40), nullable=False),
        sa.Column("api_key_id", _BIG_ID, nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("route", sa.String(length=100), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("result", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_idempotency_records_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_records")),
        sa.UniqueConstraint("owner", "idempotency_key", name=op.f("uq_idempotency_records_owner")),
    )
    op.create_index(
        op.f("ix_idempotency_records_created_at"), "idempotency_records", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_idempotency_records_created_at"), table_name="idempotency_records")
    op.drop_table("idempotency_records")
    op.drop_index(op.f("ix_api_send_audit_message_id"), table_name="api_send_audit")
    op.drop_index("ix_api_send_audit_tenant", table_name="api_send_audit")
    op.drop_table("api_send_audit")
