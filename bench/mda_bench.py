"""Multipath tracing on the lab's ECMP diamond: netvantage's MDA against scamper's tracelb.

The lab's default topology (namespaces ``PREFIX-*``; only its own prefixes, no link to the
root namespace) has a diamond on London's path to Munich: r-lon spreads flows over r-lhr1
and r-lhr2 (a Linux multipath route hashing ports), which meet again at r-fra::

    lon -- r-lon =< r-lhr1, r-lhr2 >= r-fra -- r-muc

Every tool runs as its own process inside ``lon`` (``ip netns exec``), tracing r-muc over
UDP, ``--repeat`` times each:

* ``netvantage measure trace --mda -P udp`` (varies the source port) at its default pace
  (100 probes/s) and at 4 probes/s, scamper's default spacing;
* ``scamper -c "tracelb -P udp-dport"`` (varies the destination port; its udp-sport and
  tcp-sport methods send through the datalink, which the lab's TUN links lack) at its
  default 250 ms between probes and at ``-W 15`` (150 ms).

Wall time is measured around the process.  Probes sent are counted twice: by the tool
(netvantage's ``probes_sent``, scamper's ``probec``) and by an nftables counter on
UDP leaving ``lon`` for r-muc, the same rule for every tool.  "Both branches" says whether
the tool reported both r-lhr1 and r-lhr2.

    .venv/bin/python bench/mda_bench.py [--repeat 3] [--prefix nvmb]

Needs root.  Takes the lab down at the end, even when interrupted.  Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

NETVANTAGE = str(Path(sys.executable).parent / "netvantage")


def sh(*args: str, input: str | None = None, timeout: float = 300) -> str:
    done = subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)!r} failed ({done.returncode}): "
                           f"{done.stderr.strip()}")
    return done.stdout


def counter(ns: str) -> int:
    out = sh("ip", "netns", "exec", ns, "nft", "list", "chain", "inet", "mdabench", "out")
    found = re.search(r"counter packets (\d+)", out)
    return int(found.group(1)) if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--prefix", default="nvmb")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    from netvantage.lab.core import Lab
    from netvantage.lab.topology import load_topology

    topo = load_topology()
    lab = Lab(args.prefix, topo)
    lab.down()
    dst = topo.nodes["r-muc"].v4
    branches = {topo.nodes["r-lhr1"].v4, topo.nodes["r-lhr2"].v4}
    ns = lab.ns("lon")
    try:
        lab.up(mail=False)
        sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=(
            "table inet mdabench {\n chain out {\n  type filter hook output priority 0;\n"
            f"  ip daddr {dst} meta l4proto udp counter\n }}\n}}\n"))
        tools = {
            "netvantage --mda (100 pps)": [NETVANTAGE, "measure", "trace", dst, "--mda",
                                           "-P", "udp", "-W", "1"],
            "netvantage --mda (4 pps)": [NETVANTAGE, "measure", "trace", dst, "--mda",
                                         "-P", "udp", "-W", "1", "--pps", "4"],
            "scamper tracelb (W 25)": ["scamper", "-O", "json", "-c",
                                       "tracelb -P udp-dport", "-i", dst],
            "scamper tracelb (W 15)": ["scamper", "-O", "json", "-c",
                                       "tracelb -P udp-dport -W 15", "-i", dst],
        }
        rows: dict[str, dict[str, list[float]]] = {}
        found: dict[str, bool] = {}
        for _ in range(args.repeat):
            for name, cmd in tools.items():
                before = counter(ns)
                t0 = time.perf_counter()
                out = sh("ip", "netns", "exec", ns, *cmd)
                wall = time.perf_counter() - t0
                wire = counter(ns) - before
                if name.startswith("netvantage"):
                    m = json.loads(out)["body"]["multipath"]
                    said = m["probes_sent"]
                    seen = {a for hop in m["interfaces"] for a in hop}
                else:
                    lb = next(json.loads(x) for x in out.splitlines() if '"tracelb"' in x)
                    said = lb["probec"]
                    seen = set(re.findall(r'"addr":"([\d.]+)"', out))
                row = rows.setdefault(name, {"wall": [], "said": [], "wire": []})
                row["wall"].append(wall)
                row["said"].append(said)
                row["wire"].append(wire)
                found[name] = found.get(name, True) and branches <= seen
        load = os.getloadavg()
        print(f"MDA on the lab's ECMP diamond (lon -> r-muc, UDP), {args.repeat} run(s) each; "
              f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (a shared machine: "
              "walls are noisy)")
        print(f"{'tool':<28} {'wall s (median)':>16} {'probes (tool)':>14} "
              f"{'probes (wire)':>14}  both branches")
        for name, row in rows.items():
            print(f"{name:<28} {statistics.median(row['wall']):>16.3f} "
                  f"{statistics.median(row['said']):>14.0f} "
                  f"{statistics.median(row['wire']):>14.0f}  "
                  f"{'yes' if found[name] else 'NO'}")
        ours_w = statistics.median(rows["netvantage --mda (4 pps)"]["wire"])
        theirs_w = statistics.median(rows["scamper tracelb (W 25)"]["wire"])
        ours_t = statistics.median(rows["netvantage --mda (100 pps)"]["wall"])
        theirs_t = statistics.median(rows["scamper tracelb (W 15)"]["wall"])
        print(f"probes on the wire, netvantage / scamper: {ours_w / theirs_w:.2f}x")
        print(f"wall, netvantage at its default pace / scamper at its fastest: "
              f"{ours_t / theirs_t:.2f}x")
        every = all(found.values())
        print(f"goal: every tool finds both branches: {'met' if every else 'not met'}")
        print(f"goal: netvantage's default run is faster than scamper's fastest: "
              f"{'met' if ours_t < theirs_t else 'not met'}")
    finally:
        lab.down()


if __name__ == "__main__":
    main()
