"""Paris ICMP traceroute to 256 destinations six hops away: netvantage against
scamper and Debian traceroute.

The lab (namespaces ``nvt-t-*``, addresses only in 10.235.0.0/16 and
fd00:235::/32, no link to the root namespace) is a client, a chain of five
routers and a destination namespace holding 256 /32 addresses on its ``lo``
(10.235.200.0-255), so every destination answers at TTL 6::

    client -- r1 -- r2 -- r3 -- r4 -- r5 -- dest (256 x /32 on lo)

Every tool runs as its own process inside the client namespace
(``ip netns exec``).  Wall time is measured around the process; CPU (user +
sys) is the ``getrusage(RUSAGE_CHILDREN)`` delta less the calibrated cost of
the wrapper (GNU ``time`` + ``ip netns exec``); max RSS comes from GNU ``time``
(``ip netns exec`` execs the tool, so the high-water mark is the tool's).  Probes sent are
counted by a counting-only iptables rule (ICMP echo requests leaving the
client), the same way for every tool.  Debian ``traceroute`` handles one
destination per process: all 256 run, at most ``--pool`` at a time; its CPU
is the sum over the processes, its RSS the largest one.

Hop agreement: for each destination and each TTL from 1 to the last hop
either tool reports, the set of responders ('*' = none) must be equal;
the figure is the fraction of such (destination, TTL) pairs that agree
with netvantage's.

    .venv/bin/python bench/trace_bench.py [--repeat 3] [--pps 1000] [--pool 32]

Needs root.  Removes every namespace it made, even when interrupted.  Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

PREFIX = "nvt-t-"
CLIENT = PREFIX + "c"
ROUTERS = [f"{PREFIX}r{i}" for i in range(1, 6)]
DEST = PREFIX + "d"
CHAIN = [CLIENT, *ROUTERS, DEST]  # node j and node j+1 share link j+1
DEST_NET = "10.235.200.0/24"
DESTS = [f"10.235.200.{i}" for i in range(256)]
CLIENT_NET = "10.235.1.0/24"
HOPS = 6
NETVANTAGE = str(Path(sys.executable).parent / "netvantage")  # the console script

# (destination, TTL) -> responders; a missing TTL is the same as no responder.
Paths = dict[str, dict[int, frozenset[str]]]


# ----------------------------------------------------------------------------- lab


def sh(*args: str, input: str | None = None, check: bool = True) -> str:
    done = subprocess.run(args, input=input, capture_output=True, text=True, timeout=60,
                          check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)!r} failed ({done.returncode}): "
                           f"{done.stderr.strip()}")
    return done.stdout


def ours() -> list[str]:
    names = [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]
    return [n for n in names if n.startswith(PREFIX)]


def cleanup() -> None:
    for ns in ours():
        sh("ip", "netns", "del", ns, check=False)


def batch(ns: str, commands: Sequence[str]) -> None:
    """Run ``ip`` commands in namespace ``ns`` in one process."""
    sh("ip", "-n", ns, "-batch", "-", input="\n".join(commands) + "\n")


def build() -> None:
    for ns in CHAIN:
        sh("ip", "netns", "add", ns)
        keys = ["net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"]
        if ns != CLIENT:  # answer every probe: no per-peer nor global ICMP limit
            keys += ["net.ipv4.icmp_msgs_per_sec=1000000", "net.ipv4.icmp_msgs_burst=100000"]
        if ns in ROUTERS:
            keys += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", *keys)
    cmds: dict[str, list[str]] = {ns: ["link set lo up"] for ns in CHAIN}
    for k in range(1, len(CHAIN)):  # link k: node k-1 (.1, ::1) <-> node k (.2, ::2)
        left, right = CHAIN[k - 1], CHAIN[k]
        sh("ip", "link", "add", f"e{k}l", "netns", left, "type", "veth", "peer", "name",
           f"e{k}r", "netns", right)
        for ns, dev, host in ((left, f"e{k}l", 1), (right, f"e{k}r", 2)):
            cmds[ns] += [f"link set {dev} up",  # up before addresses (IPv6: no DAD wait)
                         f"addr add 10.235.{k}.{host}/24 dev {dev}",
                         f"addr add fd00:235:{k}::{host}/64 dev {dev} nodad"]
    for j, ns in enumerate(CHAIN):
        if j < len(CHAIN) - 1:  # forward: the destinations, via the next node
            cmds[ns] += [f"route add {DEST_NET} via 10.235.{j + 1}.2",
                         f"route add fd00:235:200::/64 via fd00:235:{j + 1}::2"]
        if j > 1:  # back to the client's link, via the previous node
            cmds[ns] += [f"route add {CLIENT_NET} via 10.235.{j}.1",
                         f"route add fd00:235:1::/64 via fd00:235:{j}::1"]
    cmds[DEST] += [f"addr add {a}/32 dev lo" for a in DESTS]
    for ns in CHAIN:
        batch(ns, cmds[ns])
    # Count ICMP echo requests leaving the client (a rule with no target only counts).
    sh("ip", "netns", "exec", CLIENT, "iptables", "-w", "-A", "OUTPUT", "-p", "icmp",
       "--icmp-type", "echo-request")
    # Warm the neighbour caches on every link, and check the path end to end.
    for dst in (DESTS[0], DESTS[-1]):
        sh("ip", "netns", "exec", CLIENT, "ping", "-n", "-q", "-c", "1", "-W", "2", dst)


def probes_counted() -> int:
    """Echo requests the client sent since the last call (the counter is zeroed)."""
    out = sh("ip", "netns", "exec", CLIENT, "iptables", "-w", "-L", "OUTPUT", "-v", "-x",
             "-n", "-Z")
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0].isdigit() and "icmp" in line:
            return int(fields[0])
    raise RuntimeError(f"no counting rule in the client's OUTPUT chain:\n{out}")


# ----------------------------------------------------------------------------- running


@dataclass
class Usage:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    rss_kb: int = 0


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_measured(argv: Sequence[str]) -> tuple[Usage, str]:
    """Run ``argv`` in the client namespace: wall, CPU (user + sys) and max RSS.

    GNU ``time`` (a small process) forks and execs ``ip netns exec``, which execs
    the tool: the RSS high-water mark is the tool's, not a copy of this Python
    process (``wait4()`` straight from here would count the forked copy).  The
    CPU figure here is GNU time's (10 ms steps); :func:`measure` replaces it.
    """
    with tempfile.NamedTemporaryFile("r", prefix="nvt-t-time-") as stats:
        t0 = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-o", stats.name, "-f", "%U %S %M",
                               "ip", "netns", "exec", CLIENT, *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600,
                              check=False)
        wall = time.perf_counter() - t0
        figures = stats.read().split()
    text = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... exited {done.returncode}:\n"
                           f"{text[-2000:]}")
    user, system, rss_kb = figures[-3:]
    return Usage(wall, float(user) + float(system), int(rss_kb)), text


@dataclass
class Run:
    tool: str
    probes: int
    usage: list[Usage] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    paths: Paths = field(default_factory=dict)
    reached: int = 0
    note: str = ""


def netvantage(q: int, pps: int, workdir: Path) -> tuple[Usage, Paths, int]:
    out = workdir / f"nv-q{q}.jsonl"
    usage, _ = run_measured([NETVANTAGE, "measure", "trace", *DESTS,
                             "-P", "icmp", "--method", "raw", "--probes", str(q),
                             "--pps", str(pps), "--concurrency", "256", "-4",
                             "--output", str(out)])
    paths: Paths = {}
    reached = 0
    for line in out.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        body = rec["body"]
        reached += bool(body["reached"])
        paths[rec["address"]] = {
            hop["ttl"]: frozenset(r["address"] for r in hop["responders"])
            for hop in body["hops"]}
    return usage, paths, reached


def scamper(q: int, pps: int, workdir: Path) -> tuple[Usage, Paths, int]:
    targets, out = workdir / "targets.txt", workdir / f"scamper-q{q}.json"
    targets.write_text("\n".join(DESTS) + "\n")
    # -q is scamper's *maximum* attempts per hop; -Q sends them all, like the others.
    command = f"trace -P icmp-paris -q {q}" + (" -Q" if q > 1 else "")
    usage, _ = run_measured(["scamper", "-c", command, "-p", str(pps), "-O", "json",
                             "-o", str(out), "-f", str(targets)])
    paths: Paths = {}
    reached = 0
    for line in out.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("type") != "trace":
            continue
        reached += rec.get("stop_reason") == "COMPLETED"
        hops: dict[int, set[str]] = {}
        for hop in rec.get("hops", []):
            hops.setdefault(int(hop["probe_ttl"]), set()).add(str(hop["addr"]))
        paths[rec["dst"]] = {ttl: frozenset(a) for ttl, a in hops.items()}
    return usage, paths, reached


_HOP_LINE = re.compile(r"^\s*(\d+)\s+(.*)$")
_ADDR = re.compile(r"\d+\.\d+\.\d+\.\d+")


def traceroute(q: int, pool: int) -> tuple[Usage, Paths, int]:
    t0 = time.perf_counter()

    def one(dst: str) -> tuple[Usage, str]:
        return run_measured(["traceroute", "-n", "-I", "-q", str(q), dst])

    with ThreadPoolExecutor(pool) as ex:
        results = list(ex.map(one, DESTS))
    wall = time.perf_counter() - t0
    paths: Paths = {}
    reached = 0
    for dst, (_u, text) in zip(DESTS, results, strict=True):
        hops: dict[int, frozenset[str]] = {}
        for line in text.splitlines()[1:]:  # the first line is the banner
            m = _HOP_LINE.match(line)
            if m:
                hops[int(m.group(1))] = frozenset(_ADDR.findall(m.group(2)))
        paths[dst] = hops
        reached += bool(hops) and dst in hops[max(hops)]
    usage = Usage(wall, sum(u.cpu_s for u, _ in results), max(u.rss_kb for u, _ in results))
    return usage, paths, reached


def wrapper_cpu(n: int = 40) -> float:
    """CPU seconds that GNU time + ``ip netns exec`` add to each process run."""
    c0 = children_cpu()
    for _ in range(n):
        run_measured(["true"])
    return (children_cpu() - c0) / n


def measure(tool: str, q: int, args: argparse.Namespace, workdir: Path,
            overhead: float) -> tuple[Usage, Paths, int]:
    """One run of ``tool``; CPU is the getrusage(RUSAGE_CHILDREN) delta (microseconds)
    less the calibrated wrapper overhead per process."""
    c0 = children_cpu()
    if tool == "netvantage":
        usage, paths, reached = netvantage(q, args.pps, workdir)
    elif tool == "scamper":
        usage, paths, reached = scamper(q, args.pps, workdir)
    else:
        usage, paths, reached = traceroute(q, args.pool)
    processes = len(DESTS) if tool == "traceroute" else 1
    usage.cpu_s = max(0.0, children_cpu() - c0 - processes * overhead)
    return usage, paths, reached


# ----------------------------------------------------------------------------- report


def agreement(ref: Paths, other: Paths) -> tuple[float, int]:
    """Fraction of (destination, TTL) pairs with the same responders, and the pair count."""
    same = total = 0
    for dst in DESTS:
        a, b = ref.get(dst, {}), other.get(dst, {})
        last = max([*a, *b], default=0)
        for ttl in range(1, last + 1):
            total += 1
            same += a.get(ttl, frozenset()) == b.get(ttl, frozenset())
    return (same / total if total else 0.0), total


def median_usage(us: Sequence[Usage]) -> Usage:
    return Usage(statistics.median(u.wall_s for u in us), statistics.median(u.cpu_s for u in us),
                 int(statistics.median(u.rss_kb for u in us)))


def report(runs: Sequence[Run], pps: int, repeat: int, pool: int) -> None:
    print(f"\n{len(DESTS)} destinations, {HOPS} hops away; Paris ICMP; {pps} probes/s for "
          f"netvantage and scamper; median of {repeat} run(s)")
    head = ("tool", "q", "wall s", "CPU s", "max RSS MB", "probes sent", "reached",
            "hops = netvantage")
    rows: list[tuple[str, ...]] = [head]
    for r in runs:
        u = median_usage(r.usage)
        nv = next(x for x in runs if x.tool == "netvantage" and x.probes == r.probes)
        if r is nv:
            agree = "(reference)"
        else:
            frac, pairs = agreement(nv.paths, r.paths)
            agree = f"{frac:.1%} of {pairs}"
        rows.append((r.tool + r.note, str(r.probes), f"{u.wall_s:.2f}", f"{u.cpu_s:.2f}",
                     f"{u.rss_kb / 1024:.1f}", str(int(statistics.median(r.sent))),
                     f"{r.reached}/{len(DESTS)}", agree))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\ntraceroute*: Debian traceroute -n -I, one process per destination, all "
          f"{len(DESTS)} run, {pool} at a time\n  (its own pacing, not --pps); wall = the "
          "whole pool, CPU = sum of the processes, RSS = the largest.")
    print("scamper q>1 runs with -Q (send every attempt), as netvantage and traceroute do.")
    print("CPU = getrusage(RUSAGE_CHILDREN) delta less the wrapper's; max RSS from GNU time;\n"
          "probes sent = echo requests counted by iptables in the client namespace.")
    for q in sorted({r.probes for r in runs}):
        nv = next(r for r in runs if r.tool == "netvantage" and r.probes == q)
        sc = next((r for r in runs if r.tool == "scamper" and r.probes == q), None)
        if sc is None:
            continue
        un, us = median_usage(nv.usage), median_usage(sc.usage)
        verdict = [f"wall {un.wall_s / us.wall_s:.2f} x scamper (goal <= 1.0)",
                   f"CPU {un.cpu_s:.2f} s (goal <= 1)", f"RSS {un.rss_kb / 1024:.1f} MB "
                   "(goal <= 40)"]
        print(f"goals, q={q}: " + "; ".join(verdict))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each tool (median shown)")
    ap.add_argument("--pps", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=32, help="traceroute processes at once")
    ap.add_argument("--probes", type=int, nargs="+", default=[1, 3], help="probes per hop")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, raw sockets)", file=sys.stderr)
        return 2

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    cleanup()
    runs: list[Run] = []
    try:
        t0 = time.perf_counter()
        build()
        print(f"lab up in {time.perf_counter() - t0:.2f} s: {' -- '.join(CHAIN)}, "
              f"{len(DESTS)} destinations {DESTS[0]}..{DESTS[-1]}")
        overhead = wrapper_cpu()
        print(f"GNU time + ip netns exec cost {overhead * 1000:.1f} ms CPU per process "
              "(subtracted)")
        with tempfile.TemporaryDirectory(prefix="nvt-t-bench-") as tmp:
            workdir = Path(tmp)
            for q in args.probes:
                nv, sc = Run("netvantage", q), Run("scamper", q)
                tr = Run("traceroute", q, note="*")
                runs += [nv, sc, tr]
                for _ in range(args.repeat):
                    probes_counted()
                    for r in (nv, sc, tr):
                        usage, paths, reached = measure(r.tool, q, args, workdir, overhead)
                        r.usage.append(usage)
                        r.sent.append(probes_counted())
                        r.paths, r.reached = paths, reached
                        print(f"  {r.tool:<10} q={q}: {usage.wall_s:6.2f} s wall, "
                              f"{usage.cpu_s:5.2f} s CPU, {usage.rss_kb / 1024:5.1f} MB, "
                              f"{r.sent[-1]} probes, {reached} reached", flush=True)
        report(runs, args.pps, args.repeat, args.pool)
    finally:
        cleanup()
        left = ours()
        if left:
            print(f"could not remove: {left}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
