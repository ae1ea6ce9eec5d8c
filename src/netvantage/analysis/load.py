"""Records in, tidy frames out: the loader at the edge of the analysis layer.

:func:`load` reads a campaign from any of the three places records live and
returns a :class:`~netvantage.analysis.frames.Campaign`:

* a **JSON Lines** file (or a list of them), as agents and ``netvantage export``
  write it;
* the collector's **SQLite store** (the ``json`` column of its ``records``
  table, opened read-only so that a running collector is not disturbed);
* an exported **Parquet dataset** directory (``kind=…/date=…/part-N.parquet``:
  the envelope columns and ``body`` as JSON text).

Whatever the source, every record goes through the one schema decoder
(:func:`netvantage.results.decode_record`, msgspec), so a Parquet row or a store
row is validated exactly as a line of JSON Lines is, and an Atlas import
(``source`` other than ``netvantage``) loads like our own records.  A record
whose ``id`` was already read (the same record in two files) is kept once.

Records are **streamed**: decoded :data:`CHUNK_RECORDS` (or :data:`CHUNK_BYTES`) at a
time, each chunk turned into compact columns — category codes, float and integer
arrays, Arrow strings — before the next is decoded, so memory follows the frames,
never every record's Python object; the rows of samples, hops and phases take their
record's id, kind, region, target, port and time from its ``measurements`` row.  The
cyclic garbage collector is paused while decoding (millions of acyclic objects made
it walk the heap again and again).  Why msgspec rather than Arrow's JSON reader:
measured on 100k synthetic records (125 MB), msgspec's validating decode took 2.4 s,
``pyarrow.json.read_json`` 3.0 s for the whole file at once with no validation at
all, so the one schema decoder stays; a Parquet dataset is read a file and a small
batch at a time (:class:`pyarrow.parquet.ParquetFile`, no read-ahead), only the
record's columns.

A JSON Lines file of :data:`POOL_BYTES` or more is decoded by a pool of forked
processes, one per CPU (:func:`_pooled`): decoding and building columns is pure
Python per record, so a second process is the one way to use a second CPU.  Each
worker decodes a range of lines and sends back its chunk's compact columns (numpy
and Arrow buffers: cheap to pickle); the chunks come back in file order and their
category codes are made global here, so the frames are those of a one-process load
(tests compare them exactly).  Smaller files, stores and Parquet datasets are read
in this process (no pool to start for a campaign of a few thousand records; a Dask
worker is a daemon process and may not start one).  Per chunk, rows are gathered as
tuples per kind and turned into columns once (``None`` is NaN in a float column).
Measured on the 1M-record synthetic file (``bench/make_synthetic.py``, 1.25 GB) on a
machine with 2 CPUs busy with other jobs (load average 8-9), ``time.perf_counter`` and
``getrusage`` around :func:`load`: 17.2 s of CPU in the two workers and 4.0 s in this
process (receiving the chunks, concatenating, deduplicating, the pandera checks, whose
uniqueness checks factorize every id string), 69 s wall; before, one process spent
27.3 s of CPU, 125 s wall.  On a quiet machine that should be about 12 s of wall time (half
the workers' CPU, then this process's tail; an estimate), against 26 s.  Per 100k records the
workers spend 0.7-0.85 s decoding and 0.73 s building columns (1.01 s before the rows
per kind).  This process's peak RSS: 1,382 MiB (1,783 MiB before), the frames
613 MiB (``memory_usage(deep=True)``; unchanged: 277 MiB of them are samples, whose
``id`` strings repeat their record's).  Then, same file, load average 5-7, two loads
each, this code against the one before: 3.0-3.3 s of CPU in this process (4.3-4.7 s:
the checks validate in place and prove uniqueness on record numbers, see
:func:`_check_loaded`), peak RSS 915-969 MiB (1,393-1,422: the heap is trimmed as each
frame is built), 864-887 MiB held after loading (942-943; the frames and some 190 MiB of
imported modules), the workers' CPU 16.9-17.5 s (17.5-17.8 s).

The children's ``id`` column stays strings.  As a categorical sharing the measurements'
ids as categories (codes int32) it would take 25 MiB instead of 153 (samples 109, hops
16, phases 28) at 1M records, but its consumers would pay: ``astype("string")`` of the
samples' ids 0.98 s (free for strings), a group-by on it 1.03 s (0.16 s), and sorting by
it would follow the categories' order, not the ids'.

The frames' columns are those of :mod:`netvantage.analysis.frames`; their dtypes:

================  ===================================================================
dtype             columns
================  ===================================================================
category          kind, agent, region, target, status, source, failed_phase,
                  tls_version, rtt_stat (measurements); kind, region, target (samples);
                  region, target, protocol (hops); kind, region, target, mode,
                  phase (phases).  ``kind``, ``status`` and ``phase`` have fixed
                  categories in schema order (phases in dialogue order), so
                  frames from different loads concatenate and sort alike.
str               id, address; hops' address, as_org, country, city (NaN = missing)
datetime64[ns,    started_at (every frame)
UTC]
Int64 (nullable)  port, sent, received, rtt_samples (measurements); port (samples, phases);
                  icmp_type, asn (hops)
int64             seq (samples); ttl, replies, sent (hops)
float64           every ``_ms``, ``_ratio``, lat, lon (NaN = missing)
bool              ok, summary (measurements); ok (phases), is_destination (hops)
boolean           cert_verified (nullable)
================  ===================================================================

The headline figures of ``measurements`` per kind (NaN / <NA> where a kind has none):

* ping: rtt_ms = median RTT, rtt_min_ms, jitter_ms from the body's statistics;
  sent/received/loss_ratio from the body.
* tcp: the same over connect times; sent = attempts, received = successful ones.
* trace: the destination hop (``dest_ttl``), its probes answered by the
  destination address (all the hop's answers if none came from it): rtt_ms is
  their median, sent = probes at that TTL, received = answered; a trace that
  never reached its destination has NaN/<NA> there (missing, not 100 % loss:
  its TTL is unknown).
* rtt_samples: the RTTs behind the record's figures (ping: replies; tcp:
  successful connects; trace: the destination's answers; smtp/imap: 1 with a
  handshake figure, else 0); rtt_stat: "median" for ping/tcp/trace records
  with an RTT, <NA> for smtp/imap (rtt_ms is a sum of phases there).
* ping and tcp **summary records** (schema 2: statistics without samples, e.g.
  an old-firmware Atlas ping or a latency matrix cell) have no rows in
  ``samples``.  rtt_ms is the most central figure the summary gives: the median
  (or p50), else the mean, else the minimum, else the lowest percentile, else
  the maximum; ``rtt_stat`` names it ("median", "mean", "min", "p90", "max").
  rtt_min_ms is the summary's minimum only (NaN if not given; it is the floor
  the physical-bound tests use); jitter_ms is NaN (mdev and stdev are not
  jitter).  sent/received (tcp: attempted/succeeded) are the source's counts,
  <NA> where it gives none, and loss_ratio is NaN then (unknown, not 0 %).
  ``rtt_samples`` is the summary's ``samples`` (<NA>: the source does not say).
* rtt_sd_ms: the spread of the record's own RTTs, the sample standard deviation
  (n - 1 in the denominator) of the received ping echoes or successful tcp
  connects when there are two or more; a summary's ``stdev_ms`` (never its
  ``mdev_ms``, a different quantity); NaN otherwise (traces, smtp/imap, fewer
  than two RTTs).  The ranking's noise for one record per pair comes from it
  (:mod:`netvantage.analysis.rank`).
* smtp/imap: handshake_ms = sum of the phase durations when the record is ok
  and no phase failed; rtt_ms is the same figure (so that one column holds
  every kind's headline time); failed_phase, tls_version, cert_verified.

Frames are checked at this boundary with pandera schemas (:data:`SCHEMAS`,
:func:`check_frame`, :func:`check_campaign`); every problem is reported at once
in one :class:`~netvantage.errors.SchemaError`.  The other analysis modules may
call :func:`check_campaign` on frames they are given.
"""

