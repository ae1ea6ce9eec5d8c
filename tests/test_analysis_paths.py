"""Geography and paths of the analysis layer, on small hand-built frames (and the lab sample)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cells import number, row
from netvantage.analysis.frames import HOP_COLUMNS, LOCATION_COLUMNS
from netvantage.analysis.geo import (
    great_circle_km,
    inflation,
    locations,
    rtt_floor_ms,
)
from netvantage.analysis.paths import path_changes, path_summary, where_it_starts
from netvantage.errors import SchemaError

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

AMS = (52.3086, 4.7639)
JNB = (-26.1392, 28.2460)


# --------------------------------------------------------------------------- geo

def test_great_circle_ams_jnb_by_hand() -> None:
    # Haversine, R = 6371.0088 km:
    #   dφ = -26.1392 - 52.3086 = -78.4478°, dλ = 28.2460 - 4.7639 = 23.4821°
    #   h = sin²(dφ/2) + cos φ1 cos φ2 sin²(dλ/2)
    #     = sin²(39.2239°) + cos 52.3086° · cos 26.1392° · sin²(11.74105°)
    #     = 0.399946 + 0.611127 × 0.897727 × 0.041431 = 0.422676
    #   d = 2 R asin(√h) = 2 × 6371.0088 × asin(0.650135) = 2 × 6371.0088 × 0.707696
    #     ≈ 9,017 km
    assert great_circle_km(*AMS, *JNB) == pytest.approx(9017.3, abs=0.5)
    # Second arithmetic: the spherical law of cosines (another formula, same sphere).
    p1, l1, p2, l2 = map(math.radians, (*AMS, *JNB))
    cos_c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(l2 - l1)
    assert great_circle_km(*AMS, *JNB) == pytest.approx(6371.0088 * math.acos(cos_c), rel=1e-9)


def test_great_circle_vectorised_and_missing() -> None:
    km = great_circle_km(np.array([AMS[0], 0.0, np.nan]), np.array([AMS[1], 0.0, 0.0]),
                         np.array([JNB[0], 0.0, 0.0]), np.array([JNB[1], 180.0, 0.0]))
    assert km[0] == pytest.approx(9017.3, abs=0.5)
    assert km[1] == pytest.approx(math.pi * 6371.0088)  # antipodes: half the circumference
    assert math.isnan(km[2])
    assert isinstance(great_circle_km(0.0, 0.0, 0.0, 0.0), float)


def test_rtt_floor() -> None:
    # 200 km per ms one way: 1,000 km there and back take 10 ms.
    assert rtt_floor_ms(1000.0) == pytest.approx(10.0)
    assert rtt_floor_ms(np.array([0.0, 9017.3])) == pytest.approx([0.0, 90.173])


def test_locations_from_iata_only(tmp_path: Path) -> None:
    csv = tmp_path / "loc.csv"
    # WDH is Windhoek, Namibia: country code "NA", which a CSV reader must not take as missing.
    csv.write_text("name,role,lat,lon,country,continent,iata\n"
                   "NA-WDH,region,,,,,WDH\nNG-LOS,region,,,,,LOS\n"
                   "dc-x,dc,10.0,20.0,FR,,\n")
    loc = locations(csv)
    assert tuple(loc.columns) == LOCATION_COLUMNS
    wdh = loc.set_index("name").loc["NA-WDH"]
    assert (wdh["country"], wdh["continent"]) == ("NA", "AF")
    assert wdh["lat"] == pytest.approx(-22.48, abs=0.01)
    assert loc.set_index("name").loc["NG-LOS", "continent"] == "AF"
    assert loc.set_index("name").loc["dc-x", "continent"] == "EU"


def test_locations_reports_every_problem() -> None:
    bad = pd.DataFrame({"name": ["a", "a", "b", "c"], "role": ["region", "dc", "client", "dc"],
                        "iata": ["ZZZ", "AMS", "AMS", None]})
    with pytest.raises(SchemaError) as err:
        locations(bad)
    text = str(err.value)
    assert "ZZZ" in text and "twice" in text and "client" in text and "lat and lon" in text


def test_lab_locations_table() -> None:
    loc = locations(ROOT / "data" / "locations" / "lab.csv")
    assert set(loc["name"]) >= {"ZM-LUN", "dc-ams"}
    assert loc["lat"].notna().all()


def _measurements(rtts: dict[tuple[str, str], float]) -> pd.DataFrame:
    rows = [{"kind": kind, "region": r, "target": t, "rtt_min_ms": v + extra}
            for (r, t), v in rtts.items()
            for kind, extra in (("ping", 0.0), ("tcp", 1.0), ("smtp", -50.0))]
    return pd.DataFrame(rows)


PLACES = pd.DataFrame({
    "name": ["ZM-LUN", "GB-LHR", "CA-YYZ", "dc-ams", "dc-jnb", "dc-yyz", "dc-lun"],
    "role": ["region"] * 3 + ["dc"] * 4,
    "iata": ["LUN", "LHR", "YYZ", "AMS", "JNB", "YYZ", "LUN"],
})


def test_inflation_flags_the_inflated_pair_and_same_city_does_not_explode() -> None:
    loc = locations(PLACES)
    rtts = {
        ("ZM-LUN", "dc-jnb"): 25.0,    # 1,202 km, floor 12.0 ms: 2.1×
        ("ZM-LUN", "dc-ams"): 150.0,   # 7,860 km, floor 78.6 ms: 1.9×
        ("GB-LHR", "dc-ams"): 9.0,     # 370 km: floor clamped to 10 ms, 0.9×
        ("GB-LHR", "dc-jnb"): 160.0,   # 9,075 km: 1.8×
        ("GB-LHR", "dc-yyz"): 100.0,   # 5,707 km: 1.75×
        ("CA-YYZ", "dc-ams"): 120.0,   # 5,989 km: 2.0×
        ("CA-YYZ", "dc-yyz"): 2.0,     # same airport: floor 0 -> 10 ms, 0.2×, not 2/0
        ("CA-YYZ", "dc-jnb"): 700.0,   # 13,369 km, floor 133.7 ms: 5.2×, clearly inflated
        ("ZM-LUN", "dc-lun"): 180.0,   # same city, hauled to Europe and back: 18×
    }
    out = inflation(_measurements(rtts), loc).set_index(["region", "target"])
    yyz_jnb = row(out, ("CA-YYZ", "dc-jnb"))
    # smtp rows are not RTT floors: the minimum comes from ping (tcp is 1 ms more).
    assert yyz_jnb["rtt_min_ms"] == 700.0 and yyz_jnb["n"] == 2
    assert yyz_jnb["distance_km"] == pytest.approx(13369.1, abs=1)
    assert yyz_jnb["floor_ms"] == pytest.approx(133.69, abs=0.01)
    assert yyz_jnb["inflation"] == pytest.approx(700 / 133.69, rel=1e-3)
    same = row(out, ("CA-YYZ", "dc-yyz"))
    assert same["floor_ms"] == 0.0 and same["inflation"] == pytest.approx(0.2)
    # Typical inflation: median over the unclamped pairs (1.75 .. 5.2) ~ 2.0×.
    assert 1.8 < yyz_jnb["typical_inflation"] < 2.2
    flagged = set(out.index[out["detour_candidate"]])
    assert flagged == {("CA-YYZ", "dc-jnb"), ("ZM-LUN", "dc-lun")}


def test_inflation_all_alike_flags_nothing_and_unknown_place_is_nan() -> None:
    loc = locations(PLACES)
    rtts = {("GB-LHR", "dc-jnb"): 180.0, ("GB-LHR", "dc-yyz"): 114.0,
            ("CA-YYZ", "dc-ams"): 120.0, ("ZM-LUN", "dc-ams"): 158.0,
            ("XX-NOWHERE", "dc-ams"): 10.0}
    out = inflation(_measurements(rtts), loc).set_index(["region", "target"])
    assert not out["detour_candidate"].any()  # MAD ≈ 0 but every pair within 1.5× of typical
    assert math.isnan(number(out.loc[("XX-NOWHERE", "dc-ams"), "inflation"]))


# --------------------------------------------------------------------------- hop frames

# Hop = (address or None, rtt_min_ms, replies of 3, asn, org, city, country, lat, lon)
Hop = tuple[str | None, float | None, int, int | None, str | None, str | None, str | None,
            float | None, float | None]

LUN = ("Lusaka", "ZM", -15.3308, 28.4526)
JNB_ = ("Johannesburg", "ZA", *JNB)
CPT = ("Cape Town", "ZA", -33.9690, 18.5972)
LOS = ("Lagos", "NG", 6.5774, 3.3212)
LIS = ("Lisbon", "PT", 38.7813, -9.1359)
AMS_ = ("Amsterdam", "NL", *AMS)
LON = ("London", "GB", 51.47, -0.4543)


def hop(address: str | None, rtt: float | None, replies: int = 3, asn: int | None = None,
        org: str | None = None, place: tuple[Any, ...] = (None, None, None, None)) -> Hop:
    return (address, rtt, replies, asn, org, *place)


def trace_frame(tid: str, hops: Sequence[Hop | list[Hop]], *, region: str = "ZM-LUN",
                target: str = "dc-ams", at: datetime = T0, sent: int = 3) -> pd.DataFrame:
    rows = []
    for ttl, entry in enumerate(hops, start=1):
        responders = entry if isinstance(entry, list) else [entry]
        answered = sum(h[2] for h in responders if h[0] is not None)
        for h in responders:
            address, rtt, replies, asn, org, city, country, lat, lon = h
            rows.append({
                "id": tid, "region": region, "target": target, "started_at": at,
                "protocol": "icmp", "ttl": ttl, "address": address,
                "replies": replies if address is not None else 0, "sent": sent,
                "loss_ratio": 1 - answered / sent, "rtt_min_ms": rtt, "rtt_median_ms": rtt,
                "icmp_type": 11 if ttl < len(hops) else 0,
                "is_destination": ttl == len(hops) and address is not None,
                "asn": asn, "as_org": org, "country": country, "city": city, "lat": lat,
                "lon": lon})
    frame = pd.DataFrame(rows, columns=list(HOP_COLUMNS))
    frame["address"] = frame["address"].astype("string")
    frame["asn"] = frame["asn"].astype("Int64")
    return frame


def detour_path(lost_at_lis: int = 0, lost_after: int = 0, lis_rtt: float = 200.0) -> list[Hop]:
    """Lusaka -> Amsterdam the lab's way: JNB, CPT, LOS, then the congested LOS-LIS link."""
    return [
        hop("10.10.1.1", 2.0, 3, 64601, "Lusaka Access Net", LUN),
        hop("10.10.255.2", 26.0, 3, 64700, "Southern Transit", JNB_),
        hop("10.10.255.3", 40.0, 3, 64700, "Southern Transit", CPT),
        hop("10.10.255.5", 96.0, 3, 64710, "West Coast Cable", LOS),
        hop("10.10.255.9", lis_rtt, 3 - lost_at_lis, 64710, "West Coast Cable", LIS),
        hop("10.10.255.11", lis_rtt + 28, 3 - lost_after, 64800, "Euro Backbone", AMS_),
        hop("10.10.9.1", lis_rtt + 29, 3 - lost_after, 65001, "AMS Hosting", AMS_),
    ]


