"""v0.4.0: unit_attempts, every claimed unit as the scheduler saw it end (the crash and retry budgets).

Revision ID: v0_4_0
Revises: v0_3_1
Create Date: 2026-12-01

The scheduler commits an attempt on a connection of its own before the unit trains, so a
crash of the unit's server process cannot roll it back; the unit's own transaction marks it
committed. Users read the attempts of their own configs. Downgrade drops the log: configs
failed by a budget stay failed, with their reason in configs.error and config_events.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_4_0"
down_revision: str | None = "v0_3_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OUTCOMES = "outcome IN ('committed', 'crashed', 'bystander', 'retried', 'failed', 'unavailable', 'abandoned')"


def upgrade() -> None:
    op.create_table(
        "unit_attempts",
        sa.Column("attempt_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("config_id", sa.Integer(), nullable=False),
        sa.Column("segment", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(OUTCOMES, name=op.f("unit_attempts_outcome_check")),
        sa.ForeignKeyConstraint(
            ["config_id"], ["cerebro.configs.config_id"], name=op.f("unit_attempts_config_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("attempt_id", name=op.f("unit_attempts_pkey")),
        schema="cerebro",
    )
    op.create_index("unit_attempts_config_idx", "unit_attempts", ["config_id", "attempt_id"], schema="cerebro")
    op.create_index(
        "unit_attempts_open_idx",
        "unit_attempts",
        ["config_id"],
        schema="cerebro",
        postgresql_where=sa.text("outcome IS NULL"),
    )
    visible = "config_id IN (SELECT config_id FROM cerebro.configs)"
    op.execute("ALTER TABLE cerebro.unit_attempts ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY owner_only ON cerebro.unit_attempts USING ({visible}) WITH CHECK ({visible})")


def downgrade() -> None:
    op.execute("DROP POLICY owner_only ON cerebro.unit_attempts")
    op.drop_index("unit_attempts_open_idx", table_name="unit_attempts", schema="cerebro")
    op.drop_index("unit_attempts_config_idx", table_name="unit_attempts", schema="cerebro")
    op.drop_table("unit_attempts", schema="cerebro")
