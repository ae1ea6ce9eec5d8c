"""Import scamper ping and traceroute results (warts files, or the JSON ``sc_warts2json`` prints).

scamper (CAIDA) writes its measurements as *warts*, a binary format; its own
tool ``sc_warts2json`` prints every object of a warts file as one JSON object
per line.  This module reads warts by running ``sc_warts2json`` (a warts file
is recognised by its magic bytes ``0x12 0x05``, also inside gzip/bz2/xz, which
are decompressed here and piped in, so the tool never needs to understand the
compression), or reads JSON that ``sc_warts2json`` already printed.  The field
meanings are those of scamper's manual pages (``sc_warts2json(1)``,
``warts(5)``, ``scamper(1)``) and of real files this project made with
scamper 20211212 (``tests/data/scamper/``); no code is taken from scamper.

What comes out
==============

``type: "ping"`` becomes a :class:`~netvantage.results.PingRecord`,
``type: "trace"`` a :class:`~netvantage.results.TraceRecord`, both with
``source="scamper"``.  ``cycle-start`` / ``cycle-stop`` / ``list`` objects are
scamper's bookkeeping: the ``hostname`` of a ``cycle-start`` names the agent
of the objects that follow; nothing else is read from them and they are not
counted as results.  Every other type (``tracelb``, ``dealias``, ``sting``,
``tbit``, ``host``, …) is refused and counted by its type.

* ``id`` — a UUIDv5 of ``scamper:<type>:<src>:<dst>:<start sec>.<usec>:<userid>``,
  so the same object imported twice gets the same id (a repeat within one
  import is counted and skipped).
* ``agent`` — ``--agent`` if given, else the cycle's ``hostname``, else
  ``scamper-<src>``; ``region`` — ``--region`` if given (scamper records no
  place).  ``target`` and ``address`` — ``dst``; ``started_at`` — ``start``.
* ``duration_ms`` — 0: scamper 20211212 writes no end time for a ping or a trace.

Ping (``method`` ``icmp-echo``)
-------------------------------
``ping_sent`` probes; each answer in ``responses[]`` is placed at its ``seq``
(0-based), so the samples are in sending order and an unanswered ``seq`` is a
lost probe (``None``).  A second answer to one ``seq`` is a duplicate
(``body.duplicates``), never an extra sample.  An answer that is an ICMP
error (unreachable, time exceeded: ``icmp_type`` other than echo reply) goes to
``icmp_errors``.  ``interval_s`` is ``wait`` + ``wait_us``, ``timeout_s`` is
``timeout``, ``payload_bytes`` is ``probe_size`` less the IP and ICMP headers
(28 bytes for IPv4, 48 for IPv6).  scamper's own ``statistics`` are compared
with the figures recomputed from the samples and any difference is counted as
a note.  Other ping methods (``tcp-syn``, ``udp``, ``icmp-time``, …) are
refused by name: they are not ICMP echo.

Trace
-----
scamper lists only the *answers* (``hops[]``, each with ``probe_ttl``,
``probe_id`` — the attempt at that TTL, from 1 — ``addr``, ``rtt``,
``icmp_type``/``icmp_code`` or ``tcp_flags``).  The probes that went
unanswered are rebuilt from the trace's own counts: at a TTL with answers,
scamper sent ``max(probe_id)`` attempts (it moves on after an answer); at a
silent TTL up to ``hop_count`` it sent ``attempts``.  The sum is checked
against ``probe_count`` and a difference is counted as a note (e.g. traces
made with ``-Q``, which sends every attempt).  TTLs below ``firsthop`` were
not probed: hops without probes.  The destination is reached when ``dst``
answered; hops past the first TTL where it did are dropped (counted as a note).
``stop_reason`` maps: ``COMPLETED`` → reached, ``UNREACH``/``ICMP`` →
unreachable, ``GAPLIMIT`` → gap, ``HOPLIMIT`` → max_ttl, ``LOOP`` →
unreachable with the error "forwarding loop", ``HALTED``/``ERROR`` → deadline
/ error.  ``method`` gives the protocol (``icmp-echo[-paris]``,
``udp[-paris]``, ``tcp``/``tcp-ack``) and ``flow`` keeps what a Paris trace
holds constant (``icmp_sum``, ``sport``, ``dport``).
"""

