"""Fine-tuning an imported base (roster model ``transfer``): params checked against the stored layers, the model
cut and frozen as asked, and a state that holds only the config's part yet resumes bit-identically."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

from cerebro_plpy import imported, roster, training, transfer
from cerebro_plpy.params import ParamError
from cerebro_plpy.state import ModelState
from cerebro_plpy.training import ModelSpec
from tests.plpy.test_imported import keras_bytes
from tests.plpy.test_training import bit_equal, noop

SHAPE, CLASSES = (6, 6), 3


def exported_like_base() -> keras.Model:
    """As cerebro-db export writes a cnn config: the dataset's normalization in front of the trained model."""
    keras.utils.set_random_seed(3)
    inner = keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Reshape((*SHAPE, 1), name="reshape"),
            keras.layers.Conv2D(2, 3, activation="relu", name="conv"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(5, activation="relu", name="dense"),
            keras.layers.Dropout(0.5, name="drop"),
            keras.layers.Dense(4, activation="softmax", name="classes"),
        ],
        name="cnn",
    )
    return keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Normalization(axis=None, mean=0.5, variance=4.0), inner], name="export"
    )


@pytest.fixture(scope="module")
def archive() -> bytes:
    return keras_bytes(exported_like_base())


@pytest.fixture(scope="module")
def base() -> transfer.Base:
    """As imported_models stores it."""
    return transfer.Base.from_row({"name": "b", **imported.describe(exported_like_base())})


def params(**given: Any) -> dict[str, Any]:
    return roster.validate("transfer", {"base": "b", "head_units": 4, "lr": 0.01, "batch_size": 8, **given}, SHAPE)


def test_layer_defaults_to_the_one_before_the_classifier(base: transfer.Base) -> None:
    assert transfer.resolve(params(), base, SHAPE)["layer"] == "cnn/drop"
    assert transfer.resolve(params(layer="cnn/conv"), base, SHAPE)["layer"] == "cnn/conv"


@pytest.mark.parametrize(
    ("given", "shape", "message"),
    [
        ({"layer": "cnn/nope"}, SHAPE, r"layer 'cnn/nope' is not a layer of imported model 'b'; its layers: "),
        ({"layer": "cnn"}, SHAPE, r"layer 'cnn' is not a layer"),  # a nested model is not a cut point
        ({"trainable_from": "nope"}, SHAPE, r"trainable_from 'nope' is not a layer"),
        ({"layer": "cnn/flat", "trainable_from": "cnn/dense"}, SHAPE, r"comes after layer 'cnn/flat'"),
        ({}, (6, 6, 1), r"takes inputs of shape \[6, 6\], the dataset's feature_shape is \[6, 6, 1\]"),
    ],
)
def test_params_the_base_cannot_take_are_refused(
    base: transfer.Base, given: dict[str, Any], shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ParamError, match=message):
        transfer.resolve(params(**given), base, shape)


def test_an_unknown_base_and_a_missing_one_are_refused() -> None:
    with pytest.raises(ParamError, match=r"unknown imported model 'b' \(base\)") as refused:
        transfer.resolve(params(), None, SHAPE)
    assert "imported_model_catalog" in refused.value.hint
    with pytest.raises(ParamError, match="needs base"):
        roster.validate("transfer", {}, SHAPE)


def test_a_search_space_must_combine_only_usable_layers(base: transfer.Base) -> None:
    ok = {"base": "b", "layer": ["cnn/flat", "cnn/dense"], "trainable_from": ["", "cnn/conv"]}
    transfer.check_space(ok, {"b": base}, SHAPE)
    with pytest.raises(ParamError, match="comes after layer 'cnn/flat'"):
        transfer.check_space({**ok, "trainable_from": ["cnn/dense"]}, {"b": base}, SHAPE)
    with pytest.raises(ParamError, match="unknown imported model 'theirs'"):
        transfer.check_space({**ok, "base": ["b", "theirs"]}, {"b": base}, SHAPE)


