"""The record types: the envelope, a body per kind, and the values they are built from.

Every struct checks itself when built (``__post_init__``) and when decoded, so a
record that exists obeys the rules of :mod:`netvantage.results`.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeAlias

import msgspec

__all__ = [
    "KINDS",
    "PHASES_IMAP",
    "PHASES_SMTP",
    "SCHEMA_VERSION",
    "STATUSES",
    "Annotation",
    "AnyRecord",
    "CertInfo",
    "Hop",
    "IcmpError",
    "ImapRecord",
    "MailBody",
    "Phase",
    "PingBody",
    "PingRecord",
    "Record",
    "Responder",
    "RttStats",
    "SmtpRecord",
    "Status",
    "TcpAttempt",
    "TcpBody",
    "TcpRecord",
    "TlsInfo",
    "TraceBody",
    "TraceProbe",
    "TraceRecord",
    "ms",
    "new_id",
    "rtt_stats",
    "utc_now",
]

#: Version of the record layout.  Bump it on any change a reader must know about.
SCHEMA_VERSION = 1

Status: TypeAlias = Literal[
    "ok", "timeout", "refused", "unreachable", "tls_error", "protocol_error", "error"
]
STATUSES: tuple[str, ...] = (
    "ok", "timeout", "refused", "unreachable", "tls_error", "protocol_error", "error",
)

NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
UtcDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]

# Durations are stored to the microsecond: finer than any network effect we
# measure, coarser than the float noise of arithmetic on nanoseconds.
_MS_DECIMALS = 3
_TOLERANCE_MS = 0.0015


def ms(ns: int) -> float:
    """Nanoseconds (monotonic or kernel clock difference) to milliseconds, 1 µs resolution."""
    return round(ns / 1e6, _MS_DECIMALS)


def utc_now() -> datetime:
    """The wall-clock *when* of a measurement, aware and in UTC, to the microsecond."""
    return datetime.now(UTC)


def new_id() -> str:
    """A UUIDv7 string (RFC 9562): 48-bit Unix milliseconds, then 74 random bits.

    Time-ordered, so records sort by creation and indexes stay compact; random
    enough that agents never collide.
    """
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RttStats(msgspec.Struct, frozen=True):
    """Summary of a sequence of RTT samples; every field is ``None`` without samples."""

    min_ms: float | None
    median_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    jitter_ms: float | None


_NO_STATS = RttStats(None, None, None, None, None)


def rtt_stats(samples: Sequence[float | None]) -> RttStats:
    """Statistics over the received samples, in sending order.

    Jitter is the mean absolute difference between consecutive received RTTs,
    the quantity RFC 3550 (section 6.4.1) smooths into its interarrival jitter;
    lost probes are skipped, not counted as zero.  It needs two samples.

    Written out by hand (one sort, exact sums with ``math.fsum``, as
    ``statistics.fmean`` does) because every record read is checked against it:
    the collector's ingest rate depends on this function.
    """
    got = [s for s in samples if s is not None]
    n = len(got)
    if not n:
        return _NO_STATS
    ordered = sorted(got)
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    jitter = None
    if n >= 2:
        steps = [abs(b - a) for a, b in itertools.pairwise(got)]
        jitter = round(math.fsum(steps) / (n - 1), _MS_DECIMALS)
    return RttStats(
        min_ms=ordered[0],
        median_ms=round(median, _MS_DECIMALS),
        mean_ms=round(math.fsum(got) / n, _MS_DECIMALS),
        max_ms=ordered[-1],
        jitter_ms=jitter,
    )


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= _TOLERANCE_MS


def _check_stats(where: str, given: RttStats, samples: Sequence[float | None]) -> None:
    want = rtt_stats(samples)
    for field in RttStats.__struct_fields__:
        g, w = getattr(given, field), getattr(want, field)
        if not _close(g, w):
            raise ValueError(f"{where}.{field} is {g!r} but the samples give {w!r}")


# --------------------------------------------------------------------------- ping


class IcmpError(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An ICMP error received instead of an echo reply (e.g. type 3 destination unreachable)."""

    seq: NonNegInt
    from_address: str
    icmp_type: NonNegInt
    icmp_code: NonNegInt


class PingBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """ICMP echo: every sample kept, in sending order, ``None`` where no reply came."""

    ip_version: Literal[4, 6]
    #: ``raw``: SOCK_RAW (root or CAP_NET_RAW); ``dgram``: unprivileged ICMP
    #: socket; ``None`` when no packet was sent (e.g. the name did not resolve).
    socket: Literal["raw", "dgram"] | None
    payload_bytes: NonNegInt
    interval_s: NonNegFloat
    timeout_s: NonNegFloat
    dont_fragment: bool
    sent: NonNegInt
    received: NonNegInt
    duplicates: NonNegInt = 0
    rtts_ms: list[NonNegFloat | None]
    stats: RttStats
    loss_ratio: Ratio | None
    icmp_errors: list[IcmpError] = []
    #: Where receive times came from: ``kernel`` (SO_TIMESTAMPNS) for every
    #: reply, ``user`` (monotonic clock after recvmsg) when the kernel stamp
    #: was missing or implausible, ``mixed`` for some of each; ``None`` without replies.
    rx_clock: Literal["kernel", "user", "mixed"] | None = None

    def __post_init__(self) -> None:
        if len(self.rtts_ms) != self.sent:
            raise ValueError(f"rtts_ms has {len(self.rtts_ms)} entries for {self.sent} sent")
        got = sum(r is not None for r in self.rtts_ms)
        if got != self.received:
            raise ValueError(f"received is {self.received} but rtts_ms holds {got} replies")
        want_loss = None if self.sent == 0 else round(1 - self.received / self.sent, 6)
        if not (
            (want_loss is None and self.loss_ratio is None)
            or (want_loss is not None and self.loss_ratio is not None
                and abs(want_loss - self.loss_ratio) < 1e-6)
        ):
            raise ValueError(f"loss_ratio is {self.loss_ratio} but sent/received give {want_loss}")
        _check_stats("stats", self.stats, self.rtts_ms)

    @classmethod
    def from_samples(cls, rtts_ms: Sequence[float | None], **fields: Any) -> PingBody:
        """Build a body whose counts and statistics are derived from ``rtts_ms``."""
        samples = [None if r is None else round(r, _MS_DECIMALS) for r in rtts_ms]
        sent = len(samples)
        received = sum(r is not None for r in samples)
        return cls(
            sent=sent,
            received=received,
            rtts_ms=samples,
            stats=rtt_stats(samples),
            loss_ratio=None if sent == 0 else round(1 - received / sent, 6),
            **fields,
        )


# --------------------------------------------------------------------------- tcp


