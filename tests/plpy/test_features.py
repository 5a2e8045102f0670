"""Feature transfer's core without a database: the staged extractor gives each layer's outputs bit-identical to
``keras.Model(base.input, layer.output).predict``, a head trained on them ends where the same head through the frozen
base does, layers that act differently in training end what may be materialized, and batches fit the memory guard."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

from cerebro_plpy import features, memory, training, transfer
from cerebro_plpy.training import ModelSpec
from tests.plpy.test_imported import keras_bytes
from tests.plpy.test_training import bit_equal, noop
from tests.plpy.test_transfer import CLASSES, SHAPE, exported_like_base, params

LAYERS = ["cnn/conv", "cnn/norm", "cnn/dense"]


def functional_base() -> keras.Model:
    """A functional graph with a skip connection (as mobilenetv2's blocks): a cut reads the graph's own tensors."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((*SHAPE, 1))
    a = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="c1")(inputs)
    b = keras.layers.Conv2D(3, 3, padding="same", name="c2")(a)
    s = keras.layers.Add(name="add")([a, b])
    p = keras.layers.GlobalAveragePooling2D(name="pool")(s)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="out")(p), name="fb")


@pytest.fixture(scope="module")
def gd() -> dict[str, Any]:
    cache: dict[str, Any] = {}
    training.tensorflow(cache)
    transfer.cache_archive(cache, "sha", lambda: keras_bytes(exported_like_base()))
    return cache


def reference(base: keras.Model, path: str) -> keras.Model:
    """``keras.Model(base.input, base.get_layer(layer).output)`` for a nested path, the normalization skipped as a
    unit's features are normalized already."""
    head, _, rest = path.partition("/")
    inner = base.get_layer(head) if rest else base
    return keras.Model(inner.inputs, inner.get_layer(rest or head).output)


def test_a_staged_pass_gives_every_layer_bit_identical_to_predict(gd: dict[str, Any]) -> None:
    x = np.random.default_rng(1).normal(size=(40, *SHAPE)).astype(np.float32)
    base = transfer.load_base(gd, "sha")
    staged = features.extractor(base, LAYERS, SHAPE)
    outputs = features.forward(staged, x)
    for layer, got in zip(LAYERS, outputs, strict=True):
        expected = reference(base, layer).predict(x, batch_size=len(x), verbose=0)
        assert got.tobytes() == expected.astype(np.float32).tobytes(), layer
    shorter = features.forward(staged, x[:7])  # a pass's last batch: no second trace of the prefix
    assert staged.cerebro_forward.experimental_get_tracing_count() == 1
    assert all(s.tobytes() == o[:7].tobytes() for s, o in zip(shorter, outputs, strict=True))

    graph = functional_base()
    x4 = x[..., None]
    outputs = features.forward(features.extractor(graph, ["c1", "add"], (*SHAPE, 1)), x4)
    for layer, got in zip(["c1", "add"], outputs, strict=True):
        expected = keras.Model(graph.inputs, graph.get_layer(layer).output).predict(x4, batch_size=len(x4), verbose=0)
        assert got.tobytes() == expected.tobytes(), layer


def test_the_head_on_features_ends_as_the_head_through_the_frozen_base(gd: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, *SHAPE)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=48).astype(np.float32)
    given = params(layer="cnn/dense", trainable_from="", dropout=0.3)
    staged = features.extractor(transfer.load_base(gd, "sha"), ["cnn/dense"], SHAPE)
    (materialized,) = features.forward(staged, x)
    through = ModelSpec("transfer", given, SHAPE, CLASSES, 7, base_sha256="sha")
    on = ModelSpec("transfer", given, SHAPE, CLASSES, 7, base_sha256="sha", features_shape=materialized.shape[1:])
    assert through.cache_key != on.cache_key
    assert bit_equal(training.initial_state(gd, through), training.initial_state(gd, on))  # same weights, seeds
    assert not any(isinstance(layer, keras.Model) for layer in training.build_compiled(gd, on).layers)  # no base
    trained = []
    for spec, data in ((through, x), (on, materialized)):
        model = training.build_compiled(gd, spec)
        for _ in range(2):
            training.train_pass(gd, model, data, y, 8, noop)
        trained.append(training.capture(model))
    assert bit_equal(trained[0], trained[1])  # the features were computed at another batch size: still equal


def test_layers_after_a_dropout_are_not_materialized(gd: dict[str, Any]) -> None:
    base = transfer.load_base(gd, "sha")
    assert features.usable_layers(base, ["cnn/classes", "cnn/dense", "cnn/conv"]) == ["cnn/conv", "cnn/dense"]
    assert features.usable_layers(base, ["cnn/drop"]) == []


def test_batches_fit_the_memory_guard(gd: dict[str, Any]) -> None:
    base = transfer.load_base(gd, "sha")
    # up to dense: normalization (skipped but stored), reshape, conv, norm, flat, dense outputs per row
    per_row = 4 * (36 + 36 + 32 + 32 + 32 + 5)
    room = 0.01 * 2**20 - 4 * base.count_params()
    assert features.batch_rows(base, ["cnn/dense"], 0.01) == min(features.MAX_BATCH, int(room // per_row))
    assert features.batch_rows(base, ["cnn/dense"], 0.004) < features.MAX_BATCH
    with pytest.raises(memory.MemoryGuardError, match="read off an earlier layer"):
        features.batch_rows(base, ["cnn/dense"], 0.0001)
