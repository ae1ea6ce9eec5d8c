"""The probe agent's steady-state memory and CPU: 20 targets x 5 tests, once a minute.

Brings up its own lab (prefix ``nvtf``), starts ``netvantage collector serve``
inside ``nvtf-dc-ams`` at dc-ams's address, and runs one agent
(``netvantage agent run``) inside ``nvtf-lon`` with a plan of 20 targets (the
17 lab nodes' IPv4 addresses, plus the three data centres' IPv6 addresses as
targets ``dc-*-v6``) x 5 tests (``ping``, ``tcp:25``, ``trace``, ``smtp:25``,
``imap:993``; the data centres with the lab CA and ``mail.<dc>.lab``; routers
and clients refuse 25 and 993, which is still a measurement), interval 60 s,
jitter 5 s, start spread 30 s, for ``--duration`` seconds (210 by default).

``ip netns exec`` execs the agent, so the child's pid is the agent's own.  It
is sampled every second from /proc (VmRSS, VmHWM, utime+stime).  Printed:

* RSS at start-up (when the agent logs its first line: imports done, plan
  loaded, spool open) and its course over the run;
* steady state over the last 120 s: median and max RSS, and CPU seconds per
  minute; the peak (VmHWM); private vs shared memory (smaps_rollup);
* records measured (the agent's own final status line) and uploaded (rows in
  the collector's store);
* what costs memory: RSS of fresh Python processes after importing
  (a) ``netvantage.agent.run``, (b) + ping/tcp/trace, (c) + mail, (d) the CLI
  entry point with all of these (what the agent process imports),
  (e) ``scapy.layers.inet`` for comparison; then, in one fresh process, the RSS
  added by each top-level package of what the agent imports (stdlib first, then
  each third-party package, ``netvantage`` last), and the native extension
  modules mapped in the running agent (from /proc/PID/maps).

Goal (issue): at most 40 MB RSS in steady state.

``--metrics``: the agent also serves Prometheus metrics (``--metrics-listen
127.0.0.1:9469`` inside its namespace), scraped every 15 s from a helper
process in the same namespace, as a Prometheus server would; the scrapes that
worked are counted.

    .venv/bin/python bench/agent_footprint.py [--duration 210] [--metrics]

Needs root.  Stops the agent and the collector by pid and takes the lab down,
even when interrupted.  Exits non-zero when something crashed (the agent or the
collector failed, the lab did not come up); an agent over the goal is reported,
not an error.  Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netvantage.campaign import wait_for_collector
from netvantage.lab.core import Lab
from netvantage.lab.topology import load_topology

NETVANTAGE = str(Path(sys.executable).with_name("netvantage"))
PREFIX = "nvtf"
PORT = 8750
AGENT = "lon-footprint"
REGION = "lon"
GOAL_MB = 40.0
STEADY_S = 120.0
TESTS = ["ping", "tcp:25", "trace", "smtp:25", "imap:993"]
V6_TARGETS = ["dc-ams", "dc-jnb", "dc-yyz"]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# What the agent process imports: the CLI entry point, the agent, and (lazily,
# on first use) each probe module its plan's tests need.
AGENT_IMPORTS = ["netvantage.cli", "netvantage.agent.run", "netvantage.agent.plan",
                 "netvantage.agent.spool", "netvantage.agent.upload",
                 "netvantage.measure.ping", "netvantage.measure.tcp",
                 "netvantage.measure.trace", "netvantage.measure.mail"]
IMPORT_STEPS = [
    ("(a) netvantage.agent.run", ["netvantage.agent.run"]),
    ("(b) (a) + measure.ping, tcp, trace",
     ["netvantage.agent.run", "netvantage.measure.ping", "netvantage.measure.tcp",
      "netvantage.measure.trace"]),
    ("(c) (b) + measure.mail (asn1crypto, ssl)",
     ["netvantage.agent.run", "netvantage.measure.ping", "netvantage.measure.tcp",
      "netvantage.measure.trace", "netvantage.measure.mail"]),
    ("(d) (c) + netvantage.cli (= the agent process)", AGENT_IMPORTS),
    ("(e) scapy.layers.inet, for comparison", ["scapy.layers.inet"]),
    ("    scapy.all, for comparison", ["scapy.all"]),
]


def mb(kb: float) -> float:
    return kb / 1024.0


# -- /proc -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sample:
    t: float          # seconds since the agent started
    rss_kb: int
    hwm_kb: int
    cpu_s: float      # utime + stime


def read_sample(pid: int, t0: float) -> Sample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie has no memory lines
        return None
    rest = stat.rsplit(")", 1)[1].split()  # fields after the command name; [0] is field 3
    cpu = (int(rest[11]) + int(rest[12])) / CLK_TCK  # utime, stime (fields 14, 15)
    return Sample(time.monotonic() - t0, int(fields["VmRSS"].split()[0]),
                  int(fields["VmHWM"].split()[0]), cpu)


def smaps_rollup(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+):\s+(\d+) kB", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def native_modules(pid: int) -> list[str]:
    """Shared objects mapped by the process, shortened to site-packages/… or lib-dynload/…"""
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    seen: set[str] = set()
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and ".so" in parts[5]:
            path = parts[5].strip()
            for marker in ("site-packages/", "lib-dynload/"):
                if marker in path:
                    path = path.split(marker, 1)[1]
                    break
            else:
                path = os.path.basename(path)
            seen.add(path)
    return sorted(seen)


# -- import costs in fresh processes -------------------------------------------

_RSS_SNIPPET = ("import re\n"
                "def rss():\n"
                "    s = open('/proc/self/status').read()\n"
                "    return int(re.search(r'VmRSS:\\s+(\\d+)', s).group(1))\n")


def fresh_rss(modules: list[str]) -> int | None:
    code = _RSS_SNIPPET + "".join(f"import {m}\n" for m in modules) + "print(rss())\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        return None
    return int(proc.stdout.split()[-1])


_GROUPS_SNIPPET = _RSS_SNIPPET + """
import importlib, json, sys
modules = json.loads(sys.argv[1])
before = set(sys.modules)
for m in modules:
    importlib.import_module(m)
