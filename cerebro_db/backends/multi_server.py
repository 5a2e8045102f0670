"""``multi-server``: each segment is a PostgreSQL server of its own, holding its shards.

The coordinator keeps the catalog (datasets, workloads, configs, states, metrics) and
every decision; a segment server only trains. Per unit, inside the coordinator's
transaction that claimed it::

    coordinator:     SELECT context, state FROM unit_context(config, segment)
    segment server:  SELECT summary, new_state FROM train_hop(context, state)
    coordinator:     SELECT record_hop(config, segment, summary, new_state)

A segment server receives a dataset's shards at its first unit of that dataset: its
own training buffers and the validation buffers (the epoch's last hop evaluates on
all of them), streamed with binary COPY from the coordinator in one transaction, so
a server has a dataset whole or not at all.

Membership is the coordinator's ``segments`` table: ``dsn`` is the segment server's
libpq URL without its password (the scheduler's passfile or environment has it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from cerebro_db import install
from cerebro_db.backends import SEARCH_PATH
from cerebro_db.cluster import LocalCluster, temporary_cluster, temporary_server

DEFAULT_PORT = 5432
DEFAULT_USER = "cerebro"
DEFAULT_DATABASE = "cerebro"


class MembershipError(ValueError):
    """A segment list that cannot be registered (bad spec, or workloads still running)."""


class ServerSegment:
    """Runs one segment's units on its segment server, over one warm connection."""

    def __init__(self, segment: int, dsn: str, **connect: Any) -> None:
        self.segment = segment
        self._conn = psycopg.connect(dsn, autocommit=True, application_name=f"cerebro segment {segment}", **connect)
        #: Datasets this server is known to hold (it keeps them across reconnects; this only saves a query).
        self._held: set[int] = set()

    def run_unit(self, coordinator: psycopg.Connection[Any], config_id: int) -> dict[str, Any]:
        found = coordinator.execute(
            "SELECT context, state, current_setting('statement_timeout') FROM unit_context(%s, %s)",
            [config_id, self.segment],
        ).fetchone()
        assert found is not None
        context, state, timeout = found
        self._ensure_dataset(coordinator, context["dataset_id"])
        with self._conn.transaction():
            # The unit's time limit holds on both servers.
            self._conn.execute("SELECT set_config('statement_timeout', %s, true)", [timeout])
            trained = self._conn.execute(
                "SELECT summary, new_state FROM train_hop(%s, %s)", [Jsonb(context), state]
            ).fetchone()
        assert trained is not None
        recorded = coordinator.execute(
            "SELECT record_hop(%s, %s, %s, %s)", [config_id, self.segment, Jsonb(trained[0]), trained[1]]
        ).fetchone()
        assert recorded is not None
        result: dict[str, Any] = recorded[0]
        return result

    def _ensure_dataset(self, coordinator: psycopg.Connection[Any], dataset_id: int) -> None:
        if dataset_id not in self._held:
            send_dataset(coordinator, self._conn, dataset_id, self.segment)
            self._held.add(dataset_id)

    def close(self) -> None:
        self._conn.close()


def send_dataset(
    coordinator: psycopg.Connection[Any], server: psycopg.Connection[Any], dataset_id: int, segment: int
) -> int:
    """Give a segment server dataset ``dataset_id``'s row, ``segment``'s training buffers and the
    validation buffers, unless it has them; returns the bytes sent."""
    found = coordinator.execute("SELECT name, created_at FROM datasets WHERE dataset_id = %s", [dataset_id]).fetchone()
    if found is None:
        raise LookupError(f"dataset {dataset_id} is not on the coordinator")
    name, created_at = found
    with server.transaction():
        if server.execute(
            "SELECT 1 FROM datasets WHERE dataset_id = %s AND name = %s AND created_at = %s",
            [dataset_id, name, created_at],
        ).fetchone():
            return 0
        # Whatever holds the id or the name here is a dataset the coordinator has since replaced.
        server.execute("DELETE FROM datasets WHERE dataset_id = %s OR name = %s", [dataset_id, name])
        dataset = sql.Literal(dataset_id)
        sent = _copy(coordinator, server, "datasets", sql.SQL("dataset_id = {}").format(dataset))
        return sent + _copy(
            coordinator,
            server,
            "dataset_buffers",
            sql.SQL("dataset_id = {} AND (split = 'validation' OR segment = {})").format(dataset, sql.Literal(segment)),
        )


def distribute(coordinator_dsn: str, dataset: str, passfile: Path | None = None) -> int:
    """Send ``dataset``'s shards to the segment servers now rather than at each one's first
    unit of it (so that no unit pays for it); returns the bytes sent."""
    with psycopg.connect(coordinator_dsn, options=SEARCH_PATH) as coordinator:
        found = coordinator.execute("SELECT dataset_id FROM datasets WHERE name = %s", [dataset]).fetchone()
        if found is None:
            raise LookupError(f"no dataset named {dataset!r}")
        sent = 0
        servers = coordinator.execute("SELECT segment_id, dsn FROM segments WHERE dsn IS NOT NULL").fetchall()
        extra: dict[str, Any] = {"passfile": str(passfile)} if passfile else {}
        for segment, dsn in servers:
            with psycopg.connect(dsn, autocommit=True, options=SEARCH_PATH, **extra) as server:
                sent += send_dataset(coordinator, server, found[0], segment)
    return sent


def _copy(source: psycopg.Connection[Any], target: psycopg.Connection[Any], table: str, where: sql.Composable) -> int:
    """Binary COPY of ``table``'s rows matching ``where`` (both servers run the same schema version)."""
    sent = 0
    query = sql.SQL("COPY (SELECT * FROM {} WHERE {}) TO STDOUT (FORMAT binary)").format(sql.Identifier(table), where)
    with (
        source.cursor().copy(query) as out,
        target.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(sql.Identifier(table))) as into,
    ):
        for block in out:
            into.write(block)
            sent += len(block)
    return sent


