"""A measurement campaign in the lab: agents in every client region, a collector in a
data centre, a degradation switched on part-way, the results exported.

This is what ``netvantage demo`` runs, and how the sample campaign under
``data/campaigns/`` was recorded.  Everything is real: the lab's namespaces,
Postfix and Dovecot, the agents' packets, the collector's HTTP and SQLite.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .lab.core import Lab
from .lab.topology import Topology, load_topology

__all__ = ["CampaignResult", "Degradation", "run_lab_campaign", "wait_for_collector"]

COLLECTOR_PORT = 8750
DEFAULT_TESTS = ("ping", "tcp:25", "trace", "smtp:25", "imap:993", "mailready")


@dataclass(frozen=True, slots=True)
class Degradation:
    """A link made worse at ``at_s`` seconds into the campaign."""

    a: str
    b: str
    delay_ms: float | None = None
    jitter_ms: float | None = None
    loss: float | None = None
    at_s: float = 0.0


@dataclass
class CampaignResult:
    store: Path
    jsonl: Path
    started: datetime
    degraded_at: datetime | None
    degradation: Degradation | None
    agents: dict[str, str] = field(default_factory=dict)  # agent → region node
    counts: dict[str, int] = field(default_factory=dict)


def _plan_text(agent: str, region: str, topo: Topology, url: str, ca: str, interval: float,
               tests: Sequence[str]) -> str:
    from .lab.dns import DOMAIN, selector

    targets = []
    for dc in topo.of_role("dc"):
        targets.append(f"""
[[targets]]
name = "{dc.name}"
location = "{dc.iata or ''}"
lat = {dc.lat}
lon = {dc.lon}
addresses = ["{dc.v4}"]
tests = {json.dumps(list(tests))}
server_name = "mail.{dc.name}.lab"
ca_file = "{ca}"
mail_domain = "{DOMAIN}"
dkim_selectors = ["{selector(topo, dc.name)}"]
""")
    return f"""
