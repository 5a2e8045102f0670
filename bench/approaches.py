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
import contextlib
import csv
import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from mop_vs_keras import PHASE_NAMES, SOURCE_TABLE, WARMUP_TABLE, MopRun, breakdown, prepare, run_mop

from cerebro_db import sample_data
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table as table
from cerebro_plpy import packing
from cerebro_plpy.state import ModelState

DEFAULT_SPACE = '{"lr": [0.001, 0.003], "batch_size": [64, 128]}'
RESULTS_DIR = Path(__file__).resolve().parent / "results"
WORKERS = 2
#: Rows each worker trains and validates on per config while warming up (as MOP's warm-up dataset).
WARMUP_ROWS = 600

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


# --------------------------------------------------------------------------- worker processes


def _worker(index: int, data_path: str, part: str, conn: Connection) -> None:
    """One training process: holds its data, takes commands from ``conn`` until ``None``.

    ``part`` is ``'all'`` (a full copy of the training rows) or ``'shard'`` (training rows of segment
    ``index``, and the ``index``-th half of the validation rows).
    """
    from cerebro_plpy import training, unit

    gd: dict[str, Any] = {}
    training.tensorflow(gd)  # one intra- and one inter-op thread, as a segment backend
    data = np.load(data_path)
    x, y, val_x, val_y = data["x"], data["y"], data["val_x"], data["val_y"]
    if part == "shard":
        mine = data["segment"] == index
        x, y = x[mine], y[mine]
        val_x = np.array_split(val_x, WORKERS)[index]
        val_y = np.array_split(val_y, WORKERS)[index]
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)

    def fresh(spec: training.ModelSpec) -> Any:
        model = training.cached_model(gd, spec)
        training.restore(model, training.initial_state(gd, spec))
        training.set_learning_rate(model, spec.params["lr"])
        return model

    def evaluate(model: Any) -> tuple[float, float]:
        return training.evaluate(gd, model, val_x, val_y, unit.EVALUATION_BATCH, lambda: None)

    def noop() -> None:
        return None

    while True:
        command = conn.recv()
        if command is None:
            break
        kind = command[0]
        if kind == "warmup":  # every config's architecture built and traced, as in MOP's warm-up workload
            for spec in command[1]:
                model = fresh(spec)
                training.train_pass(gd, model, x[:WARMUP_ROWS], y[:WARMUP_ROWS], spec.params["batch_size"], noop)
                training.evaluate(gd, model, val_x[:WARMUP_ROWS], val_y[:WARMUP_ROWS], unit.EVALUATION_BATCH, noop)
            conn.send(("ready", index, int(x.nbytes + y.nbytes)))
        elif kind == "pass":  # model averaging: one pass over the local shard from the given state
            _, spec, raw = command
            model = training.cached_model(gd, spec)
            state = ModelState.decode(raw) if raw is not None else training.initial_state(gd, spec)
            training.restore(model, state)
            training.set_learning_rate(model, spec.params["lr"])
            loss, metric = training.train_pass(gd, model, x, y, spec.params["batch_size"], noop)
            conn.send(("pass", index, training.capture(model).encode(), loss, metric, len(y)))
        elif kind == "evaluate":  # model averaging: the averaged state on the local validation half
            _, spec, raw = command
            model = training.cached_model(gd, spec)
            training.restore(model, ModelState.decode(raw))
            conn.send(("evaluate", index, *evaluate(model), len(val_y)))
        elif kind == "config":  # task parallelism and sequential: one whole config
            _, number, spec, epochs = command
            model = fresh(spec)
            history = []
            for _ in range(epochs):
                loss, metric = training.train_pass(gd, model, x, y, spec.params["batch_size"], noop)
                history.append((loss, metric, *evaluate(model)))
            conn.send(("config", index, number, history))
        else:
            raise ValueError(f"unknown command {kind!r}")


