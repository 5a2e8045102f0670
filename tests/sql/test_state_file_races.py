"""The state files' sweep (30_state_files.sql) against the interleavings and settings that could make it remove a
file a committed row names, stop every unit, or leave superseded files for ever."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import TINY_CNN, launch, one
from tests.sql.test_hop import run_unit, state_directory, state_file

Session = psycopg.Connection[Any]


@pytest.fixture
def config(conn: Session, fashion_2seg: str) -> Iterator[int]:
    workload = launch(conn, fashion_2seg, {"lr": [0.001], **TINY_CNN}, epochs=3)
    yield one(conn, "SELECT config_id FROM configs WHERE workload_id = %s", workload)
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_a_sweep_keeps_the_file_of_a_hop_whose_commit_waits_for_a_synchronous_standby(
    dsn: str, conn: Session, config: int
) -> None:
    """A synchronous commit marks the transaction committed in the clog, then waits for the standby while still
    running in every snapshot (RecordTransactionCommit's SyncRepWaitForLSN): a sweep must not take it for a
    finished writer whose file no row names."""
    directory = state_directory(conn)
    conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'phantom'")  # a standby that never answers
    conn.execute("SELECT pg_reload_conf()")
    try:
        with psycopg.connect(dsn) as unit:
            run_unit(unit, 0)
            new = one(unit, "SELECT state_file FROM model_states WHERE config_id = %s", config)
            pid = unit.info.backend_pid
            committing = threading.Thread(target=unit.commit)
            committing.start()
            try:
                waits = None
                for _ in range(100_000):  # until its commit waits for the standby
                    waits = one(conn, "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", pid)
                    if waits == "SyncRep":
                        break
                assert waits == "SyncRep"
                conn.execute("SELECT sweep_state_files()")
                swept = not (directory / new).exists()
            finally:
                conn.execute("SELECT pg_cancel_backend(%s)", [pid])  # the commit stands locally (a WARNING)
                committing.join()
    finally:
        conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
        conn.execute("SELECT pg_reload_conf()")
    assert state_file(conn, config) == new  # committed
    assert not swept, f"the sweep removed {new}, which the committed row names"


def test_a_state_file_with_a_writer_in_the_future_does_not_stop_the_sweep(conn: Session) -> None:
    """After a crash, a file written by a transaction whose id never reached the WAL has an id past nextXid (or a
    file was copied from elsewhere). Asking the commit log of it raises, and every unit_start sweeps: the sweep
    must keep such a file and go on."""
    future = one(conn, "SELECT txid_current() + 1000000")
    name = f"c1-x{future}.state"
    conn.execute("SELECT _write_state_file(state_directory(), %s, 'x')", [name])
    try:
        conn.execute("SELECT sweep_state_files()")
        assert (state_directory(conn) / name).exists()
    finally:
        (state_directory(conn) / name).unlink()


def test_sweeps_run_where_the_database_defaults_to_repeatable_read(dsn: str, conn: Session, config: int) -> None:
    """ALTER DATABASE ... SET default_transaction_isolation = 'repeatable read' makes every unit's transaction
    repeatable read: its sweep must still remove superseded states (hundreds of MB each)."""
    directory = state_directory(conn)
    with psycopg.connect(dsn, options="-c default_transaction_isolation=repeatable\\ read") as unit:
        run_unit(unit, 0)
        unit.commit()
        first = state_file(conn, config)
        run_unit(unit, 1)
        unit.commit()
        run_unit(unit, 0)  # its unit_start sweeps
        unit.commit()
    assert not (directory / first).exists(), "superseded two hops ago, never swept"


def test_a_cascaded_delete_commits_synchronously(dsn: str, conn: Session, config: int) -> None:
    with psycopg.connect(dsn) as unit:
        run_unit(unit, 0)
        unit.commit()
        unit.execute("SET synchronous_commit = off")
        unit.execute("DELETE FROM configs WHERE config_id = %s", [config])
        assert one(unit, "SHOW synchronous_commit") == "local"
        unit.rollback()
