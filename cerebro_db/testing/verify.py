"""Checks of a finished workload against what the design promises (used by tests and benchmarks).

- one ``epoch_metrics`` row per planned epoch of every config (:func:`epochs_lost`);
- the MOP invariants over the committed unit log (:func:`mop_violations`);
- bit-identical state to a plain-Keras replay of the same hops in the same order
  (:func:`replay`, :func:`states_equal`, :func:`state_differences`): state is committed per hop,
  so a run that was interrupted, resumed or disturbed by faults must end exactly where an
  undisturbed one does;
- nothing left ``running`` with nothing to run, in the whole database (:func:`stranded`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

import numpy as np
import psycopg

from cerebro_plpy import packing, training
from cerebro_plpy.state import ModelState

Connection = psycopg.Connection[Any]


def epochs_lost(conn: Connection, workload_id: int) -> int:
    """Planned (config, epoch) pairs with no epoch_metrics row (the primary key rules out two)."""
    row = conn.execute(
        "SELECT count(*) FROM configs c CROSS JOIN LATERAL generate_series(1, c.max_epochs) e(epoch)"
        " WHERE c.workload_id = %s"
        " AND NOT EXISTS (SELECT 1 FROM epoch_metrics m WHERE m.config_id = c.config_id AND m.epoch = e.epoch)",
        [workload_id],
    ).fetchone()
    assert row is not None
    lost: int = row[0]
    return lost


def stranded(conn: Connection) -> list[str]:
    """Configs pending or running that can never get a unit (``unrunnable_configs()``: e.g. no epoch
    left, a dataset over unregistered segments), and workloads running while none of their configs
    can get one. Anything here would keep ``cerebro-db wait`` waiting for ever."""
    problems = [
        f"config {config} of workload {workload} is {status} but can never get a unit: {reason}"
        for config, workload, status, reason in conn.execute(
            "SELECT u.config_id, u.workload_id, c.status, u.reason"
            " FROM unrunnable_configs() u JOIN configs c USING (config_id) ORDER BY 1"
        )
    ]
    problems += [
        f"workload {workload} is running, but none of its configs can get a unit"
        for (workload,) in conn.execute(
            "SELECT w.workload_id FROM workloads w WHERE w.status = 'running' AND NOT EXISTS"
            " (SELECT 1 FROM configs c WHERE c.workload_id = w.workload_id AND c.status IN ('pending', 'running')"
            "  AND c.config_id NOT IN (SELECT u.config_id FROM unrunnable_configs() u))"
            " ORDER BY 1"
        )
    ]
    return problems


def mop_violations(conn: Connection, workload_id: int) -> list[str]:
    """Breaches of the MOP invariants in the workload's committed unit log.

    Each finished epoch of a config visited every shard of its dataset exactly once (a unit
    visits the shard its segment holds: with partial replication, on any of the shard's
    segments); the epoch in progress (of a stopped or failed config) visited none twice and no
    other; a config's units never overlap in time.
    """
    shards = list(range(_shard_count(conn, workload_id)))
    epochs_done = dict(
        conn.execute("SELECT config_id, epochs_done FROM configs WHERE workload_id = %s", [workload_id]).fetchall()
    )
    visits: dict[tuple[int, int], list[int]] = defaultdict(list)
    spans: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    problems = []
    for config, epoch, segment, shard, started, finished in conn.execute(
        "SELECT u.config_id, u.epoch, u.segment, segment_shard(u.segment, d.num_segments, d.replication),"
        " u.started_at, u.finished_at FROM units u JOIN configs c USING (config_id) JOIN workloads w USING"
        " (workload_id) JOIN datasets d ON d.name = w.dataset WHERE c.workload_id = %s ORDER BY u.started_at",
        [workload_id],
    ):
        if shard is None:
            problems.append(f"config {config} epoch {epoch} ran on segment {segment}, which holds no shard of its data")
        else:
            visits[(config, epoch)].append(shard)
        spans[config].append((started, finished))
    for config, done in epochs_done.items():
        for epoch in range(1, done + 2):
            seen = sorted(visits.pop((config, epoch), []))
            finished_epoch = epoch <= done
            if (finished_epoch and seen != shards) or len(set(seen)) != len(seen) or not set(seen) <= set(shards):
                problems.append(f"config {config} epoch {epoch} visited shards {seen} (shards: {shards})")
    problems += [f"config {config} has units in epoch {epoch}, beyond its progress" for config, epoch in visits]
    problems += [
        f"units of config {config} overlap"
        for config, intervals in spans.items()
        if any(before[1] > after[0] for before, after in zip(intervals, intervals[1:], strict=False))
    ]
    return problems


def _shard_count(conn: Connection, workload_id: int) -> int:
    row = conn.execute(
        "SELECT d.num_segments / d.replication FROM workloads w JOIN datasets d ON d.name = w.dataset"
        " WHERE w.workload_id = %s",
        [workload_id],
    ).fetchone()
    return int(row[0]) if row else 0


def final_state(conn: Connection, config_id: int) -> ModelState:
    row = conn.execute("SELECT stored_state(%s)", [config_id]).fetchone()
    if row is None or row[0] is None:
        raise ValueError(f"config {config_id} has no state")
    return ModelState.decode(row[0])


def replay(conn: Connection, config_id: int) -> ModelState:
    """The state an undisturbed run reaches: plain Keras, one pass per committed hop, in the same order.

    In this process, with the one intra/inter-op thread the database's backends train with:
    a process whose TensorFlow already runs with other thread counts raises
    :class:`~cerebro_plpy.training.ThreadSettingError` before anything is read or trained.
    """
    gd: dict[str, Any] = {}
    training.tensorflow(gd)
    row = conn.execute(
        "SELECT w.model, c.params, c.seed, d.feature_shape, d.num_classes, d.dataset_id FROM configs c"
        " JOIN workloads w USING (workload_id) JOIN datasets d ON d.name = w.dataset WHERE c.config_id = %s",
        [config_id],
    ).fetchone()
    if row is None:
        raise ValueError(f"config {config_id} does not exist (or its dataset is gone)")
    model_name, params, seed, shape, classes, dataset_id = row
    shards: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = defaultdict(lambda: ([], []))
    for shard, x, y in conn.execute(  # a buffer's segment column is its shard's id
        "SELECT segment, x, y FROM dataset_buffers WHERE dataset_id = %s AND split = 'train' ORDER BY buffer_id",
        [dataset_id],
    ):
        shards[shard][0].append(packing.from_bytes(x, tuple(shape)))
        shards[shard][1].append(packing.from_bytes(y, ()))
    model = training.build_compiled(gd, training.ModelSpec(model_name, params, tuple(shape), classes, seed))
    for (shard,) in conn.execute(
        "SELECT segment_shard(u.segment, d.num_segments, d.replication) FROM units u"
        " JOIN configs c USING (config_id) JOIN workloads w USING (workload_id) JOIN datasets d ON d.name = w.dataset"
        " WHERE u.config_id = %s ORDER BY u.epoch, u.started_at",
        [config_id],
    ):
        xs, ys = shards[shard]
        training.train_pass(gd, model, np.concatenate(xs), np.concatenate(ys), params["batch_size"], lambda: None)
    return training.capture(model)


def state_differences(a: ModelState, b: ModelState) -> list[str]:
    """How two states differ, byte for byte; empty when they are the same state.

    The model/optimizer split counts (a variable moved from one list to the other is a
    difference), then each array's dtype (byte order included), shape and bytes: -0.0 and 0.0,
    or two NaNs with different payloads, differ, as they would change what training does next.
    The meta is compared as JSON (so 1 and 1.0, or True and 1, differ; key order does not).
    """
    problems = []
    if json.dumps(a.meta, sort_keys=True) != json.dumps(b.meta, sort_keys=True):
        problems.append(f"meta {a.meta!r} != {b.meta!r}")
    for part, ours, theirs in (
        ("model", a.model_variables, b.model_variables),
        ("optimizer", a.optimizer_variables, b.optimizer_variables),
    ):
        if len(ours) != len(theirs):
            problems.append(f"{len(ours)} {part} variables != {len(theirs)}")
            continue
        for i, (x, y) in enumerate(zip(ours, theirs, strict=True)):
            if x.dtype != y.dtype or x.shape != y.shape:
                problems.append(f"{part} variable {i}: {x.dtype.str}{list(x.shape)} != {y.dtype.str}{list(y.shape)}")
            elif x.tobytes() != y.tobytes():
                differing = _values_differing(x, y)
                problems.append(f"{part} variable {i}: {differing} of {x.size} values differ in their bytes")
    return problems


def _values_differing(x: np.ndarray, y: np.ndarray) -> int:
    """Elements of two arrays of one dtype and shape whose bytes differ."""
    width = x.dtype.itemsize
    ours, theirs = (np.frombuffer(v.tobytes(), np.uint8).reshape(-1, width) for v in (x, y))
    return int(np.count_nonzero((ours != theirs).any(axis=1)))


def states_equal(a: ModelState, b: ModelState) -> bool:
    """The same state byte for byte (:func:`state_differences` says where two differ)."""
    return not state_differences(a, b)
