"""The analysis past one machine: a region-partitioned Parquet dataset, read on a Dask cluster.

Two parts:

* :func:`write_partitioned` (``netvantage partition DATA -o DIR``) writes any DATA the
  loader reads as a Parquet dataset partitioned **by region**
  (``DIR/region=ZA-JNB/part-N-M.parquet``): the columns of ``netvantage export``'s
  dataset (the envelope with ``region`` also a column, ``kind``, the body as JSON
  text), so every (region, data
  centre) pair is whole in one partition and :func:`netvantage.analysis.load` reads
  the directory, or one partition of it, like any export.  Records are streamed
  through the loader's decoder (validated, each (agent, id) once: :class:`SeenKeys`)
  and written a few hundred thousand at a time; a big JSON Lines file is decoded by
  a process per CPU, a range of lines each, as the loader does.
* :func:`analyse_on_cluster` (``netvantage analyse --dask SCHEDULER|local DIR``) runs
  the per-partition work on the cluster's workers — decoding the records, building the
  frames (samples, hops, phases are most of the memory), the per-pair statistics
  (:func:`netvantage.analysis.metrics.metrics`, seeded per pair, so a partition gives
  the rows the whole campaign gives) — and sends back only each partition's
  per-pair table and measurements.  The client then ranks and flags on the
  measurements of every partition, exactly as the single-machine path does, so the
  per-pair table and the ranking are equal to :func:`~netvantage.analysis.analyse`'s
  on the same dataset.  The path evidence and the other tests that need the hops or
  samples of every region run on the client only when asked for (not by default on a
  cluster: the per-partition frames stay on the workers).

``--dask local`` starts a :class:`distributed.LocalCluster` of worker processes on this
machine (one thread each, memory limit per worker from ``--dask-memory``); an address
(``tcp://host:8786``) connects to a running scheduler, whose workers must be able to
read DIR at the same path.  dask.distributed is the ``cluster`` extra; this module is
imported only under ``--dask``.

Dask's own DataFrame readers are not used for the records: a record's body is JSON text
that only the schema decoder may turn into rows, so a task is "load this partition",
the unit the loader already streams; Dask schedules those tasks, spills and restarts
workers within their memory limits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from ..errors import NetvantageError
from . import progress
from .frames import Campaign
from .rank import Ranking

__all__ = ["CLIENT_COLUMNS", "ClusterAnalysis", "ClusterError", "PartitionResult", "SeenKeys",
           "analyse_on_cluster", "analyse_partition", "concat_frames", "connect", "partitions",
           "write_partitioned"]

_json = msgspec.json.Encoder()
#: Rows (or bytes of body text) buffered before a write: each partition gets one file
#: per flush.
FLUSH_ROWS = 250_000
FLUSH_BYTES = 128 * 2**20
ROW_GROUP_BYTES = 8 * 2**20
#: A worker of :func:`write_partitioned` decodes about this many bytes of JSON Lines at a
#: time (None: the loader's ``CHUNK_BYTES``).
RANGE_BYTES: int | None = None


class ClusterError(NetvantageError):
    """A dataset or a cluster that cannot be used (not partitioned by region, no scheduler)."""


class SeenKeys:
    """The ``(agent, id)`` keys of the records met so far, in memory bounded per key.

    A set of Python tuples costs about 250 bytes a record (the tuple, two strings, the
    set's slot): 2.5 GB for a 10M-record campaign.  Here a key is its 128-bit BLAKE2b
    digest (16 bytes; two distinct keys share one with a chance of about n²/2¹²⁹, some
    10⁻²⁴ for 10M keys), kept in sorted runs of sizes that at least double from the
    newest to the oldest, merged when a run grows as big as the one before it (the
    levels of a log-structured merge): 10M keys take 160 MB, a merge at most as much
    again, and a chunk is checked against O(log n) runs by binary search.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []  # sorted, dtype S16, oldest (largest) first

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def first_met(self, keys: np.ndarray) -> np.ndarray:
        """For each key (:func:`_digest`, dtype S16), whether it is met here for the first
        time (the first of several in ``keys`` too); those keys are remembered."""
        if not len(keys):
            return np.zeros(0, dtype=bool)
        unique, first = np.unique(keys, return_index=True)  # sorted; first of each
        fresh = np.ones(len(unique), dtype=bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, unique), len(run) - 1)
            fresh &= run[at] != unique
        new = np.zeros(len(keys), dtype=bool)
        new[first[fresh]] = True
        self._add(unique[fresh])
        return new

    def _add(self, run: np.ndarray) -> None:
        """Keep the sorted keys ``run``, merging runs while the newest is as big as the one
        before it (a stable sort of two sorted runs is a merge)."""
        if not len(run):
            return
        self._runs.append(run)
        while len(self._runs) > 1 and len(self._runs[-1]) >= len(self._runs[-2]):
            newer = self._runs.pop()
            older = self._runs.pop()
            self._runs.append(np.sort(np.concatenate([older, newer]), kind="stable"))


