"""Imported models (``import_model``): a pretrained ``.keras`` archive, checked and described before it is stored.

Any ``cerebro_user`` may import, so the archive is treated as hostile: it is loaded in Keras' safe mode (no
``Lambda`` bytecode, only Keras' own classes, no custom objects) in a fresh child process under an address-space
rlimit (:mod:`cerebro_plpy.child`), never in the server backend: a config that declares huge layers fails there,
and no class another script registered in this backend is found. What the check finds (shapes, parameter counts,
every layer's output shape) is stored with the archive, so that reading a model's layers imports no TensorFlow.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cerebro_plpy import child

if TYPE_CHECKING:
    import keras

#: Why a model is refused -> (SQLSTATE condition name, hint).
REFUSALS = {
    "not_keras": (
        "invalid_binary_representation",
        "import_model takes the bytes of a Keras 3 .keras file as model.save('name.keras') writes it (not .h5, "
        "not a SavedModel directory); cerebro-db import-model NAME FILE.keras reads one",
    ),
    "unsafe": (
        "feature_not_supported",
        "models are loaded in Keras' safe mode: only Keras' own layers, no Lambda layers (their Python code could "
        "run anything) and no custom classes; rebuild the model from built-in layers and save it again",
    ),
    "unloadable": (
        "invalid_parameter_value",
        "the archive must load with keras.saving.load_model(path, safe_mode=True) in this server's Keras",
    ),
    "shape": (
        "invalid_parameter_value",
        "save the model with one fixed input, e.g. keras.Input(shape=(28, 28, 1)): only the batch dimension may be "
        "None, and one input and one output (a dataset feeds one tensor of one shape)",
    ),
    "too_big": (
        "program_limit_exceeded",
        f"a model is checked in a process limited to {child.ADDRESS_SPACE / 2**30:g} GB of address space; "
        "import a smaller model",
    ),
}


class ImportedModelError(ValueError):
    """A model import_model refuses; ``kind`` is a key of :data:`REFUSALS` (its SQLSTATE and hint)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.sqlstate, self.hint = REFUSALS[kind]


def check_archive(data: bytes) -> None:
    """Refuse bytes that are not a Keras 3 archive (a zip holding ``config.json``) before any child starts."""
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        raise ImportedModelError(f"the {len(data):,} bytes given are not a Keras archive (not a zip file)", "not_keras")
    try:
        with zipfile.ZipFile(buffer) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as error:
        raise ImportedModelError(f"the bytes given are not a Keras archive ({error})", "not_keras") from None
    if "config.json" not in names:
        raise ImportedModelError(
            f"the zip file given is not a Keras archive: no config.json among {sorted(names)[:5]}", "not_keras"
        )


def load(path: Path) -> keras.Model:
    """The model in ``path``, loaded in safe mode and not compiled (its optimizer is not the importer's business)."""
    import keras

    try:
        loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure to load is a refusal, named
        if child.is_memory_error(error):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        unsafe = any(word in str(error) for word in ("safe_mode", "Could not locate", "Lambda"))
        raise ImportedModelError(
            f"the model does not load in Keras' safe mode: {message[:400]}", "unsafe" if unsafe else "unloadable"
        ) from None
    if not isinstance(loaded, keras.Model):
        raise ImportedModelError(f"the archive holds a {type(loaded).__name__}, not a keras.Model", "unloadable")
    return loaded


def _dims(shape: Any) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]


def _shape_text(shapes: list[list[int | None]]) -> str:
    """Keras' own notation: ``(None, 14, 14, 32)``, a list of them for a layer with several outputs."""
    texts = [str(tuple(shape)) for shape in shapes]
    return texts[0] if len(texts) == 1 else f"[{', '.join(texts)}]"


def _layer(layer: keras.Layer, path: str) -> dict[str, Any]:
    import keras

    # A layer called more than once (shared) has an output per call; its first is the one in the model's graph order.
    outputs = keras.tree.flatten(layer._inbound_nodes[0].output_tensors) if layer._inbound_nodes else []
    shapes = [_dims(tensor.shape) for tensor in outputs]
    return {
        "name": path + layer.name,
        "class": type(layer).__name__,
        "output_shape": _shape_text(shapes) if shapes else None,
        "output_shapes": shapes,
        "params": int(layer.count_params()) if layer.built else 0,
        "trainable": bool(layer.trainable),
    }


def _layers(model: keras.Model, path: str = "") -> list[dict[str, Any]]:
    """``model.layers`` in order, each nested model followed by its own layers, named by their path
    (``outer/inner``: Keras names cannot contain a slash). A model ``cerebro-db export`` wrote is one: its
    normalization, then the trained model and its layers."""
    import keras

    found = []
    for layer in model.layers:
        found.append(_layer(layer, path))
        if isinstance(layer, keras.Model):
            found.extend(_layers(layer, f"{path}{layer.name}/"))
    return found


def describe(model: keras.Model) -> dict[str, Any]:
    """Shapes (per example: the batch dimension left out), parameter count and layers (:func:`_layers`) of a model
    with one fixed input and one output; :class:`ImportedModelError` otherwise."""
    inputs, outputs = model.inputs or [], model.outputs or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ImportedModelError(f"the model has {len(inputs)} inputs and {len(outputs)} outputs, not 1 and 1", "shape")
    input_shape = _dims(inputs[0].shape)
    if len(input_shape) < 2 or any(d is None for d in input_shape[1:]):
        raise ImportedModelError(
            f"the model's input shape {tuple(input_shape)} is not fixed: only the batch dimension may be None", "shape"
        )
    return {
        "input_shape": input_shape[1:],
        "output_shape": _dims(outputs[0].shape)[1:],
        "params": int(model.count_params()),
        "layers": _layers(model),
    }


def inspect(data: bytes) -> dict[str, Any]:
    """:func:`describe` of the archive ``data``, loaded in a child process; :class:`ImportedModelError` if refused."""
    check_archive(data)
    with tempfile.TemporaryDirectory(prefix="cerebro_import_") as directory:
        path = Path(directory) / "model.keras"  # Keras reads a .keras file by its name
        path.write_bytes(data)
        try:
            done = child.run("cerebro_plpy.imported", {"path": str(path)})
        except subprocess.TimeoutExpired:
            raise ImportedModelError(f"loading the model took longer than {child.TIMEOUT_S:g} s", "too_big") from None
    answer = child.answer(done)
    if "description" in answer:
        description: dict[str, Any] = answer["description"]
        return description
    if "refusal" in answer:
        raise ImportedModelError(answer["refusal"]["message"], answer["refusal"]["kind"])
    reason = answer.get("memory") or child.died(done)
    raise ImportedModelError(
        f"loading the model failed within {child.ADDRESS_SPACE / 2**30:g} GB ({reason})", "too_big"
    )


def _main() -> None:
    child.limit_address_space()
    request = json.load(sys.stdin)
    try:
        answer: dict[str, Any] = {"description": describe(load(Path(request["path"])))}
    except ImportedModelError as error:
        answer = {"refusal": {"message": str(error), "kind": error.kind}}
    except Exception as error:  # noqa: BLE001 - reported to the parent, which refuses
        message = f"{type(error).__name__}: {error}"[:300]
        if child.is_memory_error(error):
            answer = {"memory": message}
        else:
            answer = {"refusal": {"message": f"the model does not load: {message}", "kind": "unloadable"}}
    print(json.dumps(answer))


if __name__ == "__main__":
    _main()
