"""Search spaces: parsing the user's jsonb and expanding it into configs.

Accepted forms per key::

    "lr": [0.001, 0.01]                          choices
    "lr": {"choices": [0.001, 0.01]}             choices
    "lr": {"min": 1e-4, "max": 1e-1, "log": true} range (random sampling only)
    "optimizer": "adam"                           a fixed value
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cerebro_plpy import roster
from cerebro_plpy.params import Param, ParamError

#: The hint of a search space of the wrong form (a bad value inside it gets the roster's).
SPACE_HINT = (
    'a search_space maps each hyper-parameter to a value, a list of choices, {"choices": [...]} or '
    '{"min": .., "max": .., "log": true|false} (README, Search spaces and procedures)'
)
#: The hint of a procedure that does not fit its arguments.
PROCEDURE_HINT = (
    "procedure 'grid' takes lists of choices and no num_configs; 'random' and 'hyperopt' take num_configs and "
    "ranges too, 'hyperband' either (README, Search spaces and procedures)"
)

PROCEDURES = ("grid", "random", "hyperopt", "hyperband")
#: One workload's configs are rows every claim looks at: keep a search within reason.
MAX_CONFIGS = 10_000


@dataclass(frozen=True)
class Choices:
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool


Dimension = Choices | Range


def declared_params(model: str, space: Any, registered: bool = False) -> dict[str, Param]:
    """The model's parameters; for a registered script also the space's own keys, typed by their values."""
    entry = roster.roster_model(model, registered)
    declared = {p.name: p for p in entry.params}
    if entry.open_params and isinstance(space, dict):
        for key, spec in space.items():
            declared.setdefault(key, _inferred(key, spec))
    return declared


def _inferred(key: str, spec: Any) -> Param:
    """A registered script's own key: ``str`` if all values are strings, ``int`` if all are integers, else ``float``."""
    if isinstance(spec, dict):
        values = spec["choices"] if "choices" in spec else [spec.get("min"), spec.get("max")]
    else:
        values = spec if isinstance(spec, list) else [spec]
    if not isinstance(values, list):
        return Param(key, float, None, "a registered script's parameter")
    if values and all(isinstance(v, str) for v in values):
        return Param(key, str, None, "a registered script's parameter")
    kind = int if all(isinstance(v, int) and not isinstance(v, bool) for v in values) else float
    return Param(key, kind, None, "a registered script's parameter")


def parse(model: str, space: Any, registered: bool = False) -> dict[str, Dimension]:
    """The dimensions of ``space``, each checked against the model's parameters."""
    if not isinstance(space, dict) or not space:
        raise ParamError(f"search_space must be a non-empty JSON object, got {space!r}", SPACE_HINT)
    declared = declared_params(model, space, registered)
    dimensions: dict[str, Dimension] = {}
    for key, spec in space.items():
        if key not in declared:
            raise ParamError(
                f"unknown hyper-parameter {key!r} in search_space for model {model!r}; "
                f"known: {', '.join(sorted(declared))}"
            )
        dimensions[key] = _dimension(declared[key], spec)
    return dimensions


def _dimension(param: Param, spec: Any) -> Dimension:
    if isinstance(spec, dict):
        keys = set(spec)
        if keys == {"choices"}:
            return _choices(param, spec["choices"])
        if {"min", "max"} <= keys <= {"min", "max", "log"}:
            return _range(param, spec)
        raise ParamError(
            f'search_space[{param.name!r}] has keys {sorted(keys)}; use {{"choices": [...]}} '
            'or {"min": .., "max": .., "log": true|false}',
            SPACE_HINT,
        )
    if isinstance(spec, list):
        return _choices(param, spec)
    return Choices((param.check(spec),))


def _choices(param: Param, values: Any) -> Choices:
    if not isinstance(values, list) or not values:
        raise ParamError(f"search_space[{param.name!r}] needs a non-empty list of choices, got {values!r}", SPACE_HINT)
    return Choices(tuple(param.check(v) for v in values))


def _range(param: Param, spec: dict[str, Any]) -> Range:
    if param.kind is str:
        raise ParamError(f"search_space[{param.name!r}] is categorical; give choices, not a range", SPACE_HINT)
    low, high = param.check(spec["min"]), param.check(spec["max"])
    if low > high:
        raise ParamError(f"search_space[{param.name!r}] has min {low} > max {high}", SPACE_HINT)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ParamError(f"search_space[{param.name!r}].log must be true or false, got {log!r}", SPACE_HINT)
    if log and low <= 0:
        raise ParamError(f"search_space[{param.name!r}] is log-scaled, so min must be > 0, got {low}", SPACE_HINT)
    return Range(float(low), float(high), log)


