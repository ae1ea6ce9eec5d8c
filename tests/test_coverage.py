"""Coverage first, pair independence and confidence from what was measured."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from conftest import invoke_cli
from netvantage import analysis as nva
from netvantage.analysis.coverage import confidence
from netvantage.analysis.rank import CostModel, Ranking, Stability, Thresholds, rank, stability
from test_analysis_rank import T0, _frame, _pings, _record

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
LOCATIONS = ROOT / "data" / "locations" / "lab.csv"
AFRICA = {"ZM-LUN": 0.45, "ZA-JNB": 0.45, "GB-LHR": 0.05, "CA-YYZ": 0.05}
ONLY_P50 = CostModel(rtt_p50_ms=1.0, rtt_p95_ms=0.0, loss_pct=0.0, handshake_p95_ms=0.0,
                     failure_pct=0.0)
NO_THRESHOLDS = Thresholds(None, (), None, None)


def _bench() -> ModuleType:
    path = ROOT / "bench" / "planted_coverage.py"
    spec = importlib.util.spec_from_file_location("planted_coverage", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["planted_coverage"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def with_dead(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dead") / "lab-dead.jsonl"
    lines = SAMPLE.read_text().splitlines()
    out.write_text("\n".join(_bench().with_dead_target(lines, "dc-dead")) + "\n")
    return out


def test_a_dead_candidate_leaves_every_other_pair_exactly_unchanged(with_dead: Path) -> None:
    places = nva.locations(LOCATIONS)
    before = nva.analyse(nva.load(SAMPLE), weights=AFRICA, locations=places, n_boot=50)
    after = nva.analyse(nva.load(with_dead), weights=AFRICA, locations=places, n_boot=50)
    keep = after.ranking.breakdown["target"] != "dc-dead"
    pd.testing.assert_frame_equal(
        before.ranking.breakdown.reset_index(drop=True),
        after.ranking.breakdown[keep].reset_index(drop=True))
    # The figures the issue quoted: CA-YYZ -> dc-ams loss stays 2.0 %.
    bd = after.ranking.breakdown.set_index(["region", "target"])
    assert bd.loc[("CA-YYZ", "dc-ams"), "loss_pct"] == pytest.approx(2.0, abs=0.05)
    assert set(bd["latency_from"].loc[bd.index.get_level_values(1) != "dc-dead"]) == {
        "ping+tcp"}
    # Scores and intervals of the others do not move either (per-pair random streams).
    cols = ["target", "score", "score_lo", "score_hi"]
    old = before.ranking.table[cols].set_index("target").sort_index()
    new = after.ranking.table[cols].set_index("target").drop("dc-dead").sort_index()
    pd.testing.assert_frame_equal(old, new)
    assert not any("traces' destination" in note for note in after.notes)


def test_a_dead_candidate_ranks_last_unmeasured_and_never_wins(with_dead: Path) -> None:
    result = nva.analyse(nva.load(with_dead), weights=AFRICA, n_boot=0)
    table = result.ranking.table.sort_values("rank")
    assert result.winner == "dc-jnb"
    assert table.iloc[-1]["target"] == "dc-dead" and not table.iloc[-1]["eligible"]
    cov = result.coverage
    assert cov is not None and cov.dead_targets == ["dc-dead"]
    assert {(u["region"], u["target"]) for u in cov.unmeasured} == {
        (r, "dc-dead") for r in AFRICA}
    reason = next(c["reason"] for c in cov.candidates if c["target"] == "dc-dead")
    assert reason.startswith("never answered")
    data = result.to_dict()
    assert data["coverage"]["dead_targets"] == ["dc-dead"]
    json.dumps(data, default=str)


def test_analyse_command_lists_the_dead_candidate_and_does_not_pick_it(with_dead: Path) -> None:
    proc = invoke_cli("analyse", str(with_dead), timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "never answered (no successful measurement from any region): dc-dead" in out
    assert "GB-LHR -> dc-dead: " in out and "NOT ELIGIBLE" in out
    as_json = json.loads(invoke_cli("analyse", str(with_dead), "--format", "json",
                                    timeout=180).stdout)
    assert as_json["winner"] not in (None, "dc-dead")
    assert "dc-dead" in as_json["coverage"]["dead_targets"]
    failed = invoke_cli("analyse", str(with_dead), "--gaps", "fail", timeout=180)
    assert failed.returncode != 0 and "dc-dead" in failed.stderr


# --------------------------------------------------------------------------- hand tables


def _gappy() -> pd.DataFrame:
    # A: X 10, Y 30, Z 20;  B: X –, Y 50, Z 40.  (Z a second complete candidate.)
    return _frame(_pings("A", "X", [10, 10]) + _pings("A", "Y", [30, 30])
                  + _pings("A", "Z", [20, 20]) + _pings("B", "Y", [50, 50])
                  + _pings("B", "Z", [40, 40]))


def test_gap_policies_by_hand() -> None:
    w = {"A": 1, "B": 1}
    # exclude: X has a gap, cannot win; Y 40, Z 30 → Z first, X last with no score.
    table, _ = rank(_gappy(), w, cost=ONLY_P50, thresholds=NO_THRESHOLDS, n_boot=0)
    assert list(table["target"]) == ["Z", "Y", "X"]
    assert math.isnan(float(table.iloc[2]["score"])) and table.iloc[2]["missing"] == "B"
    # skip: X over A alone = 10 → first.
    table, _ = rank(_gappy(), w, cost=ONLY_P50, thresholds=NO_THRESHOLDS, n_boot=0,
                    gaps="skip")
    assert table.set_index("target")["score"].to_dict() == pytest.approx(
        {"X": 10.0, "Y": 40.0, "Z": 30.0})
    # worst: X's gap in B costs B's worst (50): (10 + 50) / 2 = 30, tie with Z → Z kept
    # ahead only by order; scores by hand.
    table, _ = rank(_gappy(), w, cost=ONLY_P50, thresholds=NO_THRESHOLDS, n_boot=0,
                    gaps="worst")
    assert table.set_index("target")["score"].to_dict() == pytest.approx(
        {"X": 30.0, "Y": 40.0, "Z": 30.0})
    with pytest.raises(ValueError, match="B -> X"):
        rank(_gappy(), w, cost=ONLY_P50, thresholds=NO_THRESHOLDS, n_boot=0, gaps="fail")


def test_no_winner_when_every_score_is_missing() -> None:
    # B measured nothing: every candidate has a gap; the first name must not win.
    frame = _frame(_pings("A", "X", [10, 10]) + _pings("A", "Y", [20, 20]))
    st = stability(frame, {"A": 1, "B": 1}, cost=ONLY_P50, thresholds=NO_THRESHOLDS)
    assert st.winner is None and math.isnan(st.dirichlet_share)
    table, _ = rank(frame, {"A": 1, "B": 1}, cost=ONLY_P50, thresholds=NO_THRESHOLDS,
                    n_boot=0)
    assert not table["eligible"].any()
    sure = confidence(Ranking(table, _), st)
    assert sure.level == "none"


def test_no_winner_text_never_claims_stays_first(tmp_path: Path) -> None:
    bench = _bench()
    records = [bench.dead_ping(r, t, 15.0 * i) for i in range(3)
               for r in ("R1", "R2") for t in ("dc-a", "dc-b")]
    path = tmp_path / "dead.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    result = nva.analyse(nva.load(path), n_boot=0)
    assert result.winner is None
    text = result.to_text()
    assert "stays first" not in text and "no winner" in text
    assert "dc-a, dc-b" in text


def _table(rows: list[tuple[str, float, float, float]]) -> Ranking:
    """A ranking table by hand: (target, score, score_se, p_best)."""
    table = pd.DataFrame([{"target": t, "score": s, "score_se": se, "p_best": p,
                           "rank": i + 1, "eligible": True} for i, (t, s, se, p)
                          in enumerate(rows)])
    return Ranking(table, pd.DataFrame())


def _stable(share: float = 1.0) -> Stability:
    loo = pd.DataFrame({"left_out": ["A"], "winner": ["X"], "same": [True]})
    return Stability("X", share, pd.DataFrame(), loo, 1.0)


def test_confidence_rule_by_hand() -> None:
    # margin 10, noise √(3² + 4²) = 5: 10 = 2 × 5 is not > 2 × noise → moderate.
    assert confidence(_table([("X", 100, 3, 1.0), ("Y", 110, 4, 0.0)]), _stable()).level \
        == "moderate"
    # margin 11 > 10 → high.
    sure = confidence(_table([("X", 100, 3, 1.0), ("Y", 111, 4, 0.0)]), _stable())
    assert sure.level == "high" and sure.margin == 11 and sure.noise == 5
    # margin 4 within noise 5 → low, even though every resampling picks X.
    assert confidence(_table([("X", 100, 3, 1.0), ("Y", 104, 4, 0.0)]), _stable()).level \
        == "low"
    # one snapshot per pair with no spread: noise unknown → low; a 4 ms margin is not "high".
    sure = confidence(_table([("X", 139, math.nan, math.nan), ("Y", 143, math.nan,
                                                                 math.nan)]), _stable())
    assert sure.level == "low" and "unknown" in sure.reason
    # a wide margin but the mix decides: first in only 60 % of perturbed mixes → low.
    assert confidence(_table([("X", 100, 1, 1.0), ("Y", 150, 1, 0.0)]),
                      _stable(0.6)).level == "low"


def test_one_record_per_pair_has_no_bootstrap_interval() -> None:
    frame = _frame(_pings("A", "X", [143]) + _pings("A", "Y", [147]))
    table, _ = rank(frame, {"A": 1}, cost=ONLY_P50, thresholds=NO_THRESHOLDS, n_boot=100)
    assert table["score_lo"].isna().all() and table["p_best"].isna().all()
    assert (table["ci_basis"] == "fewer than two records in some pair: no bootstrap "
            "interval").all()


def test_single_records_with_a_spread_give_the_noise() -> None:
    # One record per pair, sd 4 ms over 16 samples: se = 1.2533 × 4 / 4 = 1.2533 (only p50).
    frame = _frame(_pings("A", "X", [100]) + _pings("A", "Y", [110]))
    frame["rtt_sd_ms"] = 4.0
    frame["rtt_samples"] = pd.array([16, 16], dtype="Int64")
    table, _ = rank(frame, {"A": 1}, cost=ONLY_P50, thresholds=NO_THRESHOLDS, n_boot=0)
    assert table["score_se"].to_list() == pytest.approx([1.2533, 1.2533])


def test_same_city_pair_follows_the_stated_policy() -> None:
    frame = _frame(_pings("GB-LHR", "dc-ams", [9, 9]) + _pings("ZA-JNB", "dc-ams", [221, 221])
                   + _pings("GB-LHR", "dc-jnb", [159, 159]))
    places = nva.locations(LOCATIONS)
    campaign = nva.Campaign(frame, pd.DataFrame(columns=["id", "rtt_ms"]),
                            pd.DataFrame(), pd.DataFrame())
    weights = {"GB-LHR": 1, "ZA-JNB": 1}
    plain = nva.analyse(campaign, weights=weights, locations=places, n_boot=0)
    assert plain.winner == "dc-ams"
    assert plain.coverage is not None
    assert plain.coverage.same_city == [{"region": "ZA-JNB", "target": "dc-jnb",
                                         "status": "not measured (a gap)"}]
    floor = nva.analyse(campaign, weights=weights, locations=places, n_boot=0,
                        same_city_floor_ms=5.0)
    # dc-jnb: (159 + 0.5 × 159) / 2 + (5 + 0.5 × 5) / 2 = 119.25 + 3.75 = 123 < dc-ams 172.5.
    assert floor.winner == "dc-jnb"
    scores = floor.ranking.table.set_index("target")["score"]
    assert float(scores["dc-jnb"]) == pytest.approx(123.0)
    assert floor.coverage is not None
    assert floor.coverage.same_city[0]["status"] == "assumed access floor"


def test_planted_coverage_cases_are_found_and_healthy_ones_not() -> None:
    for row in _bench().evaluate(3):
        assert row["true_positives"] == row["planted"] == row["flagged"], row


def test_report_takes_the_gap_policy_and_the_episode_options(with_dead: Path,
                                                             tmp_path: Path) -> None:
    failed = invoke_cli("report", str(with_dead), "--gaps", "fail", "-o",
                        str(tmp_path / "r.html"), timeout=180)
    assert failed.returncode != 0 and "dc-dead" in failed.stderr
    assert not (tmp_path / "r.html").exists()
    page = tmp_path / "skip.html"
    done = invoke_cli("report", str(with_dead), "--gaps", "skip", "--same-city-floor", "1",
                      "--episode-min-rise", "0.2", "--episode-min-windows", "2",
                      "--locations", str(LOCATIONS), "-o", str(page), timeout=240)
    assert done.returncode == 0, done.stderr
    assert "Gap policy — skip: gaps skipped" in page.read_text()


def test_a_pair_with_an_rtt_but_no_handshake_is_a_listed_gap() -> None:
    """A pair whose RTT was measured but whose handshake (a term other pairs have) was not
    has no cost: the candidate is not eligible, and coverage says why, not "measured"."""
    from netvantage.analysis.coverage import coverage
    from netvantage.analysis.rank import rank, stability

    rows = []
    for region in ("GB-LHR", "ZA-JNB"):
        for target in ("dc-ams", "dc-jnb"):
            rows += _pings(region, target, [20.0, 21.0, 22.0, 23.0])
            if (region, target) != ("ZA-JNB", "dc-ams"):  # this pair: no handshake
                rows += [_record(region, target, "smtp", T0 + pd.Timedelta(minutes=i),
                                 rtt=None, loss=None, sent=None, handshake=300.0 + i)
                         for i in range(4)]
    m = _frame(rows)
    weights = {"GB-LHR": 0.5, "ZA-JNB": 0.5}
    ranking = rank(m, weights, n_boot=50)
    cov = coverage(m, weights, ranking, stability(m, weights, n_draws=20))
    gaps = {(u["region"], u["target"]): u["reason"] for u in cov.unmeasured}
    assert list(gaps) == [("ZA-JNB", "dc-ams")]
    assert "RTT measured, but no handshake (smtp/imap)" in gaps[("ZA-JNB", "dc-ams")]
    ams = next(c for c in cov.candidates if c["target"] == "dc-ams")
    assert not ams["eligible"]
    assert ams["reason"] == "no cost from 1 of 2 weighted region(s): ZA-JNB"
    assert "weighted pairs without a cost (1):" in "\n".join(cov.text_lines())
