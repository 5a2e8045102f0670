"""Four ways to train the same configs on the same data and the same 2 cores, side by side in one run.

The same grid of configs (default: 4 ``cnn`` configs, lr x batch size) on the same Fashion-MNIST rows
(default 12000 training + 2000 validation rows), with every system using the identical model code
(``cerebro_plpy.training``: build_compiled / cached_model, train_pass, capture / restore, evaluate):

(a) **MOP**: cerebro-db, model hopper parallelism, asynchronous, 2 segments (a throwaway cluster,
    ``prepare_dataset``, ``run_model_selection``, ``Scheduler(...).run(until_idle=True)``);
(b) **model averaging**: bulk-synchronous data parallelism as MADlib does it: each epoch each of 2
    worker processes trains a copy of the model on its half of the data (the same shards as MOP's
    segments), then the weights (and optimizer slots) are averaged; the configs one after the other;
(c) **task parallelism**: 2 worker processes, each holding a full copy of the data, each training
    whole configs (the next free worker takes the next config);
(d) **sequential Keras**: one process, one config after the other.

Every worker is a fresh process (multiprocessing, 'spawn') with one TensorFlow thread, as a segment
backend. It prints wall time, samples/s, training data held, validation accuracy per epoch per config
and the ratios against sequential Keras, and writes CSV + PNG into bench/results/::

    .venv/bin/python bench/approaches.py            # 12000 + 2000 rows, 4 cnn configs, 3 epochs
    .venv/bin/python bench/approaches.py --small    # 3000 + 500 rows, 2 epochs: about a minute
"""

from __future__ import annotations

import argparse
import csv
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
from benchlib import RESULTS_DIR, step
from benchlib.baselines import (
    Run,
    Runnable,
    average_configs,
    export,
    mop_history,
    run_baseline,
    whole_configs,
)
from benchlib.mop import PHASE_NAMES, SOURCE_TABLE, WARMUP_TABLE, MopRun, breakdown, prepare, run_mop
from benchlib.plots import plot_accuracy
from benchlib.workers import WARMUP_ROWS, WORKERS

from cerebro_db import sample_data
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table as table

DEFAULT_SPACE = '{"lr": [0.001, 0.003], "batch_size": [64, 128]}'

APPROACHES = {
    "mop": "MOP (cerebro-db, 2 seg, async)",
    "averaging": "model averaging (BSP, 2 workers)",
    "task": "task parallelism (2 workers, 2 copies)",
    "sequential": "sequential Keras (1 process)",
}

NOTES = """\
Notes: wall s = from the start of training to the end of the last config's last validation, every backend and
  worker warm: TensorFlow imported, data in memory, each config's architecture built and traced on a few rows
  (MOP: a 1-epoch warm-up workload on a small dataset in the same Scheduler.run, server clock; the others: the
  same warm-up in each worker process before the clock starts). samples/s = train rows x configs x epochs /
  wall s; validation (all validation rows, every epoch end) counts in wall s, not in samples.
  data held = bytes of training data (float32 features + labels) the approach keeps: MOP and model averaging
  one copy split over the 2 segments/workers (MOP's is the database's dataset_buffers; each segment backend also
  caches its own shard in memory), task parallelism a full copy per worker, sequential one copy.
  Model averaging: the averaged weights and optimizer slots (rows-weighted mean) start each epoch on both
  workers; its validation runs on both workers' halves of the validation rows and is combined.
  All approaches train each epoch's rows in the prepared dataset's shuffled order (MOP: shard by shard,
  in a random segment order per epoch), with the same seeds, so sequential Keras is the SGD reference.
  runnable = the machine's mean runnable tasks while the approach trained (/proc/stat procs_running; for MOP over
  the whole Scheduler.run): 2 workers keep about 2 busy, sequential 1; more means other work shared the cores."""


# --------------------------------------------------------------------------- report


def report(args: argparse.Namespace, train_rows: int, val_rows: int, runs: list[Run], mop: MopRun) -> None:
    base = next(r for r in runs if r.key == "sequential")
    print()
    print(
        f"Approaches on the same configs, rows and {os.cpu_count()} cores: model {args.model}, search space "
        f"{args.configs}, {args.epochs} epoch(s), {train_rows} training + {val_rows} validation rows "
        f"(Fashion-MNIST), Python {platform.python_version()}"
    )
    print()
    rows = [
        [
            APPROACHES[r.key],
            f"{r.wall_s:.1f}",
            f"{r.samples_per_s:.0f}",
            f"{r.samples_per_s / base.samples_per_s:.2f}",
            str(r.copies),
            f"{r.data_bytes / 2**20:.1f}",
            f"{r.data_bytes / base.data_bytes:.2f}",
            f"{r.final_acc:.4f}",
            f"{r.final_acc - base.final_acc:+.4f}",
            f"{r.runnable:.2f}",
        ]
        for r in runs
    ]
    headers = [
        "approach",
        "wall s",
        "samples/s",
        "speed vs seq",
        "data copies",
        "data held MiB",
        "data vs seq",
        "final val acc",
        "acc - seq",
        "runnable",
    ]
    print(table(headers, rows))
    parts = breakdown(mop)
    unit_s = [u["finished"] - u["started"] for u in mop.units]
    print()
    print(
        f"MOP units: {len(unit_s)}, mean {statistics.fmean(unit_s):.3f} s, segments busy "
        f"{100 * sum(unit_s) / (mop.window_s * mop.segments):.1f}% of the wall time; share of unit time: "
        + ", ".join(f"{PHASE_NAMES.get(p, 'other')} {100 * share:.1f}%" for p, (_, share) in parts.items())
    )
    print()
    print("Validation accuracy per epoch per config:")
    labels = list(base.history)
    acc_rows = []
    for config in labels:
        for epoch in range(1, args.epochs + 1):
            cells = [config, str(epoch)]
            for run in runs:
                points = {e: acc for e, _, acc in run.history.get(config, [])}
                cells.append(f"{points[epoch]:.4f}" if epoch in points else "")
            acc_rows.append(cells)
    print(table(["config", "epoch", *(r.key for r in runs)], acc_rows))
    print()
    print(NOTES)


