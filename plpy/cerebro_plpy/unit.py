"""``run_unit``: one sub-epoch of one config on one segment, committed as one hop.

The caller's transaction must hold the config's unit lock (``claim_unit`` takes
it); the scheduling decision is SQL's, this module only trains and records.
Order matters for user control: the ``configs`` row is updated last, so its row
lock is held for milliseconds at commit, never while training.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np

from cerebro_plpy import packing, training
from cerebro_plpy.plpy_adapter import Database
from cerebro_plpy.state import ModelState

GD_SHARDS = "cerebro.shards"
#: Shards kept in memory per backend: the training shard and validation set of
#: the datasets in use. Datasets never change once prepared, so no invalidation.
SHARD_CACHE_SIZE = 4
EVALUATION_BATCH = 1024


class UnitError(RuntimeError):
    """A call of run_unit that breaks the unit protocol (not claimed, not legal)."""


_UNIT_SQL = """
SELECT c.params::text AS params, c.seed, c.status, c.epochs_done, c.max_epochs, w.model, w.workload_id,
       d.dataset_id, d.feature_shape, d.num_classes, d.num_segments,
       s.state, coalesce(s.visited_segments, '{}') AS visited,
       coalesce(s.epoch_rows, 0) AS epoch_rows, coalesce(s.epoch_loss_sum, 0) AS epoch_loss_sum,
       coalesce(s.epoch_metric_sum, 0) AS epoch_metric_sum, coalesce(s.epoch_seconds, 0) AS epoch_seconds,
       unit_claimed(c.config_id) AS claimed, unit_fits(c.config_id, $2) AS fits, r.source, r.entry_point,
       current_setting('cerebro.max_model_mb', true) AS max_model_mb
FROM configs c
JOIN workloads w USING (workload_id)
JOIN datasets d ON d.name = w.dataset
LEFT JOIN model_states s USING (config_id)
LEFT JOIN registered_models r ON r.name = w.model
WHERE c.config_id = $1
"""

_SHARD_SQL = """
SELECT x, y FROM dataset_buffers
WHERE dataset_id = $1 AND split = $2 AND ($3::int IS NULL OR segment = $3)
ORDER BY buffer_id
"""

_SAVE_STATE_SQL = """
INSERT INTO model_states AS s (config_id, state, visited_segments, epoch_rows, epoch_loss_sum, epoch_metric_sum,
                               epoch_seconds, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())
ON CONFLICT (config_id) DO UPDATE SET
    state = excluded.state, visited_segments = excluded.visited_segments, epoch_rows = excluded.epoch_rows,
    epoch_loss_sum = excluded.epoch_loss_sum, epoch_metric_sum = excluded.epoch_metric_sum,
    epoch_seconds = excluded.epoch_seconds, updated_at = excluded.updated_at
"""

_LOG_UNIT_SQL = """
INSERT INTO units (config_id, segment, epoch, started_at, finished_at, rows, train_loss, train_metric,
                   data_load_s, state_load_s, train_s, state_save_s, validation_s, backend_pid)
VALUES ($1, $2, $3, to_timestamp($4), clock_timestamp(), $5, $6, $7, $8, $9, $10, $11, $12, pg_backend_pid())
"""

_EPOCH_METRICS_SQL = """
INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric, seconds, finished_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp())
"""

# A user may have stopped the config while this unit trained: keep their status, unless
# this unit finished the config's last epoch (then there is nothing left to resume).
_FINISH_CONFIG_SQL = """
UPDATE configs SET
    epochs_done = $2,
    status = CASE WHEN status IN ('pending', 'running', 'stopped') AND $2 >= max_epochs THEN 'completed'
                  WHEN status = 'pending' THEN 'running'
                  ELSE status END,
    updated_at = now()
