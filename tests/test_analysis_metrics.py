"""The analysis loader and metrics: hand-built records, hand-computed tables.

Every expected number is written out with its arithmetic.  Percentiles are
linear interpolation between order statistics: for sorted x0 … x(n-1) the
q-quantile sits at position h = (n-1)·q, value x⌊h⌋ + (h-⌊h⌋)·(x⌊h⌋+1 - x⌊h⌋).
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cells import number, row
from conftest import campaign_sources
from netvantage.analysis.frames import (
    HOP_COLUMNS,
    MEASUREMENT_COLUMNS,
    PHASE_COLUMNS,
    SAMPLE_COLUMNS,
    Campaign,
)
from netvantage.analysis.load import (
    PHASE_ORDER,
    LoadError,
    check_campaign,
    check_frame,
    frames_from_records,
    load,
)
from netvantage.analysis.metrics import (
    BOOTSTRAP_COLUMNS,
    METRIC_COLUMNS,
    MetricsError,
    _Plan,
    bootstrap_ci,
    metrics,
    phase_metrics,
    point_metrics,
    windowed,
)
from netvantage.errors import SchemaError
from netvantage.results import (
    PHASES_IMAP,
    PHASES_SMTP,
    Annotation,
    Hop,
    ImapRecord,
    MailBody,
    Phase,
    PingBody,
    PingRecord,
    SmtpRecord,
    TcpAttempt,
    TcpBody,
    TcpRecord,
    TlsInfo,
    TraceBody,
    TraceProbe,
    TraceRecord,
    new_id,
    write_jsonl,
)

metrics_module = importlib.import_module("netvantage.analysis.metrics")

ROOT = Path(__file__).resolve().parents[1]
LAB_SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
T0 = datetime(2026, 11, 28, 19, 0, tzinfo=UTC)
DEST = "192.0.2.10"


# --------------------------------------------------------------------------- records


def _env(**fields: object) -> dict[str, object]:
    env: dict[str, object] = dict(id=new_id(), agent="agent-1", region="R1", target="dc-a",
                                  address=DEST, started_at=T0, duration_ms=100.0,
                                  status="ok")
    env.update(fields)
    return env


def ping(samples: list[float | None], **fields: object) -> PingRecord:
    body = PingBody.from_samples(samples, ip_version=4, socket="raw", payload_bytes=56,
                                 interval_s=0.2, timeout_s=1.0, dont_fragment=False)
    return PingRecord(body=body, **_env(**fields))  # type: ignore[arg-type]


def tcp(attempts: list[float | str], port: int = 25, **fields: object) -> TcpRecord:
    """Attempts: a connect time in ms, or the status of a failed attempt."""
    made = [TcpAttempt(status="ok", connect_ms=a) if isinstance(a, float)
            else TcpAttempt(status=a, error="why") for a in attempts]  # type: ignore[arg-type]
    body = TcpBody.from_attempts(made, port=port, ip_version=4, timeout_s=1.0)
    return TcpRecord(body=body, **_env(**fields))  # type: ignore[arg-type]


def trace(**fields: object) -> TraceRecord:
    """TTL 1 a router (1.0, 1.2, one lost), TTL 2 silent, TTL 3 the destination (30, 32, lost)."""
    note = Annotation(asn=64500, as_org="Example Net", country="NL", city="Amsterdam",
                      lat=52.37, lon=4.9)
    hops = [
        Hop.from_probes(1, [TraceProbe(address="10.0.0.1", rtt_ms=1.0, icmp_type=11),
                            TraceProbe(address="10.0.0.1", rtt_ms=1.2, icmp_type=11),
                            TraceProbe()]),
        Hop.from_probes(2, [TraceProbe(), TraceProbe(), TraceProbe()]),
        Hop.from_probes(3, [TraceProbe(address=DEST, rtt_ms=30.0, icmp_type=0),
                            TraceProbe(address=DEST, rtt_ms=32.0, icmp_type=0),
                            TraceProbe()], annotations={DEST: note}),
    ]
    body = TraceBody(protocol="icmp", ip_version=4, method="raw", probes_per_hop=3,
                     max_ttl=30, reached=True, dest_ttl=3, stop_reason="reached", hops=hops)
    return TraceRecord(body=body, **_env(**fields))  # type: ignore[arg-type]


def mail(kind: str, phases: list[tuple[str, float | None]], *, port: int = 25,
         mode: str = "starttls", **fields: object) -> SmtpRecord | ImapRecord:
    made = [Phase(name=n, ok=d is not None, duration_ms=d,
                  error=None if d is not None else "timed out") for n, d in phases]
    failed = next((p.name for p in made if not p.ok), None)
    body = MailBody(port=port, ip_version=4, mode=mode, timeout_s=5.0,  # type: ignore[arg-type]
                    phases=made, failed_phase=failed,
                    tls=TlsInfo(version="TLSv1.3", verified=True) if failed is None else None)
    env = _env(**fields)
    if failed is not None:
        env.update(status="timeout", error="greeting timed out")
    cls = SmtpRecord if kind == "smtp" else ImapRecord
    return cls(body=body, **env)  # type: ignore[arg-type]


def campaign_records() -> list[PingRecord | TcpRecord | TraceRecord | SmtpRecord | ImapRecord]:
    return [
        ping([10.0, 20.0, None, 30.0]),                                       # P1
        ping([40.0, None], started_at=T0 + timedelta(minutes=6)),             # P2
        tcp([5.0, 7.0, "timeout"]),                                           # T1
        tcp(["refused"], status="refused", error="refused"),                  # T2
        trace(),                                                              # TR
        mail("smtp", [("dns", 1.0), ("connect", 2.0), ("greeting", 3.0), ("ehlo", 4.0)]),
        mail("smtp", [("dns", 1.0), ("connect", 4.0), ("greeting", 5.0), ("ehlo", 10.0)]),
        mail("smtp", [("dns", 1.0), ("connect", 3.0), ("greeting", None)]),
        mail("imap", [("dns", 1.0), ("connect", 2.0), ("tls_handshake", 5.0),
                      ("greeting", 2.0)], port=993, mode="tls"),
        # An Atlas import: no region, another source; loads like our own.
        ping([50.0, 60.0], agent="atlas-probe-6001", region=None, source="atlas"),
    ]


@pytest.fixture(scope="module")
def records():
    return campaign_records()


@pytest.fixture(scope="module")
def camp(records):
    return check_campaign(frames_from_records(records))


def _row(frame: pd.DataFrame, **keys: object) -> pd.Series:
    mask = np.ones(len(frame), dtype=bool)
    for column, value in keys.items():
        col = frame[column]
        mask &= (col.isna() if value is None else (col == value).fillna(False)).to_numpy()
    (index,) = np.flatnonzero(mask)
    return frame.iloc[index]


# --------------------------------------------------------------------------- loader: frames


def test_frames_have_the_contract_columns_and_dtypes(camp):
    assert tuple(camp.measurements.columns) == MEASUREMENT_COLUMNS
    assert tuple(camp.samples.columns) == SAMPLE_COLUMNS
    assert tuple(camp.hops.columns) == HOP_COLUMNS
    assert tuple(camp.phases.columns) == PHASE_COLUMNS
    m = camp.measurements.dtypes
    for column in ("kind", "agent", "region", "target", "status", "source", "failed_phase",
                   "tls_version"):
        assert isinstance(m[column], pd.CategoricalDtype), column
    for frame in (camp.measurements, camp.samples, camp.hops, camp.phases):
        assert frame["started_at"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    assert m["port"] == "Int64" and m["sent"] == "Int64" and m["received"] == "Int64"
    assert m["cert_verified"] == "boolean" and m["ok"] == np.bool_
    assert camp.samples.dtypes["seq"] == np.int64
    assert camp.hops.dtypes["asn"] == "Int64" and camp.hops.dtypes["is_destination"] == np.bool_
    assert isinstance(camp.phases.dtypes["phase"], pd.CategoricalDtype)
    # Phases keep dialogue order, so sorting by phase sorts like the dialogue.
    assert list(camp.phases["phase"].cat.categories[:4]) == ["dns", "connect", "greeting",
                                                             "ehlo"]


def test_measurement_headline_figures_per_kind(records, camp):
    m = camp.measurements.set_index("id")
    p1, p2, t1, t2, tr, s1, _s2, s3, i1, atlas = (r.id for r in records)
    # ping [10, 20, lost, 30]: median of 10, 20, 30 = 20; loss 1/4;
    # jitter mean(|20-10|, |30-20|) = 10
    assert m.loc[p1, ["rtt_ms", "rtt_min_ms", "loss_ratio", "jitter_ms"]].tolist() == [
        20.0, 10.0, 0.25, 10.0]
    assert (m.loc[p1, "sent"], m.loc[p1, "received"]) == (4, 3)
    assert pd.isna(m.loc[p1, "port"]) and pd.isna(m.loc[p2, "jitter_ms"])  # one reply: no jitter
    # tcp [5, 7, timeout]: median 6, min 5, loss 1/3, jitter |7-5| = 2
    assert m.loc[t1, ["rtt_ms", "rtt_min_ms", "jitter_ms"]].tolist() == [6.0, 5.0, 2.0]
    assert m.loc[t1, "loss_ratio"] == pytest.approx(1 / 3)
    assert (m.loc[t1, "port"], m.loc[t1, "sent"], m.loc[t1, "received"]) == (25, 3, 2)
    assert (m.loc[t2, "ok"], m.loc[t2, "loss_ratio"], pd.isna(m.loc[t2, "rtt_ms"])) == (
        False, 1.0, True)
    # trace: destination hop (TTL 3) answered 30 and 32 of 3 probes: median 31, loss 1/3
    assert m.loc[tr, ["rtt_ms", "rtt_min_ms", "jitter_ms"]].tolist() == [31.0, 30.0, 2.0]
    assert (m.loc[tr, "sent"], m.loc[tr, "received"]) == (3, 2)
    assert pd.isna(m.loc[tr, "port"])  # ICMP trace
    # smtp ok: 1 + 2 + 3 + 4 = 10 ms; the failed one has no handshake time
    assert (m.loc[s1, "handshake_ms"], m.loc[s1, "rtt_ms"]) == (10.0, 10.0)
    assert (m.loc[s1, "tls_version"], m.loc[s1, "cert_verified"]) == ("TLSv1.3", True)
    assert pd.isna(m.loc[s3, "handshake_ms"]) and m.loc[s3, "failed_phase"] == "greeting"
    assert pd.isna(m.loc[s3, "cert_verified"]) and m.loc[s3, "status"] == "timeout"
    assert pd.isna(m.loc[s1, "sent"]) and pd.isna(m.loc[s1, "loss_ratio"])
    # imap over implicit TLS on 993: 1 + 2 + 5 + 2 = 10 ms
    assert (m.loc[i1, "port"], m.loc[i1, "handshake_ms"]) == (993, 10.0)
    # the Atlas record
    assert m.loc[atlas, "source"] == "atlas" and pd.isna(m.loc[atlas, "region"])
    assert m.loc[atlas, "rtt_ms"] == 55.0


def test_samples_one_row_per_echo_and_attempt(records, camp):
    s = camp.samples
    p1, _, t1, t2 = (r.id for r in records[:4])
    assert s.loc[s["id"] == p1, "rtt_ms"].tolist() == pytest.approx([10, 20, np.nan, 30],
                                                                    nan_ok=True)
    assert s.loc[s["id"] == p1, "seq"].tolist() == [0, 1, 2, 3]
    assert s.loc[s["id"] == t1, "rtt_ms"].tolist() == pytest.approx([5, 7, np.nan],
                                                                    nan_ok=True)
    assert s.loc[s["id"] == t1, "port"].tolist() == [25, 25, 25]
    assert s.loc[s["id"] == t2, "rtt_ms"].isna().all()
    # 4 + 2 pings, 3 + 1 attempts, 2 Atlas pings
    assert len(s) == 12 and set(s["kind"]) == {"ping", "tcp"}


def test_hops_one_row_per_responder_and_silent_ttl(records, camp):
    h = camp.hops
    assert h["ttl"].tolist() == [1, 2, 3]
    assert h["address"].isna().tolist() == [False, True, False]  # TTL 2 silent, still a row
    assert h["replies"].tolist() == [2, 0, 2]
    assert h["sent"].tolist() == [3, 3, 3]
    assert h["loss_ratio"].tolist() == pytest.approx([1 / 3, 1.0, 1 / 3])
    assert h["rtt_median_ms"].tolist() == pytest.approx([1.1, np.nan, 31.0], nan_ok=True)
    assert h["is_destination"].tolist() == [False, False, True]
    assert h["icmp_type"].tolist()[0] == 11 and h["icmp_type"].tolist()[2] == 0
    dest = h.iloc[2]
    assert (dest["asn"], dest["as_org"], dest["city"], dest["lat"]) == (
        64500, "Example Net", "Amsterdam", 52.37)
    assert (h["id"] == records[4].id).all() and (h["protocol"] == "icmp").all()


def test_phases_one_row_per_phase(camp):
    p = camp.phases
    # 4 + 4 + 3 smtp phases, 4 imap
    assert len(p) == 15
    failed = p[~p["ok"]]
    assert failed["phase"].tolist() == ["greeting"] and failed["duration_ms"].isna().all()
    assert set(p.loc[p["kind"] == "imap", "mode"]) == {"tls"}
    assert set(p.loc[p["kind"] == "imap", "port"]) == {993}


def test_phase_order_is_dialogue_order_for_smtp_and_imap():
    for dialogue in (PHASES_SMTP, PHASES_IMAP):
        assert [p for p in PHASE_ORDER if p in dialogue] == list(dialogue)


def test_empty_campaign_keeps_the_dtypes():
    empty = check_campaign(frames_from_records([]))
    assert len(empty.measurements) == 0
    assert empty.measurements["started_at"].dtype == pd.DatetimeTZDtype("ns", "UTC")
    assert metrics(empty, n_boot=10).empty


# --------------------------------------------------------------------------- loader: sources


def _same(a: Campaign, b: Campaign) -> None:
    # (by the ids' strings: a loaded child frame's id is a Categorical in its records'
    # order, which differs from source to source)
    def key(column: pd.Series) -> pd.Series:
        return column.astype(str) if column.name == "id" else column

    for name in ("measurements", "samples", "hops", "phases"):
        x = getattr(a, name).sort_values(["id", *([] if name == "measurements" else
                                                  [getattr(a, name).columns[-1]])],
                                         kind="stable", key=key).reset_index(drop=True)
        y = getattr(b, name).sort_values(list(x.columns[:1]) + ([] if name == "measurements"
                                                                 else [x.columns[-1]]),
                                         kind="stable", key=key).reset_index(drop=True)
        pd.testing.assert_frame_equal(x, y, check_categorical=False)


@pytest.fixture(scope="module")
def sources(records, tmp_path_factory):
    return campaign_sources(records, tmp_path_factory.mktemp("sources"))


@pytest.mark.parametrize("form", ["jsonl", "store", "parquet"])
def test_every_source_loads_the_same_frames(form, sources, camp):
    loaded = load(sources[form])
    _same(loaded, camp)


@pytest.mark.parametrize("form", ["jsonl", "store", "parquet"])
def test_kinds_keeps_only_those_kinds(form, sources):
    loaded = load(sources[form], kinds=["tcp", "smtp"])
    assert sorted(loaded.measurements["kind"].astype(str)) == ["smtp"] * 3 + ["tcp"] * 2
    assert set(loaded.samples["kind"]) == {"tcp"}
    assert loaded.hops.empty and set(loaded.phases["kind"]) == {"smtp"}


def test_a_list_of_sources_keeps_each_record_once(sources, records):
    loaded = load([sources["jsonl"], sources["store"]])
    assert len(loaded.measurements) == len(records)


def test_bad_sources_and_kinds_say_what_to_do(tmp_path, sources):
    with pytest.raises(LoadError, match="no such file"):
        load(tmp_path / "nothing.jsonl")
    with pytest.raises(LoadError, match="known: ping, tcp"):
        load(sources["jsonl"], kinds=["pnig"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match="without Parquet files"):
        load(tmp_path / "empty")
    part = next(sources["parquet"].rglob("*.parquet"))
    with pytest.raises(LoadError, match="dataset's directory"):
        load(part)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "ping"}\n{"kind": "pong"}\n')
    with pytest.raises(SchemaError) as info:
        load(bad)
    assert len(info.value.problems) == 2  # both lines reported


# --------------------------------------------------------------------------- schema checks


def test_schema_check_lists_every_problem(camp):
    m = camp.measurements.copy()
    m.loc[0, "rtt_ms"] = -1.0                      # negative RTT
    m.loc[1, "id"] = m.loc[0, "id"]                # duplicate id
    m.loc[2, "loss_ratio"] = 1.5                   # ratio above 1
    m.loc[3, "received"] = 9                       # more received than sent
    m = m.drop(columns=["jitter_ms"])              # a missing column
    with pytest.raises(SchemaError) as info:
        check_frame("measurements", m)
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) >= 5, text
    for needle in ("rtt_ms", "id", "loss_ratio", "received <= sent", "jitter_ms"):
        assert needle in text, needle


def test_campaign_check_reports_problems_of_every_frame(camp):
    bad = Campaign(
        measurements=camp.measurements.assign(duration_ms=-1.0),
        samples=camp.samples.assign(seq=-1),
        hops=camp.hops.assign(ttl=0),
        phases=camp.phases.astype({"duration_ms": "str"}),
    )
    with pytest.raises(SchemaError) as info:
        check_campaign(bad)
    text = "\n".join(info.value.problems)
    for needle in ("measurements.duration_ms", "samples.seq", "hops.ttl",
                   "phases.duration_ms"):
        assert needle in text, needle


# --------------------------------------------------------------------------- metrics


def test_metrics_hand_computed(camp):
    out = metrics(camp, n_boot=0)
    assert list(out.columns) == ["region", "target", "kind", "port", *METRIC_COLUMNS,
                                 *BOOTSTRAP_COLUMNS]
    # (R1, ping): observations 10, 20, 30 (P1) and 40 (P2); 2 of 6 lost.
    # p50: h = 3·0.5 = 1.5 → 20 + 0.5·10 = 25;  p90: h = 2.7 → 30 + 0.7·10 = 37
    # p95: h = 2.85 → 38.5;  p99: h = 2.97 → 39.7;  jitter mean(10, —) = 10
    r = _row(out, region="R1", kind="ping")
    assert (r["records"], r["success_rate"], r["rtt_samples"]) == (2, 1.0, 4)
    assert [r[f"rtt_p{q}_ms"] for q in (50, 90, 95, 99)] == pytest.approx([25, 37, 38.5, 39.7])
    assert (r["sent"], r["lost"], r["loss_ratio"], r["jitter_ms"]) == (6, 2,
                                                                         pytest.approx(1 / 3),
                                                                         10.0)
    assert pd.isna(r["port"]) and pd.isna(r["handshake_p50_ms"])
    # (R1, tcp, 25): T1 ok [5, 7, timeout], T2 refused. success 1/2; obs 5, 7:
    # p50 = 6, p90 = 5 + 0.9·2 = 6.8, p95 = 6.9, p99 = 6.98; lost 2 of 4; jitter mean(2, —) = 2
    r = _row(out, region="R1", kind="tcp", port=25)
    assert (r["records"], r["success_rate"], r["rtt_samples"]) == (2, 0.5, 2)
    assert [r[f"rtt_p{q}_ms"] for q in (50, 90, 95, 99)] == pytest.approx([6, 6.8, 6.9, 6.98])
    assert (r["sent"], r["lost"], r["loss_ratio"], r["jitter_ms"]) == (4, 2, 0.5, 2.0)
    # (R1, trace): one record, its destination median 31; 1 of 3 probes lost
    r = _row(out, region="R1", kind="trace")
    assert (r["rtt_p50_ms"], r["rtt_p99_ms"], r["loss_ratio"]) == (31.0, 31.0,
                                                                   pytest.approx(1 / 3))
    # (R1, smtp, 25): handshakes 10 and 20 (the third failed): success 2/3;
    # p50 = 15, p90 = 10 + 0.9·10 = 19, p95 = 19.5; no probes: loss <NA>
    r = _row(out, region="R1", kind="smtp", port=25)
    assert (r["records"], r["rtt_samples"]) == (3, 2)
    assert r["success_rate"] == pytest.approx(2 / 3)
    assert [r["rtt_p50_ms"], r["rtt_p90_ms"], r["rtt_p95_ms"]] == pytest.approx([15, 19, 19.5])
    assert [r["handshake_p50_ms"], r["handshake_p95_ms"]] == pytest.approx([15, 19.5])
    assert pd.isna(r["sent"]) and pd.isna(r["loss_ratio"]) and pd.isna(r["jitter_ms"])
    # (no region, ping): the Atlas record is its own group: obs 50, 60 → p50 55
    r = _row(out, region=None, kind="ping")
    assert (r["records"], r["rtt_p50_ms"], r["loss_ratio"]) == (1, 55.0, 0.0)
    assert len(out) == 6  # ping, tcp, trace, smtp, imap of R1; Atlas ping
    assert out[list(BOOTSTRAP_COLUMNS)].isna().all().all()  # n_boot=0: no intervals


def test_metrics_by_any_measurement_column(camp):
    out = point_metrics(camp, by=("kind", "agent"))
    r = _row(out, kind="ping", agent="agent-1")
    assert r["records"] == 2 and r["rtt_p50_ms"] == 25.0
    assert len(metrics(camp, by=(), n_boot=0)) == 1
    with pytest.raises(MetricsError, match="nope"):
        metrics(camp, by=("nope",))
    with pytest.raises(MetricsError, match="between 0 and 1"):
        metrics(camp, ci=95)


def test_samples_find_their_record_however_the_ids_are_held(camp):
    """The samples are matched to their records by id (Arrow's lookup): the same figures
    with the ids as Python objects or as categories, and repeated record ids refused."""
    import dataclasses

    want = metrics(camp, n_boot=50, seed=1)
    for cast in (object, "category"):
        other = dataclasses.replace(
            camp, measurements=camp.measurements.assign(id=camp.measurements["id"].astype(cast)),
            samples=camp.samples.assign(id=camp.samples["id"].astype(cast)))
        pd.testing.assert_frame_equal(metrics(other, n_boot=50, seed=1), want)
    twice = camp.measurements.copy()
    twice.loc[1, "id"] = twice.loc[0, "id"]
    with pytest.raises(MetricsError, match="not unique"):
        metrics(dataclasses.replace(camp, measurements=twice), n_boot=0)


def test_phase_metrics_hand_computed(camp):
    out = phase_metrics(camp)
    smtp = out[out["kind"] == "smtp"].set_index("phase")
    # every phase in dialogue order
    assert list(smtp.index.astype(str)) == ["dns", "connect", "greeting", "ehlo"]
    # connect 2, 4, 3 → sorted 2, 3, 4: p50 3; p95 h = 1.9 → 3 + 0.9·1 = 3.9
    connect = row(smtp, "connect")
    assert (connect["phases"], connect["duration_p50_ms"], connect["duration_p95_ms"]) == (
        3, 3.0, pytest.approx(3.9))
    # greeting 3, 5, failed: ok 2/3; p50 4; p95 3 + 0.95·2 = 4.9
    assert smtp.loc["greeting", "ok_rate"] == pytest.approx(2 / 3)
    assert row(smtp, "greeting")[["duration_p50_ms", "duration_p95_ms"]].tolist() == \
        pytest.approx([4.0, 4.9])
    # ehlo 4, 10 (the failed dialogue never got there): p50 7, p95 4 + 0.95·6 = 9.7
    assert smtp.loc["ehlo", "phases"] == 2
    assert row(smtp, "ehlo")[["duration_p50_ms", "duration_p95_ms"]].tolist() == \
        pytest.approx([7.0, 9.7])
    imap = out[out["kind"] == "imap"]
    assert imap["phase"].astype(str).tolist() == ["dns", "connect", "greeting", "tls_handshake"]
    # the order of the categories, not of the record: tls_handshake came before greeting


def test_windowed_puts_each_record_and_its_samples_in_its_window(camp):
    out = windowed(camp, "5min", n_boot=0)
    pings = out[(out["kind"] == "ping") & (out["region"] == "R1")]
    # P1 at 19:00 → window 19:00 (obs 10, 20, 30: p50 20); P2 at 19:06 → 19:05 (obs 40)
    assert pings["window"].tolist() == [pd.Timestamp("2026-11-28 19:00", tz="UTC"),
                                        pd.Timestamp("2026-11-28 19:05", tz="UTC")]
    assert pings["rtt_p50_ms"].tolist() == [20.0, 40.0]
    assert pings["loss_ratio"].tolist() == [0.25, 0.5]
    assert list(out.columns[:5]) == ["region", "target", "kind", "port", "window"]
    with pytest.raises(MetricsError, match="freq"):
        windowed(camp, "1ME")


@pytest.mark.filterwarnings("error")
def test_sorted_observations_give_the_point_percentiles():
    """One sort of the observations serves the point percentiles and the bootstrap.  Six
    records in groups 0 0 3 0 1 0 (positions in their group 0 1 0 2 0 3); group 0 holds
    4 (record 0), 1 (record 1), 3 (record 2), 2 (record 3) → sorted 1 2 3 4 (n 4): p50 at
    h = 1.5 → 2 + 0.5·(3 − 2) = 2.5, p90 at h = 2.7 → 3 + 0.7·(4 − 3) = 3.7; group 1's
    record has no observation (its samples lost) → no percentile; group 2 no record at
    all; group 3 one value, every percentile that value."""
    g = np.array([0, 0, 3, 0, 1, 0], dtype=np.int64)
    _, records = metrics_module._records(g, 4)
    assert records.position.tolist() == [0, 1, 0, 2, 0, 3]
    rows = np.array([0, 2, 1, 3, 5])
    ordered = metrics_module._sorted(np.array([4.0, 7.5, 1.0, 3.0, 2.0]), g[rows],
                                     records.position[rows], 4)
    assert ordered.values.tolist() == [1.0, 2.0, 3.0, 4.0, 7.5]
    assert ordered.record.tolist() == [1, 3, 2, 0, 0]
    assert ordered.counts.tolist() == [4, 0, 0, 1]
    assert ordered.starts.tolist() == [0, 4, 4, 4]
    got = ordered.quantiles((0.5, 0.9))
    assert got[0].tolist() == [2.5, pytest.approx(3.7, rel=1e-15)]
    assert np.isnan(got[1:3]).all()
    assert got[3].tolist() == [7.5, 7.5]


def test_point_percentiles_are_those_of_the_group_by():
    """The percentiles read from the sorted observations are, to the bit, pandas' group-by
    quantiles of the same observations (ping echoes with lost ones, several groups)."""
    records = [*_pings(30, 2), *_pings(25, 4), *_pings(7, 5)]
    regions = ["R1"] * 30 + ["R2"] * 25 + ["R3"] * 7
    camp = frames_from_records(records)
    m = camp.measurements.assign(region=regions)
    s = camp.samples.merge(m[["id"]].assign(r=regions), on="id")
    out = point_metrics({"measurements": m, "samples": s}, by=("region",))
    want = s.groupby("r")["rtt_ms"].quantile(np.array([0.5, 0.9, 0.95, 0.99])).unstack()
    for column, q in (("rtt_p50_ms", 0.5), ("rtt_p90_ms", 0.9), ("rtt_p95_ms", 0.95),
                      ("rtt_p99_ms", 0.99)):
        assert out[column].to_numpy().tobytes() == want[q].to_numpy().tobytes(), column


# --------------------------------------------------------------------------- bootstrap


def _sent(group: int, record: int) -> float:
    """Probes record ``record`` of group ``group`` sent: in group 3, sums past 2**24,
    which float32 cannot hold exactly (that group's batches compute in float64)."""
    return (2.0 ** 24 if group == 3 else 10.0) + record


def _plan(groups: list[list[list[float]]], n_boot: int, seed: int = 5) -> _Plan:
    """A bootstrap plan over ``groups`` (each a list of records, each a list of
    observations); record r of group i sent _sent(i, r) probes and lost r % 3."""
    n_records = np.array([len(records) for records in groups], dtype=np.int64)
    rec_bounds = np.cumsum(n_records) - n_records
    per_record, obs_rec, obs_v, n_obs = [], [], [], []
    for i, records in enumerate(groups):
        pairs = sorted((v, r) for r, vals in enumerate(records) for v in vals)
        obs_v += [v for v, _ in pairs]
        obs_rec += [r for _, r in pairs]
        n_obs.append(len(pairs))
        per_record += [[_sent(i, r), float(r % 3), float(len(vals))]
                       for r, vals in enumerate(records)]
    counts = np.array(n_obs, dtype=np.int64)
    return _Plan(n_boot, seed, [1000 + i for i in range(len(groups))], rec_bounds, n_records,
                 np.cumsum(counts) - counts, counts,
                 np.array(per_record, dtype=np.float64).reshape(-1, 3),
                 np.array(obs_rec, dtype=np.int32), np.array(obs_v, dtype=np.float64))


def _replicates_of(plan: _Plan) -> dict[int, np.ndarray]:
    return {int(i): rep for numbers, reps in plan.run()
            for i, rep in zip(numbers, reps, strict=True)}


def _bootstrap_groups() -> list[list[list[float]]]:
    rng = np.random.default_rng(3)
    big: list[list[float]] = [[] for _ in range(40)]  # several blocks, the last one partly filled
    for r in rng.integers(0, 40, 700):
        big[r].append(float(np.round(rng.lognormal(3.0, 0.5), 1)))
    big[0] += [30.0] * 50  # one record with many observations: long runs of one weight
    return [
        [[3.0, 1.0], [2.0], [], [8.0, 5.0, 9.0]],  # a record without observations
        [[7.0]],  # one record: no interval
        [[], []],  # records without observations: a loss interval only
        [[4.0], [4.0], [6.0]],  # ties
        big,
        [[float(v)] for v in rng.integers(0, 50, 90)],  # one observation per record
    ]


@pytest.mark.filterwarnings("error")
def test_vectorised_replicates_match_the_definition():
    """Each replicate equals the naive computation from the group's own stream: draw the
    n records with replacement, pool the drawn records' observations, take quantiles."""
    groups = _bootstrap_groups()
    n_boot = 60
    have = _replicates_of(_plan(groups, n_boot))
    assert sorted(have) == [0, 2, 3, 4, 5]  # every group of two records or more
    assert _plan(groups, n_boot).narrow == [True, True, True, False, True, True]
    for i, rep in have.items():
        records = groups[i]
        n = len(records)
        sent = np.array([_sent(i, r) for r in range(n)])
        lost = np.array([float(r % 3) for r in range(n)])
        drawn = np.random.default_rng([5, 1000 + i]).integers(0, n, size=(n_boot, n))
        for b, draw in enumerate(drawn):
            c = np.bincount(draw, minlength=n)
            pooled = [v for r, vals in enumerate(records) for v in vals * int(c[r])]
            want = np.quantile(pooled, [0.5, 0.95]) if pooled else [np.nan, np.nan]
            assert rep[:2, b] == pytest.approx(want, rel=1e-12, nan_ok=True)
            assert rep[2, b] == pytest.approx((c @ lost) / (c @ sent), rel=1e-15)


@pytest.mark.filterwarnings("error")
def test_replicates_of_a_group_of_many_blocks_match_the_definition():
    """A group of more than 127 blocks of observations (4,400 over 30 records: 138
    blocks), whose block counts no longer fit the int8 the search uses for fewer: each
    replicate is still the naive computation."""
    rng = np.random.default_rng(8)
    records: list[list[float]] = [[] for _ in range(30)]
    for r in rng.integers(0, 30, 4400):
        records[r].append(float(np.round(rng.lognormal(3.0, 0.4), 2)))
    plan = _plan([records], n_boot=12)
    assert plan.n_blocks == [138]
    (rep,) = _replicates_of(plan).values()
    drawn = np.random.default_rng([5, 1000]).integers(0, 30, size=(12, 30))
    for b, draw in enumerate(drawn):
        c = np.bincount(draw, minlength=30)
        pooled = [v for r, vals in enumerate(records) for v in vals * int(c[r])]
        assert rep[:2, b] == pytest.approx(np.quantile(pooled, [0.5, 0.95]), rel=1e-12)


@pytest.mark.filterwarnings("error")
def test_replicates_do_not_depend_on_the_batches(monkeypatch):
    """A group's replicates are the same whatever the batches it is cut in: alone or with
    others, its replicates in one piece or split over several batches."""
    groups = _bootstrap_groups()
    whole = _replicates_of(_plan(groups, 70))
    # Batches of several small groups, a group of 90 records in two parts.
    monkeypatch.setattr(metrics_module, "_CHUNK_CELLS", 12_000)
    plan = _plan(groups, 70)
    assert max(len(batch) for batch in plan._batches()) > 1
    assert any(unit.start > 0 for batch in plan._batches() for unit in batch)
    cut = _replicates_of(plan)
    assert sorted(cut) == sorted(whole)
    for i, rep in whole.items():
        assert np.array_equal(cut[i], rep, equal_nan=True)


@pytest.mark.filterwarnings("error")
def test_metrics_do_not_depend_on_the_batches_of_groups(monkeypatch):
    """The groups' observations are gathered, sorted and resampled a batch of groups at a
    time: every figure is the same, to the bit, whether each group is a batch of its own,
    a few groups make one, or one batch holds them all."""
    camp = load(LAB_SAMPLE)
    runs = {}
    for limit in (1, 600, 10**9):
        monkeypatch.setattr(metrics_module, "_BATCH_OBSERVATIONS", limit)
        batches = list(metrics_module._batches(np.array([300, 300, 300, 300]), limit))
        runs[limit] = (metrics(camp, n_boot=200, seed=3), batches)
    assert [len(batches) for _, batches in runs.values()] == [4, 2, 1]
    whole = runs[10**9][0]
    assert whole["rtt_p50_lo"].notna().sum() > 10
    for limit in (1, 600):
        pd.testing.assert_frame_equal(runs[limit][0], whole, check_exact=True)


def test_probe_counts_are_narrowed_only_where_exact():
    """The records' sent and lost probes go through the batches in float32 only when every
    figure is a whole number float32 holds exactly (below 2**24); one larger count keeps
    them all in float64.  Unknown counts are 0; the records come in the order given."""
    def frame(big: int) -> pd.DataFrame:
        return pd.DataFrame({"sent": pd.array([10, big, None], dtype="Int64"),
                             "received": pd.array([7, 3, 5], dtype="Int64")})

    order = np.array([2, 0, 1])
    sent, lost = metrics_module._probes(frame(2**24 - 1), order)
    assert sent.dtype == lost.dtype == np.float32
    assert sent.tolist() == [0.0, 10.0, 2**24 - 1] and lost.tolist() == [0.0, 3.0, 2**24 - 4]
    sent, lost = metrics_module._probes(frame(2**24 + 1), order)
    assert sent.dtype == lost.dtype == np.float64
    assert sent.tolist() == [0.0, 10.0, 2**24 + 1] and lost.tolist() == [0.0, 3.0, 2**24 - 2]


def test_many_groups_without_handshakes():
    """Groups past int8's 127 (their numbers in a wider Categorical code) none of which
    has a handshake: every handshake figure NaN, the rest computed (pandas could not
    reindex a CategoricalIndex by one whose codes have another width)."""
    camp = frames_from_records(_pings(260, 6))
    regions = [f"R{i // 2:03d}" for i in range(260)]
    m = camp.measurements.assign(region=regions)
    out = metrics({"measurements": m, "samples": camp.samples}, by=("region",), n_boot=20)
    assert len(out) == 130 and (out["records"] == 2).all()
    assert out[["handshake_p50_ms", "handshake_p95_ms"]].isna().all().all()
    assert out["rtt_p50_ms"].notna().all() and out["rtt_p50_lo"].notna().all()


def _pings(n: int, seed: int) -> list[PingRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rtts: list[float | None] = [float(x) for x in rng.lognormal(3.0, 0.3, 10)]
        for j in rng.choice(10, size=rng.integers(0, 3), replace=False):
            rtts[j] = None
        out.append(ping(rtts, started_at=T0 + timedelta(seconds=15 * i)))
    return out


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_data():
    small = metrics(frames_from_records(_pings(20, 1)), n_boot=1000)
    large = metrics(frames_from_records(_pings(400, 1)), n_boot=1000)
    for out in (small, large):
        (r,) = out.itertuples()
        for name in ("rtt_p50", "rtt_p95"):
            assert (number(getattr(r, f"{name}_lo")) <= number(getattr(r, f"{name}_ms"))
                    <= number(getattr(r, f"{name}_hi")))
        assert number(r.loss_ratio_lo) <= number(r.loss_ratio) <= number(r.loss_ratio_hi)
    for name in ("rtt_p50", "rtt_p95", "loss_ratio"):
        width = (small[f"{name}_hi"] - small[f"{name}_lo"]).iloc[0]
        narrower = (large[f"{name}_hi"] - large[f"{name}_lo"]).iloc[0]
        assert narrower < width / 2, name  # 20× the records: about 1/√20 the width


def test_bootstrap_is_seeded_per_group_and_has_no_interval_for_one_record(camp):
    a = bootstrap_ci(camp, n_boot=200, seed=3)
    b = bootstrap_ci(camp, n_boot=200, seed=3)
    pd.testing.assert_frame_equal(a, b)
    # A group's interval does not depend on the other groups present.
    only_ping = Campaign(camp.measurements[camp.measurements["kind"] == "ping"],
                         camp.samples[camp.samples["kind"] == "ping"], camp.hops, camp.phases)
    c = bootstrap_ci(only_ping, n_boot=200, seed=3)
    assert _row(c, region="R1").tolist() == _row(a, region="R1", kind="ping").tolist()
    assert _row(a, kind="trace")[list(BOOTSTRAP_COLUMNS)].isna().all()  # one record
    # Every tcp record of the group lost what it lost: T1 1 of 3, T2 1 of 1 → replicate
    # losses are (k·1 + (2-k)·1) / (k·3 + (2-k)·1) for k = 0, 1, 2 draws of T1: 1, 1/2, 1/3
    tcp_row = _row(a, kind="tcp")
    assert 1 / 3 <= tcp_row["loss_ratio_lo"] <= tcp_row["loss_ratio_hi"] <= 1.0


def test_loss_interval_of_identical_records_is_a_point():
    # each record loses 1 of 4 → every replicate's loss is 1/4
    out = metrics(frames_from_records([ping([1.0, 2.0, None, 3.0]) for _ in range(5)]),
                  n_boot=100)
    assert (out["loss_ratio_lo"].iloc[0], out["loss_ratio_hi"].iloc[0]) == (0.25, 0.25)


# --------------------------------------------------------------------------- the lab campaign


def test_the_lab_sample_campaign_loads_with_its_counts():
    want: dict[str, int] = {}
    with open(LAB_SAMPLE, "rb") as fh:
        for line in fh:
            if line.strip():
                kind = json.loads(line)["kind"]
                want[kind] = want.get(kind, 0) + 1
    camp = load(LAB_SAMPLE)
    got = camp.measurements["kind"].value_counts()
    assert {k: int(got[k]) for k in want} == want
    assert int(got.sum()) == sum(want.values())
    meta = LAB_SAMPLE.with_name("lab-sample.meta.json")
    if meta.exists():
        assert json.loads(meta.read_text())["counts"] == want
    out = metrics(camp, n_boot=100)
    assert out["records"].sum() == sum(want.values())
    assert (out["rtt_p50_ms"].dropna() > 0).all()


def test_records_are_one_per_agent_and_id(tmp_path):
    """The loader keys records as the collector does: the same (agent, id) twice is one
    record; two agents' records that share an id are two (the later one's frame id is
    AGENT:ID), so neither is lost to the other."""
    from netvantage.analysis.load import read_records
    from test_results import ping_record

    a = ping_record([10.0, 11.0], id="shared-id", agent="a1", region="R1")
    b = ping_record([20.0, 21.0], id="shared-id", agent="a2", region="R2")
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    write_jsonl([a, b], first)
    write_jsonl([a], second)  # a re-import of a1's record
    got = read_records([first, second])
    assert [(r.agent, r.id) for r in got] == [("a1", "shared-id"), ("a2", "a2:shared-id")]
    camp = load([first, second])
    m = camp.measurements.set_index("id")
    assert number(m.loc["shared-id", "rtt_min_ms"]) == 10.0
    assert number(m.loc["a2:shared-id", "rtt_min_ms"]) == 20.0
    assert len(camp.samples) == 4
