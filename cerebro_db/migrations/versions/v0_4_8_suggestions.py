"""v0.4.8: suggestion_log, what the system suggests at an epoch's end; config_events.suggestion_id.

Revision ID: v0_4_8
Revises: v0_4_7
Create Date: 2026-12-02

Row-level security chains through workloads, as for configs: a user reads the suggestions of their own workloads.
Users write neither table: the epoch-end hook inserts suggestions, accept_suggestion / dismiss_suggestion resolve
them after checking the caller (grants in sql/99_privileges.sql). An accepted suggestion is linked from the
``accepted`` event of config_events.

Downgrade drops the table, the event column and what the SQL API of this version built on them; the ``accepted``
events stay, without their link (on_epoch_end's call of suggest_observe is inside an exception block: with the older
SQL not yet reinstalled, an epoch's end only logs a warning).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "v0_4_8"
down_revision: str | None = "v0_4_7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = (
    "kind IN ('stop', 'clone_lower_lr', 'clone_higher_lr', 'extend', 'resume', 'drill_down', 'divergence', "
    "'overfitting', 'leakage', 'dataset_too_small')"
)
RESOLUTIONS = "resolution IN ('accepted', 'dismissed', 'superseded')"
VISIBLE = "workload_id IN (SELECT workload_id FROM cerebro.workloads)"
#: This version's SQL API on the table, which the older SQL files do not know (views first: they use the functions).
NEW_VIEWS = ("suggestions", "suggestion_kinds")
NEW_FUNCTIONS = (
    "accept_suggestion(bigint)",
    "dismiss_suggestion(bigint)",
    "_open_suggestion(bigint)",
    "_resolve_suggestion(bigint, text, integer)",
    "suggestion_carried_out(cerebro.suggestion_log, integer)",
    "suggest_observe(integer, integer)",
    "suggest_for_workload(integer, integer, double precision)",
    "suggest_for_config(integer, integer, double precision)",
    "_refine_search_space(jsonb, jsonb)",
    "add_suggestion(integer, integer, text, text, jsonb, text, jsonb)",
    "suggestion_sql(text, integer, jsonb)",
    "suggestion_repeat_blocked(integer, integer, text)",
    "config_curve(integer, double precision)",
    "workload_noise(integer)",
    "_three_digits(double precision)",
    "_shown(double precision)",
    "_evidence_number(double precision)",
    "suggestion_thresholds()",
)


def upgrade() -> None:
    op.create_table(
        "suggestion_log",
        sa.Column("suggestion_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("workload_id", sa.Integer(), nullable=False),
        sa.Column("config_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("evidence", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("expected_effect", sa.Text(), nullable=False),
        sa.Column("action", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("sql", sa.Text(), nullable=True),
        sa.Column("config_epochs_done", sa.Integer(), nullable=True),
        sa.Column("config_status", sa.Text(), nullable=True),
        sa.Column("config_max_epochs", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("resolved_by", sa.Text(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(KINDS, name=op.f("suggestion_log_kind_check")),
        sa.CheckConstraint(RESOLUTIONS, name=op.f("suggestion_log_resolution_check")),
        sa.ForeignKeyConstraint(
            ["workload_id"],
            ["cerebro.workloads.workload_id"],
            name=op.f("suggestion_log_workload_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["config_id"], ["cerebro.configs.config_id"], name=op.f("suggestion_log_config_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("suggestion_id", name=op.f("suggestion_log_pkey")),
        schema="cerebro",
    )
    op.create_index(op.f("suggestion_log_workload_id_idx"), "suggestion_log", ["workload_id"], schema="cerebro")
    op.create_index(op.f("suggestion_log_config_id_idx"), "suggestion_log", ["config_id"], schema="cerebro")
    op.create_index(
        "suggestion_log_open_idx",
        "suggestion_log",
        ["workload_id", "config_id"],
        schema="cerebro",
        postgresql_where=sa.text("resolution IS NULL"),
    )
    op.execute("ALTER TABLE cerebro.suggestion_log ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY owner_only ON cerebro.suggestion_log USING ({VISIBLE}) WITH CHECK ({VISIBLE})")
    op.add_column("config_events", sa.Column("suggestion_id", sa.BigInteger(), nullable=True), schema="cerebro")
    op.create_foreign_key(
        op.f("config_events_suggestion_id_fkey"),
        "config_events",
        "suggestion_log",
        ["suggestion_id"],
        ["suggestion_id"],
        source_schema="cerebro",
        referent_schema="cerebro",
        ondelete="SET NULL",
    )
    op.create_index(
        "config_events_suggestion_idx",
        "config_events",
        ["suggestion_id"],
        schema="cerebro",
        postgresql_where=sa.text("suggestion_id IS NOT NULL"),
    )


def downgrade() -> None:
    # Constants of this file, not input: the names cannot be bound as parameters in DDL.
    for view in NEW_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS cerebro.{view}")
    for signature in NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")
    op.drop_index("config_events_suggestion_idx", table_name="config_events", schema="cerebro")
    op.drop_constraint(op.f("config_events_suggestion_id_fkey"), "config_events", schema="cerebro")
    op.drop_column("config_events", "suggestion_id", schema="cerebro")
    op.execute("DROP POLICY owner_only ON cerebro.suggestion_log")
    op.drop_table("suggestion_log", schema="cerebro")
