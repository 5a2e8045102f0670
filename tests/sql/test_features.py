"""Feature transfer on a real cluster: a frozen base's layers materialized once per shard in one staged pass,
bit-identical to Keras' predict, reused by a later workload, a head on them that ends as through the frozen base,
private to their owner, and dropped by drop_features or with their dataset."""

from __future__ import annotations

import json
from typing import Any

import keras
import numpy as np
import psycopg
import pytest
from psycopg import errors, sql

from cerebro_db.cluster import ClusterConfig
from cerebro_db.testing import verify
from cerebro_plpy import packing, training, transfer
from cerebro_plpy.training import ModelSpec
from tests.conftest import add_tenant, one, prepare_fashion, run_until_idle, unique
from tests.plpy.test_imported import keras_bytes
from tests.plpy.test_training import noop

Session = psycopg.Connection[Any]
SHAPE = (28, 28, 1)
LAYERS = ["cnn/conv1", "cnn/conv2", "cnn/dense"]


def tiny_base() -> keras.Model:
    """As cerebro-db export writes a config: a normalization in front of the model, whose layers are nested."""
    keras.utils.set_random_seed(11)
    inner = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(name="pool1"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(16, activation="relu", name="dense"),
            keras.layers.Dropout(0.3, name="dropout"),
            keras.layers.Dense(5, activation="softmax", name="classes"),
        ],
        name="cnn",
    )
    return keras.Sequential([keras.Input(SHAPE), keras.layers.Normalization(axis=None, mean=0.1, variance=2.0), inner])


@pytest.fixture(scope="module")
def archive() -> bytes:
    return keras_bytes(tiny_base())


@pytest.fixture(scope="module")
def base(dsn: str, archive: bytes) -> str:
    name = unique("tiny_base")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT import_model(%s, %s)", [name, archive])
    return name


def run(conn: Session, dataset: str, space: dict[str, Any], epochs: int = 1, seed: int = 3) -> int:
    workload: int = one(
        conn,
        "SELECT run_model_selection(%s, 'transfer', %s, max_epochs => %s, seed => %s)",
        dataset,
        json.dumps(space),
        epochs,
        seed,
    )
    return workload


def passes(conn: Session, dataset: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT p.split, p.segment, p.layers, p.batches, p.batch_rows FROM feature_passes p"
        " JOIN datasets d USING (dataset_id) WHERE d.name = %s ORDER BY 1, 2",
        [dataset],
    ).fetchall()


def stored(conn: Session, dataset: str, layer: str, split: str, segment: int) -> tuple[np.ndarray, np.ndarray]:
    rows = conn.execute(
        "SELECT b.x, b.y, s.feature_shape FROM feature_buffers b JOIN feature_sets s USING (feature_set_id)"
        " JOIN datasets d USING (dataset_id) WHERE d.name = %s AND s.layer = %s AND b.split = %s AND b.segment = %s"
        " ORDER BY b.part",
        [dataset, layer, split, segment],
    ).fetchall()
    return packing.from_buffers(((x, y) for x, y, _ in rows), tuple(rows[0][2]))


def shard(conn: Session, dataset: str, split: str, segment: int) -> tuple[np.ndarray, np.ndarray]:
    rows = conn.execute(
        "SELECT b.x, b.y FROM dataset_buffers b JOIN datasets d USING (dataset_id)"
        " WHERE d.name = %s AND b.split = %s AND b.segment = %s ORDER BY b.buffer_id",
        [dataset, split, segment],
    ).fetchall()
    return packing.from_buffers(rows, SHAPE)


def test_three_layers_are_materialized_in_one_pass_per_shard_and_reused(
    conn: Session, dsn: str, fashion_table: str, base: str, archive: bytes
) -> None:
    dataset = prepare_fashion(dsn, fashion_table, 2)
    space = {"base": base, "layer": LAYERS, "trainable_from": "", "head_units": 8, "batch_size": 32}
    run(conn, dataset, space)
    run_until_idle(dsn)
    # one pass per segment and split, each computing all three layers: one forward call per batch
    found = passes(conn, dataset)
    assert [(split, segment, layers) for split, segment, layers, _, _ in found] == [
        ("train", 0, LAYERS), ("train", 1, LAYERS), ("validation", 0, LAYERS), ("validation", 1, LAYERS)
    ]  # fmt: skip
    catalog = conn.execute(
        "SELECT layer, segments, train_rows, validation_rows, size_bytes FROM feature_catalog WHERE dataset = %s"
        " ORDER BY layer",
        [dataset],
    ).fetchall()
    assert [row[0] for row in catalog] == LAYERS
    train_rows, validation_rows = one(conn, "SELECT train_rows, validation_rows FROM datasets WHERE name = %s", dataset)
    assert all(row[1:4] == (2, train_rows, validation_rows) and row[4] > 0 for row in catalog)

    # bit-identical to predict on the same rows (the normalization skipped: the dataset's rows are normalized)
    gd: dict[str, Any] = {}
    transfer.cache_archive(gd, "sha", lambda: archive)
    inner = transfer.load_base(gd, "sha").get_layer("cnn")
    x, y = shard(conn, dataset, "train", 1)
    batch_rows = found[1][4]
    for layer in LAYERS:
        reference = keras.Model(inner.inputs, inner.get_layer(layer.partition("/")[2]).output)
        features, labels = stored(conn, dataset, layer, "train", 1)
        assert features.tobytes() == reference.predict(x, batch_size=batch_rows, verbose=0).tobytes(), layer
        assert labels.tobytes() == y.tobytes()

    # another workload on the same dataset, base and a layer: no new pass
    run(conn, dataset, {**space, "layer": LAYERS[1], "head_units": 4}, seed=4)
    run_until_idle(dsn)
    assert passes(conn, dataset) == found


