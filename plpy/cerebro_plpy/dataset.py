"""``prepare_dataset``: read a source table once and store it packed, shuffled and sharded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from cerebro_plpy import packing, text
from cerebro_plpy.packing import PackingError
from cerebro_plpy.plpy_adapter import Database

FETCH_ROWS = 5000

COLUMNS_SQL = """
SELECT a.attname AS name, t.typcategory AS category, t.typname AS type, e.typname AS element
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# The writers are SECURITY DEFINER (20_prepare_dataset.sql): tenants have no INSERT on the tables.
_STORE_DATASET_SQL = """
SELECT _store_dataset($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
    AS dataset_id
"""
_STORE_DATASET_TYPES = (
    "text",
    "text",
    "text",
    "text[]",
    "int4[]",
    "int4",
    "text",
    "text",
    "float8[]",
    "float8[]",
    "int4",
    "int4",
    "float8",
    "int8",
    "int8",
    "int4",
    "text[]",
    "int4",
)

_STORE_BUFFER_SQL = "SELECT _store_dataset_buffer($1, $2, $3, $4, $5, $6, $7)"
_STORE_BUFFER_TYPES = ("int4", "text", "int4", "int4", "int4", "bytea", "bytea")
SPLITS = ("train", "validation")

_NUMERIC_ELEMENTS = {"int2", "int4", "int8", "float4", "float8", "numeric"}


@dataclass(frozen=True)
class FeatureSource:
    """How features are read: the SQL expression per row, and how to decode its value."""

    columns: list[str]
    expression: str
    decode: str  # 'float8-array' | 'float4-array' | 'bytea' | 'text'
    shape: tuple[int, ...] | None


def _feature_names(columns: dict[str, dict[str, Any]], label: str, feature_columns: list[str] | None) -> list[str]:
    if label not in columns:
        raise PackingError(f"label column {label!r} does not exist in the source table")
    names = feature_columns or [name for name in columns if name != label]
    if not names:
        raise PackingError("the source table has no feature columns besides the label")
    if label in names:
        raise PackingError(f"column {label!r} cannot be both a feature and the label")
    return names


def feature_source(
    db: Database, columns: dict[str, dict[str, Any]], names: list[str], feature_shape: list[int] | None
) -> FeatureSource:
    """How to read feature columns ``names`` of a table whose columns are ``columns`` (rows of ``COLUMNS_SQL``)."""
    for name in names:
        if name not in columns:
            raise PackingError(f"feature column {name!r} does not exist in the source table")
    shape = tuple(feature_shape) if feature_shape else None
    if shape is not None and (not shape or any(d is None or d < 1 for d in shape)):
        raise PackingError(f"feature_shape must list positive dimensions, got {feature_shape}")
    first = columns[names[0]]
    if len(names) == 1 and first["category"] == "S":
        return FeatureSource(names, f"{db.quote_ident(names[0])}::text", "text", shape)
    if len(names) == 1 and first["type"] == "bytea":
        if shape is None:
            raise PackingError(f"bytea feature column {names[0]!r} needs feature_shape, e.g. '{{28,28,1}}'")
        return FeatureSource(names, db.quote_ident(names[0]), "bytea", shape)
    if len(names) == 1 and first["category"] == "A":
        if first["element"] not in _NUMERIC_ELEMENTS:
            raise PackingError(f"array feature column {names[0]!r} has non-numeric elements ({first['element']})")
        return FeatureSource(names, f"array_send({db.quote_ident(names[0])}::float4[])", "float4-array", shape)
    for name in names:
        if columns[name]["category"] not in ("N", "B"):
            raise PackingError(
                f"feature column {name!r} is not numeric (type {columns[name]['type']}); "
                "name numeric columns in feature_columns, or one array/bytea column"
            )
    if shape is not None and int(np.prod(shape)) != len(names):
        raise PackingError(f"feature_shape {list(shape)} does not match {len(names)} feature columns")
    # booleans have no direct cast to float8; through int they become 0 / 1
    cast = ", ".join(f"{db.quote_ident(n)}{'::int' if columns[n]['category'] == 'B' else ''}::float8" for n in names)
    return FeatureSource(names, f"array_send(ARRAY[{cast}])", "float8-array", shape or (len(names),))