def one(summary: pd.DataFrame) -> pd.Series:
    assert len(summary) == 1
    return summary.iloc[0]


# --------------------------------------------------------------------------- path_summary

def test_first_jump_is_the_congested_segment_not_the_long_cable() -> None:
    loc = locations(pd.DataFrame({"name": ["ZM-LUN", "dc-ams"], "role": ["region", "dc"],
                                  "iata": ["LUN", "AMS"]}))
    for places in (loc, None):  # with and without the geographic correction of steps
        s = one(path_summary(trace_frame("t1", detour_path()), places))
        # Steps 2, 24, 14, 56, 104, 28, 1 ms: CPT->LOS (56 ms over a 4,788 km cable) is
        # explained by its length; LOS->LIS (104 ms over 4,290 km, floor 43 ms) is not.
        assert s["jump_ttl"] == 5
        assert (s["jump_address"], s["jump_asn"], s["jump_city"]) == (
            "10.10.255.9", 64710, "Lisbon")
        assert pd.isna(s["loss_ttl"])
    s = one(path_summary(trace_frame("t1", detour_path()), loc))
    assert s["jump_step_ms"] == pytest.approx(104 - rtt_floor_ms(
        great_circle_km(*LOS[2:], *LIS[2:])), abs=0.1)


def test_no_jump_on_a_smooth_path() -> None:
    path = [hop("10.0.0.1", 1.0), hop("10.0.0.2", 4.0), hop("10.0.0.3", 7.0),
            hop("10.0.0.4", 9.0)]
    assert pd.isna(one(path_summary(trace_frame("t", path)))["jump_ttl"])


