"""Feature transfer: heads on 3 layers of a frozen base, 4 head configs each, 3 epochs, on 2 segments.

The base is keras.applications' MobileNetV2 (random init: the compute is what matters) behind a Resizing layer that
takes Fashion-MNIST's 28x28 images to ``--image-size``. 12 ``transfer`` configs (3 block outputs x head_units 16/32 x
lr 0.001/0.003, trainable_from '') run three times on the same dataset, seeds and cluster, with
``cerebro.feature_transfer`` set for the scheduler's sessions:

(a) ``off``: naive, the frozen base runs in every config's every step (and every validation);
(b) ``on``: cerebro-db's shared, staged materialization: one pass per shard computes all three layers;
(c) ``unstaged``: a pass per layer per shard, each from the input (materialization without Vista's staging).

Features are dropped between runs, so (b) and (c) each materialize from scratch. Printed per run: wall time (from when
both of a run's new backends have trained a unit of a small warm-up workload, so TensorFlow's import is not counted,
as in ``benchlib.mop.run_mop``; the base's load and every model's build are), samples/s (configs x epochs x
training rows), materialization passes and bytes, peak resident memory per segment backend (VmHWM, sampled), where
the segments' time went (materialization, model build and restore, training, validation, ... from the unit log), and
each config's final validation accuracy. On 2 segments the order in which a config visits the segments depends on
timing: a config that visited them in the same order in all three runs must end with the same accuracy (on 1 segment
the states are bit-identical: tests/sql/test_features.py), the others agree to ``ACCURACY_TOLERANCE``. Targets: (b)
at least 5x faster than (a), and faster than (c).

    .venv/bin/python bench/feature_transfer.py            # 4,000 rows, 96x96 (about 12 minutes on 2 busy cores)
    .venv/bin/python bench/feature_transfer.py --quick    # the smoke test: 200 rows, 32x32, 3 configs, 1 epoch

Writes bench/results/feature_transfer.csv (``--quick``: feature_transfer_quick.csv); exit status 1 on a missed target
(``--quick`` checks the pass counts and the same-order accuracies only: fixed costs, and chance-level accuracies on
20 validation rows, dominate at that size).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from benchlib import RESULTS_DIR, step
from psycopg import sql

from cerebro_db import sample_data
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table

MODES = {"off": "(a) naive", "on": "(b) staged", "unstaged": "(c) per layer"}
#: Block outputs at three depths (at 96x96: 12x12x32, 6x6x96 and 3x3x1280 floats a row).
LAYERS = ["block_5_add", "block_12_add", "out_relu"]
SPEEDUP_TARGET = 5.0
MAX_TRAINING_MB = 16384
#: ``--quick``: the smallest run that still makes every pass and trains every layer's head (a smoke test).
QUICK = {"rows": 200, "image_size": 32, "alpha": 0.35, "epochs": 1, "head_units": [8], "lr": [0.003]}
ACCURACY_TOLERANCE = 0.05
BASE = "bench_mobilenetv2"
#: The parts of a run's segment-seconds (2 x wall): materialization passes, then the unit log's columns, the rest of
#: the units (claim, context, record, the hop's SQL) and what is outside any unit (backends starting, TensorFlow's
#: import, idle waits).
SPLIT = {
    "materialize": "feature passes",
    "state_load": "build + restore",
    "train": "train",
    "validation": "validation",
    "data_load": "data load",
    "state_save": "state save",
    "unit_rest": "rest of units",
    "outside": "outside units",
}
_SPLIT_SQL = """
SELECT sum(data_load_s), sum(state_load_s), sum(train_s), sum(coalesce(validation_s, 0)), sum(state_save_s),
       sum(extract(epoch FROM finished_at - started_at))
FROM units u JOIN configs c ON c.config_id = u.config_id WHERE c.workload_id = %s
"""
#: Each config (numbered in its workload), its layer, final validation accuracy and the segments it visited in order.
_CONFIGS_SQL = """
SELECT row_number() OVER (ORDER BY c.config_id), c.params ->> 'layer', m.val_metric,
       (SELECT array_agg(u.segment ORDER BY u.unit_id) FROM units u WHERE u.config_id = c.config_id)
