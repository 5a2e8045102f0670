"""Entry points of the PL/Python functions in ``sql/``: each body is one call here.

Errors the user must fix come back as ``{"error": ..., "hint": ...}`` and the
PL/pgSQL wrapper raises them, so users get a plain SQL error with a hint rather
than a Python traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cerebro_plpy import dataset, roster, search_space, unit
from cerebro_plpy.packing import PackingError
from cerebro_plpy.params import ParamError
from cerebro_plpy.plpy_adapter import PlpyDatabase
from cerebro_plpy.training import TrainingError

_USER_ERRORS: dict[type[Exception], str] = {
    ParamError: "check the search space and params against the model's hyper-parameters (SELECT * FROM roster)",
    PackingError: "see prepare_dataset in the README for the accepted table layouts",
    TrainingError: "the config failed; try other hyper-parameters",
    unit.UnitError: "units are claimed and run by the scheduler (cerebro-db scheduler)",
}


def _result(call: Callable[[], Any]) -> str:
    try:
        return json.dumps({"result": call()})
    except tuple(_USER_ERRORS) as error:
        hint = next(hint for kind, hint in _USER_ERRORS.items() if isinstance(error, kind))
        return json.dumps({"error": str(error), "hint": hint})


def prepare_dataset(plpy: Any, gd: dict[str, Any], **arguments: Any) -> str:
    return _result(lambda: dataset.prepare_dataset(PlpyDatabase(plpy, gd), **arguments))


def run_unit(plpy: Any, gd: dict[str, Any], config_id: int, segment: int) -> str:
    return _result(lambda: unit.run_unit(PlpyDatabase(plpy, gd), gd, config_id, segment))


def expand_search_space(
    model: str, space: str, procedure: str, num_configs: int | None, seed: int, feature_shape: list[int]
) -> str:
    return _result(
        lambda: search_space.expand(model, json.loads(space), procedure, num_configs, seed, tuple(feature_shape))
    )


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
