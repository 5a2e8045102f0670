"""The memory guard: a config's peak training memory, estimated before it trains.

A backend that runs out of memory is killed by the OOM killer, and PostgreSQL then restarts
every backend of every tenant; so a config is refused, by name, before its first batch when
its estimate is over ``cerebro.max_training_mb``. The estimate is

    weights + gradients + optimizer slots
    + max(2 x activations x train batch, activations x evaluation batch)      (float32 each)

where *activations* are the outputs of every layer for one example (kept for the backward
pass, plus their gradients), the train batch is ``min(batch_size, rows of the largest
training shard)`` and the evaluation batch ``min(EVALUATION_BATCH, validation rows)``
(forward only). It does not count TensorFlow's own overhead, kernel workspaces, or tensors
inside layers (but for the BERT roster model's attention scores), nor the shard itself.

mlp, cnn, bert and distilbert are counted from their params, a transfer config from its base's layers as
import_model stored them (no TensorFlow). The keras.applications models and registered scripts
are built in a short-lived child process under a memory rlimit, with Keras variables left
uninitialized (nothing is allocated however wide the model), and the result is cached per
architecture in ``gd``. So a user's backend never imports TensorFlow to launch a workload, and
a script with an absurd width cannot take the server down while it is being measured.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cerebro_plpy import child, custom, roster, transfer
from cerebro_plpy.custom import Script
from cerebro_plpy.plpy_adapter import Database

if TYPE_CHECKING:
    import keras

#: Read with its old name, cerebro.max_model_mb, when unset (training_memory_limit in sql/10_unit/45_memory_guard.sql).
SETTING = "cerebro.max_training_mb"
#: Every segment backend trains one config at a time beside its shard; 4 GB holds every roster
#: default and demo config on the bundled datasets with room to spare (see the README).
DEFAULT_MAX_TRAINING_MB = 4096.0
#: What ``unit`` evaluates with (forward only).
EVALUATION_BATCH = 1024

GD_PROFILES = "cerebro.memory_profiles"

_FLOAT = 4
#: Slot variables per trainable weight of Keras optimizers at their defaults (unknown ones count as Adam).
_SLOTS = {"adam": 2, "adamw": 2, "nadam": 2, "adamax": 2, "adadelta": 2, "ftrl": 2, "lamb": 2}
_SLOTS |= {"adagrad": 1, "lion": 1, "rmsprop": 1, "sgd": 0}
#: The hyper-parameters that make each roster model bigger, for the refusal's advice.
_SIZE_PARAMS = {
    "mlp": ("hidden_units", "hidden_layers"),
    "cnn": ("filters", "dense_units"),
    "resnet50": ("image_size",),
    "mobilenetv2": ("image_size", "alpha"),
    "bert": ("hidden_size", "intermediate_size", "num_layers", "num_heads", "vocabulary_size"),
    "distilbert": ("hidden_size", "intermediate_size", "num_layers", "num_heads", "vocabulary_size"),
    "transfer": ("head_units", "layer (an earlier one)", "trainable_from (a later one)"),
}


class MemoryGuardError(ValueError):
    """A config whose estimated training memory is over the limit; the message says by how much and what to lower."""


@dataclass(frozen=True)
class Profile:
    """A model's memory apart from the batch: its variables and one example's activations (float32 counts)."""

    weights: int
    trainable: int
    #: Optimizer slot variables per trainable weight.
    slots: int
    #: Layer outputs for one example.
    activations: int


@dataclass(frozen=True)
class Estimate:
    state_bytes: int
    activation_bytes: int
    #: The batch the activations were counted at, and whether it is the evaluation's.
    batch: int
    evaluation: bool

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes


def optimizer_slots(kind: str, config: dict[str, Any]) -> int:
    """Slots per trainable weight of the Keras optimizer class ``kind`` with ``config``."""
    name = kind.lower()
    momentum = name in ("sgd", "rmsprop") and bool(config.get("momentum"))
    return _SLOTS.get(name, 2) + momentum + bool(config.get("centered")) + bool(config.get("amsgrad"))


def _image(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    height, width, channels = input_shape if len(input_shape) == 3 else (*input_shape, 1)
    return height, width, channels


def _mlp_activations(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> int:
    dropout = 2 if params["dropout"] > 0 else 1
    return math.prod(input_shape) + params["hidden_layers"] * params["hidden_units"] * dropout + num_classes


def _cnn_activations(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> int:
    height, width, channels = _image(input_shape)
    filters, dense = params["filters"], params["dense_units"]
    reshaped = height * width * channels
    first = height * width * filters + (height // 2) * (width // 2) * filters  # conv, pool
    second = (height // 2) * (width // 2) * 2 * filters + 2 * (height // 4) * (width // 4) * 2 * filters  # + flatten
    return reshaped + first + second + dense * (2 if params["dropout"] > 0 else 1) + num_classes


def _bert_activations(params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> int:
    (length,) = input_shape
    hidden, heads = params["hidden_size"], params["num_heads"]
    embeddings = 4 * length * hidden  # tokens, positions, their sum, its norm
    # Outside the attention layer: its output, dropout, add, norm; the feed-forward pair, dropout, add, norm.
    layers = 8 * length * hidden + length * params["intermediate_size"]
    # Inside it: query, key, value, context; the scores, their softmax and its dropout.
    attention = 4 * length * hidden + 3 * heads * length * length
    return embeddings + params["num_layers"] * (layers + attention) + num_classes


_ACTIVATIONS = {
    "mlp": _mlp_activations,
    "cnn": _cnn_activations,
    "bert": _bert_activations,
    "distilbert": _bert_activations,  # bert at another size
}


def roster_profile(
    model: str, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int
) -> Profile | None:
    """The profile of mlp, cnn, bert and distilbert, counted from their params (None for the other models)."""
    weights = roster.parameter_count(model, params, input_shape, num_classes)
    if model not in _ACTIVATIONS or weights is None:
        return None
    activations = _ACTIVATIONS[model](params, input_shape, num_classes)
    return Profile(weights, weights, optimizer_slots(params["optimizer"], {}), activations)


def _layer_activations(model: keras.Model) -> int:
    """The outputs of every layer, nested models included, for one example (unknown dims count as 1)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inner = _layer_activations(layer) if isinstance(layer, keras.Model) else 0
        if inner:
            total += inner
            continue
        for node in layer._inbound_nodes:  # every call of a shared layer keeps its own output
            for tensor in keras.tree.flatten(node.output_tensors):
                total += math.prod(d or 1 for d in tensor.shape[1:])
    return total


