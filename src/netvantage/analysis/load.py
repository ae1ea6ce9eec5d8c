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

import sqlite3
import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pandas as pd

from ..errors import NetvantageError, SchemaError
from ..results import (
    KINDS,
    STATUSES,
    AnyRecord,
    ImapRecord,
    PingRecord,
    PmtuRecord,
    RttSummary,
    SmtpRecord,
    TcpBody,
    TcpRecord,
    TraceRecord,
    decode_all,
    read_jsonl,
    rtt_stats,
)
from .frames import (
    HOP_COLUMNS,
    MEASUREMENT_COLUMNS,
    PHASE_COLUMNS,
    SAMPLE_COLUMNS,
    Campaign,
)

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


def load(source: Source | Sequence[Source], *, kinds: Iterable[str] | None = None) -> Campaign:
    """Read a campaign (JSON Lines, collector store or Parquet dataset) as checked frames.

    ``source`` may be a list of sources (of any of the three forms).  ``kinds``
    keeps only those record kinds (read more cheaply where the source allows).
    Raises :class:`LoadError` for a source that cannot be read and
    :class:`~netvantage.errors.SchemaError` (listing every problem) for records
    or frames that do not fit the schema.
    """
    return check_campaign(frames_from_records(read_records(source, kinds=kinds)))


def read_records(source: Source | Sequence[Source], *,
                 kinds: Iterable[str] | None = None) -> list[AnyRecord]:
    """The validated records of ``source`` (see :func:`load`), each (agent, id) once.

    A record is identified by its agent and its id, as the collector stores it: the
    same pair read twice (two files, a re-import) is kept once.  Two agents' records
    that share an id are both kept; the later one's ``id`` becomes ``AGENT:ID`` in the
    frames, whose rows are joined on ``id`` alone.
    """
    wanted = _kinds(kinds)
    sources = [source] if isinstance(source, str | Path) else list(source)
    if not sources:
        raise LoadError("no source given: name a JSON Lines file, a store or a Parquet dataset")
    seen: set[tuple[str, str]] = set()
    ids: set[str] = set()
    out: list[AnyRecord] = []
    for one in sources:
        for record in _read_one(Path(one), wanted):
            key = (record.agent, record.id)
            if key in seen:
                continue
            seen.add(key)
            if record.id in ids:
                record = msgspec.structs.replace(record, id=f"{record.agent}:{record.id}")
            ids.add(record.id)
            out.append(record)
    return out


def _kinds(kinds: Iterable[str] | None) -> tuple[str, ...] | None:
    if kinds is None:
        return None
    wanted = tuple(dict.fromkeys([kinds] if isinstance(kinds, str) else kinds))
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise LoadError(f"unknown kind(s) {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(KINDS)})")
    return wanted


def _read_one(path: Path, kinds: tuple[str, ...] | None) -> list[AnyRecord]:
    if path.is_dir():
        return _read_parquet(path, kinds)
    if not path.exists():
        raise LoadError(f"{path}: no such file or directory")
    with open(path, "rb") as fh:
        head = fh.read(len(_SQLITE_MAGIC))
    if head == _SQLITE_MAGIC:
        return _read_store(path, kinds)
    if head.startswith(_PARQUET_MAGIC):
        raise LoadError(f"{path} is one Parquet file of a dataset: give the dataset's "
                        "directory (the one holding kind=…/), whose paths carry the kind")
    records = read_jsonl(path)
    return records if kinds is None else [r for r in records if r.kind in kinds]


def _read_store(path: Path, kinds: tuple[str, ...] | None) -> list[AnyRecord]:
    sql = "SELECT id, json FROM records"
    args: tuple[str, ...] = ()
    if kinds is not None:
        sql += f" WHERE kind IN ({','.join('?' * len(kinds))})"
        args = kinds
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise LoadError(f"{path}: cannot open the store: {exc}") from None
    try:
        rows = conn.execute(sql + " ORDER BY started_at, id", args).fetchall()
    except sqlite3.Error as exc:
        raise LoadError(f"{path}: not a netvantage collector store ({exc})") from None
    finally:
        conn.close()
    return decode_all(str(path), ((f"record {rid}", text) for rid, text in rows))


