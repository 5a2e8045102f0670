"""Installing cerebro-db into a database: schema (Alembic), SQL API (``sql/``), segments."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from cerebro_db import migrate
from cerebro_db.cluster import REPO_ROOT
from cerebro_db.models import SCHEMA

SQL_DIR = REPO_ROOT / "sql"


def sql_files() -> list[Path]:
    """The API's files in load order (their names start with the order)."""
    return sorted(SQL_DIR.glob("*.sql"))


def create_database(admin_dsn: str, database: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def install(dsn: str, segments: int | None = None) -> None:
    """Bring the database at ``dsn`` to the current schema and API (idempotent).

    ``segments`` sets the number of local segments when none are registered yet
    (default: the number of cores).
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS plpython3u")
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    migrate.upgrade(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute(sql.SQL("SET search_path = {}, pg_temp").format(sql.Identifier(SCHEMA)))
        for path in sql_files():
            conn.execute(path.read_text())
        database = conn.execute("SELECT current_database()").fetchone()
        assert database is not None
        # After public: users' own tables still land in public, our API resolves unqualified.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET search_path = public, {}").format(
                sql.Identifier(database[0]), sql.Identifier(SCHEMA)
            )
        )
        if not conn.execute("SELECT 1 FROM segments").fetchone():
            count = segments or os.cpu_count() or 1
            conn.execute("INSERT INTO segments (segment_id) SELECT generate_series(0, %s - 1)", [count])


#: Tables whose rows belong to a role by name (``owner``), in the order they can be deleted.
OWNED_TABLES = ("workloads", "datasets", "registered_models")


def rows_owned_by(conn: psycopg.Connection[Any], name: str) -> dict[str, int]:
    """How many rows of each of :data:`OWNED_TABLES` name ``name`` as their owner (those it has)."""
    counts = {}
    for table in OWNED_TABLES:
        query = sql.SQL("SELECT count(*) FROM {} WHERE owner = %s").format(sql.Identifier(SCHEMA, table))
        row = conn.execute(query, [name]).fetchone()
        if row and row[0]:
            counts[table] = int(row[0])
    return counts


def add_user(dsn: str, name: str, *, admin: bool = False) -> str:
    """Create login role ``name`` as a cerebro_user (or cerebro_admin); returns its new password.

    Owners are role names: a new role whose name still owns rows (left by a dropped role) would
    inherit them, so it is refused until they are removed.
    """
    password = secrets.token_urlsafe(18)
    group = "cerebro_admin" if admin else "cerebro_user"
    with psycopg.connect(dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone():
            raise ValueError(f"role {name!r} already exists")
        if owned := rows_owned_by(conn, name):
            rows = ", ".join(f"{count} {table}" for table, count in owned.items())
            deletes = " ".join(
                sql.SQL("DELETE FROM {} WHERE owner = {};")
                .format(sql.Identifier(SCHEMA, table), sql.Literal(name))
                .as_string(conn)
                for table in owned
            )
            raise ValueError(
                f"{rows} still belong to {name!r} (a dropped role of that name); a new role would inherit them. "
                f"Remove them first ({deletes}) or choose another name"
            )
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(
                sql.Identifier(name), sql.Literal(password), sql.Identifier(group)
            )
        )
    return password
