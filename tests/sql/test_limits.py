"""Admin-set limits (cerebro.limits): every path a user has is refused alike, and a refusal leaves nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from cerebro_db import install
from cerebro_db.cluster import ClusterConfig
from tests.conftest import one, unique

Session = psycopg.Connection[Any]
USER, ADMIN = "lim_dora", "lim_eve"
#: dora's own row: small limits, cheap to reach.
LIMITS = {"max_active_configs": 3, "max_epochs": 5, "default_unit_timeout": "10 min", "max_unit_timeout": "1 hour"}


@pytest.fixture(scope="module")
def logins(cluster: ClusterConfig, dsn: str, blobs_2seg: str) -> dict[str, str]:
    """dora (a cerebro_user with her own limits row and dataset) and eve (a cerebro_admin)."""
    with psycopg.connect(dsn, autocommit=True) as owner:
        owner.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(blobs_2seg)))
        owner.execute(
            "INSERT INTO limits (role_name, max_active_configs, max_epochs, default_unit_timeout, max_unit_timeout)"
            " VALUES (%(role)s, %(max_active_configs)s, %(max_epochs)s, %(default_unit_timeout)s,"
            " %(max_unit_timeout)s)",
            {"role": USER, **LIMITS},
        )
        owner.execute("INSERT INTO limits (role_name, max_epochs) VALUES ('lim_someone_else', 9)")
    logins = {
        name: dataclasses.replace(cluster, user=name, password=install.add_user(dsn, name, admin=name == ADMIN)).dsn()
        for name in (USER, ADMIN)
    }
    with psycopg.connect(logins[USER], autocommit=True) as dora:
        dora.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3,f4,f5}', validation_fraction => 0.25)",
            [unique("dora_blobs"), f"public.{blobs_2seg}"],
        )
    return logins


@pytest.fixture
def dora(logins: dict[str, str]) -> Iterator[Session]:
    with psycopg.connect(logins[USER], autocommit=True) as session:
        yield session


@pytest.fixture
def eve(logins: dict[str, str]) -> Iterator[Session]:
    with psycopg.connect(logins[ADMIN], autocommit=True) as session:
        yield session


@pytest.fixture
def at_limit(dora: Session, conn: Session) -> Iterator[dict[str, Any]]:
    """A workload of dora's with 3 configs pending (her max_active_configs), 2 epochs each; removed afterwards."""
    dataset = one(dora, "SELECT name FROM datasets")
    workload = one(dora, "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.1, 0.2, 0.3]}', max_epochs => 2)", dataset)
    config = one(dora, "SELECT min(config_id) FROM configs WHERE workload_id = %s", workload)
    yield {"dataset": dataset, "workload": workload, "config": config}
    conn.execute("DELETE FROM workloads WHERE owner = %s", [USER])


def snapshot(dora: Session) -> Any:
    """Everything of dora's that a refused action could have changed."""
    return one(
        dora,
        "SELECT (SELECT json_agg(w ORDER BY workload_id) FROM workloads w),"
        " (SELECT json_agg(c ORDER BY config_id) FROM configs c),"
        " (SELECT count(*) FROM config_events)",
    )


