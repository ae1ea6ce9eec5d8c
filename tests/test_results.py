"""The result schema: round trips, validation, the JSON Lines reader's refusals."""

from __future__ import annotations

import gc
import inspect
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cli
from netvantage.errors import SchemaError
from netvantage.results import (
    SCHEMA_VERSION,
    STATUSES,
    AnyRecord,
    PingBody,
    PingRecord,
    TcpAttempt,
    TcpBody,
    TcpRecord,
    canonical_schema,
    decode_record,
    encode_record,
    json_schema,
    json_schema_text,
    new_id,
    read_jsonl,
    rtt_stats,
    structs,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parents[1]

rtts = st.lists(
    st.one_of(st.none(), st.floats(min_value=0.001, max_value=60_000, allow_nan=False)),
    max_size=50,
)
names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]),
                min_size=1, max_size=40)
# Plausible times: from 2000 to now (a record may not start in the future).
when = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2026, 12, 1),
                    timezones=st.just(UTC))
statuses = st.sampled_from(STATUSES)


def ping_record(samples: list[float | None], **env: object) -> PingRecord:
    body = PingBody.from_samples(samples, ip_version=4, socket="raw", payload_bytes=56,
                                 interval_s=1.0, timeout_s=2.0, dont_fragment=False)
    fields: dict[str, object] = dict(id=new_id(), agent="a1", target="t", address="192.0.2.1",
                                     started_at=datetime(2026, 1, 1, tzinfo=UTC),
                                     duration_ms=1.0, status="ok", body=body)
    fields.update(env)
    return PingRecord(**fields)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(samples=rtts, agent=names, region=st.one_of(st.none(), names), started=when,
       status=statuses)
def test_ping_record_round_trips(samples, agent, region, started, status):
    rec = ping_record(samples, agent=agent, region=region, started_at=started, status=status,
                      error=None if status == "ok" else "why")
    again = decode_record(encode_record(rec))
    assert again == rec
    assert again.body.rtts_ms == [None if s is None else round(s, 3) for s in samples]
    assert again.body.received == sum(s is not None for s in samples)


@settings(max_examples=200)
@given(attempts=st.lists(
    st.one_of(
        st.builds(TcpAttempt, status=st.just("ok"),
                  connect_ms=st.floats(0.001, 1e5).map(lambda x: round(x, 3)),
                  handshake_rtt_ms=st.one_of(st.none(), st.floats(0, 1e5))),
        st.builds(TcpAttempt, status=st.sampled_from(["refused", "timeout", "unreachable"]),
                  error=st.text(max_size=20)),
    ), max_size=10),
    port=st.integers(1, 65535))
def test_tcp_record_round_trips(attempts, port):
    body = TcpBody.from_attempts(attempts, port=port, ip_version=6, timeout_s=3.0)
    rec = TcpRecord(id=new_id(), agent="a", target="mx", started_at=datetime.now(UTC),
                    duration_ms=2.5, status="ok" if body.succeeded else "timeout",
                    error=None if body.succeeded else "x", body=body)
    assert decode_record(encode_record(rec)) == rec


def test_lost_packets_are_null_and_stats_ignore_them():
    rec = ping_record([10.0, None, 30.0, None])
    data = json.loads(encode_record(rec))
    assert data["body"]["rtts_ms"] == [10.0, None, 30.0, None]
    assert data["body"]["loss_ratio"] == 0.5
    stats = data["body"]["stats"]
    assert stats == {"min_ms": 10.0, "median_ms": 20.0, "mean_ms": 20.0, "max_ms": 30.0,
                     "jitter_ms": 20.0}


def test_jitter_is_mean_absolute_difference_of_consecutive_replies():
    assert rtt_stats([1.0, 3.0, 2.0, 6.0]).jitter_ms == pytest.approx((2 + 1 + 4) / 3, abs=1e-3)
    assert rtt_stats([5.0]).jitter_ms is None
    assert rtt_stats([None, None]).min_ms is None


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["body"].update(received=3), "received is 3"),
    (lambda d: d["body"]["stats"].update(min_ms=0.0), "stats.min_ms"),
    (lambda d: d["body"].update(loss_ratio=0.0), "loss_ratio"),
    (lambda d: d["body"]["rtts_ms"].__setitem__(0, -1.0), "> 0"),
    (lambda d: d.update(status="slow"), "Invalid enum value 'slow'"),
    (lambda d: d.update(started_at="2026-01-01T00:00:00"), "timezone"),
    (lambda d: d.update(started_at="2026-01-01T02:00:00+02:00"), "UTC"),
    (lambda d: d.update(extra=1), "unknown field"),
    (lambda d: d.update(kind="smoke"), "unknown kind 'smoke'"),
    (lambda d: d.update(schema=SCHEMA_VERSION + 1), "newer than this netvantage reads"),
    (lambda d: d.pop("agent"), "missing required field `agent`"),
])
def test_invalid_records_are_refused_with_a_reason(mutate, message):
    data = json.loads(encode_record(ping_record([1.0, None, 2.0])))
    mutate(data)
    with pytest.raises(SchemaError, match=message):
        decode_record(json.dumps(data))


