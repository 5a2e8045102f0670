"""cerebro_plpy.greenplum and entry.greenplum_hop: the segment side of a Greenplum unit, without a server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from cerebro_plpy import entry, greenplum, packing
from cerebro_plpy.greenplum import Arrays
from cerebro_plpy.state import ModelState
from cerebro_plpy.training import TrainingError
from cerebro_plpy.unit import Shard


class FakePlpy:
    """Answers the validation query with ``validation`` rows and counts how often it ran."""

    def __init__(self, validation: list[dict[str, bytes]]) -> None:
        self.validation = validation
        self.queries: list[tuple[str, list[Any]]] = []

    def prepare(self, query: str, types: list[str]) -> str:
        return query

    def execute(self, plan: str, args: list[Any]) -> list[dict[str, bytes]]:
        self.queries.append((plan, args))
        return self.validation


class FakeTrain:
    """Stands in for unit.train_hop: records its arguments, returns a summary and a new state."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[dict[str, Any], bytes | None, Arrays, Arrays | None]] = []

    def __call__(
        self,
        gd: dict[str, Any],
        context: dict[str, Any],
        state: bytes | None,
        shard: Shard,
        check_interrupts: Callable[[], None],
        save: Callable[[ModelState], bytes],
    ) -> tuple[dict[str, Any], bytes]:
        if self.error:
            raise self.error
        self.calls.append((context, state, shard.train, shard.validation))
        return {"rows": len(shard.train[1]), "data_load_s": shard.load_s}, b"new state"


def buffer(first: float, rows: int) -> tuple[bytes, bytes]:
    """``rows`` examples of 2 features counting up from ``first``, labels 0, 1, 0, ..."""
    x = np.arange(first, first + 2 * rows, dtype=np.float32).reshape(rows, 2)
    return packing.to_bytes(x), packing.to_bytes(np.arange(rows, dtype=np.float32) % 2)


VALIDATION = [dict(zip(("x", "y"), buffer(100, 3), strict=True))]


def context(*, epoch_done: bool, dataset_id: int = 7) -> str:
    return json.dumps({"dataset_id": dataset_id, "feature_shape": [2], "epoch_done": epoch_done})


def hop(gd: dict[str, Any], ctx: str, state: bytes | None, buffers: list[tuple[bytes, bytes]]) -> None:
    """What the aggregate does with one group: the transition function once per buffer."""
    collected = 0
    for x, y in buffers:
        collected = greenplum.collect(gd, collected, ctx, state, x, y)
    assert collected == len(buffers)


def test_a_mid_epoch_hop_trains_on_the_buffers_in_order_without_validation() -> None:
    gd: dict[str, Any] = {}
    plpy, train = FakePlpy(VALIDATION), FakeTrain()
    hop(gd, context(epoch_done=False), b"old", [buffer(0, 2), buffer(4, 1)])
    outcome = entry.greenplum_hop(plpy, gd, train)
    (ctx, state, (x, y), validation), *_ = train.calls
    assert state == b"old" and ctx["dataset_id"] == 7
    np.testing.assert_array_equal(x, np.arange(6, dtype=np.float32).reshape(3, 2))
    np.testing.assert_array_equal(y, [0, 1, 0])
    assert validation is None and plpy.queries == []
    summary = json.loads(outcome["outcome"])["result"]
    assert summary["rows"] == 3 and summary["data_load_s"] >= 0  # record_hop logs the load time
    assert outcome["state"] == b"new state"
    assert greenplum.GD_HOP not in gd


def test_the_epochs_last_hop_evaluates_on_the_replicated_validation_set_read_once() -> None:
    gd: dict[str, Any] = {}
    plpy, train = FakePlpy(VALIDATION), FakeTrain()
    for _ in range(2):
        hop(gd, context(epoch_done=True), None, [buffer(0, 2)])
        entry.greenplum_hop(plpy, gd, train)
    assert plpy.queries == [(greenplum._VALIDATION_SQL, [7])]
    validation = train.calls[1][3]
    assert validation is not None
    np.testing.assert_array_equal(validation[0], np.arange(100, 106, dtype=np.float32).reshape(3, 2))
    hop(gd, context(epoch_done=True, dataset_id=8), None, [buffer(0, 2)])
    entry.greenplum_hop(plpy, gd, train)
    assert [args for _, args in plpy.queries] == [[7], [8]]


def test_a_new_hop_drops_what_a_failed_one_collected() -> None:
    gd: dict[str, Any] = {}
    hop(gd, context(epoch_done=False), b"stale", [buffer(50, 4)])  # its statement failed before the final function
    hop(gd, context(epoch_done=False), b"old", [buffer(0, 1)])
    train = FakeTrain()
    entry.greenplum_hop(FakePlpy([]), gd, train)
    (_, state, (x, _), _), *_ = train.calls
    assert state == b"old" and x.shape == (1, 2)


def test_a_configs_own_failure_comes_back_as_an_error_outcome_without_a_state() -> None:
    gd: dict[str, Any] = {}
    hop(gd, context(epoch_done=False), b"old", [buffer(0, 1)])
    outcome = entry.greenplum_hop(FakePlpy([]), gd, FakeTrain(TrainingError("loss is NaN")))
    assert outcome["state"] is None
    assert json.loads(outcome["outcome"]) == {
        "error": "loss is NaN",
        "hint": "the config failed; try other hyper-parameters",
    }
