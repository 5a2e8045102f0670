"""How a unit that did not commit ended, decided in one place for every backend.

The outcome goes to ``unit_attempts`` (``sql/10_unit/42_unit_attempts.sql`` decides what it costs):

- ``unavailable``: the segment cannot run units now (a lost or refused connection, a server
  shutting down, too many connections, the schema missing on a segment server). Free; the
  unit runs again once the segment is back.
- ``bystander``: the server restarted because *another* process crashed. Free.
- ``crashed``: the server process running the unit ended without a word (SIGKILL from the
  OOM killer, a native crash, ``os.kill``): counts against ``cerebro.max_unit_crashes``.
- ``retried``: rolled back for a reason that may pass (deadlock, serialization failure,
  lock timeout, a cancel, a full disk): counts against ``cerebro.max_unit_retries``.
- ``failed``: the config's own error (its model, a diverging loss, a buffer that does not
  decode, its ``unit_timeout``): the config fails with the message.

A server that ends a connection on purpose says why first, in a notice (PostgreSQL sends
``57P02`` to every other backend when one crashes, ``57P01`` on an immediate shutdown); a
backend that is killed sends nothing. :class:`Farewell` listens for that notice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import errors

ADMIN_SHUTDOWN = "57P01"
CRASH_SHUTDOWN = "57P02"
CANNOT_CONNECT_NOW = "57P03"
TOO_MANY_CONNECTIONS = "53300"
#: Errors raised when the cerebro schema (or a function of it) is missing where a unit runs.
_SCHEMA_MISSING = ("3F000", "42883", "42P01")
#: Errors that may pass if the unit simply runs again.
_MAY_PASS = ("40001", "40P01", "55P03", "57014", "53100", "53200")


class Outcome(StrEnum):
    """``unit_attempts.outcome``."""

    COMMITTED = "committed"
    CRASHED = "crashed"
    BYSTANDER = "bystander"
    RETRIED = "retried"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"
    ABANDONED = "abandoned"


@dataclass
class UnitFailure(Exception):
    """A unit that did not commit, classified: ``message`` says why (for the log and the config)."""

    outcome: Outcome
    message: str

    def __str__(self) -> str:
        return f"{self.outcome}: {self.message}"

    @property
    def segment_lost(self) -> bool:
        """Whether the connection that ran the unit is gone (and must be opened again)."""
        return self.outcome in (Outcome.CRASHED, Outcome.BYSTANDER, Outcome.UNAVAILABLE)


class Farewell:
    """A notice handler that remembers why a server ended the connection, if it said so."""

    def __init__(self) -> None:
        self.sqlstate: str | None = None

    def __call__(self, diagnostic: errors.Diagnostic) -> None:
        if diagnostic.sqlstate in (ADMIN_SHUTDOWN, CRASH_SHUTDOWN):
            self.sqlstate = diagnostic.sqlstate

    @classmethod
    def watch(cls, conn: psycopg.Connection[Any]) -> Farewell:
        farewell = cls()
        conn.add_notice_handler(farewell)
        return farewell


def classify(
    error: BaseException, farewell: Farewell | None = None, *, where: str = "", timed_out: str | None = None
) -> UnitFailure:
    """The outcome of a unit that raised ``error``.

    ``farewell`` listens on the connection that raised it; ``where`` names the segment for
    messages about it; ``timed_out`` is the unit's ``unit_timeout`` if it had run that long
    when it was cancelled (a cancel before that is someone else's: it may pass).
    """
    if isinstance(error, UnitFailure):
        return error
    place = f"{where}: " if where else ""
    if not isinstance(error, psycopg.Error):  # not the database's: bounded by the retry budget all the same
        return UnitFailure(Outcome.RETRIED, f"{place}{type(error).__name__}: {error}")
    sqlstate = error.sqlstate
    message = error.diag.message_primary or str(error).strip()
    if sqlstate is None and isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        said = farewell.sqlstate if farewell else None
        if said == CRASH_SHUTDOWN:
            return UnitFailure(Outcome.BYSTANDER, f"{place}the server restarted after another process crashed")
        if said == ADMIN_SHUTDOWN or isinstance(error, psycopg.InterfaceError):
            return UnitFailure(Outcome.UNAVAILABLE, f"{place}{message}")
        return UnitFailure(
            Outcome.CRASHED, f"{place}the server process running the unit ended without a word ({message})"
        )
    if sqlstate is None:
        return UnitFailure(Outcome.FAILED, message)
    if sqlstate == CRASH_SHUTDOWN:
        return UnitFailure(Outcome.BYSTANDER, f"{place}{message}")
    if (
        sqlstate.startswith("08")
        or sqlstate in (ADMIN_SHUTDOWN, CANNOT_CONNECT_NOW, TOO_MANY_CONNECTIONS)
        or sqlstate in _SCHEMA_MISSING
    ):
        return UnitFailure(Outcome.UNAVAILABLE, f"{place}{message}")
    if isinstance(error, errors.QueryCanceled) and timed_out is not None:
        return UnitFailure(
            Outcome.FAILED,
            f"{where or 'the unit'} ran longer than unit_timeout ({timed_out}) and was cancelled (rolled back); "
            "raise workloads.unit_timeout and resume the config",
        )
    if sqlstate in _MAY_PASS:
        return UnitFailure(Outcome.RETRIED, f"{place}{message}")
    return UnitFailure(Outcome.FAILED, message)
