"""Using a trained config: evaluate it on a dataset, predict a table's rows, export it as a ``.keras`` file.

Each call restores the config's latest committed state. Features are read and
normalized exactly as ``prepare_dataset`` did for its dataset; the exported model
carries that normalization as its first layer, so it takes raw feature values.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cerebro_plpy import dataset, memory, packing, shards, text, training, transfer
from cerebro_plpy.plpy_adapter import Database
from cerebro_plpy.state import ModelState

if TYPE_CHECKING:
    import keras

PREDICT_BATCH = 1024

_CONFIG_SQL = """
SELECT c.params::text AS params, c.seed, w.model, d.dataset_id, d.name AS dataset, d.feature_columns,
       d.feature_shape, d.num_classes, d.class_values::text AS class_values, d.normalize, d.norm_shift,
       d.norm_scale, d.vocabulary, config_state(c.config_id) AS state, r.source, r.entry_point,
       c.base_sha256
FROM configs c
JOIN workloads w USING (workload_id)
JOIN datasets d ON d.name = w.dataset
LEFT JOIN registered_models r ON r.name = w.model
WHERE c.config_id = $1
"""

_DATASET_SQL = """
SELECT dataset_id, feature_shape, class_values::text AS class_values, normalize, norm_shift, norm_scale, vocabulary
FROM datasets WHERE name = $1
"""


class InferenceError(ValueError):
    """A config or table that cannot be used this way; the message says why."""


def _config(db: Database, config_id: int) -> dict[str, Any]:
    rows = db.query(_CONFIG_SQL, ["int4"], [config_id])
    if not rows:
        raise InferenceError(f"unknown config {config_id}")
    if rows[0]["state"] is None:
        raise InferenceError(f"config {config_id} has not trained yet: it needs at least one committed unit")
    return rows[0]


def _model(db: Database, gd: dict[str, Any], config: dict[str, Any], *, cached: bool) -> keras.Model:
    """The config's model with its latest weights: the per-backend cached instance, or a fresh one to hand out."""
    transfer.fetch_archive(db, gd, config["base_sha256"])
    spec = training.ModelSpec.from_row(config)
    model = training.cached_model(gd, spec) if cached else training.build_compiled(gd, spec)
    training.restore(model, ModelState.decode(config["state"]))
    return model


def _normalization(row: dict[str, Any]) -> packing.Normalization:
    return packing.Normalization(row["normalize"], np.asarray(row["norm_shift"]), np.asarray(row["norm_scale"]))


def evaluate(db: Database, gd: dict[str, Any], config_id: int, dataset_name: str) -> dict[str, float]:
    """Loss and accuracy of the config's latest state on ``dataset_name``.

    On the config's own dataset: its validation split, the rows it never trained on (so
    right after an epoch this repeats that epoch's ``val_loss`` and ``val_metric``). On any
    other dataset: all its rows, re-normalized with the config's dataset's statistics.
    """
    config = _config(db, config_id)
    rows = db.query(_DATASET_SQL, ["text"], [dataset_name])
    if not rows:
        raise InferenceError(f"unknown dataset {dataset_name!r}")
    other = rows[0]
    if other["feature_shape"] != config["feature_shape"]:
        raise InferenceError(
            f"dataset {dataset_name!r} has feature_shape {other['feature_shape']}, config {config_id} was trained on "
            f"{config['feature_shape']}"
        )
    if json.loads(other["class_values"]) != json.loads(config["class_values"]):
        raise InferenceError(
            f"dataset {dataset_name!r} has classes {other['class_values']}, config {config_id} predicts "
            f"{config['class_values']}"
        )
    if other["vocabulary"] != config["vocabulary"]:
        raise InferenceError(
            f"dataset {dataset_name!r} has other token ids than config {config_id}'s: its vocabulary differs"
        )
    shape = tuple(config["feature_shape"])
    splits = ("validation",) if other["dataset_id"] == config["dataset_id"] else ("train", "validation")
    parts = [shards.arrays(db, gd, other["dataset_id"], split, None, shape) for split in splits]
    x, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if len(splits) == 2:  # stored with its own dataset's normalization: back to raw values, then ours
        theirs = _normalization(other)
        raw = (x.reshape(-1, len(theirs.shift)) * theirs.scale + theirs.shift).reshape(x.shape)
        x = _normalization(config).apply(raw)
    model = _model(db, gd, config, cached=True)
    loss, metric = training.evaluate(gd, model, x, y, memory.EVALUATION_BATCH, db.check_interrupts)
    return {"loss": loss, "metric": metric}


