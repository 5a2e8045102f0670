"""A cerebro-db workload timed on warm backends (``run_mop``), and the data it runs on.

Each ``Scheduler.run`` opens new backends, so :func:`run_mop` first runs a 1-epoch warm-up workload of the same
configs on a small dataset, then resumes the measured workload in the same run, and reads its unit log.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from cerebro_db import sample_data
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing.clusters import temporary_cluster

#: 2 x 2 x 2 x 2 = 16 configs; filters and dense units make their units differ in length.
WORKLOAD_SPACE = '{"filters": [8, 16], "dense_units": [32, 128], "lr": [0.001, 0.003], "batch_size": [64, 128]}'
SOURCE_TABLE = "bench_fashion"
WARMUP_TABLE = "bench_fashion_warmup"
PHASES = ("data_load_s", "state_load_s", "train_s", "state_save_s", "validation_s")
PHASE_NAMES = {
    "data_load_s": "data load",
    "state_load_s": "state load",
    "train_s": "train",
    "state_save_s": "state save",
    "validation_s": "validation",
}


@dataclass
class MopRun:
    """One measured cerebro-db workload, and the warm-up that preceded it in the same scheduler run."""

    segments: int
    workload_id: int
    configs: int
    epochs: int
    samples: int
    #: Server clock: from resuming the measured workload to the commit of its last unit.
    window_s: float
    #: Client clock: from resuming the measured workload until ``Scheduler.run`` returned.
    client_wall_s: float
    #: The whole ``Scheduler.run`` call: backend start, TensorFlow import, warm-up and measured units.
    cold_wall_s: float
    warmup_units: int
    #: State load of each backend's first warm-up unit (TensorFlow import + first model build).
    first_state_load_s: list[float]
    units: list[dict[str, float]]
    val_metric: float

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.window_s

    @property
    def label(self) -> str:
        return f"MOP {self.segments} seg"


def parse_workload_args(
    argv: Sequence[str] | None, description: str, *, rows: int, epochs: int, small: tuple[int, int], configs: str
) -> argparse.Namespace:
    """``--small``, ``--rows``, ``--epochs`` of a script that times a workload with :func:`run_mop`, plus the
    rest of what :func:`run_mop` and :func:`prepare` read (cnn ``configs``, seed 7, 10% validation)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help=f"{small[0]} rows and {small[1]} epochs")
    parser.add_argument("--rows", type=int, default=rows, help="Fashion-MNIST rows (train + validation)")
    parser.add_argument("--epochs", type=int, default=epochs)
    args = parser.parse_args(argv)
    if args.small:
        args.rows, args.epochs = small
    args.model, args.configs, args.seed, args.validation_fraction, args.warmup_rows = "cnn", configs, 7, 0.1, 600
    return args


def load_workload_data(dsn: str, dataset: str, segments: int, args: argparse.Namespace) -> None:
    """``args.rows`` Fashion-MNIST rows as ``dataset`` and ``args.warmup_rows`` as ``dataset``_warmup
    (for :func:`run_mop`), on ``segments`` segments."""
    with psycopg.connect(dsn) as conn:
        sample_data.load_fashion_mnist(conn, SOURCE_TABLE, limit=args.rows)
        sample_data.load_fashion_mnist(conn, WARMUP_TABLE, limit=args.warmup_rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        prepare(conn, dataset, SOURCE_TABLE, segments, args)
        prepare(conn, f"{dataset}_warmup", WARMUP_TABLE, segments, args)


def prepare(conn: psycopg.Connection[Any], name: str, table: str, segments: int, args: argparse.Namespace) -> int:
    """Prepare ``table`` as dataset ``name`` on ``segments`` segments; returns its training rows."""
    rows = conn.execute(
        "SELECT sum(train_rows)::bigint FROM prepare_dataset(%s, %s, 'label', feature_columns => '{pixels}',"
        " feature_shape => '{28,28,1}', validation_fraction => %s, num_segments => %s, seed => %s)",
        [name, table, args.validation_fraction, segments, args.seed],
    ).fetchone()
    assert rows is not None
    return int(rows[0])


def launch(
    conn: psycopg.Connection[Any], dataset: str, args: argparse.Namespace, epochs: int, name: str
) -> tuple[int, int]:
    """A new workload on ``dataset``, held stopped until the scheduler should take it; (workload, configs)."""
    row = conn.execute(
        "SELECT run_model_selection(%s, %s, %s::jsonb, max_epochs => %s, name => %s, seed => %s)",
        [dataset, args.model, args.configs, epochs, name, args.seed],
    ).fetchone()
    assert row is not None
    workload_id = int(row[0])
    conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload_id])
    count = conn.execute("SELECT count(*) FROM configs WHERE workload_id = %s", [workload_id]).fetchone()
    assert count is not None
    return workload_id, int(count[0])


