"""cerebro_plpy.params and cerebro_plpy.roster: hyper-parameter checks, defaults, validation, architecture keys."""

from __future__ import annotations

from typing import Any

import pytest

from cerebro_plpy import roster
from cerebro_plpy.params import TRAINING_PARAMS, Param, ParamError, complete_params

LR, BATCH_SIZE, OPTIMIZER = TRAINING_PARAMS

MLP_DEFAULTS = {
    "lr": 0.001,
    "batch_size": 64,
    "optimizer": "adam",
    "hidden_units": 128,
    "hidden_layers": 2,
    "activation": "relu",
    "dropout": 0.0,
}
CNN_DEFAULTS = {
    "lr": 0.001,
    "batch_size": 64,
    "optimizer": "adam",
    "filters": 32,
    "kernel_size": 3,
    "dense_units": 128,
    "dropout": 0.0,
}


# --- Param.check -------------------------------------------------------------------------------------------------


def test_training_param_names() -> None:
    assert [p.name for p in TRAINING_PARAMS] == ["lr", "batch_size", "optimizer"]


@pytest.mark.parametrize(("value", "expected"), [(0.5, 0.5), (1, 1.0), (10, 10.0), (1e-12, 1e-12)])
def test_float_param_converts(value: Any, expected: float) -> None:
    checked = LR.check(value)
    assert checked == expected
    assert type(checked) is float


@pytest.mark.parametrize(("value", "expected"), [(32, 32), (32.0, 32), (1, 1), (65536.0, 65536)])
def test_int_param_converts(value: Any, expected: int) -> None:
    checked = BATCH_SIZE.check(value)
    assert checked == expected
    assert type(checked) is int


@pytest.mark.parametrize("param", [LR, BATCH_SIZE])
@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_a_number(param: Param, value: bool) -> None:
    with pytest.raises(ParamError, match=rf"{param.name} must be a number, got {value}"):
        param.check(value)


@pytest.mark.parametrize("value", ["0.1", None, [0.1], {"v": 1}])
def test_non_number_rejected(value: Any) -> None:
    with pytest.raises(ParamError, match="lr must be a number"):
        LR.check(value)


@pytest.mark.parametrize("value", [1.5, 32.0001])
def test_int_param_rejects_fraction(value: float) -> None:
    with pytest.raises(ParamError, match=f"batch_size must be an integer, got {value}"):
        BATCH_SIZE.check(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_float_param_rejects_non_finite(value: float) -> None:
    with pytest.raises(ParamError, match="lr must be a finite number"):
        LR.check(value)


@pytest.mark.parametrize(
    ("param", "value"),
    [(BATCH_SIZE, float("inf")), (BATCH_SIZE, float("nan")), (BATCH_SIZE, 10**400), (LR, 10**400)],
    ids=["int-inf", "int-nan", "int-huge", "float-huge"],
)
def test_overflowing_values_raise_param_error(param: Param, value: Any) -> None:
    with pytest.raises(ParamError, match=param.name):
        param.check(value)


def test_string_param() -> None:
    assert OPTIMIZER.check("sgd") == "sgd"
    with pytest.raises(ParamError, match="optimizer must be a string, got 1"):
        OPTIMIZER.check(1)
    with pytest.raises(ParamError, match=r"optimizer must be one of \['adam', 'sgd', 'rmsprop'\], got 'nadam'"):
        OPTIMIZER.check("nadam")


def test_numeric_choices() -> None:
    param = Param("k", int, 3, "kernel", choices=(3, 5))
    assert param.check(5.0) == 5
    with pytest.raises(ParamError, match=r"k must be one of \[3, 5\], got 4"):
        param.check(4)


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        (LR, 0, "lr must be >= 1e-12, got 0.0"),
        (LR, 10.5, "lr must be <= 10.0, got 10.5"),
        (LR, -1, "lr must be >= 1e-12"),
        (BATCH_SIZE, 0, "batch_size must be >= 1, got 0"),
        (BATCH_SIZE, 65537, "batch_size must be <= 65536, got 65537"),
    ],
)
def test_bounds(param: Param, value: Any, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        param.check(value)


def test_bounds_are_inclusive() -> None:
    assert BATCH_SIZE.check(1) == 1
    assert BATCH_SIZE.check(65536) == 65536
    assert LR.check(10.0) == 10.0


# --- complete_params ---------------------------------------------------------------------------------------------


def test_complete_params_fills_defaults() -> None:
    assert complete_params(roster.roster_model("mlp").params, {}, "mlp") == MLP_DEFAULTS


def test_complete_params_checks_and_converts_given() -> None:
    completed = complete_params(
        roster.roster_model("mlp").params, {"lr": 1, "batch_size": 32.0, "activation": "tanh"}, "mlp"
    )
    assert completed == {**MLP_DEFAULTS, "lr": 1.0, "batch_size": 32, "activation": "tanh"}
    assert type(completed["lr"]) is float
    assert type(completed["batch_size"]) is int


def test_complete_params_rejects_unknown_keys() -> None:
    with pytest.raises(ParamError) as error:
        complete_params(roster.roster_model("mlp").params, {"zeta": 1, "alpha": 2, "lr": 0.1}, "mlp")
    message = str(error.value)
    assert "unknown hyper-parameter 'alpha' for model 'mlp'" in message
    assert "known: activation, batch_size, dropout, hidden_layers, hidden_units, lr, optimizer" in message


def test_complete_params_rejects_bad_value() -> None:
    with pytest.raises(ParamError, match="hidden_layers must be <= 64, got 65"):
        complete_params(roster.roster_model("mlp").params, {"hidden_layers": 65}, "mlp")


# --- roster.validate ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4,), (28, 28), (28, 28, 1)])
def test_validate_mlp_defaults(shape: tuple[int, ...]) -> None:
    assert roster.validate("mlp", {}, shape) == MLP_DEFAULTS


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 3)])
def test_validate_cnn_defaults(shape: tuple[int, ...]) -> None:
    assert roster.validate("cnn", {}, shape) == CNN_DEFAULTS