def _array_length(db: Database, table: str, column: str) -> tuple[int]:
    """The shape of a 1-D array feature column given without feature_shape: its first row's length."""
    quoted = db.quote_ident(column)
    rows = db.query(f"SELECT cardinality({quoted}) AS n FROM {table} WHERE {quoted} IS NOT NULL LIMIT 1")
    if not rows or not rows[0]["n"]:
        raise PackingError(
            f"array feature column {column!r} has no values to take feature_shape from; give feature_shape"
        )
    return (int(rows[0]["n"]),)


def decode(source: FeatureSource, raw: Any, size: int) -> np.ndarray:
    if raw is None:
        raise PackingError(f"feature column {source.columns[0]!r} has NULL values")
    if source.decode == "bytea":
        return packing.decode_pixels(raw, size)
    try:
        return packing.decode_array_send(raw, "float8" if source.decode == "float8-array" else "float4")
    except PackingError:
        raise PackingError(f"feature column(s) {', '.join(map(repr, source.columns))} contain NULL values") from None


def prepare_dataset(
    db: Database,
    *,
    name: str,
    relation: int,
    source_table: str,
    label_column: str,
    feature_columns: list[str] | None,
    validation_fraction: float,
    num_segments: int | None,
    buffer_rows: int | None,
    normalize: str,
    feature_shape: list[int] | None,
    seed: int,
    sequence_length: int = 128,
    vocabulary_size: int = 20000,
    replication: int = 1,
) -> list[dict[str, Any]]:
    """Pack ``relation`` (the resolved oid of ``source_table``) into dataset ``name``.

    A single text column is tokenized (:mod:`cerebro_plpy.text`) with a vocabulary of
    ``vocabulary_size`` ids fitted on the training split, into ``sequence_length`` token
    ids per row; token ids are never normalized. The training split is cut into
    ``segments // replication`` shards, written once each (a shard's segment column is its
    shard id); segment ``s`` holds shard ``s % shards``. Returns one summary row per segment:
    the training rows it holds, and the validation rows stored with the shard it is the first holder of.
    Validates everything before it writes, and runs inside the caller's transaction, so a
    failure leaves nothing behind.
    """
    if not name or not name.strip():
        raise PackingError("dataset name must not be empty")
    if db.query("SELECT dataset_name_taken($1) AS taken", ["text"], [name])[0]["taken"]:
        raise PackingError(f"dataset {name!r} already exists; choose another name")
    if normalize not in packing.NORMALIZATIONS:
        raise PackingError(f"unknown normalize {normalize!r}; choose one of {', '.join(packing.NORMALIZATIONS)}")
    if not 0.0 < validation_fraction < 1.0:
        raise PackingError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    cluster_segments = int(db.query("SELECT count(*) AS n FROM segments")[0]["n"])
    segments = num_segments if num_segments is not None else cluster_segments
    if not 1 <= segments <= cluster_segments:
        raise PackingError(
            f"num_segments must be between 1 and the cluster's {cluster_segments} segments, got {segments}"
        )
    if not 1 <= replication <= segments:
        raise PackingError(f"replication must be between 1 and the dataset's {segments} segments, got {replication}")
    shards = segments // replication
    columns = {row["name"]: row for row in db.query(COLUMNS_SQL, ["oid"], [relation])}
    source = feature_source(db, columns, _feature_names(columns, label_column, feature_columns), feature_shape)

    table = qualified(db, relation)
    count = db.query(f"SELECT count(*) AS n FROM {table}")[0]["n"]
    if count == 0:
        raise PackingError(f"source table {source_table!r} is empty")

    is_text = source.decode == "text"
    if is_text:
        shape: tuple[int, ...] = (sequence_length,)
        normalize = "none"
    else:
        shape = source.shape or _array_length(db, table, source.columns[0])
    size = int(np.prod(shape))
    x = np.empty((0 if is_text else count, size), dtype=np.float32)
    documents: list[list[str]] = []
    labels: list[Any] = []
    sql = f"SELECT {source.expression} AS x, {db.quote_ident(label_column)} AS y FROM {table}"
    for rows in db.batches(sql, [], [], FETCH_ROWS):
        for row in rows:
            if is_text:
                documents.append(text.tokenize(row["x"]))
                labels.append(row["y"])
                continue
            values = decode(source, row["x"], size)
            if len(values) != size:
                raise PackingError(
                    f"a row of {', '.join(source.columns)} has {len(values)} values; feature_shape {list(shape)} "
                    f"needs {size}"
                )
            x[len(labels)] = values
            labels.append(row["y"])
    y, classes = packing.encode_labels(labels)

    train_order, validation_order = packing.shuffle_split(len(y), validation_fraction, seed)
    vocabulary = None
    if is_text:
        vocabulary = text.fit_vocabulary([documents[i] for i in train_order], vocabulary_size)
        x = text.encode(documents, vocabulary, sequence_length)
    norm = packing.Normalization.fit(normalize, x[train_order], shape)
    x = norm.apply(x)
    if not np.isfinite(x).all():  # the writer refuses them too; here the message can name the columns
        named = ", ".join(map(repr, source.columns))
        raise PackingError(f"feature column(s) {named} hold NaN, infinite or out of float32 range values")
    rows_per_buffer = buffer_rows if buffer_rows is not None else packing.default_buffer_rows(size or 1)
    buffers = packing.shard_buffers(
        x, y, train_order, validation_order, num_segments=shards, buffer_rows=rows_per_buffer
    )

    dataset_id = db.query(
        _STORE_DATASET_SQL,
        _STORE_DATASET_TYPES,
        [
            name,
            source_table,
            label_column,
            source.columns,
            list(shape),
            len(classes),
            json.dumps(classes, default=str),
            normalize,
            norm.shift.tolist(),
            norm.scale.tolist(),
            segments,
            rows_per_buffer,
            validation_fraction,
            len(train_order),
            len(validation_order),
            seed,
            vocabulary,
            replication,
        ],
    )[0]["dataset_id"]
    stored = {k: {"train_rows": 0, "validation_rows": 0} for k in range(shards)}
    for buffer in buffers:
        db.query(
            _STORE_BUFFER_SQL,
            _STORE_BUFFER_TYPES,
            [
                dataset_id,
                buffer.split,
                buffer.segment,
                buffer.buffer_id,
                buffer.rows,
                packing.to_bytes(buffer.x),
                packing.to_bytes(buffer.y),
            ],
        )
        stored[buffer.segment][f"{buffer.split}_rows"] += buffer.rows
    return [
        {
            "segment": s,
            "train_rows": stored[s % shards]["train_rows"],
            "validation_rows": stored[s]["validation_rows"] if s < shards else 0,
        }
        for s in range(segments)
    ]


