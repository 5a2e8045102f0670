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

Other bench scripts import :func:`add_pending_configs`, :func:`claim_latencies` and :func:`claim_plans`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg

from cerebro_db import sample_data
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_MS = 20.0
SIZES = (1_000, 10_000, 100_000)
DATASET = "claim_bench"


def start_workload(dsn: str) -> int:
    """A small tabular dataset and a one-config mlp workload of the connecting role; returns its id."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        x, y = sample_data.synthetic_tabular(200, 4, 2, seed=1)
        sample_data.load_tabular_table(conn, DATASET, x, y)
        conn.execute("SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3}')", [DATASET, DATASET])
        row = conn.execute(
            "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.01]}', max_epochs => 3)", [DATASET]
        ).fetchone()
    assert row is not None
    workload: int = row[0]
    return workload


def add_pending_configs(dsn: str, workload: int, total: int, *, seed: float = 0.5) -> None:
    """Grow ``workload`` to ``total`` pending configs (superuser: triggers skipped), about a third fresh,
    a third with segment 0 visited this epoch and a third with segment 1; params copied from its first config."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT setseed(%s)", [seed])
        conn.execute("SET LOCAL session_replication_role = replica")
        added = conn.execute(
            "INSERT INTO configs (workload_id, params, max_epochs, seed)"
            " SELECT c.workload_id, c.params, c.max_epochs, g"
            " FROM (SELECT * FROM configs WHERE workload_id = %(w)s ORDER BY config_id LIMIT 1) c,"
            "      generate_series(1, %(total)s - (SELECT count(*) FROM configs WHERE workload_id = %(w)s)) g"
            " RETURNING config_id",
            {"w": workload, "total": total},
        ).fetchall()
        conn.execute(
            "INSERT INTO model_states (config_id, state, visited_segments)"
            " SELECT id, '\\x00', ARRAY[floor(random() * 2)::int] FROM unnest(%s::int[]) id WHERE random() < 0.67",
            [[r[0] for r in added]],
        )
        conn.execute("ANALYZE configs")
        conn.execute("ANALYZE model_states")


@contextlib.contextmanager
def unit_in_flight(dsn: str, segment: int) -> Iterator[int | None]:
    """Another session holding a claim on ``segment`` (as a running unit does); yields its config."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT config_id FROM claim_unit(%s)", [segment]).fetchone()
        try:
            yield None if row is None else row[0]
        finally:
            conn.rollback()


def claim_latencies(dsn: str, segment: int, claims: int = 50) -> list[float]:
    """Milliseconds of ``claims`` claims on ``segment``, each in its own transaction, rolled back (client-timed).

    Every claim must find a unit: a claim that returns nothing measures nothing, and raises.
    """
    times = []
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")  # connection set-up and first-call planning are not the claim's
        conn.rollback()
        for _ in range(claims):
            started = time.perf_counter()
            row = conn.execute("SELECT config_id FROM claim_unit(%s)", [segment]).fetchone()
            times.append((time.perf_counter() - started) * 1000)
            conn.rollback()
            if row is None:
                raise RuntimeError(f"claim_unit({segment}) found no unit to claim")
    return times


def claim_plans(dsn: str, segment: int) -> list[str]:
    """EXPLAIN ANALYZE of every statement one claim runs inside ``claim_unit`` (auto_explain; superuser)."""
    plans: list[str] = []
    with psycopg.connect(dsn) as conn:
        conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
        for setting in ("log_min_duration = 0", "log_analyze = on", "log_nested_statements = on", "log_level = notice"):
            conn.execute(f"SET LOCAL auto_explain.{setting}")  # fixed text
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SELECT config_id FROM claim_unit(%s)", [segment])
        conn.rollback()
    return [plan for plan in plans if "Query Text" in plan]


def full_scans(plans: Sequence[str]) -> list[str]:
    """Plan lines that read configs or model_states whole."""
    return [
        line.strip()
        for plan in plans
        for line in plan.splitlines()
        if "Seq Scan on configs" in line or "Seq Scan on model_states" in line
    ]


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


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