from __future__ import annotations

import ctypes
import gc
import itertools
import math
import multiprocessing
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager, nullcontext
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote

import msgspec
import numpy as np
import pandas as pd
import pyarrow  # type: ignore[import-untyped]

from ..errors import NetvantageError, SchemaError
from ..results import (
    KINDS,
    STATUSES,
    AnyRecord,
    ImapRecord,
    MailReadyRecord,
    PingRecord,
    PmtuRecord,
    RttSummary,
    SmtpRecord,
    TcpBody,
    TcpRecord,
    TraceRecord,
    decode_record,
    rtt_stats,
)
from . import progress
from .frames import (
    HOP_COLUMNS,
    MEASUREMENT_COLUMNS,
    PHASE_COLUMNS,
    SAMPLE_COLUMNS,
    Campaign,
)
from .pmtu import pmtu_frame
from .readiness import readiness_frame

if TYPE_CHECKING:
    import pandera.pandas as pa

__all__ = ["FRAME_NAMES", "PHASE_ORDER", "LoadError", "check_campaign", "check_frame",
           "frames_from_records", "load", "read_records", "schemas"]

Source = str | Path

#: The frames of a :class:`Campaign`, in order.
FRAME_NAMES = ("measurements", "samples", "hops", "phases")

#: Phase names in an order that is dialogue order for SMTP and IMAP alike (each
#: protocol's phases are a subsequence of it; with implicit TLS the handshake
#: actually precedes the greeting); unknown names follow, sorted.
PHASE_ORDER: tuple[str, ...] = (
    "dns", "connect", "greeting", "ehlo", "capability", "starttls", "tls_handshake",
    "ehlo_tls", "capability_tls", "auth", "login", "quit", "logout",
)

_SQLITE_MAGIC = b"SQLite format 3\x00"
_PARQUET_MAGIC = b"PAR1"
_UTC_NS = pd.DatetimeTZDtype("ns", "UTC")
_ENVELOPE = ("id", "schema", "agent", "region", "target", "address", "started_at",
             "duration_ms", "status", "error", "source")
_enc = msgspec.json.Encoder()


class LoadError(NetvantageError):
    """A source cannot be read as records (missing, unknown format, bad ``kinds``)."""


# --------------------------------------------------------------------------- reading

#: Records decoded, turned into columns and dropped at a time: memory holds one
#: chunk of record objects, never the whole campaign's.
CHUNK_RECORDS = 20_000
#: ... or this many bytes of JSON, whichever comes first (records with long bodies: a
#: chunk of them is held twice, as text and as decoded strings).
CHUNK_BYTES = 16 * 2**20
_MAX_PROBLEMS = 20


def load(source: Source | Sequence[Source], *, kinds: Iterable[str] | None = None) -> Campaign:
    """Read a campaign (JSON Lines, collector store or Parquet dataset) as checked frames.

    ``source`` may be a list of sources (of any of the three forms).  ``kinds``
    keeps only those record kinds (read more cheaply where the source allows).
    Raises :class:`LoadError` for a source that cannot be read and
    :class:`~netvantage.errors.SchemaError` (listing every problem) for records
    or frames that do not fit the schema.

    Records are streamed: decoded :data:`CHUNK_RECORDS` at a time, each chunk
    turned into compact columns (category codes, floats, Arrow strings) before
    the next is read, so memory follows the size of the frames, not of the input.
    A record whose (agent, id) was already read is kept once (see :func:`read_records`).
    """
    builder = _Builder()
    with _no_gc():
        for part in _parts(source, kinds):
            builder.add_part(part)
            del part  # its columns are the builder's now
        campaign = builder.campaign(dedup=True)
    keyed = builder.keys_unique
    del builder
    _trim_heap()
    with progress.step("checking the frames"):
        return _check_loaded(campaign, keyed)


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere
    nothing).

    The chunks' columns (arrays of some 100 kB, unpickled from the workers) live in the
    heap until the frames are concatenated from them; freed, they leave holes that glibc
    keeps, while the frames and the analysis's big arrays are mapped apart.  Measured on
    1M synthetic records: the loading process held 1,160 MiB after building the frames
    (613 MiB of them), 826 MiB after the trim, which took 0.04 s; trimmed after each
    frame (:meth:`_Builder.campaign`), 7 calls take 0.05 s in all.  Since glibc 2.8 the
    call frees whole free pages anywhere in the heap, not only at its top (malloc_trim(3)).
    """
    try:
        # The process's own symbols (libc's among them): no library search, which would
        # start a subprocess (ldconfig) from this big process.
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def read_records(source: Source | Sequence[Source], *,
                 kinds: Iterable[str] | None = None) -> list[AnyRecord]:
    """The validated records of ``source`` (see :func:`load`), each (agent, id) once.

    A record is identified by its agent and its id, as the collector stores it: the
    same pair read twice (two files, a re-import) is kept once.  Two agents' records
    that share an id are both kept; the later one's ``id`` becomes ``AGENT:ID`` in the
    frames, whose rows are joined on ``id`` alone.
    """
    seen: set[tuple[str, str]] = set()
    ids: set[str] = set()
    out: list[AnyRecord] = []
    for chunk in _chunks(source, kinds):
        for record in chunk:
            key = (record.agent, record.id)
            if key in seen:
                continue
            seen.add(key)
            if record.id in ids:
                record = msgspec.structs.replace(record, id=f"{record.agent}:{record.id}")
            ids.add(record.id)
            out.append(record)
    return out


def _sources(source: Source | Sequence[Source]) -> list[tuple[Path, str]]:
    """The sources as paths, each with its progress label ("loading NAME" when several)."""
    sources = [source] if isinstance(source, str | Path) else list(source)
    if not sources:
        raise LoadError("no source given: name a JSON Lines file, a store or a Parquet dataset")
    return [(Path(one), f"loading {Path(one).name}" if len(sources) > 1 else "loading")
            for one in sources]


def _chunks(source: Source | Sequence[Source], kinds: Iterable[str] | None, *,
            show: bool = False) -> Iterator[list[AnyRecord]]:
    """Every source's validated records (not deduplicated), a chunk at a time."""
    wanted = _kinds(kinds)
    for path, label in _sources(source):
        step = (progress.step(label, unit=" records", scale=True) if show
                else nullcontext(None))
        with step as bar:
            for chunk in _read_one(path, wanted):
                if bar is not None:
                    bar.update(len(chunk))
                yield chunk


