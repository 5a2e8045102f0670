"""Installing cerebro-db into a database: schema (Alembic), SQL API (``sql/``), segments."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from cerebro_db import migrate
from cerebro_db.models import SCHEMA

SQL_DIR = Path(__file__).resolve().parent / "sql"


def sql_files() -> list[Path]:
    """The API's files in load order: folders by concern and files within them start with the order."""
    return sorted(SQL_DIR.rglob("*.sql"), key=lambda path: path.relative_to(SQL_DIR).parts)


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
        # PostgreSQL 15 makes new databases so, not upgraded ones: a tenant who may create objects in public
        # can shadow names resolved through it (adduser gives each user a schema of their own instead).
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        # After public: the operator's tables still land in public, our API resolves unqualified.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET search_path = public, {}").format(
                sql.Identifier(database[0]), sql.Identifier(SCHEMA)
            )
        )
        # TensorFlow and PostgreSQL's LLVM JIT cannot share a process: a backend that has trained (TensorFlow loaded)
        # and then runs a query costly enough to JIT (a drill-down's warm start at an epoch's end, over many configs)
        # dies with SIGSEGV in free(), and the whole server restarts. Model selection gains nothing from JIT.
        conn.execute(sql.SQL("ALTER DATABASE {} SET jit = off").format(sql.Identifier(database[0])))
        if not conn.execute("SELECT 1 FROM segments").fetchone():
            count = segments or os.cpu_count() or 1
            conn.execute("INSERT INTO segments (segment) SELECT generate_series(0, %s - 1)", [count])


#: Tables whose rows belong to a role by name (``owner``), in the order they can be deleted.
OWNED_TABLES = ("workloads", "datasets", "registered_models", "imported_models")


def rows_owned_by(conn: psycopg.Connection[Any], name: str) -> dict[str, int]:
    """How many rows of each of :data:`OWNED_TABLES` name ``name`` as their owner (those it has)."""
    counts = {}
    for table in OWNED_TABLES:
        query = sql.SQL("SELECT count(*) FROM {} WHERE owner = %s").format(sql.Identifier(SCHEMA, table))
        row = conn.execute(query, [name]).fetchone()
        if row and row[0]:
            counts[table] = int(row[0])
    return counts


def add_user(dsn: str, name: str, *, admin: bool = False, password: str | None = None) -> str:
    """Create login role ``name`` as a cerebro_user (or cerebro_admin) with a schema ``name`` of its own
    (first on its search_path, then cerebro); returns its password: ``password``, else a new random one.

    Owners are role names: a new role whose name still owns rows (left by a dropped role) would
    inherit them, so it is refused until they are removed. With ``password`` given, a role ``name`` that is
    already a (non-superuser) member of the group only gets that password (a container's start, again). The
    server receives a SCRAM verifier computed here, never the password (statement logs, pg_stat_activity).
    """
    given = password is not None
    password = password or secrets.token_urlsafe(18)
    group = "cerebro_admin" if admin else "cerebro_user"
    role = sql.Identifier(name)
    with psycopg.connect(dsn) as conn:
        scram = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
        verifier = sql.Literal(scram.decode())
        existing = conn.execute(
            "SELECT r.rolsuper OR NOT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            "                                 WHERE m.member = r.oid AND g.rolname = %s)"
            " FROM pg_roles r WHERE r.rolname = %s",
            [group, name],
        ).fetchone()
        if existing is not None:
            if existing[0] or not given:
                raise ValueError(f"role {name!r} already exists")
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(role, verifier))
            return password
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
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [name]).fetchone():
            raise ValueError(f"schema {name!r} already exists: the new role would not own its own schema")
        group_role = sql.Identifier(group)
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {}").format(role, verifier, group_role))
        conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(role, role))
        conn.execute(sql.SQL('ALTER ROLE {} SET search_path = "$user", {}').format(role, sql.Identifier(SCHEMA)))
    return password