WHERE config_id = $1
"""


def shard(
    db: Database, gd: dict[str, Any], dataset_id: int, split: str, segment: int | None, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    cache: OrderedDict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = gd.setdefault(GD_SHARDS, OrderedDict())
    key = (dataset_id, split, segment)
    if key not in cache:
        rows = db.query(_SHARD_SQL, ["int4", "text", "int4"], [dataset_id, split, segment])
        cache[key] = (
            np.concatenate([packing.from_bytes(r["x"], shape) for r in rows]),
            np.concatenate([packing.from_bytes(r["y"], ()) for r in rows]),
        )
        while len(cache) > SHARD_CACHE_SIZE:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def _max_model_mb(setting: str | None) -> float:
    """The ``cerebro.max_model_mb`` setting (database, role or session level), or the default."""
    if not setting:
        return training.DEFAULT_MAX_MODEL_MB
    try:
        return float(setting)
    except ValueError:
        raise UnitError(f"cerebro.max_model_mb must be a number of megabytes, got {setting!r}") from None


def run_unit(db: Database, gd: dict[str, Any], config_id: int, segment: int) -> dict[str, Any]:
    """Train ``config_id`` for one pass over ``segment``'s shard and record the hop.

    Returns the unit's summary: epoch, rows, losses and the time spent per phase.
    """
    started = time.time()
    # Marks this transaction's config updates as the system's (the status guard lets them through).
    db.query("SELECT set_config('cerebro.internal', 'on', true)")
    rows = db.query(_UNIT_SQL, ["int4", "int4"], [config_id, segment])
    if not rows:
        raise UnitError(f"config {config_id} does not exist")
    unit = rows[0]
    if not unit["claimed"]:
        raise UnitError(f"config {config_id} is not claimed by this transaction; call claim_unit({segment}) first")
    if not unit["fits"]:
        raise UnitError(
            f"config {config_id} may not run on segment {segment}: segments visited this epoch "
            f"{unit['visited']}, dataset segments {unit['num_segments']}"
        )
    spec = training.ModelSpec.from_row(unit)
    shape = spec.input_shape
    epoch = unit["epochs_done"] + 1

    tick = time.perf_counter()
    x, y = shard(db, gd, unit["dataset_id"], "train", segment, shape)
    data_load = time.perf_counter() - tick

    tick = time.perf_counter()
    model = training.guarded_model(gd, spec, _max_model_mb(unit["max_model_mb"]))
    state = ModelState.decode(unit["state"]) if unit["state"] is not None else training.initial_state(gd, spec)
    training.restore(model, state)
    training.set_learning_rate(model, spec.params["lr"])
    state_load = time.perf_counter() - tick

    tick = time.perf_counter()
    loss, metric = training.train_pass(gd, model, x, y, spec.params["batch_size"], db.check_interrupts)
    train = time.perf_counter() - tick

    visited = [*unit["visited"], segment]
    epoch_rows = unit["epoch_rows"] + len(y)
    loss_sum = unit["epoch_loss_sum"] + loss * len(y)
    metric_sum = unit["epoch_metric_sum"] + metric * len(y)
    seconds = unit["epoch_seconds"] + (time.time() - started)
    epoch_done = len(visited) == unit["num_segments"]

    validation = None
    if epoch_done:
        tick = time.perf_counter()
        val_x, val_y = shard(db, gd, unit["dataset_id"], "validation", None, shape)
        val_loss, val_metric = training.evaluate(gd, model, val_x, val_y, EVALUATION_BATCH, db.check_interrupts)
        validation = time.perf_counter() - tick
        db.query(
            _EPOCH_METRICS_SQL,
            ["int4", "int4", "float8", "float8", "float8", "float8", "float8"],
            [
                config_id,
                epoch,
                loss_sum / epoch_rows,
                metric_sum / epoch_rows,
                val_loss,
                val_metric,
                seconds + validation,
            ],
        )

    tick = time.perf_counter()
    raw = training.capture(model).encode()
    if epoch_done:  # the next epoch starts with empty accumulators
        visited, epoch_rows, loss_sum, metric_sum, seconds = [], 0, 0.0, 0.0, 0.0
    db.query(
        _SAVE_STATE_SQL,
        ["int4", "bytea", "int4[]", "int8", "float8", "float8", "float8"],
        [config_id, raw, visited, epoch_rows, loss_sum, metric_sum, seconds],
    )
    state_save = time.perf_counter() - tick

    db.query(
        _LOG_UNIT_SQL,
        [
            "int4",
            "int4",
            "int4",
            "float8",
            "int4",
            "float8",
            "float8",
            "float8",
            "float8",
            "float8",
            "float8",
            "float8",
        ],
        [
            config_id,
            segment,
            epoch,
            started,
            len(y),
            loss,
            metric,
            data_load,
            state_load,
            train,
            state_save,
            validation,
        ],
    )
    epochs_done = unit["epochs_done"] + int(epoch_done)
    db.query(_FINISH_CONFIG_SQL, ["int4", "int4"], [config_id, epochs_done])
    if epoch_done:  # the workload's procedure observes the epoch (may prune or suggest configs)
        db.query("SELECT on_epoch_end($1, $2)", ["int4", "int4"], [config_id, epoch])
    db.query("SELECT finish_workload($1)", ["int4"], [unit["workload_id"]])
    db.query("SELECT pg_notify('cerebro_units', $1)", ["text"], [str(config_id)])
    return {
        "config_id": config_id,
        "segment": segment,
        "epoch": epoch,
        "epoch_done": epoch_done,
        "rows": len(y),
        "train_loss": loss,
        "train_metric": metric,
        "data_load_s": data_load,
        "state_load_s": state_load,
        "train_s": train,
        "state_save_s": state_save,
        "validation_s": validation,
    }