def predict_part(
    db: Database,
    gd: dict[str, Any],
    config_id: int,
    relation: int,
    id_column: str,
    output_schema: str,
    output_table: str,
    part: int,
    parts: int,
) -> int:
    """Predict the rows of ``relation`` whose id hashes to ``part`` of ``parts`` into the output table.

    The output table (``predict`` creates it) has columns ``id_column``, ``label`` (the
    dataset's original label value) and ``probabilities`` (real[], one per class, in the
    order of the dataset's ``class_values``). Returns the number of rows written.
    """
    config = _config(db, config_id)
    columns = {row["name"]: row for row in db.query(dataset.COLUMNS_SQL, ["oid"], [relation])}
    if id_column not in columns:
        raise InferenceError(f"id column {id_column!r} does not exist in the source table")
    source = dataset.feature_source(db, columns, config["feature_columns"], config["feature_shape"])
    shape = tuple(config["feature_shape"])
    size = int(np.prod(shape))
    norm = _normalization(config)
    classes = json.loads(config["class_values"])
    model = _model(db, gd, config, cached=True)
    output = f"{db.quote_ident(output_schema)}.{db.quote_ident(output_table)}"
    insert = f"INSERT INTO {output} SELECT * FROM jsonb_populate_recordset(NULL::{output}, $1)"
    ident = db.quote_ident(id_column)
    sql = (
        f"SELECT {ident} AS id, {source.expression} AS x FROM {dataset.qualified(db, relation)}"
        f" WHERE abs(hashtext({ident}::text)::int8) % $1 = $2"
    )
    written = 0
    for rows in db.batches(sql, ["int4", "int4"], [parts, part], PREDICT_BATCH):
        if source.decode == "text":
            x = text.encode([text.tokenize(row["x"]) for row in rows], config["vocabulary"], size)
        else:
            x = np.stack([dataset.decode(source, row["x"], size) for row in rows])
        if x.shape[1] != size:
            raise InferenceError(f"feature rows have {x.shape[1]} values; the config's dataset has {size}")
        probabilities = np.asarray(model.predict_on_batch(norm.apply(x).reshape((-1, *shape))))
        records = [
            {id_column: row["id"], "label": classes[int(p.argmax())], "probabilities": p.tolist()}
            for row, p in zip(rows, probabilities, strict=True)
        ]
        db.query(insert, ["jsonb"], [json.dumps(records, default=str)])
        written += len(records)
        db.check_interrupts()
    return written


def normalization_layer(norm: packing.Normalization, shape: tuple[int, ...]) -> Any:
    """A Keras layer computing ``(x - shift) / scale`` per feature (flat) or per channel (images)."""
    import keras

    if len(shape) == 2:  # HxW images: one channel, one statistic
        return keras.layers.Normalization(axis=None, mean=norm.shift[0], variance=norm.scale[0] ** 2)
    return keras.layers.Normalization(axis=-1, mean=norm.shift, variance=norm.scale**2)


def export(db: Database, gd: dict[str, Any], config_id: int) -> bytes:
    """A ``.keras`` file of the config's latest state that takes raw (un-normalized) features."""
    import keras

    config = _config(db, config_id)
    shape = tuple(config["feature_shape"])
    model = keras.Sequential(
        [keras.Input(shape), normalization_layer(_normalization(config), shape), _model(db, gd, config, cached=False)],
        name=f"cerebro_config_{config_id}",
    )
    with tempfile.TemporaryDirectory(prefix="cerebro-export-") as directory:
        path = Path(directory) / "model.keras"
        model.save(path)
        return path.read_bytes()
