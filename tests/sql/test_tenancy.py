"""Two users on one cluster: each sees and steers only their own work; the internals stay the system's."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from cerebro_db import install
from cerebro_db.cluster import ClusterConfig
from tests.conftest import TINY_CNN, add_tenant, prepare_fashion, run_until_idle
from tests.plpy.test_custom import GOOD

Session = psycopg.Connection[Any]


def one(conn: Session, query: str, *params: Any) -> Any:
    row = conn.execute(query, list(params)).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


@pytest.fixture(scope="module")
def logins(cluster: ClusterConfig, dsn: str, fashion_table: str) -> Iterator[dict[str, str]]:
    """DSNs of two cerebro_user roles that may read the shared source table."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(fashion_table)))
        yield {
            name: dataclasses.replace(cluster, user=name, password=install.add_user(dsn, name)).dsn()
            for name in ("alice", "bob")
        }
        # Leave no unfinished work for the next tests' schedulers.
        admin.execute("UPDATE workloads SET status = 'stopped' WHERE owner IN ('alice', 'bob') AND status = 'running'")


@pytest.fixture(scope="module")
def alices_work(logins: dict[str, str], dsn: str, fashion_table: str) -> dict[str, Any]:
    """Alice prepares a dataset and trains one config for one epoch."""
    dataset = prepare_fashion(logins["alice"], f"public.{fashion_table}", 2)
    with psycopg.connect(logins["alice"], autocommit=True) as alice:
        workload = one(
            alice,
            "SELECT run_model_selection(%s, 'cnn', %s, max_epochs => 2, seed => 3)",
            dataset,
            json.dumps({"lr": [0.003], **TINY_CNN}),
        )
        config = one(alice, "SELECT config_id FROM configs WHERE workload_id = %s", workload)
    run_until_idle(dsn, max_units=2)
    return {"dataset": dataset, "workload": workload, "config": config}


@pytest.fixture
def alice(logins: dict[str, str]) -> Iterator[Session]:
    with psycopg.connect(logins["alice"], autocommit=True) as session:
        yield session


@pytest.fixture
def bob(logins: dict[str, str]) -> Iterator[Session]:
    with psycopg.connect(logins["bob"], autocommit=True) as session:
        yield session


VISIBLE = [
    "datasets",
    "dataset_buffers",
    "workloads",
    "configs",
    "units",
    "epoch_metrics",
    "config_events",
    "leaderboard",
    "workload_progress",
    "workload_lineage",
]


@pytest.mark.parametrize("relation", VISIBLE)
def test_each_user_sees_only_their_own_rows(
    alices_work: dict[str, Any], alice: Session, bob: Session, relation: str
) -> None:
    assert one(alice, f"SELECT count(*) FROM {relation}") > 0
    assert one(bob, f"SELECT count(*) FROM {relation}") == 0


def test_bob_sees_nothing_of_alices_unit_in_flight(
    alices_work: dict[str, Any], dsn: str, alice: Session, bob: Session
) -> None:
    """active_units and segment_activity read the scheduler's locks: they show bob only his own."""
    with psycopg.connect(dsn) as segment:  # plays a segment: the claim lasts as long as its transaction
        # Only alice's work is claimable in this transaction (the stop is rolled back with it).
        segment.execute("UPDATE workloads SET status = 'stopped' WHERE owner <> 'alice' AND status = 'running'")
        assert one(segment, "SELECT workload_id FROM claim_unit(0)") == alices_work["workload"]
        assert one(alice, "SELECT workload_id FROM active_units") == alices_work["workload"]
        assert one(alice, "SELECT workload_id FROM segment_activity WHERE segment = 0") == alices_work["workload"]
        assert one(bob, "SELECT count(*) FROM active_units") == 0
        activity = bob.execute("SELECT segment, workload_id, config_id, epoch, pid FROM segment_activity").fetchall()
        assert activity == [(0, None, None, None, None), (1, None, None, None, None)]
        segment.rollback()


