"""Import RIPE Atlas ping and traceroute results as netvantage records.

The input formats are the ones RIPE NCC documents in the RIPE Atlas
documentation, pages *"Measurement Result Formats"* (``ping`` and
``traceroute`` results, including the notes on older firmware) and
*"RIPE Atlas REST API: probes"* (the probe objects).  This module is written
from that documentation and from real result files; no code is taken from
other Atlas parsers.

What comes out
==============

Every Atlas result becomes one :class:`~netvantage.results.PingRecord` or
:class:`~netvantage.results.TraceRecord` with ``source="atlas"``:

* ``id`` — a UUIDv5 of ``atlas:<type>:<msm_id>:<prb_id>:<timestamp>``, so the
  same result imported twice (from the same or another file) gets the same id
  and a collector or an analysis never counts it twice.  Within one import a
  second copy is skipped and counted as a duplicate.
* ``agent`` — ``atlas-probe-<prb_id>``.
* ``region`` — the probe's ISO country code (e.g. ``"ZA"``) from the probe
  metadata given, ``None`` without it.  The probe's coordinates stay available
  in :attr:`AtlasImport.probes` (:meth:`AtlasImport.probe_locations` gives one
  row per imported probe: name ``atlas-probe-<id>``, country, lat, lon).
* ``target`` — the name of the data centre whose address is ``dst_addr`` in
  the user's list (CSV or TOML: name, address[, location]), else
  ``dst_name``, else ``dst_addr``.
* ``address`` — ``dst_addr``; ``started_at`` — ``timestamp`` (UTC).

Fields Atlas does not report are filled with neutral values and documented
here rather than guessed: a ping's ``duration_ms``, ``interval_s`` and
``timeout_s`` are 0 (Atlas ping results carry no duration and no packet
timing), ``dont_fragment`` is false, ``socket`` is ``"raw"`` (the probes'
measurement code uses raw sockets) or ``None`` when nothing was sent.

Ping
----
``result`` entries are read in order.  ``{"rtt": …}`` is a reply,
``{"x": "*"}`` a lost packet, ``{"error": …}`` a packet that could not be
sent or was answered by an error (lost; the text is kept in ``error`` when no
reply came, and counted in the report otherwise).  Entries marked ``dup`` are
duplicate replies: counted in ``body.duplicates``, never an extra sample.
Entries marked ``late`` answer a packet already written down as lost: counted
in the report, not a sample.  ``rtt`` given as a string and ``result`` given as
a JSON string (very old firmware) are accepted.  Counts and statistics are
recomputed from the samples; Atlas's own ``sent``/``rcvd``/``min``/``max``
are compared and any disagreement is counted in the report.

Traceroute
----------
Each ``{"hop": n, "result": [...]}`` becomes one :class:`~netvantage.results.Hop`
(TTL ``n``); each reply one :class:`~netvantage.results.TraceProbe`
(``{"x": "*"}`` is an unanswered probe; ``dup`` and ``late`` replies are
skipped and counted).  The ICMP message is inferred as the documentation
describes it: a reply from ``dst_addr`` is the destination's own answer (echo
reply for ICMP, port unreachable for UDP, ``tcp_flags`` from ``flags`` for
TCP); an ``err`` code is a destination unreachable (``N`` network, ``H`` host,
``A`` administratively prohibited, ``P`` protocol, ``p`` port, ``h`` beyond
scope (IPv6), or a number = the ICMP code); any other reply is a time
exceeded.  ICMP extensions (``icmpext``, e.g. MPLS labels) are ignored.
``paris_id`` goes into ``flow``; ``endtime - timestamp`` gives ``duration_ms``.
A hop-level ``{"hop": n, "error": …}`` is a TTL at which nothing could be
sent: a hop without probes.

The destination is *reached* when a reply comes from ``dst_addr``.  After
``gaplimit`` silent TTLs an Atlas probe sends a last round at TTL 255 to see
whether the destination answers at all.  Our hops must be TTL 1, 2, 3, … without
gaps, so that last round is stored as the hop *after* the last probed TTL (as
the authors of the 2023 cloud data-centre study counted it too); its
``dest_ttl`` is then a lower bound.  The report counts how many traces this
concerns, and ``keep_raw`` keeps the original next to each record.  A trace
that is not reached ends with ``stop_reason`` ``unreachable`` (an ``err``
from a router, or an error sending), ``gap`` (the TTL-255 round went
unanswered) or ``max_ttl`` (the probe ran out of hops, 32 by default).

Whatever cannot be read (malformed JSON, a truncated line, an unknown
``type`` such as ``dns``, a missing field, a value out of range) is refused,
counted with its reason in :class:`ImportReport`, and the import goes on.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import math
import statistics
import tomllib
import uuid
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from ..errors import SchemaError
from ..results import (
    Hop,
    PingRecord,
    RttSummary,
    Status,
    TraceBody,
    TraceProbe,
    TraceRecord,
    decode_record,
    encode_record,
    write_jsonl,
)
from ..results.wire import PingLines
from .ids import RecentKeys, uuid5
from .io import ImportFormatError, ImportReport, display_name, iter_json, open_text
from .places import CityReader, Place, from_address

__all__ = [
    "ATLAS_NAMESPACE",
    "AtlasFormatError",
    "AtlasImport",
    "AtlasImporter",
    "AtlasProbe",
    "DataCentre",
    "ImportReport",
    "RegionBy",
    "atlas_id",
    "convert_result",
    "import_atlas",
    "load_probes",
    "load_targets",
    "raw_path",
    "write_import",
]

#: Namespace of the deterministic record ids (UUIDv5) of imported Atlas results.
ATLAS_NAMESPACE = uuid.UUID("5b0c7a8e-2f3d-4c61-9a57-0d6f3e1b8a42")

_SOURCE = "atlas"


class AtlasFormatError(ImportFormatError):
    """A result that cannot be imported.  ``reason`` is short and stable (it is counted)."""


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class AtlasProbe:
    """What the probe list says about one probe."""

    id: int
    country: str | None = None
    lat: float | None = None
    lon: float | None = None
    asn_v4: int | None = None
    asn_v6: int | None = None
    #: Where the place comes from: ``"metadata"`` (the probe list) or ``"geo-db"``
    #: (the probe's address in a city database, ``--geo-db``).
    source: str = "metadata"
    city: str | None = None

    @property
    def agent(self) -> str:
        return f"atlas-probe-{self.id}"


@dataclass(frozen=True)
class DataCentre:
    """One entry of the user's target list."""

    name: str
    address: str
    location: str | None = None


