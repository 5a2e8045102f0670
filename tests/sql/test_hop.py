"""The hop's SQL (cerebro_db/sql/10_unit/40_hop.sql) and the state files (30_state_files.sql) in real sessions:
what a unit's transaction changes of its session, the state row and file it writes (the first hop inserts the row,
the next update it), and which files a sweep removes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cerebro_plpy.state import ModelState
from tests.conftest import TINY_CNN, launch, one

Session = psycopg.Connection[Any]


@pytest.fixture
def config(conn: Session, fashion_2seg: str) -> Iterator[int]:
    """One config of a workload no scheduler runs; deleted afterwards."""
    workload = launch(conn, fashion_2seg, {"lr": [0.001], **TINY_CNN}, epochs=2)
    row = conn.execute("SELECT config_id FROM configs WHERE workload_id = %s", [workload]).fetchone()
    assert row is not None
    yield row[0]
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def run_unit(session: Session, segment: int) -> dict[str, Any]:
    """BEGIN; claim_unit; run_unit (the transaction is left open)."""
    claimed = session.execute("SELECT config_id FROM claim_unit(%s)", [segment]).fetchone()
    assert claimed is not None
    row = session.execute("SELECT run_unit(%s, %s)", [claimed[0], segment]).fetchone()
    assert row is not None
    summary: dict[str, Any] = row[0]
    return summary


def state_directory(conn: Session) -> Path:
    return Path(one(conn, "SHOW data_directory"), one(conn, "SELECT state_directory()"))


def state_file(conn: Session, config: int) -> str:
    name: str = one(conn, "SELECT state_file FROM model_states WHERE config_id = %s", config)
    return name


def test_a_unit_commits_synchronously_where_its_session_would_not(dsn: str, conn: Session, config: int) -> None:
    """A unit's transaction stops naming its config's old state file, which a sweep may then remove: a crash must
    not bring the old name back, so the commit waits for its flush. Only that transaction's, and never weaker
    than the session's own setting."""
    with psycopg.connect(dsn) as unit:
        unit.execute("SET synchronous_commit = off")  # the session's own setting, e.g. ALTER DATABASE's
        run_unit(unit, 0)
        assert one(unit, "SHOW synchronous_commit") == "local"  # this transaction's commit
        unit.commit()
        assert one(unit, "SHOW synchronous_commit") == "off"  # the session's again
        unit.execute("SET synchronous_commit = remote_apply")
        run_unit(unit, 1)
        assert one(unit, "SHOW synchronous_commit") == "remote_apply"  # a stronger setting stays
        unit.rollback()
    assert one(conn, "SELECT count(*) FROM units WHERE config_id = %s", config) == 1


def test_the_first_hop_inserts_the_state_and_the_next_update_it(dsn: str, conn: Session, config: int) -> None:
    directory = state_directory(conn)
    with psycopg.connect(dsn) as unit:
        run_unit(unit, 0)
        unit.commit()
        first = one(
            conn, "SELECT state_file, visited_segments, epoch_rows FROM model_states WHERE config_id = %s", config
        )
        assert first[1] == [0] and first[2] > 0
        first_state = (directory / first[0]).read_bytes()
        assert one(conn, "SELECT stored_state(%s)", config) == first_state
        assert one(conn, "SELECT state_bytes FROM model_states WHERE config_id = %s", config) == len(first_state)
        run_unit(unit, 1)  # the epoch's last hop: its sums start again
        unit.commit()
    second = one(conn, "SELECT state_file, visited_segments, epoch_rows FROM model_states WHERE config_id = %s", config)
    assert second[1:] == ([], 0) and second[0] != first[0]
    assert (directory / second[0]).read_bytes() != first_state
    ModelState.decode((directory / second[0]).read_bytes())  # a whole state
    assert one(conn, "SELECT epoch FROM epoch_metrics WHERE config_id = %s", config) == 1


