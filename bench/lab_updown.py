"""How long ``netvantage lab up`` and ``netvantage lab down`` take, the whole lab.

The default topology (namespaces, veth links, routes, nftables, the delay
element, DNS, the GeoIP databases and the data centres' Postfix and Dovecot)
comes up under its own prefix (``nvtu``) and goes down again, ``--rounds``
times (3 by default); each round's seconds are printed, then the median and the
worst of each.  The tests check that up and down work and leave nothing behind;
how fast they are is this figure, printed, not asserted (it depends on the
machine and on what else runs on it).

    .venv/bin/python bench/lab_updown.py [--rounds 3]

Needs root.  Takes the lab down even when interrupted; exits non-zero if
``lab up`` or ``lab down`` fails.  Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

PREFIX = "nvtu"
NETVANTAGE = str(Path(sys.executable).with_name("netvantage"))


def lab(command: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``netvantage lab COMMAND --prefix PREFIX``; (seconds it took, the process)."""
    t0 = time.perf_counter()
    proc = subprocess.run([NETVANTAGE, "lab", command, "--prefix", PREFIX],
                          capture_output=True, text=True, timeout=300, check=False)
    return time.perf_counter() - t0, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    lab("down")  # a lab of this prefix left by an interrupted run
    ups: list[float] = []
    downs: list[float] = []
    try:
        for i in range(1, args.rounds + 1):
            up_s, up = lab("up")
            if up.returncode != 0:
                print(f"lab up failed ({up.returncode}):\n{up.stderr}", file=sys.stderr)
                return 1
            down_s, down = lab("down")
            if down.returncode != 0:
                print(f"lab down failed ({down.returncode}):\n{down.stderr}", file=sys.stderr)
                return 1
            ups.append(up_s)
            downs.append(down_s)
            print(f"round {i}: up {up_s:6.2f} s   down {down_s:6.2f} s   "
                  f"total {up_s + down_s:6.2f} s", flush=True)
    finally:
        lab("down")
    for name, values in (("up", ups), ("down", downs),
                         ("total", [u + d for u, d in zip(ups, downs, strict=True)])):
        print(f"{name:>5}: median {statistics.median(values):6.2f} s   "
              f"max {max(values):6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
