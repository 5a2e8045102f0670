"""Autonomy: the autopilot against a full grid, hyperband and random search on one search space (issue 19).

One fixed search space (``SPACE``: 16 ``mlp`` configs, lr x hidden_units x batch_size) on a Fashion-MNIST subset
(flattened), 2 segments, the same seed for every run, real training. One scheduler runs throughout (warm backends),
after a 1-epoch warm-up workload; the runs go one after another on the same cluster:

(a) grid: every config, ``max_epochs`` epochs, manual (its suggestions are made and left alone);
(b) hyperband: the same configs, pruned at rungs 1, 3, 9 (eta 3);
(c) random: ``budget // max_epochs`` configs drawn from the same space, the autopilot's budget;
(d) autopilot: the grid's workload on autopilot with ``budget_epochs`` = 40 % of the grid's epochs, less one per
    segment beyond the first (a unit on another segment may finish its epoch after the budget ran out). Its clones
    and drill-downs spend the same budget.

Printed per run: best validation accuracy (its workloads' drill-downs included), epochs and unit-seconds spent,
wall time, epochs and seconds until an epoch reached 99 % of the grid's best, and the best accuracy within the first
E epochs (E: the fewer of the autopilot's and hyperband's). Then the suggestions each autonomous or manual run made,
by kind, with how many the grid's eventual ranking agrees with: a stop, clone or warning on a config agrees when that
config did not finish in the grid's top quarter, an extend or resume when it did (configs are matched to the grid's
by params; a drill-down and a clone's own configs have no grid counterpart).

Targets (``checks``): the autopilot reaches at least 99.5 % of the grid's best accuracy with at most 40 % of its
epochs, and within the first E epochs at least hyperband's best.

    .venv/bin/python bench/autonomy.py            # 8,000 rows, 16 configs, 12 epochs (about 10 minutes on 2 cores)
    .venv/bin/python bench/autonomy.py --quick    # 1,200 rows, 4 configs, 4 epochs; targets not checked

Writes bench/results/autonomy.csv and autonomy_suggestions.csv (``--quick``: autonomy_quick*.csv); exit status 1
on a missed target (``--quick``: only when a run fails).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from benchlib import RESULTS_DIR, step
from psycopg import sql

from cerebro_db import sample_data
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table

SPACE = {"lr": [0.0001, 0.001, 0.01, 0.1], "hidden_units": [16, 128], "batch_size": [32, 256]}
QUICK_SPACE = {"lr": [0.001, 0.1], "hidden_units": [16, 64], "batch_size": [64]}
SEED = 7
SEGMENTS = 2
ACCURACY_TARGET = 0.995
EPOCHS_TARGET = 0.40
REACH = 0.99
#: Suggestions against a config (it should not finish in the grid's top quarter) and for one (it should).
AGAINST = ("stop", "clone_lower_lr", "clone_higher_lr", "divergence", "overfitting")
FOR = ("extend", "resume")
DATASET = "bench_autonomy"


@dataclass
class Run:
    name: str
    workload_id: int
    #: Every epoch of the run's workloads (drill-downs included), in the order they finished: (config params as
    #: JSON, val_metric, seconds since the run's launch).
    epochs: list[tuple[str, float, float]]
    unit_seconds: float
    wall_s: float
    #: kind -> (made, accepted, agreeing, with a grid counterpart)
    suggestions: dict[str, list[int]] = field(default_factory=dict)

    @property
    def best(self) -> float:
        return max((val for _, val, _ in self.epochs), default=0.0)

    def best_within(self, count: int) -> float:
        """The best validation accuracy among the first ``count`` epochs the run finished."""
        return max((val for _, val, _ in self.epochs[:count]), default=0.0)

    def reached(self, threshold: float) -> tuple[int, float] | None:
        """(epochs, seconds) when an epoch first reached ``threshold``; None if none did."""
        for index, (_, val, seconds) in enumerate(self.epochs):
            if val >= threshold:
                return index + 1, seconds
        return None


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,200 rows, 4 configs, 4 epochs; targets not checked")
    parser.add_argument("--rows", type=int, default=8000, help="Fashion-MNIST rows (train + validation)")
    parser.add_argument("--epochs", type=int, default=12, help="max_epochs of every config")
    args = parser.parse_args(argv)
    args.space = SPACE
    if args.quick:
        args.rows, args.epochs, args.space = 1200, 4, QUICK_SPACE
    return args


def budget_for(grid_epochs: int) -> int:
    """The autopilot's budget: 40 % of the grid's epochs, less the epochs other segments may finish after it ran out."""
    return max(1, int(EPOCHS_TARGET * grid_epochs) - (SEGMENTS - 1))


def launch(conn: psycopg.Connection[Any], args: argparse.Namespace, procedure: str, **options: Any) -> int:
    """A workload of ``SPACE`` (run_model_selection's other named arguments: ``options``)."""
    named = sql.SQL("").join(sql.SQL(", {} => {}").format(sql.Identifier(key), sql.Placeholder(key)) for key in options)
    row = conn.execute(
        sql.SQL(
            "SELECT run_model_selection(%(dataset)s, 'mlp', %(space)s, %(procedure)s, max_epochs => %(epochs)s,"
            " seed => %(seed)s, name => %(name)s{})"
        ).format(named),
        {
            "dataset": DATASET,
            "space": json.dumps(args.space),
            "procedure": procedure,
            "epochs": args.epochs,
            "seed": SEED,
            "name": f"bench {procedure} {options.get('autonomy', '')}".strip(),
            **options,
        },
    ).fetchone()
    assert row is not None
    return int(row[0])


def wait_idle(conn: psycopg.Connection[Any], first: int) -> None:
    """Until no workload from ``first`` on (the run's, its drill-downs') is running."""
    running = "SELECT EXISTS (SELECT 1 FROM workloads WHERE workload_id >= %s AND status = 'running')"
    while conn.execute(running, [first]).fetchone() == (True,):
        time.sleep(0.5)


def measure(conn: psycopg.Connection[Any], name: str, first: int) -> Run:
    """The run of workload ``first`` and every workload made after it (its drill-downs)."""
    epochs = conn.execute(
        "SELECT c.params::text, m.val_metric,"
        " extract(epoch FROM m.finished_at - (SELECT created_at FROM workloads WHERE workload_id = %s))::float8"
        " FROM epoch_metrics m JOIN configs c USING (config_id)"
        " WHERE c.workload_id >= %s ORDER BY m.finished_at, m.config_id",
        [first, first],
    ).fetchall()
    unit_seconds, wall_s = conn.execute(
        "SELECT coalesce(sum(extract(epoch FROM u.finished_at - u.started_at)), 0)::float8,"
        " coalesce(extract(epoch FROM max(u.finished_at) - (SELECT created_at FROM workloads WHERE workload_id = %s)),"
        " 0)::float8"
        " FROM units u JOIN configs c USING (config_id) WHERE c.workload_id >= %s",
        [first, first],
    ).fetchone() or (0.0, 0.0)
    return Run(name, first, [(p, float(v), float(s)) for p, v, s in epochs], float(unit_seconds), float(wall_s))


def count_suggestions(
    conn: psycopg.Connection[Any], run: Run, last: int | None, grid_params: set[str], top_quarter: set[str]
) -> None:
    """``run.suggestions``: per kind, made, accepted, agreeing with the grid's ranking, and with a grid counterpart
    (the grid's configs by params, ``grid_params``: ``top_quarter`` are those that finished in its top quarter)."""
    rows = conn.execute(
        "SELECT l.kind, l.resolution = 'accepted', c.params::text"
        " FROM suggestion_log l LEFT JOIN configs c USING (config_id)"
        " WHERE l.workload_id >= %s AND (CAST(%s AS int) IS NULL OR l.workload_id <= %s)",
        [run.workload_id, last, last],
    ).fetchall()
    for kind, accepted, params in rows:
        counts = run.suggestions.setdefault(kind, [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += bool(accepted)
        if params in grid_params and kind in AGAINST + FOR:
            counts[3] += 1
            counts[2] += (params in top_quarter) == (kind in FOR)


def checks(grid: Run, hyperband: Run, autopilot: Run) -> list[tuple[str, bool, str]]:
    """The targets: (name, met, the figures)."""
    within = min(len(autopilot.epochs), len(hyperband.epochs))
    return [
        (
            f"autopilot's best >= {ACCURACY_TARGET:.1%} of the grid's",
            autopilot.best >= ACCURACY_TARGET * grid.best,
            f"{autopilot.best:.4f} vs {grid.best:.4f} ({autopilot.best / grid.best:.2%})",
        ),
        (
            f"autopilot's epochs <= {EPOCHS_TARGET:.0%} of the grid's",
            len(autopilot.epochs) <= EPOCHS_TARGET * len(grid.epochs),
            f"{len(autopilot.epochs)} of {len(grid.epochs)} ({len(autopilot.epochs) / len(grid.epochs):.1%})",
        ),
        (
            "autopilot's best >= hyperband's within the same epochs",
            autopilot.best_within(within) >= hyperband.best_within(within),
            f"first {within} epochs: {autopilot.best_within(within):.4f} vs {hyperband.best_within(within):.4f}",
        ),
    ]


def report(runs: list[Run], args: argparse.Namespace, configs: int) -> list[tuple[str, bool, str]]:
    grid, hyperband, _, autopilot = runs
    within = min(len(autopilot.epochs), len(hyperband.epochs))
    threshold = REACH * grid.best
    print(
        f"Autonomy on one search space: mlp, {json.dumps(args.space)} ({configs} configs), {args.epochs}"
        f" epochs each, {args.rows} Fashion-MNIST rows (20 % validation), {SEGMENTS} segments, seed {SEED};"
        f" autopilot budget {budget_for(len(grid.epochs))} epochs"
    )
    print()
    rows = []
    for run in runs:
        reached = run.reached(threshold)
        rows.append(
            [
                run.name,
                f"{run.best:.4f}",
                f"{run.best / grid.best:.2%}",
                len(run.epochs),
                f"{len(run.epochs) / len(grid.epochs):.1%}",
                f"{run.unit_seconds:.1f}",
                f"{run.wall_s:.1f}",
                "-" if reached is None else reached[0],
                "-" if reached is None else f"{reached[1]:.1f}",
                f"{run.best_within(within):.4f}",
            ]
        )
    print(
        format_table(
            [
                "run",
                "best val acc",
                "vs grid",
                "epochs",
                "vs grid",
                "unit-s",
                "wall s",
                f"epochs to {REACH:.0%}",
                f"s to {REACH:.0%}",
                f"best in {within} epochs",
            ],
            rows,
            right=[False, *[True] * 9],
        )
    )
    print()
    print("Suggestions made (the grid's ranking agrees: a stop, clone or warning on a config outside its final top")
    print("quarter, an extend or resume on one inside; of those on a config the grid also trained):")
    table = []
    for run in runs:
        for kind, (made, accepted, agreeing, matched) in sorted(run.suggestions.items()):
            table.append([run.name, kind, made, accepted, f"{agreeing} of {matched}" if matched else "-"])
    print(
        format_table(
            ["run", "kind", "made", "accepted", "agrees with the grid"], table, right=[False, False, True, True, True]
        )
    )
    print()
    found = checks(grid, hyperband, autopilot)
    for name, ok, detail in found:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {detail}")
    return found


def write_csv(runs: list[Run], args: argparse.Namespace) -> None:
    suffix = "_quick" if args.quick else ""
    path = RESULTS_DIR / f"autonomy{suffix}.csv"
    path.parent.mkdir(exist_ok=True)
    grid = runs[0]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["run", "best_val_metric", "epochs", "unit_seconds", "wall_s", "epochs_to_99", "seconds_to_99"])
        for run in runs:
            reached = run.reached(REACH * grid.best)
            writer.writerow(
                [
                    run.name,
                    f"{run.best:.4f}",
                    len(run.epochs),
                    f"{run.unit_seconds:.2f}",
                    f"{run.wall_s:.2f}",
                    "" if reached is None else reached[0],
                    "" if reached is None else f"{reached[1]:.2f}",
                ]
            )
    with open(path.with_name(f"autonomy{suffix}_suggestions.csv"), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["run", "kind", "made", "accepted", "agreeing", "with_grid_counterpart"])
        for run in runs:
            for kind, counts in sorted(run.suggestions.items()):
                writer.writerow([run.name, kind, *counts])
    step(f"wrote {path}")


def one_run(conn: psycopg.Connection[Any], args: argparse.Namespace, name: str, procedure: str, **options: Any) -> Run:
    step(name)
    first = launch(conn, args, procedure, **options)
    wait_idle(conn, first)
    return measure(conn, name, first)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    runs: list[Run] = []
    with temporary_cluster(segments=SEGMENTS) as cluster:
        dsn = cluster.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            sample_data.load_fashion_mnist(conn, "bench_fashion", limit=args.rows)
            conn.execute(
                "SELECT * FROM prepare_dataset(%s, 'bench_fashion', 'label', feature_columns => '{pixels}',"
                " feature_shape => '{784}', validation_fraction => 0.2, seed => %s)",
                [DATASET, SEED],
            )
        scheduler = Scheduler(dsn, idle_wait=0.05)
        thread = threading.Thread(target=scheduler.run, name="bench-scheduler")
        thread.start()
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                warmup = conn.execute(
                    "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.001, 0.002]}', max_epochs => 1)", [DATASET]
                ).fetchone()
                assert warmup is not None
                wait_idle(conn, warmup[0])  # every segment backend imports TensorFlow once
                for name, procedure in (("grid", "grid"), ("hyperband", "hyperband")):
                    runs.append(one_run(conn, args, name, procedure))
                budget = budget_for(len(runs[0].epochs))
                runs.append(one_run(conn, args, "random", "random", num_configs=max(1, budget // args.epochs)))
                runs.append(one_run(conn, args, "autopilot", "grid", autonomy="autopilot", budget_epochs=budget))
                grid_params = {
                    p
                    for (p,) in conn.execute(
                        "SELECT params::text FROM configs WHERE workload_id = %s", [runs[0].workload_id]
                    )
                }
                ranked = conn.execute(
                    "SELECT c.params::text FROM leaderboard l JOIN configs c USING (config_id)"
                    " WHERE c.workload_id = %s ORDER BY l.best_val_metric DESC NULLS LAST",
                    [runs[0].workload_id],
                ).fetchall()
                top_quarter = {p for (p,) in ranked[: max(1, len(ranked) // 4)]}
                bounds = [run.workload_id for run in runs[1:]] + [None]
                for run, bound in zip(runs, bounds, strict=True):
                    count_suggestions(conn, run, None if bound is None else bound - 1, grid_params, top_quarter)
        finally:
            scheduler.stop()
            thread.join()
    found = report(runs, args, len(grid_params))
    write_csv(runs, args)
    if args.quick:
        print("(--quick: the targets are not checked at this size)")
        return 0
    return 0 if all(ok for _, ok, _ in found) else 1


if __name__ == "__main__":
    sys.exit(main())
