"""A real Prometheus (Debian's package) scrapes a real agent and a real collector.

The agent (``netvantage agent run --metrics-listen``) measures two loopback
targets, one with a listener (the collector's own port) and one without, and
uploads to the collector (``netvantage collector serve``); Prometheus scrapes
both every second, and the series are read back through its HTTP API
(``/api/v1/query``).  Everything runs in a temporary directory removed at the end.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import NETVANTAGE
from netns import missing
from netvantage.collector.store import Store
from waiting import wait_until

AGENT = "prom-1"
MONITORING = Path(__file__).resolve().parents[1] / "probes" / "monitoring"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def line_in(path: Path, pattern: str) -> re.Match[str] | None:
    return re.search(pattern, path.read_text(errors="replace")) if path.exists() else None


@dataclass
class Stack:
    dir: Path
    store: Path
    agent: subprocess.Popen[bytes]
    prometheus_url: str
    live_port: int
    dead_port: int
    started: float

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as answer:
            payload = json.load(answer)
        assert payload["status"] == "success", payload
        return [(r["metric"], float(r["value"][1])) for r in payload["data"]["result"]]

    def one(self, expr: str) -> float | None:
        """The value of an expression that selects one series (None until it exists)."""
        found = self.query(expr)
        assert len(found) <= 1, (expr, found)
        return found[0][1] if found else None


def start_prometheus(where: Path, targets: dict[str, str], procs: list[subprocess.Popen[bytes]]
                     ) -> str:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        missing("prometheus is not installed (Debian package prometheus)",
                "the Prometheus test")
    jobs = "".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
                   for job, target in targets.items())
    config = where / "prometheus.yml"
    shutil.copy(MONITORING / "netvantage.rules.yml", where / "netvantage.rules.yml")
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                      "  evaluation_interval: 1s\nrule_files:\n  - netvantage.rules.yml\n"
                      f"scrape_configs:\n{jobs}")
    for _ in range(3):  # the port is chosen before Prometheus binds it: retry if taken
        port = free_port()
        log = (where / "prometheus.log").open("wb")
        proc = subprocess.Popen([prometheus, f"--config.file={config}",
                                 f"--storage.tsdb.path={where / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}",
                                 "--log.level=warn"], stdout=log, stderr=log)
        log.close()
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def ready(url: str = url, proc: subprocess.Popen[bytes] = proc) -> bool | None:
            if proc.poll() is not None:
                return True  # exited: stop waiting, look below
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return None

        wait_until(ready, 60, "Prometheus to be ready")
        if proc.poll() is None:
            return url
    raise AssertionError("Prometheus did not start:\n" + (where / "prometheus.log").read_text())


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    procs: list[subprocess.Popen[bytes]] = []
    dead: socket.socket | None = None
    where = Path(tempfile.mkdtemp(prefix="nvt-prom-"))
    try:
        db = where / "store.db"
        with Store(db) as store:
            token = store.add_agent(AGENT)
        col_out = where / "collector.out"
        with col_out.open("wb") as out:
            procs.append(subprocess.Popen([NETVANTAGE, "collector", "serve", "--store", str(db),
                                           "--port", "0"], stdout=out, stderr=out))
        found = wait_until(lambda: line_in(col_out, r"listening on http://127\.0\.0\.1:(\d+)")
                           or procs[0].poll() is not None, 30, "the collector to listen")
        assert isinstance(found, re.Match), col_out.read_text()
        live_port = int(found.group(1))
        # Bound and never listening: connecting is refused, and no other process (Prometheus
        # picking its port, say) can take the port while the test runs.
        dead = socket.socket()
        dead.bind(("127.0.0.1", 0))
        dead_port = int(dead.getsockname()[1])
        plan = where / "plan.toml"
        plan.write_text(f"""
