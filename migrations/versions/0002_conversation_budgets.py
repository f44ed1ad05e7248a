"""Conversation token budget ledgers in the database (without Redis they survive a restart).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_budgets",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("reserved", sa.BigInteger(), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.Column("any_truncated", sa.Boolean(), nullable=False),
        sa.Column("last_truncated", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("conversation_budgets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversation_budgets_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("conversation_budgets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversation_budgets_expires_at"))

    op.drop_table("conversation_budgets")
