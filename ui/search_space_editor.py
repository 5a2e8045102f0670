"""The Launch page's search-space editor and the forms' typed values, apart from Streamlit (tested on their own).

Rows of the editor (:class:`SpaceEntry`) become the ``search_space`` jsonb of ``run_model_selection`` and back;
the database still checks legal values and names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ParamSpec:
    """One hyper-parameter of a roster model, as the ``roster`` view describes it."""

    name: str
    type: str  # int, float or str
    default: Any
    allowed: str
    doc: str


def param_specs(roster: list[dict[str, Any]]) -> dict[str, tuple[str, list[ParamSpec]]]:
    """The ``roster`` view's rows (:func:`cerebro_db.client.roster`) by model: (its description, its
    hyper-parameters)."""
    models: dict[str, tuple[str, list[ParamSpec]]] = {}
    for row in roster:
        _, params = models.setdefault(row["model"], (row["model_doc"], []))
        params.append(ParamSpec(row["param"], row["type"], row["default_value"], row["allowed"], row["param_doc"]))
    return models


class SpaceError(ValueError):
    """Search-space input the user must fix; the message names the hyper-parameter."""


@dataclass(frozen=True)
class SpaceEntry:
    """One row of the search-space editor: a parameter left at its default, given choices, or a range."""

    name: str
    mode: str  # "default" | "choices" | "range"
    choices: str = ""  # comma-separated, as typed
    low: str = ""
    high: str = ""
    log: bool = False


def _value(spec: ParamSpec, raw: str) -> Any:
    if not raw:
        raise SpaceError(f"{spec.name}: a value is missing")
    if spec.type == "str":
        return raw
    try:
        number = float(raw)
    except ValueError:
        raise SpaceError(f"{spec.name}: {raw!r} is not a number") from None
    if spec.type == "int":
        if number != int(number):
            raise SpaceError(f"{spec.name}: {raw!r} is not a whole number")
        return int(number)
    return number


def build_search_space(
    entries: Sequence[SpaceEntry], params: Sequence[ParamSpec], picked: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The search_space jsonb for ``run_model_selection``, with ``picked`` keys set by other widgets (transfer's
    base and layers); the database checks legal values and names."""
    by_name = {spec.name: spec for spec in params}
    space: dict[str, Any] = dict(picked or {})
    for entry in entries:
        spec = by_name[entry.name]
        if entry.mode == "choices":
            raw = [part.strip() for part in entry.choices.split(",") if part.strip()]
            if not raw:
                raise SpaceError(f"{entry.name}: give at least one value, separated by commas")
            values = list(dict.fromkeys(_value(spec, part) for part in raw))
            space[entry.name] = values if len(values) > 1 else values[0]
        elif entry.mode == "range":
            if spec.type == "str":
                raise SpaceError(f"{entry.name} is categorical: give choices, not a range")
            low, high = _value(spec, entry.low.strip()), _value(spec, entry.high.strip())
            if not low < high:
                raise SpaceError(f"{entry.name}: a range needs min < max, got {low} .. {high}")
            if entry.log and low <= 0:
                raise SpaceError(f"{entry.name}: a log-scaled range needs min > 0, got {low}")
            space[entry.name] = {"min": low, "max": high, "log": entry.log}
    if not space:
        raise SpaceError("search nothing? give choices or a range for at least one hyper-parameter")
    return space


