"""The scheduler loop: one connection per segment, each claiming and running units.

All decisions are SQL (``claim_unit``); this loop only keeps every segment busy.
Each unit is one short transaction on the coordinator::

    BEGIN; SELECT * FROM claim_unit(s); <train and record the hop>; COMMIT;

where the segment's backend (``cerebro_db.backends``) trains on the shard, on the
coordinator's own server or on a segment server. A crash or cancel anywhere loses at
most the units in flight, which are simply run again. Idle segments sleep on LISTEN
``cerebro_units`` for at most ``idle_wait``: a unit this scheduler committed wakes them at once,
a user's change is seen at the next poll. Nothing NOTIFYs inside a unit's or a user's
transaction, so a full notification queue (a session that LISTENs and never reads) delays
wake-ups by at most ``idle_wait`` but fails no commit.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors

from cerebro_db import backends, migrate
from cerebro_db.backends import SegmentExecutor
from cerebro_db.connection import SEARCH_PATH
from cerebro_db.unit_failures import Farewell, UnitFailure, classify

log = logging.getLogger("cerebro.scheduler")

CHANNEL = "cerebro_units"
LOCK_WAIT_MS = 5000
#: A unit waits this long for a row a user holds locked, then is rolled back and runs later.
UNIT_LOCK_TIMEOUT = "30s"
#: If this process dies mid-unit, a backend running the unit notices within a second (at
#: its next batch) and rolls back.
CONNECTION_CHECK = "-c client_connection_check_interval=1000"
#: Units a segment committed shortly before its server crashed: their asynchronous commits may be lost.
LATELY = 8


class SchedulerBusy(RuntimeError):
    """Another scheduler already runs units against this database."""


@dataclass
class _Progress:
    """What the segment threads share: which are idle, how many units ran."""

    segments: int
    max_units: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    idle: set[int] = field(default_factory=set)
    reserved: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)

    def reserve(self) -> bool:
        """A slot of the unit budget for one claim (units in flight + committed <= max_units)."""
        with self.lock:
            if self.max_units is not None and self.reserved >= self.max_units:
                return False
            self.reserved += 1
            return True

    def spent(self) -> bool:
        with self.lock:
            return self.max_units is not None and len(self.results) >= self.max_units

    def release(self) -> None:
        with self.lock:
            self.reserved -= 1


class AttemptLog:
    """``unit_attempts``, written on a connection of its own (one per segment thread).

    An attempt begun here is committed before its unit trains, so a unit that ends its server
    process cannot roll it back. Settling one needs the server: while it restarts, the attempt
    waits here (and its config takes no unit) until the next try.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._unsettled: list[tuple[int, UnitFailure]] = []
        #: Configs whose begin lost its reply: its attempt may be committed, and open.
        self._lost_begins: list[int] = []

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # Failing a config updates its row: wait no longer for a tenant's row lock than a unit would.
            self._conn = psycopg.connect(
                self.dsn,
                autocommit=True,
                application_name="cerebro unit attempts",
                options=f"{SEARCH_PATH} -c lock_timeout={UNIT_LOCK_TIMEOUT}",
            )
        return self._conn

    def begin(self, config_id: int, segment: int, epoch: int) -> int:
        try:
            row = (
                self._connection()
                .execute("SELECT begin_unit_attempt(%s, %s, %s)", [config_id, segment, epoch])
                .fetchone()
            )
        except psycopg.OperationalError:
            self._lost_begins.append(config_id)  # the next settle abandons the attempt if it was committed
            raise
        assert row is not None
        attempt: int = row[0]
        return attempt

    def committed_lately(self, config_ids: Iterable[int]) -> None:
        """Configs whose units committed just before their server went away: a unit's transaction commits
        without waiting for its WAL flush (record_hop), so a server crash may have lost such a hop, its attempt
        open again. The next :meth:`settle` abandons the attempt if so (it costs nothing; the unit runs again)."""
        self._lost_begins.extend(config_ids)

    def end(self, attempt: int, failure: UnitFailure) -> None:
        """Settle an attempt that did not commit (now, or at the next :meth:`settle`)."""
        self._unsettled.append((attempt, failure))
        self.settle()

    def settle(self) -> None:
        while self._unsettled:
            attempt, failure = self._unsettled[0]
            try:
                row = (
                    self._connection()
                    .execute(
                        "SELECT a.config_id, end_unit_attempt(a.attempt_id, %s, %s)"
                        " FROM unit_attempts a WHERE a.attempt_id = %s",
                        [failure.outcome.value, failure.message, attempt],
                    )
                    .fetchone()
                )
            except psycopg.Error as error:
                # Its config takes no unit meanwhile; the others go on (raising here would stall the segment).
                log.warning("attempt %s stays unsettled until the next try (%s)", attempt, error)
                if isinstance(error, psycopg.OperationalError) and self._conn is not None and self._conn.broken:
                    self.close()
                return
            self._unsettled.pop(0)
            if row is None:
                continue  # its config was deleted meanwhile
            config_id, reason = row
            if reason is not None:
                log.error("config %s failed: %s", config_id, reason)
            else:
                log.warning("unit of config %s did not commit (%s); it will run again", config_id, failure)
        while self._lost_begins:
            try:
                self._connection().execute("SELECT abandon_lost_attempts(%s)", [self._lost_begins[0]])
            except psycopg.Error as error:
                log.warning("a lost begin of config %s is looked for at the next try (%s)", self._lost_begins[0], error)
                if isinstance(error, psycopg.OperationalError) and self._conn is not None and self._conn.broken:
                    self.close()
                return
            self._lost_begins.pop(0)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Scheduler:
    """Runs units on every registered segment until stopped (or idle, or a unit budget is spent).

    ``on_unit`` is called with each committed unit's summary (from any segment thread).
    ``passfile``: a libpq password file for the segment servers.
    ``keep_connections``: the segments' connections stay open from one :meth:`run` to the next, until
    :meth:`close` (their backends keep TensorFlow imported and their caches warm, as in one long run).
    """

    def __init__(
        self,
        dsn: str,
        *,
        on_unit: Callable[[dict[str, Any]], None] | None = None,
        idle_wait: float = 1.0,
        passfile: Path | None = None,
        keep_connections: bool = False,
    ) -> None:
        self.dsn = dsn
        self.passfile = passfile
        self.on_unit = on_unit
        self.idle_wait = idle_wait
        self.keep_connections = keep_connections
        #: The open connection of each segment (and what its server said on leaving), by segment.
        self._connections: dict[int, tuple[psycopg.Connection[Any], Farewell]] = {}
        self._stop = threading.Event()
        #: Set once :meth:`run` holds the database's scheduler lock (``scheduler_alive()`` is true).
        self.ready = threading.Event()

    def stop(self) -> None:
        """Finish the units in flight, then return from :meth:`run`."""
        self._stop.set()

    def close(self) -> None:
        """Close the segments' connections that ``keep_connections`` kept."""
        for segment in list(self._connections):
            self._drop_connection(segment)

    def run(self, *, until_idle: bool = False, max_units: int | None = None) -> list[dict[str, Any]]:
        """Run units; returns the summaries of those this call committed.

        ``until_idle``: return once no segment runs a unit and none could start one.
        ``max_units``: return after that many units (to interrupt a run on purpose).
        """
        self._stop.clear()
        control = self._connect_locked()
        try:
            # Units a dead scheduler left open ended unseen: they cost their configs nothing.
            control.execute("SELECT abandon_unit_attempts()")
            # Each unit sweeps the state files no one names; so does a start, for the files of workloads deleted
            # while no unit ran.
            control.execute("SELECT sweep_state_files()")
            self.ready.set()
            segments = control.execute("SELECT segment, dsn FROM segments ORDER BY 1").fetchall()
            progress = _Progress(len(segments), max_units)
            threads = [
                threading.Thread(
                    target=self._segment_loop, args=(segment, dsn, progress, until_idle), name=f"segment-{segment}"
                )
                for segment, dsn in segments
            ]
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                self._stop.wait(self.idle_wait)
                control = self._keep_lock(control)
            for thread in threads:
                thread.join()
        finally:
            control.close()
        return progress.results

    def _connect_locked(self) -> psycopg.Connection[Any]:
        """The control connection, holding the one-scheduler-per-database lock for its lifetime."""
        control = psycopg.connect(self.dsn, autocommit=True, application_name="cerebro scheduler", options=SEARCH_PATH)
        try:
            # Before anything, the lock included (a database without the API has no lock key): the code of another
            # schema version would fail its units, or half work.
            migrate.check_schema_version(control)
        except BaseException:  # a refusal, or the server went meanwhile: the connection goes with it
            control.close()
            raise
        # Wait a little: a scheduler that was just killed leaves a backend that needs a
        # moment to notice and release the lock.
        control.execute("SELECT set_config('lock_timeout', %s, false)", [str(LOCK_WAIT_MS)])
        try:
            control.execute("SELECT pg_advisory_lock(scheduler_lock_key(), 0)")
        except errors.LockNotAvailable:
            control.close()
            raise SchedulerBusy(
                "another cerebro-db scheduler is running against this database; "
                "stop it first (cerebro-db down), or leave it to run the units"
            ) from None
        return control

    def _keep_lock(self, control: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        """A restarted server forgets the lock with the connection: take it again, or stop if
        another scheduler took it meanwhile (claims stay exclusive either way: they lock per unit)."""
        try:
            control.execute("SELECT 1")
            return control
        except psycopg.OperationalError:
            control.close()
        try:
            return self._connect_locked()
        except psycopg.OperationalError:
            return control  # still down; the next round tries again
        except SchedulerBusy as busy:
            log.error("%s; this one stops", busy)
            self.stop()
            return control

    def _segment_loop(self, segment: int, location: str | None, progress: _Progress, until_idle: bool) -> None:
        """Serve one segment; a lost connection (a server restart) is re-opened, its unit runs again."""
        attempts = AttemptLog(self.dsn)
        #: The configs of this segment's last units: what a server crash may have un-committed.
        lately: deque[int] = deque(maxlen=LATELY)
        try:
            while not self._stop.is_set():
                try:
                    conn, farewell = self._connection(segment)
                    try:
                        with contextlib.closing(self._open_segment(segment, location)) as executor:
                            self._serve(conn, farewell, executor, attempts, progress, until_idle, lately)
                        if self.keep_connections:
                            conn.execute("UNLISTEN *")  # nothing queues up for it until the next run
                    except BaseException:  # a connection in doubt is not served on again
                        self._drop_connection(segment)
                        raise
                    if not self.keep_connections:
                        self._drop_connection(segment)
                except (psycopg.OperationalError, UnitFailure) as error:
                    log.warning("segment %s is unavailable (%s); its unit runs again, reconnecting", segment, error)
                    attempts.committed_lately(lately)
                    lately.clear()
                    self._stop.wait(self.idle_wait)
                except Exception:  # a bug must not silence a segment for good: log it, start afresh
                    log.exception("segment %s hit an unexpected error; reconnecting", segment)
                    self._stop.wait(self.idle_wait)
        finally:
            attempts.close()
        self._wake_all()

    def _connection(self, segment: int) -> tuple[psycopg.Connection[Any], Farewell]:
        """The segment's connection: the one kept from the last run, if it is still open, else a new one."""
        kept = self._connections.get(segment)
        if kept is not None and not kept[0].closed:
            return kept
        conn = psycopg.connect(
            self.dsn,
            autocommit=True,
            application_name=f"cerebro segment {segment}",
            # A unit's transaction idles while a segment server trains: no idle timeout.
            options=f"{SEARCH_PATH} -c lock_timeout={UNIT_LOCK_TIMEOUT} {CONNECTION_CHECK}"
            " -c idle_in_transaction_session_timeout=0",
        )
        kept = self._connections[segment] = (conn, Farewell.watch(conn))
        return kept

    def _drop_connection(self, segment: int) -> None:
        kept = self._connections.pop(segment, None)
        if kept is not None:
            kept[0].close()

    def _open_segment(self, segment: int, location: str | None) -> SegmentExecutor:
        passfile = {"passfile": str(self.passfile)} if self.passfile and self.passfile.exists() else {}
        return backends.open_segment(segment, location, options=f"{SEARCH_PATH} {CONNECTION_CHECK}", **passfile)

    def _serve(
        self,
        conn: psycopg.Connection[Any],
        farewell: Farewell,
        executor: SegmentExecutor,
        attempts: AttemptLog,
        progress: _Progress,
        until_idle: bool,
        lately: deque[int],
    ) -> None:
        segment = executor.segment
        conn.execute(f"LISTEN {CHANNEL}")
        while not self._stop.is_set():
            if progress.spent():
                self._stop.set()
                return
            if not progress.reserve():  # other segments hold the last slots; they may yet give one back
                self._wait_for_work(conn)
                continue
            # Busy from the claim on: the epoch end of the unit it may run can make new work (a rung, a TPE
            # config, an accepted suggestion), so no other segment may take everyone for idle meanwhile.
            with progress.lock:
                progress.idle.discard(segment)
            try:
                result = self._run_one(conn, farewell, executor, attempts)
            except BaseException:  # the unit did not commit: its slot of the budget is free again
                progress.release()
                raise
            if result is not None:
                lately.append(result["config_id"])
                with progress.lock:
                    progress.results.append(result)
                if self.on_unit:
                    self.on_unit(result)
                continue
            progress.release()
            # Nothing to claim: configs that can never get a unit (no epoch left, dataset gone)
            # are completed or failed with a reason, so no workload stays running for ever.
            try:
                conn.execute("SELECT settle_unrunnable_configs()")
            except (errors.LockNotAvailable, errors.DeadlockDetected) as error:
                log.warning("configs that can never run are settled later (%s)", error)  # a tenant holds a row
            with progress.lock:
                progress.idle.add(segment)
                everyone_idle = len(progress.idle) == progress.segments
            if until_idle and everyone_idle and not self._work_left(conn):
                self._stop.set()
                return
            self._wait_for_work(conn)

    def _wait_for_work(self, conn: psycopg.Connection[Any]) -> None:
        """Sleep until this scheduler commits a unit (NOTIFY), at most ``idle_wait`` seconds: users'
        changes (resume, add, max_epochs) notify nobody, so they are seen within ``idle_wait``."""
        for _ in conn.notifies(timeout=self.idle_wait, stop_after=1):
            pass

    def _run_one(
        self, conn: psycopg.Connection[Any], farewell: Farewell, executor: SegmentExecutor, attempts: AttemptLog
    ) -> dict[str, Any] | None:
        """Claim and run one unit on the executor's segment in one transaction; None if nothing ran.

        The claimed unit's attempt is committed first, on the attempt log's own connection; a unit
        that does not commit is classified (:func:`classify`) and its attempt settled, which may fail
        the config. Raises :class:`UnitFailure` when the connection that ran it is gone.
        """
        attempts.settle()  # attempts left unsettled by a lost connection count before anything runs
        segment = executor.segment
        attempt: int | None = None
        epoch = 0
        timeout: str | None = None
        timeout_ms = 0
        started = time.monotonic()
        try:
            with conn.transaction():
                # The workload's unit_timeout in ms (the table keeps it within statement_timeout's range).
                claimed = conn.execute(
                    "SELECT u.config_id, u.epoch, w.unit_timeout::text,"
                    " greatest(1, ceil(extract(epoch FROM w.unit_timeout) * 1000))::bigint"
                    " FROM claim_unit(%s) u JOIN workloads w USING (workload_id)",
                    [segment],
                ).fetchone()
                if claimed is None:
                    return None
                config_id, epoch, timeout, timeout_ms = claimed
                attempt = attempts.begin(config_id, segment, epoch)
                if timeout is not None:  # for this transaction only
                    conn.execute("SELECT set_config('statement_timeout', %s, true)", [str(timeout_ms)])
                started = time.monotonic()
                result = executor.run_unit(conn, config_id)
                conn.execute("SELECT commit_unit_attempt(%s)", [attempt])
        except Exception as error:
            if attempt is None:  # the claim itself failed: not a config's doing
                raise
            timed_out = timeout if timeout is not None and time.monotonic() - started >= timeout_ms / 1000 else None
            failure = classify(
                error, farewell, where=f"unit of epoch {epoch} on segment {segment}", timed_out=timed_out
            )
            attempts.end(attempt, failure)
            if failure.segment_lost:
                raise failure from error
            return None
        self._notify(conn, "")  # the hop may have made units legal on idle segments
        return result

    def _work_left(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM configs c CROSS JOIN segments s"
            " WHERE c.status IN ('pending', 'running') AND unit_is_legal(c.config_id, s.segment))"
        ).fetchone()
        return bool(row and row[0])

    def _wake_all(self) -> None:
        """Let idle segment threads see the stop flag without waiting for their timeout."""
        if self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    self._notify(conn, "stop")
            except psycopg.OperationalError:
                pass  # the server is away (restarting): they see the flag within idle_wait anyway

    @staticmethod
    def _notify(conn: psycopg.Connection[Any], payload: str) -> None:
        """Wake idle segments, best effort, in an autocommit statement of its own (never in a unit's
        transaction): if the queue is full or the server away, they wake within ``idle_wait`` anyway."""
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])
