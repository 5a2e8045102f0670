"""v0.4.6: the hop's bookkeeping is SQL; drop the PL/Python functions it replaces.

Revision ID: v0_4_6
Revises: v0_4_5
Create Date: 2026-12-02

``unit_context`` and ``record_hop`` are plpgsql now (``cerebro_db/sql/10_unit/40_hop.sql``), and
``unit_context`` and ``train_hop`` return one row (OUT parameters) instead of a table: CREATE OR
REPLACE cannot change a function's result type, so the old ones go here, before the SQL API is
reloaded. Each name is schema-qualified (the migration's search_path is public).

Downgrade drops the new shapes so that the older version's SQL files can create theirs, and the status
machine's two triggers of this version (``configs_status``, ``workloads_status``): the older files check
status in ``configs_guard`` / ``workloads_guard`` and would not replace them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "v0_4_6"
down_revision: str | None = "v0_4_5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Gone, or with another result type now.
OLD_FUNCTIONS = (
    "_run_unit(int, int)",
    "_unit_context(int, int)",
    "_record_hop(int, int, jsonb, bytea)",
    "unit_context(int, int)",
    "train_hop(jsonb, bytea)",
)
#: This version's, whose result types the older SQL files cannot replace.
NEW_FUNCTIONS = ("check_unit_in_hand(int, int)", "unit_context(int, int)", "train_hop(jsonb, bytea)")


def upgrade() -> None:
    # Constants of this file, not input: the names cannot be bound as parameters in DDL.
    for signature in OLD_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")


#: This version's triggers that the older SQL files do not know (their functions stay, unused).
NEW_TRIGGERS = (("configs_status", "configs"), ("workloads_status", "workloads"))


def downgrade() -> None:
    for trigger, table in NEW_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON cerebro.{table}")
    for signature in NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")