[agent]
name = "{AGENT}"
region = "LOOP"
spool = "agent.spool.sqlite"
[collector]
url = "http://127.0.0.1:{live_port}"
token = "{token}"
upload_interval_s = 0.5
[schedule]
interval_s = 5
start_spread_s = 0
[defaults.tcp]
attempts = 2
timeout_s = 2
[[targets]]
name = "live"
addresses = ["127.0.0.1"]
tests = ["tcp:{live_port}"]
[[targets]]
name = "dead"
addresses = ["127.0.0.1"]
tests = ["tcp:{dead_port}"]
""")
        agent_log = where / "agent.log"
        with agent_log.open("wb") as out:
            agent = subprocess.Popen([NETVANTAGE, "agent", "run", "--plan", str(plan),
                                      "--metrics-listen", "127.0.0.1:0",
                                      "--status-interval", "60"], stdout=out, stderr=out)
        procs.append(agent)
        metrics = wait_until(lambda: line_in(agent_log, r"metrics on http://([\d.:]+)/metrics")
                             or agent.poll() is not None, 30, "the agent's metrics address")
        assert isinstance(metrics, re.Match), agent_log.read_text()
        started = time.time()
        url = start_prometheus(where, {"netvantage-agent": metrics.group(1),
                                       "netvantage-collector": f"127.0.0.1:{live_port}"}, procs)
        yield Stack(where, db, agent, url, live_port, dead_port, started)
    finally:
        for proc in reversed(procs):
            stop(proc)
        if dead is not None:
            dead.close()
        shutil.rmtree(where, ignore_errors=True)


def test_prometheus_scrapes_both_and_sees_a_live_and_a_dead_target(stack: Stack) -> None:
    for job in ("netvantage-agent", "netvantage-collector"):
        expr = f'up{{job="{job}"}}'

        def scraped(expr: str = expr) -> bool:
            return stack.one(expr) == 1

        assert wait_until(scraped, 60, f"{expr} == 1")
    wait_until(lambda: stack.query('probe_success{target=~"live|dead"}')[1:], 60,
               "probe_success of both targets")
    assert stack.one('probe_success{target="live"}') == 1
    assert stack.one('probe_success{target="dead"}') == 0
    assert stack.one('probe_loss_ratio{target="dead"}') == 1
    assert stack.one(f'probe_results_total{{target="dead", test="tcp:{stack.dead_port}", '
                     'status="refused"}') is not None
    rtt = stack.one('probe_rtt_seconds{target="live", quantile="0.5"}')
    assert rtt is not None and 0 < rtt < 2
    assert stack.one('probe_rtt_seconds{target="dead", quantile="0.5"}') is None
    assert stack.one('netvantage_agent_info{agent="prom-1", region="LOOP"}') == 1
    assert stack.one("netvantage_agent_spool_depth") is not None
    assert stack.one("netvantage_agent_upload_errors_total") == 0


def test_shipped_rules_and_dashboard_work_on_the_real_series(stack: Stack) -> None:
    # The recording rule averages the dead target's loss; its alert goes pending
    # (it fires after 10 minutes, far beyond this test).
    loss = 'region_target_test:probe_loss_ratio:avg{region="LOOP", target="dead"}'
    assert wait_until(lambda: stack.one(loss) == 1, 60, f"{loss} == 1")
    assert stack.one(f'{loss.replace("dead", "live")}') == 0
    pending = ('ALERTS{alertname="NetvantageRegionLossHigh", region="LOOP", target="dead", '
               'alertstate="pending"}')
    assert wait_until(lambda: stack.one(pending) == 1, 60, pending)
    assert stack.one('ALERTS{alertname="NetvantageRegionLossHigh", target="live"}') is None
    # Every expression of the dashboard is valid PromQL for this Prometheus.
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    for expr in exprs:
        stack.query(expr.replace("$region", ".*").replace("$target", ".*"))


def test_collector_counts_in_prometheus_match_the_store(stack: Stack) -> None:
    # The agent has uploaded something; stop it (it uploads what is left as it stops),
    # then what Prometheus reads from the collector must equal what the store holds.
    wait_until(lambda: (stack.one('netvantage_collector_records_ingested_total{agent="prom-1"}')
                        or 0) >= 2, 60, "a first upload seen by Prometheus")
    stop(stack.agent)
    assert stack.agent.returncode == 0
    with Store(stack.store, create=False) as store:
        stored = store.count()
    assert stored >= 2
    wait_until(lambda: stack.one('netvantage_collector_records_ingested_total{agent="prom-1"}')
               == stored, 30, f"Prometheus to see {stored} records ingested")
    assert stack.one('sum(netvantage_collector_records_duplicate_total)') == 0
    seen = stack.one('netvantage_collector_agent_last_seen_timestamp_seconds{agent="prom-1"}')
    assert seen is not None and seen >= stack.started - 5
    batches = stack.one('sum(netvantage_collector_batches_total{code="200"})')
    latency = stack.one('netvantage_collector_request_duration_seconds_count'
                        '{route="/v1/records"}')
    assert batches is not None and latency == batches