def _read_parquet(path: Path, kinds: tuple[str, ...] | None) -> list[AnyRecord]:
    import pyarrow.dataset as pads  # type: ignore[import-untyped]

    if not any(path.rglob("*.parquet")):
        raise LoadError(f"{path}: a directory without Parquet files (expected the dataset "
                        "written by 'netvantage export --format parquet')")
    dataset = pads.dataset(path, format="parquet", partitioning="hive")
    names = set(dataset.schema.names)
    missing = [c for c in (*_ENVELOPE, "kind", "body") if c not in names]
    if missing:
        raise LoadError(f"{path}: not a netvantage export, missing column(s) {missing}")
    where = None if kinds is None else pads.field("kind").isin(list(kinds))
    table = dataset.to_table(columns=[*_ENVELOPE, "kind", "body"], filter=where)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}

    def rows() -> Iterable[tuple[str, bytes]]:
        for i in range(table.num_rows):
            envelope = {name: columns[name][i] for name in ("kind", *_ENVELOPE)}
            # The body is stored as JSON text: splice it in rather than parse it
            # twice, and decode the whole record like any other source.
            text = (_enc.encode(envelope)[:-1] + b',"body":'
                    + str(columns["body"][i]).encode("utf-8") + b"}")
            yield f"record {envelope['id']}", text

    return decode_all(str(path), rows())


# --------------------------------------------------------------------------- frames


def frames_from_records(records: Sequence[AnyRecord]) -> Campaign:
    """The four frames of ``records`` (unchecked; :func:`load` checks them)."""
    m: dict[str, list[Any]] = {c: [] for c in MEASUREMENT_COLUMNS}
    s: dict[str, list[Any]] = {c: [] for c in SAMPLE_COLUMNS}
    h: dict[str, list[Any]] = {c: [] for c in HOP_COLUMNS}
    p: dict[str, list[Any]] = {c: [] for c in PHASE_COLUMNS}
    for r in records:
        if isinstance(r, PmtuRecord):
            continue  # a path MTU is not a latency, loss or handshake: no frame holds it yet
        _measurement(r, m)
        # A summary body has no samples (rtts_ms / attempts are empty): no rows.
        if isinstance(r, PingRecord):
            rtts: list[float | None] = list(r.body.rtts_ms)
            _samples(r, None, rtts, s)
        elif isinstance(r, TcpRecord):
            _samples(r, r.body.port, [a.connect_ms for a in r.body.attempts], s)
        elif isinstance(r, TraceRecord):
            _hops(r, h)
        elif isinstance(r, SmtpRecord | ImapRecord):
            _phases(r, p)
    return Campaign(
        measurements=_measurement_frame(m),
        samples=_frame(s, SAMPLE_COLUMNS, _SAMPLE_DTYPES),
        hops=_frame(h, HOP_COLUMNS, _HOP_DTYPES),
        phases=_frame(p, PHASE_COLUMNS, _PHASE_DTYPES),
    )


def _nan(x: float | None) -> float:
    return np.nan if x is None else x


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


