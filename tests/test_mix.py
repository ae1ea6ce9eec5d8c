"""The client mix: weights by group, winners under named mixes, exact flip points."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from conftest import invoke_cli
from netvantage import analysis as nva
from netvantage.analysis.mix import (
    Costs,
    MixError,
    continuum,
    nearest_flip,
    region_places,
    resolve_weights,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
LOCATIONS = ROOT / "data" / "locations" / "lab.csv"


def _bench(name: str) -> ModuleType:
    """A bench/ module by name (bench/ is no package: loaded from its file)."""
    path = ROOT / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


planted = _bench("planted_mix")

# Two regions, two sites; costs in ms-equivalents (regions × sites, sorted names).
#            ams    jnb
#   AF      200     30
#   EU       20    180
# From EU=1 towards AF=1: 20 + 180 t = 180 - 150 t  →  t = 160 / 330.
HAND = Costs(["AF", "EU"], ["ams", "jnb"], np.array([[200.0, 30.0], [20.0, 180.0]]),
             np.ones((2, 2), dtype=bool))


def test_flip_along_the_line_between_two_mixes_is_exact() -> None:
    s = continuum(HAND, {"EU": 1.0}, {"AF": 1.0}, to="africa")
    assert s.flip_at == pytest.approx(160 / 330, abs=1e-12)
    assert s.flip_to == "jnb"
    assert [seg.winner for seg in s.segments] == ["ams", "jnb"]
    assert s.weights_at_flip["AF"] == pytest.approx(160 / 330)
    # Between two mixes that both favour ams there is no flip.
    assert continuum(HAND, {"EU": 1.0}, {"EU": 0.9, "AF": 0.1}).flip_at is None


def test_smallest_change_moves_weight_from_the_cheapest_region_to_the_dearest() -> None:
    # w0 = EU 0.8, AF 0.2: ams 0.8×20 + 0.2×200 = 56, jnb 0.8×180 + 0.2×30 = 150; the gap
    # of 94 closes by 170 + 160 = 330 per unit moved from EU to AF: 94 / 330, which puts AF
    # at 0.2 + 94/330 = 160/330, the flip point of the line above.
    near = nearest_flip(HAND, {"EU": 0.8, "AF": 0.2}, "ams")
    assert near is not None and near.challenger == "jnb"
    assert near.distance == pytest.approx(94 / 330, abs=1e-12)
    assert [(m.source, m.dest) for m in near.moves] == [("EU", "AF")]


def test_smallest_change_takes_several_sources_when_one_is_too_small() -> None:
    # Three regions; a wins with w0 = X 0.1, Y 0.1, Z 0.8.  d = cost_a - cost_b:
    # X -10, Y -5, Z -1 (a cheaper everywhere it has weight), W +20 (b cheaper), W empty.
    # Gap: 0.1×10 + 0.1×5 + 0.8×1 = 2.3.  Moving to W: from X gains 30/unit (0.1 → 3.0 ≥ 2.3):
    # 2.3 / 30 from X alone.  Make X's weight too small: X 0.05, Y 0.15, Z 0.8 → gap
    # 0.5 + 0.75 + 0.8 = 2.05; X gives 0.05 × 30 = 1.5, then Y: 0.55 / 25 = 0.022.
    costs = Costs(["W", "X", "Y", "Z"], ["a", "b"],
                  np.array([[30.0, 10.0], [0.0, 10.0], [5.0, 10.0], [9.0, 10.0]]),
                  np.ones((4, 2), dtype=bool))
    near = nearest_flip(costs, {"X": 0.05, "Y": 0.15, "Z": 0.8}, "a")
    assert near is not None
    assert near.distance == pytest.approx(0.05 + 0.55 / 25, abs=1e-12)
    assert [(m.source, m.dest, round(m.share, 6)) for m in near.moves] == [
        ("X", "W", 0.05), ("Y", "W", 0.022)]


def _places() -> pd.DataFrame:
    return nva.locations(pd.DataFrame([
        {"name": "GB-LHR", "role": "region", "lat": 51.5, "lon": -0.45, "country": "GB"},
        {"name": "paris", "role": "region", "lat": 48.9, "lon": 2.35, "country": "FR"},
        {"name": "ZA-JNB", "role": "region", "lat": -26.1, "lon": 28.2, "country": "ZA"},
        {"name": "ZA-CPT", "role": "region", "lat": -34.0, "lon": 18.6, "country": "ZA"},
        {"name": "ZM-LUN", "role": "region", "lat": -15.3, "lon": 28.5, "country": "ZM"},
    ]))


REGIONS = ["GB-LHR", "paris", "ZA-JNB", "ZA-CPT", "ZM-LUN"]


def test_weights_by_continent_country_and_glob_split_equally() -> None:
    w, groups = resolve_weights({"AF": 0.6, "EU": 0.4}, REGIONS, _places())
    assert w == pytest.approx({"ZA-JNB": 0.2, "ZA-CPT": 0.2, "ZM-LUN": 0.2, "GB-LHR": 0.2,
                               "paris": 0.2})
    assert [g.regions for g in groups] == [("ZA-CPT", "ZA-JNB", "ZM-LUN"), ("GB-LHR", "paris")]
    w, _ = resolve_weights({"ZA": 0.5, "ZM-*": 0.5}, REGIONS, _places())
    assert w == pytest.approx({"ZA-JNB": 0.25, "ZA-CPT": 0.25, "ZM-LUN": 0.5})
    # A region in two groups gets the sum of its shares.
    w, _ = resolve_weights({"*": 1.0, "ZA-JNB": 1.0}, REGIONS, _places())
    assert w["ZA-JNB"] == pytest.approx(1.2) and w["paris"] == pytest.approx(0.2)


def test_plain_region_weights_come_back_unchanged() -> None:
    given = {"ZM-LUN": 0.45, "ZA-JNB": 0.45, "GB-LHR": 0.1, "nowhere": 0.0}
    w, groups = resolve_weights(given, REGIONS, None)
    assert w == given and all(g.kind == "region" for g in groups)


def test_a_region_of_the_data_wins_over_a_code_and_prefixes_disambiguate() -> None:
    # An Atlas import names probes by country: region "NA" (Namibia) is that region.
    w, groups = resolve_weights({"NA": 1.0}, ["NA", "AO", "US-NYC"], None)
    assert w == {"NA": 1.0} and groups[0].kind == "region"
    w, groups = resolve_weights({"continent:NA": 1.0}, ["NA", "AO", "US-NYC"], None)
    assert w == {"US-NYC": 1.0} and groups[0].from_names == ("US-NYC",)
    w, _ = resolve_weights({"country:NA": 1.0, "AO": 1.0}, ["NA", "AO"], None)
    assert w == {"NA": 1.0, "AO": 1.0}


def test_places_come_from_the_table_then_the_name() -> None:
    places = region_places(["paris", "ZA-JNB", "KE_NBO", "lab-1"], _places())
    assert places["paris"] == ("FR", "EU", "locations")
    assert places["KE_NBO"] == ("KE", "AF", "name")
    assert places["lab-1"] == (None, None, "unknown")


@pytest.mark.parametrize("weights, message", [
    ({"OC": 1.0}, "'OC' (continent) matches no client region"),
    ({"BR": 1.0}, "'BR' (country) matches no client region"),
    ({"XX-*": 1.0}, "'XX-*' (glob) matches no client region"),
    ({"continent:ZZ": 1.0}, "not a continent code"),
    ({"AF": -1.0}, "finite number ≥ 0"),
    ({"AF": 0.0}, "positive weight"),
])
def test_groups_that_match_nothing_are_refused(weights: dict[str, float], message: str) -> None:
    with pytest.raises(MixError, match=re.escape(message)):
        resolve_weights(weights, REGIONS, _places())


def test_hand_table_through_analyse_flips_at_one_third() -> None:
    # Constant RTTs, no loss: cost = p50 + 0.5 × p95 = 1.5 × RTT.  EU→ams 10, EU→jnb 100,
    # AF→ams 200, AF→jnb 20: 10 + 190 t = 100 - 80 t at t = 90 / 270 = 1/3 of African clients.
    medians = {("GB-LHR", "dc-ams"): 10.0, ("GB-LHR", "dc-jnb"): 100.0,
               ("ZA-JNB", "dc-ams"): 200.0, ("ZA-JNB", "dc-jnb"): 20.0}
    campaign = planted.campaign_from_medians(medians, np.random.default_rng(0), records=5,
                                             spread=0.0)
    result = nva.analyse(campaign, weights={"EU": 1.0}, n_boot=0,
                         mixes={"africa": {"AF": 1.0}, "even": {"*": 1.0}})
    assert result.winner == "dc-ams" and result.mixes is not None
    given, (africa, even) = result.mixes.given, result.mixes.named
    assert given.groups[0].regions == ("GB-LHR",)  # placed by its name: no locations
    assert (africa.winner, even.winner) == ("dc-jnb", "dc-jnb")
    assert even.score == pytest.approx(1.5 * (0.5 * 100 + 0.5 * 20))
    line = result.mixes.lines[0]
    assert line.to == "africa" and line.flip_at == pytest.approx(1 / 3, abs=1e-9)
    assert result.mixes.nearest is not None
    assert result.mixes.nearest.distance == pytest.approx(1 / 3, abs=1e-9)
    as_json = json.loads(json.dumps(result.to_dict()))
    assert as_json["mixes"]["named"][0]["winner"] == "dc-jnb"
    assert as_json["mixes"]["lines"][0]["flip_at"] == pytest.approx(1 / 3)
    assert "africa  dc-jnb" in result.to_text()


@pytest.mark.parametrize("share", [0.2, 0.5, 0.8])
def test_planted_flip_is_found_within_five_percent(share: float) -> None:
    found = planted.flip_share(planted.generate(11, share))
    assert found is not None and abs(found - share) <= planted.TOLERANCE


def test_no_flip_is_reported_where_none_was_planted() -> None:
    assert planted.flip_share(planted.generate(11, None)) is None


def test_bench_rows_have_the_contract_keys() -> None:
    (row,) = planted.evaluate(3)
    assert set(row) == {"detector", "planted", "flagged", "true_positives"}
    assert row["true_positives"] == row["planted"] == row["flagged"]


def test_lab_campaign_africa_mix_by_continent_picks_johannesburg() -> None:
    proc = invoke_cli("analyse", str(SAMPLE), "--locations", str(LOCATIONS), "--weights",
                      "AF=0.9,EU=0.05,NA=0.05", "--mix", "europe=EU=1", "--mix", "even=*=1",
                      "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["winner"] == "dc-jnb"
    mixes = data["mixes"]
    assert mixes["given"]["weights"]["ZA-JNB"] == pytest.approx(0.45)
    assert [m["name"] for m in mixes["named"]] == ["europe", "even"]
    assert {g["group"]: g["regions"] for g in mixes["given"]["groups"]}["AF"] == [
        "ZA-JNB", "ZM-LUN"]


@pytest.mark.parametrize("args, message", [
    (("--mix", "AF=0.5,EU=0.5"), "is not NAME=GROUP=W"),
    (("--mix", "a=AF=1", "--mix", "a=EU=1"), "given twice"),
    (("--weights", "AF=1,AF=2"), "given twice"),
    (("--weights", "OC=1"), "matches no client region"),
])
def test_mix_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    proc = invoke_cli("analyse", str(SAMPLE), *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_mixes_follow_the_main_rankings_gap_policy() -> None:
    # A: X 10, Y 30;  B: X never measured, Y 50.  Under "exclude" X cannot win (Y, 40);
    # under "skip" X scores 10 over the one region that measured it and wins.
    from netvantage.analysis.mix import mixes
    from netvantage.analysis.rank import CostModel, Thresholds
    from test_analysis_rank import _frame, _pings

    m = _frame(_pings("A", "X", [10, 10]) + _pings("A", "Y", [30, 30])
               + _pings("B", "Y", [50, 50]))
    only_p50 = CostModel(rtt_p50_ms=1.0, rtt_p95_ms=0.0, loss_pct=0.0, handshake_p95_ms=0.0,
                         failure_pct=0.0)
    free = Thresholds(None, (), None, None)
    even = {"A": 0.5, "B": 0.5}
    named = {"onlyB": {"B": 1.0}}
    excluded = mixes(m, even, named=named, cost=only_p50, thresholds=free)
    skipped = mixes(m, even, named=named, cost=only_p50, thresholds=free, gaps="skip")
    assert (excluded.given.winner, excluded.given.score) == ("Y", 40.0)
    assert (skipped.given.winner, skipped.given.score) == ("X", 10.0)
    # The named mix of B only: X unmeasured there, so Y under either policy.
    assert [x.winner for x in skipped.named] == ["Y"]
    assert any("gap policy 'skip'" in n for n in skipped.notes)
    assert not any("gap policy" in n for n in excluded.notes)
