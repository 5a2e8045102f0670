"""v0.3.0: row-level security by owner, and a per-unit timeout on workloads.

Revision ID: v0_3_0
Revises: v0_2_0
Create Date: 2026-11-23

A workload (and a dataset) belongs to its ``owner`` role; a config, its state, metrics,
unit log and events belong to whoever owns the config's workload. The policies chain
through the parent tables, whose own policies apply inside the subqueries, so each rule
is written once. The installing role owns the tables and so bypasses them (the scheduler
runs as that role). Downgrade drops the policies and the timeout column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_3_0"
down_revision: str | None = "v0_2_0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The acting role itself, not roles it belongs to; and new rows only for a login role, so
# that SET ROLE cerebro_user cannot make rows every member shares.
OWNED = "owner = current_user"
OWNED_NEW = "owner = current_user AND (SELECT rolcanlogin FROM pg_roles WHERE rolname = current_user)"
#: table -> (who may see its rows, who may write them)
POLICIES = {
    "datasets": (OWNED, OWNED_NEW),
    "dataset_buffers": ("dataset_id IN (SELECT dataset_id FROM cerebro.datasets)",) * 2,
    "workloads": (OWNED, OWNED_NEW),
    "configs": ("workload_id IN (SELECT workload_id FROM cerebro.workloads)",) * 2,
    "model_states": ("config_id IN (SELECT config_id FROM cerebro.configs)",) * 2,
    "units": ("config_id IN (SELECT config_id FROM cerebro.configs)",) * 2,
    "epoch_metrics": ("config_id IN (SELECT config_id FROM cerebro.configs)",) * 2,
    "config_events": ("config_id IN (SELECT config_id FROM cerebro.configs)",) * 2,
}


def upgrade() -> None:
    op.add_column("workloads", sa.Column("unit_timeout", sa.Interval(), nullable=True), schema="cerebro")
    op.create_check_constraint(
        op.f("workloads_unit_timeout_check"),
        "workloads",
        "unit_timeout > interval '0' AND unit_timeout <= interval '24 days'",  # statement_timeout's range
        schema="cerebro",
    )
    for table, (visible, writable) in POLICIES.items():
        op.execute(f"ALTER TABLE cerebro.{table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY owner_only ON cerebro.{table} USING ({visible}) WITH CHECK ({writable})")


def downgrade() -> None:
    for table in POLICIES:
        op.execute(f"DROP POLICY owner_only ON cerebro.{table}")
        op.execute(f"ALTER TABLE cerebro.{table} DISABLE ROW LEVEL SECURITY")
    op.drop_constraint(op.f("workloads_unit_timeout_check"), "workloads", schema="cerebro")
    op.drop_column("workloads", "unit_timeout", schema="cerebro")
