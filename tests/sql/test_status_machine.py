"""The status machine (sql/20_status/10_status_machine.sql): one list of legal changes, users' and the system's.

A tenant reaches only the users' rows of ``status_transitions`` (through UPDATE and the triggers); the system's
named transitions are the schema owner's, and the system is held to its own rows too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import text

from cerebro_db import client
from cerebro_db.cluster import ClusterConfig
from cerebro_db.connection import sqlalchemy_connection
from cerebro_db.models import CONFIG_STATUSES, WORKLOAD_STATUSES
from tests.conftest import TINY_CNN, add_tenant, one, prepare_fashion

Session = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def tenants(cluster: ClusterConfig, dsn: str, fashion_table: str) -> Iterator[list[tuple[str, str]]]:
    """Two cerebro_users (DSN, dataset), each with a dataset of their own; their workloads go at the end."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(fashion_table)))
        logins = [add_tenant(cluster, dsn, name) for name in ("status_ann", "status_ben")]
        yield [(login, prepare_fashion(login, fashion_table, 2)) for login in logins]
        admin.execute(
            "DELETE FROM workloads WHERE owner = ANY(%s)", [[conninfo_to_dict(login)["user"] for login in logins]]
        )


def launch(tenant: tuple[str, str], epochs: int = 2) -> tuple[int, int]:
    """A workload of one config of the tenant's: (workload, config)."""
    with psycopg.connect(tenant[0], autocommit=True) as session:
        workload = int(
            one(
                session,
                "SELECT run_model_selection(%s, 'cnn', %s, max_epochs => %s)",
                tenant[1],
                json.dumps({"lr": [0.001], **TINY_CNN}),
                epochs,
            )
        )
        return workload, int(one(session, "SELECT config_id FROM configs WHERE workload_id = %s", workload))


def as_system(conn: Session, query: str, *params: Any) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL cerebro.internal = on")
        conn.execute(query, list(params))


def state(conn: Session, config: int) -> tuple[str, str, int]:
    """The config's status, its workload's, and how many events it has logged."""
    return one(
        conn,
        "SELECT c.status, w.status, (SELECT count(*) FROM config_events e WHERE e.config_id = c.config_id)"
        " FROM configs c JOIN workloads w USING (workload_id) WHERE c.config_id = %s",
        config,
    )


SYSTEM_CALLS = [
    "SELECT config_transition({config}, 'complete')",
    "SELECT config_transition({config}, 'fail', 'I say so')",
    "SELECT config_transition({config}, 'prune', 'hyperband: forged')",
    "SELECT fail_config({config}, 'I say so')",
    "SELECT config_hop_committed({config}, 99)",
    "SELECT finish_workload({workload})",
    "SELECT workload_transition({workload}, 'finish')",
    "SELECT settle_unrunnable_configs()",
]


@pytest.mark.parametrize("whose", ["own", "another tenant's"])
@pytest.mark.parametrize("call", SYSTEM_CALLS)
def test_a_user_cannot_call_the_systems_transitions(
    conn: Session, tenants: list[tuple[str, str]], call: str, whose: str
) -> None:
    """Complete, fail or prune a config, or finish a workload, directly: refused, and nothing changes."""
    workload, config = launch(tenants[0] if whose == "own" else tenants[1], epochs=1)
    # An epoch trained: completing would be legal for the system, so only the caller's rights refuse it.
    as_system(conn, "UPDATE configs SET epochs_done = 1, status = 'running' WHERE config_id = %s", config)
    before = state(conn, config)
    with psycopg.connect(tenants[0][0], autocommit=True) as ann, pytest.raises(errors.InsufficientPrivilege):
        ann.execute("SET cerebro.internal = on")  # posing as the system does not help either
        ann.execute(call.format(config=config, workload=workload))
    assert state(conn, config) == before


def test_a_users_update_reaches_only_the_users_transitions(conn: Session, tenants: list[tuple[str, str]]) -> None:
    workload, config = launch(tenants[0])
    with psycopg.connect(tenants[0][0], autocommit=True) as ann:
        for target in ("completed", "failed"):  # the system's alone
            with pytest.raises(errors.InvalidParameterValue, match=f"from pending to {target}") as refused:
                ann.execute("UPDATE configs SET status = %s WHERE config_id = %s", [target, config])
            hint = refused.value.diag.message_hint or ""
            assert (
                hint.startswith("allowed: pending/running -> stopped (stop); ")
                and "(resume, needs epochs left)" in hint
            )
        with pytest.raises(errors.InvalidParameterValue, match="from running to completed") as refused:
            ann.execute("UPDATE workloads SET status = 'completed' WHERE workload_id = %s", [workload])
        assert "running/completed -> stopped (stop)" in (refused.value.diag.message_hint or "")
        assert state(conn, config) == ("pending", "running", 1)
        # What a user may do, they can read.
        mine = ann.execute("SELECT DISTINCT object, transition FROM status_transitions WHERE actor = 'user'")
        assert sorted(mine.fetchall()) == [
            ("config", "create"),
            ("config", "resume"),
            ("config", "stop"),
            ("workload", "resume"),
            ("workload", "stop"),
        ]


