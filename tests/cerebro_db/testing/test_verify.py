"""cerebro_db.testing.verify: each check passes a sound input and fails a corrupted one.

The database checks read rows the test writes itself, inside a transaction that rolls back, so
nothing is left for other tests (or a scheduler) to see. ``stranded`` is fed stranded configs and
workloads in tests/sql/test_settle.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest

from cerebro_db.testing import verify
from cerebro_plpy import training
from cerebro_plpy.state import ModelState
from tests.conftest import one, unique

Session = psycopg.Connection[Any]
EPOCHS = 2
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def state(**meta: Any) -> ModelState:
    return ModelState(
        [np.array([[0.0, 1.5], [-2.0, 3.0]], np.float32), np.array([0.25, 0.0], np.float32)],
        [np.array(4, np.int64), np.array([0.0, 0.0], np.float32)],
        meta,
    )


def test_a_state_equals_itself_and_its_round_trip() -> None:
    a = state(epoch=1)
    assert verify.state_differences(a, state(epoch=1)) == []
    assert verify.states_equal(a, ModelState.decode(a.encode()))
    assert verify.states_equal(state(a=1, b=2), state(b=2, a=1))  # the meta's key order is no difference
    nan, same_nan = state(), state()
    for s in (nan, same_nan):
        s.model_variables[0][0, 0] = np.nan
    assert verify.states_equal(nan, same_nan)  # the same bytes, though NaN != NaN


def negated_zero(s: ModelState) -> None:
    s.model_variables[1][1] = -0.0


def other_nan_payload(s: ModelState) -> None:
    s.model_variables[0][0, 0] = np.nan
    s.model_variables[0].view(np.uint32)[0, 1] = 0x7FC00001  # a NaN too, with another payload


def one_ulp(s: ModelState) -> None:
    s.optimizer_variables[1][0] = np.nextafter(np.float32(0), np.float32(1))


def wider_dtype(s: ModelState) -> None:
    s.model_variables[1] = s.model_variables[1].astype(np.float64)


def other_byte_order(s: ModelState) -> None:
    s.model_variables[1] = s.model_variables[1].astype(">f4")


def other_shape(s: ModelState) -> None:
    s.model_variables[0] = s.model_variables[0].reshape(4, 1)


def moved_to_the_optimizer(s: ModelState) -> None:
    s.optimizer_variables.insert(0, s.model_variables.pop())


def dropped_a_variable(s: ModelState) -> None:
    s.optimizer_variables.pop()


def float_meta(s: ModelState) -> None:
    s.meta["epoch"] = 1.0


def bool_meta(s: ModelState) -> None:
    s.meta["epoch"] = True


@pytest.mark.parametrize(
    ("corrupt", "difference"),
    [
        (negated_zero, "model variable 1: 1 of 2 values differ in their bytes"),
        (other_nan_payload, "model variable 0: 2 of 4 values differ in their bytes"),
        (one_ulp, "optimizer variable 1: 1 of 2 values differ in their bytes"),
        (wider_dtype, "model variable 1: <f4[2] != <f8[2]"),
        (other_byte_order, "model variable 1: <f4[2] != >f4[2]"),
        (other_shape, "model variable 0: <f4[2, 2] != <f4[4, 1]"),
        (moved_to_the_optimizer, "2 model variables != 1"),
        (dropped_a_variable, "2 optimizer variables != 1"),
        (float_meta, "meta {'epoch': 1} != {'epoch': 1.0}"),
        (bool_meta, "meta {'epoch': 1} != {'epoch': True}"),
    ],
)
def test_states_differ_in_any_byte_the_split_or_the_meta(corrupt: Any, difference: str) -> None:
    corrupted = state(epoch=1)
    corrupt(corrupted)
    assert difference in verify.state_differences(state(epoch=1), corrupted)
    assert not verify.states_equal(state(epoch=1), corrupted)
    assert not verify.states_equal(corrupted, state(epoch=1))


@pytest.fixture
def tx(conn: Session) -> Iterator[Session]:
    """The connection inside a transaction that rolls back, with the system's write access to configs."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL cerebro.internal = on")
        yield conn


