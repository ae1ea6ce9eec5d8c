"""The CLI's JSON output (echo_json) is json.dumps(value, indent=2, default=str) to the byte."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netvantage.cli._common import JSON_WRITE_PIECES, echo_json

_scalars = (st.none() | st.booleans() | st.integers() | st.text()
            | st.floats(allow_nan=True, allow_infinity=True)
            | st.datetimes().map(lambda d: d.replace(tzinfo=dt.UTC))
            | st.floats(allow_nan=True).map(np.float64) | st.integers(-5, 5).map(np.int64))
_keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=True)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=6)
                       | st.lists(inner, max_size=4).map(tuple)
                       | st.dictionaries(_keys, inner, max_size=6), max_leaves=60)


def _printed(value: Any) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        echo_json(value)
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(value=_values)
def test_echo_json_is_json_dumps(value: Any) -> None:
    assert _printed(value) == json.dumps(value, indent=2, default=str) + "\n"


def test_echo_json_writes_a_long_text_in_pieces() -> None:
    """Many records (written in several pieces), nested, with the awkward floats."""
    rows: list[dict[Any, Any]] = [{"i": i, "x": i / 7, "gap": math.nan if i % 5 == 0 else -math.inf,
             "path": ["a", ("b", i)], "empty": {}, "none": [], 3: True, 0.5: None}
            for i in range(3 * JSON_WRITE_PIECES // 10)]
    value = {"rows": rows, "notes": ["é \u2028 \"quoted\""], "when": dt.date(2026, 1, 2)}
    assert _printed(value) == json.dumps(value, indent=2, default=str) + "\n"


def test_echo_json_refuses_the_keys_json_refuses() -> None:
    with pytest.raises(TypeError, match="keys must be str, int, float, bool or None"):
        echo_json({(1, 2): "tuple key"})