REFUSED = [
    ("SELECT run_model_selection(%(dataset)s, 'mlp', '{\"lr\": [0.1]}', max_epochs => 6)", "max_epochs", "6"),
    ("SELECT run_model_selection(%(dataset)s, 'mlp', '{\"lr\": [0.1]}', max_epochs => 2147483647)", "max_epochs", ""),
    (
        "SELECT run_model_selection(%(dataset)s, 'mlp', '{\"lr\": [0.1]}', max_epochs => 1)",
        "max_active_configs",
        "4 configs",
    ),
    (
        "SELECT run_model_selection(%(dataset)s, 'mlp', '{\"lr\": [0.1]}', unit_timeout => '2 hours')",
        "max_unit_timeout",
        "unit_timeout 02:00:00",
    ),
    # The workload writer called directly (tenants have no INSERT on workloads).
    (
        "SELECT * FROM _create_workload(%(dataset)s, 'mlp', '{\"lr\": [0.1]}', 'grid', 6, NULL, NULL, NULL, false,"
        " 0, NULL)",
        "max_epochs",
        "max_epochs 6",
    ),
    (
        "SELECT * FROM _create_workload(%(dataset)s, 'mlp', '{\"lr\": [0.1]}', 'grid', 1, NULL, NULL, NULL, false,"
        " 0, '1 day')",
        "max_unit_timeout",
        "unit_timeout 1 day",
    ),
    ("INSERT INTO configs (workload_id, params, max_epochs) VALUES (%(workload)s, '{}', 6)", "max_epochs", "6"),
    ("INSERT INTO configs (workload_id, params) VALUES (%(workload)s, '{}')", "max_active_configs", "4 configs"),
    ("SELECT add_config(%(workload)s, '{\"lr\": 0.5}')", "max_active_configs", "4 configs"),
    ("UPDATE configs SET max_epochs = 6 WHERE config_id = %(config)s", "max_epochs", "max_epochs 6"),
    ("UPDATE workloads SET unit_timeout = '61 min' WHERE workload_id = %(workload)s", "max_unit_timeout", "01:01:00"),
    ("SELECT clone_config(%(config)s, '{\"max_epochs\": 6}')", "max_epochs", "max_epochs 6"),
    ("SELECT clone_config(%(config)s, '{\"lr\": 0.01}')", "max_active_configs", "4 configs"),
]


@pytest.mark.parametrize(("statement", "limit", "asked"), REFUSED)
def test_each_path_is_refused_at_the_limit_and_changes_nothing(
    dora: Session, at_limit: dict[str, Any], statement: str, limit: str, asked: str
) -> None:
    before = snapshot(dora)
    with pytest.raises(errors.ProgramLimitExceeded) as raised:
        dora.execute(statement, at_limit)
    message, hint = raised.value.diag.message_primary or "", raised.value.diag.message_hint or ""
    assert f"exceeds the limit {limit} = " in message and message.endswith(f"for {USER}") and asked in message
    assert "a cerebro_admin can raise it" in hint and f"SET {limit} = ..." in hint and USER in hint
    assert snapshot(dora) == before


def test_a_refused_add_or_clone_takes_no_config_id(dora: Session, at_limit: dict[str, Any]) -> None:
    workload, config = at_limit["workload"], at_limit["config"]
    last = one(dora, "SELECT max(config_id) FROM configs")
    for statement in REFUSED:
        if statement[0].startswith(("SELECT add_config", "SELECT clone_config")):
            with pytest.raises(errors.ProgramLimitExceeded):
                dora.execute(statement[0], at_limit)
    dora.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
    assert one(dora, "SELECT add_config(%s, '{\"lr\": 0.5}')", workload) == last + 1


def test_resuming_counts_like_adding(dora: Session, at_limit: dict[str, Any]) -> None:
    workload, config = at_limit["workload"], at_limit["config"]
    dora.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
    dora.execute("SELECT add_config(%s, '{\"lr\": 0.5}')", [workload])  # back at 3
    before = snapshot(dora)
    with pytest.raises(errors.ProgramLimitExceeded, match="4 configs pending or running"):
        dora.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [config])
    assert snapshot(dora) == before
    # A stopped workload resumed while another holds all the places.
    dora.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])
    dora.execute(
        "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.1, 0.2, 0.3]}', max_epochs => 1)", [at_limit["dataset"]]
    )
    before = snapshot(dora)
    with pytest.raises(errors.ProgramLimitExceeded, match="7 configs pending or running"):
        dora.execute("UPDATE workloads SET status = 'running' WHERE workload_id = %s", [workload])
    assert snapshot(dora) == before