class Pool:
    """``count`` worker processes ('spawn', one TensorFlow thread each), each with its own pipe."""

    def __init__(self, count: int, data_path: Path, part: str) -> None:
        context = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes = []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(target=_worker, args=(index, str(data_path), part, theirs), daemon=True)
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)

    def warm_up(self, specs: list[Any]) -> int:
        """Warm every worker; returns the bytes of training data the workers hold together."""
        for pipe in self.pipes:
            pipe.send(("warmup", specs))
        return sum(int(self.receive(pipe, "ready")[2]) for pipe in self.pipes)

    def receive(self, pipe: Connection, kind: str) -> tuple[Any, ...]:
        try:
            message: tuple[Any, ...] = pipe.recv()
        except EOFError:
            codes = [p.exitcode for p in self.processes]
            raise RuntimeError(f"a worker process died (exit codes {codes})") from None
        if message[0] != kind:
            raise RuntimeError(f"expected a {kind!r} reply, got {message[0]!r}")
        return message

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


# --------------------------------------------------------------------------- machine load


class Runnable:
    """The machine's mean number of runnable tasks (``procs_running`` of /proc/stat) while open.

    An approach keeps its 2 workers (sequential: 1) busy; anything above that is other work competing for
    the 2 cores. Without /proc/stat the mean stays NaN.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                text = Path("/proc/stat").read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("procs_running "):
                    self.samples.append(int(line.split()[1]) - 1)  # not this sampling thread

    def __enter__(self) -> Runnable:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else float("nan")


# --------------------------------------------------------------------------- results


@dataclass
class Run:
    key: str
    wall_s: float
    samples: int
    data_bytes: int
    copies: int
    #: Per config label: [(epoch, val_loss, val_acc)].
    history: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    warmup_s: float = 0.0
    #: Mean runnable tasks on the machine while the approach trained (see Runnable).
    runnable: float = float("nan")

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_s

    @property
    def final_acc(self) -> float:
        return statistics.fmean(h[-1][2] for h in self.history.values())


def label(params: dict[str, Any]) -> str:
    return f"lr={params['lr']:g} bs={params['batch_size']}"


def average(states: list[ModelState], weights: list[int]) -> ModelState:
    """Rows-weighted mean of float arrays; other arrays (iteration counters, seeds) from the first state."""
    share = np.asarray(weights, dtype=np.float64) / sum(weights)

    def mean(arrays: list[np.ndarray]) -> np.ndarray:
        if not np.issubdtype(arrays[0].dtype, np.floating):
            return arrays[0]
        return sum(w * a.astype(np.float64) for w, a in zip(share, arrays, strict=True)).astype(arrays[0].dtype)

    return ModelState(
        [mean(list(a)) for a in zip(*(s.model_variables for s in states), strict=True)],
        [mean(list(a)) for a in zip(*(s.optimizer_variables for s in states), strict=True)],
    )


def run_baseline(
    key: str,
    workers: int,
    part: str,
    train: Callable[[Pool, list[Any], int, Run], None],
    data: Path,
    specs: list[Any],
    epochs: int,
    samples: int,
) -> Run:
    """Warm a pool of ``workers`` holding ``part`` of the data, then time ``train`` on it."""
    pool = Pool(workers, data, part)
    try:
        started = time.perf_counter()
        held = pool.warm_up(specs)
        warmup_s = time.perf_counter() - started
        run = Run(key, 0.0, samples, held, workers if part == "all" else 1, warmup_s=warmup_s)
        with Runnable() as load:
            started = time.perf_counter()
            train(pool, specs, epochs, run)
            run.wall_s = time.perf_counter() - started
        run.runnable = load.mean
        return run
    finally:
        pool.close()


def average_configs(pool: Pool, specs: list[Any], epochs: int, run: Run) -> None:
    """Each config in turn: per epoch, a pass on each worker's shard from the same state, then the average."""
    for spec in specs:
        raw: bytes | None = None
        history = []
        for epoch in range(1, epochs + 1):
            for pipe in pool.pipes:
                pipe.send(("pass", spec, raw))
            replies = [pool.receive(pipe, "pass") for pipe in pool.pipes]
            merged = average([ModelState.decode(r[2]) for r in replies], [r[5] for r in replies])
            raw = merged.encode()
            for pipe in pool.pipes:
                pipe.send(("evaluate", spec, raw))
            scores = [pool.receive(pipe, "evaluate") for pipe in pool.pipes]
            rows = sum(s[4] for s in scores)
            history.append((epoch, sum(s[2] * s[4] for s in scores) / rows, sum(s[3] * s[4] for s in scores) / rows))
        run.history[label(spec.params)] = history


