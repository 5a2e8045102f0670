"""Scaling out: local 1 segment vs local 2 segments vs 2 segment servers (multi-server), in one run.

The same grid of cnn configs on the same Fashion-MNIST rows, run by cerebro-db

* on a local cluster with 1 segment (one worker backend),
* on a local cluster with 2 segments (two worker backends of one server), and
* on a coordinator plus 2 segment servers (the ``multi-server`` backend: each server holds its
  shards and trains; the coordinator passes the state in and records what comes back),

each after a warm-up workload in the same scheduler run (as ``mop_vs_keras.py`` does). It
prints the makespan, samples/s, the speed-up against 1 local segment, the segments' busy
share, and what a hop costs beyond training; for the segment servers also how long sending
the shards took (binary COPY streamed through the scheduler, before the run)::

    .venv/bin/python bench/scaling.py            # 12000 rows, 4 configs x 3 epochs
    .venv/bin/python bench/scaling.py --small    # 3000 rows, 4 configs x 2 epochs

All servers run on this machine (loopback); with 2 cores the multi-server row shows the cost
of the extra hop round trips, not the gain of more machines (bench/simulate_scale.py predicts
that). Writes bench/results/scaling[_small].csv.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchlib import RESULTS_DIR
from benchlib.mop import MopRun, load_workload_data, parse_workload_args, run_mop

from cerebro_db.backends import multi_server
from cerebro_db.testing.clusters import temporary_cluster, temporary_multi_server
from cerebro_db.text_table import format_table

SPACE = '{"lr": [0.001, 0.003], "batch_size": [64, 128]}'


@dataclass
class Setup:
    name: str
    segments: int
    servers: int  # segment servers (0: local segments)


SETUPS = [Setup("local, 1 segment", 1, 0), Setup("local, 2 segments", 2, 0), Setup("multi-server, 2 segments", 2, 2)]


@dataclass
class Result:
    setup: Setup
    run: MopRun
    #: Bytes and seconds to send the shards to the segment servers (0 for local segments).
    sent_bytes: int
    send_s: float

    @property
    def busy(self) -> float:
        work = sum(u["finished"] - u["started"] for u in self.run.units)
        return work / (self.run.window_s * self.setup.segments)

    @property
    def hop_overhead_s(self) -> float:
        """Mean unit time beyond training and validation: claim, state in and out, round trips, commit."""
        return statistics.fmean(u["finished"] - u["started"] - u["train_s"] - u["validation_s"] for u in self.run.units)


@contextlib.contextmanager
def started(setup: Setup) -> Iterator[tuple[str, Path | None]]:
    """(coordinator DSN, segment servers' passfile) of a throwaway cluster for ``setup``."""
    if setup.servers:
        with temporary_multi_server(setup.servers) as cluster:
            yield cluster.coordinator, cluster.passfile
    else:
        with temporary_cluster(segments=setup.segments) as config:
            yield config.dsn(), None


def measure(setup: Setup, args: argparse.Namespace) -> Result:
    with started(setup) as (dsn, passfile):
        load_workload_data(dsn, "scaling", setup.segments, args)
        tick = time.perf_counter()
        sent = sum(multi_server.distribute(dsn, name, passfile) for name in ("scaling", "scaling_warmup"))
        send_s = time.perf_counter() - tick if setup.servers else 0.0
        run = run_mop(dsn, setup.segments, "scaling", "scaling_warmup", args, passfile)
    return Result(setup, run, sent, send_s)


def report(results: list[Result]) -> None:
    base = results[0].run.samples_per_s
    rows = []
    for r in results:
        sending = f"{r.sent_bytes / 2**20:.1f} MiB in {r.send_s:.2f} s" if r.sent_bytes else "-"
        rows.append(
            [
                r.setup.name,
                r.setup.servers + 1,
                f"{r.run.window_s:.1f}",
                f"{r.run.samples_per_s:.0f}",
                f"{r.run.samples_per_s / base:.2f}",
                f"{100 * r.busy:.1f}%",
                f"{1000 * r.hop_overhead_s:.0f}",
                sending,
                f"{r.run.val_metric:.4f}",
            ]
        )
    print(
        format_table(
            [
                "setup",
                "PostgreSQL servers",
                "makespan s",
                "samples/s",
                "speed vs local 1",
                "segments busy",
                "hop overhead ms",
                "shards sent",
                "final val acc",
            ],
            rows,
            right=[False, True, True, True, True, True, True, True, True],
        )
    )
    print(
        "\nmakespan: server clock, from resuming the measured workload (on warm backends) to its last commit;"
        " segments busy: unit time / (makespan x segments); hop overhead: mean unit time minus training and"
        " validation (claim, state load/save, the round trips to a segment server, commit); shards sent: each"
        " segment server's training shard plus the validation set, by binary COPY through the scheduler."
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_workload_args(argv, __doc__, rows=12000, epochs=3, small=(3000, 2), configs=SPACE)
    results = [measure(setup, args) for setup in SETUPS]
    report(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"scaling{'_small' if args.small else ''}.csv"
    with open(out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "setup",
                "segments",
                "segment_servers",
                "makespan_s",
                "samples_per_s",
                "busy",
                "hop_overhead_s",
                "sent_bytes",
                "send_s",
                "val_metric",
            ]
        )
        writer.writerows(
            [
                r.setup.name,
                r.setup.segments,
                r.setup.servers,
                r.run.window_s,
                r.run.samples_per_s,
                r.busy,
                r.hop_overhead_s,
                r.sent_bytes,
                r.send_s,
                r.run.val_metric,
            ]
            for r in results
        )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
