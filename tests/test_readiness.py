"""Mail readiness as a service threshold in the ranking, and the report's section on it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from netvantage import analysis as nva
from netvantage.analysis.load import frames_from_records
from netvantage.analysis.rank import Thresholds, rank
from netvantage.analysis.readiness import (
    failing_targets,
    readiness,
    readiness_frame,
    with_readiness,
)
from netvantage.results import READY_CHECKS, MailReadyBody, MailReadyRecord, ReadyCheck, new_id

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def ready_record(target: str, region: str, *, at: int = 0,
                 **statuses: str) -> MailReadyRecord:
    checks = {name: ReadyCheck(status=statuses.get(name, "pass"),  # type: ignore[arg-type]
                               summary=f"{name} {statuses.get(name, 'pass')}",
                               evidence=[f"{name}: evidence of {target}"])
              for name in READY_CHECKS}
    failing = [n for n in READY_CHECKS if checks[n].status == "fail"]
    body = MailReadyBody(budget_s=20.0, verdict="fail" if failing else "pass",
                         failing=failing, **checks)  # type: ignore[arg-type]
    return MailReadyRecord(id=new_id(), agent=f"agent-{region}", region=region, target=target,
                           address="192.0.2.1", started_at=T0 + timedelta(minutes=at),
                           duration_ms=100.0, status="ok", body=body)


def test_worst_of_the_latest_record_per_region_and_the_failing_candidates():
    records = [
        ready_record("X", "A", at=0, dnsbl="fail"),
        ready_record("X", "A", at=5),  # the listing is gone by the latest record from A
        ready_record("X", "B", at=1, port25="fail"),
        ready_record("Y", "A", dkim="fail", rdns="fail"),
        ready_record("Z", "A", dnsbl="unknown"),
    ]
    ready = readiness(readiness_frame(records))
    assert ready is not None
    t = ready.table.set_index(["target", "check"])
    assert t.loc[("X", "dnsbl"), "status"] == "pass"
    assert t.loc[("X", "port25"), "status"] == "fail"
    assert "fail in B" in str(t.loc[("X", "port25"), "split"])
    assert t.loc[("Z", "dnsbl"), "status"] == "unknown"
    # default: only dnsbl and dkim fail a candidate; unknown never does
    assert set(ready.failing) == {"Y"}
    assert ready.failing["Y"] == ["mail readiness: dkim fails (dkim fail)"]
    stricter = readiness(readiness_frame(records), ("dnsbl", "dkim", "rdns", "port25"))
    assert stricter is not None and set(stricter.failing) == {"X", "Y"}
    off = readiness(readiness_frame(records), ())
    assert off is not None and off.failing == {}
    with pytest.raises(ValueError, match="unknown readiness check"):
        readiness(readiness_frame(records), ("dnsbls",))
    assert readiness(None) is None


def _pings(region: str, target: str, rtt: float) -> list[dict[str, object]]:
    return [{"id": new_id(), "kind": "ping", "region": region, "target": target, "ok": True,
             "rtt_ms": rtt, "loss_ratio": 0.0, "handshake_ms": float("nan")} for _ in range(3)]


def test_a_failing_candidate_ranks_after_those_meeting_every_threshold():
    m = pd.DataFrame(_pings("A", "X", 10.0) + _pings("A", "Y", 50.0))
    no_limits = Thresholds(None, (), None, None)
    table, _ = rank(m, {"A": 1}, thresholds=no_limits, n_boot=0)
    assert list(table["target"]) == ["X", "Y"]
    ready = readiness(readiness_frame([ready_record("X", "A", dnsbl="fail")]))
    limits = dataclasses.replace(no_limits, failing_targets=failing_targets(ready))
    table, breakdown = rank(m, {"A": 1}, thresholds=limits, n_boot=0)
    assert "mail readiness" in str(breakdown.set_index("target").loc["X", "fails"])
    by = table.set_index("target")
    assert list(table["target"]) == ["Y", "X"]
    scores = by["score"].astype(float).to_dict()
    assert scores["X"] < scores["Y"]  # the better score, yet second
    assert not by.loc["X", "meets_thresholds"]
    assert "mail readiness: dnsbl fails" in str(by.loc["X", "fails"])


def test_with_readiness_adds_the_failing_candidates_after_those_given():
    given = Thresholds(failing_targets=(("W", "decided elsewhere"),))
    ready = readiness(readiness_frame([ready_record("X", "A", dnsbl="fail"),
                                       ready_record("Y", "A")]))
    added = with_readiness(given, ready)
    assert added.failing_targets == (("W", "decided elsewhere"),
                                     ("X", "mail readiness: dnsbl fails (dnsbl fail)"))
    assert added.loss_pct == given.loss_pct and added.handshake_kinds == given.handshake_kinds
    # Nothing fails (or no readiness records): the very thresholds given.
    assert with_readiness(given, None) is given
    assert with_readiness(given, readiness(readiness_frame([ready_record("Y", "A")]))) is given


@pytest.fixture(scope="module")
def campaign_with_readiness():
    campaign = nva.load(SAMPLE)
    targets = sorted(campaign.measurements["target"].dropna().astype(str).unique())
    regions = sorted(campaign.measurements["region"].dropna().astype(str).unique())
    plants: dict[str, dict[str, Any]] = {"dc-ams": {"dnsbl": "fail"}, "dc-jnb": {"rdns": "fail"},
              "dc-yyz": {"dkim": "fail"}}
    records = [ready_record(t, r, **plants.get(t, {})) for t in targets for r in regions]
    ready = frames_from_records(records).readiness
    return dataclasses.replace(campaign, readiness=ready)


def test_analysis_and_report_say_which_candidates_fail_readiness(campaign_with_readiness,
                                                                 tmp_path):
    from netvantage.report import make_report

    report = make_report(campaign_with_readiness, locations=None)
    result = report.analysis
    assert result.readiness is not None
    assert set(result.readiness.failing) == {"dc-ams", "dc-yyz"}
    table = result.ranking.table.set_index("target")
    assert not table.loc["dc-ams", "meets_thresholds"]
    assert "mail readiness: dnsbl fails" in str(table.loc["dc-ams", "fails"])
    assert "mail readiness" not in str(table.loc["dc-jnb", "fails"])
    html = report.html()
    assert "Will mail flow on day one?" in html
    section = html.split('id="readiness"')[1].split("</section>")[0]
    for target in ("dc-ams", "dc-jnb", "dc-yyz"):
        assert target in section
    assert "evidence of dc-ams" in section and "FAILS: dnsbl" in section
    md = report.markdown()
    assert "## Will mail flow on day one?" in md and "FAILS: dkim" in md
    assert "readiness" in result.to_dict()
    text = result.to_text()
    assert "Mail readiness" in text and "dc-ams: FAILS — dnsbl fail" in text


def test_placement_honours_readiness_as_the_ranking_does(campaign_with_readiness):
    from netvantage.analysis.place import place_campaign

    ignored = place_campaign(campaign_with_readiness, sites=2, readiness_fail_on=())
    assert ignored.best is not None and ignored.best.sites == ("dc-jnb", "dc-yyz")
    assert ignored.best.meets_thresholds  # the only pair meeting every threshold
    # With readiness (default: dnsbl, dkim), dc-yyz's missing DKIM key fails it and dc-ams
    # is listed: no pair meets every threshold any more, and the answer says why.
    strict = place_campaign(campaign_with_readiness, sites=2)
    assert strict.best is not None and not strict.best.meets_thresholds
    assert any("mail readiness fails dc-ams, dc-yyz" in note for note in strict.notes)


def test_place_command_refuses_an_unknown_readiness_check():
    from conftest import invoke_cli

    proc = invoke_cli("place", str(SAMPLE), "--readiness-fail-on", "dnsbls")
    assert proc.returncode == 2 and "unknown check(s) dnsbls" in proc.stderr
