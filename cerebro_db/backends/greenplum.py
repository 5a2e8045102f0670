"""Greenplum / Cloudberry: a shard on one ``gp_segment_id``, a unit as one aggregate there.

Nothing here has run against a live Greenplum; docs/greenplum.md says what the tests
check and what a first live run needs. Cerebro segment ``s`` is Greenplum content id
``s``: prepare datasets with ``num_segments`` = the number of primary segments.

Layout, after MADlib's ``madlib_keras_fit_multiple_model``:

- ``gp_dist_keys``: per Greenplum segment, one ``dist_key`` value that hashes to it,
  found by distributing candidate keys and taking the smallest per ``gp_segment_id``.
- ``gp_train_buffers`` ``DISTRIBUTED BY (dist_key)``: every buffer of shard ``s``
  carries the key of segment ``s``, so the whole shard lands on that one segment.
- ``gp_validation_buffers`` ``DISTRIBUTED REPLICATED`` (Greenplum 6+): the epoch's last
  hop evaluates on the whole validation set on whichever segment it runs, and a
  function on a segment may read a replicated table (never a distributed one). This
  costs one copy of the validation split per segment; the alternative, validation
  distributed and partial sums merged, would take a second statement per epoch end
  with the state broadcast to every segment.

A unit runs in the coordinator transaction that holds the claim: ``unit_context``,
then ``train_hop_agg`` over the rows ``WHERE dist_key = <the segment's key>`` grouped
by ``dist_key`` (grouping by the distribution key aggregates on that segment: the
buffers never move, only the result row does), then ``record_hop``. Segments never
write: the state goes in as an argument and comes back as the aggregate's result.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg import sql
from psycopg.types.json import Jsonb

from cerebro_db.backends import on_the_segment

SCHEMA = "cerebro"
#: Candidate keys spread over the segments to find one per segment: n segments all get
#: one unless some misses every candidate (about n * exp(-candidates / n)); MADlib uses 1e6 too.
DIST_KEY_CANDIDATES = 1_000_000


class GreenplumError(RuntimeError):
    """The cluster and the layout disagree: a segment without a key, or a dataset not loaded for it."""


class Cursor(Protocol):
    def fetchone(self) -> Any: ...


class Coordinator(Protocol):
    """What the adapter needs of a connection to the Greenplum coordinator (a ``psycopg.Connection``)."""

    def execute(self, query: sql.SQL | sql.Composed, params: Mapping[str, Any] | None = None) -> Cursor: ...

    def transaction(self) -> AbstractContextManager[Any]: ...


def _sql(template: str, schema: str, *placeholders: str) -> sql.Composed:
    """``template`` with ``{schema}`` quoted as an identifier and each of ``placeholders`` a named parameter."""
    return sql.SQL(template).format(
        schema=sql.Identifier(schema), **{name: sql.Placeholder(name) for name in placeholders}
    )


def _plpython(schema: str, signature: str, returns: str, body: str) -> sql.Composed:
    # Bodies are calls into cerebro_plpy, importable on every segment host from the venv.
    return _sql(
        "CREATE OR REPLACE FUNCTION {schema}." + signature + " RETURNS " + returns + "\n"
        "LANGUAGE plpython3u VOLATILE SET search_path = {schema}, pg_temp\nAS $$\n" + body + "\n$$",
        schema,
    )


def install_statements(schema: str = SCHEMA) -> list[sql.Composed]:
    """Tables, the ``gp_hop`` row type and the ``train_hop_agg`` aggregate; re-running is harmless."""
    return [
        _sql(
            "CREATE TABLE IF NOT EXISTS {schema}.gp_dist_keys (\n"
            "    segment int PRIMARY KEY,\n"
            "    dist_key int NOT NULL\n"
            ") DISTRIBUTED REPLICATED",
            schema,
        ),
        # dist_key has gp_dist_key_candidates' type, so both hash a key to the same segment.
        # Greenplum wants the distribution key inside every unique constraint.
        _sql(
            "CREATE TABLE IF NOT EXISTS {schema}.gp_train_buffers (\n"
            "    dist_key int NOT NULL,\n"
            "    dataset_id int NOT NULL,\n"
            "    buffer_id int NOT NULL,\n"
            "    segment int NOT NULL,\n"
            "    rows int NOT NULL,\n"
            "    x bytea NOT NULL,\n"
            "    y bytea NOT NULL,\n"
            "    PRIMARY KEY (dist_key, dataset_id, buffer_id)\n"
            ") DISTRIBUTED BY (dist_key)",
            schema,
        ),
        _sql(
            "CREATE TABLE IF NOT EXISTS {schema}.gp_validation_buffers (\n"
            "    dataset_id int NOT NULL,\n"
            "    buffer_id int NOT NULL,\n"
            "    rows int NOT NULL,\n"
            "    x bytea NOT NULL,\n"
            "    y bytea NOT NULL,\n"
            "    PRIMARY KEY (dataset_id, buffer_id)\n"
            ") DISTRIBUTED REPLICATED",
            schema,
        ),
        # No CREATE OR REPLACE AGGREGATE before Greenplum 7: dropping the row type drops the
        # final function and the aggregate with it, and both are created again below.
        _sql("DROP TYPE IF EXISTS {schema}.gp_hop CASCADE", schema),
        _sql("CREATE TYPE {schema}.gp_hop AS (outcome jsonb, state bytea)", schema),
        _plpython(
            schema,
            "_train_hop_collect(collected bigint, context jsonb, state bytea, x bytea, y bytea)",
            "bigint",
            "from cerebro_plpy import greenplum\nreturn greenplum.collect(GD, collected, context, state, x, y)",
        ),
        _plpython(
            schema,
            "_train_hop_finish(collected bigint)",
            "{schema}.gp_hop",
            "from cerebro_plpy import entry, unit\nreturn entry.greenplum_hop(plpy, GD, unit.train_hop)",
        ),
        # Not STRICT and INITCOND 0: the state is NULL before a config's first hop, and a
        # strict transition function would skip every row.
        _sql(
            "CREATE AGGREGATE {schema}.train_hop_agg(context jsonb, state bytea, x bytea, y bytea) (\n"
            "    SFUNC = {schema}._train_hop_collect,\n"
            "    STYPE = bigint,\n"
            "    FINALFUNC = {schema}._train_hop_finish,\n"
            "    INITCOND = '0'\n"
            ")",
            schema,
        ),
        # The context names the model's source, which these run as the server's own Python:
        # only the scheduler (the schema's owner) may call them.
        _sql(
            "REVOKE ALL ON FUNCTION {schema}._train_hop_collect(bigint, jsonb, bytea, bytea, bytea),"
            " {schema}._train_hop_finish(bigint), {schema}.train_hop_agg(jsonb, bytea, bytea, bytea) FROM PUBLIC",
            schema,
        ),
    ]


def dist_key_map_statements(schema: str = SCHEMA) -> list[sql.Composed]:
    """Rebuild ``gp_dist_keys`` (after install and after gpexpand), in one transaction."""
    return [
        _sql(
            "CREATE TEMP TABLE gp_dist_key_candidates (dist_key int) ON COMMIT DROP DISTRIBUTED BY (dist_key)",
            schema,
        ),
        _sql(
            "INSERT INTO pg_temp.gp_dist_key_candidates SELECT generate_series(0, {candidates} - 1)",
            schema,
            "candidates",
        ),
        _sql("DELETE FROM {schema}.gp_dist_keys", schema),
        _sql(
            "INSERT INTO {schema}.gp_dist_keys (segment, dist_key)\n"
            "SELECT c.gp_segment_id, min(c.dist_key) FROM pg_temp.gp_dist_key_candidates c GROUP BY c.gp_segment_id",
            schema,
        ),
    ]


def dist_key_coverage_query(schema: str = SCHEMA) -> sql.Composed:
    """Segments with a key vs primary segments in the cluster: they must be equal."""
    return _sql(
        "SELECT (SELECT count(*) FROM {schema}.gp_dist_keys),\n"
        "       (SELECT count(*) FROM pg_catalog.gp_segment_configuration WHERE role = 'p' AND content >= 0)",
        schema,
    )


def dist_key_query(schema: str = SCHEMA) -> sql.Composed:
    """The ``dist_key`` that places rows on one segment."""
    return _sql("SELECT dist_key FROM {schema}.gp_dist_keys WHERE segment = {segment}", schema, "segment")


def dataset_fit_query(schema: str = SCHEMA) -> sql.Composed:
    """A dataset's segment count and the cluster's (segments with a key): a mismatch would drop shards;
    and its replication."""
    return _sql(
        "SELECT d.num_segments, (SELECT count(*) FROM {schema}.gp_dist_keys), d.replication\n"
        "FROM {schema}.datasets d WHERE d.dataset_id = {dataset_id}",
        schema,
        "dataset_id",
    )


def load_statements(schema: str = SCHEMA) -> list[sql.Composed]:
    """Copy a prepared dataset's buffers (``dataset_buffers``) onto the segments; re-running replaces them."""
    return [
        _sql("DELETE FROM {schema}.gp_train_buffers WHERE dataset_id = {dataset_id}", schema, "dataset_id"),
        _sql("DELETE FROM {schema}.gp_validation_buffers WHERE dataset_id = {dataset_id}", schema, "dataset_id"),
        _sql(
            "INSERT INTO {schema}.gp_train_buffers (dist_key, dataset_id, buffer_id, segment, rows, x, y)\n"
            "SELECT k.dist_key, b.dataset_id, b.buffer_id, b.segment, b.rows, b.x, b.y\n"
            "FROM {schema}.dataset_buffers b JOIN {schema}.gp_dist_keys k ON k.segment = b.segment\n"
            "WHERE b.dataset_id = {dataset_id} AND b.split = 'train'",
            schema,
            "dataset_id",
        ),
        _sql(
            "INSERT INTO {schema}.gp_validation_buffers (dataset_id, buffer_id, rows, x, y)\n"
            "SELECT b.dataset_id, b.buffer_id, b.rows, b.x, b.y\n"
            "FROM {schema}.dataset_buffers b\n"
            "WHERE b.dataset_id = {dataset_id} AND b.split = 'validation'",
            schema,
            "dataset_id",
        ),
    ]


