"""Per-key trust for shared embeddings; one idempotency record per (owner, key), admin included.

``api_keys.trusted``: only rows of trusted keys (and the admin's) refresh the shared LOCUS
embedding of a registered model; an untrusted client's rows are stored and used by federation
but cannot steer other tenants' routing.

``evaluation_batches.owner`` ("admin" or "key:<id>"): the old unique constraint on
(key_id, idempotency_key) never fired for the admin token, whose key_id is NULL (NULLs are
distinct in SQL unique constraints), so concurrent admin posts with one Idempotency-Key stored
one batch each. Rows that duplicate an earlier admin batch's key get a distinct owner on upgrade.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 14:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("trusted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("evaluation_batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("owner", sa.String(length=40), nullable=False, server_default="admin")
        )
    op.execute(
        "UPDATE evaluation_batches SET owner = CASE"
        " WHEN key_id IS NOT NULL THEN 'key:' || CAST(key_id AS VARCHAR)"
        " WHEN id = (SELECT MIN(b2.id) FROM evaluation_batches b2 WHERE b2.key_id IS NULL"
        "   AND b2.idempotency_key = evaluation_batches.idempotency_key) THEN 'admin'"
        " ELSE 'admin#' || CAST(id AS VARCHAR) END"
    )
    with op.batch_alter_table("evaluation_batches", schema=None) as batch_op:
        batch_op.create_index(
            "uq_evaluation_batches_owner_key", ["owner", "idempotency_key"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("evaluation_batches", schema=None) as batch_op:
        batch_op.drop_index("uq_evaluation_batches_owner_key")
        batch_op.drop_column("owner")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("trusted")
