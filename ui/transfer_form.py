"""The Launch form's base and layer pickers for the roster model ``transfer``, apart from Streamlit (tested on their
own): which layers a cut may name, and why a choice would be refused, as the database would say it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MODEL = "transfer"
#: The transfer params the pickers set (the rest go through the search-space editor).
PICKED = ("base", "layer", "trainable_from")
#: trainable_from's choice that trains nothing of the base.
FROZEN = ""


def shape_text(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape))


def cut_layers(layers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The layers of ``model_layers`` rows that ``layer`` and ``trainable_from`` may name, in order: the computing
    ones (not the input, not a nested model's own row: its layers follow it, named ``outer/inner``)."""
    names = [layer["name"] for layer in layers]
    return [
        layer
        for layer in layers
        if layer["class"] != "InputLayer" and not any(name.startswith(layer["name"] + "/") for name in names)
    ]


def layer_label(layer: dict[str, Any]) -> str:
    """``cnn/flatten · Flatten → (None, 676)``: what a picker shows of a layer."""
    return f"{layer['name']} · {layer['class']} → {layer['output_shape']}"


def shape_problem(base: dict[str, Any], feature_shape: Sequence[int] | None) -> str | None:
    """Why ``base`` (an ``imported_model_catalog`` row) cannot be fine-tuned on the dataset's features (None if it
    can, or while no dataset is chosen)."""
    if feature_shape is None or list(base["input_shape"]) == list(feature_shape):
        return None
    return (
        f"base {base['name']!r} takes inputs of shape {shape_text(base['input_shape'])}, the dataset's features are "
        f"{shape_text(feature_shape)}: pick a base of the dataset's shape"
    )


def layer_problem(cuts: Sequence[dict[str, Any]], layers: Sequence[str], trainable_from: Sequence[str]) -> str | None:
    """Why some combination of the chosen layers would be refused (None if none is); no layers chosen is the
    default (the one before the classifier), no trainable_from the frozen base."""
    names = [layer["name"] for layer in cuts]
    if len(names) < 2 and not layers:
        return "the base has no layer before its classifier: choose the layer to cut at"
    cuts_at = list(layers) or names[-2:-1]
    for start in (name for name in trainable_from if name != FROZEN):
        late = [layer for layer in cuts_at if names.index(start) > names.index(layer)]
        if late:
            return (
                f"trainable from {start!r} comes after layer {late[0]!r}: train from a layer at or before every "
                "layer searched, or freeze the base"
            )
    return None


def space(base: str, layers: Sequence[str], trainable_from: Sequence[str]) -> dict[str, Any]:
    """The search space's picked keys: the base, and the layers and trainable_from choices (left out: defaults)."""
    picked: dict[str, Any] = {"base": base}
    for key, values in (("layer", layers), ("trainable_from", trainable_from)):
        if values:
            picked[key] = list(values) if len(values) > 1 else values[0]
    return picked


def picked(search_space: dict[str, Any]) -> tuple[str | None, list[str], list[str]]:
    """The pickers' values that show ``search_space`` (a drill-down's): base, layers, trainable_from choices
    (the inverse of :func:`space`)."""

    def listed(key: str) -> list[str]:
        value = search_space.get(key, [])
        value = value.get("choices", []) if isinstance(value, dict) else value
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]

    base = search_space.get("base")
    layers = [layer for layer in listed("layer") if layer]  # '' is the default: no layer picked
    return (str(base) if isinstance(base, str) else None), layers, listed("trainable_from")
