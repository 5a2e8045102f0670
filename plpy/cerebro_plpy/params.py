"""Hyper-parameter declarations and the checks every config's params go through."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Where to look for a model's hyper-parameters: the hint of a bad param value.
ROSTER_HINT = "SELECT * FROM roster lists each model's hyper-parameters, their types, defaults and legal values"


class ParamError(ValueError):
    """A hyper-parameter or search space the user must fix; the message names the key, ``hint`` where to look
    (by default the roster: the raiser knows better when the problem is the search space's form or a procedure)."""

    def __init__(self, message: str, hint: str = ROSTER_HINT) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its type, default and legal values, documented for users."""

    name: str
    kind: type  # int, float or str
    default: Any
    doc: str
    low: float | None = None  # inclusive
    high: float | None = None  # inclusive
    choices: tuple[Any, ...] | None = None

    def check(self, value: Any) -> Any:
        """``value`` converted to this parameter's type, or :class:`ParamError`."""
        if self.kind is str:
            if not isinstance(value, str):
                raise ParamError(f"{self.name} must be a string, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamError(f"{self.name} must be a number, got {value!r}")
        else:
            try:
                number = float(value)  # jsonb may carry integers too large for a float
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ParamError(f"{self.name} must be a finite number, got {str(value)[:40]}")
            if self.kind is int and number != int(number):
                raise ParamError(f"{self.name} must be an integer, got {value!r}")
            value = int(number) if self.kind is int else number
        if self.choices is not None and value not in self.choices:
            raise ParamError(f"{self.name} must be one of {list(self.choices)}, got {value!r}")
        if self.low is not None and value < self.low:
            raise ParamError(f"{self.name} must be >= {self.low}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ParamError(f"{self.name} must be <= {self.high}, got {value!r}")
        return value


#: Training hyper-parameters every model accepts; they never change the architecture.
TRAINING_PARAMS = (
    Param("lr", float, 0.001, "learning rate", low=1e-12, high=10.0),
    Param("batch_size", int, 64, "examples per gradient step", low=1, high=65536),
    Param("optimizer", str, "adam", "optimizer", choices=("adam", "sgd", "rmsprop")),
)


def complete_params(declared: tuple[Param, ...], given: dict[str, Any], model: str) -> dict[str, Any]:
    """``given`` checked against ``declared`` with the defaults filled in."""
    by_name = {p.name: p for p in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        raise ParamError(
            f"unknown hyper-parameter {unknown[0]!r} for model {model!r}; known: {', '.join(sorted(by_name))}"
        )
    return {p.name: p.check(given[p.name]) if p.name in given else p.default for p in declared}
