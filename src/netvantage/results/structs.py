"""The record types: the envelope, a body per kind, and the values they are built from.

Every struct checks itself when built (``__post_init__``) and when decoded, so a
record that exists obeys the rules of :mod:`netvantage.results`.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeAlias

import msgspec

__all__ = [
    "EARLIEST_START",
    "KINDS",
    "MAX_AHEAD_S",
    "MAX_FIGURE",
    "MAX_RTT_MS",
    "PHASES_IMAP",
    "PHASES_SMTP",
    "READY_CHECKS",
    "SCHEMA_VERSION",
    "SCHEMA_VERSIONS",
    "STATUSES",
    "Annotation",
    "AnyRecord",
    "CertInfo",
    "Diamond",
    "Hop",
    "IcmpError",
    "ImapRecord",
    "MailBody",
    "MailReadyBody",
    "MailReadyRecord",
    "MdaLink",
    "Multipath",
    "Phase",
    "PingBody",
    "PingRecord",
    "PmtuBody",
    "PmtuProbe",
    "PmtuRecord",
    "ReadyCheck",
    "ReadyStatus",
    "Record",
    "Responder",
    "RttStats",
    "RttSummary",
    "SmtpRecord",
    "Status",
    "TcpAttempt",
    "TcpBody",
    "TcpRecord",
    "TlsInfo",
    "TlsStall",
    "TraceBody",
    "TraceProbe",
    "TraceRecord",
    "ZoneAnswer",
    "ms",
    "new_id",
    "rtt_stats",
    "utc_now",
]

#: Version of the record layout.  Bump it on any change a reader must know about.
#: 2: ping and tcp bodies may carry a :class:`RttSummary` instead of samples, with
#: counts the source may not know (``null``).
SCHEMA_VERSION = 2
#: The versions this netvantage reads (a schema-1 record is a valid schema-2
#: record without summaries; it keeps its number when read and written again).
SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)

Status: TypeAlias = Literal[
    "ok", "timeout", "refused", "unreachable", "tls_error", "protocol_error", "error"
]
STATUSES: tuple[str, ...] = (
    "ok", "timeout", "refused", "unreachable", "tls_error", "protocol_error", "error",
)

# --------------------------------------------------------------------------- plausible values
# Bounds on what a record may claim, so that a hostile or broken source cannot
# make a checker overflow (1e308 RTTs) or the analysis crash later (a year
# pandas cannot represent).  docs/results.md lists them.

#: The longest RTT (and any time figure derived from RTTs) a record may carry:
#: ten minutes, far beyond any timeout a probe uses.  An RTT is also > 0.
MAX_RTT_MS = 600_000.0
#: The largest value of any other non-negative number (durations, timeouts,
#: intervals): finite and below 10^12, so sums and means stay finite.
MAX_FIGURE = 1e12
#: No measurement starts before this (a clock that was never set reads 1970).
EARLIEST_START = datetime(2000, 1, 1, tzinfo=UTC)
#: How far ``started_at`` may be ahead of the clock of whoever reads the
#: record (the collector at ingest, the analysis when loading): 24 hours.
MAX_AHEAD_S = 24 * 3600.0
_EARLIEST_TS = EARLIEST_START.timestamp()

NonNegFloat = Annotated[float, msgspec.Meta(ge=0, le=MAX_FIGURE)]
#: A measured round trip: > 0 ms (a lost probe is null, never 0), at most MAX_RTT_MS.
RttMs = Annotated[float, msgspec.Meta(gt=0, le=MAX_RTT_MS)]
#: A figure in ms derived from RTTs (a statistic, a kernel's estimate): 0 to MAX_RTT_MS.
TimeMs = Annotated[float, msgspec.Meta(ge=0, le=MAX_RTT_MS)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Mtu = Annotated[int, msgspec.Meta(ge=68, le=65_535)]
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


class RttStats(msgspec.Struct, frozen=True, gc=False):
    """Summary of a sequence of RTT samples; every field is ``None`` without samples."""

    min_ms: TimeMs | None
    median_ms: TimeMs | None
    mean_ms: TimeMs | None
    max_ms: TimeMs | None
    jitter_ms: TimeMs | None


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


#: Within this of the unrounded statistic, a given figure is surely within
#: _TOLERANCE_MS of the rounded one (rounding to _MS_DECIMALS moves it by at most 0.0005).
_SURELY_CLOSE_MS = 0.0009


def _surely_matches(given: RttStats, samples: Sequence[float | None]) -> bool:
    """Whether ``given`` surely passes :func:`_check_stats`, found without rounding.

    ``round(x, 3)`` costs a correctly rounded decimal conversion; every record
    the collector ingests is checked, so the usual record (figures derived by
    :func:`rtt_stats`) is recognised from the unrounded figures.  ``False``
    means "check exactly", never "refuse": the exact check decides.
    """
    got = [s for s in samples if s is not None]
    return bool(got) and _surely_fits(given, got, sorted(got), math.fsum(got))


def _surely_fits(given: RttStats, got: list[float], ordered: list[float], total: float) -> bool:
    """:func:`_surely_matches` of the received samples ``got`` (at least one), given
    them sorted and their ``math.fsum`` (the callers need them too)."""
    n = len(got)
    if given.min_ms != ordered[0] or given.max_ms != ordered[-1]:
        return False
    mid = n // 2
    # Written as ``not <=`` so that a NaN figure is not surely close.
    g = given.median_ms
    if g is None or not abs(g - (ordered[mid] if n % 2 else
                                 (ordered[mid - 1] + ordered[mid]) / 2)) <= _SURELY_CLOSE_MS:
        return False
    g = given.mean_ms
    if g is None or not abs(g - total / n) <= _SURELY_CLOSE_MS:
        return False
    g = given.jitter_ms
    if n < 2:
        return g is None
    steps = map(abs, map(operator.sub, got[1:], got))  # (map stops at the shorter)
    return g is not None and abs(g - math.fsum(steps) / (n - 1)) <= _SURELY_CLOSE_MS


def _surely_valid_samples(got: list[float], stats: RttStats) -> bool:
    """Whether received RTTs ``got`` are each > 0 and at most MAX_RTT_MS and ``stats``
    surely fits them: the usual body's checks in a few C calls.  ``False`` (also for
    no samples, a non-number, or a NaN or infinity anywhere) means "check exactly"."""
    if not got:
        return False
    try:
        total = math.fsum(got)
        ordered = sorted(got)
    except (TypeError, ValueError):
        return False
    # A finite sum means no NaN or infinity among them, so ``ordered`` is in order.
    return (math.isfinite(total) and ordered[0] > 0 and ordered[-1] <= MAX_RTT_MS
            and _surely_fits(stats, got, ordered, total))


def _check_stats(where: str, given: RttStats, samples: Sequence[float | None]) -> None:
    if _surely_matches(given, samples):
        return
    want = rtt_stats(samples)
    for field in RttStats.__struct_fields__:
        g, w = getattr(given, field), getattr(want, field)
        if not _close(g, w):
            raise ValueError(f"{where}.{field} is {g!r} but the samples give {w!r}")


# --------------------------------------------------------------------------- summaries

_PERCENTILE_KEY = re.compile(r"p(\d{1,2}(?:\.\d{1,6})?)")
_SUMMARY_FIGURES = ("min_ms", "median_ms", "mean_ms", "max_ms")


def _percent(key: str) -> float:
    """The percent of a percentile key: ``"p90"`` → 90.0, ``"p99.9"`` → 99.9."""
    match = _PERCENTILE_KEY.fullmatch(key)
    value = float(match.group(1)) if match else math.nan
    if not 0 < value < 100:
        raise ValueError(f"percentile key {key!r} is not p<percent> with 0 < percent < 100 "
                         "(e.g. 'p90', 'p99.9')")
    return value


def _figure(where: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_RTT_MS):
        raise ValueError(f"{where} is {value!r}: a time is a number from 0 to {MAX_RTT_MS:g} "
                         "ms or null")


def _check_rtts(where: str, values: Sequence[float | None]) -> None:
    """Every measured RTT is > 0 and at most MAX_RTT_MS (for records built in Python:
    msgspec checks the same bounds when decoding)."""
    for i, v in enumerate(values):
        if v is not None and not (0 < v <= MAX_RTT_MS):
            raise ValueError(f"{where}[{i}] is {v!r}: an RTT is > 0 and at most "
                             f"{MAX_RTT_MS:g} ms (a lost probe is null)")


class RttSummary(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """Statistics of RTTs that were not kept one by one (a source that gives only a summary).

    ``samples`` is how many RTTs stand behind the figures, ``None`` when the
    source does not say (never guessed: a matrix cell "mean 42 ms" may stand
    for one ping or for a month of them).  ``mdev_ms`` is the mean deviation
    Linux ``ping`` prints, ``stdev_ms`` the standard deviation; they are
    different quantities and neither is jitter.  ``percentiles_ms`` maps keys
    like ``"p90"`` or ``"p99.9"`` to their value.  A figure the source does not
    give is ``None`` (an empty mapping for percentiles), never 0.
    """

    samples: NonNegInt | None = None
    min_ms: TimeMs | None = None
    median_ms: TimeMs | None = None
    mean_ms: TimeMs | None = None
    max_ms: TimeMs | None = None
    stdev_ms: TimeMs | None = None
    mdev_ms: TimeMs | None = None
    percentiles_ms: dict[str, TimeMs] = {}

    def __post_init__(self) -> None:
        # msgspec checks the constraints when decoding, not when a struct is built
        # in Python: check them here, NaN included, so both paths refuse alike.
        if self.samples is not None and (isinstance(self.samples, bool) or self.samples < 0):
            raise ValueError(f"summary.samples is {self.samples!r}: a count >= 0 or null")
        for name in (*_SUMMARY_FIGURES, "stdev_ms", "mdev_ms"):
            _figure(f"summary.{name}", getattr(self, name))
        ordered = sorted((_percent(k), k) for k in self.percentiles_ms)
        for _, key in ordered:
            _figure(f"summary.percentiles_ms[{key!r}]", self.percentiles_ms[key])
        percents = [p for p, _ in ordered]
        if len(set(percents)) != len(percents):
            raise ValueError(f"summary.percentiles_ms names a percentile twice: "
                             f"{sorted(self.percentiles_ms)}")
        given = self.figures() or self.stdev_ms is not None or self.mdev_ms is not None
        if self.samples == 0 and given:
            raise ValueError("summary.samples is 0 but the summary gives figures")
        lo, hi = self.min_ms, self.max_ms
        # Every central figure and percentile lies within [min, max]; percentiles
        # rise with their percent; p50 is the median.
        chain: list[tuple[str, float]] = []
        if lo is not None:
            chain.append(("min_ms", lo))
        chain += [(f"percentiles_ms[{k!r}]", self.percentiles_ms[k]) for _, k in ordered]
        if hi is not None:
            chain.append(("max_ms", hi))
        for (a, va), (b, vb) in itertools.pairwise(chain):
            if va > vb + _TOLERANCE_MS:
                raise ValueError(f"summary.{a} ({va}) is above summary.{b} ({vb})")
        for name in ("median_ms", "mean_ms"):
            v = getattr(self, name)
            if v is None:
                continue
            if lo is not None and v < lo - _TOLERANCE_MS:
                raise ValueError(f"summary.{name} ({v}) is below summary.min_ms ({lo})")
            if hi is not None and v > hi + _TOLERANCE_MS:
                raise ValueError(f"summary.{name} ({v}) is above summary.max_ms ({hi})")
        p50 = next((self.percentiles_ms[k] for p, k in ordered if p == 50), None)
        if p50 is not None and self.median_ms is not None and not _close(p50, self.median_ms):
            raise ValueError(f"summary.median_ms ({self.median_ms}) and p50 ({p50}) differ")

    def figures(self) -> bool:
        """Whether the summary gives any RTT figure (min, median, mean, max or a percentile)."""
        return bool(self.percentiles_ms) or any(
            getattr(self, f) is not None for f in _SUMMARY_FIGURES)

    @property
    def median_or_p50_ms(self) -> float | None:
        """The median, or the p50 percentile when only that is given."""
        if self.median_ms is not None:
            return self.median_ms
        return next((v for k, v in self.percentiles_ms.items() if _percent(k) == 50), None)

    def stats(self) -> RttStats:
        """The body's :class:`RttStats` for this summary: the figures it gives, no jitter.

        (``mdev_ms`` and ``stdev_ms`` measure spread around the mean; jitter is the
        difference between *consecutive* RTTs, which a summary cannot give.)
        """
        return RttStats(min_ms=self.min_ms, median_ms=self.median_or_p50_ms,
                        mean_ms=self.mean_ms, max_ms=self.max_ms, jitter_ms=None)


def _check_counts(where: str, total: int | None, ok: int | None, total_name: str,
                  ok_name: str) -> None:
    for name, value in ((total_name, total), (ok_name, ok)):
        if value is not None and (isinstance(value, bool) or value < 0):
            raise ValueError(f"{where}.{name} is {value!r}: a count >= 0 or null")
    if total is not None and ok is not None and ok > total:
        raise ValueError(f"{where}.{ok_name} ({ok}) is more than {total_name} ({total})")


def _check_summary_body(where: str, summary: RttSummary, stats: RttStats, replies: int | None,
                        replies_name: str) -> None:
    if (summary.samples is not None and replies is not None
            and summary.samples > replies):
        raise ValueError(f"{where}.summary.samples ({summary.samples}) is more than "
                         f"{replies_name} ({replies})")
    if replies == 0 and summary.figures():
        raise ValueError(f"{where}: {replies_name} is 0 but the summary gives RTT figures")
    want = summary.stats()
    for field in RttStats.__struct_fields__:
        g, w = getattr(stats, field), getattr(want, field)
        if not _close(g, w):
            raise ValueError(f"{where}.stats.{field} is {g!r} but the summary gives {w!r}")


# --------------------------------------------------------------------------- ping


class IcmpError(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """An ICMP error received instead of an echo reply (e.g. type 3 destination unreachable)."""

    seq: NonNegInt
    from_address: str
    icmp_type: NonNegInt
    icmp_code: NonNegInt


class PingBody(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """ICMP echo: every sample kept, in sending order, ``None`` where no reply came.

    Or, for a source that gives only statistics, a ``summary`` (schema 2): then
    ``rtts_ms`` is empty, ``sent`` and ``received`` are what the source says
    (``None`` where it does not say), ``loss_ratio`` is derived from them (``None``
    when either is unknown: unknown loss is not 0 % loss) and ``stats`` holds the
    summary's min, median, mean and max (no jitter).
    """

    ip_version: Literal[4, 6]
    #: ``raw``: SOCK_RAW (root or CAP_NET_RAW); ``dgram``: unprivileged ICMP
    #: socket; ``None`` when no packet was sent (e.g. the name did not resolve)
    #: or the source does not say.
    socket: Literal["raw", "dgram"] | None
    payload_bytes: NonNegInt
    interval_s: NonNegFloat
    timeout_s: NonNegFloat
    dont_fragment: bool
    #: Echo requests sent; ``None`` only in a summary body whose source does not say.
    sent: NonNegInt | None
    #: Replies received; ``None`` only in a summary body whose source does not say.
    received: NonNegInt | None
    duplicates: NonNegInt = 0
    rtts_ms: list[RttMs | None]
    stats: RttStats
    loss_ratio: Ratio | None
    icmp_errors: list[IcmpError] = []
    #: Where receive times came from: ``kernel`` (SO_TIMESTAMPNS) for every
    #: reply, ``user`` (monotonic clock after recvmsg) when the kernel stamp
    #: was missing or implausible, ``mixed`` for some of each; ``None`` without replies.
    rx_clock: Literal["kernel", "user", "mixed"] | None = None
    #: Statistics without samples (schema 2); ``None`` when ``rtts_ms`` holds the samples.
    summary: RttSummary | None = None

    def __post_init__(self) -> None:
        # The usual body (samples, counts and figures derived from them) is
        # recognised first; anything else gets the checks one by one.
        sent, received, rtts = self.sent, self.received, self.rtts_ms
        if (self.summary is None and type(sent) is int and type(received) is int
                and len(rtts) == sent and sent):
            got = [r for r in rtts if r is not None]
            loss = self.loss_ratio
            if (len(got) == received and type(loss) is float
                    and abs(1 - received / sent - loss) < 4e-7
                    and _surely_valid_samples(got, self.stats)):
                return
        self._check()

    def _check(self) -> None:
        _check_counts("body", self.sent, self.received, "sent", "received")
        if self.summary is not None:
            if self.rtts_ms:
                raise ValueError("a summary body keeps no samples: rtts_ms must be empty")
        elif self.sent is None or self.received is None:
            raise ValueError("sent and received are null only in a summary body")
        else:
            _check_rtts("rtts_ms", self.rtts_ms)
            if len(self.rtts_ms) != self.sent:
                raise ValueError(f"rtts_ms has {len(self.rtts_ms)} entries for {self.sent} sent")
            got = len(self.rtts_ms) - self.rtts_ms.count(None)
            if got != self.received:
                raise ValueError(f"received is {self.received} but rtts_ms holds {got} replies")
        if not _loss_matches(self.sent, self.received, self.loss_ratio):
            raise ValueError(f"loss_ratio is {self.loss_ratio} but sent/received give "
                             f"{_loss(self.sent, self.received)}")
        if self.summary is not None:
            _check_summary_body("body", self.summary, self.stats, self.received, "received")
        else:
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
            loss_ratio=_loss(sent, received),
            **fields,
        )

    @classmethod
    def from_summary(cls, summary: RttSummary, *, sent: int | None, received: int | None,
                     **fields: Any) -> PingBody:
        """Build a summary body: no samples, ``stats`` and ``loss_ratio`` derived.

        ``sent`` / ``received`` are the source's counts, ``None`` where it gives
        none.  The other fields (``ip_version``, ``socket``, ``payload_bytes``,
        ``interval_s``, ``timeout_s``, ``dont_fragment``, …) are passed on; say
        ``socket=None`` and 0 for a size or interval the source does not give.
        """
        return cls(
            sent=sent,
            received=received,
            rtts_ms=[],
            stats=summary.stats(),
            loss_ratio=_loss(sent, received),
            summary=summary,
            **fields,
        )


def _loss(sent: int | None, received: int | None) -> float | None:
    """1 - received / sent to 6 decimals; ``None`` when a count is unknown or nothing was sent."""
    if sent is None or received is None or sent == 0:
        return None
    return round(1 - received / sent, 6)


def _loss_matches(sent: int | None, received: int | None, given: float | None) -> bool:
    """Whether ``given`` is :func:`_loss` of the counts (within 1e-6), mostly without rounding.

    Within 4e-7 of the unrounded ratio, it is within 1e-6 of the ratio rounded
    to 6 decimals (rounding moves it by at most 5e-7); otherwise round and compare.
    """
    if sent is None or received is None or sent == 0:
        return given is None
    if given is None:
        return False
    ratio = 1 - received / sent
    return abs(ratio - given) < 4e-7 or abs(round(ratio, 6) - given) < 1e-6


# --------------------------------------------------------------------------- tcp


class TcpAttempt(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """One TCP connect.

    ``connect_ms`` is what an application waits: from just before ``connect()``
    to the socket becoming writable.  ``handshake_rtt_ms`` is the kernel's own
    SYN → SYN/ACK round trip (``TCP_INFO.tcpi_rtt``), free of any user-space
    scheduling; ``None`` where the kernel does not report it.
    """

    status: Status
    connect_ms: RttMs | None = None
    handshake_rtt_ms: TimeMs | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        connect = self.connect_ms
        if connect is not None and not 0 < connect <= MAX_RTT_MS:  # (_check_rtts, inlined)
            _check_rtts("connect_ms", [connect])
        if self.status == "ok" and self.connect_ms is None:
            raise ValueError("a successful attempt needs connect_ms")
        if self.status != "ok" and self.connect_ms is not None:
            raise ValueError(f"a {self.status} attempt has no connect_ms")


_get_status = operator.attrgetter("status")
_get_connect = operator.attrgetter("connect_ms")


class TcpBody(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """TCP connect time to one port, attempt by attempt.

    Or, for a source that gives only statistics, a ``summary`` (schema 2): then
    ``attempts`` is empty, ``attempted`` and ``succeeded`` are the source's counts
    (``None`` where it does not say) and ``stats`` holds the summary's figures.
    """

    port: Port
    ip_version: Literal[4, 6]
    timeout_s: NonNegFloat
    attempts: list[TcpAttempt]
    #: Connects that succeeded; ``None`` only in a summary body whose source does not say.
    succeeded: NonNegInt | None
    stats: RttStats
    #: Connects tried, in a summary body (``None``: the source does not say); a
    #: body with attempts leaves it ``None`` (``len(attempts)`` says).
    attempted: NonNegInt | None = None
    #: Statistics without attempts (schema 2); ``None`` when ``attempts`` are kept.
    summary: RttSummary | None = None

    def __post_init__(self) -> None:
        # The usual body first (see PingBody); anything else is checked one by one.
        if self.summary is None and self.attempted is None and type(self.succeeded) is int:
            attempts = self.attempts
            if list(map(_get_status, attempts)).count("ok") == self.succeeded:
                got = [c for c in map(_get_connect, attempts) if c is not None]
                if _surely_valid_samples(got, self.stats):
                    return
        self._check()

    def _check(self) -> None:
        _check_counts("body", self.attempted, self.succeeded, "attempted", "succeeded")
        if self.summary is not None:
            if self.attempts:
                raise ValueError("a summary body keeps no attempts: attempts must be empty")
            _check_summary_body("body", self.summary, self.stats, self.succeeded, "succeeded")
            return
        if self.attempted is not None:
            raise ValueError("attempted is for summary bodies; len(attempts) counts the others")
        ok = sum(a.status == "ok" for a in self.attempts)
        if ok != self.succeeded:
            raise ValueError(f"succeeded is {self.succeeded} but {ok} attempts are ok")
        _check_stats("stats", self.stats, [a.connect_ms for a in self.attempts])

    @property
    def tried(self) -> int | None:
        """Connects tried: ``len(attempts)``, or a summary's ``attempted`` (``None``: unknown)."""
        return self.attempted if self.summary is not None else len(self.attempts)

    @property
    def loss_ratio(self) -> float | None:
        """Share of connects that failed; ``None`` when nothing was tried or a count is unknown."""
        return _loss(self.tried, self.succeeded)

    @classmethod
    def from_attempts(cls, attempts: Sequence[TcpAttempt], **fields: Any) -> TcpBody:
        return cls(
            attempts=list(attempts),
            succeeded=sum(a.status == "ok" for a in attempts),
            stats=rtt_stats([a.connect_ms for a in attempts]),
            **fields,
        )

    @classmethod
    def from_summary(cls, summary: RttSummary, *, attempts: int | None, succeeded: int | None,
                     **fields: Any) -> TcpBody:
        """Build a summary body: ``attempts`` and ``succeeded`` are the source's counts
        (``None`` where it gives none); ``stats`` derived from the summary."""
        return cls(
            attempts=[],
            attempted=attempts,
            succeeded=succeeded,
            stats=summary.stats(),
            summary=summary,
            **fields,
        )