def check_dataset(
    *,
    name: str,
    label_column: str,
    feature_columns: list[str],
    feature_shape: list[int],
    num_classes: int,
    class_values: list[Any],
    normalize: str,
    norm_shift: list[float],
    norm_scale: list[float],
    num_segments: int,
    cluster_segments: int,
    buffer_rows: int,
    validation_fraction: float,
    train_rows: int,
    validation_rows: int,
    vocabulary: list[str] | None,
    replication: int,
) -> None:
    """Refuse a dataset row that ``prepare_dataset`` could not have written (the definer writer's check).

    Its buffers are checked one by one (:func:`check_buffer`) and their totals at commit.
    """
    if not name or not name.strip():
        raise PackingError("dataset name must not be empty")
    if not feature_columns or any(not column for column in feature_columns) or label_column in feature_columns:
        raise PackingError(f"feature_columns {feature_columns} must name columns other than the label")
    if not feature_shape or any(d is None or d < 1 for d in feature_shape):
        raise PackingError(f"feature_shape must list positive dimensions, got {feature_shape}")
    if num_classes < 2 or len(class_values) != num_classes or len({json.dumps(v) for v in class_values}) != num_classes:
        raise PackingError(f"num_classes {num_classes} must be at least 2 and count the distinct class_values")
    if normalize not in packing.NORMALIZATIONS:
        raise PackingError(f"unknown normalize {normalize!r}; choose one of {', '.join(packing.NORMALIZATIONS)}")
    width = packing.normalization_width(tuple(feature_shape))
    shift, scale = np.asarray(norm_shift, dtype=np.float64), np.asarray(norm_scale, dtype=np.float64)
    if shift.shape != (width,) or scale.shape != (width,):
        raise PackingError(f"norm_shift and norm_scale need {width} values each for feature_shape {feature_shape}")
    if not (np.isfinite(shift).all() and np.isfinite(scale).all() and (scale > 0).all()):
        raise PackingError("norm_shift must be finite and norm_scale finite and positive")
    if normalize == "none" and ((shift != 0).any() or (scale != 1).any()):
        raise PackingError("normalize 'none' stores norm_shift 0 and norm_scale 1")
    if vocabulary is not None and (len(feature_shape) != 1 or normalize != "none" or None in vocabulary):
        raise PackingError("a text dataset (with a vocabulary) has a 1-D feature_shape and normalize 'none'")
    if not 1 <= num_segments <= cluster_segments:
        raise PackingError(
            f"num_segments must be between 1 and the cluster's {cluster_segments} segments, got {num_segments}"
        )
    if not 1 <= replication <= num_segments:
        raise PackingError(f"replication must be between 1 and num_segments = {num_segments}, got {replication}")
    if buffer_rows < 1:
        raise PackingError(f"buffer_rows must be at least 1, got {buffer_rows}")
    if not 0.0 < validation_fraction < 1.0:
        raise PackingError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if train_rows < num_segments // replication or validation_rows < 1:
        raise PackingError(
            f"{train_rows} training and {validation_rows} validation rows: every shard needs a training row "
            "and the validation split at least one row"
        )