def test_non_utc_datetime_refused_when_built():
    with pytest.raises(ValueError, match="UTC"):
        ping_record([1.0], started_at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1))))


def test_ids_are_unique_uuid7():
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    sample = next(iter(ids))
    assert sample[14] == "7" and sample[19] in "89ab"


def test_jsonl_round_trip_through_a_file(tmp_path):
    records = [ping_record([1.0, 2.0]), ping_record([None])]
    path = tmp_path / "r.jsonl"
    assert write_jsonl(records, path) == 2
    assert read_jsonl(path) == records
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def _lines(*records: PingRecord) -> list[bytes]:
    return [encode_record(r) + b"\n" for r in records]


def test_reader_names_every_bad_line_and_loads_nothing():
    good = _lines(ping_record([1.0]), ping_record([2.0]))
    newer = json.loads(good[0])
    newer["schema"] = SCHEMA_VERSION + 1
    data = b"".join([good[0], b"{not json\n", good[1], json.dumps(newer).encode() + b"\n"])
    with pytest.raises(SchemaError) as info:
        read_jsonl(io.BytesIO(data))
    text = str(info.value)
    assert "2 bad line(s), nothing loaded" in text
    assert "line 2: not a JSON object" in text
    assert f"line 4: schema {SCHEMA_VERSION + 1} is newer" in text
    assert info.value.problems[0].startswith("line 2")


