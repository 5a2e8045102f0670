"""cerebro_plpy.training: capture/restore, bit-exact resume across models, seeding, divergence, callbacks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cerebro_plpy import memory, roster, training, transfer
from cerebro_plpy.memory import MemoryGuardError
from cerebro_plpy.state import ModelState
from cerebro_plpy.training import ModelSpec, TrainingError

ROWS, FEATURES, CLASSES, BATCH = 64, 4, 3, 16


@pytest.fixture(scope="module")
def gd() -> dict[str, Any]:
    cache: dict[str, Any] = {}
    training.tensorflow(cache)
    return cache


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=ROWS).astype(np.float32)
    return x, y


def mlp_spec(seed: int = 5, **params: Any) -> ModelSpec:
    given = {"hidden_units": 8, "hidden_layers": 1, "batch_size": BATCH, "lr": 0.01, **params}
    return ModelSpec("mlp", roster.validate("mlp", given, (FEATURES,)), (FEATURES,), CLASSES, seed)


def arrays(state: ModelState) -> list[np.ndarray]:
    return [*state.model_variables, *state.optimizer_variables]


def bit_equal(a: ModelState, b: ModelState) -> bool:
    left, right = arrays(a), arrays(b)
    return (
        len(a.model_variables) == len(b.model_variables)
        and len(left) == len(right)
        and all(
            x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
            for x, y in zip(left, right, strict=True)
        )
    )


def noop() -> None:
    pass


def test_tensorflow_imported_once_into_gd(gd: dict[str, Any]) -> None:
    tf = training.tensorflow(gd)
    assert gd[training.GD_TENSORFLOW] is tf
    assert training.tensorflow(gd) is tf
    assert hasattr(tf, "data")


def test_capture_layout(gd: dict[str, Any]) -> None:
    model = training.build_compiled(gd, mlp_spec())
    state = training.capture(model)
    assert [a.shape for a in state.model_variables if a.dtype == np.float32] == [(4, 8), (8,), (8, 3), (3,)]
    # adam: iteration counter, learning rate, then two slots per trainable variable, all still fresh
    assert len(state.optimizer_variables) == 2 + 2 * 4
    assert state.optimizer_variables[0].dtype == np.int64
    assert state.optimizer_variables[0].item() == 0
    assert state.optimizer_variables[1].item() == pytest.approx(0.01)
    assert all(not a.any() for a in state.optimizer_variables[2:])


def test_capture_restore_round_trip(gd: dict[str, Any], data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model = training.build_compiled(gd, mlp_spec())
    before = training.capture(model)
    training.train_pass(gd, model, x, y, BATCH, noop)
    after = training.capture(model)
    assert not bit_equal(before, after)
    assert after.optimizer_variables[0].item() == ROWS // BATCH

    training.restore(model, before)
    assert bit_equal(training.capture(model), before)
    training.restore(model, ModelState.decode(after.encode()))
    assert bit_equal(training.capture(model), after)


@pytest.mark.parametrize(
    "params",
    [{"optimizer": "adam", "dropout": 0.25}, {"optimizer": "rmsprop", "hidden_layers": 2}],
    ids=["adam-dropout", "rmsprop"],
)
def test_resume_is_bit_exact_in_another_model(
    gd: dict[str, Any], data: tuple[np.ndarray, np.ndarray], params: dict[str, Any]
) -> None:
    x, y = data
    spec = mlp_spec(seed=11, **params)

    continuous = training.build_compiled(gd, spec)
    training.train_pass(gd, continuous, x, y, BATCH, noop)
    after_one = training.capture(continuous)
    training.train_pass(gd, continuous, x, y, BATCH, noop)
    expected = training.capture(continuous)

    first = training.build_compiled(gd, spec)
    training.train_pass(gd, first, x, y, BATCH, noop)
    hop = ModelState.decode(training.capture(first).encode())
    assert bit_equal(hop, after_one)  # same seed, same data: the first pass itself is reproducible

    second = training.build_compiled(gd, spec)
    assert second is not first
    training.restore(second, hop)
    training.train_pass(gd, second, x, y, BATCH, noop)
    resumed = training.capture(second)

    assert not bit_equal(expected, after_one)
    assert resumed.optimizer_variables[0].item() == 2 * ROWS // BATCH
    for want, got in zip(arrays(expected), arrays(resumed), strict=True):
        assert np.array_equal(want, got)
    assert bit_equal(expected, resumed)


def test_initial_state_seeded(gd: dict[str, Any]) -> None:
    a = training.initial_state(gd, mlp_spec(seed=1))
    b = training.initial_state(gd, mlp_spec(seed=1))
    c = training.initial_state(gd, mlp_spec(seed=2))
    assert bit_equal(a, b)
    assert not np.array_equal(a.model_variables[0], c.model_variables[0])
    assert a.model_variables[0].shape == c.model_variables[0].shape == (4, 8)
    assert a.optimizer_variables[0].item() == 0


def test_initial_state_ignores_batch_size_but_not_lr(gd: dict[str, Any]) -> None:
    a = training.initial_state(gd, mlp_spec(seed=1, batch_size=8))
    b = training.initial_state(gd, mlp_spec(seed=1, batch_size=32))
    c = training.initial_state(gd, mlp_spec(seed=1, lr=0.5))
    assert bit_equal(a, b)
    assert all(np.array_equal(p, q) for p, q in zip(a.model_variables, c.model_variables, strict=True))
    assert c.optimizer_variables[1].item() == 0.5


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ({"hidden_units": 16}, r"state shape \(4, 8\) does not fit model variable"),
        ({"hidden_layers": 2}, "state has 4 model variables, the model has 6"),
        ({"optimizer": "sgd"}, "state has 10 optimizer variables, the model has"),
    ],
)
def test_restore_into_other_architecture(gd: dict[str, Any], other: dict[str, Any], message: str) -> None:
    state = training.initial_state(gd, mlp_spec())
    model = training.build_compiled(gd, mlp_spec(**other))
    with pytest.raises(TrainingError, match=message):
        training.restore(model, state)


def test_restore_cnn_state_into_mlp(gd: dict[str, Any]) -> None:
    cnn_params = roster.validate("cnn", {"filters": 2, "dense_units": 4}, (4, 4))
    cnn_state = training.initial_state(gd, ModelSpec("cnn", cnn_params, (4, 4), CLASSES, 0))
    model = training.build_compiled(gd, mlp_spec())
    with pytest.raises(TrainingError):
        training.restore(model, cnn_state)


def nan_features(x: np.ndarray) -> np.ndarray:
    bad = x.copy()
    bad[::2, 0] = np.nan
    return bad


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_train_pass_nan_loss_raises(gd: dict[str, Any], data: tuple[np.ndarray, np.ndarray], optimizer: str) -> None:
    x, y = data
    model = training.build_compiled(gd, mlp_spec(activation="tanh", optimizer=optimizer))
    with pytest.raises(
        TrainingError, match=r"training diverged \(loss nan, non-finite weights\); lower lr or check the data"
    ):
        training.train_pass(gd, model, nan_features(x), y, BATCH, noop)


def test_train_pass_nan_weights_raise(gd: dict[str, Any], data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model = training.build_compiled(gd, mlp_spec(activation="relu"))
    with pytest.raises(TrainingError):
        training.train_pass(gd, model, nan_features(x), y, BATCH, noop)


@pytest.mark.parametrize(("batch_size", "batches"), [(16, 4), (24, 3), (64, 1), (5, 13)])
def test_on_batch_called_once_per_batch(
    gd: dict[str, Any], data: tuple[np.ndarray, np.ndarray], batch_size: int, batches: int
) -> None:
    x, y = data
    model = training.build_compiled(gd, mlp_spec(batch_size=batch_size))
    calls: list[int] = []
    loss, accuracy = training.train_pass(gd, model, x, y, batch_size, lambda: calls.append(1))
    assert len(calls) == batches
    assert np.isfinite(loss) and loss > 0
    assert 0.0 <= accuracy <= 1.0
    assert training.capture(model).optimizer_variables[0].item() == batches

    calls.clear()
    val_loss, val_accuracy = training.evaluate(gd, model, x, y, batch_size, lambda: calls.append(1))
    assert len(calls) == batches
    assert np.isfinite(val_loss) and 0.0 <= val_accuracy <= 1.0


def test_on_batch_exception_stops_the_pass(gd: dict[str, Any], data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    model = training.build_compiled(gd, mlp_spec())
    calls: list[int] = []

    def cancel() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("canceled")

    with pytest.raises(KeyboardInterrupt):
        training.train_pass(gd, model, x, y, BATCH, cancel)
    assert len(calls) == 2


def test_cached_model_shares_by_architecture(gd: dict[str, Any]) -> None:
    cache: dict[str, Any] = {training.GD_TENSORFLOW: gd[training.GD_TENSORFLOW]}
    a = training.cached_model(cache, mlp_spec(lr=0.1, batch_size=8))
    b = training.cached_model(cache, mlp_spec(lr=0.001, batch_size=32, seed=9))
    c = training.cached_model(cache, mlp_spec(optimizer="sgd"))
    assert a is b
    assert c is not a
    assert list(cache[training.GD_MODELS]) == [mlp_spec().cache_key, mlp_spec(optimizer="sgd").cache_key]


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 1), (8, 8, 3)])
def test_cnn_builds_for_rank_2_and_3(shape: tuple[int, ...]) -> None:
    params = roster.validate("cnn", {"filters": 2, "dense_units": 4}, shape)
    model = roster.build("cnn", params, shape, CLASSES)
    assert model.name == "cnn"
    assert tuple(model.output_shape) == (None, CLASSES)
    assert tuple(model.input_shape) == (None, *shape)


def test_the_memory_guard_names_the_estimate_and_the_setting(gd: dict[str, Any]) -> None:
    spec = mlp_spec(hidden_units=256)  # weights 4*256 + 256 + 256*3 + 3 = 2051; outputs 4 + 256 + 3 per example
    training.guarded_model(gd, spec, 1.0, ROWS, 8)
    # (2051 weights + gradients + 2 Adam slots) + 2 x 263 outputs x batch 16 (> 263 x 8 validation rows), float32
    with pytest.raises(MemoryGuardError, match=r"about 0\.0634 MB .* cerebro.max_training_mb = 0\.001"):
        training.guarded_model(gd, spec, 0.001, ROWS, 8)


def test_a_roster_model_over_the_guard_is_refused_before_it_is_built(gd: dict[str, Any]) -> None:
    huge = mlp_spec(hidden_units=65536, hidden_layers=64)  # ~275e9 weights: building it would exhaust memory
    with pytest.raises(MemoryGuardError, match="over cerebro.max_training_mb = 4096"):
        training.guarded_model(gd, huge, memory.DEFAULT_MAX_TRAINING_MB, ROWS, ROWS)


def test_an_application_is_checked_once_built(gd: dict[str, Any]) -> None:
    """keras.applications' weights are bounded by their params: the unit measures the built model."""
    params = roster.validate("mobilenetv2", {"alpha": 0.35, "batch_size": 4}, (8, 8, 3))
    spec = ModelSpec("mobilenetv2", params, (8, 8, 3), CLASSES, 1)
    model = training.guarded_model(gd, spec, 64.0, ROWS, 8)
    trainable = sum(v.numpy().size for v in model.trainable_variables)
    found = memory.estimate(memory.keras_profile(model, model.optimizer), 4, ROWS, 8)
    assert 0 < found.state_bytes == 4 * (model.count_params() + 3 * trainable)  # + gradients, 2 Adam slots
    with pytest.raises(MemoryGuardError, match=r"about 12.2 MB .* = 1; lower image_size, alpha, batch_size$"):
        training.guarded_model(gd, spec, 1.0, ROWS, 8)