def test_the_system_is_held_to_its_own_transitions(conn: Session, tenants: list[tuple[str, str]]) -> None:
    _, config = launch(tenants[0])
    as_system(conn, "UPDATE configs SET status = 'running' WHERE config_id = %s", config)  # 'start'
    for target in ("pending", "completed"):  # back to pending: no such change; completed: epochs are left
        with pytest.raises(errors.InvalidParameterValue, match=f"from running to {target}") as refused:
            as_system(conn, "UPDATE configs SET status = %s WHERE config_id = %s", target, config)
        assert (refused.value.diag.message_hint or "").startswith("the system's: pending -> running (start); ")
    with pytest.raises(errors.InvalidParameterValue, match="no config transition of the system is named 'resume'"):
        conn.execute("SELECT config_transition(%s, 'resume')", [config])
    assert state(conn, config) == ("running", "running", 2)


def test_a_system_transition_that_no_longer_applies_does_nothing(conn: Session, tenants: list[tuple[str, str]]) -> None:
    workload, config = launch(tenants[0])
    assert one(conn, "SELECT config_transition(%s, 'complete')", config) is False  # epochs are left
    with psycopg.connect(tenants[0][0], autocommit=True) as ann:
        ann.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
    assert state(conn, config) == ("stopped", "completed", 2)
    assert one(conn, "SELECT config_transition(%s, 'fail', 'too late')", config) is False  # the user stopped it
    assert one(conn, "SELECT config_transition(%s, 'prune', 'too late')", config) is False
    assert state(conn, config) == ("stopped", "completed", 2)
    assert one(conn, "SELECT error FROM configs WHERE config_id = %s", config) is None
    assert one(conn, "SELECT workload_transition(%s, 'reopen')", workload) is True
    assert one(conn, "SELECT workload_transition(%s, 'finish')", workload) is True  # none of its configs active


def test_finishing_a_workload_a_config_became_active_in_is_skipped_not_an_error(
    conn: Session, tenants: list[tuple[str, str]]
) -> None:
    # What the trigger sees when a user's add_config commits between finish_workload's decision and its
    # UPDATE's trigger (a newer snapshot): the finish no longer applies. It must not fail the unit that
    # finished the workload (its config would be failed), only change nothing.
    workload, config = launch(tenants[0])
    as_system(conn, "UPDATE workloads SET status = 'completed' WHERE workload_id = %s", workload)
    assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "running"  # skipped
    with pytest.raises(errors.InvalidParameterValue, match="from running to stopped"):  # no such change: refused
        as_system(conn, "UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", workload)
    assert state(conn, config)[0] == "pending"


def test_workload_finished_is_the_one_rule_the_waiters_read(conn: Session, tenants: list[tuple[str, str]]) -> None:
    workload, config = launch(tenants[0])
    with psycopg.connect(tenants[0][0], autocommit=True) as ann:
        assert one(ann, "SELECT workload_finished(%s)", workload) is False
        ann.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
        assert one(ann, "SELECT workload_finished(%s)", workload) is True  # its last active config stopped
        ann.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [config])
        assert one(ann, "SELECT workload_finished(%s)", workload) is False  # reopened
        ann.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])
        assert one(ann, "SELECT workload_finished(%s)", workload) is True
        assert one(ann, "SELECT workload_finished(987654)") is True  # nothing to wait for
        ann.execute("CALL wait_for_workload(%s)", [workload])  # returns at once
    with sqlalchemy_connection(tenants[0][0]) as session:  # cerebro-db wait asks the same
        assert client.workload_finished(session, workload) is True
        session.execute(text("UPDATE workloads SET status = 'running' WHERE workload_id = :w"), {"w": workload})
        assert client.workload_finished(session, workload) is False


def test_the_table_is_one_list_of_known_statuses(conn: Session) -> None:
    rows = conn.execute("SELECT object, from_status, to_status, actor, event_kind FROM status_transitions").fetchall()
    statuses = {"config": set(CONFIG_STATUSES), "workload": set(WORKLOAD_STATUSES)}
    for obj, source, target, actor, kind in rows:
        assert {source, target} - {None} <= statuses[obj] and actor in ("user", "system")
        assert (kind is not None) == (obj == "config")
    keys = [row[:4] for row in rows]
    assert len(keys) == len(set(keys))  # one transition per change and actor