print(json.dumps(sorted(set(sys.modules) - before)))
"""

_ATTRIBUTE_SNIPPET = _RSS_SNIPPET + """
import importlib, json, sys
groups = json.loads(sys.argv[1])
out = [["(bare interpreter)", rss(), 0]]
for name, mods in groups:
    done = 0
    for m in mods:
        try:
            importlib.import_module(m)
            done += 1
        except Exception:
            pass
    out.append([name, rss(), done])
print(json.dumps(out))
"""


def module_breakdown() -> tuple[list[tuple[str, int, int]], list[str]]:
    """RSS added by each top-level package of what the agent imports (fresh process).

    Returns rows (package, kB added, modules) and the sorted list of top-level names."""
    out = subprocess.run([sys.executable, "-c", _GROUPS_SNIPPET, json.dumps(AGENT_IMPORTS)],
                         capture_output=True, text=True, timeout=120, check=True)
    loaded: list[str] = json.loads(out.stdout)
    by_top: dict[str, list[str]] = {}
    for m in loaded:
        top = m.split(".")[0]
        if top not in ("__main__", "_distutils_hack"):
            by_top.setdefault(top, []).append(m)
    stdlib = set(sys.stdlib_module_names)
    std_mods = [m for top, mods in by_top.items() if top in stdlib for m in mods]
    others = sorted(t for t in by_top if t not in stdlib and t != "netvantage")
    groups: list[tuple[str, list[str]]] = [("stdlib (asyncio, ssl, sqlite3, http, ...)",
                                            sorted(std_mods, key=len))]
    groups += [(t, sorted(by_top[t], key=len)) for t in others]
    groups.append(("netvantage", sorted(by_top.get("netvantage", []), key=len)))
    res = subprocess.run([sys.executable, "-c", _ATTRIBUTE_SNIPPET, json.dumps(groups)],
                         capture_output=True, text=True, timeout=120, check=True)
    rows = json.loads(res.stdout)
    pairs = zip(rows[1:], rows, strict=False)
    table = [(name, rss - prev, n) for (name, rss, n), (_, prev, _) in pairs if n]
    table.insert(0, (rows[0][0], rows[0][1], 0))
    return table, sorted(by_top)


# -- lab, collector, agent ------------------------------------------------------

def stop_pid(proc: subprocess.Popen[Any] | None, grace_s: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def start_collector(lab: Lab, store: Path) -> subprocess.Popen[str]:
    host = lab.topology.nodes["dc-ams"].v4
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns("dc-ams"), NETVANTAGE, "collector", "serve",
         "--store", str(store), "--host", host, "--port", str(PORT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_collector(lab, "dc-ams", host, PORT, proc=proc)
    except RuntimeError as exc:
        err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        raise RuntimeError(f"{exc}: {err.strip()}") from None
    return proc


def add_agent(store: Path, name: str) -> str:
    out = subprocess.run([NETVANTAGE, "collector", "add-agent", name, "--store", str(store)],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"add-agent failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def write_plan(lab: Lab, work: Path, token: str) -> tuple[Path, int]:
    topo = lab.topology
    ca = lab.read_state()["ca"]
    (work / f"{AGENT}.token").write_text(token)
    blocks = []

    def block(name: str, address: str, node: str) -> str:
        text = (f'[[targets]]\nname = "{name}"\naddresses = ["{address}"]\n'
                f"tests = {json.dumps(TESTS)}\n")
        if topo.nodes[node].role == "dc":
            text += f'server_name = "mail.{node}.lab"\nca_file = "{ca}"\n'
        return text

    for node in topo.nodes.values():
        blocks.append(block(node.name, node.v4, node.name))
    for name in V6_TARGETS:
        blocks.append(block(f"{name}-v6", topo.nodes[name].v6, name))
    plan = work / f"{AGENT}.toml"
    plan.write_text(f"""