def test_two_inserts_at_once_cannot_both_take_the_last_place(
    logins: dict[str, str], dora: Session, at_limit: dict[str, Any]
) -> None:
    workload, config = at_limit["workload"], at_limit["config"]
    dora.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])  # one place left
    with psycopg.connect(logins[USER]) as first, psycopg.connect(logins[USER]) as second:
        first.execute("SELECT add_config(%s, '{\"lr\": 0.5}')", [workload])  # takes it, not committed yet
        second.execute("SET lock_timeout = '200ms'")
        with pytest.raises(errors.LockNotAvailable):  # waits for the first to end, whatever it does
            second.execute("SELECT add_config(%s, '{\"lr\": 0.6}')", [workload])
        second.rollback()
        first.commit()
        with pytest.raises(errors.ProgramLimitExceeded, match="4 configs pending or running"):
            second.execute("SELECT add_config(%s, '{\"lr\": 0.6}')", [workload])
    assert one(dora, "SELECT count(*) FROM configs WHERE status IN ('pending', 'running')") == 3


def test_unit_timeout_is_never_unbounded(dora: Session, conn: Session, at_limit: dict[str, Any]) -> None:
    workload = at_limit["workload"]
    assert one(dora, "SELECT unit_timeout::text FROM workloads WHERE workload_id = %s", workload) == "00:10:00"
    dora.execute("UPDATE workloads SET unit_timeout = '30 min' WHERE workload_id = %s", [workload])
    dora.execute("UPDATE workloads SET unit_timeout = NULL WHERE workload_id = %s", [workload])  # back to the default
    assert one(dora, "SELECT unit_timeout::text FROM workloads WHERE workload_id = %s", workload) == "00:10:00"
    # A role without a row of its own gets everyone's default.
    default = one(conn, "SELECT default_unit_timeout FROM limits WHERE role_name = '*'")
    ours = one(conn, "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.1]}', max_epochs => 1)", at_limit["dataset"])
    try:
        assert one(conn, "SELECT unit_timeout FROM workloads WHERE workload_id = %s", ours) == default
    finally:
        conn.execute("DELETE FROM workloads WHERE workload_id = %s", [ours])


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE limits SET max_epochs = 100 WHERE role_name = '{USER}'",
        "UPDATE limits SET max_epochs = 100 WHERE role_name = '*'",
        f"INSERT INTO limits (role_name, max_epochs) VALUES ('{USER}_2', 100)",
        f"DELETE FROM limits WHERE role_name = '{USER}'",
        "SELECT check_active_configs('lim_eve')",  # would hold another user's quota lock
    ],
)
def test_a_user_cannot_change_or_get_around_limits(dora: Session, statement: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        dora.execute(statement)
    assert one(dora, "SELECT max_epochs FROM role_limits(%s)", USER) == LIMITS["max_epochs"]


def test_a_user_sees_their_own_limits_and_everyones_only(dora: Session, eve: Session) -> None:
    assert {r[0] for r in dora.execute("SELECT role_name FROM limits")} == {"*", USER}
    assert {"*", USER, "lim_someone_else"} <= {r[0] for r in eve.execute("SELECT role_name FROM limits")}


def test_an_admin_can_raise_a_users_limit(dora: Session, eve: Session, at_limit: dict[str, Any]) -> None:
    config = at_limit["config"]
    eve.execute("UPDATE limits SET max_epochs = 8 WHERE role_name = %s", [USER])
    try:
        dora.execute("UPDATE configs SET max_epochs = 8 WHERE config_id = %s", [config])
        assert one(dora, "SELECT max_epochs FROM configs WHERE config_id = %s", config) == 8
    finally:
        eve.execute("UPDATE limits SET max_epochs = %s WHERE role_name = %s", [LIMITS["max_epochs"], USER])
    with pytest.raises(errors.InvalidParameterValue, match="cannot be removed"):
        eve.execute("DELETE FROM limits WHERE role_name = '*'")