def parse_segment(spec: str) -> tuple[str, str | None]:
    """``host:port`` or a ``postgresql://`` URL -> (libpq URL without password, password or None)."""
    if "://" in spec or "=" in spec:
        params = {key: str(value) for key, value in conninfo_to_dict(spec).items()}
    else:
        host, _, port = spec.rpartition(":")
        if not host or not port.isdigit():
            raise MembershipError(f"segment {spec!r} is neither host:port nor a postgresql:// URL")
        params = {"host": host, "port": port}
    if not params.get("host"):
        raise MembershipError(f"segment {spec!r} names no host")
    password = params.pop("password", None)
    return _url(params), password


def _url(params: dict[str, str]) -> str:
    """A libpq URL (what Alembic, psycopg and the dashboard all take)."""
    rest = dict(params)
    host, port = rest.pop("host"), rest.pop("port", str(DEFAULT_PORT))
    user, database = rest.pop("user", DEFAULT_USER), rest.pop("dbname", DEFAULT_DATABASE)
    netloc = f"{quote(user, safe='')}@{f'[{host}]' if ':' in host else host}:{port}"
    return f"postgresql://{netloc}/{quote(database, safe='')}" + (f"?{urlencode(rest)}" if rest else "")


def _with(dsn: str, **params: str) -> str:
    """``dsn`` with some connection parameters replaced."""
    return _url({**{key: str(value) for key, value in conninfo_to_dict(dsn).items()}, **params})


def registered(coordinator_dsn: str) -> list[str | None]:
    """The coordinator's segments in order: each one's server DSN, or None for a local segment."""
    with psycopg.connect(coordinator_dsn) as conn:
        return [row[0] for row in conn.execute("SELECT dsn FROM cerebro.segments ORDER BY segment_id")]


def register_segments(coordinator_dsn: str, specs: Sequence[str], passfile: Path) -> bool:
    """Install the schema on each segment server and make them the coordinator's segments 0..K-1.

    Passwords given in the specs go to ``passfile`` (libpq format, mode 0600), not into
    the table. Refused while a workload runs (its configs are part-way through epochs over
    the current segments). Returns whether the membership changed.
    """
    parsed = [parse_segment(spec) for spec in specs]
    if not parsed:
        raise MembershipError("--segments needs at least one segment server")
    if len({dsn for dsn, _ in parsed}) != len(parsed):
        raise MembershipError(f"a segment server is listed twice in {list(specs)}")
    _write_passfile(passfile, parsed)
    for dsn, _ in parsed:
        install.create_database(_with(dsn, dbname="postgres", passfile=str(passfile)), _database(dsn))
        install.install(_with(dsn, passfile=str(passfile)), segments=1)
    with psycopg.connect(coordinator_dsn) as conn:
        conn.execute("SET search_path = cerebro, pg_temp")
        conn.execute("LOCK TABLE segments")
        current = [row[0] for row in conn.execute("SELECT dsn FROM segments ORDER BY segment_id")]
        wanted = [dsn for dsn, _ in parsed]
        if current == wanted:
            return False
        running = conn.execute("SELECT string_agg(workload_id::text, ', ') FROM workloads WHERE status = 'running'")
        busy = running.fetchone()
        if busy and busy[0]:
            raise MembershipError(
                f"workloads {busy[0]} are running over the current segments; "
                "let them finish (or UPDATE workloads SET status = 'stopped') before changing the segments"
            )
        conn.execute("DELETE FROM segments")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO segments (segment_id, dsn) VALUES (%s, %s)", [(k, dsn) for k, dsn in enumerate(wanted)]
            )
    return True


def _database(dsn: str) -> str:
    return str(conninfo_to_dict(dsn)["dbname"])


def _write_passfile(path: Path, parsed: list[tuple[str, str | None]]) -> None:
    """Add the given passwords to ``path``, keeping its entries for other servers."""

    def entry(*fields: Any) -> str:
        return ":".join(str(field).replace("\\", "\\\\").replace(":", "\\:") for field in fields)

    if all(password is None for _, password in parsed):
        return  # libpq's own PGPASSWORD / ~/.pgpass apply
    lines = path.read_text().splitlines() if path.exists() else []
    for dsn, password in parsed:
        if password is None:
            continue
        params = conninfo_to_dict(dsn)
        # The database's line, and one for 'postgres', where create_database connects.
        keys = [entry(params["host"], params["port"], db, params["user"]) for db in (params["dbname"], "postgres")]
        lines = [line for line in lines if not any(line.startswith(key + ":") for key in keys)]
        lines += [f"{key}:{entry(password)}" for key in keys]
    path.touch(mode=0o600)
    path.write_text("".join(f"{line}\n" for line in lines))


@dataclass
class MultiServerCluster:
    coordinator: str
    servers: list[LocalCluster]
    passfile: Path


@contextlib.contextmanager
def temporary_multi_server(segments: int = 2) -> Iterator[MultiServerCluster]:
    """A throwaway coordinator and ``segments`` segment servers on loopback ports, registered."""
    with temporary_cluster(segments=segments) as coordinator, contextlib.ExitStack() as stack:
        servers = [stack.enter_context(temporary_server()) for _ in range(segments)]
        passfile = servers[0].root / "segments.pgpass"
        register_segments(coordinator.dsn(), [server.config.dsn() for server in servers], passfile)
        yield MultiServerCluster(coordinator.dsn(), servers, passfile)