def test_reader_refuses_a_torn_last_line(tmp_path):
    good = _lines(ping_record([1.0]), ping_record([2.0]))
    path = tmp_path / "torn.jsonl"
    path.write_bytes(good[0] + good[1][: len(good[1]) // 2])
    with pytest.raises(SchemaError, match=r"line 2: unterminated last line \(torn write\?\)"):
        read_jsonl(path)


def test_reader_accepts_a_complete_unterminated_last_line_and_blank_lines():
    good = _lines(ping_record([1.0]), ping_record([2.0]))
    data = good[0] + b"\n" + good[1].rstrip(b"\n")
    assert len(read_jsonl(io.BytesIO(data))) == 2


def test_generated_json_schema_validates_records_and_rejects_bad_ones():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = json.loads(encode_record(ping_record([1.0, None])))
    validator.validate(good)
    bad = dict(good, status="slow")
    assert not validator.is_valid(bad)


def test_committed_schema_document_is_current():
    committed = (ROOT / "docs" / "result.schema.json").read_text()
    assert committed == json_schema_text(), "run: netvantage schema > docs/result.schema.json"


# How msgspec versions have differed in what they generate from the same types:
# whether a docstring's continuation lines keep their indentation, and whether
# null comes first or last among an optional struct's alternatives.

def _indented(node):
    """``node`` as a msgspec that keeps docstring indentation would write it."""
    if isinstance(node, list):
        return [_indented(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "description" and isinstance(value, str):
            first, *rest = value.split("\n")
            out[key] = "\n".join([first] + ["    " + line if line else line for line in rest])
        elif key in ("default", "const", "enum"):
            out[key] = value
        else:
            out[key] = _indented(value)
    return out


def _null_first(node):
    """``node`` as msgspec 0.18 orders ``X | None``: null first."""
    if isinstance(node, list):
        return [_null_first(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _null_first(v) for k, v in node.items()}
    if "anyOf" in out:
        out["anyOf"] = sorted(out["anyOf"], key=lambda a: a != {"type": "null"})
    return out


def test_canonical_schema_gives_one_text_for_indented_and_dedented_descriptions():
    indented = {"description": "First line.\n\n    More about it\n      (an aside)\n    end.\n    "}
    dedented = {"description": "First line.\n\nMore about it\n  (an aside)\nend."}
    want = {"description": "First line.\n\nMore about it\n  (an aside)\nend."}
    assert canonical_schema(indented) == canonical_schema(dedented) == want
    # Python 3.13 strips the indentation when compiling, tabs and all.
    assert canonical_schema({"description": "A.\n\tB"}) == {"description": "A.\nB"}


def test_canonical_schema_cleans_only_descriptions_and_puts_null_last():
    schema = {
        "$defs": {"X": {
            "description": "X.\n    Indented.",
            "properties": {
                # A field called "description" is a schema, not a text to clean.
                "description": {"anyOf": [{"type": "null"}, {"type": "string"}],
                                "description": "A field.\n    Really."},
                "note": {"type": "object", "default": {"description": "  data\n    kept  "}},
            },
        }},
        "anyOf": [{"type": "null"}, {"$ref": "#/$defs/X"}, {"type": "integer"}],
    }
    assert canonical_schema(schema) == {
        "$defs": {"X": {
            "description": "X.\nIndented.",
            "properties": {
                "description": {"anyOf": [{"type": "string"}, {"type": "null"}],
                                "description": "A field.\nReally."},
                "note": {"type": "object", "default": {"description": "  data\n    kept  "}},
            },
        }},
        "anyOf": [{"$ref": "#/$defs/X"}, {"type": "integer"}, {"type": "null"}],
    }


@pytest.mark.parametrize("variant", [_indented, _null_first,
                                     lambda s: _null_first(_indented(s))],
                         ids=["indented", "null-first", "both"])
def test_schema_text_is_the_same_whatever_msgspec_writes(monkeypatch, variant):
    committed = (ROOT / "docs" / "result.schema.json").read_text()
    real = msgspec.json.schema
    generated = json.dumps(real(AnyRecord))
    # The variant really differs from what this msgspec writes (else the test proves nothing).
    assert json.dumps(variant(real(AnyRecord))) != generated
    monkeypatch.setattr(msgspec.json, "schema", lambda t: variant(real(t)))
    assert json_schema_text() == committed


def test_decoder_uses_kind_to_pick_the_body():
    rec = ping_record([1.0])
    data = json.loads(encode_record(rec))
    data["kind"] = "tcp"
    with pytest.raises(SchemaError):
        decode_record(json.dumps(data))
    assert isinstance(decode_record(encode_record(rec)), PingRecord)
    assert msgspec.json.decode(encode_record(rec))["kind"] == "ping"



def test_schema_structs_stay_out_of_the_cycle_collector():
    """Records hold no reference cycles (values, lists of values, other records'
    parts), so their structs are built with ``gc=False``: a collector batch is
    some 15,000 objects, and an analysis holds millions, which every full
    collection would walk.  A struct class added without it fails here."""
    classes = [c for _, c in inspect.getmembers(structs, inspect.isclass)
               if issubclass(c, msgspec.Struct) and c.__module__ == structs.__name__]
    assert len(classes) > 20
    assert [c.__name__ for c in classes if c.__struct_config__.gc] == []
    rec = decode_record(encode_record(ping_record([1.0, None, 2.0])))
    assert isinstance(rec, PingRecord)
    assert not any(map(gc.is_tracked, (rec, rec.body, rec.body.stats)))
    assert gc.is_tracked(rec.body.rtts_ms)  # (a list is, as every list)
    tcp = decode_record(encode_record(TcpRecord(
        id=new_id(), agent="a1", target="t", started_at=datetime(2026, 1, 1, tzinfo=UTC),
        duration_ms=1.0, status="ok", body=TcpBody.from_attempts(
            [TcpAttempt(status="ok", connect_ms=1.5)], port=25, ip_version=4, timeout_s=2.0))))
    assert isinstance(tcp, TcpRecord)
    assert not gc.is_tracked(tcp.body.attempts[0])


# --------------------------------------------------------------------------- plausible values


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(started_at="2300-01-01T00:00:00Z"), "ahead of this clock"),
    (lambda d: d.update(started_at="1970-01-01T00:00:05Z"), "before 2000-01-01"),
    (lambda d: d["body"]["rtts_ms"].__setitem__(0, 0.0), "> 0"),
    (lambda d: d["body"]["rtts_ms"].__setitem__(0, 1e308), "<= 600000"),
    (lambda d: d["body"].update(rtts_ms=[1e308, None, 1e308], stats={
        "min_ms": 1e308, "median_ms": 1e308, "mean_ms": 1e308, "max_ms": 1e308,
        "jitter_ms": 0.0}), "<= 600000"),
    (lambda d: d.update(duration_ms=1e308), "<= 1000000000000"),
])
def test_implausible_values_are_refused_with_a_reason(mutate, message):
    # Issue 15: 1e308 RTTs overflowed the statistics check; 2300 passed and broke
    # the analysis later; 1970 and RTT 0 passed though an RTT is never 0.
    data = json.loads(encode_record(ping_record([1.0, None, 2.0])))
    mutate(data)
    with pytest.raises(SchemaError, match=message):
        decode_record(json.dumps(data))


def test_implausible_values_are_refused_when_built():
    with pytest.raises(ValueError, match="ahead of this clock"):
        ping_record([1.0], started_at=datetime.now(UTC) + timedelta(days=2))
    with pytest.raises(ValueError, match="before 2000"):
        ping_record([1.0], started_at=datetime(1999, 12, 31, 23, 59, tzinfo=UTC))
    with pytest.raises(ValueError, match=r"rtts_ms\[1\] is 0.0"):
        ping_record([1.0, 0.0])
    with pytest.raises(ValueError, match="connect_ms"):
        TcpAttempt(status="ok", connect_ms=1e308)
    # The bounds themselves are fine.
    ping_record([0.001, 600_000.0], started_at=datetime(2000, 1, 1, tzinfo=UTC))


def test_deep_nesting_is_a_schema_error_not_a_recursion_error():
    deep = b'{"kind":"ping","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(SchemaError, match="nested too deeply"):
        decode_record(deep)


def test_schema_validate_reports_absurd_values_without_a_traceback(tmp_path):
    data = json.loads(encode_record(ping_record([1.0, None, 2.0])))
    data["body"]["rtts_ms"] = [1e308, None, 1e308]
    data["body"]["stats"] = {"min_ms": 1e308, "median_ms": 1e308, "mean_ms": 1e308,
                             "max_ms": 1e308, "jitter_ms": 0.0}
    future = json.loads(encode_record(ping_record([1.0])))
    future["started_at"] = "2300-01-01T00:00:00Z"
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(data) + "\n" + json.dumps(future) + "\n")
    done = run_cli("schema", "--validate", str(path))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "line 1" in done.stderr and "line 2" in done.stderr


# The fast checks of the ingest path decide exactly as the plain rule does.

_rtt = st.floats(min_value=0.001, max_value=600_000, allow_nan=False)
_nudge = st.sampled_from([0.0, 0.0004, -0.0004, 0.0009, -0.0009, 0.00149, -0.00149, 0.0015,
                          -0.0015, 0.00151, -0.00151, 0.003, 1e-9])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.none(), _rtt), max_size=12), _nudge, _nudge, _nudge)