def new_config(tx: Session, dataset: str) -> int:
    """The one config of a new 2-epoch mlp workload on ``dataset`` (uncommitted: no scheduler sees it)."""
    workload = one(
        tx,
        "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.01], \"hidden_units\": [4]}', max_epochs => %s)",
        dataset,
        EPOCHS,
    )
    config_id: int = one(tx, "SELECT config_id FROM configs WHERE workload_id = %s", workload)
    return config_id


@pytest.fixture
def config(tx: Session, blobs_2seg: str) -> int:
    """A config on 2 segments, one shard each."""
    return new_config(tx, blobs_2seg)


@pytest.fixture
def replicated_config(tx: Session, blobs_2seg: str) -> int:
    """A config on 2 segments with replication 2: one shard, which both segments hold."""
    dataset = unique("blobs_r2")
    tx.execute(
        "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3,f4,f5}', validation_fraction => 0.25,"
        " replication => 2)",
        [dataset, blobs_2seg],  # the table has the dataset's name
    )
    return new_config(tx, dataset)


def workload_of(conn: Session, config: int) -> int:
    workload: int = one(conn, "SELECT workload_id FROM configs WHERE config_id = %s", config)
    return workload


def add_units(conn: Session, config: int, units: list[tuple[int, int, int, int]]) -> None:
    """Unit log rows ``(epoch, segment, started, finished)``, times in minutes after T0."""
    for epoch, segment, started, finished in units:
        conn.execute(
            "INSERT INTO units (config_id, epoch, segment, started_at, finished_at, rows, train_loss, train_metric,"
            " data_load_s, state_load_s, train_s, state_save_s, backend_pid) VALUES (%s, %s, %s, %s, %s, 1, 1, 0.5,"
            " 0, 0, 0, 0, 0)",
            [config, epoch, segment, T0 + timedelta(minutes=started), T0 + timedelta(minutes=finished)],
        )


#: Epoch 1 done on segments 0 then 1, epoch 2 in progress on segment 1 (epochs_done = 1).
SOUND_LOG = [(1, 0, 0, 1), (1, 1, 1, 2), (2, 1, 2, 3)]


@pytest.mark.parametrize(
    ("log", "violation"),
    [
        ([(1, 0, 0, 1), (2, 1, 2, 3)], "epoch 1 visited shards [0] (shards: [0, 1])"),
        ([(1, 0, 0, 1), (1, 1, 1, 2), (1, 0, 2, 3)], "epoch 1 visited shards [0, 0, 1]"),
        ([*SOUND_LOG, (2, 1, 3, 4)], "epoch 2 visited shards [1, 1]"),
        ([(1, 0, 0, 1), (1, 1, 1, 2), (2, 2, 2, 3)], "epoch 2 ran on segment 2, which holds no shard"),
        ([*SOUND_LOG, (3, 0, 3, 4)], "has units in epoch 3, beyond its progress"),
        ([(1, 0, 0, 2), (1, 1, 1, 3), (2, 1, 3, 4)], "overlap"),
    ],
    ids=["segment missed", "segment twice", "twice in progress", "foreign segment", "beyond progress", "overlap"],
)
def test_mop_violations_finds_a_corrupted_unit_log(
    tx: Session, config: int, log: list[tuple[int, int, int, int]], violation: str
) -> None:
    workload = workload_of(tx, config)
    tx.execute("UPDATE configs SET epochs_done = 1, status = 'running' WHERE config_id = %s", [config])
    add_units(tx, config, SOUND_LOG)
    assert verify.mop_violations(tx, workload) == []
    tx.execute("DELETE FROM units WHERE config_id = %s", [config])
    add_units(tx, config, log)
    problems = verify.mop_violations(tx, workload)
    assert len(problems) == 1 and f"config {config} " in problems[0] and violation in problems[0], problems


def test_mop_violations_lets_two_configs_train_at_once(tx: Session, config: int) -> None:
    workload = workload_of(tx, config)
    other = one(tx, "SELECT clone_config(%s, '{\"lr\": 0.02}')", config)
    tx.execute("UPDATE configs SET epochs_done = 1, status = 'running' WHERE workload_id = %s", [workload])
    add_units(tx, config, SOUND_LOG)
    add_units(tx, other, [(1, 1, 0, 1), (1, 0, 1, 2), (2, 0, 2, 3)])  # the other segment, at the same times
    assert verify.mop_violations(tx, workload) == []


