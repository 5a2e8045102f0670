"""v0.4.14: model states in files, ``model_states.state_file`` and ``state_bytes`` instead of ``state``.

Revision ID: v0_4_14
Revises: v0_4_13
Create Date: 2026-12-06

Each committed state is an immutable file under the data directory, ``cerebro_states/<database oid>/``, named by
``model_states.state_file`` (``cerebro_db/sql/10_unit/30_state_files.sql``, ``plpy/cerebro_plpy/state_files.py``):
a 270 MB state no longer goes through TOAST and the WAL at every hop. Upgrade writes each stored state to its file
(fsynced before this transaction commits); downgrade reads them back into the column and leaves the files (older
versions never read them: remove ``cerebro_states/<database oid>`` by hand once the downgrade committed). The
functions this version adds go on downgrade; the older SQL files create theirs again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "v0_4_14"
down_revision: str | None = "v0_4_13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The older SQL files do not know these.
NEW_FUNCTIONS = (
    "state_directory()",
    "new_state_file(int)",
    "_write_state_file(text, text, bytea)",
    "_read_state_file(text, text)",
    "_link_state_file(text, text, text)",
    "_rename_state_file(text, text, text)",
    "_state_files(text)",
    "_delete_state_files(text, text[])",
    "_delete_other_databases_state_files(oid[])",
    "stored_state(int)",
    "state_file_linked(int, text)",
    "state_file_renamed(text, int)",
    "check_state_file_kept(int, text)",
    "sweep_state_files()",
    "record_stored_hop(int, int, jsonb, text)",
    "_train_stored_hop(jsonb, text, text, text)",
    # v0.4.14's too, in the SQL API only (it takes the rows of tables older versions drop).
    "suggestion_is_live(cerebro.suggestion_log, cerebro.configs)",
)

# One state at a time through a cursor: a database of big models must not be read into memory at once.
_TO_FILES = """
DO $$
from cerebro_plpy import state_files
directory = plpy.execute(
    "SELECT 'cerebro_states/' || oid AS d FROM pg_database WHERE datname = current_database()")[0]["d"]
xid = plpy.execute("SELECT txid_current() AS x")[0]["x"]
store = plpy.prepare(
    "UPDATE cerebro.model_states SET state_file = $2, state_bytes = $3, state = NULL WHERE config_id = $1",
    ["int4", "text", "int8"])
configs = [r["config_id"] for r in plpy.execute("SELECT config_id FROM cerebro.model_states ORDER BY config_id")]
for config_id in configs:
    state = plpy.execute(
        plpy.prepare("SELECT state FROM cerebro.model_states WHERE config_id = $1", ["int4"]), [config_id])[0]["state"]
    name = f"c{config_id}-x{xid}.state"
    plpy.execute(store, [config_id, name, state_files.write(directory, name, [state])])
$$ LANGUAGE plpython3u
"""

_FROM_FILES = """
DO $$
from cerebro_plpy import state_files
directory = plpy.execute(
    "SELECT 'cerebro_states/' || oid AS d FROM pg_database WHERE datname = current_database()")[0]["d"]
store = plpy.prepare("UPDATE cerebro.model_states SET state = $2 WHERE config_id = $1", ["int4", "bytea"])
for row in plpy.execute("SELECT config_id, state_file FROM cerebro.model_states ORDER BY config_id"):
    found = state_files.read(directory, row["state_file"])
    if found is None:
        plpy.error(f"the state file {row['state_file']} of config {row['config_id']} is missing from {directory}")
    plpy.execute(store, [row["config_id"], bytes(found)])
$$ LANGUAGE plpython3u
"""


def _has_states() -> bool:
    """A new database has none, and may not have PL/Python yet (the install creates it after the migrations)."""
    return bool(op.get_bind().execute(sa.text("SELECT EXISTS (SELECT 1 FROM cerebro.model_states)")).scalar())


def upgrade() -> None:
    op.add_column("model_states", sa.Column("state_file", sa.Text()), schema="cerebro")
    op.add_column("model_states", sa.Column("state_bytes", sa.BigInteger()), schema="cerebro")
    op.alter_column("model_states", "state", nullable=True, schema="cerebro")
    if _has_states():
        op.execute(_TO_FILES)
    op.alter_column("model_states", "state_file", nullable=False, schema="cerebro")
    op.alter_column("model_states", "state_bytes", nullable=False, schema="cerebro")
    op.create_unique_constraint(op.f("model_states_state_file_key"), "model_states", ["state_file"], schema="cerebro")
    op.drop_column("model_states", "state", schema="cerebro")


def downgrade() -> None:
    # The view calls suggestion_is_live; the older SQL files create it again with their own rule.
    op.execute("DROP VIEW IF EXISTS cerebro.suggestions")
    op.execute("DROP TRIGGER IF EXISTS state_file_released ON cerebro.model_states")
    op.execute("DROP FUNCTION IF EXISTS cerebro.state_file_released()")
    # Constants of this file, not input: the names cannot be bound as parameters in DDL.
    for signature in NEW_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")
    op.add_column("model_states", sa.Column("state", sa.LargeBinary()), schema="cerebro")
    if _has_states():
        op.execute(_FROM_FILES)
    op.alter_column("model_states", "state", nullable=False, schema="cerebro")
    op.drop_constraint(op.f("model_states_state_file_key"), "model_states", schema="cerebro")
    op.drop_column("model_states", "state_bytes", schema="cerebro")
    op.drop_column("model_states", "state_file", schema="cerebro")
