"""cerebro_plpy.memory: the estimate against hand counts and against Keras' own layers and slots."""

from __future__ import annotations

import math
from typing import Any

import keras
import pytest

from cerebro_plpy import memory, roster, training
from cerebro_plpy.custom import Script
from cerebro_plpy.memory import MemoryGuardError, Profile
from tests.plpy.test_custom import GOOD

#: Two hidden layers of ``units``: 10e9 weights at 100,000 (40 GB), which building must never allocate.
WIDE = GOOD.replace(
    'keras.layers.Dense(params.get("units", 8), activation="relu"),',
    'keras.layers.Dense(params.get("units", 8)), keras.layers.Dense(params.get("units", 8)),',
)
#: A script that allocates by itself: the child's rlimit stops it.
GREEDY = GOOD.replace("def create_model(params):\n", "def create_model(params):\n    hog = bytearray(8 * 2**30)\n")


def validated(model: str, shape: tuple[int, ...], **given: Any) -> dict[str, Any]:
    return roster.validate(model, given, shape)


def test_a_small_mlp_matches_a_hand_count() -> None:
    params = validated("mlp", (4,), hidden_units=8, hidden_layers=1, batch_size=16)
    profile = memory.roster_profile("mlp", params, (4,), 3)
    # weights 4*8 + 8 + 8*3 + 3; outputs per example: flatten 4, dense 8, softmax 3; Adam's two slots
    assert profile == Profile(weights=67, trainable=67, slots=2, activations=15)
    found = memory.estimate(profile, 16, train_rows=100, validation_rows=10)
    # weights, gradients, 2 slots; activations and their gradients at batch 16 (evaluation: 15 * 10 < 2 * 15 * 16)
    assert (found.state_bytes, found.activation_bytes, found.batch, found.evaluation) == (
        4 * 67 * 4,
        4 * 2 * 15 * 16,
        16,
        False,
    )


def test_the_batch_is_capped_by_the_shard_and_the_evaluation_can_dominate() -> None:
    profile = Profile(weights=10, trainable=10, slots=0, activations=100)
    assert memory.estimate(profile, 512, train_rows=40, validation_rows=0).batch == 40
    found = memory.estimate(profile, 8, train_rows=1000, validation_rows=5000)
    assert (found.batch, found.evaluation, found.activation_bytes) == (memory.EVALUATION_BATCH, True, 4 * 100 * 1024)


def keras_walk(model: keras.Model) -> int:
    return memory.keras_profile(model, keras.optimizers.Adam()).activations


@pytest.mark.parametrize(
    ("model", "shape", "given"),
    [
        ("mlp", (5,), {"hidden_units": 7, "hidden_layers": 3, "dropout": 0.2}),
        ("mlp", (4, 4, 2), {"hidden_units": 3, "hidden_layers": 0}),
        ("cnn", (9, 11), {"filters": 3, "dense_units": 5}),
        ("cnn", (8, 8, 3), {"filters": 2, "dense_units": 4, "kernel_size": 5, "dropout": 0.5}),
    ],
)
def test_counted_activations_and_weights_match_the_built_layers(
    model: str, shape: tuple[int, ...], given: dict[str, Any]
) -> None:
    params = validated(model, shape, **given)
    counted = memory.roster_profile(model, params, shape, 4)
    built = roster.build(model, params, shape, 4)
    assert counted is not None
    assert (counted.weights, counted.activations) == (built.count_params(), keras_walk(built))


def test_bert_adds_what_its_attention_layers_hold_inside() -> None:
    given = {"num_layers": 2, "num_heads": 2, "hidden_size": 8, "intermediate_size": 6, "vocabulary_size": 30}
    params, length = validated("bert", (5,), **given), 5
    counted = memory.roster_profile("bert", params, (length,), 3)
    built = roster.build("bert", params, (length,), 3)
    assert counted is not None and counted.weights == built.count_params()
    # per block: query, key, value and context (5 x 8 each), scores, softmax and dropout (2 heads x 5 x 5 each)
    assert counted.activations == keras_walk(built) + 2 * (4 * length * 8 + 3 * 2 * length * length)


