"""The Launch form's traps (ui/views/launch.py): every disabled Launch or Prepare says why, and is enabled once
fixed; the dataset form guesses no label and leaves ids out of the features."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import search_space_editor as editor
from psycopg import sql
from streamlit.testing.v1 import AppTest

from tests.conftest import unique
from tests.ui.conftest import open_page

Session = psycopg.Connection[Any]


@pytest.mark.parametrize(
    ("columns", "label"),
    [
        (["id", "pixels", "label"], "label"),
        (["ID", "x1", "Target"], "Target"),
        (["row_id", "f", "y"], "y"),
        (["id", "a", "species_class"], "species_class"),
        (["id", "a", "b"], None),
    ],
)
def test_the_label_is_guessed_only_from_its_name(columns: list[str], label: str | None) -> None:
    assert editor.default_label(columns) == label


def test_default_features_leave_out_the_label_and_ids() -> None:
    assert editor.default_features(["id", "pixels", "label", "user_id", "idle"], "label") == ["pixels", "idle"]
    assert editor.default_features(["Id", "a", "b"], None) == ["a", "b"]


def test_what_keeps_prepare_from_running() -> None:
    assert editor.dataset_problem(None, ["a"], "d", "") == "choose the label column"
    assert editor.dataset_problem("y", [], "d", "") == "choose the feature columns"
    assert editor.dataset_problem("y", ["a", "y"], "d", "") == "the label 'y' cannot be a feature too"
    assert editor.dataset_problem("y", ["a"], " ", "") == "give the dataset a name"
    assert "give whole numbers" in str(editor.dataset_problem("y", ["a"], "d", "28, x"))
    assert editor.dataset_problem("y", ["a"], "d", "28, 28, 1") is None
    assert editor.feature_shape(" 28, 28,1 ") == [28, 28, 1] and editor.feature_shape("") is None


def test_what_keeps_a_procedure_from_running() -> None:
    ranged = {"lr": {"min": 0.001, "max": 0.1, "log": True}, "batch_size": [32, 64]}
    assert "grid cannot enumerate a range (lr)" in str(editor.procedure_problem(ranged, "grid", None))
    assert "grid cannot enumerate a range (lr)" in str(editor.procedure_problem(ranged, "hyperband", None))
    assert editor.procedure_problem(ranged, "hyperband", 8) is None
    assert editor.procedure_problem({"lr": [0.1, 0.01]}, "grid", None) is None
    for procedure in ("random", "hyperopt"):
        assert editor.procedure_problem(ranged, procedure, None) == f"{procedure} needs the number of configs to sample"
        assert editor.procedure_problem(ranged, procedure, 4) is None


def launch_button(app: AppTest) -> Any:
    (button,) = [button for button in app.button if button.label == "Launch"]
    return button


def why_not(app: AppTest) -> str:
    """What the page says beside a disabled Launch."""
    return "\n".join(str(w.value) for w in app.warning if str(w.value).startswith("To launch:"))


def test_preparing_from_a_table_says_why_launch_waits_and_defaults_no_id(conn: Session, fashion_table: str) -> None:
    app = open_page("launch")
    app.radio(key="dataset_source").set_value("Prepare one from a table").run()
    table = f"public.{fashion_table}"  # outside the role's schema
    app.selectbox(key="prep_table").set_value(table).run()
    assert app.selectbox(key=f"prep_label_{table}").value == "label"  # not the first column, id
    assert app.multiselect(key=f"prep_features_{table}").value == ["pixels"]  # not id
    assert launch_button(app).disabled
    assert "prepare the dataset first: give the dataset a name in 1 · Dataset" in why_not(app), why_not(app)
    assert app.button(key="prepare").disabled and "To prepare: give the dataset a name." in app.caption.values
    name = unique("prepared")
    app.text_input(key="prep_name").set_value(name).run()
    app.text_input(key="prep_shape").set_value("28, 28, x").run()
    assert app.button(key="prepare").disabled
    assert "feature shape '28, 28, x': give whole numbers" in why_not(app)
    app.text_input(key="prep_shape").set_value("28,28,1").run()
    assert launch_button(app).disabled and "To launch: prepare the dataset first." in why_not(app)
    assert not app.button(key="prepare").disabled
    app.button(key="prepare_at_launch").click().run()  # the action, right beside Launch
    assert not app.exception, app.exception
    assert any(f"dataset '{name}' prepared: 1,080 training" in toast.value for toast in app.toast)
    assert app.selectbox(key="dataset").value == name  # and chosen for the launch
    assert not launch_button(app).disabled and not why_not(app)
    assert conn.execute("SELECT feature_shape FROM datasets WHERE name = %s", [name]).fetchone() == ([28, 28, 1],)


def test_a_table_without_a_label_like_column_makes_the_user_choose(conn: Session, fashion_table: str) -> None:
    table = unique("unlabelled")
    conn.execute(
        sql.SQL("CREATE TABLE {} AS SELECT id, pixels, label AS kind FROM {}").format(
            sql.Identifier(table), sql.Identifier(fashion_table)
        )
    )
    try:
        app = open_page("launch")
        app.radio(key="dataset_source").set_value("Prepare one from a table").run()
        choice = next(option for option in app.selectbox(key="prep_table").options if option.endswith(table))
        app.selectbox(key="prep_table").set_value(choice).run()
        assert app.selectbox(key=f"prep_label_{choice}").value is None
        assert app.multiselect(key=f"prep_features_{choice}").value == ["pixels", "kind"]
        app.text_input(key="prep_name").set_value(unique("unlabelled")).run()
        assert "choose the label column" in why_not(app) and app.button(key="prepare").disabled
        app.selectbox(key=f"prep_label_{choice}").set_value("kind").run()
        assert "the label 'kind' cannot be a feature too" in why_not(app)
        app.multiselect(key=f"prep_features_{choice}").set_value(["pixels"]).run()
        assert not app.button(key="prepare").disabled
        assert "To launch: prepare the dataset first." in why_not(app)
    finally:
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


def test_random_search_needs_a_number_of_configs(fashion_2seg: str) -> None:
    app = open_page("launch")
    app.selectbox(key="dataset").set_value(fashion_2seg).run()
    app.selectbox(key="procedure").set_value("random").run()
    assert launch_button(app).disabled
    assert "To launch: random needs the number of configs to sample." in why_not(app)
    app.number_input(key="num_configs").set_value(3).run()
    assert not launch_button(app).disabled and not why_not(app)


def test_grid_with_a_range_cannot_launch_until_it_is_choices_or_sampled(fashion_2seg: str) -> None:
    app = open_page("launch")
    app.selectbox(key="dataset").set_value(fashion_2seg).run()
    app.selectbox(key="model").set_value("mlp").run()
    app.selectbox(key="mode_mlp_lr").set_value("range").run()
    app.text_input(key="low_mlp_lr").set_value("0.001").run()
    app.text_input(key="high_mlp_lr").set_value("0.1").run()
    assert launch_button(app).disabled
    assert "grid cannot enumerate a range (lr): give choices, or pick random" in why_not(app), why_not(app)
    app.selectbox(key="procedure").set_value("hyperband").run()  # hyperband without a count is a grid too
    assert launch_button(app).disabled and "grid cannot enumerate a range (lr)" in why_not(app)
    app.number_input(key="num_configs").set_value(4).run()
    assert not launch_button(app).disabled and not why_not(app)
    app.selectbox(key="procedure").set_value("grid").run()
    app.selectbox(key="mode_mlp_lr").set_value("choices").run()
    app.text_input(key="choices_mlp_lr").set_value("0.001, 0.01").run()
    assert not launch_button(app).disabled and not why_not(app)