def _digest(agent: str, rid: str) -> bytes:
    """A record's key as 16 bytes; the agent's length first, so that no two distinct
    (agent, id) pairs give the same text."""
    return hashlib.blake2b(f"{len(agent)}:{agent}{rid}".encode(), digest_size=16).digest()


def write_partitioned(sources: str | Path | Sequence[str | Path], out_dir: str | Path, *,
                      flush_rows: int = FLUSH_ROWS, workers: int | None = None
                      ) -> dict[str, int]:
    """Write ``sources`` as a Parquet dataset partitioned by region; returns rows per region.

    ``out_dir`` must not exist yet (or be empty); the dataset is built beside it and
    renamed into place when complete.  A record without a region goes to
    ``region=__none__``.  A big JSON Lines file is decoded by ``workers`` forked
    processes (default: as :func:`netvantage.analysis.load.load` has it, one per CPU from
    64 MiB on), a range of lines each (:func:`_range_table`); this process keeps each
    record's first (agent, id), cuts the rows by region and writes them, the ranges in
    file order, so the dataset is the one a single process writes.  Any bad line: one
    SchemaError lists the first ones with their line numbers, and nothing is written.
    """
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    from ..errors import SchemaError
    from .load import _MAX_PROBLEMS, _chunks, _is_jsonl, _no_gc, _sources, _workers, line_ranges

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ClusterError(f"{out} already exists and is not an empty directory")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    held: dict[str, list[Any]] = {}  # region -> tables not yet written
    counts: dict[str, int] = {}
    seen = SeenKeys()
    buffered = size = 0
    flushes = 0

    def flush() -> None:
        nonlocal buffered, size, flushes
        for region, tables in held.items():
            part = tmp / f"region={region}"
            part.mkdir(exist_ok=True)
            table = pa.concat_tables(tables)
            # Row groups of about ROW_GROUP_BYTES of text: a reader decompresses one at a time.
            per_row = max(1, table.nbytes // max(1, table.num_rows))
            pq.write_table(table, part / f"part-{flushes}.parquet", compression="zstd",
                           row_group_size=max(1, ROW_GROUP_BYTES // per_row))
        held.clear()
        buffered = size = 0
        flushes += 1

    def keep(table: Any, keys: np.ndarray) -> None:
        """The rows of ``table`` whose key is met for the first time, held by region."""
        nonlocal buffered, size
        fresh = seen.first_met(keys)
        if not fresh.all():
            table = table.filter(pa.array(fresh))
        if not table.num_rows:
            return
        regions = table.column("region").to_numpy(zero_copy_only=False)
        codes, names = pd.factorize(regions, use_na_sentinel=False)
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        table = table.take(pa.array(order))
        for at, stop in zip([0, *bounds], [*bounds, len(order)], strict=True):
            name = names[codes[order[at]]]
            region = "__none__" if name is None else str(name)
            held.setdefault(region, []).append(table.slice(at, stop - at))
            counts[region] = counts.get(region, 0) + (stop - at)
        buffered += table.num_rows
        size += table.column("body").nbytes
        if buffered >= flush_rows or size >= FLUSH_BYTES:
            flush()

    try:
        for path, label in _sources(sources):
            n = (workers or _workers(path)) if _is_jsonl(path) else 1
            if n <= 1:
                with _no_gc():
                    for chunk in _chunks(path, None, show=True):
                        keep(*_table_of(chunk))
                continue
            problems: list[str] = []
            bad = line = 0
            ranges = [(str(path), a, b, last)
                      for a, b, last in line_ranges(path, RANGE_BYTES)]
            with progress.step(label, unit=" records", scale=True) as bar:
                for table, keys, lines, failed, found in _in_order(_range_table, ranges, n):
                    bad += failed
                    problems += [f"line {line + k}{why}" for k, why in found][
                        :_MAX_PROBLEMS - len(problems)]
                    line += lines
                    bar.update(lines)
                    if not bad:
                        keep(table, keys)
            if bad:
                more = f" (showing {len(problems)})" if bad > len(problems) else ""
                raise SchemaError(f"{path}: {bad} bad line(s), nothing written{more}",
                                  problems)
        if held:
            flush()
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def _schema() -> Any:
    """The dataset's columns: ``netvantage export``'s, the body as JSON text."""
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("schema", pa.int32()), ("kind", pa.string()),
        ("agent", pa.string()), ("region", pa.string()), ("target", pa.string()),
        ("address", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")), ("duration_ms", pa.float64()),
        ("status", pa.string()), ("error", pa.string()), ("source", pa.string()),
        ("body", pa.string()),
    ])


def _table_of(records: Sequence[Any]) -> tuple[Any, np.ndarray]:
    """Records as the dataset's columns (an Arrow table), with their keys (:class:`SeenKeys`)."""
    import pyarrow as pa

    schema = _schema()
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for r in records:
        for name, value in (
            ("id", r.id), ("schema", r.schema), ("kind", r.kind), ("agent", r.agent),
            ("region", r.region), ("target", r.target), ("address", r.address),
            ("started_at", r.started_at), ("duration_ms", r.duration_ms),
            ("status", r.status), ("error", r.error), ("source", r.source),
            ("body", _json.encode(r.body).decode("utf-8")),
        ):
            columns[name].append(value)
    keys = np.array([_digest(r.agent, r.id) for r in records], dtype="S16")
    return pa.Table.from_pydict(columns, schema=schema), keys


def _range_table(task: tuple[str, int, int, bool]
                 ) -> tuple[Any, np.ndarray, int, int, list[tuple[int, str]]]:
    """(the dataset's columns, their keys, lines read, bad lines, the first bad ones) of one
    range of a JSON Lines file, in a worker of :func:`write_partitioned`: decoded a block
    at a time as the loader does (:func:`netvantage.analysis.load._range_part`), a line at
    a time where a block is not all good records, which finds and explains the bad ones."""
    from .load import _block_records, _blocks, _no_gc, lines_records

    name, start, end, last = task
    with open(name, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    with _no_gc():
        records: list[Any] = []
        for block, newlines in _blocks(data):
            decoded = _block_records(block, newlines)
            if decoded is None:
                break
            records += decoded[0]
        else:
            return (*_table_of(records), len(records), 0, [])
        records, lines, bad, found = lines_records(data, last)
        if bad:
            return None, np.empty(0, dtype="S16"), lines, bad, found
        return (*_table_of(records), lines, 0, [])


def _in_order(work: Any, tasks: Sequence[Any], workers: int) -> Iterator[Any]:
    """``map(work, tasks)`` by ``workers`` forked processes, in order, with at most two
    tasks per worker begun and not yet taken (the answers wait in memory until taken)."""
    import multiprocessing
    from collections import deque
    from concurrent.futures import Future, ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    pending: deque[Future[Any]] = deque()
    try:
        # The first task forks every worker (before the executor's own thread starts),
        # with the progress bar's timer stopped: fork copies only the calling thread, and
        # a lock another one held would stay locked in the child.
        with progress.forkable():
            pool.submit(int).result()
        for task in tasks:
            pending.append(pool.submit(work, task))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool:
        raise ClusterError("a process decoding the records ended without an answer "
                           "(killed? out of memory?); nothing written") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def partitions(dataset: str | Path) -> list[Path]:
    """The region partitions of a dataset written by :func:`write_partitioned`, sorted."""
    root = Path(dataset)
    parts = sorted(p for p in root.glob("region=*") if p.is_dir()) if root.is_dir() else []
    if not parts:
        raise ClusterError(f"{root}: not a dataset partitioned by region (no region=…/ "
                           "directories); write one with 'netvantage partition DATA -o DIR'")
    return parts


class PartitionResult(msgspec.Struct, frozen=True):
    """What a worker sends back for one partition (frames as pickled pandas)."""

    measurements: Any
    pairs: Any
    readiness: Any = None


#: The measurements' columns the client reads (the weights, the handshake check and
#: :func:`netvantage.analysis.rank.rank`): a worker sends only these back.  All 26 columns
#: of 10M records made the client hold 4.5 GB; these nine are about a third of the bytes.
CLIENT_COLUMNS = ("kind", "region", "target", "ok", "rtt_ms", "loss_ratio", "handshake_ms",
                  "rtt_sd_ms", "rtt_samples")


def analyse_partition(part: str, *, n_boot: int, seed: int) -> PartitionResult:
    """Load one partition and compute its per-pair table (runs on a worker)."""
    from .load import load
    from .metrics import metrics

    campaign = load(part)
    pairs = metrics(campaign, n_boot=n_boot, seed=seed)
    m = campaign.measurements
    return PartitionResult(measurements=m[[c for c in CLIENT_COLUMNS if c in m.columns]],
                           pairs=pairs, readiness=campaign.readiness)


def concat_frames(frames: Sequence[pd.DataFrame], specs: dict[str, Any]) -> pd.DataFrame:
    """Partitions' frames as one; a categorical gets the categories one load of the whole
    dataset gives it (``specs``: the loader's dtype rule per column).

    Each partition's codes are mapped onto the united categories (no column is turned
    into Python strings: 10M rows of three such columns would be 30M object references).
    """
    if not frames:
        raise ClusterError("no partition")
    columns: dict[str, Any] = {}
    for column in frames[0].columns:
        spec = specs.get(column)
        if not (spec == "cat" or isinstance(spec, tuple)):
            continue
        seen = {c for f in frames for c in f[column].cat.categories}
        categories = pd.Index([*spec, *sorted(c for c in seen if c not in spec)]
                              if isinstance(spec, tuple) else sorted(seen))
        columns[column] = pd.Categorical.from_codes(
            np.concatenate([_recoded(f[column].array, categories) for f in frames]),
            categories=categories)
    rest = [c for c in frames[0].columns if c not in columns]
    out = pd.concat([f[rest] for f in frames], ignore_index=True)
    for column, values in columns.items():
        out[column] = values
    return out[list(frames[0].columns)]


def _recoded(values: pd.Categorical, categories: pd.Index) -> np.ndarray:
    """``values``' codes in ``categories`` (which hold every one of its categories)."""
    where = categories.get_indexer(values.categories)
    codes = np.asarray(values.codes, dtype=np.int32)
    return np.where(codes >= 0, where[codes], -1).astype(np.int32)


def connect(address: str, *, workers: int = 2, memory: str = "2GiB") -> Any:
    """A :class:`distributed.Client`: of a new local cluster ("local") or of ``address``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ClusterError("--dask needs the cluster extra (dask[dataframe], distributed): "
                           "pip install 'netvantage[cluster]'") from None
    if address == "local":
        # A task holds no data between tasks (its result goes to the client), so a worker
        # whose unmanaged memory stays high after one (allocator caches) is not paused at
        # Dask's default 80 %, which would wait forever; it still restarts past 98 %.
        import dask

        with dask.config.set({"distributed.worker.memory.pause": 0.95,
                              "distributed.worker.memory.terminate": 0.98}):
            cluster = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers, threads_per_worker=1, processes=True,
                memory_limit=memory, dashboard_address=None)
        return Client(cluster)  # type: ignore[no-untyped-call]
    try:
        return Client(address, timeout=10)  # type: ignore[no-untyped-call]
    except OSError as exc:
        raise ClusterError(f"--dask {address}: cannot reach the scheduler ({exc})") from None


def campaign_of(measurements: pd.DataFrame) -> Campaign:
    """A campaign of measurements only (what the weights and the ranking read)."""
    from .load import frames_from_records

    empty = frames_from_records([])
    return Campaign(measurements=measurements, samples=empty.samples, hops=empty.hops,
                    phases=empty.phases)


@dataclass(frozen=True)
class ClusterAnalysis:
    """What ``analyse --dask`` answers: the per-pair table and the ranking (each equal to
    the single-machine analysis's ``metrics`` and ``ranking`` on the same dataset)."""

    weights: dict[str, float]
    pairs: pd.DataFrame
    ranking: Ranking
    notes: list[str] = field(default_factory=list)

    @property
    def winner(self) -> str | None:
        table = self.ranking.table
        table = table[table["eligible"].astype(bool) & table["score"].notna()]
        return None if table.empty else str(table.sort_values("rank").iloc[0]["target"])

    def to_dict(self) -> dict[str, Any]:
        def records(frame: pd.DataFrame) -> Any:
            return json.loads(frame.to_json(orient="records", date_format="iso"))

        return {"weights": self.weights, "winner": self.winner, "notes": self.notes,
                "ranking": records(self.ranking.table),
                "breakdown": records(self.ranking.breakdown), "pairs": records(self.pairs)}

    def to_text(self) -> str:
        table = self.ranking.table
        shown = [c for c in ("rank", "target", "score", "ci_low", "ci_high", "eligible")
                 if c in table.columns]
        lines = [f"Recommended: {self.winner or 'none'}", "", "Ranking:",
                 table[shown].to_string(index=False), "",
                 f"Per-pair table: {len(self.pairs)} (region, target, kind) rows "
                 "(--format json for all of it)."]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _reset_peak() -> None:
    """Start a worker's peak RSS afresh (Linux: writing 5 to clear_refs resets VmHWM); a
    forked worker otherwise starts with its parent's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss_mib() -> float:
    """The worker's peak RSS since :func:`_reset_peak` (VmHWM), else getrusage's."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def analyse_on_cluster(dataset: str | Path, address: str, *,
                       weights: Mapping[str, float] | None = None, gaps: str = "exclude",
                       n_boot: int = 500, seed: int = 0, workers: int = 2,
                       memory: str = "2GiB",
                       readiness_fail_on: Sequence[str] | None = None) -> ClusterAnalysis:
    """The per-pair table and the ranking of a region-partitioned dataset on a Dask cluster.

    Each partition is loaded and its per-pair statistics computed on a worker; the client
    ranks on the gathered measurements (see the module docstring).  ``weights`` by
    region (or group, resolved without locations), as :func:`~netvantage.analysis.analyse`.
    """
    parts = partitions(dataset)
    with _scratch(address):
        return _on_cluster(parts, address, weights=weights, gaps=gaps, n_boot=n_boot,
                           seed=seed, workers=workers, memory=memory,
                           readiness_fail_on=readiness_fail_on)


@contextmanager
def _scratch(address: str) -> Iterator[None]:
    """A local cluster's scratch space in a temporary folder removed afterwards, unless
    Dask's ``temporary-directory`` is configured: by default the workers leave a
    ``dask-scratch-space`` folder in the system's temporary directory behind them."""
    import dask

    if address != "local" or dask.config.get("temporary-directory", None):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="netvantage-dask-") as folder, \
            dask.config.set({"temporary-directory": folder}):
        yield


def _on_cluster(parts: list[Path], address: str, *, weights: Mapping[str, float] | None,
                gaps: str, n_boot: int, seed: int, workers: int, memory: str,
                readiness_fail_on: Sequence[str] | None) -> ClusterAnalysis:
    from . import progress
    from .load import _MEASUREMENT_DTYPES
    from .metrics import DEFAULT_BY
    from .mix import client_regions, resolve_weights
    from .rank import CostModel, Thresholds, rank
    from .readiness import DEFAULT_FAIL_ON, with_readiness
    from .readiness import readiness as readiness_of
    from .summary import equal_weights

    client = connect(address, workers=workers, memory=memory)
    results: dict[str, PartitionResult] = {}
    try:
        from distributed import as_completed

        client.run(_reset_peak)
        futures = client.map(analyse_partition, [str(p) for p in parts], key=[
            f"analyse-{p.name}" for p in parts], n_boot=min(n_boot, 500), seed=seed)
        where = {f.key: str(p) for f, p in zip(futures, parts, strict=True)}
        with progress.step("partitions", total=len(parts), unit=" partitions") as bar:
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                results[where[future.key]] = future.result()
                future.release()
                bar.update(1)
        peaks = client.run(_peak_rss_mib)  # every worker's own peak, as it saw it
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None and address == "local":
            cluster.close()
    ordered = [results[str(p)] for p in parts]
    m = concat_frames([r.measurements for r in ordered], _MEASUREMENT_DTYPES)
    pairs = pd.concat([r.pairs for r in ordered], ignore_index=True)
    keys = [k for k in DEFAULT_BY if k in pairs.columns]
    for key in keys:
        if key in m.columns and isinstance(m[key].dtype, pd.CategoricalDtype):
            pairs[key] = pd.Categorical(pairs[key].astype(object),
                                        categories=m[key].cat.categories)
    pairs = pairs.sort_values(keys, kind="stable").reset_index(drop=True)
    notes: list[str] = []
    thresholds = Thresholds()
    if not set(m["kind"].astype(str).unique()) & set(thresholds.handshake_kinds):
        thresholds = Thresholds(handshake_p95_ms=None)
        notes.append("no SMTP measurements: the handshake threshold is not applied")
    # Mail readiness fails candidates as in analyse() (readiness records, if any).
    ready_frames = [r.readiness for r in ordered if r.readiness is not None]
    ready = readiness_of(pd.concat(ready_frames, ignore_index=True) if ready_frames else None,
                         DEFAULT_FAIL_ON if readiness_fail_on is None
                         else tuple(readiness_fail_on))
    thresholds = with_readiness(thresholds, ready)
    resolved = resolve_weights(weights, client_regions(m), None)[0] if weights else None
    w = dict(resolved) if resolved else equal_weights(campaign_of(m))
    ranking = rank(m, w, cost=CostModel(), thresholds=thresholds, n_boot=n_boot, seed=seed,
                   gaps=gaps)
    notes.append("worker peak RSS (MiB): "
                 + ", ".join(f"{peaks[k]:.0f}" for k in sorted(peaks)))
    return ClusterAnalysis(weights=w, pairs=pairs, ranking=ranking, notes=notes)
