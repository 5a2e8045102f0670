"""The same unit checks on each backend that can run here: ``local`` (the coordinator trains on its own
shard) and ``multi_server`` (a segment server does). Units are claimed and run by hand, one hop at a
time, through the executor the scheduler uses (``cerebro_db.backends.open_segment``). Both coordinators hold
the same imported model, fine-tuned by the transfer case (a segment server gets it from the coordinator)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from cerebro_db import sample_data
from cerebro_db.backends import SegmentExecutor, open_segment
from cerebro_db.backends.multi_server import send_imported_model
from cerebro_db.connection import SEARCH_PATH
from cerebro_db.testing.clusters import temporary_multi_server
from tests.conftest import TINY_CNN, launch, one, tiny_base, unique

ROWS = 300
SPACE = {"lr": [0.003], **TINY_CNN}
#: The base's dense layer trained, its conv frozen; the head reads the dense layer (the default).
TRANSFER = {"trainable_from": "dense", "head_units": 8, "dropout": 0.1, "lr": 0.003}

Connection = psycopg.Connection[Any]


@dataclass
class Backend:
    """A coordinator with 2 segments of one kind, a dataset prepared on it, and its segments' executors."""

    dsn: str
    dataset: str
    connect: dict[str, Any]
    #: The imported model the transfer case fine-tunes (``tiny_base(1)``: the same weights on every backend).
    base: str = ""
    executors: dict[int, SegmentExecutor] = field(default_factory=dict)

    def executor(self, conn: Connection, segment: int) -> SegmentExecutor:
        if segment not in self.executors:
            row = conn.execute("SELECT dsn FROM segments WHERE segment = %s", [segment]).fetchone()
            assert row is not None
            self.executors[segment] = open_segment(segment, row[0], options=SEARCH_PATH, **self.connect)
        return self.executors[segment]

    def close(self) -> None:
        for executor in self.executors.values():
            executor.close()


def _prepare(dsn: str, dataset: str) -> Backend:
    """The same rows, split and shards on every backend, and the same imported base."""
    backend = Backend(dsn, dataset, {}, unique("units_base"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        table = unique("units_source")
        sample_data.load_fashion_mnist(conn, table, limit=ROWS)
        conn.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', feature_columns => '{pixels}',"
            " feature_shape => '{28,28,1}', num_segments => 2, validation_fraction => 0.2, seed => 3)",
            [dataset, f"public.{table}"],
        )
        conn.execute("SELECT import_model(%s, %s)", [backend.base, tiny_base(1)])
    return backend


@pytest.fixture(scope="module")
def local(dsn: str) -> Iterator[Backend]:
    backend = _prepare(dsn, unique("units_local"))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def multi() -> Iterator[Backend]:
    with temporary_multi_server(segments=2) as started:
        backend = _prepare(started.coordinator, "units_multi")
        backend.connect["passfile"] = str(started.passfile)
        yield backend
        backend.close()


@pytest.fixture(params=["local", "multi"])
def backend(request: pytest.FixtureRequest) -> Backend:
    found: Backend = request.getfixturevalue(request.param)
    return found


@contextlib.contextmanager
def workload(backend: Backend, epochs: int = 2, transfer: bool = False) -> Iterator[tuple[Connection, int]]:
    """A connection to the coordinator and the one config of a new workload no scheduler runs (a cnn, or with
    ``transfer`` a fine-tuning of the backend's base)."""
    with psycopg.connect(backend.dsn, autocommit=True) as conn:
        if transfer:
            space = {**TRANSFER, "base": backend.base}
            workload_id = launch(conn, backend.dataset, space, epochs=epochs, seed=11, model="transfer")
        else:
            workload_id = launch(conn, backend.dataset, SPACE, epochs=epochs, seed=11)
        try:
            row = conn.execute("SELECT config_id FROM configs WHERE workload_id = %s", [workload_id]).fetchone()
            assert row is not None
            yield conn, row[0]
        finally:
            conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload_id])


def hop(backend: Backend, conn: Connection, config: int, segment: int) -> dict[str, Any]:
    """Claim the config's unit on ``segment`` and run it, in one transaction, as the scheduler does."""
    with conn.transaction():
        assert conn.execute("SELECT config_id FROM claim_unit(%s)", [segment]).fetchone() == (config,)
        return backend.executor(conn, segment).run_unit(conn, config)


def units(conn: Connection, config: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT segment, epoch, rows, train_loss, train_metric FROM units WHERE config_id = %s ORDER BY unit_id",
        [config],
    ).fetchall()


def test_a_hop_commits_the_state_the_progress_and_the_unit_log(backend: Backend) -> None:
    with workload(backend) as (conn, config):
        summary = hop(backend, conn, config, 1)
        assert summary["config_id"] == config and summary["segment"] == 1
        assert summary["epoch"] == 1 and summary["epoch_done"] is False and summary["rows"] > 0
        state = conn.execute(
            "SELECT visited_segments, epoch_rows, state_bytes > 0 FROM model_states WHERE config_id = %s", [config]
        ).fetchone()
        assert state == ([1], summary["rows"], True)
        assert conn.execute("SELECT status, epochs_done FROM configs WHERE config_id = %s", [config]).fetchone() == (
            "running",
            0,
        )
        assert units(conn, config) == [(1, 1, summary["rows"], summary["train_loss"], summary["train_metric"])]


