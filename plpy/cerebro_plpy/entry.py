"""Entry points of the PL/Python functions in ``sql/``: each body is one call here.

Errors the user must fix come back as ``{"error": ..., "hint": ...}`` and the
PL/pgSQL wrapper raises them, so users get a plain SQL error with a hint rather
than a Python traceback.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Callable
from typing import Any

from cerebro_plpy import (
    custom,
    dataset,
    features,
    greenplum,
    imported,
    inference,
    leakage,
    memory,
    procedures,
    roster,
    search_space,
    shards,
    state_files,
    training,
    transfer,
    unit,
)
from cerebro_plpy.custom import ScriptError
from cerebro_plpy.imported import ImportedModelError
from cerebro_plpy.inference import InferenceError
from cerebro_plpy.memory import MemoryGuardError
from cerebro_plpy.packing import PackingError
from cerebro_plpy.params import ParamError
from cerebro_plpy.plpy_adapter import PlpyDatabase
from cerebro_plpy.state import ModelState
from cerebro_plpy.training import TrainingError
from cerebro_plpy.unit import Saved

#: The errors users must fix, with their hint (a ParamError carries its own: the roster, the search space's form...).
_USER_ERRORS: dict[type[Exception], str] = {
    PackingError: "see prepare_dataset in the README for the accepted table layouts",
    TrainingError: "the config failed; try other hyper-parameters",
    MemoryGuardError: "the memory guard estimates a config's peak training memory before it trains (README, "
    "When things go wrong); lower what the message names, or an admin raises cerebro.max_training_mb "
    "(ALTER DATABASE ... SET cerebro.max_training_mb = ...)",
    ScriptError: "create_model(params) must return a compiled keras.Model ending in a softmax over "
    "params['num_classes'] for inputs of shape params['input_shape']",
    unit.UnitError: "the scheduler runs a unit where its segment's shard is (cerebro-db scheduler); a segment "
    "server gets a dataset's shards from the coordinator at its first unit of it",
    InferenceError: "SELECT * FROM leaderboard lists the configs and their datasets",
    state_files.StateFileError: "model states live in files under the data directory (cerebro_states/, "
    "docs/architecture.md): restore it with the data directory, or stop the config and clone another",
    transfer.MissingBaseError: "a transfer config's base must stay imported while its configs are used "
    "(SELECT * FROM imported_model_catalog); a segment server reads it from the coordinator",
}


def _result(call: Callable[[], Any]) -> str:
    try:
        return json.dumps({"result": call()})
    except ParamError as error:
        return json.dumps({"error": str(error), "hint": error.hint})
    except ImportedModelError as error:  # each refusal has its own SQLSTATE (raise_if_error's errcode)
        return json.dumps({"error": str(error), "hint": error.hint, "errcode": error.sqlstate})
    except tuple(_USER_ERRORS) as error:
        hint = next(hint for kind, hint in _USER_ERRORS.items() if isinstance(error, kind))
        return json.dumps({"error": str(error), "hint": hint})


def prepare_dataset(plpy: Any, gd: dict[str, Any], **arguments: Any) -> str:
    return _result(lambda: dataset.prepare_dataset(PlpyDatabase(plpy, gd), **arguments))


def check_dataset(class_values: str, **arguments: Any) -> str:
    """``class_values`` arrives as jsonb text."""
    return _result(lambda: dataset.check_dataset(class_values=json.loads(class_values), **arguments))


def check_buffer(**arguments: Any) -> str:
    return _result(lambda: dataset.check_buffer(**arguments))


def count_duplicate_rows(plpy: Any, gd: dict[str, Any], dataset_id: int) -> str:
    return _result(lambda: leakage.dataset_duplicates(PlpyDatabase(plpy, gd), dataset_id))


def evaluate(plpy: Any, gd: dict[str, Any], config_id: int, dataset_name: str) -> str:
    return _result(lambda: inference.evaluate(PlpyDatabase(plpy, gd), gd, config_id, dataset_name))


def predict_part(plpy: Any, gd: dict[str, Any], **arguments: Any) -> str:
    return _result(lambda: inference.predict_part(PlpyDatabase(plpy, gd), gd, **arguments))


def _result_and_bytes(call: Callable[[], tuple[Any, bytes | None]]) -> tuple[str, bytes | None]:
    """For functions with ``OUT outcome jsonb`` and a ``bytea`` OUT parameter: bytes do not fit in JSON."""
    produced: list[bytes | None] = []

    def result() -> Any:
        value, raw = call()
        produced.append(raw)
        return value

    outcome = _result(result)
    return outcome, produced[0] if produced else None


def export_model(plpy: Any, gd: dict[str, Any], config_id: int) -> dict[str, Any]:
    """``{"outcome": ..., "model": <.keras bytes or None>}``."""
    outcome, model = _result_and_bytes(lambda: (None, inference.export(PlpyDatabase(plpy, gd), gd, config_id)))
    return {"outcome": outcome, "model": model}


def _train(
    plpy: Any, gd: dict[str, Any], context: str, state: bytes | mmap.mmap | None, save: Callable[[ModelState], Saved]
) -> tuple[dict[str, Any], Saved]:
    """The hop of ``context`` (``unit_context``'s) on this server's shard of its segment, from ``state``."""
    db = PlpyDatabase(plpy, gd)
    hop = json.loads(context)
    transfer.fetch_archive(db, gd, hop.get("base_sha256"))
    # A frozen base's head trains on its materialized features, if stored here (materialize_features).
    shard = features.for_hop(db, gd, hop)
    if shard is not None:
        on_features = {**hop, "features_shape": list(shard.train[0].shape[1:])}
        return unit.train_hop(gd, on_features, state, shard, db.check_interrupts, save)
    return unit.train_hop(gd, hop, state, shards.for_hop(db, gd, hop), db.check_interrupts, save)


def train_hop(plpy: Any, gd: dict[str, Any], context: str, state: bytes | None) -> dict[str, Any]:
    """A hop handed its state (a segment server's, for a coordinator):
    ``{"outcome": <the hop's summary>, "new_state": ...}``; writes nothing."""
    outcome, new_state = _result_and_bytes(lambda: _train(plpy, gd, context, state, ModelState.encode))
    return {"outcome": outcome, "new_state": new_state}


def train_stored_hop(
    plpy: Any, gd: dict[str, Any], context: str, directory: str, state_file: str | None, new_state_file: str
) -> str:
    """A hop on the server that stores the config's states (the local backend's): from the file
    ``state_file`` (None before the config's first hop) to the new file ``new_state_file``, whose size the
    summary gives as ``state_bytes``."""

    def train() -> dict[str, Any]:
        state = state_files.read(directory, state_file) if state_file is not None else None
        if state_file is not None and state is None:  # the caller holds the config's claim: nothing sweeps it
            raise state_files.StateFileError(f"the state file {state_file} of this config is missing from {directory}")
        summary, size = _train(
            plpy, gd, context, state, lambda new: state_files.write(directory, new_state_file, new.buffers())
        )
        return {**summary, "state_bytes": size}

    return _result(train)


def write_state_file(directory: str, name: str, state: bytes) -> int:
    """A state handed to the coordinator (a segment server's hop), stored as the file ``name``."""
    return state_files.write(directory, name, [state])


def read_state_file(directory: str, name: str) -> bytes | None:
    """The state file ``name`` (None if it is gone), for a caller outside this server."""
    found = state_files.read(directory, name)
    return None if found is None else bytes(found)


def materialize_features(plpy: Any, gd: dict[str, Any], context: str) -> str:
    """The features the hop of ``context`` will read and are not stored here yet, materialized (staged, batched)."""
    db = PlpyDatabase(plpy, gd)

    def materialize() -> dict[str, Any]:
        hop = json.loads(context)
        transfer.fetch_archive(db, gd, hop.get("base_sha256"))
        return features.materialize(db, gd, hop)

    return _result(materialize)


def greenplum_hop(plpy: Any, gd: dict[str, Any], train: greenplum.TrainHop) -> dict[str, Any]:
    """The ``gp_hop`` row of a Greenplum unit: ``{"outcome": <the usual result JSON of the
    summary>, "state": <the new state or None>}``; the coordinator raises the outcome's error."""
    outcome, state = _result_and_bytes(lambda: greenplum.finish(PlpyDatabase(plpy, gd), gd, train))
    return {"outcome": outcome, "state": state}


def expand_search_space(
    model: str,
    space: str,
    procedure: str,
    num_configs: int | None,
    seed: int,
    feature_shape: list[int],
    parallelism: int,
    registered: bool,
) -> str:
    return _result(
        lambda: search_space.expand(
            model, json.loads(space), procedure, num_configs, seed, tuple(feature_shape), parallelism, registered
        )
    )


def complete_params(model: str, params: str, feature_shape: list[int], registered: bool) -> str:
    """A config's params checked against its model, defaults filled in (add_config, INSERT)."""
    return _result(lambda: roster.validate(model, json.loads(params), tuple(feature_shape), registered))


def check_training_memory(plpy: Any, gd: dict[str, Any], workload_id: int, params: str) -> str:
    """The memory guard for a new config of ``workload_id`` (INSERT INTO configs, add_config, clone_config)."""
    return _result(lambda: memory.check_config(PlpyDatabase(plpy, gd), gd, workload_id, json.loads(params)))


#: A clone's overrides that do not fit.
CLONE_HINT = (
    "a clone continues its source's weights: clone_config may override lr, batch_size, max_epochs and other keys "
    "that keep the architecture; to try another architecture, SELECT add_config(workload, params)"
)


def clone_params(model: str, params: str, overrides: str, feature_shape: list[int], registered: bool) -> str:
    """The params of a clone: ``overrides`` applied, refused where they would change the architecture."""

    def merge() -> dict[str, Any]:
        source, changes = json.loads(params), json.loads(overrides)
        if not isinstance(changes, dict):
            raise ParamError(f"overrides must be a JSON object, got {changes!r}", CLONE_HINT)
        merged = roster.validate(model, {**source, **changes}, tuple(feature_shape), registered)
        if roster.architecture_key(model, merged, registered) != roster.architecture_key(model, source, registered):
            changed = sorted(k for k in changes if k not in ("lr", "batch_size") and changes[k] != source.get(k))
            raise ParamError(
                f"overrides {changed} would change the model's variables; a clone keeps its source's weights, "
                "so it may only change lr, batch_size and other keys that keep the architecture",
                CLONE_HINT,
            )
        return merged

    return _result(merge)


def refine_search_space(space: str, selected: str) -> str:
    """A drill-down search space around the selected configs' params (the drill_down suggestion)."""
    return json.dumps(search_space.refine(json.loads(space), json.loads(selected)))


def architecture_key(model: str, params: str, registered: bool) -> str:
    """Configs with the same key can take each other's state (warm start)."""
    return json.dumps(roster.architecture_key(model, json.loads(params), registered))


def tpe_suggest(
    model: str,
    space: str,
    history: str,
    count: int,
    seed: int,
    feature_shape: list[int],
    startup: int,
    registered: bool,
) -> str:
    return _result(
        lambda: procedures.tpe_suggest(
            model,
            json.loads(space),
            [(p, v) for p, v in json.loads(history)],
            count,
            seed,
            tuple(feature_shape),
            startup,
            registered,
        )
    )


def check_model_script(gd: dict[str, Any], name: str, source: str, entry_point: str) -> str:
    """register_model's check: the script builds a working compiled model for a sample dataset."""

    def check() -> dict[str, Any]:
        if name in roster.ROSTER:
            raise ScriptError(f"{name!r} is a roster model; register the script under another name")
        if not name.strip() or not entry_point.strip():
            raise ScriptError("a registered model needs a non-empty name and entry_point")
        training.tensorflow(gd)
        summary = custom.check(gd, custom.Script(name, source, entry_point))
        return {**summary, "source_sha256": custom.source_sha256(source)}

    return _result(check)


def describe_imported_model(keras_file: bytes) -> str:
    """import_model's check: the archive loads in safe mode with a fixed input; its shapes and layers."""
    return _result(lambda: imported.inspect(keras_file))


def transfer_params(params: str, feature_shape: list[int], base: str | None) -> str:
    """A transfer config's params checked against its base (``transfer_base``'s JSON, NULL if unknown to the
    workload's owner), its layer resolved."""
    found = transfer.Base.from_row(json.loads(base)) if base is not None else None
    return _result(lambda: transfer.resolve(json.loads(params), found, tuple(feature_shape)))


def check_transfer_space(space: str, feature_shape: list[int], bases: str) -> str:
    """A transfer workload's search space: every base, layer and trainable_from it can combine is usable
    (``bases``: a JSON object of the bases its owner may use, by name)."""
    found = {name: transfer.Base.from_row(row) for name, row in json.loads(bases).items()}
    return _result(lambda: transfer.check_space(json.loads(space), found, tuple(feature_shape)))


def roster_table() -> list[dict[str, Any]]:
    """One row per (model, hyper-parameter), for the ``roster`` view."""
    return [
        {
            "model": model.name,
            "model_doc": model.doc,
            "param": p.name,
            "type": p.kind.__name__,
            "default_value": json.dumps(p.default),
            "param_doc": p.doc,
            "allowed": json.dumps(list(p.choices)) if p.choices else f"[{p.low}, {p.high}]",
        }
        for model in roster.ROSTER.values()
        for p in model.params
    ]
