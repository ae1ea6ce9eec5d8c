"""Path changes over a long campaign: how long :func:`find_path_changes` takes on a hops
frame of millions of rows, and whether it finds the planted changes and nothing else.

A seeded synthetic campaign: ``--pairs`` (agent, target) pairs, ``--traces`` traces each
(one every 5 minutes), ``--ttls`` hops per trace, 1 % of the hop rows lost (silent TTLs,
some of them the destination's: those traces did not arrive), and every tenth pair's route
moving half-way (its TTL 3 answers from another router from then on).  Columns as the
loader makes them (``id``, ``region``, ``target`` categorical).

    .venv/bin/python bench/path_changes.py [--pairs 160] [--traces 2000] [--ttls 8]

Prints rows, wall time (best of ``--repeat``), the load average (a shared machine: the
wall moves with it), the changes found against the planted ones, and the goal (every
planted change found, none invented: met / not met).  Not a test.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from netvantage.analysis.pathchange import find_path_changes


def campaign(pairs: int, traces: int, ttls: int, seed: int) -> tuple[pd.DataFrame, set[int]]:
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(pairs * traces), ttls)
    pair = ids // traces
    k = ids % traces
    ttl = np.tile(np.arange(1, ttls + 1), pairs * traces)
    moved = (pair % 10 == 0) & (k >= traces // 2) & (ttl == 3)
    address = np.where(moved, pair * 100 + 50, pair * 100 + ttl).astype(str)
    lost = rng.random(ids.size) < 0.01
    hops = pd.DataFrame({
        "id": pd.Categorical(ids.astype(str)),
        "region": pd.Categorical((pair % 20).astype(str)),
        "target": pd.Categorical((pair // 20).astype(str)),
        "started_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(k * 300, "s"),
        "ttl": ttl, "address": pd.Series(address).where(~lost),
        "replies": np.where(lost, 0, 2), "is_destination": (ttl == ttls) & ~lost,
        "asn": None})
    return hops, {p for p in range(pairs) if p % 10 == 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=160)
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--ttls", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261205)
    args = parser.parse_args()
    hops, planted = campaign(args.pairs, args.traces, args.ttls, args.seed)
    walls = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        changes = find_path_changes(hops)
        walls.append(time.perf_counter() - t0)
    found = {int(c.region) + 20 * int(c.target) for c in changes}
    load = os.getloadavg()
    print(f"{len(hops):,} hop rows ({args.pairs} pairs x {args.traces} traces x {args.ttls} "
          f"TTLs, 1 % lost): best {min(walls):.2f} s of {args.repeat}; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"changes found {len(changes)}, planted {len(planted)}; missed "
          f"{sorted(planted - found)}, invented {sorted(found - planted)}")
    ok = found == planted and len(changes) == len(planted)
    print(f"goal: every planted change found, none invented: {'met' if ok else 'not met'}")


if __name__ == "__main__":
    main()
