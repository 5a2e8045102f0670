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
from streamlit.testing.v1 import AppTest

from cerebro_db.cluster import ClusterConfig
from tests.conftest import add_tenant, run_until_idle
from tests.ui.conftest import open_page

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
def trained(dsn: str, blobs_2seg: str) -> Iterator[dict[str, int]]:
    """A config that trained its first epoch (2 units, one per segment), then was stopped from psql, and its
    clone (pending). Tests only read it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        workload, config = launch_mlp(conn, blobs_2seg, epochs=2)
        run_until_idle(dsn, max_units=2)
        conn.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
        row = conn.execute("SELECT clone_config(%s, %s)", [config, json.dumps({"lr": 0.005})]).fetchone()
        assert row is not None
        yield {"workload": workload, "config": config, "clone": row[0]}
        conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_the_page_shows_params_history_units_and_state_size(conn: Session, trained: dict[str, int]) -> None:
    config = trained["config"]
    app = open_page("config", config=str(config))
    assert f"Config {config}" in texts(app)
    assert ":orange-badge[stopped]" in texts(app)
    assert metric(app, "Epochs") == "1 / 2"

    params = dict(table(app, "param").itertuples(index=False))
    assert params["lr"] == "0.01" and "batch_size" in params, params  # the defaults too

    history = table(app, "at")
    stop = history[history["kind"] == "stopped"]
    assert list(stop["actor"]) == [current_user(conn)]
    assert list(stop["epochs_done"]) == [1]
    assert list(history["kind"])[0] == "created"

    units = table(app, "epoch")
    assert sorted(units["segment"]) == [0, 1] and list(units["epoch"]) == [1, 1]
    totals = table(app, "phase")
    assert list(totals["phase"]) == ["data load", "state load", "train", "state save", "validation"]
    assert totals["seconds"].sum() == pytest.approx(units[list(config_details.PHASES)].fillna(0).to_numpy().sum())

    state = conn.execute("SELECT octet_length(state) FROM model_states WHERE config_id = %s", [config]).fetchone()
    assert state is not None and state[0] > 0
    assert metric(app, "State size") == common.size(state[0])
    assert links(app)[f"workload={trained['workload']}"].startswith(f"Workload #{trained['workload']}")
    assert "Not refreshing" in "\n".join(str(caption.value) for caption in app.sidebar.caption)


def test_a_clone_links_to_its_parent_and_the_parent_to_its_clone(trained: dict[str, int]) -> None:
    config, clone = trained["config"], trained["clone"]
    parent_page = open_page("config", config=str(config))
    assert links(parent_page)[f"config={clone}"] == f"Clone: config {clone} (pending)"
    clone_page = open_page("config", config=str(clone))
    assert links(clone_page)[f"config={config}"] == f"Parent (cloned from): config {config} (stopped)"
    assert dict(table(clone_page, "param").itertuples(index=False))["lr"] == "0.005"
    assert "No unit has committed yet" in texts(clone_page)  # its own units: none yet
    assert metric(clone_page, "State size") != "—"  # it starts from its parent's weights
    assert "refreshing every 2 s" in "\n".join(str(caption.value) for caption in clone_page.sidebar.caption)


def test_the_workload_page_links_each_config_to_its_page(trained: dict[str, int]) -> None:
    app = open_page("workload_detail", workload=str(trained["workload"]))
    assert links(app)[f"config={trained['clone']}"] == f"{trained['clone']} ← {trained['config']}"
    assert links(app)[f"config={trained['config']}"] == str(trained["config"])


def test_stop_and_resume_on_the_page_are_logged_with_their_actor(conn: Session, blobs_2seg: str) -> None:
    workload, config = launch_mlp(conn, blobs_2seg, epochs=1)
    app = open_page("config", config=str(config))
    app.button(key=f"stop_{config}").click().run()
    assert conn.execute("SELECT status FROM configs WHERE config_id = %s", [config]).fetchone() == ("stopped",)
    assert any(f"config {config}: stopped" in toast.value for toast in app.toast), texts(app)
    app.button(key=f"resume_{config}").click().run()
    assert conn.execute("SELECT status FROM configs WHERE config_id = %s", [config]).fetchone() == ("running",)
    history = table(app, "at")
    assert list(history["kind"]) == ["created", "stopped", "running"]
    assert set(history["actor"][1:]) == {current_user(conn)}
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


@pytest.mark.parametrize("requested", ["999999999", "nonsense"])
def test_an_unknown_config_says_so(requested: str) -> None:
    app = open_page("config", config=requested)
    assert f"There is no config '{requested}' of yours to show" in texts(app)


def test_another_tenants_config_is_not_shown(
    cluster: ClusterConfig, dsn: str, trained: dict[str, int], monkeypatch: pytest.MonkeyPatch
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
