"""Knowledge retrieval: trigram fallback and embeddings.

The trigram fallback needs no schema (it works over the agent's vocabulary in memory, see
``warelay.knowledge.fuzzy``). Embeddings are stored beside the passages they belong to: the vector
(float32 bytes) and its sign bits, and on the document the model they came from or why they are
missing. Nullable columns only, so the upgrade rewrites nothing on either engine.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


# Plain ALTER TABLE, not Alembic's batch mode: on SQLite a batch would copy knowledge_passages into
# a new table, dropping the triggers that keep knowledge_fts in step (ADD COLUMN needs no copy, and
# DROP COLUMN is native since SQLite 3.35).


def upgrade() -> None:
    op.add_column("knowledge_documents", sa.Column("embedding_model", sa.String(length=200), nullable=True))
    op.add_column("knowledge_documents", sa.Column("embedding_error", sa.Text(), nullable=True))
    op.add_column("knowledge_passages", sa.Column("embedding", sa.LargeBinary(), nullable=True))
    op.add_column("knowledge_passages", sa.Column("embedding_sign", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("knowledge_passages", "embedding_sign")
    op.drop_column("knowledge_passages", "embedding")
    op.drop_column("knowledge_documents", "embedding_error")
    op.drop_column("knowledge_documents", "embedding_model")
