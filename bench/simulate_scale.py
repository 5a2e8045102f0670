"""How cerebro-db scales beyond this machine: a schedule simulator fed with unit times measured here.

1. Validation: runs a real workload (cnn configs of different sizes, ``workload.measure``) on 1
   and on 2 segments, derives each config's cost (training per epoch, hop, validation) and the
   time between units (commit + claim) from that run's unit log, simulates the same workload
   with the MOP schedule (mean over seeds) and compares the predicted makespan with the
   measured one (target: within 10%).
2. Scale: simulates async MOP (cerebro-db), bulk-synchronous MOP (MADlib) and task parallelism
   with full replication on 2-64 segments for 8-256 configs whose costs are drawn (seeded) from
   the roster models measured by ``hop_overhead.py`` (``results/hop_overhead.csv``: ms per
   training sample and hop ms), on a Fashion-MNIST-sized dataset; validation cost per sample and
   the time between units come from the validation run. See ``simulation.py`` for the model.

    .venv/bin/python bench/simulate_scale.py            # 6000 rows, 16 configs x 3 epochs real runs
    .venv/bin/python bench/simulate_scale.py --small    # 2000 rows, 8 configs x 2 epochs; 1 seed per scale cell
    .venv/bin/python bench/simulate_scale.py --no-real  # scale only, default overheads (no database)

Writes bench/results/simulate_scale[_small].csv and .png, and the real runs' unit logs as
simulate_scale_units[_small].csv (bench/run_all.sh keeps the printed tables as .txt). Exits 1 if
a prediction misses the measured makespan by more than 10%.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mop_vs_keras import MopRun
from simulation import (
    SCHEDULE_NAMES,
    SCHEDULES,
    Overheads,
    Profile,
    Result,
    Unit,
    draw_mix,
    overhead_gaps,
    relative_error,
    simulate,
    simulate_mop,
)
from workload import SPACE, measure

from cerebro_db.text_table import format_table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HOP_OVERHEAD_CSV = RESULTS_DIR / "hop_overhead.csv"
SMALL_SPACE = '{"filters": [8, 16], "dense_units": [32, 128], "lr": [0.003], "batch_size": [64, 128]}'
TARGET_ERROR = 0.10
#: Fashion-MNIST: 60,000 rows of 28x28 float32 pixels and a float32 label, 10% held out for validation.
DATASET_ROWS = 60_000
ROW_BYTES = 28 * 28 * 4 + 4
#: Without a real run (--no-real): a forward pass costs about a third of a training step; a unit's
#: commit + the next claim (typical of the runs in bench/README.md).
DEFAULT_EVAL_RATIO = 1 / 3
DEFAULT_OVERHEADS = Overheads(gap_s=0.02, start_s=0.05)


@dataclass
class Validation:
    segments: int
    configs: int
    epochs: int
    units: int
    measured_s: float
    predicted_s: float
    predicted_sd: float
    #: The same, each unit's time drawn from its config's measured unit times (the variation of real units).
    resampled_s: float
    resampled_sd: float
    overheads: Overheads
    measured_utilization: float
    predicted_utilization: float
    #: Validation seconds per validation row over training seconds per training row.
    eval_ratio: float

    @property
    def error(self) -> float:
        return relative_error(self.predicted_s, self.measured_s)

    @property
    def resampled_error(self) -> float:
        return relative_error(self.resampled_s, self.measured_s)


# --------------------------------------------------------------------------- from a real run


def profiles_from_units(units: Sequence[dict[str, float]], segments: int) -> list[Profile]:
    """Each config's cost from its logged units: hop = state load + save, the rest of a unit trains."""
    by_config: dict[int, list[dict[str, float]]] = defaultdict(list)
    for unit in units:
        by_config[int(unit["config_id"])].append(unit)
    profiles = []
    for config, own in sorted(by_config.items()):
        fixed = [u["state_load_s"] + u["state_save_s"] for u in own]
        train = [u["finished"] - u["started"] - u["validation_s"] - f for u, f in zip(own, fixed, strict=True)]
        validation = [u["validation_s"] for u in own if u["validation_s"] > 0]
        profiles.append(
            Profile(
                name=f"config {config}",
                epoch_train_s=segments * statistics.fmean(train),
                unit_fixed_s=statistics.fmean(fixed),
                validation_s=statistics.fmean(validation) if validation else 0.0,
            )
        )
    return profiles


