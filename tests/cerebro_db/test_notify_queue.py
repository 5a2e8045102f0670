"""A full notification queue fails no commit: no user's statement and no unit's transaction NOTIFYs.

Once PostgreSQL's notification queue is full, every transaction that NOTIFYs fails at its commit, and any
session may fill the queue (LISTEN, then never read). Filling 8 GB is impractical (and PostgreSQL 15 cannot
make the queue smaller), so these tests show instead that, while a tenant LISTENs in a transaction it never
ends, nothing notifies but the scheduler's own best-effort statement after a unit has committed, and that
this still wakes its idle segments. Notifications arrive in commit order: a marker sent last tells a
listener that it has seen every notification committed before it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cerebro_db.cluster import ClusterConfig
from cerebro_db.scheduler import CHANNEL, Scheduler
from tests.conftest import TINY_CNN, add_tenant, one, prepare_fashion

Session = psycopg.Connection[Any]

#: The scheduler's segments wait this long for a NOTIFY before they poll: far longer than the test may
#: take, so that it finishes only if every idle segment is woken by a notification.
NEVER = 600.0


@pytest.fixture(scope="module")
def tenant(cluster: ClusterConfig, dsn: str, fashion_table: str) -> Iterator[tuple[str, str]]:
    """A cerebro_user (its DSN) and a dataset of its own; its workloads go at the end."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(fashion_table)))
        login = add_tenant(cluster, dsn, "steerer")
        yield login, prepare_fashion(login, fashion_table, 2)
        admin.execute("DELETE FROM workloads WHERE owner = %s", [psycopg.conninfo.conninfo_to_dict(login)["user"]])


@pytest.fixture
def squatter(cluster: ClusterConfig, dsn: str) -> Iterator[Session]:
    """Another tenant's session that LISTENs and then never reads: it holds a transaction open."""
    with psycopg.connect(add_tenant(cluster, dsn, "squatter")) as session:
        session.execute(f"LISTEN {CHANNEL}")
        session.commit()
        session.execute("SELECT 1")
        yield session


@pytest.fixture
def listener(dsn: str) -> Iterator[Session]:
    with psycopg.connect(dsn, autocommit=True) as session:
        session.execute(f"LISTEN {CHANNEL}")
        yield session


def notified(listener: Session, dsn: str) -> list[str]:
    """The payloads notified on the channel since the listener began listening (up to a marker sent now)."""
    with psycopg.connect(dsn, autocommit=True) as marker:
        pid = marker.info.backend_pid
        marker.execute("SELECT pg_notify(%s, 'marker')", [CHANNEL])
    payloads = []
    for note in listener.notifies(timeout=60):  # only if the marker were lost: it is delivered at once
        if note.pid == pid:
            return payloads
        payloads.append(note.payload)
    pytest.fail("the marker notification never arrived")


def test_no_users_statement_and_no_units_transaction_notifies(
    tenant: tuple[str, str], squatter: Session, listener: Session, dsn: str
) -> None:
    login, dataset = tenant
    with psycopg.connect(login, autocommit=True) as user:
        workload = one(
            user,
            "SELECT run_model_selection(%s, 'cnn', %s, max_epochs => 1)",
            dataset,
            json.dumps({"lr": [0.001, 0.002], **TINY_CNN}),
        )
        added = one(user, "SELECT add_config(%s, %s)", workload, json.dumps({"lr": 0.003, **TINY_CNN}))
        user.execute("INSERT INTO configs (workload_id, params) VALUES (%s, %s)", [workload, json.dumps(TINY_CNN)])
        user.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [added])
        user.execute("UPDATE configs SET max_epochs = 2, status = 'running' WHERE config_id = %s", [added])
        user.execute("SELECT clone_config(%s)", [added])
        user.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])
        user.execute("UPDATE workloads SET status = 'running' WHERE workload_id = %s", [workload])
        with psycopg.connect(dsn) as segment:  # plays a scheduler's segment: one unit, committed
            config = one(segment, "SELECT config_id FROM claim_unit(0)")
            segment.execute("SELECT run_unit(%s, 0)", [config])
            segment.commit()
        assert one(user, "SELECT count(*) FROM units u JOIN configs c USING (config_id) WHERE c.workload_id = %s",
                   workload) == 1  # fmt: skip
        user.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])
    assert notified(listener, dsn) == []
    # Nor could any other channel: no function of the schema (triggers included) notifies.
    notifying = listener.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'cerebro'::regnamespace AND prosrc ~* 'notify'"
    ).fetchall()
    assert notifying == []


def test_the_scheduler_wakes_its_idle_segments_after_its_own_commits(
    tenant: tuple[str, str], squatter: Session, listener: Session, dsn: str
) -> None:
    """One config on two segments: while a segment trains it, the other finds nothing and waits; only the
    scheduler's notification after the commit (NEVER is far beyond the test) lets it take the next hop."""
    login, dataset = tenant
    with psycopg.connect(login, autocommit=True) as user:
        workload = one(
            user, "SELECT run_model_selection(%s, 'cnn', %s, max_epochs => 1)", dataset, json.dumps(TINY_CNN)
        )
    scheduler = Scheduler(dsn, idle_wait=NEVER)
    units: list[list[dict[str, Any]]] = []
    running = threading.Thread(target=lambda: units.append(scheduler.run(until_idle=True)), daemon=True)
    running.start()
    running.join(timeout=NEVER / 2)
    if running.is_alive():
        scheduler.stop()
        pytest.fail("an idle segment was not woken after a unit committed: it waits out its idle_wait")
    (done,) = units
    assert sorted(u["segment"] for u in done) == [0, 1]
    assert notified(listener, dsn).count("") == len(done)  # one wake-up per committed unit
    with psycopg.connect(login) as user:
        assert one(user, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"
