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
import tomllib
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .errors import NetvantageError, SchemaError
from .results import (
    Hop,
    PingBody,
    PingRecord,
    Status,
    TraceBody,
    TraceProbe,
    TraceRecord,
    decode_record,
    encode_record,
    write_jsonl,
)

__all__ = [
    "ATLAS_NAMESPACE",
    "AtlasFormatError",
    "AtlasImport",
    "AtlasProbe",
    "DataCentre",
    "ImportReport",
    "atlas_id",
    "convert_result",
    "import_atlas",
    "iter_json_values",
    "load_probes",
    "load_targets",
    "raw_path",
    "write_import",
]

#: Namespace of the deterministic record ids (UUIDv5) of imported Atlas results.
ATLAS_NAMESPACE = uuid.UUID("5b0c7a8e-2f3d-4c61-9a57-0d6f3e1b8a42")

_SOURCE = "atlas"


class AtlasFormatError(NetvantageError, ValueError):
    """A result that cannot be imported.  ``reason`` is short and stable (it is counted)."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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

    @property
    def agent(self) -> str:
        return f"atlas-probe-{self.id}"


@dataclass(frozen=True)
class DataCentre:
    """One entry of the user's target list."""

    name: str
    address: str
    location: str | None = None


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


def _probe_objects(data: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(data, list):
        for item in data:
            yield from _probe_objects(item)
    elif isinstance(data, dict):
        for key in ("objects", "results"):  # API v1-style listing / API v2 page
            if isinstance(data.get(key), list):
                yield from _probe_objects(data[key])
                return
        if "id" in data:
            yield data


def load_probes(paths: Iterable[str | Path]) -> dict[int, AtlasProbe]:
    """Read Atlas probe lists (API JSON: ``{"objects": [...]}``, ``{"results": [...]}``,
    a list of probe objects or one object; JSON Lines also works).

    Coordinates are taken from ``geometry.coordinates`` (GeoJSON, longitude
    first) or from ``latitude``/``longitude``.
    """
    probes: dict[int, AtlasProbe] = {}
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        values, _bad = _parse_values(text)
        for value in values:
            for obj in _probe_objects(value):
                pid = _int_or_none(obj.get("id"))
                if pid is None:
                    continue
                lat, lon = _float_or_none(obj.get("latitude")), _float_or_none(obj.get("longitude"))
                geometry = obj.get("geometry")
                if isinstance(geometry, dict):
                    coords = geometry.get("coordinates")
                    if isinstance(coords, list) and len(coords) >= 2:
                        lon, lat = _float_or_none(coords[0]), _float_or_none(coords[1])
                cc = obj.get("country_code")
                probes[pid] = AtlasProbe(
                    id=pid, country=cc.upper() if isinstance(cc, str) and cc else None,
                    lat=lat, lon=lon, asn_v4=_int_or_none(obj.get("asn_v4")),
                    asn_v6=_int_or_none(obj.get("asn_v6")))
    return probes


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


# ----------------------------------------------------------------------------- report


@dataclass
class ImportReport:
    """What an import read, imported and refused (with reasons), and what it noticed."""

    read: int = 0
    imported: int = 0
    duplicates: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    #: First place each refusal reason was seen: ``file:item``, and the detail.
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    def refuse(self, reason: str, where: str, detail: str | None = None) -> None:
        self.refused[reason] += 1
        if reason not in self.examples:
            self.examples[reason] = where + (f" ({detail})" if detail else "")

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.by_kind.items()))
        lines = [f"read {self.read}, imported {self.imported}"
                 + (f" ({kinds})" if kinds else "")
                 + f", refused {self.refused_total}"
                 + (f", skipped {self.duplicates} duplicate(s)" if self.duplicates else "")]
        for reason, n in self.refused.most_common():
            lines.append(f"  refused {n}: {reason} (first: {self.examples.get(reason, '?')})")
        for note, n in sorted(self.notes.items()):
            lines.append(f"  note {n}: {note}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- input


def _iter_array(text: str, start: int) -> Iterator[Any]:
    """The elements of a JSON array one by one, so a truncated tail spoils only itself."""
    decoder = json.JSONDecoder()
    pos, end = start + 1, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= end:
            raise AtlasFormatError("malformed JSON", "array not closed (truncated file?)")
        if text[pos] == "]":
            return
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise AtlasFormatError("malformed JSON", f"in array: {exc.msg}") from None
        yield value


def _parse_values(text: str) -> tuple[list[Any], list[tuple[int, str]]]:
    """JSON values in ``text`` and the (item number, detail) of the malformed ones."""
    values: list[Any] = []
    bad: list[tuple[int, str]] = []
    stripped = text.lstrip()
    if not stripped:
        return values, bad
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        pass
    else:
        return (list(whole) if isinstance(whole, list) else [whole]), bad
    if stripped.startswith("[") and "\n" in stripped and not stripped.rstrip().endswith("]"):
        # A (pretty-printed) array cut short: keep the complete elements.
        try:
            for value in _iter_array(stripped, 0):
                values.append(value)
        except AtlasFormatError as exc:
            bad.append((len(values) + 1, exc.detail or exc.reason))
        return values, bad
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            bad.append((number, exc.msg))
            continue
        if isinstance(value, list):
            values.extend(value)
        else:
            values.append(value)
    return values, bad


def iter_json_values(text: str) -> Iterator[tuple[Any, str | None]]:
    """Each JSON value in ``text`` (JSON Lines, one array or one object) as
    ``(value, None)``, or ``(None, detail)`` for a malformed line."""
    values, bad = _parse_values(text)
    for value in values:
        yield value, None
    for number, detail in bad:
        yield None, f"item {number}: {detail}"


# ----------------------------------------------------------------------------- conversion


def atlas_id(kind: str, msm_id: int, prb_id: int, timestamp: int) -> str:
    """The deterministic record id of one Atlas result."""
    return str(uuid.uuid5(ATLAS_NAMESPACE, f"atlas:{kind}:{msm_id}:{prb_id}:{timestamp}"))


def _need_int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
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


@dataclass
class _Envelope:
    id: str
    agent: str
    region: str | None
    target: str
    address: str | None
    started_at: datetime
    prb_id: int


def _envelope(obj: Mapping[str, Any], kind: str, probes: Mapping[int, AtlasProbe],
              targets: Mapping[str, DataCentre], notes: Counter[str]) -> _Envelope:
    prb_id = _need_int(obj, "prb_id")
    msm_id = _need_int(obj, "msm_id")
    timestamp = _need_int(obj, "timestamp")
    try:
        started = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise AtlasFormatError("missing or bad field 'timestamp'", repr(timestamp)) from None
    address = obj.get("dst_addr", obj.get("addr"))  # "addr"/"name": firmware 1 names
    name = obj.get("dst_name", obj.get("name"))
    address = address.strip() if isinstance(address, str) and address.strip() else None
    name = name.strip() if isinstance(name, str) and name.strip() else None
    dc = targets.get(_norm_addr(address)) if address is not None else None
    if dc is not None:
        target = dc.name
    elif name is not None or address is not None:
        target = (name or address or "")[:255]
        if targets:
            notes["target not in the data-centre list (dst_name/dst_addr used)"] += 1
    else:
        target = "unknown"
        notes["no dst_name or dst_addr (target 'unknown')"] += 1
    probe = probes.get(prb_id)
    if probes and probe is None:
        notes["probe not in the probe metadata (region left empty)"] += 1
    return _Envelope(id=atlas_id(kind, msm_id, prb_id, timestamp), agent=f"atlas-probe-{prb_id}",
                     region=probe.country if probe else None, target=target, address=address,
                     started_at=started, prb_id=prb_id)


def _ping(obj: Mapping[str, Any], env: _Envelope, notes: Counter[str]) -> PingRecord:
    entries = obj.get("result")
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
    sent_atlas = _int_or_none(obj.get("sent"))
    if sent_atlas is not None and sent_atlas > len(samples):
        notes["ping: fewer result entries than Atlas 'sent' (padded as lost)"] += 1
        samples.extend([None] * (sent_atlas - len(samples)))
    elif sent_atlas is not None and sent_atlas < len(samples):
        notes["ping: more result entries than Atlas 'sent' (entries kept)"] += 1
    if duplicates:
        notes["ping: duplicate replies (counted, not samples)"] += duplicates
    if late:
        notes["ping: late replies (counted, not samples)"] += late
    version = _ip_version(obj, env.address)
    size = _int_or_none(obj.get("size"))
    body = PingBody.from_samples(
        samples, ip_version=version, socket="raw" if samples else None,
        payload_bytes=max(size or 0, 0), interval_s=0.0, timeout_s=0.0, dont_fragment=False,
        duplicates=duplicates)
    rcvd_atlas = _int_or_none(obj.get("rcvd"))
    if rcvd_atlas is not None and rcvd_atlas != body.received:
        notes["ping: received differs from Atlas 'rcvd'"] += 1
    for ours, key in ((body.stats.min_ms, "min"), (body.stats.max_ms, "max")):
        theirs = _float_or_none(obj.get(key))
        if ours is not None and theirs is not None and theirs >= 0 and abs(ours - theirs) > 0.002:
            notes[f"ping: {key} differs from Atlas '{key}'"] += 1
    status: Status
    error: str | None
    if body.received:
        status, error = "ok", None
        if errors:
            notes["ping: error entries in results with replies (kept raw only)"] += len(errors)
    elif errors:
        status, error = "error", "; ".join(errors)[:2000]
    elif body.sent:
        status, error = "timeout", f"no reply to {body.sent} echo request(s)"
    else:
        status, error = "error", "no packet sent"
    return PingRecord(id=env.id, agent=env.agent, region=env.region, target=env.target,
                      address=env.address, started_at=env.started_at, duration_ms=0.0,
                      status=status, error=error, source=_SOURCE, body=body)


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
            if _flag(reply.get("late")):
                notes["traceroute: late replies (skipped)"] += 1
                continue
            if "icmpext" in reply:
                notes["traceroute: replies with ICMP extensions (ignored)"] += 1
            if "from" not in reply:
                if "x" in reply or "error" in reply:
                    probes.append(TraceProbe())
                    if "error" in reply:
                        hop_errors.setdefault(ttl, str(reply["error"]))
                    continue
                raise AtlasFormatError("traceroute reply of unknown form",
                                       json.dumps(reply)[:80])
            source = reply.get("from")
            if not isinstance(source, str) or not source:
                raise AtlasFormatError("traceroute reply with bad 'from'", repr(source))
            rtt = _rtt(reply["rtt"]) if "rtt" in reply else None
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
            probes.append(TraceProbe(
                address=source, rtt_ms=None if rtt is None else round(rtt, 3),
                icmp_type=icmp_type, icmp_code=icmp_code, tcp_flags=tcp_flags,
                reply_ttl=reply_ttl if reply_ttl is not None and reply_ttl >= 0 else None))
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


def convert_result(obj: Any, *, probes: Mapping[int, AtlasProbe] | None = None,
                   targets: Mapping[str, DataCentre] | None = None,
                   notes: Counter[str] | None = None) -> PingRecord | TraceRecord:
    """One Atlas result (a decoded JSON object) as a record; raises :class:`AtlasFormatError`."""
    if not isinstance(obj, dict):
        raise AtlasFormatError("not a JSON object", type(obj).__name__)
    kind = obj.get("type")
    if kind is None:
        raise AtlasFormatError("no 'type' field")
    if kind not in _KINDS:
        raise AtlasFormatError(f"unsupported type {str(kind)[:40]!r}")
    notes = Counter() if notes is None else notes
    local: Counter[str] = Counter()
    env = _envelope(obj, _KINDS[kind], probes or {}, targets or {}, local)
    try:
        record: PingRecord | TraceRecord = (
            _ping(obj, env, local) if kind == "ping" else _trace(obj, env, local))
    except AtlasFormatError:
        raise
    except (ValueError, TypeError, KeyError) as exc:  # the schema's own checks
        raise AtlasFormatError("fails the record schema", str(exc)[:200]) from None
    try:  # constructors check the invariants, decoding also checks ranges and lengths
        decode_record(encode_record(record))
    except SchemaError as exc:
        raise AtlasFormatError("fails the record schema", str(exc)[:200]) from None
    notes.update(local)  # only for results that are imported
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

    def probe_locations(self) -> list[dict[str, Any]]:
        """One row per imported probe with metadata: name (the agent), country, lat, lon."""
        seen = sorted({int(r.agent.rsplit("-", 1)[1]) for r in self.records})
        return [{"name": p.agent, "role": "probe", "country": p.country, "lat": p.lat,
                 "lon": p.lon} for pid in seen if (p := self.probes.get(pid)) is not None]


def import_atlas(sources: Iterable[str | Path], *,
                 probes: Mapping[int, AtlasProbe] | None = None,
                 targets: Mapping[str, DataCentre] | None = None,
                 keep_raw: bool = False) -> AtlasImport:
    """Read Atlas result files (JSON Lines, a JSON array or one object each)."""
    report = ImportReport()
    records: list[PingRecord | TraceRecord] = []
    raw: dict[str, Any] = {}
    seen: set[str] = set()
    for source in sources:
        name = str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            report.read += 1
            report.refuse("file is not UTF-8 text", name, str(exc)[:80])
            continue
        for number, (value, problem) in enumerate(iter_json_values(text), start=1):
            report.read += 1
            where = f"{name}:{number}"
            if problem is not None:
                report.refuse("malformed JSON", f"{name} {problem}")
                continue
            try:
                record = convert_result(value, probes=probes, targets=targets,
                                        notes=report.notes)
            except AtlasFormatError as exc:
                report.refuse(exc.reason, where, exc.detail)
                continue
            if record.id in seen:
                report.duplicates += 1
                continue
            seen.add(record.id)
            records.append(record)
            report.imported += 1
            report.by_kind[record.kind] += 1
            if keep_raw:
                raw[record.id] = value
    return AtlasImport(records=records, report=report, raw=raw, probes=dict(probes or {}),
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