def _measurement(r: AnyRecord, m: dict[str, list[Any]]) -> None:
    port: int | None = None
    rtt = rtt_min = loss = jitter = handshake = np.nan
    sent: int | None = None
    received: int | None = None
    failed_phase = tls_version = None
    cert_verified: bool | None = None
    is_summary = False
    rtt_stat: str | None = None
    rtt_samples: int | None = None
    rtt_sd = np.nan
    if isinstance(r, PingRecord | TcpRecord):
        b = r.body
        if isinstance(b, TcpBody):
            port = b.port
            sent, received = b.tried, b.succeeded
        else:
            sent, received = b.sent, b.received
        loss = _nan(b.loss_ratio)
        if b.summary is not None:
            is_summary = True
            figure, rtt_stat = _summary_figure(b.summary)
            rtt, rtt_min = _nan(figure), _nan(b.summary.min_ms)
            # Unknown stays unknown (<NA>): never one sample by default.
            rtt_samples = b.summary.samples if figure is not None else 0
            rtt_sd = _nan(b.summary.stdev_ms)
        else:
            rtt, rtt_min, jitter = (_nan(b.stats.median_ms), _nan(b.stats.min_ms),
                                    _nan(b.stats.jitter_ms))
            rtt_samples = received
            rtt_stat = "median" if received else None
            got = [x for x in ([a.connect_ms for a in b.attempts] if isinstance(b, TcpBody)
                               else b.rtts_ms) if x is not None]
            rtt_sd = statistics.stdev(got) if len(got) >= 2 else np.nan
    elif isinstance(r, TraceRecord):
        port = r.body.port
        dest = _destination_probes(r)
        if dest is not None:
            tried, answered = dest
            stats = rtt_stats(answered)
            rtt, rtt_min, jitter = (_nan(stats.median_ms), _nan(stats.min_ms),
                                    _nan(stats.jitter_ms))
            sent, received = tried, len(answered)
            loss = 1 - received / sent if sent else np.nan
            rtt_samples = sum(x is not None for x in answered)
            rtt_stat = "median" if rtt_samples else None
    elif isinstance(r, SmtpRecord | ImapRecord):
        mail = r.body
        port = mail.port
        failed_phase = mail.failed_phase
        if mail.tls is not None:
            tls_version, cert_verified = mail.tls.version, mail.tls.verified
        durations = [ph.duration_ms for ph in mail.phases]
        if (r.status == "ok" and mail.failed_phase is None and durations
                and all(d is not None for d in durations)):
            handshake = rtt = float(sum(d for d in durations if d is not None))
        rtt_samples = 0 if np.isnan(rtt) else 1
    for column, value in (
        ("id", r.id), ("kind", r.kind), ("agent", r.agent), ("region", r.region),
        ("target", r.target), ("address", r.address), ("port", port),
        ("started_at", r.started_at), ("duration_ms", r.duration_ms), ("status", r.status),
        ("ok", r.status == "ok"), ("source", r.source), ("rtt_ms", rtt),
        ("rtt_min_ms", rtt_min), ("loss_ratio", loss), ("jitter_ms", jitter), ("sent", sent),
        ("received", received), ("handshake_ms", handshake), ("failed_phase", failed_phase),
        ("tls_version", tls_version), ("cert_verified", cert_verified),
        ("summary", is_summary), ("rtt_stat", rtt_stat), ("rtt_samples", rtt_samples),
        ("rtt_sd_ms", rtt_sd),
    ):
        m[column].append(value)


def _destination_probes(r: TraceRecord) -> tuple[int, list[float | None]] | None:
    """(probes sent at the destination's TTL, RTTs of the destination's answers), if reached."""
    b = r.body
    if not b.reached or b.dest_ttl is None or b.dest_ttl > len(b.hops):
        return None
    hop = b.hops[b.dest_ttl - 1]
    answered = [p for p in hop.probes if p.address is not None]
    own = [p for p in answered if p.address == r.address]
    return len(hop.probes), [p.rtt_ms for p in (own or answered)]


def _samples(r: PingRecord | TcpRecord, port: int | None, rtts: Sequence[float | None],
             s: dict[str, list[Any]]) -> None:
    n = len(rtts)
    for column, value in (("id", r.id), ("kind", r.kind), ("region", r.region),
                          ("target", r.target), ("port", port),
                          ("started_at", r.started_at)):
        s[column].extend([value] * n)
    s["seq"].extend(range(n))
    s["rtt_ms"].extend([np.nan if x is None else x for x in rtts])


