"""How cerebro-db scales beyond this machine: a schedule simulator fed with unit times measured here.

1. Validation: runs a real workload (cnn configs of different sizes, ``benchlib.mop.measure``) on 1
   and on 2 segments, derives each config's cost (training per epoch, hop, validation) and the
   time between units (commit + claim) from that run's unit log, simulates the same workload
   with the MOP schedule (mean over seeds) and compares the predicted makespan with the
   measured one (target: within 10%). Fitted on its own run, the 1-segment prediction holds by
   construction (it checks the accounting only); the 2-segment run is therefore also predicted
   from the 1-segment run's costs alone, a run the simulator was not fitted on (target: within 10%).
2. Scale: simulates async MOP (cerebro-db), bulk-synchronous MOP (MADlib) and task parallelism
   with full replication on 2-64 segments for 8-256 configs whose costs are drawn (seeded) from
   the roster models measured by ``hop_overhead.py`` (``results/hop_overhead.csv``: ms per
   training sample and hop ms), on a Fashion-MNIST-sized dataset; validation cost per sample and
   the time between units come from the validation run. See ``benchlib/simulation.py`` for the model.
   MOP runs with each claim rule on one copy of the data, then with partial replication (each
   shard on r segments) until it reaches 0.9x task parallelism's speed and beats BSP
   (``benchlib.fit.sweep``); the smallest such r and its storage are printed per cell.

    .venv/bin/python bench/simulate_scale.py            # 6000 rows, 16 configs x 3 epochs real runs
    .venv/bin/python bench/simulate_scale.py --small    # 2000 rows, 8 configs x 2 epochs; 1 seed per scale cell
    .venv/bin/python bench/simulate_scale.py --no-real  # scale only, default overheads (no database)
    .venv/bin/python bench/simulate_scale.py --reuse-runs  # validate against the committed real runs' unit log

Writes bench/results/simulate_scale[_small].csv and .png, and the real runs' unit logs as
simulate_scale_units[_small].csv (bench/run_all.sh keeps the printed tables as .txt). Exits 1 if
a prediction, fitted or not, misses the measured makespan by more than 10%, or if a scale cell misses
the target at every replication.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence

from benchlib import RESULTS_DIR, step
from benchlib.fit import (
    DEFAULT_EVAL_RATIO,
    TARGET_ERROR,
    TASK_TARGET,
    Prediction,
    Validation,
    cross_validate,
    read_runs,
    roster_profiles,
    sweep,
    validate,
)
from benchlib.mop import WORKLOAD_SPACE, measure
from benchlib.plots import plot_scale
from benchlib.sim_report import (
    prediction_table,
    scale_cells,
    scale_table,
    validation_table,
    write_csv,
    write_unit_log,
)
from benchlib.simulation import Overheads

from cerebro_db.text_table import format_table

HOP_OVERHEAD_CSV = RESULTS_DIR / "hop_overhead.csv"
SMALL_SPACE = '{"filters": [8, 16], "dense_units": [32, 128], "lr": [0.003], "batch_size": [64, 128]}'
#: Fashion-MNIST: 60,000 rows of 28x28 float32 pixels and a float32 label, 10% held out for validation.
DATASET_ROWS = 60_000
ROW_BYTES = 28 * 28 * 4 + 4
#: Without a real run (--no-real): a unit's commit + the next claim (typical of the runs in bench/README.md).
DEFAULT_OVERHEADS = Overheads(gap_s=0.02, start_s=0.05)

# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="real runs of 2000 rows, 8 configs x 2 epochs")
    parser.add_argument("--rows", type=int, default=6000, help="Fashion-MNIST rows of the real runs")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the real runs")
    parser.add_argument("--no-real", action="store_true", help="skip the real runs (no validation)")
    parser.add_argument(
        "--reuse-runs",
        action="store_true",
        help="validate against the committed real runs (results/simulate_scale_units.csv) instead of running them",
    )
    parser.add_argument("--seeds", type=int, default=20, help="simulations per validation run")
    parser.add_argument("--segments", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64])
    parser.add_argument("--config-counts", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--sweep-epochs", type=int, default=5)
    parser.add_argument(
        "--sweep-seeds", type=int, default=None, help="MOP simulations per scale cell, averaged (3; --small: 1)"
    )
    parser.add_argument("--dataset-rows", type=int, default=DATASET_ROWS, help="rows of the simulated dataset")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    args.configs = WORKLOAD_SPACE
    if args.small:
        args.rows, args.epochs, args.configs = 2000, 2, SMALL_SPACE
    if args.sweep_seeds is None:
        args.sweep_seeds = 1 if args.small else 3
    # what benchlib.mop.measure (run_mop and prepare) reads
    args.model, args.validation_fraction, args.warmup_rows = "cnn", 0.1, 600
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    validations: list[Validation] = []
    predictions: list[Prediction] = []
    if not args.no_real:
        validation_rows = round(args.rows * args.validation_fraction)
        suffix = "_small" if args.small else ""
        units_csv = RESULTS_DIR / f"simulate_scale_units{suffix}.csv"
        if args.reuse_runs:
            runs = [run for _, run in sorted(read_runs(units_csv, RESULTS_DIR / f"simulate_scale{suffix}.csv").items())]
        else:
            runs = []
            for segments in (1, 2):
                step(f"real run on {segments} segment(s)")
                runs.append(measure(segments, args))
            write_unit_log(units_csv, runs)
        validations += [validate(run, validation_rows, args.seeds) for run in runs]
        print(
            f"Validation: the same workload (cnn, {args.configs}, {args.rows} Fashion-MNIST rows) measured by"
            f" cerebro-db and simulated (MOP, mean ± sd of {args.seeds} seeds) from that run's own unit log\n"
        )
        print(validation_table(validations))
        print(
            "\ngap: mean time on a segment from a unit's end to its next unit's start while a legal unit was"
            " available (commit, notify, claim); start: from resuming the workload to its first unit. Both are"
            " inputs, as are each config's mean unit time (hop = state load + save), its validation time, the"
            " segments and epochs. predicted: each unit takes its config's mean unit time; resampled: each"
            " unit's time is drawn from its config's measured unit times (real units vary: contention,"
            " segments).\n"
        )
        predictions.append(cross_validate(runs[0], runs[1], args.seeds))
        print(
            "Prediction of a run the simulator was not fitted on: the 2-segment run's makespan from the 1-segment"
            f" run's unit log alone (MOP, mean ± sd of {args.seeds} seeds)\n"
        )
        print(prediction_table(predictions))
        print()
    overheads = validations[-1].overheads if validations else DEFAULT_OVERHEADS
    ratio = statistics.fmean(v.eval_ratio for v in validations) if validations else DEFAULT_EVAL_RATIO
    profiles = roster_profiles(HOP_OVERHEAD_CSV, args.dataset_rows, ratio)
    dataset_bytes = (args.dataset_rows - args.dataset_rows // 10) * ROW_BYTES
    started = time.perf_counter()
    results = sweep(
        profiles, args.segments, args.config_counts, args.sweep_epochs, overheads, args.seed, args.sweep_seeds
    )
    print(
        f"Scale: {args.sweep_epochs} epochs, a {args.dataset_rows}-row dataset ({dataset_bytes / 2**20:.0f} MiB of"
        f" training data), configs drawn (seed {args.seed}) from the roster models measured by hop_overhead.py;"
        f" MOP: mean of {args.sweep_seeds} seeds:"
    )
    print(
        format_table(
            ["model", "epoch train s (1 segment)", "hop s", "validation s"],
            [[p.name, f"{p.epoch_train_s:.1f}", f"{p.unit_fixed_s:.3f}", f"{p.validation_s:.1f}"] for p in profiles],
        )
    )
    print(
        f"\nvalidation cost per row = {ratio:.2f} x training cost per row; between units {1000 * overheads.gap_s:.1f}"
        f" ms; simulated in {time.perf_counter() - started:.1f} s\n"
    )
    print(scale_table(results, dataset_bytes))
    print(
        "\nh: predicted makespan in hours; util: unit time / (segments x makespan); speed-up: the baseline's"
        " makespan / MOP's. MOP h r=1: one copy of the data (each segment its own shard) with today's claim rule"
        " (fair: least progress first) and with the longest remaining work first (longest: the most unit-seconds"
        " left), fair vs task: task h / MOP h r=1 fair. r: the smallest replication (each shard stored on r"
        f" segments: the training set cut into segments // r shards) at which MOP with the fair rule is at"
        f" least {TASK_TARGET}x task parallelism and no slower than BSP; MOP h, util, speed-ups and copies are at"
        " that r (a unit is one pass over one shard, on any segment holding it). BSP holds one copy of the"
        " training data; task parallelism one per segment."
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    suffix = "_small" if args.small else ""
    out = RESULTS_DIR / f"simulate_scale{suffix}.csv"
    write_csv(out, results, validations, predictions, dataset_bytes)
    shown = [c for c in (8, 64, 256) if c in args.config_counts] or list(args.config_counts[:3])
    png = RESULTS_DIR / f"simulate_scale{suffix}.png"
    cells = scale_cells(results)
    plot_scale(
        png, [r for r in results if r.schedule != "mop"] + [c.chosen for c in cells.values()], validations, shown
    )
    print(f"\nwrote {out} and {png}")
    missed = [v for v in validations if abs(v.error) > TARGET_ERROR] + [p for p in predictions if not p.passed]
    short = [key for key, cell in cells.items() if not cell.met]
    if short:
        print(
            f"MISS: below {TASK_TARGET}x task parallelism or behind BSP at every replication"
            f" (configs, segments): {short}"
        )
    return 1 if missed or short else 0


if __name__ == "__main__":
    sys.exit(main())
