"""Many records at once: the ping and tcp checks of the result schema made over a block's
columns, for the loader (:mod:`netvantage.analysis.load`) and the collector's batches
(:mod:`netvantage.collector.app`).  numpy, which both of their extras install; the rest of
:mod:`netvantage.results` needs none and never imports this module.

:func:`decode_block` reads a block of JSON Lines as :func:`~netvantage.results.decode_many`
does and returns records with the same field values, for a loader that reads millions.
Most of the cost of a ping or tcp record is not msgspec's parsing but the checks the
structs run on themselves (``__post_init__``, in Python, a record at a time): on the
synthetic campaigns' pings, 4.3 µs per record decoded as :class:`PingRecord`, 1.6 µs as a
struct of the same fields and constraints without those checks.  So ping and tcp
records are decoded here into such *lean* structs (:data:`LEAN_TYPES`: the fields,
defaults and msgspec constraints of :class:`PingRecord` and :class:`TcpRecord`, made
from them, nothing else), and the usual record's checks are then made over the whole
block at once (:func:`_unsure`: numpy over the block's samples, a few C calls over its
fields).

This is a second writing of the rules, so it only ever **accepts**; it never explains.
A lean record the column checks do not surely accept (a summary body, no reply at all,
a figure off its samples, a clock far ahead, any rule that might fail) is decoded again
from its line by :func:`~netvantage.results.decode_record`, which decides as ever and
raises as ever; every other kind is decoded as the full struct in the first place.  A
record accepted here passes the structs' own checks (the column checks are those of the
structs' "usual body" path, ``PingBody.__post_init__`` and ``TcpBody.__post_init__``;
their sums are not ``math.fsum``'s to the last bit, which the 0.0005 ms between that
path's 0.0009 and the exact check's 0.0015 absorbs).  ``tests/test_results_bulk.py``
compares the two on valid records and on records breaking each rule.
"""

from __future__ import annotations

import itertools
import operator
import re
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import numpy as np

from .jsonl import decode_record
from .structs import _EARLIEST_TS as EARLIEST_TS
from .structs import (
    MAX_AHEAD_S,
    MAX_RTT_MS,
    SCHEMA_VERSIONS,
    AnyRecord,
    ImapRecord,
    MailReadyRecord,
    PingBody,
    PingRecord,
    PmtuRecord,
    Record,
    SmtpRecord,
    TcpAttempt,
    TcpBody,
    TcpRecord,
    TraceRecord,
)

__all__ = ["LEAN_TYPES", "Columns", "decode_block"]


def _lean(cls: Any, types: dict[str, Any] | None = None,
          namespace: dict[str, Any] | None = None) -> Any:
    """A struct with the fields of ``cls`` (their types, constraints and defaults; ``types``
    replaces some types) and its configuration, without its ``__post_init__``."""
    fields: list[Any] = []
    for f in msgspec.structs.fields(cls):
        kind = (types or {}).get(f.name, f.type)
        if f.default is not msgspec.NODEFAULT:
            fields.append((f.name, kind, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, kind, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, kind))
    config = cls.__struct_config__
    return msgspec.defstruct(
        f"Lean{cls.__name__}", fields, kw_only=True, frozen=True, gc=False,
        forbid_unknown_fields=config.forbid_unknown_fields, tag_field=config.tag_field,
        tag=config.tag, namespace=namespace, module=__name__)


_LeanTcpAttempt = _lean(TcpAttempt)
_LeanPingBody = _lean(PingBody)
_LeanTcpBody = _lean(TcpBody, {"attempts": list[_LeanTcpAttempt]},  # type: ignore[valid-type]
                     {"tried": TcpBody.tried, "loss_ratio": TcpBody.loss_ratio})
LeanPingRecord = _lean(PingRecord, {"body": _LeanPingBody}, {"kind": Record.kind})
LeanTcpRecord = _lean(TcpRecord, {"body": _LeanTcpBody}, {"kind": Record.kind})
#: The lean record types, by the full type they stand for.
LEAN_TYPES: dict[type, Any] = {PingRecord: LeanPingRecord, TcpRecord: LeanTcpRecord}

_decoder = msgspec.json.Decoder(
    LeanPingRecord | LeanTcpRecord | TraceRecord | SmtpRecord | ImapRecord | PmtuRecord
    | MailReadyRecord)

