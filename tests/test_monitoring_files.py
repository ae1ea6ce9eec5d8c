"""probes/monitoring: the example Prometheus config, the alert rules and the Grafana dashboard.

promtool (Debian's prometheus package) checks the config and the rules and runs
the rules' unit tests; every expression of the rules and of the dashboard must
name only series the agent and the collector really serve (or the rules record).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from exposition import fed_collector, lab_records, make_agent, names
from netns import missing
from netvantage.collector.metrics import CollectorMetrics

MONITORING = Path(__file__).resolve().parents[1] / "probes" / "monitoring"
RULES = MONITORING / "netvantage.rules.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
#: Series Prometheus makes itself, not an exporter.
PROMETHEUS_OWN = {"up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                "bool", "and", "or", "unless", "inf", "nan"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        missing("promtool is not installed (Debian package prometheus)", "the monitoring tests")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120,
                          cwd=MONITORING)


@pytest.mark.parametrize("args", [("check", "config", "prometheus.yml"),
                                  ("check", "rules", "netvantage.rules.yml"),
                                  ("test", "rules", "netvantage.rules.test.yml")])
def test_promtool_accepts_the_config_and_rules_and_their_unit_tests_pass(args):
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def served_names(tmp_path: Path) -> set[str]:
    """Every sample name the agent and the collector serve once they have seen everything."""
    agent = make_agent(tmp_path)
    assert agent.uploader is not None
    agent.uploader.stats.last_ok = 1.0e9  # the last-success series exists once one worked
    registry = CollectorRegistry(auto_describe=False)
    registry.register(fed_collector(agent, lab_records().values()))
    ProcessCollector(registry=registry)
    text = generate_latest(registry).decode()
    agent.spool.close()

    class Counted:
        path = tmp_path / "agent.spool.sqlite"

        def count(self) -> int:
            return 1

    collector = CollectorMetrics(Counted())
    headers = {"x-netvantage-backlog": "3", "x-netvantage-oldest-unsent": "60"}
    collector.record_batch("a", 200, b'{"accepted": 2, "duplicates": 1, "ids": []}', headers)
    collector.record_batch("a", 409, b'{"error": "", "problems": [{}]}', {})
    collector.record_batch("a", 422, b'{"error": "", "problems": [{}, {}]}', {})
    collector.latency.labels("/v1/records").observe(0.01)
    ProcessCollector(registry=collector.registry)
    text += generate_latest(collector.registry).decode()
    return names(text)


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords, labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)           # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)                    # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                   # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)                  # Grafana variables
    found = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        found.add(word)
    return found


def test_the_name_extraction_can_fail():
    assert metric_names('sum by (le, route) (rate(a_bucket{x="b c"}[5m])) / on (i) b') == \
        {"a_bucket", "b"}
    assert metric_names('time() - max by (agent) (c) > 0.5 and d offset 1h') == {"c", "d"}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, expression) of every panel target and every query variable."""
    dash = json.loads(DASHBOARD.read_text())
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((f"panel {panel['title']!r}", target["expr"]))
    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"]
            selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert selector, query
            found.append((f"variable {var['name']}", selector.group(1)))
    return found


def test_every_rule_names_only_served_or_recorded_series(tmp_path):
    served = served_names(tmp_path) | PROMETHEUS_OWN
    recorded = {r["record"] for r in rules() if "record" in r}
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert {"NetvantageAgentSilent", "NetvantageSpoolGrowing", "NetvantageRegionLossHigh",
            "NetvantageRegionRttUp"} <= alerts
    unknown = {(r.get("alert") or r.get("record"), name) for r in rules()
               for name in metric_names(r["expr"]) if name not in served | recorded}
    assert not unknown, unknown


def test_dashboard_is_grafana_json_naming_only_served_series(tmp_path):
    dash = json.loads(DASHBOARD.read_text())
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert all({"x", "y", "w", "h"} <= set(p["gridPos"]) for p in panels)
    served = served_names(tmp_path) | PROMETHEUS_OWN
    expressions = dashboard_expressions()
    used = {name for _, expr in expressions for name in metric_names(expr)}
    unknown = sorted((where, name) for where, expr in expressions
                     for name in metric_names(expr) if name not in served)
    assert not unknown, unknown
    # The series the issue asks to see are on the dashboard.
    assert {"probe_success", "probe_rtt_seconds", "probe_loss_ratio",
            "probe_phase_duration_seconds", "netvantage_agent_spool_depth",
            "netvantage_agent_spool_oldest_unsent_age_seconds",
            "netvantage_agent_upload_errors_total",
            "netvantage_agent_last_upload_success_timestamp_seconds",
            "netvantage_collector_records_ingested_total",
            "netvantage_collector_records_rejected_total",
            "netvantage_collector_records_conflicting_total",
            "netvantage_collector_records_duplicate_total",
            "netvantage_collector_request_duration_seconds_bucket",
            "netvantage_collector_store_records",
            "netvantage_collector_agent_last_seen_timestamp_seconds"} <= used
