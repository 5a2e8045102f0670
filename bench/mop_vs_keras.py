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
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psycopg
from benchlib import step
from benchlib.keras_run import KerasRun, export_keras_job, run_keras
from benchlib.mop import PHASE_NAMES, PHASES, SOURCE_TABLE, WARMUP_TABLE, MopRun, breakdown, prepare, run_mop

from cerebro_db import sample_data
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table as table

DEFAULT_SPACE = '{"lr": [0.001, 0.003], "batch_size": [64]}'
TARGET_MOP1_VS_KERAS = 0.9
TARGET_MOP2_VS_MOP1 = 1.7

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


# --------------------------------------------------------------------------- report


def verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


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
    args = parser.parse_args(argv)
    if not isinstance(json.loads(args.configs), dict):
        parser.error("--configs must be a JSON object, e.g. " + DEFAULT_SPACE)
    if args.epochs < 1 or args.rows < 10:
        parser.error("need --epochs >= 1 and --rows >= 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

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
