"""MOP inside PostgreSQL vs plain Keras outside it: the same configs and data, in one run.

Trains the same grid of configs on the same Fashion-MNIST rows

* by cerebro-db (model hopper parallelism) on 1 segment and on 2 segments, and
* by plain Keras in a fresh subprocess, one config after the other (one TensorFlow
  thread, as in a segment; and, for information, with TensorFlow's default threading),

then prints samples/s, the ratios against the targets (1-segment MOP >= 0.9x Keras,
2 segments >= 1.7x 1 segment), and where a unit's time goes (data load, state load,
train, state save, validation)::

    .venv/bin/python bench/mop_vs_keras.py                      # 20000 rows, 2 cnn configs, 2 epochs
    .venv/bin/python bench/mop_vs_keras.py --rows 2000 --epochs 1 --no-keras-all-cores   # smoke test

It starts its own throwaway cluster (2 segments) and removes it afterwards; run it on
an otherwise idle machine with at least 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from cerebro_db import sample_data
from cerebro_db.cluster import server_environment
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table as table
from cerebro_plpy import packing

SOURCE_TABLE = "bench_fashion"
WARMUP_TABLE = "bench_fashion_warmup"
DEFAULT_SPACE = '{"lr": [0.001, 0.003], "batch_size": [64]}'
TARGET_MOP1_VS_KERAS = 0.9
TARGET_MOP2_VS_MOP1 = 1.7
PHASES = ("data_load_s", "state_load_s", "train_s", "state_save_s", "validation_s")
PHASE_NAMES = {
    "data_load_s": "data load",
    "state_load_s": "state load",
    "train_s": "train",
    "state_save_s": "state save",
    "validation_s": "validation",
}

NOTES = """\
Notes: samples/s = training samples (train rows x configs x epochs) / wall s. Validation (at every epoch end,
  on all validation rows) counts in wall s but not in samples.
  MOP wall s: server clock, from resuming the measured workload to the commit of its last unit (tables units
  and workloads). Each Scheduler.run opens new backends, so it first runs a 1-epoch warm-up workload of the
  same configs on a small separate dataset, in the same run: every backend has imported TensorFlow and built
  and traced the model before the clock starts, as under a long-running `cerebro-db scheduler`. Wall s still
  includes claiming units, loading each shard from dataset_buffers on first use, state (de)serialization per
  hop, validation and commits. 'segment busy' = unit time / (wall s x segments).
  Keras wall s: the loop over configs in a fresh subprocess (the segments' thread policy and environment, the
  same ModelSpec params and seeds, the rows of the 1-segment dataset in its training order), after TensorFlow
  import and a warm-up fit of a throwaway model; it includes model build, fit (with tracing) and validation,
  and excludes reading the data from the database. Known asymmetry: a segment backend reuses one compiled,
  traced model per architecture across configs; plain Keras builds and traces a new model per config."""


# --------------------------------------------------------------------------- results


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


@dataclass
class KerasRun:
    """Plain Keras in a subprocess: one config after the other."""

    threads: str  # 'single' | 'default'
    configs: int
    epochs: int
    samples: int
    wall_s: float
    import_s: float
    warmup_s: float
    per_config: list[dict[str, float]] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_s

    @property
    def label(self) -> str:
        return "Keras, 1 thread" if self.threads == "single" else "Keras, all cores"

    @property
    def val_metric(self) -> float:
        return statistics.fmean(c["val_metric"] for c in self.per_config)


# --------------------------------------------------------------------------- cerebro-db side


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


# --------------------------------------------------------------------------- plain Keras side


def read_split(
    conn: psycopg.Connection[Any], dataset_id: int, split: str, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """All buffers of one split in buffer order (the order a 1-segment unit trains in)."""
    rows = conn.execute(
        "SELECT x, y FROM dataset_buffers WHERE dataset_id = %s AND split = %s ORDER BY buffer_id",
        [dataset_id, split],
    ).fetchall()
    x = np.concatenate([packing.from_bytes(r[0], shape) for r in rows])
    y = np.concatenate([packing.from_bytes(r[1], ()) for r in rows])
    return x, y


def export_keras_job(
    dsn: str, dataset: str, workload_id: int, args: argparse.Namespace, workdir: Path
) -> tuple[Path, float]:
    """Write the 1-segment dataset's splits and the workload's configs for the Keras subprocess."""
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        meta = conn.execute(
            "SELECT dataset_id, feature_shape, num_classes FROM datasets WHERE name = %s", [dataset]
        ).fetchone()
        assert meta is not None
        dataset_id, shape, num_classes = int(meta[0]), tuple(meta[1]), int(meta[2])
        train = read_split(conn, dataset_id, "train", shape)
        validation = read_split(conn, dataset_id, "validation", shape)
        configs = [
            {"params": params, "seed": seed}
            for params, seed in conn.execute(
                "SELECT params, seed FROM configs WHERE workload_id = %s ORDER BY config_id", [workload_id]
            ).fetchall()
        ]
    data = workdir / "data.npz"
    np.savez(data, x=train[0], y=train[1], val_x=validation[0], val_y=validation[1])
    job = workdir / "job.json"
    job.write_text(
        json.dumps(
            {
                "data": str(data),
                "model": args.model,
                "configs": configs,
                "input_shape": list(shape),
                "num_classes": num_classes,
                "epochs": args.epochs,
            }
        )
    )
    return job, time.perf_counter() - started


def run_keras(job: Path, threads: str, samples: int) -> KerasRun:
    """Plain Keras in a fresh Python process, so its TensorFlow thread settings take effect."""
    env = server_environment()  # what the segments' postmaster gets: OMP_NUM_THREADS=1, quiet TF
    if threads == "default":
        env.pop("OMP_NUM_THREADS", None)
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--keras-child", str(job), "--threads", threads],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the Keras subprocess ({threads} threads) failed:\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return KerasRun(
        threads=threads,
        configs=len(report["per_config"]),
        epochs=report["epochs"],
        samples=samples,
        wall_s=report["wall_s"],
        import_s=report["import_s"],
        warmup_s=report["warmup_s"],
        per_config=report["per_config"],
    )


def _validation_timer(keras: Any, marks: list[float]) -> Any:
    """A callback appending the time at the start and at the end of each validation pass to ``marks``."""
    return keras.callbacks.LambdaCallback(
        on_test_begin=lambda logs=None: marks.append(time.perf_counter()),
        on_test_end=lambda logs=None: marks.append(time.perf_counter()),
    )


def keras_child(job_path: str, threads: str) -> None:
    """The subprocess: train each config with ``model.fit``, validating at each epoch end; print JSON."""
    from cerebro_plpy import training, unit

    job = json.loads(Path(job_path).read_text())
    started = time.perf_counter()
    gd: dict[str, Any] = {}
    if threads == "single":
        training.tensorflow(gd)  # one intra-op and one inter-op thread, as in a segment
    else:
        import tensorflow as tf

        gd[training.GD_TENSORFLOW] = tf  # TensorFlow's default threading: all cores
    import keras

    import_s = time.perf_counter() - started

    data = np.load(job["data"])
    x, y, val_x, val_y = data["x"], data["y"], data["val_x"], data["val_y"]
    shape, classes, epochs = tuple(job["input_shape"]), int(job["num_classes"]), int(job["epochs"])
    specs = [training.ModelSpec(job["model"], c["params"], shape, classes, int(c["seed"])) for c in job["configs"]]

    # Warm the process like a segment backend: TensorFlow runtime and kernels, on a throwaway model.
    started = time.perf_counter()
    first = specs[0]
    throwaway = training.build_compiled(gd, training.ModelSpec(first.model, first.params, shape, classes, 0))
    few = min(len(y), 4 * int(first.params["batch_size"]))
    throwaway.fit(training.make_dataset(gd, x[:few], y[:few], first.params["batch_size"]), epochs=1, verbose=0)
    throwaway.evaluate(training.make_dataset(gd, val_x, val_y, unit.EVALUATION_BATCH), verbose=0)
    del throwaway
    warmup_s = time.perf_counter() - started

    per_config = []
    wall_started = time.perf_counter()
    for spec in specs:
        started = time.perf_counter()
        model = training.build_compiled(gd, spec)
        built = time.perf_counter()
        marks: list[float] = []
        timer = _validation_timer(keras, marks)
        history = model.fit(
            training.make_dataset(gd, x, y, spec.params["batch_size"]),
            validation_data=training.make_dataset(gd, val_x, val_y, unit.EVALUATION_BATCH),
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=[timer],
        )
        fitted = time.perf_counter()
        validation_s = sum(end - begin for begin, end in zip(marks[0::2], marks[1::2], strict=True))
        per_config.append(
            {
                "build_s": built - started,
                "train_s": fitted - built - validation_s,
                "validation_s": validation_s,
                "val_metric": float(history.history[f"val_{training.METRIC}"][-1]),
            }
        )
    wall_s = time.perf_counter() - wall_started
    report = {"epochs": epochs, "wall_s": wall_s, "import_s": import_s, "warmup_s": warmup_s}
    print(json.dumps({**report, "per_config": per_config}))


# --------------------------------------------------------------------------- report


def verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


def breakdown(run: MopRun) -> dict[str, tuple[float, float]]:
    """Per phase: (mean seconds per unit, share of all unit time)."""
    units = run.units
    unit_time = sum(u["finished"] - u["started"] for u in units)
    totals = {p: sum(u[p] for u in units) for p in PHASES}
    totals["other_s"] = unit_time - sum(totals.values())
    return {p: (total / len(units), total / unit_time) for p, total in totals.items()}


def report(args: argparse.Namespace, train_rows: int, val_rows: int, mop: list[MopRun], keras: list[KerasRun]) -> bool:
    """Print the tables; whether both ratios meet their targets."""
    base = keras[0]
    print()
    print(
        f"cerebro-db MOP vs plain Keras: model {args.model}, search space {args.configs}, {args.epochs} epoch(s), "
        f"{train_rows} training + {val_rows} validation rows (Fashion-MNIST), {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print()
    rows: list[list[str]] = []
    runs: list[KerasRun | MopRun] = [*keras, *mop]
    for run in runs:
        segments = str(run.segments) if isinstance(run, MopRun) else "-"
        wall = run.window_s if isinstance(run, MopRun) else run.wall_s
        rows.append(
            [
                run.label,
                segments,
                f"{run.configs} x {run.epochs}",
                str(run.samples),
                f"{wall:.2f}",
                f"{run.samples_per_s:.0f}",
                f"{run.samples_per_s / base.samples_per_s:.2f}",
                f"{run.val_metric:.4f}",
            ]
        )
    headers = ["system", "segments", "configs x epochs", "train samples", "wall s", "samples/s", "ratio", "val acc"]
    print(table(headers, rows))
    one, two = mop
    r1, r2 = one.samples_per_s / base.samples_per_s, two.samples_per_s / one.samples_per_s
    print()
    checks = (
        ("MOP 1 seg / Keras, 1 thread", r1, TARGET_MOP1_VS_KERAS),
        ("MOP 2 seg / MOP 1 seg", r2, TARGET_MOP2_VS_MOP1),
    )
    for name, value, target in checks:
        print(f"{name:<29} {value:.2f}  (target >= {target})  {verdict(value, target)}")
    if len(keras) > 1:
        r3 = two.samples_per_s / keras[1].samples_per_s
        print(f"{'MOP 2 seg / Keras, all cores':<29} {r3:.2f}  (information only)")

    print()
    print("Unit time breakdown (cerebro-db units table; mean seconds per unit, share of unit time):")
    parts = [breakdown(run) for run in mop]
    phase_rows = [
        [PHASE_NAMES.get(p, "other (in run_unit)")]
        + [cell for part in parts for cell in (f"{part[p][0]:.3f}", f"{100 * part[p][1]:.1f}%")]
        for p in (*PHASES, "other_s")
    ]
    unit_seconds = [[u["finished"] - u["started"] for u in run.units] for run in mop]
    phase_rows.append(["units"] + [c for run in mop for c in (str(len(run.units)), "")])
    phase_rows.append(["mean unit s"] + [c for times in unit_seconds for c in (f"{statistics.fmean(times):.3f}", "")])
    phase_rows.append(
        ["segment busy"]
        + [
            c
            for run, times in zip(mop, unit_seconds, strict=True)
            for c in (f"{100 * sum(times) / (run.window_s * run.segments):.1f}%", "")
        ]
    )
    headers = ["phase"] + [h for run in mop for h in (f"{run.label} s", "share")]
    print(table(headers, phase_rows))

    print()
    print("Keras time per config (build / train incl. tracing / validation at each epoch end), seconds:")
    keras_rows = [
        [
            run.label,
            *(f"{statistics.fmean(c[k] for c in run.per_config):.3f}" for k in ("build_s", "train_s", "validation_s")),
            f"{run.import_s:.2f}",
            f"{run.warmup_s:.2f}",
        ]
        for run in keras
    ]
    print(table(["system", "build", "train", "validation", "TF import (untimed)", "warm-up (untimed)"], keras_rows))

    print()
    print("Cold start (not in the samples/s above):")
    for run in mop:
        loads = ", ".join(f"{s:.2f}" for s in run.first_state_load_s)
        print(
            f"  {run.label}: Scheduler.run took {run.cold_wall_s:.2f} s end to end ({run.warmup_units} warm-up units, "
            f"then the measured workload: {run.client_wall_s:.2f} s on the client clock); state load of each "
            f"backend's first unit (TensorFlow import + first model build): {loads} s"
        )
    print()
    print(NOTES)
    return all(value >= target for _, value, target in checks)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000, help="Fashion-MNIST rows (train + validation)")
    parser.add_argument("--configs", default=DEFAULT_SPACE, help="grid search space (jsonb); one config per point")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--seed", type=int, default=7, help="seeds the split, the shuffle and the configs")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--warmup-rows", type=int, default=600, help="rows of the warm-up dataset")
    parser.add_argument(
        "--keras-all-cores",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run Keras with TensorFlow's default threading (information only)",
    )
    parser.add_argument("--keras-child", help=argparse.SUPPRESS)
    parser.add_argument("--threads", choices=("single", "default"), default="single", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.keras_child is None:
        space = json.loads(args.configs)
        if not isinstance(space, dict):
            parser.error("--configs must be a JSON object, e.g. " + DEFAULT_SPACE)
        if args.epochs < 1 or args.rows < 10:
            parser.error("need --epochs >= 1 and --rows >= 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keras_child is not None:
        keras_child(args.keras_child, args.threads)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    def step(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    step("starting a throwaway cluster with 2 segments")
    with temporary_cluster(segments=2) as cluster, tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        dsn = cluster.dsn()
        with psycopg.connect(dsn) as conn:
            step(f"loading {args.rows} Fashion-MNIST rows (+ {args.warmup_rows} for warm-up)")
            sample_data.load_fashion_mnist(conn, SOURCE_TABLE, limit=args.rows)
            sample_data.load_fashion_mnist(conn, WARMUP_TABLE, limit=args.warmup_rows)
        with psycopg.connect(dsn, autocommit=True) as conn:
            step("preparing the datasets (same table and seed on 1 and on 2 segments)")
            train_rows = {s: prepare(conn, f"bench_{s}seg", SOURCE_TABLE, s, args) for s in (1, 2)}
            for s in (1, 2):
                prepare(conn, f"bench_warmup_{s}seg", WARMUP_TABLE, s, args)
            if train_rows[1] != train_rows[2]:
                raise RuntimeError(f"the 1- and 2-segment datasets differ: {train_rows}")
            val = conn.execute("SELECT validation_rows FROM datasets WHERE name = 'bench_1seg'").fetchone()
            assert val is not None

        mop = []
        for segments in (1, 2):
            step(f"cerebro-db on {segments} segment(s)")
            mop.append(run_mop(dsn, segments, f"bench_{segments}seg", f"bench_warmup_{segments}seg", args))
        expected = train_rows[1] * mop[0].configs * args.epochs
        if any(run.samples != expected for run in mop):
            raise RuntimeError(f"expected {expected} training samples, units logged {[r.samples for r in mop]}")

        step("exporting the 1-segment dataset and the configs for plain Keras")
        job, export_s = export_keras_job(dsn, "bench_1seg", mop[0].workload_id, args, Path(workdir))
        keras = []
        for threads in ("single", "default") if args.keras_all_cores else ("single",):
            step(f"plain Keras ({threads} threads) in a subprocess")
            keras.append(run_keras(job, threads, expected))
    step(f"done (reading the Keras data from the database took {export_s:.2f} s, not timed)")
    return 0 if report(args, train_rows[1], int(val[0]), mop, keras) else 1


if __name__ == "__main__":
    sys.exit(main())
