"""Summary records (schema 2): statistics without samples, stored and analysed honestly.

The campaign figures below are computed by hand in the comments; the code under
test must reproduce them.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pandas as pd
import pytest

from cells import number, row
from netvantage.analysis.load import check_campaign, frames_from_records, load
from netvantage.analysis.metrics import metrics, point_metrics
from netvantage.analysis.summary import analyse
from netvantage.collector.export import SUMMARY_COLUMNS, export_parquet
from netvantage.collector.store import Store
from netvantage.errors import SchemaError
from netvantage.measure.text import reach_table
from netvantage.results import (
    SCHEMA_VERSION,
    AnyRecord,
    PingBody,
    PingRecord,
    RttStats,
    RttSummary,
    TcpAttempt,
    TcpBody,
    TcpRecord,
    decode_record,
    encode_record,
    json_schema,
    read_jsonl,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PING: dict[str, Any] = dict(ip_version=4, socket=None, payload_bytes=0, interval_s=0.0,
                            timeout_s=0.0, dont_fragment=False)
TCP: dict[str, Any] = dict(port=443, ip_version=4, timeout_s=1.0)
_n = 0


def _id() -> str:
    global _n
    _n += 1
    return f"summary-test-{_n:04d}"


def ping(body: PingBody, region: str = "r1", target: str = "dc", minute: int = 0,
         status: str = "ok") -> PingRecord:
    return PingRecord(id=_id(), agent="imp", region=region, target=target,
                      started_at=T0 + timedelta(minutes=minute), duration_ms=0.0,
                      status=status, source="matrix", body=body)  # type: ignore[arg-type]


def tcp(body: TcpBody, region: str = "r1", target: str = "dc", minute: int = 0) -> TcpRecord:
    return TcpRecord(id=_id(), agent="imp", region=region, target=target,
                     started_at=T0 + timedelta(minutes=minute), duration_ms=0.0, status="ok",
                     body=body)


def summary_ping(summary: RttSummary, sent: int | None, received: int | None) -> PingBody:
    return PingBody.from_summary(summary, sent=sent, received=received, **PING)


# --------------------------------------------------------------------------- the structs


def test_summary_body_derives_stats_and_loss():
    s = RttSummary(samples=3, min_ms=10.0, mean_ms=12.5, max_ms=15.0,
                   percentiles_ms={"p50": 12.0, "p90": 14.5})
    b = summary_ping(s, sent=4, received=3)
    assert b.rtts_ms == []
    # p50 stands for the median when no median is given; a summary has no jitter.
    assert b.stats == RttStats(min_ms=10.0, median_ms=12.0, mean_ms=12.5, max_ms=15.0,
                               jitter_ms=None)
    assert b.loss_ratio == 0.25
    unknown = summary_ping(RttSummary(mean_ms=30.0), sent=None, received=None)
    assert unknown.loss_ratio is None  # unknown loss is not 0 % loss
    one_known = summary_ping(RttSummary(mean_ms=30.0), sent=5, received=None)
    assert one_known.loss_ratio is None
    nothing_sent = summary_ping(RttSummary(), sent=0, received=0)
    assert nothing_sent.loss_ratio is None


def test_tcp_summary_counts_and_loss():
    b = TcpBody.from_summary(RttSummary(samples=3, mean_ms=50.0), attempts=4, succeeded=3,
                             **TCP)
    assert (b.attempts, b.attempted, b.tried, b.succeeded) == ([], 4, 4, 3)
    assert b.loss_ratio == 0.25
    assert b.stats.mean_ms == 50.0 and b.stats.median_ms is None
    unknown = TcpBody.from_summary(RttSummary(mean_ms=50.0), attempts=None, succeeded=None,
                                   **TCP)
    assert unknown.tried is None and unknown.loss_ratio is None
    sampled = TcpBody.from_attempts([TcpAttempt(status="ok", connect_ms=3.0),
                                     TcpAttempt(status="timeout")], **TCP)
    assert (sampled.tried, sampled.loss_ratio, sampled.attempted) == (2, 0.5, None)


@pytest.mark.parametrize(("fields", "message"), [
    (dict(min_ms=5.0, max_ms=4.0), r"min_ms \(5.0\) is above summary.max_ms"),
    (dict(min_ms=5.0, mean_ms=4.0), r"mean_ms \(4.0\) is below summary.min_ms"),
    (dict(max_ms=5.0, median_ms=6.0), r"median_ms \(6.0\) is above summary.max_ms"),
    (dict(percentiles_ms={"p90": 2.0, "p50": 3.0}), r"p50'\] \(3.0\) is above .*p90"),
    (dict(percentiles_ms={"p99": 9.0}, max_ms=8.0), r"p99'\] \(9.0\) is above .*max_ms"),
    (dict(percentiles_ms={"p0": 1.0}), "percentile key 'p0'"),
    (dict(percentiles_ms={"p100": 1.0}), "percentile key 'p100'"),
    (dict(percentiles_ms={"90": 1.0}), "percentile key '90'"),
    (dict(percentiles_ms={"p50": 1.0, "p50.0": 1.0}), "names a percentile twice"),
    (dict(median_ms=3.0, percentiles_ms={"p50": 4.0}), r"median_ms \(3.0\) and p50"),
    (dict(mean_ms=math.nan), "mean_ms is nan"),
    (dict(min_ms=-1.0), "min_ms is -1.0"),
    (dict(stdev_ms=math.inf), "stdev_ms is inf"),
    (dict(percentiles_ms={"p90": math.nan}), "p90'\\] is nan"),
    (dict(samples=-2), "samples is -2"),
    (dict(samples=0, mean_ms=1.0), "samples is 0 but the summary gives figures"),
])
def test_inconsistent_summaries_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        RttSummary(**fields)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: summary_ping(RttSummary(samples=5, mean_ms=1.0), sent=5, received=3),
     r"summary.samples \(5\) is more than received \(3\)"),
    (lambda: summary_ping(RttSummary(mean_ms=1.0), sent=3, received=4),
     r"received \(4\) is more than sent \(3\)"),
    (lambda: summary_ping(RttSummary(mean_ms=1.0), sent=3, received=0),
     "received is 0 but the summary gives RTT figures"),
    (lambda: summary_ping(RttSummary(mean_ms=1.0), sent=-1, received=None), "sent is -1"),
    (lambda: PingBody(sent=1, received=1, rtts_ms=[1.0], stats=RttStats(1.0, 1.0, 1.0, 1.0,
                                                                         None),
                      loss_ratio=0.0, summary=RttSummary(mean_ms=1.0), **PING),
     "keeps no samples"),
    (lambda: PingBody(sent=None, received=None, rtts_ms=[], stats=RttStats(None, None, None,
                                                                           None, None),
                      loss_ratio=None, **PING),
     "null only in a summary body"),
    (lambda: PingBody(sent=2, received=2, rtts_ms=[], stats=RttStats(1.0, None, 2.0, 3.0, None),
                      loss_ratio=0.0, summary=RttSummary(min_ms=1.0, mean_ms=2.5, max_ms=3.0),
                      **PING),
     r"stats.mean_ms is 2.0 but the summary gives 2.5"),
    (lambda: PingBody(sent=2, received=1, rtts_ms=[], stats=RttStats(None, None, 2.0, None,
                                                                     None),
                      loss_ratio=0.0, summary=RttSummary(mean_ms=2.0), **PING),
     "loss_ratio is 0.0 but sent/received give 0.5"),
    (lambda: TcpBody.from_summary(RttSummary(samples=4, mean_ms=1.0), attempts=4, succeeded=3,
                                  **TCP),
     r"summary.samples \(4\) is more than succeeded \(3\)"),
    (lambda: TcpBody(attempts=[TcpAttempt(status="ok", connect_ms=1.0)], succeeded=1,
                     stats=RttStats(1.0, 1.0, 1.0, 1.0, None), attempted=1, **TCP),
     "attempted is for summary bodies"),
    (lambda: TcpBody(attempts=[TcpAttempt(status="ok", connect_ms=1.0)], succeeded=1,
                     stats=RttStats(1.0, 1.0, 1.0, 1.0, None),
                     summary=RttSummary(mean_ms=1.0), **TCP),
     "keeps no attempts"),
])
def test_inconsistent_summary_bodies_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_summary_record_round_trips_and_fits_the_json_schema():
    rec = ping(summary_ping(RttSummary(samples=3, min_ms=10.0, median_ms=11.0, mean_ms=12.0,
                                       max_ms=15.0, stdev_ms=2.0, mdev_ms=1.5,
                                       percentiles_ms={"p90": 14.0, "p99.9": 15.0}),
                            sent=3, received=3))
    text = encode_record(rec)
    assert decode_record(text) == rec
    data = json.loads(text)
    assert data["schema"] == SCHEMA_VERSION == 2
    assert data["body"]["summary"]["percentiles_ms"] == {"p90": 14.0, "p99.9": 15.0}
    validator = jsonschema.Draft202012Validator(json_schema())
    validator.validate(data)
    unknown = json.loads(encode_record(ping(summary_ping(RttSummary(mean_ms=3.0), None, None))))
    assert unknown["body"]["sent"] is None and unknown["body"]["loss_ratio"] is None
    validator.validate(unknown)
    # The decoder applies the same rules as the constructor.
    data["body"]["summary"]["max_ms"] = 9.0
    with pytest.raises(SchemaError, match=r"is above summary\.max_ms"):
        decode_record(json.dumps(data))


def test_schema_1_records_still_read_and_cannot_carry_summaries():
    # A committed campaign written before summaries existed.
    records = read_jsonl(ROOT / "data" / "campaigns" / "lab-sample.jsonl")
    assert records and {r.schema for r in records} == {1}
    pings = [r for r in records if isinstance(r, PingRecord)]
    assert pings and all(r.body.summary is None for r in pings)
    # Read and written again, a record keeps its schema number.
    assert json.loads(encode_record(pings[0]))["schema"] == 1
    camp = load(ROOT / "data" / "campaigns" / "lab-sample.jsonl")
    assert not camp.measurements["summary"].any()
    rec = json.loads(encode_record(ping(summary_ping(RttSummary(mean_ms=3.0), 1, 1))))
    rec["schema"] = 1
    with pytest.raises(SchemaError, match="a summary body needs schema 2"):
        decode_record(json.dumps(rec))


def test_store_keeps_summary_records_valid(tmp_path):
    recs: list[AnyRecord] = [
        ping(summary_ping(RttSummary(samples=2, min_ms=4.0, mean_ms=5.0), 2, 2)),
        tcp(TcpBody.from_summary(RttSummary(median_ms=7.0), attempts=None,
                                 succeeded=None, **TCP)),
    ]
    with Store(tmp_path / "collector.db") as store:
        store.add_records(recs)
        back = sorted(store.iter_records(), key=lambda r: r.id)
    assert back == sorted(recs, key=lambda r: r.id)


def test_parquet_export_has_summary_columns_and_loads_back(tmp_path):
    import pyarrow.dataset as ds  # type: ignore[import-untyped]

    recs = _mixed_campaign()
    with Store(tmp_path / "collector.db") as store:
        store.add_records(recs)
        export_parquet(store, tmp_path / "dataset")
    table = ds.dataset(tmp_path / "dataset", format="parquet", partitioning="hive").to_table()
    rows = {r["id"]: r for r in table.to_pylist()}
    c, d, a = rows[recs[2].id], rows[recs[3].id], rows[recs[0].id]
    assert [c[k] for k in SUMMARY_COLUMNS] == [10, 8.0, 15.0, 16.0, 40.0]
    assert [d[k] for k in SUMMARY_COLUMNS] == [None, 9.0, None, 25.0, None]
    assert [a[k] for k in SUMMARY_COLUMNS] == [None] * 5
    assert str(table.schema.field("summary_samples").type) == "int64"
    # The analysis reads the dataset like the JSON Lines: the same measurements.
    from_parquet = load(tmp_path / "dataset").measurements.sort_values("id")
    from_records = check_campaign(frames_from_records(recs)).measurements.sort_values("id")
    pd.testing.assert_frame_equal(
        from_parquet[["id", "summary", "rtt_stat", "rtt_ms", "rtt_samples", "sent"]]
        .reset_index(drop=True).astype({"rtt_stat": str}),
        from_records[["id", "summary", "rtt_stat", "rtt_ms", "rtt_samples", "sent"]]
        .reset_index(drop=True).astype({"rtt_stat": str}))


def test_reach_table_shows_unknown_counts_as_missing():
    rows = reach_table([
        ping(summary_ping(RttSummary(mean_ms=30.0, min_ms=20.0), sent=None, received=None)),
        tcp(TcpBody.from_summary(RttSummary(samples=3, median_ms=9.0), attempts=4, succeeded=3,
                                 **TCP)),
    ])
    ping_row, tcp_row = rows[1].split(), rows[2].split()
    # KIND TARGET ADDRESS STATUS SENT OK LOSS MIN MEDIAN MAX JITTER
    assert ping_row[4:7] == ["-", "-", "-"]
    assert tcp_row[4:7] == ["4", "3", "25%"]


# --------------------------------------------------------------------------- the analysis


def _mixed_campaign() -> list[PingRecord | TcpRecord]:
    return [
        # r1 -> dc, ping
        ping(PingBody.from_samples([10.0, 20.0, None, 30.0], **PING)),          # A
        ping(PingBody.from_samples([12.0, 14.0], **PING), minute=1),            # B
        ping(summary_ping(RttSummary(samples=10, min_ms=8.0, median_ms=15.0,    # C
                                     mean_ms=16.0, max_ms=40.0), 10, 10), minute=2),
        ping(summary_ping(RttSummary(min_ms=9.0, mean_ms=25.0), None, None),    # D
             minute=3),
        # r2 -> dc, ping
        ping(PingBody.from_samples([5.0, 7.0], **PING), region="r2"),          # E
        ping(summary_ping(RttSummary(samples=4, min_ms=5.0, percentiles_ms={"p50": 6.0}),
                          5, 4), region="r2", minute=1),                        # F
        # r1 -> dc, tcp: one summary record only
        tcp(TcpBody.from_summary(RttSummary(samples=3, mean_ms=50.0), attempts=4,
                                 succeeded=3, **TCP)),                          # G
    ]


def test_measurements_of_summary_records():
    camp = check_campaign(frames_from_records(_mixed_campaign()))
    by_stat = camp.measurements[["summary", "rtt_stat", "rtt_ms", "rtt_min_ms", "sent", "received",
                 "loss_ratio", "rtt_samples", "jitter_ms"]]
    a, c, d, f, g = (by_stat.iloc[i] for i in (0, 2, 3, 5, 6))
    assert (a["summary"], a["rtt_stat"], a["rtt_ms"], a["rtt_samples"]) == (False, "median",
                                                                            20.0, 3)
    assert (c["summary"], c["rtt_stat"], c["rtt_ms"], c["rtt_min_ms"]) == (True, "median",
                                                                           15.0, 8.0)
    assert (c["sent"], c["received"], c["loss_ratio"], c["rtt_samples"]) == (10, 10, 0.0, 10)
    assert math.isnan(c["jitter_ms"])  # a summary has no jitter
    # D: only a mean and a minimum, and no counts.
    assert (d["rtt_stat"], d["rtt_ms"], d["rtt_min_ms"]) == ("mean", 25.0, 9.0)
    assert d["sent"] is pd.NA and d["received"] is pd.NA and d["rtt_samples"] is pd.NA
    assert math.isnan(d["loss_ratio"])
    assert (f["rtt_stat"], f["rtt_ms"], f["loss_ratio"]) == ("median", 6.0, 0.2)
    assert (g["rtt_stat"], g["rtt_ms"], g["sent"], g["received"], g["loss_ratio"]) == (
        "mean", 50.0, 4, 3, 0.25)
    assert math.isnan(g["rtt_min_ms"])  # no minimum given: no floor
    # Summary records have no rows in the samples frame: 4 + 2 + 2 samples of A, B, E.
    assert len(camp.samples) == 8
    assert set(camp.samples["id"]) == set(
        camp.measurements.loc[~camp.measurements["summary"], "id"])


def test_a_summary_minimum_is_the_floor_of_the_physical_bound():
    from netvantage.analysis.geo import inflation

    recs = _mixed_campaign()
    # r2: drop E so that only summary F (min 5.0) gives a floor, and add a summary with a
    # mean only (no minimum: it must not count as one).
    recs = [*recs[:4], recs[5], ping(summary_ping(RttSummary(mean_ms=1.0), None, None),
                                     region="r2", minute=9)]
    locations = pd.DataFrame({"name": ["r1", "r2", "dc"], "role": ["region", "region", "dc"],
                              "lat": [0.0, 0.0, 0.0], "lon": [0.0, 1.0, 2.0]})
    out = inflation(frames_from_records(recs).measurements, locations).set_index("region")
    # r1: minima A 10, B 12, C 8 (summary), D 9 (summary) -> 8 over 4 rows.
    assert (out.loc["r1", "n"], out.loc["r1", "rtt_min_ms"]) == (4, 8.0)
    # r2: F's minimum 5; the mean-only summary has no minimum and is no row of n.
    assert (out.loc["r2", "n"], out.loc["r2", "rtt_min_ms"]) == (1, 5.0)


@pytest.mark.parametrize(("rest", "stat", "value"), [
    (dict(min_ms=1.0, percentiles_ms={"p90": 3.0}, max_ms=4.0), "min", 1.0),
    (dict(percentiles_ms={"p99": 5.0, "p90": 3.0}, max_ms=6.0), "p90", 3.0),
    (dict(max_ms=6.0), "max", 6.0),
    (dict(mean_ms=2.0, min_ms=1.0, median_ms=1.5), "median", 1.5),
])
def test_the_figure_standing_for_a_summary(rest, stat, value):
    camp = frames_from_records([ping(summary_ping(RttSummary(**rest), None, None))])
    first = camp.measurements.iloc[0]
    assert (first["rtt_stat"], first["rtt_ms"]) == (stat, value)


def test_metrics_of_a_campaign_mixing_samples_and_summaries():
    camp = check_campaign(frames_from_records(_mixed_campaign()))
    out = point_metrics(camp).set_index(["region", "kind"])
    r1 = row(out, ("r1", "ping"))
    # Observations: A 10, 20, 30 (one lost), B 12, 14, C 15 (its median), D 25 (its mean):
    # sorted 10 12 14 15 20 25 30.  p50 = 15; p90: h = 6 x 0.9 = 5.4 -> 25 + 0.4 x 5 = 27.
    assert r1["records"] == 4
    assert r1["summary_records"] == 2
    assert r1["rtt_p50_ms"] == pytest.approx(15.0)
    assert r1["rtt_p90_ms"] == pytest.approx(27.0)
    # D does not say how many samples stand behind its mean: the total is unknown.
    assert r1["rtt_samples"] is pd.NA
    # Loss over records with known counts: A 4 sent 1 lost, B 2/0, C 10/0; D left out.
    assert (r1["sent"], r1["lost"]) == (16, 1)
    assert r1["loss_ratio"] == pytest.approx(1 / 16)
    r2 = row(out, ("r2", "ping"))
    # E 5, 7 and F (p50 6) -> 5 6 7; samples 2 + F's 4 = 6; sent 2 + 5, lost 0 + 1.
    assert (r2["records"], r2["summary_records"], r2["rtt_samples"]) == (2, 1, 6)
    assert r2["rtt_p50_ms"] == pytest.approx(6.0)
    assert (r2["sent"], r2["lost"]) == (7, 1)
    assert r2["loss_ratio"] == pytest.approx(1 / 7)
    g = row(out, ("r1", "tcp"))
    assert (g["records"], g["summary_records"], g["rtt_samples"]) == (1, 1, 3)
    assert (g["rtt_p50_ms"], g["sent"], g["lost"], g["loss_ratio"]) == (50.0, 4, 1, 0.25)


def test_a_summary_record_is_one_observation_for_the_confidence():
    # 1000 samples stand behind this median, but they are not there to resample:
    # one record gives no interval, as a single sampled record does not either.
    camp = frames_from_records([ping(summary_ping(
        RttSummary(samples=1000, min_ms=5.0, median_ms=9.0), 1000, 1000))])
    first = metrics(camp, n_boot=200).iloc[0]
    assert (first["rtt_samples"], first["summary_records"], first["rtt_p50_ms"]) == (1000, 1, 9.0)
    assert math.isnan(first["rtt_p50_lo"]) and math.isnan(first["rtt_p50_hi"])
    # Two summary records: each is drawn whole, so every replicate's median is one of
    # the values a pool of {9, 11} (drawn with replacement) can give: 9, 10 or 11.
    camp = frames_from_records([
        ping(summary_ping(RttSummary(samples=500, median_ms=9.0), 500, 500)),
        ping(summary_ping(RttSummary(samples=500, median_ms=11.0), 500, 500), minute=1),
    ])
    first = metrics(camp, n_boot=400).iloc[0]
    assert first["rtt_samples"] == 1000 and first["rtt_p50_ms"] == pytest.approx(10.0)
    assert first["rtt_p50_lo"] == pytest.approx(9.0) and first["rtt_p50_hi"] == pytest.approx(11.0)
    assert first["loss_ratio_lo"] == first["loss_ratio_hi"] == 0.0


def test_unknown_counts_do_not_enter_the_loss_interval():
    camp = frames_from_records([
        ping(PingBody.from_samples([1.0, None], **PING)),
        ping(summary_ping(RttSummary(mean_ms=1.0), None, None), minute=1),
        ping(summary_ping(RttSummary(mean_ms=1.0), 8, None), minute=2),
    ])
    first = metrics(camp, n_boot=300).iloc[0]
    # Only the sampled record counts probes: 2 sent, 1 lost; every replicate that draws
    # it gives 0.5 and the others have no probes (no ratio).
    assert (first["sent"], first["lost"], first["loss_ratio"]) == (2, 1, 0.5)
    assert first["loss_ratio_lo"] == first["loss_ratio_hi"] == 0.5


def test_analyse_ranks_summary_records_and_says_so(tmp_path):
    # A latency matrix: means for one target, medians of 5 pings for the other, no
    # probe counts anywhere (so the loss term measures nothing and costs nothing).
    recs = []
    for region, near, far in (("r1", 10.0, 30.0), ("r2", 12.0, 28.0)):
        for minute in range(3):
            recs.append(ping(summary_ping(RttSummary(min_ms=near - 1, mean_ms=near), None,
                                          None), region=region, target="near", minute=minute))
            recs.append(ping(summary_ping(RttSummary(samples=5, min_ms=far - 1,
                                                     median_ms=far), None, None),
                             region=region, target="far", minute=minute))
    path = tmp_path / "m.jsonl"
    write_jsonl(recs, path)
    result = analyse(load(path), n_boot=50)
    assert result.winner == "near"
    breakdown = result.ranking.breakdown.set_index(["region", "target"])
    # Per pair the records' figures: r1 near 10 10 10, r1 far 30 30 30; loss unknown.
    assert breakdown.loc[("r1", "near"), "rtt_p50_ms"] == 10.0
    assert breakdown.loc[("r2", "far"), "rtt_p50_ms"] == 28.0
    assert math.isnan(number(breakdown.loc[("r1", "near"), "loss_pct"]))
    assert breakdown.loc[("r1", "near"), "cost_loss_pct"] == 0.0
    notes = " ".join(result.notes)
    assert "12 summary record(s)" in notes and "(6 mean, 6 median)" in notes
    assert "6 without a sample count" in notes
    assert "12 without probe counts (left out of the loss)" in notes


def test_summary_records_survive_json_lines(tmp_path):
    recs = _mixed_campaign()
    buf = io.BytesIO()
    write_jsonl(recs, buf)
    back = read_jsonl(io.BytesIO(buf.getvalue()))
    assert back == recs
    assert msgspec.json.decode(buf.getvalue().splitlines()[2])["body"]["rtts_ms"] == []


def test_rtt_sd_of_each_record_by_hand_and_the_noise_it_gives() -> None:
    """rtt_sd_ms: the sample sd (n - 1) of a record's own RTTs, or a summary's stdev_ms.

    a  ping 10, 20, lost, 30   mean 20, squares 100 + 0 + 100 = 200 over 2: sd 10
    b  tcp  5, 7, timeout      mean 6, squares 1 + 1 = 2 over 1: sd √2
    c  ping 12, lost           one RTT: NaN
    d  summary, stdev 3, 9 samples (mdev 5 is not a standard deviation): 3
    e  summary without stdev (mdev 4 only): NaN
    """
    ok = [TcpAttempt(status="ok", connect_ms=5.0), TcpAttempt(status="ok", connect_ms=7.0),
          TcpAttempt(status="timeout")]
    recs: list[AnyRecord] = [
        ping(PingBody.from_samples([10.0, 20.0, None, 30.0], **PING), target="dcA"),
        tcp(TcpBody.from_attempts(ok, **TCP), target="dcA"),
        ping(PingBody.from_samples([12.0, None], **PING), target="dcC"),
        ping(summary_ping(RttSummary(samples=9, median_ms=40.0, stdev_ms=3.0, mdev_ms=5.0),
                          9, 9), target="dcB"),
        ping(summary_ping(RttSummary(samples=9, median_ms=50.0, mdev_ms=4.0), 9, 9),
             target="dcD"),
    ]
    m = check_campaign(frames_from_records(recs)).measurements
    sd = m["rtt_sd_ms"].to_list()
    assert sd[0] == pytest.approx(10.0) and sd[1] == pytest.approx(math.sqrt(2))
    assert math.isnan(sd[2]) and sd[3] == 3.0 and math.isnan(sd[4])
    # One record per pair: the ranking's noise is 1.5 (p50 + 0.5 × p95) × 1.2533 × sd / √n.
    from netvantage.analysis.rank import Thresholds, rank

    pings = m[(m["kind"] == "ping") & m["target"].isin(["dcA", "dcB"])]
    table = rank(pings, {"r1": 1.0}, thresholds=Thresholds(None, (), None, None),
                 n_boot=0).table.set_index("target")
    assert table.loc["dcA", "score_se"] == pytest.approx(1.5 * 1.2533 * 10 / math.sqrt(3))
    assert table.loc["dcB", "score_se"] == pytest.approx(1.5 * 1.2533 * 3 / 3)