def test_seed_keras_resets_keras_global_generator() -> None:
    import keras

    keras.utils.set_random_seed(3)
    first = keras.random.normal((4,)).numpy()
    keras.random.normal((4,))  # the global generator moves on
    training.seed_keras(3)  # fails here, or below, if Keras moves the internals it resets
    assert np.array_equal(keras.random.normal((4,)).numpy(), first)


def test_building_a_config_leaves_tensorflows_global_seed_alone(gd: dict[str, Any]) -> None:
    # Setting it clears TensorFlow's kernel caches: every model cached in the backend would then re-instantiate its
    # train and test functions on its next call.
    tf = training.tensorflow(gd)
    tf.random.set_seed(1234)
    training.build_compiled(gd, mlp_spec(seed=1))
    training.initial_state(gd, mlp_spec(seed=2, hidden_units=5))
    assert tf.compat.v1.get_seed(None)[0] == 1234


# Each roster model at a tiny size: (params, feature shape, seconds it may take).
ROSTER_CASES = {
    "mlp": ({"hidden_units": 8}, (FEATURES,)),
    "cnn": ({"filters": 2, "dense_units": 8}, (8, 8, 1)),
    "resnet50": ({"optimizer": "sgd"}, (8, 8)),  # grayscale HxW, resized up to 32x32
    "mobilenetv2": ({"alpha": 0.35}, (8, 8, 3)),
    "bert": ({"num_layers": 1, "hidden_size": 16, "intermediate_size": 16, "vocabulary_size": 50}, (12,)),
    # at a tiny size (its builder is bert's); DistilBERT-base itself is counted in tests/plpy/test_distilbert.py
    "distilbert": (
        {"num_layers": 1, "num_heads": 2, "hidden_size": 16, "intermediate_size": 16, "vocabulary_size": 50},
        (12,),
    ),
}


