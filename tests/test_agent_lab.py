"""Agents in lab regions upload to a collector in a lab data centre: a campaign lands with
the right counts; kill -9 of the agent and an outage of the collector lose and duplicate
nothing."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import NETVANTAGE
from netvantage.agent.spool import Spool
from netvantage.agent.upload import MAX_BACKOFF_S
from netvantage.campaign import wait_for_collector
from netvantage.results import decode_record
from waiting import wait_until

pytestmark = pytest.mark.lab
PORT = 8750


class Collector:
    """``netvantage collector serve`` inside the dc-ams namespace, at its node address."""

    def __init__(self, lab, store: Path) -> None:
        self.lab, self.store = lab, store
        self.host = lab.topology.nodes["dc-ams"].v4
        self.url = f"http://{self.host}:{PORT}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.ns("dc-ams"), NETVANTAGE, "collector", "serve",
             "--store", str(self.store), "--host", self.host, "--port", str(PORT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for_collector(self.lab, "dc-ams", self.host, PORT, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def add_agent(self, name: str) -> str:
        out = subprocess.run([NETVANTAGE, "collector", "add-agent", name, "--store",
                              str(self.store)], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        with sqlite3.connect(self.store) as db:
            return db.execute("SELECT id, agent, kind, target, json FROM records").fetchall()


@pytest.fixture
def collector(lab, tmp_path):
    tmp_path.chmod(0o755)
    c = Collector(lab, tmp_path / "store.sqlite")
    c.start()
    try:
        yield c
    finally:
        c.stop()


def write_plan(lab, tmp_path: Path, collector: Collector, agent: str, region: str,
               tests: list[str], interval: float = 5.0) -> Path:
    token = collector.add_agent(agent)
    (tmp_path / f"{agent}.token").write_text(token)
    ca = lab.read_state()["ca"]
    targets = "\n".join(f"""
[[targets]]
name = "{dc.name}"
addresses = ["{dc.v4}"]
tests = {json.dumps(tests)}
server_name = "mail.{dc.name}.lab"
ca_file = "{ca}"
""" for dc in lab.topology.of_role("dc"))
    plan = tmp_path / f"{agent}.toml"
    plan.write_text(f"""
[agent]
name = "{agent}"
region = "{region}"
spool = "{agent}.spool.sqlite"
[collector]
url = "{collector.url}"
token_file = "{agent}.token"
upload_interval_s = 0.5
timeout_s = 5
[schedule]
interval_s = {interval}
start_spread_s = 0.5
concurrency = 8
max_starts_per_s = 50
[defaults]
ping = {{ count = 3, interval_s = 0.1, timeout_s = 1.0 }}
tcp = {{ attempts = 2, interval_s = 0.1, timeout_s = 2.0 }}
trace = {{ probes_per_hop = 1, probe_timeout_s = 1.0, pps = 200 }}
smtp = {{ timeout_s = 10.0 }}
{targets}
""")
    return plan


def run_agent(lab, region: str, plan: Path, duration: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.ns(region), NETVANTAGE, "agent", "run", "--plan", str(plan),
         "--audit", "--duration", str(duration), "--status-interval", "5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def audit(plan: Path, agent: str) -> tuple[Counter[tuple[str, str, str]], set[str], int]:
    spool = Spool(plan.parent / f"{agent}.spool.sqlite")
    try:
        rows = spool.audit_ids()
        depth = spool.depth()
    finally:
        spool.close()
    return Counter((agent, kind, target) for _, kind, target in rows), {r[0] for r in rows}, depth


def test_campaign_of_three_agents_lands_with_the_right_counts(lab, collector, tmp_path):
    regions = {"lun-1": "lun", "jnb-1": "jnb", "lon-1": "lon"}
    plans = {a: write_plan(lab, tmp_path, collector, a, r,
                           ["ping", "tcp:25", "smtp:25", "trace"], interval=5.0)
             for a, r in regions.items()}
    # Five slots at a 5 s interval (0, 5, 10, 15, 20 s): a round whose previous run of the
    # same test is still going at its slot is skipped (the agent never overlaps a test with
    # itself), as a loaded machine can make an SMTP handshake on the lab's longest path; at
    # least four rounds land all the same.
    procs = {a: run_agent(lab, regions[a], plans[a], 23) for a in regions}
    for proc in procs.values():
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
    stored = Counter((agent, kind, target) for _, agent, kind, target, _ in collector.rows())
    expected: Counter[tuple[str, str, str]] = Counter()
    for agent, plan in plans.items():
        counts, _, depth = audit(plan, agent)
        assert depth == 0, f"{agent} left {depth} record(s) in its spool"
        expected += counts
    assert stored == expected
    # 3 agents x every data centre x 4 tests, each at least 4 times in 23 s at a 5 s interval.
    dcs = len(lab.topology.of_role("dc"))
    assert len(expected) == 3 * dcs * 4 and min(expected.values()) >= 4, expected
    for *_, data in collector.rows()[:50]:
        decode_record(data)


def count(plan: Path, agent: str, table: str) -> int:
    """Rows of ``table`` in the agent's spool, read (only) while the agent runs."""
    path = plan.parent / f"{agent}.spool.sqlite"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        try:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        except sqlite3.OperationalError:  # the agent has not created its tables yet
            return 0


