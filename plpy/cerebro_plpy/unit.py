"""One sub-epoch of one config on one segment, committed as one hop, in three steps:

1. :func:`unit_context` (coordinator): what the claimed unit trains, and the config's state;
2. :func:`train_on_shard` (the segment that owns the shard): one pass from that state,
   plus validation on the epoch's last hop; returns the summary and the new state;
3. :func:`record_hop` (coordinator): state, progress, unit log and epoch metrics.

On one server :func:`run_unit` does all three in one call; across servers the
coordinator passes the context and state to the segment server and records what it
returns (``cerebro_db.backends``). Either way the same code trains on the same bytes,
so results are bit-identical.

The caller's transaction must hold the config's unit lock (``claim_unit`` takes
it); the scheduling decision is SQL's, this module only trains and records.
Order matters for user control: the ``configs`` row is updated last, so its row
lock is held for milliseconds at commit, never while training.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from cerebro_plpy import memory, packing, training
from cerebro_plpy.plpy_adapter import Database
from cerebro_plpy.state import ModelState

GD_SHARDS = "cerebro.shards"
#: Shards kept in memory per backend: the training shard and validation set of
#: the datasets in use. Datasets never change once prepared, so no invalidation.
SHARD_CACHE_SIZE = 4
EVALUATION_BATCH = memory.EVALUATION_BATCH

Arrays = tuple[np.ndarray, np.ndarray]


#: What record_hop copies from train_hop's summary into its own.
_SUMMARY_KEYS = ("rows", "train_loss", "train_metric", "data_load_s", "state_load_s", "train_s", "state_save_s")


class UnitError(RuntimeError):
    """A call that breaks the unit protocol (not claimed, not legal, incomplete hop)."""


# Both queries of a unit read the config, its workload, dataset and state, and whether this
# transaction claimed it and it may run on the segment ($2).
_UNIT_FROM = """
       unit_claimed(c.config_id) AS claimed, unit_fits(c.config_id, $2) AS fits
FROM configs c
JOIN workloads w USING (workload_id)
JOIN datasets d ON d.name = w.dataset
LEFT JOIN model_states s USING (config_id)
"""

# The context travels as JSON to the segment that trains: only what training needs.
_CONTEXT_SQL = f"""
SELECT c.config_id, c.params::text AS params, c.seed, c.epochs_done + 1 AS epoch, w.model,
       d.dataset_id, d.feature_shape, d.num_classes, d.num_segments, d.validation_rows, r.source, r.entry_point,
       cardinality(coalesce(s.visited_segments, '{{}}')) + 1 = d.num_segments AS epoch_done,
       training_memory_limit() AS max_training_mb, s.state,{_UNIT_FROM}
LEFT JOIN registered_models r ON r.name = w.model
WHERE c.config_id = $1
"""

# A unit starts when unit_context hands it out (right after its claim, in the same transaction).
# A session that ran an earlier unit still has the setting, reset to '' at that transaction's end.
_STARTED = "nullif(current_setting('cerebro.unit_started', true), '')::timestamptz"
_MARK_STARTED_SQL = "SELECT set_config('cerebro.unit_started', clock_timestamp()::text, true)"

_PROGRESS_SQL = f"""
SELECT c.epochs_done, c.workload_id, d.num_segments,
       coalesce(s.visited_segments, '{{}}') AS visited, coalesce(s.epoch_rows, 0) AS epoch_rows,
       coalesce(s.epoch_loss_sum, 0) AS epoch_loss_sum, coalesce(s.epoch_metric_sum, 0) AS epoch_metric_sum,
       coalesce(s.epoch_seconds, 0) AS epoch_seconds,
       extract(epoch FROM clock_timestamp() - {_STARTED}) AS unit_seconds,{_UNIT_FROM}
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

