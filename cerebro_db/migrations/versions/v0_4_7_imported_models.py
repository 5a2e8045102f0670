"""v0.4.7: imported_models, the pretrained .keras archives import_model stores.

Revision ID: v0_4_7
Revises: v0_4_6
Create Date: 2026-12-01

Owned like datasets: row-level security shows a model to its owner (and to ``cerebro_admin``), names are unique
across users, and users cannot insert (``import_model`` writes the rows after its check; grants in
sql/99_privileges.sql). The archive column is stored uncompressed: a .keras file is a zip already.

Downgrade drops the table and what the SQL API of this version built on it (the catalog view, its functions).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "v0_4_7"
down_revision: str | None = "v0_4_6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VISIBLE = "owner = current_user OR pg_has_role(current_user, 'cerebro_admin', 'USAGE')"
#: Only the SECURITY DEFINER import_model inserts (it owns the table and bypasses this); the rule as for datasets.
WRITABLE = "owner = current_user AND (SELECT rolcanlogin FROM pg_roles WHERE rolname = current_user)"
#: This version's SQL API on the table, which the older SQL files do not know.
NEW_FUNCTIONS = (
    "import_model(text, bytea, text)",
    "drop_imported_model(text)",
    "model_layers(text)",
    "imported_model_name_taken(text)",
    "max_import_bytes()",
    "_describe_imported_model(bytea)",
    "_dims(jsonb)",
)


def upgrade() -> None:
    op.create_table(
        "imported_models",
        sa.Column("imported_model_id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text(), server_default=sa.text("CURRENT_USER"), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("keras_file", sa.LargeBinary(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.Text(), nullable=False),
        sa.Column("input_shape", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("output_shape", postgresql.ARRAY(sa.Integer()), nullable=False),
        sa.Column("params", sa.BigInteger(), nullable=False),
        sa.Column("layers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("name <> ''", name=op.f("imported_models_name_check")),
        sa.CheckConstraint("size_bytes = octet_length(keras_file)", name=op.f("imported_models_size_bytes_check")),
        sa.PrimaryKeyConstraint("imported_model_id", name=op.f("imported_models_pkey")),
        sa.UniqueConstraint("name", name=op.f("imported_models_name_key")),
        schema="cerebro",
    )
    op.execute("ALTER TABLE cerebro.imported_models ALTER COLUMN keras_file SET STORAGE EXTERNAL")
    op.execute("ALTER TABLE cerebro.imported_models ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY owner_only ON cerebro.imported_models USING ({VISIBLE}) WITH CHECK ({WRITABLE})")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS cerebro.imported_model_catalog")
    # Constants of this file, not input: the names cannot be bound as parameters in DDL.
    for signature in NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")
    op.drop_table("imported_models", schema="cerebro")
