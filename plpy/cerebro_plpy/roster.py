"""The built-in models: their hyper-parameters (documented, validated) and builders.

Validation never imports Keras, so ``run_model_selection`` checks a search space
in milliseconds; only :func:`build` does.

A registered model (a custom script, see :mod:`cerebro_plpy.custom`) has open
hyper-parameters: the training ones are checked as for the roster, any other key
with a scalar value is handed to its script as is. Callers say whether a name is
registered (``registered=True``): only the database knows.
"""

from __future__ import annotations

import functools
import math
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
    #: None for a registered script and for ``transfer`` (built around its base: :mod:`cerebro_plpy.transfer`).
    builder: Callable[[dict[str, Any], tuple[int, ...], int], keras.Model] | None
    #: Feature ranks the model accepts (1 = flat vectors, 2 = HxW, 3 = HxWxC).
    input_ranks: tuple[int, ...]
    #: Keys beyond ``params`` are accepted (registered scripts read what they like).
    open_params: bool = False
    #: Checks across parameters and the feature shape; raises :class:`ParamError`.
    check: Callable[[dict[str, Any], tuple[int, ...]], None] | None = None
    #: The number of weights ``builder`` would create, told without building (None: unknown).
    count: Callable[[dict[str, Any], tuple[int, ...], int], int] | None = None

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


