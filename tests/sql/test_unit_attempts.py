"""The crash and retry budgets (sql/10_unit/42_unit_attempts.sql), driven as the scheduler drives them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors

from tests.conftest import one

Session = psycopg.Connection[Any]


@pytest.fixture
def config(conn: Session, blobs_2seg: str) -> Iterator[int]:
    """A pending config nobody trains (its workload is stopped again afterwards)."""
    workload = one(conn, "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.01]}', max_epochs => 2)", blobs_2seg)
    yield one(conn, "SELECT config_id FROM configs WHERE workload_id = %s", workload)
    conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s AND status = 'running'", [workload])


def attempt(conn: Session, config: int, outcome: str, detail: str = "why") -> str | None:
    """One attempt of ``config`` on segment 1, epoch 1, settled as ``outcome``; the failure reason, if any."""
    attempt_id = one(conn, "SELECT begin_unit_attempt(%s, 1, 1)", config)
    if outcome == "committed":
        conn.execute("SELECT commit_unit_attempt(%s)", [attempt_id])
        return None
    reason: str | None = one(conn, "SELECT end_unit_attempt(%s, %s, %s)", attempt_id, outcome, detail)
    return reason


def status(conn: Session, config: int) -> tuple[str, str | None]:
    result: tuple[str, str | None] = one(conn, "SELECT status, error FROM configs WHERE config_id = %s", config)
    return result


def test_three_crashes_in_a_row_fail_the_config_with_the_reason(conn: Session, config: int) -> None:
    assert attempt(conn, config, "crashed") is None
    assert attempt(conn, config, "crashed") is None
    assert status(conn, config)[0] == "pending"
    reason = attempt(conn, config, "crashed")
    assert reason is not None and "ended the server process 3 times in a row" in reason
    assert "epoch 1 on segment 1" in reason
    assert status(conn, config) == ("failed", reason)
    assert one(conn, "SELECT detail FROM config_events WHERE config_id = %s AND kind = 'failed'", config) == reason


def test_a_committed_unit_and_a_resume_each_give_a_fresh_budget(conn: Session, config: int) -> None:
    for _ in range(2):
        attempt(conn, config, "crashed")
    attempt(conn, config, "committed")
    for _ in range(2):
        attempt(conn, config, "crashed")
    assert status(conn, config)[0] == "pending"
    assert attempt(conn, config, "crashed") is not None  # three since the commit
    conn.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [config])
    for _ in range(2):
        assert attempt(conn, config, "crashed") is None
    assert status(conn, config) == ("running", None)


@pytest.mark.parametrize("outcome", ["bystander", "unavailable"])
def test_what_is_not_the_configs_doing_costs_nothing(conn: Session, config: int, outcome: str) -> None:
    for _ in range(5):
        assert attempt(conn, config, outcome) is None
    attempt(conn, config, "crashed")
    attempt(conn, config, outcome)
    attempt(conn, config, "crashed")
    assert status(conn, config)[0] == "pending"  # two crashes in a row, bystanders between them


def test_transient_errors_are_retried_up_to_their_own_budget(conn: Session, config: int) -> None:
    conn.execute("SET cerebro.max_unit_retries = 2")
    assert attempt(conn, config, "retried", "deadlock detected") is None
    reason = attempt(conn, config, "retried", "deadlock detected")
    assert reason is not None
    assert "rolled back 2 times in a row (cerebro.max_unit_retries = 2)" in reason and "deadlock detected" in reason
    assert status(conn, config)[0] == "failed"


def test_the_configs_own_error_fails_it_at_once(conn: Session, config: int) -> None:
    assert attempt(conn, config, "failed", "training diverged") == "training diverged"
    assert status(conn, config) == ("failed", "training diverged")


def test_a_bad_budget_setting_is_refused_by_name(conn: Session, config: int) -> None:
    conn.execute("SET cerebro.max_unit_crashes = 'lots'")
    attempt_id = one(conn, "SELECT begin_unit_attempt(%s, 0, 1)", config)
    with pytest.raises(errors.InvalidParameterValue, match="cerebro.max_unit_crashes must be a whole number") as bad:
        conn.execute("SELECT end_unit_attempt(%s, 'crashed', 'x')", [attempt_id])
    assert bad.value.diag.message_hint and "ALTER DATABASE" in bad.value.diag.message_hint
    assert one(conn, "SELECT outcome FROM unit_attempts WHERE attempt_id = %s", attempt_id) is None


def claimable(dsn: str, config: int) -> bool:
    """Whether segment 0 would ever take ``config`` now: claims there one after another, in one
    transaction that is rolled back (each claim holds its config, so the next one moves on)."""
    with psycopg.connect(dsn) as claimer:
        while (row := claimer.execute("SELECT config_id FROM claim_unit(0)").fetchone()) is not None:
            if row[0] == config:
                return True
    return False


def test_an_unsettled_attempt_keeps_its_config_from_being_claimed(conn: Session, config: int, dsn: str) -> None:
    open_attempt = one(conn, "SELECT begin_unit_attempt(%s, 0, 1)", config)
    assert not claimable(dsn, config)
    conn.execute("SELECT end_unit_attempt(%s, 'bystander', 'restarted')", [open_attempt])
    assert claimable(dsn, config)


def test_an_attempt_whose_begin_lost_its_reply_is_abandoned_unless_a_unit_holds_it(
    conn: Session, config: int, dsn: str
) -> None:
    lost = one(conn, "SELECT begin_unit_attempt(%s, 0, 1)", config)  # committed; the scheduler never heard
    with psycopg.connect(dsn) as in_flight:  # as a unit of the config in flight holds it (claim_unit's locks)
        in_flight.execute(
            "SELECT pg_advisory_xact_lock(config_lock_key(), %s), pg_advisory_xact_lock(segment_lock_key(), 1)",
            [config],
        )
        assert one(conn, "SELECT abandon_lost_attempts(%s)", config) == 0
    assert one(conn, "SELECT abandon_lost_attempts(%s)", config) == 1
    assert one(conn, "SELECT outcome FROM unit_attempts WHERE attempt_id = %s", lost) == "abandoned"
    assert claimable(dsn, config) and status(conn, config) == ("pending", None)


def test_a_new_scheduler_abandons_what_a_dead_one_left_open(conn: Session, config: int) -> None:
    open_attempt = one(conn, "SELECT begin_unit_attempt(%s, 0, 1)", config)
    assert one(conn, "SELECT abandon_unit_attempts()") >= 1
    assert one(conn, "SELECT outcome FROM unit_attempts WHERE attempt_id = %s", open_attempt) == "abandoned"
    assert status(conn, config) == ("pending", None)


def test_a_hop_a_server_crash_took_back_frees_its_config(conn: Session, config: int, dsn: str) -> None:
    """A unit's commit does not wait for its WAL flush: a crash right after may lose the hop, and with it the
    attempt's 'committed'. The scheduler hands its segment's last configs to the attempt log on reconnecting,
    which abandons such an attempt (free: the unit runs again) and leaves settled ones as they are."""
    from cerebro_db.scheduler import AttemptLog

    attempt(conn, config, "committed")  # a hop that stayed
    lost = one(conn, "SELECT begin_unit_attempt(%s, 0, 1)", config)  # a hop whose commit the crash lost
    assert not claimable(dsn, config)
    log = AttemptLog(dsn)
    try:
        log.committed_lately([config, config])
        log.settle()
    finally:
        log.close()
    outcomes = conn.execute(
        "SELECT outcome FROM unit_attempts WHERE config_id = %s ORDER BY attempt_id", [config]
    ).fetchall()
    assert outcomes == [("committed",), ("abandoned",)]
    assert one(conn, "SELECT outcome FROM unit_attempts WHERE attempt_id = %s", lost) == "abandoned"
    assert claimable(dsn, config)
