"""Operators' clients against hostile tenants and local users (issue 15, items 3 and 4): a tenant's objects in
``public`` never reach the operator's calls; no password in argv, in what ``up``/``dsn``/``status`` print, in
the statement adduser sends, nor in a file others may read."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cerebro_db import cli, client, connection, install
from cerebro_db.cluster import ClusterConfig, LocalCluster, write_private
from cerebro_db.predict import predict_on_segments
from cerebro_db.testing.faults import cli as run_cli
from tests.conftest import unique

Session = psycopg.Connection[Any]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- a tenant's objects in public (item 3)


@pytest.fixture(scope="module")
def mallory(cluster: ClusterConfig, dsn: str) -> Iterator[Session]:
    """A cerebro_user who may create in public, as in a database upgraded from before PostgreSQL 15 (or a DBA's
    grant), with look-alikes of the API there: each one that runs records it in ``mallory.calls``."""
    name = unique("mallory")
    password = install.add_user(dsn, name)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(dataclasses.replace(cluster, user=name, password=password).dsn(), autocommit=True) as m:
            m.execute("CREATE TABLE calls (what text)")  # in mallory's own schema, first on its search path
            calls = sql.Identifier(name, "calls")
            for statement in [
                "CREATE FUNCTION public.mark(what text) RETURNS boolean LANGUAGE sql"
                " AS $$ INSERT INTO {calls} VALUES (what) RETURNING true $$",
                "CREATE FUNCTION public.export_model(config_id int) RETURNS bytea LANGUAGE sql"
                " AS $$ SELECT 'forged'::bytea WHERE public.mark('export_model') $$",
                "CREATE FUNCTION public.scheduler_alive() RETURNS boolean LANGUAGE sql"
                " AS $$ SELECT public.mark('scheduler_alive') $$",
                "CREATE FUNCTION public._predict_begin(config_id int, source_table regclass, id_column text,"
                " output_table text, OUT output_schema text, OUT output_name text, OUT parts int) LANGUAGE sql"
                " AS $$ SELECT 'public', 'forged', 1 WHERE public.mark('_predict_begin') $$",
                "CREATE VIEW public.workloads AS SELECT * FROM cerebro.workloads WHERE public.mark('workloads')",
                "CREATE VIEW public.workload_progress AS"
                " SELECT * FROM cerebro.workload_progress WHERE public.mark('workload_progress')",
            ]:
                m.execute(sql.SQL(statement).format(calls=calls))
            yield m
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("DROP VIEW IF EXISTS public.workloads, public.workload_progress")
            admin.execute(
                "DROP FUNCTION IF EXISTS public.export_model(int), public.scheduler_alive(),"
                " public._predict_begin(int, regclass, text, text), public.mark(text)"
            )
            admin.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM {}").format(sql.Identifier(name)))


def calls(mallory: Session) -> list[str]:
    return [row[0] for row in mallory.execute("SELECT what FROM calls")]


def test_the_look_alikes_would_catch_an_unpinned_client(mallory: Session, dsn: str) -> None:
    # The database's own search_path (public first): a client that neither pins nor qualifies calls mallory's.
    with psycopg.connect(dsn) as operator:
        assert operator.execute("SELECT export_model(1)").fetchone() == (b"forged",)
    assert calls(mallory) == ["export_model"]
    mallory.execute("TRUNCATE calls")


def test_the_operators_export_reaches_cerebros(
    mallory: Session, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEREBRO_DSN", dsn)
    output = tmp_path / "model.keras"
    with pytest.raises(SystemExit, match="999999"):  # cerebro's export_model: no such config
        cli.main(["export", "999999", "-o", str(output)])
    assert not output.exists()
    assert calls(mallory) == []


def test_the_operators_predict_reaches_cerebros(mallory: Session, dsn: str, fashion_table: str) -> None:
    with pytest.raises(psycopg.Error, match="unknown config 999999"):
        predict_on_segments(dsn, 999999, f"public.{fashion_table}", "id", unique("out"))
    assert calls(mallory) == []


def test_the_operators_wait_reaches_cerebros(
    mallory: Session, dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CEREBRO_DSN", dsn)
    cli.main(["wait", "999999"])
    assert "rank" in capsys.readouterr().out  # the (empty) leaderboard
    assert calls(mallory) == []


def test_the_dashboard_reaches_cerebros(mallory: Session, dsn: str) -> None:
    engine = connection.make_engine(dsn)
    try:
        with engine.connect() as conn:
            client.scheduler_alive(conn)
            client.workloads(conn)
            assert conn.exec_driver_sql("SHOW search_path").scalar_one() == '"$user",cerebro,pg_temp'
    finally:
        engine.dispose()
    assert calls(mallory) == []


def test_install_takes_create_on_public_from_everyone(cluster: ClusterConfig, dsn: str) -> None:
    name = unique("eve")
    login = dataclasses.replace(cluster, user=name, password=install.add_user(dsn, name)).dsn()
    with psycopg.connect(login, autocommit=True) as eve:
        with pytest.raises(errors.InsufficientPrivilege):
            eve.execute("CREATE FUNCTION public.export_model(c int) RETURNS bytea LANGUAGE sql AS 'SELECT ''x'''")
        with pytest.raises(errors.InsufficientPrivilege):
            eve.execute("CREATE TABLE public.leaderboard (x int)")


def test_adduser_gives_the_user_a_schema_of_its_own_first_on_its_search_path(cluster: ClusterConfig, dsn: str) -> None:
    name = unique("frank")
    login = dataclasses.replace(cluster, user=name, password=install.add_user(dsn, name)).dsn()
    with psycopg.connect(login, autocommit=True) as frank:
        assert frank.execute("SHOW search_path").fetchone() == ('"$user", cerebro',)
        frank.execute("CREATE TABLE mine (x int)")
        assert frank.execute("SELECT 'mine'::regclass::text, current_schema()").fetchone() == ("mine", name)
        assert frank.execute("SELECT count(*) FROM leaderboard").fetchone() == (0,)  # the API resolves
    with psycopg.connect(dsn) as admin:
        owner = admin.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s", [name]).fetchone()
    assert owner == (name,)


def test_adduser_refuses_a_name_whose_schema_exists(dsn: str, conn: Session) -> None:
    name = unique("grace")
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    with pytest.raises(ValueError, match="already exists"):
        install.add_user(dsn, name)
    assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [name]).fetchone() == (0,)


# ---------------------------------------------------------------- secrets (item 4)


def test_adduser_sends_a_scram_verifier_not_the_password(cluster: ClusterConfig, dsn: str, conn: Session) -> None:
    data_directory = conn.execute("SHOW data_directory").fetchone()
    assert data_directory is not None
    log = Path(data_directory[0]).parent / "postgres.log"
    logged_before = log.stat().st_size
    name = unique("heidi")
    password = install.add_user(make_conninfo(dsn, options="-c log_statement=all"), name)
    with log.open() as file:
        file.seek(logged_before)
        logged = file.read()
    assert f'CREATE ROLE "{name}" LOGIN PASSWORD \'SCRAM-SHA-256$' in logged  # the statement log is on
    assert password not in logged
    stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [name]).fetchone()
    assert stored is not None and stored[0].startswith("SCRAM-SHA-256$4096:")
    with psycopg.connect(dataclasses.replace(cluster, user=name, password=password).dsn()) as heidi:
        assert heidi.execute("SELECT current_user").fetchone() == (name,)


def test_adduser_with_a_given_password_sets_it_again_but_takes_over_no_other_role(
    cluster: ClusterConfig, dsn: str
) -> None:
    name = unique("ivan")
    install.add_user(dsn, name, password="first")
    install.add_user(dsn, name, password="second")  # a container's start, again
    with psycopg.connect(dataclasses.replace(cluster, user=name, password="second").dsn()):
        pass
    with pytest.raises(ValueError, match="already exists"):
        install.add_user(dsn, name)  # a new random password for an existing role: no
    with pytest.raises(ValueError, match="already exists"):
        install.add_user(dsn, name, admin=True, password="x")  # not a member of cerebro_admin
    with pytest.raises(ValueError, match="already exists"):
        install.add_user(dsn, cluster.user, password="x")  # the superuser


def test_psql_gets_the_password_in_its_environment_not_in_argv(dsn: str, cluster: ClusterConfig) -> None:
    """A local user reads every process's argv (/proc/<pid>/cmdline, ps); `cerebro-db psql` passes none."""
    marker = unique("psql_probe")
    psql = subprocess.Popen(
        [sys.executable, "-m", "cerebro_db.cli", "psql", "-Atc", f"SELECT pg_sleep(60) /* {marker} */"],
        env={**os.environ, "CEREBRO_DSN": dsn},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with psycopg.connect(dsn, autocommit=True) as watcher:
            deadline = time.monotonic() + 60
            while not watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()", [f"%{marker}%"]
            ).fetchone():
                assert psql.poll() is None, psql.stderr.read() if psql.stderr else ""
                assert time.monotonic() < deadline, "psql never ran its query"
                time.sleep(0.05)  # polling a condition, not waiting for it
            argv = Path(f"/proc/{psql.pid}/cmdline").read_bytes().split(b"\0")  # execve: the same pid
            assert Path(argv[0].decode()).name == "psql"
            assert not any(cluster.password.encode() in arg for arg in argv), argv
            watcher.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                [f"%{marker}%"],
            )
    finally:
        psql.kill()
        psql.wait()
    argv_built, env = cli.psql_command(dsn, ["-c", "SELECT 1"])
    assert cluster.password not in " ".join(argv_built)
    assert env["PGPASSWORD"] == cluster.password
    assert conninfo_to_dict(argv_built[1])["user"] == cluster.user


