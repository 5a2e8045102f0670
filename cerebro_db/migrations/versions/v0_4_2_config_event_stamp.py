"""v0.4.2: a config's latest change carries its own event (kind, actor, detail), and hyperband's prune is a kind.

Revision ID: v0_4_2
Revises: v0_4_1
Create Date: 2026-12-01

``configs.event_kind``, ``event_actor`` and ``event_detail`` are stamped by the configs BEFORE triggers and logged
into ``config_events`` by the AFTER trigger (users cannot write them): before, they passed between the two triggers
in settings a user could change in between (``RETURNING set_config(...)``). A procedure's stop is logged as kind
``pruned``; hyperband's "pruned once, never again" reads that kind, not the message. Existing rows keep NULLs until
their next change; past hyperband stops (kind ``stopped`` by ``cerebro`` with a ``hyperband:`` message) become
``pruned``, so the configs they exempted stay exempt.

Downgrade drops the columns and turns ``pruned`` events back into ``stopped`` (the old hyperband reads the message).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_4_2"
down_revision: str | None = "v0_4_1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("event_kind", "event_actor", "event_detail")


def upgrade() -> None:
    for column in COLUMNS:
        op.add_column("configs", sa.Column(column, sa.Text(), nullable=True), schema="cerebro")
    op.execute(
        "UPDATE cerebro.config_events SET kind = 'pruned'"
        " WHERE kind = 'stopped' AND actor = 'cerebro' AND detail LIKE 'hyperband:%'"
    )


def downgrade() -> None:
    op.execute("UPDATE cerebro.config_events SET kind = 'stopped' WHERE kind = 'pruned'")
    for column in reversed(COLUMNS):
        op.drop_column("configs", column, schema="cerebro")
