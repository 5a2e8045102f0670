"""v0.4.11: dataset_duplicates, a dataset's exact duplicate rows across its splits and within its training split.

Revision ID: v0_4_11
Revises: v0_4_10
Create Date: 2026-12-04

Counted once from the buffers by ``dataset_leakage`` (plpy/cerebro_plpy/leakage.py), the SECURITY DEFINER function
that alone writes the table: at prepare_dataset, or at the first need (a workload's first epoch end, a call of
``dataset_leakage``) for a dataset prepared before this version. Row-level security chains through datasets, as
for dataset_buffers: a user reads their own datasets' counts. The rows go with their dataset (ON DELETE CASCADE).

Downgrade drops the table and this version's functions; the older SQL files do not read them (until they are
reinstalled, prepare_dataset fails at its count and the epoch-end hook logs a warning instead of suggestions).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_4_11"
down_revision: str | None = "v0_4_10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VISIBLE = "dataset_id IN (SELECT dataset_id FROM cerebro.datasets)"
#: This version's SQL API on the table, which the older SQL files do not know.
NEW_FUNCTIONS = (
    "dataset_leakage(text)",
    "_count_duplicate_rows(integer)",
    "duplicate_rows_reason(bigint, bigint)",
    "leakage_evidence(integer)",
    "suggest_duplicate_rows(integer)",
)


def upgrade() -> None:
    op.create_table(
        "dataset_duplicates",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("validation_duplicates", sa.BigInteger(), nullable=False),
        sa.Column("train_duplicates", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("counted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "validation_duplicates >= 0 AND train_duplicates >= 0", name=op.f("dataset_duplicates_counts_check")
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["cerebro.datasets.dataset_id"],
            name=op.f("dataset_duplicates_dataset_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", name=op.f("dataset_duplicates_pkey")),
        schema="cerebro",
    )
    op.execute("ALTER TABLE cerebro.dataset_duplicates ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY owner_only ON cerebro.dataset_duplicates USING ({VISIBLE}) WITH CHECK ({VISIBLE})")


def downgrade() -> None:
    # Constants of this file, not input: the names cannot be bound as parameters in DDL.
    for signature in NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")
    op.drop_table("dataset_duplicates", schema="cerebro")
