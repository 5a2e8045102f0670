"""No config stays pending or running with no unit possible, and no workload stays running with nothing to run.

The status guard settles what a user does (lowering max_epochs, stopping the last active config),
clone_config refuses a clone with no epoch left, and settle_unrunnable_configs() (called by the
scheduler when a segment finds nothing to claim) settles the rest; verify.stranded() finds any left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cerebro_db import cli
from cerebro_db.connection import sqlalchemy_connection
from cerebro_db.testing import verify
from tests.conftest import TINY_CNN, launch, one

Session = psycopg.Connection[Any]


@pytest.fixture
def workload(conn: Session, fashion_2seg: str) -> Iterator[int]:
    """A fresh 2-epoch workload of one config; stopped afterwards if a test left it running."""
    launched = launch(conn, fashion_2seg, {"lr": [0.001], **TINY_CNN}, epochs=2)
    yield launched
    conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s AND status = 'running'", [launched])


def config_of(conn: Session, workload: int) -> int:
    config: int = one(conn, "SELECT config_id FROM configs WHERE workload_id = %s", workload)
    return config


def as_system(conn: Session, query: str, *params: Any) -> None:
    """A write of the system's own (the status guard lets it through, and no trigger settles it)."""
    with conn.transaction():
        conn.execute("SET LOCAL cerebro.internal = on")
        conn.execute(query, list(params))


def last_event(conn: Session, config: int) -> tuple[str, str, str | None]:
    event: tuple[str, str, str | None] = one(
        conn,
        "SELECT kind, actor, detail FROM config_events WHERE config_id = %s ORDER BY event_id DESC LIMIT 1",
        config,
    )
    return event


def about(problems: list[str], *ids: int) -> list[str]:
    """The problems that name one of these configs or workloads (the helper checks the whole database)."""
    return [p for p in problems if any(p.startswith((f"config {i} ", f"workload {i} ")) for i in ids)]


def test_a_clone_of_a_finished_config_is_refused_with_the_call_that_works(conn: Session, workload: int) -> None:
    source = config_of(conn, workload)
    as_system(conn, "UPDATE configs SET epochs_done = 2, status = 'completed' WHERE config_id = %s", source)
    conn.execute("SELECT settle_unrunnable_configs()")  # as the scheduler does: the workload is finished
    before = one(conn, "SELECT count(*) FROM configs WHERE workload_id = %s", workload)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"config {source} has finished its 2 epochs") as e:
        conn.execute("SELECT clone_config(%s, '{\"lr\": 0.0005}')", [source])
    works = f'clone_config({source}, \'{{"lr": 0.0005, "max_epochs": 4}}\')'  # its 2 epochs + the workload's 2
    assert e.value.diag.message_hint == f"pass max_epochs, e.g. {works}"
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="clone max_epochs must be a number >= 3, got 2"):
        conn.execute("SELECT clone_config(%s, '{\"max_epochs\": 2}')", [source])
    assert one(conn, "SELECT count(*) FROM configs WHERE workload_id = %s", workload) == before  # nothing changed
    assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"

    clone = one(conn, 'SELECT clone_config(%s, \'{"lr": 0.0005, "max_epochs": 3}\')', source)
    assert one(conn, "SELECT status, epochs_done, max_epochs FROM configs WHERE config_id = %s", clone) == (
        "pending",
        2,
        3,
    )
    assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "running"


def test_lowering_max_epochs_to_the_epochs_done_completes_the_config_and_its_workload(
    conn: Session, dsn: str, workload: int
) -> None:
    config = config_of(conn, workload)
    as_system(conn, "UPDATE configs SET epochs_done = 1, status = 'running' WHERE config_id = %s", config)
    conn.execute("UPDATE configs SET max_epochs = 1 WHERE config_id = %s", [config])  # as a user
    assert one(conn, "SELECT status, error FROM configs WHERE config_id = %s", config) == ("completed", None)
    kind, actor, detail = last_event(conn, config)
    assert (kind, actor) == ("completed", conn.info.user)
    assert detail == "max_epochs lowered to the 1 epoch done: nothing left to train"
    assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"
    conn.execute("CALL wait_for_workload(%s)", [workload])  # both return at once (no scheduler runs here)
    with sqlalchemy_connection(dsn) as client:
        cli.wait_for(client, workload)
    assert about(verify.stranded(conn), config, workload) == []


def test_waiting_for_a_running_workload_without_a_scheduler_says_so(conn: Session, workload: int) -> None:
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="has 1 configs to train, but no scheduler"):
        conn.execute("CALL wait_for_workload(%s)", [workload])


