"""Human-in-the-loop latency while 2 segments train: stop, epoch visibility, add_config.

While a workload of small ``cnn`` configs keeps both segments of a throwaway cluster busy
(the scheduler runs in a background thread of this process), it measures

(a) how long ``UPDATE configs SET status = 'stopped'`` takes to return, on a config that
    is training right now (target: p95 <= 50 ms; it must never wait for the unit in flight);
(b) what happens to that config afterwards: units of it that *start* after the stop
    committed (target: none), units of it that end after the stop (at most the one in
    flight), and the time from the stop until its unit in flight has ended, in seconds and
    in sub-epochs (target: <= 1 sub-epoch); the config is resumed once both segments have
    claimed a new unit since the stop;
(c) the time from an epoch's commit to its ``epoch_metrics`` row being visible from
    another session, which polls every ``--poll-ms`` (target: <= 1 s); and, in the
    scheduler's ``on_unit`` callback (after the unit's commit), whether the row is already
    visible from a third session (it must be, always);
(d) the time from ``add_config`` to the start of the new config's first unit, in seconds
    and in sub-epochs (target: <= 1 sub-epoch).

A sub-epoch (one unit, one hop) is measured two ways: against the unit the config had to wait
for (its own unit in flight for (b), the hop before it on its segment for (d)), which is what
"lands at the next hop" means, and, for information, against the mean unit after warm-up
(units table, finished_at - started_at). Then it prints a table::

    .venv/bin/python bench/hitl_latency.py                                 # 6000 rows, 100 stops, 20 adds
    .venv/bin/python bench/hitl_latency.py --rows 2000 --trials 4 --adds 2  # smoke test

It starts its own throwaway cluster (2 segments) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from cerebro_db import sample_data
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table as table

SOURCE_TABLE = "hitl_fashion"
DATASET = "hitl_fashion"
SEGMENTS = 2
TARGET_STOP_P95_MS = 50.0
TARGET_SUB_EPOCHS = 1.0
TARGET_VISIBLE_S = 1.0

NOTES = """\
Notes: all times are one machine's clock (server clock_timestamp() and the backends' time.time()).
  (a) client perf_counter around the autocommit UPDATE (so it includes the commit and one round trip), on a
      config found in active_units (i.e. holding its unit lock) just before.
  (b) stop commit: it lies between the UPDATE's RETURNING clock_timestamp() (t0) and a SELECT clock_timestamp()
      right after it returned (t1). 'started after stop' counts units of the config with started_at > t1 and
      before its resume (started_at is taken when the unit's context is read, just after claim_unit in the same
      transaction), other than the one in flight; 'ending after stop' counts units of it ending after t0
      (the unit in flight: the first unit of the config ending after t0, if it still held the config's lock at
      t1 or started before t1). 'stop -> config idle' = its finished_at - t0 (0 if none was in flight);
      units.finished_at is taken inside the unit's transaction, a few ms before its commit. 'x its unit in flight'
      divides by that unit's own duration, from its claim (the transaction start active_units showed just before
      the stop) to its finished_at (1 = the stop landed at the very next hop); 'x mean unit' by the mean unit after
      warm-up, which epoch-ending units (with validation) and CPU contention exceed.
  (c) reference: units.finished_at of the epoch's last unit (inside its transaction, after the epoch_metrics
      insert and the state save; before the config update, on_epoch_end and COMMIT), so the latency is an upper
      bound that includes the rest of that transaction and the polling interval. epoch_metrics.finished_at is
      not used: see the notes above.
  (d) from add_config's RETURNING-time clock_timestamp() (just before its commit) to the started_at of the new
      config's first unit. 'x the hop it waited for' divides by the hop in flight at the add on the segment it
      ran on: from the previous unit's started_at there to the new unit's started_at (else by the mean unit).
      Like 'x its unit in flight' in (b), it is <= 1 exactly when the change landed at the next hop; the counts
      ('started after stop', 'ending after stop', 'other configs' units started first') say whether anything
      else ran first. 'segment free -> ...' is from the previous unit's finished_at to the new unit's started_at
      (commit, wake-up, claim); a segment idle at the add sees the new config at its next poll, within the
      scheduler's idle_wait (0.2 s here): users' changes notify nobody (a NOTIFY in their transaction would fail
      its commit once someone filled the notification queue). 'other configs' units started first' counts units
      that started after the add's commit and before the new config's first unit (a claim already under way at
      the commit may legitimately still pick another config)."""


# --------------------------------------------------------------------------- helpers


def server_clock(conn: psycopg.Connection[Any]) -> float:
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class CapturedLog(logging.Handler):
    """Keeps the scheduler's warnings and errors (a cancelled or failed unit is a finding here)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


class LockWaitLog:
    """The control session's lock waits over 10 ms, as the server reports them (log_lock_waits).

    deadlock_timeout and log_lock_waits are superuser settings; the embedded cluster's user is one.
    With client_min_messages = log, the LOG lines reach this client as notices.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.enabled = False

    def attach(self, conn: psycopg.Connection[Any]) -> None:
        try:
            for setting in ("deadlock_timeout = '10ms'", "log_lock_waits = on", "client_min_messages = log"):
                conn.execute("SET " + setting)  # constants only
            self.enabled = True
        except psycopg.errors.InsufficientPrivilege:
            return
        conn.add_notice_handler(self._notice)

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        message = diag.message_primary or ""
        if "ShareLock" in message or "waiting for" in message or "acquired" in message:
            detail = f" ({diag.message_detail})" if diag.message_detail else ""
            self.messages.append(message + detail)


class SchedulerThread(threading.Thread):
    """``Scheduler.run`` (without until_idle: the benchmark decides when to end) in the background."""

    def __init__(self, scheduler: Scheduler) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.scheduler = scheduler
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.scheduler.run()
        except BaseException as error:  # reported by check()
            self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the scheduler thread died: {self.error!r}") from self.error
        if not self.is_alive():
            raise RuntimeError("the scheduler thread ended early")


class Observer(threading.Thread):
    """Another session polling ``epoch_metrics``: when (server clock) each row is first seen."""

    def __init__(self, dsn: str, poll_s: float) -> None:
        super().__init__(name="observer", daemon=True)
        self.dsn = dsn
        self.poll_s = poll_s
        self.first_seen: dict[tuple[int, int], float] = {}
        self.polls = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True, application_name="hitl observer") as conn:
                while not self._halt.is_set():
                    # The uncorrelated subquery runs once, after the statement's snapshot was taken.
                    rows = conn.execute(
                        "SELECT (SELECT extract(epoch FROM clock_timestamp())::float8), config_id, epoch"
                        " FROM epoch_metrics"
                    ).fetchall()
                    self.polls += 1
                    for seen, config_id, epoch in rows:
                        self.first_seen.setdefault((int(config_id), int(epoch)), float(seen))
                    self._halt.wait(self.poll_s)
        except BaseException as error:
            self.error = error

    def halt(self) -> None:
        self._halt.set()
        self.join()
        if self.error is not None:
            raise RuntimeError(f"the observer thread died: {self.error!r}") from self.error


@dataclass
class VisibilityCheck:
    config_id: int
    epoch: int
    at: float
    visible: bool


class UnitMonitor:
    """The scheduler's ``on_unit`` hook: right after an epoch's unit committed, is its row visible elsewhere?"""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, application_name="hitl monitor")
        self.lock = threading.Lock()
        self.checks: list[VisibilityCheck] = []
        self.errors: list[str] = []

    def on_unit(self, result: dict[str, Any]) -> None:
        if not result.get("epoch_done"):
            return
        config_id, epoch = int(result["config_id"]), int(result["epoch"])
        try:
            with self.lock:
                row = self.conn.execute(
                    "SELECT extract(epoch FROM clock_timestamp())::float8,"
                    " EXISTS (SELECT 1 FROM epoch_metrics WHERE config_id = %s AND epoch = %s)",
                    [config_id, epoch],
                ).fetchone()
            assert row is not None
            self.checks.append(VisibilityCheck(config_id, epoch, float(row[0]), bool(row[1])))
        except Exception as error:  # never kill a segment thread from a benchmark hook
            self.errors.append(repr(error))

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- the workload


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


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, scheduler: SchedulerThread, poll_s: float = 0.02
) -> float:
    """Poll ``predicate`` until true; the client perf_counter when it was."""
    deadline = time.perf_counter() + timeout_s
    while True:
        if predicate():
            return time.perf_counter()
        scheduler.check()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def mean_unit_s(conn: psycopg.Connection[Any], since: float) -> float:
    row = conn.execute(
        "SELECT avg(extract(epoch FROM finished_at - started_at))::float8 FROM units"
        " WHERE started_at >= to_timestamp(%s)",
        [since],
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else 1.0


# --------------------------------------------------------------------------- trials


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


# --------------------------------------------------------------------------- analysis and report


@dataclass
class UnitRow:
    config_id: int
    segment: int
    started: float
    finished: float
    epoch: int
    epoch_end: bool


@dataclass
class Row:
    name: str
    values: list[float]
    fmt: str
    target: str
    check: Callable[[list[float]], bool] | None


def stats(values: Sequence[float]) -> tuple[float, float, float]:
    array = np.asarray(values, dtype=float)
    return float(np.percentile(array, 50)), float(np.percentile(array, 95)), float(array.max())


def analyse(dsn: str, results: Results, monitor: UnitMonitor, observer: Observer) -> tuple[list[Row], list[str], float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        units = [
            UnitRow(int(r[0]), int(r[1]), float(r[2]), float(r[3]), int(r[4]), bool(r[5]))
            for r in conn.execute(
                "SELECT u.config_id, u.segment, extract(epoch FROM u.started_at)::float8,"
                " extract(epoch FROM u.finished_at)::float8, u.epoch, u.validation_s IS NOT NULL"
                " FROM units u JOIN configs c USING (config_id) WHERE c.workload_id = %s ORDER BY u.started_at",
                [results.workload_id],
            )
        ]
        metrics_at = {
            (int(r[0]), int(r[1])): float(r[2])
            for r in conn.execute(
                "SELECT m.config_id, m.epoch, extract(epoch FROM m.finished_at)::float8"
                " FROM epoch_metrics m JOIN configs c USING (config_id) WHERE c.workload_id = %s",
                [results.workload_id],
            )
        }
        failed = conn.execute(
            "SELECT config_id, error FROM configs WHERE workload_id = %s AND status = 'failed'", [results.workload_id]
        ).fetchall()

    steady = [u for u in units if u.started >= results.window_start]
    sub_epoch = statistics.fmean(u.finished - u.started for u in steady) if steady else float("nan")
    notes: list[str] = []

    # (a) and (b)
    stops = [t for t in results.stops if t.error is None]
    started_after: list[float] = []
    ending_after: list[float] = []
    quiet_s: list[float] = []
    quiet_own: list[float] = []
    late_start = 0
    for trial in stops:
        # Units of the config that ended after the stop, up to its resume, in start order. The
        # first is the one in flight across the stop if it held the config's lock at t1 (then
        # it was claimed before the commit, whatever its started_at) or started before t1.
        # Every other one started after the stop committed: that would be a bug.
        mine_sorted = sorted((u for u in units if u.config_id == trial.config_id), key=lambda u: u.started)
        after_stop = [u for u in mine_sorted if trial.t0 < u.finished and u.started < trial.resumed_at]
        flying = after_stop[:1] if after_stop and (trial.locked_after or after_stop[0].started <= trial.t1) else []
        further = after_stop[len(flying) :]
        late_start += sum(1 for u in flying if u.started > trial.t1)
        started_after.append(float(len(further)))
        ending_after.append(float(len(after_stop)))
        quiet_s.append(max([u.finished - trial.t0 for u in flying], default=0.0))
        # A hop starts at its claim: for the unit seen in flight before the stop (the first unit of the
        # config that started after that transaction began), from its transaction start.
        picked = next((u for u in mine_sorted if trial.claimed_at is not None and u.started >= trial.claimed_at), None)
        own = 0.0
        for u in flying:
            begin = trial.claimed_at if u is picked and trial.claimed_at is not None else u.started
            own = max(own, (u.finished - trial.t0) / (u.finished - begin))
        quiet_own.append(own)
        for u in further:
            notes.append(
                f"BUG: config {trial.config_id} started a unit on segment {u.segment} {u.started - trial.t1:.3f} s "
                f"after its stop committed (stop t0={trial.t0:.3f}, t1={trial.t1:.3f}, unit {u.started:.3f} - "
                f"{u.finished:.3f}, resumed {trial.resumed_at:.3f})"
            )
    blocked = [t for t in results.stops if t.error is not None]
    for trial in blocked:
        notes.append(f"stop of config {trial.config_id} {trial.error}")
    if late_start:
        notes.append(
            f"{late_start} unit(s) claimed before a stop committed began run_unit after it (counted as in flight)"
        )
    in_flight_count = sum(1 for q in quiet_s if q > 0)

    # (c)
    epoch_end = {(u.config_id, u.epoch): u.finished for u in units if u.epoch_end}
    visible_s = [seen - epoch_end[key] for key, seen in observer.first_seen.items() if key in epoch_end]
    missing = [c for c in monitor.checks if not c.visible]
    lag = [epoch_end[k] - at for k, at in metrics_at.items() if k in epoch_end]

    # (d) The new config's first unit, the unit before it on the same segment (the hop it waited
    # for, if that was in flight at the add), and units of other configs that started in between.
    first_unit: dict[int, UnitRow] = {}
    for u in units:  # ordered by started_at
        first_unit.setdefault(u.config_id, u)
    add_s: list[float] = []
    add_own: list[float] = []
    add_react: list[float] = []
    add_overtaken: list[float] = []
    for t in results.adds:
        if t.config_id not in first_unit:
            notes.append(f"added config {t.config_id} has no committed unit")
            continue
        first = first_unit[t.config_id]
        waited = first.started - t.t0
        before = [u for u in units if u.segment == first.segment and u.started < first.started]
        prev = before[-1] if before else None
        add_s.append(waited)
        if prev is not None and prev.finished > t.t0:
            # The hop in flight at the add: from its start to the next start on that segment
            # (the unit plus its commit and the next claim).
            add_own.append(waited / (first.started - prev.started))
            add_react.append(first.started - prev.finished)
        else:  # the segment was free at the add
            add_own.append(waited / sub_epoch)
            add_react.append(waited)
        add_overtaken.append(
            float(sum(1 for u in units if t.t1 < u.started < first.started and u.config_id != t.config_id))
        )
        if add_react[-1] > 0.05 or add_own[-1] > TARGET_SUB_EPOCHS:
            idle_for = f"idle for {t.t0 - prev.finished:.3f} s" if prev and prev.finished <= t.t0 else "busy"
            notes.append(
                f"slow add (config {t.config_id}): first unit on segment {first.segment} {waited:.3f} s after the add "
                f"({add_react[-1]:.3f} s after that segment became free); at the add that segment was {idle_for}; "
                f"backends right after the add: {'; '.join(t.segments)}"
            )

    def at_most(limit: float, statistic: int = 2) -> Callable[[list[float]], bool]:
        return lambda values: stats(values)[statistic] <= limit

    def per_sub(values: list[float]) -> list[float]:
        return [v / sub_epoch for v in values]

    rows = [
        Row("(a) stop UPDATE returns, ms", [t.update_ms for t in results.stops], ".1f",
            f"p95 <= {TARGET_STOP_P95_MS:.0f} ms", at_most(TARGET_STOP_P95_MS, 1)),
        Row("(b) units started after stop", started_after, ".0f", "max = 0", at_most(0)),
        Row("(b) units ending after stop (in flight)", ending_after, ".0f", "max <= 1", at_most(1)),
        Row("(b) stop -> config idle, s", quiet_s, ".3f", "info", None),
        Row("(b) stop -> config idle, x its unit in flight", quiet_own, ".2f",
            f"max <= {TARGET_SUB_EPOCHS:.0f} sub-epoch", at_most(TARGET_SUB_EPOCHS)),
        Row("(b) stop -> config idle, x mean unit", per_sub(quiet_s), ".2f", "info", None),
        Row("(c) epoch commit -> visible, s (upper bound)", visible_s, ".3f",
            f"max <= {TARGET_VISIBLE_S:.0f} s", at_most(TARGET_VISIBLE_S)),
        Row("(c) row missing right after commit (on_unit)", [0.0 if c.visible else 1.0 for c in monitor.checks],
            ".0f", "max = 0", at_most(0)),
        Row("(d) add_config -> first unit starts, s", add_s, ".3f", "info", None),
        Row("(d) add -> first unit, x the hop it waited for", add_own, ".2f",
            f"max <= {TARGET_SUB_EPOCHS:.0f} sub-epoch", at_most(TARGET_SUB_EPOCHS)),
        Row("(d) add -> first unit, x mean unit", per_sub(add_s), ".2f", "info", None),
        Row("(d) segment free -> its first unit starts, s", add_react, ".3f", "info", None),
        Row("(d) other configs' units started first", add_overtaken, ".0f", "info", None),
    ]  # fmt: skip
    if stops:
        slow = sorted(enumerate(stops, 1), key=lambda it: it[1].update_ms)[-3:][::-1]
        notes.append(
            "slowest stops (#trial: ms in total / of it executing the UPDATE on the server, row lock waits included): "
            + ", ".join(f"#{i}: {t.update_ms:.1f} / {t.execute_ms:.1f}" for i, t in slow)
            + f"; server-side execution p95 {stats([t.execute_ms for t in stops])[1]:.1f} ms"
        )
        lock_waited = [(i, t) for i, t in enumerate(stops, 1) if t.lock_waits]
        notes.append(
            f"stops that waited over 10 ms for a lock (log_lock_waits): {len(lock_waited)}"
            + "".join(f"; #{i}: " + " / ".join(t.lock_waits) for i, t in lock_waited)
        )
    # Hop overhead per segment: a unit's finished_at -> the next unit's started_at on that segment
    # (the unit's commit, the on_unit hook, the next claim). Big gaps are stalls of the whole hop.
    gaps: list[tuple[float, float, int]] = []  # (start of gap, seconds, segment)
    for segment in sorted({u.segment for u in steady}):
        mine = [u for u in steady if u.segment == segment]
        gaps.extend((a.finished, b.started - a.finished, segment) for a, b in zip(mine, mine[1:], strict=False))
    if gaps:
        g50, g95, gmax = stats([g for _, g, _ in gaps])
        notes.append(
            f"hop overhead (unit finished_at -> next unit's started_at on its segment): p50 {1000 * g50:.1f} ms, "
            f"p95 {1000 * g95:.1f} ms, max {1000 * gmax:.1f} ms; {sum(1 for _, g, _ in gaps if g > 0.1)} of "
            f"{len(gaps)} over 100 ms"
        )
        for i, slow_stop in enumerate(stops, 1):
            if slow_stop.update_ms <= TARGET_STOP_P95_MS:
                continue
            begin, end = slow_stop.t0 - 0.005, slow_stop.t0 + slow_stop.update_ms / 1000
            stalls = [(seg, g) for at, g, seg in gaps if g > 0.05 and at < end and at + g > begin]
            notes.append(
                f"stop #{i} took {slow_stop.update_ms:.1f} ms ({slow_stop.execute_ms:.1f} ms executing); hop gaps "
                "over 50 ms "
                "overlapping it: " + (", ".join(f"segment {seg} {1000 * g:.0f} ms" for seg, g in stalls) or "none")
            )
    plain = [u.finished - u.started for u in steady if not u.epoch_end]
    ending = [u.finished - u.started for u in steady if u.epoch_end]
    if plain and ending:
        notes.append(
            f"unit durations after warm-up: {len(plain)} mid-epoch units {statistics.fmean(plain):.3f} s mean "
            f"(max {max(plain):.3f}), {len(ending)} epoch-ending units (with validation) "
            f"{statistics.fmean(ending):.3f} s mean (max {max(ending):.3f})"
        )
    notes.append(
        f"{len(stops)} stops, {in_flight_count} of them with the config's unit still in flight at the stop; "
        f"mean time from the UPDATE's return until active_units no longer lists the config: "
        f"{statistics.fmean(t.idle_after_s for t in stops) if stops else float('nan'):.3f} s"
    )
    if lag:
        notes.append(
            f"epoch_metrics.finished_at is {statistics.median(lag):.3f} s (median; min {min(lag):.3f}, max "
            f"{max(lag):.3f}) earlier than units.finished_at of the epoch's last unit (the rest of that unit: "
            "state save and log, written after the metrics in the same transaction)"
        )
    if missing:
        notes.append(f"rows not visible right after commit: {[(c.config_id, c.epoch) for c in missing]}")
    notes.extend(f"monitor error: {e}" for e in monitor.errors)
    notes.extend(f"failed config {c}: {e}" for c, e in failed)
    notes.append(f"observer: {observer.polls} polls, {len(observer.first_seen)} epoch rows sighted")
    return rows, notes, sub_epoch


def report(args: argparse.Namespace, rows: list[Row], notes: list[str], sub_epoch: float, log: list[str]) -> bool:
    print()
    print(
        f"cerebro-db human-in-the-loop latency: {SEGMENTS} segments, {args.configs} cnn configs (filters "
        f"{args.filters}, dense {args.dense_units}, batch {args.batch_size}), {args.rows} Fashion-MNIST rows, "
        f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.2f}); "
        f"1 sub-epoch (mean unit after warm-up) = {sub_epoch:.3f} s"
    )
    print()
    body: list[list[str]] = []
    ok = True
    for row in rows:
        if row.values:
            p50, p95, top = stats(row.values)
            cells = [format(p50, row.fmt), format(p95, row.fmt), format(top, row.fmt)]
            verdict = "-" if row.check is None else ("PASS" if row.check(row.values) else "MISS")
        else:
            cells, verdict = ["-", "-", "-"], "-" if row.check is None else "NO DATA"
        ok = ok and verdict in ("-", "PASS")
        body.append([row.name, str(len(row.values)), *cells, row.target, verdict])
    print(table(["measurement", "n", "p50", "p95", "max", "target", "verdict"], body))
    print()
    for note in notes:
        print(f"- {note}")
    if log:
        print("- scheduler log (warnings and errors):")
        for line in log:
            print(f"    {line}")
    print()
    print(NOTES)
    return ok


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6000, help="Fashion-MNIST rows (train + validation)")
    parser.add_argument("--configs", type=int, default=4, help="cnn configs in the workload (lr 0.001, 0.002, ...)")
    parser.add_argument("--trials", type=int, default=100, help="stops for (a) and (b)")
    parser.add_argument("--adds", type=int, default=20, help="add_config calls for (d)")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="observer polling interval for (c)")
    parser.add_argument("--warmup-units", type=int, default=2, help="committed units per segment before measuring")
    parser.add_argument("--max-epochs", type=int, default=1000, help="high: the benchmark stops the workload itself")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--dense-units", type=int, default=32)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.configs < SEGMENTS + 1:
        parser.error(f"need --configs >= {SEGMENTS + 1}, so both segments stay busy while one config is stopped")
    if args.trials < 1 or args.adds < 0 or args.rows < 100 or args.poll_ms <= 0:
        parser.error("need --trials >= 1, --adds >= 0, --rows >= 100 and --poll-ms > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    captured = CapturedLog()
    logging.getLogger("cerebro.scheduler").addHandler(captured)
    step(f"starting a throwaway cluster with {SEGMENTS} segments")
    with temporary_cluster(segments=SEGMENTS) as cluster:
        dsn = cluster.dsn()
        results, monitor, observer = run(dsn, args)
        rows, notes, sub_epoch = analyse(dsn, results, monitor, observer)
    step("done")
    return 0 if report(args, rows, notes, sub_epoch, captured.messages) else 1


if __name__ == "__main__":
    sys.exit(main())
