"""bench/benchlib/claims.py on the test cluster: the claim reads an index, never every config."""

from __future__ import annotations

from typing import Any

import psycopg
from benchlib.claims import (
    add_pending_configs,
    claim_latencies,
    claim_plans,
    full_scans,
    start_workload,
    unit_in_flight,
)


def test_a_claim_among_10k_pending_configs_scans_none_of_them_whole(dsn: str, conn: psycopg.Connection[Any]) -> None:
    workload = start_workload(dsn)
    try:
        add_pending_configs(dsn, workload, 10_000)
        with unit_in_flight(dsn, 1) as held:
            assert held is not None
            assert len(claim_latencies(dsn, 0, claims=3)) == 3  # each claim found a unit
            plans = claim_plans(dsn, 0)
        assert any("configs_claim_idx" in plan for plan in plans)
        assert full_scans(plans) == []
    finally:
        conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_full_scans_are_found_in_a_plan() -> None:
    plan = "Query Text: SELECT 1\nHash Join\n  ->  Seq Scan on configs c  (cost=0.00..1.00 rows=1 width=4)"
    assert full_scans([plan]) == ["->  Seq Scan on configs c  (cost=0.00..1.00 rows=1 width=4)"]
