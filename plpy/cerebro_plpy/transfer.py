"""Fine-tuning an imported model (``import_model``): the roster's ``transfer`` entry.

A config's model is its base cut at ``layer`` (the base's layers up to and including it), frozen below
``trainable_from``, under a new head: ``Flatten`` (if the layer's output is not flat), ``Dense(head_units)``,
``Dropout(dropout)``, ``Dense(num_classes, softmax)``.

Checking a config's params reads only what ``import_model`` stored about the base (its input shape and layers,
:class:`Base`): no TensorFlow in the backend that creates a workload. The SQL side (``sql/40_api/97_transfer.sql``)
fetches the base the workload's owner may use and hands it in.

What hops: a transfer model's state holds only the config's part (:func:`fixed_variables` are left out): the
trainable weights, the non-trainable variables of trained layers (batch norm statistics), every random generator's
state, and the optimizer's variables. The frozen weights are the base's: a build takes them from the archive (a fresh
copy per model if part of the base trains; one frozen copy per backend, shared by every model that trains none of it
and by :mod:`cerebro_plpy.features`' passes: :func:`frozen_base`).

The base's leading top-level ``Normalization`` layers (the one ``cerebro-db export`` puts in front of a config) are
skipped: a unit's features are normalized already, by ``prepare_dataset`` with its own dataset's statistics.
"""

from __future__ import annotations

import itertools
import math
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cerebro_plpy import roster, search_space
from cerebro_plpy.params import ParamError
from cerebro_plpy.plpy_adapter import Database

if TYPE_CHECKING:
    import keras

MODEL = "transfer"
GD_BASES = "cerebro.bases"
GD_FROZEN = "cerebro.frozen_base"
#: Archives kept per backend (keyed by sha256): a backend trains one base at a time.
BASE_CACHE_SIZE = 1

BASE_HINT = (
    "SELECT name, input_shape FROM imported_model_catalog lists the imported models you may fine-tune "
    "(import_model adds one)"
)
LAYER_HINT = (
    "SELECT * FROM model_layers(base) lists the base's layers in order; layer and trainable_from name one of them "
    "('' = the defaults: the layer before the classifier, nothing of the base trained)"
)


@dataclass(frozen=True)
class Base:
    """An imported model as ``import_model`` described it (``imported_models`` row: name, input_shape, layers)."""

    name: str
    input_shape: tuple[int, ...]
    #: Every layer in order as stored, a nested model followed by its own layers (``outer/inner``).
    layers: tuple[dict[str, Any], ...]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Base:
        return cls(row["name"], tuple(row["input_shape"]), tuple(row["layers"]))

    @property
    def leaves(self) -> list[dict[str, Any]]:
        """The layers that compute (a nested model's own entry left out), in the order a cut walks them."""
        names = [layer["name"] for layer in self.layers]
        return [
            layer
            for layer in self.layers
            if layer["class"] != "InputLayer" and not any(n.startswith(layer["name"] + "/") for n in names)
        ]

    def index(self, name: str, param: str) -> int:
        """The position of leaf ``name`` among :attr:`leaves`; :class:`ParamError` naming ``param`` if none."""
        names = [layer["name"] for layer in self.leaves]
        if name not in names:
            raise ParamError(
                f"{param} {name!r} is not a layer of imported model {self.name!r}; its layers: {', '.join(names)}",
                LAYER_HINT,
            )
        return names.index(name)

    def default_layer(self) -> str:
        """The layer before the base's classifier (its last layer)."""
        leaves = self.leaves
        if len(leaves) < 2:
            raise ParamError(f"imported model {self.name!r} has no layer before its classifier", LAYER_HINT)
        return str(leaves[-2]["name"])


def resolve(params: dict[str, Any], base: Base | None, feature_shape: tuple[int, ...]) -> dict[str, Any]:
    """``params`` (completed by the roster) checked against the base, ``layer`` resolved to a layer's name."""
    if base is None:
        raise ParamError(f"unknown imported model {params['base']!r} (base)", BASE_HINT)
    if base.input_shape != tuple(feature_shape):
        raise ParamError(
            f"imported model {base.name!r} takes inputs of shape {list(base.input_shape)}, the dataset's "
            f"feature_shape is {list(feature_shape)}",
            "fine-tune a base on a dataset of its input shape (SELECT name, input_shape FROM imported_model_catalog, "
            "SELECT name, feature_shape FROM datasets)",
        )
    layer = params["layer"] or base.default_layer()
    cut = base.index(layer, "layer")
    if params["trainable_from"] and base.index(params["trainable_from"], "trainable_from") > cut:
        raise ParamError(
            f"trainable_from {params['trainable_from']!r} comes after layer {layer!r} in imported model "
            f"{base.name!r}: it would not be part of the model; name a layer at or before {layer!r}, or '' to freeze "
            "the whole base",
            LAYER_HINT,
        )
    return {**params, "layer": layer}