def test_first_loss_persists_and_rate_limiting_router_is_skipped() -> None:
    path = detour_path(lost_at_lis=1, lost_after=1)
    # TTL 2 (Johannesburg) answers only one probe in three: ICMP rate limiting, since
    # every later hop answers fully until Lisbon.
    path[1] = hop("10.10.255.2", 26.0, 1, 64700, "Southern Transit", JNB_)
    s = one(path_summary(trace_frame("t", path)))
    assert s["loss_ttl"] == 5
    assert (s["loss_address"], s["loss_asn"], s["loss_as_org"], s["loss_city"],
            s["loss_country"]) == ("10.10.255.9", 64710, "West Coast Cable", "Lisbon", "PT")
    assert s["loss_ratio"] == pytest.approx(1 / 3)


def test_silent_router_is_not_loss_but_an_unreachable_tail_is() -> None:
    path = detour_path()
    path[2] = hop(None, None, 0)  # Cape Town never answers: a silent TTL, still a row
    s = one(path_summary(trace_frame("t", path)))
    assert pd.isna(s["loss_ttl"])
    assert s["responders"][2] == "*"
    dead = detour_path()[:4] + [hop(None, None, 0)] * 3
    s = one(path_summary(trace_frame("t", dead)))
    assert s["loss_ttl"] == 5 and pd.isna(s["loss_address"]) and not s["reached"]