def overheads_from_units(units: Sequence[dict[str, float]], segments: int, epochs: int, started: float) -> Overheads:
    """The mean time between units on a segment while a legal unit was available (commit, notify,
    claim: a wait for a legal unit is left out, the simulator models it); the start is from
    resuming the workload to its first unit."""
    log = [Unit(int(u["config_id"]), int(u["segment"]), int(u["epoch"]), u["started"], u["finished"]) for u in units]
    gaps = overhead_gaps(log, segments, epochs)
    return Overheads(
        gap_s=statistics.fmean(gaps) if gaps else 0.0,
        start_s=min(u.start for u in log) - started,
    )


def eval_ratio(units: Sequence[dict[str, float]], validation_rows: int) -> float:
    """Validation cost per row relative to training cost per row, from one run."""
    train = sum(u["train_s"] for u in units) / sum(u["rows"] for u in units)
    validation = [u["validation_s"] for u in units if u["validation_s"] > 0]
    return statistics.fmean(validation) / validation_rows / train if validation else DEFAULT_EVAL_RATIO


def validate(run: MopRun, validation_rows: int, seeds: int) -> Validation:
    """Simulate the run's own workload with its own measured costs; compare makespans."""
    started = max(u["finished"] for u in run.units) - run.window_s  # when the workload was resumed
    profiles = profiles_from_units(run.units, run.segments)
    overheads = overheads_from_units(run.units, run.segments, run.epochs, started)
    results = [simulate_mop(profiles, run.segments, run.epochs, overheads, seed) for seed in range(seeds)]
    makespans = [r.makespan_s for r in results]
    configs = sorted({int(u["config_id"]) for u in run.units})
    samples = [
        [u["finished"] - u["started"] - u["validation_s"] for u in run.units if int(u["config_id"]) == c]
        for c in configs
    ]
    resampled = [
        simulate_mop(profiles, run.segments, run.epochs, overheads, seed, samples).makespan_s for seed in range(seeds)
    ]
    busy = sum(u["finished"] - u["started"] for u in run.units)
    return Validation(
        segments=run.segments,
        configs=run.configs,
        epochs=run.epochs,
        units=len(run.units),
        measured_s=run.window_s,
        predicted_s=statistics.fmean(makespans),
        predicted_sd=statistics.pstdev(makespans),
        resampled_s=statistics.fmean(resampled),
        resampled_sd=statistics.pstdev(resampled),
        overheads=overheads,
        measured_utilization=busy / (run.segments * run.window_s),
        predicted_utilization=statistics.fmean(r.utilization for r in results),
        eval_ratio=eval_ratio(run.units, validation_rows),
    )


# --------------------------------------------------------------------------- scale


def roster_profiles(path: Path, dataset_rows: int, ratio: float) -> list[Profile]:
    """One profile per model of hop_overhead.csv, on a dataset of ``dataset_rows`` rows (10% validation)."""
    validation_rows = dataset_rows // 10
    train_rows = dataset_rows - validation_rows
    with open(path, newline="") as file:
        return [
            Profile(
                name=row["model"],
                epoch_train_s=float(row["ms_per_sample"]) * train_rows / 1000,
                unit_fixed_s=float(row["hop_ms"]) / 1000,
                validation_s=ratio * float(row["ms_per_sample"]) * validation_rows / 1000,
            )
            for row in csv.DictReader(file)
        ]


def sweep(
    profiles: Sequence[Profile],
    segment_counts: Sequence[int],
    config_counts: Sequence[int],
    epochs: int,
    overheads: Overheads,
    seed: int,
    mop_seeds: int,
) -> list[Result]:
    """Every schedule on every (segments, configs); MOP's makespan and busy time are means over
    ``mop_seeds`` runs, its random tie-breaks make single runs vary by up to a few tens of percent."""
    results = []
    for configs in config_counts:
        mix = draw_mix(profiles, configs, seed + configs)  # the same mix for every schedule and segment count
        for segments in segment_counts:
            for schedule in SCHEDULES:
                runs = [
                    simulate(schedule, mix, segments, epochs, overheads, seed + k)
                    for k in range(mop_seeds if schedule == "mop" else 1)
                ]
                result = runs[0]
                result.makespan_s = statistics.fmean(r.makespan_s for r in runs)
                result.busy_s = statistics.fmean(r.busy_s for r in runs)
                result.log = []  # not kept: 100k units per cell
                results.append(result)
    return results


