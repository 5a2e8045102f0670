"""The event log cannot be forged: a config's event (kind, actor, reason) travels in its row, not in settings.

The attacks come from a ``cerebro_user``: settings it may change between the configs BEFORE triggers and the
AFTER trigger that logs the event (RETURNING, a CTE, a WHERE clause, SET LOCAL), and paths around the triggers.
Hyperband's "pruned once, never again" reads the typed kind, so a forged reason cannot exempt a config.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from cerebro_db.cluster import ClusterConfig
from tests.conftest import TINY_CNN, add_tenant, one, prepare_fashion

Session = psycopg.Connection[Any]

#: Everything a forger could set to pose as the system (the settings the triggers once passed the event in).
FORGE = (
    "set_config('cerebro.internal', 'on', true), set_config('cerebro.event_actor', 'cerebro', true),"
    " set_config('cerebro.event_detail', 'hyperband: forged', true),"
    " set_config('cerebro.reason', 'hyperband: forged', true)"
)


def configs_of(conn: Session, workload: int) -> list[int]:
    return [r[0] for r in conn.execute("SELECT config_id FROM configs WHERE workload_id = %s ORDER BY 1", [workload])]


def last_event(conn: Session, config: int) -> tuple[str, str, str | None]:
    row = conn.execute(
        "SELECT kind, actor, detail FROM config_events WHERE config_id = %s ORDER BY event_id DESC LIMIT 1", [config]
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


@pytest.fixture(scope="module")
def forger(cluster: ClusterConfig, dsn: str, fashion_table: str) -> Iterator[tuple[str, str]]:
    """A cerebro_user (its DSN and role name) with a dataset of its own; its workloads go at the end."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(fashion_table)))
        login = add_tenant(cluster, dsn, "forger")
        dataset = prepare_fashion(login, fashion_table, 2)
        with psycopg.connect(login) as session:
            role = one(session, "SELECT current_user")
        yield login, dataset
        admin.execute("DELETE FROM workloads WHERE owner = %s", [role])


@pytest.fixture
def mallory(forger: tuple[str, str]) -> Iterator[Session]:
    with psycopg.connect(forger[0], autocommit=True) as session:
        yield session


def launch(session: Session, dataset: str, procedure: str, lrs: list[float], epochs: int) -> int:
    return int(
        one(
            session,
            "SELECT run_model_selection(%s, 'cnn', %s, procedure => %s, max_epochs => %s)",
            dataset,
            json.dumps({"lr": lrs, **TINY_CNN}),
            procedure,
            epochs,
        )
    )


@pytest.fixture(scope="module")
def workload(forger: tuple[str, str]) -> int:
    with psycopg.connect(forger[0], autocommit=True) as session:
        return launch(session, forger[1], "grid", [0.001, 0.002], 3)


STOPS = {
    "returning": [f"UPDATE configs SET status = 'stopped' WHERE workload_id = %s RETURNING {FORGE}"],
    # The CTE's AFTER triggers fire at the end of the whole statement, after the outer SELECT.
    "cte": [
        "WITH stopped AS (UPDATE configs SET status = 'stopped' WHERE workload_id = %s RETURNING config_id)"
        f" SELECT {FORGE} FROM stopped"
    ],
    # Evaluated per row: the second row's WHERE runs after the first row's BEFORE trigger.
    "where": [
        "UPDATE configs SET status = 'stopped' WHERE workload_id = %s"
        " AND set_config('cerebro.event_actor', left('cerebro' || config_id, 7), true) IS NOT NULL"
        " AND set_config('cerebro.event_detail', left('hyperband: forged' || config_id, 17), true) IS NOT NULL"
    ],
    "set local": [
        "BEGIN",
        "SET LOCAL cerebro.internal = on",
        "SET LOCAL cerebro.event_actor = 'cerebro'",
        "SET LOCAL cerebro.event_detail = 'hyperband: forged'",
        "SET LOCAL cerebro.reason = 'hyperband: forged'",
        "UPDATE configs SET status = 'stopped' WHERE workload_id = %s",
        "COMMIT",
    ],
    # The workload's trigger stops its configs (nested UPDATE, same statement).
    "workload": [f"UPDATE workloads SET status = 'stopped' WHERE workload_id = %s RETURNING {FORGE}"],
}


@pytest.mark.parametrize("attack", list(STOPS))
def test_a_users_stop_is_logged_as_theirs_whatever_they_set_meanwhile(
    mallory: Session, workload: int, attack: str
) -> None:
    me = one(mallory, "SELECT current_user")
    mallory.execute("UPDATE configs SET status = 'running' WHERE workload_id = %s AND status = 'stopped'", [workload])
    for statement in STOPS[attack]:
        mallory.execute(statement, [workload] if "%s" in statement else [])
    for config in configs_of(mallory, workload):
        assert last_event(mallory, config) == ("stopped", me, None)