def write_results(args: argparse.Namespace, runs: list[Run], out: Path) -> tuple[Path, Path, Path | None]:
    out.mkdir(parents=True, exist_ok=True)
    suffix = "_small" if args.small else ""
    summary, curves = out / f"approaches{suffix}.csv", out / f"approaches_epochs{suffix}.csv"
    base = next(r for r in runs if r.key == "sequential")
    with summary.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["approach", "wall_s", "samples", "samples_per_s", "speed_vs_sequential", "data_copies"]
            + ["data_bytes", "final_val_acc", "warmup_s", "runnable"]
        )
        for r in runs:
            writer.writerow(
                [r.key, f"{r.wall_s:.3f}", r.samples, f"{r.samples_per_s:.1f}"]
                + [f"{r.samples_per_s / base.samples_per_s:.3f}", r.copies, r.data_bytes, f"{r.final_acc:.4f}"]
                + [f"{r.warmup_s:.2f}", f"{r.runnable:.2f}"]
            )
    with curves.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["approach", "config", "epoch", "val_loss", "val_acc"])
        for r in runs:
            for config, history in r.history.items():
                for epoch, val_loss, val_acc in history:
                    writer.writerow([r.key, config, epoch, f"{val_loss:.5f}", f"{val_acc:.5f}"])
    png = out / f"approaches{suffix}.png"
    if not plot_accuracy(runs, list(base.history), args.epochs, png):
        print("matplotlib is missing (pip install -e '.[dev]'): no PNG", file=sys.stderr)
        return summary, curves, None
    return summary, curves, png


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-rows", type=int, default=12000)
    parser.add_argument("--val-rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="3000 + 500 rows, 2 epochs (about a minute)")
    parser.add_argument("--configs", default=DEFAULT_SPACE, help="grid search space (jsonb); one config per point")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--seed", type=int, default=7, help="seeds the split, the shuffle and the configs")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the CSV and PNG files go")
    args = parser.parse_args(argv)
    if args.small:
        args.train_rows, args.val_rows, args.epochs = 3000, 500, 2
    if not isinstance(json.loads(args.configs), dict):
        parser.error("--configs must be a JSON object, e.g. " + DEFAULT_SPACE)
    args.validation_fraction = args.val_rows / (args.train_rows + args.val_rows)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # Inherited by the spawned workers (the segments' postmaster gets the same).
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        data = Path(workdir) / "data.npz"
        step("starting a throwaway cluster with 2 segments")
        with temporary_cluster(segments=WORKERS) as cluster:
            dsn = cluster.dsn()
            with psycopg.connect(dsn) as conn:
                step(f"loading {args.train_rows} + {args.val_rows} Fashion-MNIST rows")
                sample_data.load_fashion_mnist(conn, SOURCE_TABLE, limit=args.train_rows + args.val_rows)
                sample_data.load_fashion_mnist(conn, WARMUP_TABLE, limit=WARMUP_ROWS)
            with psycopg.connect(dsn, autocommit=True) as conn:
                step("preparing the dataset on 2 segments")
                train_rows = prepare(conn, "bench_2seg", SOURCE_TABLE, WORKERS, args)
                prepare(conn, "bench_warmup_2seg", WARMUP_TABLE, WORKERS, args)
            step("(a) cerebro-db MOP on 2 segments")
            with Runnable() as load:  # over the whole Scheduler.run: the warm-up workload included
                mop = run_mop(dsn, WORKERS, "bench_2seg", "bench_warmup_2seg", args)
            samples = train_rows * mop.configs * args.epochs
            if mop.samples != samples:
                raise RuntimeError(f"expected {samples} training samples, MOP's units logged {mop.samples}")
            specs, stored, val_rows = export(dsn, "bench_2seg", mop.workload_id, args.model, data)
            history = mop_history(dsn, mop.workload_id)
            runs.append(Run("mop", mop.window_s, samples, stored, 1, history, runnable=load.mean))
        # The cluster is stopped: the baselines have the cores to themselves, as MOP had.
        step("(b) model averaging, 2 worker processes")
        runs.append(run_baseline("averaging", WORKERS, "shard", average_configs, data, specs, args.epochs, samples))
        step("(c) task parallelism, 2 worker processes")
        runs.append(run_baseline("task", WORKERS, "all", whole_configs, data, specs, args.epochs, samples))
        step("(d) sequential Keras, 1 process")
        runs.append(run_baseline("sequential", 1, "all", whole_configs, data, specs, args.epochs, samples))
    report(args, train_rows, val_rows, runs, mop)
    paths = write_results(args, runs, args.out)
    step("wrote " + ", ".join(str(p) for p in paths if p is not None))


if __name__ == "__main__":
    main()
