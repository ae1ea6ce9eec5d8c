"""iter_json reads one-line arrays in stretches and JSON Lines with msgspec: the same values,
lines and problems as reading each value with the json module."""

from __future__ import annotations

import io
import json
import math

import pytest

from netvantage.importers import io as nio
from netvantage.importers.io import iter_json


def read(text: str) -> list[tuple[int, object, str | None]]:
    return [(v.line, v.value, v.problem) for v in iter_json(io.StringIO(text))]


def test_a_brace_comma_inside_a_string_is_not_a_cut() -> None:
    assert read('[{"a":"x},{y"},{"b":1},{"c":"},"}]') == [
        (1, {"a": "x},{y"}, None), (1, {"b": 1}, None), (1, {"c": "},"}, None)]


def test_malformed_element_keeps_those_before_it() -> None:
    got = read('[{"a":1},{"b":2},{"c":3,,},{"d":4}]')
    assert got[:2] == [(1, {"a": 1}, None), (1, {"b": 2}, None)]
    assert len(got) == 3 and got[2][1] is None and "not JSON" in str(got[2][2])


def test_what_only_the_json_module_accepts_is_still_read() -> None:
    got = read('[{"a":NaN},{"b":2}]\n{"c":Infinity}\n')
    assert math.isnan(got[0][1]["a"])  # type: ignore[index]
    assert got[1:] == [(1, {"b": 2}, None), (2, {"c": math.inf}, None)]


def test_pretty_printed_lines_and_lines_after_an_array() -> None:
    assert read('[\n {"a": 1},\n {"b": 2}\n]\n') == [(2, {"a": 1}, None), (3, {"b": 2}, None)]
    assert read('[{"a":1},{"b":2}]\n{"c":3}\nnot json\n') == [
        (1, {"a": 1}, None), (1, {"b": 2}, None), (2, {"c": 3}, None),
        (3, None, "not JSON: Expecting value (column 1)")]


@pytest.mark.parametrize("block", [64, 1000])
def test_a_long_array_across_blocks(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(nio, "BLOCK", block)
    items = [{"i": i, "s": "x},{" * (i % 3), "f": i / 7} for i in range(500)]
    assert [v for _, v, _ in read(json.dumps(items, separators=(",", ":")))] == items
