"""v0.4.5: ``segments.segment_id`` is ``segments.segment``, as every other column and argument names a segment.

Revision ID: v0_4_5
Revises: v0_4_4
Create Date: 2026-12-02

``units.segment``, ``dataset_buffers.segment``, ``segment_activity.segment`` and the API's ``segment`` arguments
already said so; only the table's own key did not. The primary key and the column's grants follow the rename.

Downgrade renames it back.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "v0_4_5"
down_revision: str | None = "v0_4_4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("segments", "segment_id", new_column_name="segment", schema="cerebro")


def downgrade() -> None:
    op.alter_column("segments", "segment", new_column_name="segment_id", schema="cerebro")