def _parts(source: Source | Sequence[Source], kinds: Iterable[str] | None,
           ) -> Iterator[_Part]:
    """Every source's records as compact columns (:func:`_part`), a chunk at a time.

    A big JSON Lines file is decoded by a pool of worker processes (:func:`_pooled`);
    everything else a chunk at a time here.
    """
    wanted = _kinds(kinds)
    for path, label in _sources(source):
        workers = _workers(path)
        with ExitStack() as stack:
            pool = None
            if workers > 1:
                pool = ProcessPoolExecutor(workers,
                                           mp_context=multiprocessing.get_context("fork"))
                # Left early (an error, Ctrl-C): the ranges not yet begun are dropped.
                stack.callback(pool.shutdown, wait=True, cancel_futures=True)
                # The first task forks every worker, before the executor's own thread
                # and the progress bar's start: fork copies only the calling thread, and
                # a lock another thread held would stay locked in the child.
                pool.submit(int).result()
            bar = stack.enter_context(progress.step(label, unit=" records", scale=True))
            parts = (_pooled(path, wanted, pool) if pool is not None
                     else map(_part, _read_one(path, wanted)))
            for part in parts:
                bar.update(part.n + len(part.ready))
                yield part


#: A JSON Lines file at least this big is decoded by a pool of processes, one per CPU
#: (:func:`_pooled`); a smaller one in this process (no pool to start for a test campaign).
POOL_BYTES = 64 * 2**20