def test_the_memory_profile_counts_the_kept_layers_and_the_head(base: transfer.Base) -> None:
    resolved = transfer.resolve(params(layer="cnn/flat", trainable_from="cnn/norm"), base, SHAPE)
    weights, trainable, activations = transfer.profile_counts(resolved, base, CLASSES)
    head = 32 * 4 + 4 + 4 * CLASSES + CLASSES  # flat: 4 x 4 x 2
    assert weights == 20 + 8 + head  # conv, norm (with its statistics), head
    assert trainable == 8 + head
    assert activations == 36 + 36 + 32 + 32 + 32 + 32 + 4 + CLASSES  # normalization .. flat, flatten, head


@pytest.fixture(scope="module")
def gd(archive: bytes) -> dict[str, Any]:
    cache: dict[str, Any] = {}
    training.tensorflow(cache)
    transfer.cache_archive(cache, "sha", lambda: archive)
    return cache


def spec(**given: Any) -> ModelSpec:
    given = {"layer": "cnn/dense", "trainable_from": "cnn/dense", "dropout": 0.3, **given}
    return ModelSpec("transfer", params(**given), SHAPE, CLASSES, 7, base_sha256="sha")


def test_the_model_is_the_cut_base_frozen_below_trainable_from_under_a_new_head(gd: dict[str, Any]) -> None:
    model = training.build_compiled(gd, spec())
    base = exported_like_base()
    frozen = {layer.name: layer.trainable for layer in transfer._computing_layers(model)}
    assert frozen["conv"] is False and frozen["norm"] is False and frozen["dense"] is True
    assert "normalization" not in frozen and "classes" not in frozen and "drop" not in frozen  # skipped, cut off
    kernel = base.get_layer("cnn").get_layer("conv").kernel
    np.testing.assert_array_equal(model.get_layer("conv").kernel.numpy(), kernel.numpy())
    state = training.capture(model)
    # conv and norm are the base's: left out; dense, the head and the dropout's generator hop
    assert len(state.model_variables) == len(model.variables) - 6
    assert [tuple(a.shape) for a in state.model_variables[:2]] == [(32, 5), (5,)]


def test_frozen_configs_share_the_backends_frozen_base_and_the_others_have_their_own(gd: dict[str, Any]) -> None:
    def conv(model: keras.Model) -> keras.Layer:
        return next(layer for layer in transfer._computing_layers(model) if layer.name == "conv")

    frozen = [training.build_compiled(gd, spec(trainable_from="", head_units=units)) for units in (4, 8)]
    trained = training.build_compiled(gd, spec(trainable_from="cnn/conv"))
    assert conv(frozen[0]) is conv(frozen[1]) is conv(transfer.frozen_base(gd, "sha").get_layer("cnn"))
    assert conv(trained) is not conv(frozen[0])
    assert conv(trained).trainable and not conv(frozen[0]).trainable  # the shared base stays frozen
    assert training.capture(frozen[0]).model_variables[0].shape == (5, 4)  # the head's kernel: the base's left out


def test_a_state_of_the_trained_part_resumes_bit_identically(gd: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, *SHAPE)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=48).astype(np.float32)
    continuous = training.build_compiled(gd, spec(trainable_from="cnn/norm"))
    for _ in range(2):
        training.train_pass(gd, continuous, x, y, 8, noop)
    expected = training.capture(continuous)

    first = training.build_compiled(gd, spec(trainable_from="cnn/norm"))
    training.train_pass(gd, first, x, y, 8, noop)
    hop = ModelState.decode(training.capture(first).encode())
    second = training.build_compiled(gd, spec(trainable_from="cnn/norm"))  # fresh: the base's frozen weights
    training.restore(second, hop)
    training.train_pass(gd, second, x, y, 8, noop)
    assert bit_equal(training.capture(second), expected)
    assert not bit_equal(hop, expected)


def test_an_exported_transfer_model_loads_with_base_and_head(gd: dict[str, Any], tmp_path: Any) -> None:
    model = training.build_compiled(gd, spec())
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.ones((2, *SHAPE), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-6)
