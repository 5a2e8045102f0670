"""The Workloads page (ui/views/workloads.py, ui/workload_list.py): one sortable table, filters, rows that open."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg
import pytest
import workload_list
from streamlit.testing.v1 import AppTest

from tests.conftest import TINY_CNN, launch, unique
from tests.ui.conftest import open_page

Session = psycopg.Connection[Any]


def row(workload_id: int, **fields: Any) -> dict[str, Any]:
    """A :func:`cerebro_db.client.workloads` row."""
    return {
        "workload_id": workload_id,
        "name": None,
        "owner": "ann",
        "dataset": "fashion",
        "model": "cnn",
        "procedure": "grid",
        "status": "running",
        "parent_workload_id": None,
        "created_at": datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
        "configs": 4,
        "configs_active": 3,
        "epochs_done": 6,
        "epochs_planned": 8,
        "best_val_metric": 0.5,
        "eta": timedelta(minutes=3),
    } | fields


def test_the_table_has_a_typed_line_per_workload() -> None:
    rows = [row(2, name="sweep", parent_workload_id=1), row(1, status="completed", epochs_done=8, best_val_metric=None)]
    frame = workload_list.table(rows)
    assert list(frame["workload"]) == [2, 1]
    assert list(frame["name"]) == ["sweep", "unnamed"]
    assert list(frame["progress"]) == [75.0, 100.0]
    assert list(frame["epochs"]) == ["6 / 8", "8 / 8"]
    assert list(frame["configs"]) == ["3 / 4", "3 / 4"]
    assert frame["best_val_accuracy"][0] == 50.0 and pd.isna(frame["best_val_accuracy"][1])
    assert frame["time_left"][0] == timedelta(minutes=3) and pd.isna(frame["time_left"][1])  # only while running
    assert frame["parent"][0] == 1 and pd.isna(frame["parent"][1])
    assert frame["created"][0] == datetime(2025, 1, 2, 3, 4, tzinfo=UTC)
    assert workload_list.table([]).empty


def test_filters_keep_rows_matching_every_chosen_column_and_none_chosen_is_all() -> None:
    rows = [row(1), row(2, owner="bob"), row(3, status="completed", dataset="blobs")]
    assert workload_list.filtered(rows, {"status": [], "owner": [], "dataset": []}) == rows
    assert [r["workload_id"] for r in workload_list.filtered(rows, {"status": ["running"], "owner": ["bob"]})] == [2]
    assert [r["workload_id"] for r in workload_list.filtered(rows, {"dataset": ["blobs", "fashion"]})] == [1, 2, 3]
    assert workload_list.filter_options(rows, "owner") == ["ann", "bob"]
    assert workload_list.filter_options(rows, "owner", ["carl"]) == ["ann", "bob", "carl"]  # chosen stays offered


@pytest.fixture
def three_workloads(conn: Session, fashion_2seg: str, blobs_2seg: str) -> Iterator[dict[str, int]]:
    """A running and a stopped workload on fashion (the stopped one another owner's), a running one on blobs."""
    running = launch(conn, fashion_2seg, {"lr": [0.003], **TINY_CNN}, epochs=1)
    stopped = launch(conn, fashion_2seg, {"lr": [0.001], **TINY_CNN}, epochs=1)
    (blobs,) = (
        conn.execute(
            "SELECT run_model_selection(%s, 'mlp', %s, max_epochs => 1)", [blobs_2seg, json.dumps({"lr": [0.01]})]
        ).fetchone()
        or ()
    )
    owner = unique("owner")
    for workload, name in ((running, "running one"), (stopped, "stopped one"), (blobs, "blobs one")):
        conn.execute("UPDATE workloads SET name = %s WHERE workload_id = %s", [unique(name), workload])
    conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [stopped])
    conn.execute("UPDATE workloads SET owner = %s WHERE workload_id = %s", [owner, stopped])
    yield {"running": running, "stopped": stopped, "blobs": blobs}
    conn.execute("DELETE FROM workloads WHERE workload_id = ANY(%s)", [[running, stopped, blobs]])


def listed(app: AppTest) -> list[int]:
    (table,) = app.dataframe
    return list(table.value["workload"])


def test_filters_narrow_the_table(three_workloads: dict[str, int], blobs_2seg: str, conn: Session) -> None:
    mine = set(three_workloads.values())
    app = open_page("workloads")
    assert mine <= set(listed(app))
    table = app.dataframe[0].value
    names = dict(zip(table["workload"], table["name"], strict=True))
    assert names[three_workloads["running"]].startswith("running one_")  # the name is shown
    app.multiselect(key="filter_status").set_value(["stopped"]).run()
    assert mine & set(listed(app)) == {three_workloads["stopped"]}
    app.multiselect(key="filter_status").set_value([]).run()
    app.multiselect(key="filter_dataset").set_value([blobs_2seg]).run()
    assert mine & set(listed(app)) == {three_workloads["blobs"]}
    app.multiselect(key="filter_dataset").set_value([]).run()
    owner = conn.execute("SELECT owner FROM workloads WHERE workload_id = %s", [three_workloads["stopped"]]).fetchone()
    assert owner is not None
    app.multiselect(key="filter_owner").set_value([owner[0]]).run()
    assert listed(app) == [three_workloads["stopped"]]
    assert [metric.value for metric in app.metric][0].startswith("1 of ")


def test_choosing_a_row_opens_its_workload_even_after_the_table_changed(
    three_workloads: dict[str, int], conn: Session, fashion_2seg: str
) -> None:
    app = open_page("workloads")
    position = listed(app).index(three_workloads["blobs"])
    newer = launch(conn, fashion_2seg, {"lr": [0.002], **TINY_CNN}, epochs=1)  # listed first: the rows move down
    try:
        app.session_state["workloads_table"] = {"selection": {"rows": [position], "columns": [], "cells": []}}
        app.run()  # the click on the row as it was shown
        assert not app.exception, app.exception
        assert app.query_params.get("workload") == str(three_workloads["blobs"]), app.query_params
    finally:
        conn.execute("DELETE FROM workloads WHERE workload_id = %s", [newer])
