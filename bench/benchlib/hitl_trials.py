"""bench/hitl_latency.py's trials on a running workload: stop a config that trains and resume it, add a config."""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from benchlib import step
from benchlib.hitl import LockWaitLog, Observer, SchedulerThread, UnitMonitor, server_clock, wait_until
from cerebro_db import sample_data
from cerebro_db.scheduler import Scheduler

SOURCE_TABLE = "hitl_fashion"
DATASET = "hitl_fashion"
SEGMENTS = 2


def setup(dsn: str, args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Load and prepare the data, launch the workload; (workload_id, params of one config)."""
    with psycopg.connect(dsn) as conn:
        step(f"loading {args.rows} Fashion-MNIST rows")
        sample_data.load_fashion_mnist(conn, SOURCE_TABLE, limit=args.rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        step(f"preparing a {SEGMENTS}-segment dataset")
        conn.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', feature_columns => '{pixels}',"
            " feature_shape => '{28,28,1}', validation_fraction => %s, num_segments => %s, seed => %s)",
            [DATASET, SOURCE_TABLE, args.validation_fraction, SEGMENTS, args.seed],
        ).fetchall()
        fixed: dict[str, Any] = {
            "batch_size": args.batch_size,
            "filters": args.filters,
            "dense_units": args.dense_units,
        }
        lrs = [round(0.001 * (k + 1), 6) for k in range(args.configs)]
        space = {"lr": lrs, **{key: [value] for key, value in fixed.items()}}
        row = conn.execute(
            "SELECT run_model_selection(%s, 'cnn', %s::jsonb, max_epochs => %s, name => 'hitl latency', seed => %s)",
            [DATASET, json.dumps(space), args.max_epochs, args.seed],
        ).fetchone()
        assert row is not None
        return int(row[0]), {"lr": 0.0025, **fixed}


def mean_unit_s(conn: psycopg.Connection[Any], since: float) -> float:
    row = conn.execute(
        "SELECT avg(extract(epoch FROM finished_at - started_at))::float8 FROM units"
        " WHERE started_at >= to_timestamp(%s)",
        [since],
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else 1.0


@dataclass
class StopTrial:
    config_id: int
    update_ms: float
    #: Server clock: the UPDATE's RETURNING clock_timestamp() (before its commit) ...
    t0: float
    #: ... and a SELECT clock_timestamp() right after it returned (after the commit).
    t1: float
    #: Server side, from the UPDATE's start to its RETURNING (row lock waits included; commit not).
    execute_ms: float = 0.0
    #: The server's log_lock_waits messages while the UPDATE ran (waits over 10 ms).
    lock_waits: list[str] = field(default_factory=list)
    #: Start of the transaction of the unit found in flight just before the stop (its claim).
    claimed_at: float | None = None
    #: Whether a unit of the config still held its lock at t1 (claimed before the stop committed).
    locked_after: bool = False
    resumed_at: float = 0.0
    idle_after_s: float = 0.0  # client clock, from the UPDATE's return to the config's lock being gone
    error: str | None = None


@dataclass
class AddTrial:
    config_id: int
    t0: float
    t1: float
    #: pg_stat_activity of the segment backends right after the add returned.
    segments: list[str] = field(default_factory=list)


@dataclass
class Results:
    workload_id: int
    window_start: float
    stops: list[StopTrial] = field(default_factory=list)
    adds: list[AddTrial] = field(default_factory=list)


def in_flight(conn: psycopg.Connection[Any], config_id: int) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM active_units WHERE config_id = %s)", [config_id]).fetchone()
    return bool(row and row[0])


def recent_unit_s(conn: psycopg.Connection[Any], count: int) -> float:
    """Mean duration of the last ``count`` committed units."""
    row = conn.execute(
        "SELECT avg(s)::float8 FROM (SELECT extract(epoch FROM finished_at - started_at) AS s FROM units"
        " ORDER BY finished_at DESC LIMIT %s) t",
        [count],
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else 1.0


def fewest_units_per_segment(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT min(n) FROM (SELECT count(u.unit_id) AS n FROM segments s"
        " LEFT JOIN units u ON u.segment = s.segment GROUP BY s.segment) t"
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def units_of(conn: psycopg.Connection[Any], config_id: int) -> int:
    row = conn.execute("SELECT count(*) FROM units WHERE config_id = %s", [config_id]).fetchone()
    return int(row[0]) if row else 0


def segments_claimed_since(conn: psycopg.Connection[Any], since: float) -> int:
    """Segments whose unit in flight was claimed (transaction start) after ``since``."""
    row = conn.execute(
        "SELECT count(DISTINCT segment) FROM active_units WHERE started_at > to_timestamp(%s)", [since]
    ).fetchone()
    return int(row[0]) if row else 0


def stop_trial(
    conn: psycopg.Connection[Any],
    workload_id: int,
    rng: random.Random,
    scheduler: SchedulerThread,
    sub_epoch_s: float,
    lock_log: LockWaitLog,
) -> StopTrial:
    """Stop a config that trains right now, wait until both segments claimed anew, resume it."""
    while True:
        active = conn.execute(
            "SELECT config_id, extract(epoch FROM started_at)::float8 FROM active_units WHERE workload_id = %s",
            [workload_id],
        ).fetchall()
        if active:
            break
        scheduler.check()
        time.sleep(0.01)
    config_id, claimed_at = rng.choice(active)
    seen = len(lock_log.messages)
    started = time.perf_counter()
    try:
        row = conn.execute(
            "UPDATE configs SET status = 'stopped' WHERE config_id = %s"
            " RETURNING extract(epoch FROM clock_timestamp())::float8,"
            " 1000 * extract(epoch FROM clock_timestamp() - statement_timestamp())::float8",
            [config_id],
        ).fetchone()
    except psycopg.errors.QueryCanceled as error:  # statement_timeout: the stop blocked
        elapsed = 1000 * (time.perf_counter() - started)
        return StopTrial(config_id, elapsed, 0.0, 0.0, error=f"blocked, cancelled after {elapsed:.0f} ms: {error}")
    update_ms = 1000 * (time.perf_counter() - started)
    returned = time.perf_counter()
    after = conn.execute(
        "SELECT extract(epoch FROM clock_timestamp())::float8,"
        " EXISTS (SELECT 1 FROM active_units WHERE config_id = %s)",
        [config_id],
    ).fetchone()
    assert row is not None and after is not None
    t1 = float(after[0])
    trial = StopTrial(config_id, update_ms, float(row[0]), t1, locked_after=bool(after[1]), execute_ms=float(row[1]))
    trial.claimed_at = float(claimed_at) if claimed_at is not None else None
    trial.lock_waits = lock_log.messages[seen:]
    idle = wait_until(
        lambda: not in_flight(conn, config_id),
        max(60.0, 10 * sub_epoch_s),
        f"config {config_id}'s unit in flight to end",
        scheduler,
    )
    trial.idle_after_s = idle - returned
    # Give the scheduler every chance to (wrongly) start it again: both segments claim a new unit.
    # (A timeout is fine, e.g. no other config could run on one segment; the window still counts.)
    with contextlib.suppress(TimeoutError):
        wait_until(
            lambda: segments_claimed_since(conn, t1) >= SEGMENTS,
            max(3.0, 3 * sub_epoch_s),
            "both segments to claim a unit after the stop",
            scheduler,
        )
    row = conn.execute(
        "UPDATE configs SET status = 'running' WHERE config_id = %s AND status = 'stopped'"
        " RETURNING extract(epoch FROM clock_timestamp())::float8",
        [config_id],
    ).fetchone()
    trial.resumed_at = float(row[0]) if row else server_clock(conn)
    return trial


def add_trial(
    conn: psycopg.Connection[Any],
    workload_id: int,
    params: dict[str, Any],
    scheduler: SchedulerThread,
    sub_epoch_s: float,
) -> AddTrial:
    row = conn.execute(
        "SELECT added, extract(epoch FROM clock_timestamp())::float8 FROM add_config(%s, %s::jsonb) AS added",
        [workload_id, json.dumps(params)],
    ).fetchone()
    # What the segment backends do right after the commit (idle = the scheduler thread sleeps on LISTEN).
    activity = conn.execute(
        "SELECT extract(epoch FROM clock_timestamp())::float8, application_name, state, coalesce(wait_event, '-')"
        " FROM pg_stat_activity WHERE application_name LIKE 'cerebro segment %' ORDER BY application_name"
    ).fetchall()
    assert row is not None
    t1 = float(activity[0][0]) if activity else server_clock(conn)
    trial = AddTrial(int(row[0]), float(row[1]), t1, [f"{name}: {state} ({wait})" for _, name, state, wait in activity])
    wait_until(
        lambda: in_flight(conn, trial.config_id),
        max(60.0, 10 * sub_epoch_s),
        f"added config {trial.config_id} to start",
        scheduler,
    )
    return trial


def run(dsn: str, args: argparse.Namespace) -> tuple[Results, UnitMonitor, Observer]:
    workload_id, add_params = setup(dsn, args)
    rng = random.Random(args.seed)
    lock_log = LockWaitLog()
    observer = Observer(dsn, args.poll_ms / 1000)
    observer.start()
    monitor = UnitMonitor(dsn)
    scheduler = SchedulerThread(Scheduler(dsn, on_unit=monitor.on_unit, idle_wait=0.2))
    step("starting the scheduler; warming up (TensorFlow import and first units on both segments)")
    scheduler.start()
    try:
        with psycopg.connect(dsn, autocommit=True, application_name="hitl control") as conn:
            conn.execute("SET statement_timeout = '30s'")
            lock_log.attach(conn)
            wait_until(
                lambda: fewest_units_per_segment(conn) >= args.warmup_units,
                600,
                f"{args.warmup_units} committed units per segment",
                scheduler,
                poll_s=0.2,
            )
            results = Results(workload_id, server_clock(conn))
            sub_epoch = recent_unit_s(conn, SEGMENTS)  # warm units only: each backend's first one imports TF
            step(f"warm; a unit takes ~{sub_epoch:.2f} s. (a)+(b): {args.trials} stops of a training config")
            for i in range(args.trials):
                time.sleep(rng.uniform(0.1, 0.6) * sub_epoch)
                trial = stop_trial(conn, workload_id, rng, scheduler, sub_epoch, lock_log)
                results.stops.append(trial)
                if trial.error:
                    step(f"  stop {i + 1}: config {trial.config_id}: {trial.error}")
                    break
                sub_epoch = mean_unit_s(conn, results.window_start)
            step(f"(d): {args.adds} x add_config")
            for _ in range(args.adds):
                time.sleep(rng.uniform(0.2, 1.0) * sub_epoch)
                results.adds.append(add_trial(conn, workload_id, add_params, scheduler, sub_epoch))
            # The last added config's first unit must commit before the end (we read its started_at).
            last = results.adds[-1].config_id if results.adds else None
            if last is not None:
                wait_until(
                    lambda: units_of(conn, last) > 0,
                    max(60.0, 10 * sub_epoch),
                    f"the first unit of config {last} to commit",
                    scheduler,
                )
            step("stopping the workload and the scheduler (units in flight finish)")
            conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload_id])
    finally:
        scheduler.scheduler.stop()
        scheduler.join(timeout=600)
        monitor.close()
        time.sleep(max(0.2, 5 * args.poll_ms / 1000))  # let the observer see the last epochs
        observer.halt()
    if scheduler.error is not None:
        raise RuntimeError(f"the scheduler thread died: {scheduler.error!r}") from scheduler.error
    return results, monitor, observer
