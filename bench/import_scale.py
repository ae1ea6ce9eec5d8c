"""``netvantage import atlas`` on a synthetic RIPE Atlas ping file: results/s and peak RSS.

Writes JSON Lines of N Atlas ping results (350,000 by default; firmware 5080
layout: 3 packets each, a lost packet now and then, 500 probes, 20 targets) and
the same results as one JSON array on a single line (what the Atlas API
returns), plus a file of a third of the size to show that memory stays flat.
Each run is the real command in a fresh process (``netvantage import atlas
FILE -o OUT``); its peak RSS is the child's ``ru_maxrss`` (``os.wait4``).

The floor beside it: ``jq -c . FILE > /dev/null`` reading the same file
(parsing and re-printing every value; "jq not installed" if it is missing).

Goals (issue 13): at least 100,000 results/s and at most 200 MB peak RSS, flat
with file size.  Printed as met / not met; not a test.

    .venv/bin/python bench/import_scale.py [--results 350000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_RATE = 100_000
GOAL_RSS_MB = 200.0
NETVANTAGE = str(Path(sys.executable).with_name("netvantage"))


def result(i: int, rng: random.Random) -> dict[str, object]:
    prb = 1000 + i % 500
    dst = i % 20
    base = 5.0 + 7.0 * dst + (prb % 37)
    entries: list[dict[str, object]] = []
    for _ in range(3):
        if rng.random() < 0.02:
            entries.append({"x": "*"})
        else:
            entries.append({"rtt": round(base + rng.random() * 4.0, 3)})
    rtts = [float(e["rtt"]) for e in entries if "rtt" in e]  # type: ignore[arg-type]
    return {
        "fw": 5080, "mver": "2.6.2", "lts": 17, "dst_name": f"dc{dst}.example",
        "af": 4, "dst_addr": f"192.0.2.{dst + 1}", "src_addr": "10.0.0.2", "proto": "ICMP",
        "ttl": 54, "size": 48, "result": entries, "dup": 0, "rcvd": len(rtts), "sent": 3,
        "min": min(rtts, default=-1), "max": max(rtts, default=-1),
        "avg": round(sum(rtts) / len(rtts), 3) if rtts else -1, "msm_id": 9_000_000 + dst,
        "prb_id": prb, "timestamp": 1_700_000_000 + i // 500 * 240,
        "msm_name": "Ping", "from": f"198.51.100.{prb % 250}", "type": "ping", "group_id": 1,
        "step": 240, "stored_timestamp": 1_700_000_100 + i // 500 * 240,
    }


def write_jsonl(path: Path, n: int) -> None:
    rng = random.Random(13)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps(result(i, rng), separators=(",", ":")) + "\n")


def write_array(path: Path, n: int) -> None:
    rng = random.Random(13)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[")
        for i in range(n):
            if i:
                fh.write(",")
            fh.write(json.dumps(result(i, rng), separators=(",", ":")))
        fh.write("]")


def measure(cmd: list[str], stdout: int | None = None) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MB and exit status of ``cmd`` in a fresh process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    return wall, usage.ru_maxrss / 1024.0, os.waitstatus_to_exitcode(status)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=int, default=350_000)
    ap.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="nvt-import-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    jq = shutil.which("jq")
    small = max(args.results // 3, 1)
    files = [(f"JSON Lines, {small:,}", work / "small.jsonl", small, write_jsonl),
             (f"JSON Lines, {args.results:,}", work / "big.jsonl", args.results, write_jsonl),
             (f"one-line array, {args.results:,}", work / "big.json", args.results,
              write_array)]
    print(f"netvantage import atlas vs jq -c (floor); goals: >= {GOAL_RATE:,} results/s, "
          f"<= {GOAL_RSS_MB:.0f} MB peak, flat with size")
    print(f"{'input':<26}{'MB':>7}  {'import s':>9}{'results/s':>11}{'peak MB':>9}"
          f"  {'jq s':>7}{'jq peak MB':>11}")
    rows = []
    try:
        for label, path, n, writer in files:
            writer(path, n)
            size = path.stat().st_size / 1e6
            wall, rss, code = measure([NETVANTAGE, "import", "atlas", str(path), "-o",
                                       str(work / "out.jsonl")])
            if code != 0:
                sys.exit(f"import failed on {path} (exit {code})")
            if jq:
                with open(os.devnull, "wb") as null:
                    jwall, jrss, _ = measure([jq, "-c", ".", str(path)], stdout=null.fileno())
                jq_cols = f"{jwall:>7.2f}{jrss:>11.0f}"
            else:
                jq_cols = f"{'jq not installed':>18}"
            rate = n / wall
            rows.append((n, rate, rss))
            print(f"{label:<26}{size:>7.0f}  {wall:>9.2f}{rate:>11,.0f}{rss:>9.0f}  {jq_cols}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    rate_ok = all(rate >= GOAL_RATE for _, rate, _ in rows)
    rss_ok = all(rss <= GOAL_RSS_MB for _, _, rss in rows)
    growth = rows[1][2] - rows[0][2]
    flat = growth <= 0.25 * rows[0][2]
    print(f"rate >= {GOAL_RATE:,}/s: {'met' if rate_ok else 'not met'} "
          f"(lowest {min(r for _, r, _ in rows):,.0f}/s)")
    print(f"peak <= {GOAL_RSS_MB:.0f} MB: {'met' if rss_ok else 'not met'} "
          f"(highest {max(m for _, _, m in rows):.0f} MB)")
    print(f"flat with size: {'met' if flat else 'not met'} (3x the results: "
          f"{growth:+.0f} MB; repeats are looked for among the ~131k most recent results)")


if __name__ == "__main__":
    main()