# Record.__post_init__'s id pattern, over a block's ids joined by newlines (not an id
# character): one match for the block.
_ID_CHARS = "[0-9A-Za-z._:-]+"
_IDS_SHAPE = re.compile(f"{_ID_CHARS}(?:\n{_ID_CHARS})*").fullmatch
_ID_SHAPE = re.compile(_ID_CHARS).fullmatch
#: A record whose start is within this of the clock's limit is left to the full check
#: (which reads the clock again, later).
_CLOCK_MARGIN_S = 60.0
#: The structs' "surely close" tolerance (structs._SURELY_CLOSE_MS).
_SURELY_CLOSE_MS = 0.0009

(_ID, _SCHEMA, _STARTED, _STATUS, _ERROR, _BODY, _SUMMARY, _SENT, _RECEIVED, _RTTS, _LOSS,
 _STATS, _ATTEMPTED, _SUCCEEDED, _ATTEMPTS, _CONNECT, _TZ) = (
    operator.attrgetter(name) for name in (
        "id", "schema", "started_at", "status", "error", "body", "summary", "sent",
        "received", "rtts_ms", "loss_ratio", "stats", "attempted", "succeeded", "attempts",
        "connect_ms", "tzinfo"))
_STAT_FIELDS = ("min_ms", "median_ms", "mean_ms", "max_ms", "jitter_ms")
_STAT_GETTERS = tuple(operator.attrgetter(name) for name in _STAT_FIELDS)


class Columns(NamedTuple):
    """What the checks read of a block's ping (or tcp) records, in block order, for the
    loader's frames: each array as the loader's own reading gives it (``np.array`` of
    the values, ``None`` NaN), so the frames are those of the records' fields."""

    summary: np.ndarray  #: bool: the body is a summary
    counts: np.ndarray  #: int64: samples (ping) or attempts (tcp) per record
    values: np.ndarray  #: the RTTs (ping) or connect times (tcp), end to end
    got: np.ndarray  #: received (ping) or succeeded (tcp)
    sent: np.ndarray  #: sent (ping); tcp: ``counts``
    loss: np.ndarray | None  #: loss_ratio (ping); tcp: ``None`` (a property, rounded)
    min_ms: np.ndarray  #: the statistics' minimum, median and jitter
    median_ms: np.ndarray
    jitter_ms: np.ndarray


def decode_block(data: bytes | memoryview, starts: np.ndarray | None = None,
                 ends: np.ndarray | None = None,
                 columns: dict[str, Columns] | None = None) -> list[AnyRecord]:
    """The records of ``data``, a block of JSON Lines whose line ``i`` is
    ``data[starts[i]:ends[i]]`` (one JSON object each, as the caller has checked), or,
    without ``starts`` and ``ends``, whose lines end at its newlines (the last one's
    optional), found only once its values are decoded and as many as its lines.

    Ping and tcp records come as lean structs (:data:`LEAN_TYPES`: the same fields, read
    alike), the others as their full structs.  Raises what the decoders raise for a bad
    record (a :class:`~netvantage.errors.SchemaError` for a lean one the column checks
    left to :func:`~netvantage.results.decode_record`), or ``ValueError`` if ``data``
    does not hold one value per line; it does not say which line: decode a line at a
    time to know.  ``columns``, if given, receives the :class:`Columns` of the block's
    ping and tcp records (keys "ping", "tcp"), every one of them, sure or not (a record
    decoded again has the same fields).
    """
    now = time.time()
    records: list[Any] = _decoder.decode_lines(data)
    if starts is None or ends is None:
        starts, ends = _lines(data, len(records))
    if len(records) != len(starts):
        raise ValueError(f"{len(records)} values on {len(starts)} lines")
    for i in _unsure(records, now, columns):
        records[i] = decode_record(bytes(data[int(starts[i]):int(ends[i])]))
    return records


def _lines(data: bytes | memoryview, values: int) -> tuple[np.ndarray, np.ndarray]:
    """Where ``data``'s lines start and end, if it has as many as ``values`` (else a
    ``ValueError``): counted first, so that a body of countless short lines costs no
    array of their positions (a collector's batch is any client's bytes)."""
    raw = bytes(data) if isinstance(data, memoryview) else data
    lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
    if lines != values:
        raise ValueError(f"{values} values on {lines} lines")
    ends = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == _NEWLINE)
    if not raw.endswith(b"\n"):
        ends = np.append(ends, len(raw))
    return np.concatenate(([0], ends[:-1] + 1)), ends