def test_fast_stats_check_decides_as_the_plain_rule(samples, d_median, d_mean, d_jitter):
    from netvantage.results.structs import _TOLERANCE_MS, RttStats, _check_stats, rtt_stats

    want = rtt_stats(samples)

    def moved(value: float | None, delta: float) -> float | None:
        return None if value is None else value + delta

    given_stats = RttStats(want.min_ms, moved(want.median_ms, d_median),
                           moved(want.mean_ms, d_mean), want.max_ms,
                           moved(want.jitter_ms, d_jitter))
    plain = all(
        (g is None and w is None) or (g is not None and w is not None
                                      and abs(g - w) <= _TOLERANCE_MS)
        for g, w in zip(msgspec.structs.astuple(given_stats), msgspec.structs.astuple(want),
                        strict=True))
    if plain:
        _check_stats("stats", given_stats, samples)
    else:
        with pytest.raises(ValueError):
            _check_stats("stats", given_stats, samples)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 50), st.integers(0, 50), st.sampled_from(
    [None, float("nan"), 0.0, 3e-7, -3e-7, 6e-7, -6e-7, 9.9e-7, -9.9e-7, 1e-6, 2e-6, 0.5]))
def test_fast_loss_check_decides_as_the_plain_rule(sent, received, delta):
    from netvantage.results.structs import _loss, _loss_matches

    received = min(received, sent)
    want = _loss(sent, received)
    base = want if want is not None else 0.0
    loss = None if delta is None else base + delta
    plain = (want is None and loss is None) or (
        want is not None and loss is not None and abs(want - loss) < 1e-6)
    assert _loss_matches(sent, received, loss) == plain