def whole_configs(pool: Pool, specs: list[Any], epochs: int, run: Run) -> None:
    """Hand the next config to the next free worker until all are trained."""
    queue = list(enumerate(specs))
    busy: dict[Connection, int] = {}
    for pipe in pool.pipes:
        if queue:
            number, spec = queue.pop(0)
            pipe.send(("config", number, spec, epochs))
            busy[pipe] = number
    while busy:
        for ready in wait(list(busy)):
            assert isinstance(ready, Connection)
            _, _, number, history = pool.receive(ready, "config")
            del busy[ready]
            run.history[label(specs[number].params)] = [
                (epoch, val_loss, val_acc) for epoch, (_, _, val_loss, val_acc) in enumerate(history, start=1)
            ]
            if queue:
                number, spec = queue.pop(0)
                ready.send(("config", number, spec, epochs))
                busy[ready] = number


# --------------------------------------------------------------------------- data from the database


def export(dsn: str, dataset: str, workload_id: int, model: str, path: Path) -> tuple[list[Any], int, int]:
    """The prepared dataset's rows (training rows in buffer order, with their segment) into ``path``;
    returns (the workload's configs as ModelSpecs, bytes of training data in the database, validation rows)."""
    from cerebro_plpy.training import ModelSpec

    with psycopg.connect(dsn, autocommit=True) as conn:
        meta = conn.execute(
            "SELECT dataset_id, feature_shape, num_classes FROM datasets WHERE name = %s", [dataset]
        ).fetchone()
        assert meta is not None
        dataset_id, shape, classes = int(meta[0]), tuple(meta[1]), int(meta[2])
        parts: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {"train": [], "validation": []}
        stored = 0
        for segment, split, raw_x, raw_y in conn.execute(
            "SELECT segment, split, x, y FROM dataset_buffers WHERE dataset_id = %s ORDER BY buffer_id", [dataset_id]
        ).fetchall():
            parts[split].append((int(segment), packing.from_bytes(raw_x, shape), packing.from_bytes(raw_y, ())))
            if split == "train":
                stored += len(raw_x) + len(raw_y)
        specs = [
            ModelSpec(model, params, shape, classes, int(seed))
            for params, seed in conn.execute(
                "SELECT params, seed FROM configs WHERE workload_id = %s ORDER BY config_id", [workload_id]
            ).fetchall()
        ]
    train, validation = parts["train"], parts["validation"]
    np.savez(
        path,
        x=np.concatenate([p[1] for p in train]),
        y=np.concatenate([p[2] for p in train]),
        segment=np.concatenate([np.full(len(p[2]), p[0]) for p in train]),
        val_x=np.concatenate([p[1] for p in validation]),
        val_y=np.concatenate([p[2] for p in validation]),
    )
    return specs, stored, sum(len(p[2]) for p in validation)


def mop_history(dsn: str, workload_id: int) -> dict[str, list[tuple[int, float, float]]]:
    history: dict[str, list[tuple[int, float, float]]] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for params, epoch, val_loss, val_acc in conn.execute(
            "SELECT c.params, m.epoch, m.val_loss, m.val_metric FROM epoch_metrics m JOIN configs c USING (config_id)"
            " WHERE c.workload_id = %s ORDER BY c.config_id, m.epoch",
            [workload_id],
        ).fetchall():
            history.setdefault(label(params), []).append((int(epoch), float(val_loss), float(val_acc)))
    return history


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
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing (pip install -e '.[dev]'): no PNG", file=sys.stderr)
        return summary, curves, None
    labels = list(base.history)
    fig, axes = plt.subplots(1, len(labels), figsize=(4 * len(labels), 3.5), sharey=True, squeeze=False)
    for ax, config in zip(axes[0], labels, strict=True):
        for r in runs:
            points = r.history.get(config, [])
            style = "--" if r.key == "task" else "-"  # task parallelism trains exactly as sequential Keras
            ax.plot([p[0] for p in points], [p[2] for p in points], style, marker="o", label=r.key)
        ax.set_title(config)
        ax.set_xlabel("epoch")
        ax.set_xticks(range(1, args.epochs + 1))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy")
    axes[0][-1].legend()
    fig.tight_layout()
    png = out / f"approaches{suffix}.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
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

    def step(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

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