def test_another_users_config_cannot_be_stopped_cloned_or_extended(
    alices_work: dict[str, Any], alice: Session, bob: Session
) -> None:
    config, workload = alices_work["config"], alices_work["workload"]
    assert bob.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config]).rowcount == 0
    assert bob.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload]).rowcount == 0
    assert one(alice, "SELECT status FROM configs WHERE config_id = %s", config) == "running"
    with pytest.raises(errors.UndefinedObject, match=f"unknown config {config}"):
        bob.execute("SELECT clone_config(%s)", [config])
    with pytest.raises(errors.UndefinedObject, match=f"unknown workload {workload}"):
        bob.execute("SELECT add_config(%s, '{}')", [workload])
    with pytest.raises(errors.UndefinedObject, match="unknown dataset"):
        bob.execute("SELECT run_model_selection(%s, 'cnn', '{}')", [alices_work["dataset"]])
    with pytest.raises(errors.UndefinedObject, match=f"unknown workload .*{workload}"):
        bob.execute("SELECT warm_start_configs(%s, %s)", [workload, workload])


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT state_file FROM model_states",
        "SELECT stored_state(1)",  # any config's state, the caller's or not
        "SELECT _read_state_file('cerebro_states/1', 'c1-x1.state')",  # reads files as the server's OS user
        "SELECT _write_state_file('cerebro_states/1', 'c1-x1.state', '')",  # writes them
        "SELECT _delete_state_files('cerebro_states/1', '{c1-x1.state}')",
        "SELECT _link_state_file('cerebro_states/1', 'c1-x1.state', 'c2-x1.state')",
        "SELECT _rename_state_file('cerebro_states/1', 'c1-x1.state', 'c2-x1.state')",
        "SELECT _state_files('cerebro_states/1')",
        "SELECT _delete_other_databases_state_files('{}')",  # would remove every other database's states
        "SELECT state_file_linked(1, 'c1-x1.state')",
        "SELECT state_file_renamed('c1-x1.staged', 2)",
        "SELECT _train_stored_hop('{}', 'cerebro_states/1', NULL, 'c1-x1.state')",
        "SELECT sweep_state_files()",
        "SELECT record_stored_hop(1, 0, '{}', 'c1-x1.state')",  # would name any file as a config's state
        "SELECT * FROM claim_unit(0)",
        "SELECT run_unit(1, 0)",
        "SELECT * FROM unit_context(1, 0)",  # hands out model state
        "SELECT unit_start(1, 0)",  # marks a unit's start
        "SELECT * FROM train_hop('{}', NULL)",
        "SELECT record_hop(1, 0, '{}', ''::bytea)",  # would write any state as a hop
        "SELECT fail_config(1, 'x')",
        "SELECT settle_unrunnable_configs()",  # the scheduler's: it fails and completes anyone's configs
        "SELECT * FROM unrunnable_configs()",
        "SELECT on_epoch_end(1, 1)",
        "INSERT INTO config_events (config_id, kind, epochs_done) VALUES (1, 'completed', 1)",
        "UPDATE configs SET epochs_done = 9",
        "INSERT INTO workloads (owner, dataset, model, search_space, procedure, max_epochs, seed)"
        " VALUES ('alice', 'x', 'cnn', '{}', 'grid', 1, 0)",
        "DELETE FROM configs",
        "SELECT pg_advisory_lock(1, 2)",  # the scheduler's lock space: a held key could stall every workload
        "SELECT pg_try_advisory_xact_lock(1, 2)",
        "SELECT dsn FROM segments",
        "SELECT register_model('mine', 'def create_model(params): pass')",  # only admins: it runs as the server
    ],
)
def test_internals_are_off_limits(alices_work: dict[str, Any], bob: Session, statement: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        bob.execute(statement)


def test_a_user_cannot_pose_as_the_system(
    alices_work: dict[str, Any], logins: dict[str, str], cluster: ClusterConfig, dsn: str, fashion_table: str
) -> None:
    """cerebro.internal is a plain setting anyone can SET: it must not open the status guard.

    A user of its own (``logins`` grants the table): bob owns nothing, whichever test runs first."""
    poser_dsn = add_tenant(cluster, dsn, "poser")
    poser_name = psycopg.conninfo.conninfo_to_dict(poser_dsn)["user"]
    dataset = prepare_fashion(poser_dsn, f"public.{fashion_table}", 1)
    with psycopg.connect(poser_dsn, autocommit=True) as poser:
        workload = one(
            poser, "SELECT run_model_selection(%s, 'cnn', %s, max_epochs => 1)", dataset, json.dumps(TINY_CNN)
        )
        poser.execute("SET cerebro.internal = on")
        with pytest.raises(errors.InvalidParameterValue, match="cannot change status from pending to completed"):
            poser.execute("UPDATE configs SET status = 'completed' WHERE workload_id = %s", [workload])
        poser.execute("INSERT INTO configs (workload_id, params) VALUES (%s, '{}')", [workload])
        assert one(poser, "SELECT count(*) FROM configs WHERE workload_id = %s AND status <> 'pending'", workload) == 0
        # Nor may it put words in the system's mouth in the event log (a hyperband reason would
        # make the config immune to pruning).
        poser.execute("SET cerebro.reason = 'hyperband: kept by the system'")
        poser.execute("UPDATE configs SET status = 'stopped' WHERE workload_id = %s", [workload])
        events = poser.execute(
            "SELECT DISTINCT kind, actor, detail FROM config_events e JOIN configs c USING (config_id)"
            " WHERE c.workload_id = %s",
            [workload],
        ).fetchall()
    assert set(events) == {("created", poser_name, None), ("stopped", poser_name, None)}


def test_a_group_role_owns_nothing(bob: Session, fashion_table: str) -> None:
    """SET ROLE cerebro_user would otherwise create rows that every member shares."""
    bob.execute("SET ROLE cerebro_user")
    with pytest.raises(errors.InsufficientPrivilege, match="only login roles own rows"):
        bob.execute(
            "SELECT * FROM prepare_dataset('shared', %s, 'label', '{pixels}', feature_shape => '{28,28,1}')",
            [f"public.{fashion_table}"],
        )


def test_a_users_own_actions_work_and_are_logged_under_their_name(alices_work: dict[str, Any], alice: Session) -> None:
    config = alices_work["config"]
    alice.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
    clone = one(alice, "SELECT clone_config(%s, '{\"lr\": 0.001}')", config)
    alice.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [config])
    assert one(alice, "SELECT created_by FROM configs WHERE config_id = %s", clone) == "alice"
    actors = alice.execute(
        "SELECT kind, actor FROM config_events WHERE config_id = %s ORDER BY event_id", [config]
    ).fetchall()
    assert ("stopped", "alice") in actors and ("running", "alice") in actors
    assert one(alice, "SELECT owner FROM workloads WHERE workload_id = %s", alices_work["workload"]) == "alice"


