"""The config page with AppTest against a real database: params, lineage, history, units, state size, actions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

# Beside app.py, as the pages import them (tests.ui.conftest puts their folder on the path).
import common
import config_details
import pandas as pd
import psycopg
import pytest
from psycopg import sql
from streamlit.testing.v1 import AppTest

from cerebro_db.cluster import ClusterConfig
from tests.conftest import add_tenant, run_until_idle, unique
from tests.ui.conftest import drawn, open_page

Session = psycopg.Connection[Any]


def texts(app: AppTest) -> str:
    kinds = ("markdown", "caption", "info", "success", "error", "warning", "toast", "title")
    return "\n".join(str(element.value) for kind in kinds for element in app.get(kind))


def table(app: AppTest, first_column: str) -> pd.DataFrame:
    """The page's one dataframe whose first column is ``first_column``."""
    (found,) = [frame.value for frame in app.dataframe if list(frame.value.columns)[:1] == [first_column]]
    return found


def links(app: AppTest) -> dict[str, str]:
    """The page's links: query string -> label."""
    return {link.proto.query_string: link.proto.label for link in app.get("page_link")}


def metric(app: AppTest, label: str) -> str:
    (value,) = [element.value for element in app.metric if element.label == label]
    return str(value)


def current_user(conn: Session) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def launch_mlp(conn: Session, dataset: str, epochs: int) -> tuple[int, int]:
    """A workload of one mlp config; its id and the config's."""
    workload = conn.execute(
        "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.01]}', max_epochs => %s, seed => 3)", [dataset, epochs]
    ).fetchone()
    assert workload is not None
    config = conn.execute("SELECT config_id FROM configs WHERE workload_id = %s", [workload[0]]).fetchone()
    assert config is not None
    return workload[0], config[0]