def spooled(plan: Path, agent: str) -> int:
    """How many results the agent has ever spooled (its audit table)."""
    return count(plan, agent, "audit")


def test_kill_9_twenty_times_loses_and_duplicates_nothing(lab, collector, tmp_path):
    rng = random.Random(20261128)
    plan = write_plan(lab, tmp_path, collector, "lon-k", "GB-LON", ["ping", "tcp:25"])
    kills = 0
    for _ in range(20):
        before = spooled(plan, "lon-k")
        proc = run_agent(lab, "lon", plan, 60)
        # Kill it while it measures, spools and uploads: once it has spooled a result
        # of its own, at a random moment of the next two seconds.
        def measuring(proc: subprocess.Popen[str] = proc, before: int = before) -> bool:
            return proc.poll() is not None or spooled(plan, "lon-k") > before

        wait_until(measuring, 60, "the agent's first result", poll_s=0.1)
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(rng.uniform(0.0, 2.0))  # not a wait: where the kill lands
        # ip netns exec execs the agent: the pid is the agent's own.
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
    final = run_agent(lab, "lon", plan, 3)
    _, err = final.communicate(timeout=60)
    assert final.returncode == 0, err
    _counts, ids, depth = audit(plan, "lon-k")
    rows = collector.rows()
    stored_ids = [r[0] for r in rows if r[1] == "lon-k"]
    print(f"\nkill -9 x{kills}: {len(ids)} results spooled, {len(stored_ids)} stored, "
          f"spool depth {depth}")
    assert depth == 0
    assert len(stored_ids) == len(set(stored_ids)), "a record was stored twice"
    assert set(stored_ids) == ids, "lost or unknown records"
    for row in rows:
        decode_record(row[4])  # nothing corrupt
    assert len(ids) > 20


def test_collector_outage_then_drain(lab, collector, tmp_path):
    plan = write_plan(lab, tmp_path, collector, "jnb-o", "ZA-JNB", ["ping", "tcp:25"])
    # The agent runs until told to stop (the duration only bounds a test gone wrong).
    proc = run_agent(lab, "jnb", plan, 240)
    try:
        wait_until(lambda: proc.poll() is not None or any(
            r[1] == "jnb-o" for r in collector.rows()), 60, "the agent's first upload",
            poll_s=0.2)
        assert proc.poll() is None, proc.communicate()[1]
        collector.stop()
        during = len(collector.rows())
        at_stop = spooled(plan, "jnb-o")
        # A whole round of measurements (6 jobs) spooled while nobody can take them.
        wait_until(lambda: spooled(plan, "jnb-o") >= at_stop + 6, 60,
                   "a round of results measured during the outage", poll_s=0.2)
        depth_during = count(plan, "jnb-o", "spool")
        collector.start()
        # The agent finds the collector again on its own and empties its spool, at the
        # latest one capped backoff after the restart.
        wait_until(lambda: count(plan, "jnb-o", "spool") == 0, MAX_BACKOFF_S + 30,
                   "the spool to drain", poll_s=0.2)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    _counts, ids, depth = audit(plan, "jnb-o")
    stored = [r[0] for r in collector.rows() if r[1] == "jnb-o"]
    print(f"\noutage: {during} stored before, {depth_during} spooled during the outage, "
          f"{len(stored)} stored in the end of {len(ids)} measured")
    assert depth_during > 0, "the outage should have left records in the spool"
    assert depth == 0 and sorted(stored) == sorted(ids)