def test_as_path_dedup_and_unknowns() -> None:
    path = detour_path()
    path[3] = hop("10.10.255.5", 96.0)  # no annotation: skipped, not a break
    s = one(path_summary(trace_frame("t", path)))
    assert s["as_path"] == (64601, 64700, 64710, 64800, 65001)
    assert s["countries"] == ("ZM", "ZA", "PT", "NL")


def test_continental_detour_african_path_through_europe() -> None:
    loc = locations(pd.DataFrame({"name": ["ZM-LUN", "dc-jnb", "dc-ams"],
                                  "role": ["region", "dc", "dc"],
                                  "iata": ["LUN", "JNB", "AMS"]}))
    # Lusaka -> Johannesburg via London (a made-up trombone).
    via_europe = [hop("10.1.0.1", 2.0, 3, 64601, "Lusaka Access Net", LUN),
                  hop("10.1.0.2", 180.0, 3, 64800, "Euro Backbone", LON),
                  hop("10.1.0.3", 330.0, 3, 64700, "Southern Transit", JNB_)]
    direct = [hop("10.1.0.1", 2.0, 3, 64601, "Lusaka Access Net", LUN),
              hop("10.1.0.3", 26.0, 3, 64700, "Southern Transit", JNB_)]
    frames = pd.concat([trace_frame("bad", via_europe, target="dc-jnb"),
                        trace_frame("good", direct, target="dc-jnb"),
                        trace_frame("ams", detour_path(), target="dc-ams")])
    out = path_summary(frames, loc).set_index("id")
    assert out.loc["bad", "continental_detour"]
    assert out.loc["bad", "continents"] == ("AF", "EU", "AF")
    assert not out.loc["good", "continental_detour"]
    # Africa -> Europe crosses continents by definition: not a detour.
    assert not out.loc["ams", "continental_detour"]
    # Without locations the continents come from the first and last located hops.
    assert path_summary(frames, None).set_index("id").loc["bad", "continental_detour"]


