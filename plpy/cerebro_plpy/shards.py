"""A server's prepared buffers as arrays, cached per backend in ``GD``.

A unit trains on the shard its segment holds, from this server's ``dataset_buffers`` (whose
segment column is the shard id: with partial replication several segments hold one shard; a
segment server received its shard from the coordinator), and evaluates on the validation
set at the end of a config's epoch; inference reads whole splits.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from cerebro_plpy import packing
from cerebro_plpy.plpy_adapter import Database
from cerebro_plpy.unit import Arrays, Shard, UnitError

GD_SHARDS = "cerebro.shards"
#: Shards kept in memory per backend: the training shard and validation set of
#: the datasets in use. Datasets never change once prepared, so no invalidation.
SHARD_CACHE_SIZE = 4

_BUFFERS_SQL = """
SELECT x, y FROM dataset_buffers
WHERE dataset_id = $1 AND split = $2 AND ($3::int IS NULL OR segment = $3)
ORDER BY buffer_id
"""


def arrays(
    db: Database, gd: dict[str, Any], dataset_id: int, split: str, segment: int | None, shape: tuple[int, ...]
) -> Arrays:
    """The ``split`` buffers of shard ``segment`` (None: of every shard) of a dataset, in buffer order."""
    cache: OrderedDict[tuple[Any, ...], Arrays] = gd.setdefault(GD_SHARDS, OrderedDict())
    key = (dataset_id, split, segment)
    if key not in cache:
        rows = db.query(_BUFFERS_SQL, ["int4", "text", "int4"], [dataset_id, split, segment])
        if not rows:
            raise UnitError(f"no {split} buffers of dataset {dataset_id} here (segment {segment})")
        cache[key] = packing.from_buffers(((r["x"], r["y"]) for r in rows), shape)
        while len(cache) > SHARD_CACHE_SIZE:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def for_hop(db: Database, gd: dict[str, Any], context: dict[str, Any]) -> Shard:
    """What the hop of ``context`` (``unit_context``) trains on here: the shard its segment holds, and
    the validation set if the hop ends the config's epoch."""
    shape = tuple(context["feature_shape"])
    dataset_id = context["dataset_id"]
    tick = time.perf_counter()
    train = arrays(db, gd, dataset_id, "train", context["shard"], shape)
    validation = arrays(db, gd, dataset_id, "validation", None, shape) if context["epoch_done"] else None
    return Shard(train, validation, time.perf_counter() - tick)
