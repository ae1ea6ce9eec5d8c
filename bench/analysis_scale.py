"""The analysis layer at scale: per-group RTT statistics of a 10-million-row campaign.

Reads a ``samples`` Parquet file (bench/make_synthetic.py writes one) and computes, per
(region, data centre, kind): count, lost, loss_ratio, mean and the exact p50, p90, p95
and p99 of rtt_ms (lost samples excluded; quantiles by linear interpolation between order
statistics: pandas' default, ``quantile_cont`` in DuckDB) with five engines:

1. ``duckdb``       DuckDB SQL over the Parquet file (``quantile_cont``: exact);
2. ``pandas-str``   ``pd.read_parquet`` (string keys) then ``groupby(...).quantile``;
3. ``pandas-cat``   the same after ``astype("category")`` of the three keys;
4. ``fastagg``      keys read straight from the Parquet dictionaries as categoricals
                    (``read_dictionary``: no string is hashed; Arrow's unused pages
                    released before and after the copy to pandas), then
                    :func:`netvantage.analysis.fastagg.sample_quantiles` (one integer
                    group code per row, a counting sort on it, ``np.partition`` per group);
5. ``dask``         Dask on a local cluster (2 worker processes × 1 thread): read, shuffle
                    on the keys so every group is whole in one partition, then the pandas
                    group-by of (2) per partition, so the quantiles are exact (Dask's own
                    quantile, ``Series.quantile``, merges per-partition percentiles and is
                    approximate; it is not used).

Every engine runs in its own subprocess, ``--repeats`` times (3), interleaved; the table
gives the median wall time (the engine's work: from opening the file to the result in
memory, not the interpreter start and imports) and the median peak RSS of the process
(``os.wait4``'s ``ru_maxrss``, imports included).  For Dask the peak is the sum of the
peaks of the client (with the scheduler), the workers and their nannies, as those
processes run together.  Every run's result is checked against the first pandas-str
result (the plain pandas group-by): same groups, equal counts and lost counts, floats
equal within 1e-9 (relative).

Goal for ``fastagg``: at most 1.5 × DuckDB's time and at most 1 GiB peak.

    .venv/bin/python bench/analysis_scale.py /tmp/nv-10m.parquet [--repeats 3]
        [--engines duckdb,pandas-str,pandas-cat,fastagg,dask]

Results go to a temporary directory, removed at the end (the input file is left alone).
Exits non-zero when results disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEYS = ("region", "target", "kind")
QS = (0.5, 0.9, 0.95, 0.99)
COLUMNS = [*KEYS, "rtt_ms"]
RESULT_COLUMNS = [*KEYS, "count", "lost", "loss_ratio", "mean", "p50", "p90", "p95", "p99"]
ENGINES = {
    "duckdb": "(1) DuckDB SQL, exact quantile_cont",
    "pandas-str": "(2) pandas, string keys",
    "pandas-cat": "(3) pandas, categorical keys",
    "fastagg": "(4) dict-read categoricals + fastagg",
    "dask": "(5) Dask local cluster (2 procs)",
}
GOAL_TIME_X = 1.5
GOAL_PEAK_MIB = 1024
RTOL = 1e-9


# --- the engines (each runs in a child process) -----------------------------------------

def pandas_agg(df: Any) -> Any:
    """The plain pandas group-by: the reference every engine is checked against."""
    import pandas as pd

    from netvantage.analysis.fastagg import quantile_column

    g = df.groupby(list(KEYS), observed=True, sort=True)["rtt_ms"]
    out = pd.DataFrame({"count": g.size(), "received": g.count(), "mean": g.mean()})
    q = g.quantile(list(QS)).unstack()
    q.columns = [quantile_column(x) for x in q.columns]
    out["lost"] = out["count"] - out.pop("received")
    out["loss_ratio"] = out["lost"] / out["count"]
    return out.join(q).reset_index()[RESULT_COLUMNS]


def engine_duckdb(path: str) -> tuple[Any, dict[str, float]]:
    import duckdb

    qs = ", ".join(map(str, QS))
    sql = f"""
        SELECT region, target, kind, count, lost, lost / count AS loss_ratio, mean,
               q[1] AS p50, q[2] AS p90, q[3] AS p95, q[4] AS p99
        FROM (
            SELECT region, target, kind, count(*) AS count,
                   count(*) - count(rtt_ms) AS lost, avg(rtt_ms) AS mean,
                   quantile_cont(rtt_ms, [{qs}]) AS q
            FROM read_parquet($path)
            GROUP BY region, target, kind
        )
        ORDER BY region, target, kind
    """
    con = duckdb.connect()
    t0 = time.perf_counter()
    table = con.sql(sql, params={"path": path}).to_arrow_table()
    return table, {"time": time.perf_counter() - t0}


def engine_pandas_str(path: str) -> tuple[Any, dict[str, float]]:
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_parquet(path, columns=COLUMNS)
    t1 = time.perf_counter()
    result = pandas_agg(df)
    t2 = time.perf_counter()
    return result, {"time": t2 - t0, "load": t1 - t0, "agg": t2 - t1}


def engine_pandas_cat(path: str) -> tuple[Any, dict[str, float]]:
    import pandas as pd

    t0 = time.perf_counter()
    df = pd.read_parquet(path, columns=COLUMNS)
    for key in KEYS:
        df[key] = df[key].astype("category")
    t1 = time.perf_counter()
    result = pandas_agg(df)
    t2 = time.perf_counter()
    return result, {"time": t2 - t0, "load": t1 - t0, "agg": t2 - t1}


def engine_fastagg(path: str) -> tuple[Any, dict[str, float]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from netvantage.analysis.fastagg import sample_quantiles

    t0 = time.perf_counter()
    table = pq.read_table(path, columns=COLUMNS, read_dictionary=list(KEYS))
    # Arrow's allocator keeps the pages of the decoding buffers; hand them back before
    # pandas copies the columns (≈ 200 MiB of the peak otherwise).
    pa.default_memory_pool().release_unused()
    df = table.to_pandas(self_destruct=True)
    del table
    pa.default_memory_pool().release_unused()
    t1 = time.perf_counter()
    result = sample_quantiles(df, by=KEYS, qs=QS)
    t2 = time.perf_counter()
    return result, {"time": t2 - t0, "load": t1 - t0, "agg": t2 - t1}


def engine_dask(path: str) -> tuple[Any, dict[str, float]]:
    import logging

    import dask
    import dask.dataframe as dd
    from dask.distributed import Client, LocalCluster

    dask.config.set({"distributed.worker.daemon": False})
    t0 = time.perf_counter()
    with (LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address=None, silence_logs=logging.ERROR) as cluster,
          Client(cluster) as client):
        t1 = time.perf_counter()
        ddf = dd.read_parquet(path, columns=COLUMNS)
        meta = pandas_agg(ddf._meta_nonempty).iloc[:0]
        shuffled = ddf.shuffle(on=list(KEYS))
        result = shuffled.map_partitions(pandas_agg, meta=meta).compute()
        t2 = time.perf_counter()

        def peak_kib() -> int:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        workers = sum(client.run(peak_kib).values())
        nannies = sum(client.run(peak_kib, nanny=True).values())
    peak = workers + nannies + peak_kib()
    return result, {"time": t2 - t1, "startup": t1 - t0, "peak_kib": float(peak)}


ENGINE_FUNCTIONS = {
    "duckdb": engine_duckdb,
    "pandas-str": engine_pandas_str,
    "pandas-cat": engine_pandas_cat,
    "fastagg": engine_fastagg,
    "dask": engine_dask,
}


def child(engine: str, path: str, out: str) -> int:
    result, figures = ENGINE_FUNCTIONS[engine](path)
    if hasattr(result, "to_parquet"):
        result.to_parquet(out, index=False)
    else:
        import pyarrow.parquet as pq

        pq.write_table(result, out)
    print(json.dumps(figures))
    return 0


# --- the driver ---------------------------------------------------------------------------

def run_child(engine: str, path: str, out: Path) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, path, "--child", engine, "--out", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed (exit {proc.returncode})")
    figures: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    figures.setdefault("peak_kib", float(usage.ru_maxrss))
    figures["peak_mib"] = figures.pop("peak_kib") / 1024
    return figures


def normalised(path: Path) -> Any:
    import pandas as pd

    df = pd.read_parquet(path)[RESULT_COLUMNS]
    for key in KEYS:
        df[key] = df[key].astype(str)
    for column in RESULT_COLUMNS[len(KEYS):]:
        df[column] = df[column].astype("float64")
    return df.sort_values(list(KEYS)).reset_index(drop=True)


def disagreement(reference: Any, other: Any) -> str | None:
    """Why ``other`` differs from ``reference`` (None if it does not)."""
    import numpy as np

    if len(reference) != len(other):
        return f"{len(other)} groups, expected {len(reference)}"
    if not (reference[list(KEYS)] == other[list(KEYS)]).all().all():
        return "different groups"
    for column in ("count", "lost"):
        if not np.array_equal(reference[column], other[column]):
            return f"{column} differs"
    for column in RESULT_COLUMNS[len(KEYS) + 2:]:
        a = reference[column].to_numpy()
        b = other[column].to_numpy()
        if not np.allclose(a, b, rtol=RTOL, atol=0.0, equal_nan=True):
            worst = np.nanmax(np.abs(a - b) / np.abs(a))
            return f"{column} differs (relative {worst:.1e})"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("path", help="the samples Parquet file (bench/make_synthetic.py)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated, of: {', '.join(ENGINES)}")
    parser.add_argument("--child", choices=list(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.path, args.out)

    import pyarrow.parquet as pq

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines: {', '.join(sorted(unknown))}")
    meta = pq.ParquetFile(args.path).metadata
    print(f"{args.path}: {meta.num_rows:,} rows, {meta.num_row_groups} row groups; "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}); "
          f"{args.repeats} runs per engine, interleaved", flush=True)

    runs: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    results: list[tuple[str, int, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="nv-analysis-scale-"))
    try:
        for repeat in range(args.repeats):
            for engine in engines:
                out = tmp / f"{engine}-{repeat}.parquet"
                figures = run_child(engine, args.path, out)
                runs[engine].append(figures)
                results.append((engine, repeat, normalised(out)))
                out.unlink()
                print(f"  run {repeat + 1} {engine:<10} {figures['time']:6.2f} s "
                      f"{figures['peak_mib']:6.0f} MiB", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # The reference: the first plain-pandas result (string keys) if it ran.
    reference_engine = "pandas-str" if "pandas-str" in engines else engines[0]
    reference = next(r for e, _, r in results if e == reference_engine)
    problems: list[str] = []
    for engine, repeat, result in results:
        why = disagreement(reference, result)
        if why:
            problems.append(f"{engine} run {repeat + 1} vs {reference_engine}: {why}")

    def median(engine: str, key: str) -> float | None:
        values = [r[key] for r in runs[engine] if key in r]
        return statistics.median(values) if values else None

    duck = median("duckdb", "time") if "duckdb" in runs else None
    print()
    print(f"{len(reference)} groups; results of every run checked against the first "
          f"{reference_engine} run (exact counts, floats within {RTOL:g} relative)")
    header = (f"{'engine':<40} {'time s':>7} {'load s':>7} {'agg s':>7} "
              f"{'peak MiB':>9} {'× DuckDB':>9}")
    print(header)
    print("-" * len(header))

    def fmt(value: float | None, spec: str) -> str:
        width = int(spec.split(".")[0])
        return "—".rjust(width) if value is None else format(value, spec)

    for engine in engines:
        t = median(engine, "time")
        assert t is not None
        note = ""
        startup = median(engine, "startup")
        if startup is not None:
            note = f"  (+{startup:.1f} s cluster start)"
        print(f"{ENGINES[engine]:<40} {t:7.2f} {fmt(median(engine, 'load'), '7.2f')} "
              f"{fmt(median(engine, 'agg'), '7.2f')} {fmt(median(engine, 'peak_mib'), '9.0f')} "
              f"{fmt(t / duck if duck else None, '9.2f')}{note}")
    print(f"(medians of {args.repeats}, each column on its own; time = load + aggregate; "
          f"pandas-cat's load includes astype('category'); Dask's peak = sum over its "
          f"processes; load average now {os.getloadavg()[0]:.1f})")
    if duck is not None and "fastagg" in runs:
        t = median("fastagg", "time")
        peak = median("fastagg", "peak_mib")
        assert t is not None and peak is not None
        ok = t <= GOAL_TIME_X * duck and peak <= GOAL_PEAK_MIB
        print(f"goal for fastagg: ≤ {GOAL_TIME_X} × DuckDB ({GOAL_TIME_X * duck:.2f} s) and "
              f"≤ {GOAL_PEAK_MIB} MiB: {t:.2f} s, {peak:.0f} MiB — "
              f"{'met' if ok else 'NOT met'}")
    if problems:
        print("results disagree:")
        for p in problems:
            print(f"  {p}")
        return 1
    print("all engines' results agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