def test_the_head_on_features_ends_as_through_the_frozen_base(
    conn: Session, dsn: str, fashion_table: str, base: str, archive: bytes
) -> None:
    """1 segment, 2 epochs: the head trained by cerebro-db on materialized features against the same head trained
    in this process through the frozen base on the same rows, in the same batches."""
    dataset = prepare_fashion(dsn, fashion_table, 1)
    space = {"base": base, "layer": "cnn/conv2", "trainable_from": "", "head_units": 8, "dropout": 0.2,
             "batch_size": 64, "lr": 0.01}  # fmt: skip
    workload = run(conn, dataset, space, epochs=2)
    config = one(conn, "SELECT config_id FROM configs WHERE workload_id = %s", workload)
    run_until_idle(dsn)
    assert [p[:2] for p in passes(conn, dataset)] == [("train", 0), ("validation", 0)]
    params, seed, num_classes = one(
        conn, "SELECT c.params, c.seed, d.num_classes FROM configs c JOIN workloads w USING (workload_id)"
        " JOIN datasets d ON d.name = w.dataset WHERE c.config_id = %s", config,
    )  # fmt: skip
    gd: dict[str, Any] = {}
    training.tensorflow(gd)
    transfer.cache_archive(gd, "sha", lambda: archive)
    spec = ModelSpec("transfer", params, SHAPE, num_classes, seed, base_sha256="sha")
    model = training.build_compiled(gd, spec)
    x, y = shard(conn, dataset, "train", 0)
    for _ in range(2):
        training.train_pass(gd, model, x, y, space["batch_size"], noop)
    through = training.capture(model)
    on_features = verify.final_state(conn, config)
    assert len(through.model_variables) == len(on_features.model_variables)
    assert verify.states_equal(through, on_features)  # bit-identical: same layers, seeds and batches


def test_features_are_their_owners_and_go_with_drop_features_and_the_dataset(
    cluster: ClusterConfig, conn: Session, dsn: str, fashion_table: str, base: str, archive: bytes
) -> None:
    dataset = prepare_fashion(dsn, fashion_table, 1)
    workload = run(conn, dataset, {"base": base, "layer": LAYERS[:2], "trainable_from": "", "head_units": 4})
    run_until_idle(dsn)
    mine = one(
        conn, "SELECT count(*) FROM feature_sets s JOIN datasets d USING (dataset_id) WHERE d.name = %s", dataset
    )
    assert mine == 2

    # another tenant: sees none of it, cannot drop it, and fine-tuning the same archive on his own copy of the rows
    # materializes his own
    ben = add_tenant(cluster, dsn, "ft_ben")
    conn.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(fashion_table)))
    theirs = prepare_fashion(ben, f"public.{fashion_table}", 1)
    with psycopg.connect(ben, autocommit=True) as as_ben:
        for view in ("feature_sets", "feature_buffers", "feature_passes", "feature_catalog"):
            assert one(as_ben, f"SELECT count(*) FROM {view}") == 0, view
        with pytest.raises(errors.UndefinedObject, match="unknown dataset"):
            as_ben.execute("SELECT drop_features(%s)", [dataset])
        as_ben.execute("DELETE FROM feature_sets")  # row-level security: none of them are his
        bens_base = unique("bens_base")
        as_ben.execute("SELECT import_model(%s, %s)", [bens_base, archive])
        run(as_ben, theirs, {"base": bens_base, "layer": LAYERS[0], "trainable_from": "", "head_units": 4})
    run_until_idle(dsn)
    with psycopg.connect(ben, autocommit=True) as as_ben:
        assert [r[0] for r in as_ben.execute("SELECT layer FROM feature_catalog")] == [LAYERS[0]]
        assert one(as_ben, "SELECT count(*) FROM feature_passes") == 2
    assert one(conn, "SELECT count(*) FROM feature_sets s JOIN datasets d USING (dataset_id) WHERE d.name = %s",
               dataset) == mine  # fmt: skip

    # drop_features: one layer, then the rest; then a dataset's features go with it
    assert one(conn, "SELECT drop_features(%s, %s, %s)", dataset, base, LAYERS[0]) == 1
    assert one(conn, "SELECT drop_features(%s)", dataset) == 1
    assert one(conn, "SELECT count(*) FROM feature_catalog WHERE dataset = %s", dataset) == 0
    with pytest.raises(errors.UndefinedObject, match="unknown dataset 'nope'"):
        conn.execute("SELECT drop_features('nope')")
    conn.execute("UPDATE configs SET status = 'running', max_epochs = 2 WHERE workload_id = %s", [workload])
    run_until_idle(dsn)  # materialized again for the second epoch
    assert one(conn, "SELECT count(*) FROM feature_catalog WHERE dataset = %s", dataset) == 2
    dataset_id = one(conn, "SELECT dataset_id FROM datasets WHERE name = %s", dataset)
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])
    conn.execute("DELETE FROM datasets WHERE name = %s", [dataset])
    for table in ("feature_sets", "feature_passes"):
        assert one(conn, f"SELECT count(*) FROM {table} WHERE dataset_id = %s", dataset_id) == 0, table
    assert one(conn, "SELECT count(*) FROM feature_buffers b LEFT JOIN feature_sets s USING (feature_set_id)"
                     " WHERE s.feature_set_id IS NULL") == 0  # fmt: skip
