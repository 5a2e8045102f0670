"""cerebro_plpy.search_space: parsing the user's space and expanding it into configs."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from cerebro_plpy import roster, search_space
from cerebro_plpy.params import ROSTER_HINT, ParamError
from cerebro_plpy.search_space import Choices, Range

TABULAR = (4,)
IMAGE = (8, 8, 1)
MLP_KEYS = {"lr", "batch_size", "optimizer", "hidden_units", "hidden_layers", "activation", "dropout"}


# --- parse -------------------------------------------------------------------------------------------------------


def test_parse_forms() -> None:
    dims = search_space.parse(
        "mlp",
        {
            "lr": [0.1, 0.01],
            "batch_size": {"choices": [16, 32.0]},
            "hidden_units": {"min": 8, "max": 64},
            "dropout": {"min": 0.0, "max": 0.5, "log": False},
            "optimizer": "sgd",
            "hidden_layers": 3.0,
        },
    )
    assert dims == {
        "lr": Choices((0.1, 0.01)),
        "batch_size": Choices((16, 32)),
        "hidden_units": Range(8.0, 64.0, False),
        "dropout": Range(0.0, 0.5, False),
        "optimizer": Choices(("sgd",)),
        "hidden_layers": Choices((3,)),
    }
    assert type(dims["batch_size"].values[1]) is int  # type: ignore[union-attr]
    assert type(dims["hidden_layers"].values[0]) is int  # type: ignore[union-attr]


def test_parse_log_range() -> None:
    assert search_space.parse("mlp", {"lr": {"min": 1e-4, "max": 1e-1, "log": True}}) == {"lr": Range(1e-4, 0.1, True)}


def test_parse_checks_choice_values() -> None:
    with pytest.raises(ParamError, match=r"optimizer must be one of \['adam', 'sgd', 'rmsprop'\], got 'nadam'"):
        search_space.parse("mlp", {"optimizer": ["adam", "nadam"]})
    with pytest.raises(ParamError, match="batch_size must be an integer, got 1.5"):
        search_space.parse("mlp", {"batch_size": 1.5})
    with pytest.raises(ParamError, match="lr must be <= 10.0"):
        search_space.parse("mlp", {"lr": {"min": 1, "max": 20}})


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"foo": [1]}, r"unknown hyper-parameter 'foo' in search_space for model 'mlp'; known: activation, batch_size"),
        ({"lr": []}, r"search_space\['lr'\] needs a non-empty list of choices, got \[\]"),
        ({"lr": {"choices": []}}, r"search_space\['lr'\] needs a non-empty list of choices"),
        ({"lr": {"choices": 0.1}}, r"search_space\['lr'\] needs a non-empty list of choices, got 0.1"),
        ({"lr": {"min": 0.5, "max": 0.1}}, r"search_space\['lr'\] has min 0.5 > max 0.1"),
        ({"hidden_units": {"min": 64, "max": 8}}, r"search_space\['hidden_units'\] has min 64 > max 8"),
        (
            {"dropout": {"min": 0.0, "max": 0.5, "log": True}},
            r"search_space\['dropout'\] is log-scaled, so min must be > 0, got 0.0",
        ),
        ({"lr": {"min": 0.1, "max": 0.5, "log": "yes"}}, r"search_space\['lr'\].log must be true or false"),
        (
            {"optimizer": {"min": 0, "max": 1}},
            r"search_space\['optimizer'\] is categorical; give choices, not a range",
        ),
        ({"lr": {"low": 0.1, "high": 0.5}}, r"search_space\['lr'\] has keys \['high', 'low'\]"),
        ({"lr": {"min": 0.1}}, r"search_space\['lr'\] has keys \['min'\]"),
        (
            {"lr": {"min": 0.1, "max": 0.5, "choices": [0.1]}},
            r"search_space\['lr'\] has keys \['choices', 'max', 'min'\]",
        ),
        ({"lr": {}}, r"search_space\['lr'\] has keys \[\]"),
    ],
)
def test_parse_errors_name_the_key(space: dict[str, Any], message: str) -> None:
    with pytest.raises(ParamError, match=message) as raised:
        search_space.parse("mlp", space)
    # Which hyper-parameters there are is the roster's to explain; a space of the wrong form is the search space's.
    unknown = message.startswith("unknown hyper-parameter")
    assert raised.value.hint == (ROSTER_HINT if unknown else search_space.SPACE_HINT)


@pytest.mark.parametrize("space", [{}, [], ["lr"], "lr", None, 3])
def test_parse_non_object_space(space: Any) -> None:
    with pytest.raises(ParamError, match="search_space must be a non-empty JSON object"):
        search_space.parse("mlp", space)


def test_parse_unknown_model() -> None:
    with pytest.raises(ParamError, match="unknown model 'vit'"):
        search_space.parse("vit", {"lr": [0.1]})


# --- expand: grid ------------------------------------------------------------------------------------------------


def test_grid_is_cartesian_product_of_complete_params() -> None:
    space = {"lr": [0.1, 0.01], "batch_size": [16, 32, 64], "optimizer": "sgd"}
    configs = search_space.expand("mlp", space, "grid", None, seed=0, feature_shape=TABULAR)
    assert len(configs) == 6
    assert {(c["lr"], c["batch_size"]) for c in configs} == set(itertools.product([0.1, 0.01], [16, 32, 64]))
    for config in configs:
        assert set(config) == MLP_KEYS
        assert config["optimizer"] == "sgd"
        assert config["hidden_units"] == 128
        assert config["dropout"] == 0.0
        assert config == roster.validate("mlp", config, TABULAR)


def test_grid_size_three_dimensions() -> None:
    space = {"filters": [4, 8], "kernel_size": {"choices": [3, 5, 7]}, "dropout": [0.0, 0.25], "lr": 0.01}
    configs = search_space.expand("cnn", space, "grid", None, seed=0, feature_shape=IMAGE)
    assert len(configs) == 12
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 12
    assert all(c["lr"] == 0.01 and c["dense_units"] == 128 for c in configs)


def test_grid_ignores_seed() -> None:
    space = {"lr": [0.1, 0.01], "batch_size": [16, 32]}
    assert search_space.expand("mlp", space, "grid", None, 1, TABULAR) == search_space.expand(
        "mlp", space, "grid", None, 2, TABULAR
    )


def test_grid_rejects_num_configs() -> None:
    with pytest.raises(ParamError, match="grid creates one config per combination of choices; leave num_configs NULL"):
        search_space.expand("mlp", {"lr": [0.1]}, "grid", 3, 0, TABULAR)


def test_grid_rejects_range() -> None:
    space = {"lr": [0.1], "dropout": {"min": 0.0, "max": 0.5}}
    with pytest.raises(
        ParamError, match=r"grid needs choices, but search_space\['dropout'\] is a range; use procedure 'random'"
    ):
        search_space.expand("mlp", space, "grid", None, 0, TABULAR)


def test_grid_checks_feature_rank() -> None:
    with pytest.raises(ParamError, match="model 'cnn' needs features of rank 2 or 3"):
        search_space.expand("cnn", {"filters": [4]}, "grid", None, 0, TABULAR)


# --- expand: random ----------------------------------------------------------------------------------------------

RANDOM_SPACE = {
    "lr": {"min": 1e-4, "max": 1e-1, "log": True},
    "hidden_units": {"min": 8, "max": 512, "log": True},
    "hidden_layers": {"min": 1, "max": 3},
    "dropout": {"min": 0.1, "max": 0.5},
    "batch_size": [16, 32],
    "optimizer": "rmsprop",
}


def test_random_count_bounds_and_types() -> None:
    configs = search_space.expand("mlp", RANDOM_SPACE, "random", 50, seed=3, feature_shape=TABULAR)
    assert len(configs) == 50
    for config in configs:
        assert set(config) == MLP_KEYS
        assert type(config["lr"]) is float and 1e-4 <= config["lr"] <= 1e-1
        assert type(config["hidden_units"]) is int and 8 <= config["hidden_units"] <= 512
        assert type(config["hidden_layers"]) is int and 1 <= config["hidden_layers"] <= 3
        assert type(config["dropout"]) is float and 0.1 <= config["dropout"] <= 0.5
        assert config["batch_size"] in (16, 32)
        assert config["optimizer"] == "rmsprop"
        assert config["activation"] == "relu"
    # every choice and every integer of a small range shows up in 50 draws
    assert {c["batch_size"] for c in configs} == {16, 32}
    assert {c["hidden_layers"] for c in configs} == {1, 2, 3}
    assert len({c["lr"] for c in configs}) == 50


def test_random_deterministic_per_seed() -> None:
    a = search_space.expand("mlp", RANDOM_SPACE, "random", 10, seed=7, feature_shape=TABULAR)
    b = search_space.expand("mlp", RANDOM_SPACE, "random", 10, seed=7, feature_shape=TABULAR)
    c = search_space.expand("mlp", RANDOM_SPACE, "random", 10, seed=8, feature_shape=TABULAR)
    assert a == b
    assert a != c
    assert [x["lr"] for x in a] != [x["lr"] for x in c]


def test_random_independent_of_key_order() -> None:
    reordered = dict(reversed(list(RANDOM_SPACE.items())))
    assert search_space.expand("mlp", reordered, "random", 5, 1, TABULAR) == search_space.expand(
        "mlp", RANDOM_SPACE, "random", 5, 1, TABULAR
    )


def test_random_log_range_is_log_uniform() -> None:
    space = {"lr": {"min": 1e-4, "max": 1e-1, "log": True}, "hidden_units": {"min": 1, "max": 1000, "log": True}}
    configs = search_space.expand("mlp", space, "random", 300, seed=0, feature_shape=TABULAR)
    lrs = [c["lr"] for c in configs]
    units = [c["hidden_units"] for c in configs]
    # log-uniform: about 2/3 of the draws below 1e-2 (a linear draw would give ~9%)
    assert 0.55 < sum(v < 1e-2 for v in lrs) / len(lrs) < 0.78
    # log-uniform on [1, 1000]: about 1/3 below 10 (linear: ~1%)
    assert 0.25 < sum(v < 10 for v in units) / len(units) < 0.42
    assert min(units) >= 1 and max(units) <= 1000


def test_random_linear_range_is_uniform() -> None:
    configs = search_space.expand("mlp", {"dropout": {"min": 0.0, "max": 0.8}}, "random", 300, 0, TABULAR)
    below = sum(c["dropout"] < 0.4 for c in configs) / 300
    assert 0.4 < below < 0.6


def test_random_int_range_degenerate() -> None:
    configs = search_space.expand("mlp", {"hidden_units": {"min": 8, "max": 8, "log": True}}, "random", 5, 0, TABULAR)
    assert [c["hidden_units"] for c in configs] == [8] * 5


@pytest.mark.parametrize("value", [10.0, 0.1, 7.0])
def test_random_float_log_range_stays_within_bounds(value: float) -> None:
    space = {"lr": {"min": value, "max": value, "log": True}}
    configs = search_space.expand("mlp", space, "random", 3, 0, TABULAR)
    assert [c["lr"] for c in configs] == [value] * 3


@pytest.mark.parametrize("num_configs", [None, 0, -1])
def test_random_needs_num_configs(num_configs: int | None) -> None:
    with pytest.raises(ParamError, match=f"procedure 'random' needs num_configs >= 1, got {num_configs}"):
        search_space.expand("mlp", {"lr": [0.1]}, "random", num_configs, 0, TABULAR)


def test_random_choices_only() -> None:
    configs = search_space.expand("mlp", {"activation": ["tanh", "elu"]}, "random", 40, 0, TABULAR)
    assert {c["activation"] for c in configs} == {"tanh", "elu"}


# --- procedures --------------------------------------------------------------------------------------------------


def test_unknown_procedure() -> None:
    with pytest.raises(ParamError, match="unknown procedure 'bayes'; choose one of grid, random, hyperopt, hyperband"):
        search_space.expand("mlp", {"lr": [0.1]}, "bayes", None, 0, TABULAR)


def test_hyperopt_starts_with_one_config_per_segment_and_hyperband_with_all() -> None:
    space = {"lr": {"min": 1e-4, "max": 1e-1, "log": True}}
    assert len(search_space.expand("mlp", space, "hyperopt", 10, 0, TABULAR, parallelism=2)) == 2
    assert len(search_space.expand("mlp", space, "hyperopt", 1, 0, TABULAR, parallelism=2)) == 1
    assert len(search_space.expand("mlp", space, "hyperband", 5, 0, TABULAR)) == 5
    assert len(search_space.expand("mlp", {"lr": [0.1, 0.2, 0.3]}, "hyperband", None, 0, TABULAR)) == 3


def test_procedure_checked_before_space() -> None:
    with pytest.raises(ParamError, match="unknown procedure"):
        search_space.expand("mlp", {"nonsense": 1}, "bayes", 4, 0, TABULAR)


def test_huge_number_from_json_is_a_param_error() -> None:
    space = json.loads('{"lr": [1' + "0" * 400 + "]}")
    with pytest.raises(ParamError, match="lr"):
        search_space.expand("mlp", space, "grid", None, 0, TABULAR)


# --- registered models: open parameters ---------------------------------------------------------------------------


def test_registered_models_take_any_key_typed_by_its_values() -> None:
    space = {"units": {"min": 8, "max": 64}, "rate": {"min": 0.0, "max": 0.5}, "kind": ["a", "b"], "lr": [0.1]}
    declared = search_space.declared_params("script", space, registered=True)
    assert {k: declared[k].kind for k in ("units", "rate", "kind", "lr")} == {
        "units": int,
        "rate": float,
        "kind": str,
        "lr": float,
    }
    configs = search_space.expand("script", space, "random", 6, 0, (4,), registered=True)
    assert all(isinstance(c["units"], int) and 8 <= c["units"] <= 64 for c in configs)
    assert all(isinstance(c["rate"], float) and c["kind"] in ("a", "b") for c in configs)
    assert all(c["lr"] == 0.1 and c["optimizer"] == "adam" for c in configs)  # training params still checked


def test_registered_models_still_check_the_training_params() -> None:
    with pytest.raises(ParamError, match="batch_size must be an integer"):
        search_space.parse("script", {"batch_size": [1.5]}, registered=True)
    with pytest.raises(ParamError, match="unknown model 'script'"):
        search_space.parse("script", {"units": [1]})


@pytest.mark.parametrize(
    ("space", "procedure", "num_configs", "message"),
    [
        ({"lr": [0.001 * i for i in range(1, 101)], "batch_size": list(range(1, 102))}, "grid", None, "grid would"),
        ({"lr": [0.01]}, "random", 10_001, "num_configs would create 10001 configs"),
    ],
)
def test_a_search_creating_too_many_configs_is_refused(
    space: dict[str, Any], procedure: str, num_configs: int | None, message: str
) -> None:
    with pytest.raises(ParamError, match=message):
        search_space.expand("mlp", space, procedure, num_configs, seed=0, feature_shape=(4,))


# --- refine (the drill_down suggestion) ---------------------------------------------------------------------------


def test_refine_spans_floats_on_a_log_range_and_keeps_the_chosen_values_of_the_others() -> None:
    space = {"lr": [0.001, 0.01, 0.1], "batch_size": [16, 64], "optimizer": "adam", "dropout": [0.0, 0.5]}
    chosen = [
        {"lr": 0.003, "batch_size": 16, "optimizer": "adam", "dropout": 0.0},
        {"lr": 0.0123456, "batch_size": 64, "optimizer": "adam", "dropout": 0.0},
    ]
    assert search_space.refine(space, chosen) == {
        "lr": {"min": 0.0015, "max": 0.0247, "log": True},
        "batch_size": [16, 64],
        "optimizer": "adam",
        "dropout": 0.0,  # 0.0 is no positive float: a fixed value, not a range around zero
    }
    search_space.parse("mlp", search_space.refine(space, chosen))  # a space run_model_selection accepts


def test_refine_leaves_out_keys_no_chosen_config_has() -> None:
    assert search_space.refine({"lr": [0.1], "units": [1, 2]}, [{"lr": 0.1}]) == {
        "lr": {"min": 0.05, "max": 0.2, "log": True}
    }
    assert search_space.refine({"lr": [0.1]}, []) == {}
