"""The schema version check: the scheduler refuses a database whose schema is not this package's, naming the fix; and
the migrations that move data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cerebro_db import install, migrate
from cerebro_db.cluster import ClusterConfig
from cerebro_db.scheduler import Scheduler
from tests.conftest import add_tenant, unique


@pytest.fixture
def fresh_dsn(cluster: ClusterConfig) -> Iterator[str]:
    """A database of its own, empty: each test sets its schema version."""
    name = unique("version")
    install.create_database(cluster.dsn("postgres"), name)
    yield cluster.dsn(name)
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT version_num FROM cerebro.alembic_version").fetchone()
        assert row is not None
        return str(row[0])


def check(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        migrate.check_schema_version(conn)


def test_a_database_at_head_passes(dsn: str) -> None:
    check(dsn)


def test_a_tenants_dashboard_checks_the_version_too(cluster: ClusterConfig, fresh_dsn: str) -> None:
    install.install(fresh_dsn, segments=1)
    on_cluster = add_tenant(cluster, fresh_dsn, "version_reader")  # the role, on the cluster's default database
    tenant = make_conninfo(on_cluster, dbname=conninfo_to_dict(fresh_dsn)["dbname"])
    check(tenant)  # at head: passes, reading the version as the tenant
    with psycopg.connect(fresh_dsn, autocommit=True) as owner:
        owner.execute("UPDATE cerebro.alembic_version SET version_num = 'v9_9_9'")
    with pytest.raises(migrate.SchemaVersionError, match="newer than this cerebro-db knows"):
        check(tenant)


def test_the_scheduler_refuses_an_older_schema_and_names_the_upgrade(fresh_dsn: str) -> None:
    install.install(fresh_dsn, segments=1)
    migrate.downgrade(fresh_dsn, "-1")  # as a database the previous release installed
    older = version(fresh_dsn)
    with pytest.raises(migrate.SchemaVersionError, match=f"at revision {older}.*`cerebro-db up`"):
        Scheduler(fresh_dsn).run(until_idle=True)
    with psycopg.connect(fresh_dsn) as conn:  # it let go of the database: no scheduler holds it
        assert conn.execute("SELECT cerebro.scheduler_alive()").fetchone() == (False,)
    # As operators run it: a message, no traceback, a failing exit status.
    result = subprocess.run(
        [sys.executable, "-m", "cerebro_db.cli", "scheduler"],
        env={**os.environ, "CEREBRO_DSN": fresh_dsn},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "cerebro-db scheduler: " in result.stderr and "`cerebro-db up`" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    install.install(fresh_dsn)  # what `cerebro-db up` does with CEREBRO_DSN set
    assert version(fresh_dsn) == migrate.head_revision()
    assert Scheduler(fresh_dsn, idle_wait=0.2).run(until_idle=True) == []


def test_a_newer_schema_is_refused_as_unknown(fresh_dsn: str) -> None:
    install.install(fresh_dsn, segments=1)
    with psycopg.connect(fresh_dsn) as conn:
        conn.execute("UPDATE cerebro.alembic_version SET version_num = 'v99_0_0'")
    with pytest.raises(migrate.SchemaVersionError, match="v99_0_0, newer than this cerebro-db knows"):
        check(fresh_dsn)


def test_a_database_without_the_schema_is_refused(fresh_dsn: str) -> None:
    with pytest.raises(migrate.SchemaVersionError, match="no cerebro-db schema: install it with `cerebro-db up`"):
        check(fresh_dsn)
    # The scheduler says so too, before it needs the API for its lock.
    with pytest.raises(migrate.SchemaVersionError, match="no cerebro-db schema: install it with `cerebro-db up`"):
        Scheduler(fresh_dsn).run(until_idle=True)


def test_v0_4_14_moves_states_to_files_and_back(fresh_dsn: str) -> None:
    """The upgrade writes each stored state to its file; the downgrade reads them back into the column."""
    install.install(fresh_dsn, segments=1)
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # a state row without its config (no foreign key)
        conn.execute(
            "INSERT INTO cerebro.model_states (config_id, state_file, state_bytes) VALUES (1, 'c1-x1.state', 4)"
        )
        conn.execute("SELECT cerebro._write_state_file(cerebro.state_directory(), 'c1-x1.state', '\\xdeadbeef')")
    migrate.downgrade(fresh_dsn, "v0_4_13")
    with psycopg.connect(fresh_dsn) as conn:
        assert conn.execute("SELECT config_id, state FROM cerebro.model_states").fetchall() == [
            (1, b"\xde\xad\xbe\xef")
        ]
    install.install(fresh_dsn, segments=1)  # the upgrade, then the API
    with psycopg.connect(fresh_dsn) as conn:
        row = conn.execute(
            "SELECT state_file, state_bytes, cerebro.stored_state(1) FROM cerebro.model_states"
        ).fetchone()
        assert row is not None and row[0] != "c1-x1.state" and row[1:] == (4, b"\xde\xad\xbe\xef")