from __future__ import annotations

import io
import ipaddress
import math
import shutil
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal, TextIO

from ..errors import SchemaError
from ..results import (
    Hop,
    IcmpError,
    PingBody,
    PingRecord,
    Status,
    TraceBody,
    TraceProbe,
    TraceRecord,
    decode_record,
    encode_record,
)
from .ids import RecentKeys
from .io import (
    BLOCK,
    ImportFormatError,
    ImportReport,
    Refused,
    display_name,
    iter_json,
    open_binary,
)

__all__ = [
    "SCAMPER_NAMESPACE",
    "WARTS_MAGIC",
    "Refused",
    "ScamperContext",
    "convert_object",
    "import_scamper",
    "scamper_id",
]

#: Namespace of the deterministic record ids (UUIDv5) of imported scamper objects.
SCAMPER_NAMESPACE = uuid.UUID("0e7b8f52-6c1d-4f0a-b3a9-5d2e8c4f7a19")
#: The first two bytes of every warts object header.
WARTS_MAGIC = b"\x12\x05"

_SOURCE = "scamper"
_BOOKKEEPING = ("cycle-start", "cycle-stop", "cycle-def", "list")


@dataclass
class ScamperContext:
    """What the objects of one input share: the user's names, the current cycle, the notes."""

    agent: str | None = None
    region: str | None = None
    hostname: str | None = None
    notes: Counter[str] = field(default_factory=Counter)


def scamper_id(kind: str, src: str, dst: str, sec: int, usec: int, userid: int) -> str:
    """The deterministic record id of one scamper object."""
    key = f"scamper:{kind}:{src}:{dst}:{sec}.{usec:06d}:{userid}"
    return str(uuid.uuid5(SCAMPER_NAMESPACE, key))


# ----------------------------------------------------------------------------- fields


def _int(obj: Mapping[str, Any], key: str, *, default: int | None = None) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Refused(f"missing or bad field {key!r}", repr(value))
    return value


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(f"bad {what}", repr(value))
    f = float(value)
    if not math.isfinite(f) or f < 0:
        raise Refused(f"bad {what}", repr(value))
    return f


