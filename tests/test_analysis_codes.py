"""analysis.codes: the lookup of keys by string, hand-built columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from netvantage.analysis.codes import rows_of


@pytest.mark.parametrize("dtype", ["str", "string", object, "category"])
def test_rows_of_finds_each_value_among_distinct_keys(dtype):
    keys = pd.Series(["rec-b", "rec-a", "rec-c"], dtype=dtype)
    column = pd.Series(["rec-c", "rec-x", "rec-b", "rec-b", "rec-a"], dtype=dtype)
    rows = rows_of(column, keys)
    assert rows is not None
    assert rows.dtype == np.int32
    assert rows.tolist() == [2, -1, 0, 0, 1]  # rec-x is no key: -1


def test_rows_of_is_none_when_keys_repeat_or_are_missing():
    column = pd.Series(["a", "b"], dtype="str")
    assert rows_of(column, pd.Series(["a", "b", "a"], dtype="str")) is None
    assert rows_of(column, pd.Series(["b", "a", "b"], dtype="str")) is None  # not the first
    assert rows_of(column, pd.Series(["a", None, "b"], dtype="string")) is None
    # No keys at all: nothing is found, and nothing repeats.
    nowhere = rows_of(column, pd.Series([], dtype="str"))
    assert nowhere is not None and nowhere.tolist() == [-1, -1]