def test_prepare_dataset_reads_only_what_the_caller_may_read(dsn: str, bob: Session) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS payroll (salary real, grade int)")
        admin.execute("INSERT INTO payroll SELECT g * 10, g % 3 FROM generate_series(1, 30) g")
    with pytest.raises(errors.InsufficientPrivilege, match="payroll"):
        bob.execute("SELECT * FROM prepare_dataset('stolen', 'public.payroll', 'grade')")
    assert one(bob, "SELECT count(*) FROM datasets WHERE name = 'stolen'") == 0


def test_a_dataset_name_taken_by_another_user_is_reported_as_taken(
    alices_work: dict[str, Any], bob: Session, fashion_table: str
) -> None:
    with pytest.raises(errors.InvalidParameterValue, match="already exists"):
        bob.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label')", [alices_work["dataset"], f"public.{fashion_table}"]
        )


def test_an_admin_may_register_a_model_script(dsn: str, cluster: ClusterConfig) -> None:
    admin_dsn = dataclasses.replace(cluster, user="carol", password=install.add_user(dsn, "carol", admin=True)).dsn()
    with psycopg.connect(admin_dsn, autocommit=True) as carol:
        carol.execute("SELECT register_model('carols_net', %s)", [GOOD])
        assert one(carol, "SELECT owner FROM registered_models WHERE name = 'carols_net'") == "carol"
