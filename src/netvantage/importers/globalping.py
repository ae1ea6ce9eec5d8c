"""Import Globalping ping, traceroute and mtr results as netvantage records.

The input is what Globalping's API returns for ``GET /v1/measurements/{id}``
(one measurement object per file, JSON Lines of them, or a JSON array of
them; compressed or not): ``id``, ``type``, ``target``, ``createdAt``,
``measurementOptions`` and ``results[]``, each result with the ``probe`` that
ran it (continent, region, country, state, city, asn, network, latitude,
longitude, tags, resolvers) and its ``result`` (``status``, ``rawOutput``,
``resolvedAddress``, ``resolvedHostname`` and the fields of its type).  The
fields are those of Globalping's published OpenAPI description
(``MeasurementResponse``, ``FinishedPingTestResult``,
``FinishedTracerouteTestResult``, ``FinishedMtrTestResult``); no code is
taken from Globalping.

What comes out
==============

Every *finished* result is one record with ``source="globalping"``; a result
whose ``status`` is ``in-progress``, ``failed`` or ``offline`` is refused and
counted by its status, as is every result of a type other than ping,
traceroute and mtr (``dns``, ``http``).

* ``id`` — a UUIDv5 of ``globalping:<measurement id>:<index in results>``: the
  same result imported twice gets the same id (a repeat is counted, skipped).
* ``agent`` — ``globalping-<country>-<city>-AS<asn>`` (Globalping gives no
  probe id: probes of one network in one city share a name).
* ``region`` — the probe's place, ``"<city>, <country>"``; the place itself
  (city, country, continent and the probe's latitude/longitude, ``source``
  ``"globalping"``) is collected for the locations file that ``analyse
  --locations`` reads (:func:`netvantage.importers.places.write_locations`).
* ``target`` — the measurement's ``target``; ``address`` — ``resolvedAddress``;
  ``started_at`` — the measurement's ``createdAt`` (results carry no time of
  their own); ``duration_ms`` — 0 (not reported).

Ping
----
``timings[]`` holds one ``{rtt, ttl}`` per *reply*; ``stats.total`` says how
many were sent.  The samples are the replies' RTTs in order, then one lost
sample (``None``) per packet not answered: Globalping does not say *which*
packets were lost, so losses are placed last (loss, minimum, median and mean do
not depend on where; jitter skips losses anyway).  A result with ``stats`` but
no ``timings`` becomes a summary body (:meth:`PingBody.from_summary`: sent =
``total``, received = ``rcv``, min/mean/max = ``min``/``avg``/``max``).  A ping
measurement made over TCP (``measurementOptions.protocol`` ``TCP``) becomes a
:class:`~netvantage.results.TcpRecord`: one successful connect per timing, one
timed-out attempt per packet lost.  Packet size, interval and timeout are not
reported: 0.

Traceroute
----------
Hop *n* of ``hops[]`` is TTL *n*.  Globalping probes run ``traceroute`` with two
probes per TTL: each ``timings[]`` entry is an answered probe from the hop's
``resolvedAddress``, the rest of the two are unanswered; a hop whose address is
``"*"`` or null answered neither.  The answer of the destination
(``resolvedAddress`` of the result) is an echo reply (ICMP), port unreachable
(UDP) or a TCP answer; other answers are time exceeded, except the last hop of
a trace that stopped before the destination and before TTL 20 (traceroute
stops early only on an ICMP unreachable, whose kind Globalping does not keep:
``icmp_code`` is then null).

MTR
---
Hop *n* is TTL *n*; ``timings[]`` gives every probe, ``{"rtt": null}`` for an
unanswered one.  A hop given with ``stats`` only (no timings) keeps its counts
and figures without inventing RTTs: ``stats.rcv`` answered probes with an
unknown RTT (``rtt_ms`` null) and ``stats.drop`` unanswered ones, and the
responder's statistics are the source's ``min``/``avg``/``max`` (median and
jitter unknown).  The hop's first ASN and its reverse name go into the
responder's annotation (``source`` ``"globalping"``).  Not reached with silent
last hops is a ``gap``, else ``max_ttl``.

For traces of both kinds, hops after the first TTL where the destination
answered are dropped (mtr and parallel traceroute probe past it), counted as a note.
"""

from __future__ import annotations