def test_a_users_insert_is_logged_as_theirs(mallory: Session, workload: int) -> None:
    me = one(mallory, "SELECT current_user")
    config = one(
        mallory,
        f"INSERT INTO configs (workload_id, params) VALUES (%s, %s) RETURNING config_id, {FORGE}",
        workload,
        json.dumps({"lr": 0.003, **TINY_CNN}),
    )[0]
    assert last_event(mallory, config) == ("created", me, None)
    mallory.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE configs SET event_actor = 'cerebro' WHERE workload_id = {workload}",
        "UPDATE configs SET event_kind = 'pruned' WHERE workload_id = {workload}",
        "UPDATE configs SET event_detail = 'hyperband: forged' WHERE workload_id = {workload}",
        "INSERT INTO configs (workload_id, params, event_kind) VALUES ({workload}, '{{}}', 'pruned')",
        "INSERT INTO config_events (config_id, kind, epochs_done, actor) VALUES (1, 'pruned', 1, 'cerebro')",
        # Paths that skip the triggers.
        "ALTER TABLE configs DISABLE TRIGGER configs_guard",
        "SET session_replication_role = replica",
    ],
)
def test_the_event_columns_and_trigger_less_paths_are_off_limits(
    mallory: Session, workload: int, statement: str
) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        mallory.execute(statement.format(workload=workload))


def test_hyperband_prunes_a_config_its_user_stopped_and_resumed_with_a_forged_reason(
    mallory: Session, forger: tuple[str, str], dsn: str
) -> None:
    """README: a user may resume a pruned config and it is never pruned again; a user's own stop is no prune."""
    me = one(mallory, "SELECT current_user")
    workload = launch(mallory, forger[1], "hyperband", [0.001, 0.002, 0.003, 0.004], 9)
    configs = configs_of(mallory, workload)
    loser = configs[2]
    mallory.execute(f"UPDATE configs SET status = 'stopped' WHERE config_id = %s RETURNING {FORGE}", [loser])
    mallory.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [loser])
    with psycopg.connect(dsn, autocommit=True) as system:
        system.execute("SET cerebro.internal = on")  # plays run_unit's part: each config reaches rung 1
        for config, metric in zip(configs, [0.5, 0.9, 0.7, 0.6], strict=True):
            system.execute(
                "INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric, seconds)"
                " VALUES (%s, 1, 1, 0, 1, %s, 1)",
                [config, metric],
            )
            system.execute("SELECT hyperband_observe(%s, 1)", [config])
        assert one(mallory, "SELECT status FROM configs WHERE config_id = %s", loser) == "stopped"
        kind, actor, detail = last_event(mallory, loser)
        assert (kind, actor) == ("pruned", "cerebro") and detail.startswith("hyperband: val metric 0.7000 at epoch 1")
        mallory.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [loser])  # the human overrides
        for epoch in (1, 3):
            system.execute(
                "INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric, seconds)"
                " VALUES (%s, %s, 1, 0, 1, 0.1, 1) ON CONFLICT DO NOTHING",
                [loser, epoch],
            )
            system.execute("SELECT hyperband_observe(%s, %s)", [loser, epoch])
    assert one(mallory, "SELECT status FROM configs WHERE config_id = %s", loser) == "running"
    events = mallory.execute("SELECT kind, actor FROM config_events WHERE config_id = %s ORDER BY event_id", [loser])
    assert events.fetchall() == [
        ("created", me),
        ("stopped", me),
        ("running", me),
        ("pruned", "cerebro"),
        ("running", me),
    ]
    mallory.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])


def test_max_epochs_changes_are_logged_and_one_transactions_events_keep_their_order(
    mallory: Session, forger: tuple[str, str]
) -> None:
    """A resume with more epochs logs two events, max_epochs first; ``at`` is each event's own time."""
    me = one(mallory, "SELECT current_user")
    workload = launch(mallory, forger[1], "grid", [0.001], 2)
    (config,) = configs_of(mallory, workload)
    with mallory.transaction():  # now() would give every event of it the same time
        mallory.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
        mallory.execute("UPDATE configs SET max_epochs = 5, status = 'running' WHERE config_id = %s", [config])
    mallory.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
    mallory.execute("UPDATE configs SET max_epochs = 3 WHERE config_id = %s", [config])
    events = mallory.execute(
        "SELECT kind, actor, detail, at FROM config_events WHERE config_id = %s ORDER BY event_id", [config]
    ).fetchall()
    assert [event[:3] for event in events[1:]] == [
        ("stopped", me, None),
        ("max_epochs", me, "max_epochs 2 -> 5"),
        ("running", me, None),
        ("stopped", me, None),
        ("max_epochs", me, "max_epochs 5 -> 3"),
    ]
    at = [event[3] for event in events]
    assert at == sorted(at) and at[1] < at[2]  # the stop and the resume: one transaction, two statements
    mallory.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])