class TcpAttempt(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One TCP connect.

    ``connect_ms`` is what an application waits: from just before ``connect()``
    to the socket becoming writable.  ``handshake_rtt_ms`` is the kernel's own
    SYN → SYN/ACK round trip (``TCP_INFO.tcpi_rtt``), free of any user-space
    scheduling; ``None`` where the kernel does not report it.
    """

    status: Status
    connect_ms: NonNegFloat | None = None
    handshake_rtt_ms: NonNegFloat | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.status == "ok" and self.connect_ms is None:
            raise ValueError("a successful attempt needs connect_ms")
        if self.status != "ok" and self.connect_ms is not None:
            raise ValueError(f"a {self.status} attempt has no connect_ms")


class TcpBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """TCP connect time to one port, attempt by attempt."""

    port: Port
    ip_version: Literal[4, 6]
    timeout_s: NonNegFloat
    attempts: list[TcpAttempt]
    succeeded: NonNegInt
    stats: RttStats

    def __post_init__(self) -> None:
        ok = sum(a.status == "ok" for a in self.attempts)
        if ok != self.succeeded:
            raise ValueError(f"succeeded is {self.succeeded} but {ok} attempts are ok")
        _check_stats("stats", self.stats, [a.connect_ms for a in self.attempts])

    @classmethod
    def from_attempts(cls, attempts: Sequence[TcpAttempt], **fields: Any) -> TcpBody:
        return cls(
            attempts=list(attempts),
            succeeded=sum(a.status == "ok" for a in attempts),
            stats=rtt_stats([a.connect_ms for a in attempts]),
            **fields,
        )


# --------------------------------------------------------------------------- trace


class Annotation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What databases say about an address; added by ``netvantage annotate``, never by probing.

    ``source`` names the databases (file names and build dates) so that a trace
    annotated with an old database can be recognised and annotated again.
    """

    asn: NonNegInt | None = None
    as_org: str | None = None
    country: str | None = None
    city: str | None = None
    lat: float | None = None
    lon: float | None = None
    rdns: str | None = None
    source: str | None = None


class TraceProbe(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One probe at one TTL: who answered, how fast, with which ICMP message.

    ``address`` and ``rtt_ms`` are ``None`` for a probe nobody answered.  For
    the destination's own answer ``icmp_type`` is the echo reply (ICMP mode),
    port unreachable (UDP) or ``None`` with ``tcp_flags`` (TCP: SYN/ACK or RST).
    """

    cycle: NonNegInt = 0
    address: str | None = None
    rtt_ms: NonNegFloat | None = None
    icmp_type: NonNegInt | None = None
    icmp_code: NonNegInt | None = None
    tcp_flags: str | None = None
    reply_ttl: NonNegInt | None = None


class Responder(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Statistics of one address answering at one TTL (mtr keys them by TTL only: we don't,
    so a path that changes mid-run shows two responders, not false loss)."""

    address: str
    replies: NonNegInt
    stats: RttStats
    annotation: Annotation | None = None


class Hop(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One TTL: every probe (answered or not) and the responders derived from them."""

    ttl: Annotated[int, msgspec.Meta(ge=1, le=255)]
    probes: list[TraceProbe]
    responders: list[Responder]
    loss_ratio: Ratio | None

    @classmethod
    def from_probes(cls, ttl: int, probes: Sequence[TraceProbe],
                    annotations: dict[str, Annotation] | None = None) -> Hop:
        by_address: dict[str, list[float | None]] = {}
        for p in probes:
            if p.address is not None:
                by_address.setdefault(p.address, []).append(p.rtt_ms)
        responders = [
            Responder(address=a, replies=len(rtts), stats=rtt_stats(rtts),
                      annotation=(annotations or {}).get(a))
            for a, rtts in by_address.items()
        ]
        answered = sum(p.address is not None for p in probes)
        loss = None if not probes else round(1 - answered / len(probes), 6)
        return cls(ttl=ttl, probes=list(probes), responders=responders, loss_ratio=loss)

    def __post_init__(self) -> None:
        answered = sum(p.address is not None for p in self.probes)
        if sum(r.replies for r in self.responders) != answered:
            raise ValueError(f"hop {self.ttl}: responders do not add up to the answered probes")


class TraceBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A Paris traceroute: one flow per trace, every TTL and probe kept.

    ``flow`` records the fields held constant (ports, ICMP identifier and
    checksum) so that per-flow load balancers keep the path.  ``stop_reason``:
    ``reached`` (the destination answered), ``unreachable`` (an ICMP
    unreachable from a router), ``gap`` (too many silent TTLs in a row),
    ``max_ttl`` or ``deadline``.
    """

    protocol: Literal["icmp", "udp", "tcp"]
    ip_version: Literal[4, 6]
    port: Port | None = None
    flow: dict[str, int] = {}
    method: Literal["raw", "recverr"]
    probes_per_hop: Annotated[int, msgspec.Meta(ge=1, le=64)]
    cycles: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1
    max_ttl: Annotated[int, msgspec.Meta(ge=1, le=255)]
    reached: bool
    dest_ttl: Annotated[int, msgspec.Meta(ge=1, le=255)] | None = None
    stop_reason: Literal["reached", "unreachable", "gap", "max_ttl", "deadline"]
    hops: list[Hop]

    def __post_init__(self) -> None:
        ttls = [h.ttl for h in self.hops]
        if ttls != list(range(1, len(ttls) + 1)):
            raise ValueError("hops must be TTL 1, 2, 3, … without gaps (a silent hop is a row)")
        if self.reached != (self.dest_ttl is not None):
            raise ValueError("reached and dest_ttl disagree")


# --------------------------------------------------------------------------- smtp / imap

PHASES_SMTP = ("dns", "connect", "greeting", "ehlo", "starttls", "tls_handshake", "ehlo_tls",
               "auth", "quit")
PHASES_IMAP = ("dns", "connect", "greeting", "capability", "starttls", "tls_handshake",
               "capability_tls", "login", "logout")


class Phase(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One timed step of a dialogue: from the command sent (or the step begun) to its answer.

    ``duration_ms`` is ``None`` when the phase never ended (it failed or timed out
    before an answer: then ``ok`` is false and ``error`` says why).  ``reply`` is
    the first line of the server's answer, cut to 200 characters.
    """

    name: Name
    ok: bool
    duration_ms: NonNegFloat | None
    reply: str | None = None
    code: str | None = None
    error: str | None = None


class CertInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The server's leaf certificate as presented."""

    subject: str
    issuer: str
    san_dns: list[str] = []
    san_ip: list[str] = []
    not_before: UtcDatetime
    not_after: UtcDatetime
    serial: str
    sha256: str
    key: str


class TlsInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the TLS handshake agreed and whether the certificate verified.

    ``verified`` is checked against ``trust`` (``system`` or the CA file given)
    and the expected ``server_name`` (a DNS name or an IP address).  When
    verification fails the handshake is repeated without verification only to
    read the certificate (``cert_from_second_handshake``), so that the record
    still says *which* certificate was wrong.
    """

    version: str | None = None
    cipher: str | None = None
    server_name: str | None = None
    trust: str = "system"
    verified: bool | None = None
    verify_error: str | None = None
    cert: CertInfo | None = None
    cert_from_second_handshake: bool = False


class MailBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An SMTP or IMAP handshake, phase by phase.  Never sends mail; logs in only when asked."""

    port: Port
    ip_version: Literal[4, 6] | None
    mode: Literal["starttls", "tls", "plain"]
    timeout_s: NonNegFloat
    phases: list[Phase]
    failed_phase: str | None = None
    greeting: str | None = None
    capabilities: list[str] = []
    capabilities_tls: list[str] = []
    tls: TlsInfo | None = None
    auth: Literal["ok", "failed"] | None = None
    bytes_received: NonNegInt = 0

    def __post_init__(self) -> None:
        names = [p.name for p in self.phases]
        if len(names) != len(set(names)):
            raise ValueError(f"a phase is listed twice: {names}")
        failed = [p.name for p in self.phases if not p.ok]
        if self.failed_phase is None and failed:
            raise ValueError(f"phases {failed} failed but failed_phase is null")
        if self.failed_phase is not None and failed != [self.failed_phase]:
            raise ValueError(f"failed_phase is {self.failed_phase!r} but failed phases are "
                             f"{failed}")

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)


# --------------------------------------------------------------------------- envelope


class Record(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="kind",
):
    """The envelope shared by every kind; subclasses add a typed ``body``."""

    id: Annotated[str, msgspec.Meta(min_length=8, max_length=64, pattern=r"^[0-9A-Za-z._:-]+$")]
    schema: int = SCHEMA_VERSION
    agent: Name
    region: Name | None = None
    target: Name
    address: str | None = None
    started_at: UtcDatetime
    duration_ms: NonNegFloat
    status: Status
    error: str | None = None
    #: Who produced the record: ``netvantage`` for our agents, ``atlas`` for imports.
    source: Name = "netvantage"

    def __post_init__(self) -> None:
        if self.schema != SCHEMA_VERSION:
            raise ValueError(f"schema {self.schema} is not {SCHEMA_VERSION}")
        offset = self.started_at.utcoffset()
        if offset is None or offset.total_seconds() != 0:
            raise ValueError("started_at must be in UTC")
        if self.status == "ok" and self.error is not None:
            raise ValueError("an ok record carries no error text")

    @property
    def kind(self) -> str:
        tag = type(self).__struct_config__.tag
        return str(tag)


class PingRecord(Record, tag="ping", frozen=True):
    body: PingBody


class TcpRecord(Record, tag="tcp", frozen=True):
    body: TcpBody


class TraceRecord(Record, tag="trace", frozen=True):
    body: TraceBody


class SmtpRecord(Record, tag="smtp", frozen=True):
    body: MailBody


class ImapRecord(Record, tag="imap", frozen=True):
    body: MailBody


AnyRecord: TypeAlias = PingRecord | TcpRecord | TraceRecord | SmtpRecord | ImapRecord
_RECORD_TYPES: tuple[type[Record], ...] = (PingRecord, TcpRecord, TraceRecord, SmtpRecord,
                                           ImapRecord)
KINDS: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in _RECORD_TYPES)