import io
import ipaddress
import json
import math
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from ..errors import SchemaError
from ..results import (
    Annotation,
    Hop,
    PingBody,
    PingRecord,
    Responder,
    RttStats,
    RttSummary,
    Status,
    TcpAttempt,
    TcpBody,
    TcpRecord,
    TraceBody,
    TraceProbe,
    TraceRecord,
    decode_record,
    encode_record,
)
from .ids import RecentKeys
from .io import (
    ImportFormatError,
    ImportReport,
    JsonValue,
    Refused,
    display_name,
    iter_json,
    open_text,
)
from .places import Place, PlaceError

__all__ = [
    "GLOBALPING_NAMESPACE",
    "TRACEROUTE_PROBES_PER_HOP",
    "GlobalpingRecord",
    "Refused",
    "convert_measurement",
    "globalping_id",
    "import_globalping",
]

#: Namespace of the deterministic record ids (UUIDv5) of imported Globalping results.
GLOBALPING_NAMESPACE = uuid.UUID("9a4f2c1e-7b3d-4e58-8c06-2f1d5e9b7a34")
#: Globalping's probes run traceroute with this many probes per TTL (``-q 2``).
TRACEROUTE_PROBES_PER_HOP = 2
#: ... and up to this TTL (``-m 20``).
TRACEROUTE_MAX_TTL = 20

_SOURCE = "globalping"
_TYPES = ("ping", "traceroute", "mtr")

GlobalpingRecord = PingRecord | TcpRecord | TraceRecord


def globalping_id(measurement: str, index: int) -> str:
    """The deterministic record id of result ``index`` of a measurement."""
    return str(uuid.uuid5(GLOBALPING_NAMESPACE, f"globalping:{measurement}:{index}"))


# ----------------------------------------------------------------------------- fields


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) and f >= 0 else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if value >= 0 else None


def _rtt(value: Any, what: str) -> float:
    f = _num(value)
    if f is None:
        raise Refused(f"bad {what} rtt", repr(value))
    return round(f, 3)


def _address(value: Any) -> str | None:
    """An IP address, or None for ``"*"``, null and anything else that is no address."""
    if not isinstance(value, str):
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _when(text: Any) -> datetime:
    if not isinstance(text, str):
        raise Refused("missing or bad field 'createdAt'", repr(text))
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise Refused("missing or bad field 'createdAt'", repr(text)) from None
    if when.tzinfo is None:
        raise Refused("missing or bad field 'createdAt'", f"{text!r} has no time zone")
    return when.astimezone(UTC)


_SLUG = re.compile(r"[^0-9A-Za-z]+")


def _probe(probe: Any) -> tuple[str, Place | None]:
    """The agent name and the place of a result's ``probe``."""
    if not isinstance(probe, dict):
        raise Refused("result without a probe object")
    country = _text(probe.get("country"))
    country = country.upper() if country else None
    city = _text(probe.get("city"))
    asn = _count(probe.get("asn"))
    parts = [p for p in (country, city) if p]
    agent = "-".join(["globalping", *(_SLUG.sub("_", p).strip("_") for p in parts)]
                     + ([f"AS{asn}"] if asn is not None else []))
    name = ", ".join(p for p in (city, country) if p)
    place = None
    if name:
        lat, lon = _num_signed(probe.get("latitude")), _num_signed(probe.get("longitude"))
        try:
            place = Place(name=name, country=country, city=city,
                          lat=lat if lon is not None else None,
                          lon=lon if lat is not None else None,
                          continent=_text(probe.get("continent")), source=_SOURCE,
                          role="region")
        except PlaceError as exc:
            raise Refused("bad probe coordinates", str(exc)) from None
    return agent[:255], place