def _workers(path: Path) -> int:
    """How many processes decode ``path``: 1 unless it is a big JSON Lines file, this
    process may start children (a Dask worker is a daemon and may not) and fork exists."""
    if (not path.is_file() or path.stat().st_size < POOL_BYTES
            or multiprocessing.current_process().daemon
            or "fork" not in multiprocessing.get_all_start_methods()):
        return 1
    with open(path, "rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if head == _SQLITE_MAGIC or head.startswith(_PARQUET_MAGIC):
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def _pooled(path: Path, kinds: tuple[str, ...] | None,
            pool: ProcessPoolExecutor) -> Iterator[_Part]:
    """A JSON Lines file decoded by a ``pool`` of forked processes, a range of lines each.

    The file is cut into ranges of about :data:`CHUNK_BYTES` at line starts; a worker
    reads its range, decodes it with the one schema decoder and returns its compact
    columns (:class:`_Part`, pickled as numpy and Arrow buffers); the parts come back in
    file order, so the frames, their categories and the deduplication are those of a
    load in one process.  Any bad line: after every range is read, one SchemaError
    lists the first :data:`_MAX_PROBLEMS` with their line numbers, and nothing loads.
    """
    size = path.stat().st_size
    starts = [0]
    with open(path, "rb") as fh:
        for at in range(CHUNK_BYTES, size, CHUNK_BYTES):
            if at <= starts[-1]:
                continue
            fh.seek(at - 1)
            fh.readline()  # to the end of the line holding byte ``at - 1``
            if fh.tell() < size:
                starts.append(fh.tell())
    ranges = [(str(path), a, b, b == size, kinds)
              for a, b in zip(starts, [*starts[1:], size], strict=True)]
    problems: list[str] = []
    bad = line = 0
    results = pool.map(_range_part, ranges)
    schemas()  # pandera's import (about 1 s) while the workers decode, not after
    try:
        for part, lines, failed, found in results:
            bad += failed
            problems += [f"line {line + n}{why}" for n, why in found][
                :_MAX_PROBLEMS - len(problems)]
            line += lines
            if not bad and part is not None:
                yield part
    except BrokenProcessPool:
        # A worker killed (the kernel, short of memory; a user): its range will never
        # come, and waiting for it would be forever.
        raise LoadError(f"{path}: a process decoding line {line + 1} or a later one ended "
                        "without an answer (killed? out of memory?); nothing loaded") from None
    if bad:
        more = f" (showing {len(problems)})" if bad > len(problems) else ""
        raise SchemaError(f"{path}: {bad} bad line(s), nothing loaded{more}", problems)


def _range_part(task: tuple[str, int, int, bool, tuple[str, ...] | None],
                ) -> tuple[_Part | None, int, int, list[tuple[int, str]]]:
    """(compact columns, lines read, bad lines, the first bad ones: (line number in the
    range, ": why")) of one range of a JSON Lines file (in a worker of :func:`_pooled`)."""
    name, start, end, last, kinds = task
    with open(name, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    raws = data.split(b"\n")
    tail = raws.pop()  # b"" after the range's last newline, else a torn last line
    records: list[AnyRecord] = []
    found: list[tuple[int, str]] = []
    bad = 0
    with _no_gc():
        for number, raw in enumerate(raws, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                records.append(decode_record(line))
            except SchemaError as exc:
                bad += 1
                if len(found) < _MAX_PROBLEMS:
                    found.append((number, f": {exc}"))
        lines = len(raws)
        if tail:
            lines += 1
            line = tail.strip()
            if line:
                try:
                    records.append(decode_record(line))
                except SchemaError as exc:
                    bad += 1
                    if len(found) < _MAX_PROBLEMS:
                        torn = ": unterminated last line (torn write?)" if last else ""
                        found.append((lines, f"{torn}: {exc}"))
        if bad:
            return None, lines, bad, found
        if kinds is not None:
            records = [r for r in records if r.kind in kinds]
        return _part(records), lines, 0, []


def _kinds(kinds: Iterable[str] | None) -> tuple[str, ...] | None:
    if kinds is None:
        return None
    wanted = tuple(dict.fromkeys([kinds] if isinstance(kinds, str) else kinds))
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise LoadError(f"unknown kind(s) {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(KINDS)})")
    return wanted


def _read_one(path: Path, kinds: tuple[str, ...] | None) -> Iterator[list[AnyRecord]]:
    if path.is_dir():
        yield from _read_parquet(path, kinds)
        return
    if not path.exists():
        raise LoadError(f"{path}: no such file or directory")
    with open(path, "rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if head == _SQLITE_MAGIC:
        yield from _read_store(path, kinds)
        return
    if head.startswith(_PARQUET_MAGIC):
        raise LoadError(f"{path} is one Parquet file of a dataset: give the dataset's "
                        "directory (the one holding kind=…/), whose paths carry the kind")
    for chunk in _decode_chunks(str(path), _jsonl_rows(path), unit="line"):
        yield chunk if kinds is None else [r for r in chunk if r.kind in kinds]


def _jsonl_rows(path: Path) -> Iterator[tuple[str, bytes]]:
    """(where, line) of a JSON Lines file, as :func:`netvantage.results.read_jsonl` reads it."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            # A writer that died mid-line leaves an unterminated tail.
            torn = "" if raw.endswith(b"\n") else ": unterminated last line (torn write?)"
            yield f"line {number}{torn}", line


def _decode_chunks(name: str, rows: Iterable[tuple[str, bytes | str]], *,
                   unit: str = "record") -> Iterator[list[AnyRecord]]:
    """:func:`netvantage.results.decode_all`, a chunk at a time: every row goes through the
    one schema decoder; after the last chunk, one SchemaError lists the bad rows (so a
    source with any bad row loads nothing, as ``decode_all`` has it)."""
    chunk: list[AnyRecord] = []
    problems: list[str] = []
    bad = 0
    size = 0
    for where, text in rows:
        size += len(text)
        try:
            chunk.append(decode_record(text))
        except SchemaError as exc:
            bad += 1
            if len(problems) < _MAX_PROBLEMS:
                problems.append(f"{where}: {exc}")
        if len(chunk) >= CHUNK_RECORDS or size >= CHUNK_BYTES:
            if not bad:
                yield chunk
            chunk = []
            size = 0
    if bad:
        more = f" (showing {len(problems)})" if bad > len(problems) else ""
        raise SchemaError(f"{name}: {bad} bad {unit}(s), nothing loaded{more}", problems)
    if chunk:
        yield chunk


def _read_store(path: Path, kinds: tuple[str, ...] | None) -> Iterator[list[AnyRecord]]:
    sql = "SELECT id, json FROM records"
    args: tuple[str, ...] = ()
    if kinds is not None:
        sql += f" WHERE kind IN ({','.join('?' * len(kinds))})"
        args = kinds
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise LoadError(f"{path}: cannot open the store: {exc}") from None

    def rows() -> Iterator[tuple[str, str]]:
        try:
            # One read transaction: the snapshot stays consistent while a collector writes.
            cursor = conn.execute(sql + " ORDER BY started_at, id", args)
            while batch := cursor.fetchmany(CHUNK_RECORDS):
                for rid, text in batch:
                    yield f"record {rid}", text
        except sqlite3.Error as exc:
            raise LoadError(f"{path}: not a netvantage collector store ({exc})") from None

    try:
        yield from _decode_chunks(str(path), rows())
    finally:
        conn.close()


def _read_parquet(path: Path, kinds: tuple[str, ...] | None) -> Iterator[list[AnyRecord]]:
    """A hive-partitioned dataset (``key=value/`` directories), a file and a batch at a time.

    Each file is read with :class:`pyarrow.parquet.ParquetFile` (no pre-buffering, small
    batches): the dataset scanner's read-ahead holds many batches and files at once, and
    a body may be long.  Files are read in sorted path order; a ``key=value`` directory
    gives the column ``key`` to every row under it.  After each batch Arrow's allocator
    hands its free pages back (mimalloc otherwise keeps the decompression buffers of the
    biggest batch seen: 60-80 MB more peak RSS on a worker reading long bodies).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    pool = pa.default_memory_pool()
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise LoadError(f"{path}: a directory without Parquet files (expected the dataset "
                        "written by 'netvantage export --format parquet')")
    wanted = (*_ENVELOPE, "kind", "body")
    plan: list[tuple[Path, dict[str, str]]] = []
    rows_total = 0
    for file in files:
        fixed = dict(unquote(part).split("=", 1) for part in file.relative_to(path).parts[:-1]
                     if "=" in part)
        if kinds is not None and "kind" in fixed and fixed["kind"] not in kinds:
            continue
        meta = pq.ParquetFile(file).metadata
        names = set(meta.schema.names) | set(fixed)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise LoadError(f"{file}: not a netvantage export, missing column(s) {missing}")
        plan.append((file, fixed))
        rows_total += meta.num_rows
    # Rows per batch: CHUNK_RECORDS / 10, fewer when rows are long (about 8 MB of text per
    # batch, from the files' size and a compression ratio of about 4).
    per_row = 4 * sum(f.stat().st_size for f, _ in plan) / max(1, rows_total)
    batch_rows = max(1, min(CHUNK_RECORDS // 10, int(8 * 2**20 / max(per_row, 1.0))))

    def rows() -> Iterator[tuple[str, bytes]]:
        for file, fixed in plan:
            columns_read = [c for c in wanted if c not in fixed]
            with pq.ParquetFile(file, pre_buffer=False) as reader:
                for batch in reader.iter_batches(batch_size=batch_rows, columns=columns_read,
                                                 use_threads=False):
                    columns = {name: batch.column(name).to_pylist() for name in columns_read}
                    for i in range(batch.num_rows):
                        envelope = {name: fixed[name] if name in fixed else columns[name][i]
                                    for name in ("kind", *_ENVELOPE)}
                        if kinds is not None and envelope["kind"] not in kinds:
                            continue
                        # The body is stored as JSON text: splice it in rather than parse
                        # it twice, and decode the whole record like any other source.
                        text = (_enc.encode(envelope)[:-1] + b',"body":'
                                + str(columns["body"][i]).encode("utf-8") + b"}")
                        yield f"record {envelope['id']}", text
                    del batch, columns
                    pool.release_unused()

    yield from _decode_chunks(str(path), rows())


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector: decoding allocates millions of acyclic objects,
    and every collection it triggers would walk all the live ones again (quadratic)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# --------------------------------------------------------------------------- frames


def frames_from_records(records: Sequence[AnyRecord]) -> Campaign:
    """The four frames of ``records`` (unchecked; :func:`load` checks them)."""
    builder = _Builder()
    for start in range(0, len(records), CHUNK_RECORDS):
        builder.add(records[start:start + CHUNK_RECORDS])
    return builder.campaign(dedup=False)


def _summary_figure(summary: RttSummary) -> tuple[float | None, str | None]:
    """(the figure that stands for a summary record in ``rtt_ms``, its name).

    The median (or p50) if given, else the mean, else the minimum, else the
    lowest percentile given, else the maximum: the most central figure there is.
    """
    median = summary.median_or_p50_ms
    if median is not None:
        return median, "median"
    if summary.mean_ms is not None:
        return summary.mean_ms, "mean"
    if summary.min_ms is not None:
        return summary.min_ms, "min"
    if summary.percentiles_ms:
        key = min(summary.percentiles_ms, key=lambda k: float(k[1:]))
        return summary.percentiles_ms[key], key
    if summary.max_ms is not None:
        return summary.max_ms, "max"
    return None, None


def _ping_tcp(r: PingRecord | TcpRecord, rec: int, m: list[tuple[Any, ...]],
              s: list[Any]) -> None:
    """The measurements row of a ping or tcp record; its samples' RTTs onto ``s``."""
    b = r.body
    if isinstance(b, TcpBody):
        port: int | None = b.port
        sent, received = b.tried, b.succeeded
        rtts: Sequence[float | None] = [a.connect_ms for a in b.attempts]
    else:
        port = None
        sent, received = b.sent, b.received
        rtts = b.rtts_ms
    summary = b.summary
    if summary is not None:
        figure, rtt_stat = _summary_figure(summary)
        # Unknown stays unknown (<NA>): never one sample by default.
        tail: tuple[Any, ...] = (
            figure, summary.min_ms, b.loss_ratio, None, sent, received, None, None, None,
            None, True, rtt_stat, summary.samples if figure is not None else 0,
            summary.stdev_ms)
    else:
        st = b.stats
        got = [x for x in rtts if x is not None]
        tail = (st.median_ms, st.min_ms, b.loss_ratio, st.jitter_ms, sent, received, None,
                None, None, None, False, "median" if received else None, received,
                _stdev(got) if len(got) >= 2 else None)
        if rtts:
            s.append((rec, rtts))
    status = r.status
    m.append((r.id, r.kind, r.agent, r.region, r.target, r.address, port, r.started_at,
              r.duration_ms, status, status == "ok", r.source, *tail))


def _trace(r: TraceRecord, rec: int, m: list[tuple[Any, ...]],
           h: list[tuple[Any, ...]]) -> None:
    """The measurements row of a trace record, and its hops' rows (see :func:`_hops`)."""
    b = r.body
    dest = _destination_probes(r)
    if dest is not None:
        tried, answered = dest
        stats = rtt_stats(answered)
        received = len(answered)
        rtt_samples = sum(x is not None for x in answered)
        tail: tuple[Any, ...] = (
            stats.median_ms, stats.min_ms, 1 - received / tried if tried else None,
            stats.jitter_ms, tried, received, None, None, None, None, False,
            "median" if rtt_samples else None, rtt_samples, None)
    else:
        tail = _NO_FIGURES
    status = r.status
    m.append((r.id, r.kind, r.agent, r.region, r.target, r.address, b.port, r.started_at,
              r.duration_ms, status, status == "ok", r.source, *tail))
    _hops(rec, r, h)


#: The figures of a record that has none (a trace that never reached its destination).
_NO_FIGURES = (None, None, None, None, None, None, None, None, None, None, False, None,
               None, None)


def _mail(r: SmtpRecord | ImapRecord, rec: int, m: list[tuple[Any, ...]],
          p: list[tuple[Any, ...]]) -> None:
    """The measurements row of an smtp or imap record, and its phases' rows."""
    mail = r.body
    status = r.status
    tls_version = cert_verified = None
    if mail.tls is not None:
        tls_version, cert_verified = mail.tls.version, mail.tls.verified
    mode = mail.mode
    durations: list[float | None] = []
    for ph in mail.phases:
        durations.append(ph.duration_ms)
        p.append((rec, mode, ph.name, ph.duration_ms, ph.ok))
    handshake = None
    if (status == "ok" and mail.failed_phase is None and durations
            and None not in durations):
        handshake = float(sum(d for d in durations if d is not None))
    m.append((r.id, r.kind, r.agent, r.region, r.target, r.address, mail.port, r.started_at,
              r.duration_ms, status, status == "ok", r.source, handshake, None, None, None,
              None, None, handshake, mail.failed_phase, tls_version, cert_verified, False,
              None, 0 if handshake is None else 1, None))


def _stdev(values: list[float]) -> float:
    """The sample standard deviation (n - 1), two passes in floats: within a few ulps of
    :func:`statistics.stdev` (exact rationals, a hundred times slower)."""
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum([(x - mean) ** 2 for x in values]) / (len(values) - 1))


def _destination_probes(r: TraceRecord) -> tuple[int, list[float | None]] | None:
    """(probes sent at the destination's TTL, RTTs of the destination's answers), if reached."""
    b = r.body
    if not b.reached or b.dest_ttl is None or b.dest_ttl > len(b.hops):
        return None
    hop = b.hops[b.dest_ttl - 1]
    answered = [p for p in hop.probes if p.address is not None]
    own = [p for p in answered if p.address == r.address]
    return len(hop.probes), [p.rtt_ms for p in (own or answered)]


def _hops(rec: int, r: TraceRecord, h: list[tuple[Any, ...]]) -> None:
    """A row per (TTL, responder), in the order of :data:`_HOP_OWN` (a silent TTL: one row)."""
    b = r.body
    dest_hop = b.dest_ttl if b.reached else None
    protocol = b.protocol
    address = r.address
    for hop in b.hops:
        ttl = hop.ttl
        probes = hop.probes
        sent = len(probes)
        loss = hop.loss_ratio
        responders = hop.responders
        if not responders:  # a silent TTL is still a row
            h.append((rec, protocol, ttl, None, 0, sent, loss, None, None, None, False,
                      None, None, None, None, None, None))
            continue
        at_dest = ttl == dest_hop
        # The destination is the record's address; failing that (it answered
        # from another address), whoever answered at the destination's TTL.
        own = at_dest and any(x.address == address for x in responders)
        for resp in responders:
            where = resp.address
            icmp = None
            for probe in probes:
                if probe.address == where and probe.icmp_type is not None:
                    icmp = probe.icmp_type
                    break
            st = resp.stats
            note = resp.annotation
            if note is None:
                h.append((rec, protocol, ttl, where, resp.replies, sent, loss, st.min_ms,
                          st.median_ms, icmp, at_dest and (where == address or not own),
                          None, None, None, None, None, None))
            else:
                h.append((rec, protocol, ttl, where, resp.replies, sent, loss, st.min_ms,
                          st.median_ms, icmp, at_dest and (where == address or not own),
                          note.asn, note.as_org, note.country, note.city, note.lat,
                          note.lon))


# dtype per column; "cat" is a categorical of the values present, a tuple a
# categorical with those categories first (in that order) and any others after.
_Spec = str | tuple[str, ...]
_MEASUREMENT_DTYPES: dict[str, _Spec] = {
    "id": "str", "kind": KINDS, "agent": "cat", "region": "cat", "target": "cat",
    "address": "str", "port": "Int64", "started_at": "time", "duration_ms": "float64",
    "status": STATUSES, "ok": "bool", "source": "cat", "rtt_ms": "float64",
    "rtt_min_ms": "float64", "loss_ratio": "float64", "jitter_ms": "float64", "sent": "Int64",
    "received": "Int64", "handshake_ms": "float64", "failed_phase": PHASE_ORDER,
    "tls_version": "cat", "cert_verified": "boolean", "summary": "bool", "rtt_stat": "cat",
    "rtt_samples": "Int64", "rtt_sd_ms": "float64",
}
_SAMPLE_DTYPES: dict[str, _Spec] = {
    "id": "str", "kind": KINDS, "region": "cat", "target": "cat", "port": "Int64",
    "started_at": "time", "seq": "int64", "rtt_ms": "float64",
}
_HOP_DTYPES: dict[str, _Spec] = {
    "id": "str", "region": "cat", "target": "cat", "started_at": "time", "protocol": "cat",
    "ttl": "int64", "address": "str", "replies": "int64", "sent": "int64",
    "loss_ratio": "float64", "rtt_min_ms": "float64", "rtt_median_ms": "float64",
    "icmp_type": "Int64", "is_destination": "bool", "asn": "Int64", "as_org": "str",
    "country": "str", "city": "str", "lat": "float64", "lon": "float64",
}
_PHASE_DTYPES: dict[str, _Spec] = {
    "id": "str", "kind": KINDS, "region": "cat", "target": "cat", "port": "Int64",
    "mode": "cat", "started_at": "time", "phase": PHASE_ORDER, "duration_ms": "float64",
    "ok": "bool",
}


# Columns a child frame (samples, hops, phases) takes from its record's row of
# ``measurements`` (through the row number ``_rec``) rather than repeat per row.
_FROM_RECORD = {
    "samples": ("id", "kind", "region", "target", "port", "started_at"),
    "hops": ("id", "region", "target", "started_at"),
    "phases": ("id", "kind", "region", "target", "port", "started_at"),
}


def _compact(spec: _Spec, values: list[Any]) -> Any:
    """A chunk's values of one column as a compact part (what a worker process returns).

    A categorical's part is (codes, the values they stand for): codes are made global
    when the part is added (:meth:`_Column.add`), so parts built apart combine.
    """
    if isinstance(spec, tuple) or spec == "cat":
        objects = np.empty(len(values), dtype=object)
        objects[:] = values
        codes, uniques = pd.factorize(objects)  # None -> -1
        return codes.astype(np.int32), list(uniques)
    if spec == "str":
        return pyarrow.array(values, type=pyarrow.string())
    if spec == "time":
        return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns").asi8
    if spec in ("float64", "int64", "bool"):
        return np.asarray(values, dtype=spec)
    if spec == "Int64":
        # Through float64 (None is NaN), a third of pd.array's time; exact, as these
        # integers (ports, counts, ICMP types, AS numbers) are far below 2**53.
        floats = np.asarray(values, dtype=np.float64)
        missing = np.isnan(floats)
        return pd.arrays.IntegerArray(np.where(missing, 0, floats).astype(np.int64), missing)
    return pd.array(values, dtype=spec)  # type: ignore[call-overload]


class _Column:
    """One column being built: compact parts, a chunk of records each."""

    __slots__ = ("codes", "parts", "spec")

    def __init__(self, spec: _Spec) -> None:
        self.spec = spec
        self.parts: list[Any] = []
        # A categorical's values in the order first seen, and their provisional codes.
        self.codes: dict[Any, int] = {}

    def add(self, part: Any, offset: int = 0) -> None:
        """Add a part of :func:`_compact` (``offset``: added to a ``_rec`` column's values)."""
        spec = self.spec
        if isinstance(spec, tuple) or spec == "cat":
            codes, uniques = part
            if uniques:
                lookup = np.fromiter((self.codes.setdefault(u, len(self.codes))
                                      for u in uniques), dtype=np.int32, count=len(uniques))
                codes = np.where(codes >= 0, lookup[codes], -1).astype(np.int32)
            part = codes
        elif offset:
            part = part + offset
        self.parts.append(part)

    def series(self) -> pd.Series:
        """The whole column; its parts are let go (the column is built once)."""
        spec, parts = self.spec, self.parts
        self.parts = []
        if not parts and spec not in ("cat", "str") and not isinstance(spec, tuple):
            parts = [_compact(spec, [])]
        if isinstance(spec, tuple) or spec == "cat":
            seen = list(self.codes)
            if isinstance(spec, tuple):
                categories = [*spec, *sorted(v for v in seen if v not in spec)]
            else:
                categories = sorted(seen)
            where = {c: i for i, c in enumerate(categories)}
            remap = np.array([where[v] for v in seen], dtype=np.int32)
            codes = np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
            if len(remap):
                codes = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
            return pd.Series(pd.Categorical.from_codes(
                codes, categories=categories))  # type: ignore[call-overload]
        if spec == "str":
            chunked = pyarrow.chunked_array(parts, type=pyarrow.string())
            return pd.Series(chunked.to_pandas(types_mapper=_STR_TYPES.get))
        if spec == "time":
            return pd.Series(pd.DatetimeIndex(np.concatenate(parts).view("M8[ns]"), tz="UTC"),
                             copy=False)
        if spec in ("float64", "int64", "bool"):
            # copy=False: pandas 3 copies an array it is given by default, a second
            # column-sized array for a moment.
            return pd.Series(np.concatenate(parts), copy=False)
        return pd.concat([pd.Series(p) for p in parts], ignore_index=True)


_STR_TYPES = {pyarrow.string(): pd.StringDtype("pyarrow", na_value=np.nan)}


class _Columns:
    """A frame being built: a :class:`_Column` per column, a part per chunk of records."""

    def __init__(self, specs: dict[str, _Spec]) -> None:
        self.specs = specs
        self.built = {name: _Column(spec) for name, spec in specs.items()}

    def add(self, part: dict[str, Any], offset: int) -> None:
        for name, col in self.built.items():
            col.add(part[name], offset if name == "_rec" else 0)

    def series(self) -> dict[str, pd.Series]:
        return {name: col.series() for name, col in self.built.items()}

    def frame(self, order: Sequence[str]) -> pd.DataFrame:
        return pd.DataFrame({name: self.built[name].series() for name in order}, copy=False)


_SAMPLE_OWN: dict[str, _Spec] = {"_rec": "int64", "seq": "int64", "rtt_ms": "float64"}
_HOP_OWN: dict[str, _Spec] = {"_rec": "int64", **{
    c: _HOP_DTYPES[c] for c in HOP_COLUMNS if c not in _FROM_RECORD["hops"]}}
_PHASE_OWN: dict[str, _Spec] = {"_rec": "int64", **{
    c: _PHASE_DTYPES[c] for c in PHASE_COLUMNS if c not in _FROM_RECORD["phases"]}}
_OWN = {"m": _MEASUREMENT_DTYPES, "s": _SAMPLE_OWN, "h": _HOP_OWN, "p": _PHASE_OWN}


class _Part(NamedTuple):
    """A chunk of records as compact columns (cheap to pickle: a worker process returns it).

    ``frames`` maps "m", "s", "h", "p" (measurements, samples, hops, phases) to their
    columns' parts (:func:`_compact`); a child's ``_rec`` counts from the chunk's first
    measurement.
    """

    n: int
    frames: dict[str, dict[str, Any]]
    ready: list[MailReadyRecord | PmtuRecord]  # records kept apart, not measurements


def _part(records: Sequence[AnyRecord]) -> _Part:
    """The compact columns of a chunk of records (see :func:`load`).

    Rows are gathered as tuples (a column's ``None`` is NaN in a float column) and turned
    into columns once per chunk; a sample's record and number come from the count of
    RTTs per record (``np.repeat``), not row by row.
    """
    m: list[tuple[Any, ...]] = []
    s: list[tuple[int, Sequence[float | None]]] = []
    h: list[tuple[Any, ...]] = []
    p: list[tuple[Any, ...]] = []
    # Mail readiness and path MTU are not latency, loss or handshakes: frames apart.
    ready: list[MailReadyRecord | PmtuRecord] = []
    n = 0
    for r in records:
        kind = r.kind
        if kind == "ping" or kind == "tcp":
            _ping_tcp(r, n, m, s)  # type: ignore[arg-type]
        elif kind == "trace":
            _trace(r, n, m, h)  # type: ignore[arg-type]
        elif kind == "smtp" or kind == "imap":
            _mail(r, n, m, p)  # type: ignore[arg-type]
        elif isinstance(r, MailReadyRecord | PmtuRecord):
            ready.append(r)
            continue
        else:
            continue
        n += 1
    counts = np.fromiter((len(x) for _, x in s), dtype=np.int64, count=len(s))
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    samples = {
        "_rec": np.repeat(np.fromiter((i for i, _ in s), dtype=np.int64, count=len(s)),
                          counts),
        "seq": np.arange(total, dtype=np.int64) - np.repeat(starts, counts),
        "rtt_ms": np.fromiter(itertools.chain.from_iterable(x for _, x in s),
                              dtype=object, count=total).astype(np.float64),
    }
    frames = {"m": _transposed(m, _MEASUREMENT_DTYPES), "h": _transposed(h, _HOP_OWN),
              "p": _transposed(p, _PHASE_OWN), "s": samples}
    return _Part(n, frames, ready)


def _transposed(rows: list[tuple[Any, ...]], specs: dict[str, _Spec]) -> dict[str, Any]:
    """Rows (tuples in the order of ``specs``) as compact columns."""
    if not rows:
        return {name: _compact(spec, []) for name, spec in specs.items()}
    return {name: _compact(spec, list(values)) for (name, spec), values in zip(
        specs.items(), zip(*rows, strict=True), strict=True)}


class _Builder:
    """The four frames, built a chunk of records at a time (see :func:`load`)."""

    def __init__(self) -> None:
        self.m = _Columns(_MEASUREMENT_DTYPES)
        self.s = _Columns(_SAMPLE_OWN)
        self.h = _Columns(_HOP_OWN)
        self.p = _Columns(_PHASE_OWN)
        self.n = 0
        self.ready: list[MailReadyRecord | PmtuRecord] = []
        #: Set by :meth:`campaign`: the frames' uniqueness checks are known to pass.
        self.keys_unique = False

    def add(self, records: Sequence[AnyRecord]) -> None:
        self.add_part(_part(records))

    def add_part(self, part: _Part) -> None:
        for key, columns in (("m", self.m), ("s", self.s), ("h", self.h), ("p", self.p)):
            columns.add(part.frames[key], self.n)
        self.n += part.n
        self.ready += part.ready

    def campaign(self, *, dedup: bool) -> Campaign:
        # Each column lets go of its parts as it is concatenated; the heap is trimmed after
        # each frame so that their freed pages leave before the next frame is built (the
        # parts and the frames were all in RSS at once: 1,405 MiB peak at 1M records, 937
        # with these trims, 7 of them taking 0.05 s in all).
        measurements = self.m.frame(MEASUREMENT_COLUMNS)
        _trim_heap()
        children = {}
        for name, columns in (("samples", self.s), ("hops", self.h), ("phases", self.p)):
            children[name] = columns.series()
            _trim_heap()
        unique = False
        if dedup:
            measurements, children, unique = _dedup(measurements, children)
        self.keys_unique = unique and _keys_unique(children)
        frames = {}
        for name in list(children):
            frames[name] = _child(name, children.pop(name), measurements)
            _trim_heap()
        apart = self.ready
        if dedup:  # each (agent, id) once, as for the measurements
            once: dict[tuple[str, str], MailReadyRecord | PmtuRecord] = {}
            for r in apart:
                once.setdefault((r.agent, r.id), r)
            apart = list(once.values())
        ready = [r for r in apart if isinstance(r, MailReadyRecord)]
        mtu = [r for r in apart if isinstance(r, PmtuRecord)]
        return Campaign(measurements=measurements, **frames,
                        readiness=readiness_frame(ready) if ready else None,
                        pmtu=pmtu_frame(mtu) if mtu else None)


def _child(name: str, own: dict[str, pd.Series], measurements: pd.DataFrame) -> pd.DataFrame:
    """A child frame: its own columns, and its record's (taken from ``measurements``)."""
    rec = own.pop("_rec").to_numpy()
    order = {"samples": SAMPLE_COLUMNS, "hops": HOP_COLUMNS, "phases": PHASE_COLUMNS}[name]
    dtypes = {"samples": _SAMPLE_DTYPES, "hops": _HOP_DTYPES, "phases": _PHASE_DTYPES}[name]
    columns: dict[str, pd.Series] = {}
    for column in order:
        if column in own:
            columns[column] = own[column]
            continue
        source = measurements[column].array
        if isinstance(source, pd.Categorical):
            columns[column] = _taken_categories(source, rec, trim=dtypes[column] == "cat")
            continue
        columns[column] = pd.Series(source.take(rec), copy=False)
    return pd.DataFrame(columns, copy=False)


def _taken_categories(source: pd.Categorical, rows: np.ndarray, *, trim: bool) -> pd.Series:
    """``source`` at ``rows``; with ``trim``, only the categories used there (the values of
    the child frame, as if built alone), found by counting codes rather than by
    ``remove_unused_categories`` (which sorts them: 3 sorts of 4.7M codes at 1M records)."""
    codes = source.codes[rows]
    categories = source.categories
    if trim:
        used = np.bincount(codes[codes >= 0], minlength=len(categories)) > 0
        if not used.all():
            remap = (np.cumsum(used) - 1).astype(codes.dtype)
            codes = np.where(codes >= 0, remap[codes], codes)
            categories = categories[used]
    return pd.Series(pd.Categorical.from_codes(codes, categories=categories,
                                               ordered=source.ordered))


def _keys_unique(children: dict[str, dict[str, pd.Series]]) -> bool:
    """Whether (record, seq) of samples and (record, phase) of phases are unique, from the
    record numbers (``_rec``): with unique ids in ``measurements``, exactly when the
    schemas' "(id, seq) unique" and "(id, phase) unique" pass, in milliseconds rather
    than a factorization of millions of id strings.

    Samples come in record order, each record's seq counting up: a strictly increasing
    (record, seq) is unique without a sort.  ``False`` sends the frames to the string
    checks, which name the rows.
    """
    s = children["samples"]
    rec, seq = s["_rec"].to_numpy(), s["seq"].to_numpy()
    later = rec[1:] > rec[:-1]
    if not (later | ((rec[1:] == rec[:-1]) & (seq[1:] > seq[:-1]))).all():
        return False
    p = children["phases"]
    phase = p["phase"].array
    if not isinstance(phase, pd.Categorical) or (phase.codes < 0).any():
        return False
    key = np.sort(p["_rec"].to_numpy() * len(phase.categories) + phase.codes)
    # (a plain sort: np.unique's hashing took 2.1 s for the 1.6M phases of 1M records)
    return bool((key[1:] != key[:-1]).all())


def _dedup(measurements: pd.DataFrame, children: dict[str, dict[str, pd.Series]],
           ) -> tuple[pd.DataFrame, dict[str, dict[str, pd.Series]], bool]:
    """Each (agent, id) once, the later agents' ids renamed AGENT:ID (see read_records);
    and whether the ids were unique already (the schema's uniqueness check then passes).

    Only the rows whose id occurs more than once are looked at one by one.
    """
    ids = measurements["id"]
    shared = ids.duplicated(keep=False).to_numpy()
    if not shared.any():
        return measurements, children, not ids.hasnans
    agents = np.array(measurements["agent"].astype(object).to_numpy(), dtype=object)
    new_ids = np.array(ids.astype(object).to_numpy(), dtype=object)  # a writable copy
    drop = np.zeros(len(ids), dtype=bool)
    seen: set[tuple[str, str]] = set()
    taken: set[str] = set(new_ids[~shared])
    for pos in np.flatnonzero(shared):
        key = (agents[pos], new_ids[pos])
        if key in seen:
            drop[pos] = True
            continue
        seen.add(key)
        if key[1] in taken:
            new_ids[pos] = f"{key[0]}:{key[1]}"
        taken.add(new_ids[pos])
    measurements = measurements.assign(id=pd.Series(new_ids, dtype="str"))
    keep = ~drop
    measurements = measurements[keep].reset_index(drop=True)
    position = np.cumsum(keep) - 1
    out: dict[str, dict[str, pd.Series]] = {}
    for name, columns in children.items():
        rec = columns["_rec"].to_numpy()
        rows = keep[rec]
        out[name] = {c: (pd.Series(position[rec[rows]]) if c == "_rec"
                         else s[rows].reset_index(drop=True)) for c, s in columns.items()}
    return measurements, out, False


# --------------------------------------------------------------------------- schemas


@cache
def schemas() -> dict[str, pa.DataFrameSchema]:
    """The pandera schema of each frame, by name (built on first use: pandera loads lazily)."""
    import pandera.pandas as pa

    def col(spec: _Spec, *checks: pa.Check, nullable: bool = True,
            unique: bool = False) -> pa.Column:
        dtype: Any
        if isinstance(spec, tuple):
            dtype = pd.CategoricalDtype()
            checks = (*checks, pa.Check(lambda s, known=spec: s.dropna().isin(known),
                                        name=f"isin{list(spec)}"))
            if spec is PHASE_ORDER:  # other phase names are allowed
                checks = checks[:-1]
        elif spec == "cat":
            dtype = pd.CategoricalDtype()
        elif spec == "time":
            dtype = _UTC_NS
        elif spec == "str":
            dtype = str
        else:
            dtype = spec
        return pa.Column(dtype, list(checks), nullable=nullable, unique=unique)

    ge0 = pa.Check.ge(0)
    ratio = pa.Check.in_range(0, 1)
    port = pa.Check.in_range(1, 65535)

    def frame(name: str, columns: Sequence[str], dtypes: dict[str, _Spec],
              required: Sequence[str], unique: Sequence[str] = (),
              checks: dict[str, list[pa.Check]] | None = None,
              frame_checks: Sequence[pa.Check] = ()) -> pa.DataFrameSchema:
        return pa.DataFrameSchema(
            {c: col(dtypes[c], *(checks or {}).get(c, []), nullable=c not in required,
                    unique=c in unique) for c in columns},
            checks=list(frame_checks), strict=True, ordered=True, name=name)

    finite = {c: [ge0] for c in ("duration_ms", "rtt_ms", "rtt_min_ms", "jitter_ms",
                                 "handshake_ms", "rtt_median_ms", "rtt_sd_ms")}
    return {
        "measurements": frame(
            "measurements", MEASUREMENT_COLUMNS, _MEASUREMENT_DTYPES,
            required=("id", "kind", "agent", "target", "started_at", "duration_ms", "status",
                      "ok", "source", "summary"),
            unique=("id",),
            checks={**finite, "port": [port], "loss_ratio": [ratio], "sent": [ge0],
                    "received": [ge0], "rtt_samples": [ge0]},
            frame_checks=[
                pa.Check(lambda d: (d["received"] <= d["sent"]).fillna(True).astype(bool),
                         name="received <= sent"),
                pa.Check(lambda d: ~(d["rtt_min_ms"] > d["rtt_ms"]),
                         name="rtt_min_ms <= rtt_ms"),
                pa.Check(lambda d: d["ok"] == (d["status"] == "ok"),
                         name="ok == (status == 'ok')"),
            ]),
        "samples": frame(
            "samples", SAMPLE_COLUMNS, _SAMPLE_DTYPES,
            required=("id", "kind", "target", "started_at", "seq"),
            checks={"port": [port], "seq": [ge0], "rtt_ms": [ge0],
                    "kind": [pa.Check(lambda s: s.isin(("ping", "tcp")),
                                      name="kind in ['ping', 'tcp']")]},
            frame_checks=[pa.Check(lambda d: ~d.duplicated(["id", "seq"]),
                                   name="(id, seq) unique")]),
        "hops": frame(
            "hops", HOP_COLUMNS, _HOP_DTYPES,
            required=("id", "target", "started_at", "protocol", "ttl", "replies", "sent",
                      "is_destination"),
            checks={"ttl": [pa.Check.in_range(1, 255)], "replies": [ge0], "sent": [ge0],
                    "loss_ratio": [ratio], "rtt_min_ms": [ge0], "rtt_median_ms": [ge0],
                    "lat": [pa.Check.in_range(-90, 90)], "lon": [pa.Check.in_range(-180, 180)]},
            frame_checks=[pa.Check(lambda d: d["replies"] <= d["sent"],
                                   name="replies <= sent")]),
        "phases": frame(
            "phases", PHASE_COLUMNS, _PHASE_DTYPES,
            required=("id", "kind", "target", "started_at", "phase", "ok", "mode"),
            checks={"port": [port], "duration_ms": [ge0],
                    "kind": [pa.Check(lambda s: s.isin(("smtp", "imap")),
                                      name="kind in ['smtp', 'imap']")]},
            frame_checks=[pa.Check(lambda d: ~d.duplicated(["id", "phase"]),
                                   name="(id, phase) unique")]),
    }


def check_frame(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Check one frame against its schema; raise one SchemaError listing every problem."""
    problems = _problems(name, frame)
    if problems:
        raise SchemaError(f"the {name} frame does not fit its schema", problems)
    return frame


def check_campaign(campaign: Campaign) -> Campaign:
    """Check all four frames; one SchemaError lists every problem of every frame."""
    return _check_loaded(campaign, keyed=False)


def _check_loaded(campaign: Campaign, keyed: bool) -> Campaign:
    """:func:`check_campaign`; with ``keyed``, without the uniqueness checks (the ids of
    ``measurements``, (id, seq) of ``samples``, (id, phase) of ``phases``), which the
    builder proved on integer keys (:attr:`_Builder.keys_unique`).

    Those checks factorize millions of id strings: at 1M synthetic records they took
    about 1.9 s of the 3.5 s the checks took (cProfile).  The integer proof holds exactly
    when the string checks pass, so the problems reported are the same either way.
    """
    problems = [p for name in FRAME_NAMES
                for p in _problems(name, getattr(campaign, name), keys=not keyed)]
    if problems:
        raise SchemaError("the campaign's frames do not fit their schemas", problems)
    return campaign


#: Frames longer than this are checked a slice of rows at a time (pandera's checks make
#: frame-sized temporaries): the row checks per slice, the uniqueness checks once over
#: the whole frame.  The problems are those of one whole-frame check.
CHECK_ROWS = 250_000


def _problems(name: str, frame: pd.DataFrame, per_check: int = 5, *,
              keys: bool = True) -> list[str]:
    """The problems of ``frame`` against its schema (``keys``: its uniqueness checks too).

    The frame is validated in place: pandera's default copies it first (measured at 1M
    synthetic records: 2.6 s of the checks' 5.6 s, and 400 MiB more peak RSS), and these
    schemas change nothing (no coercion, no defaults).
    """
    import pandera.errors

    if name not in FRAME_NAMES:
        raise LoadError(f"no schema for a frame named {name!r} (known: {FRAME_NAMES})")
    schema = schemas()[name]
    parts: list[tuple[pa.DataFrameSchema, pd.DataFrame]]
    if list(frame.columns) != list(schema.columns) or (keys and len(frame) <= CHECK_ROWS):
        parts = [(schema, frame)]
    else:
        row_schema, key_schema = _sliced_schemas(name)
        parts = [(row_schema, frame.iloc[start:start + CHECK_ROWS])
                 for start in range(0, max(len(frame), 1), CHECK_ROWS)]
        if keys:
            parts.append((key_schema, frame))
    found: list[pd.DataFrame] = []
    for part_schema, part in parts:
        try:
            part_schema.validate(part, lazy=True, inplace=True)
        except pandera.errors.SchemaErrors as exc:
            found.append(exc.failure_cases)
    if not found:
        return []
    cases: Any = pd.concat(found, ignore_index=True) if len(found) > 1 else found[0]
    problems: list[str] = []
    for (column, check), rows in cases.groupby(["column", "check"], dropna=False, sort=False):
        where = f"{name}.{column}" if pd.notna(column) else name
        shown = [f"{c!r}" + ("" if pd.isna(i) else f" (row {i})")
                 for c, i in zip(rows["failure_case"][:per_check],
                                 rows["index"][:per_check], strict=True)]
        more = f", … {len(rows) - per_check} more" if len(rows) > per_check else ""
        problems.append(f"{where}: {check} failed for {len(rows)} value(s): "
                        f"{', '.join(shown)}{more}")
    return problems


@cache
def _sliced_schemas(name: str) -> tuple[pa.DataFrameSchema, pa.DataFrameSchema]:
    """(the schema without its uniqueness checks, a schema of those alone)."""
    import pandera.pandas as pa

    full = schemas()[name]
    unique_columns = [c for c, col in full.columns.items() if col.unique]
    unique_checks = [c for c in full.checks if str(c.name).endswith(" unique")]
    row_schema = pa.DataFrameSchema(
        {c: _not_unique(col) if col.unique else col for c, col in full.columns.items()},
        checks=[c for c in full.checks if c not in unique_checks],
        strict=True, ordered=True, name=name)
    keys = pa.DataFrameSchema(
        {c: pa.Column(unique=True, nullable=full.columns[c].nullable) for c in unique_columns},
        checks=unique_checks, name=name)
    return row_schema, keys


def _not_unique(column: Any) -> Any:
    import copy

    out = copy.copy(column)
    out.unique = False
    return out
