"""Two tenants on one server (bench/isolation.py): the victim's fixed workload run beside what the other tenant
does (a flood of configs, a crash loop, a config too big), and what became of both."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import errors

from cerebro_db import install
from cerebro_db.cluster import ClusterConfig
from cerebro_db.testing import faults, verify

VICTIM_SPACE = {"lr": [0.001, 0.003], "batch_size": [64, 128], "filters": 16, "dense_units": 64}
VICTIM_EPOCHS = 4
FLOOD_CONFIGS = 10_000
TOO_BIG = {"filters": 1024, "batch_size": 16384}


@dataclasses.dataclass
class Run:
    scenario: str
    makespan_s: float
    epochs_lost: int
    violations: int
    other: str


def one(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, list(params)).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def login(cluster: ClusterConfig, name: str) -> str:
    return dataclasses.replace(cluster, user=name, password=install.add_user(cluster.dsn(), name)).dsn()


def prepare(dsn: str, name: str, source: str, columns: str, shape: str | None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', feature_columns => %s, feature_shape => %s,"
            " validation_fraction => 0.2)",
            [name, source, columns, shape],
        )


def settled(dsn: str, query: str, *params: Any) -> Any:
    """``query``'s one value on a fresh connection, or None while the server restarts after a crash."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            return one(conn, query, *params)
    except psycopg.OperationalError:
        return None


def victim_run(owner: str, victim: str, scenario: str, attack: Callable[[], Callable[[], str]]) -> Run:
    """Launch the victim's workload right after ``attack`` (which returns what became of it, read
    once the victim finished); stop what the attacker left running, wait until the segments are free."""
    report = attack()
    with psycopg.connect(victim, autocommit=True) as tenant:
        started = one(tenant, "SELECT clock_timestamp()")
        workload = one(
            tenant,
            "SELECT run_model_selection('victim_data', 'cnn', %s, max_epochs => %s, seed => 1)",
            json.dumps(VICTIM_SPACE),
            VICTIM_EPOCHS,
        )
    done = "SELECT status = 'completed' FROM workloads WHERE workload_id = %s"
    faults.poll(f"the victim's workload {scenario}", lambda: settled(owner, done, workload))
    other = report()
    with psycopg.connect(owner, autocommit=True) as conn:
        finished = one(
            conn,
            "SELECT max(u.finished_at) FROM units u JOIN configs c USING (config_id) WHERE c.workload_id = %s",
            workload,
        )
        conn.execute("UPDATE workloads SET status = 'stopped' WHERE status = 'running'")
        faults.poll("free segments", lambda: one(conn, "SELECT count(*) = 0 FROM active_units"))
        return Run(
            scenario,
            (finished - started).total_seconds(),
            verify.epochs_lost(conn, workload),
            len(verify.mop_violations(conn, workload)),
            other,
        )


def nothing() -> Callable[[], str]:
    return lambda: ""


def flood(attacker: str) -> Callable[[], str]:
    with psycopg.connect(attacker, autocommit=True) as conn:
        workload = one(
            conn,
            'SELECT run_model_selection(\'flood_data\', \'mlp\', \'{"lr": {"min": 0.001, "max": 0.1, "log": true}}\','
            " procedure => 'random', num_configs => %s, max_epochs => 1, seed => 2)",
            FLOOD_CONFIGS,
        )

    def report() -> str:
        with psycopg.connect(attacker, autocommit=True) as conn:
            done = one(conn, "SELECT count(*) FROM configs WHERE workload_id = %s AND status = 'completed'", workload)
        return f"{FLOOD_CONFIGS} configs pending, {done} trained meanwhile"

    return report


def crash_loop(attacker: str) -> Callable[[], str]:
    with psycopg.connect(attacker, autocommit=True) as conn:
        workload = one(
            conn,
            "SELECT run_model_selection('crash_data', 'crasher', '{\"kill\": [1]}', max_epochs => 2, seed => 3)",
        )
        config = one(conn, "SELECT config_id FROM configs WHERE workload_id = %s", workload)

    def report() -> str:
        with psycopg.connect(attacker, autocommit=True) as conn:
            status = one(conn, "SELECT status FROM configs WHERE config_id = %s", config)
            crashes = one(
                conn, "SELECT count(*) FROM unit_attempts WHERE config_id = %s AND outcome = 'crashed'", config
            )
        return f"crasher {status} after {crashes} crashes"

    return report


def too_big(attacker: str) -> Callable[[], str]:
    refusals = []
    space = json.dumps({"lr": [0.01], **TOO_BIG})
    launch = "SELECT run_model_selection('victim_data_big', 'cnn', %s, max_epochs => 1, name => 'too big')"
    with psycopg.connect(attacker, autocommit=True) as conn:
        try:
            conn.execute(launch, [space])
        except errors.InvalidParameterValue:
            refusals.append("refused at launch")
        # A tenant may raise the guard in their own session: the unit's check refuses it then.
        conn.execute("SET cerebro.max_training_mb = 1000000")
        conn.execute(launch, [space])

    def report() -> str:
        with psycopg.connect(attacker, autocommit=True) as conn:
            failed, trained = one(
                conn,
                "SELECT count(*) FILTER (WHERE c.status = 'failed'),"
                " (SELECT count(*) FROM units u JOIN configs t USING (config_id) WHERE t.workload_id = w.workload_id)"
                " FROM workloads w JOIN configs c USING (workload_id) WHERE w.name = 'too big' GROUP BY w.workload_id",
            )
        refusals.append(f"with the limit SET higher in its session: {failed} config failed in its unit")
        return ", ".join([*refusals, f"{trained} units trained"])

    return report