def check_space(space: Any, bases: dict[str, Base], feature_shape: tuple[int, ...]) -> None:
    """Every combination of base, layer and trainable_from a search space can make is a config :func:`resolve`
    accepts, so no procedure suggests one that is refused (``bases``: those the workload's owner may use)."""
    dimensions = search_space.parse(MODEL, space)
    defaults = {p.name: p.default for p in roster.ROSTER[MODEL].params}
    keys = ("base", "layer", "trainable_from")
    choices = [
        dimension.values if isinstance(dimension := dimensions.get(key), search_space.Choices) else (defaults[key],)
        for key in keys
    ]
    for values in itertools.product(*choices):
        point = {**defaults, **dict(zip(keys, values, strict=True))}
        resolve(point, bases.get(point["base"]), feature_shape)


# --- the memory guard's counts (no TensorFlow) ---


def _per_example(layer: dict[str, Any]) -> int:
    return sum(math.prod(d or 1 for d in shape[1:]) for shape in layer["output_shapes"])


def profile_counts(params: dict[str, Any], base: Base, num_classes: int) -> tuple[int, int, int]:
    """(weights, trainable weights, activations per example) of a resolved config, from the stored layers."""
    leaves = base.leaves
    cut = base.index(params["layer"], "layer")
    start = base.index(params["trainable_from"], "trainable_from") if params["trainable_from"] else cut + 1
    kept = leaves[: cut + 1]
    features = _per_example(kept[-1])
    units = params["head_units"]
    head = features * units + units + units * num_classes + num_classes
    weights = sum(int(layer["params"]) for layer in kept) + head
    trainable = sum(int(layer["params"]) for layer in leaves[start : cut + 1]) + head
    activations = sum(_per_example(layer) for layer in kept) + features
    activations += units * (2 if params["dropout"] > 0 else 1) + num_classes
    return weights, trainable, activations


# --- building (TensorFlow) ---


class MissingBaseError(RuntimeError):
    """A transfer config's base is not (or no longer) in ``imported_models`` here."""


_ARCHIVE_SQL = "SELECT keras_file FROM imported_models WHERE sha256 = $1 LIMIT 1"


def fetch_archive(db: Database, gd: dict[str, Any], sha256: str | None) -> None:
    """The archive of a transfer config's base (``sha256``; None for other models) cached in this backend, read
    once per base and backend."""
    if sha256 is None:
        return

    def read() -> bytes:
        rows = db.query(_ARCHIVE_SQL, ["text"], [sha256])
        if not rows:
            raise MissingBaseError(f"the imported model with sha256 {sha256[:12]}... (a transfer base) is not here")
        return bytes(rows[0]["keras_file"])

    cache_archive(gd, sha256, read)


def cache_archive(gd: dict[str, Any], sha256: str, fetch: Callable[[], bytes]) -> None:
    """Keep the base's archive in this backend (``fetch`` it if not here): every build loads a fresh copy."""
    cache: OrderedDict[str, bytes] = gd.setdefault(GD_BASES, OrderedDict())
    if sha256 not in cache:
        cache[sha256] = fetch()
        while len(cache) > BASE_CACHE_SIZE:
            cache.popitem(last=False)
    cache.move_to_end(sha256)


def load_base(gd: dict[str, Any], sha256: str) -> keras.Model:
    """A fresh copy of the cached base (a model that trains part of it must not share its layers), safe mode."""
    import keras

    cache: OrderedDict[str, bytes] = gd.get(GD_BASES, OrderedDict())
    if sha256 not in cache:
        raise KeyError(f"imported model {sha256[:12]} is not cached in this backend (cache_archive first)")
    with tempfile.TemporaryDirectory(prefix="cerebro_base_") as directory:
        path = Path(directory) / "base.keras"
        path.write_bytes(cache[sha256])
        loaded: keras.Model = keras.saving.load_model(path, safe_mode=True, compile=False)
    return loaded


