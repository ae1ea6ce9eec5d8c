"""results.wire writes the bytes the checked constructors give, and refuses what they refuse."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from netvantage.errors import SchemaError
from netvantage.importers.ids import RecentKeys, uuid5
from netvantage.results import PingBody, PingRecord, RttSummary, decode_record, encode_record
from netvantage.results.wire import PingLines

BODY: dict[str, Any] = {"ip_version": 4, "socket": "raw", "payload_bytes": 48, "interval_s": 0.0,
        "timeout_s": 0.0, "dont_fragment": False}
WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def envelope(i: int, status: str = "ok", error: str | None = None) -> dict[str, Any]:
    return {"id": f"0000000{i:x}-0000-5000-8000-000000000000", "agent": f"probe-{i}",
            "region": "ZA" if i % 2 else None, "target": "dc.example", "address": "192.0.2.1",
            "started_at": WHEN, "duration_ms": 0.0, "status": status, "error": error,
            "source": "atlas"}


def checked(body: PingBody, env: dict[str, Any]) -> bytes:
    return encode_record(PingRecord(body=body, **env))


def test_samples_byte_for_byte() -> None:
    rng = random.Random(7)
    lines = PingLines(**BODY)
    for i in range(2000):
        rtts = [None if rng.random() < 0.2 else rng.random() * 300
                for _ in range(rng.randint(0, 6))]
        received = sum(r is not None for r in rtts)
        env = envelope(i, "ok" if received else "timeout", None if received else "lost")
        dup = rng.randint(0, 2)
        data = lines.samples(rtts, duplicates=dup, **env)
        assert data == checked(PingBody.from_samples(rtts, duplicates=dup, **BODY), env)
        decode_record(data)
    assert lines.fast  # the fast way was used, not the fallback


def test_summaries_byte_for_byte() -> None:
    lines = PingLines(**BODY)
    cases = [(RttSummary(samples=3, min_ms=1.0, mean_ms=2.0, max_ms=3.5), 3, 3),
             (RttSummary(samples=None, median_ms=4.0, percentiles_ms={"p90": 9.5}), None, None),
             (RttSummary(samples=0), 5, 0)]
    for i, (summary, sent, received) in enumerate(cases):
        env = envelope(i, "ok" if received != 0 else "timeout", None if received != 0 else "x")
        data = lines.summary(summary, sent=sent, received=received, **env)
        want = checked(PingBody.from_summary(summary, sent=sent, received=received, **BODY), env)
        assert data == want
    assert lines.fast


@pytest.mark.parametrize("change", [
    {"agent": ""}, {"target": "x" * 256}, {"id": "short"}, {"id": "has space in it"},
    {"status": "fine"}, {"error": "ok records carry none"},
    {"started_at": datetime(2026, 1, 1)}, {"duration_ms": -1.0},
])
def test_envelope_rules_refused_both_ways(change: dict[str, Any]) -> None:
    lines = PingLines(**BODY)
    lines.samples([1.0], **envelope(1))  # the first record: verified
    with pytest.raises(ValueError):
        lines.samples([1.0], **{**envelope(2), **change})
    with pytest.raises((ValueError, SchemaError)):  # the checked way: build, then decode
        decode_record(checked(PingBody.from_samples([1.0], **BODY), {**envelope(2), **change}))


@pytest.mark.parametrize("rtt", [-1.0, float("nan"), float("inf")])
def test_bad_rtt_refused(rtt: float) -> None:
    lines = PingLines(**BODY)
    lines.samples([1.0], **envelope(1))
    with pytest.raises(ValueError):
        lines.samples([1.0, rtt], **envelope(2))


def test_summary_counts_refused() -> None:
    lines = PingLines(**BODY)
    lines.summary(RttSummary(samples=1, min_ms=1.0), sent=1, received=1, **envelope(1))
    with pytest.raises(ValueError, match="more than sent"):
        lines.summary(RttSummary(), sent=1, received=2, **envelope(2))
    with pytest.raises(ValueError, match="received is 0"):
        lines.summary(RttSummary(min_ms=1.0), sent=1, received=0,
                      **envelope(3, "timeout", "x"))


def test_drift_falls_back_to_the_checked_way(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = PingLines(**BODY)
    lines._record["schema"] = 99  # what a schema change not mirrored here would look like
    first = lines.samples([1.0], **envelope(1))
    assert not lines.fast
    assert first == checked(PingBody.from_samples([1.0], **BODY), envelope(1))
    assert lines.samples([2.0], **envelope(2)) == checked(
        PingBody.from_samples([2.0], **BODY), envelope(2))


def test_uuid5_is_the_standard_one() -> None:
    import uuid
    ns = uuid.UUID("5b0c7a8e-2f3d-4c61-9a57-0d6f3e1b8a42")
    for name in ("atlas:ping:1:2:3", "matrix:Ĳ:x:2026", ""):
        text, raw = uuid5(ns, name)
        assert text == str(uuid.uuid5(ns, name)) and raw == uuid.uuid5(ns, name).bytes


def test_recent_keys_exact_and_bounded() -> None:
    seen = RecentKeys(limit=100)
    assert not seen.again(1, "a") and seen.again(1, "a") and not seen.again(2, "a")
    for bucket in range(3, 50):
        for k in range(10):
            assert not seen.again(bucket, k)
    assert seen.again(49, 3)  # the current bucket is always remembered
    assert seen.forgotten > 0 and not seen.again(1, "a")  # an old bucket was forgotten
    assert sum(len(v) for v in seen._buckets.values()) <= 100 + 10
