"""v0.4.10: feature_sets, feature_buffers and feature_passes: a frozen base's outputs materialized per shard.

Revision ID: v0_4_10
Revises: v0_4_9
Create Date: 2026-12-03

Feature transfer (plpy/cerebro_plpy/features.py): the units write them (the scheduler's role, which owns the tables),
on the server that holds the shards. Row-level security shows a feature set, its buffers and its passes to their
owner (and to ``cerebro_admin``); users only read them and drop sets (``drop_features``, or DELETE). They go with
their dataset (ON DELETE CASCADE). The buffers are stored uncompressed, as dataset buffers are.

Downgrade drops the tables and what the SQL API of this version built on them (the catalog view, its functions).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "v0_4_10"
down_revision: str | None = "v0_4_9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VISIBLE = "owner = current_user OR pg_has_role(current_user, 'cerebro_admin', 'USAGE')"
#: Users never insert (the units write as the tables' owner, which bypasses this).
WRITABLE = "owner = current_user AND (SELECT rolcanlogin FROM pg_roles WHERE rolname = current_user)"
POLICIES = {
    "feature_sets": (VISIBLE, WRITABLE),
    "feature_buffers": ("feature_set_id IN (SELECT feature_set_id FROM cerebro.feature_sets)",) * 2,
    "feature_passes": (VISIBLE, WRITABLE),
}
SPLIT = "split IN ('train', 'validation')"
NEW_VIEWS = ("feature_catalog",)
NEW_FUNCTIONS = (
    "drop_features(text, text, text)",
    "feature_layers(integer)",
    "materialize_features(jsonb)",
    "_materialize_features(jsonb)",
    "lock_feature_piece(integer, text, text, integer)",
    "feature_set(text, integer, text, text, text, integer[])",
    "store_feature_buffer(integer, text, integer, integer, integer, bytea, bytea)",
    "log_feature_pass(text, integer, text, text[], text, integer, integer, integer, integer, bigint, double precision)",
    "features_lock_key()",
    "feature_transfer_mode()",
)


def upgrade() -> None:
    op.create_table(
        "feature_sets",
        sa.Column("feature_set_id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("base_name", sa.Text(), nullable=False),
        sa.Column("base_sha256", sa.Text(), nullable=False),
        sa.Column("layer", sa.Text(), nullable=False),
        sa.Column("feature_shape", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["cerebro.datasets.dataset_id"],
            name=op.f("feature_sets_dataset_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("feature_set_id", name=op.f("feature_sets_pkey")),
        sa.UniqueConstraint("owner", "dataset_id", "base_sha256", "layer", name=op.f("feature_sets_owner_key")),
        schema="cerebro",
    )
    op.create_index(op.f("feature_sets_dataset_id_idx"), "feature_sets", ["dataset_id"], schema="cerebro")
    op.create_table(
        "feature_buffers",
        sa.Column("feature_set_id", sa.Integer(), nullable=False),
        sa.Column("split", sa.Text(), nullable=False),
        sa.Column("segment", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("part", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("x", sa.LargeBinary(), nullable=False),
        sa.Column("y", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(SPLIT, name=op.f("feature_buffers_split_check")),
        sa.ForeignKeyConstraint(
            ["feature_set_id"],
            ["cerebro.feature_sets.feature_set_id"],
            name=op.f("feature_buffers_feature_set_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("feature_set_id", "split", "segment", "part", name=op.f("feature_buffers_pkey")),
        schema="cerebro",
    )
    op.create_table(
        "feature_passes",
        sa.Column("pass_id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("base_sha256", sa.Text(), nullable=False),
        sa.Column("layers", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("split", sa.Text(), nullable=False),
        sa.Column("segment", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("batch_rows", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("backend_pid", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(SPLIT, name=op.f("feature_passes_split_check")),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["cerebro.datasets.dataset_id"],
            name=op.f("feature_passes_dataset_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pass_id", name=op.f("feature_passes_pkey")),
        schema="cerebro",
    )
    op.create_index(op.f("feature_passes_dataset_id_idx"), "feature_passes", ["dataset_id"], schema="cerebro")
    op.execute("ALTER TABLE cerebro.feature_buffers ALTER x SET STORAGE EXTERNAL, ALTER y SET STORAGE EXTERNAL")
    for table, (visible, writable) in POLICIES.items():
        op.execute(f"ALTER TABLE cerebro.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY owner_only ON cerebro.{table} USING ({visible}) WITH CHECK ({writable})")


def downgrade() -> None:
    # Constants of this file, not input: the names cannot be bound as parameters in DDL.
    for view in NEW_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS cerebro.{view}")
    for signature in NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")
    op.drop_table("feature_passes", schema="cerebro")
    op.drop_table("feature_buffers", schema="cerebro")
    op.drop_table("feature_sets", schema="cerebro")
