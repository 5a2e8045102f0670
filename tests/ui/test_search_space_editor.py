"""The Launch page's search-space editor and the forms' values (ui/search_space_editor.py): pure, no database."""

from __future__ import annotations

import pytest
import search_space_editor as editor
from search_space_editor import ParamSpec, SpaceEntry, SpaceError

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
    space = editor.build_search_space(entries, PARAMS)
    assert space == {"lr": {"min": 0.0001, "max": 0.1, "log": True}, "batch_size": [32, 64], "optimizer": "sgd"}
    assert editor.build_search_space(editor.space_entries(space), PARAMS) == space
    assert editor.build_search_space([SpaceEntry("lr", "default")] + entries[1:], PARAMS) == {
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
        editor.build_search_space([entry], PARAMS)


def test_grid_size_counts_the_combinations_and_refuses_ranges() -> None:
    space = {"lr": [0.1, 0.01], "batch_size": {"choices": [1, 2, 3]}, "optimizer": "sgd", "filters": [8]}
    assert editor.grid_size(space) == 6
    assert editor.searched_keys(space) == ["lr", "batch_size"]
    assert editor.grid_size({"lr": {"min": 0.1, "max": 1.0}}) is None
    assert editor.searched_keys({"lr": {"min": 0.1, "max": 1.0}}) == ["lr"]


def test_roster_rows_become_param_specs_by_model() -> None:
    rows = [
        {"model": "mlp", "model_doc": "a perceptron", "param": "lr", "type": "float", "default_value": 0.001}
        | {"allowed": "[1e-12, 10.0]", "param_doc": "learning rate"},
        {"model": "mlp", "model_doc": "a perceptron", "param": "hidden_units", "type": "int", "default_value": 64}
        | {"allowed": "[1, 65536]", "param_doc": "units"},
    ]
    assert editor.param_specs(rows) == {
        "mlp": (
            "a perceptron",
            [
                ParamSpec("lr", "float", 0.001, "[1e-12, 10.0]", "learning rate"),
                ParamSpec("hidden_units", "int", 64, "[1, 65536]", "units"),
            ],
        )
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [("[0.1", "not valid JSON"), ("[0.1, 0.2]", "give a JSON object"), ("{}", "give a JSON object")],
)
def test_a_typed_space_that_is_no_json_object_is_refused(raw: str, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        editor.parse_space_json(raw)


def test_form_values_are_typed_and_clones_get_epochs_left() -> None:
    assert [editor.parse_param(raw) for raw in ("0.01", "64", "true", " adam ")] == [0.01, 64, True, "adam"]
    assert editor.clone_max_epochs(epochs_done=2, max_epochs=5, workload_max_epochs=5) == 5
    assert editor.clone_max_epochs(epochs_done=5, max_epochs=5, workload_max_epochs=3) == 8