def test_the_cases_cover_the_roster() -> None:
    # transfer needs an imported base to build: tests/plpy/test_transfer.py trains and resumes it
    assert set(ROSTER_CASES) == set(roster.ROSTER) - {transfer.MODEL}


@pytest.mark.parametrize("model", sorted(ROSTER_CASES))
def test_every_roster_model_trains_one_hop_and_resumes_its_state(gd: dict[str, Any], model: str) -> None:
    given, shape = ROSTER_CASES[model]
    params = roster.validate(model, {"batch_size": 8, **given}, shape)
    spec = ModelSpec(model, params, shape, CLASSES, seed=1)
    rng = np.random.default_rng(1)
    x = rng.integers(1, 50, size=(16, *shape)).astype(np.float32)  # also valid token ids for bert
    y = rng.integers(0, CLASSES, size=16).astype(np.float32)
    trained = training.build_compiled(gd, spec)
    loss, _ = training.train_pass(gd, trained, x, y, 8, noop)
    assert np.isfinite(loss)
    state = training.capture(trained)
    restored = training.build_compiled(gd, spec)
    training.restore(restored, ModelState.decode(state.encode()))
    np.testing.assert_array_equal(restored.predict_on_batch(x), trained.predict_on_batch(x))
    assert trained.output_shape == (None, CLASSES)


