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
worker decodes a range of lines and sends back its compact columns (numpy and Arrow
buffers: cheap to pickle); the ranges come back in file order and their category
codes are made global here, so the frames are those of a one-process load (tests
compare them exactly).  A smaller JSON Lines file goes through the same code, range
after range, in this process (no pool to start for a campaign of a few thousand
records; a Dask worker is a daemon process and may not start one); stores and Parquet
datasets are read a chunk at a time here.  A range is decoded a block of lines
(:data:`BLOCK_BYTES`) per decoder call (:func:`_block_records`: msgspec's
``decode_lines``, guarded so that it takes exactly the lines the line-by-line decoder
takes; a block it refuses sends the range through :func:`decode_record` a line at a
time, which names the bad lines as ever), and each block's records become columns a
field at a time (:func:`_part`: ``map`` over an attrgetter, no row tuples), the hops
excepted (rows, a tuple each: their nested objects measured slower field by field).
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
imported modules), the workers' CPU 16.9-17.5 s (17.5-17.8 s).  Then a block of lines
per decoder call and columns a field at a time (medians, alternated with the code
before, load average 2.5-4.7): one process 17.2 s of CPU (19.2); one forked worker on
the 100k-record file 1.27 s (1.69); with the pool at 1M records, load average 0.8-2.2,
11.2 s wall (12.5), the workers 14.9 s of CPU (16.4), this process 3.5 s (4.1), peak
RSS 917 MiB (926); at load average 2.8-4.7 no difference showed through the machine's
load.  See docs/analysis.md, "At size".

Ping and tcp records are decoded from a block as lean structs (the record types' fields
and constraints without their ``__post_init__``), their checks made over the block's
columns; a record those checks are not sure of is decoded again by the structs, which
decide and explain as ever (:mod:`netvantage.results.bulk`).

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
import importlib
import itertools
import multiprocessing
import operator
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
    MailReadyRecord,
    PingRecord,
    PmtuRecord,
    RttSummary,
    TcpBody,
    TcpRecord,
    TraceRecord,
    decode_record,
    rtt_stats,
)
from ..results.bulk import Columns, decode_block
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
    with small_pages(), _no_gc():
        for part in _parts(source, kinds):
            builder.add_part(part)
            del part  # its columns are the builder's now
        campaign = builder.campaign(dedup=True)
    keyed = builder.keys_unique
    del builder
    _trim_heap()
    with progress.step("checking the frames"):
        return _check_loaded(campaign, keyed)