def test_geo_violation_hop_is_not_trusted() -> None:
    loc = locations(pd.DataFrame({"name": ["ZM-LUN", "dc-jnb"], "role": ["region", "dc"],
                                  "iata": ["LUN", "JNB"]}))
    # Hop 2 claims London 5 ms from Lusaka: 7,900 km needs at least 79 ms.  A database
    # error, so the path must not count as a detour through Europe.
    path = [hop("10.1.0.1", 2.0, 3, 64601, "Lusaka Access Net", LUN),
            hop("10.1.0.2", 5.0, 3, 64800, "Euro Backbone", LON),
            hop("10.1.0.3", 26.0, 3, 64700, "Southern Transit", JNB_)]
    s = one(path_summary(trace_frame("t", path, target="dc-jnb"), loc))
    assert s["geo_violation"] and s["geo_violation_ttls"] == (2,)
    assert s["continents"] == ("AF",) and not s["continental_detour"]
    # ... but Johannesburg at 26 ms (1,202 km needs 12 ms) is fine.
    assert 3 not in s["geo_violation_ttls"]


def test_load_balanced_ttl() -> None:
    path: list[Hop | list[Hop]] = [
        hop("10.0.0.1", 1.0),
        [hop("10.0.1.1", 5.0, 2, 1), hop("10.0.1.2", 4.0, 1, 2)],
        hop("10.0.0.3", 7.0),
    ]
    s = one(path_summary(trace_frame("t", path)))
    assert s["responders"] == ("10.0.0.1", "10.0.1.1|10.0.1.2", "10.0.0.3")
    assert s["as_path"] == (1,)  # the representative answers most


# --------------------------------------------------------------------------- aggregates

def campaign(n: int = 40, lossy: set[int] | None = None) -> pd.DataFrame:
    """n traces Lusaka -> Amsterdam; those in ``lossy`` lose one probe at Lisbon and after."""
    frames = []
    for i in range(n):
        bad = lossy is not None and i in lossy
        frames.append(trace_frame(f"t{i:02d}", detour_path(int(bad), int(bad),
                                                           lis_rtt=195.0 + i % 7),
                                  at=T0 + timedelta(minutes=i)))
    return pd.concat(frames, ignore_index=True)


def test_where_it_starts_pools_light_loss() -> None:
    hops = campaign(40, lossy={3, 11, 20, 31})
    # A rate-limiting router at TTL 2 in a few other traces must not be blamed.
    rl = hops["id"].isin(["t05", "t06"]) & (hops["ttl"] == 2)
    hops.loc[rl, "replies"] = 1
    found = where_it_starts(hops, "ZM-LUN", "dc-ams")
    assert found["traces"] == 40
    assert (found["jump_ttl"], found["jump_address"], found["jump_traces"]) == (
        5, "10.10.255.9", 40)
    assert (found["loss_ttl"], found["loss_address"], found["loss_asn"]) == (
        5, "10.10.255.9", 64710)
    assert (found["loss_lost"], found["loss_sent"], found["loss_traces"]) == (4, 120, 4)
    assert (found["loss_before_lost"], found["loss_before_sent"]) == (4, 480)
    assert "TTL 5, 10.10.255.9 (AS64710 West Coast Cable, Lisbon)" in found["loss_evidence"]
    assert "in 4 of 40 traces" in found["loss_evidence"]
    assert "in 40 of 40 traces" in found["jump_evidence"]
    assert pd.DataFrame([found]).shape[0] == 1