def test_the_last_hop_of_an_epoch_writes_its_metrics_and_starts_the_next(backend: Backend) -> None:
    with workload(backend) as (conn, config):
        first, last = hop(backend, conn, config, 0), hop(backend, conn, config, 1)
        assert (first["epoch_done"], last["epoch_done"]) == (False, True)
        train_loss, val_loss, val_metric = conn.execute(
            "SELECT train_loss, val_loss, val_metric FROM epoch_metrics WHERE config_id = %s AND epoch = 1", [config]
        ).fetchone()  # type: ignore[misc]
        rows = first["rows"] + last["rows"]
        assert train_loss == (first["train_loss"] * first["rows"] + last["train_loss"] * last["rows"]) / rows
        assert val_loss > 0 and 0 <= val_metric <= 1
        assert conn.execute(
            "SELECT visited_segments, epoch_rows FROM model_states WHERE config_id = %s", [config]
        ).fetchone() == ([], 0)
        assert conn.execute("SELECT epochs_done FROM configs WHERE config_id = %s", [config]).fetchone() == (1,)


def test_a_second_hop_on_the_same_segment_in_the_same_epoch_is_refused(backend: Backend) -> None:
    with workload(backend) as (conn, config):
        hop(backend, conn, config, 0)
        with conn.transaction(force_rollback=True):
            assert conn.execute("SELECT config_id FROM claim_unit(0)").fetchone() is None  # the claim refuses
            # Held by this transaction (claimed for segment 1), the hop refuses segment 0 all the same.
            assert conn.execute("SELECT config_id FROM claim_unit(1)").fetchone() == (config,)
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="visited its shard this epoch") as error:
                backend.executor(conn, 0).run_unit(conn, config)
            assert error.value.diag.message_hint is not None
        assert len(units(conn, config)) == 1


def test_an_unclaimed_unit_is_refused_and_changes_nothing(backend: Backend) -> None:
    with workload(backend) as (conn, config):
        with (
            conn.transaction(),
            pytest.raises(psycopg.errors.InvalidParameterValue, match="not claimed by this transaction"),
        ):
            backend.executor(conn, 0).run_unit(conn, config)
        with (
            conn.transaction(),
            pytest.raises(psycopg.errors.InvalidParameterValue, match="not claimed by this transaction"),
        ):
            conn.execute("SELECT record_hop(%s, 0, '{\"rows\": 1}', '\\x00')", [config])
        assert units(conn, config) == []
        assert conn.execute("SELECT count(*) FROM model_states WHERE config_id = %s", [config]).fetchone() == (0,)


def test_record_hop_without_unit_context_is_refused(backend: Backend) -> None:
    with workload(backend) as (conn, config), conn.transaction(force_rollback=True):
        assert conn.execute("SELECT config_id FROM claim_unit(0)").fetchone() == (config,)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="needs unit_context first") as error:
            conn.execute("SELECT record_hop(%s, 0, '{\"rows\": 1}', '\\x00')", [config])
        assert error.value.diag.message_hint is not None


@pytest.mark.parametrize("transfer", [False, True], ids=["cnn", "transfer"])
def test_hops_are_bit_identical_on_every_backend(local: Backend, multi: Backend, transfer: bool) -> None:
    """The transfer case fine-tunes an imported base: on multi_server, each segment server gets it from the
    coordinator at its first unit of it."""
    results = []
    for backend in (local, multi):
        with workload(backend, transfer=transfer) as (conn, config):
            for segment in (1, 0, 0, 1):  # two epochs, each segment once per epoch
                hop(backend, conn, config, segment)
            state = conn.execute("SELECT stored_state(%s)", [config]).fetchone()
            metrics = conn.execute(
                "SELECT epoch, train_loss, train_metric, val_loss, val_metric FROM epoch_metrics"
                " WHERE config_id = %s ORDER BY epoch",
                [config],
            ).fetchall()
            results.append((state, metrics, units(conn, config)))
    assert len(results[0][1]) == 2
    assert results[0] == results[1]


def test_a_segment_server_gets_an_imported_model_once(multi: Backend) -> None:
    """Sent whole with its row (a server reads a transfer base by its sha256), once: a server that holds it gets
    nothing. A model dropped on the coordinator and another imported under its name replaces it there."""
    name = unique("units_sent")
    with (
        psycopg.connect(multi.dsn, autocommit=True) as coordinator,
        psycopg.connect(
            one(coordinator, "SELECT dsn FROM segments WHERE segment = 0"),
            autocommit=True,
            options=SEARCH_PATH,
            **multi.connect,
        ) as server,
    ):
        sent = {}
        for seed in (2, 3):
            archive = tiny_base(seed)
            coordinator.execute("SELECT import_model(%s, %s)", [name, archive])
            sha256 = one(coordinator, "SELECT sha256 FROM imported_models WHERE name = %s", name)
            sent[seed] = send_imported_model(coordinator, server, sha256)
            assert sent[seed] > len(archive)  # the archive and the rest of its row
            assert send_imported_model(coordinator, server, sha256) == 0
            assert server.execute(
                "SELECT sha256, keras_file FROM imported_models WHERE name = %s", [name]
            ).fetchall() == [(sha256, archive)]
            coordinator.execute("SELECT drop_imported_model(%s)", [name])
        with pytest.raises(LookupError, match="no imported model with sha256 0+ is on the coordinator"):
            send_imported_model(coordinator, server, "0" * 64)
