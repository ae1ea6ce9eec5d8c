"""``netvantage analyse`` and ``report`` at size, as a user runs them, against DuckDB's floor.

For each size (``--sizes``, default 10k, 100k and 1M records; ``--big`` adds 10M) a seeded
synthetic campaign is generated once (bench/make_synthetic.py: five kinds, gaps, silent
regions, dead targets, 300 regions, 12 data centres) into ``--data-dir`` (kept) or a
temporary directory (removed), and then, each in its own process:

* ``netvantage analyse FILE --quiet`` — wall time and memory: the peak of the summed
  PSS of the command's processes (sampled every 50 ms), and beside it the peak RSS of
  the largest of them (``os.wait4``'s ``ru_maxrss``); a memory goal is judged on the
  larger of the two;
* DuckDB computing the same per-(region, data centre, kind) figures — samples, lost,
  p50/p90/p95/p99 of the ping echoes and tcp connects (``quantile_cont``) — straight
  from the same JSON Lines, and from the same Parquet dataset where one was written;
* ``netvantage report FILE --quiet`` at the ``--report-sizes``;
* at 10M: the campaign is also written as a region-partitioned Parquet dataset
  (``netvantage partition``); ``analyse`` runs on that dataset (the goal compares it
  with DuckDB on the same Parquet), and ``analyse --dask local`` on it gives the Dask
  row (``--dask-size`` chooses another size): wall time and every worker's peak RSS
  (reported by the workers themselves, ``getrusage``);
* the 250 × 250 one-record-per-pair matrix (``--matrix N``; 0 skips it).

The fitted exponent is the slope of log(analyse time) against log(records) over the
sizes run.  Every goal of the issue is printed met / not met (or not run):
1M ≤ 15 s and ≤ 1 GiB; 10M ≤ 3 × DuckDB from the same Parquet and ≤ 2 GiB; exponent
≤ 1.1; the matrix ≤ 20 s; report ≤ 2 × analyse on the same data; the Dask workers within
their memory limit.

The machine may be shared: the load average is printed beside the figures.

    .venv/bin/python bench/analysis_scale.py [--sizes 10k,100k,1M] [--big] [--data-dir DIR]
        [--report-sizes 10k,100k,1M] [--matrix 250] [--dask-size 10M] [--dask-workers 2]
        [--dask-memory 2GiB] [--skip-dask] [--max-data 8]

Every child runs with a memory limit (``--max-data`` GiB of RLIMIT_DATA, 8 by default): a
size that needs more fails with MemoryError, printed as such, rather than taking the
machine down.

Generating 10M records writes about 12 GB of JSON Lines and takes several minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NETVANTAGE = str(BIN / "netvantage")
GiB = 2**30


@dataclass
class Run:
    wall_s: float
    peak_bytes: int
    ok: bool
    out: str = ""
    err: str = ""
    #: Peak of the summed PSS of the process and its descendants (see :class:`TreeMemory`).
    tree_bytes: int = 0

    def __str__(self) -> str:
        if not self.ok:
            return f"FAILED ({self.err.strip().splitlines()[-1] if self.err.strip() else '?'})"
        return (f"{self.wall_s:8.1f} s {self.tree_bytes / 2**20:6.0f} MiB "
                f"(largest {self.peak_bytes / 2**20:.0f})")

    @property
    def memory(self) -> int:
        """What the goals judge: the larger of the two peaks."""
        return max(self.tree_bytes, self.peak_bytes)


class TreeMemory(threading.Thread):
    """Samples, every :data:`INTERVAL_S`, the summed PSS (``/proc/PID/smaps_rollup``) of a
    process and all its descendants, and keeps the peak.

    ``ru_maxrss`` alone says how big the largest single process got: it counts the pages a
    forked child still shares with its parent as the child's own, and it never adds up
    processes that hold memory at the same time (the loader's workers and the main
    process).  PSS splits each shared page between the processes sharing it, so the sum is
    the memory the whole command holds.  A peak shorter than the interval may be missed.
    """

    INTERVAL_S = 0.05

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self._done = threading.Event()

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak

    def run(self) -> None:
        while not self._done.wait(self.INTERVAL_S):
            self.peak = max(self.peak, sum(map(_pss, _tree(self.pid))))


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (those alive now)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:  # gone meanwhile
            continue
    return out


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


#: Memory a child may take (RLIMIT_DATA, bytes; None: no limit): a 10M-record analysis
#: that needs more than the machine has fails with MemoryError instead of taking the
#: machine (and whatever else runs on it) down.  ``--max-data``.
MAX_DATA: int | None = None


def _limit_data() -> None:
    if MAX_DATA is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_DATA, (MAX_DATA, MAX_DATA))


def run(cmd: list[str], *, timeout: float | None = None) -> Run:
    """Run ``cmd``; wall time, the largest process's peak RSS (wait4) and the peak summed
    PSS of the process tree (:class:`TreeMemory`); stdout/stderr to temp files."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, preexec_fn=_limit_data)
        sampler = TreeMemory(proc.pid)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.kill()
            raise
        finally:
            tree = sampler.stop()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(wall, usage.ru_maxrss * 1024, proc.returncode == 0,
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                   tree)


