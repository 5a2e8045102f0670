"""v0.1.0: initial schema (datasets, workloads, configs, model states, unit log, epoch metrics).

Revision ID: v0_1_0
Revises:
Create Date: 2026-11-23

Downgrade drops every table and so every dataset and trained state; the views of the
SQL API that read them are dropped first (``cerebro-db up`` recreates them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "v0_1_0"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("dataset_id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), server_default=sa.text("CURRENT_USER"), nullable=False),
        sa.Column("source_table", sa.Text(), nullable=False),
        sa.Column("label_column", sa.Text(), nullable=False),
        sa.Column("feature_columns", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("feature_shape", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("class_values", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("normalize", sa.Text(), nullable=False),
        sa.Column("norm_shift", postgresql.ARRAY(sa.Float()), nullable=False),
        sa.Column("norm_scale", postgresql.ARRAY(sa.Float()), nullable=False),
        sa.Column("num_segments", sa.Integer(), nullable=False),
        sa.Column("buffer_rows", sa.Integer(), nullable=False),
        sa.Column("validation_fraction", sa.Float(), nullable=False),
        sa.Column("train_rows", sa.BigInteger(), nullable=False),
        sa.Column("validation_rows", sa.BigInteger(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", name=op.f("datasets_pkey")),
        sa.UniqueConstraint("name", name=op.f("datasets_name_key")),
        schema="cerebro",
    )
    op.create_table(
        "segments",
        sa.Column("segment_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("dsn", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("segment_id", name=op.f("segments_pkey")),
        schema="cerebro",
    )
    op.create_table(
        "dataset_buffers",
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("buffer_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("split", sa.Text(), nullable=False),
        sa.Column("segment", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("x", sa.LargeBinary(), nullable=False),
        sa.Column("y", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("split IN ('train', 'validation')", name=op.f("dataset_buffers_split_check")),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["cerebro.datasets.dataset_id"],
            name=op.f("dataset_buffers_dataset_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "buffer_id", name=op.f("dataset_buffers_pkey")),
        schema="cerebro",
    )
    op.create_index(
        "dataset_buffers_shard_idx",
        "dataset_buffers",
        ["dataset_id", "split", "segment", "buffer_id"],
        unique=False,
        schema="cerebro",
    )
    op.create_table(
        "workloads",
        sa.Column("workload_id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("owner", sa.Text(), server_default=sa.text("CURRENT_USER"), nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("search_space", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("procedure", sa.Text(), nullable=False),
        sa.Column("max_epochs", sa.Integer(), nullable=False),
        sa.Column("num_configs", sa.Integer(), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("parent_workload_id", sa.Integer(), nullable=True),
        sa.Column("warm_start", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'running'"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "procedure IN ('grid', 'random', 'hyperopt', 'hyperband')", name=op.f("workloads_procedure_check")
        ),
        sa.CheckConstraint("status IN ('running', 'stopped', 'completed')", name=op.f("workloads_status_check")),
        sa.CheckConstraint("max_epochs > 0", name=op.f("workloads_max_epochs_check")),
        sa.ForeignKeyConstraint(
            ["dataset"], ["cerebro.datasets.name"], name=op.f("workloads_dataset_fkey"), onupdate="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["parent_workload_id"], ["cerebro.workloads.workload_id"], name=op.f("workloads_parent_workload_id_fkey")
        ),
        sa.PrimaryKeyConstraint("workload_id", name=op.f("workloads_pkey")),
        schema="cerebro",
    )
    op.create_index(op.f("workloads_dataset_idx"), "workloads", ["dataset"], unique=False, schema="cerebro")
    op.create_table(
        "configs",
        sa.Column("config_id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("workload_id", sa.Integer(), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("epochs_done", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_epochs", sa.Integer(), nullable=False),
        sa.Column(
            "seed", sa.Integer(), server_default=sa.text("floor(random() * 2147483647)::integer"), nullable=False
        ),
        sa.Column("cloned_from", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Text(), server_default=sa.text("CURRENT_USER"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'stopped', 'completed', 'failed')", name=op.f("configs_status_check")
        ),
        sa.CheckConstraint("epochs_done >= 0", name=op.f("configs_epochs_done_check")),
        sa.CheckConstraint("max_epochs > 0", name=op.f("configs_max_epochs_check")),
        sa.ForeignKeyConstraint(
            ["cloned_from"], ["cerebro.configs.config_id"], name=op.f("configs_cloned_from_fkey"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["workload_id"],
            ["cerebro.workloads.workload_id"],
            name=op.f("configs_workload_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("config_id", name=op.f("configs_pkey")),
        schema="cerebro",
    )
    op.create_index(op.f("configs_workload_id_idx"), "configs", ["workload_id"], unique=False, schema="cerebro")
    op.create_table(
        "epoch_metrics",
        sa.Column("config_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=False),
        sa.Column("train_metric", sa.Float(), nullable=False),
        sa.Column("val_loss", sa.Float(), nullable=False),
        sa.Column("val_metric", sa.Float(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["config_id"], ["cerebro.configs.config_id"], name=op.f("epoch_metrics_config_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("config_id", "epoch", name=op.f("epoch_metrics_pkey")),
        schema="cerebro",
    )
    op.create_table(
        "model_states",
        sa.Column("config_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column(
            "visited_segments",
            postgresql.ARRAY(sa.Integer()),
            server_default=sa.text("'{}'::integer[]"),
            nullable=False,
        ),
        sa.Column("epoch_rows", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("epoch_loss_sum", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("epoch_metric_sum", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("epoch_seconds", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["config_id"], ["cerebro.configs.config_id"], name=op.f("model_states_config_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("config_id", name=op.f("model_states_pkey")),
        schema="cerebro",
    )
    op.create_table(
        "units",
        sa.Column("unit_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("config_id", sa.Integer(), nullable=False),
        sa.Column("segment", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=False),
        sa.Column("train_metric", sa.Float(), nullable=False),
        sa.Column("data_load_s", sa.Float(), nullable=False),
        sa.Column("state_load_s", sa.Float(), nullable=False),
        sa.Column("train_s", sa.Float(), nullable=False),
        sa.Column("state_save_s", sa.Float(), nullable=False),
        sa.Column("validation_s", sa.Float(), nullable=True),
        sa.Column("backend_pid", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["config_id"], ["cerebro.configs.config_id"], name=op.f("units_config_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("unit_id", name=op.f("units_pkey")),
        schema="cerebro",
    )
    op.create_index("units_config_epoch_idx", "units", ["config_id", "epoch"], unique=False, schema="cerebro")
    # Packed float32 buffers and model states do not compress: store them out of line
    # without trying pglz on every write.
    op.execute("ALTER TABLE cerebro.dataset_buffers ALTER x SET STORAGE EXTERNAL, ALTER y SET STORAGE EXTERNAL")
    op.execute("ALTER TABLE cerebro.model_states ALTER state SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute(
        """
        DO $$
        DECLARE view record;
        BEGIN
            FOR view IN SELECT viewname FROM pg_views WHERE schemaname = 'cerebro' LOOP
                EXECUTE format('DROP VIEW IF EXISTS cerebro.%I CASCADE', view.viewname);
            END LOOP;
        END
        $$
        """
    )
    op.drop_index("units_config_epoch_idx", table_name="units", schema="cerebro")
    op.drop_table("units", schema="cerebro")
    op.drop_table("model_states", schema="cerebro")
    op.drop_table("epoch_metrics", schema="cerebro")
    op.drop_index(op.f("configs_workload_id_idx"), table_name="configs", schema="cerebro")
    op.drop_table("configs", schema="cerebro")
    op.drop_index(op.f("workloads_dataset_idx"), table_name="workloads", schema="cerebro")
    op.drop_table("workloads", schema="cerebro")
    op.drop_index("dataset_buffers_shard_idx", table_name="dataset_buffers", schema="cerebro")
    op.drop_table("dataset_buffers", schema="cerebro")
    op.drop_table("segments", schema="cerebro")
    op.drop_table("datasets", schema="cerebro")
