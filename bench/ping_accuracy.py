"""Does ``netvantage measure ping`` report the RTT iputils ``ping`` reports, on real paths?

Brings up its own lab (prefix ``nvtb``, the default topology, no mail servers)
and, for a few region → data-centre paths, *interleaves* runs of the two tools
from the region's namespace to the data centre's node address: ROUNDS rounds,
each one run of ``netvantage measure ping -n N -i I`` and one of
``ping -n -c N -i I`` (their order alternating), so that both see the same
state of the emulated links.  Prints the median RTT of each tool (all samples
of all rounds), the difference, the median of per-round differences and the
configured RTT.  Goal: |difference| <= 0.1 ms.  The lab is always taken down.
Not a test: it prints figures, and exits non-zero only if it crashes.

    .venv/bin/python bench/ping_accuracy.py [--rounds 5] [--count 20] [--interval 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from netvantage.lab.core import Lab
from netvantage.lab.topology import load_topology

PREFIX = "nvtb"
PATHS = (("lon", "dc-ams"), ("yyz", "dc-ams"), ("lun", "dc-jnb"), ("jnb", "dc-jnb"))
GOAL_MS = 0.1
NETVANTAGE = str(Path(sys.executable).with_name("netvantage"))
_TIME = re.compile(r"time=([\d.]+) ms")


def netvantage(ns: str, address: str, count: int, interval: float) -> list[float]:
    out = subprocess.run(["ip", "netns", "exec", ns, NETVANTAGE, "measure", "ping", address,
                          "-n", str(count), "-i", str(interval), "-W", "2"],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    (line,) = [x for x in out.splitlines() if x.strip()]
    return [r for r in json.loads(line)["body"]["rtts_ms"] if r is not None]


def iputils(ns: str, address: str, count: int, interval: float) -> list[float]:
    proc = subprocess.run(["ip", "netns", "exec", ns, "ping", "-n", "-c", str(count),
                           "-i", str(interval), "-W", "2", address],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode not in (0, 1):  # 1: some replies lost (the lab has lossy links)
        raise RuntimeError(f"ping exited {proc.returncode}: {proc.stderr}")
    return [float(x) for x in _TIME.findall(proc.stdout)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    topo = load_topology()
    lab = Lab(PREFIX, topo)
    lab.down()  # a stale lab of our own prefix
    try:
        t0 = time.monotonic()
        lab.up(mail=False)
        print(f"lab {PREFIX!r} up in {time.monotonic() - t0:.1f} s; {args.rounds} interleaved "
              f"rounds of {args.count} pings every {args.interval:g} s per tool and path")
        rows = []
        for src, dst in PATHS:
            address = topo.nodes[dst].v4
            ns = lab.ns(src)
            iputils(ns, address, 3, 0.2)  # warm neighbour caches and the delay element
            ours: list[float] = []
            theirs: list[float] = []
            diffs: list[float] = []
            for r in range(args.rounds):
                runs = [("nv", netvantage), ("ip", iputils)]
                if r % 2:
                    runs.reverse()
                got = {name: fn(ns, address, args.count, args.interval) for name, fn in runs}
                ours += got["nv"]
                theirs += got["ip"]
                if got["nv"] and got["ip"]:
                    diffs.append(statistics.median(got["nv"]) - statistics.median(got["ip"]))
            rows.append((f"{src} -> {dst}", address, topo.rtt_ms(src, dst), ours, theirs, diffs))

        head = ("path", "address", "configured", "n nv/ip", "netvantage median",
                "iputils median", "|diff|", "median round diff", "goal")
        cells = [head]
        for path, address, configured, ours, theirs, diffs in rows:
            m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
            diff = abs(m_ours - m_theirs)
            cells.append((path, address, f"{configured:.1f}", f"{len(ours)}/{len(theirs)}",
                          f"{m_ours:.3f}", f"{m_theirs:.3f}", f"{diff:.3f}",
                          f"{statistics.median(diffs):+.3f}" if diffs else "-",
                          "met" if diff <= GOAL_MS else "NOT met"))
        widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
        print()
        for i, row in enumerate(cells):
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if i == 0:
                print("  ".join("-" * w for w in widths))
        print(f"\n(times in ms; goal |netvantage median - iputils median| <= {GOAL_MS} ms)")
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