def parse_space_json(raw: str) -> dict[str, Any]:
    """A search space typed as JSON (registered scripts have no fixed hyper-parameters to offer)."""
    try:
        space = json.loads(raw)
    except json.JSONDecodeError as error:
        raise SpaceError(f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from None
    if not isinstance(space, dict) or not space:
        raise SpaceError('give a JSON object of hyper-parameters, e.g. {"lr": [0.001, 0.01]}')
    return space


def parse_param(raw: str) -> Any:
    """A typed params value: JSON where it parses (``0.01``, ``64``, ``true``), else the text (``adam``)."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.strip()


def searched_keys(space: dict[str, Any]) -> list[str]:
    """The keys ``space`` varies (several choices or a range), not those it fixes."""
    return [
        key
        for key, spec in space.items()
        if (isinstance(spec, list) and len(spec) > 1)
        or (isinstance(spec, dict) and ("min" in spec or len(spec.get("choices", [])) > 1))
    ]


def grid_size(space: dict[str, Any]) -> int | None:
    """How many configs grid creates from ``space``; None if a range makes it impossible."""
    size = 1
    for spec in space.values():
        if isinstance(spec, dict) and "min" in spec:
            return None
        choices = spec.get("choices") if isinstance(spec, dict) else spec
        size *= len(choices) if isinstance(choices, list) else 1
    return size


def space_entries(space: dict[str, Any]) -> list[SpaceEntry]:
    """The editor rows that show ``space`` (the inverse of :func:`build_search_space`)."""
    entries = []
    for name, spec in space.items():
        if isinstance(spec, dict) and "min" in spec:
            entries.append(
                SpaceEntry(name, "range", low=str(spec["min"]), high=str(spec["max"]), log=bool(spec.get("log")))
            )
        else:
            values = spec.get("choices") if isinstance(spec, dict) else spec
            listed = values if isinstance(values, list) else [values]
            entries.append(SpaceEntry(name, "choices", ", ".join(str(v) for v in listed)))
    return entries


def clone_max_epochs(epochs_done: int, max_epochs: int, workload_max_epochs: int) -> int:
    """The Clone form's max_epochs: the source's, or, once the source has trained them all (a clone
    starts at its epochs and needs some left), a workload's worth of epochs beyond them."""
    return max_epochs if epochs_done < max_epochs else epochs_done + workload_max_epochs


def procedure_problem(space: dict[str, Any], procedure: str, num_configs: int | None) -> str | None:
    """Why the procedure cannot run ``space`` with ``num_configs`` (None if it can), as the database would
    refuse it: grid takes choices only and no count, random and hyperopt need a count."""
    if procedure == "grid" or (procedure == "hyperband" and num_configs is None):
        ranges = [key for key, spec in space.items() if isinstance(spec, dict) and "min" in spec]
        if ranges:
            way = "give choices, or a number of configs to sample" if procedure == "hyperband" else "give choices"
            return f"grid cannot enumerate a range ({', '.join(ranges)}): {way}, or pick random, hyperopt or hyperband"
    elif num_configs is None:
        return f"{procedure} needs the number of configs to sample"
    return None


#: Column names a dataset's label usually has, most likely first.
LABEL_NAMES = ("label", "labels", "target", "class", "y")


def default_label(columns: Sequence[str]) -> str | None:
    """The column named like a label (``label``, ``target``, ``class``, ``y``, ``*_label``), else None: the user
    chooses (the first column is usually an ``id``)."""
    by_name = {column.lower(): column for column in columns}
    for name in LABEL_NAMES:
        if name in by_name:
            return by_name[name]
    return next((column for column in columns if column.lower().endswith(("_label", "_target", "_class"))), None)


def id_like(column: str) -> bool:
    return column.lower() == "id" or column.lower().endswith("_id")


def default_features(columns: Sequence[str], label: str | None) -> list[str]:
    """Every column but the label and ids (an id as a feature lets a model learn the row order)."""
    return [column for column in columns if column != label and not id_like(column)]


def feature_shape(raw: str) -> list[int] | None:
    """``28,28,1`` -> [28, 28, 1]; nothing typed -> None (the features' own shape)."""
    text = raw.strip()
    try:
        return [int(part) for part in text.split(",")] if text else None
    except ValueError:
        raise SpaceError(f"feature shape {raw!r}: give whole numbers separated by commas, e.g. 28,28,1") from None


def dataset_problem(label: str | None, features: Sequence[str], name: str, shape: str) -> str | None:
    """What keeps "Prepare dataset" from running (None if nothing does)."""
    if label is None:
        return "choose the label column"
    if not features:
        return "choose the feature columns"
    if label in features:
        return f"the label {label!r} cannot be a feature too"
    if not name.strip():
        return "give the dataset a name"
    try:
        feature_shape(shape)
    except SpaceError as error:
        return str(error)
    return None