class _Chain:
    """Resumes the measured workload from ``on_unit`` as soon as the warm-up workload is done.

    Both run in one ``Scheduler.run``, so the measured units run on the warm backends
    (every ``Scheduler.run`` opens new connections, hence new backends).
    """

    def __init__(self, dsn: str, warmup: int, measured: int) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, application_name="bench chain")
        self.warmup = warmup
        self.measured = measured
        self.lock = threading.Lock()
        self.resumed_at: float | None = None  # server clock
        self.resumed_perf: float | None = None  # client perf_counter

    def resume(self) -> None:
        with self.lock:
            if self.resumed_at is not None:
                return
            row = self.conn.execute(
                "UPDATE workloads SET status = 'running' WHERE workload_id = %s"
                " RETURNING extract(epoch FROM clock_timestamp())::float8",
                [self.measured],
            ).fetchone()
            assert row is not None
            self.resumed_perf = time.perf_counter()
            self.resumed_at = float(row[0])

    def on_unit(self, result: dict[str, Any]) -> None:
        if self.resumed_at is not None:
            return
        with self.lock:
            row = self.conn.execute("SELECT status FROM workloads WHERE workload_id = %s", [self.warmup]).fetchone()
        if row is not None and row[0] == "completed":
            self.resume()

    def close(self) -> None:
        self.conn.close()


_UNITS_SQL = """
SELECT u.config_id, u.epoch, u.segment, u.backend_pid, u.rows,
       extract(epoch FROM u.started_at)::float8 AS started, extract(epoch FROM u.finished_at)::float8 AS finished,
       u.data_load_s, u.state_load_s, u.train_s, u.state_save_s, coalesce(u.validation_s, 0) AS validation_s
FROM units u JOIN configs c USING (config_id)
WHERE c.workload_id = %s
ORDER BY u.started_at
"""


def unit_log(conn: psycopg.Connection[Any], workload_id: int) -> list[dict[str, float]]:
    columns = ("config_id", "epoch", "segment", "backend_pid", "rows", "started", "finished", *PHASES)
    return [
        dict(zip(columns, map(float, row), strict=True)) for row in conn.execute(_UNITS_SQL, [workload_id]).fetchall()
    ]


def check_completed(conn: psycopg.Connection[Any], workload_id: int, what: str) -> None:
    bad = conn.execute(
        "SELECT config_id, status, epochs_done, max_epochs, error FROM configs"
        " WHERE workload_id = %s AND status <> 'completed' ORDER BY config_id",
        [workload_id],
    ).fetchall()
    if bad:
        details = "; ".join(f"config {c}: {s}, {d}/{m} epochs, {e or 'no error'}" for c, s, d, m, e in bad)
        raise RuntimeError(f"{what} (workload {workload_id}) did not complete: {details}")


def run_mop(
    dsn: str, segments: int, dataset: str, warmup_dataset: str, args: argparse.Namespace, passfile: Path | None = None
) -> MopRun:
    """Warm every backend with a 1-epoch workload, then time the measured workload on the warm backends.

    ``passfile``: the segment servers' passwords, when the segments are servers of their own.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        warmup, _ = launch(conn, warmup_dataset, args, 1, f"bench warm-up {segments} seg")
        measured, configs = launch(conn, dataset, args, args.epochs, f"bench {segments} seg")
        conn.execute("UPDATE workloads SET status = 'running' WHERE workload_id = %s", [warmup])

        chain = _Chain(dsn, warmup, measured)
        try:
            cold_start = time.perf_counter()
            Scheduler(dsn, on_unit=chain.on_unit, idle_wait=0.05, passfile=passfile).run(until_idle=True)
            finished = time.perf_counter()
        finally:
            chain.close()
        check_completed(conn, warmup, "the warm-up workload")
        if chain.resumed_at is None or chain.resumed_perf is None:
            raise RuntimeError("the measured workload was never resumed")
        check_completed(conn, measured, "the measured workload")

        units = unit_log(conn, measured)
        warm_units = unit_log(conn, warmup)
        first_per_backend: dict[float, float] = {}
        for unit in warm_units:  # ordered by started_at
            first_per_backend.setdefault(unit["backend_pid"], unit["state_load_s"])
        val = conn.execute(
            "SELECT avg(m.val_metric) FROM epoch_metrics m JOIN configs c USING (config_id)"
            " WHERE c.workload_id = %s AND m.epoch = %s",
            [measured, args.epochs],
        ).fetchone()
    assert val is not None
    return MopRun(
        segments=segments,
        workload_id=measured,
        configs=configs,
        epochs=args.epochs,
        samples=int(sum(u["rows"] for u in units)),
        window_s=max(u["finished"] for u in units) - chain.resumed_at,
        client_wall_s=finished - chain.resumed_perf,
        cold_wall_s=finished - cold_start,
        warmup_units=len(warm_units),
        first_state_load_s=list(first_per_backend.values()),
        units=units,
        val_metric=float(val[0]),
    )


def breakdown(run: MopRun) -> dict[str, tuple[float, float]]:
    """Per phase: (mean seconds per unit, share of all unit time)."""
    units = run.units
    unit_time = sum(u["finished"] - u["started"] for u in units)
    totals = {p: sum(u[p] for u in units) for p in PHASES}
    totals["other_s"] = unit_time - sum(totals.values())
    return {p: (total / len(units), total / unit_time) for p, total in totals.items()}


def measure(segments: int, args: argparse.Namespace) -> MopRun:
    """A fresh cluster of ``segments`` segments; ``args.rows`` Fashion-MNIST rows; the workload timed on warm backends.

    ``args``: what ``mop_vs_keras.run_mop`` and ``prepare`` read (see :func:`parse_args`).
    """
    with temporary_cluster(segments=segments) as cluster:
        load_workload_data(cluster.dsn(), "workload", segments, args)
        return run_mop(cluster.dsn(), segments, "workload", "workload_warmup", args)
