"""Steering a workload with plain SQL while it trains: stop, resume, add, clone, drill down, procedures."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from cerebro_db import install
from cerebro_db.cluster import ClusterConfig
from cerebro_db.scheduler import Scheduler
from cerebro_plpy.state import ModelState
from tests.conftest import TINY_CNN, launch, prepare_fashion, run_until_idle

Session = psycopg.Connection[Any]


def one(conn: Session, query: str, *params: Any) -> Any:
    row = conn.execute(query, list(params)).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


def configs_of(conn: Session, workload: int) -> list[int]:
    return [r[0] for r in conn.execute("SELECT config_id FROM configs WHERE workload_id = %s ORDER BY 1", [workload])]


def state_bytes(conn: Session, config: int) -> bytes | None:
    row = conn.execute("SELECT stored_state(%s)", [config]).fetchone()
    return None if row is None or row[0] is None else bytes(row[0])


@pytest.fixture
def in_flight(dsn: str) -> Iterator[Session]:
    """A session that plays a segment with a unit in flight (claimed, transaction open)."""
    with psycopg.connect(dsn) as session:
        yield session


@pytest.fixture(scope="module")
def tenant(cluster: ClusterConfig, dsn: str, fashion_table: str) -> dict[str, str]:
    """A real cerebro_user (row-level security applies to it) with its own 2-segment dataset."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(fashion_table)))
    login = dataclasses.replace(cluster, user="hitl_user", password=install.add_user(dsn, "hitl_user")).dsn()
    return {"dsn": login, "dataset": prepare_fashion(login, fashion_table, 2)}


@pytest.fixture
def dataset(tenant: dict[str, str]) -> str:
    return tenant["dataset"]


@pytest.fixture
def user(tenant: dict[str, str]) -> Iterator[Session]:
    """A user's session that must never wait on a training unit's locks."""
    with psycopg.connect(tenant["dsn"], autocommit=True) as session:
        session.execute("SET lock_timeout = '2s'")
        yield session


@pytest.fixture
def system(conn: Session) -> Session:
    """The schema owner's session: model states, the system's own writes, and cleaning up."""
    return conn


def test_illegal_transitions_are_refused_with_the_allowed_ones_named(
    user: Session, dataset: str, system: Session
) -> None:
    workload = launch(user, dataset, {"lr": [0.001], **TINY_CNN}, epochs=2)
    (config,) = configs_of(user, workload)
    # A user may not write the other columns at all; the guard names the allowed ones to any role that may.
    for session, change, message in [
        (user, "status = 'completed'", "cannot change status from pending to completed"),
        (user, "status = 'failed'", "cannot change status from pending to failed"),
        (system, "params = '{}'", "only status and max_epochs can be changed"),
        (system, "epochs_done = 1", "only status and max_epochs can be changed"),
    ]:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=message) as raised:
            session.execute(f"UPDATE configs SET {change} WHERE config_id = %s", [config])
        assert raised.value.diag.message_hint
    for change in ("params = '{}'", "epochs_done = 1"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            user.execute(f"UPDATE configs SET {change} WHERE config_id = %s", [config])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="cannot change status from running to completed"):
        user.execute("UPDATE workloads SET status = 'completed' WHERE workload_id = %s", [workload])
    system.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_stop_while_its_unit_is_in_flight_returns_at_once_and_the_unit_still_commits(
    user: Session, in_flight: Session, dataset: str, dsn: str, system: Session
) -> None:
    workload = launch(user, dataset, {"lr": [0.003], **TINY_CNN}, epochs=2)
    (config,) = configs_of(user, workload)
    assert one(in_flight, "SELECT config_id FROM claim_unit(0)") == config
    user.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])  # lock_timeout: never waits
    in_flight.execute("SELECT run_unit(%s, 0)", [config])
    in_flight.commit()
    assert one(user, "SELECT status FROM configs WHERE config_id = %s", config) == "stopped"
    assert one(system, "SELECT visited_segments FROM model_states WHERE config_id = %s", config) == [0]
    assert one(user, "SELECT count(*) FROM units WHERE config_id = %s", config) == 1
    assert run_until_idle(dsn) == []  # a stopped config takes no further unit
    events = user.execute("SELECT kind, actor FROM config_events WHERE config_id = %s ORDER BY event_id", [config])
    assert [kind for kind, _ in events] == ["created", "stopped"]