[agent]
name = "{AGENT}"
region = "GB-LON"
spool = "{AGENT}.spool.sqlite"

[collector]
url = "http://{topo.nodes['dc-ams'].v4}:{PORT}"
token_file = "{AGENT}.token"
batch_size = 500
upload_interval_s = 5

[schedule]
interval_s = 60
jitter_s = 5
start_spread_s = 30
concurrency = 4
max_starts_per_s = 5

[defaults]
ping = {{ count = 10, interval_s = 0.2, timeout_s = 2.0 }}
tcp = {{ attempts = 3, interval_s = 0.5, timeout_s = 3.0 }}
trace = {{ probes_per_hop = 3, max_ttl = 30, pps = 50 }}
smtp = {{ timeout_s = 20.0 }}
imap = {{ timeout_s = 20.0 }}

""" + "\n".join(blocks))
    return plan, len(blocks)


class LineReader(threading.Thread):
    """Collects a child's stderr lines with the time each arrived."""

    def __init__(self, stream: Any, t0: float) -> None:
        super().__init__(daemon=True)
        self.stream, self.t0 = stream, t0
        self.lines: list[tuple[float, str]] = []

    def run(self) -> None:
        for line in self.stream:
            self.lines.append((time.monotonic() - self.t0, line.rstrip("\n")))


# -- the run ----------------------------------------------------------------------

class Scraper(threading.Thread):
    """Scrapes the agent's /metrics every 15 s from inside its namespace."""

    def __init__(self, ns: str) -> None:
        super().__init__(daemon=True)
        self.ns = ns
        self.ok = 0
        self.failed = 0
        self.series = 0
        self.stop = threading.Event()

    def run(self) -> None:
        code = ("import urllib.request as u; print(sum(1 for l in u.urlopen("
                "'http://127.0.0.1:9469/metrics', timeout=5).read().decode().splitlines() "
                "if l and not l.startswith('#')))")
        while not self.stop.wait(15):
            done = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", code],
                                  capture_output=True, text=True, timeout=30)
            if done.returncode == 0 and done.stdout.strip().isdigit():
                self.ok += 1
                self.series = int(done.stdout)
            else:
                self.failed += 1


