"""v0.3.1: registered_models (the custom Keras scripts register_model stores) and datasets.vocabulary.

Revision ID: v0_3_1
Revises: v0_3_0
Create Date: 2026-11-23

Downgrade drops the scripts (workloads that name one can no longer train) and the text datasets'
vocabularies (their token ids stay, but predict can no longer tokenize new text for them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "v0_3_1"
down_revision: str | None = "v0_3_0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("entry_point", sa.Text(), nullable=False),
        sa.Column("source_sha256", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), server_default=sa.text("CURRENT_USER"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("registered_models_pkey")),
        schema="cerebro",
    )
    op.add_column("datasets", sa.Column("vocabulary", postgresql.ARRAY(sa.Text()), nullable=True), schema="cerebro")


def downgrade() -> None:
    op.drop_column("datasets", "vocabulary", schema="cerebro")
    op.drop_table("registered_models", schema="cerebro")
