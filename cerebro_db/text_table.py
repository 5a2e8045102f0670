"""Plain-text tables, as the CLI and the benchmarks print them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[bool] | None = None) -> str:
    """Columns separated by `` | `` under a header rule; NULLs blank.

    ``right`` says which columns are right-aligned (default: all but the first).
    """
    aligned_right = right if right is not None else [i > 0 for i in range(len(headers))]
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    widths = [max([len(headers[i]), *(len(row[i]) for row in cells)]) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return " | ".join(
            value.rjust(width) if aligned_right[i] else value.ljust(width)
            for i, (value, width) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), "-+-".join("-" * width for width in widths), *(line(row) for row in cells)])
