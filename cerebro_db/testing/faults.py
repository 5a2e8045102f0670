"""Fault injection into a running cerebro-db, and the checks that a workload came through intact.

Used by the reliability tests and ``bench/faults.py``. A scenario runs on a cluster that
``cerebro-db up`` started (server + background scheduler, ``CEREBRO_HOME`` = ``home``): it
launches a workload, waits until a unit of the chosen epoch is in flight, injects the fault,
brings the system back the way an operator would (``cerebro-db up``), waits for the workload
to finish, and then checks it:

every config completed, no epoch lost, the MOP invariants hold over the unit log, nothing is
left running with nothing to run, the units rolled back by the fault ran again, and the final
states are bit-identical to an undisturbed replay (:mod:`cerebro_db.testing.verify`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from cerebro_db.cluster import LocalCluster
from cerebro_db.testing.verify import epochs_lost, final_state, mop_violations, replay, states_equal, stranded

Connection = psycopg.Connection[Any]

#: A registered model script (``register_model``) whose unit ends its own server process in
#: its first training step when its config's ``kill`` param is 1, as the OOM killer would.
#: Building it (registration, the memory guard) never trains, so only its units die.
CRASHING_SCRIPT = """
import os
import signal

import keras

SAMPLE_INPUT_SHAPE = (28, 28, 1)


class KillOnTrain(keras.layers.Layer):
    def __init__(self, kill=False, **kwargs):
        super().__init__(**kwargs)
        self.kill = kill

    def call(self, x, training=None):
        if training and self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        return x