def test_a_sweep_removes_superseded_and_rolled_back_states_and_keeps_the_committed(
    dsn: str, conn: Session, config: int
) -> None:
    directory = state_directory(conn)
    with psycopg.connect(dsn) as unit:
        run_unit(unit, 0)
        unit.commit()
        first = state_file(conn, config)
        run_unit(unit, 1)
        in_flight = one(unit, "SELECT state_file FROM model_states WHERE config_id = %s", config)
        # Another transaction's sweep while this hop is uncommitted: its file's writer is in progress.
        conn.execute("SELECT sweep_state_files()")
        assert (directory / in_flight).exists() and (directory / first).exists()
        unit.rollback()
        conn.execute("SELECT sweep_state_files()")  # (other tests' garbage in this database goes too)
        assert not (directory / in_flight).exists() and (directory / first).exists()
        run_unit(unit, 1)
        second = one(unit, "SELECT state_file FROM model_states WHERE config_id = %s", config)
        unit.commit()
    conn.execute("SELECT sweep_state_files()")
    assert not (directory / first).exists()  # superseded
    assert (directory / second).exists()  # committed


def test_a_deleted_configs_state_file_is_swept(dsn: str, conn: Session, fashion_2seg: str) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.001], **TINY_CNN}, epochs=2)
    with psycopg.connect(dsn) as unit:
        run_unit(unit, 0)
        unit.commit()
    name = one(
        conn, "SELECT state_file FROM model_states JOIN configs USING (config_id) WHERE workload_id = %s", workload
    )
    assert (state_directory(conn) / name).exists()
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])
    conn.execute("SELECT sweep_state_files()")
    assert not (state_directory(conn) / name).exists()


def test_a_clone_keeps_its_state_when_its_source_hops_on(dsn: str, conn: Session, config: int) -> None:
    directory = state_directory(conn)
    with psycopg.connect(dsn) as unit:
        run_unit(unit, 0)
        unit.commit()
        source_state = one(conn, "SELECT stored_state(%s)", config)
        clone = one(conn, "SELECT clone_config(%s)", config)
        conn.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [clone])  # not claimed below
        assert state_file(conn, clone) != state_file(conn, config)
        run_unit(unit, 1)
        unit.commit()
    conn.execute("SELECT sweep_state_files()")
    assert (directory / state_file(conn, clone)).read_bytes() == source_state
    assert one(conn, "SELECT stored_state(%s)", clone) == source_state
    assert one(conn, "SELECT state_bytes FROM model_states WHERE config_id = %s", clone) == len(source_state)
    assert not list(directory.glob("*.staged"))


def test_a_lost_state_file_is_named_with_a_hint(dsn: str, conn: Session, config: int) -> None:
    with psycopg.connect(dsn) as unit:
        run_unit(unit, 0)
        unit.commit()
    (state_directory(conn) / state_file(conn, config)).unlink()
    with pytest.raises(
        psycopg.errors.UndefinedFile, match=f"state file c{config}-x[0-9]+.state of config {config} is missing"
    ) as raised:
        conn.execute("SELECT stored_state(%s)", [config])
    assert raised.value.diag.message_hint is not None and "data directory" in raised.value.diag.message_hint


@pytest.mark.parametrize(
    ("directory", "name"),
    [("cerebro_states/1", "../../postgresql.conf"), ("..", "c1-x1.state"), ("cerebro_states/1", "c1-x1.state/..")],
)
def test_a_state_file_outside_the_state_directory_is_refused(conn: Session, directory: str, name: str) -> None:
    with pytest.raises(psycopg.errors.ExternalRoutineException, match="is not a state"):
        conn.execute("SELECT _read_state_file(%s, %s)", [directory, name])


def test_a_sweep_removes_the_state_directories_of_dropped_databases(conn: Session) -> None:
    dropped = state_directory(conn).parent / "4000000001"  # no database has this oid
    conn.execute("SELECT _write_state_file('cerebro_states/4000000001', 'c1-x1.state', 'x')")  # as the server
    assert dropped.exists()
    conn.execute("SELECT sweep_state_files()")
    assert not dropped.exists() and state_directory(conn).parent.exists()
