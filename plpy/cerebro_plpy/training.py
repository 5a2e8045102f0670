"""Training one config for one pass over one shard, and evaluating it.

No SQL here: callers hand in arrays and a :class:`ModelState` and get one back.
Per-backend caches live in the ``gd`` dict the caller passes (PL/Python's ``GD``
inside the database, a plain dict in tests), under the named keys below.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from cerebro_plpy import custom, memory, roster, transfer
from cerebro_plpy.custom import Script
from cerebro_plpy.state import ModelState

if TYPE_CHECKING:
    import keras

GD_TENSORFLOW = "cerebro.tensorflow"
GD_MODELS = "cerebro.models"
#: Compiled models kept per backend; each holds its variables and traced graphs.
MODEL_CACHE_SIZE = 8

LOSS = "sparse_categorical_crossentropy"
METRIC = "accuracy"


class TrainingError(RuntimeError):
    """Training diverged or failed in a way that fails the config (not the unit's infrastructure)."""


#: TensorFlow's intra- and inter-op threads in every process that trains a unit or replays one.
THREADS = 1


class ThreadSettingError(RuntimeError):
    """TensorFlow already runs in this process with other thread counts than :data:`THREADS`."""


def tensorflow(gd: dict[str, Any]) -> ModuleType:
    """TensorFlow, imported once per process with :data:`THREADS` intra/inter-op threads.

    One thread per backend: segments run side by side on separate cores, and
    oversubscribed thread pools cost more than they bring (see the README). The counts
    also decide the order of float sums, so bit-exact replays need the same ones.
    """
    if GD_TENSORFLOW not in gd:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        threading = tf.config.threading
        # Thread settings only apply before TensorFlow's runtime starts (setting the value it
        # already has is a no-op): a process that started it with other counts cannot train here.
        try:
            threading.set_intra_op_parallelism_threads(THREADS)
            threading.set_inter_op_parallelism_threads(THREADS)
        except RuntimeError:
            pass  # the counts it runs with are checked below
        running = (threading.get_intra_op_parallelism_threads(), threading.get_inter_op_parallelism_threads())
        if running != (THREADS, THREADS):
            raise ThreadSettingError(
                f"TensorFlow already runs in this process with intra/inter-op threads {running[0]}/{running[1]}"
                f" (0 = TensorFlow's default), not {THREADS}/{THREADS}: something started it before"
                " cerebro_plpy.training could set them; call training.tensorflow() before any other TensorFlow or"
                " Keras use, or train in a fresh process"
            )
        gd[GD_TENSORFLOW] = tf
    tf_module: ModuleType = gd[GD_TENSORFLOW]
    return tf_module


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build one config's model."""

    model: str
    params: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    seed: int
    #: Set for a registered model: the script that builds it.
    script: Script | None = None
    #: Set for ``transfer``: the sha256 of its base's archive (cached in ``gd`` by :func:`transfer.cache_archive`).
    base_sha256: str | None = None
    #: ``transfer`` with a frozen base: the head alone, trained on materialized features of this shape
    #: (:mod:`features`).
    features_shape: tuple[int, ...] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelSpec:
        """From a query's ``model, params (text), feature_shape, num_classes, seed, source, entry_point`` and
        ``base_sha256``; ``source`` is NULL unless the model is registered, ``base_sha256`` unless it is transfer."""
        script = Script(row["model"], row["source"], row["entry_point"]) if row["source"] is not None else None
        return cls(
            row["model"],
            json.loads(row["params"]),
            tuple(row["feature_shape"]),
            row["num_classes"],
            row["seed"],
            script,
            row.get("base_sha256"),
            tuple(row["features_shape"]) if row.get("features_shape") is not None else None,
        )

    @property
    def cache_key(self) -> tuple[Any, ...]:
        registered = self.script is not None
        return (
            *roster.architecture_key(self.model, self.params, registered),
            self.script.sha256 if self.script else None,
            self.base_sha256,
            self.features_shape,
            self.input_shape,
            self.num_classes,
        )


def _optimizer(params: dict[str, Any]) -> Any:
    import keras

    kinds = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    return kinds[params["optimizer"]](learning_rate=params["lr"])


def seed_keras(seed: int) -> None:
    """Seeds what a Keras model's build draws from: Python's and NumPy's generators and Keras's global seed generator.

    ``keras.utils.set_random_seed`` does this and also ``tf.random.set_seed``, which clears TensorFlow's kernel caches:
    every model cached in the backend then re-instantiates its compiled train and test functions on its next call
    (measured: 4-8 s per mobilenetv2 unit). Keras 3's initializers and random layers take no seed from TensorFlow's
    global one (an unseeded raw ``tf.random`` op in a registered script is not reproducible).
    """
    # Private, as set_random_seed does it (no public API resets the global generator): tests/plpy/test_training.py
    # fails if it moves.
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)  # recreated from random's next draw
    random.seed(seed)
    np.random.seed(seed)


