"""Detours (analysis.detours): hand-computed small tables, planted truth, the lab campaign."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cells import row
from netvantage import analysis as nva
from netvantage.analysis.detours import detours, trace_detours, trace_sources
from netvantage.analysis.frames import HOP_COLUMNS
from netvantage.analysis.geo import locations

ROOT = Path(__file__).resolve().parents[1]

# city: (country, lat, lon)
PLACE = {
    "Lusaka": ("ZM", -15.3308, 28.4526), "Johannesburg": ("ZA", -26.1392, 28.2460),
    "Cape Town": ("ZA", -33.9690, 18.5972), "London": ("GB", 51.47, -0.4543),
    "Amsterdam": ("NL", 52.3086, 4.7639), "Lagos": ("NG", 6.5774, 3.3212),
    "Abuja": ("NG", 9.0065, 7.2632), "Cotonou": ("BJ", 6.3573, 2.3844),
}


def bench_module(name: str) -> ModuleType:
    """Import ``bench/NAME.py`` (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def trace(tid: str, path: list[tuple[str, float]], *, region: str = "ZM",
          target: str = "dc-jnb") -> pd.DataFrame:
    """A trace through (city, rtt_min_ms) hops; the last one is the destination."""
    rows = []
    for ttl, (city, rtt) in enumerate(path, start=1):
        country, lat, lon = PLACE[city]
        rows.append({"id": tid, "region": region, "target": target,
                     "started_at": pd.Timestamp("2026-01-01", tz="UTC"), "protocol": "icmp",
                     "ttl": ttl, "address": f"10.0.{ttl}.1", "replies": 3, "sent": 3,
                     "loss_ratio": 0.0, "rtt_min_ms": rtt, "rtt_median_ms": rtt,
                     "icmp_type": 0 if ttl == len(path) else 11,
                     "is_destination": ttl == len(path), "asn": 64500 + ttl,
                     "as_org": f"Net {ttl}", "country": country, "city": city, "lat": lat,
                     "lon": lon})
    frame = pd.DataFrame(rows, columns=list(HOP_COLUMNS))
    frame["address"] = frame["address"].astype("string")
    frame["asn"] = frame["asn"].astype("Int64")
    return frame


def places(*rows: tuple[str, str, str]) -> pd.DataFrame:
    """Locations from (name, role, city) triples."""
    return locations(pd.DataFrame([
        {"name": n, "role": role, "lat": PLACE[c][1], "lon": PLACE[c][2], "country": PLACE[c][0]}
        for n, role, c in rows]))


def agents(**by_id: str) -> pd.DataFrame:
    return pd.DataFrame({"id": list(by_id), "agent": list(by_id.values())})


def by_id(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(r["id"]): {str(k): v for k, v in r.items()} for r in frame.to_dict("records")}


LOC = places(("ZM", "region", "Lusaka"), ("dc-jnb", "dc", "Johannesburg"),
             ("dc-ams", "dc", "Amsterdam"))


def test_continental_detour_named_at_the_exit_hop() -> None:
    # Lusaka -> London -> Johannesburg: London is 7,939 km from Lusaka, floor 79.4 ms, seen
    # at 180 ms (believable); then Johannesburg at 330 ms.  Africa, Europe, Africa.
    hops = pd.concat([trace("bad", [("Lusaka", 2.0), ("London", 180.0),
                                    ("Johannesburg", 330.0)]),
                      trace("good", [("Lusaka", 2.0), ("Johannesburg", 26.0)])])
    out = by_id(trace_detours(hops, LOC))
    bad, good = out["bad"], out["good"]
    assert bad["countries"] == ("ZM", "GB", "ZA") and bad["continents"] == ("AF", "EU", "AF")
    assert bad["exits"] == 1 and bad["continental_detour"] and bad["kind"] == "continent"
    assert (bad["hop_ttl"], bad["hop_address"], bad["hop_city"], bad["hop_country"],
            bad["hop_asn"]) == (2, "10.0.2.1", "London", "GB", 64502)
    # Proven path: 7,939 + 9,075 = 17,013 km against 1,202 km direct.
    assert bad["path_km"] == pytest.approx(7938.5 + 9074.9, abs=1)
    assert bad["direct_km"] == pytest.approx(1202.0, abs=1)
    # Inflation: 330 ms over the 12.02 ms floor = 27.5; the direct trace 26 / 12.02 = 2.16.
    assert bad["inflation"] == pytest.approx(330 / 12.02, rel=1e-3)
    assert good["inflation"] == pytest.approx(26 / 12.02, rel=1e-3)
    assert not good["detoured"] and good["exits"] == 0 and pd.isna(good["hop_ttl"])


def test_light_test_from_the_probe_not_the_region_point() -> None:
    # A Lagos probe (region "NG" whose point is Abuja); a hop in Cotonou at 2 ms, with a
    # 100 km tolerance: bound 2/2 × 200 + 100 = 300 km.  From Lagos it is 106 km away
    # (believed); from Abuja 613 km (it would be dropped).
    hops = trace("t", [("Lagos", 1.0), ("Cotonou", 2.0), ("Lagos", 4.0)], region="NG",
                 target="dc-los")
    loc = places(("NG", "region", "Abuja"), ("probe-7", "region", "Lagos"),
                 ("dc-los", "dc", "Lagos"))
    with_probe = by_id(trace_detours(hops, loc, agents(t="probe-7"), tolerance_km=100))["t"]
    assert with_probe["src_from"] == "probe" and with_probe["dropped_hops"] == 0
    assert with_probe["countries"] == ("NG", "BJ", "NG")
    region_only = by_id(trace_detours(hops, loc, None, tolerance_km=100))["t"]
    assert region_only["src_from"] == "region"
    assert region_only["dropped_hops"] == 1 and region_only["dropped_ttls"] == (2,)
    assert region_only["countries"] == ("NG",)
    src = trace_sources(agents(t="probe-7"), hops, loc)
    assert (src.loc["t", "src_lat"], src.loc["t", "src_country"]) == (6.5774, "NG")


def test_own_country_is_never_impossible_but_abroad_is() -> None:
    # A Cape Town probe known only by its region "ZA" at Johannesburg's point: its own
    # Cape Town hop at 2 ms is 1,272 km from that point (bound 200 + 500 = 700 km) but in
    # the probe's country: kept for the country, its coordinates unused for distances.
    loc = places(("ZA", "region", "Johannesburg"), ("dc-ams", "dc", "Amsterdam"))
    home = trace("home", [("Cape Town", 2.0), ("Johannesburg", 20.0)], region="ZA",
                 target="dc-ams")
    abroad = trace("abroad", [("Cape Town", 2.0), ("London", 3.0), ("Johannesburg", 20.0)],
                   region="ZA", target="dc-ams")
    out = by_id(trace_detours(pd.concat([home, abroad]), loc))
    assert out["home"]["dropped_hops"] == 0 and out["home"]["country_only_hops"] == 1
    assert out["home"]["countries"] == ("ZA",)
    # London at 3 ms is 9,075 km away: impossible, dropped, never claimed.
    assert out["abroad"]["dropped_ttls"] == (2,) and out["abroad"]["countries"] == ("ZA",)
    assert not out["abroad"]["detoured"] and out["abroad"]["exits"] == 0


def test_stretch_detour_and_the_hop_where_time_goes() -> None:
    # Lusaka -> Cape Town -> Amsterdam: 2,296 + 9,688 = 11,984 km proven, 7,860 direct:
    # stretch 1.525 >= 1.5 and 4,124 km extra >= 1,000: a detour.  Steps beyond each
    # leg's floor: Lusaka 2 - 0 = 2; Cape Town 40 - 2 - 22.96 = 15.0; Amsterdam
    # 250 - 40 - 96.9 = 113.1 ms: the offending hop is Amsterdam's.
    hops = trace("s", [("Lusaka", 2.0), ("Cape Town", 40.0), ("Amsterdam", 250.0)],
                 target="dc-ams")
    s = by_id(trace_detours(hops, LOC))["s"]
    assert s["path_km"] == pytest.approx(2296.2 + 9687.5, abs=1)
    assert s["stretch"] == pytest.approx((2296.2 + 9687.5) / 7859.9, rel=1e-4)
    assert s["stretch_detour"] and s["kind"] == "stretch" and not s["continental_detour"]
    assert s["hop_city"] == "Amsterdam" and s["via_city"] == "Cape Town"
    assert s["hop_excess_ms"] == pytest.approx(250 - 40 - 96.875, abs=0.01)
    # The same path with a stricter rule (stretch 1.6) is not a detour.
    assert not by_id(trace_detours(hops, LOC, stretch_min=1.6))["s"]["detoured"]


def test_region_and_pair_summary_by_hand() -> None:
    # Region ZM: 2 detoured of 4 traces towards dc-jnb.  Inflations: detoured 330/12.02
    # = 27.45 and 300/12.02 = 24.96, median 26.21; direct 26/12.02 = 2.163 and
    # 30/12.02 = 2.496, median 2.329.
    via = [("Lusaka", 2.0), ("London", 180.0)]
    hops = pd.concat([trace("d1", [*via, ("Johannesburg", 330.0)]),
                      trace("d2", [*via, ("Johannesburg", 300.0)]),
                      trace("k1", [("Lusaka", 2.0), ("Johannesburg", 26.0)]),
                      trace("k2", [("Lusaka", 2.0), ("Johannesburg", 30.0)])])
    d = detours(hops, LOC)
    r = row(d.by_region.set_index("region"), "ZM")
    assert (r["traces"], r["detoured"], r["share"], r["continental"]) == (4, 2, 0.5, 2)
    assert r["countries"] == "ZA,ZM,GB"  # by traces crossing them: 4, 4, 2
    assert r["countries_median"] == 2.5  # 3, 3, 2, 2 countries per trace
    floor = 2 * 1202.03 / 200
    assert r["inflation_detoured"] == pytest.approx((330 + 300) / 2 / floor, rel=1e-3)
    assert r["inflation_direct"] == pytest.approx((26 + 30) / 2 / floor, rel=1e-3)
    p = row(d.by_pair.set_index(["region", "target"]), ("ZM", "dc-jnb"))
    assert (p["hop_city"], p["hop_traces"], p["kind"]) == ("London", 2, "continent")
    assert "2 of 4 traces leave the continent and come back" in p["evidence"]
    assert "TTL 2, 10.0.2.1 (AS64502 Net 2, London, GB)" in p["evidence"]
    as_json = json.loads(json.dumps(d.to_dict()))
    assert as_json["detoured"] == 2 and as_json["by_pair"][0]["hop_city"] == "London"
    assert any("ZM -> dc-jnb" in line for line in d.text_lines())


def test_empty_hops() -> None:
    d = detours(trace("x", [("Lusaka", 1.0)]).iloc[0:0], LOC)
    assert d.detoured == 0 and d.to_dict()["traces"] == 0
    assert d.text_lines()[-1] == "  no traces"


@pytest.mark.parametrize("seed", [1, 2, 3, 7])
def test_planted_detours_found_and_healthy_not(seed: int) -> None:
    planted = bench_module("planted_detours")
    p = planted.generate(seed)
    out = trace_detours(p.hops, p.locations, p.measurements)
    flagged = set(out.loc[out["detoured"], "id"].astype(str))
    assert p.detoured and flagged == set(p.detoured)
    dropped = {(str(tid), int(ttl)) for tid, ttls in zip(out["id"], out["dropped_ttls"],
                                                         strict=True) for ttl in ttls}
    assert p.mislocated and dropped == set(p.mislocated)
    # Own-country hops at the country's centre were tested and kept, not dropped.
    assert out["country_only_hops"].sum() > 0
    # Without the light test the mislocated hops (in Europe by the database) would have
    # made the traces towards African data centres continental detours.
    blind = trace_detours(p.hops, p.locations, p.measurements, tolerance_km=1e6)
    claimed = set(blind.loc[blind["detoured"], "id"].astype(str))
    target = dict(zip(p.measurements["id"], p.measurements["target"], strict=True))
    african = {tid for tid, _ in p.mislocated if target[tid] != "dc-ams"}
    assert african and african <= claimed
    rows = planted.evaluate(seed)
    assert [r["detector"] for r in rows] == ["detoured trace", "mislocated hop dropped"]
    assert all(r["true_positives"] == r["planted"] == r["flagged"] for r in rows)


def test_lab_campaign_detour_named_at_lisbon() -> None:
    campaign = nva.load(ROOT / "data" / "campaigns" / "lab-sample.jsonl")
    loc = nva.locations(ROOT / "data" / "locations" / "lab.csv")
    d = detours(campaign.hops, loc, campaign.measurements)
    pairs = d.by_pair.set_index(["region", "target"])
    zm = row(pairs, ("ZM-LUN", "dc-ams"))
    assert zm["detoured"] == zm["traces"] > 0
    assert (zm["hop_address"], zm["hop_asn"], zm["hop_city"], zm["hop_country"]) == (
        "10.10.255.9", 64710, "Lisbon", "PT")
    assert "Lisbon" in zm["evidence"] and zm["via_city"] == "Cape Town"
    # Every other pair goes the direct way (the healthy ones are not claimed).
    others = pairs.drop(index=("ZM-LUN", "dc-ams"))
    assert (others["detoured"] == 0).all()
    assert d.to_dict()["dropped_hops"] == 0
    region = row(d.by_region.set_index("region"), "ZM-LUN")
    assert region["inflation_detoured"] > region["inflation_direct"]


def test_best_row_per_trace_is_the_first_largest_key() -> None:
    # The hop a detour is named by: per trace its row with the largest key, the first of
    # equal ones, the first row when every key is NaN, -1 for a trace without rows.
    from netvantage.analysis.detours import _best

    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        ids = np.sort(rng.integers(0, n, size=int(rng.integers(0, 40))))
        key = rng.integers(-2, 3, size=len(ids)).astype(float)
        key[rng.random(len(ids)) < 0.3] = np.nan
        key[rng.random(len(ids)) < 0.1] = -np.inf
        want = []
        for i in range(n):
            rows = np.flatnonzero(ids == i)
            finite = [r for r in rows if not np.isnan(key[r])]
            want.append(-1 if not len(rows) else rows[0] if not finite
                        else max(finite, key=lambda r: (key[r], -r)))
        assert _best(ids, key, n).tolist() == want