def test_stopping_the_last_active_config_finishes_the_workload_and_resuming_reopens_it(
    conn: Session, workload: int
) -> None:
    config = config_of(conn, workload)
    conn.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
    assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"
    conn.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [config])
    assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "running"


def test_the_helper_sees_a_config_with_no_epoch_left_and_settle_completes_it(conn: Session, workload: int) -> None:
    config = config_of(conn, workload)
    as_system(conn, "UPDATE configs SET epochs_done = 2, status = 'running' WHERE config_id = %s", config)
    assert about(verify.stranded(conn), config, workload) == [
        f"config {config} of workload {workload} is running but can never get a unit:"
        " max_epochs (2) reached: no epoch left to train",
        f"workload {workload} is running, but none of its configs can get a unit",
    ]
    assert one(conn, "SELECT settle_unrunnable_configs()") >= 1
    assert one(conn, "SELECT status, error FROM configs WHERE config_id = %s", config) == ("completed", None)
    assert last_event(conn, config) == ("completed", "cerebro", "max_epochs (2) reached: no epoch left to train")
    assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"
    assert about(verify.stranded(conn), config, workload) == []
    assert one(conn, "SELECT settle_unrunnable_configs()") == 0  # nothing left to do
    assert one(conn, "SELECT current_setting('cerebro.internal', true)") in ("", None)  # not left on


def test_the_helper_sees_a_workload_whose_configs_all_stopped_and_settle_finishes_it(
    conn: Session, workload: int
) -> None:
    as_system(conn, "UPDATE configs SET status = 'stopped' WHERE workload_id = %s", workload)
    assert about(verify.stranded(conn), workload) == [
        f"workload {workload} is running, but none of its configs can get a unit"
    ]
    conn.execute("SELECT settle_unrunnable_configs()")
    assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"


def test_settle_fails_a_config_whose_dataset_is_spread_over_unregistered_segments(
    conn: Session, workload: int, fashion_2seg: str
) -> None:
    config = config_of(conn, workload)
    reason = (
        f"dataset {fashion_2seg} is spread over 2 segments, but only 1 of segments 0-1 are registered;"
        " register them again (cerebro-db up --segments) and resume the config,"
        " or prepare the dataset again for the segments there are"
    )
    with conn.transaction(force_rollback=True):  # the segment comes back with the rollback
        conn.execute("DELETE FROM segments WHERE segment = 1")
        assert about(verify.stranded(conn), config) == [
            f"config {config} of workload {workload} is pending but can never get a unit: {reason}"
        ]
        conn.execute("SELECT settle_unrunnable_configs()")
        assert one(conn, "SELECT status, error FROM configs WHERE config_id = %s", config) == ("failed", reason)
        assert last_event(conn, config) == ("failed", "cerebro", reason)
        assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"
        assert about(verify.stranded(conn), config, workload) == []


def test_settle_fails_a_config_whose_dataset_is_gone(conn: Session, workload: int, fashion_2seg: str) -> None:
    config = config_of(conn, workload)
    with pytest.raises(psycopg.errors.ForeignKeyViolation):  # the way a dataset could go: refused
        conn.execute("DELETE FROM datasets WHERE name = %s", [fashion_2seg])
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL session_replication_role = replica")  # past the foreign key, as the superuser
        conn.execute("DELETE FROM datasets WHERE name = %s", [fashion_2seg])
        conn.execute("SET LOCAL session_replication_role = origin")
        conn.execute("SELECT settle_unrunnable_configs()")
        assert one(conn, "SELECT status, error FROM configs WHERE config_id = %s", config) == (
            "failed",
            f"dataset {fashion_2seg} no longer exists",
        )
        assert one(conn, "SELECT status FROM workloads WHERE workload_id = %s", workload) == "completed"


def test_a_clone_keeps_the_source_epochs_and_gets_its_own_max(conn: Session, workload: int) -> None:
    """A running source: the clone takes its max_epochs unless told otherwise, and has epochs left."""
    source = config_of(conn, workload)
    as_system(conn, "UPDATE configs SET epochs_done = 1, status = 'running' WHERE config_id = %s", source)
    clone = one(conn, "SELECT clone_config(%s, %s)", source, json.dumps({"lr": 0.002}))
    assert one(conn, "SELECT epochs_done, max_epochs FROM configs WHERE config_id = %s", clone) == (1, 2)
    assert about(verify.stranded(conn), source, clone, workload) == []
