"""The dashboard's search-space helpers (pure) and its guarded actions (against the session cluster)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from cerebro_db import client
from cerebro_db.client import ParamSpec, SpaceEntry, SpaceError
from tests.conftest import TINY_CNN, launch

PARAMS = [
    ParamSpec("lr", "float", 0.001, "[1e-12, 10.0]", "learning rate"),
    ParamSpec("batch_size", "int", 64, "[1, 65536]", "examples per gradient step"),
    ParamSpec("optimizer", "str", "adam", '["adam", "sgd", "rmsprop"]', "optimizer"),
]


def test_editor_rows_become_a_search_space_and_back() -> None:
    entries = [
        SpaceEntry("lr", "range", low="1e-4", high="0.1", log=True),
        SpaceEntry("batch_size", "choices", "32, 64,64"),
        SpaceEntry("optimizer", "choices", "sgd"),
    ]
    space = client.build_search_space(entries, PARAMS)
    assert space == {"lr": {"min": 0.0001, "max": 0.1, "log": True}, "batch_size": [32, 64], "optimizer": "sgd"}
    assert client.build_search_space(client.space_entries(space), PARAMS) == space
    assert client.build_search_space([SpaceEntry("lr", "default")] + entries[1:], PARAMS) == {
        "batch_size": [32, 64],
        "optimizer": "sgd",
    }


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (SpaceEntry("lr", "choices", "0.1, fast"), "lr: 'fast' is not a number"),
        (SpaceEntry("batch_size", "choices", "32.5"), "batch_size: '32.5' is not a whole number"),
        (SpaceEntry("lr", "choices", " , "), "lr: give at least one value"),
        (SpaceEntry("lr", "range", low="0.1", high="0.01"), "lr: a range needs min < max"),
        (SpaceEntry("lr", "range", low="", high="0.01"), "lr: a value is missing"),
        (SpaceEntry("lr", "range", low="0", high="0.01", log=True), "lr: a log-scaled range needs min > 0"),
        (SpaceEntry("optimizer", "range", low="1", high="2"), "optimizer is categorical"),
        (SpaceEntry("lr", "default"), "search nothing?"),
    ],
)
def test_bad_editor_input_names_the_parameter(entry: SpaceEntry, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        client.build_search_space([entry], PARAMS)


def test_grid_size_counts_the_combinations_and_refuses_ranges() -> None:
    space = {"lr": [0.1, 0.01], "batch_size": {"choices": [1, 2, 3]}, "optimizer": "sgd", "filters": [8]}
    assert client.grid_size(space) == 6
    assert client.searched_keys(space) == ["lr", "batch_size"]
    assert client.grid_size({"lr": {"min": 0.1, "max": 1.0}}) is None
    assert client.searched_keys({"lr": {"min": 0.1, "max": 1.0}}) == ["lr"]


def test_refine_space_centres_on_the_chosen_configs() -> None:
    space = {"lr": [0.001, 0.01, 0.1], "batch_size": [32, 64, 128], "optimizer": ["adam", "sgd"], "filters": 4}
    chosen = [
        {"lr": 0.001, "batch_size": 64, "optimizer": "adam", "filters": 4, "dropout": 0.0},
        {"lr": 0.01, "batch_size": 64, "optimizer": "sgd", "filters": 4, "dropout": 0.0},
    ]
    assert client.refine_space(space, chosen) == {
        "lr": {"min": 0.0005, "max": 0.02, "log": True},
        "batch_size": 64,
        "optimizer": ["adam", "sgd"],
        "filters": 4,
    }


def test_status_changes_name_the_status_seen(dsn: str, fashion_2seg: str) -> None:
    engine = client.make_engine(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Two configs: stopping the last active one would finish the workload.
        workload = launch(conn, fashion_2seg, {"lr": [0.003, 0.01], **TINY_CNN}, epochs=1)
        row: Any = conn.execute("SELECT min(config_id) FROM configs WHERE workload_id = %s", [workload]).fetchone()
    config = row[0]
    with client.transaction(engine) as sa:
        assert client.set_config_status(sa, config, "stopped", "pending") == f"config {config}: stopped"
    with client.transaction(engine) as sa:  # the same click again
        assert client.set_config_status(sa, config, "stopped", "pending") == f"config {config} is already stopped"
    stale = rf"config {config} changed meanwhile \(now stopped\)"
    with pytest.raises(client.ActionError, match=stale), client.transaction(engine) as sa:
        client.set_config_status(sa, config, "running", "completed")
    refused = rf"config {config}: max_epochs must be at least 1"  # the database's message, no traceback
    with pytest.raises(client.ActionError, match=refused), client.transaction(engine) as sa:
        client.set_max_epochs(sa, config, 0, "stopped", 1)
    with client.transaction(engine) as sa:
        assert client.set_workload_status(sa, workload, "stopped", "running") == f"workload {workload}: stopped"
        sa.execute(text("DELETE FROM workloads WHERE workload_id = :w"), {"w": workload})
    engine.dispose()