def frozen_base(gd: dict[str, Any], sha256: str) -> keras.Model:
    """The cached base with every layer frozen, loaded once per backend (and base): shared by every model that trains
    none of it, as frozen weights never change and frozen batch norm runs in inference mode."""
    cached = gd.get(GD_FROZEN)
    if cached is None or cached[0] != sha256:
        base = load_base(gd, sha256)
        for _, layer in walk(base):
            layer.trainable = False
        cached = gd[GD_FROZEN] = (sha256, base)
    frozen: keras.Model = cached[1]
    return frozen


def base_for(gd: dict[str, Any], sha256: str, params: dict[str, Any]) -> keras.Model:
    """The base a config's model is built around: :func:`frozen_base` if it trains none of it, else a fresh copy."""
    return frozen_base(gd, sha256) if params["trainable_from"] == "" else load_base(gd, sha256)


def walk(model: keras.Model, path: str = "") -> Iterator[tuple[str, keras.Layer]]:
    """The computing layers of ``model`` in :attr:`Base.leaves`' order, named by their path."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from walk(layer, f"{path}{layer.name}/")
        elif not isinstance(layer, keras.layers.InputLayer):
            yield path + layer.name, layer


def _cut(model: keras.Model, path: str, x: Any, top: bool) -> Any:
    """``x`` through ``model``'s layers up to and including the one at ``path``, as new calls of the same layers
    (Keras 3 does not connect a nested layer's output to the outer model's input)."""
    import keras

    head, _, rest = path.partition("/")
    if not isinstance(model, keras.Sequential):
        # A functional graph: the cut inside it as a model of its own, called on x.
        if rest:
            inner = model.get_layer(head)
            (inner_input,) = keras.tree.flatten(inner._inbound_nodes[0].input_tensors)
            output = _cut(inner, rest, inner_input, top=False)
        else:
            output = model.get_layer(head).output
        return keras.Model(model.inputs, output, name=f"{model.name}_cut")(x)
    applied = False
    for layer in model.layers:
        if top and not applied and isinstance(layer, keras.layers.Normalization):
            # The exported dataset statistics: the unit's features are normalized already.
            if layer.name == head:
                return x
            continue
        applied = True
        if layer.name == head:
            return _cut(layer, rest, x, top=False) if rest else layer(x)
        x = layer(x)
    raise KeyError(f"layer {path!r} is not in model {model.name!r}")


def build(base: keras.Model, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The config's model around ``base`` (:func:`base_for`'s): frozen below trainable_from, cut, headed."""
    import keras

    layers = list(walk(base))
    names = [name for name, _ in layers]
    start = names.index(params["trainable_from"]) if params["trainable_from"] else len(names)
    for position, (_, layer) in enumerate(layers):
        layer.trainable = position >= start
    inputs = keras.Input(input_shape)
    return _headed(inputs, _cut(base, params["layer"], inputs, top=True), params, num_classes)


def build_head(features_shape: tuple[int, ...], params: dict[str, Any], num_classes: int) -> keras.Model:
    """A frozen config's head alone, on its cut's materialized outputs (:mod:`cerebro_plpy.features`): the same layers
    as :func:`build`'s head, so, seeded alike, the same initial weights, Dropout seed and state."""
    import keras

    inputs = keras.Input(features_shape)
    return _headed(inputs, inputs, params, num_classes)


def _headed(inputs: Any, x: Any, params: dict[str, Any], num_classes: int) -> keras.Model:
    import keras

    if len(x.shape) > 2:
        x = keras.layers.Flatten(name="head_flatten")(x)
    x = keras.layers.Dense(params["head_units"], activation="relu", name="head_dense")(x)
    if params["dropout"] > 0:
        x = keras.layers.Dropout(params["dropout"], name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head_classes")(x)
    model = keras.Model(inputs, outputs, name=MODEL)
    model.cerebro_transfer = True  # capture and restore leave the frozen weights out
    return model


def _computing_layers(model: keras.Model) -> Iterator[keras.Layer]:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _computing_layers(layer)
        else:
            yield layer


def fixed_variables(model: keras.Model) -> set[int]:
    """The ids of a transfer model's frozen weights (the base's, never trained); none for any other model.

    A frozen layer's random generator (a Dropout's) is not among them: it advances with every batch."""
    if not getattr(model, "cerebro_transfer", False):
        return set()
    return {id(v) for layer in _computing_layers(model) if not layer.trainable for v in layer.weights}
