"""``multi-server``: each segment is a PostgreSQL server of its own, holding its shards.

The coordinator keeps the catalog (datasets, workloads, configs, states, metrics) and
every decision; a segment server only trains. Per unit, inside the coordinator's
transaction that claimed it::

    coordinator:     SELECT context, state FROM unit_context(config, segment)
    segment server:  SELECT materialize_features(context); SELECT summary, new_state FROM train_hop(context, state)
    coordinator:     SELECT record_hop(config, segment, summary, new_state)

A segment server receives a dataset's shards at its first unit of that dataset: its
own training buffers and the validation buffers (the epoch's last hop evaluates on
all of them), streamed with binary COPY from the coordinator in one transaction, so
a server has a shard whole or not at all. A server belongs to one coordinator: it
knows datasets by the coordinator's ids. A transfer config's base (an imported model)
comes the same way, at the server's first unit of a config on it, once per server
(keyed by the archive's sha256, which every unit's context names).

Membership is the coordinator's ``segments`` table: ``dsn`` is the segment server's
libpq URL without its password (the scheduler's passfile or environment has it). A
server beyond loopback is reached over TLS only: its URL carries ``sslmode=verify-ca``
(or the operator's ``verify-full``), the CA bundle the operator gave (``sslrootcert``)
and ``channel_binding=require``; nothing is trusted on first use.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from cerebro_db import install
from cerebro_db.backends import on_the_segment
from cerebro_db.connection import SEARCH_PATH
from cerebro_db.unit_failures import Farewell

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
        #: Whether the segment server said why, if it ends the connection (crash or shutdown).
        self._farewell = Farewell.watch(self._conn)
        #: Datasets (by id) and transfer bases (by sha256) this server is known to hold (it keeps them across
        #: reconnects; this only saves a query).
        self._held: set[int | str] = set()

    def run_unit(self, coordinator: psycopg.Connection[Any], config_id: int) -> dict[str, Any]:
        # The state (hundreds of MB for big models) travels in binary, not hex; and the functions are called
        # in the select list: one in FROM would first write its row to a tuplestore (to disk beyond work_mem).
        found = coordinator.execute(
            "SELECT unit_context(%s, %s), current_setting('statement_timeout')", [config_id, self.segment], binary=True
        ).fetchone()
        assert found is not None
        (context, state), timeout = found
        with on_the_segment(f"segment {self.segment}'s server", self._farewell):
            self._ensure(coordinator, context["dataset_id"], timeout)
            if context.get("base_sha256") is not None:
                self._ensure(coordinator, context["base_sha256"], timeout)
            with self._conn.transaction():
                # The unit's time limit holds on both servers.
                self._conn.execute("SELECT set_config('statement_timeout', %s, true)", [timeout])
                # Features a frozen transfer base's head reads, stored on this server if new (50_features.sql).
                self._conn.execute("SELECT materialize_features(%s)", [Jsonb(context)])
                found = self._conn.execute("SELECT train_hop(%s, %s)", [Jsonb(context), state], binary=True).fetchone()
        assert found is not None
        summary, new_state = found[0]
        recorded = coordinator.execute(
            "SELECT record_hop(%s, %s, %s, %s)", [config_id, self.segment, Jsonb(summary), new_state]
        ).fetchone()
        assert recorded is not None
        result: dict[str, Any] = recorded[0]
        return result

    def _ensure(self, coordinator: psycopg.Connection[Any], what: int | str, timeout: str) -> None:
        """Send the server dataset ``what`` (an id) or the imported model ``what`` (a sha256) unless it holds it."""
        if what in self._held:
            return
        # Sending is not the unit's work: no unit_timeout for it on the coordinator.
        coordinator.execute("SELECT set_config('statement_timeout', '0', true)")
        if isinstance(what, str):
            send_imported_model(coordinator, self._conn, what)
        else:
            send_dataset(coordinator, self._conn, what, self.segment)
        coordinator.execute("SELECT set_config('statement_timeout', %s, true)", [timeout])
        self._held.add(what)

    def close(self) -> None:
        self._conn.close()


def send_dataset(
    coordinator: psycopg.Connection[Any], server: psycopg.Connection[Any], dataset_id: int, segment: int
) -> int:
    """Give a segment server what ``segment`` needs of dataset ``dataset_id`` (its row, the training
    buffers of the shard the segment holds, the validation buffers) unless it has it; returns the bytes sent.

    A dataset here by the same id or name but created at another time is one the coordinator
    has since replaced: it goes first. A server may serve several segments (or be listed anew
    in another order): each segment's shard is checked on its own (segments holding the same
    shard, with partial replication, share its one copy on the server).
    """
    found = coordinator.execute(
        "SELECT name, created_at, segment_shard(%s, num_segments, replication) FROM datasets WHERE dataset_id = %s",
        [segment, dataset_id],
    ).fetchone()
    if found is None:
        raise LookupError(f"dataset {dataset_id} is not on the coordinator")
    name, created_at, shard = found
    dataset = sql.Literal(dataset_id)
    validation = sql.SQL("dataset_id = {} AND split = 'validation'").format(dataset)
    # A buffer's segment column is its shard's id.
    training = sql.SQL("dataset_id = {} AND split = 'train' AND segment = {}").format(dataset, sql.Literal(shard))
    sent = 0
    with server.transaction():
        server.execute("SELECT pg_advisory_xact_lock(dataset_lock_key(), %s)", [dataset_id])
        current = server.execute(
            "SELECT 1 FROM datasets WHERE dataset_id = %s AND name = %s AND created_at = %s",
            [dataset_id, name, created_at],
        ).fetchone()
        if not current:
            server.execute("DELETE FROM datasets WHERE dataset_id = %s OR name = %s", [dataset_id, name])
            sent += _copy(coordinator, server, "datasets", sql.SQL("dataset_id = {}").format(dataset))
            sent += _copy(coordinator, server, "dataset_buffers", validation)
        has_shard = server.execute(
            "SELECT 1 FROM dataset_buffers WHERE dataset_id = %s AND split = 'train' AND segment = %s",
            [dataset_id, shard],
        ).fetchone()
        if not has_shard:
            sent += _copy(coordinator, server, "dataset_buffers", training)
    return sent


def send_imported_model(coordinator: psycopg.Connection[Any], server: psycopg.Connection[Any], sha256: str) -> int:
    """Give a segment server the imported model whose archive has digest ``sha256`` (a transfer base: the
    server's units read it by digest) unless it has it; returns the bytes sent.

    A model here by the same id or name but another digest is one the coordinator has since dropped (and
    perhaps imported anew): it goes first, so the name stays unique.
    """
    found = coordinator.execute(
        "SELECT imported_model_id, name FROM imported_models WHERE sha256 = %s ORDER BY imported_model_id LIMIT 1",
        [sha256],
    ).fetchone()
    if found is None:
        raise LookupError(f"no imported model with sha256 {sha256} is on the coordinator")
    model_id, name = found
    with server.transaction():
        server.execute("SELECT pg_advisory_xact_lock(imported_model_lock_key(), %s)", [model_id])
        if server.execute("SELECT 1 FROM imported_models WHERE sha256 = %s", [sha256]).fetchone():
            return 0
        server.execute("DELETE FROM imported_models WHERE imported_model_id = %s OR name = %s", [model_id, name])
        return _copy(
            coordinator, server, "imported_models", sql.SQL("imported_model_id = {}").format(sql.Literal(model_id))
        )


def distribute(coordinator_dsn: str, dataset: str, passfile: Path | None = None) -> int:
    """Send ``dataset``'s shards to the segment servers now rather than at each one's first
    unit of it (so that no unit pays for it); returns the bytes sent."""
    with psycopg.connect(coordinator_dsn, options=SEARCH_PATH) as coordinator:
        found = coordinator.execute("SELECT dataset_id FROM datasets WHERE name = %s", [dataset]).fetchone()
        if found is None:
            raise LookupError(f"no dataset named {dataset!r}")
        sent = 0
        servers = coordinator.execute("SELECT segment, dsn FROM segments WHERE dsn IS NOT NULL").fetchall()
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
    """``host:port`` or a ``postgresql://`` URL -> (libpq URL without password, password or None).

    Error messages never repeat a spec that may hold a password.
    """
    if "://" in spec or "=" in spec:
        try:
            params = {key: str(value) for key, value in conninfo_to_dict(spec).items()}
        except psycopg.ProgrammingError:
            raise MembershipError("a segment is neither host:port nor a valid postgresql:// URL") from None
        password = params.pop("password", None)
        if not params.get("host"):
            raise MembershipError(f"segment {_url({**params, 'host': '?'})} names no host")
        return _url(params), password
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise MembershipError(f"segment {spec!r} is neither host:port nor a postgresql:// URL")
    return _url({"host": host, "port": port}), None


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


def secured(dsn: str, ca: Path | None) -> str:
    """``dsn`` with the TLS it must use: verified against ``ca`` (a CA bundle, or the segment servers'
    self-signed certificates) with channel binding. A server on loopback may go without ``ca``;
    one beyond it may not (an unverified server could be anyone's)."""
    params = {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    if ca is None:
        if _on_loopback(params["host"]):
            return dsn
        raise MembershipError(
            f"segment {dsn} is beyond loopback: give the CA bundle that verifies its certificate (--segment-ca FILE;"
            " a self-signed server's is the server-ca.pem `cerebro-db serve` writes)"
        )
    mode = "verify-full" if params.get("sslmode") == "verify-full" else "verify-ca"
    return _url({**params, "sslmode": mode, "sslrootcert": str(ca), "channel_binding": "require"})


def _on_loopback(host: str) -> bool:
    if host == "localhost" or host.startswith("/"):  # a name for loopback, or a Unix socket directory
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registered(coordinator_dsn: str) -> list[str | None]:
    """The coordinator's segments in order: each one's server DSN, or None for a local segment."""
    with psycopg.connect(coordinator_dsn, options=SEARCH_PATH) as conn:
        return _current(conn)


def register_segments(coordinator_dsn: str, specs: Sequence[str], passfile: Path, ca: Path | None = None) -> bool:
    """Install the schema on each segment server and make them the coordinator's segments 0..K-1.

    Passwords given in the specs go to ``passfile`` (libpq format, mode 0600), not into
    the table. Servers are reached over verified TLS with ``ca`` (see :func:`secured`).
    Refused while a workload runs (its configs are part-way through epochs over the
    current segments). Returns whether the membership changed.
    """
    parsed = [parse_segment(spec) for spec in specs]
    listed = [dsn for dsn, _ in parsed]
    if not listed:
        raise MembershipError("--segments needs at least one segment server")
    if len(set(listed)) != len(listed):
        raise MembershipError(f"a segment server is listed twice in {listed}")
    wanted = [secured(dsn, ca) for dsn in listed]
    _write_passfile(passfile, parsed)  # new passwords for the same servers count too
    with psycopg.connect(coordinator_dsn, options=SEARCH_PATH) as conn:
        if _current(conn) == wanted:
            return False
        _refuse_while_running(conn)
    for dsn in wanted:
        install.create_database(_with(dsn, dbname="postgres", passfile=str(passfile)), _database(dsn))
        install.install(_with(dsn, passfile=str(passfile)), segments=1)
    with psycopg.connect(coordinator_dsn, options=SEARCH_PATH) as conn:
        conn.execute("LOCK TABLE segments")
        _refuse_while_running(conn)  # again, under the lock
        conn.execute("DELETE FROM segments")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO segments (segment, dsn) VALUES (%s, %s)", [(k, dsn) for k, dsn in enumerate(wanted)]
            )
    return True


def datasets_beyond(coordinator_dsn: str) -> list[tuple[str, int]]:
    """Datasets spread over more segments than are registered: no epoch of theirs can finish
    until they are prepared again for the segments there are."""
    with psycopg.connect(coordinator_dsn, options=SEARCH_PATH) as conn:
        return conn.execute(
            "SELECT name, num_segments FROM datasets WHERE num_segments > (SELECT count(*) FROM segments) ORDER BY 1"
        ).fetchall()


def _current(conn: psycopg.Connection[Any]) -> list[str | None]:
    return [row[0] for row in conn.execute("SELECT dsn FROM segments ORDER BY segment")]


def _refuse_while_running(conn: psycopg.Connection[Any]) -> None:
    busy = conn.execute("SELECT string_agg(workload_id::text, ', ') FROM workloads WHERE status = 'running'").fetchone()
    if busy and busy[0]:
        raise MembershipError(
            f"workloads {busy[0]} are running over the current segments; "
            "let them finish (or UPDATE workloads SET status = 'stopped') before changing the segments"
        )


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
    # Mode 0600 whatever the file was: libpq ignores a passfile others may read.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("".join(f"{line}\n" for line in lines))