def _num_signed(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


class _Env:
    __slots__ = ("address", "agent", "id", "region", "started_at", "target", "version")

    def __init__(self, id: str, agent: str, region: str | None, target: str,
                 address: str | None, started_at: datetime) -> None:
        self.id, self.agent, self.region = id, agent, region
        self.target, self.address, self.started_at = target, address, started_at
        self.version: Literal[4, 6] = 6 if address is not None and ":" in address else 4

    def fields(self) -> dict[str, Any]:
        return {"id": self.id, "agent": self.agent, "region": self.region,
                "target": self.target, "address": self.address,
                "started_at": self.started_at, "duration_ms": 0.0, "source": _SOURCE}


# ----------------------------------------------------------------------------- ping


def _ping(result: Mapping[str, Any], env: _Env, options: Mapping[str, Any],
          notes: Counter[str]) -> PingRecord | TcpRecord:
    timings = result.get("timings") or []
    if not isinstance(timings, list):
        raise Refused("ping timings is not a list", type(timings).__name__)
    rtts = [_rtt(t.get("rtt") if isinstance(t, dict) else t, "ping") for t in timings]
    stats = _mapping(result.get("stats"))
    total, rcv = _count(stats.get("total")), _count(stats.get("rcv"))
    if rcv is not None and rtts and rcv != len(rtts):
        notes["ping: stats.rcv differs from the number of timings (timings used)"] += 1
    if str(options.get("protocol", "ICMP")).upper() == "TCP":
        return _tcp_ping(rtts, total, env, options)
    if rtts or not rcv:
        lost = 0 if total is None else max(total - len(rtts), 0)
        if total is not None and total < len(rtts):
            notes["ping: more timings than stats.total (timings used)"] += 1
        if lost and rtts:
            notes["ping: lost packets placed after the replies (order not given)"] += 1
        body = PingBody.from_samples(
            [*rtts, *([None] * lost)], ip_version=env.version,
            socket="raw" if rtts or lost else None, payload_bytes=0, interval_s=0.0,
            timeout_s=0.0, dont_fragment=False)
        for ours, key in ((body.stats.min_ms, "min"), (body.stats.max_ms, "max")):
            theirs = _num(stats.get(key))
            if ours is not None and theirs is not None and abs(ours - theirs) > 0.002:
                notes[f"ping: {key} differs from Globalping's stats.{key}"] += 1
    else:  # counts and figures without the RTTs: a summary, nothing invented
        summary = RttSummary(samples=rcv, min_ms=_num(stats.get("min")),
                             mean_ms=_num(stats.get("avg")), max_ms=_num(stats.get("max")))
        body = PingBody.from_summary(summary, sent=total, received=rcv,
                                     ip_version=env.version, socket="raw", payload_bytes=0,
                                     interval_s=0.0, timeout_s=0.0, dont_fragment=False)
        notes["ping: stats without timings (imported as a summary)"] += 1
    status: Status
    error: str | None
    if body.received:
        status, error = "ok", None
    elif body.sent:
        status, error = "timeout", f"no reply to {body.sent} echo request(s)"
    else:
        status, error = "error", "no packet sent"
    return PingRecord(**env.fields(), status=status, error=error, body=body)


def _tcp_ping(rtts: list[float], total: int | None, env: _Env,
              options: Mapping[str, Any]) -> TcpRecord:
    port = _count(options.get("port"))
    port = port if port is not None and 1 <= port <= 65535 else 80
    lost = 0 if total is None else max(total - len(rtts), 0)
    attempts = [TcpAttempt(status="ok", connect_ms=r) for r in rtts]
    attempts += [TcpAttempt(status="timeout", error="no answer") for _ in range(lost)]
    body = TcpBody.from_attempts(attempts, port=port, ip_version=env.version, timeout_s=0.0)
    status: Status = "ok" if body.succeeded else "timeout"
    return TcpRecord(**env.fields(), status=status,
                     error=None if body.succeeded else f"no answer to {len(attempts)} SYN(s)",
                     body=body)


# ----------------------------------------------------------------------------- traces

_ECHO_REPLY = {4: 0, 6: 129}
_UNREACH = {4: 3, 6: 1}
_TIME_EXCEEDED = {4: 11, 6: 3}
_PORT_UNREACH_CODE = {4: 3, 6: 4}
_Protocol = Literal["icmp", "udp", "tcp"]


def _protocol(options: Mapping[str, Any]) -> tuple[_Protocol, int | None]:
    proto = str(options.get("protocol", "ICMP")).lower()
    if proto not in ("icmp", "udp", "tcp"):
        raise Refused("unknown trace protocol", repr(options.get("protocol")))
    protocol: _Protocol = "icmp" if proto == "icmp" else "udp" if proto == "udp" else "tcp"
    port = _count(options.get("port"))
    if protocol == "icmp":
        return protocol, None
    return protocol, port if port is not None and 1 <= port <= 65535 else 80


def _answer(address: str, rtt: float | None, *, dest: bool, protocol: _Protocol,
            version: int) -> TraceProbe:
    if dest and protocol == "icmp":
        return TraceProbe(address=address, rtt_ms=rtt, icmp_type=_ECHO_REPLY[version],
                          icmp_code=0)
    if dest and protocol == "udp":
        return TraceProbe(address=address, rtt_ms=rtt, icmp_type=_UNREACH[version],
                          icmp_code=_PORT_UNREACH_CODE[version])
    if dest:
        return TraceProbe(address=address, rtt_ms=rtt)
    return TraceProbe(address=address, rtt_ms=rtt, icmp_type=_TIME_EXCEEDED[version],
                      icmp_code=0)


def _hop_rows(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    hops = result.get("hops")
    if not isinstance(hops, list):
        raise Refused("trace result without a hops list", type(hops).__name__)
    if not hops:
        raise Refused("trace result with no hops")
    if len(hops) > 255:
        raise Refused("trace result with more than 255 hops", str(len(hops)))
    for n, h in enumerate(hops, start=1):
        if not isinstance(h, dict):
            raise Refused("trace hop is not an object", f"hop {n}")
    return hops


def _cut_at_destination(rows: list[Mapping[str, Any]], dest: str | None,
                        notes: Counter[str]) -> tuple[list[Mapping[str, Any]], int | None]:
    for n, h in enumerate(rows, start=1):
        if dest is not None and _address(h.get("resolvedAddress")) == dest and _answered(h):
            if n < len(rows):
                notes["trace: hops after the destination's TTL (dropped)"] += 1
            return rows[:n], n
    return rows, None


def _answered(h: Mapping[str, Any]) -> bool:
    timings = h.get("timings") or []
    if isinstance(timings, list) and any(
            isinstance(t, dict) and t.get("rtt") is not None for t in timings):
        return True
    stats = h.get("stats")
    return isinstance(stats, dict) and bool(_count(stats.get("rcv")))


def _traceroute(result: Mapping[str, Any], env: _Env, options: Mapping[str, Any],
                notes: Counter[str]) -> TraceRecord:
    protocol, port = _protocol(options)
    rows, dest_ttl = _cut_at_destination(_hop_rows(result), env.address, notes)
    stopped_early = dest_ttl is None and len(rows) < TRACEROUTE_MAX_TTL
    hops: list[Hop] = []
    for ttl, h in enumerate(rows, start=1):
        timings = h.get("timings") or []
        if not isinstance(timings, list):
            raise Refused("traceroute timings is not a list", f"hop {ttl}")
        address = _address(h.get("resolvedAddress"))
        rtts = [_rtt(t.get("rtt") if isinstance(t, dict) else t, "traceroute")
                for t in timings]
        if address is None and rtts:
            raise Refused("traceroute hop with RTTs but no address", f"hop {ttl}")
        probes: list[TraceProbe] = []
        for rtt in rtts:
            assert address is not None
            probe = _answer(address, rtt, dest=ttl == dest_ttl, protocol=protocol,
                            version=env.version)
            if stopped_early and ttl == len(rows):
                probe = TraceProbe(address=address, rtt_ms=rtt, icmp_type=_UNREACH[env.version])
            probes.append(probe)
        probes += [TraceProbe() for _ in range(max(TRACEROUTE_PROBES_PER_HOP - len(rtts), 0))]
        annotations = _annotations(h, address)
        hops.append(Hop.from_probes(ttl, probes, annotations))
    stop: Literal["reached", "unreachable", "gap", "max_ttl", "deadline"]
    status: Status
    error: str | None = None
    if dest_ttl is not None:
        stop, status = "reached", "ok"
    elif not stopped_early:
        stop, status = "max_ttl", "timeout"
        error = f"destination not reached within {len(hops)} hops"
    elif hops[-1].responders:
        stop, status = "unreachable", "unreachable"
        error = (f"traceroute stopped at TTL {len(hops)}: ICMP unreachable from "
                 f"{hops[-1].responders[0].address} (kind not reported)")
    else:
        stop, status = "gap", "timeout"
        error = "destination not reached: silent TTLs at the end"
    body = TraceBody(protocol=protocol, ip_version=env.version, port=port, method="raw",
                     probes_per_hop=max([len(h.probes) for h in hops] + [1]), cycles=1,
                     max_ttl=max(TRACEROUTE_MAX_TTL, len(hops)), reached=dest_ttl is not None,
                     dest_ttl=dest_ttl, stop_reason=stop, hops=hops)
    return TraceRecord(**env.fields(), status=status, error=error, body=body)


def _annotations(h: Mapping[str, Any], address: str | None) -> dict[str, Annotation] | None:
    if address is None:
        return None
    asns = h.get("asn")
    asn = _count(asns[0]) if isinstance(asns, list) and asns else None
    name = _text(h.get("resolvedHostname"))
    rdns = name if name is not None and name != address and name != "*" else None
    if asn is None and rdns is None:
        return None
    return {address: Annotation(asn=asn, rdns=rdns, source=_SOURCE)}


def _mtr(result: Mapping[str, Any], env: _Env, options: Mapping[str, Any],
         notes: Counter[str]) -> TraceRecord:
    protocol, port = _protocol(options)
    rows, dest_ttl = _cut_at_destination(_hop_rows(result), env.address, notes)
    hops: list[Hop] = []
    for ttl, h in enumerate(rows, start=1):
        address = _address(h.get("resolvedAddress"))
        timings = h.get("timings") or []
        if not isinstance(timings, list):
            raise Refused("mtr timings is not a list", f"hop {ttl}")
        stats = _mapping(h.get("stats"))
        annotations = _annotations(h, address)
        dest = ttl == dest_ttl
        if timings:
            probes = []
            for t in timings:
                raw = t.get("rtt") if isinstance(t, dict) else None
                if raw is None or address is None:
                    probes.append(TraceProbe())
                else:
                    probes.append(_answer(address, _rtt(raw, "mtr"), dest=dest,
                                          protocol=protocol, version=env.version))
            hops.append(Hop.from_probes(ttl, probes, annotations))
            continue
        total, rcv = _count(stats.get("total")) or 0, _count(stats.get("rcv")) or 0
        if rcv > total or (rcv and address is None):
            raise Refused("mtr hop stats do not hold together", f"hop {ttl}: {dict(stats)}")
        if rcv:
            notes["mtr: hops with stats but no timings (RTTs unknown, figures kept)"] += 1
        answered = [_answer(address, None, dest=dest, protocol=protocol, version=env.version)
                    for _ in range(rcv)] if address is not None else []
        probes = answered + [TraceProbe() for _ in range(total - rcv)]
        responders = []
        if address is not None and rcv:
            responders.append(Responder(
                address=address, replies=rcv,
                stats=RttStats(min_ms=_num(stats.get("min")), median_ms=None,
                               mean_ms=_num(stats.get("avg")), max_ms=_num(stats.get("max")),
                               jitter_ms=None),
                annotation=(annotations or {}).get(address)))
        hops.append(Hop(ttl=ttl, probes=probes, responders=responders,
                        loss_ratio=round(1 - rcv / total, 6) if total else None))
    stop: Literal["reached", "unreachable", "gap", "max_ttl", "deadline"]
    status: Status
    error: str | None = None
    if dest_ttl is not None:
        stop, status = "reached", "ok"
    elif not hops[-1].responders:
        stop, status, error = "gap", "timeout", "destination not reached: silent TTLs at the end"
    else:
        stop, status = "max_ttl", "timeout"
        error = f"destination not reached within {len(hops)} hops"
    packets = _count(options.get("packets")) or 3
    body = TraceBody(protocol=protocol, ip_version=env.version, port=port, method="raw",
                     probes_per_hop=min(max(packets, 1), 64), cycles=1,
                     max_ttl=max(len(hops), 1), reached=dest_ttl is not None,
                     dest_ttl=dest_ttl, stop_reason=stop, hops=hops)
    return TraceRecord(**env.fields(), status=status, error=error, body=body)


# ----------------------------------------------------------------------------- measurements


def convert_measurement(measurement: Any, notes: Counter[str] | None = None,
                        places: dict[str, Place] | None = None
                        ) -> Iterator[tuple[int, GlobalpingRecord | Refused]]:
    """The records of one measurement object, as ``(index, record)`` or ``(index, Refused)``.

    A measurement that is no measurement at all yields one ``(-1, Refused)``.
    The places of the probes are added to ``places`` (by name, first wins).
    """
    notes = Counter() if notes is None else notes
    if not isinstance(measurement, dict):
        yield -1, Refused("not a JSON object", type(measurement).__name__)
        return
    results = measurement.get("results")
    mid = _text(measurement.get("id"))
    if not isinstance(results, list) or mid is None:
        yield -1, Refused("not a Globalping measurement (no id and results)")
        return
    kind = measurement.get("type")
    options = measurement.get("measurementOptions")
    options = options if isinstance(options, dict) else {}
    target = _text(measurement.get("target"))
    for index, item in enumerate(results):
        try:
            if kind not in _TYPES:
                raise Refused(f"unsupported type {str(kind)[:20]!r}")
            if not isinstance(item, dict) or not isinstance(item.get("result"), dict):
                raise Refused("result item without a result object")
            result = item["result"]
            state = result.get("status")
            if state != "finished":
                raise Refused(f"result {str(state)[:20]} (not finished)")
            started = _when(measurement.get("createdAt"))
            agent, place = _probe(item.get("probe"))
            address = _address(result.get("resolvedAddress"))
            env = _Env(globalping_id(mid, index), agent, place.name if place else None,
                       (target or address or "unknown")[:255], address, started)
            local: Counter[str] = Counter()
            try:
                record: GlobalpingRecord = (
                    _ping(result, env, options, local) if kind == "ping"
                    else _traceroute(result, env, options, local) if kind == "traceroute"
                    else _mtr(result, env, options, local))
                decode_record(encode_record(record))
            except Refused:
                raise
            except (ValueError, TypeError, SchemaError) as exc:
                raise Refused("fails the record schema", str(exc)[:200]) from None
        except Refused as exc:
            yield index, exc
            continue
        notes.update(local)
        if place is not None and places is not None:
            known = places.setdefault(place.name, place)
            if (known.lat, known.lon) != (place.lat, place.lon):
                notes["probes of one city at other coordinates (the first kept)"] += 1
        yield index, record


class _Rejoined(io.TextIOBase):
    """``head`` (text already read) then the rest of ``text``."""

    def __init__(self, head: str, text: TextIO) -> None:
        self._head = io.StringIO(head)
        self._text = text

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        got = self._head.read(size)
        if size is None or size < 0:
            return got + self._text.read()
        return got + (self._text.read(size - len(got)) if len(got) < size else "")

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        return self._head.readline() or self._text.readline()


def _values(text: TextIO) -> Iterator[JsonValue]:
    """The JSON values of a Globalping file: streamed (JSON Lines, an array), except a
    pretty-printed object (``jq .`` output), which is read whole - one measurement is
    at most 500 results."""
    first = text.readline()
    skipped = 0
    while first and not first.strip():
        skipped += 1
        first = text.readline()
    body = first.strip()
    if body.startswith("{"):
        try:
            json.loads(body)
        except json.JSONDecodeError:
            whole = first + text.read()
            decoder, pos, line = json.JSONDecoder(), 0, skipped + 1
            while True:
                stripped = len(whole) - len(whole[pos:].lstrip())
                line += whole.count("\n", pos, stripped)
                pos = stripped
                if pos >= len(whole):
                    return
                try:
                    value, end = decoder.raw_decode(whole, pos)
                except json.JSONDecodeError as exc:
                    at = line + whole.count("\n", pos, exc.pos)
                    yield JsonValue(at, problem=f"not JSON: {exc.msg}")
                    return
                yield JsonValue(line, value)
                line += whole.count("\n", pos, end)
                pos = end
    for item in iter_json(_Rejoined(first, text)):  # type: ignore[arg-type]
        yield JsonValue(item.line + skipped, item.value, item.problem)


def import_globalping(sources: Iterable[str | Path], report: ImportReport, *,
                      places: dict[str, Place] | None = None) -> Iterator[GlobalpingRecord]:
    """The records of Globalping measurement files (``"-"`` = standard input; compressed
    or not), one at a time, counting into ``report``; probe places go into ``places``."""
    seen = RecentKeys()  # bounded: a long import must not grow without limit
    for source in sources:
        name = display_name(source)
        tally = report.file(name)
        try:
            with open_text(source) as text:
                for item in _values(text):
                    where = f"{name}:{item.line}"
                    if item.problem is not None:
                        tally.read += 1
                        report.refuse("malformed JSON", where, item.problem, file=name)
                        continue
                    for index, got in convert_measurement(item.value, report.notes, places):
                        tally.read += 1
                        if isinstance(got, Refused):
                            at = where if index < 0 else f"{where} results[{index}]"
                            report.refuse(got.reason, at, got.detail, file=name)
                            continue
                        if seen.again(_hour(got.started_at), got.id):
                            tally.duplicates += 1
                            continue
                        report.keep(name, got.kind)
                        yield got
        except ImportFormatError as exc:
            report.fail(name, exc)


def _hour(when: datetime) -> int:
    """The bucket of a record for :class:`RecentKeys`: the hour it started in."""
    return int(when.timestamp()) // 3600
