"""``netvantage import matrix`` on a synthetic city-to-city matrix: records/s and peak RSS.

Writes a long-layout CSV of N × N airports (246 × 246 = 60,516 rows by default:
``source,destination,min,avg,max``, RTTs made from the great-circle distance,
so the statistics are consistent), the same as a wide-layout file, and, to show
that memory does not grow with the file, the matrix as a time series of
``--series`` times and of half as many.  Each import runs in a fresh process (``python -c``
calling :func:`netvantage.importers.matrix.import_matrix`, the CLI's path) and
its peak RSS is the child's ``ru_maxrss``.

The floor beside it: the same process only reading the CSV with :mod:`csv`
(what any importer of this file must at least do), and its RSS after importing
netvantage's importer modules (the cost of the code, not of the data).

Goals (issue 13): at least 100,000 results/s and at most 200 MB peak RSS, flat
with file size.  Printed as met / not met; not a test.

    .venv/bin/python bench/import_matrix.py [--cities 246] [--series 8]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

GOAL_RATE = 100_000
GOAL_RSS_MB = 200.0

_IMPORT = """
import sys, time
from pathlib import Path
t = time.perf_counter()
from netvantage.importers.matrix import MatrixSpec, import_matrix
from netvantage.importers.places import from_iata
from_iata('AMS')  # one-time cost: the airport table and the analysis package (continents)
warm = time.perf_counter() - t
t = time.perf_counter()
r = import_matrix([Path(sys.argv[1])], MatrixSpec(layout=sys.argv[3]), Path(sys.argv[2]))
print(r.report.kept, time.perf_counter() - t, warm)
"""

_READ_ONLY = """
import csv, sys, time
t = time.perf_counter()
n = 0
with open(sys.argv[1], newline='') as fh:
    for row in csv.reader(fh):
        n += len(row) - 1 if sys.argv[2] == 'wide' else 1
print(n, time.perf_counter() - t, 0.0)
"""

_IMPORTS_ONLY = """
import netvantage.importers.matrix, netvantage.importers.places
netvantage.importers.places.from_iata('AMS')
print(0, 0.0, 0.0)
"""


def airports(n: int) -> list[tuple[str, float, float]]:
    import airportsdata

    table = airportsdata.load("IATA")
    # Airports with a scheduled-service-like IATA code, spread over the list deterministically.
    codes = sorted(table)
    step = max(1, len(codes) // n)
    picked = [codes[i] for i in range(0, step * n, step)][:n]
    return [(c, float(table[c]["lat"]), float(table[c]["lon"])) for c in picked]


def km(a: tuple[str, float, float], b: tuple[str, float, float]) -> float:
    p1, p2 = math.radians(a[1]), math.radians(b[1])
    dl = math.radians(b[2] - a[2])
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, h)))


def write_long(path: Path, places: list[tuple[str, float, float]], times: int) -> int:
    n = 0
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "destination", "time", "min", "avg", "max"] if times > 1
                   else ["source", "destination", "min", "avg", "max"])
        for t in range(times):
            stamp = f"2026-11-{1 + t:02d}T00:00:00Z"
            for a in places:
                for b in places:
                    base = 5.0 + km(a, b) / 100 * 1.8
                    row = [a[0], b[0], f"{base:.3f}", f"{base * 1.1:.3f}", f"{base * 1.5:.3f}"]
                    w.writerow([*row[:2], stamp, *row[2:]] if times > 1 else row)
                    n += 1
    return n


def write_wide(path: Path, places: list[tuple[str, float, float]]) -> int:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["from", *(p[0] for p in places)])
        for a in places:
            w.writerow([a[0], *(f"{5.0 + km(a, b) / 100 * 1.8:.3f}" for b in places)])
    return len(places) ** 2


def child(code: str, *args: str) -> tuple[int, float, float, float]:
    """(count, seconds, warm-up seconds, peak RSS MB) of ``python -c code args``, fresh.

    The peak is the child's own ``ru_maxrss`` (``wait4``), not a running maximum.
    """
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"child failed with exit {proc.returncode}")
    count, seconds, warm = text.split()
    return int(count), float(seconds), float(warm), usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cities", type=int, default=246)
    ap.add_argument("--series", type=int, default=8)
    args = ap.parse_args()
    places = airports(args.cities)
    with tempfile.TemporaryDirectory(prefix="nvt-bench-matrix-") as tmp:
        d = Path(tmp)
        files = {
            "long": (d / "long.csv", write_long(d / "long.csv", places, 1), "auto"),
            "wide": (d / "wide.csv", write_wide(d / "wide.csv", places), "auto"),
            f"series x{args.series // 2}": (d / "half.csv",
                                            write_long(d / "half.csv", places,
                                                       args.series // 2), "auto"),
            f"series x{args.series}": (d / "series.csv",
                                       write_long(d / "series.csv", places, args.series),
                                       "auto"),
        }
        *_, code_mb = child(_IMPORTS_ONLY)
        print(f"netvantage import matrix: {args.cities} x {args.cities} airports "
              f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f})")
        print(f"RSS of the importer's code alone (modules, airport table, analysis package "
              f"for continents): {code_mb:.0f} MB")
        print(f"{'file':>12} {'records':>9} {'MB':>5} {'floor: csv/s':>13} {'records/s':>10} "
              f"{'w/ start-up':>12} {'peak RSS':>9}")
        peaks: list[float] = []
        rates: list[float] = []
        for label, (path, rows, layout) in files.items():
            n_read, t_read, *_ = child(_READ_ONLY, str(path), "wide" if label == "wide" else "")
            out = d / f"{path.stem}.jsonl"
            kept, seconds, warm, peak = child(_IMPORT, str(path), str(out), layout)
            if kept != rows:
                raise RuntimeError(f"{label}: kept {kept} of {rows}")
            rate = kept / seconds
            peaks.append(peak)
            rates.append(rate)
            print(f"{label:>12} {rows:>9,} {path.stat().st_size / 1e6:>5.1f} "
                  f"{n_read / t_read:>13,.0f} {rate:>10,.0f} {kept / (seconds + warm):>12,.0f} "
                  f"{peak:>6.0f} MB")
        print("records/s: the import itself; w/ start-up: also the one-time loading of the "
              "place tables (~1 s)")
        # Flat: the peak of the longest series against the one half its length (the
        # plain matrix has fewer ids to remember; past RECENT_KEYS the count is capped).
        growth = peaks[-1] - peaks[-2]
        half = files[f"series x{args.series // 2}"][1]
        big = files[f"series x{args.series}"][1]
        ok_rate = min(rates) >= GOAL_RATE
        ok_rss = max(peaks) <= GOAL_RSS_MB
        print(f"goal >= {GOAL_RATE:,} records/s: {'met' if ok_rate else 'not met'} "
              f"(slowest {min(rates):,.0f}/s)")
        print(f"goal <= {GOAL_RSS_MB:.0f} MB peak: {'met' if ok_rss else 'not met'} "
              f"(largest {max(peaks):.0f} MB, of which {code_mb:.0f} MB is code)")
        print(f"flat with size: {'yes' if growth < 5 else 'no'} ({growth:+.0f} MB from "
              f"{half:,} to {big:,} records; {peaks[-1] - peaks[0]:+.0f} MB from the plain "
              f"matrix)")


if __name__ == "__main__":
    main()