_LOG_UNIT_SQL = f"""
INSERT INTO units (config_id, segment, epoch, started_at, finished_at, rows, train_loss, train_metric,
                   data_load_s, state_load_s, train_s, state_save_s, validation_s, backend_pid)
VALUES ($1, $2, $3, {_STARTED}, clock_timestamp(), $4, $5, $6, $7, $8, $9, $10, $11, pg_backend_pid())
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
) -> Arrays:
    cache: OrderedDict[tuple[Any, ...], Arrays] = gd.setdefault(GD_SHARDS, OrderedDict())
    key = (dataset_id, split, segment)
    if key not in cache:
        rows = db.query(_SHARD_SQL, ["int4", "text", "int4"], [dataset_id, split, segment])
        if not rows:
            raise UnitError(f"no {split} buffers of dataset {dataset_id} here (segment {segment})")
        cache[key] = packing.from_buffers(((r["x"], r["y"]) for r in rows), shape)
        while len(cache) > SHARD_CACHE_SIZE:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


def _claimed_row(db: Database, sql: str, config_id: int, segment: int) -> dict[str, Any]:
    """The unit's row of ``sql``, after checking that this transaction claimed it and that it fits."""
    rows = db.query(sql, ["int4", "int4"], [config_id, segment])
    if not rows:
        raise UnitError(f"config {config_id} does not exist")
    row = rows[0]
    if not row["claimed"]:
        raise UnitError(f"config {config_id} is not claimed by this transaction; call claim_unit({segment}) first")
    if not row["fits"]:
        raise UnitError(f"config {config_id} may not run on segment {segment}: it visited it this epoch already")
    return row


def unit_context(db: Database, config_id: int, segment: int) -> tuple[dict[str, Any], bytes | None]:
    """What the claimed unit of ``config_id`` on ``segment`` trains (JSON-able), and the config's state."""
    row = _claimed_row(db, _CONTEXT_SQL, config_id, segment)
    db.query(_MARK_STARTED_SQL)
    state = row.pop("state")
    for key in ("claimed", "fits"):
        del row[key]
    row["segment"] = segment
    # The scheduler's setting: a user's own SET only reaches the check at launch.
    row["max_training_mb"] = memory.limit_mb(row["max_training_mb"])
    return row, state


