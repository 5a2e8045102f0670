"""evaluate, predict and export_model on trained configs: they agree with each other and with training."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from cerebro_db import sample_data
from cerebro_db.predict import predict_on_segments
from cerebro_plpy import text
from tests.conftest import FASHION_ROWS, REVIEW_ROWS, TINY_CNN, unique
from tests.sql.conftest import train

Session = psycopg.Connection[Any]


@pytest.fixture(scope="module")
def mlp_config(dsn: str, blobs_2seg: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return train(conn, dsn, blobs_2seg, "mlp", {"hidden_units": 8, "lr": 0.01, "batch_size": 16}, 2)


@pytest.fixture(scope="module")
def cnn_config(dsn: str, fashion_2seg: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return train(conn, dsn, fashion_2seg, "cnn", {**TINY_CNN, "batch_size": 32, "lr": 0.01}, 1)


def exported(conn: Session, config_id: int) -> Any:
    import keras

    row = conn.execute("SELECT export_model(%s)", [config_id]).fetchone()
    assert row is not None
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.keras"
        path.write_bytes(row[0])
        return keras.saving.load_model(path)


def predictions(conn: Session, table: str) -> tuple[list[Any], list[Any], np.ndarray]:
    rows = conn.execute(f"SELECT id, label, probabilities FROM {table} ORDER BY id").fetchall()
    return [r[0] for r in rows], [r[1] for r in rows], np.array([r[2] for r in rows], dtype=np.float32)


def test_evaluate_repeats_the_final_epochs_validation(conn: Session, mlp_config: int, blobs_2seg: str) -> None:
    final = conn.execute(
        "SELECT val_loss, val_metric FROM epoch_metrics WHERE config_id = %s ORDER BY epoch DESC LIMIT 1", [mlp_config]
    ).fetchone()
    assert final is not None
    assert conn.execute("SELECT * FROM evaluate(%s, %s)", [mlp_config, blobs_2seg]).fetchone() == pytest.approx(
        final, rel=1e-6
    )


def test_evaluate_on_another_dataset_uses_all_its_rows(conn: Session, mlp_config: int, blobs_2seg: str) -> None:
    other = unique("blobs_other")
    conn.execute(
        "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3,f4,f5}', seed => 9, \"normalize\" => 'minmax')",
        [other, blobs_2seg],
    )
    loss, metric = conn.execute("SELECT * FROM evaluate(%s, %s)", [mlp_config, other]).fetchone()  # type: ignore[misc]
    # Every row of the table, each normalized like the config's dataset: the predictions say the same.
    out = unique("blobs_eval")
    conn.execute("SELECT predict(%s, %s, 'id', %s)", [mlp_config, blobs_2seg, out])
    _, labels, probabilities = predictions(conn, out)
    truth = [r[0] for r in conn.execute(f"SELECT label FROM {blobs_2seg} ORDER BY id")]
    assert metric == pytest.approx(np.mean(np.array(labels) == np.array(truth)), abs=1e-6)
    picked = probabilities[np.arange(len(truth)), truth]
    assert loss == pytest.approx(float(-np.log(picked).mean()), rel=1e-4)


def test_predict_on_the_segments_equals_keras_on_the_exported_model(
    conn: Session, mlp_config: int, blobs_2seg: str
) -> None:
    out = unique("blobs_predictions")
    assert conn.execute("SELECT predict(%s, %s, 'id', %s)", [mlp_config, blobs_2seg, out]).fetchone() == (240,)
    ids, labels, probabilities = predictions(conn, out)
    assert ids == list(range(240))
    raw = np.array(conn.execute(f"SELECT ARRAY[f0,f1,f2,f3,f4,f5] FROM {blobs_2seg} ORDER BY id").fetchall())[:, 0]
    expected = exported(conn, mlp_config).predict(raw.astype(np.float32), verbose=0)
    assert np.allclose(probabilities, expected, atol=1e-6)
    assert labels == [int(i) for i in expected.argmax(axis=1)]  # class_values of blobs are 0, 1, 2
    assert conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'label'",
        [out],
    ).fetchone() == ("bigint",)


def test_images_predict_with_per_channel_normalization(conn: Session, cnn_config: int, fashion_table: str) -> None:
    out = unique("fashion_predictions")
    assert conn.execute("SELECT predict(%s, %s, 'id', %s)", [cnn_config, fashion_table, out]).fetchone() == (
        FASHION_ROWS,
    )
    _, labels, probabilities = predictions(conn, out)
    images, truth = sample_data.read_fashion_mnist("train", FASHION_ROWS)
    expected = exported(conn, cnn_config).predict(images.reshape(-1, 28, 28, 1).astype(np.float32), verbose=0)
    assert np.allclose(probabilities, expected, atol=1e-5)
    accuracy = np.mean(np.array(labels) == truth)
    validated = conn.execute("SELECT val_metric FROM epoch_metrics WHERE config_id = %s", [cnn_config]).fetchone()
    assert validated is not None and accuracy == pytest.approx(validated[0], abs=0.1) and accuracy > 0.3


def test_parts_on_the_segments_side_by_side_predict_the_same(
    conn: Session, dsn: str, cnn_config: int, fashion_table: str
) -> None:
    serial, parallel = unique("fashion_serial"), unique("fashion_parallel")
    conn.execute("SELECT predict(%s, %s, 'id', %s)", [cnn_config, fashion_table, serial])
    assert predict_on_segments(dsn, cnn_config, f"public.{fashion_table}", "id", parallel) == FASHION_ROWS
    ids, labels, probabilities = predictions(conn, serial)
    assert predictions(conn, parallel)[:2] == (ids, labels)
    assert np.allclose(predictions(conn, parallel)[2], probabilities, atol=1e-6)


def test_a_failed_part_leaves_no_output_table(conn: Session, dsn: str, mlp_config: int, fashion_table: str) -> None:
    out = unique("half_full")
    with pytest.raises(psycopg.Error, match="feature column 'f0' does not exist"):
        predict_on_segments(dsn, mlp_config, f"public.{fashion_table}", "id", out)
    assert conn.execute("SELECT to_regclass(%s)", [out]).fetchone() == (None,)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        ("predict(999999, {table}, 'id', 'x')", "unknown config 999999"),
        ("predict({config}, {table}, 'nope', 'x')", "id column nope does not exist in public.{table}"),
        ("predict({config}, {table}, 'label', 'x')", "id column label clashes with the output columns"),
        ("predict({config}, {table}, 'id', {table})", 'relation "{table}" already exists'),
        ("predict({config}, {table}, 'id', 'a.b.c')", "output_table must be [schema.]table"),
        ("evaluate({config}, 'no_such')", "unknown dataset 'no_such'"),
        ("export_model(999999)", "unknown config 999999"),
    ],
)
def test_bad_calls_are_refused_clearly(conn: Session, mlp_config: int, blobs_2seg: str, call: str, error: str) -> None:
    sql = "SELECT * FROM " + call.format(config=mlp_config, table=f"'{blobs_2seg}'")
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(sql)
    assert error.format(table=blobs_2seg) in (raised.value.diag.message_primary or "")


def test_evaluate_refuses_datasets_of_another_shape(conn: Session, mlp_config: int, fashion_2seg: str) -> None:
    with pytest.raises(psycopg.Error, match=r"has feature_shape \[28, 28, 1\], config \d+ was trained on \[6\]"):
        conn.execute("SELECT * FROM evaluate(%s, %s)", [mlp_config, fashion_2seg])


def test_an_untrained_config_has_nothing_to_use(conn: Session, blobs_2seg: str) -> None:
    workload = conn.execute("SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.1]}')", [blobs_2seg]).fetchone()
    assert workload is not None
    config = conn.execute("SELECT config_id FROM configs WHERE workload_id = %s", [workload[0]]).fetchone()
    assert config is not None
    with pytest.raises(psycopg.Error, match="has not trained yet"):
        conn.execute("SELECT export_model(%s)", [config[0]])
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload[0]])


@pytest.mark.slow  # a transformer's first hop traces its graphs in two backends (tiny_bert, shared)
def test_text_predict_applies_the_datasets_vocabulary(
    conn: Session, reviews_table: str, reviews_2seg: str, tiny_bert: int
) -> None:
    config = tiny_bert
    out = unique("review_predictions")
    assert conn.execute("SELECT predict(%s, %s, 'id', %s)", [config, reviews_table, out]).fetchone() == (REVIEW_ROWS,)
    _, labels, probabilities = predictions(conn, out)
    vocabulary = conn.execute("SELECT vocabulary FROM datasets WHERE name = %s", [reviews_2seg]).fetchone()
    assert vocabulary is not None
    reviews = [r[0] for r in conn.execute(f"SELECT review FROM {reviews_table} ORDER BY id")]
    tokens = text.encode([text.tokenize(review) for review in reviews], vocabulary[0], 24)
    expected = exported(conn, config).predict(tokens, verbose=0)  # the exported model takes token ids
    assert np.allclose(probabilities, expected, atol=1e-5)
    assert set(labels) <= {0, 1}


def test_tabular_predictions_keep_text_labels(conn: Session, dsn: str) -> None:
    table, name = unique("adult"), unique("adult")
    sample_data.load_adult(conn, table, limit=1000)
    conn.execute(
        "SELECT * FROM prepare_dataset(%s, %s, 'income', '{age,fnlwgt,educational_num,capital_gain,capital_loss,"
        "hours_per_week}')",
        [name, table],
    )
    config = train(conn, dsn, name, "mlp", {"hidden_units": 16, "lr": 0.01, "batch_size": 32}, 1)
    out = unique("adult_predictions")
    assert conn.execute("SELECT predict(%s, %s, 'id', %s)", [config, table, out]).fetchone() == (1000,)
    _, labels, _ = predictions(conn, out)
    truth = [r[0] for r in conn.execute(f"SELECT income FROM {table} ORDER BY id")]
    assert set(labels) <= {"<=50K", ">50K"}
    assert np.mean(np.array(labels) == np.array(truth)) > 0.7  # about 3 in 4 earn <=50K: at least that