@pytest.fixture(scope="module")
def trained(cluster: ClusterConfig, dsn: str, blobs_2seg: str) -> Iterator[dict[str, Any]]:
    """A tenant's config that trained its first epoch (2 units, one per segment), then was stopped by the tenant
    from psql; a clone of it (pending) and a drill-down workload warm-started from it. Tests only read them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(blobs_2seg)))
    login = add_tenant(cluster, dsn, "hana")
    with psycopg.connect(login, autocommit=True) as conn:
        dataset = unique("hana_blobs")
        conn.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3,f4,f5}')", [dataset, f"public.{blobs_2seg}"]
        )
        workload, config = launch_mlp(conn, dataset, epochs=2)
        run_until_idle(dsn, max_units=2)
        conn.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
        clone = conn.execute("SELECT clone_config(%s, %s)", [config, json.dumps({"lr": 0.005})]).fetchone()
        drill = conn.execute(
            "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.002]}', name => 'drill', parent_workload => %s,"
            " warm_start => true)",
            [dataset, workload],
        ).fetchone()
        assert clone is not None and drill is not None
        warm = conn.execute("SELECT config_id FROM configs WHERE workload_id = %s", [drill[0]]).fetchone()
        assert warm is not None
        yield {
            "login": login,
            "user": current_user(conn),
            "workload": workload,
            "config": config,
            "clone": clone[0],
            "drill": drill[0],
            "warm": warm[0],
        }
    with psycopg.connect(dsn, autocommit=True) as conn:  # users may not delete workloads
        conn.execute("DELETE FROM workloads WHERE workload_id IN (%s, %s)", [drill[0], workload])


def test_the_page_shows_params_history_units_and_state_size(
    dsn: str, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEREBRO_DSN", trained["login"])
    config = trained["config"]
    app = open_page("config", config=str(config))
    assert f"Config {config}" in texts(app)
    assert ":orange-badge[stopped]" in texts(app)
    assert metric(app, "Epochs") == "1 / 2"
    assert f"created by {trained['user']}" in texts(app)

    params = dict(table(app, "param").itertuples(index=False))
    assert params["lr"] == "0.01" and "batch_size" in params, params  # the defaults too

    history = table(app, "at")
    stop = history[history["kind"] == "stopped"]
    assert list(stop["actor"]) == [trained["user"]]  # the tenant, not the system
    assert list(stop["epochs_done"]) == [1]
    assert list(history["kind"])[0] == "created"

    units = table(app, "epoch")
    assert sorted(units["segment"]) == [0, 1] and list(units["epoch"]) == [1, 1]
    totals = table(app, "phase")
    assert list(totals["phase"]) == ["data load", "state load", "train", "state save", "validation"]
    assert totals["seconds"].sum() == pytest.approx(units[list(config_details.PHASES)].fillna(0).to_numpy().sum())

    with psycopg.connect(dsn) as conn:  # the schema owner's read: users cannot read model_states
        state = conn.execute("SELECT octet_length(stored_state(%s))", [config]).fetchone()
    assert state is not None and state[0] > 0
    assert metric(app, "State size") == common.size(state[0])
    assert links(app)[f"workload={trained['workload']}"].startswith(f"Workload #{trained['workload']}")
    assert "Not refreshing" in sidebar_says(app)


def test_lineage_links_parent_clones_and_warm_starts_both_ways(
    trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEREBRO_DSN", trained["login"])
    config, clone, warm, drill = trained["config"], trained["clone"], trained["warm"], trained["drill"]
    parent_page = open_page("config", config=str(config))
    assert links(parent_page)[f"config={clone}"] == f"Clone: config {clone} (pending)"
    assert links(parent_page)[f"config={warm}"] == f"Warm start: config {warm} of workload #{drill} drill (pending)"

    clone_page = open_page("config", config=str(clone))
    assert links(clone_page)[f"config={config}"] == f"Parent (cloned from): config {config} (stopped)"
    assert dict(table(clone_page, "param").itertuples(index=False))["lr"] == "0.005"
    assert "No unit has committed yet" in texts(clone_page)  # its own units: none yet
    assert drawn(clone_page) == [[f"config {clone}"]] * 2  # its line: its parent's epoch so far, inherited
    assert metric(clone_page, "State size") != "—"  # it starts from its parent's weights
    assert "refreshing every 2 s" in sidebar_says(clone_page)

    warm_page = open_page("config", config=str(warm))
    parent_link = f"Parent (warm-started from): config {config} of workload #{trained['workload']} unnamed (stopped)"
    assert links(warm_page)[f"config={config}"] == parent_link


def test_the_workload_page_links_each_config_to_its_page(
    trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEREBRO_DSN", trained["login"])
    app = open_page("workload_detail", workload=str(trained["workload"]))
    assert links(app)[f"config={trained['clone']}"] == f"{trained['clone']} ← {trained['config']}"
    assert links(app)[f"config={trained['config']}"] == str(trained["config"])


def sidebar_says(app: AppTest) -> str:
    return "\n".join(str(caption.value) for caption in app.sidebar.caption)


def test_stop_and_resume_on_the_page_change_the_config_its_history_and_the_refresh(
    conn: Session, blobs_2seg: str
) -> None:
    workload, config = launch_mlp(conn, blobs_2seg, epochs=1)
    app = open_page("config", config=str(config))
    assert "refreshing every 2 s" in sidebar_says(app)
    app.button(key=f"stop_{config}").click().run()
    assert conn.execute("SELECT status FROM configs WHERE config_id = %s", [config]).fetchone() == ("stopped",)
    assert any(f"config {config}: stopped" in toast.value for toast in app.toast), texts(app)
    assert "Not refreshing" in sidebar_says(app)
    app.button(key=f"resume_{config}").click().run()
    assert conn.execute("SELECT status FROM configs WHERE config_id = %s", [config]).fetchone() == ("running",)
    assert list(table(app, "at")["kind"]) == ["created", "stopped", "running"]
    assert "refreshing every 2 s" in sidebar_says(app)
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_no_configs_yet_says_so(empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEREBRO_DSN", empty_dsn)
    assert "No configs yet — launch a workload." in texts(open_page("config"))


@pytest.mark.parametrize("requested", ["999999999", "nonsense"])
def test_an_unknown_config_says_so(requested: str) -> None:
    app = open_page("config", config=requested)
    assert f"There is no config '{requested}' of yours to show" in texts(app)


def test_another_tenants_config_is_not_shown(
    cluster: ClusterConfig, dsn: str, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEREBRO_DSN", add_tenant(cluster, dsn, "gail"))
    app = open_page("config", config=str(trained["config"]))
    assert f"There is no config '{trained['config']}' of yours to show" in texts(app)
    assert "Stop" not in [button.label for button in app.button] and not app.dataframe
    assert app.sidebar.selectbox[0].options == []  # none of the owner's configs are listed


def test_phase_totals_add_up_each_phase_and_skip_missing_validation() -> None:
    units = [
        {"data_load_s": 1.0, "state_load_s": 0.5, "train_s": 2.0, "state_save_s": 0.5, "validation_s": None},
        {"data_load_s": 1.0, "state_load_s": 0.5, "train_s": 2.0, "state_save_s": 0.5, "validation_s": 2.0},
    ]
    totals = config_details.phase_totals(units)
    assert list(totals["seconds"]) == [2.0, 1.0, 4.0, 1.0, 2.0]
    assert totals["share"].sum() == pytest.approx(1.0) and totals["share"][2] == pytest.approx(0.4)
    assert list(config_details.phase_totals([])["share"]) == [0.0] * 5
    assert list(config_details.params_table({"lr": 0.00041675129058196, "batch_size": 64})["value"]) == [
        "0.000417",
        "64",
    ]


def test_an_event_without_a_reason_shows_no_reason() -> None:
    events = [
        {"at": None, "kind": "created", "epochs_done": 0, "actor": "ann", "detail": None},
        {"at": None, "kind": "pruned", "epochs_done": 1, "actor": "cerebro", "detail": "hyperband rung 1"},
    ]
    assert list(config_details.events_table(events)["detail"]) == ["", "hyperband rung 1"]