def train_hop(
    gd: dict[str, Any],
    context: dict[str, Any],
    state: bytes | None,
    train: Arrays,
    validation: Arrays | None,
    check_interrupts: Callable[[], None],
) -> tuple[dict[str, Any], bytes]:
    """One pass over ``train`` from ``state`` (None: the config's initial state), then, on the
    epoch's last hop, an evaluation on ``validation``. Returns the summary and the new state."""
    if context["epoch_done"] and validation is None:
        raise UnitError(f"the last hop of epoch {context['epoch']} needs the validation set")
    spec = training.ModelSpec.from_row(context)

    x, y = train
    tick = time.perf_counter()
    model = training.guarded_model(gd, spec, context["max_training_mb"], len(y), context["validation_rows"])
    training.restore(model, ModelState.decode(state) if state is not None else training.initial_state(gd, spec))
    training.set_learning_rate(model, spec.params["lr"])
    state_load = time.perf_counter() - tick

    tick = time.perf_counter()
    loss, metric = training.train_pass(gd, model, x, y, spec.params["batch_size"], check_interrupts)
    summary: dict[str, Any] = {
        "rows": len(y),
        "train_loss": loss,
        "train_metric": metric,
        "state_load_s": state_load,
        "train_s": time.perf_counter() - tick,
        "validation_s": None,
    }
    if context["epoch_done"]:
        assert validation is not None
        tick = time.perf_counter()
        val_x, val_y = validation
        summary["val_loss"], summary["val_metric"] = training.evaluate(
            gd, model, val_x, val_y, EVALUATION_BATCH, check_interrupts
        )
        summary["validation_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    new_state = training.capture(model).encode()
    summary["state_save_s"] = time.perf_counter() - tick
    return summary, new_state


def train_on_shard(
    db: Database, gd: dict[str, Any], context: dict[str, Any], state: bytes | None
) -> tuple[dict[str, Any], bytes]:
    """:func:`train_hop` on this server's shard of the context's segment (and its validation set)."""
    shape = tuple(context["feature_shape"])
    tick = time.perf_counter()
    train = shard(db, gd, context["dataset_id"], "train", context["segment"], shape)
    validation = shard(db, gd, context["dataset_id"], "validation", None, shape) if context["epoch_done"] else None
    data_load = time.perf_counter() - tick
    summary, new_state = train_hop(gd, context, state, train, validation, db.check_interrupts)
    return {**summary, "data_load_s": data_load}, new_state


def record_hop(db: Database, config_id: int, segment: int, summary: dict[str, Any], state: bytes) -> dict[str, Any]:
    """Commit the hop :func:`train_hop` made (in the transaction that claimed it); returns the unit's summary."""
    # Marks this transaction's config updates as the system's (the status guard lets them through).
    db.query("SELECT set_config('cerebro.internal', 'on', true)")
    progress = _claimed_row(db, _PROGRESS_SQL, config_id, segment)
    if progress["unit_seconds"] is None:
        raise UnitError(f"record_hop of config {config_id} needs unit_context first, in the same transaction")
    epoch = progress["epochs_done"] + 1
    visited = [*progress["visited"], segment]
    epoch_done = len(visited) == progress["num_segments"]
    if epoch_done and summary.get("val_loss") is None:
        raise UnitError(f"the last hop of epoch {epoch} of config {config_id} came back without validation metrics")
    rows = summary["rows"]
    epoch_rows = progress["epoch_rows"] + rows
    loss_sum = progress["epoch_loss_sum"] + summary["train_loss"] * rows
    metric_sum = progress["epoch_metric_sum"] + summary["train_metric"] * rows
    seconds = progress["epoch_seconds"] + float(progress["unit_seconds"])

    if epoch_done:
        db.query(
            _EPOCH_METRICS_SQL,
            ["int4", "int4", "float8", "float8", "float8", "float8", "float8"],
            [
                config_id,
                epoch,
                loss_sum / epoch_rows,
                metric_sum / epoch_rows,
                summary["val_loss"],
                summary["val_metric"],
                seconds,
            ],
        )
        # The next epoch starts with empty accumulators.
        visited, epoch_rows, loss_sum, metric_sum, seconds = [], 0, 0.0, 0.0, 0.0
    db.query(
        _SAVE_STATE_SQL,
        ["int4", "bytea", "int4[]", "int8", "float8", "float8", "float8"],
        [config_id, state, visited, epoch_rows, loss_sum, metric_sum, seconds],
    )
    db.query(
        _LOG_UNIT_SQL,
        ["int4", "int4", "int4", "int4", "float8", "float8", "float8", "float8", "float8", "float8", "float8"],
        [
            config_id,
            segment,
            epoch,
            rows,
            summary["train_loss"],
            summary["train_metric"],
            summary["data_load_s"],
            summary["state_load_s"],
            summary["train_s"],
            summary["state_save_s"],
            summary["validation_s"],
        ],
    )
    db.query(_FINISH_CONFIG_SQL, ["int4", "int4"], [config_id, progress["epochs_done"] + int(epoch_done)])
    if epoch_done:  # the workload's procedure observes the epoch (may prune or suggest configs)
        db.query("SELECT on_epoch_end($1, $2)", ["int4", "int4"], [config_id, epoch])
    db.query("SELECT finish_workload($1)", ["int4"], [progress["workload_id"]])
    return {
        "config_id": config_id,
        "segment": segment,
        "epoch": epoch,
        "epoch_done": epoch_done,
        **{key: summary[key] for key in _SUMMARY_KEYS},
        "validation_s": summary["validation_s"],
    }


def run_unit(db: Database, gd: dict[str, Any], config_id: int, segment: int) -> dict[str, Any]:
    """Train ``config_id`` for one pass over ``segment``'s shard on this server and record the hop."""
    context, state = unit_context(db, config_id, segment)
    summary, new_state = train_on_shard(db, gd, context, state)
    return record_hop(db, config_id, segment, summary, new_state)