def size(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * mult)


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
        f"{n // 1000}k" if n % 1000 == 0 else str(n))


# DuckDB: the per-pair figures of the samples, from a JSON Lines file or a Parquet dataset
# (the body is JSON text there); run in a child process that prints its own timing.
DUCKDB = r"""
import sys, time, duckdb
src, fmt = sys.argv[1], sys.argv[2]
if fmt == "jsonl":
    table = (f"read_json('{src}', format='newline_delimited', maximum_object_size=100000000, "
             "columns={'kind': 'VARCHAR', 'region': 'VARCHAR', 'target': 'VARCHAR', "
             "'body': 'JSON'})")
else:
    table = f"read_parquet('{src}/**/*.parquet', hive_partitioning=false)"
sql = f'''
WITH s AS (
  SELECT region, target, kind, unnest(CASE kind
      WHEN 'ping' THEN CAST(json_extract(body, '$.rtts_ms') AS DOUBLE[])
      ELSE CAST(json_extract(body, '$.attempts[*].connect_ms') AS DOUBLE[]) END) AS rtt
  FROM {table} WHERE kind IN ('ping', 'tcp'))
SELECT region, target, kind, count(*) AS samples, count(*) - count(rtt) AS lost,
       quantile_cont(rtt, [0.5, 0.9, 0.95, 0.99]) AS q
FROM s GROUP BY ALL ORDER BY ALL'''
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")  # it writes to stdout on long queries
t0 = time.perf_counter()
rows = con.sql(sql).fetchall()
print(len(rows), time.perf_counter() - t0)
"""


def duckdb_floor(src: Path, fmt: str) -> Run:
    r = run([sys.executable, "-c", DUCKDB, str(src), fmt])
    if r.ok:
        groups, seconds = r.out.split()[-2:]
        r.out = groups
        r.wall_s = float(seconds)  # the query itself, as for analyse's whole run minus start-up
    return r


def generate(path: Path, *args: str) -> None:
    if path.exists():
        return
    subprocess.run([sys.executable, str(REPO / "bench" / "make_synthetic.py"), str(path),
                    *args], check=True)


