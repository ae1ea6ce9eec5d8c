"""The block decoder (lean ping and tcp structs, their checks made over columns) accepts
exactly what the structs accept, with the same field values, and the loader using it
reports the same bad lines as the line-by-line decoder.

Each case takes a valid record of the lab sample, changes its JSON into a value near a
rule or past it, and decodes it among valid lines both ways: by
:func:`netvantage.results.decode_many` (the structs, checks and all) and by
:func:`netvantage.results.bulk.decode_block`.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netvantage.analysis.load import FRAME_NAMES, load
from netvantage.errors import SchemaError
from netvantage.results import PingBody, TcpAttempt, TcpBody, decode_many
from netvantage.results.bulk import LEAN_TYPES, decode_block

loader = importlib.import_module("netvantage.analysis.load")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
LINES = SAMPLE.read_bytes().splitlines()


def _first(kind: str) -> dict[str, Any]:
    for line in LINES:
        value = json.loads(line)
        if value["kind"] == kind and value["status"] == "ok":
            return value  # type: ignore[no-any-return]
    raise AssertionError(f"no {kind} record in the sample")


PING = _first("ping")
TCP = _first("tcp")
_NO_STATS = {"min_ms": None, "median_ms": None, "mean_ms": None, "max_ms": None,
             "jitter_ms": None}
#: No reply at all: valid records the column checks leave to the structs.
PING_LOST = {**PING, "status": "timeout", "body": {
    **PING["body"], "rtts_ms": [None] * PING["body"]["sent"], "received": 0,
    "loss_ratio": 1.0, "stats": _NO_STATS, "rx_clock": None}}
TCP_FAILED = {**TCP, "status": "timeout", "body": {
    **TCP["body"], "succeeded": 0, "stats": _NO_STATS, "attempts": [
        {"status": "timeout", "connect_ms": None, "handshake_rtt_ms": None,
         "error": "timed out"}] * len(TCP["body"]["attempts"])}}


def _block(lines: list[bytes]) -> tuple[bytes, np.ndarray, np.ndarray]:
    data = b"\n".join(lines) + b"\n"
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    return data, np.append(0, ends[:-1] + 1), ends


def _outcome(decode: Any, lines: list[bytes]) -> tuple[str, Any]:
    try:
        records = decode(*_block(lines))
    except (msgspec.DecodeError, ValueError, ArithmeticError, SchemaError):
        return "refused", None
    return "read", [(r.kind, msgspec.to_builtins(r)) for r in records]


def _compare(record: dict[str, Any] | bytes) -> str:
    """Decode ``record`` between two valid lines both ways; the outcomes must be equal."""
    line = record if isinstance(record, bytes) else json.dumps(record).encode()
    lines = [LINES[0], line, LINES[1]]
    full = _outcome(lambda data, starts, ends: decode_many(data), lines)
    bulk = _outcome(decode_block, lines)
    assert bulk == full, line[:300]
    return full[0]


def _changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    *parents, last = path.split(".")
    at = out
    for name in parents:
        at = at[int(name)] if isinstance(at, list) else at[name]
    if isinstance(at, list):
        at[int(last)] = value
    elif value is _DROP:
        del at[last]
    else:
        at[last] = value
    return out


_DROP = object()


def test_the_sample_decodes_alike_and_most_records_are_lean() -> None:
    data, starts, ends = _block(LINES)
    full = decode_many(data)
    bulk = decode_block(data, starts, ends)
    assert [msgspec.to_builtins(r) for r in bulk] == [msgspec.to_builtins(r) for r in full]
    assert [r.kind for r in bulk] == [r.kind for r in full]
    lean = sum(type(r) in LEAN_TYPES.values() for r in bulk)
    wanted = sum(r.kind in ("ping", "tcp") and r.status == "ok" for r in full)
    assert lean >= wanted > 500  # every ok ping and tcp record was sure


# (path, value, whether the structs accept it) for a ping record of the sample.
_PING_CASES: list[tuple[str, Any, bool]] = [
    ("id", "has space!", False),
    ("id", "abcdefgh\nijklmnop", False),
    ("id", "abcdefgh-ijkl.mn_op:q", True),
    ("schema", 1, True),
    ("schema", 3, False),
    ("schema", 0, False),
    ("started_at", "2024-06-01T00:00:00+00:00", True),
    ("started_at", "2024-06-01T01:00:00+01:00", False),
    ("started_at", "1999-12-31T23:59:59.999999Z", False),
    ("started_at", "2000-01-01T00:00:00Z", True),
    ("started_at", "2199-01-01T00:00:00Z", False),
    ("error", "boom", False),
    ("body.sent", None, False),
    ("body.received", None, False),
    ("body.loss_ratio", None, False),
    ("body.loss_ratio", 0.5, False),
    ("body.stats.min_ms", None, False),
    ("body.stats.max_ms", None, False),
    ("body.stats.median_ms", None, False),
    ("body.stats.mean_ms", None, False),
    ("body.stats.jitter_ms", None, False),
    ("body.rtts_ms.0", 0.0, False),
    ("body.rtts_ms.0", -1.0, False),
    ("body.rtts_ms.0", 600_000.001, False),
    ("body.rtts_ms.0", "12", False),
    ("body.sent", 2**60, False),
    ("body.sent", 10**30, False),
    ("body.duplicates", _DROP, True),
    ("body.icmp_errors", _DROP, True),
    ("body.unknown", 1, False),
    ("unknown", 1, False),
]


@pytest.mark.parametrize(("path", "value", "accepted"), _PING_CASES)
def test_a_changed_ping_record_decodes_alike(path: str, value: Any, accepted: bool) -> None:
    assert _compare(_changed(PING, path, value)) == ("read" if accepted else "refused")


@pytest.mark.parametrize("nudge", [0.0, 0.0004, -0.0004, 0.0009, -0.0009, 0.0011, -0.0014,
                                   0.0015, 0.00151, -0.00151, 0.003, 1.0])
@pytest.mark.parametrize("field", ["min_ms", "median_ms", "mean_ms", "max_ms", "jitter_ms"])
@pytest.mark.parametrize("base", ["ping", "tcp"])
def test_statistics_near_the_tolerance_decode_alike(base: str, field: str,
                                                    nudge: float) -> None:
    record = PING if base == "ping" else TCP
    value = record["body"]["stats"][field]
    _compare(_changed(record, f"body.stats.{field}", round(value + nudge, 6)))


def test_counts_and_loss_decode_alike() -> None:
    sent = PING["body"]["sent"]
    for path, value in [("body.sent", sent + 1), ("body.sent", sent - 1),
                        ("body.received", PING["body"]["received"] - 1),
                        ("body.loss_ratio", 3e-7), ("body.loss_ratio", 6e-7),
                        ("body.loss_ratio", 1e-6)]:
        _compare(_changed(PING, path, value))
    # No reply at all (left to the structs), and such a record with figures.
    assert _compare(PING_LOST) == "read"
    assert _compare(_changed(PING_LOST, "body.stats.min_ms", 1.0)) == "refused"
    assert _compare(TCP_FAILED) == "read"
    assert _compare(_changed(TCP_FAILED, "body.stats.max_ms", 1.0)) == "refused"


def test_one_reply_has_no_jitter() -> None:
    x = PING["body"]["rtts_ms"][0]
    one = copy.deepcopy(PING)
    one["body"].update(sent=1, received=1, rtts_ms=[x], loss_ratio=0.0, stats={
        "min_ms": x, "median_ms": x, "mean_ms": x, "max_ms": x, "jitter_ms": None})
    assert _compare(one) == "read"
    assert _compare(_changed(one, "body.stats.jitter_ms", 0.0)) == "refused"
    lost = _changed(_changed(one, "body.rtts_ms", [None, x]), "body.sent", 2)
    assert _compare(_changed(lost, "body.loss_ratio", 0.5)) == "read"


def test_a_changed_tcp_record_decodes_alike() -> None:
    attempts = TCP["body"]["attempts"]
    assert attempts and attempts[0]["status"] == "ok"
    cases: list[tuple[str, Any, bool]] = [
        ("body.attempts.0.connect_ms", None, False),
        ("body.attempts.0.status", "timeout", False),
        ("body.attempts.0.connect_ms", 0.0, False),
        ("body.succeeded", TCP["body"]["succeeded"] - 1, False),
        ("body.succeeded", None, False),
        ("body.attempted", len(attempts), False),
        ("body.attempts", [], False),
        ("body.port", 0, False),
        ("status", "refused", True),
        ("error", "boom", False),
    ]
    for path, value, accepted in cases:
        assert _compare(_changed(TCP, path, value)) == ("read" if accepted else "refused"), path
    failed = copy.deepcopy(TCP)
    failed["body"]["attempts"][0] = {"status": "timeout", "connect_ms": None,
                                     "handshake_rtt_ms": None, "error": "timed out"}
    assert _compare(failed) == "refused"  # succeeded and the statistics are now off


def test_summary_bodies_decode_alike() -> None:
    summary = {"samples": 3, "min_ms": 10.0, "median_ms": 11.0, "mean_ms": 11.5,
               "max_ms": 14.0}
    ping = _changed(_changed(PING, "body.rtts_ms", []), "schema", 2)
    ping["body"].update(summary=summary, sent=3, received=3, loss_ratio=0.0,
                        stats={"min_ms": 10.0, "median_ms": 11.0, "mean_ms": 11.5,
                               "max_ms": 14.0, "jitter_ms": None})
    assert _compare(ping) == "read"
    assert _compare(_changed(ping, "schema", 1)) == "refused"
    assert _compare(_changed(ping, "body.summary.min_ms", 12.0)) == "refused"
    assert _compare(_changed(ping, "body.rtts_ms", [10.0, 11.0, 14.0])) == "refused"


_rtt = st.floats(min_value=0.001, max_value=600_000, allow_nan=False).map(lambda x: round(x, 3))
_nudge = st.sampled_from([0.0, 0.0, 0.0004, -0.0004, 0.0009, -0.0009, 0.00095, 0.0013,
                          -0.00151, 0.003, 3e-7, -6e-7])
_ENVELOPE = {k: v for k, v in PING.items() if k not in ("kind", "body")}


def _nudged(body: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    stats = body["stats"]
    for field in list(stats):
        choice = data.draw(st.sampled_from(["keep", "keep", "keep", "nudge", "none"]))
        if choice == "nudge" and stats[field] is not None:
            stats[field] = stats[field] + data.draw(_nudge)
        elif choice == "none":
            stats[field] = None
    return body


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), _rtt), max_size=12), st.data())
def test_random_ping_bodies_decode_alike(samples: list[float | None],
                                         data: st.DataObject) -> None:
    body = msgspec.to_builtins(PingBody.from_samples(
        samples, ip_version=4, socket="raw", payload_bytes=56, interval_s=1.0, timeout_s=2.0,
        dont_fragment=False))
    body = _nudged(body, data)
    if data.draw(st.booleans()) and body["loss_ratio"] is not None:
        body["loss_ratio"] = min(1.0, max(0.0, body["loss_ratio"] + data.draw(_nudge)))
    if data.draw(st.integers(0, 5)) == 0:
        body["sent"] += data.draw(st.sampled_from([-1, 1]))
    _compare({"kind": "ping", **_ENVELOPE, "body": body})


_attempt = st.one_of(
    _rtt.map(lambda c: TcpAttempt(status="ok", connect_ms=c)),
    st.sampled_from(["timeout", "refused"]).map(
        lambda s: TcpAttempt(status=s, error="x")))  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.lists(_attempt, max_size=8), st.data())
def test_random_tcp_bodies_decode_alike(attempts: list[TcpAttempt],
                                        data: st.DataObject) -> None:
    body = msgspec.to_builtins(TcpBody.from_attempts(attempts, port=443, ip_version=4,
                                                     timeout_s=3.0))
    body = _nudged(body, data)
    if data.draw(st.integers(0, 5)) == 0:
        body["succeeded"] += data.draw(st.sampled_from([-1, 1]))
    _compare({"kind": "tcp", **_ENVELOPE, "body": body})


def _lines_only(block: memoryview, newlines: np.ndarray) -> None:
    """The loader's block decoder refusing every block: the line-by-line decoder reads."""
    return None


