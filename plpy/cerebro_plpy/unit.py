"""Training one hop: one pass of a config over one segment's shard, from the config's state.

A unit walks (``cerebro_db/sql/10_unit/40_hop.sql``): ``claim_unit`` decides what runs,
``unit_context`` hands out what the claimed unit trains and the config's state,
:func:`train_hop` trains where the shard is, and ``record_hop`` commits the new state,
progress, unit log and epoch metrics, all in the transaction that claimed the unit.
This module writes nothing and decides nothing: the same code trains on the same bytes
on every backend, so results are bit-identical wherever a hop runs. The shard comes from
the caller (:mod:`cerebro_plpy.shards` on a PostgreSQL server, the aggregate's rows on
Greenplum).
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from cerebro_plpy import memory, training
from cerebro_plpy.state import ModelState

Arrays = tuple[np.ndarray, np.ndarray]
#: What saving the new state gives: its bytes (to hand back to a coordinator) or its size (written to a file).
Saved = TypeVar("Saved")


class UnitError(RuntimeError):
    """A hop that cannot train: its shard or validation set is not here."""


@dataclass(frozen=True)
class Shard:
    """What one hop trains on: its segment's shard, and on the epoch's last hop the validation set."""

    train: Arrays
    validation: Arrays | None
    #: Seconds it took to have the arrays (logged as the unit's ``data_load_s``).
    load_s: float


def train_hop(
    gd: dict[str, Any],
    context: dict[str, Any],
    state: bytes | mmap.mmap | None,
    shard: Shard,
    check_interrupts: Callable[[], None],
    save: Callable[[ModelState], Saved],
) -> tuple[dict[str, Any], Saved]:
    """One pass over ``shard`` from ``state`` (None: the config's initial state), then, on the
    epoch's last hop (``context["epoch_done"]``), an evaluation on its validation set.

    ``context`` is ``unit_context``'s. Returns the hop's summary (what ``record_hop`` logs)
    and what ``save`` made of the new state (its encoding, or its file's size).
    """
    if context["epoch_done"] and shard.validation is None:
        raise UnitError(f"the last hop of epoch {context['epoch']} needs the validation set")
    spec = training.ModelSpec.from_row(context)
    # The coordinator's setting (unit_context reads it in the scheduler's session).
    max_training_mb = memory.limit_mb(context["max_training_mb"])

    x, y = shard.train
    tick = time.perf_counter()
    model = training.guarded_model(gd, spec, max_training_mb, len(y), context["validation_rows"])
    # restore only reads the arrays: views of the state's bytes, no copy
    restored = ModelState.decode(state, copy=False) if state is not None else training.initial_state(gd, spec)
    training.restore(model, restored)
    training.set_learning_rate(model, spec.params["lr"])
    state_load = time.perf_counter() - tick

    tick = time.perf_counter()
    loss, metric = training.train_pass(gd, model, x, y, spec.params["batch_size"], check_interrupts)
    summary: dict[str, Any] = {
        "rows": len(y),
        "train_loss": loss,
        "train_metric": metric,
        "data_load_s": shard.load_s,
        "state_load_s": state_load,
        "train_s": time.perf_counter() - tick,
        "validation_s": None,
    }
    if context["epoch_done"]:
        assert shard.validation is not None  # checked above
        tick = time.perf_counter()
        val_x, val_y = shard.validation
        summary["val_loss"], summary["val_metric"] = training.evaluate(
            gd, model, val_x, val_y, memory.EVALUATION_BATCH, check_interrupts
        )
        summary["validation_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    saved = save(training.capture(model))
    summary["state_save_s"] = time.perf_counter() - tick
    return summary, saved
