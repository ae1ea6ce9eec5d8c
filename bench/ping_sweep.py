"""A 1,000-target ping sweep: netvantage's shared-socket engine against fping and icmplib.

Two throw-away namespaces (``nvt-b-cli``, ``nvt-b-tgt``; 10.234.0.0/16 only, no
link to the root namespace) are joined by a veth pair; the target holds 1,000
/32 addresses on its ``lo`` (10.234.0.1 … 10.234.3.232), routed from the
client.  Then, one after the other, each as its own process inside the client
namespace, 3 echo requests go to every address at about 1,000 requests/s:

* ``fping -c 3 -i 1 -q`` (the reference: 1 ms between any two requests, 1 s per target);
* netvantage's engine, ``ping_many(..., concurrency=1000)`` with ``pace_s=0.001``
  and ``interval_s=1`` (raw and datagram sockets), records written as JSON Lines;
* the ``netvantage measure ping`` command as a user types it (no ``--concurrency``: every
  target active at once, the 1 ms ``--pace`` bounding the sweep), judged like the engine;
* icmplib ``multiping`` (privileged and unprivileged), for reference.

For each: wall time, CPU time (user + system, from ``wait4()`` of that process),
maximum RSS, requests sent and replies received as the tool reports them, and
loss.  Every address answers, so any loss is false loss.  Needs root; removes
everything it made (stale ``nvt-b-*`` namespaces first), even when interrupted.
Not a test: it prints figures, and exits non-zero only if it crashes.

    .venv/bin/python bench/ping_sweep.py [--targets 1000] [--count 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "nvt-b-"
NS_CLI, NS_TGT = PREFIX + "cli", PREFIX + "tgt"
CLI_ADDR, TGT_ADDR = "10.234.255.1", "10.234.255.2"
NETVANTAGE = str(Path(sys.executable).with_name("netvantage"))

# Goals from the issue, relative to fping where relative.
GOAL_WALL_X, GOAL_CPU_X, GOAL_RSS_MB = 1.0, 3.0, 40.0


def sh(*args: str, input: str | None = None) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, input=input,
                          timeout=120).stdout


def cleanup() -> None:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=30).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True,
                           timeout=30)


def targets(n: int) -> list[str]:
    """The first ``n`` host addresses of 10.234.0.0/16 (below the link's 10.234.255.0/24)."""
    if not 1 <= n <= 60_000:
        raise SystemExit("--targets must be 1..60000")
    out: list[str] = []
    i = 0
    while len(out) < n:
        i += 1
        if i & 0xFF not in (0, 255):
            out.append(f"10.234.{i >> 8}.{i & 0xFF}")
    return out


def build(addresses: list[str]) -> None:
    for ns in (NS_CLI, NS_TGT):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        for key in ("net.ipv4.icmp_ratelimit=0", "net.ipv4.ping_group_range=0 0"):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", key)
    sh("ip", "link", "add", "to-tgt", "netns", NS_CLI, "type", "veth",
       "peer", "name", "to-cli", "netns", NS_TGT)
    for ns, dev, addr in ((NS_CLI, "to-tgt", CLI_ADDR), (NS_TGT, "to-cli", TGT_ADDR)):
        sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
    sh("ip", "-n", NS_TGT, "-batch", "-",
       input="".join(f"addr add {a}/32 dev lo\n" for a in addresses))
    sh("ip", "-n", NS_CLI, "route", "add", "10.234.0.0/16", "via", TGT_ADDR)
    # Warm the neighbour entry so that the first request does not wait for ARP.
    sh("ip", "netns", "exec", NS_CLI, "ping", "-c", "1", "-W", "2", addresses[0])


@dataclass
class Row:
    tool: str
    wall_s: float
    cpu_s: float
    rss_mb: float
    sent: int
    received: int
    note: str = ""

    @property
    def loss(self) -> float:
        return 0.0 if not self.sent else 1 - self.received / self.sent


def run(argv: list[str], timeout_s: float = 300) -> tuple[float, float, float, str, str]:
    """Run ``argv`` in the client namespace; (wall, cpu, max RSS MB, stdout, stderr).

    ``ip netns exec`` execs the command in place.  CPU is user + system from
    ``wait4()`` (the tool plus the tiny ``/usr/bin/time`` around it); the maximum
    RSS comes from ``/usr/bin/time``, whose small process forks the tool (the
    rusage of a child forked from this Python would start at our own RSS)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file.name,
                                 "ip", "netns", "exec", NS_CLI, *argv], stdout=out, stderr=err)
        try:
            deadline = t0 + timeout_s
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    raise RuntimeError(f"{argv[0]} took more than {timeout_s} s")
                time.sleep(0.002)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
        rss_kb = int(rss_file.read().split()[-1])
    if proc.returncode not in (0, 1):  # fping exits 1 when some target did not answer
        raise RuntimeError(f"{argv} exited {proc.returncode}: {stderr[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, rss_kb / 1024, stdout, stderr


_FPING = re.compile(r"xmt/rcv/%loss = (\d+)/(\d+)/")


def run_fping(addr_file: str, count: int) -> Row:
    wall, cpu, rss, _out, err = run(["fping", "-c", str(count), "-i", "1", "-q",
                                     "-f", addr_file])
    pairs = [(int(a), int(b)) for a, b in _FPING.findall(err)]
    return Row("fping -c 3 -i 1 -q", wall, cpu, rss, sum(p[0] for p in pairs),
               sum(p[1] for p in pairs))


def run_child(code: str, addr_file: str, count: int, label: str, *extra: str) -> Row:
    wall, cpu, rss, out, _err = run([sys.executable, "-c", code, addr_file, str(count), *extra])
    result = json.loads(out.strip().splitlines()[-1])
    return Row(label, wall, cpu, rss, result["sent"], result["received"],
               result.get("note", ""))


def run_cli(addr_file: str, count: int) -> Row:
    addresses = Path(addr_file).read_text().split()
    wall, cpu, rss, out, _err = run([NETVANTAGE, "measure", "ping", *addresses,
                                     "-n", str(count), "-i", "1"])
    sent = received = 0
    for line in out.splitlines():
        body = json.loads(line)["body"]
        sent += body["sent"]
        received += body["received"]
    return Row("netvantage measure ping", wall, cpu, rss, sent, received,
               "the command as typed: no --concurrency")


# ----------------------------------------------------------------- children
# Each runs as ``python -c CODE ADDR_FILE COUNT [SOCKET]``, importing only what the
# tool needs, and prints one JSON line: {"sent": N, "received": M, ...}.

NETVANTAGE_CHILD = """
import asyncio, json, os, sys
from netvantage.measure.ping import PingOptions, ping_many
from netvantage.results import encode_record
addresses = open(sys.argv[1]).read().split()
opts = PingOptions(count=int(sys.argv[2]), interval_s=1.0, timeout_s=2.0, pace_s=0.001,
                   socket=sys.argv[3])
records = asyncio.run(ping_many(addresses, opts, concurrency=len(addresses)))
with open(os.devnull, "wb") as sink:  # the cost of encoding every record, as the CLI would
    for rec in records:
        sink.write(encode_record(rec) + b"\\n")
note = "socket=" + str(records[0].body.socket) + (" SCAPY IMPORTED" if "scapy" in sys.modules
                                                  else "")
print(json.dumps({"sent": sum(r.body.sent for r in records),
                  "received": sum(r.body.received for r in records), "note": note}))
"""

ICMPLIB_CHILD = """
import json, sys
from icmplib import multiping
addresses = open(sys.argv[1]).read().split()
hosts = multiping(addresses, count=int(sys.argv[2]), interval=1.0, timeout=2,
                  concurrent_tasks=len(addresses), privileged=sys.argv[3] == "raw")
print(json.dumps({"sent": sum(h.packets_sent for h in hosts),
                  "received": sum(h.packets_received for h in hosts),
                  "note": "no global pacing"}))
"""


# ----------------------------------------------------------------- report


def table(rows: list[Row]) -> str:
    head = ("tool", "wall s", "CPU s", "max RSS MB", "sent", "received", "loss", "note")
    cells = [head] + [(r.tool, f"{r.wall_s:.2f}", f"{r.cpu_s:.3f}", f"{r.rss_mb:.1f}",
                       str(r.sent), str(r.received), f"{r.loss:.1%}", r.note) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(rows: list[Row], fping: Row, ours: Row) -> list[str]:
    def ok(flag: bool) -> str:
        return "met" if flag else "NOT met"
    return [
        f"goal wall <= {GOAL_WALL_X:g} x fping: {ours.wall_s:.2f} s vs {fping.wall_s:.2f} s "
        f"= {ours.wall_s / fping.wall_s:.2f} x ({ok(ours.wall_s <= GOAL_WALL_X * fping.wall_s)})",
        f"goal CPU <= {GOAL_CPU_X:g} x fping: {ours.cpu_s:.3f} s vs {fping.cpu_s:.3f} s "
        f"= {ours.cpu_s / max(fping.cpu_s, 1e-3):.1f} x "
        f"({ok(ours.cpu_s <= GOAL_CPU_X * fping.cpu_s)})",
        f"goal RSS <= {GOAL_RSS_MB:g} MB: {ours.rss_mb:.1f} MB ({ok(ours.rss_mb <= GOAL_RSS_MB)})",
        f"goal no false loss: {ours.received}/{ours.sent} ({ok(ours.loss == 0)})",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--no-cli", action="store_true", help="skip the `measure ping` run")
    args = parser.parse_args()

    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    addresses = targets(args.targets)
    cleanup()
    try:
        t0 = time.perf_counter()
        build(addresses)
        print(f"namespaces {NS_CLI} -> {NS_TGT}: {len(addresses)} addresses on the "
              f"target's lo, built in {time.perf_counter() - t0:.2f} s; "
              f"{args.count} requests each, 1 ms global pace, 1 s per target")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("\n".join(addresses) + "\n")
            addr_file = f.name
        try:
            rows = [run_fping(addr_file, args.count)]
            rows.append(run_child(NETVANTAGE_CHILD, addr_file, args.count,
                                  "netvantage engine (raw)", "raw"))
            rows.append(run_child(NETVANTAGE_CHILD, addr_file, args.count,
                                  "netvantage engine (dgram)", "dgram"))
            if not args.no_cli:
                rows.append(run_cli(addr_file, args.count))
            rows.append(run_child(ICMPLIB_CHILD, addr_file, args.count,
                                  "icmplib multiping (privileged)", "raw"))
            rows.append(run_child(ICMPLIB_CHILD, addr_file, args.count,
                                  "icmplib multiping (unprivileged)", "dgram"))
        finally:
            os.unlink(addr_file)
        load = os.getloadavg()
        print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (a shared machine: "
              "wall and CPU ratios move with it)")
        print(table(rows))
        print()
        for line in verdict(rows, rows[0], rows[1]):
            print("netvantage (raw):   " + line)
        for line in verdict(rows, rows[0], rows[2]):
            print("netvantage (dgram): " + line)
        for row in rows:
            if row.tool == "netvantage measure ping":
                for line in verdict(rows, rows[0], row):
                    print("measure ping:       " + line)
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
