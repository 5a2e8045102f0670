"""Human-in-the-loop latency while 2 segments train: stop, epoch visibility, add_config.

While a workload of small ``cnn`` configs keeps both segments of a throwaway cluster busy
(the scheduler runs in a background thread of this process), it measures

(a) how long ``UPDATE configs SET status = 'stopped'`` takes to return, on a config that
    is training right now (target: p95 <= 50 ms; it must never wait for the unit in flight);
(b) what happens to that config afterwards: units of it that *start* after the stop
    committed (target: none), units of it that end after the stop (at most the one in
    flight), and the time from the stop until its unit in flight has ended, in seconds and
    in sub-epochs (target: <= 1 sub-epoch); the config is resumed once both segments have
    claimed a new unit since the stop;
(c) the time from an epoch's commit to its ``epoch_metrics`` row being visible from
    another session, which polls every ``--poll-ms`` (target: <= 1 s); and, in the
    scheduler's ``on_unit`` callback (after the unit's commit), whether the row is already
    visible from a third session (it must be, always);
(d) the time from ``add_config`` to the start of the new config's first unit, in seconds
    and in sub-epochs (target: <= 1 sub-epoch).

A sub-epoch (one unit, one hop) is measured two ways: against the unit the config had to wait
for (its own unit in flight for (b), the hop before it on its segment for (d)), which is what
"lands at the next hop" means, and, for information, against the mean unit after warm-up
(units table, finished_at - started_at). Then it prints a table::

    .venv/bin/python bench/hitl_latency.py                                 # 6000 rows, 100 stops, 20 adds
    .venv/bin/python bench/hitl_latency.py --rows 2000 --trials 4 --adds 2  # smoke test

It starts its own throwaway cluster (2 segments) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from benchlib import step
from benchlib.hitl import CapturedLog
from benchlib.hitl_analysis import Row, analyse, stats
from benchlib.hitl_trials import SEGMENTS, run

from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table as table

NOTES = """\
Notes: all times are one machine's clock (server clock_timestamp() and the backends' time.time()).
  (a) client perf_counter around the autocommit UPDATE (so it includes the commit and one round trip), on a
      config found in active_units (i.e. holding its unit lock) just before.
  (b) stop commit: it lies between the UPDATE's RETURNING clock_timestamp() (t0) and a SELECT clock_timestamp()
      right after it returned (t1). 'started after stop' counts units of the config with started_at > t1 and
      before its resume (started_at is taken when the unit's context is read, just after claim_unit in the same
      transaction), other than the one in flight; 'ending after stop' counts units of it ending after t0
      (the unit in flight: the first unit of the config ending after t0, if it still held the config's lock at
      t1 or started before t1). 'stop -> config idle' = its finished_at - t0 (0 if none was in flight);
      units.finished_at is taken inside the unit's transaction, a few ms before its commit. 'x its unit in flight'
      divides by that unit's own duration, from its claim (the transaction start active_units showed just before
      the stop) to its finished_at (1 = the stop landed at the very next hop); 'x mean unit' by the mean unit after
      warm-up, which epoch-ending units (with validation) and CPU contention exceed.
  (c) reference: units.finished_at of the epoch's last unit (inside its transaction, after the epoch_metrics
      insert and the state save; before the config update, on_epoch_end and COMMIT), so the latency is an upper
      bound that includes the rest of that transaction and the polling interval. epoch_metrics.finished_at is
      not used: see the notes above.
  (d) from add_config's RETURNING-time clock_timestamp() (just before its commit) to the started_at of the new
      config's first unit. 'x the hop it waited for' divides by the hop in flight at the add on the segment it
      ran on: from the previous unit's started_at there to the new unit's started_at (else by the mean unit).
      Like 'x its unit in flight' in (b), it is <= 1 exactly when the change landed at the next hop; the counts
      ('started after stop', 'ending after stop', 'other configs' units started first') say whether anything
      else ran first. 'segment free -> ...' is from the previous unit's finished_at to the new unit's started_at
      (commit, wake-up, claim); a segment idle at the add sees the new config at its next poll, within the
      scheduler's idle_wait (0.2 s here): users' changes notify nobody (a NOTIFY in their transaction would fail
      its commit once someone filled the notification queue). 'other configs' units started first' counts units
      that started after the add's commit and before the new config's first unit (a claim already under way at
      the commit may legitimately still pick another config)."""


# --------------------------------------------------------------------------- report


def report(args: argparse.Namespace, rows: list[Row], notes: list[str], sub_epoch: float, log: list[str]) -> bool:
    print()
    print(
        f"cerebro-db human-in-the-loop latency: {SEGMENTS} segments, {args.configs} cnn configs (filters "
        f"{args.filters}, dense {args.dense_units}, batch {args.batch_size}), {args.rows} Fashion-MNIST rows, "
        f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.2f}); "
        f"1 sub-epoch (mean unit after warm-up) = {sub_epoch:.3f} s"
    )
    print()
    body: list[list[str]] = []
    ok = True
    for row in rows:
        if row.values:
            p50, p95, top = stats(row.values)
            cells = [format(p50, row.fmt), format(p95, row.fmt), format(top, row.fmt)]
            verdict = "-" if row.check is None else ("PASS" if row.check(row.values) else "MISS")
        else:
            cells, verdict = ["-", "-", "-"], "-" if row.check is None else "NO DATA"
        ok = ok and verdict in ("-", "PASS")
        body.append([row.name, str(len(row.values)), *cells, row.target, verdict])
    print(table(["measurement", "n", "p50", "p95", "max", "target", "verdict"], body))
    print()
    for note in notes:
        print(f"- {note}")
    if log:
        print("- scheduler log (warnings and errors):")
        for line in log:
            print(f"    {line}")
    print()
    print(NOTES)
    return ok


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6000, help="Fashion-MNIST rows (train + validation)")
    parser.add_argument("--configs", type=int, default=4, help="cnn configs in the workload (lr 0.001, 0.002, ...)")
    parser.add_argument("--trials", type=int, default=100, help="stops for (a) and (b)")
    parser.add_argument("--adds", type=int, default=20, help="add_config calls for (d)")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="observer polling interval for (c)")
    parser.add_argument("--warmup-units", type=int, default=2, help="committed units per segment before measuring")
    parser.add_argument("--max-epochs", type=int, default=1000, help="high: the benchmark stops the workload itself")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--dense-units", type=int, default=32)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.configs < SEGMENTS + 1:
        parser.error(f"need --configs >= {SEGMENTS + 1}, so both segments stay busy while one config is stopped")
    if args.trials < 1 or args.adds < 0 or args.rows < 100 or args.poll_ms <= 0:
        parser.error("need --trials >= 1, --adds >= 0, --rows >= 100 and --poll-ms > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    captured = CapturedLog()
    logging.getLogger("cerebro.scheduler").addHandler(captured)
    step(f"starting a throwaway cluster with {SEGMENTS} segments")
    with temporary_cluster(segments=SEGMENTS) as cluster:
        dsn = cluster.dsn()
        results, monitor, observer = run(dsn, args)
        rows, notes, sub_epoch = analyse(dsn, results, monitor, observer)
    step("done")
    return 0 if report(args, rows, notes, sub_epoch, captured.messages) else 1


if __name__ == "__main__":
    sys.exit(main())