# --------------------------------------------------------------------------- report


def validation_table(validations: Sequence[Validation]) -> str:
    rows = [
        [
            v.segments,
            f"{v.configs} x {v.epochs}",
            v.units,
            f"{1000 * v.overheads.gap_s:.1f}",
            f"{1000 * v.overheads.start_s:.0f}",
            f"{v.measured_s:.2f}",
            f"{v.predicted_s:.2f} ± {v.predicted_sd:.2f}",
            f"{100 * v.error:+.1f}%",
            "PASS" if abs(v.error) <= TARGET_ERROR else "MISS",
            f"{v.resampled_s:.2f} ± {v.resampled_sd:.2f}",
            f"{100 * v.resampled_error:+.1f}%",
            f"{100 * v.measured_utilization:.1f}%",
            f"{100 * v.predicted_utilization:.1f}%",
        ]
        for v in validations
    ]
    headers = [
        "segments",
        "configs x epochs",
        "units",
        "gap ms",
        "start ms",
        "measured s",
        "predicted s",
        "error",
        f"<= {100 * TARGET_ERROR:.0f}%",
        "resampled s",
        "error",
        "measured util",
        "predicted util",
    ]
    return format_table(headers, rows)


def scale_table(results: Sequence[Result], dataset_bytes: int) -> str:
    cells = {(r.schedule, r.segments, r.configs): r for r in results}
    keys = sorted({(r.configs, r.segments) for r in results})
    rows = []
    for configs, segments in keys:
        mop, bsp, task = (cells[(s, segments, configs)] for s in SCHEDULES)
        rows.append(
            [
                configs,
                segments,
                *(f"{r.makespan_s / 3600:.2f}" for r in (mop, bsp, task)),
                *(f"{100 * r.utilization:.1f}%" for r in (mop, bsp, task)),
                f"{bsp.makespan_s / mop.makespan_s:.2f}",
                f"{task.makespan_s / mop.makespan_s:.2f}",
                f"{mop.storage_bytes(dataset_bytes) / 2**30:.2f}",
                f"{task.data_copies} / {task.storage_bytes(dataset_bytes) / 2**30:.1f}",
            ]
        )
    headers = [
        "configs",
        "segments",
        "MOP h",
        "BSP h",
        "task h",
        "MOP util",
        "BSP util",
        "task util",
        "MOP speed-up vs BSP",
        "vs task",
        "MOP/BSP GiB",
        "task copies / GiB",
    ]
    return format_table(headers, rows)


def write_csv(path: Path, results: Sequence[Result], validations: Sequence[Validation], dataset_bytes: int) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "kind",
                "schedule",
                "segments",
                "configs",
                "epochs",
                "makespan_s",
                "measured_s",
                "error",
                "resampled_s",
                "utilization",
                "data_copies",
                "storage_bytes",
            ]
        )
        for v in validations:
            writer.writerow(
                [
                    "validation",
                    "mop",
                    v.segments,
                    v.configs,
                    v.epochs,
                    f"{v.predicted_s:.3f}",
                    f"{v.measured_s:.3f}",
                    f"{v.error:.4f}",
                    f"{v.resampled_s:.3f}",
                    f"{v.predicted_utilization:.4f}",
                    1,
                    "",
                ]
            )
        for r in results:
            writer.writerow(
                [
                    "scale",
                    r.schedule,
                    r.segments,
                    r.configs,
                    r.epochs,
                    f"{r.makespan_s:.3f}",
                    "",
                    "",
                    "",
                    f"{r.utilization:.4f}",
                    r.data_copies,
                    r.storage_bytes(dataset_bytes),
                ]
            )


def write_unit_log(path: Path, runs: Sequence[MopRun]) -> None:
    """The validation runs' units, to check the simulator's inputs later."""
    RESULTS_DIR.mkdir(exist_ok=True)
    columns = list(runs[0].units[0])
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["segments", *columns])
        writer.writerows([run.segments, *(unit[c] for c in columns)] for run in runs for unit in run.units)