def create_model(params):
    model = keras.Sequential([
        keras.Input(params["input_shape"]),
        keras.layers.Flatten(),
        KillOnTrain(bool(params.get("kill", 0))),
        keras.layers.Dense(params["num_classes"], activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model
"""

#: Small enough that a scenario takes seconds; two configs keep both segments busy.
SEARCH_SPACE = {"lr": [0.003, 0.01], "filters": 4, "dense_units": 16}
EPOCHS = 2
POLL = 0.05
DEADLINE = 300.0


@dataclass(frozen=True)
class UnitInFlight:
    config_id: int
    epoch: int
    segment: int
    pid: int


@dataclass
class Outcome:
    fault: str
    point: str
    completed: bool
    epochs_lost: int
    units_in_flight: int
    units_rerun: int
    invariant_violations: list[str]
    weights_identical: bool
    recovery_seconds: float

    @property
    def ok(self) -> bool:
        return (
            self.completed
            and self.epochs_lost == 0
            and not self.invariant_violations
            and self.weights_identical
            and self.units_rerun >= 1
        )


def cli(home: Path, *args: str, timeout: float = DEADLINE) -> str:
    """Run ``cerebro-db`` as an operator would, against the cluster in ``home``."""
    result = subprocess.run(
        [sys.executable, "-m", "cerebro_db.cli", *args],
        env={**os.environ, "CEREBRO_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cerebro-db {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def connect(dsn: str) -> Connection:
    """A connection, waiting out a server that is restarting (crash recovery)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL)


def poll(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while not (found := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(POLL)
    return found


def wait_for_unit(conn: Connection, workload_id: int, epoch: int) -> list[UnitInFlight]:
    """The workload's units in flight, as soon as one of ``epoch`` is among them."""

    def in_flight() -> list[UnitInFlight]:
        units = [
            UnitInFlight(*row)
            for row in conn.execute(
                "SELECT a.config_id, c.epochs_done + 1, a.segment, a.pid FROM active_units a"
                " JOIN configs c USING (config_id) WHERE a.workload_id = %s",
                [workload_id],
            )
        ]
        return units if any(unit.epoch == epoch for unit in units) else []

    found: list[UnitInFlight] = poll(f"a unit of epoch {epoch} in flight", in_flight)
    return found


def _scheduler_pid(home: Path) -> int:
    return int((home / "scheduler.pid").read_text())


def kill_segment_backend(home: Path, units: list[UnitInFlight]) -> None:
    """SIGKILL one training backend: the postmaster resets every connection and recovers."""
    os.kill(units[0].pid, signal.SIGKILL)


def kill_scheduler(home: Path, units: list[UnitInFlight]) -> None:
    """SIGKILL the scheduler process, then start a new one with ``cerebro-db up``."""
    os.kill(_scheduler_pid(home), signal.SIGKILL)
    cli(home, "up")


def shut_down_immediately(home: Path, units: list[UnitInFlight]) -> None:
    """``pg_ctl stop -m immediate`` (no checkpoint, like a power cut for the server), then ``cerebro-db up``."""
    LocalCluster(home).stop("immediate")
    cli(home, "up")


FAULTS: dict[str, Callable[[Path, list[UnitInFlight]], None]] = {
    "segment backend kill -9": kill_segment_backend,
    "scheduler kill -9": kill_scheduler,
    "server immediate shutdown": shut_down_immediately,
}
#: Injection points: a unit of this epoch is in flight.
POINTS = {"first epoch": 1, "last epoch": EPOCHS}


def run_scenario(home: Path, dataset: str, fault: str, point: str, *, seed: int = 5) -> Outcome:
    """Launch a workload on ``dataset``, inject ``fault`` at ``point``, and check the result."""
    dsn = LocalCluster(home).config.dsn()
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT run_model_selection(%s, 'cnn', %s, max_epochs => %s, seed => %s)",
            [dataset, json.dumps(SEARCH_SPACE), EPOCHS, seed],
        ).fetchone()
        assert row is not None
        workload_id: int = row[0]
        units = wait_for_unit(conn, workload_id, POINTS[point])
        injected_at = _server_now(conn)
    tick = time.monotonic()
    FAULTS[fault](home, units)
    _wait_until_finished(dsn, workload_id)
    recovery = time.monotonic() - tick
    with connect(dsn) as conn:
        return Outcome(
            fault=fault,
            point=point,
            completed=_finished(conn, workload_id) == "completed",
            epochs_lost=epochs_lost(conn, workload_id),
            units_in_flight=len(units),
            units_rerun=sum(_ran_again(conn, unit, injected_at) for unit in units),
            invariant_violations=mop_violations(conn, workload_id) + stranded(conn),
            weights_identical=all(
                states_equal(final_state(conn, config), replay(conn, config)) for config in _configs(conn, workload_id)
            ),
            recovery_seconds=recovery,
        )


def _wait_until_finished(dsn: str, workload_id: int) -> None:
    """Poll, reconnecting while the server restarts (a connection may die in a crash reset)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while time.monotonic() < deadline:
                    if _finished(conn, workload_id):
                        return
                    time.sleep(POLL)
        except psycopg.OperationalError:
            time.sleep(POLL)
    raise TimeoutError(f"gave up waiting for workload {workload_id} to finish")


def _server_now(conn: Connection) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


def _finished(conn: Connection, workload_id: int) -> str | None:
    """The workload's final status, once it is finished (the SQL workload_finished decides)."""
    row = conn.execute(
        "SELECT status FROM workloads WHERE workload_id = %s AND workload_finished(workload_id)", [workload_id]
    ).fetchone()
    return None if row is None else str(row[0])


def _configs(conn: Connection, workload_id: int) -> list[int]:
    rows = conn.execute("SELECT config_id FROM configs WHERE workload_id = %s ORDER BY 1", [workload_id])
    return [row[0] for row in rows]


def _ran_again(conn: Connection, unit: UnitInFlight, injected_at: datetime) -> bool:
    """The unit that was in flight at the fault committed later (it was rolled back, then rerun)."""
    row = conn.execute(
        "SELECT started_at > %s FROM units WHERE config_id = %s AND epoch = %s AND segment = %s",
        [injected_at, unit.config_id, unit.epoch, unit.segment],
    ).fetchone()
    return bool(row and row[0])
