"""v0.4.9: configs.base_sha256, the base a transfer config was created on.

Revision ID: v0_4_9
Revises: v0_4_8
Create Date: 2026-12-02

A transfer config names its base (an imported model) by name; dropping the base and importing another under the
same name would silently swap the frozen weights under a config's trained part. The ``configs_transfer`` trigger
pins the base's sha256 here when the config is created, and units, evaluate, predict and export refuse a base
that is not the pinned one any more (``check_transfer_base``). Users cannot write the column (their INSERT grant
names its columns). Existing transfer configs are pinned to the base their name resolves to now.

Downgrade drops the column and this version's functions; the older SQL files read the base by name again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_4_9"
down_revision: str | None = "v0_4_8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: This version's SQL API, which the older SQL files do not know.
NEW_FUNCTIONS = ("check_transfer_base(integer)", "transfer_configs_using(text)", "imported_model_lock_key()")


def upgrade() -> None:
    op.add_column("configs", sa.Column("base_sha256", sa.Text(), nullable=True), schema="cerebro")
    op.execute(
        "UPDATE cerebro.configs c SET base_sha256 = m.sha256"
        " FROM cerebro.workloads w, cerebro.imported_models m"
        " WHERE w.workload_id = c.workload_id AND w.model = 'transfer' AND m.name = c.params ->> 'base'"
    )


def downgrade() -> None:
    # Constants of this file, not input: the names cannot be bound as parameters in DDL.
    for signature in NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")
    op.drop_column("configs", "base_sha256", schema="cerebro")