@pytest.mark.parametrize("model", sorted(ROSTER_CASES))
def test_every_roster_model_starts_as_keras_set_random_seed_seeds_it(
    gd: dict[str, Any], model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    given, shape = ROSTER_CASES[model]
    spec = ModelSpec(model, roster.validate(model, given, shape), shape, CLASSES, seed=7)
    ours = training.initial_state(gd, spec)
    monkeypatch.setattr(training, "seed_keras", keras.utils.set_random_seed)
    assert bit_equal(ours, training.initial_state(gd, spec))


@pytest.mark.parametrize(
    ("model", "given", "shape"),
    [
        ("mlp", {"hidden_units": 7, "hidden_layers": 3}, (5,)),
        ("mlp", {"hidden_layers": 0}, (4, 4)),
        ("cnn", {"filters": 3, "kernel_size": 5, "dense_units": 9}, (28, 28)),
        ("cnn", {"filters": 2, "dense_units": 4}, (15, 13, 3)),
        (
            "bert",
            {"num_layers": 2, "num_heads": 2, "hidden_size": 8, "intermediate_size": 6, "vocabulary_size": 30},
            (12,),
        ),
    ],
)
def test_parameter_count_without_building_matches_the_built_model(
    gd: dict[str, Any], model: str, given: dict[str, Any], shape: tuple[int, ...]
) -> None:
    params = roster.validate(model, given, shape)
    built = roster.build(model, params, shape, CLASSES)
    assert roster.parameter_count(model, params, shape, CLASSES) == built.count_params()
