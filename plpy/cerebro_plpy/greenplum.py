"""The Greenplum segment side of a hop: the two functions of the ``train_hop_agg`` aggregate.

On Greenplum a unit is one aggregate over the training buffers that live on one
``gp_segment_id`` (``cerebro_db.backends.greenplum`` writes the statement). The
transition function runs once per buffer and only collects it; the final function
trains once over them all. Segments may not write tables, so the new state leaves as
the aggregate's result and the coordinator records it. The one read here is of the
replicated validation table: a function on a segment may read a replicated table,
never a distributed one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cerebro_plpy import packing
from cerebro_plpy.plpy_adapter import Database
from cerebro_plpy.state import ModelState
from cerebro_plpy.unit import Arrays, Shard

#: The hop being collected by this segment process (one per statement: the unit groups one dist key).
GD_HOP = "cerebro.gp_hop"
#: The validation arrays of the last dataset evaluated here; datasets never change once loaded.
GD_VALIDATION = "cerebro.gp_validation"

# Unqualified: the function's own search_path names the schema the adapter installed into.
_VALIDATION_SQL = "SELECT x, y FROM gp_validation_buffers WHERE dataset_id = $1 ORDER BY buffer_id"


class TrainHop(Protocol):
    """``cerebro_plpy.unit.train_hop``: one pass over a shard from a state, evaluated if asked."""

    def __call__(
        self,
        gd: dict[str, Any],
        context: dict[str, Any],
        state: bytes | None,
        shard: Shard,
        check_interrupts: Callable[[], None],
        save: Callable[[ModelState], bytes],
    ) -> tuple[dict[str, Any], bytes]: ...


@dataclass
class _Hop:
    context: dict[str, Any]
    state: bytes | None
    buffers: list[tuple[bytes, bytes]] = field(default_factory=list)


def collect(gd: dict[str, Any], collected: int, context: str, state: bytes | None, x: bytes, y: bytes) -> int:
    """Transition function: keep one buffer; returns how many this hop has kept.

    ``collected`` is 0 (the aggregate's INITCOND) at the hop's first buffer, so a hop
    never sees what a failed earlier statement left in GD. The context and state are
    the same on every row; only the first row's are kept.
    """
    if collected == 0:
        gd[GD_HOP] = _Hop(json.loads(context), state)
    gd[GD_HOP].buffers.append((x, y))
    return collected + 1


def _validation(db: Database, gd: dict[str, Any], dataset_id: int, shape: tuple[int, ...]) -> Arrays:
    cached = gd.get(GD_VALIDATION)
    if cached is None or cached[0] != dataset_id:
        rows = db.query(_VALIDATION_SQL, ["int4"], [dataset_id])
        cached = gd[GD_VALIDATION] = (dataset_id, packing.from_buffers(((r["x"], r["y"]) for r in rows), shape))
    arrays: Arrays = cached[1]
    return arrays


def finish(db: Database, gd: dict[str, Any], train: TrainHop) -> tuple[dict[str, Any], bytes]:
    """Final function: train over the collected buffers, in buffer order; evaluate on the
    whole validation set only when this hop ends the config's epoch."""
    hop: _Hop = gd.pop(GD_HOP)
    shape = tuple(hop.context["feature_shape"])
    tick = time.perf_counter()
    train_arrays = packing.from_buffers(hop.buffers, shape)
    validation = _validation(db, gd, hop.context["dataset_id"], shape) if hop.context["epoch_done"] else None
    shard = Shard(train_arrays, validation, time.perf_counter() - tick)
    # The state leaves as the aggregate's result: the coordinator's record_hop stores it.
    return train(gd, hop.context, hop.state, shard, db.check_interrupts, ModelState.encode)
