"""Partial replication on a real 4-segment cluster: prepare_dataset(..., replication => 2) cuts the training split
into 2 shards, shard k held by segments k and k + 2, and a config visits each shard once per epoch, on either of
its segments."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cerebro_db import sample_data
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing import verify
from cerebro_db.testing.clusters import temporary_cluster
from tests.conftest import launch, one, unique

Session = psycopg.Connection[Any]
SEGMENTS = 4
TABLE = "blobs"
ROWS = 200
VALIDATION_ROWS = 50  # validation_fraction 0.25
SPACE = {"lr": [0.01, 0.02, 0.03], "hidden_units": [4]}
EPOCHS = 3


@pytest.fixture(scope="module")
def dsn4() -> Iterator[str]:
    with temporary_cluster(segments=SEGMENTS) as cluster, psycopg.connect(cluster.dsn()) as conn:
        x, y = sample_data.synthetic_tabular(ROWS, 4, 2, seed=3)
        sample_data.load_tabular_table(conn, TABLE, x, y)
        conn.commit()
        yield cluster.dsn()


@pytest.fixture
def conn4(dsn4: str) -> Iterator[Session]:
    with psycopg.connect(dsn4, autocommit=True) as connection:
        yield connection


def prepare(conn: Session, replication: int) -> tuple[str, list[tuple[int, int, int]]]:
    name = unique(f"blobs_r{replication}")
    summary = conn.execute(
        "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3}', validation_fraction => 0.25,"
        " replication => %s)",
        [name, TABLE, replication],
    ).fetchall()
    return name, summary


def test_each_shard_is_stored_once_and_held_by_its_segments(conn4: Session) -> None:
    name, summary = prepare(conn4, 2)
    shard_rows = dict(
        conn4.execute(
            "SELECT b.segment, sum(b.rows)::int FROM dataset_buffers b JOIN datasets d USING (dataset_id)"
            " WHERE d.name = %s AND b.split = 'train' GROUP BY 1 ORDER BY 1",
            [name],
        ).fetchall()
    )
    train_rows = ROWS - VALIDATION_ROWS
    assert sorted(shard_rows) == [0, 1] and sum(shard_rows.values()) == train_rows  # one copy, in 2 shards
    assert one(conn4, "SELECT replication, num_segments, train_rows FROM datasets WHERE name = %s", name) == (
        2,
        SEGMENTS,
        train_rows,
    )
    # Per segment, what it holds: segment s the shard s % 2; the validation rows are stored with shards 0 and 1.
    assert [(s, t) for s, t, _ in summary] == [(s, shard_rows[s % 2]) for s in range(SEGMENTS)]
    assert sum(v for _, _, v in summary) == VALIDATION_ROWS and [v for *_, v in summary][2:] == [0, 0]
    assert [one(conn4, "SELECT segment_shard(%s, 4, 2)", s) for s in range(SEGMENTS)] == [0, 1, 0, 1]


def claim(session: Session, segment: int) -> int | None:
    row = session.execute("SELECT config_id FROM claim_unit(%s)", [segment]).fetchone()
    return None if row is None else row[0]


def run_one(session: Session, segment: int) -> int | None:
    """Claim and run a unit on ``segment`` by hand, in one transaction; the config it ran, if any."""
    with session.transaction():
        config = claim(session, segment)
        if config is not None:
            session.execute("SELECT run_unit(%s, %s)", [config, segment])
    return config


def test_a_workload_visits_each_shard_once_per_epoch_on_any_of_its_segments(dsn4: str, conn4: Session) -> None:
    dataset, _ = prepare(conn4, 2)
    workload = launch(conn4, dataset, SPACE, epochs=EPOCHS, model="mlp")
    configs = [r[0] for r in conn4.execute("SELECT config_id FROM configs WHERE workload_id = %s", [workload])]
    with psycopg.connect(dsn4) as session:
        first = run_one(session, 0)  # shard 0
        assert first in configs
        # first may not visit shard 0 again this epoch, on segment 2 either: another config takes it there.
        second = run_one(session, 2)
        assert second in configs and second != first
        assert one(conn4, "SELECT visited_segments FROM model_states WHERE config_id = %s", first) == [0]
        assert one(conn4, "SELECT unit_fits(%s, 2), unit_fits(%s, 3)", first, first) == (False, True)
    # The epoch is 2 hops: the scheduler finishes the rest on all 4 segments.
    Scheduler(dsn4, idle_wait=0.2).run(until_idle=True)
    assert verify.stranded(conn4) == []
    assert conn4.execute("SELECT DISTINCT epochs_done FROM configs WHERE workload_id = %s", [workload]).fetchall() == [
        (EPOCHS,)
    ]
    assert verify.epochs_lost(conn4, workload) == 0
    assert verify.mop_violations(conn4, workload) == []
    log = conn4.execute(
        "SELECT u.config_id, u.epoch, segment_shard(u.segment, 4, 2), count(*) FROM units u"
        " JOIN configs c USING (config_id) WHERE c.workload_id = %s GROUP BY 1, 2, 3",
        [workload],
    ).fetchall()
    assert sorted((c, e, k) for c, e, k, n in log if n == 1) == sorted(
        (c, e, k) for c in configs for e in range(1, EPOCHS + 1) for k in (0, 1)
    )  # every config visited each shard exactly once per epoch
    holders = dict(
        conn4.execute(
            "SELECT segment_shard(u.segment, 4, 2), array_agg(DISTINCT u.segment ORDER BY u.segment) FROM units u"
            " JOIN configs c USING (config_id) WHERE c.workload_id = %s GROUP BY 1",
            [workload],
        ).fetchall()
    )
    assert holders[0] == [0, 2]  # shard 0 trained on both its segments (the two units run by hand)
    # The state is the one plain Keras reaches over the same shards in the same order.
    assert verify.states_equal(verify.final_state(conn4, first), verify.replay(conn4, first))


def test_replication_one_is_one_shard_per_segment(conn4: Session) -> None:
    name, summary = prepare(conn4, 1)
    assert [s for s, _, _ in summary] == list(range(SEGMENTS))
    assert conn4.execute(
        "SELECT DISTINCT b.segment FROM dataset_buffers b JOIN datasets d USING (dataset_id)"
        " WHERE d.name = %s AND b.split = 'train' ORDER BY 1",
        [name],
    ).fetchall() == [(s,) for s in range(SEGMENTS)]
    assert [one(conn4, "SELECT segment_shard(%s, 4, 1)", s) for s in range(SEGMENTS)] == list(range(SEGMENTS))
