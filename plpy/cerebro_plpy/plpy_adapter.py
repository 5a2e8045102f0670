"""The one place that touches PL/Python's ``plpy`` module.

Callers get a :class:`Database`: parameterised queries (plans prepared once per
backend and kept in ``GD``) and an interrupt check. Tests can pass any object
with the same methods.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

GD_PLANS = "cerebro.plans"
_INTERRUPT_CHECK = "SELECT"


class Database(Protocol):
    def query(self, sql: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    def batches(
        self, sql: str, types: Sequence[str], args: Sequence[Any], size: int
    ) -> Iterator[list[dict[str, Any]]]: ...

    def quote_ident(self, name: str) -> str: ...

    def check_interrupts(self) -> None: ...


class PlpyDatabase:
    def __init__(self, plpy: Any, gd: dict[str, Any]) -> None:
        self._plpy = plpy
        self._plans: dict[tuple[str, tuple[str, ...]], Any] = gd.setdefault(GD_PLANS, {})

    def _plan(self, sql: str, types: Sequence[str]) -> Any:
        key = (sql, tuple(types))
        if key not in self._plans:
            self._plans[key] = self._plpy.prepare(sql, list(types))
        return self._plans[key]

    def query(self, sql: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self._plpy.execute(self._plan(sql, types), list(args))]

    def batches(self, sql: str, types: Sequence[str], args: Sequence[Any], size: int) -> Iterator[list[dict[str, Any]]]:
        cursor = self._plpy.cursor(self._plan(sql, types), list(args))
        try:
            while rows := cursor.fetch(size):
                yield [dict(row) for row in rows]
        finally:
            cursor.close()

    def quote_ident(self, name: str) -> str:
        quoted: str = self._plpy.quote_ident(name)
        return quoted

    def check_interrupts(self) -> None:
        # Any SPI call runs CHECK_FOR_INTERRUPTS: a pending cancel or
        # statement_timeout surfaces here as an error and ends the unit.
        self._plpy.execute(self._plan(_INTERRUPT_CHECK, ()))
