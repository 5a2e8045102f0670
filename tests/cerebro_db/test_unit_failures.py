"""How a unit that did not commit ended: one classification for every backend."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from cerebro_db.unit_failures import Farewell, Outcome, UnitFailure, classify

LOST = psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")


class Notice:
    """What a notice handler receives: only the SQLSTATE matters here."""

    def __init__(self, sqlstate: str) -> None:
        self.sqlstate = sqlstate


def farewell(sqlstate: str | None) -> Farewell:
    heard = Farewell()
    if sqlstate is not None:
        heard(Notice(sqlstate))  # type: ignore[arg-type]
    return heard


@pytest.mark.parametrize(
    ("said", "outcome"),
    [(None, Outcome.CRASHED), ("57P02", Outcome.BYSTANDER), ("57P01", Outcome.UNAVAILABLE), ("01000", Outcome.CRASHED)],
)
def test_a_lost_connection_is_a_crash_unless_the_server_said_why(said: str | None, outcome: Outcome) -> None:
    assert classify(LOST, farewell(said)).outcome is outcome


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (errors.ConnectionFailure("gone"), Outcome.UNAVAILABLE),
        (errors.AdminShutdown("terminating connection due to administrator command"), Outcome.UNAVAILABLE),
        (errors.CannotConnectNow("the database system is starting up"), Outcome.UNAVAILABLE),
        (errors.TooManyConnections("too many clients"), Outcome.UNAVAILABLE),
        (errors.UndefinedFunction("function cerebro.train_hop does not exist"), Outcome.UNAVAILABLE),
        (errors.InvalidSchemaName("schema cerebro does not exist"), Outcome.UNAVAILABLE),
        (errors.CrashShutdown("terminating connection because of crash of another server process"), Outcome.BYSTANDER),
        (errors.DeadlockDetected("deadlock detected"), Outcome.RETRIED),
        (errors.SerializationFailure("could not serialize access"), Outcome.RETRIED),
        (errors.LockNotAvailable("canceling statement due to lock timeout"), Outcome.RETRIED),
        (errors.QueryCanceled("canceling statement due to user request"), Outcome.RETRIED),
        (errors.DiskFull("could not extend file"), Outcome.RETRIED),
        (errors.InvalidParameterValue("training diverged"), Outcome.FAILED),
        (errors.InternalError("plpy.Error: a buffer that does not decode"), Outcome.FAILED),
        (errors.DataException("invalid input"), Outcome.FAILED),
        (psycopg.InterfaceError("the connection is closed"), Outcome.UNAVAILABLE),
        (LookupError("dataset 7 is not on the coordinator"), Outcome.RETRIED),
    ],
)
def test_each_error_has_one_outcome(error: Exception, outcome: Outcome) -> None:
    assert classify(error, Farewell()).outcome is outcome


def test_a_configs_own_error_keeps_its_message_and_the_segments_names_the_segment() -> None:
    assert classify(errors.InvalidParameterValue("training diverged"), where="segment 1").message == "training diverged"
    unavailable = classify(errors.ConnectionFailure("gone"), where="segment 1's server")
    assert unavailable.message == "segment 1's server: gone" and unavailable.segment_lost


def test_a_cancel_at_the_unit_timeout_fails_the_config_and_names_the_timeout() -> None:
    failure = classify(errors.QueryCanceled("canceling statement due to statement timeout"), timed_out="00:00:10")
    assert failure.outcome is Outcome.FAILED and not failure.segment_lost
    assert "ran longer than unit_timeout (00:00:10)" in failure.message


def test_a_classified_failure_stays_as_it_is() -> None:
    failure = UnitFailure(Outcome.BYSTANDER, "restarted")
    assert classify(failure) is failure