def test_the_loader_reports_the_bad_lines_of_the_line_by_line_decoder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad ping and tcp lines among good ones: the same SchemaError, line numbers and
    messages, whether blocks are decoded by the bulk decoder or every line alone; and a
    good file gives the same frames both ways."""
    monkeypatch.setattr(loader, "BLOCK_BYTES", 20_000)
    lines = list(LINES[:400])
    bad = {30: _changed(PING, "body.stats.mean_ms", PING["body"]["stats"]["mean_ms"] + 0.01),
           90: _changed(TCP, "body.attempts.0.connect_ms", None),
           150: _changed(PING, "started_at", "2024-06-01T01:00:00+01:00"),
           151: _changed(PING, "id", "bad id!"),
           300: _changed(TCP, "body.succeeded", 0)}
    for at, record in bad.items():
        lines[at] = json.dumps(record).encode()
    file = tmp_path / "bad.jsonl"
    file.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(SchemaError) as bulk:
        load(file)
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"\n".join(LINES) + b"\n")
    fast = load(good)
    monkeypatch.setattr(loader, "_block_records", _lines_only)
    with pytest.raises(SchemaError) as alone:
        load(file)
    assert str(bulk.value) == str(alone.value)
    assert bulk.value.problems == alone.value.problems
    assert [p.split(":")[0] for p in alone.value.problems] == [
        f"line {at + 1}" for at in sorted(bad)]
    slow = load(good)
    for name in FRAME_NAMES:
        pd.testing.assert_frame_equal(getattr(fast, name), getattr(slow, name),
                                      check_exact=True, obj=name)
        assert getattr(fast, name).dtypes.equals(getattr(slow, name).dtypes)
    assert not math.isnan(fast.measurements["rtt_ms"].iloc[0])


def test_kinds_kept_load_alike_by_blocks_and_by_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some kinds kept: the ping and tcp columns the block decoder read go to the frames
    as the records' own fields would."""
    monkeypatch.setattr(loader, "BLOCK_BYTES", 20_000)
    for kinds in (["tcp", "smtp"], ["ping"], ["trace", "ping", "tcp"]):
        fast = load(SAMPLE, kinds=kinds)
        with monkeypatch.context() as patch:
            patch.setattr(loader, "_block_records", _lines_only)
            slow = load(SAMPLE, kinds=kinds)
        assert set(fast.measurements["kind"].astype(str)) == set(kinds)
        for name in FRAME_NAMES:
            pd.testing.assert_frame_equal(getattr(fast, name), getattr(slow, name),
                                          check_exact=True, obj=name)
