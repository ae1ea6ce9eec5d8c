"""Typed reads of one cell or one row of a frame, for the tests' assertions.

pandas-stubs types ``frame.loc[row, column]`` (and ``frame.loc[(a, b)]`` on a MultiIndex) as
any scalar pandas can hold — str, bytes, dates, None, ... — so ``>`` or ``-`` on it does not
type-check, and rightly: the stubs cannot know the column's dtype.  These helpers check at run
time what the test expects, fail with the value seen when it is something else, and return
the narrowed type.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable

import pandas as pd

__all__ = ["number", "row"]


def number(value: object) -> float:
    """``value`` as a float; it must be a real number (NaN included), not a bool or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise AssertionError(f"expected a number, got {value!r} ({type(value).__name__})")
    return float(value)


def row(frame: pd.DataFrame, key: Hashable) -> pd.Series:
    """The one row of ``frame`` labelled ``key`` (a tuple for a MultiIndex)."""
    got = frame.xs(key)
    if not isinstance(got, pd.Series):
        raise AssertionError(f"expected one row labelled {key!r}, got {len(got)}")
    return got
