"""Path MTU in the analysis: pmtu records per pair, black holes first, in the text, the
JSON and the report.  The records are written here (the probe that makes them is tested
against the lab's real MTU black hole in test_pmtu_lab.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from netvantage.analysis.load import load
from netvantage.analysis.pmtu import path_mtu, pmtu_frame
from netvantage.analysis.summary import analyse
from netvantage.results import PmtuBody, PmtuRecord, read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "campaigns" / "lab-sample.jsonl"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _pmtu(region: str, target: str, minutes: int, **body: object) -> PmtuRecord:
    fields: dict[str, object] = {"protocol": "icmp", "ip_version": 4, "local_mtu": 1500,
                                 "reached": True, "rounds": 8}
    fields.update(body)
    return PmtuRecord(id=f"pmtu-{region}-{target}-{minutes:04d}", agent=f"{region.lower()}-1",
                      region=region, target=target, address="192.0.2.10",
                      started_at=T0 + timedelta(minutes=minutes), duration_ms=800.0,
                      status="ok", body=PmtuBody(**fields))  # type: ignore[arg-type]


def _records() -> list[PmtuRecord]:
    hole = {"path_mtu": 1280, "black_hole": True, "hop_ttl": 3, "hop_address": "10.10.255.17",
            "next_hop_address": "10.10.255.16"}
    return [
        # CA-YYZ -> dc-jnb: full once, then a black hole twice (the latest state).
        _pmtu("CA-YYZ", "dc-jnb", 0, path_mtu=1500),
        _pmtu("CA-YYZ", "dc-jnb", 10, **hole),
        _pmtu("CA-YYZ", "dc-jnb", 20, **hole),
        # GB-LHR -> dc-ams: a smaller MTU, announced by "fragmentation needed".
        _pmtu("GB-LHR", "dc-ams", 5, path_mtu=1400, ptb_received=True, ptb_mtu=1400,
              ptb_from="10.10.255.19", hop_ttl=2, hop_address="10.10.255.19"),
        # ZA-JNB -> dc-jnb: the whole local MTU.
        _pmtu("ZA-JNB", "dc-jnb", 7, path_mtu=1500),
    ]


def test_each_pair_gets_the_verdict_of_its_latest_record() -> None:
    found = path_mtu(pmtu_frame(_records()))
    assert found is not None
    t = found.table
    assert list(zip(t["region"], t["target"], t["verdict"], strict=True)) == [
        ("CA-YYZ", "dc-jnb", "black hole"), ("GB-LHR", "dc-ams", "reduced"),
        ("ZA-JNB", "dc-jnb", "full")]
    hole = t.iloc[0]
    assert (hole["records"], hole["seen"], hole["path_mtu"]) == (3, 2, 1280)
    assert hole["where"] == "hop 3 (10.10.255.17), before 10.10.255.16"
    assert "RFC 2923" in hole["evidence"] and "(2 of 3 records)" in hole["evidence"]
    assert "announced from 10.10.255.19" in t.iloc[1]["evidence"]
    text = "\n".join(found.text_lines())
    assert "Path MTU (3 pair(s): 1 black hole, 1 reduced, 1 full):" in text
    assert "ZA-JNB" not in text  # a full pair is counted, not listed
    assert json.loads(json.dumps(found.to_dict()))["pairs"][0]["verdict"] == "black hole"
    assert path_mtu(pmtu_frame([])) is None


def test_pmtu_records_reach_the_analysis_and_the_report(tmp_path: Path) -> None:
    import pandas as pd

    from netvantage.report.content import collect_content
    from netvantage.report.render import render_html, render_markdown

    data = tmp_path / "campaign.jsonl"
    write_jsonl([*read_jsonl(SAMPLE), *_records()], data)
    campaign = load(data)
    assert campaign.pmtu is not None and len(campaign.pmtu) == 5
    assert len(campaign.measurements) == len(load(SAMPLE).measurements)  # not a latency
    result = analyse(campaign, n_boot=50)
    assert result.pmtu is not None
    assert "CA-YYZ -> dc-jnb: black hole" in result.to_text()
    assert result.to_dict()["path_mtu"]["pairs"][0]["where"].startswith("hop 3")
    content = collect_content(campaign, result, title="t", version="0",
                              generated=pd.Timestamp("2026-03-03T00:00:00Z"))
    page = render_markdown(content, [])
    assert "## Path MTU" in page and "black hole" in page.split("## Path MTU")[1]
    html = render_html(content, [])
    assert 'id="pmtu-table"' in html and "10.10.255.16" in html