def keras_profile(model: keras.Model, optimizer: Any) -> Profile:
    """The profile of a built (possibly uninitialized) model trained with ``optimizer``."""
    trainable = sum(math.prod(v.shape) for v in model.trainable_variables)
    weights = sum(math.prod(v.shape) for v in model.weights)
    return Profile(
        weights, trainable, optimizer_slots(type(optimizer).__name__, optimizer.get_config()), _layer_activations(model)
    )


def estimate(profile: Profile, batch_size: int, train_rows: int, validation_rows: int) -> Estimate:
    """Peak training memory of one unit: a training pass, and the evaluation on the epoch's last hop."""
    train_batch, eval_batch = min(batch_size, train_rows), min(EVALUATION_BATCH, validation_rows)
    state = _FLOAT * (profile.weights + profile.trainable * (1 + profile.slots))
    train, evaluation = 2 * profile.activations * train_batch, profile.activations * eval_batch
    if evaluation > train:
        return Estimate(state, _FLOAT * evaluation, eval_batch, True)
    return Estimate(state, _FLOAT * train, train_batch, False)


def _size(size_bytes: float) -> str:
    megabytes = size_bytes / 2**20
    if megabytes < 1024:
        return f"{megabytes:.3g} MB"
    return f"{megabytes / 1024:.3g} GB" if megabytes < 1000 * 1024 else f"{megabytes / 1024:,.0f} GB"


