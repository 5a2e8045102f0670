"""Imported models: what import_model's check accepts, what it refuses and why, and what it records."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import keras
import pytest

from cerebro_plpy import imported
from cerebro_plpy.imported import ImportedModelError


def tiny_model() -> keras.Model:
    """The "pretrained" model of these tests: a fixed input, a named hidden layer and a classifier."""
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Conv2D(2, 3, name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, activation="softmax", name="classes"),
        ]
    )


def lambda_model() -> keras.Model:
    """Python code in the archive: safe mode must refuse it."""
    return keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(2)])


def unfixed_model() -> keras.Model:
    """Sequences of any length: no fixed input shape."""
    inputs = keras.Input((None, 3))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def keras_bytes(model: keras.Model) -> bytes:
    """What model.save writes to a .keras file."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.keras"
        model.save(path)
        return path.read_bytes()


#: tiny_model's layers as model_layers lists them: name, class, output shape, params, trainable.
TINY_LAYERS = [
    ("conv", "Conv2D", "(None, 2, 2, 2)", 2 * 9 + 2, True),
    ("flat", "Flatten", "(None, 8)", 0, True),
    ("classes", "Dense", "(None, 3)", 8 * 3 + 3, True),
]


def test_a_fixed_input_model_is_described_layer_by_layer() -> None:
    model = tiny_model()
    model.get_layer("conv").trainable = False
    found = imported.describe(model)
    assert found["input_shape"] == [4, 4, 1] and found["output_shape"] == [3]
    assert found["params"] == 20 + 27
    layers = [(la["name"], la["class"], la["output_shape"], la["params"], la["trainable"]) for la in found["layers"]]
    assert layers == [(*TINY_LAYERS[0][:4], False), *TINY_LAYERS[1:]]
    assert found["layers"][0]["output_shapes"] == [[None, 2, 2, 2]]


def test_a_nested_model_is_followed_by_its_layers_named_by_their_path() -> None:
    """As cerebro-db export writes a config: its normalization, then the trained model."""
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(8, name="hidden"), keras.layers.Dense(3, name="out")], name="mlp"
    )
    outer = keras.Sequential([keras.Input((6,)), keras.layers.Normalization(mean=0.0, variance=1.0), inner])
    layers = [(la["name"], la["output_shape"], la["params"]) for la in imported.describe(outer)["layers"]]
    assert layers[1:] == [("mlp", "(None, 3)", 83), ("mlp/hidden", "(None, 8)", 56), ("mlp/out", "(None, 3)", 27)]


def test_an_input_without_a_fixed_shape_is_refused_naming_it() -> None:
    with pytest.raises(ImportedModelError, match=r"input shape \(None, None, 3\) is not fixed") as refused:
        imported.describe(unfixed_model())
    assert refused.value.kind == "shape" and refused.value.sqlstate == "invalid_parameter_value"


def test_two_inputs_are_refused() -> None:
    a, b = keras.Input((2,)), keras.Input((2,))
    model = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Concatenate()([a, b])))
    with pytest.raises(ImportedModelError, match="2 inputs and 1 outputs"):
        imported.describe(model)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "the 0 bytes given are not a Keras archive"),
        (b"HDF5 or anything else", "not a Keras archive"),
        (b"PK\x03\x04 a zip's signature, and garbage", "not a Keras archive"),
    ],
)
def test_bytes_that_are_not_a_zip_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(ImportedModelError, match=error) as refused:
        imported.check_archive(data)
    assert refused.value.sqlstate == "invalid_binary_representation"


def test_a_zip_without_a_keras_config_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("weights.bin", b"\0" * 8)
    with pytest.raises(ImportedModelError, match=r"no config.json among \['weights.bin'\]"):
        imported.check_archive(buffer.getvalue())


def test_a_lambda_layer_is_refused_by_safe_mode(tmp_path: Path) -> None:
    path = tmp_path / "lambda.keras"
    path.write_bytes(keras_bytes(lambda_model()))
    with pytest.raises(ImportedModelError, match="safe mode.*Lambda") as refused:
        imported.load(path)
    assert refused.value.kind == "unsafe" and "no Lambda layers" in refused.value.hint


def test_an_unknown_class_is_refused_by_safe_mode(tmp_path: Path) -> None:
    # A Keras archive whose config names a class no Keras module has (a custom layer, saved elsewhere).
    saved = io.BytesIO(keras_bytes(tiny_model()))
    changed = io.BytesIO()
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(changed, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename == "config.json":
                content = content.replace(b'"Flatten"', b'"MyFlatten"').replace(b'"keras.layers"', b'"my_layers"', 1)
            target.writestr(item, content)
    path = tmp_path / "custom.keras"
    path.write_bytes(changed.getvalue())
    with pytest.raises(ImportedModelError, match="safe mode") as refused:
        imported.load(path)
    assert refused.value.kind == "unsafe"


def test_inspect_loads_in_a_child_process_and_finds_what_describe_does() -> None:
    model = tiny_model()
    found = imported.inspect(keras_bytes(model))
    assert found == imported.describe(model)