def unit_context_query(schema: str = SCHEMA) -> sql.Composed:
    return _sql(
        "SELECT context, state FROM {schema}.unit_context({config_id}, {segment})", schema, "config_id", "segment"
    )


def unit_statement(schema: str = SCHEMA) -> sql.Composed:
    """Train one pass over the segment that owns ``dist_key``; returns (summary, new state).

    The key is cast to the column's type: Greenplum dispatches to one segment only on an
    equality with the distribution key's own type. The aggregate sits in a subquery so it
    runs once (its row is read twice), and ``raise_if_error`` turns a config's own failure
    into a plain SQL error with a hint.
    """
    return _sql(
        "SELECT {schema}.raise_if_error((hop.result).outcome) AS summary, (hop.result).state AS state\n"
        "FROM (\n"
        "    SELECT {schema}.train_hop_agg({context}::jsonb, {state}::bytea, b.x, b.y ORDER BY b.buffer_id) AS result\n"
        "    FROM {schema}.gp_train_buffers b\n"
        "    WHERE b.dist_key = {dist_key}::int AND b.dataset_id = {dataset_id}\n"
        "    GROUP BY b.dist_key\n"
        ") hop",
        schema,
        "context",
        "state",
        "dist_key",
        "dataset_id",
    )


def record_hop_query(schema: str = SCHEMA) -> sql.Composed:
    return _sql(
        "SELECT {schema}.record_hop({config_id}, {segment}, {summary}::jsonb, {state}::bytea)",
        schema,
        "config_id",
        "segment",
        "summary",
        "state",
    )


