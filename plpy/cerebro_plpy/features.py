"""Feature transfer: a frozen base's outputs materialized once per shard, and heads trained on them (Vista in MOP).

A ``transfer`` config with nothing of its base trained (``trainable_from = ''``) computes the same base prefix at every
step of every epoch. Instead, the first unit on a segment that needs them materializes the prefix's outputs for that
segment's pieces (its training shard, its slice of the validation set) and the head trains on them:

- **staged**: every layer the workload's frozen configs read off the same base is computed in one pass per piece, by
  one model with an output per layer (:func:`extractor`), so the layers up to the lowest requested one run once and
  the pass continues from there to the next;
- **shared**: stored per (owner, dataset, base sha256, layer) in ``feature_sets`` / ``feature_buffers`` (packed
  float32 like ``dataset_buffers``), reused by later configs and workloads; ``feature_passes`` logs each pass;
- **bounded**: a piece runs in batches sized by the memory guard's limit (:func:`batch_rows`), each batch's outputs
  written before the next, never a whole shard's activations at once;
- **equal**: the head alone (``transfer.build_head``) is built with the same layers in the same order as through the
  base, seeded after any base is loaded, so it gets the same initial weights, Dropout seed and state layout: a state
  trains on either path. Layers that act differently in training (Dropout and the other noise layers, activity
  regularizers) end what may be materialized: below them the prefix's outputs are the same in training and inference.

It runs lazily, in the unit's transaction on the server that holds the shard (``materialize_features`` in
``sql/10_unit/50_features.sql``), under a transaction advisory lock per piece: a failed unit rolls its pieces back
whole, and two units never compute the same piece.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cerebro_plpy import memory, packing, shards, training, transfer
from cerebro_plpy.plpy_adapter import Database
from cerebro_plpy.unit import Arrays, Shard

if TYPE_CHECKING:
    import keras

GD_FEATURES = "cerebro.features"
GD_EXTRACTORS = "cerebro.feature_extractors"
#: Feature arrays kept per backend: a segment's training pieces and the validation set, for a few layers.
FEATURE_CACHE_SIZE = 8
#: The largest materialization batch (inference only: larger batches gain little on a CPU).
MAX_BATCH = 256
#: Layers whose outputs differ between training and inference: a prefix through one is not materialized.
STOCHASTIC = frozenset(
    {
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianDropout",
        "GaussianNoise",
        "AlphaDropout",
        "ActivityRegularization",
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomTranslation",
        "RandomContrast",
        "RandomBrightness",
        "RandomCrop",
    }
)


@dataclass(frozen=True)
class Piece:
    """What one pass covers: the buffers of one split of one segment."""

    split: str
    segment: int


def on_features(context: dict[str, Any]) -> bool:
    """Whether the hop's config may train on materialized features: a transfer config with a frozen base (unless
    ``cerebro.feature_transfer`` is off)."""
    if context.get("model") != transfer.MODEL or context.get("base_sha256") is None:
        return False
    if context.get("feature_transfer") == "off":
        return False
    params = json.loads(context["params"])
    return params["trainable_from"] == ""


# --- the staged prefix (TensorFlow) ---


def _outputs(model: keras.Model, paths: Sequence[str], x: Any, top: bool) -> list[Any]:
    """``x`` through ``model`` with an output at each of ``paths`` ('' = the model's own output), each layer called
    once: :func:`transfer._cut` for several cuts at once, so the shared prefix is computed once."""
    import keras

    nested: dict[str, list[str]] = {}
    for path in paths:
        head, _, rest = path.partition("/")
        if rest:
            nested.setdefault(head, []).append(rest)
    found: dict[str, Any] = {}
    if not isinstance(model, keras.Sequential):
        for head, rests in nested.items():
            inner = model.get_layer(head)
            (inner_input,) = keras.tree.flatten(inner._inbound_nodes[0].input_tensors)
            found |= {f"{head}/{r}": t for r, t in zip(rests, _outputs(inner, rests, inner_input, False), strict=True)}
        for path in paths:
            if path not in found:
                found[path] = model.outputs[0] if path == "" else model.get_layer(path).output
        cut = keras.Model(model.inputs, [found[path] for path in paths], name=f"{model.name}_cuts")
        return list(keras.tree.flatten(cut(x)))
    left = set(paths)
    applied = False
    for layer in model.layers:
        if not left:
            break
        if top and not applied and isinstance(layer, keras.layers.Normalization):
            # As transfer._cut: the unit's features are normalized already.
            if layer.name in left:
                found[layer.name] = x
                left.discard(layer.name)
            continue
        applied = True
        rests = nested.get(layer.name, [])
        if rests:
            inside = {f"{layer.name}/{rest}" for rest in rests}
            whole = bool(left - inside)  # a later layer (or the nested model's own output) is wanted too
            results = _outputs(layer, [*rests, ""] if whole else rests, x, False)
            found |= {f"{layer.name}/{rest}": t for rest, t in zip(rests, results, strict=False)}
            left -= inside
            if whole:
                x = results[-1]
        else:
            x = layer(x)
        if layer.name in left:
            found[layer.name] = x
            left.discard(layer.name)
    if "" in left:
        found[""] = x
        left.discard("")
    if left:
        raise KeyError(f"layers {sorted(left)} are not in model {model.name!r}")
    return [found[path] for path in paths]


def extractor(base: keras.Model, layers: Sequence[str], input_shape: tuple[int, ...]) -> keras.Model:
    """One model with the output of each of ``layers`` (paths, as in ``model_layers``): a pass computes them all."""
    import keras

    inputs = keras.Input(input_shape)
    return keras.Model(inputs, _outputs(base, list(layers), inputs, True), name="cerebro_features")


def usable_layers(base: keras.Model, layers: Sequence[str]) -> list[str]:
    """Those of ``layers`` whose prefix acts the same in training and inference, in the base's order."""
    usable: list[str] = []
    for name, layer in transfer.walk(base):
        if type(layer).__name__ in STOCHASTIC or getattr(layer, "activity_regularizer", None) is not None:
            break
        if name in layers:
            usable.append(name)
    return usable


def _per_example(layer: keras.Layer) -> int:
    import keras

    outputs = keras.tree.flatten(layer._inbound_nodes[0].output_tensors) if layer._inbound_nodes else []
    return sum(math.prod(d or 1 for d in tensor.shape[1:]) for tensor in outputs)


def batch_rows(base: keras.Model, layers: Sequence[str], limit_mb: float) -> int:
    """Rows per materialization batch: the base's weights and one batch of every layer's outputs up to the highest
    of ``layers`` (forward only) within the memory guard's limit; :class:`memory.MemoryGuardError` if not one row."""
    last = max(i for i, (name, _) in enumerate(transfer.walk(base)) if name in layers)
    activations = sum(_per_example(layer) for _, layer in list(transfer.walk(base))[: last + 1])
    room = limit_mb * 2**20 - 4 * base.count_params()
    rows = int(room // (4 * max(1, activations)))
    if rows < 1:
        raise memory.MemoryGuardError(
            f"materializing layers {list(layers)} needs about {4 * (base.count_params() + activations) / 2**20:.3g} "
            f"MB for one row, over {memory.SETTING} = {limit_mb:g}; read off an earlier layer"
        )
    return min(rows, MAX_BATCH)


def _cached_extractor(gd: dict[str, Any], sha256: str, layers: tuple[str, ...], shape: tuple[int, ...]) -> Any:
    """:func:`extractor` on the backend's frozen base (:func:`transfer.frozen_base`), kept per set of layers."""
    cached = gd.get(GD_EXTRACTORS)
    if cached is None or cached[0] != sha256:  # a backend materializes one base at a time
        cached = gd[GD_EXTRACTORS] = (sha256, {})
    models: dict[tuple[Any, ...], Any] = cached[1]
    if (layers, shape) not in models:
        models[(layers, shape)] = extractor(transfer.frozen_base(gd, sha256), layers, shape)
    return models[(layers, shape)]


def forward(model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
    """One forward call (inference) of the extractor on a batch: its outputs as float32 arrays.

    Traced once per extractor for any batch size (``predict_on_batch`` traces again at the first batch of another
    size, so a pass's shorter last batch cost a second trace of the whole prefix); the same graph as ``predict``'s."""
    run = getattr(model, "cerebro_forward", None)
    if run is None:
        import tensorflow as tf

        signature = [tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)]
        run = model.cerebro_forward = tf.function(
            lambda batch: model(batch, training=False), input_signature=signature, autograph=False
        )
    outputs = run(x)
    return [np.asarray(o, dtype=np.float32) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


# --- storing and reading (SQL) ---

_HERE_SQL = """
SELECT DISTINCT split, segment FROM dataset_buffers WHERE dataset_id = $1 AND split = 'validation'
"""
_DONE_SQL = """
SELECT s.layer, b.split, b.segment
FROM feature_sets s JOIN feature_buffers b ON b.feature_set_id = s.feature_set_id
WHERE s.owner = $1 AND s.dataset_id = $2 AND s.base_sha256 = $3 AND s.layer = ANY($4)
GROUP BY 1, 2, 3
"""
_LOCK_SQL = "SELECT lock_feature_piece($1, $2, $3, $4)"
_SET_SQL = "SELECT feature_set($1, $2, $3, $4, $5, $6) AS id"
_STORE_SQL = "SELECT store_feature_buffer($1, $2, $3, $4, $5, $6, $7)"
_PASS_SQL = "SELECT log_feature_pass($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
_FIND_SQL = """
SELECT feature_set_id, feature_shape FROM feature_sets
WHERE owner = $1 AND dataset_id = $2 AND base_sha256 = $3 AND layer = $4
"""
_READ_SQL = """
SELECT x, y FROM feature_buffers WHERE feature_set_id = $1 AND split = $2 AND ($3::int IS NULL OR segment = $3)
ORDER BY segment, part
"""
_ROWS_SQL = """
SELECT coalesce(sum(rows), 0)::int AS rows FROM feature_buffers
WHERE feature_set_id = $1 AND split = $2 AND ($3::int IS NULL OR segment = $3)
"""
_HAS_SQL = """
SELECT EXISTS (SELECT 1 FROM feature_buffers WHERE feature_set_id = $1 AND split = $2 AND segment = $3) AS stored
"""


def needed(db: Database, context: dict[str, Any]) -> list[Piece]:
    """The pieces a hop reads: its segment's training shard and that shard's validation slice; on the epoch's last
    hop the validation slices of every shard this server holds (a segment server holds them all)."""
    pieces = [Piece("train", context["shard"]), Piece("validation", context["shard"])]
    if context["epoch_done"]:
        here = db.query(_HERE_SQL, ["int4"], [context["dataset_id"]])
        pieces += [Piece(r["split"], r["segment"]) for r in here if Piece(r["split"], r["segment"]) not in pieces]
    return sorted(pieces, key=lambda p: (p.split, p.segment))


def _missing(
    db: Database, context: dict[str, Any], layers: Sequence[str], pieces: Sequence[Piece]
) -> dict[Piece, list[str]]:
    done = {
        (r["layer"], Piece(r["split"], r["segment"]))
        for r in db.query(
            _DONE_SQL,
            ["text", "int4", "text", "text[]"],
            [context["owner"], context["dataset_id"], context["base_sha256"], list(layers)],
        )
    }
    missing = {piece: [layer for layer in layers if (layer, piece) not in done] for piece in pieces}
    return {piece: wanted for piece, wanted in missing.items() if wanted}


def materialize(db: Database, gd: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Materialize what the hop of ``context`` (``unit_context``'s) will read and is not stored yet: the features of
    every layer the workload's frozen configs read off this base (``feature_layers``), one staged pass per piece.
    Returns what it did (``passes``: one per piece computed)."""
    if not on_features(context):
        return {"passes": 0}
    own = json.loads(context["params"])["layer"]
    staged = context.get("feature_transfer") != "unstaged"
    candidates = sorted({own, *(context.get("feature_layers") or [])}) if staged else [own]
    pieces = needed(db, context)
    if not _missing(db, context, candidates, pieces):
        return {"passes": 0}
    sha256 = context["base_sha256"]
    training.tensorflow(gd)  # first: its thread settings hold only if nothing started TensorFlow before
    layers = usable_layers(transfer.frozen_base(gd, sha256), candidates)
    if own not in layers:
        return {"passes": 0}  # its prefix acts differently in training: the config trains through the base
    for piece in pieces:  # in a fixed order: two units locking pieces cannot deadlock
        db.query(
            _LOCK_SQL, ["int4", "text", "text", "int4"], [context["dataset_id"], sha256, piece.split, piece.segment]
        )
    missing = _missing(db, context, layers, pieces)  # again, under the locks: another unit may have committed them
    passes = [materialize_piece(db, gd, context, piece, tuple(wanted)) for piece, wanted in missing.items()]
    return {"passes": len(passes), "layers": layers, "pieces": passes}


def materialize_piece(
    db: Database, gd: dict[str, Any], context: dict[str, Any], piece: Piece, layers: tuple[str, ...]
) -> dict[str, Any]:
    """One staged pass over ``piece``: every one of ``layers`` from one forward call per batch, written as it goes."""
    tick = time.perf_counter()
    shape = tuple(context["feature_shape"])
    sha256 = context["base_sha256"]
    model = _cached_extractor(gd, sha256, layers, shape)
    rows_per_batch = batch_rows(transfer.frozen_base(gd, sha256), layers, memory.limit_mb(context["max_training_mb"]))
    x, y = shards.arrays(db, gd, context["dataset_id"], piece.split, piece.segment, shape)
    sets = [
        db.query(
            _SET_SQL,
            ["text", "int4", "text", "text", "text", "int4[]"],
            [context["owner"], context["dataset_id"], json.loads(context["params"])["base"], sha256, layer,
             [int(d) for d in model.outputs[i].shape[1:]]],
        )[0]["id"]
        for i, layer in enumerate(layers)
    ]  # fmt: skip
    written = 0
    batches = 0
    for part, (start, stop) in enumerate(_spans(len(y), rows_per_batch)):
        outputs = forward(model, x[start:stop])
        batches += 1
        labels = packing.to_bytes(y[start:stop])
        for feature_set, features in zip(sets, outputs, strict=True):
            raw = packing.to_bytes(features)
            db.query(
                _STORE_SQL,
                ["int4", "text", "int4", "int4", "int4", "bytea", "bytea"],
                [feature_set, piece.split, piece.segment, part, stop - start, raw, labels],
            )
            written += len(raw) + len(labels)
        db.check_interrupts()
    seconds = time.perf_counter() - tick
    db.query(
        _PASS_SQL,
        ["text", "int4", "text", "text[]", "text", "int4", "int4", "int4", "int4", "int8", "float8"],
        [context["owner"], context["dataset_id"], sha256, list(layers), piece.split, piece.segment, len(y), batches,
         rows_per_batch, written, seconds],
    )  # fmt: skip
    return {"split": piece.split, "segment": piece.segment, "layers": list(layers), "rows": len(y), "bytes": written}


def _spans(rows: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, rows, size):
        yield start, min(rows, start + size)


def _arrays(
    db: Database, gd: dict[str, Any], feature_set: int, shape: tuple[int, ...], split: str, segment: int | None
) -> Arrays:
    cache: OrderedDict[tuple[Any, ...], Arrays] = gd.setdefault(GD_FEATURES, OrderedDict())
    key = (feature_set, split, segment)
    if key not in cache:
        types, args = ["int4", "text", "int4"], [feature_set, split, segment]
        rows = db.query(_ROWS_SQL, types, args)[0]["rows"]
        buffers = (r for batch in db.batches(_READ_SQL, types, args, 1) for r in batch)  # one buffer at a time
        cache[key] = packing.read_buffers(((r["x"], r["y"]) for r in buffers), rows, shape)
        while len(cache) > FEATURE_CACHE_SIZE:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def for_hop(db: Database, gd: dict[str, Any], context: dict[str, Any]) -> Shard | None:
    """The materialized features the hop of ``context`` trains on (its segment's piece, and on the epoch's last hop
    the validation set), or None if its config trains through the base (not frozen, or not materialized here)."""
    if not on_features(context):
        return None
    tick = time.perf_counter()
    found = db.query(
        _FIND_SQL,
        ["text", "int4", "text", "text"],
        [context["owner"], context["dataset_id"], context["base_sha256"], json.loads(context["params"])["layer"]],
    )
    if not found:
        return None
    feature_set, shape = found[0]["feature_set_id"], tuple(found[0]["feature_shape"])
    for piece in needed(db, context):
        if not db.query(_HAS_SQL, ["int4", "text", "int4"], [feature_set, piece.split, piece.segment])[0]["stored"]:
            return None
    train = _arrays(db, gd, feature_set, shape, "train", context["shard"])
    validation = _arrays(db, gd, feature_set, shape, "validation", None) if context["epoch_done"] else None
    return Shard(train, validation, time.perf_counter() - tick)