@lru_cache(maxsize=65536)
def _norm_addr(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return text.strip().lower()


def _float_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_ID_KEYS = ("id", "prb_id", "probe_id", "probe")
_CC_KEYS = ("country_code", "country", "cc", "country_code_alpha2")
_LAT_KEYS = ("latitude", "lat")
_LON_KEYS = ("longitude", "lon", "long", "lng")
_ASN4_KEYS = ("asn_v4", "asn4", "asn")
_ASN6_KEYS = ("asn_v6", "asn6")
_LISTS = ("objects", "results", "probes", "features", "data")


def _first(obj: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        value = obj.get(key)
        if value is not None and value != "":
            return value
    return None


def _probe_objects(data: Any) -> Iterator[Mapping[str, Any]]:
    """Probe objects in any of the shapes Atlas gives them (see :func:`load_probes`)."""
    if isinstance(data, list):
        for item in data:
            yield from _probe_objects(item)
    elif isinstance(data, dict):
        for key in _LISTS:  # API listing pages, archive dumps, GeoJSON collections
            if isinstance(data.get(key), list):
                yield from _probe_objects(data[key])
                return
        nested = data.get("probe")
        if isinstance(nested, dict):  # {"probe": {...}}: a result's or a wrapper's probe
            yield {**{k: v for k, v in data.items() if k != "probe"}, **nested}
        elif isinstance(data.get("properties"), dict):  # a GeoJSON Feature
            yield {**data["properties"], "geometry": data.get("geometry")}
        elif any(key in data for key in _ID_KEYS):
            yield data


def _probe_of(obj: Mapping[str, Any], where: str) -> AtlasProbe:
    pid = _int_or_none(_first(obj, _ID_KEYS))
    if pid is None or pid < 0:
        raise AtlasFormatError("probe metadata without a probe id", repr(dict(obj))[:80],
                               where=where)
    lat = _float_or_none(_first(obj, _LAT_KEYS))
    lon = _float_or_none(_first(obj, _LON_KEYS))
    geometry = obj.get("geometry")
    if isinstance(geometry, dict):  # GeoJSON: longitude first
        coords = geometry.get("coordinates")
        if isinstance(coords, list) and len(coords) >= 2:
            lon, lat = _float_or_none(coords[0]), _float_or_none(coords[1])
    if (lat is None) != (lon is None) or (lat is not None and lon is not None and not (
            -90 <= lat <= 90 and -180 <= lon <= 180)):
        raise AtlasFormatError("probe metadata with bad coordinates",
                               f"probe {pid}: {lat!r}/{lon!r}", where=where)
    cc = _first(obj, _CC_KEYS)
    return AtlasProbe(id=pid, country=cc.strip().upper() if isinstance(cc, str) and cc.strip()
                      else None, lat=lat, lon=lon, asn_v4=_int_or_none(_first(obj, _ASN4_KEYS)),
                      asn_v6=_int_or_none(_first(obj, _ASN6_KEYS)), source="metadata")


def _probes_from_csv(lines: Iterable[str], name: str) -> Iterator[AtlasProbe]:
    reader = csv.DictReader(lines)
    fields = {(f or "").strip().lower().replace(" ", "_") for f in reader.fieldnames or []}
    if not fields & set(_ID_KEYS):
        raise AtlasFormatError("probe CSV without an id column",
                               f"columns: {', '.join(sorted(fields))}; need id (or prb_id), "
                               "and country_code/country, latitude/lat, longitude/lon/long",
                               where=f"{name}:1")
    for row in reader:
        clean = {(k or "").strip().lower().replace(" ", "_"): (v.strip() if isinstance(v, str)
                                                              else v)
                 for k, v in row.items()}
        if not any(clean.values()):
            continue
        yield _probe_of(clean, f"{name}:{reader.line_num}")


def load_probes(paths: Iterable[str | Path]) -> dict[int, AtlasProbe]:
    """Read Atlas probe metadata; raises :class:`AtlasFormatError` (with its line) if unreadable.

    Accepted, compressed or not (gzip, bzip2, xz): the REST API's probe list
    (``{"results": [...]}`` pages, v1 ``{"objects": [...]}``), the probe archive
    dumps (``{"objects": [...]}`` per day), a JSON array or JSON Lines of probe
    objects, objects nested as ``{"probe": {...}}``, GeoJSON features, and CSV
    with a header naming ``id`` (or ``prb_id``/``probe_id``), ``country_code``
    (or ``country``/``cc``), ``latitude``/``lat`` and ``longitude``/``lon``/``long``.
    Coordinates come from ``geometry.coordinates`` (GeoJSON: longitude first),
    else from the latitude and longitude keys.  A file that holds no probe is an
    error too: an import that silently reads 0 probes leaves every region empty.
    """
    probes: dict[int, AtlasProbe] = {}
    for path in paths:
        name = display_name(path)
        before = len(probes)
        with open_text(path) as text:
            head = text.read(1)
            while head and head.isspace():
                head = text.read(1)
            if head in ("{", "["):
                rest = text.read()  # probe lists are small (the whole network: ~40k probes)
                for item in iter_json(io.StringIO(head + rest)):
                    if item.problem is not None:
                        raise AtlasFormatError("probe metadata is not JSON", item.problem,
                                               where=f"{name}:{item.line}")
                    for obj in _probe_objects(item.value):
                        probe = _probe_of(obj, f"{name}:{item.line}")
                        probes[probe.id] = probe
            elif head:
                for probe in _probes_from_csv(_lines_with(head, text), name):
                    probes[probe.id] = probe
        if len(probes) == before:
            raise AtlasFormatError(
                "no probe found in the probe metadata",
                "expected Atlas probe objects (API list, objects/results wrappers, archive "
                "dump, GeoJSON) or CSV with an id column", where=name)
    return probes


def _lines_with(head: str, text: Any) -> Iterator[str]:
    yield head + text.readline()
    yield from text


_NAME_KEYS = ("name", "datacenter", "datacentre", "data_centre", "data_center", "host", "target")
_ADDRESS_KEYS = ("address", "ip", "addr", "ip_address")


def _pick(row: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    lowered = {str(k).strip().lower().replace(" ", "_"): v for k, v in row.items()}
    for key in keys:
        value = lowered.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _target_rows(data: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(data, list):
        for item in data:
            if isinstance(item, dict):
                yield item
        return
    if not isinstance(data, dict):
        return
    for key in ("target", "targets", "datacenter", "datacenters", "datacentre", "datacentres"):
        value = data.get(key)
        if isinstance(value, list):
            yield from _target_rows(value)
            return
        if isinstance(value, dict):
            yield from _target_rows(value)
            return
    for name, value in data.items():  # [name] address = "…" tables
        if isinstance(value, dict):
            yield {"name": name, **value} if "name" not in value else value


def load_targets(path: str | Path) -> dict[str, DataCentre]:
    """Read the data-centre list, keyed by normalised address.

    CSV with a header naming the columns (``name``/``datacenter``/``host``,
    ``address``/``ip``, optional ``location``; case-insensitive), or TOML with
    ``[[target]]`` (or ``[[datacenter]]``) tables of ``name``, ``address``,
    ``location``, or ``[NAME]`` tables with ``address``.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    rows: list[Mapping[str, Any]]
    if path.suffix.lower() == ".toml":
        try:
            rows = list(_target_rows(tomllib.loads(text)))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    targets: dict[str, DataCentre] = {}
    for number, row in enumerate(rows, start=1):
        name, address = _pick(row, _NAME_KEYS), _pick(row, _ADDRESS_KEYS)
        if name is None or address is None:
            raise ValueError(f"{path}: entry {number} needs a name and an address: {dict(row)}")
        targets[_norm_addr(address)] = DataCentre(name=name[:255], address=address,
                                                  location=_pick(row, ("location",)))
    return targets


# ----------------------------------------------------------------------------- conversion


def atlas_id(kind: str, msm_id: int, prb_id: int, timestamp: int) -> str:
    """The deterministic record id of one Atlas result."""
    return uuid5(ATLAS_NAMESPACE, f"atlas:{kind}:{msm_id}:{prb_id}:{timestamp}")[0]


def _seen_key(kind: str, msm_id: int, prb_id: int, timestamp: int,
              ) -> tuple[Hashable, Hashable]:
    """(bucket, key) of a result for :class:`RecentKeys`: the fields its id is made of,
    whole (one int when they fit in 98 bits), bucketed by kind and ~68 minutes."""
    bucket = (kind, timestamp >> 12)
    if prb_id < 1 << 32 and timestamp < 1 << 34:
        return bucket, (msm_id << 66) | (prb_id << 34) | timestamp
    return bucket, (msm_id, prb_id, timestamp)


def _need_int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if type(value) is int and value >= 0:  # the usual case, first
        return value
    if isinstance(value, bool) or value is None:
        raise AtlasFormatError(f"missing or bad field {key!r}", repr(value))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0:
        raise AtlasFormatError(f"missing or bad field {key!r}", repr(value))
    return value


def _rtt(value: Any) -> float:
    """An RTT in ms (a number, or a string in old firmware); refuses negatives and junk."""
    if isinstance(value, bool):
        raise AtlasFormatError("bad rtt value", repr(value))
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise AtlasFormatError("bad rtt value", repr(value)) from None
    if not math.isfinite(f) or f < 0:
        raise AtlasFormatError("bad rtt value", repr(value))
    return f


def _flag(value: Any) -> bool:
    """``dup``/``late`` markers: present and not false/0."""
    return value is not None and value is not False and value != 0


def _ip_version(obj: Mapping[str, Any], address: str | None) -> Literal[4, 6]:
    af = obj.get("af")
    if af in (4, 6):
        return 4 if af == 4 else 6
    if af is not None:
        raise AtlasFormatError("bad field 'af'", repr(af))
    if address is not None and ":" in address:
        return 6
    return 4


@dataclass(slots=True)
class _Envelope:
    id: str
    kind: str
    msm_id: int
    timestamp: int
    agent: str
    region: str | None
    target: str
    address: str | None
    started_at: datetime
    prb_id: int
    #: Replies refused inside a kept result (reason, detail): counted by the import.
    refused: list[tuple[str, str | None]] = field(default_factory=list)


RegionBy = Literal["country", "probe"]


@dataclass
class _Context:
    probes: Mapping[int, AtlasProbe]
    targets: Mapping[str, DataCentre]
    geo: CityReader | None = None
    region_by: RegionBy = "country"
    #: Probes placed from their address (``geo``), and those that could not be.
    located: dict[int, AtlasProbe | None] = field(default_factory=dict)
    #: Ping records written straight to JSON (each rule checked once), one writer per
    #: (IP version, socket, payload size): the body fields a measurement keeps.
    _pings: dict[tuple[int, str | None, int], PingLines] = field(default_factory=dict)
    #: (address, target, note) per (dst_addr, dst_name) given, and (agent, region,
    #: notes) per probe id (without a --geo-db): what :func:`_envelope` works out.
    target_cache: dict[tuple[Any, Any], tuple[str | None, str, str | None]] = field(
        default_factory=dict)
    probe_cache: dict[int, tuple[str, str | None, tuple[tuple[str, int], ...]]] = field(
        default_factory=dict)

    def pings(self, version: int, socket: str | None, size: int) -> PingLines:
        lines = self._pings.get((version, socket, size))
        if lines is None:
            lines = self._pings[version, socket, size] = PingLines(
                ip_version=version, socket=socket, payload_bytes=size, interval_s=0.0,
                timeout_s=0.0, dont_fragment=False)
        return lines

    def probe(self, prb_id: int, address: Any, notes: Counter[str]) -> AtlasProbe | None:
        probe = self.probes.get(prb_id)
        if self.geo is None or (probe is not None and probe.lat is not None):
            return probe
        if prb_id not in self.located:
            place = (from_address(address, self.geo) if isinstance(address, str) and address
                     else None)
            self.located[prb_id] = None if place is None else AtlasProbe(
                id=prb_id, country=place.country or (probe.country if probe else None),
                lat=place.lat, lon=place.lon, asn_v4=probe.asn_v4 if probe else None,
                asn_v6=probe.asn_v6 if probe else None, source="geo-db", city=place.city)
        found = self.located[prb_id]
        if found is None:
            notes["probe not placed: its address is not in the --geo-db database"] += 1
            return probe
        return found


def _envelope(obj: Mapping[str, Any], kind: str, ctx: _Context,
              notes: Counter[str]) -> _Envelope:
    prb_id = _need_int(obj, "prb_id")
    msm_id = _need_int(obj, "msm_id")
    timestamp = _need_int(obj, "timestamp")
    try:
        started = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise AtlasFormatError("missing or bad field 'timestamp'", repr(timestamp)) from None
    raw_address = obj.get("dst_addr", obj.get("addr"))  # "addr"/"name": firmware 1 names
    raw_name = obj.get("dst_name", obj.get("name"))
    # Results repeat their targets and probes: what they give is worked out once.
    target_key = (raw_address, raw_name)
    known = ctx.target_cache.get(target_key) if (
        type(raw_address) is str and type(raw_name) in (str, type(None))) else None
    if known is None:
        known = _target(raw_address, raw_name, ctx)
        if type(raw_address) is str and type(raw_name) in (str, type(None)):
            ctx.target_cache[target_key] = known
    address, target, note = known
    if note is not None:
        notes[note] += 1
    cached = ctx.probe_cache.get(prb_id) if ctx.geo is None else None
    if cached is None:
        counted: Counter[str] = Counter()
        probe = ctx.probe(prb_id, obj.get("from"), counted)
        if (ctx.probes or ctx.geo is not None) and probe is None:
            counted["probe not in the probe metadata (region left empty)"] += 1
        agent = f"atlas-probe-{prb_id}"
        region = agent if ctx.region_by == "probe" else (probe.country if probe else None)
        cached = (agent, region, tuple(counted.items()))
        if ctx.geo is None:
            ctx.probe_cache[prb_id] = cached
    agent, region, probe_notes = cached
    for note, n in probe_notes:
        notes[note] += n
    return _Envelope(id=atlas_id(kind, msm_id, prb_id, timestamp), kind=kind, msm_id=msm_id,
                     timestamp=timestamp, agent=agent, region=region, target=target,
                     address=address, started_at=started, prb_id=prb_id)


def _target(raw_address: Any, raw_name: Any, ctx: _Context,
            ) -> tuple[str | None, str, str | None]:
    """(address, target, the note to count per result or None) of a result."""
    address = raw_address.strip() if isinstance(raw_address, str) and raw_address.strip() \
        else None
    name = raw_name.strip() if isinstance(raw_name, str) and raw_name.strip() else None
    dc = ctx.targets.get(_norm_addr(address)) if address is not None else None
    if dc is not None:
        return address, dc.name, None
    if name is not None or address is not None:
        note = ("target not in the data-centre list (dst_name/dst_addr used)"
                if ctx.targets else None)
        return address, (name or address or "")[:255], note
    return address, "unknown", "no dst_name or dst_addr (target 'unknown')"


def _summary_ping(obj: Mapping[str, Any], env: _Envelope, ctx: _Context,
                  notes: Counter[str]) -> bytes:
    """A ping that carries only Atlas's summary (firmware 1: sent, rcvd, min/avg/max)."""

    def figure(key: str) -> float | None:
        value = _float_or_none(obj.get(key))
        return value if value is not None and value >= 0 else None  # -1: no reply

    sent, rcvd = _int_or_none(obj.get("sent")), _int_or_none(obj.get("rcvd"))
    if (sent is not None and sent < 0) or (rcvd is not None and rcvd < 0):
        raise AtlasFormatError("ping summary with a negative count", f"{sent}/{rcvd}")
    if sent is not None and rcvd is not None and rcvd > sent:
        raise AtlasFormatError("ping summary with more replies than requests",
                               f"rcvd {rcvd} > sent {sent}")
    lo, mean, hi = (None, None, None) if rcvd == 0 else (
        figure("min"), figure("avg"), figure("max"))
    figures = (lo, mean, hi)
    summary = RttSummary(samples=rcvd, min_ms=lo, mean_ms=mean, max_ms=hi)
    dup = _int_or_none(obj.get("dup"))
    size = _int_or_none(obj.get("size"))
    notes["ping: summary only (old firmware: sent, rcvd, min/avg/max), stored as a summary"] += 1
    status: Status
    error: str | None = None
    if rcvd:
        status = "ok"
    elif rcvd == 0 and sent:
        status, error = "timeout", f"no reply to {sent} echo request(s)"
    elif rcvd == 0:
        status, error = "error", "no packet sent"
    else:
        status = "ok" if any(v is not None for v in figures) else "error"
        error = None if status == "ok" else "no reply count and no figures in the summary"
    pings = ctx.pings(_ip_version(obj, env.address), "raw" if sent else None,
                      max(size or 0, 0))
    return pings.summary(
        summary, sent=sent, received=rcvd, id=env.id, agent=env.agent, region=env.region,
        target=env.target, address=env.address, started_at=env.started_at, duration_ms=0.0,
        status=status, error=error, source=_SOURCE, duplicates=max(dup or 0, 0))


def _ping(obj: Mapping[str, Any], env: _Envelope, ctx: _Context, notes: Counter[str]) -> bytes:
    entries = obj.get("result")
    if entries is None and any(k in obj for k in ("rcvd", "avg", "min", "max")):
        return _summary_ping(obj, env, ctx, notes)
    if isinstance(entries, str):  # very old firmware: the result list as a JSON string
        try:
            entries = json.loads(entries)
        except json.JSONDecodeError:
            raise AtlasFormatError("ping result is a string that is not JSON") from None
        notes["ping result given as a string (old firmware)"] += 1
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise AtlasFormatError("ping result is not a list", type(entries).__name__)
    samples: list[float | None] = []
    duplicates = late = 0
    errors: list[str] = []
    for n, entry in enumerate(entries):
        if type(entry) is dict and len(entry) == 1:  # the usual {"rtt": 1.2} or {"x": "*"}
            rtt = entry.get("rtt")
            if type(rtt) is float and rtt >= 0 and rtt != math.inf:
                samples.append(rtt)
                continue
            if "x" in entry:
                samples.append(None)
                continue
        if not isinstance(entry, dict):
            raise AtlasFormatError("ping result entry is not an object", f"entry {n}")
        if _flag(entry.get("dup")):
            duplicates += 1
        elif _flag(entry.get("late")):
            late += 1
        elif "rtt" in entry:
            samples.append(_rtt(entry["rtt"]))
        elif "error" in entry:
            samples.append(None)
            errors.append(f"packet {len(samples)}: {entry['error']}")
        elif "x" in entry:
            samples.append(None)
        else:
            raise AtlasFormatError("ping result entry of unknown form", json.dumps(entry)[:80])
    sent_atlas = obj.get("sent")
    if type(sent_atlas) is not int:
        sent_atlas = _int_or_none(sent_atlas)
    if sent_atlas is not None and sent_atlas > len(samples):
        notes["ping: fewer result entries than Atlas 'sent' (padded as lost)"] += 1
        samples.extend([None] * (sent_atlas - len(samples)))
    elif sent_atlas is not None and sent_atlas < len(samples):
        notes["ping: more result entries than Atlas 'sent' (entries kept)"] += 1
    if duplicates:
        notes["ping: duplicate replies (counted, not samples)"] += duplicates
    if late:
        # A late reply answers a packet already written down as lost (no RTT is given):
        # the packet stays without RTT, the reply is counted here and in the error text.
        notes["ping: late replies (answered after the timeout: counted, no RTT)"] += late
    sent = len(samples)
    got = [r for r in samples if r is not None]
    received = len(got)
    rcvd_atlas = obj.get("rcvd")
    if type(rcvd_atlas) is not int:
        rcvd_atlas = _int_or_none(rcvd_atlas)
    if rcvd_atlas is not None and rcvd_atlas != received:
        notes["ping: received differs from Atlas 'rcvd'"] += 1
    if got:
        for ours, key in ((round(min(got), 3), "min"), (round(max(got), 3), "max")):
            theirs = obj.get(key)
            if type(theirs) is not float:
                theirs = _float_or_none(theirs)
            if theirs is not None and theirs >= 0 and abs(ours - theirs) > 0.002:
                notes[f"ping: {key} differs from Atlas '{key}'"] += 1
    status: Status
    error: str | None
    if received:
        status, error = "ok", None
        if errors:
            notes["ping: error entries in results with replies (kept raw only)"] += len(errors)
    elif errors:
        status, error = "error", "; ".join(errors)[:2000]
    elif sent:
        status, error = "timeout", f"no reply to {sent} echo request(s)" + (
            f" in time ({late} late reply(ies) after the timeout)" if late else "")
    else:
        status, error = "error", "no packet sent"
    size = obj.get("size")
    if type(size) is not int:
        size = _int_or_none(size)
    pings = ctx.pings(_ip_version(obj, env.address), "raw" if samples else None,
                      max(size or 0, 0))
    if duplicates:
        return pings.samples(
            samples, id=env.id, agent=env.agent, region=env.region, target=env.target,
            address=env.address, started_at=env.started_at, duration_ms=0.0, status=status,
            error=error, source=_SOURCE, duplicates=duplicates)
    return pings.samples(
        samples, id=env.id, agent=env.agent, region=env.region, target=env.target,
        address=env.address, started_at=env.started_at, duration_ms=0.0, status=status,
        error=error, source=_SOURCE)


# ICMP destination unreachable codes for the documented ``err`` letters.
_ERR_V4 = {"N": 0, "H": 1, "P": 2, "p": 3, "A": 13}
_ERR_V6 = {"N": 0, "A": 1, "h": 2, "H": 3, "p": 4}
_UNREACH = {4: 3, 6: 1}
_TIME_EXCEEDED = {4: 11, 6: 3}
_ECHO_REPLY = {4: 0, 6: 129}
_PORT_UNREACH_CODE = {4: 3, 6: 4}


def _icmp_of_err(err: Any, version: int) -> tuple[int, int]:
    if isinstance(err, int) and not isinstance(err, bool) and 0 <= err <= 255:
        return _UNREACH[version], err
    if isinstance(err, str):
        if err.isdigit():
            return _UNREACH[version], int(err)
        if version == 6 and err == "P":
            return 4, 1  # parameter problem: unrecognised next header
        table = _ERR_V4 if version == 4 else _ERR_V6
        if err in table:
            return _UNREACH[version], table[err]
    raise AtlasFormatError("unknown traceroute err code", repr(err))


def _trace(obj: Mapping[str, Any], env: _Envelope, notes: Counter[str]) -> TraceRecord:
    proto = str(obj.get("proto", "ICMP")).lower()
    if proto not in ("icmp", "udp", "tcp"):
        raise AtlasFormatError("unknown traceroute proto", repr(obj.get("proto")))
    protocol: Literal["icmp", "udp", "tcp"] = (
        "icmp" if proto == "icmp" else "udp" if proto == "udp" else "tcp")
    version = _ip_version(obj, env.address)
    dst = _norm_addr(env.address) if env.address else None
    rows = obj.get("result")
    if not isinstance(rows, list):
        raise AtlasFormatError("traceroute result is not a list", type(rows).__name__)
    by_ttl: dict[int, list[TraceProbe]] = {}
    hop_errors: dict[int, str] = {}
    trace_errors: list[str] = []
    final_round: list[TraceProbe] | None = None
    primary_counts: list[int] = []
    #: Every packet sent, in order: (the hop's probe list, index in it).
    packets: list[tuple[list[TraceProbe], int]] = []
    for row in rows:
        if not isinstance(row, dict):
            raise AtlasFormatError("traceroute hop is not an object")
        if "hop" not in row:
            if "error" in row:  # e.g. the name did not resolve: no hop at all
                trace_errors.append(str(row["error"]))
                continue
            raise AtlasFormatError("traceroute hop without 'hop'", json.dumps(row)[:80])
        ttl = _int_or_none(row.get("hop"))
        if ttl is None or not 1 <= ttl <= 255:
            raise AtlasFormatError("traceroute hop number out of range", repr(row.get("hop")))
        probes: list[TraceProbe] = []
        if "error" in row and not row.get("result"):
            hop_errors[ttl] = str(row["error"])
            notes["traceroute: hop-level error (a TTL without probes)"] += 1
        replies = row.get("result") or []
        if not isinstance(replies, list):
            raise AtlasFormatError("traceroute hop result is not a list", f"hop {ttl}")
        for reply in replies:
            if not isinstance(reply, dict):
                raise AtlasFormatError("traceroute reply is not an object", f"hop {ttl}")
            if _flag(reply.get("dup")):
                notes["traceroute: duplicate replies (skipped)"] += 1
                continue
            late = _int_or_none(reply.get("late")) if _flag(reply.get("late")) else None
            if "icmpext" in reply:
                notes["traceroute: replies with ICMP extensions (ignored)"] += 1
            if "from" not in reply:
                if "x" in reply or "error" in reply:
                    if late is not None:
                        notes["traceroute: late entries without an address (skipped)"] += 1
                        continue
                    probes.append(TraceProbe())
                    packets.append((probes, len(probes) - 1))
                    if "error" in reply:
                        hop_errors.setdefault(ttl, str(reply["error"]))
                    continue
                raise AtlasFormatError("traceroute reply of unknown form",
                                       json.dumps(reply)[:80])
            source = reply.get("from")
            if not isinstance(source, str) or not source:
                raise AtlasFormatError("traceroute reply with bad 'from'", repr(source))
            edst = reply.get("edst")
            if isinstance(edst, str) and dst is not None and _norm_addr(edst) != dst:
                # The ICMP quotes a packet sent to another address: it answers another
                # measurement's packet, not ours, so our packet stays unanswered.
                env.refused.append(("traceroute reply for another destination (edst is not "
                                    "dst_addr)", f"TTL {ttl}: from {source}, edst {edst}"))
                if late is None:
                    probes.append(TraceProbe())
                    packets.append((probes, len(probes) - 1))
                continue
            rtt = _rtt(reply["rtt"]) if "rtt" in reply and late is None else None
            from_dst = dst is not None and _norm_addr(source) == dst
            icmp_type: int | None
            icmp_code: int | None
            tcp_flags: str | None = None
            if "err" in reply:
                icmp_type, icmp_code = _icmp_of_err(reply["err"], version)
            elif from_dst and protocol == "icmp":
                icmp_type, icmp_code = _ECHO_REPLY[version], 0
            elif from_dst and protocol == "udp":
                icmp_type, icmp_code = _UNREACH[version], _PORT_UNREACH_CODE[version]
            elif from_dst and protocol == "tcp":
                icmp_type = icmp_code = None
                flags = reply.get("flags")
                tcp_flags = str(flags) if flags is not None else None
            else:
                icmp_type, icmp_code = _TIME_EXCEEDED[version], 0
            reply_ttl = _int_or_none(reply.get("ttl"))
            probe = TraceProbe(
                address=source, rtt_ms=None if rtt is None else round(rtt, 3),
                icmp_type=icmp_type, icmp_code=icmp_code, tcp_flags=tcp_flags,
                reply_ttl=reply_ttl if reply_ttl is not None and reply_ttl >= 0 else None)
            if late is None:
                probes.append(probe)
                packets.append((probes, len(probes) - 1))
                continue
            # "late": N means the reply answers the packet sent N packets before this
            # point (Atlas gives no RTT for it).  That packet is found by counting the
            # packets sent, over every TTL; it gets the responder's address, no RTT.
            index = len(packets) - late
            slot = packets[index] if 0 <= index < len(packets) else None
            if slot is not None and slot[0][slot[1]].address is None:
                slot[0][slot[1]] = probe
                notes["traceroute: late replies kept (address given to the packet they "
                      "answer, no RTT)"] += 1
            else:
                notes["traceroute: late replies whose packet cannot be found (skipped)"] += 1
        primary_counts.append(len(probes))
        if ttl == 255 and by_ttl and max(by_ttl) < 254:
            final_round = probes
            continue
        if ttl in by_ttl:
            raise AtlasFormatError("traceroute hop listed twice", f"hop {ttl}")
        by_ttl[ttl] = probes
    last = max(by_ttl, default=0)
    ttls = list(range(1, last + 1))
    if len(by_ttl) != last and by_ttl:
        notes["traceroute: TTLs missing in the result (stored without probes)"] += 1
    if final_round is not None:
        notes["traceroute: final TTL-255 round stored as the hop after the last probed TTL"] += 1
        ttls.append(last + 1)
        by_ttl[last + 1] = final_round
    hops = [Hop.from_probes(t, by_ttl.get(t, [])) for t in ttls]

    def from_destination(p: TraceProbe) -> bool:
        return dst is not None and p.address is not None and _norm_addr(p.address) == dst

    dest_ttl = next((h.ttl for h in hops if any(from_destination(p) for p in h.probes)), None)
    reached = dest_ttl is not None
    unreachable_ttl = next(
        (h.ttl for h in hops
         if any(p.icmp_type == _UNREACH[version] and not from_destination(p) for p in h.probes)),
        None)
    stop: Literal["reached", "unreachable", "gap", "max_ttl", "deadline"]
    status: Status
    error: str | None = None
    if reached:
        stop, status = "reached", "ok"
    elif trace_errors:
        stop, status, error = "unreachable", "error", "; ".join(trace_errors)[:2000]
    elif unreachable_ttl is not None:
        stop, status = "unreachable", "unreachable"
        error = f"a router answered destination unreachable at TTL {unreachable_ttl}"
    elif hops and hops[-1].ttl in hop_errors:
        stop, status = "unreachable", "error"
        error = f"TTL {hops[-1].ttl}: {hop_errors[hops[-1].ttl]}"[:2000]
    elif final_round is not None:
        # Atlas sends its TTL-255 round only when it stops after ``gaplimit`` silent TTLs.
        stop, status = "gap", "timeout"
        error = "destination not reached: silent TTLs in a row"
    else:
        stop, status = "max_ttl", "timeout"
        error = f"destination not reached within {len(hops)} hops"
    flow: dict[str, int] = {}
    paris = _int_or_none(obj.get("paris_id"))
    if paris is not None:
        flow["paris_id"] = paris
    port = _int_or_none(obj.get("dst_port"))
    end = _float_or_none(obj.get("endtime"))
    duration = max(0.0, (end - env.started_at.timestamp()) * 1000.0) if end is not None else 0.0
    probes_per_hop = min(max([*primary_counts, 1]), 64)
    max_ttl = 255 if final_round is not None else max(len(hops), 1)
    body = TraceBody(protocol=protocol, ip_version=version,
                     port=port if port is not None and 1 <= port <= 65535 else None,
                     flow=flow, method="raw", probes_per_hop=probes_per_hop, cycles=1,
                     max_ttl=max_ttl, reached=reached, dest_ttl=dest_ttl, stop_reason=stop,
                     hops=hops)
    return TraceRecord(id=env.id, agent=env.agent, region=env.region, target=env.target,
                       address=env.address, started_at=env.started_at,
                       duration_ms=round(duration, 3), status=status, error=error,
                       source=_SOURCE, body=body)


_KINDS = {"ping": "ping", "traceroute": "trace"}


def _convert(obj: Any, ctx: _Context, local: Counter[str]) -> tuple[bytes, _Envelope]:
    """One result's record as JSON (no newline), every rule of the schema checked once
    for pings (:class:`~netvantage.results.wire.PingLines`); traces are built by the
    checked constructors and decoded again (msgspec checks ranges only when decoding)."""
    if not isinstance(obj, dict):
        raise AtlasFormatError("not a JSON object", type(obj).__name__)
    kind = obj.get("type")
    if kind is None:
        raise AtlasFormatError("no 'type' field")
    if kind not in _KINDS:
        raise AtlasFormatError(f"unsupported type {str(kind)[:40]!r}",
                               "only ping and traceroute results can be imported")
    env = _envelope(obj, _KINDS[kind], ctx, local)
    try:
        if kind == "ping":
            return _ping(obj, env, ctx, local), env
        data = encode_record(_trace(obj, env, local))
        decode_record(data)
    except AtlasFormatError:
        raise
    except SchemaError as exc:
        raise AtlasFormatError("fails the record schema", str(exc)[:200]) from None
    except (ValueError, TypeError, KeyError) as exc:  # the schema's own checks
        raise AtlasFormatError("fails the record schema", str(exc)[:200]) from None
    return data, env


def convert_result(obj: Any, *, probes: Mapping[int, AtlasProbe] | None = None,
                   targets: Mapping[str, DataCentre] | None = None,
                   notes: Counter[str] | None = None,
                   geo: CityReader | None = None,
                   region_by: RegionBy = "country") -> PingRecord | TraceRecord:
    """One Atlas result (a decoded JSON object) as a record; raises :class:`AtlasFormatError`.

    Replies refused inside a kept result (``edst`` not ``dst_addr``) are counted
    in ``notes`` here; :class:`AtlasImporter` counts them as refusals.
    """
    notes = Counter() if notes is None else notes
    local: Counter[str] = Counter()
    ctx = _Context(probes or {}, targets or {}, geo, region_by)
    data, env = _convert(obj, ctx, local)
    for reason, _detail in env.refused:
        local[f"refused: {reason}"] += 1
    notes.update(local)  # only for results that are imported
    record = decode_record(data)
    assert isinstance(record, PingRecord | TraceRecord)
    return record


# ----------------------------------------------------------------------------- import


@dataclass
class AtlasImport:
    """The records of an import, its report, and (``keep_raw``) each record's Atlas original."""

    records: list[PingRecord | TraceRecord]
    report: ImportReport
    raw: dict[str, Any] = field(default_factory=dict)
    probes: dict[int, AtlasProbe] = field(default_factory=dict)
    targets: dict[str, DataCentre] = field(default_factory=dict)

    def probe_locations(self) -> list[Place]:
        """The place of every imported probe that has coordinates (one row per probe)."""
        seen = sorted({int(r.agent.rsplit("-", 1)[1]) for r in self.records})
        return [_place(p, "probe") for pid in seen
                if (p := self.probes.get(pid)) is not None and p.lat is not None]


def _place(probe: AtlasProbe, region_by: RegionBy) -> Place:
    name = probe.agent if region_by == "probe" else (probe.country or probe.agent)
    return Place(name=name, country=probe.country, city=probe.city, lat=probe.lat,
                 lon=probe.lon, continent=None, source=f"atlas probe ({probe.source})",
                 role="region")


class AtlasImporter:
    """A streamed import: results are converted one by one as the files are read.

    :meth:`lines` yields each kept record as its JSON line (with its id and, for
    ``keep_raw``, the Atlas original), :meth:`records` the records themselves,
    while :attr:`report` counts what was read, kept, refused (by reason, per
    file) and noticed.  Memory does not grow with the files: repeats of a result
    are found among the :data:`~netvantage.importers.ids.RECENT_KEYS` most
    recent results (by time; :class:`~netvantage.importers.ids.RecentKeys`),
    compared by the fields the id is made of, exactly.
    """

    def __init__(self, *, probes: Mapping[int, AtlasProbe] | None = None,
                 targets: Mapping[str, DataCentre] | None = None,
                 geo: CityReader | None = None, region_by: RegionBy = "country") -> None:
        self.report = ImportReport(source="atlas")
        self._ctx = _Context(probes or {}, targets or {}, geo, region_by)
        self._seen = RecentKeys()
        self._used: set[int] = set()

    def lines(self, sources: Iterable[str | Path], *, keep_raw: bool = False,
              ) -> Iterator[tuple[str, bytes, Any]]:
        """``(record id, its JSON line without newline, the original or None)`` per kept
        result, in the order read."""
        report = self.report
        notes = report.notes
        ctx = self._ctx
        seen = self._seen
        used = self._used
        local: Counter[str] = Counter()
        for source in sources:
            name = display_name(source)
            tally = report.file(name)
            by_kind = report.by_kind
            try:
                with open_text(source) as text:
                    for item in iter_json(text):
                        tally.read += 1
                        if item.problem is not None:
                            report.refuse("malformed JSON", f"{name}:{item.line}",
                                          item.problem, file=name)
                            continue
                        if local:  # what a result noticed counts only if it is kept
                            local.clear()
                        try:
                            data, env = _convert(item.value, ctx, local)
                        except AtlasFormatError as exc:
                            report.refuse(exc.reason, f"{name}:{item.line}", exc.detail,
                                          file=name)
                            continue
                        if seen.again(*_seen_key(env.kind, env.msm_id, env.prb_id,
                                                 env.timestamp)):
                            tally.duplicates += 1
                            continue
                        used.add(env.prb_id)
                        if env.refused:
                            for reason, detail in env.refused:
                                report.refuse(reason, f"{name}:{item.line}", detail,
                                              file=name)
                        if local:
                            notes.update(local)
                        tally.kept += 1
                        by_kind[env.kind] += 1
                        yield env.id, data, (item.value if keep_raw else None)
            except ImportFormatError as exc:  # unreadable from some point on: say where
                report.fail(name, exc)

    def records(self, sources: Iterable[str | Path], *, keep_raw: bool = False,
                ) -> Iterator[tuple[PingRecord | TraceRecord, bytes, Any]]:
        """``(record, its JSON line without newline, the original or None)`` per kept result."""
        for _rid, data, original in self.lines(sources, keep_raw=keep_raw):
            record = decode_record(data)
            assert isinstance(record, PingRecord | TraceRecord)
            yield record, data, original

    def probes(self) -> dict[int, AtlasProbe]:
        """Every probe of a kept result whose place is known (metadata or ``--geo-db``)."""
        out: dict[int, AtlasProbe] = {}
        for pid in sorted(self._used):
            probe = self._ctx.probe(pid, None, Counter()) if pid in self._ctx.located or (
                pid in self._ctx.probes) else None
            if probe is not None:
                out[pid] = probe
        return out

    def places(self) -> list[Place]:
        """Locations rows for the regions of the kept records.

        ``region_by="probe"``: one row per probe at its coordinates.
        ``"country"``: one row per country at the median position of its probes
        (the analysis knows one place per region label).
        """
        probes = [p for p in self.probes().values() if p.lat is not None and p.lon is not None]
        if self._ctx.region_by == "probe":
            return [_place(p, "probe") for p in probes]
        by_country: dict[str, list[AtlasProbe]] = {}
        for p in probes:
            if p.country:
                by_country.setdefault(p.country, []).append(p)
        return [Place(name=cc, country=cc, lat=statistics.median(p.lat or 0.0 for p in ps),
                      lon=statistics.median(p.lon or 0.0 for p in ps),
                      source=f"median of {len(ps)} Atlas probe(s)", role="region")
                for cc, ps in sorted(by_country.items())]


def import_atlas(sources: Iterable[str | Path], *,
                 probes: Mapping[int, AtlasProbe] | None = None,
                 targets: Mapping[str, DataCentre] | None = None,
                 keep_raw: bool = False, geo: CityReader | None = None,
                 region_by: RegionBy = "country") -> AtlasImport:
    """Read Atlas result files into memory (the command streams: :class:`AtlasImporter`)."""
    importer = AtlasImporter(probes=probes, targets=targets, geo=geo, region_by=region_by)
    records: list[PingRecord | TraceRecord] = []
    raw: dict[str, Any] = {}
    for record, _data, original in importer.records(sources, keep_raw=keep_raw):
        records.append(record)
        if keep_raw:
            raw[record.id] = original
    return AtlasImport(records=records, report=importer.report, raw=raw,
                       probes={**dict(probes or {}), **importer.probes()},
                       targets=dict(targets or {}))


def raw_path(out: str | Path) -> Path:
    """``OUT.jsonl`` → ``OUT.raw.jsonl`` (the side file of the Atlas originals)."""
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.raw.jsonl")


def write_import(result: AtlasImport, out: str | Path) -> tuple[int, Path | None]:
    """Write the records to ``out`` (JSON Lines) and, if the import kept them, the Atlas
    originals to :func:`raw_path` as ``{"id": …, "raw": {…}}`` lines."""
    n = write_jsonl(result.records, out)
    if not result.raw:
        return n, None
    side = raw_path(out)
    tmp = side.with_name(f".{side.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for record in result.records:
            if record.id in result.raw:
                fh.write(json.dumps({"id": record.id, "raw": result.raw[record.id]},
                                    separators=(",", ":"), ensure_ascii=False) + "\n")
    tmp.replace(side)
    return n, side
