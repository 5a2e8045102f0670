"""The built-in models: their hyper-parameters (documented, validated) and builders.

Validation never imports Keras, so ``run_model_selection`` checks a search space
in milliseconds; only :func:`build` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cerebro_plpy.params import TRAINING_PARAMS, Param, ParamError, complete_params

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class RosterModel:
    name: str
    doc: str
    architecture: tuple[Param, ...]
    builder: Callable[[dict[str, Any], tuple[int, ...], int], keras.Model]
    #: Feature ranks the model accepts (1 = flat vectors, 2 = HxW, 3 = HxWxC).
    input_ranks: tuple[int, ...]

    @property
    def params(self) -> tuple[Param, ...]:
        return (*TRAINING_PARAMS, *self.architecture)


def _build_mlp(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    import keras

    layers: list[Any] = [keras.Input(input_shape), keras.layers.Flatten()]
    for _ in range(params["hidden_layers"]):
        layers.append(keras.layers.Dense(params["hidden_units"], activation=params["activation"]))
        if params["dropout"] > 0:
            layers.append(keras.layers.Dropout(params["dropout"]))
    layers.append(keras.layers.Dense(num_classes, activation="softmax"))
    return keras.Sequential(layers, name="mlp")


def _build_cnn(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    import keras

    filters, kernel = params["filters"], params["kernel_size"]
    image_shape = input_shape if len(input_shape) == 3 else (*input_shape, 1)
    layers: list[Any] = [
        keras.Input(input_shape),
        keras.layers.Reshape(image_shape),
        keras.layers.Conv2D(filters, kernel, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(2 * filters, kernel, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(params["dense_units"], activation="relu"),
    ]
    if params["dropout"] > 0:
        layers.append(keras.layers.Dropout(params["dropout"]))
    layers.append(keras.layers.Dense(num_classes, activation="softmax"))
    return keras.Sequential(layers, name="cnn")


ROSTER: dict[str, RosterModel] = {
    model.name: model
    for model in (
        RosterModel(
            "mlp",
            "fully connected network for tabular (or flattened) features",
            (
                Param("hidden_units", int, 128, "units per hidden layer", low=1, high=65536),
                Param("hidden_layers", int, 2, "number of hidden layers", low=0, high=64),
                Param("activation", str, "relu", "hidden activation", choices=("relu", "tanh", "gelu", "elu")),
                Param("dropout", float, 0.0, "dropout rate after each hidden layer", low=0.0, high=0.95),
            ),
            _build_mlp,
            (1, 2, 3),
        ),
        RosterModel(
            "cnn",
            "two conv/pool blocks and a dense head, for images (HxW or HxWxC)",
            (
                Param(
                    "filters",
                    int,
                    32,
                    "filters of the first conv layer (the second has twice as many)",
                    low=1,
                    high=1024,
                ),
                Param("kernel_size", int, 3, "conv kernel size", low=1, high=15),
                Param("dense_units", int, 128, "units of the dense head", low=1, high=65536),
                Param("dropout", float, 0.0, "dropout rate before the output layer", low=0.0, high=0.95),
            ),
            _build_cnn,
            (2, 3),
        ),
    )
}


def roster_model(name: str) -> RosterModel:
    try:
        return ROSTER[name]
    except KeyError:
        raise ParamError(f"unknown model {name!r}; the roster has {', '.join(sorted(ROSTER))}") from None


def validate(model: str, params: dict[str, Any], feature_shape: tuple[int, ...]) -> dict[str, Any]:
    """Complete, checked params of one config of ``model`` on features of ``feature_shape``."""
    entry = roster_model(model)
    if len(feature_shape) not in entry.input_ranks:
        raise ParamError(
            f"model {model!r} needs features of rank {' or '.join(map(str, entry.input_ranks))}, "
            f"the dataset's feature_shape is {list(feature_shape)}"
        )
    return complete_params(entry.params, params, model)


def architecture_key(model: str, params: dict[str, Any]) -> tuple[Any, ...]:
    """What decides the variables' structure: configs sharing it can share one compiled model."""
    entry = roster_model(model)
    return (model, params["optimizer"], *(params[p.name] for p in entry.architecture))


def build(model: str, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """A freshly initialised, uncompiled Keras model."""
    return roster_model(model).builder(params, input_shape, num_classes)
