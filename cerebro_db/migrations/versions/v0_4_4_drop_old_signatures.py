"""v0.4.4: drop the SQL API's functions and triggers that earlier versions had and this one does not.

Revision ID: v0_4_4
Revises: v0_4_3
Create Date: 2026-12-01

The SQL API (``cerebro_db/sql/``) is reloaded with CREATE OR REPLACE after every upgrade, which cannot
remove an old overload or a trigger that is gone: schema history belongs here, not in the API's files.
Each name is schema-qualified (the migration's search_path is public). notify_work and its triggers are
gone because a NOTIFY in a user's or a unit's transaction lets a full notification queue (anyone may LISTEN
and never read) fail their commit: the scheduler notifies after its own commits instead.

Downgrade drops nothing back in: the older version's SQL files recreate what they need.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "v0_4_4"
down_revision: str | None = "v0_4_3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Triggers before the functions they execute.
OLD_TRIGGERS = (
    ("configs_fill_defaults", "configs"),
    ("configs_notify_work", "configs"),
    ("workloads_notify_work", "workloads"),
)
OLD_FUNCTIONS = (
    "stamp_config_event()",
    "configs_fill_defaults()",
    "notify_work()",
    "_complete_params(text, jsonb, int[])",
    "_expand_search_space(text, jsonb, text, int, int, int[])",
    "_expand_search_space(text, jsonb, text, int, int, int[], int)",
    "_architecture_key(text, jsonb)",
    "run_model_selection(text, text, jsonb, text, int, int, text, int, boolean, int)",
    "_clone_params(text, jsonb, jsonb, int[])",
    "_prepare_dataset(text, oid, text, text, text[], float8, int, int, text, int[], int)",
    "prepare_dataset(text, regclass, text, text[], float8, int, int, text, int[], int)",
    "_tpe_suggest(text, jsonb, jsonb, int, int, int[], int)",
)


def upgrade() -> None:
    # Constants of this file, not input: the names cannot be bound as parameters in DDL.
    for trigger, table in OLD_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON cerebro.{table}")
    for signature in OLD_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS cerebro.{signature}")


def downgrade() -> None:
    pass