def fit_exponent(points: list[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def goal(name: str, met: bool | None, detail: str) -> str:
    verdict = "not run" if met is None else ("met" if met else "NOT MET")
    return f"  {name:<44} {verdict:<8} {detail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10k,100k,1M")
    parser.add_argument("--big", action="store_true", help="add the 10M campaign")
    parser.add_argument("--data-dir", type=Path, help="keep the campaigns here (reused)")
    parser.add_argument("--report-sizes", default="10k,100k,1M")
    parser.add_argument("--matrix", type=int, default=250)
    parser.add_argument("--dask-size", default="10M")
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--dask-memory", default="2GiB")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--max-data", type=float, default=8.0, metavar="GiB",
                        help="memory limit of every child (RLIMIT_DATA) [8 GiB]; 0: none")
    args = parser.parse_args()
    global MAX_DATA
    MAX_DATA = int(args.max_data * GiB) if args.max_data > 0 else None
    sizes = sorted({size(s) for s in args.sizes.split(",") if s} | (
        {10_000_000} if args.big else set()))
    report_sizes = {size(s) for s in args.report_sizes.split(",") if s}
    dask_size = size(args.dask_size)
    data = args.data_dir or Path(tempfile.mkdtemp(prefix="nv-scale-"))
    data.mkdir(parents=True, exist_ok=True)
    if data.resolve().is_relative_to(REPO):
        parser.error("--data-dir must be outside the repository")
    load = os.getloadavg()
    print(f"netvantage analyse at size; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the start (a shared machine "
          "slows every figure)")
    analyse: dict[int, Run] = {}
    duck_json: dict[int, Run] = {}
    duck_parquet: dict[int, Run] = {}
    reports: dict[int, Run] = {}
    datasets: dict[int, Path] = {}
    dask_run: Run | None = None
    dask_peaks: list[float] = []
    try:
        for n in sizes:
            jsonl = data / f"synthetic-{label(n)}.jsonl"
            generate(jsonl, "--records", str(n))
            target = str(jsonl)
            if n >= 10_000_000 or (n == dask_size and not args.skip_dask):
                ds = data / f"synthetic-{label(n)}.by-region"
                if not ds.exists():
                    p = run([NETVANTAGE, "partition", str(jsonl), "-o", str(ds), "--quiet"])
                    print(f"  partition {label(n)}: {p}")
                datasets[n] = ds
                if n >= 10_000_000:
                    target = str(ds)  # the 10M goal compares with DuckDB on this Parquet
            analyse[n] = run([NETVANTAGE, "analyse", target, "--quiet"])
            print(f"  analyse {label(n):>5} ({'Parquet' if target != str(jsonl) else 'JSONL'})"
                  f": {analyse[n]}", flush=True)
            duck_json[n] = duckdb_floor(jsonl, "jsonl")
            print(f"  duckdb  {label(n):>5} JSONL: {duck_json[n]}", flush=True)
            if n in datasets:
                duck_parquet[n] = duckdb_floor(datasets[n], "parquet")
                print(f"  duckdb  {label(n):>5} Parquet: {duck_parquet[n]}", flush=True)
            if n in report_sizes:
                page = data / f"report-{label(n)}.html"
                reports[n] = run([NETVANTAGE, "report", str(jsonl), "-o", str(page), "--quiet"])
                print(f"  report  {label(n):>5}: {reports[n]}", flush=True)
            if n == dask_size and not args.skip_dask:
                dask_run = run([NETVANTAGE, "analyse", "--dask", "local", "--dask-workers",
                                str(args.dask_workers), "--dask-memory", args.dask_memory,
                                str(datasets[n]), "--format", "json", "--quiet"])
                if dask_run.ok:
                    notes = json.loads(dask_run.out).get("notes", [])
                    dask_peaks = [float(x) for note in notes if note.startswith("worker peak RSS")
                                  for x in note.split(":")[1].replace("MiB", "").split(",")]
                print(f"  dask    {label(n):>5}: {dask_run} (client); workers' peaks "
                      f"{', '.join(f'{p:.0f}' for p in dask_peaks)} MiB", flush=True)
        matrix: Run | None = None
        if args.matrix:
            mpath = data / f"matrix-{args.matrix}.jsonl"
            generate(mpath, "--matrix", str(args.matrix))
            matrix = run([NETVANTAGE, "analyse", str(mpath), "--quiet"])
            print(f"  analyse matrix {args.matrix}x{args.matrix}: {matrix}", flush=True)
    finally:
        if args.data_dir is None:
            shutil.rmtree(data, ignore_errors=True)

    print("\nrecords   analyse                    DuckDB JSONL   DuckDB Parquet  "
          "analyse/DuckDB   report")
    for n in sizes:
        a, dj, dp, rep = analyse[n], duck_json.get(n), duck_parquet.get(n), reports.get(n)
        floor = dp if dp is not None and dp.ok else dj
        ratio = (f"{a.wall_s / floor.wall_s:8.1f} x" if a.ok and floor is not None
                 and floor.ok else "       -")
        print(f"{label(n):>7}  {a}  {dj.wall_s if dj and dj.ok else float('nan'):8.2f} s  "
              f"{dp.wall_s if dp and dp.ok else float('nan'):8.2f} s      {ratio}   "
              f"{rep if rep else '-'}")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    exponent = fit_exponent([(n, r.wall_s) for n, r in analyse.items() if r.ok])

    print("\nGoals:")
    one = analyse.get(1_000_000)
    print(goal("1M records: analyse <= 15 s", None if one is None else one.ok
               and one.wall_s <= 15, f"{one}" if one else ""))
    print(goal("1M records: analyse <= 1 GiB", None if one is None else one.ok
               and one.memory <= GiB, f"{one}" if one else ""))
    ten = analyse.get(10_000_000)
    dp10 = duck_parquet.get(10_000_000)
    print(goal("10M: analyse <= 3 x DuckDB on the same Parquet",
               None if ten is None or dp10 is None or not dp10.ok
               else ten.ok and ten.wall_s <= 3 * dp10.wall_s,
               f"{ten.wall_s:.1f} s vs DuckDB {dp10.wall_s:.2f} s" if ten and dp10 else ""))
    print(goal("10M: analyse <= 2 GiB", None if ten is None else ten.ok
               and ten.memory <= 2 * GiB, f"{ten}" if ten else ""))
    print(goal("exponent of time vs records <= 1.1", None if exponent is None
               else exponent <= 1.1, "" if exponent is None else f"{exponent:.2f}"))
    side = args.matrix or 250
    print(goal(f"{side}x{side} matrix <= 20 s", None if matrix is None
               else matrix.ok and matrix.wall_s <= 20, f"{matrix}" if matrix else ""))
    for n, rep in sorted(reports.items()):
        a = analyse[n]
        print(goal(f"report <= 2 x analyse ({label(n)})", rep.ok and a.ok
                   and rep.wall_s <= 2 * a.wall_s,
                   f"{rep.wall_s:.1f} s vs {a.wall_s:.1f} s" if rep.ok and a.ok else ""))
    if dask_run is None:
        print(goal("Dask: workers within their memory limit", None, ""))
    else:
        from dask.utils import parse_bytes

        limit_mib = parse_bytes(args.dask_memory) / 2**20
        within = dask_run.ok and bool(dask_peaks) and max(dask_peaks) <= limit_mib
        print(goal(f"Dask {label(dask_size)}: workers within {args.dask_memory} each", within,
                   f"wall {dask_run.wall_s:.1f} s, {args.dask_workers} workers' peaks "
                   f"{', '.join(f'{p:.0f}' for p in dask_peaks)} MiB"))
    failed = [n for n, r in analyse.items() if not r.ok]
    for n in failed:
        print(f"\nanalyse {label(n)} failed:\n{analyse[n].err[-2000:]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