def test_validate_cnn_given_params() -> None:
    params = roster.validate("cnn", {"filters": 4, "kernel_size": 5, "lr": 0.1}, (8, 8, 1))
    assert params == {**CNN_DEFAULTS, "filters": 4, "kernel_size": 5, "lr": 0.1}


def test_validate_cnn_rejects_flat_features() -> None:
    with pytest.raises(
        ParamError, match=r"model 'cnn' needs features of rank 2 or 3, the dataset's feature_shape is \[784\]"
    ):
        roster.validate("cnn", {}, (784,))


def test_validate_mlp_rejects_rank_4() -> None:
    with pytest.raises(ParamError, match=r"model 'mlp' needs features of rank 1 or 2 or 3.*\[2, 2, 2, 2\]"):
        roster.validate("mlp", {}, (2, 2, 2, 2))


def test_validate_rejects_other_models_params() -> None:
    with pytest.raises(ParamError, match="unknown hyper-parameter 'hidden_units' for model 'cnn'"):
        roster.validate("cnn", {"hidden_units": 8}, (8, 8))


def test_validate_unknown_model() -> None:
    with pytest.raises(
        ParamError, match="unknown model 'resnet'; the roster has bert, cnn, distilbert, mlp, mobilenetv2, resnet50"
    ):
        roster.validate("resnet", {}, (4,))
    with pytest.raises(ParamError, match="unknown model 'resnet'"):
        roster.roster_model("resnet")


# --- architecture_key --------------------------------------------------------------------------------------------


def test_architecture_key_value() -> None:
    assert roster.architecture_key("mlp", MLP_DEFAULTS) == ("mlp", "adam", 128, 2, "relu", 0.0)
    assert roster.architecture_key("cnn", CNN_DEFAULTS) == ("cnn", "adam", 32, 3, 128, 0.0)


def test_architecture_key_ignores_lr_and_batch_size() -> None:
    a = roster.validate("mlp", {"lr": 0.1, "batch_size": 8}, (4,))
    b = roster.validate("mlp", {"lr": 0.0001, "batch_size": 512}, (4,))
    assert roster.architecture_key("mlp", a) == roster.architecture_key("mlp", b)


@pytest.mark.parametrize(
    "change",
    [{"optimizer": "sgd"}, {"hidden_units": 64}, {"hidden_layers": 1}, {"activation": "tanh"}, {"dropout": 0.5}],
)
def test_architecture_key_sees_optimizer_and_architecture(change: dict[str, Any]) -> None:
    base = roster.validate("mlp", {}, (4,))
    changed = roster.validate("mlp", change, (4,))
    assert roster.architecture_key("mlp", base) != roster.architecture_key("mlp", changed)


def test_architecture_key_differs_across_models() -> None:
    mlp = roster.validate("mlp", {"dropout": 0.0}, (8, 8))
    cnn = roster.validate("cnn", {}, (8, 8))
    assert roster.architecture_key("mlp", mlp)[0] == "mlp"
    assert roster.architecture_key("mlp", mlp) != roster.architecture_key("cnn", cnn)


# --- the application and text models ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "params", "shape", "error"),
    [
        ("resnet50", {"image_size": 16}, (8, 8), r"image_size must be 0 \(automatic\) or at least 32, got 16"),
        ("mobilenetv2", {"alpha": 0.6}, (8, 8, 3), r"alpha must be one of \[0.35, 0.5, 0.75, 1.0, 1.3, 1.4\]"),
        ("mobilenetv2", {}, (64,), r"needs features of rank 2 or 3"),
        ("bert", {"hidden_size": 30, "num_heads": 4}, (16,), "hidden_size 30 must be a multiple of num_heads 4"),
        ("bert", {}, (8, 8), r"model 'bert' needs features of rank 1"),
        ("bert", {"vocabulary_size": 1}, (16,), "vocabulary_size must be >= 2"),
    ],
)
def test_new_roster_models_refuse_bad_params(
    model: str, params: dict[str, Any], shape: tuple[int, ...], error: str
) -> None:
    with pytest.raises(ParamError, match=error):
        roster.validate(model, params, shape)


def test_every_roster_parameter_is_documented() -> None:
    for model in roster.ROSTER.values():
        assert model.doc
        assert all(p.doc and (p.choices or p.low is not None or p.kind is str) for p in model.params), model.name
