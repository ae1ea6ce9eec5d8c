"""Plain-text tables for people reading a terminal: aligned columns, times in ms.

Each module that owns some data formats it with these (``measure.text`` for
records, ``analysis.summary`` for an analysis); the CLI only prints the result.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["columns", "ms"]


def ms(value: float | None) -> str:
    """A time in milliseconds, three decimals; ``-`` when it is missing (never 0).

    Missing is ``None`` in records and NaN in DataFrames: both print as ``-``.
    """
    return "-" if value is None or value != value else f"{value:.3f}"


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as left-aligned columns two spaces apart, trailing blanks removed.

    The first row is usually the header; every row must have as many cells as it.
    """
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]