def build_compiled(gd: dict[str, Any], spec: ModelSpec) -> keras.Model:
    """A freshly initialised model, compiled, optimizer built; seeded from ``spec.seed``."""
    tensorflow(gd)
    base = _transfer_base(gd, spec)
    # Seeded after loading a transfer base (which draws seeds): its head starts the same whether the base was loaded
    # now, cached in this backend, or not needed (the head on materialized features).
    seed_keras(spec.seed)
    if spec.model == transfer.MODEL and spec.features_shape is not None:
        model = transfer.build_head(spec.features_shape, spec.params, spec.num_classes)
        model.compile(optimizer=_optimizer(spec.params), loss=LOSS, metrics=[METRIC])
    elif base is not None:
        model = transfer.build(base, spec.params, spec.input_shape, spec.num_classes)
        model.compile(optimizer=_optimizer(spec.params), loss=LOSS, metrics=[METRIC])
    elif spec.script is None:
        model = roster.build(spec.model, spec.params, spec.input_shape, spec.num_classes)
        model.compile(optimizer=_optimizer(spec.params), loss=LOSS, metrics=[METRIC])
    else:
        model = custom.create(gd, spec.script, spec.params, spec.input_shape, spec.num_classes)
        # The script's optimizer and loss, but the one metric every config reports.
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=[METRIC])
    model.optimizer.build(model.trainable_variables)
    return model


def _transfer_base(gd: dict[str, Any], spec: ModelSpec) -> keras.Model | None:
    """The base a transfer config's model is built around (:func:`transfer.base_for`); None for other models and for
    the head on materialized features."""
    if spec.model != transfer.MODEL or spec.features_shape is not None:
        return None
    if spec.base_sha256 is None:
        raise TrainingError(f"the base {spec.params['base']!r} of this transfer config is no longer imported")
    return transfer.base_for(gd, spec.base_sha256, spec.params)


def cached_model(gd: dict[str, Any], spec: ModelSpec) -> keras.Model:
    """A compiled model with ``spec``'s architecture; its variables are whatever was last restored."""
    cache: OrderedDict[tuple[Any, ...], keras.Model] = gd.setdefault(GD_MODELS, OrderedDict())
    key = spec.cache_key
    if key in cache:
        cache.move_to_end(key)
    else:
        cache[key] = build_compiled(gd, spec)
        while len(cache) > MODEL_CACHE_SIZE:
            cache.popitem(last=False)
    return cache[key]


def state_variables(model: keras.Model) -> list[Any]:
    """The model variables a state holds: all but a transfer model's frozen weights (its base's,
    :func:`transfer.fixed_variables`), which every build loads from the base."""
    fixed = transfer.fixed_variables(model)
    return [v for v in model.variables if id(v) not in fixed]


def capture(model: keras.Model) -> ModelState:
    """Model variables (weights, RNG state; :func:`state_variables`) and optimizer variables (iterations, lr,
    slots)."""
    return ModelState(
        [np.asarray(v.numpy()) for v in state_variables(model)],
        [np.asarray(v.numpy()) for v in model.optimizer.variables],
    )


