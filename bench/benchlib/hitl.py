"""What bench/hitl_latency.py watches a running scheduler with: the scheduler in a thread, a session polling
``epoch_metrics``, the ``on_unit`` hook checking visibility after each commit, the server's lock-wait log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from cerebro_db.scheduler import Scheduler


def server_clock(conn: psycopg.Connection[Any]) -> float:
    row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


class CapturedLog(logging.Handler):
    """Keeps the scheduler's warnings and errors (a cancelled or failed unit is a finding here)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname} {record.getMessage()}")


class LockWaitLog:
    """The control session's lock waits over 10 ms, as the server reports them (log_lock_waits).

    deadlock_timeout and log_lock_waits are superuser settings; the embedded cluster's user is one.
    With client_min_messages = log, the LOG lines reach this client as notices.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.enabled = False

    def attach(self, conn: psycopg.Connection[Any]) -> None:
        try:
            for setting in ("deadlock_timeout = '10ms'", "log_lock_waits = on", "client_min_messages = log"):
                conn.execute("SET " + setting)  # constants only
            self.enabled = True
        except psycopg.errors.InsufficientPrivilege:
            return
        conn.add_notice_handler(self._notice)

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        message = diag.message_primary or ""
        if "ShareLock" in message or "waiting for" in message or "acquired" in message:
            detail = f" ({diag.message_detail})" if diag.message_detail else ""
            self.messages.append(message + detail)


class SchedulerThread(threading.Thread):
    """``Scheduler.run`` (without until_idle: the benchmark decides when to end) in the background."""

    def __init__(self, scheduler: Scheduler) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.scheduler = scheduler
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.scheduler.run()
        except BaseException as error:  # reported by check()
            self.error = error

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the scheduler thread died: {self.error!r}") from self.error
        if not self.is_alive():
            raise RuntimeError("the scheduler thread ended early")


class Observer(threading.Thread):
    """Another session polling ``epoch_metrics``: when (server clock) each row is first seen."""

    def __init__(self, dsn: str, poll_s: float) -> None:
        super().__init__(name="observer", daemon=True)
        self.dsn = dsn
        self.poll_s = poll_s
        self.first_seen: dict[tuple[int, int], float] = {}
        self.polls = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True, application_name="hitl observer") as conn:
                while not self._halt.is_set():
                    # The uncorrelated subquery runs once, after the statement's snapshot was taken.
                    rows = conn.execute(
                        "SELECT (SELECT extract(epoch FROM clock_timestamp())::float8), config_id, epoch"
                        " FROM epoch_metrics"
                    ).fetchall()
                    self.polls += 1
                    for seen, config_id, epoch in rows:
                        self.first_seen.setdefault((int(config_id), int(epoch)), float(seen))
                    self._halt.wait(self.poll_s)
        except BaseException as error:
            self.error = error

    def halt(self) -> None:
        self._halt.set()
        self.join()
        if self.error is not None:
            raise RuntimeError(f"the observer thread died: {self.error!r}") from self.error


@dataclass
class VisibilityCheck:
    config_id: int
    epoch: int
    at: float
    visible: bool


class UnitMonitor:
    """The scheduler's ``on_unit`` hook: right after an epoch's unit committed, is its row visible elsewhere?"""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, application_name="hitl monitor")
        self.lock = threading.Lock()
        self.checks: list[VisibilityCheck] = []
        self.errors: list[str] = []

    def on_unit(self, result: dict[str, Any]) -> None:
        if not result.get("epoch_done"):
            return
        config_id, epoch = int(result["config_id"]), int(result["epoch"])
        try:
            with self.lock:
                row = self.conn.execute(
                    "SELECT extract(epoch FROM clock_timestamp())::float8,"
                    " EXISTS (SELECT 1 FROM epoch_metrics WHERE config_id = %s AND epoch = %s)",
                    [config_id, epoch],
                ).fetchone()
            assert row is not None
            self.checks.append(VisibilityCheck(config_id, epoch, float(row[0]), bool(row[1])))
        except Exception as error:  # never kill a segment thread from a benchmark hook
            self.errors.append(repr(error))

    def close(self) -> None:
        self.conn.close()


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, scheduler: SchedulerThread, poll_s: float = 0.02
) -> float:
    """Poll ``predicate`` until true; the client perf_counter when it was."""
    deadline = time.perf_counter() + timeout_s
    while True:
        if predicate():
            return time.perf_counter()
        scheduler.check()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
