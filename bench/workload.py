"""A whole model selection on 2 segments: makespan against the ideal, and segment utilization.

16 cnn configs of different sizes (filters x dense units x lr x batch size) x 5 epochs on 2
segments, run by cerebro-db on warm backends. From the unit log it reports

* the makespan (resume of the workload to the commit of its last unit) against the ideal,
  the total single-config work (the sum of every unit's time) spread evenly over the 2
  segments: what a schedule that never idles and never waits would take;
* each segment's utilization (its units' time over the makespan), and how long the tail
  is after the first segment ran out of work.

    .venv/bin/python bench/workload.py            # 6000 rows, 16 configs x 5 epochs
    .venv/bin/python bench/workload.py --small    # 2000 rows, 16 configs x 2 epochs

It starts its own throwaway cluster and writes bench/results/workload[_small].csv.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence

from benchlib import RESULTS_DIR
from benchlib.mop import WORKLOAD_SPACE, measure, parse_workload_args

from cerebro_db.text_table import format_table

SEGMENTS = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return parse_workload_args(argv, __doc__, rows=6000, epochs=5, small=(2000, 2), configs=WORKLOAD_SPACE)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = measure(SEGMENTS, args)

    work = sum(unit["finished"] - unit["started"] for unit in run.units)
    ideal = work / SEGMENTS
    makespan = run.window_s
    start = min(unit["started"] for unit in run.units)
    busy = {segment: 0.0 for segment in range(SEGMENTS)}
    last = {segment: start for segment in range(SEGMENTS)}
    for unit in run.units:
        busy[int(unit["segment"])] += unit["finished"] - unit["started"]
        last[int(unit["segment"])] = max(last[int(unit["segment"])], unit["finished"])
    tail = max(last.values()) - min(last.values())

    print(
        format_table(
            ["configs", "epochs", "units", "work s", "ideal s", "makespan s", "makespan / ideal", "tail s"]
            + [f"segment {s} busy" for s in busy],
            [
                [
                    run.configs,
                    run.epochs,
                    len(run.units),
                    f"{work:.1f}",
                    f"{ideal:.1f}",
                    f"{makespan:.1f}",
                    f"{makespan / ideal:.3f}",
                    f"{tail:.1f}",
                ]
                + [f"{100 * seconds / makespan:.1f}%" for seconds in busy.values()]
            ],
        )
    )
    print(
        "\nwork: the sum of every unit's time; ideal: work / segments; makespan: from resuming the workload"
        " (on warm backends) to its last commit; tail: from the first segment's last unit to the other's."
    )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"workload{'_small' if args.small else ''}.csv"
    with open(out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["segment", "started", "finished", "seconds"])
        writer.writerows(
            [int(u["segment"]), u["started"], u["finished"], u["finished"] - u["started"]] for u in run.units
        )
    print(f"unit log: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