def plot(path: Path, results: Sequence[Result], validations: Sequence[Validation], shown: Sequence[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_util, ax_val) = plt.subplots(1, 3, figsize=(17, 5))
    styles = {"mop": "-", "bsp": "--", "task": ":"}
    colors = dict(zip(shown, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for schedule, configs in itertools.product(SCHEDULES, shown):
        cell = sorted((r for r in results if r.schedule == schedule and r.configs == configs), key=lambda r: r.segments)
        if not cell:
            continue
        label = f"{SCHEDULE_NAMES[schedule]}, {configs} configs"
        x = [r.segments for r in cell]
        ax_time.plot(x, [r.makespan_s / 3600 for r in cell], styles[schedule], color=colors[configs], label=label)
        ax_util.plot(x, [100 * r.utilization for r in cell], styles[schedule], color=colors[configs], label=label)
    for ax in (ax_time, ax_util):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("segments")
    ax_time.set_yscale("log")
    ax_time.set_ylabel("predicted makespan (h)")
    ax_time.set_title("makespan")
    ax_util.set_ylabel("mean segment utilization (%)")
    ax_util.set_title("utilization")
    ax_util.legend(fontsize=7)
    if validations:
        top = 1.1 * max(max(v.measured_s, v.predicted_s, v.resampled_s) for v in validations)
        ax_val.plot([0, top], [0, top], color="grey", linewidth=0.8)
        ax_val.fill_between([0, top], [0, 0.9 * top], [0, 1.1 * top], color="grey", alpha=0.15, label="±10%")
        for v in validations:
            bar = ax_val.errorbar(
                v.measured_s, v.predicted_s, yerr=v.predicted_sd, fmt="o", label=f"{v.segments} segment(s), mean units"
            )
            ax_val.errorbar(
                v.measured_s,
                v.resampled_s,
                yerr=v.resampled_sd,
                fmt="s",
                fillstyle="none",
                color=bar.lines[0].get_color(),
                label=f"{v.segments} segment(s), resampled units",
            )
        ax_val.set_xlim(0, top)
        ax_val.set_ylim(0, top)
        ax_val.legend()
    ax_val.set_xlabel("measured makespan (s)")
    ax_val.set_ylabel("predicted makespan (s)")
    ax_val.set_title("validation: MOP, real runs on this machine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="real runs of 2000 rows, 8 configs x 2 epochs")
    parser.add_argument("--rows", type=int, default=6000, help="Fashion-MNIST rows of the real runs")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the real runs")
    parser.add_argument("--no-real", action="store_true", help="skip the real runs (no validation)")
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
    args.configs = SPACE
    if args.small:
        args.rows, args.epochs, args.configs = 2000, 2, SMALL_SPACE
    if args.sweep_seeds is None:
        args.sweep_seeds = 1 if args.small else 3
    # what workload.measure (mop_vs_keras.run_mop and prepare) reads
    args.model, args.validation_fraction, args.warmup_rows = "cnn", 0.1, 600
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    validations: list[Validation] = []
    if not args.no_real:
        validation_rows = round(args.rows * args.validation_fraction)
        runs = []
        for segments in (1, 2):
            print(f"[{time.strftime('%H:%M:%S')}] real run on {segments} segment(s)", file=sys.stderr, flush=True)
            runs.append(measure(segments, args))
            validations.append(validate(runs[-1], validation_rows, args.seeds))
        write_unit_log(RESULTS_DIR / f"simulate_scale_units{'_small' if args.small else ''}.csv", runs)
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
        " makespan / MOP's. MOP and BSP hold one copy of the training data; task parallelism one per segment."
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    suffix = "_small" if args.small else ""
    out = RESULTS_DIR / f"simulate_scale{suffix}.csv"
    write_csv(out, results, validations, dataset_bytes)
    shown = [c for c in (8, 64, 256) if c in args.config_counts] or list(args.config_counts[:3])
    png = RESULTS_DIR / f"simulate_scale{suffix}.png"
    plot(png, results, validations, shown)
    print(f"\nwrote {out} and {png}")
    missed = [v for v in validations if abs(v.error) > TARGET_ERROR]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
