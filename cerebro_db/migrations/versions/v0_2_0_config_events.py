"""v0.2.0: config_events, the audit log of human and procedure actions on configs.

Revision ID: v0_2_0
Revises: v0_1_0
Create Date: 2026-11-23

Downgrade drops the log (the configs themselves are untouched).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_2_0"
down_revision: str | None = "v0_1_0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "config_events",
        sa.Column("event_id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("config_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("epochs_done", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("actor", sa.Text(), server_default=sa.text("CURRENT_USER"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["config_id"], ["cerebro.configs.config_id"], name=op.f("config_events_config_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("config_events_pkey")),
        schema="cerebro",
    )
    op.create_index("config_events_config_idx", "config_events", ["config_id", "event_id"], schema="cerebro")


def downgrade() -> None:
    op.drop_index("config_events_config_idx", table_name="config_events", schema="cerebro")
    op.drop_table("config_events", schema="cerebro")