FROM configs c JOIN epoch_metrics m ON m.config_id = c.config_id AND m.epoch = c.max_epochs
WHERE c.workload_id = %s ORDER BY c.config_id
"""
DATASET = "bench_ft"
#: A small cnn workload on a few rows that runs first in each run's scheduler, so that the measured workload runs on
#: backends that have imported TensorFlow (as ``benchlib.mop.run_mop``, :class:`WarmBackends`); the base is loaded in
#: the measured time.
WARMUP = "bench_ft_warmup"
WARMUP_SPACE = '{"filters": 4, "dense_units": 8, "lr": [0.001, 0.003], "batch_size": 32}'


@dataclass
class Run:
    mode: str
    wall_s: float
    samples: int
    passes: int
    materialized_bytes: int
    peak_mb: dict[int, float]
    accuracy: dict[int, float] = field(default_factory=dict)
    #: Where the segments' time went (seconds summed over both segments): :data:`SPLIT`.
    split: dict[str, float] = field(default_factory=dict)
    #: The segments each config visited, in order: runs that agree on it train the same weights.
    order: dict[int, list[int]] = field(default_factory=dict)
    layers: dict[int, str] = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_s


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"the smoke test's size: {QUICK}")
    parser.add_argument("--rows", type=int, default=4000, help="Fashion-MNIST rows (train + validation)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2's width")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--head-units", type=int, nargs="+", default=[16, 32], help="the heads' sizes searched")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.001, 0.003], help="the heads' learning rates")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    return args


def heads(args: argparse.Namespace) -> int:
    """Head configs per layer (the search space's order: layer, then head_units, then lr)."""
    return len(args.head_units) * len(args.lr)


def base_archive(image_size: int, alpha: float) -> bytes:
    """MobileNetV2 (random init) behind a Resizing of 28x28x1 images, as a .keras file."""
    from cerebro_plpy import training

    training.tensorflow({})  # one thread, as in the backends
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((28, 28, 1))
    resized = keras.layers.Resizing(image_size, image_size, name="resize")(inputs)
    model = keras.applications.MobileNetV2(input_tensor=resized, alpha=alpha, weights=None, classes=10)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "base.keras"
        model.save(path)
        return path.read_bytes()


class WarmBackends:
    """Resumes the measured workload once every segment's backend has committed a warm-up unit (TensorFlow imported).

    Not at the warm-up's end: a segment that idled before its last unit still counts as idle while it runs it, so the
    scheduler (``until_idle``) may stop in the gap before the resume; the warm-up's last few units (a small cnn on 100
    rows) run in the measured time instead, in every run alike."""

    def __init__(self, dsn: str, measured: int, segments: int) -> None:
        self._conn = psycopg.connect(dsn, autocommit=True, application_name="bench warm-up")
        self._measured = measured
        self._waiting = set(range(segments))
        self._lock = threading.Lock()
        self.resumed: float | None = None  # perf_counter

    def on_unit(self, result: dict[str, Any]) -> None:
        with self._lock:
            self._waiting.discard(result["segment"])
            if self._waiting or self.resumed is not None:
                return
            self._conn.execute("UPDATE workloads SET status = 'running' WHERE workload_id = %s", [self._measured])
            self.resumed = time.perf_counter()

    def close(self) -> None:
        self._conn.close()


class PeakMemory:
    """The segment backends' peak resident memory (VmHWM), sampled from /proc while a run goes."""

    def __init__(self, dsn: str) -> None:
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._stop = threading.Event()
        self.peak: dict[int, float] = {}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            rows = self._conn.execute(
                "SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE 'cerebro segment %'"
            ).fetchall()
            for pid, name in rows:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                found = re.search(r"VmHWM:\s+(\d+) kB", status)
                if found:
                    segment = int(name.rsplit(" ", 1)[1])
                    self.peak[segment] = max(self.peak.get(segment, 0.0), int(found.group(1)) / 1024)

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join()
        self._conn.close()
        return self.peak


def run_mode(dsn: str, mode: str, args: argparse.Namespace, train_rows: int) -> Run:
    with psycopg.connect(dsn, autocommit=True) as conn:
        database = conn.info.dbname
        conn.execute(sql.SQL("ALTER DATABASE {} SET cerebro.feature_transfer = {}").format(
            sql.Identifier(database), sql.Literal(mode)))  # fmt: skip
        conn.execute("SELECT drop_features(%s)", [DATASET])
        before = conn.execute("SELECT coalesce(max(pass_id), 0) FROM feature_passes").fetchone()
        assert before is not None
        space = {"base": BASE, "layer": LAYERS, "trainable_from": "", "head_units": args.head_units, "lr": args.lr,
                 "batch_size": 64}  # fmt: skip
        row = conn.execute(
            "SELECT run_model_selection(%s, 'transfer', %s, max_epochs => %s, seed => 7, name => %s)",
            [DATASET, json.dumps(space), args.epochs, f"feature transfer {mode}"],
        ).fetchone()
        assert row is not None
        workload = int(row[0])
        conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])  # after the warm-up
        warmup = conn.execute(
            "SELECT run_model_selection(%s, 'cnn', %s, max_epochs => 1, seed => 7, name => %s)",
            [WARMUP, WARMUP_SPACE, f"feature transfer {mode} warm-up"],
        ).fetchone()
        assert warmup is not None
        step(f"{MODES[mode]}: workload {workload} after warm-up workload {warmup[0]}")
        memory = PeakMemory(dsn)
        chain = WarmBackends(dsn, workload, 2)
        try:
            Scheduler(dsn, on_unit=chain.on_unit, idle_wait=0.2).run(until_idle=True)
            finished = time.perf_counter()
        finally:
            chain.close()
        peak = memory.stop()
        if chain.resumed is None:
            raise RuntimeError(f"{MODES[mode]}: the warm-up workload did not reach both segments")
        wall = finished - chain.resumed
        failed = conn.execute(
            "SELECT config_id, status, error FROM configs WHERE workload_id = %s AND status <> 'completed'", [workload]
        ).fetchall()
        if failed:
            raise RuntimeError(f"{MODES[mode]}: configs did not complete: {failed}")
        made = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0), coalesce(sum(seconds), 0) FROM feature_passes"
            " WHERE pass_id > %s",
            [before[0]],
        ).fetchone()
        assert made is not None
        parts = conn.execute(_SPLIT_SQL, [workload]).fetchone()
        assert parts is not None
        data_load, state_load, train, validation, state_save, spans = (float(v) for v in parts)
        split = {"materialize": float(made[2]), "state_load": state_load, "train": train, "validation": validation,
                 "data_load": data_load, "state_save": state_save}  # fmt: skip
        split["unit_rest"] = spans - sum(split.values())
        split["outside"] = 2 * wall - spans
        accuracy: dict[int, float] = {}
        order: dict[int, list[int]] = {}
        layers: dict[int, str] = {}
        for index, layer, metric, segments in conn.execute(_CONFIGS_SQL, [workload]):
            layers[index], accuracy[index], order[index] = layer, float(metric), list(segments)
    configs = len(accuracy)
    return Run(
        mode, wall, configs * args.epochs * train_rows, int(made[0]), int(made[1]), peak, accuracy, split, order, layers
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    step(f"base: MobileNetV2 alpha {args.alpha} at {args.image_size}x{args.image_size}")
    archive = base_archive(args.image_size, args.alpha)
    runs: dict[str, Run] = {}
    with temporary_cluster(segments=2) as cluster:
        dsn = cluster.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            # The guard sums every kept layer's outputs at the evaluation batch: a deep base at 96x96 needs more
            # than the default 4 GB by that count (the measured peaks are printed).
            conn.execute(sql.SQL("ALTER DATABASE {} SET cerebro.max_training_mb = {}").format(
                sql.Identifier(conn.info.dbname), sql.Literal(str(MAX_TRAINING_MB))))  # fmt: skip
            sample_data.load_fashion_mnist(conn, "bench_ft_source", limit=args.rows)
            conn.execute("SELECT import_model(%s, %s)", [BASE, archive])
            prepared = conn.execute(
                "SELECT sum(train_rows)::bigint FROM prepare_dataset(%s, 'bench_ft_source', 'label',"
                " feature_columns => '{pixels}', feature_shape => '{28,28,1}', num_segments => 2, seed => 7)",
                [DATASET],
            ).fetchone()
            assert prepared is not None
            sample_data.load_fashion_mnist(conn, "bench_ft_warmup_source", limit=100)
            conn.execute(
                "SELECT prepare_dataset(%s, 'bench_ft_warmup_source', 'label', feature_columns => '{pixels}',"
                " feature_shape => '{28,28,1}', num_segments => 2, seed => 7)",
                [WARMUP],
            )
        for mode in MODES:
            runs[mode] = run_mode(dsn, mode, args, int(prepared[0]))
    return report(runs, args)


def report(runs: dict[str, Run], args: argparse.Namespace) -> int:
    naive, staged, unstaged = runs["off"], runs["on"], runs["unstaged"]
    rows = [
        [MODES[r.mode], f"{r.wall_s:.1f}", f"{r.samples_per_s:.0f}", r.passes, f"{r.materialized_bytes / 2**20:.1f}",
         " / ".join(f"{r.peak_mb.get(s, 0):.0f}" for s in (0, 1)), f"{naive.wall_s / r.wall_s:.2f}x"]
        for r in runs.values()
    ]  # fmt: skip
    print(f"Feature transfer: MobileNetV2 alpha {args.alpha} at {args.image_size}x{args.image_size}, {len(LAYERS)} "
          f"layers x {heads(args)} heads x {args.epochs} epochs, {args.rows} rows on 2 segments")  # fmt: skip
    headers = ["run", "wall s", "samples/s", "passes", "MB materialized", "peak MB seg 0 / 1", "vs (a)"]
    print(format_table(headers, rows))
    print()
    print("Where the segments' time went (seconds, both segments summed):")
    print(
        format_table(
            ["run", *SPLIT.values()], [[MODES[r.mode], *(f"{r.split[k]:.1f}" for k in SPLIT)] for r in runs.values()]
        )
    )
    configs = sorted(staged.accuracy)
    same = [c for c in configs if all(runs[m].order.get(c) == naive.order[c] for m in MODES)]
    print()
    print("Final validation accuracy per config (same order: it visited the segments in the same order in all three):")
    print(format_table(
        ["config", "layer", *(MODES[m] for m in MODES), "same order"],
        [[c, staged.layers[c], *(f"{runs[m].accuracy.get(c, float('nan')):.4f}" for m in MODES),
          "yes" if c in same else "no"] for c in configs],
    ))  # fmt: skip
    spread = max(spread_of(runs, c) for c in configs)
    same_spread = max((spread_of(runs, c) for c in same), default=0.0)
    checks = [
        ("(b) staged: one pass per segment and split", staged.passes == 4, f"{staged.passes} passes"),
        ("(c) per layer: a pass per layer", unstaged.passes == 4 * len(LAYERS), f"{unstaged.passes} passes"),
        ("(a) naive: nothing materialized", naive.passes == 0, f"{naive.passes} passes"),
        ("val accuracy identical across (a)-(c) where the order was the same", same_spread == 0,
         f"{len(same)} of {len(configs)} configs, max spread {same_spread:.4f}"),
    ]  # fmt: skip
    if not args.quick:
        checks += [
            ("val accuracy equal across (a)-(c)", spread <= ACCURACY_TOLERANCE, f"max spread {spread:.4f}"),
            (f"(b) >= {SPEEDUP_TARGET:g}x faster than (a)", naive.wall_s / staged.wall_s >= SPEEDUP_TARGET,
             f"{naive.wall_s / staged.wall_s:.2f}x"),
            ("(b) faster than (c)", staged.wall_s < unstaged.wall_s, f"{unstaged.wall_s / staged.wall_s:.2f}x"),
        ]  # fmt: skip
    print()
    for name, ok, detail in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {detail}")
    write_csv(runs, args)
    return 0 if all(ok for _, ok, _ in checks) else 1


def spread_of(runs: dict[str, Run], config: int) -> float:
    return max(r.accuracy[config] for r in runs.values()) - min(r.accuracy[config] for r in runs.values())


def write_csv(runs: dict[str, Run], args: argparse.Namespace) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"feature_transfer{'_quick' if args.quick else ''}.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["run", "mode", "wall_s", "samples_per_s", "passes", "materialized_bytes", "peak_mb_seg0",
                         "peak_mb_seg1", *(f"{k}_s" for k in SPLIT), "config", "layer", "val_accuracy",
                         "segments_visited"])  # fmt: skip
        for r in runs.values():
            for config, accuracy in sorted(r.accuracy.items()):
                writer.writerow([MODES[r.mode], r.mode, f"{r.wall_s:.3f}", f"{r.samples_per_s:.1f}", r.passes,
                                 r.materialized_bytes, f"{r.peak_mb.get(0, 0):.0f}", f"{r.peak_mb.get(1, 0):.0f}",
                                 *(f"{r.split[k]:.3f}" for k in SPLIT), config, r.layers[config],
                                 f"{accuracy:.6f}", " ".join(map(str, r.order[config]))])  # fmt: skip
    step(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
