"""Latency of ``claim_unit`` with many pending configs from one user.

The scheduler calls ``claim_unit(segment)`` whenever a segment is free; it must stay fast however many configs
wait. On a throwaway 2-segment cluster, one workload (an mlp on a small tabular dataset) grows to 1k, 10k and
100k pending configs, about a third fresh, a third halfway through their epoch on each segment; while another
session holds a claim on segment 1 (a unit in flight), each claim on segment 0 runs in its own transaction,
rolled back, and is timed from the client (loopback). It prints median and p95 per size, the plans of the
claim's inner statements at the largest size (auto_explain), writes ``bench/results/claim_latency.csv``, and
exits non-zero if the p95 at 100k misses the target or a plan scans configs or model_states whole.

The configs are inserted in bulk by the cluster's superuser with ``session_replication_role = replica``, which
skips the triggers (each row would otherwise call PL/Python to validate its params and check the owner's limits:
minutes for 100k rows); their params are copied from a config the API validated.

    .venv/bin/python bench/claim_latency.py                 # 1k / 10k / 100k, 50 claims each
    .venv/bin/python bench/claim_latency.py --small         # 1k / 10k
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections.abc import Sequence
from typing import Any

from benchlib import RESULTS_DIR
from benchlib.claims import (
    SIZES,
    TARGET_MS,
    add_pending_configs,
    claim_latencies,
    claim_plans,
    full_scans,
    percentile,
    start_workload,
    unit_in_flight,
)

from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="1k and 10k configs only")
    parser.add_argument("--claims", type=int, default=50, help="claims timed per size (default 50)")
    parser.add_argument("--plans", action="store_true", help="print the inner statements' plans in full")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SIZES[:2] if args.small else SIZES
    rows: list[list[Any]] = []
    with temporary_cluster(segments=2) as cluster:
        dsn = cluster.dsn()
        workload = start_workload(dsn)
        for size in sizes:
            add_pending_configs(dsn, workload, size)
            with unit_in_flight(dsn, 1):
                times = claim_latencies(dsn, 0, args.claims)
                if size == sizes[-1]:
                    plans = claim_plans(dsn, 0)
            rows.append([size, len(times), statistics.median(times), percentile(times, 0.95), max(times)])
    scans = full_scans(plans)
    if args.plans:
        print("\n\n".join(plans), end="\n\n")
    print(
        format_table(
            ["pending configs", "claims", "median ms", "p95 ms", "max ms"],
            [[f"{r[0]:,}", r[1], f"{r[2]:.2f}", f"{r[3]:.2f}", f"{r[4]:.2f}"] for r in rows],
        )
    )
    print(
        f"\n{len(plans)} statements inside claim_unit at {sizes[-1]:,} configs; full scans of configs or model_states:"
        f" {len(scans)}"
    )
    for line in scans:
        print("   ", line)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / ("claim_latency_small.csv" if args.small else "claim_latency.csv")
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pending_configs", "claims", "median_ms", "p95_ms", "max_ms", "target_ms"])
        writer.writerows([[r[0], r[1], f"{r[2]:.3f}", f"{r[3]:.3f}", f"{r[4]:.3f}", TARGET_MS] for r in rows])
    print(f"wrote {out}")
    largest_p95 = rows[-1][3]
    if largest_p95 > TARGET_MS or scans:
        print(
            f"MISS: p95 {largest_p95:.2f} ms at {sizes[-1]:,} configs (target {TARGET_MS} ms), {len(scans)} full scans"
        )
        return 1
    print(f"ok: p95 {largest_p95:.2f} ms at {sizes[-1]:,} configs (target {TARGET_MS} ms), no full scan")
    return 0


if __name__ == "__main__":
    sys.exit(main())
