"""Scaling out with a mixed workload (mlp + cnn + mobilenetv2) on 1 and 2 local segments and on 2 and 4 segment
servers, each run beside the simulator's prediction of it, fitted on another run.

The *mixed* phase: three workloads run together by one scheduler (one per model, their configs differing in size
and learning rate), on

* a local cluster with 1 segment and one with 2 segments (worker backends of one server), and
* a coordinator with 2 segment servers (3 PostgreSQL servers on loopback) and one with 4 (5 servers) (the
  ``multi-server`` backend: each segment server holds its shards and trains, the coordinator passes the state in
  and records what comes back).

The *calibration* phase: other configs of the same architectures (one per architecture, another learning rate,
more epochs), on the local clusters and the 2-segment coordinator before their mixed phase, and on a coordinator
with 1 segment server (2 servers). Both phases run after a warm-up in the same scheduler run, on the same warm
backends.

Each mixed run is predicted (``benchlib.fit.predict_run``: the MOP simulation, with claim_unit's order between
workloads) from a calibration run on another segment count of the same backend, from that run's unit log alone:
per architecture the training cost per row, the fixed cost per unit (the hop, the round trips to a segment
server), the validation cost, what a config's first unit costs beyond the others (its initial state) and what a
cold unit does (its backend compiles the architecture's functions; which units are cold follows the product that ran
the phase, recorded as ``cold_rule`` in scaling_runs.csv: ``benchlib.simulation.COLD_RULES``), and the time between
units.

Every setup is measured ``--repeats`` times, in turns (a round of all setups, then the next round, each round
starting one setup later), and each repeat of a mixed run is predicted from the calibration run of the same round.
Target: the median prediction within 10% of the median measured makespan for every mixed run whose segments each
have a core (``--cores``, default all of this machine's), else exit 1. The 4 segment servers share 2 cores: the
simulation models that by processor sharing (``benchlib.simulation.on_cores``), and the table shows how far it is
off, outside the target (the scale claims of simulate_scale.py give every segment a core)::

    .venv/bin/python bench/scaling.py            # 6000 rows; calibration 3 epochs, mixed 2 epochs; 5 repeats
    .venv/bin/python bench/scaling.py --small    # the local setups, mlp and cnn only, 2000 rows, 2 epochs, 1 repeat
    .venv/bin/python bench/scaling.py --reuse-runs  # predict the committed runs again (no database)

Writes bench/results/scaling[_small].csv (the table), scaling_runs[_small].csv and scaling_units[_small].csv
(every phase and its unit log, from which --reuse-runs and tests/bench/test_fit.py compute the predictions
again) and scaling_sent[_small].csv (the shards sent to each setup's segment servers).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchlib import RESULTS_DIR, step
from benchlib.fit import ALL, TARGET_ERROR, RepeatedPrediction, UnitCost, fit_run, predict_run, relative_error
from benchlib.mixed import PhaseRun, Spec, read_runs, run_phases, write_runs
from benchlib.mop import load_workload_data

from cerebro_db.backends import multi_server
from cerebro_db.testing.clusters import temporary_cluster, temporary_multi_server
from cerebro_db.text_table import format_table

CALIBRATION = "calibration"
MIXED = "mixed"
#: One config per architecture (batch size 64 throughout): what the costs are fitted on.
CALIBRATION_SPECS = (
    Spec("mlp", '{"hidden_units": [64, 256], "lr": [0.003]}'),
    Spec("cnn", '{"filters": [8, 16], "dense_units": [32], "lr": [0.003]}'),
    Spec("mobilenetv2", '{"alpha": [0.35], "lr": [0.003]}'),
)
#: The same architectures, other learning rates and more configs: what is predicted.
MIXED_SPECS = (
    Spec("mlp", '{"hidden_units": [64, 256], "lr": [0.001, 0.01]}'),
    Spec("cnn", '{"filters": [8, 16], "dense_units": [32], "lr": [0.001, 0.01]}'),
    Spec("mobilenetv2", '{"alpha": [0.35], "lr": [0.0005, 0.01]}'),
)
#: The hyper-parameters that name a cost key in the costs table.
SIZE_PARAMS = ("hidden_units", "filters", "alpha")
#: --small: a smoke test of the local setups without mobilenetv2 (slow to build).
SMALL_MODELS = ("mlp", "cnn")


@dataclass(frozen=True)
class Setup:
    name: str
    segments: int
    #: Segment servers (0: local segments of one server).
    servers: int
    phases: tuple[str, ...]
    #: The setup whose calibration run predicts this setup's mixed run.
    fitted_on: str | None = None


LOCAL_1 = "local, 1 segment"
LOCAL_2 = "local, 2 segments"
SERVERS_1 = "multi-server, 1 segment"
SERVERS_2 = "multi-server, 2 segments"
SERVERS_4 = "multi-server, 4 segments"
SETUPS = (
    Setup(LOCAL_1, 1, 0, (CALIBRATION, MIXED), fitted_on=LOCAL_2),
    Setup(LOCAL_2, 2, 0, (CALIBRATION, MIXED), fitted_on=LOCAL_1),
    Setup(SERVERS_1, 1, 1, (CALIBRATION,)),
    Setup(SERVERS_2, 2, 2, (CALIBRATION, MIXED), fitted_on=SERVERS_1),
    Setup(SERVERS_4, 4, 4, (MIXED,), fitted_on=SERVERS_2),
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--small", action="store_true", help="local setups only, mlp and cnn, 2000 rows, 2 epochs in both phases"
    )
    parser.add_argument("--rows", type=int, default=6000, help="Fashion-MNIST rows (train + validation)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the mixed workloads")
    parser.add_argument(
        "--calibration-epochs", type=int, default=3, help="at least 2: a config's first unit costs more (fitted apart)"
    )
    parser.add_argument("--seeds", type=int, default=20, help="simulations per prediction")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="measurements of every setup, taken in turns (the target compares medians)",
    )
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores the segments share")
    parser.add_argument(
        "--reuse-runs",
        action="store_true",
        help="predict the committed runs (results/scaling_runs.csv, scaling_units.csv) again instead of running them",
    )
    args = parser.parse_args(argv)
    if args.small:
        args.rows, args.calibration_epochs, args.epochs, args.repeats = 2000, 2, 2, 1
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    models = SMALL_MODELS if args.small else tuple(s.model for s in MIXED_SPECS)
    args.calibration_specs = [s for s in CALIBRATION_SPECS if s.model in models]
    args.mixed_specs = [s for s in MIXED_SPECS if s.model in models]
    args.setups = [s for s in SETUPS if not (args.small and s.servers)]
    # what benchlib.mop.load_workload_data reads
    args.seed, args.validation_fraction, args.warmup_rows = 7, 0.1, 600
    return args


@contextlib.contextmanager
def started(setup: Setup) -> Iterator[tuple[str, Path | None]]:
    """(coordinator DSN, segment servers' passfile) of a throwaway cluster for ``setup``."""
    if setup.servers:
        with temporary_multi_server(setup.servers) as cluster:
            yield cluster.coordinator, cluster.passfile
    else:
        with temporary_cluster(segments=setup.segments) as config:
            yield config.dsn(), None


@dataclass
class Sent:
    """The shards sent to the segment servers before the run (binary COPY through the scheduler)."""

    bytes: int
    seconds: float


#: What was sent to a setup's segment servers in one repeat: (setup, repeat).
SentKey = tuple[str, int]


def write_sent(path: Path, sent: dict[SentKey, Sent]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["setup", "repeat", "bytes", "seconds"])
        writer.writerows([setup, repeat, s.bytes, s.seconds] for (setup, repeat), s in sent.items())


def read_sent(path: Path) -> dict[SentKey, Sent]:
    """What :func:`write_sent` wrote; nothing for runs recorded before it was (their shards sent are not known)."""
    if not path.exists():
        return {}
    with open(path, newline="") as file:
        return {
            (row["setup"], int(row.get("repeat") or 1)): Sent(int(row["bytes"]), float(row["seconds"]))
            for row in csv.DictReader(file)
        }


def measure(setup: Setup, repeat: int, args: argparse.Namespace) -> tuple[list[PhaseRun], Sent]:
    specs = {CALIBRATION: (args.calibration_specs, args.calibration_epochs), MIXED: (args.mixed_specs, args.epochs)}
    with started(setup) as (dsn, passfile):
        load_workload_data(dsn, "scaling", setup.segments, args)
        tick = time.perf_counter()
        sent = sum(multi_server.distribute(dsn, name, passfile) for name in ("scaling", "scaling_warmup"))
        sending = Sent(sent, time.perf_counter() - tick if setup.servers else 0.0)
        phases = {name: specs[name] for name in setup.phases}
        runs = run_phases(
            dsn, setup.name, setup.segments, setup.servers, "scaling", "scaling_warmup", phases, args.seed, passfile
        )
    return [dataclasses.replace(run, repeat=repeat) for run in runs], sending


def run_table(runs: Sequence[PhaseRun], sent: dict[SentKey, Sent]) -> str:
    def samples_per_s(run: PhaseRun) -> float:
        return sum(u["rows"] for u in run.units) / run.window_s

    # each repeat's speeds against its own first mixed run's (1 local segment)
    base: dict[int, float] = {}
    for run in runs:
        if run.phase == MIXED:
            base.setdefault(run.repeat, samples_per_s(run))
    rows = []
    for run in runs:
        busy = sum(u["finished"] - u["started"] for u in run.units) / (run.segments * run.window_s)
        sending = sent.get((run.setup, run.repeat))
        rows.append(
            [
                run.setup,
                run.phase,
                str(run.repeat),
                run.servers + 1,
                f"{len(run.configs)} x {run.epochs}",
                f"{run.window_s:.1f}",
                f"{samples_per_s(run):.0f}",
                f"{samples_per_s(run) / base[run.repeat]:.2f}" if run.phase == MIXED else "-",
                f"{100 * busy:.1f}%",
                "not recorded"
                if sending is None
                else f"{sending.bytes / 2**20:.1f} MiB in {sending.seconds:.2f} s"
                if sending.bytes
                else "-",
                f"{run.runnable:.2f}",
                "not recorded" if run.steal is None else f"{100 * run.steal:.1f}%",
            ]
        )
    headers = [
        "setup",
        "phase",
        "repeat",
        "PostgreSQL servers",
        "configs x epochs",
        "makespan s",
        "samples/s",
        "speed vs local 1",
        "segments busy",
        "shards sent",
        "runnable",
        "steal",
    ]
    return format_table(headers, rows, right=[False, False, *([True] * 10)])


def prediction_rows(predictions: Sequence[RepeatedPrediction]) -> list[list[str]]:
    rows = []
    for p in predictions:
        for model in [*p.target.models, ALL]:
            measured, predicted = p.measured(model), p.predicted(model)
            configs = sum(1 for info in p.target.configs.values() if model in (ALL, info.model))
            rows.append(
                [
                    p.target.setup,
                    model,
                    str(configs),
                    ", ".join(f"{r.measured[model].makespan_s:.1f}" for r in p.repeats),
                    f"{measured.makespan_s:.1f}",
                    ", ".join(f"{r.predicted[model].makespan_s:.1f}" for r in p.repeats),
                    f"{predicted.makespan_s:.1f}",
                    f"{100 * p.error(model):+.1f}%",
                    p.verdict if model == ALL else "",
                    f"{100 * measured.utilization:.1f}%",
                    f"{100 * predicted.utilization:.1f}%",
                    f"{100 * measured.hop_share:.1f}%",
                    f"{100 * predicted.hop_share:.1f}%",
                    ", ".join(f"{r.training_vs_fit:.2f}" for r in p.repeats) if model == ALL else "",
                    p.fitted.setup if model == ALL else "",
                ]
            )
    return rows


def prediction_table(predictions: Sequence[RepeatedPrediction]) -> str:
    headers = [
        "mixed run",
        "model",
        "configs",
        "makespan s, each repeat",
        "median s",
        "predicted s, each repeat",
        "predicted median s",
        "error",
        f"<= {100 * TARGET_ERROR:.0f}%",
        "util",
        "predicted util",
        "hop share",
        "predicted hop share",
        "training / fit, each repeat",
        "fitted on (calibration run)",
    ]
    return format_table(headers, prediction_rows(predictions), right=[False, False, *([True] * 12), False])


def costs_table(predictions: Sequence[RepeatedPrediction]) -> str:
    """What each prediction's fits measured per cost key (the model and its hyper-parameters but lr): the median
    over the repeats' calibration runs."""
    rows = []
    for p in predictions:
        fits = [fit_run(r.fitted, r.cores).costs for r in p.repeats]
        for key in fits[0]:
            model, params = json.loads(key)
            size = ", ".join(f"{k} {v}" for k, v in params.items() if k in SIZE_PARAMS)
            cost = UnitCost(
                **{
                    f.name: statistics.median(getattr(c[key], f.name) for c in fits)
                    for f in dataclasses.fields(UnitCost)
                }
            )
            rows.append(
                [
                    p.fitted.setup,
                    f"{model} ({size})",
                    f"{1000 * cost.train_row_s:.3f}",
                    f"{cost.fixed_s:.3f}",
                    f"{1000 * cost.validation_row_s:.3f}",
                    f"{cost.first_unit_s:.2f}",
                    f"{cost.cold_s:.2f}",
                    f"{cost.cold_validation_s:.2f}",
                ]
            )
    headers = [
        "fitted on",
        "cost key",
        "train ms/row",
        "fixed s/unit",
        "validation ms/row",
        "first unit s",
        "cold unit s",
        "cold validation s",
    ]
    return format_table(headers, rows, right=[False, False, *([True] * 6)])


#: The ``repeat`` of scaling.csv's rows that hold the medians over the repeats (what the target compares).
MEDIAN = "median"


def write_csv(path: Path, predictions: Sequence[RepeatedPrediction]) -> None:
    """Per mixed run and model, a row for each repeat and one for the medians."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "setup",
                "repeat",
                "segments",
                "segment_servers",
                "cores",
                "model",
                "makespan_s",
                "predicted_s",
                "error",
                "utilization",
                "predicted_utilization",
                "hop_share",
                "predicted_hop_share",
                "fitted_on",
                "fitted_segments",
                "runnable",
                "training_vs_fit",
            ]
        )
        for p in predictions:
            cores = p.repeats[0].cores
            for model in [*p.target.models, ALL]:
                rows = [
                    (str(r.target.repeat), r.measured[model], r.predicted[model], r.target.runnable, r.training_vs_fit)
                    for r in p.repeats
                ]
                runnable = statistics.median(r.target.runnable for r in p.repeats)
                rows.append((MEDIAN, p.measured(model), p.predicted(model), runnable, p.training_vs_fit))
                for repeat, m, q, load, training in rows:
                    writer.writerow(
                        [
                            p.target.setup,
                            repeat,
                            p.target.segments,
                            p.target.servers,
                            cores,
                            model,
                            f"{m.makespan_s:.3f}",
                            f"{q.makespan_s:.3f}",
                            f"{relative_error(q.makespan_s, m.makespan_s):.4f}",
                            f"{m.utilization:.4f}",
                            f"{q.utilization:.4f}",
                            f"{m.hop_share:.4f}",
                            f"{q.hop_share:.4f}",
                            p.fitted.setup,
                            p.fitted.segments,
                            f"{load:.2f}",
                            f"{training:.3f}",
                        ]
                    )


def predict_all(runs: Sequence[PhaseRun], seeds: int, cores: int) -> list[RepeatedPrediction]:
    """Each setup's mixed runs, each predicted from the calibration run of the same repeat of the setup it is
    fitted on."""
    by_key = {(r.setup, r.phase, r.repeat): r for r in runs}
    predictions = []
    for setup in SETUPS:
        repeats = sorted(k for name, phase, k in by_key if (name, phase) == (setup.name, MIXED))
        if setup.fitted_on is None or not repeats:
            continue
        own = [
            predict_run(by_key[(setup.fitted_on, CALIBRATION, k)], by_key[(setup.name, MIXED, k)], seeds, cores)
            for k in repeats
        ]
        predictions.append(RepeatedPrediction(own))
    return predictions


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    suffix = "_small" if args.small else ""
    runs_csv, units_csv = RESULTS_DIR / f"scaling_runs{suffix}.csv", RESULTS_DIR / f"scaling_units{suffix}.csv"
    sent_csv = RESULTS_DIR / f"scaling_sent{suffix}.csv"
    if args.reuse_runs:
        runs, sent = read_runs(runs_csv, units_csv), read_sent(sent_csv)
    else:
        runs, sent = [], {}
        # In turns, so that each setup's repeats meet the machine at different times, and each round starts one
        # setup later, so that no setup always runs first or after the same one.
        for repeat in range(1, args.repeats + 1):
            turn = (repeat - 1) % len(args.setups)
            for setup in args.setups[turn:] + args.setups[:turn]:
                step(f"repeat {repeat} of {args.repeats}, {setup.name}: {', '.join(setup.phases)}")
                measured, sent[(setup.name, repeat)] = measure(setup, repeat, args)
                runs += measured
                os.sync()  # the stopped cluster's files written back now, not while the next setup runs
        RESULTS_DIR.mkdir(exist_ok=True)
        write_runs(runs_csv, units_csv, runs)
        write_sent(sent_csv, sent)
    predictions = predict_all(runs, args.seeds, args.cores)
    print(
        f"Scaling with a mixed workload: {args.rows} Fashion-MNIST rows (10% validation), batch size 64;"
        f" calibration: {', '.join(f'{s.model} {s.space}' for s in args.calibration_specs)} x"
        f" {args.calibration_epochs} epoch(s); mixed: {', '.join(f'{s.model} {s.space}' for s in args.mixed_specs)}"
        f" x {args.epochs} epoch(s);"
        f" {args.cores} cores\n"
    )
    order = [setup.name for setup in SETUPS]
    by_phase = sorted(runs, key=lambda r: (r.phase != MIXED, r.repeat, order.index(r.setup)))
    print(run_table(by_phase, sent))
    print(
        "\nmakespan: server clock, from resuming the phase's workloads (on warm backends) to their last commit;"
        " repeat: each setup was measured in turn, the whole round again for each repeat; speed: mixed samples/s"
        " against 1 local segment's of the same repeat; segments busy: unit time / (makespan x segments);"
        " shards sent: each segment server's training shard plus the validation set, by binary COPY through the"
        " scheduler; runnable: mean runnable tasks on the machine during the phase (/proc/stat), its segments' and any"
        " other work; steal: the share of the machine's CPU time the hypervisor gave to other machines during the phase"
        " (/proc/stat).\n"
    )
    print(
        f"Each mixed run beside the simulator's prediction of it (MOP, mean of {args.seeds} seeds), fitted on the"
        f" calibration run of another setup (other configs, another segment count) in the same repeat;"
        f" {args.cores} cores shared by the segments. The target compares the medians over the repeats: on this"
        " virtual machine one repeat's units train up to a quarter faster or slower than another's (the training /"
        " fit column; benchlib.fit.RepeatedPrediction).\n"
    )
    print(prediction_table(predictions))
    print(
        "\nmakespan: from resuming the mixed workloads to the model's last commit; util: the model's unit time /"
        " (segments x the run's makespan); hop share: the share of the model's unit time that neither trains nor"
        " validates (state load + save, the round trips to a segment server, the unit's SQL); training / fit: the"
        " median warm unit's training time over what the fit's cost per row gives it, stretched as processor sharing"
        " stretched it on the run's measured schedule (1.00: the fitted costs held; benchlib.fit.training_vs_fit)."
    )
    print("\nWhat each prediction's fits measured on its calibration runs, per cost key (median over the repeats):\n")
    print(costs_table(predictions))
    print(
        "\nfirst unit: what a config's first unit costs beyond the others outside training (its initial state is"
        " built); cold unit: what a unit's training costs beyond a warm one's when its backend compiles the cost"
        " key's train function; cold validation: the same for the test function. Which units are cold follows the"
        f" product that ran the phase (here: {', '.join(sorted({r.cold_rule for r in runs}))}): seeded, before"
        " training.seed_keras, each config's first unit cleared its backend's compiled functions; cached, since, a"
        " backend compiles a cost key's functions once (again only after its model left the backend's cache). The"
        " simulator charges them where its schedule has them (benchlib.fit.cold_units)."
    )
    out = RESULTS_DIR / f"scaling{suffix}.csv"
    write_csv(out, predictions)
    print(f"results: {out}")
    return 0 if all(p.passed for p in predictions if p.in_target) else 1


if __name__ == "__main__":
    sys.exit(main())