def _hops(r: TraceRecord, h: dict[str, list[Any]]) -> None:
    b = r.body
    dest_hop = b.dest_ttl if b.reached else None
    for hop in b.hops:
        rows: list[tuple[Any, ...]] = []
        at_dest = hop.ttl == dest_hop
        # The destination is the record's address; failing that (it answered
        # from another address), whoever answered at the destination's TTL.
        own = at_dest and any(x.address == r.address for x in hop.responders)
        for resp in hop.responders:
            icmp = next((p.icmp_type for p in hop.probes
                         if p.address == resp.address and p.icmp_type is not None), None)
            note = resp.annotation
            rows.append((resp.address, resp.replies, _nan(resp.stats.min_ms),
                         _nan(resp.stats.median_ms), icmp,
                         at_dest and (resp.address == r.address or not own),
                         *((note.asn, note.as_org, note.country, note.city, _nan(note.lat),
                            _nan(note.lon)) if note is not None
                           else (None, None, None, None, np.nan, np.nan))))
        if not rows:  # a silent TTL is still a row
            rows.append((None, 0, np.nan, np.nan, None, False,
                         None, None, None, None, np.nan, np.nan))
        for row in rows:
            h["id"].append(r.id)
            h["region"].append(r.region)
            h["target"].append(r.target)
            h["started_at"].append(r.started_at)
            h["protocol"].append(b.protocol)
            h["ttl"].append(hop.ttl)
            h["sent"].append(len(hop.probes))
            h["loss_ratio"].append(_nan(hop.loss_ratio))
            for column, value in zip(
                ("address", "replies", "rtt_min_ms", "rtt_median_ms", "icmp_type",
                 "is_destination", "asn", "as_org", "country", "city", "lat", "lon"),
                row, strict=True,
            ):
                h[column].append(value)


def _phases(r: SmtpRecord | ImapRecord, p: dict[str, list[Any]]) -> None:
    b = r.body
    n = len(b.phases)
    for column, value in (("id", r.id), ("kind", r.kind), ("region", r.region),
                          ("target", r.target), ("port", b.port), ("mode", b.mode),
                          ("started_at", r.started_at)):
        p[column].extend([value] * n)
    for ph in b.phases:
        p["phase"].append(ph.name)
        p["duration_ms"].append(_nan(ph.duration_ms))
        p["ok"].append(ph.ok)


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


def _column(values: list[Any], spec: _Spec) -> pd.Series:
    if isinstance(spec, tuple):
        extra = sorted({v for v in values if v is not None and v not in spec})
        return pd.Series(pd.Categorical(values, categories=[*spec, *extra]))
    if spec == "cat":
        return pd.Series(pd.Categorical(values))
    if spec == "time":
        return pd.Series(_times(values), dtype=_UTC_NS)
    if spec == "float64":
        return pd.Series(np.asarray(values, dtype=np.float64))
    return pd.Series(values, dtype=spec)


def _times(values: list[datetime]) -> pd.DatetimeIndex:
    if not values:
        return pd.DatetimeIndex([], dtype=_UTC_NS)
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True)).as_unit("ns")


def _frame(columns: dict[str, list[Any]], order: Sequence[str],
           dtypes: dict[str, _Spec]) -> pd.DataFrame:
    return pd.DataFrame({c: _column(columns[c], dtypes[c]) for c in order})


def _measurement_frame(m: dict[str, list[Any]]) -> pd.DataFrame:
    return _frame(m, MEASUREMENT_COLUMNS, _MEASUREMENT_DTYPES)


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
    problems = [p for name in FRAME_NAMES for p in _problems(name, getattr(campaign, name))]
    if problems:
        raise SchemaError("the campaign's frames do not fit their schemas", problems)
    return campaign


def _problems(name: str, frame: pd.DataFrame, per_check: int = 5) -> list[str]:
    import pandera.errors

    if name not in FRAME_NAMES:
        raise LoadError(f"no schema for a frame named {name!r} (known: {FRAME_NAMES})")
    try:
        schemas()[name].validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        problems: list[str] = []
        for (column, check), rows in cases.groupby(["column", "check"], dropna=False,
                                                   sort=False):
            where = f"{name}.{column}" if pd.notna(column) else name
            shown = [f"{c!r}" + ("" if pd.isna(i) else f" (row {i})")
                     for c, i in zip(rows["failure_case"][:per_check],
                                     rows["index"][:per_check], strict=True)]
            more = f", … {len(rows) - per_check} more" if len(rows) > per_check else ""
            problems.append(f"{where}: {check} failed for {len(rows)} value(s): "
                            f"{', '.join(shown)}{more}")
        return problems
    return []