# Names and settings, not optimizer instances: building one at collection would start TensorFlow's
# runtime before training.tensorflow() sets it to one thread, and other tests compare bit-exactly.
@pytest.mark.parametrize(
    ("kind", "settings"),
    [
        ("Adam", {}),
        ("Adam", {"amsgrad": True}),
        ("SGD", {}),
        ("SGD", {"momentum": 0.9}),
        ("RMSprop", {}),
        ("RMSprop", {"momentum": 0.5, "centered": True}),
        ("Adagrad", {}),
    ],
)
def test_optimizer_slots_match_the_variables_keras_creates(kind: str, settings: dict[str, Any]) -> None:
    training.tensorflow({})
    optimizer = getattr(keras.optimizers, kind)(**settings)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    optimizer.build(model.trainable_variables)
    slot_weights = sum(math.prod(v.shape) for v in optimizer.variables if len(v.shape) > 0)
    assert memory.keras_profile(model, optimizer).slots * model.count_params() == slot_weights


def test_the_roster_optimizers_have_the_slots_of_their_keras_classes() -> None:
    for kind in ("adam", "sgd", "rmsprop"):
        assert memory.optimizer_slots(kind, {}) == memory.optimizer_slots(
            type(keras.optimizers.get(kind)).__name__, keras.optimizers.get(kind).get_config()
        )


def test_the_refusal_names_the_estimate_the_limit_and_what_to_lower() -> None:
    params = validated("cnn", (28, 28), filters=1024, batch_size=16384)
    profile = memory.roster_profile("cnn", params, (28, 28), 10)
    assert profile is not None
    with pytest.raises(MemoryGuardError) as refused:
        memory.check("cnn", params, profile, 540, 120, 4096)
    message = str(refused.value)
    assert message.startswith('config {"batch_size": 16384, "dense_units": 128, "dropout": 0.0, "filters": 1024')
    assert "training needs about 6.94 GB (activations 6.46 GB at batch_size 540, weights" in message
    assert message.endswith("over cerebro.max_training_mb = 4096; lower batch_size, filters, dense_units")
    assert memory.check("cnn", params, profile, 540, 120, 8192).total_bytes < 8192 * 2**20


def test_the_limit_setting() -> None:
    assert memory.limit_mb(None) == memory.limit_mb("") == memory.DEFAULT_MAX_TRAINING_MB
    assert memory.limit_mb("512.5") == 512.5
    for bad in ("lots", "0", "-1", "nan", "inf"):
        with pytest.raises(MemoryGuardError, match=f"cerebro.max_training_mb must be a positive number .*'{bad}'"):
            memory.limit_mb(bad)


def test_the_roster_defaults_fit_the_default_limit() -> None:
    """On 28x28 images (text: 128 tokens) with a 1024-row validation set, every roster default trains.

    keras.applications are measured in a child process, as at launch: its counts are Keras' own.
    """
    gd: dict[str, Any] = {}
    # transfer's size is its base's (tests/plpy/test_transfer); distilbert's needs more (tests/plpy/test_distilbert)
    for model in (m for m in roster.ROSTER if m not in ("transfer", "distilbert")):
        shape = (128,) if model == "bert" else (28, 28)
        params = validated(model, shape)
        profile = memory.profile(gd, model, params, shape, 10, None)
        assert profile is not None
        memory.check(model, params, profile, 50_000, 1024, memory.DEFAULT_MAX_TRAINING_MB)
        if model == "resnet50":
            assert profile.weights == 23_601_930  # ResNet50 for 1 channel and 10 classes
            assert memory.profile(gd, model, {**params, "lr": 0.5}, shape, 10, None) is profile  # cached


def test_scripts_are_measured_in_a_child_that_allocates_nothing_and_is_limited() -> None:
    gd: dict[str, Any] = {}
    params = {"lr": 0.001, "batch_size": 64, "optimizer": "adam", "units": 100_000}
    wide = memory.profile(gd, "wide", params, (6,), 3, Script("wide", WIDE, "create_model"))
    assert wide == Profile(
        weights=6 * 100_000 + 100_000 + 100_000**2 + 100_000 + 100_000 * 3 + 3,
        trainable=wide.weights if wide else 0,
        slots=2,
        activations=2 * 100_000 + 3,
    )
    with pytest.raises(MemoryGuardError, match="building it to estimate its memory failed within 4 GB"):
        memory.profile(gd, "greedy", params, (6,), 3, Script("greedy", GREEDY, "create_model"))