def check_buffer(
    *,
    feature_shape: list[int],
    num_classes: int,
    vocabulary_size: int | None,
    num_segments: int,
    buffer_rows: int,
    split: str,
    segment: int,
    rows: int,
    x: bytes,
    y: bytes,
) -> None:
    """Refuse a buffer that does not decode into ``rows`` examples of the dataset it is written to."""
    if split not in SPLITS:
        raise PackingError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0 <= segment < num_segments:
        raise PackingError(f"segment must be between 0 and {num_segments - 1}, got {segment}")
    if not 1 <= rows <= buffer_rows:
        raise PackingError(f"a buffer holds 1 to buffer_rows = {buffer_rows} rows, got {rows}")
    size = int(np.prod(feature_shape))
    itemsize = packing.FLOAT32.itemsize
    if len(x) != rows * size * itemsize or len(y) != rows * itemsize:
        raise PackingError(
            f"a buffer of {rows} rows of shape {feature_shape} has {rows * size * itemsize} bytes of features and "
            f"{rows * itemsize} of labels, got {len(x)} and {len(y)}"
        )
    features, labels = np.frombuffer(x, dtype=packing.FLOAT32), np.frombuffer(y, dtype=packing.FLOAT32)
    if not np.isfinite(features).all():
        raise PackingError("buffer features contain NaN or infinite values")
    if vocabulary_size is not None and not _indices_below(features, text.FIRST_WORD + vocabulary_size):
        raise PackingError(f"token ids must be whole numbers below {text.FIRST_WORD + vocabulary_size}")
    if not _indices_below(labels, num_classes):
        raise PackingError(f"labels must be class indices 0 to {num_classes - 1}")


def _indices_below(values: np.ndarray, bound: int) -> bool:
    return bool(((values >= 0) & (values < bound) & (values == np.floor(values))).all())


def qualified(db: Database, relation: int) -> str:
    row = db.query(
        "SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = $1",
        ["oid"],
        [relation],
    )[0]
    return f"{db.quote_ident(row['schema'])}.{db.quote_ident(row['name'])}"