def test_where_it_starts_nothing() -> None:
    found = where_it_starts(campaign(3), "GB-LHR", "dc-ams")
    assert found["traces"] == 0 and found["jump_ttl"] is None and found["loss_ttl"] is None
    clean = where_it_starts(campaign(5), "ZM-LUN", "dc-ams")
    assert clean["loss_ttl"] is None and clean["loss_evidence"] is None


def test_path_changes() -> None:
    a = detour_path()
    b = detour_path()
    b[4] = hop("10.10.255.99", 200.0)  # another router at TTL 5
    silent = detour_path()
    silent[3] = hop(None, None, 0)  # a lost TTL is not a change
    frames = pd.concat([
        trace_frame("t1", a, at=T0), trace_frame("t2", silent, at=T0 + timedelta(minutes=1)),
        trace_frame("t3", a, at=T0 + timedelta(minutes=2)),
        trace_frame("t4", b, at=T0 + timedelta(minutes=3)),
        trace_frame("t5", b[:5], at=T0 + timedelta(minutes=4)),
        trace_frame("o1", a, region="GB-LHR", at=T0),
        trace_frame("o2", a, region="GB-LHR", at=T0 + timedelta(minutes=5)),
    ])
    out = path_changes(frames)
    assert list(out["id_after"]) == ["t4", "t5"]
    first = out.iloc[0]
    assert (first["id_before"], first["ttls"]) == ("t3", (5,))
    assert first["started_at"] == T0 + timedelta(minutes=3)
    assert first["before"][4] == "10.10.255.9" and first["after"][4] == "10.10.255.99"
    assert out.iloc[1]["ttls"] == (6, 7)  # the later trace stopped short


# --------------------------------------------------------------------------- the lab sample

SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"


def test_lab_sample_detour_found(tmp_path: Path) -> None:
    from netvantage.analysis.load import load
    from netvantage.annotate import GeoDatabases, annotate_records
    from netvantage.lab.geodb import write_lab_databases
    from netvantage.lab.topology import load_topology
    from netvantage.results import read_jsonl, write_jsonl

    asn_db, city_db = write_lab_databases(load_topology(), tmp_path)
    with GeoDatabases(asn_db, city_db) as dbs:
        records = annotate_records(read_jsonl(SAMPLE), dbs)
    annotated = tmp_path / "annotated.jsonl"
    write_jsonl(records, annotated)
    hops = load(annotated).hops
    loc = locations(ROOT / "data" / "locations" / "lab.csv")
    zm = where_it_starts(hops, "ZM-LUN", "dc-ams", loc)
    assert (zm["loss_address"], zm["loss_city"], zm["loss_asn"]) == (
        "10.10.255.9", "Lisbon", 64710)
    assert (zm["jump_address"], zm["jump_city"]) == ("10.10.255.9", "Lisbon")
    assert zm["jump_traces"] >= 0.8 * zm["traces"]
    assert zm["jump_step_ms"] > 40  # the Lagos-Lisbon queue, beyond the cable's own length
    # London -> Amsterdam is clean until the recorded degradation of that link.
    meta = json.loads(SAMPLE.with_name("lab-sample.meta.json").read_text())
    at = pd.Timestamp(meta["degradation"]["at"]) if meta["degradation"]["at"] else None
    before = hops if at is None else hops[hops["started_at"] < at]
    gb = where_it_starts(before, "GB-LHR", "dc-ams", loc)
    assert gb["traces"] > 0
    assert gb["loss_ttl"] is None and gb["jump_ttl"] is None
    if at is not None and (hops["started_at"] >= at).any():
        after = where_it_starts(hops[hops["started_at"] >= at + pd.Timedelta(seconds=30)],
                                "GB-LHR", "dc-ams", loc)
        assert after["jump_city"] == "Amsterdam"  # the London-Amsterdam link's new delay