# MADlib turns ORCA off around its hops: the Postgres-based planner keeps an aggregate
# grouped by the distribution key on its segment, with no redistribution. For this transaction only.
_PLANNER = sql.SQL("SET LOCAL optimizer = off")


def _row(cursor: Cursor, what: str) -> Any:
    row = cursor.fetchone()
    if row is None:
        raise GreenplumError(what)
    return row


def install(coordinator: Coordinator, schema: str = SCHEMA) -> None:
    """Create the layout and map every segment to a key, all or nothing."""
    # One transaction: the candidate table lives until commit.
    with coordinator.transaction():
        for statement in install_statements(schema):
            coordinator.execute(statement)
        for statement in dist_key_map_statements(schema):
            coordinator.execute(statement, {"candidates": DIST_KEY_CANDIDATES})
        mapped, segments = _row(coordinator.execute(dist_key_coverage_query(schema)), "no coverage row")
        if mapped != segments:  # rolls the install back
            raise GreenplumError(
                f"{mapped} of {segments} segments got a dist key; raise DIST_KEY_CANDIDATES and install again"
            )


def load_dataset(coordinator: Coordinator, dataset_id: int, schema: str = SCHEMA) -> None:
    """Place a prepared dataset's shards on their segments (after ``prepare_dataset``)."""
    params = {"dataset_id": dataset_id}
    fit = _row(coordinator.execute(dataset_fit_query(schema), params), f"no dataset {dataset_id}")
    num_segments, mapped, replication = fit
    if num_segments != mapped:
        raise GreenplumError(
            f"dataset {dataset_id} has {num_segments} segments but the cluster {mapped}; "
            f"prepare it again with num_segments => {mapped}"
        )
    # load_statements place shard k on segment k alone: the other holders of a replicated shard would have none.
    if replication != 1:
        raise GreenplumError(
            f"dataset {dataset_id} has replication {replication}, which the Greenplum backend does not place yet; "
            "prepare it again with replication => 1"
        )
    with coordinator.transaction():
        for statement in load_statements(schema):
            coordinator.execute(statement, params)