def _count_mlp(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> int:
    width, total = math.prod(input_shape), 0
    for _ in range(params["hidden_layers"]):
        total += width * params["hidden_units"] + params["hidden_units"]
        width = params["hidden_units"]
    return total + width * num_classes + num_classes


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


def _count_cnn(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> int:
    filters, kernel, dense = params["filters"], params["kernel_size"], params["dense_units"]
    height, width, channels = input_shape if len(input_shape) == 3 else (*input_shape, 1)
    first = kernel * kernel * channels * filters + filters
    second = kernel * kernel * filters * 2 * filters + 2 * filters
    flat = (height // 2 // 2) * (width // 2 // 2) * 2 * filters  # after two 2x2 poolings
    return first + second + flat * dense + dense + dense * num_classes + num_classes


#: keras.applications refuse smaller images.
MIN_IMAGE_SIZE = 32


def _image_size(params: dict[str, Any], input_shape: tuple[int, ...]) -> int:
    return int(params["image_size"]) or max(MIN_IMAGE_SIZE, *input_shape[:2])


def _check_image_size(params: dict[str, Any], input_shape: tuple[int, ...]) -> None:
    if 0 < params["image_size"] < MIN_IMAGE_SIZE:
        raise ParamError(f"image_size must be 0 (automatic) or at least {MIN_IMAGE_SIZE}, got {params['image_size']}")


def _application(
    name: str,
    params: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    backbone: Callable[[tuple[int, int, int], int], keras.Model],
) -> keras.Model:
    """A keras.applications network (no weights) behind a reshape to HxWxC and, if needed, a resize."""
    import keras

    height, width, channels = input_shape if len(input_shape) == 3 else (*input_shape, 1)
    size = _image_size(params, input_shape)
    inputs = keras.Input(input_shape)
    x = keras.layers.Reshape((height, width, channels))(inputs)
    if (height, width) != (size, size):
        x = keras.layers.Resizing(size, size)(x)
    return keras.Model(inputs, backbone((size, size, channels), num_classes)(x), name=name)


def _build_resnet50(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    import keras

    return _application(
        "resnet50",
        params,
        input_shape,
        num_classes,
        lambda shape, classes: keras.applications.ResNet50(weights=None, input_shape=shape, classes=classes),
    )


def _build_mobilenetv2(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    import keras

    return _application(
        "mobilenetv2",
        params,
        input_shape,
        num_classes,
        lambda shape, classes: keras.applications.MobileNetV2(
            weights=None, input_shape=shape, classes=classes, alpha=params["alpha"]
        ),
    )


def _check_bert(params: dict[str, Any], input_shape: tuple[int, ...]) -> None:
    if params["hidden_size"] % params["num_heads"]:
        raise ParamError(f"hidden_size {params['hidden_size']} must be a multiple of num_heads {params['num_heads']}")


def _build_bert(
    params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int, name: str = "bert"
) -> keras.Model:
    """A BERT-style encoder over token ids (stored as float32; 0 pads), classifying from the first position.

    Single-segment text: no token-type embeddings and no pooler, as DistilBERT (the ``distilbert`` entry)."""
    import keras

    (length,) = input_shape
    hidden, dropout, heads = params["hidden_size"], params["dropout"], params["num_heads"]
    tokens = keras.Input(input_shape)
    embedded = keras.layers.Embedding(params["vocabulary_size"], hidden, mask_zero=True)(tokens)
    positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) - 1  # 0 .. length - 1 in every row
    x = keras.layers.Add()([embedded, keras.layers.Embedding(length, hidden)(positions)])
    x = keras.layers.LayerNormalization(epsilon=1e-12)(x)
    for _ in range(params["num_layers"]):
        attention = keras.layers.MultiHeadAttention(heads, hidden // heads, dropout=dropout)(x, x)
        x = keras.layers.LayerNormalization(epsilon=1e-12)(
            keras.layers.Add()([x, keras.layers.Dropout(dropout)(attention)])
        )
        feed_forward = keras.layers.Dense(params["intermediate_size"], activation="gelu")(x)
        feed_forward = keras.layers.Dropout(dropout)(keras.layers.Dense(hidden)(feed_forward))
        x = keras.layers.LayerNormalization(epsilon=1e-12)(keras.layers.Add()([x, feed_forward]))
    # The first position (the text tokenizer's start token) is never padding: a masked mean
    # over an all-padding row would divide by zero.
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x[:, 0, :])
    return keras.Model(tokens, outputs, name=name)


def _count_bert(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> int:
    hidden, inner = params["hidden_size"], params["intermediate_size"]
    embeddings = (params["vocabulary_size"] + input_shape[0]) * hidden + 2 * hidden
    # attention (4 projections with biases) + 2 layer norms + the feed-forward pair
    block = 4 * (hidden * hidden + hidden) + 4 * hidden + hidden * inner + inner + inner * hidden + hidden
    return embeddings + params["num_layers"] * block + hidden * num_classes + num_classes


def _check_transfer(params: dict[str, Any], input_shape: tuple[int, ...]) -> None:
    if not params["base"].strip():
        raise ParamError(
            "model 'transfer' needs base: the name of an imported model to fine-tune",
            "SELECT name FROM imported_model_catalog lists the models you imported (import_model, README: "
            "Transfer learning)",
        )


def parameter_count(model: str, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> int | None:
    """How many weights a roster model will have, without building it (None where it cannot be told)."""
    entry = ROSTER.get(model)
    return None if entry is None or entry.count is None else entry.count(params, input_shape, num_classes)


_IMAGE_SIZE = Param(
    "image_size",
    int,
    0,
    f"side the images are resized to; 0 = their own size, at least {MIN_IMAGE_SIZE} (the applications' minimum)",
    low=0,
    high=1024,
)


def _bert_params(
    num_layers: int, num_heads: int, hidden_size: int, intermediate_size: int, vocabulary_size: int
) -> tuple[Param, ...]:
    """bert's hyper-parameters with these defaults (``distilbert`` is bert at another size)."""
    return (
        Param("num_layers", int, num_layers, "transformer blocks", low=1, high=48),
        Param("num_heads", int, num_heads, "attention heads per block (must divide hidden_size)", low=1, high=64),
        Param("hidden_size", int, hidden_size, "width of the embeddings and blocks", low=2, high=4096),
        Param(
            "intermediate_size", int, intermediate_size, "units of each block's feed-forward layer", low=1, high=16384
        ),
        Param(
            "vocabulary_size",
            int,
            vocabulary_size,
            "token embedding rows: at least the dataset's vocabulary_size (token ids must be below it)",
            low=2,
            high=2_000_000,
        ),
        Param("dropout", float, 0.1, "dropout after attention and feed-forward", low=0.0, high=0.95),
    )


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
            count=_count_mlp,
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
            count=_count_cnn,
        ),
        RosterModel(
            "resnet50",
            "keras.applications.ResNet50 without pretrained weights, for images (grayscale included)",
            (_IMAGE_SIZE,),
            _build_resnet50,
            (2, 3),
            check=_check_image_size,
        ),
        RosterModel(
            "mobilenetv2",
            "keras.applications.MobileNetV2 without pretrained weights, for images (grayscale included)",
            (
                Param("alpha", float, 1.0, "width multiplier of every layer", choices=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4)),
                _IMAGE_SIZE,
            ),
            _build_mobilenetv2,
            (2, 3),
            check=_check_image_size,
        ),
        RosterModel(
            "bert",
            "BERT-style transformer encoder over token ids (a text dataset's features); sequence length from the data",
            _bert_params(num_layers=2, num_heads=2, hidden_size=64, intermediate_size=128, vocabulary_size=20000),
            _build_bert,
            (1,),
            check=_check_bert,
            count=_count_bert,
        ),
        RosterModel(
            "distilbert",
            "bert at DistilBERT-base's size (6 blocks, hidden 768, 12 heads, feed-forward 3072, WordPiece's 30522 "
            "token rows): 66.4M encoder weights at 512 tokens",
            _bert_params(num_layers=6, num_heads=12, hidden_size=768, intermediate_size=3072, vocabulary_size=30522),
            functools.partial(_build_bert, name="distilbert"),
            (1,),
            check=_check_bert,
            count=_count_bert,
        ),
        RosterModel(
            "transfer",
            "fine-tunes an imported model (import_model): the base cut at layer, frozen below trainable_from, "
            "under a new dense head",
            (
                Param("base", str, "", "name of the imported model to fine-tune (imported_model_catalog)"),
                Param(
                    "layer",
                    str,
                    "",
                    "the base's layer whose output feeds the head (model_layers(base)); '' = the one before its "
                    "classifier",
                ),
                Param(
                    "trainable_from",
                    str,
                    "",
                    "the base's layers from this one up to layer are trained, those below stay frozen; '' = none",
                ),
                Param("head_units", int, 128, "units of the head's hidden dense layer", low=1, high=65536),
                Param("dropout", float, 0.0, "dropout rate before the head's output layer", low=0.0, high=0.95),
            ),
            None,
            (1, 2, 3),
            check=_check_transfer,
        ),
    )
}


def roster_model(name: str, registered: bool = False) -> RosterModel:
    if name in ROSTER:
        return ROSTER[name]
    if registered:
        return RosterModel(name, "registered script (register_model)", (), None, (1, 2, 3), open_params=True)
    raise ParamError(
        f"unknown model {name!r}; the roster has {', '.join(sorted(ROSTER))} (or register_model one)",
        "SELECT DISTINCT model, model_doc FROM roster lists the built-in models, SELECT name FROM registered_models "
        "the registered scripts (README, Custom models)",
    )


def validate(
    model: str, params: dict[str, Any], feature_shape: tuple[int, ...], registered: bool = False
) -> dict[str, Any]:
    """Complete, checked params of one config of ``model`` on features of ``feature_shape``."""
    entry = roster_model(model, registered)
    if len(feature_shape) not in entry.input_ranks:
        raise ParamError(
            f"model {model!r} needs features of rank {' or '.join(map(str, entry.input_ranks))}, "
            f"the dataset's feature_shape is {list(feature_shape)}"
        )
    if not entry.open_params:
        completed = complete_params(entry.params, params, model)
        if entry.check is not None:
            entry.check(completed, feature_shape)
        return completed
    declared = {p.name for p in entry.params}
    extra = {key: value for key, value in params.items() if key not in declared}
    for key, value in extra.items():
        if isinstance(value, dict | list) or value is None:
            raise ParamError(f"{key} must be a number, string or boolean for model {model!r}, got {value!r}")
    given = {key: value for key, value in params.items() if key in declared}
    return {**complete_params(entry.params, given, model), **dict(sorted(extra.items()))}


def architecture_key(model: str, params: dict[str, Any], registered: bool = False) -> tuple[Any, ...]:
    """What decides the variables' structure: configs sharing it can share one compiled model.

    A registered script may build anything from any key but lr and batch_size.
    """
    entry = roster_model(model, registered)
    if entry.open_params:
        fixed = ("lr", "batch_size", "optimizer")
        return (model, params["optimizer"], *(f"{k}={params[k]!r}" for k in sorted(params) if k not in fixed))
    return (model, params["optimizer"], *(params[p.name] for p in entry.architecture))


def build(model: str, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """A freshly initialised, uncompiled Keras model of the roster."""
    builder = roster_model(model).builder
    assert builder is not None, "only roster models have builders"
    return builder(params, input_shape, num_classes)