@contextmanager
def small_pages() -> Iterator[None]:
    """numpy's arrays on ordinary 4 kB pages inside the block (numpy otherwise asks the
    kernel for huge pages for every big array, ``madvise(MADV_HUGEPAGE)``); the loader and
    :func:`netvantage.analysis.analyse` run in it.

    Building the frames is mostly the kernel's work: each column, concatenated or taken,
    is new memory whose pages are faulted in.  Measured on 1M synthetic records (this
    machine: transparent huge pages on request, their defragmentation on request too,
    load average 8-9), ``getrusage`` around :meth:`_Builder.campaign`: 0.2 s of user time
    and 2.1 s of system time with huge pages (two runs), 1.2-1.3 s without (the kernel
    compacting memory to find a huge page at each fault costs more than 512 small faults);
    other phases unchanged.  The analysis's steps allocate the same way: ``analyse`` of 1M
    records took 3.0-3.4 s of system time without huge pages against 4.2-5.2 s with them,
    and 15.9-19.0 s against 18.7-23.3 s (two alternated pairs, load average 2.2).  The
    setting is numpy's own (``NUMPY_MADVISE_HUGEPAGE``), per process (a forked child keeps
    it), and is given back afterwards; without it (another numpy), nothing changes.
    """
    multiarray = importlib.import_module("numpy._core.multiarray")
    setter = getattr(multiarray, "_set_madvise_hugepage", None)
    if setter is None:
        yield
        return
    was = setter(False)
    try:
        yield
    finally:
        setter(was)


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

    A big JSON Lines file is decoded by a pool of worker processes (:func:`_pooled`), a
    smaller one here by the same code, a range of lines at a time; a store or a Parquet
    dataset a chunk at a time here.
    """
    wanted = _kinds(kinds)
    for path, label in _sources(source):
        jsonl = _is_jsonl(path)
        workers = _workers(path) if jsonl else 1
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
            parts = (_pooled(path, wanted, pool) if jsonl
                     else map(_part, _read_one(path, wanted)))
            for part in parts:
                bar.update(part.n + len(part.ready))
                yield part


#: A JSON Lines file at least this big is decoded by a pool of processes, one per CPU
#: (:func:`_pooled`); a smaller one in this process (no pool to start for a test campaign).
POOL_BYTES = 64 * 2**20


def _workers(path: Path) -> int:
    """How many processes decode the JSON Lines file ``path`` (see :func:`_is_jsonl`): 1
    unless it is big, this process may start children (a Dask worker is a daemon and may
    not) and fork exists."""
    if (path.stat().st_size < POOL_BYTES
            or multiprocessing.current_process().daemon
            or "fork" not in multiprocessing.get_all_start_methods()):
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def _is_jsonl(path: Path) -> bool:
    """Whether ``path`` is a file that is neither a store nor a Parquet file."""
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    return head != _SQLITE_MAGIC and not head.startswith(_PARQUET_MAGIC)


def line_ranges(path: Path, size_hint: int | None = None) -> list[tuple[int, int, bool]]:
    """``path`` cut at line starts into ranges of about ``size_hint`` bytes
    (:data:`CHUNK_BYTES` by default): (start, end, whether it is the last range)."""
    step = size_hint or CHUNK_BYTES
    size = path.stat().st_size
    starts = [0]
    with open(path, "rb") as fh:
        for at in range(step, size, step):
            if at <= starts[-1]:
                continue
            fh.seek(at - 1)
            fh.readline()  # to the end of the line holding byte ``at - 1``
            if fh.tell() < size:
                starts.append(fh.tell())
    return [(a, b, b == size) for a, b in zip(starts, [*starts[1:], size], strict=True)]


def _pooled(path: Path, kinds: tuple[str, ...] | None,
            pool: ProcessPoolExecutor | None) -> Iterator[_Part]:
    """A JSON Lines file decoded by a ``pool`` of forked processes, a range of lines each
    (``None``: the ranges one after the other in this process).

    The file is cut into ranges of about :data:`CHUNK_BYTES` at line starts; a worker
    reads its range, decodes it with the one schema decoder and returns its compact
    columns (:class:`_Part`, pickled as numpy and Arrow buffers); the parts come back in
    file order, so the frames, their categories and the deduplication are those of a
    load in one process.  Any bad line: after every range is read, one SchemaError
    lists the first :data:`_MAX_PROBLEMS` with their line numbers, and nothing loads.
    """
    ranges = [(str(path), a, b, last, kinds) for a, b, last in line_ranges(path)]
    problems: list[str] = []
    bad = line = 0
    results = pool.map(_range_part, ranges) if pool is not None else map(_range_part, ranges)
    if pool is not None:
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


#: A range is decoded and turned into columns a block of about this many bytes (and at
#: most :data:`CHUNK_RECORDS` lines) at a time.  Each block's columns cost a fixed
#: number of numpy and pandas calls (some 2 ms a block) besides their work per record;
#: a smaller block was meant to keep its records in the processor's caches while their
#: columns are read, but measured no faster.  A worker's CPU time per record on three
#: 16 MiB ranges of the 1M-record synthetic file (``_range_part``, block sizes
#: alternated in one process, six rounds, load average 6.5-7): 14.5-14.6 µs with
#: blocks of 2 MiB, 13.8-13.9 with 4 MiB, 13.7 with 8 MiB (three runs).
BLOCK_BYTES = 8 * 2**20


def _range_part(task: tuple[str, int, int, bool, tuple[str, ...] | None],
                ) -> tuple[_Part | None, int, int, list[tuple[int, str]]]:
    """(compact columns, lines read, bad lines, the first bad ones: (line number in the
    range, ": why")) of one range of a JSON Lines file (in a worker of :func:`_pooled`).

    Each block of lines is decoded by one call (:func:`_block_records`); a block that
    cannot be (a bad line, a blank one, spaces around a record) sends the whole range
    through the decoder a line at a time, which finds and explains the bad lines exactly
    as before (or, with none, loads the same records more slowly).
    """
    name, start, end, last, kinds = task
    with open(name, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    with _no_gc():
        parts: list[_Part] = []
        lines = 0
        for block, newlines in _blocks(data):
            decoded = _block_records(block, newlines)
            if decoded is None:
                break
            records, read = decoded
            lines += len(records)
            if kinds is not None:
                records = [r for r in records if r.kind in kinds]
            parts.append(_part(records, read))
            del records, decoded
        else:
            return _merged(parts), lines, 0, []
        del parts
        return _range_by_lines(data, last, kinds)


def _blocks(data: bytes) -> Iterator[tuple[memoryview, np.ndarray]]:
    """``data`` (whole lines) cut into blocks of whole lines (see :data:`BLOCK_BYTES`),
    each with the positions of its newlines."""
    view = memoryview(data)
    size = len(data)
    begin = 0
    while begin < size:
        stop = data.find(b"\n", begin + BLOCK_BYTES - 1)
        stop = size if stop < 0 else stop + 1
        newlines = np.flatnonzero(np.frombuffer(view[begin:stop], dtype=np.uint8) == 10)
        if len(newlines) >= CHUNK_RECORDS and begin + newlines[CHUNK_RECORDS - 1] + 1 < stop:
            stop = begin + int(newlines[CHUNK_RECORDS - 1]) + 1
            newlines = newlines[:CHUNK_RECORDS]
        yield view[begin:stop], newlines
        begin = stop


def _block_records(block: memoryview, newlines: np.ndarray,
                   ) -> tuple[list[AnyRecord], dict[str, Columns]] | None:
    """The records of a block of JSON Lines (``newlines``: where its newlines are) decoded
    by one call (:func:`netvantage.results.bulk.decode_block`: ping and tcp records as
    lean structs, checked over the block's columns), with what those checks read of
    them (:class:`~netvantage.results.bulk.Columns`, by kind); or ``None`` if any line is
    not exactly one good record.

    The decoder reads JSON values separated by any whitespace, so a record split over
    two lines or two records on one line would pass it: every line must start with
    ``{`` and end with ``}`` (then no value spans lines, as ``}`` then ``{`` cannot occur
    inside one), and there must be as many records as lines (then none holds two).
    """
    data = np.frombuffer(block, dtype=np.uint8)
    if not len(data) or data[0] != 123:  # "{"
        return None
    torn = data[-1] != 10
    starts = newlines + 1 if torn else newlines[:-1] + 1
    if ((torn and data[-1] != 125) or not (data[newlines - 1] == 125).all()  # "}"
            or not (data[starts] == 123).all()):
        return None
    ends = np.append(newlines, len(data)) if torn else newlines
    read: dict[str, Columns] = {}
    try:
        return decode_block(block, np.append(0, starts), ends, read), read
    except Exception:
        return None


def _range_by_lines(data: bytes, last: bool, kinds: tuple[str, ...] | None,
                    ) -> tuple[_Part | None, int, int, list[tuple[int, str]]]:
    """:func:`_range_part`, a line at a time through :func:`decode_record`."""
    records, lines, bad, found = lines_records(data, last)
    if bad:
        return None, lines, bad, found
    if kinds is not None:
        records = [r for r in records if r.kind in kinds]
    return _merged([_part(records[at:at + CHUNK_RECORDS])
                    for at in range(0, max(len(records), 1), CHUNK_RECORDS)]), lines, 0, []


def lines_records(data: bytes, last: bool,
                  ) -> tuple[list[AnyRecord], int, int, list[tuple[int, str]]]:
    """(records, lines read, bad lines, the first bad ones: (line number in ``data``,
    ": why")) of whole JSON Lines ``data``, a line at a time through
    :func:`decode_record`; ``last``: ``data`` ends the file (a torn last line is said so)."""
    raws = data.split(b"\n")
    tail = raws.pop()  # b"" after the range's last newline, else a torn last line
    records: list[AnyRecord] = []
    found: list[tuple[int, str]] = []
    bad = 0
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
    return records, lines, bad, found


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


# dtype per column; "cat" is a categorical of the values present, a tuple a
# categorical with those categories first (in that order) and any others after; "key"
# (a child frame's id) strings, or a categorical of them (see record_ids).
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
    "id": "key", "kind": KINDS, "region": "cat", "target": "cat", "port": "Int64",
    "started_at": "time", "seq": "int64", "rtt_ms": "float64",
}
_HOP_DTYPES: dict[str, _Spec] = {
    "id": "key", "region": "cat", "target": "cat", "started_at": "time", "protocol": "cat",
    "ttl": "int64", "address": "str", "replies": "int64", "sent": "int64",
    "loss_ratio": "float64", "rtt_min_ms": "float64", "rtt_median_ms": "float64",
    "icmp_type": "Int64", "is_destination": "bool", "asn": "Int64", "as_org": "str",
    "country": "str", "city": "str", "lat": "float64", "lon": "float64",
}
_PHASE_DTYPES: dict[str, _Spec] = {
    "id": "key", "kind": KINDS, "region": "cat", "target": "cat", "port": "Int64",
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


def _compact(spec: _Spec, values: list[Any] | np.ndarray) -> Any:
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
        return pyarrow.array(values, type=_STR)
    if spec == "time":
        # Nanoseconds since the epoch of each instant.  DatetimeIndex reads aware datetimes
        # of one zone (the decoder's UTC) in 0.14 µs each against to_datetime's 0.22; it
        # refuses mixed zones, which to_datetime(utc=True) converts.
        try:
            index = pd.DatetimeIndex(values)
        except (TypeError, ValueError):
            index = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
        return index.as_unit("ns").asi8
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

    def compact(self) -> Any:
        """The parts added so far as one part, as :func:`_compact` makes it; let go."""
        spec, parts = self.spec, self.parts
        self.parts = []
        if isinstance(spec, tuple) or spec == "cat":
            codes = (np.concatenate(parts) if parts else np.empty(0, dtype=np.int32))
            return codes.astype(np.int32, copy=False), list(self.codes)
        if not parts:
            return _compact(spec, [])
        if len(parts) == 1:
            return parts[0]
        if spec == "str":
            return pyarrow.concat_arrays(parts)
        if spec in ("time", "float64", "int64", "bool"):
            return np.concatenate(parts)
        return type(parts[0])._concat_same_type(parts)

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
            chunked = pyarrow.chunked_array(parts, type=_STR)
            return pd.Series(chunked.to_pandas(types_mapper=_STR_TYPES.get))
        if spec == "time":
            return pd.Series(pd.DatetimeIndex(np.concatenate(parts).view("M8[ns]"), tz="UTC"),
                             copy=False)
        if spec in ("float64", "int64", "bool"):
            # copy=False: pandas 3 copies an array it is given by default, a second
            # column-sized array for a moment.
            return pd.Series(np.concatenate(parts), copy=False)
        return pd.concat([pd.Series(p) for p in parts], ignore_index=True)


#: Strings as Arrow's large_string (64-bit offsets), the type pandas' Arrow-backed strings
#: hold: parts of another type were cast when the frame was built, a copy of each column.
_STR = pyarrow.large_string()
_STR_TYPES = {_STR: pd.StringDtype("pyarrow", na_value=np.nan)}


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

    def compact(self) -> dict[str, Any]:
        """The parts added so far as one part (:func:`_compact`'s forms), let go."""
        return {name: col.compact() for name, col in self.built.items()}


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


def _ping_tcp_figures(r: PingRecord | TcpRecord) -> tuple[Any, ...]:
    """(port, sent, received, the measurements' figures in the order of :data:`_FIGURES`) of
    a ping or tcp **summary** record (the rare path: one record at a time)."""
    b = r.body
    summary = b.summary
    assert summary is not None
    if isinstance(b, TcpBody):
        port: int | None = b.port
        sent, received = b.tried, b.succeeded
    else:
        port = None
        sent, received = b.sent, b.received
    figure, rtt_stat = _summary_figure(summary)
    # Unknown stays unknown (<NA>): never one sample by default.
    return (port, sent, received, figure, summary.min_ms, b.loss_ratio, summary.stdev_ms,
            rtt_stat, summary.samples if figure is not None else 0)


def _trace_figures(rows: np.ndarray, records: list[Any], figures: dict[str, np.ndarray],
                   objects: dict[str, np.ndarray]) -> None:
    """rtt_ms, rtt_min_ms, loss_ratio, jitter_ms, sent, received, rtt_stat and rtt_samples of
    traces (at ``rows``) from their destination's answers; a trace that never reached its
    destination keeps NaN and None (its TTL is unknown: its figures are missing, not
    100 % loss).

    rtt_ms, rtt_min_ms and jitter_ms are :func:`~netvantage.results.rtt_stats`'s median,
    minimum and jitter of the answers' RTTs: computed here over the traces' columns for
    one or two RTTs each (the usual case: the same operations on the same floats, and
    Python's ``round``), by it for more.  (It took some 2.5 µs a trace, a quarter of the
    traces' columns.)
    """
    found = list(map(_destination_probes, records))
    reached = [i for i, f in enumerate(found) if f is not None]
    if not reached:
        return
    n = len(reached)
    dests = [f for f in found if f is not None]
    tried = _floats(map(_FIRST, dests))
    answers = list(map(_SECOND, dests))
    received = np.fromiter(map(len, answers), dtype=np.int64, count=n)
    rtts = _floats(itertools.chain.from_iterable(answers))
    got = ~np.isnan(rtts)  # (an answer without an RTT is None)
    owner, x = np.repeat(np.arange(n), received)[got], rtts[got]
    samples = np.bincount(owner, minlength=n)
    first = np.cumsum(samples) - samples  # where each trace's RTTs start in x
    low, median, jitter = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    one = np.flatnonzero(samples == 1)
    low[one] = x[first[one]]
    median[one] = _rounded(x[first[one]])
    two = np.flatnonzero(samples == 2)
    a, b = x[first[two]], x[first[two] + 1]
    low[two] = np.minimum(a, b)
    median[two] = _rounded((a + b) / 2)
    jitter[two] = _rounded(np.abs(b - a))  # (math.fsum of one step is that step)
    for i in np.flatnonzero(samples > 2).tolist():
        stats = rtt_stats(x[first[i]:first[i] + samples[i]].tolist())
        low[i], median[i], jitter[i] = stats.min_ms, stats.median_ms, stats.jitter_ms
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(tried > 0, 1 - received / tried, np.nan)
    at = rows[reached]
    for name, values in (("rtt_ms", median), ("rtt_min_ms", low), ("loss_ratio", loss),
                         ("jitter_ms", jitter), ("sent", tried), ("received", received),
                         ("rtt_samples", samples)):
        figures[name][at] = values
    objects["rtt_stat"][at] = np.where(samples > 0, "median", None)  # type: ignore[call-overload]


_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)


def _rounded(values: np.ndarray) -> list[float]:
    """Python's ``round(x, 3)`` of each value (correctly rounded, as ``np.round`` is not
    always), as :func:`~netvantage.results.rtt_stats` rounds its figures."""
    return list(map(round, values.tolist(), itertools.repeat(3)))


def _destination_probes(r: TraceRecord) -> tuple[int, list[float | None]] | None:
    """(probes sent at the destination's TTL, RTTs of the destination's answers), if reached."""
    b = r.body
    if not b.reached or b.dest_ttl is None or b.dest_ttl > len(b.hops):
        return None
    hop = b.hops[b.dest_ttl - 1]
    answered = [p for p in hop.probes if p.address is not None]
    own = [p for p in answered if p.address == r.address]
    return len(hop.probes), [p.rtt_ms for p in (own or answered)]


# Fields read from every record of a chunk at once (``map`` over an attrgetter runs in C).
_ID, _AGENT, _REGION, _TARGET, _ADDRESS, _STARTED, _DURATION, _STATUS, _SOURCE, _BODY = (
    operator.attrgetter(name) for name in ("id", "agent", "region", "target", "address",
                                           "started_at", "duration_ms", "status", "source",
                                           "body"))
_PORT, _STATS, _SUMMARY, _SENT, _RECEIVED, _LOSS, _RTTS, _ATTEMPTS, _SUCCEEDED, _CONNECT = (
    operator.attrgetter(name) for name in ("port", "stats", "summary", "sent", "received",
                                           "loss_ratio", "rtts_ms", "attempts", "succeeded",
                                           "connect_ms"))
_MEDIAN, _MIN, _JITTER = (operator.attrgetter(name)
                          for name in ("median_ms", "min_ms", "jitter_ms"))
_HOPS, _TTL, _PROBES, _RESPONDERS, _REPLIES, _ANNOTATION, _PROTOCOL = (
    operator.attrgetter(name) for name in ("hops", "ttl", "probes", "responders", "replies",
                                           "annotation", "protocol"))
_PHASES, _MODE, _FAILED, _TLS, _NAME, _OK, _VERSION, _VERIFIED = (
    operator.attrgetter(name) for name in ("phases", "mode", "failed_phase", "tls", "name",
                                           "ok", "version", "verified"))
_NOTE_FIELDS = ("asn", "as_org", "country", "city", "lat", "lon")


class _KindOf(dict[type, str]):
    """A record's kind by its class: a dictionary look-up, cheaper than the ``kind``
    property's walk to the struct's configuration (filled on first sight of a class)."""

    def __missing__(self, cls: type) -> str:
        kind = str(cls.__struct_config__.tag)  # type: ignore[attr-defined]
        self[cls] = kind
        return kind


_KIND_OF = _KindOf()
_KIND_CODE = {kind: code for code, kind in enumerate(KINDS)}
#: Kinds kept apart from the measurements (mail readiness and path MTU are not latency,
#: loss or handshakes: frames of their own).
_APART = frozenset({"mailready", "pmtu"})
#: The measurements' columns that differ by kind, beyond the envelope: float64 (NaN
#: missing; the Int64 ones are converted at the end), object (None missing).
_FLOATS = ("port", "rtt_ms", "rtt_min_ms", "loss_ratio", "jitter_ms", "sent", "received",
           "handshake_ms", "rtt_samples", "rtt_sd_ms")
_OBJECTS = ("failed_phase", "tls_version", "cert_verified", "rtt_stat")


def _floats(values: Iterable[Any]) -> np.ndarray:
    """Numbers (``None``: NaN) as float64."""
    return np.array(list(values), dtype=np.float64)


def _part(records: Sequence[AnyRecord], read: dict[str, Columns] | None = None) -> _Part:
    """The compact columns of a chunk of records (see :func:`load`); ``read``: what the
    block decoder read of its ping and tcp records (:func:`_block_records`), not read again.

    Built a column at a time, never a row: each field is read from every record of a
    kind at once (``map`` over an ``attrgetter``) into a list that becomes an array; the
    figures that depend on a kind are written into column-sized arrays at that kind's
    rows.  A sample's record and number, a phase's record and the hops' rows come from
    counts per record (``np.repeat``); the standard deviation of a record's RTTs and a
    handshake's sum of phases are computed over those arrays (:func:`_sums`), to the
    last bit what the per-record arithmetic gave.
    """
    kinds = list(map(_KIND_OF.__getitem__, map(type, records)))
    ready: list[MailReadyRecord | PmtuRecord] = []
    if not _APART.isdisjoint(kinds):
        ready = [r for r, k in zip(records, kinds, strict=True)  # type: ignore[misc]
                 if k in _APART]
        records = [r for r, k in zip(records, kinds, strict=True) if k not in _APART]
        kinds = [k for k in kinds if k not in _APART]
    n = len(records)
    code = np.fromiter(map(_KIND_CODE.__getitem__, kinds), dtype=np.int32, count=n)
    statuses = list(map(_STATUS, records))
    status = _compact(STATUSES, statuses)
    ok = np.array([s == "ok" for s in statuses], dtype=bool)
    figures = {c: np.full(n, np.nan) for c in _FLOATS}
    objects = {c: np.full(n, None, dtype=object) for c in _OBJECTS}
    summary = np.zeros(n, dtype=bool)
    measured: list[tuple[np.ndarray, Any, Any]] = []
    hops = phases = None
    present = set(np.unique(code).tolist())
    for kinds_of_group in (("ping",), ("tcp",), ("trace",), ("smtp", "imap")):
        codes = [_KIND_CODE[k] for k in kinds_of_group if _KIND_CODE[k] in present]
        if not codes:
            continue
        rows = np.flatnonzero(np.isin(code, codes))
        group = [records[i] for i in rows.tolist()]
        if kinds_of_group[0] == "trace":
            hops = _traces(rows, group, figures, objects)
        elif kinds_of_group[0] == "smtp":
            phases = _mails(rows, group, ok[rows], figures, objects)
        else:
            measured.append(_ping_tcp(rows, group, kinds_of_group[0] == "tcp", figures,
                                      objects, summary,
                                      (read or {}).get(kinds_of_group[0])))
    samples = _samples(n, measured, figures["rtt_sd_ms"])
    frame = {
        "id": _compact("str", list(map(_ID, records))),
        "kind": (code, list(KINDS)),
        "agent": _compact("cat", list(map(_AGENT, records))),
        "region": _compact("cat", list(map(_REGION, records))),
        "target": _compact("cat", list(map(_TARGET, records))),
        "address": _compact("str", list(map(_ADDRESS, records))),
        "started_at": _compact("time", list(map(_STARTED, records))),
        "duration_ms": _floats(map(_DURATION, records)),
        "status": status, "ok": ok,
        "source": _compact("cat", list(map(_SOURCE, records))),
        "summary": summary,
        **{c: _compact(_MEASUREMENT_DTYPES[c], figures[c]) for c in _FLOATS},
        **{c: _compact(_MEASUREMENT_DTYPES[c], objects[c]) for c in _OBJECTS},
    }
    frames = {"m": {c: frame[c] for c in _MEASUREMENT_DTYPES},
              "s": samples,
              "h": hops if hops is not None else _empty(_HOP_OWN),
              "p": phases if phases is not None else _empty(_PHASE_OWN)}
    return _Part(n, frames, ready)


def _merged(parts: list[_Part]) -> _Part:
    """Parts of consecutive chunks as one (category codes made common, ``_rec`` counted
    from the first part's first record): fewer, bigger parts to send and to add."""
    if len(parts) <= 1:
        return parts[0] if parts else _part([])
    frames = {}
    for key, specs in _OWN.items():
        columns = _Columns(specs)
        offset = 0
        for part in parts:
            columns.add(part.frames[key], offset)
            offset += part.n
        frames[key] = columns.compact()
    return _Part(sum(p.n for p in parts), frames, [r for p in parts for r in p.ready])


def _empty(specs: dict[str, _Spec]) -> dict[str, Any]:
    return {name: _compact(spec, []) for name, spec in specs.items()}


def _ping_tcp(rows: np.ndarray, records: list[Any], tcp: bool, figures: dict[str, np.ndarray],
              objects: dict[str, np.ndarray], summary: np.ndarray,
              read: Columns | None = None) -> tuple[np.ndarray, Any, Any]:
    """The figures of ping or tcp records (at ``rows``); (the rows with samples, how many
    each, their RTTs: ``None`` or NaN lost) for :func:`_samples`.

    ping and tcp alike: rtt_ms, rtt_min_ms and jitter_ms from the body's statistics;
    tcp's sent and received are its attempts and the successful ones.  A summary record
    (statistics without samples) takes :func:`_ping_tcp_figures`, one at a time.
    ``read``: these fields as the block decoder read them (the same arrays).
    """
    bodies = list(map(_BODY, records))
    if read is not None and len(read.counts) != len(records):
        read = None
    is_summary = (read.summary if read is not None else
                  np.array([s is not None for s in map(_SUMMARY, bodies)], dtype=bool))
    if is_summary.any():
        at = rows[is_summary]
        summary[at] = True
        table = list(zip(*map(_ping_tcp_figures, itertools.compress(records, is_summary)),
                         strict=True))
        for name, values in zip(("port", "sent", "received", "rtt_ms", "rtt_min_ms",
                                 "loss_ratio", "rtt_sd_ms"), table[:7], strict=True):
            figures[name][at] = _floats(values)
        objects["rtt_stat"][at] = table[7]
        figures["rtt_samples"][at] = _floats(table[8])
        rows = rows[~is_summary]
        bodies = list(itertools.compress(bodies, ~is_summary))
    if read is not None:
        return _ping_tcp_read(rows, bodies, tcp, figures, objects, read, ~is_summary)
    stats = list(map(_STATS, bodies))
    figures["rtt_ms"][rows] = _floats(map(_MEDIAN, stats))
    figures["rtt_min_ms"][rows] = _floats(map(_MIN, stats))
    figures["jitter_ms"][rows] = _floats(map(_JITTER, stats))
    figures["loss_ratio"][rows] = _floats(map(_LOSS, bodies))  # (tcp: a property)
    rtts: list[float | None]
    if tcp:
        figures["port"][rows] = _floats(map(_PORT, bodies))
        attempts = list(map(_ATTEMPTS, bodies))
        counts = list(map(len, attempts))
        received = _floats(map(_SUCCEEDED, bodies))
        figures["sent"][rows] = counts
        rtts = list(map(_CONNECT, itertools.chain.from_iterable(attempts)))
    else:
        lists = list(map(_RTTS, bodies))
        counts = list(map(len, lists))
        received = _floats(map(_RECEIVED, bodies))
        figures["sent"][rows] = _floats(map(_SENT, bodies))
        rtts = list(itertools.chain.from_iterable(lists))
    figures["received"][rows] = received
    figures["rtt_samples"][rows] = received
    objects["rtt_stat"][rows] = np.where(received > 0, "median", None)  # type: ignore[call-overload]
    return rows, counts, rtts


def _ping_tcp_read(rows: np.ndarray, bodies: list[Any], tcp: bool,
                   figures: dict[str, np.ndarray], objects: dict[str, np.ndarray],
                   read: Columns, keep: np.ndarray) -> tuple[np.ndarray, Any, Any]:
    """:func:`_ping_tcp`'s figures of the records without summary (``keep``: which of
    ``read``'s they are; ``rows``, ``bodies``: theirs) from the decoder's arrays."""
    figures["rtt_ms"][rows] = read.median_ms[keep]
    figures["rtt_min_ms"][rows] = read.min_ms[keep]
    figures["jitter_ms"][rows] = read.jitter_ms[keep]
    if tcp:
        figures["loss_ratio"][rows] = _floats(map(_LOSS, bodies))  # (a property, rounded)
        figures["port"][rows] = _floats(map(_PORT, bodies))
    else:
        figures["loss_ratio"][rows] = read.loss[keep]  # type: ignore[index]
    counts = read.counts[keep]
    received = read.got[keep]
    figures["sent"][rows] = read.sent[keep]
    figures["received"][rows] = received
    figures["rtt_samples"][rows] = received
    objects["rtt_stat"][rows] = np.where(received > 0, "median", None)  # type: ignore[call-overload]
    return rows, counts, read.values[np.repeat(keep, read.counts)]


def _samples(n: int, measured: list[tuple[np.ndarray, Any, Any]],
             sd: np.ndarray) -> dict[str, Any]:
    """The samples' columns (``_rec``, seq, rtt_ms) in record order, from the ping and tcp
    records' RTTs (:func:`_ping_tcp`); ``sd`` gets each record's standard deviation."""
    counts = np.zeros(n, dtype=np.int64)
    for rows, many, _ in measured:
        counts[rows] = many
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    rec = np.repeat(np.arange(n, dtype=np.int64), counts)
    rtt = np.empty(total, dtype=np.float64)
    for rows, many, values in measured:
        own = np.asarray(many, dtype=np.int64)
        # Where each of these records' RTTs goes among all the chunk's samples.
        rtt[np.repeat(starts[rows], own) + _ranks(own)] = np.array(values, dtype=np.float64)
    _standard_deviations(rec, rtt, sd)
    return {"_rec": rec, "seq": np.arange(total, dtype=np.int64) - np.repeat(starts, counts),
            "rtt_ms": rtt}


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, … counts[i] - 1 for each i, end to end (an item's place in its group)."""
    ends = np.cumsum(counts)
    ranks: np.ndarray = np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
    ranks -= np.repeat(ends - counts, counts)
    return ranks


def _sums(owner: np.ndarray, rank: np.ndarray, values: np.ndarray, n: int, *,
          exact: bool) -> np.ndarray:
    """Per owner (0 … n-1), the sum of its ``values`` taken in ``rank`` order.

    With ``exact``, the sum :func:`math.fsum` gives: each addition's rounding error is
    kept exactly (Knuth's TwoSum, TAOCP vol. 2, 4.2.2) and the errors added at the
    end (Ogita, Rump and Oishi, "Accurate sum and dot product", SIAM J. Sci. Comput.
    2005: as if in twice the working precision).  Its one rounding is then fsum's
    correctly rounded one unless the values span so many orders of magnitude that
    the errors' own sum rounds (not RTTs).  Without, plain left-to-right additions, as
    Python 3.11's ``sum`` of floats makes them.  One vectorised step per rank: an
    owner has at most one value of each rank.
    """
    total = np.zeros(n, dtype=np.float64)
    error = np.zeros(n, dtype=np.float64)
    if not len(rank):
        return total
    order = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[order], np.arange(int(rank.max()) + 2))
    for lo, hi in itertools.pairwise(bounds.tolist()):
        at = order[lo:hi]
        who, x = owner[at], values[at]
        s = total[who]
        t = s + x
        if exact:
            back = t - s
            error[who] += (s - (t - back)) + (x - back)
        total[who] = t
    return total + error if exact else total


def _standard_deviations(rec: np.ndarray, rtt: np.ndarray, out: np.ndarray) -> None:
    """Into ``out`` (per record), the sample standard deviation (n - 1) of the records'
    received RTTs (not NaN) where there are two or more, computed as the per-record
    arithmetic did: the mean of ``math.fsum``, squared deviations as Python's ``x ** 2``
    (C's ``pow``, which is not always ``x * x`` to the last bit), their fsum.
    """
    got = ~np.isnan(rtt)
    rec, x = rec[got], rtt[got]
    n = len(out)
    counts = np.bincount(rec, minlength=n)
    two = counts >= 2
    keep = two[rec]
    rec, x = rec[keep], x[keep]
    if not len(rec):
        return
    many = counts[two].astype(np.float64)
    # Renumber the records that have two or more RTTs 0 … k-1 (rec is sorted).
    owner = np.cumsum(two)[rec] - 1
    rank = _ranks(counts[two])
    k = len(many)
    mean = _sums(owner, rank, x, k, exact=True) / many
    deviation = x - mean[owner]
    # float_power with an array of exponents calls C's pow as Python does (np.power and
    # ** with a scalar 2 square instead).
    squares = np.float_power(deviation, np.full(len(deviation), 2.0))
    out[two] = np.sqrt(_sums(owner, rank, squares, k, exact=True) / (many - 1))


def _traces(rows: np.ndarray, records: list[Any], figures: dict[str, np.ndarray],
            objects: dict[str, np.ndarray]) -> dict[str, Any]:
    """The figures of trace records (at ``rows``: :func:`_trace_figures`) and their hops'
    columns (:func:`_hops`).

    The hops are gathered as rows, a tuple each, and turned into columns once: read
    field after field instead (as the other kinds are), the nested hops, responders and
    probes of a block's traces were fetched from memory again for every field, which
    measured slower.
    """
    bodies = list(map(_BODY, records))
    figures["port"][rows] = _floats(map(_PORT, bodies))
    _trace_figures(rows, records, figures, objects)
    h: list[tuple[Any, ...]] = []
    for rec, r in zip(rows.tolist(), records, strict=True):
        _hops(rec, r, h)
    return _transposed(h, _HOP_OWN)


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


def _transposed(rows: list[tuple[Any, ...]], specs: dict[str, _Spec]) -> dict[str, Any]:
    """Rows (tuples in the order of ``specs``) as compact columns."""
    if not rows:
        return {name: _compact(spec, []) for name, spec in specs.items()}
    return {name: _compact(spec, list(values)) for (name, spec), values in zip(
        specs.items(), zip(*rows, strict=True), strict=True)}


def _repeated(values: list[Any], rows: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """A categorical part (:func:`_compact`) of ``values`` taken at ``rows``: only the
    values taken among its uniques (a record with no rows adds no category)."""
    codes, uniques = _compact("cat", values)
    codes, used = _used_only(codes[rows], len(uniques))
    return codes, uniques if used is None else list(itertools.compress(uniques, used))


def _mails(rows: np.ndarray, records: list[Any], ok: np.ndarray,
           figures: dict[str, np.ndarray], objects: dict[str, np.ndarray]) -> dict[str, Any]:
    """The figures of smtp and imap records (at ``rows``; ``ok``: their status is ok) and
    their phases' columns, a row per phase in order.

    handshake_ms (and rtt_ms) is the sum of the phases' durations, in order, when the
    record is ok, no phase failed and every phase has its duration.
    """
    bodies = list(map(_BODY, records))
    figures["port"][rows] = _floats(map(_PORT, bodies))
    failed = list(map(_FAILED, bodies))
    objects["failed_phase"][rows] = failed
    tls = list(map(_TLS, bodies))
    with_tls = [i for i, t in enumerate(tls) if t is not None]
    if with_tls:
        kept = [tls[i] for i in with_tls]
        objects["tls_version"][rows[with_tls]] = list(map(_VERSION, kept))
        objects["cert_verified"][rows[with_tls]] = list(map(_VERIFIED, kept))
    listed = list(map(_PHASES, bodies))
    counts = np.fromiter(map(len, listed), dtype=np.int64, count=len(listed))
    phases = list(itertools.chain.from_iterable(listed))
    record_of = np.repeat(np.arange(len(records), dtype=np.int64), counts)
    durations = _floats(map(_DURATION, phases))
    untimed = np.bincount(record_of[np.isnan(durations)], minlength=len(records))
    complete = (ok & (counts > 0) & (untimed == 0)
                & np.array([f is None for f in failed], dtype=bool))
    summed = _sums(record_of, _ranks(counts), durations, len(records), exact=False)
    handshake = np.where(complete, summed, np.nan)
    figures["handshake_ms"][rows] = handshake
    figures["rtt_ms"][rows] = handshake
    figures["rtt_samples"][rows] = complete
    return {"_rec": rows[record_of].astype(np.int64),
            "mode": _repeated(list(map(_MODE, bodies)), record_of),
            "phase": _compact(PHASE_ORDER, list(map(_NAME, phases))),
            "duration_ms": durations,
            "ok": np.array(list(map(_OK, phases)), dtype=bool)}


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
        ids = record_ids(measurements, distinct=unique)
        frames = {}
        for name in list(children):
            frames[name] = _child(name, children.pop(name), measurements, ids)
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


def _child(name: str, own: dict[str, pd.Series], measurements: pd.DataFrame,
           ids: pd.CategoricalDtype | None) -> pd.DataFrame:
    """A child frame: its own columns, and its record's (taken from ``measurements``);
    its ``id`` of dtype ``ids`` (:func:`record_ids`) when there is one: the codes are the
    record numbers."""
    rec = own.pop("_rec").to_numpy()
    order = {"samples": SAMPLE_COLUMNS, "hops": HOP_COLUMNS, "phases": PHASE_COLUMNS}[name]
    dtypes = {"samples": _SAMPLE_DTYPES, "hops": _HOP_DTYPES, "phases": _PHASE_DTYPES}[name]
    columns: dict[str, pd.Series] = {}
    for column in order:
        if column in own:
            columns[column] = own[column]
            continue
        if column == "id" and ids is not None:
            columns[column] = pd.Series(pd.Categorical.from_codes(
                rec.astype(np.int32, copy=False), dtype=ids, validate=False))
            continue
        source = measurements[column].array
        if isinstance(source, pd.Categorical):
            columns[column] = _taken_categories(source, rec, trim=dtypes[column] == "cat")
            continue
        columns[column] = pd.Series(source.take(rec), copy=False)
    return pd.DataFrame(columns, copy=False)


def record_ids(measurements: pd.DataFrame, *, distinct: bool = False,
               ) -> pd.CategoricalDtype | None:
    """The dtype of the child frames' ``id``: a Categorical whose categories are the
    records' ids — the very Index of ``measurements["id"]``'s values, in its row order, so
    that a child row's code is its record's row in ``measurements``.  ``None`` (the ids
    stay strings) when the ids are not distinct or one is missing.  ``distinct``: known
    to be (the loader's dedup found no id twice and none missing).

    The categories are not validated again: the check (a hash table of every id) stayed
    cached on the Index, some 80 MiB at 1M records, as long as the frames.  That skips it
    through pandas' private ``CategoricalDtype._from_fastpath``; a pandas without it gets
    the public constructor (the same dtype, and the hash table).
    """
    values = measurements["id"]
    if not distinct and (values.hasnans or not values.is_unique):
        return None
    categories = pd.Index(values.array, copy=False)
    fast = getattr(pd.CategoricalDtype, "_from_fastpath", None)  # private: may go away
    if fast is None:  # a pandas without it: the public check, and its hash table
        return pd.CategoricalDtype(categories, ordered=False)
    dtype: pd.CategoricalDtype = fast(categories, ordered=False)
    return dtype


def _taken_categories(source: pd.Categorical, rows: np.ndarray, *, trim: bool) -> pd.Series:
    """``source`` at ``rows``; with ``trim``, only the categories used there (the values of
    the child frame, as if built alone), found by counting codes rather than by
    ``remove_unused_categories`` (which sorts them: 3 sorts of 4.7M codes at 1M records)."""
    codes = source.codes[rows]
    categories = source.categories
    if trim:
        codes, used = _used_only(codes, len(categories))
        if used is not None:
            categories = categories[used]
    return pd.Series(pd.Categorical.from_codes(codes, categories=categories,
                                               ordered=source.ordered))


def _used_only(codes: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``codes`` into ``count`` categories (-1: missing) renumbered over the categories they
    use, and which those are (``None``: all of them, the codes unchanged)."""
    used = np.bincount(codes[codes >= 0], minlength=count) > 0
    if used.all():
        return codes, None
    remap = np.append(np.cumsum(used) - 1, -1).astype(codes.dtype)  # (-1 stays -1)
    return remap[codes], used


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
        elif spec == "key":
            dtype = None
            checks = (*checks, pa.Check(_is_key, element_wise=False,
                                        name="dtype('str') or category of str"))
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


def _is_key(column: pd.Series) -> bool:
    """Whether ``column`` may be a child frame's id: strings, or a Categorical of them
    (the loader's, :func:`record_ids`)."""
    from pandera.engines import pandas_engine

    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype
    engine = pandas_engine.Engine
    return bool(engine.dtype(str).check(engine.dtype(dtype)))


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