[agent]
name = "{agent}"
region = "{region}"
spool = "{agent}.spool.sqlite"
[collector]
url = "{url}"
token_file = "{agent}.token"
upload_interval_s = 2
[schedule]
interval_s = {interval}
jitter_s = {min(1.0, interval / 10)}
start_spread_s = {min(5.0, interval / 2)}
concurrency = 6
max_starts_per_s = 20
[defaults]
ping = {{ count = 10, interval_s = 0.1, timeout_s = 2.0 }}
tcp = {{ attempts = 3, interval_s = 0.1, timeout_s = 3.0 }}
trace = {{ probes_per_hop = 2, probe_timeout_s = 1.5, pps = 100 }}
smtp = {{ timeout_s = 15.0 }}
imap = {{ timeout_s = 15.0 }}
mailready = {{ timeout_s = 2.0, budget_s = 20.0, smtp_timeout_s = 15.0 }}
{''.join(targets)}
"""


def run_lab_campaign(workdir: Path, *, duration_s: float = 300.0, interval_s: float = 15.0,
                     degradation: Degradation | None = None, prefix: str = "nvc",
                     topology: Topology | None = None,
                     tests: Sequence[str] = DEFAULT_TESTS,
                     say: Callable[[str], None] = lambda m: None) -> CampaignResult:
    """Bring a lab up, run one agent per client region for ``duration_s``, tear it down.

    Needs root.  Returns where the store and the exported JSON Lines are.
    """
    topo = topology or load_topology()
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    store = workdir / "store.sqlite"
    lab = Lab(prefix, topo)
    lab.down()
    say(f"lab up ({len(topo.nodes)} nodes)")
    lab.up()
    collector: subprocess.Popen[bytes] | None = None
    agents: dict[str, subprocess.Popen[bytes]] = {}
    exe = str(Path(sys.executable).with_name("netvantage"))
    try:
        host_node = topo.of_role("dc")[0]
        url = f"http://{host_node.v4}:{COLLECTOR_PORT}"
        collector = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns(host_node.name), exe, "collector", "serve",
             "--store", str(store), "--host", host_node.v4, "--port", str(COLLECTOR_PORT)],
            stdout=subprocess.DEVNULL, stderr=open(workdir / "collector.log", "wb"))  # noqa: SIM115
        wait_for_collector(lab, host_node.name, host_node.v4, proc=collector)
        say(f"collector at {url} (in {host_node.name})")
        ca = lab.read_state()["ca"]
        result = CampaignResult(store=store, jsonl=workdir / "campaign.jsonl",
                                started=datetime.now(UTC), degraded_at=None,
                                degradation=degradation)
        for region in topo.of_role("client"):
            agent = f"{region.name}-1"
            token = subprocess.run([exe, "collector", "add-agent", agent, "--store", str(store)],
                                   capture_output=True, text=True, check=True, timeout=30)
            (workdir / f"{agent}.token").write_text(token.stdout.strip().splitlines()[-1])
            label = f"{region.country}-{region.iata}" if region.country else region.name
            plan = workdir / f"{agent}.toml"
            plan.write_text(_plan_text(agent, label, topo, url, ca, interval_s, tests))
            agents[agent] = subprocess.Popen(
                ["ip", "netns", "exec", lab.ns(region.name), exe, "agent", "run", "--plan",
                 str(plan), "--duration", str(duration_s), "--status-interval", "60"],
                stdout=subprocess.DEVNULL, stderr=open(workdir / f"{agent}.log", "wb"))  # noqa: SIM115
            result.agents[agent] = region.name
        say(f"{len(agents)} agents measuring for {duration_s:g} s every {interval_s:g} s")
        t0 = time.monotonic()
        if degradation is not None:
            time.sleep(max(0.0, degradation.at_s - (time.monotonic() - t0)))
            lab.set_link(degradation.a, degradation.b, delay_ms=degradation.delay_ms,
                         jitter_ms=degradation.jitter_ms, loss=degradation.loss)
            result.degraded_at = datetime.now(UTC)
            say(f"degraded link {degradation.a}-{degradation.b} at "
                f"{result.degraded_at:%H:%M:%S} UTC")
        for agent, proc in agents.items():
            proc.wait(timeout=duration_s + 120)
            if proc.returncode != 0:
                raise RuntimeError(f"agent {agent} exited {proc.returncode}; see "
                                   f"{workdir / (agent + '.log')}")
        say("agents done; exporting")
    finally:
        for proc in agents.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        if collector is not None and collector.poll() is None:
            collector.send_signal(signal.SIGTERM)
            try:
                collector.wait(timeout=15)
            except subprocess.TimeoutExpired:
                collector.kill()
        lab.down()
    subprocess.run([exe, "export", "--store", str(store), "--format", "jsonl", "-o",
                    str(result.jsonl)], check=True, capture_output=True, timeout=300)
    from .results import read_jsonl

    records = read_jsonl(result.jsonl)
    for record in records:
        result.counts[record.kind] = result.counts.get(record.kind, 0) + 1
    return result


def wait_for_collector(lab: Lab, node: str, host: str, port: int = COLLECTOR_PORT, *,
                       proc: subprocess.Popen[Any] | None = None, tries: int = 150) -> None:
    """Return once the collector at ``host:port`` answers ``/v1/health`` from inside ``node``.

    Raises :class:`RuntimeError` if ``proc`` (the collector) exits first, or after
    ``tries`` attempts 0.1 s apart.
    """
    probe = ("import http.client,sys\n"
             f"c=http.client.HTTPConnection('{host}',{port},timeout=1)\n"
             "c.request('GET','/v1/health'); sys.exit(c.getresponse().status!=200)")
    for _ in range(tries):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the collector exited ({proc.returncode})")
        if subprocess.run(["ip", "netns", "exec", lab.ns(node), sys.executable, "-c", probe],
                          capture_output=True, timeout=10).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("the collector did not come up")
