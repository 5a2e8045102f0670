"""prepare_dataset on real tables: image (bytea and real[]) and tabular layouts, and bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest

from cerebro_db import sample_data
from cerebro_plpy import packing, text
from tests.conftest import FASHION_ROWS, unique

Session = psycopg.Connection[Any]


def buffers(conn: Session, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    rows = conn.execute(
        "SELECT b.x, b.y, b.segment, d.feature_shape FROM dataset_buffers b JOIN datasets d USING (dataset_id)"
        " WHERE d.name = %s AND b.split = %s ORDER BY b.buffer_id",
        [dataset, split],
    ).fetchall()
    shape = tuple(rows[0][3])
    x = np.concatenate([packing.from_bytes(r[0], shape) for r in rows])
    y = np.concatenate([packing.from_bytes(r[1], ()) for r in rows])
    segments = [r[2] for r in rows for _ in range(len(packing.from_bytes(r[1], ())))]
    return x, y, segments


def test_image_table_is_packed_shuffled_split_and_sharded(conn: Session, fashion_table: str) -> None:
    name = unique("images")
    summary = conn.execute(
        "SELECT * FROM prepare_dataset(%s, %s, 'label', '{pixels}', validation_fraction => 0.25,"
        " buffer_rows => 100, feature_shape => '{28,28,1}')",
        [name, fashion_table],
    ).fetchall()
    assert [s for s, _, _ in summary] == [0, 1]
    assert sum(t for _, t, _ in summary) == FASHION_ROWS * 3 // 4
    assert sum(v for _, _, v in summary) == FASHION_ROWS // 4

    images, labels = sample_data.read_fashion_mnist("train", FASHION_ROWS)
    shift, scale = conn.execute("SELECT norm_shift, norm_scale FROM datasets WHERE name = %s", [name]).fetchone()  # type: ignore[misc]
    x_train, y_train, segments = buffers(conn, name, "train")
    x_val, y_val, _ = buffers(conn, name, "validation")
    # Every source row is in exactly one split, normalized with the training statistics.
    restored = np.concatenate([x_train, x_val]).reshape(FASHION_ROWS, -1) * scale[0] + shift[0]
    order = np.lexsort(restored.T[::-1])
    expected = images.reshape(FASHION_ROWS, -1).astype(np.float64)
    np.testing.assert_allclose(restored[order], expected[np.lexsort(expected.T[::-1])], atol=1e-3)
    assert sorted(np.concatenate([y_train, y_val]).astype(int)) == sorted(labels.astype(int))
    assert abs(float(x_train.mean())) < 1e-3 and abs(float(x_train.std()) - 1) < 1e-3
    assert segments == sorted(segments)  # segment s holds the s-th slice
    counts = conn.execute(
        "SELECT max(rows) FROM dataset_buffers JOIN datasets USING (dataset_id) WHERE name = %s", [name]
    ).fetchone()
    assert counts == (100,)


def test_same_seed_gives_the_same_split_and_another_seed_does_not(conn: Session, fashion_table: str) -> None:
    def labels(seed: int) -> np.ndarray:
        name = unique("seeded")
        conn.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', '{pixels}', feature_shape => '{28,28,1}', seed => %s)",
            [name, fashion_table, seed],
        )
        return buffers(conn, name, "train")[1]

    assert np.array_equal(labels(3), labels(3))
    assert not np.array_equal(labels(3), labels(4))


def test_tabular_columns_and_text_labels(conn: Session) -> None:
    table = unique("tabular")
    conn.execute(f"CREATE TABLE {table} (id int, a real, b double precision, c int, flag boolean, kind text)")
    conn.execute(
        f"INSERT INTO {table} SELECT i, i * 0.5, -i, i % 3, i % 2 = 0, CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END"
        " FROM generate_series(1, 50) i"
    )
    name = unique("tab")
    conn.execute(
        "SELECT * FROM prepare_dataset(%s, %s, 'kind', '{a,b,c,flag}', \"normalize\" => 'none', num_segments => 1)",
        [name, table],
    )
    shape, classes, values = conn.execute(
        "SELECT feature_shape, num_classes, class_values FROM datasets WHERE name = %s", [name]
    ).fetchone()  # type: ignore[misc]
    assert (shape, classes, values) == ([4], 2, ["even", "odd"])
    x, y, _ = buffers(conn, name, "train")
    for features, label in zip(x, y, strict=True):
        i = features[0] * 2
        assert features.tolist() == [i / 2, -i, i % 3, float(i % 2 == 0)]
        assert label == (0 if i % 2 == 0 else 1)


def test_real_array_column_infers_its_shape(conn: Session) -> None:
    table = unique("arrays")
    conn.execute(f"CREATE TABLE {table} (v real[], y int)")
    conn.execute(f"INSERT INTO {table} SELECT ARRAY[i, i + 1, i + 2], i % 2 FROM generate_series(1, 20) i")
    name = unique("arr")
    conn.execute("SELECT * FROM prepare_dataset(%s, %s, 'y', '{v}', \"normalize\" => 'none')", [name, table])
    x, y, _ = buffers(conn, name, "train")
    assert x.shape[1:] == (3,)
    assert all(row[1] == row[0] + 1 and row[2] == row[0] + 2 for row in x)
    assert all(label == row[0] % 2 for row, label in zip(x, y, strict=True))


@pytest.fixture(scope="module")
def bad_table(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bad_source (id int, x real, note text, maybe real, pixels bytea, arr real[], y int,"
            " wild float8)"
        )
        conn.execute(
            "INSERT INTO bad_source SELECT i, i, 'n', CASE WHEN i = 3 THEN NULL ELSE 1 END, '\\x0102',"
            " ARRAY[1, NULL]::real[], i % 2, CASE WHEN i = 4 THEN 1e300 ELSE i END FROM generate_series(1, 10) i"
        )
        conn.execute("CREATE TABLE empty_source (x real, y int)")
    return "bad_source"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("'bad_source', 'nope'", "label column 'nope' does not exist"),
        ("'bad_source', 'y', '{x,nope}'", "feature column 'nope' does not exist"),
        ("'bad_source', 'y', '{x,note}'", "feature column 'note' is not numeric"),
        ("'bad_source', 'y', '{x,maybe}'", "contain NULL values"),
        ("'bad_source', 'y', '{arr}'", "contain NULL values"),
        ("'bad_source', 'y', '{pixels}'", "needs feature_shape"),
        ("'bad_source', 'y', '{pixels}', feature_shape => '{3}'", "has 2 bytes"),
        ("'bad_source', 'y', '{x}', validation_fraction => 1.5", "validation_fraction must be in (0, 1), got 1.5"),
        ("'bad_source', 'y', '{x}', num_segments => 0", "num_segments must be between 1 and"),
        ("'bad_source', 'y', '{x}', num_segments => 3", "got 3"),
        ("'bad_source', 'y', '{x}', replication => 0", "replication must be between 1 and the dataset's 2 segments"),
        ("'bad_source', 'y', '{x}', replication => 3", "replication must be between 1 and the dataset's 2 segments"),
        ("'bad_source', 'y', '{x}', replication => NULL", "got NULL"),
        ("'bad_source', 'y', '{x}', num_segments => 1, replication => 2", "dataset's 1 segments, got 2"),
        ("'bad_source', 'y', '{x}', \"normalize\" => 'zscore'", "unknown normalize 'zscore'"),
        ("'bad_source', 'y', '{y}'", "both a feature and the label"),
        ("'empty_source', 'y'", "is empty"),
        ("'bad_source', 'maybe', '{x}'", "label column contains NULL values"),
        ("'bad_source', 'y', '{x,wild}'", "'wild' hold NaN, infinite or out of float32 range values"),
    ],
)
def test_bad_input_is_refused_clearly_and_writes_nothing(
    conn: Session, bad_table: str, arguments: str, error: str
) -> None:
    name = unique("bad")
    datasets_before = conn.execute("SELECT count(*) FROM datasets").fetchone()
    with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
        conn.execute(f"SELECT * FROM prepare_dataset('{name}', {arguments})")
    assert error in raised.value.diag.message_primary, raised.value.diag.message_primary
    assert raised.value.diag.message_hint
    assert "Traceback" not in (raised.value.diag.context or "")
    assert conn.execute("SELECT count(*) FROM datasets").fetchone() == datasets_before


def test_missing_table_and_duplicate_name(conn: Session, fashion_2seg: str) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable, match="no_such_table"):
        conn.execute("SELECT * FROM prepare_dataset('x', 'no_such_table', 'y')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="already exists"):
        conn.execute("SELECT * FROM prepare_dataset(%s, 'fashion_small', 'label')", [fashion_2seg])


def test_text_is_tokenized_with_a_vocabulary_fitted_on_the_training_split(
    conn: Session, reviews_table: str, reviews_2seg: str
) -> None:
    vocabulary, shape, normalize, validation_fraction, seed = conn.execute(
        "SELECT vocabulary, feature_shape, normalize, validation_fraction, seed FROM datasets WHERE name = %s",
        [reviews_2seg],
    ).fetchone()  # type: ignore[misc]
    assert shape == [24] and normalize == "none" and len(vocabulary) == 400 - text.FIRST_WORD
    reviews = [r[0] for r in conn.execute(f"SELECT review FROM {reviews_table} ORDER BY id")]
    documents = [text.tokenize(review) for review in reviews]
    # A freshly copied table is read in id order, so the split's row positions are ids.
    train_order, _ = packing.shuffle_split(len(reviews), validation_fraction, seed)
    assert vocabulary == text.fit_vocabulary([documents[i] for i in train_order], 400)
    assert vocabulary != text.fit_vocabulary(documents, 400)  # the validation rows were left out
    # Round trip: every stored sequence is the start token and its review's first words.
    x_train, _, _ = buffers(conn, reviews_2seg, "train")
    x_val, _, _ = buffers(conn, reviews_2seg, "validation")
    words = ["<pad>", "<unknown>", "<start>", *vocabulary]
    stored = sorted(" ".join(words[int(i)] for i in row) for row in np.concatenate([x_train, x_val]))
    ids = {word: i for i, word in enumerate(words)}
    expected = sorted(
        " ".join(["<start>", *(w if w in ids else "<unknown>" for w in doc[:23])] + ["<pad>"] * (23 - len(doc[:23])))
        for doc in documents
    )
    assert stored == expected


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ("sequence_length => 1", "sequence_length must be at least 2"),
        ("vocabulary_size => 3", "vocabulary_size must be more than 3"),
        ("sequence_length => NULL", "sequence_length and vocabulary_size must not be NULL"),
    ],
)
def test_bad_text_settings_are_refused(conn: Session, reviews_table: str, arguments: str, error: str) -> None:
    with pytest.raises(psycopg.Error, match=error):
        conn.execute(
            f"SELECT * FROM prepare_dataset(%s, %s, 'rating', '{{review}}', {arguments})",
            [unique("bad_text"), reviews_table],
        )
