"""v0.4.13: datasets.replication, partial replication of a dataset's training shards.

Revision ID: v0_4_13
Revises: v0_4_12
Create Date: 2026-12-05

A dataset on S segments with replication r is cut into S / r training shards (integer division); shard k is held by
every segment s with s mod (S / r) = k, and a config visits each shard once per epoch, on any segment holding it
(``unit_fits``). ``dataset_buffers.segment`` and ``model_states.visited_segments`` hold shard ids (with r = 1, the
default and every dataset before this version, a shard id is its segment's). ``prepare_dataset``, ``_prepare_dataset``,
``_check_dataset`` and ``_store_dataset`` take the replication: their old signatures go here, before the SQL API is
reloaded.

Downgrade drops the column and this version's signatures; the older SQL files create theirs again (a dataset
prepared with r > 1 would then be read as r = 1: prepare it again first).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_4_13"
down_revision: str | None = "v0_4_12"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PREPARE = "text, regclass, text, text[], float8, int, int, text, int[], int, int, int"
_PREPARE_INNER = "text, oid, text, text, text[], float8, int, int, text, int[], int, int, int"
_CHECK = (
    "text, text, text[], int[], int, jsonb, text, float8[], float8[], int, int, int, float8, bigint, bigint, text[]"
)
_STORE = (
    "text, text, text, text[], int[], int, jsonb, text, float8[], float8[], int, int, float8, bigint, bigint, int,"
    " text[]"
)
#: Without the replication argument.
OLD_FUNCTIONS = (
    f"prepare_dataset({_PREPARE})",
    f"_prepare_dataset({_PREPARE_INNER})",
    f"_check_dataset({_CHECK})",
    f"_store_dataset({_STORE})",
)
#: With it: the older SQL files do not know these.
NEW_FUNCTIONS = (
    f"prepare_dataset({_PREPARE}, int)",
    f"_prepare_dataset({_PREPARE_INNER}, int)",
    f"_check_dataset({_CHECK}, int)",
    f"_store_dataset({_STORE}, int)",
    "segment_shard(int, int, int)",
)


def upgrade() -> None:
    replication = sa.Column("replication", sa.Integer(), server_default=sa.text("1"), nullable=False)
    op.add_column("datasets", replication, schema="cerebro")
    op.create_check_constraint(
        op.f("datasets_replication_check"), "datasets", "replication BETWEEN 1 AND num_segments", schema="cerebro"
    )
    # Constants of this file, not input: the names cannot be bound as parameters in DDL.
    for signature in OLD_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")


def downgrade() -> None:
    for signature in NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")
    op.drop_column("datasets", "replication", schema="cerebro")