_NEWLINE = ord("\n")


def _unsure(records: list[Any], now: float,
            columns: dict[str, Columns] | None = None) -> list[int]:
    """The positions of the lean records of ``records`` that the column checks do not
    surely accept (``now``: the clock, read before they were decoded); their
    :class:`Columns` into ``columns``."""
    where = {LeanPingRecord: [], LeanTcpRecord: []}  # type: dict[Any, list[int]]
    for i, cls in enumerate(map(type, records)):
        if cls in where:
            where[cls].append(i)
    unsure: list[int] = []
    for kind, cls, check in (("ping", LeanPingRecord, _ping_sure),
                             ("tcp", LeanTcpRecord, _tcp_sure)):
        at = where[cls]
        if not at:
            continue
        lean = [records[i] for i in at]
        body_sure, read = check(list(map(_BODY, lean)))
        if columns is not None:
            columns[kind] = read
        sure = _envelope_sure(lean, now) & body_sure
        unsure += [at[k] for k in np.flatnonzero(~sure).tolist()]
    return sorted(unsure)


def _is_none(values: list[Any]) -> np.ndarray:
    return np.fromiter(map(operator.is_, values, itertools.repeat(None)), dtype=bool,
                       count=len(values))


def _numbers(values: list[Any]) -> np.ndarray:
    """Numbers as float64 (``None``: NaN), as the loader reads them.

    A count past 2**53 is rounded, but is never sure: it is compared with the length of
    a list (exact below 2**53, and an integer above rounds to 2**53 or more).
    """
    return np.array(values, dtype=np.float64)


def _envelope_sure(lean: list[Any], now: float) -> np.ndarray:
    """Record.__post_init__, surely passed: the id's characters, a schema read (1 or 2: the
    body checks take no summary), a start in UTC
    (the decoder's own zone) neither before the earliest start nor near the clock's
    limit, no error text with status ok."""
    n = len(lean)
    sure = np.ones(n, dtype=bool)
    ids = list(map(_ID, lean))
    joined = "\n".join(ids)
    # (an id holding a newline would pass the joined match: count them)
    if _IDS_SHAPE(joined) is None or joined.count("\n") != n - 1:
        sure &= np.fromiter((_ID_SHAPE(x) is not None for x in ids), dtype=bool, count=n)
    schemas = list(map(_SCHEMA, lean))
    if sum(map(schemas.count, SCHEMA_VERSIONS)) != n:  # (the bodies have no summary)
        sure &= np.fromiter((s in SCHEMA_VERSIONS for s in schemas), dtype=bool, count=n)
    starts = list(map(_STARTED, lean))
    sure &= np.fromiter(map(operator.is_, map(_TZ, starts), itertools.repeat(UTC)),
                        dtype=bool, count=n)
    # (datetime.timestamp, as the check reads it: the same floats, the same comparisons)
    when = np.fromiter(map(datetime.timestamp, starts), dtype=np.float64, count=n)
    sure &= (when >= EARLIEST_TS) & (when <= now + MAX_AHEAD_S - _CLOCK_MARGIN_S)
    ok = np.fromiter(map(operator.eq, map(_STATUS, lean), itertools.repeat("ok")),
                     dtype=bool, count=n)
    sure &= ~(ok & ~_is_none(list(map(_ERROR, lean))))
    return sure


def _ping_sure(bodies: list[Any]) -> tuple[np.ndarray, Columns]:
    """PingBody's usual body, surely: no summary, as many samples as sent (some), as many
    replies as received (some), loss_ratio within 4e-7 of 1 - received / sent, and the
    statistics of the replies (:func:`_samples_sure`)."""
    n = len(bodies)
    no_summary = _is_none(list(map(_SUMMARY, bodies)))
    sure = no_summary.copy()
    sent = _numbers(list(map(_SENT, bodies)))
    received = _numbers(list(map(_RECEIVED, bodies)))
    loss = _numbers(list(map(_LOSS, bodies)))
    lists = list(map(_RTTS, bodies))
    counts = np.fromiter(map(len, lists), dtype=np.int64, count=n)
    rtts = _numbers(list(itertools.chain.from_iterable(lists)))
    with np.errstate(invalid="ignore", divide="ignore"):
        sure &= (counts == sent) & (counts > 0)
        sure &= np.abs(1 - received / sent - loss) < 4e-7
    samples_sure, stats = _samples_sure(counts, rtts, received, list(map(_STATS, bodies)))
    return sure & samples_sure, Columns(~no_summary, counts, rtts, received, sent, loss,
                                        **stats)


