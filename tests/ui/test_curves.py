"""Learning curves and the leaderboard that chooses them: ui/curves.py's shaping and charts, the ancestors' query,
and the detail page (AppTest) drawing the configs ticked in its leaderboard."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg
import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from cerebro_db import client, connection
from tests.conftest import TINY_CNN, launch, one
from tests.ui.conftest import drawn, open_page

Session = psycopg.Connection[Any]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def point(config: int, epoch: int, *, inherited: bool = False, source: int | None = None) -> dict[str, Any]:
    return {
        "config_id": config,
        "from_config": source or config,
        "epoch": epoch,
        "inherited": inherited,
        "train_loss": 1.0 / epoch,
        "train_metric": 0.1 * epoch,
        "val_loss": 1.2 / epoch,
        "val_metric": 0.1 * epoch,
        "seconds": 1.0,
        "finished_at": T0 + timedelta(minutes=epoch),
        "workload_id": 1,
        "searched_params": {"lr": 0.00041675129058196},
    }


def test_a_clone_line_starts_at_its_parents_point() -> None:
    import curves  # noqa: PLC0415 -- beside app.py, as the pages import it

    rows = [point(3, 1), point(3, 2), point(3, 3)]  # the parent
    rows += [point(4, 1, inherited=True, source=3), point(4, 2, inherited=True, source=3), point(4, 3)]  # its clone
    frame = curves.points(rows, "loss")
    clone = frame[(frame["config"] == "config 4") & (frame["split"] == "train")]
    assert list(zip(clone["part"], clone["epoch"], clone["trained by"], strict=True)) == [
        ("inherited", 1, "config 3"),
        ("inherited", 2, "config 3"),
        ("own", 2, "config 3"),  # the own line starts at the parent's point at the clone epoch
        ("own", 3, "config 4"),
    ]
    assert set(frame["params"]) == {"lr 0.000417"}
    assert len(frame[frame["config"] == "config 3"]) == 6  # 3 epochs × 2 splits, nothing inherited


def test_a_clone_without_an_epoch_of_its_own_is_only_its_inherited_part() -> None:
    import curves  # noqa: PLC0415

    frame = curves.points([point(4, 1, inherited=True, source=3)], "metric")
    assert set(frame["part"]) == {"inherited"}


def test_the_chart_zooms_isolates_logs_and_orders_configs_by_id() -> None:
    import curves  # noqa: PLC0415

    rows = [point(config, 1) for config in (10, 9, 2)]
    spec = curves.chart(rows, "loss", log=True).to_dict()
    params = {param["name"]: param for param in spec["params"]}
    assert params["zoom"]["bind"] == "scales" and params["zoom"]["select"]["type"] == "interval"
    assert params["isolate"]["bind"] == "legend" and params["isolate"]["select"]["fields"] == ["config"]
    encoding = spec["layer"][0]["encoding"]  # the lines (the points layer shares their encodings)
    assert encoding["y"]["scale"]["type"] == "log"
    assert encoding["color"]["scale"] == {"domain": ["config 2", "config 9", "config 10"], "scheme": "tableau10"}
    assert encoding["color"]["legend"]["orient"] == "bottom" and encoding["strokeDash"]["field"] == "split"
    assert {"field": "params", "type": "nominal"} in encoding["tooltip"]
    assert encoding["opacity"]["condition"]["test"] == {"not": {"param": "isolate"}}  # the others fade
    wall_clock = curves.chart(rows, "metric", x="wall clock").to_dict()
    (lines, dots) = (layer["encoding"] for layer in wall_clock["layer"])
    assert lines["x"] == dots["x"] and (lines["x"]["field"], lines["x"]["type"]) == ("finished at", "temporal")
    assert lines["y"]["scale"]["type"] == "linear"
    many = curves.chart([point(config, 1) for config in range(1, 13)], "loss").to_dict()
    assert many["layer"][0]["encoding"]["color"]["scale"]["scheme"] == "category20"


def test_ticks_follow_their_configs_when_rows_move() -> None:
    import curves  # noqa: PLC0415

    assert curves.reselect([], [5, 6], None, [6, 7, 5]) == ([5, 6], [0, 2])  # the default, placed
    # the user ticked rows 1 and 2 of [6, 7, 5]; then 5 overtakes everything and 8 is new
    assert curves.reselect([6, 7, 5], [5, 6], [1, 2], [5, 6, 7, 8]) == ([7, 5], [0, 2])
    # a status filter hides 5: it stays chosen, untouched by ticks among the rows shown
    assert curves.reselect([5, 6, 7], [5, 7], [0, 2], [6, 7]) == ([5, 7], [1])
    assert curves.reselect([6, 7], [5, 7], [0], [5, 6, 7]) == ([5, 6], [0, 1])


def add_epochs(conn: Session, config: int, epochs: range, start: datetime) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL cerebro.internal = on")
        for epoch in epochs:
            conn.execute(
                "INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric, seconds,"
                " finished_at) VALUES (%s, %s, 1, 0.5, 1, %s, 1, %s)",
                [config, epoch, 0.1 * epoch + config / 1000, start + timedelta(minutes=epoch)],
            )
        conn.execute("UPDATE configs SET epochs_done = %s WHERE config_id = %s", [epochs.stop - 1, config])


def configs_of(conn: Session, workload: int) -> list[int]:
    return [r[0] for r in conn.execute("SELECT config_id FROM configs WHERE workload_id = %s ORDER BY 1", [workload])]


def test_curves_with_ancestors_continue_clones_and_warm_starts(conn: Session, fashion_2seg: str, dsn: str) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.003], **TINY_CNN}, epochs=5)
    (parent,) = configs_of(conn, workload)
    add_epochs(conn, parent, range(1, 3), T0)
    clone = one(conn, "SELECT clone_config(%s, '{\"lr\": 0.001}')", parent)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    add_epochs(conn, parent, range(3, 4), an_hour_ago)  # the parent trains on after the clone
    add_epochs(conn, clone, range(3, 5), an_hour_ago)
    grandchild = one(conn, "SELECT clone_config(%s, '{\"lr\": 0.002}')", clone)  # clones the clone at epoch 4
    drill = launch(conn, fashion_2seg, {"lr": [0.002], **TINY_CNN}, epochs=2)
    (warm,) = configs_of(conn, drill)
    with conn.transaction():  # a warm start from the clone, once it had its 4 epochs
        conn.execute("SET LOCAL cerebro.internal = on")
        conn.execute("UPDATE configs SET cloned_from = %s WHERE config_id = %s", [clone, warm])
    add_epochs(conn, warm, range(1, 2), datetime.now(UTC))
    engine = connection.make_engine(dsn)
    with engine.connect() as sa:
        rows = client.curves_with_ancestors(sa, [grandchild, warm, parent])
    lines: dict[int, list[tuple[int, int, bool]]] = {}
    for row in rows:
        lines.setdefault(row["config_id"], []).append((row["epoch"], row["from_config"], row["inherited"]))
    assert lines[parent] == [(1, parent, False), (2, parent, False), (3, parent, False)]
    assert lines[grandchild] == [(1, parent, True), (2, parent, True), (3, clone, True), (4, clone, True)]
    assert lines[warm] == [
        (-3, parent, True),
        (-2, parent, True),
        (-1, clone, True),
        (0, clone, True),
        (1, warm, False),
    ]
    assert {row["searched_params"]["lr"] for row in rows if row["config_id"] == grandchild} == {0.002}
    engine.dispose()
    conn.execute("DELETE FROM workloads WHERE workload_id IN (%s, %s)", [drill, workload])


def test_the_leaderboard_chooses_the_curves_and_downloads(conn: Session, fashion_2seg: str) -> None:
    lrs = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007]
    workload = launch(conn, fashion_2seg, {"lr": lrs, **TINY_CNN}, epochs=2)
    ids = configs_of(conn, workload)
    for config in ids:
        add_epochs(conn, config, range(1, 3), T0)
    ranked = sorted(ids, reverse=True)  # a higher id has a higher val metric here
    app = open_page("workload_detail", workload=str(workload))
    top5 = [f"config {config}" for config in sorted(ranked[:5])]
    assert drawn(app) == [top5, top5]  # loss and accuracy, the top 5 at first
    (table,) = app.dataframe
    assert list(table.value["config"]) == ranked and "lr" in table.value.columns
    app.session_state[f"leaderboard_{workload}"] = {"selection": {"rows": [5, 6], "columns": [], "cells": []}}
    app.run()  # as the browser's ticks arrive: rows 5 and 6 of the table shown
    assert not app.exception, app.exception
    assert drawn(app) == [[f"config {ids[0]}", f"config {ids[1]}"]] * 2
    add_epochs(conn, ids[0], range(3, 4), T0)  # it overtakes them all: its row moves to the top
    conn.execute(  # above every other (their metrics grow with their ids: whatever the sequence is at)
        "UPDATE epoch_metrics SET val_metric = (SELECT max(val_metric) + 1 FROM epoch_metrics"
        "                                       WHERE config_id = ANY(%s)) WHERE config_id = %s AND epoch = 3",
        [ids, ids[0]],
    )
    app.run()
    assert list(app.dataframe[0].value["config"])[0] == ids[0]
    assert drawn(app) == [[f"config {ids[0]}", f"config {ids[1]}"]] * 2  # the ticks moved with it

    downloads: dict[str, bytes] = {}  # what the page hands to its download button, by file name
    store = MemoryMediaFileStorage.load_and_get_id

    def keep(
        self: MemoryMediaFileStorage, data: str | bytes, mimetype: str, kind: Any, filename: str | None = None
    ) -> str:
        downloads[str(filename)] = data if isinstance(data, bytes) else data.encode()
        return store(self, data, mimetype, kind, filename)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
        app.run()
    shown = pd.read_csv(io.BytesIO(downloads[f"workload-{workload}-configs.csv"]))
    table = app.dataframe[0].value
    assert list(shown["config"]) == list(table["config"]) and list(shown["lr"]) == list(table["lr"])

    other = launch(conn, fashion_2seg, {"lr": [0.01], **TINY_CNN}, epochs=2)
    (stranger,) = configs_of(conn, other)
    assert stranger not in list(app.dataframe[0].value["config"])
    app.toggle(key=f"leaderboard_across_{workload}").set_value(True).run()
    listed = app.dataframe[0].value
    # other tests' workloads on the shared dataset may be listed too
    assert stranger in list(listed["config"]) and {workload, other} <= set(listed["workload"])
    assert drawn(app) == [[f"config {ids[0]}", f"config {ids[1]}"]] * 2  # still the same ticks
    conn.execute("DELETE FROM workloads WHERE workload_id IN (%s, %s)", [workload, other])