@dataclass
class GreenplumSegment:
    """Greenplum segment ``segment`` (its content id) as a cerebro segment. Its units run on
    the coordinator's connection, which dispatches the aggregate to that segment."""

    segment: int
    schema: str = SCHEMA
    # Cached: the map changes only when install() runs again (after gpexpand), with the scheduler restarted.
    _dist_key: int | None = field(default=None, init=False, repr=False)

    def _key(self, coordinator: Coordinator) -> int:
        if self._dist_key is None:
            query = dist_key_query(self.schema)
            missing = f"segment {self.segment} has no dist key; run greenplum.install() on this cluster"
            self._dist_key = int(_row(coordinator.execute(query, {"segment": self.segment}), missing)[0])
        return self._dist_key

    def run_unit(self, coordinator: Coordinator, config_id: int) -> dict[str, Any]:
        unit = {"config_id": config_id, "segment": self.segment}
        context, state = _row(
            coordinator.execute(unit_context_query(self.schema), unit), f"no context for config {config_id}"
        )
        hop = {"context": Jsonb(context), "state": state, "dist_key": self._key(coordinator)}
        coordinator.execute(_PLANNER)
        # Greenplum reports a segment lost mid-statement as a plain ERROR: not the config's fault.
        with on_the_segment(f"Greenplum segment {self.segment}"):
            trained = coordinator.execute(unit_statement(self.schema), {**hop, "dataset_id": context["dataset_id"]})
        summary, new_state = _row(
            trained,
            f"segment {self.segment} holds no training buffers of dataset {context['dataset_id']}; "
            "greenplum.load_dataset() places a prepared dataset on the segments",
        )
        recorded = coordinator.execute(
            record_hop_query(self.schema), {**unit, "summary": Jsonb(summary), "state": new_state}
        )
        result: dict[str, Any] = _row(recorded, f"record_hop returned nothing for config {config_id}")[0]
        return result

    def close(self) -> None:
        """Nothing to release: units run on the coordinator's own connection."""