def _where_reference(hops: pd.DataFrame, region: str, target: str,
                     loc: pd.DataFrame | None) -> dict[str, Any]:
    """where_it_starts as it was computed pair by pair: the pair's hops filtered out,
    path_summary's per-trace jumps counted, the pooled loss by TTL (the reference for the
    one-pass path_evidence)."""
    from collections import Counter

    from netvantage.analysis.paths import _first_loss, _per_ttl

    sel = hops[(hops["region"].astype("string") == region)
               & (hops["target"].astype("string") == target)]
    out: dict[str, Any] = {"traces": int(sel["id"].nunique())}
    summary = path_summary(sel, loc)
    found = summary[summary["jump_ttl"].notna()]
    keys = Counter((int(r["jump_ttl"]), r["jump_address"]) for _, r in found.iterrows())
    out.update(jump_ttl=None, jump_address=None, jump_traces=0, jump_step_ms=math.nan)
    if keys:
        (ttl, address), count = max(keys.items(), key=lambda kv: (kv[1], -kv[0][0]))
        these = found[(found["jump_ttl"] == ttl) & (found["jump_address"].astype("string")
                                                    == address)]
        out.update(jump_ttl=ttl, jump_address=address, jump_traces=count,
                   jump_step_ms=float(these["jump_step_ms"].median()))
    out.update(loss_ttl=None, loss_address=None, loss_lost=0, loss_sent=0, loss_traces=0)
    per = _per_ttl(sel)
    per["lost"] = (per["sent"] - per["replies"]).clip(lower=0)
    pooled = per.groupby("ttl", sort=True).agg(lost=("lost", "sum"), sent=("sent", "sum"),
                                               traces=("lost", lambda s: int((s > 0).sum())))
    ratios = [float(lo / se) if se > 0 else None
              for lo, se in zip(pooled["lost"], pooled["sent"], strict=True)]
    first = _first_loss(ratios, 0.5, 0.5)
    if first is not None:
        ttl = int(pooled.index[first])
        answered = per[(per["ttl"] == ttl) & per["address"].notna()]
        out.update(loss_ttl=ttl, loss_lost=int(pooled.iloc[first]["lost"]),
                   loss_sent=int(pooled.iloc[first]["sent"]),
                   loss_traces=int(pooled.iloc[first]["traces"]),
                   loss_address=answered["address"].mode().iloc[0] if len(answered) else None)
    return out


@pytest.mark.parametrize("shaken", [False, True])
def test_path_evidence_equals_the_pair_by_pair_reference(shaken: bool) -> None:
    from netvantage.analysis.load import load
    from netvantage.analysis.paths import path_evidence

    hops = load(SAMPLE).hops
    if shaken:
        # Silent TTLs, extra lost probes, RTT noise and plain (object) keys: ties and gaps
        # the recorded traces do not have.
        rng = np.random.default_rng(3)
        hops = hops[rng.random(len(hops)) > 0.05].copy()
        hops["rtt_min_ms"] = hops["rtt_min_ms"] * rng.uniform(0.7, 1.6, len(hops))
        hops["replies"] = np.maximum(0, hops["replies"] - rng.integers(0, 2, len(hops)))
        hops["region"] = hops["region"].astype(object)
        hops["target"] = hops["target"].astype(object)
    # With the places (steps corrected by distance, the geography check) on the recorded
    # traces, without them on the shaken ones; every pair of the lab sample is compared.
    places = None if shaken else locations(ROOT / "data" / "locations" / "lab.csv")
    evidence = path_evidence(hops, places)
    assert len(evidence) == 12
    for found in evidence.to_dict("records"):
        want = _where_reference(hops, found["region"], found["target"], places)
        for key, value in want.items():
            got = found[key]
            if isinstance(value, float):
                assert got == pytest.approx(value, rel=1e-9, nan_ok=True), key
            else:
                assert (None if pd.isna(got) else got) == value, (found["region"],
                                                                  found["target"], key)
    assert (evidence["jump_traces"] > 0).any() and (evidence["loss_traces"] > 0).any()