def _size_params(model: str) -> tuple[str, ...]:
    return _SIZE_PARAMS.get(model, ("the script's size parameters",))


def check(
    model: str, params: dict[str, Any], profile: Profile, train_rows: int, validation_rows: int, limit_mb: float
) -> Estimate:
    """``profile``'s estimate for these params, or :class:`MemoryGuardError` naming what to lower."""
    found = estimate(profile, params["batch_size"], train_rows, validation_rows)
    if found.total_bytes <= limit_mb * 2**20:
        return found
    sizes = _size_params(model)
    where = f"the evaluation batch {found.batch}" if found.evaluation else f"batch_size {found.batch}"
    lower = (*sizes, "batch_size") if found.state_bytes > found.activation_bytes else ("batch_size", *sizes)
    raise MemoryGuardError(
        f"config {json.dumps(params, sort_keys=True)} of model {model!r}: training needs about "
        f"{_size(found.total_bytes)} (activations {_size(found.activation_bytes)} at {where}, weights, gradients "
        f"and optimizer {_size(found.state_bytes)}), over {SETTING} = {limit_mb:g}; lower {', '.join(lower)}"
    )


def limit_mb(setting: str | None) -> float:
    """The limit from the setting's text (``cerebro.max_training_mb``, else the old name), or the default."""
    if not setting:
        return DEFAULT_MAX_TRAINING_MB
    try:
        value = float(setting)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise MemoryGuardError(f"{SETTING} must be a positive number of megabytes, got {setting!r}")
    return value


def profile(
    gd: dict[str, Any],
    model: str,
    params: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    script: Script | None,
) -> Profile | None:
    """The model's profile: counted for mlp/cnn/bert/distilbert, else measured in a child process and cached per
    architecture. None if a registered script fails to build for another reason than memory (training
    reports that error itself)."""
    if script is None:
        counted = roster_profile(model, params, input_shape, num_classes)
        if counted is not None:
            return counted
    cache: dict[tuple[Any, ...], Profile | None] = gd.setdefault(GD_PROFILES, {})
    key = (
        *roster.architecture_key(model, params, script is not None),
        script.sha256 if script else None,
        input_shape,
        num_classes,
    )
    if key not in cache:
        request = {
            "model": model,
            "params": params,
            "input_shape": list(input_shape),
            "num_classes": num_classes,
            "script": asdict(script) if script else None,
        }
        cache[key] = _measure_in_child(request, model, params)
    return cache[key]


# What a new config of the workload trains on: its largest training shard and the validation set.
_CONFIG_SQL = """
SELECT w.model, w.owner, d.feature_shape, d.num_classes, d.validation_rows, r.source, r.entry_point,
       training_memory_limit() AS max_training_mb,
       (SELECT coalesce(max(shard.rows), 0) FROM (SELECT sum(b.rows) AS rows FROM dataset_buffers b
                                                 WHERE b.dataset_id = d.dataset_id AND b.split = 'train'
                                                 GROUP BY b.segment) shard) AS train_rows
FROM workloads w
JOIN datasets d ON d.name = w.dataset
LEFT JOIN registered_models r ON r.name = w.model
WHERE w.workload_id = $1
"""


