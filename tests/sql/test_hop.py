"""The hop's SQL (cerebro_db/sql/10_unit/40_hop.sql) in real sessions: what a unit's transaction changes of its
session, and the state row it writes (the first hop inserts it, the next update it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import TINY_CNN, launch

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


def test_a_unit_commits_asynchronously_and_only_its_own_transaction(dsn: str, conn: Session, config: int) -> None:
    with psycopg.connect(dsn) as unit, psycopg.connect(dsn, autocommit=True) as user:
        unit.execute("SET synchronous_commit = on")  # the session's own setting
        user.execute("SET synchronous_commit = on")
        run_unit(unit, 0)
        assert unit.execute("SHOW synchronous_commit").fetchone() == ("off",)  # this transaction's commit
        assert user.execute("SHOW synchronous_commit").fetchone() == ("on",)
        unit.commit()
        assert unit.execute("SHOW synchronous_commit").fetchone() == ("on",)  # the session's again
        unit.rollback()
        # A rolled-back unit leaves the session as it was too.
        run_unit(unit, 1)
        unit.rollback()
        assert unit.execute("SHOW synchronous_commit").fetchone() == ("on",)
    assert conn.execute("SELECT count(*) FROM units WHERE config_id = %s", [config]).fetchone() == (1,)


def test_the_first_hop_inserts_the_state_and_the_next_update_it(dsn: str, conn: Session, config: int) -> None:
    with psycopg.connect(dsn) as unit:
        run_unit(unit, 0)
        unit.commit()
        first = conn.execute(
            "SELECT state, visited_segments, epoch_rows FROM model_states WHERE config_id = %s", [config]
        ).fetchone()
        assert first is not None and first[1] == [0] and first[2] > 0
        run_unit(unit, 1)  # the epoch's last hop: its sums start again
        unit.commit()
    second = conn.execute(
        "SELECT state, visited_segments, epoch_rows FROM model_states WHERE config_id = %s", [config]
    ).fetchone()
    assert second is not None and second[1:] == ([], 0) and second[0] != first[0]
    assert conn.execute("SELECT epoch FROM epoch_metrics WHERE config_id = %s", [config]).fetchall() == [(1,)]
