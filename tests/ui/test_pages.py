"""Every page with AppTest against a real database: what it shows and what its actions change."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import psycopg
import pytest
from streamlit.runtime.scriptrunner import RerunData
from streamlit.testing.v1 import AppTest, local_script_runner

from cerebro_db import client, connection, install
from cerebro_db.cluster import ClusterConfig
from tests.conftest import TINY_CNN, launch, run_until_idle, unique
from tests.plpy.test_custom import BROKEN, GOOD
from tests.ui.conftest import open_page

Session = psycopg.Connection[Any]


def texts(app: AppTest) -> str:
    """Everything the page says, for matching messages."""
    kinds = ("markdown", "caption", "info", "success", "error", "warning", "toast")
    parts = [e.value for kind in kinds for e in app.get(kind)]
    return "\n".join(str(part) for part in parts)


def value(conn: Session, query: str, *params: Any) -> Any:
    row = conn.execute(query, list(params)).fetchone()
    assert row is not None
    return row[0] if len(row) == 1 else row


@pytest.mark.parametrize("page", ["workloads", "launch", "workload_detail", "catalog", "tensorboard_logs"])
def test_empty_database_shows_empty_states(page: str, empty_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEREBRO_DSN", empty_dsn)
    shown = texts(open_page(page))
    expected = {
        "workloads": "No workloads yet — launch one.",
        "launch": "No prepared datasets yet",
        "workload_detail": "No workloads yet — launch one.",
        "catalog": "No prepared datasets yet",
        "tensorboard_logs": "No workloads yet",
    }[page]
    assert expected in shown, shown


def fill_tiny_cnn_space(app: AppTest, lr_choices: str) -> None:
    app.selectbox(key="model").set_value("cnn").run()
    for param, choice in {**TINY_CNN, "lr": lr_choices}.items():
        app.selectbox(key=f"mode_cnn_{param}").set_value("choices").run()
        app.text_input(key=f"choices_cnn_{param}").set_value(str(choice)).run()


def test_launch_form_creates_a_workload(conn: Session, fashion_2seg: str) -> None:
    app = open_page("launch")
    app.selectbox(key="dataset").set_value(fashion_2seg).run()
    fill_tiny_cnn_space(app, "0.001, 0.003")
    app.number_input(key="max_epochs").set_value(1).run()
    name = unique("launched")
    app.text_input(key="name").set_value(name).run()
    app.text_input(key="description").set_value("from the form").run()
    assert "Grid creates **2 configs** × 1 epoch =" in texts(app)
    app.button[-1].click().run()  # Launch
    assert not app.exception, app.exception
    workload, description, space = value(
        conn, "SELECT workload_id, description, search_space FROM workloads WHERE name = %s", name
    )
    assert description == "from the form"
    assert space == {"lr": [0.001, 0.003], **TINY_CNN}
    assert value(conn, "SELECT count(*) FROM configs WHERE workload_id = %s", workload) == 2
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_bad_search_space_shows_an_error_and_creates_nothing(conn: Session, fashion_2seg: str) -> None:
    before = value(conn, "SELECT count(*) FROM workloads")
    app = open_page("launch")
    app.selectbox(key="dataset").set_value(fashion_2seg).run()
    fill_tiny_cnn_space(app, "0.001, abc")
    assert "Search space: lr: 'abc' is not a number" in texts(app)
    launch_button = app.button[-1]
    assert launch_button.disabled
    # what only the database can judge comes back as its message and hint
    app.text_input(key="choices_cnn_lr").set_value("-1").run()
    app.button[-1].click().run()
    assert not app.exception, app.exception
    shown = texts(app)
    assert "lr must be >= 1e-12, got -1.0" in shown and "hint: SELECT * FROM roster lists" in shown, shown
    assert value(conn, "SELECT count(*) FROM workloads") == before


def configs_of(conn: Session, workload: int) -> list[int]:
    return [r[0] for r in conn.execute("SELECT config_id FROM configs WHERE workload_id = %s ORDER BY 1", [workload])]


def test_stop_on_a_row_stops_that_config_and_a_double_click_is_harmless(conn: Session, fashion_2seg: str) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.001, 0.003], **TINY_CNN}, epochs=2)
    first, second = configs_of(conn, workload)
    app = open_page("workload_detail", workload=str(workload))
    app.button(key=f"stop_{first}").click().run()
    assert value(conn, "SELECT status FROM configs WHERE config_id = %s", first) == "stopped"
    assert value(conn, "SELECT status FROM configs WHERE config_id = %s", second) == "pending"
    assert f"config {first}: stopped" in texts(app)
    assert app.button(key=f"resume_{first}")  # the row now offers resume
    app.button(key=f"resume_{first}").click().run()
    assert value(conn, "SELECT status FROM configs WHERE config_id = %s", first) == "running"
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_a_stale_row_never_overwrites_a_newer_status(conn: Session, fashion_2seg: str, dsn: str) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.003], **TINY_CNN}, epochs=1)
    (config,) = configs_of(conn, workload)
    app = open_page("workload_detail", workload=str(workload))
    stop = app.button(key=f"stop_{config}")  # rendered while pending
    run_until_idle(dsn)  # meanwhile it trains to the end
    stop.click().run()
    assert f"config {config} changed meanwhile (now completed); nothing done" in texts(app)
    assert value(conn, "SELECT status FROM configs WHERE config_id = %s", config) == "completed"
    # the refreshed page shows curves and lets the completed config continue
    assert app.get("vega_lite_chart"), "no learning curves"
    app.number_input(key=f"epochs_{config}").set_value(2).run()
    app.button(key=f"set_epochs_{config}").click().run()
    assert value(conn, "SELECT status, max_epochs FROM configs WHERE config_id = %s", config) == ("running", 2)
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def set_metric(conn: Session, config: int, val_metric: float) -> None:
    """As if the config had finished epoch 1 with this validation metric (the leaderboard ranks by it)."""
    with conn.transaction():
        conn.execute("SET LOCAL cerebro.internal = on")
        conn.execute(
            "INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric, seconds)"
            " VALUES (%s, 1, 1, 0, 1, %s, 1)"
            " ON CONFLICT (config_id, epoch) DO UPDATE SET val_metric = excluded.val_metric",
            [config, val_metric],
        )


def sidebar_says(app: AppTest) -> str:
    return "\n".join(str(caption.value) for caption in app.sidebar.caption)


def run_the_fragment(app: AppTest) -> None:
    """Run the page's fragment alone, as its ``run_every`` timer or a click inside it does (AppTest's own runs are
    whole-app runs)."""
    (fragment_id,) = app._fragment_storage._fragments  # the detail page is one fragment
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local_script_runner, "RerunData", functools.partial(RerunData, fragment_id_queue=[fragment_id]))
        app.run()
    assert not app.exception, app.exception


def this_workload(app: AppTest, workload: int) -> str:
    """The sidebar's entry for the workload (other tests' workloads may be listed too)."""
    (entry,) = [option for option in app.sidebar.selectbox[0].options if option.startswith(f"#{workload} ")]
    return str(entry)


def test_the_page_refreshes_while_anything_is_pending_or_running(conn: Session, fashion_2seg: str) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.003], **TINY_CNN}, epochs=2)
    (config,) = configs_of(conn, workload)
    app = open_page("workload_detail", workload=str(workload))
    assert "refreshing every 2 s" in sidebar_says(app)
    conn.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])  # from psql, not the page
    run_the_fragment(app)  # the timer's next refresh
    assert "Not refreshing: nothing in this workload is pending or running" in sidebar_says(app), sidebar_says(app)
    assert this_workload(app, workload) == f"#{workload} unnamed (completed)"  # the sidebar's status follows too
    app.button(key=f"resume_{config}").click()
    run_the_fragment(app)  # a click inside the fragment reruns only the fragment
    assert value(conn, "SELECT status FROM configs WHERE config_id = %s", config) == "running"
    assert "refreshing every 2 s" in sidebar_says(app), sidebar_says(app)
    assert this_workload(app, workload) == f"#{workload} unnamed (running)"
    assert app.button(key=f"stop_{config}")  # the row follows too
    conn.execute("UPDATE configs SET status = 'stopped' WHERE config_id = %s", [config])
    app.run()  # a reload
    assert "Not refreshing" in sidebar_says(app)
    conn.execute("UPDATE configs SET status = 'running' WHERE config_id = %s", [config])  # resumed from psql
    app.run()  # the next reload or action on the page
    assert "refreshing every 2 s" in sidebar_says(app), sidebar_says(app)
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_refresh_follows_the_current_state_not_the_page_load() -> None:
    import common  # noqa: PLC0415 -- beside app.py, as the pages import it

    assert common.refresh_every([{"status": "completed"}, {"status": "stopped"}]) is None
    assert common.refresh_every([{"status": "completed"}, {"status": "pending"}]) == 2
    assert common.refresh_every([{"status": "running"}]) == 2


def test_a_config_widgets_stay_with_their_config_when_the_ranking_changes(conn: Session, fashion_2seg: str) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.001, 0.003], **TINY_CNN}, epochs=2)
    low_lr, high_lr = configs_of(conn, workload)
    set_metric(conn, low_lr, 0.9)
    set_metric(conn, high_lr, 0.5)
    app = open_page("workload_detail", workload=str(workload))
    assert [number.key for number in app.number_input if number.key.startswith("clone_lr_")] == [
        f"clone_lr_{low_lr}",
        f"clone_lr_{high_lr}",
    ]
    app.session_state[f"clone_popover_{low_lr}"] = True  # the user opens config low_lr's Clone popover
    app.number_input(key=f"clone_bs_{low_lr}").set_value(16).run()  # and edits it
    set_metric(conn, high_lr, 0.95)  # meanwhile the other config overtakes it
    app.run()
    assert list(app.dataframe[0].value["config"])[:2] == [high_lr, low_lr]  # the leaderboard re-ranks
    # the steering rows keep their places (by config id): nothing moves under the open popover
    assert [number.key for number in app.number_input if number.key.startswith("clone_lr_")] == [
        f"clone_lr_{low_lr}",
        f"clone_lr_{high_lr}",
    ]
    assert app.session_state[f"clone_popover_{low_lr}"] and not app.session_state[f"clone_popover_{high_lr}"]
    assert app.number_input(key=f"clone_lr_{low_lr}").value == 0.001
    assert app.number_input(key=f"clone_bs_{low_lr}").value == 16
    app.button(key=f"clone_{low_lr}").click().run()
    clone = value(conn, "SELECT params ->> 'lr', params ->> 'batch_size' FROM configs WHERE cloned_from = %s", low_lr)
    assert clone == ("0.001", "16")
    assert value(conn, "SELECT count(*) FROM configs WHERE cloned_from = %s", high_lr) == 0
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_an_error_stays_until_dismissed_and_a_success_is_a_lasting_toast(conn: Session, fashion_2seg: str) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.003], **TINY_CNN}, epochs=1)
    (config,) = configs_of(conn, workload)
    app = open_page("workload_detail", workload=str(workload))
    stop = app.button(key=f"stop_{config}")
    with conn.transaction():  # meanwhile it trained to the end
        conn.execute("SET LOCAL cerebro.internal = on")
        conn.execute("UPDATE configs SET epochs_done = 1, status = 'completed' WHERE config_id = %s", [config])
    stop.click().run()
    refused = f"config {config} changed meanwhile (now completed); nothing done"
    assert any(refused in error.value for error in app.error), texts(app)
    app.run().run()  # refreshes keep it
    assert any(refused in error.value for error in app.error), texts(app)
    dismiss = next(button for button in app.button if button.key.startswith("dismiss_error_"))
    dismiss.click().run()
    assert not any(refused in error.value for error in app.error)
    app.number_input(key=f"epochs_{config}").set_value(2).run()
    app.button(key=f"set_epochs_{config}").click().run()
    assert any(f"config {config}" in toast.value for toast in app.toast), texts(app)
    assert app.toast[0].proto.duration >= 10  # seconds: "long", not the 4 s default
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_a_config_that_a_segment_trains_shows_training_and_floats_are_short(
    conn: Session, fashion_2seg: str, dsn: str
) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.00041675129058196, 0.003], **TINY_CNN}, epochs=1)
    trained, waiting = configs_of(conn, workload)
    app = open_page("workload_detail", workload=str(workload))
    assert "lr 0.000417" in texts(app) and "0.00041675" not in texts(app), texts(app)
    assert "· 1 epoch ·" in texts(app)
    assert ":gray-badge[pending]" in texts(app) and "training" not in texts(app)
    with psycopg.connect(dsn, autocommit=True) as unit:  # holds the locks a running unit holds (active_units)
        unit.execute(
            "SELECT pg_advisory_lock(config_lock_key(), %s), pg_advisory_lock(segment_lock_key(), 0)", [trained]
        )
        app.run()
    badges = [element.value for element in app.markdown if "-badge[" in element.value]
    assert badges == [":blue-badge[running]", ":violet-badge[training]", ":gray-badge[pending]"], badges
    assert f"config {trained}" in [metric.value for metric in app.metric]  # the segment says so too
    assert waiting
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_clone_creates_a_config_cloned_from_the_row_with_overrides(conn: Session, fashion_2seg: str, dsn: str) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.003], **TINY_CNN}, epochs=2)
    (config,) = configs_of(conn, workload)
    run_until_idle(dsn, max_units=1)
    app = open_page("workload_detail", workload=str(workload))
    assert app.number_input(key=f"clone_epochs_{config}").value == 2  # the source's max_epochs
    app.number_input(key=f"clone_lr_{config}").set_value(0.0005).run()
    app.number_input(key=f"clone_bs_{config}").set_value(32).run()
    app.button(key=f"clone_{config}").click().run()
    app.button(key=f"clone_{config}").click().run()  # a double click
    clones = conn.execute(
        "SELECT params ->> 'lr', params ->> 'batch_size' FROM configs WHERE cloned_from = %s", [config]
    ).fetchall()
    assert clones == [("0.0005", "32")]
    assert "the repeated click did nothing" in texts(app)
    assert f"- config {configs_of(conn, workload)[1]}: clone from config {config}" in texts(app)  # lineage
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_clone_of_a_finished_config_offers_epochs_beyond_its_own(conn: Session, fashion_2seg: str) -> None:
    workload = launch(conn, fashion_2seg, {"lr": [0.003], **TINY_CNN}, epochs=2)
    (config,) = configs_of(conn, workload)
    with conn.transaction():  # as if it had trained its 2 epochs
        conn.execute("SET LOCAL cerebro.internal = on")
        conn.execute("UPDATE configs SET epochs_done = 2, status = 'completed' WHERE config_id = %s", [config])
    app = open_page("workload_detail", workload=str(workload))
    epochs = app.number_input(key=f"clone_epochs_{config}")
    assert (epochs.value, epochs.min) == (4, 3)  # its 2 epochs and the workload's 2 more
    app.button(key=f"clone_{config}").click().run()
    assert f"cloned from config {config} (lr 0.003, batch size 64, 4 epochs)" in texts(app)
    assert value(conn, "SELECT status, epochs_done, max_epochs FROM configs WHERE cloned_from = %s", config) == (
        "pending",
        2,
        4,
    )
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_add_config_and_drill_down_into_a_warm_started_workload(conn: Session, fashion_2seg: str, dsn: str) -> None:
    parent = launch(conn, fashion_2seg, {"lr": [0.001, 0.003], **TINY_CNN}, epochs=1)
    run_until_idle(dsn)
    app = open_page("workload_detail", workload=str(parent))
    app.text_input(key=f"add_{parent}_lr").set_value("0.002").run()
    app.button(key=f"add_{parent}").click().run()
    assert value(conn, "SELECT count(*) FROM configs WHERE workload_id = %s AND params -> 'lr' = '0.002'", parent) == 1

    app.button(key=f"drill_down_{parent}").click().run()  # opens Launch, prefilled
    app.switch_page("views/launch.py")  # AppTest does not follow a page's own st.switch_page
    assert not app.exception, app.exception
    assert app.selectbox(key="parent_workload").value == parent
    assert app.selectbox(key="mode_cnn_lr").value == "range"
    assert (app.text_input(key="low_cnn_lr").value, app.text_input(key="high_cnn_lr").value) == ("0.0005", "0.006")
    name = unique("drill")
    app.text_input(key="name").set_value(name).run()
    app.button[-1].click().run()
    child, parent_id, warm = value(
        conn, "SELECT workload_id, parent_workload_id, warm_start FROM workloads WHERE name = %s", name
    )
    assert (parent_id, warm) == (parent, True)
    assert value(conn, "SELECT count(*) FROM configs WHERE workload_id = %s AND cloned_from IS NOT NULL", child) == 4
    conn.execute("DELETE FROM workloads WHERE workload_id IN (%s, %s)", [child, parent])


def test_catalog_shows_the_roster_and_shards(fashion_2seg: str) -> None:
    app = open_page("catalog")
    assert any("**cnn**" in expander.label for expander in app.expander)
    assert f"**{fashion_2seg}**" in texts(app)
    shards = [frame.value for frame in app.dataframe if "segment" in frame.value.columns]
    assert any(set(frame["segment"]) == {0, 1} and set(frame["split"]) == {"train", "validation"} for frame in shards)


def labelled(app: AppTest, label: str) -> Any:
    return next(button for button in app.button if button.label == label)


def register_button(app: AppTest) -> Any:
    return labelled(app, "Register")


def test_an_admin_registers_a_script_and_launches_it(conn: Session, blobs_2seg: str) -> None:
    app = open_page("catalog")
    name = unique("paged_net")
    app.text_input(key="script_name").set_value(name).run()
    app.text_area(key="script_source").set_value(GOOD).run()
    register_button(app).click().run()
    assert not app.exception, app.exception
    assert f"model '{name}' registered" in texts(app)
    assert value(conn, "SELECT entry_point FROM registered_models WHERE name = %s", name) == "create_model"

    launch_page = open_page("launch")
    launch_page.selectbox(key="dataset").set_value(blobs_2seg).run()
    launch_page.selectbox(key="model").set_value(name).run()
    launch_page.text_area(key=f"space_json_{name}").set_value('{"lr": [0.01, 0.03], "units": [4]}').run()
    workload_name = unique("scripted")
    launch_page.text_input(key="name").set_value(workload_name).run()
    launch_page.button[-1].click().run()  # Launch
    assert not launch_page.exception, launch_page.exception
    workload, model = value(conn, "SELECT workload_id, model FROM workloads WHERE name = %s", workload_name)
    assert model == name
    assert value(conn, "SELECT count(*) FROM configs WHERE workload_id = %s", workload) == 2
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


@pytest.mark.parametrize(("source", "message"), BROKEN[:2])
def test_a_broken_script_shows_its_error_and_registers_nothing(conn: Session, source: str, message: str) -> None:
    app = open_page("catalog")
    name = unique("broken_net")
    app.text_input(key="script_name").set_value(name).run()
    app.text_area(key="script_source").set_value(source).run()
    register_button(app).click().run()
    assert not app.exception, app.exception
    assert message in texts(app), texts(app)
    assert value(conn, "SELECT count(*) FROM registered_models WHERE name = %s", name) == 0


def test_a_bad_json_search_space_shows_an_error(conn: Session, fashion_2seg: str) -> None:
    name = unique("json_net")
    conn.execute("SELECT register_model(%s, %s)", [name, GOOD])
    app = open_page("launch")
    app.selectbox(key="model").set_value(name).run()
    app.text_area(key=f"space_json_{name}").set_value('{"lr": [0.01,').run()
    assert "Search space: not valid JSON" in texts(app)
    assert app.button[-1].disabled


def test_only_admins_see_the_register_form(cluster: ClusterConfig, dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    user = unique("dana")
    login = dataclasses.replace(cluster, user=user, password=install.add_user(dsn, user))
    monkeypatch.setenv("CEREBRO_DSN", login.dsn())
    app = open_page("catalog")
    assert "**cnn**" in " ".join(expander.label for expander in app.expander)  # the page itself works
    assert not any(expander.label == "Register a model script" for expander in app.expander)
    assert app.get("text_area") == []


def test_a_cerebro_admin_member_sees_the_register_form_and_a_user_may_not_register_anyway(
    cluster: ClusterConfig, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = unique("erin")
    login = dataclasses.replace(cluster, user=admin, password=install.add_user(dsn, admin, admin=True))
    monkeypatch.setenv("CEREBRO_DSN", login.dsn())
    app = open_page("catalog")
    assert any(expander.label == "Register a model script" for expander in app.expander)
    # Without the form, the database still refuses a cerebro_user's registration (the dashboard's own role).
    user = unique("fred")
    engine = connection.make_engine(dataclasses.replace(cluster, user=user, password=install.add_user(dsn, user)).dsn())
    try:
        with pytest.raises(client.ActionError, match="permission denied"), client.transaction(engine) as conn:
            assert not client.may_register_models(conn)
            client.register_model(conn, unique("freds_net"), GOOD, "create_model")
    finally:
        engine.dispose()
