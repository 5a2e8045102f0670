"""v0.4.12: workloads.autonomy and the autopilot's budget (cruise control and autopilot).

Revision ID: v0_4_12
Revises: v0_4_11
Create Date: 2026-12-03

``autonomy``: ``manual`` (the system only suggests), ``cruise`` (it accepts the non-destructive suggestions itself)
or ``autopilot`` (it accepts every suggestion with an action, within ``budget_epochs`` and/or ``budget_seconds``
counted from ``autopilot_since``). ``budget_spent_at``: when the autopilot found its budget spent and stopped the
workload's configs. ``budget_of``: a drill-down the autopilot started spends the budget of that workload. Existing
workloads are ``manual``. Users may update ``autonomy`` and the budget columns of their own workloads (grants in
sql/99_privileges.sql, checked by the workloads_autonomy trigger); the other three are the system's.

run_model_selection and _create_workload take the autonomy and the budget: their old signatures go (the SQL API is
reloaded with CREATE OR REPLACE, which cannot remove an overload). Downgrade drops the columns and this version's
functions and signatures; the older SQL files recreate theirs.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_4_12"
down_revision: str | None = "v0_4_11"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS = {
    "autonomy": "autonomy IN ('manual', 'cruise', 'autopilot')",
    "budget_epochs": "budget_epochs > 0",
    "budget_seconds": "budget_seconds > 0",
    "autopilot_budget": (
        "autonomy <> 'autopilot' OR budget_epochs IS NOT NULL OR budget_seconds IS NOT NULL OR budget_of IS NOT NULL"
    ),
}
OLD_FUNCTIONS = (
    "run_model_selection(text, text, jsonb, text, int, int, text, int, boolean, int, interval)",
    "_create_workload(text, text, jsonb, text, int, int, text, int, boolean, int, interval)",
)
#: This version's SQL API, which the older SQL files do not know (the trigger before its function).
NEW_TRIGGERS = (("workloads_autonomy", "workloads"),)
NEW_FUNCTIONS = (
    "run_model_selection(text, text, jsonb, text, int, int, text, int, boolean, int, interval, text, int, int)",
    "_create_workload(text, text, jsonb, text, int, int, text, int, boolean, int, interval, text, int, int)",
    "workloads_autonomy()",
    "autonomy_observe(integer)",
    "autonomy_accept(cerebro.suggestion_log, text, integer)",
    "autopilot_spent(integer)",
    "autopilot_budget_spent(integer, text)",
    "autopilot_rung_stop(integer, integer, integer)",
    "rung_standing(integer, integer)",
    "user_steering(integer)",
    "_carry_out_suggestion(cerebro.suggestion_log)",
    "caller_is_system()",
    "caller_actor()",
)


def upgrade() -> None:
    # Constants of this file, not input: the names cannot be bound as parameters in DDL.
    for signature in OLD_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")
    op.add_column(
        "workloads",
        sa.Column("autonomy", sa.Text(), server_default=sa.text("'manual'"), nullable=False),
        schema="cerebro",
    )
    op.add_column("workloads", sa.Column("budget_epochs", sa.Integer(), nullable=True), schema="cerebro")
    op.add_column("workloads", sa.Column("budget_seconds", sa.Integer(), nullable=True), schema="cerebro")
    op.add_column(
        "workloads", sa.Column("autopilot_since", sa.DateTime(timezone=True), nullable=True), schema="cerebro"
    )
    op.add_column(
        "workloads", sa.Column("budget_spent_at", sa.DateTime(timezone=True), nullable=True), schema="cerebro"
    )
    op.add_column("workloads", sa.Column("budget_of", sa.Integer(), nullable=True), schema="cerebro")
    op.create_foreign_key(
        op.f("workloads_budget_of_fkey"),
        "workloads",
        "workloads",
        ["budget_of"],
        ["workload_id"],
        source_schema="cerebro",
        referent_schema="cerebro",
    )
    for name, condition in CHECKS.items():
        op.create_check_constraint(op.f(f"workloads_{name}_check"), "workloads", condition, schema="cerebro")


def downgrade() -> None:
    for trigger, table in NEW_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON cerebro.{table}")
    for signature in NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")
    for name in CHECKS:
        op.drop_constraint(op.f(f"workloads_{name}_check"), "workloads", schema="cerebro")
    op.drop_constraint(op.f("workloads_budget_of_fkey"), "workloads", schema="cerebro")
    for column in ("budget_of", "budget_spent_at", "autopilot_since", "budget_seconds", "budget_epochs", "autonomy"):
        op.drop_column("workloads", column, schema="cerebro")