def _address(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise Refused(f"missing or bad field {key!r}", repr(value))
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise Refused(f"missing or bad field {key!r}", repr(value)) from None


def _start(obj: Mapping[str, Any]) -> tuple[datetime, int, int]:
    start = obj.get("start")
    if not isinstance(start, dict):
        raise Refused("missing or bad field 'start'", repr(start))
    sec, usec = _int(start, "sec"), _int(start, "usec", default=0)
    if usec >= 1_000_000:
        raise Refused("missing or bad field 'start'", repr(start))
    try:
        when = datetime.fromtimestamp(sec, UTC).replace(microsecond=usec)
    except (OverflowError, OSError, ValueError):
        raise Refused("missing or bad field 'start'", repr(start)) from None
    return when, sec, usec


@dataclass(frozen=True)
class _Envelope:
    id: str
    agent: str
    region: str | None
    src: str
    dst: str
    started_at: datetime
    version: Literal[4, 6]


def _envelope(obj: Mapping[str, Any], kind: str, ctx: ScamperContext) -> _Envelope:
    src, dst = _address(obj, "src"), _address(obj, "dst")
    started, sec, usec = _start(obj)
    userid = _opt_int(obj.get("userid")) or 0
    version: Literal[4, 6] = 6 if ":" in dst else 4
    agent = ctx.agent or ctx.hostname or f"scamper-{src}"
    return _Envelope(id=scamper_id(kind, src, dst, sec, usec, userid), agent=agent[:255],
                     region=ctx.region, src=src, dst=dst, started_at=started, version=version)


# ----------------------------------------------------------------------------- ping

_ECHO_REPLY = {4: 0, 6: 129}
_UNREACH = {4: 3, 6: 1}
_TIME_EXCEEDED = {4: 11, 6: 3}
_PORT_UNREACH_CODE = {4: 3, 6: 4}
_HEADERS = {4: 28, 6: 48}  # IP + ICMP echo header bytes in scamper's probe_size


def _ping(obj: Mapping[str, Any], env: _Envelope, notes: Counter[str]) -> PingRecord:
    method = obj.get("method", "icmp-echo")
    if method != "icmp-echo":
        raise Refused(f"ping method {str(method)[:30]!r} is not ICMP echo (not imported)")
    sent = _int(obj, "ping_sent")
    responses = obj.get("responses", [])
    if not isinstance(responses, list):
        raise Refused("ping responses is not a list", type(responses).__name__)
    samples: list[float | None] = [None] * sent
    duplicates = 0
    errors: list[IcmpError] = []
    for n, resp in enumerate(responses):
        if not isinstance(resp, dict):
            raise Refused("ping response is not an object", f"response {n}")
        seq = _int(resp, "seq")
        if seq >= sent:
            raise Refused("ping response seq beyond ping_sent", f"seq {seq}, sent {sent}")
        icmp_type = _opt_int(resp.get("icmp_type"))
        if icmp_type is not None and icmp_type != _ECHO_REPLY[env.version]:
            errors.append(IcmpError(seq=seq, from_address=_address(resp, "from"),
                                    icmp_type=icmp_type,
                                    icmp_code=_opt_int(resp.get("icmp_code")) or 0))
            continue
        rtt = _float(resp.get("rtt"), "ping rtt")
        if samples[seq] is not None:
            duplicates += 1
            continue
        samples[seq] = rtt
    if duplicates:
        notes["ping: duplicate replies (counted, not samples)"] += duplicates
    interval = (_opt_int(obj.get("wait")) or 0) + (_opt_int(obj.get("wait_us")) or 0) / 1e6
    size = _opt_int(obj.get("probe_size"))
    body = PingBody.from_samples(
        samples, ip_version=env.version, socket="raw" if sent else None,
        payload_bytes=max(0, (size or 0) - _HEADERS[env.version]) if size else 0,
        interval_s=round(interval, 6), timeout_s=float(_opt_int(obj.get("timeout")) or 0),
        dont_fragment=False, duplicates=duplicates, icmp_errors=errors)
    stats = obj.get("statistics")
    if isinstance(stats, dict):
        replies = _opt_int(stats.get("replies"))
        if replies is not None and replies != body.received:
            notes["ping: received differs from scamper's statistics.replies"] += 1
        for ours, key in ((body.stats.min_ms, "min"), (body.stats.max_ms, "max")):
            theirs = stats.get(key)
            if (ours is not None and isinstance(theirs, int | float)
                    and abs(ours - float(theirs)) > 0.002):
                notes[f"ping: {key} differs from scamper's statistics.{key}"] += 1
    status: Status
    error: str | None
    if body.received:
        status, error = "ok", None
    elif errors:
        status = "unreachable"
        first = errors[0]
        error = (f"ICMP type {first.icmp_type} code {first.icmp_code} from "
                 f"{first.from_address}")
    elif sent:
        status, error = "timeout", f"no reply to {sent} echo request(s)"
    else:
        status, error = "error", "no packet sent"
    return PingRecord(id=env.id, agent=env.agent, region=env.region, target=env.dst,
                      address=env.dst, started_at=env.started_at, duration_ms=0.0,
                      status=status, error=error, source=_SOURCE, body=body)


# ----------------------------------------------------------------------------- trace

_PROTOCOLS: dict[str, Literal["icmp", "udp", "tcp"]] = {
    "icmp-echo": "icmp", "icmp-echo-paris": "icmp", "udp": "udp", "udp-paris": "udp",
    "tcp": "tcp", "tcp-ack": "tcp",
}
_StopReason = Literal["reached", "unreachable", "gap", "max_ttl", "deadline"]
_STOPS: dict[str, tuple[_StopReason, Status]] = {
    "UNREACH": ("unreachable", "unreachable"),
    "ICMP": ("unreachable", "unreachable"),
    "LOOP": ("unreachable", "error"),
    "GAPLIMIT": ("gap", "timeout"),
    "HOPLIMIT": ("max_ttl", "timeout"),
    "HALTED": ("deadline", "error"),
    "ERROR": ("deadline", "error"),
    "COMPLETED": ("max_ttl", "timeout"),  # completed without an answer from dst
}


@dataclass
class _Answer:
    ttl: int
    attempt: int
    probe: TraceProbe


def _answers(obj: Mapping[str, Any], version: int) -> list[_Answer]:
    hops = obj.get("hops", [])
    if not isinstance(hops, list):
        raise Refused("trace hops is not a list", type(hops).__name__)
    out: list[_Answer] = []
    for n, h in enumerate(hops):
        if not isinstance(h, dict):
            raise Refused("trace hop is not an object", f"hop {n}")
        ttl = _int(h, "probe_ttl")
        if not 1 <= ttl <= 255:
            raise Refused("trace probe_ttl out of range", repr(ttl))
        attempt = _int(h, "probe_id", default=1)
        flags = h.get("tcp_flags")
        icmp_type = _opt_int(h.get("icmp_type"))
        out.append(_Answer(ttl=ttl, attempt=max(attempt, 1), probe=TraceProbe(
            address=_address(h, "addr"), rtt_ms=round(_float(h.get("rtt"), "trace rtt"), 3),
            icmp_type=icmp_type,
            icmp_code=_opt_int(h.get("icmp_code")) if icmp_type is not None else None,
            tcp_flags=None if flags is None else str(flags),
            reply_ttl=_opt_int(h.get("reply_ttl")))))
    return out


def _trace(obj: Mapping[str, Any], env: _Envelope, notes: Counter[str]) -> TraceRecord:
    method = str(obj.get("method", ""))
    protocol = _PROTOCOLS.get(method)
    if protocol is None:
        raise Refused(f"trace method {method[:30]!r} not known")
    answers = _answers(obj, env.version)
    attempts = max(_int(obj, "attempts", default=1), 1)
    firsthop = max(_int(obj, "firsthop", default=1), 1)
    last = max([_int(obj, "hop_count", default=0), *(a.ttl for a in answers)])
    by_ttl: dict[int, list[_Answer]] = {}
    for a in answers:
        by_ttl.setdefault(a.ttl, []).append(a)
    dest_ttl = next((a.ttl for a in sorted(answers, key=lambda a: a.ttl)
                     if a.probe.address == env.dst), None)
    if dest_ttl is not None and dest_ttl < last:
        notes["trace: hops past the destination's TTL (dropped)"] += 1
        last = dest_ttl
    hops: list[Hop] = []
    sent = 0
    duplicates = 0
    for ttl in range(1, last + 1):
        if ttl < firsthop:
            hops.append(Hop.from_probes(ttl, []))
            continue
        got = by_ttl.get(ttl, [])
        tried = max((a.attempt for a in got), default=attempts)
        slots: list[TraceProbe | None] = [None] * tried
        for a in got:
            if slots[a.attempt - 1] is not None:
                duplicates += 1
                continue
            slots[a.attempt - 1] = a.probe
        sent += tried
        hops.append(Hop.from_probes(ttl, [p or TraceProbe() for p in slots]))
    if duplicates:
        notes["trace: second answers to one probe (skipped)"] += duplicates
    probe_count = _opt_int(obj.get("probe_count"))
    if probe_count is not None and probe_count != sent and dest_ttl is None:
        notes["trace: probes rebuilt differ from scamper's probe_count"] += 1
    stop_text = str(obj.get("stop_reason", "NONE"))
    error: str | None = None
    stop: _StopReason
    status: Status
    if dest_ttl is not None:
        stop, status = "reached", "ok"
    elif stop_text in _STOPS:
        stop, status = _STOPS[stop_text]
        if stop_text == "COMPLETED":
            notes["trace: COMPLETED without an answer from dst (stored as max_ttl)"] += 1
        unreach = next((p for h in hops for p in h.probes
                        if p.icmp_type == _UNREACH[env.version]), None)
        if stop_text == "LOOP":
            error = "scamper stopped at a forwarding loop"
        elif stop == "unreachable" and unreach is not None:
            error = (f"ICMP unreachable (code {unreach.icmp_code}) from {unreach.address}")
        elif stop == "unreachable":
            error = f"scamper stopped: {stop_text}"
        elif stop == "gap":
            error = "destination not reached: silent TTLs in a row"
        elif stop == "max_ttl":
            error = f"destination not reached within {len(hops)} hops"
        else:
            error = f"scamper stopped: {stop_text}"
    else:
        raise Refused(f"trace stop_reason {stop_text[:20]!r} (not finished?)")
    flow: dict[str, int] = {}
    for key in ("icmp_sum", "sport", "dport"):
        value = _opt_int(obj.get(key))
        if value is not None:
            flow[key] = value
    dport = _opt_int(obj.get("dport"))
    body = TraceBody(
        protocol=protocol, ip_version=env.version,
        port=dport if protocol != "icmp" and dport is not None and 1 <= dport <= 65535 else None,
        flow=flow, method="raw", probes_per_hop=min(attempts, 64), cycles=1,
        max_ttl=max(min(_opt_int(obj.get("hoplimit")) or 255, 255), len(hops), 1),
        reached=dest_ttl is not None, dest_ttl=dest_ttl, stop_reason=stop, hops=hops)
    return TraceRecord(id=env.id, agent=env.agent, region=env.region, target=env.dst,
                       address=env.dst, started_at=env.started_at, duration_ms=0.0,
                       status=status, error=error, source=_SOURCE, body=body)


# ----------------------------------------------------------------------------- objects


def convert_object(obj: Any, ctx: ScamperContext) -> PingRecord | TraceRecord | None:
    """One decoded scamper object as a record, ``None`` for bookkeeping (cycles, lists);
    raises :class:`Refused` for what cannot be imported."""
    if not isinstance(obj, dict):
        raise Refused("not a JSON object", type(obj).__name__)
    kind = obj.get("type")
    if kind in _BOOKKEEPING:
        if kind == "cycle-start":
            host = obj.get("hostname")
            ctx.hostname = host.strip() if isinstance(host, str) and host.strip() else None
        return None
    if kind not in ("ping", "trace"):
        raise Refused(f"unsupported type {str(kind)[:30]!r}")
    local: Counter[str] = Counter()
    env = _envelope(obj, kind, ctx)
    try:
        record: PingRecord | TraceRecord = (
            _ping(obj, env, local) if kind == "ping" else _trace(obj, env, local))
        decode_record(encode_record(record))  # ranges and lengths, as a reader checks them
    except Refused:
        raise
    except (ValueError, TypeError, SchemaError) as exc:
        raise Refused("fails the record schema", str(exc)[:200]) from None
    ctx.notes.update(local)
    return record


def iter_records(values: Iterator[tuple[Any, str]], ctx: ScamperContext
                 ) -> Iterator[tuple[PingRecord | TraceRecord | Refused, str]]:
    """Records (or the refusal) of decoded objects given as ``(value, where)``."""
    for value, where in values:
        try:
            record = convert_object(value, ctx)
        except Refused as exc:
            yield exc, where
            continue
        if record is not None:
            yield record, where


# ----------------------------------------------------------------------------- files


def _feed(source: IO[bytes], sink: IO[bytes], failure: list[BaseException]) -> None:
    """Copy ``source`` into the tool's standard input (a thread: the tool's output is read
    at the same time, so neither side waits for the other with a full pipe)."""
    try:
        while block := source.read(BLOCK):
            sink.write(block)
    except BrokenPipeError:
        pass  # the tool stopped reading: its exit status says why
    except (OSError, EOFError, ValueError) as exc:  # a corrupt compressed stream, mostly
        failure.append(exc)
    finally:
        with suppress(BrokenPipeError):
            sink.close()


@contextmanager
def _warts_json(raw: IO[bytes], name: str) -> Iterator[TextIO]:
    """The JSON lines ``sc_warts2json`` prints for the warts bytes of ``raw``, as they come."""
    tool = shutil.which("sc_warts2json")
    if tool is None:
        raise ImportFormatError(
            "warts needs sc_warts2json, which is not installed",
            "install scamper (Debian/Ubuntu package 'scamper'), or convert with "
            "sc_warts2json elsewhere and import its JSON", where=name)
    proc = subprocess.Popen([tool], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    failure: list[BaseException] = []
    feeder = threading.Thread(target=_feed, args=(raw, proc.stdin, failure), daemon=True)
    err_lines: list[bytes] = []
    drain = threading.Thread(target=lambda: err_lines.extend(proc.stderr or []), daemon=True)
    feeder.start()
    drain.start()
    text = io.TextIOWrapper(proc.stdout, encoding="utf-8", errors="replace")
    try:
        yield text
    except BaseException:
        proc.kill()  # the reader gave up: stop the tool, then let the error go on
        raise
    finally:
        text.close()
        proc.wait()
        feeder.join()
        drain.join()
    if failure:
        raise ImportFormatError("corrupt or truncated compressed file", str(failure[0]),
                                where=name)
    said = b"".join(err_lines).decode("utf-8", "replace").strip().splitlines()
    # sc_warts2json (20211212) exits 0 even when it stops at a truncated or corrupt
    # object; it then prints the object's offset and header on stderr.
    if proc.returncode != 0 or said:
        raise ImportFormatError(
            "sc_warts2json could not read (all of) the warts file",
            (said[-1] if said else f"exit status {proc.returncode}")[:200]
            + " (truncated or corrupt warts?)", where=name)


@contextmanager
def _json_text(raw: IO[bytes], name: str) -> Iterator[TextIO]:
    """``raw`` (not warts) as UTF-8 text."""
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict")
    try:
        yield text
    except UnicodeDecodeError as exc:
        raise ImportFormatError("not UTF-8 text", str(exc)[:120], where=name) from None
    finally:
        text.detach()


def _head(raw: IO[bytes]) -> bytes:
    peek = getattr(raw, "peek", None)
    if peek is None:  # every stream open_binary gives can peek; keep a clear error otherwise
        raise TypeError("the input stream cannot peek")
    head: bytes = peek(2)[:2]
    return head


def import_scamper(sources: Iterable[str | Path], report: ImportReport, *,
                   agent: str | None = None, region: str | None = None
                   ) -> Iterator[PingRecord | TraceRecord]:
    """The records of scamper files (warts, or ``sc_warts2json`` JSON; either may be
    compressed; ``"-"`` is standard input), one at a time, counting into ``report``.

    Each file is read as a stream: warts is piped through ``sc_warts2json`` while
    its output is read, JSON is decoded value by value.
    """
    seen = RecentKeys()  # bounded: a long import must not grow without limit
    for source in sources:
        name = display_name(source)
        ctx = ScamperContext(agent=agent, region=region, notes=report.notes)
        tally = report.file(name)
        try:
            with open_binary(source) as raw:
                reader = _warts_json if _head(raw) == WARTS_MAGIC else _json_text
                with reader(raw, name) as text:
                    for item in iter_json(text):
                        where = f"{name}:{item.line}"
                        if item.problem is not None:
                            tally.read += 1
                            report.refuse("malformed JSON", where, item.problem, file=name)
                            continue
                        try:
                            record = convert_object(item.value, ctx)
                        except Refused as exc:
                            tally.read += 1
                            report.refuse(exc.reason, where, exc.detail, file=name)
                            continue
                        if record is None:
                            continue
                        tally.read += 1
                        if seen.again(_hour(record.started_at), record.id):
                            tally.duplicates += 1
                            continue
                        report.keep(name, record.kind)
                        yield record
        except ImportFormatError as exc:
            report.fail(name, exc)


def _hour(when: datetime) -> int:
    """The bucket of a record for :class:`RecentKeys`: the hour it started in."""
    return int(when.timestamp()) // 3600
