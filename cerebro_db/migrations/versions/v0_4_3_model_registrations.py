"""v0.4.3: an append-only audit of register_model: who registered which script (its hash), when, from where.

Revision ID: v0_4_3
Revises: v0_4_2
Create Date: 2026-12-01

``model_registrations`` is written only by ``register_model`` (SECURITY DEFINER, as the schema owner);
cerebro_admin may read it and nobody but the schema owner may change it (grants in sql/99_privileges.sql), so an admin
cannot rewrite through SQL who registered what. Existing registered models get one row each, from what
``registered_models`` recorded (no session role nor client address: unknown then).

Downgrade drops the audit.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_4_3"
down_revision: str | None = "v0_4_2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_registrations",
        sa.Column("registration_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("entry_point", sa.Text(), nullable=False),
        sa.Column("source_sha256", sa.Text(), nullable=False),
        sa.Column("registered_by", sa.Text(), nullable=False),
        sa.Column("session_role", sa.Text(), nullable=True),
        sa.Column("client_addr", sa.Text(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("registration_id", name=op.f("model_registrations_pkey")),
        schema="cerebro",
    )
    op.execute(
        "INSERT INTO cerebro.model_registrations (name, entry_point, source_sha256, registered_by, registered_at)"
        " SELECT name, entry_point, source_sha256, owner, created_at FROM cerebro.registered_models ORDER BY created_at"
    )


def downgrade() -> None:
    op.drop_table("model_registrations", schema="cerebro")
