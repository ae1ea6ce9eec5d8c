"""Physics as a data check: impossible measurements, their causes, inflation as a result."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from conftest import invoke_cli
from netvantage import analysis as nva
from netvantage.analysis.geo import (
    EARTH_RADIUS_KM,
    FIBRE_FAST_KM_PER_MS,
    FIBRE_KM_PER_MS,
    VACUUM_KM_PER_MS,
    locations,
    rtt_floor_ms,
)
from netvantage.analysis.physics import FIBRE, POSSIBLE, VACUUM, bound_ms, check

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
LOCATIONS = ROOT / "data" / "locations" / "lab.csv"
AFRICA = {"ZM-LUN": 0.45, "ZA-JNB": 0.45, "GB-LHR": 0.1}
KM_PER_DEGREE = EARTH_RADIUS_KM * math.pi / 180  # along the equator


def bench_module(name: str) -> ModuleType:
    """Import ``bench/NAME.py`` (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def frames(pairs: list[tuple[str, str, float]], places: list[tuple[str, str, float, float, str]],
           agents: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Measurements (one ping per pair) and a locations table (name, role, lat, lon, country)."""
    m = pd.DataFrame([{"kind": "ping", "region": r, "agent": (agents or {}).get(r, r),
                       "target": t, "rtt_min_ms": rtt} for r, t, rtt in pairs])
    loc = locations(pd.DataFrame([{"name": n, "role": role, "lat": lat, "lon": lon,
                                   "country": c} for n, role, lat, lon, c in places]))
    return m, loc


# --------------------------------------------------------------------------- hand tables


def test_the_constants_and_two_cities_1000_km_apart() -> None:
    assert FIBRE_KM_PER_MS == 200.0
    assert pytest.approx(204.218, abs=1e-3) == FIBRE_FAST_KM_PER_MS  # 299.792458 / 1.468
    assert VACUUM_KM_PER_MS == 299.792458
    # The inflation floor: 2 × 1000 km / 200 km/ms = 10 ms (1 ms per 100 km).
    assert rtt_floor_ms(1000.0) == pytest.approx(10.0)
    # The impossibility bounds take 0.5 % and 50 km off: 1000 × 0.995 − 50 = 945 km.
    assert bound_ms(1000.0, FIBRE_FAST_KM_PER_MS) == pytest.approx(2 * 945 / 204.218, abs=1e-3)
    assert bound_ms(1000.0, FIBRE_FAST_KM_PER_MS) == pytest.approx(9.2548, abs=1e-3)
    assert bound_ms(1000.0, VACUUM_KM_PER_MS) == pytest.approx(6.3044, abs=1e-3)
    assert bound_ms(40.0, FIBRE_FAST_KM_PER_MS) == 0.0  # within the slack: nothing is too fast


def test_hand_table_of_one_thousand_km() -> None:
    lon = 1000.0 / KM_PER_DEGREE  # 1000 km east along the equator
    places = [("A", "region", 0.0, 0.0, "GA"), ("B", "region", 0.0, 0.0, "GA"),
              ("C", "region", 0.0, 0.0, "GA"), ("D", "region", 0.0, 0.0, "GA"),
              ("X", "dc", 0.0, lon, "GA")]
    #          RTT    fibre bound 9.255   vacuum bound 6.304   status
    # A->X     9.0    below                above                impossible (fibre)
    # B->X     6.0    below                below                impossible (vacuum)
    # C->X     9.3    above                above                possible
    # D->X     9.8    above (but under the 10 ms inflation floor) possible
    m, loc = frames([("A", "X", 9.0), ("B", "X", 6.0), ("C", "X", 9.3), ("D", "X", 9.8)],
                    places)
    p = check(m, loc).pairs.set_index("region")
    assert p["distance_km"].tolist() == pytest.approx([1000.0] * 4)
    assert p.loc["A", "status"] == FIBRE
    assert p.loc["B", "status"] == VACUUM
    assert p.loc["C", "status"] == POSSIBLE
    assert p.loc["D", "status"] == POSSIBLE
    assert p.loc["A", "shortfall_ms"] == pytest.approx(9.2548 - 9.0, abs=1e-3)
    assert p.loc["D", "inflation"] == pytest.approx(0.98)  # 9.8 / 10
    # Two regions below the floor to X, each to its only target: X's location is suspect.
    assert p.loc["A", "cause"] == "location of the target"  # two regions below the floor to X


def test_inflation_medians_hand_table() -> None:
    one, two = 1000.0 / KM_PER_DEGREE, 2000.0 / KM_PER_DEGREE
    places = [("EU1", "region", 0.0, 0.0, "FR"), ("AF1", "region", 0.0, 0.0, "GA"),
              ("dc", "dc", 0.0, two, "GA"), ("near", "dc", 0.0, one, "GA"),
              ("here", "dc", 0.0, 0.5, "GA")]
    #           floor (200 km/ms)   RTT   inflation
    # EU1->dc   20 ms                30    1.5
    # AF1->dc   20 ms                40    2.0
    # AF1->near 10 ms                30    3.0
    # AF1->here 0.56 ms (clamped)    5     left out of the medians
    m, loc = frames([("EU1", "dc", 30.0), ("AF1", "dc", 40.0), ("AF1", "near", 30.0),
                     ("AF1", "here", 5.0)], places)
    ph = check(m, loc)
    assert ph.median_inflation == pytest.approx(2.0)  # median of 1.5, 2.0, 3.0
    cont = ph.continents.set_index(["region_continent", "target_continent"])
    assert cont.loc[("AF", "AF"), "n"] == 2
    assert cont.loc[("AF", "AF"), "median"] == pytest.approx(2.5)
    assert cont.loc[("EU", "AF"), "median"] == pytest.approx(1.5)
    d = ph.to_dict()["inflation"]
    assert d["median"] == 2.0 and d["pairs_used"] == 3 and d["left_out"]["short"] == 1
    assert json.loads(json.dumps(ph.to_dict())) == ph.to_dict()  # JSON types only


def test_probe_coordinates_win_over_the_region_point() -> None:
    # Region ZA's point is Johannesburg; its probe is in Cape Town, next to the target.
    places = [("ZA", "region", -26.14, 28.25, "ZA"), ("probe-cpt", "region", -33.97, 18.60, "ZA"),
              ("ZB", "region", -26.14, 28.25, "ZA"), ("dc-cpt", "dc", -33.97, 18.60, "ZA")]
    m, loc = frames([("ZA", "dc-cpt", 2.0), ("ZB", "dc-cpt", 2.0)], places,
                    agents={"ZA": "probe-cpt", "ZB": "probe-unknown"})
    p = check(m, loc).pairs.set_index("region")
    assert p.loc["ZA", "status"] == POSSIBLE and bool(p.loc["ZA", "explained_by_probe"])
    assert p.loc["ZA", "source"] == "probe probe-cpt"
    # No coordinates for ZB's probe: the region point decides, ~1,270 km from Cape Town.
    assert p.loc["ZB", "status"] == VACUUM and p.loc["ZB", "source"] == "region point"
    assert "ZB's region point" in str(p.loc["ZB", "why"])


def test_anycast_target_from_four_continents() -> None:
    places = [("R-AMS", "region", 52.31, 4.76, "NL"), ("R-SIN", "region", 1.36, 103.99, "SG"),
              ("R-SYD", "region", -33.95, 151.18, "AU"), ("R-GRU", "region", -23.43, -46.47, "BR"),
              ("R-IAD", "region", 38.94, -77.46, "US"), ("any", "dc", 38.94, -77.46, "US"),
              ("dc-fra", "dc", 50.03, 8.57, "DE")]
    pairs = [(r, "any", 3.0) for r in ("R-AMS", "R-SIN", "R-SYD", "R-GRU", "R-IAD")]
    pairs += [("R-AMS", "dc-fra", 12.0), ("R-SIN", "dc-fra", 180.0), ("R-SYD", "dc-fra", 280.0),
              ("R-GRU", "dc-fra", 200.0), ("R-IAD", "dc-fra", 95.0)]
    m, loc = frames(pairs, places)
    ph = check(m, loc)
    assert ph.anycast == ("any",)
    bad = ph.impossible
    assert set(bad["target"]) == {"any"} and len(bad) == 4  # R-IAD is next to it
    assert set(bad["cause"]) == {"anycast target"}
    assert "no single place" in str(bad["why"].iloc[0])


# --------------------------------------------------------------------------- planted truth


@pytest.mark.parametrize("seed", [1, 7])
def test_planted_impossible_pairs_are_found_and_healthy_ones_not(seed: int) -> None:
    planted = bench_module("planted_physics")
    p = planted.make(seed)
    ph = check(p.measurements, p.locations)
    pairs = ph.pairs
    flagged = set(zip(ph.impossible["region"], ph.impossible["target"], strict=True))
    assert flagged == set(p.fibre)
    vac = pairs[pairs["status"] == VACUUM]
    assert set(zip(vac["region"], vac["target"], strict=True)) == set(p.vacuum)
    assert set(ph.anycast) == set(p.anycast)
    healthy = pairs[~pairs["region"].isin(list(planted.BAD_REGIONS))
                    & ~pairs["target"].isin([*planted.BAD_TARGETS, planted.ANYCAST])]
    assert len(healthy) > 150 and (healthy["status"] == POSSIBLE).all()
    rows = {r["detector"]: r for r in planted.evaluate(seed)}
    for name in ("impossible (fibre)", "impossible (vacuum)", "anycast suspected"):
        assert rows[name]["planted"] > 0
        assert rows[name]["true_positives"] == rows[name]["planted"] == rows[name]["flagged"]
    cause = rows["cause: target's location"]
    assert cause["true_positives"] == cause["flagged"] == cause["planted"] > 0


# --------------------------------------------------------------------------- in analyse()


@pytest.fixture(scope="module")
def moved() -> pd.DataFrame:
    """The lab's places with GB-LHR's point put in Sydney: its pairs become impossible."""
    loc = nva.locations(LOCATIONS)
    loc.loc[loc["name"] == "GB-LHR", ["lat", "lon"]] = [-33.95, 151.18]
    return loc


def test_analyse_leaves_impossible_pairs_out_of_the_ranking(moved: pd.DataFrame) -> None:
    campaign = nva.load(SAMPLE)
    result = nva.analyse(campaign, weights=AFRICA, locations=moved, n_boot=50)
    assert result.physics is not None
    bad = result.physics.impossible
    assert set(zip(bad["region"], bad["target"], strict=True)) == {
        ("GB-LHR", "dc-ams"), ("GB-LHR", "dc-yyz")}
    assert set(bad["cause"]) == {"location of the region"}
    bd = result.ranking.breakdown
    gb = bd[bd["region"] == "GB-LHR"]
    assert not ((gb["target"] == "dc-ams") & (gb["records"] > 0)).any()
    assert any("left out of the ranking" in n and "GB-LHR->dc-ams" in n for n in result.notes)
    text = result.to_text()
    assert "Impossible measurements: 2 of 12 located pairs" in text
    assert "excluded from the ranking" in text
    d = result.to_dict()
    assert d["impossible"]["fibre"] == 2 and d["impossible"]["excluded_from_ranking"]
    assert d["inflation"]["median"] is not None
    assert result.winner == "dc-jnb"  # the lab's answer for an African mix stands

    kept = nva.analyse(campaign, weights=AFRICA, locations=moved, n_boot=50,
                       keep_impossible=True)
    kb = kept.ranking.breakdown
    assert ((kb["region"] == "GB-LHR") & (kb["target"] == "dc-ams") & (kb["records"] > 0)).any()
    assert kept.to_dict()["impossible"]["excluded_from_ranking"] is False
    assert "kept in the ranking" in kept.to_text()


def test_lab_campaign_has_no_impossible_pair() -> None:
    result = nva.analyse(nva.load(SAMPLE), weights=AFRICA, locations=nva.locations(LOCATIONS),
                         n_boot=50)
    assert result.physics is not None and result.physics.impossible.empty
    assert result.physics.median_inflation == pytest.approx(1.775, abs=0.01)


def test_analyse_json_keys_with_and_without_locations(tmp_path: Path,
                                                      moved: pd.DataFrame) -> None:
    csv = tmp_path / "moved.csv"
    moved.to_csv(csv, index=False)
    proc = invoke_cli("analyse", str(SAMPLE), "--locations", str(csv), "--format", "json",
                      timeout=300)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    assert out["impossible"]["fibre"] == 2 and out["impossible"]["excluded_from_ranking"]
    assert {p["cause"] for p in out["impossible"]["pairs"]} == {"location of the region"}
    assert out["inflation"]["per_continent_pair"]
    proc = invoke_cli("analyse", str(SAMPLE), "--locations", str(csv), "--keep-impossible",
                      timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "kept in the ranking (--keep-impossible)" in proc.stdout
    proc = invoke_cli("analyse", str(SAMPLE), "--format", "json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert "skipped" in out["impossible"] and out["inflation"]["median"] is None
