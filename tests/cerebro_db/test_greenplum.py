"""cerebro_db.backends.greenplum: the SQL it generates and the statements ``run_unit`` sends.

No Greenplum runs here: statements are rendered without a connection and
``run_unit`` talks to a fake coordinator that records what it is sent.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from cerebro_db.backends import GREENPLUM, SegmentExecutor, open_segment
from cerebro_db.backends import greenplum as gp
from cerebro_db.unit_failures import Outcome, UnitFailure

ODD_SCHEMA = 'my "odd" schema'
QUOTED_ODD_SCHEMA = '"my ""odd"" schema"'


def text(statement: sql.Composable) -> str:
    return statement.as_string(None)


def placeholders(statement: sql.Composable) -> set[str]:
    """The named parameters psycopg will bind: ``%(name)s`` in the rendered text."""
    return set(re.findall(r"%\((\w+)\)s", text(statement)))


def every_statement(schema: str) -> list[sql.Composed]:
    return [
        *gp.install_statements(schema),
        *gp.dist_key_map_statements(schema),
        gp.dist_key_coverage_query(schema),
        gp.dist_key_query(schema),
        gp.dataset_fit_query(schema),
        *gp.load_statements(schema),
        gp.unit_context_query(schema),
        gp.unit_statement(schema),
        gp.record_hop_query(schema),
    ]


def statement_about(statements: list[sql.Composed], marker: str) -> str:
    (found,) = [text(s) for s in statements if marker in text(s)]
    return found


class FakeCursor:
    def __init__(self, row: tuple[Any, ...] | None) -> None:
        self.row = row

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.row


class FakeCoordinator:
    """Records each statement with its parameters; answers the first canned row whose marker the
    statement contains. Like psycopg, refuses a statement whose placeholders lack parameters."""

    def __init__(self, rows: Mapping[str, tuple[Any, ...] | Exception | None]) -> None:
        self.rows = rows
        self.executed: list[tuple[str, dict[str, Any]]] = []
        self.transactions = 0

    def execute(self, query: sql.Composable, params: Mapping[str, Any] | None = None) -> FakeCursor:
        missing = placeholders(query) - set(params or {})
        assert not missing, f"no parameter for {missing} in {text(query)}"
        rendered = text(query)
        self.executed.append((rendered, dict(params or {})))
        row = next((row for marker, row in self.rows.items() if marker in rendered), None)
        if isinstance(row, Exception):
            raise row
        return FakeCursor(row)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.transactions += 1
        yield

    def sent(self, marker: str) -> list[dict[str, Any]]:
        return [params for rendered, params in self.executed if marker in rendered]


CONTEXT = {"dataset_id": 7, "epoch": 2, "epoch_done": False, "feature_shape": [4]}


def unit_rows(*, context: dict[str, Any] = CONTEXT, state: bytes | None = b"old") -> dict[str, Any]:
    return {
        "unit_context(": (context, state),
        "gp_dist_keys WHERE segment": (123,),
        "train_hop_agg(": ({"rows": 10, "train_loss": 0.5}, b"new"),
        "record_hop(": ({"config_id": 1, "recorded": True},),
    }


def test_train_shards_are_distributed_by_a_key_hashed_like_the_candidates() -> None:
    statements = gp.install_statements() + gp.dist_key_map_statements()
    train = statement_about(statements, "gp_train_buffers (")
    candidates = statement_about(statements, "CREATE TEMP TABLE gp_dist_key_candidates")
    assert train.endswith(") DISTRIBUTED BY (dist_key)")
    assert candidates.endswith("DISTRIBUTED BY (dist_key)")
    # The same type hashes to the same segment: the map's keys place the shards.
    assert "dist_key int NOT NULL" in train and "(dist_key int)" in candidates
    assert "PRIMARY KEY (dist_key, " in train  # Greenplum: unique constraints contain the distribution key


@pytest.mark.parametrize("table", ["gp_validation_buffers", "gp_dist_keys"])
def test_validation_buffers_and_the_key_map_are_replicated(table: str) -> None:
    ddl = statement_about(gp.install_statements(), f'CREATE TABLE IF NOT EXISTS "cerebro".{table} (')
    assert ddl.endswith(") DISTRIBUTED REPLICATED")


def test_validation_buffers_have_no_segment_placement() -> None:
    ddl = statement_about(gp.install_statements(), "gp_validation_buffers (")
    assert "dist_key" not in ddl and "segment" not in ddl


def test_every_identifier_is_quoted_and_no_template_field_is_left() -> None:
    for statement in every_statement(ODD_SCHEMA):
        rendered = text(statement)
        if "gp_dist_key_candidates" not in rendered or "gp_dist_keys" in rendered:  # not only the temp table
            assert QUOTED_ODD_SCHEMA in rendered, rendered
        assert rendered.replace(QUOTED_ODD_SCHEMA, "").count('"') == 0, rendered
        assert not re.search(r"\{\w*\}", rendered), rendered


def test_the_default_schema_renders_plainly() -> None:
    assert text(gp.dist_key_query()) == 'SELECT dist_key FROM "cerebro".gp_dist_keys WHERE segment = %(segment)s'


def test_the_key_map_takes_the_smallest_candidate_of_each_segment() -> None:
    statements = [text(s) for s in gp.dist_key_map_statements()]
    assert statements[1] == ("INSERT INTO pg_temp.gp_dist_key_candidates SELECT generate_series(0, %(candidates)s - 1)")
    assert statements[2] == 'DELETE FROM "cerebro".gp_dist_keys'
    assert statements[3] == (
        'INSERT INTO "cerebro".gp_dist_keys (segment, dist_key)\n'
        "SELECT c.gp_segment_id, min(c.dist_key) FROM pg_temp.gp_dist_key_candidates c GROUP BY c.gp_segment_id"
    )
    assert "ON COMMIT DROP" in statements[0]


def test_loading_joins_train_buffers_to_their_segments_key_and_copies_validation_whole() -> None:
    delete_train, delete_validation, train, validation = gp.load_statements()
    for statement in (delete_train, delete_validation, train, validation):
        assert placeholders(statement) == {"dataset_id"}
    assert 'JOIN "cerebro".gp_dist_keys k ON k.segment = b.segment' in text(train)
    assert text(train).endswith("WHERE b.dataset_id = %(dataset_id)s AND b.split = 'train'")
    assert text(validation).endswith("WHERE b.dataset_id = %(dataset_id)s AND b.split = 'validation'")
    assert "dist_key" not in text(validation)
    assert text(delete_train).startswith('DELETE FROM "cerebro".gp_train_buffers')


def test_the_unit_aggregates_one_segments_rows_grouped_by_the_distribution_key() -> None:
    unit = text(gp.unit_statement())
    assert placeholders(gp.unit_statement()) == {"context", "state", "dist_key", "dataset_id"}
    assert "WHERE b.dist_key = %(dist_key)s::int AND b.dataset_id = %(dataset_id)s\n    GROUP BY b.dist_key\n" in unit
    # Buffers reach the aggregate in the order every epoch sees them; the state is an argument.
    assert '"cerebro".train_hop_agg(%(context)s::jsonb, %(state)s::bytea, b.x, b.y ORDER BY b.buffer_id)' in unit
    assert unit.startswith('SELECT "cerebro".raise_if_error((hop.result).outcome) AS summary, (hop.result).state')


def test_the_aggregate_collects_on_the_segment_and_trains_in_its_final_function() -> None:
    statements = gp.install_statements()
    aggregate = statement_about(statements, "CREATE AGGREGATE")
    collect = statement_about(statements, "_train_hop_collect(collected")
    finish = statement_about(statements, "_train_hop_finish(collected")
    assert "STYPE = bigint" in aggregate and "INITCOND = '0'" in aggregate
    assert 'FINALFUNC = "cerebro"._train_hop_finish' in aggregate
    assert "STRICT" not in collect  # a NULL state (first hop) must still reach it
    assert "return greenplum.collect(GD, collected, context, state, x, y)" in collect
    assert "return entry.greenplum_hop(plpy, GD, unit.train_hop)" in finish
    for function in (collect, finish):
        assert 'LANGUAGE plpython3u VOLATILE SET search_path = "cerebro", pg_temp' in function
    # The row type goes first (with its dependants), so installing twice works without OR REPLACE AGGREGATE.
    rendered = [text(s) for s in statements]
    assert rendered.index('DROP TYPE IF EXISTS "cerebro".gp_hop CASCADE') < rendered.index(aggregate)


def test_only_the_scheduler_may_run_the_aggregate_that_runs_a_models_source() -> None:
    rendered = [text(s) for s in gp.install_statements()]
    revoke = next(s for s in rendered if s.startswith("REVOKE"))
    assert revoke.endswith("FROM PUBLIC")
    for function in ("_train_hop_collect(", "_train_hop_finish(", "train_hop_agg("):
        assert f'"cerebro".{function}' in revoke
        # After the functions exist (CREATE OR REPLACE keeps grants, a new function has PUBLIC's).
        assert rendered.index(revoke) > max(i for i, s in enumerate(rendered) if function in s and "CREATE" in s)


def test_run_unit_reads_the_context_trains_on_the_segment_then_records() -> None:
    coordinator = FakeCoordinator(unit_rows())
    result = gp.GreenplumSegment(2).run_unit(coordinator, 1)
    order = [
        "unit_context(",
        "gp_dist_keys WHERE segment",
        "SET LOCAL optimizer = off",
        "train_hop_agg(",
        "record_hop(",
    ]
    assert [next(m for m in order if m in rendered) for rendered, _ in coordinator.executed] == order
    assert result == {"config_id": 1, "recorded": True}


def test_run_unit_passes_the_state_in_and_the_new_state_to_record_hop() -> None:
    coordinator = FakeCoordinator(unit_rows())
    gp.GreenplumSegment(2).run_unit(coordinator, 1)
    (hop,) = coordinator.sent("train_hop_agg(")
    assert hop["state"] == b"old" and hop["dist_key"] == 123 and hop["dataset_id"] == 7
    assert isinstance(hop["context"], Jsonb) and hop["context"].obj == CONTEXT
    (record,) = coordinator.sent("record_hop(")
    assert record["state"] == b"new" and record["config_id"] == 1 and record["segment"] == 2
    assert isinstance(record["summary"], Jsonb) and record["summary"].obj == {"rows": 10, "train_loss": 0.5}


def test_the_first_hop_passes_a_null_state() -> None:
    coordinator = FakeCoordinator(unit_rows(state=None))
    gp.GreenplumSegment(0).run_unit(coordinator, 1)
    assert coordinator.sent("train_hop_agg(")[0]["state"] is None


def test_segment_ids_are_parameters_not_text() -> None:
    runs = []
    for segment in (3, 5):
        coordinator = FakeCoordinator(unit_rows())
        gp.GreenplumSegment(segment).run_unit(coordinator, 1)
        runs.append(coordinator)
    assert [rendered for rendered, _ in runs[0].executed] == [rendered for rendered, _ in runs[1].executed]
    assert [p["segment"] for p in runs[1].sent("unit_context(")] == [5]
    assert [p["segment"] for p in runs[1].sent("gp_dist_keys WHERE segment")] == [5]


def test_the_dist_key_is_looked_up_once_per_segment() -> None:
    coordinator = FakeCoordinator(unit_rows())
    segment = gp.GreenplumSegment(1)
    segment.run_unit(coordinator, 1)
    segment.run_unit(coordinator, 2)
    assert len(coordinator.sent("gp_dist_keys WHERE segment")) == 1
    assert len(coordinator.sent("train_hop_agg(")) == 2


def test_a_segment_without_buffers_names_the_loading_step() -> None:
    coordinator = FakeCoordinator({**unit_rows(), "train_hop_agg(": None})
    with pytest.raises(gp.GreenplumError, match="holds no training buffers of dataset 7.*load_dataset"):
        gp.GreenplumSegment(1).run_unit(coordinator, 1)
    assert coordinator.sent("record_hop(") == []


def test_a_lost_segment_is_the_segments_fault_and_a_configs_own_error_stays_the_configs() -> None:
    lost = FakeCoordinator({**unit_rows(), "train_hop_agg(": errors.ConnectionFailure("gang was lost")})
    with pytest.raises(UnitFailure, match="Greenplum segment 1: gang was lost") as unavailable:
        gp.GreenplumSegment(1).run_unit(lost, 1)
    assert unavailable.value.outcome is Outcome.UNAVAILABLE
    diverged = FakeCoordinator({**unit_rows(), "train_hop_agg(": errors.InvalidParameterValue("training diverged")})
    with pytest.raises(UnitFailure, match="training diverged") as failed:
        gp.GreenplumSegment(1).run_unit(diverged, 1)
    assert failed.value.outcome is Outcome.FAILED
    assert lost.sent("record_hop(") == diverged.sent("record_hop(") == []


def test_a_segment_without_a_key_asks_for_install() -> None:
    coordinator = FakeCoordinator({**unit_rows(), "gp_dist_keys WHERE segment": None})
    with pytest.raises(gp.GreenplumError, match=r"segment 4 has no dist key; run greenplum.install\(\)"):
        gp.GreenplumSegment(4).run_unit(coordinator, 1)


def test_install_maps_keys_in_one_transaction_and_refuses_uncovered_segments() -> None:
    coordinator = FakeCoordinator({"gp_segment_configuration": (4, 4)})
    gp.install(coordinator)
    assert coordinator.transactions == 1
    assert coordinator.sent("generate_series") == [{"candidates": gp.DIST_KEY_CANDIDATES}]
    short = FakeCoordinator({"gp_segment_configuration": (3, 4)})
    with pytest.raises(gp.GreenplumError, match="3 of 4 segments got a dist key"):
        gp.install(short)


def test_load_dataset_refuses_a_dataset_prepared_for_another_segment_count() -> None:
    coordinator = FakeCoordinator({'FROM "cerebro".datasets d': (8, 4, 1)})
    with pytest.raises(gp.GreenplumError, match="num_segments => 4"):
        gp.load_dataset(coordinator, 7)
    assert coordinator.sent("INSERT") == []
    fits = FakeCoordinator({'FROM "cerebro".datasets d': (4, 4, 1)})
    gp.load_dataset(fits, 7)
    assert [p["dataset_id"] for p in fits.sent("gp_train_buffers")] == [7, 7]


def test_load_dataset_refuses_a_replicated_dataset_it_cannot_place() -> None:
    coordinator = FakeCoordinator({'FROM "cerebro".datasets d': (4, 4, 2)})
    with pytest.raises(gp.GreenplumError, match="replication 2.*replication => 1"):
        gp.load_dataset(coordinator, 7)
    assert coordinator.sent("gp_train_buffers") == []


def test_greenplum_segment_is_a_segment_executor() -> None:
    # `mypy tests/cerebro_db/test_greenplum.py` checks this assignment against the protocol.
    executor: SegmentExecutor = gp.GreenplumSegment(0)
    expected = inspect.signature(SegmentExecutor.run_unit).parameters
    assert list(inspect.signature(type(executor).run_unit).parameters) == list(expected)


def test_segments_registered_as_greenplum_run_as_greenplum_segments() -> None:
    executor = open_segment(3, GREENPLUM)
    assert isinstance(executor, gp.GreenplumSegment) and executor.segment == 3
