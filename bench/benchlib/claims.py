"""``claim_unit`` probes (bench/claim_latency.py, bench/isolation.py): many pending configs of one user, a unit in
flight on the other segment, claims timed and rolled back, and the plans of the statements inside a claim."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import psycopg

from cerebro_db import sample_data

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
            "INSERT INTO model_states (config_id, state_file, state_bytes, visited_segments)"
            " SELECT id, format('c%%s-x0.state', id), 1, ARRAY[floor(random() * 2)::int] FROM unnest(%s::int[]) id"
            " WHERE random() < 0.67",
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


def claim_latency_by_pending(owner: str) -> list[tuple[int, list[float]]]:
    """``claim_unit``'s latency (ms) on segment 0 while a unit holds segment 1, as one user's pending configs grow."""
    workload = start_workload(owner)
    latencies = []
    for size in SIZES:
        add_pending_configs(owner, workload, size)
        with unit_in_flight(owner, 1):
            latencies.append((size, claim_latencies(owner, 0)))
    return latencies
