"""The loader alone: ``netvantage.analysis.load.load`` on a campaign, timed.

Prints the wall time (``time.perf_counter``), the CPU time of this process
(``time.process_time``: receiving the workers' columns, concatenating, the checks) and of
the decoding workers it waited for (``getrusage(RUSAGE_CHILDREN)``, user + system), the
peak RSS of this process (``ru_maxrss``) and each frame's rows and size
(``memory_usage(deep=True)``), with the load average at the start (the machine may be
shared: compare two versions by alternating their runs).

    .venv/bin/python bench/make_synthetic.py c1m.jsonl --records 1000000
    .venv/bin/python bench/load_time.py c1m.jsonl
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("source", type=Path, nargs="+", help="what load() reads")
    args = parser.parse_args()
    from netvantage.analysis.load import FRAME_NAMES, load

    load_average = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    campaign = load(args.source if len(args.source) > 1 else args.source[0])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"load {wall:.1f} s wall, this process {cpu:.2f} s CPU, workers "
          f"{children.ru_utime + children.ru_stime:.2f} s CPU, peak RSS "
          f"{own.ru_maxrss / 1024:.0f} MiB (load average {load_average:.1f})")
    for name in FRAME_NAMES:
        frame = getattr(campaign, name)
        print(f"  {name}: {len(frame):,} rows, "
              f"{frame.memory_usage(deep=True).sum() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