def check_config(db: Database, gd: dict[str, Any], workload_id: int, params: dict[str, Any]) -> None:
    """The guard for a config being created in ``workload_id`` (params completed); raises
    :class:`MemoryGuardError`. A script that fails to build is left to its first unit."""
    rows = db.query(_CONFIG_SQL, ["int4"], [workload_id])
    if not rows:
        return  # the insert itself reports the unknown workload
    row = rows[0]
    limit = limit_mb(row["max_training_mb"])
    script = Script(row["model"], row["source"], row["entry_point"]) if row["source"] is not None else None
    shape = tuple(row["feature_shape"])
    # Completed already in the trigger; checked again for a direct call.
    params = roster.validate(row["model"], params, shape, script is not None)
    if row["model"] == transfer.MODEL:
        found: Profile | None = transfer_profile(db, params, shape, row["num_classes"], row["owner"])
    else:
        found = profile(gd, row["model"], params, shape, row["num_classes"], script)
    if found is not None:
        check(row["model"], params, found, int(row["train_rows"]), int(row["validation_rows"]), limit)


_BASE_SQL = "SELECT transfer_base($1, $2)::text AS base"


def transfer_profile(
    db: Database, params: dict[str, Any], input_shape: tuple[int, ...], num_classes: int, owner: str
) -> Profile:
    """A transfer config's profile, counted from its base's stored layers (the base's weights up to the cut, the
    trained ones and the head, every kept layer's outputs); refuses a base or layer :func:`transfer.resolve` would."""
    found = db.query(_BASE_SQL, ["text", "text"], [params["base"], owner])[0]["base"]
    base = transfer.Base.from_row(json.loads(found)) if found is not None else None
    resolved = transfer.resolve(params, base, input_shape)
    assert base is not None  # resolve refused otherwise
    weights, trainable, activations = transfer.profile_counts(resolved, base, num_classes)
    return Profile(weights, trainable, optimizer_slots(params["optimizer"], {}), activations)


def _measure_in_child(request: dict[str, Any], model: str, params: dict[str, Any]) -> Profile | None:
    try:
        done = child.run("cerebro_plpy.memory", request)
    except subprocess.TimeoutExpired:
        raise MemoryGuardError(
            f"config {json.dumps(params, sort_keys=True)} of model {model!r}: building it to estimate its memory "
            f"took longer than {child.TIMEOUT_S:g} s"
        ) from None
    answer = child.answer(done)
    if "profile" in answer:
        return Profile(**answer["profile"])
    if "error" in answer:
        return None
    # Out of memory, or the child died: refuse, to be safe.
    reason = answer.get("memory") or child.died(done)
    raise MemoryGuardError(
        f"config {json.dumps(params, sort_keys=True)} of model {model!r}: building it to estimate its memory "
        f"failed within {child.ADDRESS_SPACE / 2**30:g} GB ({reason}); lower {', '.join(_size_params(model))}"
    )


def _defer(variable: Any, initializer: Any) -> None:
    """Keras' deferred initialization (what StatelessScope does): a shape and no value."""
    variable._value = None
    variable._initializer = initializer


def measure(request: dict[str, Any]) -> Profile:
    """Build the requested model with no variable allocated and profile it (in the child process only:
    its variables stay unusable)."""
    import keras
    from keras.src import backend

    # StatelessScope would defer only variables with an initializer, and refuses the optimizer's
    # counters that every compile creates; deferring at the one place values are made covers both.
    backend.Variable._initialize_with_initializer = _defer
    model, params = request["model"], request["params"]
    shape, classes = tuple(request["input_shape"]), request["num_classes"]
    if request["script"] is None:
        return keras_profile(roster.build(model, params, shape, classes), keras.optimizers.get(params["optimizer"]))
    built = custom.create({}, Script(**request["script"]), params, shape, classes)
    return keras_profile(built, built.optimizer)


def _main() -> None:
    child.limit_address_space()
    request = json.load(sys.stdin)
    try:
        answer: dict[str, Any] = {"profile": asdict(measure(request))}
    except Exception as error:  # noqa: BLE001 - reported to the parent, which decides
        # custom.create wraps the script's errors; the original stays the context.
        answer = {"memory" if child.is_memory_error(error) else "error": f"{type(error).__name__}: {error}"[:300]}
    print(json.dumps(answer))


if __name__ == "__main__":
    _main()
