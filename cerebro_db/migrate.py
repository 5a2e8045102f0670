"""Alembic, configured in code from package-relative paths."""

from __future__ import annotations

import os
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql

from cerebro_db.connection import sqlalchemy_url
from cerebro_db.models import SCHEMA

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: What brings a database to this package's schema: the migrations, then the SQL API on top (install.install).
UPGRADE_COMMAND = "cerebro-db up"
VERSION_TABLE = "alembic_version"


class SchemaVersionError(RuntimeError):
    """The database's schema is not the one this package's code expects."""


def alembic_config(dsn: str | None = None) -> Config:
    config = Config(os.path.join(PACKAGE_DIR, "alembic.ini"))
    config.set_main_option("script_location", os.path.join(PACKAGE_DIR, "migrations"))
    if dsn is not None:
        config.attributes["url"] = sqlalchemy_url(dsn)
    return config


def upgrade(dsn: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(dsn), revision)


def downgrade(dsn: str, revision: str) -> None:
    command.downgrade(alembic_config(dsn), revision)


def head_revision(script: ScriptDirectory | None = None) -> str:
    """The newest revision this package ships."""
    head = (script or ScriptDirectory.from_config(alembic_config())).get_current_head()
    assert head is not None, "cerebro_db/migrations holds no revision"
    return head


def check_schema_version(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`SchemaVersionError` naming the fix unless the database's schema is this package's head.

    A role that may not read the version table (a cerebro_user of a database installed before it was granted to
    them) cannot tell and is let through: the schema owner's scheduler checks.
    """
    exists, readable = conn.execute(
        "SELECT t.oid IS NOT NULL, t.oid IS NOT NULL AND has_table_privilege(t.oid, 'SELECT')"
        " FROM (SELECT to_regclass(%s) AS oid) t",
        [f"{SCHEMA}.{VERSION_TABLE}"],
    ).fetchone() or (False, False)
    if exists and not readable:
        return
    version = sql.SQL("SELECT version_num FROM {}").format(sql.Identifier(SCHEMA, VERSION_TABLE))
    row = conn.execute(version).fetchone() if exists else None
    current = row[0] if row else None
    script = ScriptDirectory.from_config(alembic_config())
    head = head_revision(script)
    if current == head:
        return
    if current is None:
        raise SchemaVersionError(f"this database has no cerebro-db schema: install it with `{UPGRADE_COMMAND}`")
    if current in {revision.revision for revision in script.walk_revisions()}:
        raise SchemaVersionError(
            f"this database's cerebro-db schema is at revision {current}, this cerebro-db needs {head}:"
            f" upgrade it with `{UPGRADE_COMMAND}` (as the schema owner; with CEREBRO_DSN set, on that database)"
        )
    raise SchemaVersionError(
        f"this database's cerebro-db schema is at revision {current}, newer than this cerebro-db knows"
        f" (its newest is {head}): use the newer cerebro-db that upgraded it"
    )