def test_private_files_are_born_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_private(tmp_path / "new", "secret")
        (tmp_path / "old").write_text("")  # created readable by all, then made private on rewrite
        write_private(tmp_path / "old", "secret")
    finally:
        os.umask(old)
    assert mode(tmp_path / "new") == mode(tmp_path / "old") == 0o600


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """A new embedded cluster made by `cerebro-db up`, in a directory that does not exist yet."""
    parent = Path(tempfile.mkdtemp(prefix="cerebro-secrets-"))
    parent.chmod(0o755)  # as root, the server user must reach the cluster's directory inside
    root = parent / "home"
    try:
        yield root
    finally:
        if root.exists():
            run_cli(root, "down")
        shutil.rmtree(parent, ignore_errors=True)


def test_up_makes_its_files_private_and_prints_no_password(home: Path) -> None:
    out = run_cli(home, "up", "--no-scheduler", "--segments", "1")
    cluster = LocalCluster(home)
    password = cluster.config.password
    assert password not in out and "cluster running at postgresql://cerebro@" in out
    assert mode(home) == 0o700
    assert mode(cluster.data_dir) == 0o700
    for private in (cluster.config_file, cluster.passfile, cluster.log_file):
        assert mode(private) == 0o600, private
    assert not (home / "initdb.pw").exists()
    assert password not in run_cli(home, "status")


def test_dsn_prints_no_password_unless_asked_and_still_connects(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = LocalCluster(home).config.password
    shown = run_cli(home, "dsn").strip()
    assert password not in shown
    with psycopg.connect(shown) as conn:  # libpq reads the password from the passfile the URL names
        assert conn.execute("SELECT current_user").fetchone() == ("cerebro",)
    assert conninfo_to_dict(run_cli(home, "dsn", "--show-password").strip())["password"] == password
    monkeypatch.setenv("CEREBRO_DSN", LocalCluster(home).config.dsn())
    assert password not in run_cli(home, "dsn")
    assert password in run_cli(home, "dsn", "--show-password")