def expand(
    model: str,
    space: Any,
    procedure: str,
    num_configs: int | None,
    seed: int,
    feature_shape: tuple[int, ...],
    parallelism: int = 1,
    registered: bool = False,
) -> list[dict[str, Any]]:
    """The complete, validated params of each config ``procedure`` starts with.

    ``grid`` and ``random`` create all their configs now; ``hyperband`` too (a grid
    when it has choices only and no ``num_configs``), pruning them later; ``hyperopt``
    starts ``parallelism`` random configs and lets TPE propose the rest as results arrive.
    """
    if procedure not in PROCEDURES:
        raise ParamError(f"unknown procedure {procedure!r}; choose one of {', '.join(PROCEDURES)}", PROCEDURE_HINT)
    dimensions = parse(model, space, registered)
    declared = declared_params(model, space, registered)
    if procedure == "hyperband" and num_configs is None:
        procedure = "grid"
    if procedure == "grid":
        if num_configs is not None:
            raise ParamError(
                "grid creates one config per combination of choices; leave num_configs NULL", PROCEDURE_HINT
            )
        ranges = [key for key, dim in dimensions.items() if isinstance(dim, Range)]
        if ranges:
            raise ParamError(
                f"grid needs choices, but search_space[{ranges[0]!r}] is a range; use procedure 'random'",
                PROCEDURE_HINT,
            )
        keys = list(dimensions)
        _check_count(math.prod(len(dim.values) for dim in dimensions.values() if isinstance(dim, Choices)), "grid")
        points = [
            dict(zip(keys, values, strict=True))
            for values in itertools.product(*(dim.values for dim in dimensions.values() if isinstance(dim, Choices)))
        ]
    else:
        if num_configs is None or num_configs < 1:
            raise ParamError(f"procedure {procedure!r} needs num_configs >= 1, got {num_configs}", PROCEDURE_HINT)
        _check_count(num_configs, "num_configs")
        count = min(num_configs, max(1, parallelism)) if procedure == "hyperopt" else num_configs
        rng = np.random.default_rng(seed)
        points = [
            {key: _sample(rng, dimensions[key], declared[key].kind) for key in sorted(dimensions)} for _ in range(count)
        ]
    return [roster.validate(model, point, feature_shape, registered) for point in points]


def _check_count(count: int, what: str) -> None:
    if count > MAX_CONFIGS:
        raise ParamError(
            f"{what} would create {count} configs, more than {MAX_CONFIGS} in one workload; "
            "narrow the search space (or sample it with procedure 'random')",
            SPACE_HINT,
        )


def _sample(rng: np.random.Generator, dim: Dimension, kind: type) -> Any:
    if isinstance(dim, Choices):
        return dim.values[int(rng.integers(len(dim.values)))]
    low, high = (math.log(dim.low), math.log(dim.high)) if dim.log else (dim.low, dim.high)
    value = rng.uniform(low, high)
    value = math.exp(value) if dim.log else value
    # exp(log(x)) may land a rounding error outside the user's bounds: clamp
    if kind is int:
        return int(min(dim.high, max(dim.low, round(value))))
    return float(min(dim.high, max(dim.low, value)))


def refine(space: dict[str, Any], selected: list[dict[str, Any]]) -> dict[str, Any]:
    """A drill-down space around the ``selected`` configs' params, for each key of ``space``.

    Positive floats get a log range from half the smallest to twice the largest selected value
    (three significant digits, what a user would type); other keys get the selected values as
    choices (one value: fixed). The dashboard's Drill down form and the drill_down suggestion use it.
    """
    refined: dict[str, Any] = {}
    for key in space:
        values = sorted({config[key] for config in selected if key in config}, key=str)
        if not values:
            continue
        if all(isinstance(v, float) and not isinstance(v, bool) and v > 0 for v in values):
            refined[key] = {"min": _significant(min(values) / 2), "max": _significant(max(values) * 2), "log": True}
        else:
            refined[key] = values if len(values) > 1 else values[0]
    return refined


def _significant(value: float) -> float:
    return float(f"{value:.3g}") if value and math.isfinite(value) else value
