"""Request records: every served request's decision, tokens and cost, durably (the dashboard).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("chosen", sa.String(length=200), nullable=True),
        sa.Column("router", sa.String(length=100), nullable=True),
        sa.Column("lam", sa.Float(), nullable=True),
        sa.Column("p_correct", sa.Float(), nullable=True),
        sa.Column("candidates", sa.JSON(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("fallbacks", sa.Integer(), nullable=False),
        sa.Column("query_sha256", sa.String(length=64), nullable=False),
        sa.Column("conversation", sa.String(length=64), nullable=True),
        sa.Column("budget_total", sa.BigInteger(), nullable=True),
        sa.Column("budget_granted", sa.BigInteger(), nullable=True),
        sa.Column("budget_left", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("request_records", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_request_records_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_request_records_conversation"), ["conversation"], unique=False
        )
        batch_op.create_index("ix_request_records_key_time", ["key_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("request_records", schema=None) as batch_op:
        batch_op.drop_index("ix_request_records_key_time")
        batch_op.drop_index(batch_op.f("ix_request_records_conversation"))
        batch_op.drop_index(batch_op.f("ix_request_records_created_at"))

    op.drop_table("request_records")