def restore(model: keras.Model, state: ModelState) -> None:
    """Assign every variable of ``state``; checks all shapes first so a mismatch changes nothing."""
    pairs = []
    for variables, arrays, what in (
        (state_variables(model), state.model_variables, "model"),
        (model.optimizer.variables, state.optimizer_variables, "optimizer"),
    ):
        if len(variables) != len(arrays):
            raise TrainingError(f"state has {len(arrays)} {what} variables, the model has {len(variables)}")
        for variable, array in zip(variables, arrays, strict=True):
            if tuple(variable.shape) != array.shape:
                raise TrainingError(f"state shape {array.shape} does not fit {what} variable {variable.path}")
            pairs.append((variable, array))
    for variable, array in pairs:
        variable.assign(array)


def set_learning_rate(model: keras.Model, lr: float) -> None:
    """The config's lr rules over the restored optimizer's (a clone or warm start may change it)."""
    model.optimizer.learning_rate.assign(lr)


def initial_state(gd: dict[str, Any], spec: ModelSpec) -> ModelState:
    """The state of a config before its first unit: seeded initial weights, fresh optimizer."""
    return capture(build_compiled(gd, spec))


def guarded_model(
    gd: dict[str, Any], spec: ModelSpec, max_training_mb: float, train_rows: int, validation_rows: int
) -> keras.Model:
    """:func:`cached_model`, within the memory guard (:mod:`cerebro_plpy.memory`).

    mlp, cnn, bert and distilbert are counted, and a registered script (any width) measured in a child
    process, before they are built; keras.applications, whose weights their params bound, and a
    script that failed to build for measuring (building it here reports its error), once built.
    """
    if spec.script is None:
        profile = memory.roster_profile(spec.model, spec.params, spec.input_shape, spec.num_classes)
    else:
        profile = memory.profile(gd, spec.model, spec.params, spec.input_shape, spec.num_classes, spec.script)
    if profile is not None:
        memory.check(spec.model, spec.params, profile, train_rows, validation_rows, max_training_mb)
    model = cached_model(gd, spec)
    if profile is None:
        measured = memory.keras_profile(model, model.optimizer)
        memory.check(spec.model, spec.params, measured, train_rows, validation_rows, max_training_mb)
    return model


def make_dataset(gd: dict[str, Any], x: np.ndarray, y: np.ndarray, batch_size: int) -> Any:
    """Batches in stored order, on the calling thread: no private pools, no autotuning."""
    tf = tensorflow(gd)
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).with_options(options)


def _batch_callback(on_batch: Callable[[], None]) -> Any:
    import keras

    return keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs=None: on_batch(),
        on_test_batch_end=lambda batch, logs=None: on_batch(),
    )


def train_pass(
    gd: dict[str, Any],
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    on_batch: Callable[[], None],
) -> tuple[float, float]:
    """One pass over ``(x, y)`` in order; returns the pass's mean loss and accuracy.

    ``on_batch`` runs between batches: inside the database it lets a cancel
    request (``pg_cancel_backend``, statement_timeout) stop the pass.
    """
    try:
        history = model.fit(
            make_dataset(gd, x, y, batch_size),
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[_batch_callback(on_batch)],
        )
    except (MemoryError, tensorflow(gd).errors.ResourceExhaustedError) as error:
        raise TrainingError(f"out of memory while training ({error}); lower batch_size or the model's size") from None
    loss, metric = float(history.history["loss"][-1]), float(history.history[METRIC][-1])
    # Some kernels map NaN activations to finite outputs, so a finite loss does not
    # prove finite weights: check both before the state is saved.
    if not math.isfinite(loss) or not all(np.isfinite(v.numpy()).all() for v in model.trainable_variables):
        raise TrainingError(f"training diverged (loss {loss}, non-finite weights); lower lr or check the data")
    return loss, metric


def evaluate(
    gd: dict[str, Any],
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    on_batch: Callable[[], None],
) -> tuple[float, float]:
    loss, metric = model.evaluate(make_dataset(gd, x, y, batch_size), verbose=0, callbacks=[_batch_callback(on_batch)])
    return float(loss), float(metric)