def test_resume_mid_epoch_visits_the_remaining_segment_first_and_finishes(
    user: Session, dataset: str, dsn: str, system: Session
) -> None:
    workload = launch(user, dataset, {"lr": [0.003], **TINY_CNN}, epochs=2)
    (config,) = configs_of(user, workload)
    assert len(run_until_idle(dsn, max_units=1)) == 1
    saved = state_bytes(system, config)
    user.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
    assert run_until_idle(dsn) == []
    assert state_bytes(system, config) == saved  # nothing lost, nothing changed while stopped
    user.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [config])
    units = run_until_idle(dsn)
    assert [(u["epoch"], u["epoch_done"]) for u in units] == [(1, True), (2, False), (2, True)]
    visits: dict[int, list[int]] = defaultdict(list)
    for epoch, segment in user.execute("SELECT epoch, segment FROM units WHERE config_id = %s", [config]):
        visits[epoch].append(segment)
    assert {e: sorted(s) for e, s in visits.items()} == {1: [0, 1], 2: [0, 1]}
    assert one(user, "SELECT status, epochs_done FROM configs WHERE config_id = %s", config) == ("completed", 2)


def test_completed_config_resumes_after_raising_max_epochs(user: Session, dataset: str, dsn: str) -> None:
    workload = launch(user, dataset, {"lr": [0.003], **TINY_CNN}, epochs=1)
    (config,) = configs_of(user, workload)
    run_until_idle(dsn)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="resuming needs max_epochs above the epochs done"):
        user.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [config])
    user.execute("UPDATE configs SET max_epochs = 2, status = 'running' WHERE config_id = %s", [config])
    assert one(user, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "running"
    assert len(run_until_idle(dsn)) == 2
    assert one(user, "SELECT count(*) FROM epoch_metrics WHERE config_id = %s", config) == 2
    assert one(user, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"


def test_stopping_and_resuming_a_workload_cascades_to_its_configs(user: Session, dataset: str, system: Session) -> None:
    workload = launch(user, dataset, {"lr": [0.001, 0.003], **TINY_CNN}, epochs=1)
    user.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])
    assert {r[0] for r in user.execute("SELECT status FROM configs WHERE workload_id = %s", [workload])} == {"stopped"}
    user.execute("UPDATE workloads SET status = 'running' WHERE workload_id = %s", [workload])
    assert {r[0] for r in user.execute("SELECT status FROM configs WHERE workload_id = %s", [workload])} == {"running"}
    system.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_insert_into_a_finished_workload_reopens_it_and_trains_the_new_config(
    user: Session, dataset: str, dsn: str
) -> None:
    workload = launch(user, dataset, {"lr": [0.003], **TINY_CNN}, epochs=1)
    run_until_idle(dsn)
    assert one(user, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"
    new = one(
        user,
        "INSERT INTO configs (workload_id, params) VALUES (%s, %s) RETURNING config_id",
        workload,
        json.dumps({"lr": 0.001, **TINY_CNN}),
    )
    assert one(user, "SELECT params ->> 'optimizer', status FROM configs WHERE config_id = %s", new) == (
        "adam",
        "pending",
    )
    assert one(user, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "running"
    assert {u["config_id"] for u in run_until_idle(dsn)} == {new}
    assert one(user, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"


def test_add_config_validates_params_against_the_model(user: Session, dataset: str, system: Session) -> None:
    workload = launch(user, dataset, {"lr": [0.003], **TINY_CNN}, epochs=1)
    first = one(user, "SELECT add_config(%s, '{\"lr\": 0.01}')", workload)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown hyper-parameter 'learning_rate'"):
        user.execute("SELECT add_config(%s, '{\"learning_rate\": 0.1}')", [workload])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="batch_size must be >= 1"):
        user.execute("SELECT add_config(%s, '{\"batch_size\": 0}')", [workload])
    with pytest.raises(psycopg.errors.UndefinedObject, match="unknown workload 999999"):
        user.execute("SELECT add_config(999999, '{}')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="overrides .'filters'. would change"):
        user.execute("SELECT clone_config(%s, '{\"filters\": 3}')", [first])
    config = one(user, "SELECT add_config(%s, '{\"lr\": 0.02}')", workload)
    assert config == first + 1  # the refused ones took no config_id
    assert one(user, "SELECT params -> 'lr', max_epochs FROM configs WHERE config_id = %s", config) == (0.02, 1)
    system.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_clone_of_a_training_config_copies_its_committed_state_and_changes_lr(
    user: Session, in_flight: Session, dataset: str, dsn: str, system: Session
) -> None:
    workload = launch(user, dataset, {"lr": [0.003], **TINY_CNN}, epochs=2)
    (source,) = configs_of(user, workload)
    run_until_idle(dsn, max_units=1)
    assert (
        one(
            in_flight,
            "SELECT config_id FROM claim_unit(%s)",
            1 - one(system, "SELECT visited_segments[1] FROM model_states WHERE config_id = %s", source),
        )
        == source
    )
    clone = one(user, 'SELECT clone_config(%s, \'{"lr": 0.0005, "batch_size": 16}\')', source)
    in_flight.rollback()  # the source's unit did not happen; the clone started from what had committed
    assert one(user, "SELECT cloned_from, epochs_done, status FROM configs WHERE config_id = %s", clone) == (
        source,
        0,
        "pending",
    )
    assert state_bytes(system, clone) == state_bytes(system, source)
    assert one(system, "SELECT visited_segments FROM model_states WHERE config_id = %s", clone) == one(
        system, "SELECT visited_segments FROM model_states WHERE config_id = %s", source
    )
    assert one(user, "SELECT status FROM configs WHERE config_id = %s", source) == "running"  # untouched
    run_until_idle(dsn)
    final = ModelState.decode(state_bytes(system, clone) or b"")
    assert final.optimizer_variables[1] == np.float32(0.0005)  # adam/learning_rate
    assert one(user, "SELECT origin FROM workload_lineage WHERE config_id = %s", clone) == "clone"

    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"overrides \['filters'\] would change"):
        user.execute("SELECT clone_config(%s, '{\"filters\": 8}')", [source])
    with pytest.raises(psycopg.errors.UndefinedObject, match="unknown config 999999"):
        user.execute("SELECT clone_config(999999)")


def test_drill_down_warm_starts_from_the_parent_best_config(
    user: Session, dataset: str, dsn: str, system: Session
) -> None:
    parent = launch(user, dataset, {"lr": [0.001, 0.003], **TINY_CNN}, epochs=1)
    run_until_idle(dsn)
    best = one(user, "SELECT config_id FROM leaderboard WHERE workload_id = %s AND rank = 1 LIMIT 1", parent)
    child = one(
        user,
        "SELECT run_model_selection(%s, 'cnn', %s, max_epochs => 1, parent_workload => %s, warm_start => true)",
        dataset,
        json.dumps({"lr": [0.0005, 0.001], **TINY_CNN}),
        parent,
    )
    for config in configs_of(user, child):
        assert state_bytes(system, config) == state_bytes(system, best)
        assert one(
            user,
            "SELECT origin, cloned_from_workload, parent_workload_id FROM workload_lineage WHERE config_id = %s",
            config,
        ) == ("warm start", parent, parent)
    other_architecture = one(
        user,
        "SELECT run_model_selection(%s, 'cnn', '{\"filters\": [2]}', max_epochs => 1, parent_workload => %s,"
        " warm_start => true)",
        dataset,
        parent,
    )
    assert [state_bytes(system, c) for c in configs_of(user, other_architecture)] == [None]
    system.execute("DELETE FROM workloads WHERE workload_id IN (%s, %s)", [child, other_architecture])


def test_hyperband_prunes_losers_at_a_rung_and_a_resumed_config_stays(
    user: Session, dataset: str, system: Session
) -> None:
    workload = one(
        user,
        "SELECT run_model_selection(%s, 'cnn', %s, procedure => 'hyperband', max_epochs => 9)",
        dataset,
        json.dumps({"lr": [0.001, 0.002, 0.003, 0.004], **TINY_CNN}),
    )
    configs = configs_of(user, workload)
    metrics = dict(zip(configs, [0.5, 0.9, 0.7, 0.6], strict=True))
    system.execute("SELECT set_config('cerebro.internal', 'on', false)")  # play run_unit's part
    decisions = []
    for config in configs:  # they reach rung 1 in this order
        system.execute(
            "INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric, seconds)"
            " VALUES (%s, 1, 1, 0, 1, %s, 1)",
            [config, metrics[config]],
        )
        system.execute("SELECT hyperband_observe(%s, 1)", [config])
        decisions.append(one(user, "SELECT status FROM configs WHERE config_id = %s", config))
    # 1st and 2nd: fewer than 3 at the rung, go on; 3rd: 0.7 < 0.9 (top 1 of 3) -> stopped; 4th likewise.
    assert decisions == ["pending", "pending", "stopped", "stopped"]
    actor, detail = one(
        user, "SELECT actor, detail FROM config_events WHERE config_id = %s AND kind = 'pruned'", configs[2]
    )
    assert actor == "cerebro" and detail.startswith("hyperband: val metric 0.7000 at epoch 1")
    user.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [configs[2]])  # the human overrides
    for epoch in (1, 3):
        system.execute(
            "INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric, seconds)"
            " VALUES (%s, %s, 1, 0, 1, 0.1, 1) ON CONFLICT DO NOTHING",
            [configs[2], epoch],
        )
        system.execute("SELECT hyperband_observe(%s, %s)", [configs[2], epoch])
    assert one(user, "SELECT status FROM configs WHERE config_id = %s", configs[2]) == "running"
    system.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_hyperopt_proposes_configs_with_tpe_up_to_num_configs(user: Session, dataset: str, dsn: str) -> None:
    workload = one(
        user,
        "SELECT run_model_selection(%s, 'cnn', %s, procedure => 'hyperopt', num_configs => 4, max_epochs => 1,"
        " seed => 2147483646)",  # the largest seed but one: derived seeds wrap instead of overflowing int4
        dataset,
        json.dumps({"lr": {"min": 1e-4, "max": 1e-2, "log": True}, **TINY_CNN}),
    )
    assert len(configs_of(user, workload)) == 2  # one per segment to start with
    run_until_idle(dsn)
    rows = user.execute(
        "SELECT c.status, e.detail FROM configs c JOIN config_events e ON e.config_id = c.config_id"
        " AND e.kind = 'created' WHERE c.workload_id = %s",
        [workload],
    ).fetchall()
    assert len(rows) == 4 and {status for status, _ in rows} == {"completed"}
    assert sum(detail == "suggested by hyperopt (TPE)" for _, detail in rows) == 2
    seeds = user.execute("SELECT seed FROM configs WHERE workload_id = %s", [workload]).fetchall()
    assert sorted(seed for (seed,) in seeds) == [0, 1, 2, 3]
    assert one(user, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"


def test_a_small_workload_gets_its_epoch_done_while_a_big_one_runs(
    user: Session, dataset: str, dsn: str, tenant: dict[str, str]
) -> None:
    big = launch(user, dataset, {"lr": [0.001, 0.002, 0.003, 0.004], **TINY_CNN}, epochs=3)
    small: list[int] = []
    launched = threading.Event()

    def launch_small(unit: dict[str, Any]) -> None:
        if not launched.is_set():
            launched.set()
            with psycopg.connect(tenant["dsn"], autocommit=True) as conn:
                small.append(launch(conn, dataset, {"lr": [0.003], **TINY_CNN}, epochs=1))

    Scheduler(dsn, on_unit=launch_small, idle_wait=0.2).run(until_idle=True)
    small_done = one(
        user, "SELECT max(finished_at) FROM units JOIN configs USING (config_id) WHERE workload_id = %s", small[0]
    )
    small_start = one(user, "SELECT created_at FROM workloads WHERE workload_id = %s", small[0])
    big_units_meanwhile = one(
        user,
        "SELECT count(*) FROM units JOIN configs USING (config_id) WHERE workload_id = %s"
        " AND started_at > %s AND started_at < %s",
        big,
        small_start,
        small_done,
    )
    big_units_total = one(user, "SELECT count(*) FROM units JOIN configs USING (config_id) WHERE workload_id = %s", big)
    big_units_before = one(
        user,
        "SELECT count(*) FROM units JOIN configs USING (config_id) WHERE workload_id = %s AND started_at < %s",
        big,
        small_start,
    )
    assert big_units_total == 4 * 3 * 2
    # First come, first served would run all the big workload's remaining units first; a fair
    # share gives the small one a segment at once (its two hops may each wait for a unit to end).
    remaining = big_units_total - big_units_before
    assert big_units_meanwhile < remaining / 2, f"the small workload waited behind {big_units_meanwhile} big units"


def test_progress_and_activity_views(user: Session, in_flight: Session, dataset: str, system: Session) -> None:
    workload = launch(user, dataset, {"lr": [0.001, 0.003], **TINY_CNN}, epochs=3)
    config = one(in_flight, "SELECT config_id FROM claim_unit(1)")
    activity = user.execute("SELECT segment, workload_id, config_id, epoch FROM segment_activity").fetchall()
    assert (1, workload, config, 1) in activity and any(row[0] == 0 and row[2] is None for row in activity)
    in_flight.rollback()
    progress = one(
        user,
        "SELECT configs, configs_active, epochs_done, epochs_left FROM workload_progress WHERE workload_id = %s",
        workload,
    )
    assert progress == (2, 2, 0, 6)
    system.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])
