"""Hand-written learning curves that make the suggestions' rules fire, shared by the SQL and dashboard tests."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg import sql

from tests.conftest import one

Session = psycopg.Connection[Any]
#: (train_loss, train_metric, val_loss, val_metric) of one epoch.
Epoch = tuple[float, float, float, float]

# Healthy curves: losses fall, validation a little behind training, all within noise of each other.
HEALTHY: list[Epoch] = [
    (1.0, 0.50, 1.05, 0.48),
    (0.8, 0.60, 0.85, 0.58),
    (0.6, 0.68, 0.68, 0.66),
    (0.5, 0.73, 0.58, 0.71),
    (0.42, 0.76, 0.52, 0.74),
    (0.38, 0.78, 0.49, 0.76),
]


def shifted(curve: list[Epoch], by: float) -> list[Epoch]:
    return [(tl, tm + by, vl, vm + by) for tl, tm, vl, vm in curve]


def grid(
    conn: Session, dataset: str, configs: int, epochs: int, batch_size: int = 16, **named: Any
) -> tuple[int, list[int]]:
    """A grid workload of ``configs`` mlp configs, lr 0.001, 0.002, ...: its id and its configs in that order;
    ``named``: more of run_model_selection's named arguments (autonomy, budget_epochs, ...)."""
    space = {"lr": [0.001 * (k + 1) for k in range(configs)], "batch_size": [batch_size], "hidden_units": [8]}
    more = sql.SQL("").join(
        sql.SQL(", {} => {}").format(sql.Identifier(key), sql.Literal(value)) for key, value in named.items()
    )
    call = sql.SQL("SELECT run_model_selection(%s, 'mlp', %s, max_epochs => %s{})").format(more)
    workload_id = one(conn, call.as_string(conn), dataset, json.dumps(space), epochs)
    rows = conn.execute(
        "SELECT config_id FROM configs WHERE workload_id = %s ORDER BY (params ->> 'lr')::float8", [workload_id]
    )
    return workload_id, [row[0] for row in rows]


def play(system: Session, curves: dict[int, list[Epoch]], start: int = 1, as_scheduler: bool = False) -> None:
    """Each config's epochs from ``start``, interleaved by epoch as the scheduler's fair share runs them, by
    ``system`` (the schema owner, internal, as record_hop). Each epoch's end runs the hook that makes suggestions;
    ``as_scheduler``: the whole epoch-end hook instead (on_epoch_end: suggestions, then autonomy), and a config no
    longer pending or running gets no more epochs (the scheduler would not run it)."""
    hook = "SELECT on_epoch_end(%s, %s)" if as_scheduler else "SELECT suggest_observe(%s, %s)"
    for k in range(max(len(curve) for curve in curves.values())):
        for config, curve in curves.items():
            if k >= len(curve) or (
                as_scheduler
                and one(system, "SELECT status FROM configs WHERE config_id = %s", config) not in ("pending", "running")
            ):
                continue
            epoch = start + k
            system.execute(
                "INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric,"
                " seconds) VALUES (%s, %s, %s, %s, %s, %s, 1)",
                [config, epoch, *curve[k]],
            )
            system.execute("SELECT config_hop_committed(%s, %s)", [config, epoch])
            system.execute(hook, [config, epoch])