def run(duration: float, metrics: bool = False) -> int:
    print(f"agent footprint: 20 targets x {len(TESTS)} tests ({', '.join(TESTS)}), "
          f"interval 60 s, {duration:g} s run, lab {PREFIX}", flush=True)
    print("\nimport cost, fresh processes (RSS after the imports):", flush=True)
    bare = fresh_rss([])
    print(f"  {'bare python':<50} {mb(bare or 0):6.1f} MB")
    for label, mods in IMPORT_STEPS:
        kb = fresh_rss(mods)
        print(f"  {label:<50} " + (f"{mb(kb):6.1f} MB" if kb is not None else "  (n/a)"),
              flush=True)
    table, tops = module_breakdown()
    print("\nRSS added by each top-level package the agent imports (one fresh process, "
          "in this order):")
    for name, kb, n in table:
        count = f"({n} modules)" if n else ""
        print(f"  {name:<42} {'+' if n else ' '}{mb(kb):5.1f} MB {count}")
    print(f"  third-party/top-level loaded: "
          f"{', '.join(t for t in tops if t not in sys.stdlib_module_names and t[0] != '_')}")
    heavy = [t for t in tops if t in ("scapy", "pandas", "pyarrow", "numpy", "matplotlib")]
    print(f"  scapy / pandas / pyarrow / numpy / matplotlib loaded: {', '.join(heavy) or 'none'}",
          flush=True)

    lab = Lab(PREFIX, load_topology())
    if lab.own_namespaces() or lab.state_file.exists():
        print(f"\n(removing a stale lab {PREFIX!r} first)")
        lab.down()
    collector = agent = None
    work = Path(tempfile.mkdtemp(prefix="nv-footprint-"))
    work.chmod(0o755)
    try:
        t_lab = time.monotonic()
        lab.up()
        print(f"\nlab {PREFIX} up in {time.monotonic() - t_lab:.0f} s", flush=True)
        store = work / "store.sqlite"
        collector = start_collector(lab, store)
        token = add_agent(store, AGENT)
        plan, n_targets = write_plan(lab, work, token)
        t0 = time.monotonic()
        agent = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns(REGION), NETVANTAGE, "agent", "run", "--plan",
             str(plan), "--duration", str(duration), "--status-interval", "30",
             *(["--metrics-listen", "127.0.0.1:9469"] if metrics else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        scraper = Scraper(lab.ns(REGION)) if metrics else None
        if scraper is not None:
            scraper.start()
        reader = LineReader(agent.stderr, t0)
        reader.start()
        # Until ip has exec'd the agent, /proc shows ip itself.
        while agent.poll() is None:
            try:
                if b"agent" in Path(f"/proc/{agent.pid}/cmdline").read_bytes():
                    break
            except OSError:
                break
            time.sleep(0.005)
        samples: list[Sample] = []
        rollup: dict[str, int] = {}
        natives: list[str] = []
        while agent.poll() is None:
            s = read_sample(agent.pid, t0)
            if s is not None:
                samples.append(s)
                if s.t <= duration:
                    rollup = smaps_rollup(agent.pid) or rollup
                if not natives and s.t > 45:  # every probe module has run by now
                    natives = native_modules(agent.pid)
            if not any("measurement(s) every" in line for _, line in reader.lines):
                time.sleep(0.05)  # fine-grained until start-up is over
            else:
                time.sleep(1.0 - (time.monotonic() - t0) % 1.0)
        agent.wait()
        reader.join(timeout=5)
        if scraper is not None:
            scraper.stop.set()
            scraper.join(timeout=40)
            print(f"\nmetrics: --metrics-listen on, {scraper.ok} scrapes answered "
                  f"({scraper.series} samples in the last), {scraper.failed} failed")
        rc = agent.returncode
        agent_lines = reader.lines
        agent = None
        if rc != 0:
            tail = "\n".join(line for _, line in agent_lines[-15:])
            print(f"\nthe agent FAILED (exit {rc}):\n{tail}")
            return 1
        time.sleep(1)
        with sqlite3.connect(store) as db:
            stored = db.execute("SELECT count(*) FROM records WHERE agent = ?",
                                (AGENT,)).fetchone()[0]
        if collector.poll() is not None:
            print(f"\nthe collector died (exit {collector.returncode})")
            return 1
    finally:
        stop_pid(agent)
        stop_pid(collector)
        lab.down()
        subprocess.run(["rm", "-rf", str(work)], check=False)

    report(samples, agent_lines, rollup, natives, duration, stored, n_targets)
    return 0


def report(samples: list[Sample], lines: list[tuple[float, str]], rollup: dict[str, int],
           natives: list[str], duration: float, stored: int, n_targets: int) -> None:
    if not samples:
        print("no samples")
        return
    first_log = next((t for t, line in lines if "measurement(s) every" in line), None)
    startup = next((s for s in samples if first_log is not None and s.t >= first_log),
                   samples[0])
    steady = [s for s in samples if duration - STEADY_S <= s.t <= duration]
    final = next((line for _, line in reversed(lines) if "stopped:" in line), "")
    m = re.search(r"measured (\d+) \(ok (\d+)\).*?spool (\d+).*?uploaded (\d+)", final)
    print(f"\nagent in {PREFIX}-{REGION}: {n_targets} targets x {len(TESTS)} tests = "
          f"{n_targets * len(TESTS)} jobs, {len(samples)} samples (1/s after start-up)")
    print(f"  RSS after start-up ({startup.t:.1f} s, first log line)  {mb(startup.rss_kb):6.1f} MB")
    course = []
    for mark in range(30, int(duration) + 1, 30):
        s = min(samples, key=lambda x: abs(x.t - mark))
        course.append(f"{mark}s {mb(s.rss_kb):.1f}")
    print(f"  RSS course (MB)  {', '.join(course)}")
    if steady:
        rss = [s.rss_kb for s in steady]
        span = steady[-1].t - steady[0].t
        cpu_min = (steady[-1].cpu_s - steady[0].cpu_s) / span * 60 if span > 0 else 0.0
        print(f"  steady state ({steady[0].t:.0f}-{steady[-1].t:.0f} s): RSS median "
              f"{mb(statistics.median(rss)):.1f} MB, max {mb(max(rss)):.1f} MB")
        print(f"  CPU in steady state         {cpu_min:6.2f} s per minute "
              f"({cpu_min / 60 * 100:.1f} % of one core)")
    last = samples[-1]
    print(f"  peak RSS (VmHWM)            {mb(last.hwm_kb):6.1f} MB")
    print(f"  CPU total                   {last.cpu_s:6.2f} s over {last.t:.0f} s")
    if rollup:
        private = rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)
        shared = rollup.get("Shared_Clean", 0) + rollup.get("Shared_Dirty", 0)
        print(f"  at the end of steady state: private {mb(private):.1f} MB, shared "
              f"{mb(shared):.1f} MB, PSS {mb(rollup.get('Pss', 0)):.1f} MB, anonymous "
              f"{mb(rollup.get('Anonymous', 0)):.1f} MB")
    if m:
        print(f"  records measured {m.group(1)} (ok {m.group(2)}), uploaded {m.group(4)} "
              f"(spool left {m.group(3)}); in the collector's store: {stored}")
    else:
        print(f"  records: no final status line from the agent; in the collector's store: "
              f"{stored}")
    print(f"  native modules mapped in the agent ({len(natives)}): {', '.join(natives)}")
    if steady:
        worst = mb(max(s.rss_kb for s in steady))
        verdict = "within" if worst <= GOAL_MB else "OVER"
        print(f"\ngoal <= {GOAL_MB:g} MB steady-state RSS: {verdict} ({worst:.1f} MB max)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=210.0,
                        help="Seconds the agent runs (the last 120 s are steady state).")
    parser.add_argument("--metrics", action="store_true",
                        help="Run the agent with --metrics-listen and scrape it every 15 s.")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.duration < STEADY_S + 35:
        print(f"--duration must be at least {STEADY_S + 35:g} s", file=sys.stderr)
        return 2

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    return run(args.duration, args.metrics)


if __name__ == "__main__":
    sys.exit(main())
