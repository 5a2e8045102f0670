"""A config whose unit kills its server process fails after its crash budget; everyone else goes on.

The crashes restart every backend of the server, so this module runs on a cluster of its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from cerebro_db import sample_data
from cerebro_db.cluster import ClusterConfig
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing import faults, verify
from cerebro_db.testing.clusters import temporary_cluster
from tests.conftest import TINY_CNN, add_tenant, one

#: Generous: only a hang (the crash loop this guards against) comes near it.
HANG = 900


@pytest.fixture(scope="module")
def crash_cluster() -> Iterator[ClusterConfig]:
    with temporary_cluster(segments=2) as config:
        with psycopg.connect(config.dsn(), autocommit=True) as owner:
            sample_data.load_fashion_mnist(owner, "fashion", limit=600)
            owner.execute("GRANT SELECT ON fashion TO cerebro_user")
            owner.execute("SELECT register_model('crasher', %s)", [faults.CRASHING_SCRIPT])
        yield config


def launch(dsn: str, model: str, space: dict[str, Any], epochs: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        dataset = f"fashion_{model}"
        conn.execute(
            "SELECT * FROM prepare_dataset(%s, 'public.fashion', 'label', feature_columns => '{pixels}',"
            " feature_shape => '{28,28,1}', validation_fraction => 0.2)",
            [dataset],
        )
        workload: int = one(
            conn,
            "SELECT run_model_selection(%s, %s, %s, max_epochs => %s, seed => 5)",
            dataset,
            model,
            json.dumps(space),
            epochs,
        )
    return workload


def test_a_config_that_kills_its_backend_fails_after_its_budget_and_the_other_tenant_completes(
    crash_cluster: ClusterConfig,
) -> None:
    owner_dsn = crash_cluster.dsn()
    mallory, victim = add_tenant(crash_cluster, owner_dsn, "mallory"), add_tenant(crash_cluster, owner_dsn, "victor")
    crashing = launch(mallory, "crasher", {"kill": [1], "lr": [0.01]}, epochs=2)
    victims = launch(victim, "cnn", {"lr": [0.003, 0.01], **TINY_CNN}, epochs=2)
    with psycopg.connect(mallory, autocommit=True) as conn:
        # A tenant cannot buy itself a bigger budget: the scheduler reads the setting in its own session.
        conn.execute("SET cerebro.max_unit_crashes = 1000")

    scheduler = Scheduler(owner_dsn, idle_wait=0.2)
    runner = threading.Thread(target=scheduler.run, kwargs={"until_idle": True})
    runner.start()
    runner.join(HANG)
    if runner.is_alive():
        scheduler.stop()
        runner.join()
        pytest.fail(f"the scheduler did not finish within {HANG} s: a crash loop?")

    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        crasher = one(conn, "SELECT config_id FROM configs WHERE workload_id = %s", crashing)
        status, error = one(conn, "SELECT status, error FROM configs WHERE config_id = %s", crasher)
        assert status == "failed"
        assert "its unit ended the server process 3 times in a row (cerebro.max_unit_crashes = 3)" in error
        assert "last seen training epoch 1 on segment" in error and "lower batch_size" in error
        outcomes = [r[0] for r in conn.execute("SELECT outcome FROM unit_attempts WHERE config_id = %s", [crasher])]
        assert outcomes == ["crashed"] * 3, "the budget must be spent exactly"
        assert one(conn, "SELECT detail FROM config_events WHERE config_id = %s AND kind = 'failed'", crasher) == error
        assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", crashing) == "completed"

        # The other tenant's workload: complete, every epoch exactly once, MOP intact, never blamed.
        assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", victims) == "completed"
        assert verify.epochs_lost(conn, victims) == 0
        assert verify.mop_violations(conn, victims) == []
        blamed = one(
            conn,
            "SELECT count(*) FROM unit_attempts a JOIN configs c USING (config_id)"
            " WHERE c.workload_id = %s AND a.outcome NOT IN ('committed', 'bystander')",
            victims,
        )
        assert blamed == 0


def test_tenants_read_their_own_attempts_and_cannot_write_any(crash_cluster: ClusterConfig) -> None:
    eve = add_tenant(crash_cluster, crash_cluster.dsn(), "eve")
    with psycopg.connect(crash_cluster.dsn(), autocommit=True) as owner:
        others = one(owner, "SELECT count(*) FROM unit_attempts")
    with psycopg.connect(eve, autocommit=True) as conn:
        assert one(conn, "SELECT count(*) FROM unit_attempts") == 0  # row-level security
        for attack in (
            "DELETE FROM unit_attempts",
            "UPDATE unit_attempts SET outcome = 'committed'",
            "INSERT INTO unit_attempts (config_id, segment, epoch, outcome) VALUES (1, 0, 1, 'committed')",
            "SELECT abandon_unit_attempts()",
            "SELECT end_unit_attempt(1, 'committed', NULL)",
            "SELECT commit_unit_attempt(1)",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(attack)
    with psycopg.connect(crash_cluster.dsn(), autocommit=True) as owner:
        assert one(owner, "SELECT count(*) FROM unit_attempts") == others
