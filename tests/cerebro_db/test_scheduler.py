"""MOP end to end: invariants from the unit log, exactness, resume, snapshots and visibility."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import psycopg

from cerebro_db.scheduler import Scheduler
from cerebro_db.testing import verify
from cerebro_plpy import packing, training
from tests.conftest import TINY_CNN, launch, run_until_idle


def unit_log(conn: psycopg.Connection[Any], workload_id: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT u.config_id, u.segment, u.epoch, u.started_at, u.finished_at FROM units u"
        " JOIN configs c USING (config_id) WHERE c.workload_id = %s ORDER BY u.started_at",
        [workload_id],
    ).fetchall()


def config_ids(conn: psycopg.Connection[Any], workload_id: int) -> list[int]:
    return [
        r[0] for r in conn.execute("SELECT config_id FROM configs WHERE workload_id = %s ORDER BY 1", [workload_id])
    ]


def test_mop_invariants_hold_over_the_unit_log(dsn: str, conn: psycopg.Connection[Any], fashion_2seg: str) -> None:
    epochs = 2
    workload = launch(conn, fashion_2seg, {"lr": [0.001, 0.003, 0.01], **TINY_CNN}, epochs=epochs)
    run_until_idle(dsn)
    log = unit_log(conn, workload)
    # Every config visits every segment exactly once per epoch, never on two segments at once.
    assert verify.mop_violations(conn, workload) == []
    assert verify.epochs_lost(conn, workload) == 0
    assert len(log) == 3 * epochs * 2

    # Both segments were busy at the same time (asynchronous, not one after the other).
    assert any(a[1] != b[1] and a[3] < b[4] and b[3] < a[4] for i, a in enumerate(log) for b in log[i + 1 :]), (
        "segments never trained concurrently"
    )

    # One metrics row per config and epoch; everything completed.
    rows = conn.execute(
        "SELECT c.config_id, count(m.*), c.status, c.epochs_done FROM configs c"
        " LEFT JOIN epoch_metrics m USING (config_id) WHERE c.workload_id = %s GROUP BY c.config_id",
        [workload],
    ).fetchall()
    assert {(count, status, done) for _, count, status, done in rows} == {(epochs, "completed", epochs)}
    status = conn.execute("SELECT status FROM workloads WHERE workload_id = %s", [workload]).fetchone()
    assert status == ("completed",)


def test_one_segment_mop_is_bit_identical_to_plain_keras(
    dsn: str, conn: psycopg.Connection[Any], fashion_1seg: str
) -> None:
    epochs = 2
    workload = launch(conn, fashion_1seg, {"lr": [0.003], "batch_size": [32], **TINY_CNN}, epochs=epochs)
    run_until_idle(dsn)
    (config,) = config_ids(conn, workload)
    in_database = verify.final_state(conn, config)

    params, seed, shape, classes = conn.execute(
        "SELECT c.params, c.seed, d.feature_shape, d.num_classes FROM configs c"
        " JOIN workloads w USING (workload_id) JOIN datasets d ON d.name = w.dataset WHERE c.config_id = %s",
        [config],
    ).fetchone()  # type: ignore[misc]
    buffers = conn.execute(
        "SELECT b.x, b.y FROM dataset_buffers b JOIN datasets d USING (dataset_id)"
        " WHERE d.name = %s AND b.split = 'train' ORDER BY b.buffer_id",
        [fashion_1seg],
    ).fetchall()
    x = np.concatenate([packing.from_bytes(bx, tuple(shape)) for bx, _ in buffers])
    y = np.concatenate([packing.from_bytes(by, ()) for _, by in buffers])

    gd: dict[str, Any] = {}
    model = training.build_compiled(gd, training.ModelSpec("cnn", params, tuple(shape), classes, seed))
    model.fit(x, y, batch_size=params["batch_size"], epochs=epochs, shuffle=False, verbose=0)
    assert verify.states_equal(in_database, training.capture(model))


def test_resume_after_any_hop_is_bit_identical(dsn: str, conn: psycopg.Connection[Any], fashion_1seg: str) -> None:
    """Stop the scheduler after k hops, start a fresh one (new backends, cold caches), finish."""
    space = {"lr": [0.003], "batch_size": [32], **TINY_CNN}
    epochs = 3
    reference = launch(conn, fashion_1seg, space, epochs=epochs, seed=11)
    run_until_idle(dsn)
    expected = verify.final_state(conn, config_ids(conn, reference)[0])
    for hops in (1, 2):
        workload = launch(conn, fashion_1seg, space, epochs=epochs, seed=11)
        assert len(run_until_idle(dsn, max_units=hops)) == hops
        assert conn.execute("SELECT epochs_done FROM configs WHERE workload_id = %s", [workload]).fetchone() == (hops,)
        run_until_idle(dsn)
        assert verify.states_equal(verify.final_state(conn, config_ids(conn, workload)[0]), expected)


def test_run_holds_no_snapshot_across_units_and_metrics_show_up_live(
    dsn: str, conn: psycopg.Connection[Any], fashion_2seg: str
) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.001, 0.003], **TINY_CNN}, epochs=3)
    horizons: list[int] = []
    seen_live: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    with psycopg.connect(dsn, autocommit=True) as monitor:

        def observe(unit: dict[str, Any]) -> None:
            """Runs after each unit committed, while the other segment may still be training."""
            with lock:
                row = monitor.execute(
                    "SELECT min(backend_xmin::text::bigint) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'cerebro %%' AND backend_xmin IS NOT NULL"
                ).fetchone()
                if row and row[0] is not None:
                    horizons.append(row[0])
                if unit["epoch_done"]:
                    count = monitor.execute(
                        "SELECT count(*) FROM epoch_metrics WHERE config_id = %s", [unit["config_id"]]
                    ).fetchone()
                    left = monitor.execute(
                        "SELECT count(*) FROM configs WHERE workload_id = %s AND status <> 'completed'", [workload]
                    ).fetchone()
                    assert count is not None and left is not None
                    seen_live.append((unit["epoch"], count[0], left[0]))

        Scheduler(dsn, on_unit=observe, idle_wait=0.2).run(until_idle=True)

    # The oldest snapshot any project backend holds moves forward during the run.
    assert len(horizons) >= 3 and horizons[-1] > horizons[0], horizons
    # Each epoch's metrics row was visible from another session as soon as the epoch ended,
    # while the run still had configs to train.
    assert all(epoch == count for epoch, count, _ in seen_live)
    assert any(left > 0 for _, _, left in seen_live)