def test_mop_violations_keys_on_the_shard_with_replication(tx: Session, replicated_config: int) -> None:
    config, workload = replicated_config, workload_of(tx, replicated_config)
    tx.execute("UPDATE configs SET epochs_done = 1, status = 'running' WHERE config_id = %s", [config])
    add_units(tx, config, [(1, 1, 0, 1), (2, 0, 1, 2)])  # the one shard, on either of its segments
    assert verify.mop_violations(tx, workload) == []
    tx.execute("DELETE FROM units WHERE config_id = %s", [config])
    add_units(tx, config, [(1, 0, 0, 1), (1, 1, 1, 2)])  # two segments, but the same shard twice in epoch 1
    problems = verify.mop_violations(tx, workload)
    assert problems == [f"config {config} epoch 1 visited shards [0, 0] (shards: [0])"], problems


def test_epochs_lost_counts_planned_epochs_without_metrics(tx: Session, config: int) -> None:
    workload = workload_of(tx, config)
    assert verify.epochs_lost(tx, workload) == EPOCHS
    for epoch in range(1, EPOCHS + 1):
        tx.execute(
            "INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric, seconds)"
            " VALUES (%s, %s, 1, 0.5, 1, 0.5, 1)",
            [config, epoch],
        )
    assert verify.epochs_lost(tx, workload) == 0
    tx.execute("DELETE FROM epoch_metrics WHERE config_id = %s AND epoch = 1", [config])
    assert verify.epochs_lost(tx, workload) == 1


def test_final_state_of_a_config_without_one_says_so(tx: Session, config: int) -> None:
    with pytest.raises(ValueError, match=f"config {config} has no state"):
        verify.final_state(tx, config)


def test_replay_follows_the_unit_log_from_the_seeded_start(tx: Session, config: int) -> None:
    params, seed, shape, classes = one(
        tx,
        "SELECT c.params, c.seed, d.feature_shape, d.num_classes FROM configs c JOIN workloads w USING (workload_id)"
        " JOIN datasets d ON d.name = w.dataset WHERE c.config_id = %s",
        config,
    )
    start = training.initial_state({}, training.ModelSpec("mlp", params, tuple(shape), classes, seed))
    assert verify.states_equal(verify.replay(tx, config), start)  # no unit yet

    add_units(tx, config, [(1, 0, 0, 1), (1, 1, 1, 2)])
    forward = verify.replay(tx, config)
    assert not verify.states_equal(forward, start)
    assert verify.states_equal(verify.replay(tx, config), forward)  # deterministic
    tx.execute("UPDATE units SET started_at = started_at + interval '10 minutes' WHERE segment = 0")
    assert not verify.states_equal(verify.replay(tx, config), forward)  # the other order is another state


def test_replay_of_an_unknown_config_says_so(conn: Session) -> None:
    with pytest.raises(ValueError, match="config 2147483647 does not exist"):
        verify.replay(conn, 2147483647)


def test_replay_refuses_a_tensorflow_already_running_with_other_thread_counts(dsn: str) -> None:
    """In a fresh process that starts TensorFlow with its default threads first: the replay says so,
    before it reads anything (the config does not even exist), instead of replaying with other threads."""
    child = textwrap.dedent(
        """
        import sys
        import psycopg
        import tensorflow as tf
        from cerebro_db.testing import verify
        from cerebro_plpy import training

        tf.constant(1.0) + 1  # the runtime starts with TensorFlow's default thread counts
        with psycopg.connect(sys.argv[1]) as conn:
            try:
                verify.replay(conn, 2147483647)
            except training.ThreadSettingError as error:
                print(error)
                sys.exit(3)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child, dsn],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "TensorFlow already runs in this process with intra/inter-op threads 0/0" in result.stdout
    assert f"not {training.THREADS}/{training.THREADS}" in result.stdout
