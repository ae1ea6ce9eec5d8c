"""The agent's and the collector's /metrics as the tests read them.

:func:`agent_collector` builds an agent's collector fed with real records of
every kind (the bundled lab campaign); :func:`post` sends a batch to a
collector; :func:`scrape` reads an exposition into ``{(name, labels): value}``.
Shared by test_metrics.py and test_monitoring_files.py.
"""

from __future__ import annotations

import http.client
import tomllib
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from netvantage.agent.metrics import AgentCollector
from netvantage.agent.plan import Job, parse_plan
from netvantage.agent.run import Agent
from netvantage.results import AnyRecord, decode_record

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "data" / "campaigns" / "lab-sample.jsonl"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

PLAN = """
[agent]
name = "{agent}"
region = "ZM-LUN"
spool = "agent.spool.sqlite"
[collector]
url = "http://127.0.0.1:9"
token = "unused"
[[targets]]
name = "t"
addresses = ["192.0.2.1"]
tests = ["ping", "tcp:25", "trace", "smtp:25", "imap:993"]
"""


def lab_records() -> dict[str, AnyRecord]:
    """One ok record of each kind from the lab campaign (a trace that reached its target)."""
    found: dict[str, AnyRecord] = {}
    for line in CAMPAIGN.read_bytes().splitlines():
        record = decode_record(line)
        if record.kind in found or record.status != "ok":
            continue
        if record.kind == "trace" and not record.body.reached:  # type: ignore[union-attr]
            continue
        found[record.kind] = record
    assert set(found) == {"ping", "tcp", "trace", "smtp", "imap"}
    return found


def make_agent(tmp_path: Path, agent: str = "lun-1") -> Agent:
    text = PLAN.format(agent=agent)
    return Agent(parse_plan(tomllib.loads(text), text, base=tmp_path))


def job_for(agent: Agent, kind: str) -> Job:
    return next(j for j in agent.plan.jobs if j.test.kind == kind)


def fed_collector(agent: Agent, records: Iterable[AnyRecord]) -> AgentCollector:
    collector = AgentCollector(agent)
    for record in records:
        collector.observe(job_for(agent, record.kind), record)
    return collector


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def names(text: str) -> set[str]:
    """Every sample name of an exposition (``_total``, ``_bucket`` ... included)."""
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels`` (None: none; two: error)."""
    hits = [v for (n, lv), v in samples.items() if n == name and set(labels.items()) <= lv]
    assert len(hits) <= 1, f"{name} {labels}: {len(hits)} samples"
    return hits[0] if hits else None


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode("utf-8"))


def post(port: int, token: str, body: bytes, **headers: str) -> tuple[int, Any]:
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/records", body=body, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson",
            **headers})
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        conn.close()