def _tcp_sure(bodies: list[Any]) -> tuple[np.ndarray, Columns]:
    """TcpBody's usual body, surely: no summary, no ``attempted``, every attempt ok with
    a connect time or not ok without one (TcpAttempt's rule), as many ok as
    ``succeeded`` (some), and the statistics of the connect times (:func:`_samples_sure`)."""
    n = len(bodies)
    no_summary = _is_none(list(map(_SUMMARY, bodies)))
    sure = no_summary & _is_none(list(map(_ATTEMPTED, bodies)))
    succeeded = _numbers(list(map(_SUCCEEDED, bodies)))
    lists = list(map(_ATTEMPTS, bodies))
    counts = np.fromiter(map(len, lists), dtype=np.int64, count=n)
    attempts = list(itertools.chain.from_iterable(lists))
    connects = _numbers(list(map(_CONNECT, attempts)))
    ok = np.fromiter(map(operator.eq, map(_STATUS, attempts), itertools.repeat("ok")),
                     dtype=bool, count=len(attempts))
    owner = np.repeat(np.arange(n), counts)
    consistent = ok == ~np.isnan(connects)
    sure &= np.bincount(owner[~consistent], minlength=n) == 0
    samples_sure, stats = _samples_sure(counts, connects, succeeded,
                                        list(map(_STATS, bodies)))
    return sure & samples_sure, Columns(~no_summary, counts, connects, succeeded,
                                        counts.astype(np.float64), None, **stats)


def _samples_sure(counts: np.ndarray, values: np.ndarray, got: np.ndarray,
                  stats: list[Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per body (``counts`` of its ``values``, NaN lost), whether its received values
    number ``got`` (at least one), each in (0, MAX_RTT_MS], and ``stats`` is within the
    structs' sure tolerance of them: min and max equal, median, mean and (two or more)
    jitter within 0.0009 ms, no jitter for one (structs._surely_fits); and the given
    min_ms, median_ms and jitter_ms (NaN: null).

    The bodies with the same number of replies are taken together, their values as the
    rows of a matrix (sorted along the rows: a sort of a whole block's values by body and
    value took 1.7 µs per ping record, this 0.1).
    """
    n = len(counts)
    given = {name: _numbers(list(map(get, stats)))
             for name, get in zip(_STAT_FIELDS, _STAT_GETTERS, strict=True)}
    read = {name: given[name] for name in ("min_ms", "median_ms", "jitter_ms")}
    owner = np.repeat(np.arange(n), counts)
    kept = ~np.isnan(values)
    owner, x = owner[kept], values[kept]
    many = np.bincount(owner, minlength=n)
    sure: np.ndarray = (many == got) & (many > 0)
    if not len(x):
        return sure, read
    sure &= np.bincount(owner[~((x > 0) & (x <= MAX_RTT_MS))], minlength=n) == 0
    first = np.cumsum(many) - many  # where each body's values start in x
    low, high, median, mean, jitter = (np.full(n, np.nan) for _ in range(5))
    for m in np.unique(many[many > 0]).tolist():
        rows = np.flatnonzero(many == m)
        sent = x[first[rows][:, None] + np.arange(m)]  # a row per body, in sending order
        ordered = np.sort(sent, axis=1)
        low[rows], high[rows] = ordered[:, 0], ordered[:, -1]
        mid = m // 2
        median[rows] = ordered[:, mid] if m % 2 else (ordered[:, mid - 1] + ordered[:, mid]) / 2
        mean[rows] = sent.sum(axis=1) / m
        if m >= 2:
            jitter[rows] = np.abs(sent[:, 1:] - sent[:, :-1]).sum(axis=1) / (m - 1)
    with np.errstate(invalid="ignore"):
        sure &= (given["min_ms"] == low) & (given["max_ms"] == high)
        sure &= np.abs(given["median_ms"] - median) <= _SURELY_CLOSE_MS
        sure &= np.abs(given["mean_ms"] - mean) <= _SURELY_CLOSE_MS
        sure &= np.where(many >= 2, np.abs(given["jitter_ms"] - jitter) <= _SURELY_CLOSE_MS,
                         np.isnan(given["jitter_ms"]))
    return sure, read
