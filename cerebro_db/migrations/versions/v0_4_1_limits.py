"""v0.4.1: admin-set limits per role, a bounded unit_timeout on every workload, an index for the unit claim.

Revision ID: v0_4_1
Revises: v0_4_0
Create Date: 2026-12-01

``limits`` holds a row ``'*'`` (everyone) and optional per-role rows whose non-NULL columns override it; users
read their own row and ``'*'``, cerebro_admin (and the schema owner) edit them. Workloads whose unit_timeout was
NULL (no bound) get the ``'*'`` row's max_unit_timeout, the most a user may set, and the column becomes NOT NULL
(the workloads trigger fills the role's default when an INSERT leaves it out). ``configs_claim_idx`` serves the
claim (a workload's runnable configs by progress) and the per-user count of configs in flight.

Downgrade drops the limits and the index and makes unit_timeout nullable again; the backfilled timeouts stay.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_4_1"
down_revision: str | None = "v0_4_0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE = "status IN ('pending', 'running')"
ADMIN = "pg_has_role(current_user, 'cerebro_admin', 'USAGE')"


def upgrade() -> None:
    op.create_table(
        "limits",
        sa.Column("role_name", sa.Text(), nullable=False),
        sa.Column("max_active_configs", sa.Integer(), nullable=True),
        sa.Column("max_epochs", sa.Integer(), nullable=True),
        sa.Column("default_unit_timeout", sa.Interval(), nullable=True),
        sa.Column("max_unit_timeout", sa.Interval(), nullable=True),
        sa.CheckConstraint(
            "role_name <> '*' OR (max_active_configs IS NOT NULL AND max_epochs IS NOT NULL"
            " AND default_unit_timeout IS NOT NULL AND max_unit_timeout IS NOT NULL)",
            name=op.f("limits_everyone_check"),
        ),
        sa.CheckConstraint("max_active_configs >= 0", name=op.f("limits_max_active_configs_check")),
        sa.CheckConstraint("max_epochs > 0", name=op.f("limits_max_epochs_check")),
        sa.CheckConstraint(
            "default_unit_timeout > interval '0' AND default_unit_timeout <= interval '24 days'",
            name=op.f("limits_default_unit_timeout_check"),
        ),
        sa.CheckConstraint(
            "max_unit_timeout > interval '0' AND max_unit_timeout <= interval '24 days'",
            name=op.f("limits_max_unit_timeout_check"),
        ),
        sa.PrimaryKeyConstraint("role_name", name=op.f("limits_pkey")),
        schema="cerebro",
    )
    op.execute(
        "INSERT INTO cerebro.limits (role_name, max_active_configs, max_epochs, default_unit_timeout,"
        " max_unit_timeout) VALUES ('*', 10000, 1000, interval '1 hour', interval '24 hours')"
    )
    # Users read their own row and everyone's; cerebro_admin reads and writes any (grants in sql/99_privileges.sql).
    op.execute("ALTER TABLE cerebro.limits ENABLE ROW LEVEL SECURITY")
    op.execute("CREATE POLICY own_and_everyones ON cerebro.limits FOR SELECT USING (role_name IN ('*', current_user))")
    # By name, not TO cerebro_admin: the installer creates the roles after the migrations.
    op.execute(f"CREATE POLICY admins ON cerebro.limits USING ({ADMIN}) WITH CHECK ({ADMIN})")

    op.execute(
        "UPDATE cerebro.workloads SET unit_timeout = (SELECT max_unit_timeout FROM cerebro.limits"
        " WHERE role_name = '*') WHERE unit_timeout IS NULL"
    )
    op.alter_column("workloads", "unit_timeout", existing_type=sa.Interval(), nullable=False, schema="cerebro")
    op.create_index(
        "configs_claim_idx",
        "configs",
        ["workload_id", "epochs_done", "config_id"],
        unique=False,
        schema="cerebro",
        postgresql_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("configs_claim_idx", table_name="configs", schema="cerebro", postgresql_where=sa.text(ACTIVE))
    op.alter_column("workloads", "unit_timeout", existing_type=sa.Interval(), nullable=True, schema="cerebro")
    op.drop_table("limits", schema="cerebro")