# --------------------------------------------------------------------------- trace


class Annotation(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """What databases say about an address; added by ``netvantage annotate``, never by probing.

    ``source`` names the databases (file names and build dates) so that a trace
    annotated with an old database can be recognised and annotated again.
    """

    asn: NonNegInt | None = None
    as_org: str | None = None
    country: str | None = None
    city: str | None = None
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] | None = None
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] | None = None
    rdns: str | None = None
    source: str | None = None


class TraceProbe(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """One probe at one TTL: who answered, how fast, with which ICMP message.

    ``address`` and ``rtt_ms`` are ``None`` for a probe nobody answered.  For
    the destination's own answer ``icmp_type`` is the echo reply (ICMP mode),
    port unreachable (UDP) or ``None`` with ``tcp_flags`` (TCP: SYN/ACK or RST).
    """

    cycle: NonNegInt = 0
    address: str | None = None
    rtt_ms: RttMs | None = None
    icmp_type: NonNegInt | None = None
    icmp_code: NonNegInt | None = None
    tcp_flags: str | None = None
    reply_ttl: NonNegInt | None = None


class Responder(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """Statistics of one address answering at one TTL (mtr keys them by TTL only: we don't,
    so a path that changes mid-run shows two responders, not false loss)."""

    address: str
    replies: NonNegInt
    stats: RttStats
    annotation: Annotation | None = None


_get_address = operator.attrgetter("address")
_get_replies = operator.attrgetter("replies")


class Hop(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
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
        # (C loops: a trace's hops are checked for every trace the analysis loads.)
        probes = self.probes
        answered = len(probes) - list(map(_get_address, probes)).count(None)
        if sum(map(_get_replies, self.responders)) != answered:
            raise ValueError(f"hop {self.ttl}: responders do not add up to the answered probes")


class MdaLink(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """A link seen by the MDA: one flow answered from ``near`` at ``ttl`` and from ``far`` at
    ``ttl + 1`` (``None``: that probe went unanswered); ``flows`` counts the flows seen on it."""

    ttl: Annotated[int, msgspec.Meta(ge=1, le=254)]
    near: str | None
    far: str | None
    flows: Annotated[int, msgspec.Meta(ge=1)]


class Diamond(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """Load-balanced paths that split at ``divergence`` and meet again at ``convergence``.

    ``width`` is the most interfaces at one TTL between them, ``length`` the TTLs from the
    divergence to the convergence point (2 for a split over one hop of parallel routers).
    ``convergence`` is ``None`` when the branches had not met when the trace ended.
    """

    divergence: str
    divergence_ttl: Annotated[int, msgspec.Meta(ge=1, le=255)]
    convergence: str | None = None
    convergence_ttl: Annotated[int, msgspec.Meta(ge=1, le=255)] | None = None
    width: Annotated[int, msgspec.Meta(ge=2)]
    length: Annotated[int, msgspec.Meta(ge=1)]


class Multipath(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """What the Multipath Detection Algorithm found (``measure trace --mda``).

    The trace varies its flow identifier (``flow_field``: the UDP or TCP source port, or the
    ICMP identifier, which moves the checksum) from one probe to the next, and at each TTL
    keeps sending flows through every interface of the previous TTL until, with ``k``
    successors seen, ``stopping[k-1]`` flows found no new one: the chance of having missed
    a (k+1)-th equally loaded successor is then at most 1 - ``confidence``.  ``interfaces``
    lists each TTL's interfaces (the hop rows hold every probe), ``links`` the interface
    pairs of successive TTLs, ``diamonds`` where the paths split and meet again.
    """

    confidence: Annotated[float, msgspec.Meta(gt=0, lt=1)]
    flow_field: Literal["sport", "icmp_id"]
    flows: NonNegInt
    probes_sent: NonNegInt
    stopping: list[NonNegInt]
    interfaces: list[list[str]]
    links: list[MdaLink] = []
    diamonds: list[Diamond] = []


class TraceBody(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
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
    # Only with --mda, and left out of the JSON otherwise (UNSET, not null): readers that
    # predate it, which refuse unknown keys, read every other trace as before.
    multipath: Multipath | msgspec.UnsetType = msgspec.UNSET

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


class Phase(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
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


class CertInfo(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
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


class TlsInfo(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
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


class TlsStall(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """Why a TLS handshake timed out (see :mod:`netvantage.measure.blackhole`).

    ``verdict`` is ``pmtu_black_hole`` when the server's TCP acknowledged our
    ClientHello (``hello_acked``), its answer never came whole, and the path MTU
    measured toward it is below the interface MTU; ``stalled`` otherwise.
    ``flight_bytes`` is how much of the server's answer arrived in order,
    ``out_of_order_segments`` how many segments arrived past a gap (``None``
    where the kernel does not say).  ``path_mtu``, ``local_mtu``,
    ``ptb_received`` and ``hop_address`` come from the path MTU measurement;
    ``note`` says why one is missing.
    """

    verdict: Literal["pmtu_black_hole", "stalled"]
    hello_acked: bool | None = None
    flight_bytes: NonNegInt | None = None
    out_of_order_segments: NonNegInt | None = None
    path_mtu: Mtu | None = None
    local_mtu: Mtu | None = None
    ptb_received: bool | None = None
    hop_address: str | None = None
    note: str | None = None


class MailBody(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
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
    #: IMAP: the capabilities the server announced after LOGIN (untagged or in the
    #: tagged OK's [CAPABILITY …] code); empty when it announced none or no login ran.
    capabilities_auth: list[str] = []
    tls: TlsInfo | None = None
    auth: Literal["ok", "failed"] | None = None
    bytes_received: NonNegInt = 0
    #: Set when the TLS handshake timed out: the evidence and the verdict.  Absent (not
    #: null) otherwise, so that readers older than it read every other record as before.
    tls_stall: TlsStall | msgspec.UnsetType = msgspec.UNSET

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


# --------------------------------------------------------------------------- mail readiness

ReadyStatus: TypeAlias = Literal["pass", "warn", "fail", "unknown"]
#: The checks of a ``mailready`` record, in the order a report shows them.
READY_CHECKS: tuple[str, ...] = ("dnsbl", "rhsbl", "rdns", "spf", "dkim", "dmarc", "mta_sts",
                                 "tls_rpt", "mx", "tls", "port25")


class ReadyCheck(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """One check of a mail host's readiness: its status, one line for people, the evidence.

    ``status``: ``pass``; ``warn`` (works, but a receiver may object, or something optional
    is missing); ``fail`` (mail will bounce or be junked); ``unknown`` (the check could not
    be made: a DNS timeout or SERVFAIL, a server that did not answer).  Unknown is never
    counted as pass.  ``evidence`` holds what was found, each item ``WHERE: WHAT``
    (the zone that lists the address and its code, the record text, the certificate name).
    """

    status: ReadyStatus
    summary: str
    evidence: list[str] = []


class ZoneAnswer(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """One blocklist zone's answer for the address (``ip``) or the domain (``domain``).

    ``result``: ``listed``, ``clean`` (NXDOMAIN) or ``unknown`` (timeout, SERVFAIL, a
    refusal code such as 127.255.255.254, an answer outside 127.0.0.0/8).  ``codes`` are
    the A records returned, ``meaning`` their decoding, ``txt`` the zone's TXT reason.
    """

    zone: Name
    kind: Literal["ip", "domain"]
    query: str
    result: Literal["listed", "clean", "unknown"]
    codes: list[str] = []
    meaning: str | None = None
    txt: str | None = None
    elapsed_ms: NonNegFloat | None = None


class MailReadyBody(msgspec.Struct, frozen=True, gc=False, kw_only=True,
                    forbid_unknown_fields=True):
    """Will mail flow from this host on day one?  One field per check (:data:`READY_CHECKS`).

    ``host`` is the host name checked (given, or the PTR name), ``domain`` the mail
    domain whose policy records were read, ``selectors`` the DKIM selectors.
    ``resolvers`` are the DNS servers asked; ``dns_queries`` how many queries were
    sent, within ``budget_s`` seconds in all.  ``verdict`` is the worst status of the
    checks (fail > unknown > warn > pass); ``failing`` names the failed checks.
    """

    host: str | None = None
    domain: str | None = None
    selectors: list[str] = []
    resolvers: list[str] = []
    budget_s: NonNegFloat
    dns_queries: NonNegInt = 0
    verdict: ReadyStatus
    failing: list[str] = []
    dnsbl: ReadyCheck
    rhsbl: ReadyCheck
    rdns: ReadyCheck
    spf: ReadyCheck
    dkim: ReadyCheck
    dmarc: ReadyCheck
    mta_sts: ReadyCheck
    tls_rpt: ReadyCheck
    mx: ReadyCheck
    tls: ReadyCheck
    port25: ReadyCheck
    zones: list[ZoneAnswer] = []

    def __post_init__(self) -> None:
        failing = [name for name in READY_CHECKS if self.check(name).status == "fail"]
        if failing != list(self.failing):
            raise ValueError(f"failing is {self.failing} but the failed checks are {failing}")

    def check(self, name: str) -> ReadyCheck:
        if name not in READY_CHECKS:
            raise KeyError(f"no check {name!r} (checks: {', '.join(READY_CHECKS)})")
        check: ReadyCheck = getattr(self, name)
        return check
# --------------------------------------------------------------------------- pmtu

class PmtuProbe(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """One Don't-Fragment probe: its total IP size, TTL and what came back.

    ``answer``: ``reply`` (the target answered: the size passed), ``ptb`` (ICMP
    "fragmentation needed" or ICMPv6 "packet too big", with the ``mtu`` it named),
    ``time_exceeded`` (a router at that TTL), ``unreachable``, or ``None`` (nothing).
    """

    size: Annotated[int, msgspec.Meta(ge=20, le=65_535)]
    ttl: Annotated[int, msgspec.Meta(ge=1, le=255)]
    answer: Literal["reply", "ptb", "time_exceeded", "unreachable"] | None = None
    responder: str | None = None
    mtu: NonNegInt | None = None
    rtt_ms: RttMs | None = None


class PmtuBody(msgspec.Struct, frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True):
    """Path MTU toward the target, and where a packet that does not fit stops.

    ``local_mtu`` is the MTU of the interface toward the target, ``cached_mtu``
    a smaller path MTU the measuring kernel had already learned for it (from an
    earlier "fragmentation needed"), when it had one; ``path_mtu``
    the largest total IP size that reached the target (``None`` if the search
    did not end).  ``ptb_received`` says whether an ICMP "fragmentation needed"
    (RFC 1191) or ICMPv6 "packet too big" (RFC 8201) came back; ``black_hole``
    is a path MTU below ``local_mtu`` learned *without* one (RFC 2923).
    ``hop_ttl``/``hop_address`` name the router that cannot forward the larger
    packet (the sender of the ICMP message, or the last router to answer
    TTL-limited probes of the failing size); ``next_hop_address`` the hop after it.
    """

    protocol: Literal["icmp", "udp", "tcp"]
    ip_version: Literal[4, 6]
    port: Port | None = None
    local_mtu: Mtu
    cached_mtu: Mtu | None = None
    path_mtu: Mtu | None = None
    reached: bool
    ptb_received: bool = False
    ptb_mtu: NonNegInt | None = None
    ptb_from: str | None = None
    black_hole: bool = False
    hop_ttl: Annotated[int, msgspec.Meta(ge=1, le=255)] | None = None
    hop_address: str | None = None
    next_hop_address: str | None = None
    rounds: NonNegInt = 0
    probes: list[PmtuProbe] = []

    def __post_init__(self) -> None:
        if self.path_mtu is not None and self.path_mtu > self.local_mtu:
            raise ValueError("path_mtu is larger than local_mtu")
        if self.black_hole and self.ptb_received:
            raise ValueError("a black hole is a path MTU learned without a PTB message")


# --------------------------------------------------------------------------- envelope


#: What a record's id may hold (its length, 8 to 64, is msgspec's to check).
_ID_PATTERN = r"^[0-9A-Za-z._:-]+$"
#: The pattern checked in ``Record.__post_init__`` rather than by msgspec's ``pattern``
#: constraint, which calls into the ``re`` module through the C API per record: decoding
#: ids alone took 0.33 µs per record with it and 0.06 without (msgspec takes about 1.4
#: µs for a whole 640-byte record); ``check_batch`` went from 1.68 to 1.58 µs per record.
_ID_SHAPE = re.compile(r"[0-9A-Za-z._:-]+").fullmatch


class Record(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    forbid_unknown_fields=True,
    tag_field="kind",
    gc=False,
):
    """The envelope shared by every kind; subclasses add a typed ``body``."""

    #: (The pattern is checked in ``__post_init__``, not by msgspec: see _ID_SHAPE.)
    id: Annotated[str, msgspec.Meta(min_length=8, max_length=64,
                                    extra_json_schema={"pattern": _ID_PATTERN})]
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
        if _ID_SHAPE(self.id) is None:
            raise ValueError(f"id {self.id!r} may hold only the characters 0-9 A-Z a-z . _ : -")
        if self.schema != SCHEMA_VERSION:
            if self.schema not in SCHEMA_VERSIONS:
                raise ValueError(f"schema {self.schema} is not one of {list(SCHEMA_VERSIONS)}")
            if self.schema < 2 and getattr(getattr(self, "body", None), "summary",
                                           None) is not None:
                raise ValueError("a summary body needs schema 2 (schema 1 has no summaries)")
        started = self.started_at
        if started.tzinfo is not UTC:  # (the decoder's zone for "Z" and "+00:00")
            offset = started.utcoffset()
            if offset is None or offset.total_seconds() != 0:
                raise ValueError("started_at must be in UTC")
        when = started.timestamp()
        if when < _EARLIEST_TS:
            raise ValueError(f"started_at {self.started_at.isoformat()} is before "
                             f"{EARLIEST_START.date()}: the measuring clock was not set")
        if when > time.time() + MAX_AHEAD_S:
            raise ValueError(f"started_at {self.started_at.isoformat()} is more than "
                             f"{MAX_AHEAD_S / 3600:g} h ahead of this clock (now "
                             f"{utc_now().isoformat(timespec='seconds')}): the measuring "
                             "clock is wrong")
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


class PmtuRecord(Record, tag="pmtu", frozen=True):
    body: PmtuBody


class SmtpRecord(Record, tag="smtp", frozen=True):
    body: MailBody


class ImapRecord(Record, tag="imap", frozen=True):
    body: MailBody


class MailReadyRecord(Record, tag="mailready", frozen=True):
    body: MailReadyBody


AnyRecord: TypeAlias = (PingRecord | TcpRecord | TraceRecord | SmtpRecord | ImapRecord
                        | PmtuRecord | MailReadyRecord)
_RECORD_TYPES: tuple[type[Record], ...] = (PingRecord, TcpRecord, TraceRecord, SmtpRecord,
                                           ImapRecord, PmtuRecord, MailReadyRecord)
KINDS: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in _RECORD_TYPES)
