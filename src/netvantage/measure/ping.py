"""ICMP echo ("ping") over icmplib sockets, with kernel receive timestamps.

Where an RTT comes from, and what it includes
----------------------------------------------
All targets run on one asyncio loop in one thread, so nothing else of ours
runs between reading a clock and the system call next to it.

* **send** – ``CLOCK_REALTIME`` (``time.time_ns``) and the monotonic clock
  (``time.perf_counter_ns``) are read immediately before ``sendto()``.
* **receive** – the kernel stamps each datagram with ``CLOCK_REALTIME`` when
  it reaches the socket layer (``SO_TIMESTAMPNS``); we read it from the
  ancillary data of ``recvmsg()``.  The monotonic clock is read again when
  ``recvmsg()`` returns.

The RTT is *kernel receive stamp − user send stamp*: it includes the
``sendto()`` call and the kernel's output path, the network both ways, the
remote host's answer and the input path up to the socket; it excludes the
time this process took to wake up and read the reply, which is what makes
user-space RTTs wobble under load.  This is how iputils ``ping`` measures.

A guard protects against the wall clock being stepped mid-flight: the same
interval on the monotonic clock is always a little *longer* (it also holds
the wake-up).  If the kernel-based value is negative or longer than the
monotonic one, the monotonic value is kept and ``rx_clock`` says so.  A reply
whose RTT exceeds the timeout is a loss, never a sample (as ``ping -W``).

Sockets
-------
``SOCK_RAW`` needs root or ``CAP_NET_RAW``.  Without it, Linux offers ICMP
"ping" sockets (``SOCK_DGRAM``) to groups inside ``net.ipv4.ping_group_range``;
the kernel then owns the ICMP identifier and hands ICMP errors to us through
``IP_RECVERR`` and the socket's error queue.  Failing both, a
:class:`~netvantage.errors.PrivilegeError` says what to change.

Sweeps: one socket per family, however many targets
----------------------------------------------------
Every raw ICMP socket on a host receives *every* ICMP packet, so one socket
per target would multiply the receive work by the number of targets and
overflow socket buffers (false loss).  A sweep (:func:`ping_many`, and
:func:`ping` as a sweep of one) therefore opens **one socket per address
family**, unconnected: it ``sendto()``\\ s every destination, one reader
callback drains it, and replies are demultiplexed by
*(source address, identifier, sequence)*:

* the identifier is the socket's: random per sweep on a raw socket (a BPF
  filter drops other identifiers' echo replies in the kernel, and the
  payload carries a random per-sweep cookie that a reply must echo, so a
  reply to another process's ping is never ours); on a datagram socket the
  kernel assigns it and delivers only replies that carry it;
* sequence numbers are allocated per destination address, so two targets
  that resolve to the same address still get disjoint sequences;
* ICMP errors are matched through the echo header they quote and the quoted
  destination (raw), or through ``MSG_ERRQUEUE``: the offender in the
  extended error, the original destination in ``msg_name`` and the quoted
  echo header in the data (datagram).

Pacing is global, like ``fping -i``: the sweep's requests leave on a grid of
``pace_s`` (at most ``1/pace_s`` per second, never a burst: a late wake-up is
not made up for by two back-to-back requests, and no two requests leave less
than ``pace_s / 2`` apart), and each target's own requests are ``interval_s``
apart, like ``fping -p``.  ``concurrency`` bounds how many targets are active
(have requests in flight) at once; a target finishes when every request is
answered or its last one has timed out, and the next target starts.  Waits
under 3 ms sleep with ``clock_nanosleep()`` (microseconds; the event loop's
epoll rounds up to whole milliseconds) and replies are read right after, from
the socket buffer, with their kernel stamps: while a sweep paces, the loop's
other tasks get a turn every 2–3 ms, and a reply without a kernel stamp (the
``user`` fallback) may be read up to one pace late.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import itertools
import math
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from icmplib import ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import SocketPermissionError

from ..errors import PrivilegeError
from ..results import IcmpError, PingBody, PingRecord, Status, ms, new_id, utc_now
from .common import Origin, bounded_gather, describe, status_of
from .kernel import (
    IP_RECVERR,
    IPV6_RECVERR,
    MSG_ERRQUEUE,
    SO_TIMESTAMPNS,
    kernel_stamp,
    queued_error,
    rtt_ns,
)
from .target import Resolved, Target, resolve

__all__ = ["PingOptions", "open_icmp_socket", "ping", "ping_many"]

# Linux socket options the socket module does not always name.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SO_ATTACH_FILTER = 26
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
_IPV6_DONTFRAG = getattr(socket, "IPV6_DONTFRAG", 62)
_ICMP6_FILTER = 1
_ID_SEQ = struct.Struct("!HH")

_ECHO_REQUEST = {4: 8, 6: 128}
_ECHO_REPLY = {4: 0, 6: 129}
# ICMP errors that quote our echo request: unreachable, time exceeded, parameter
# problem (and, for IPv6, packet too big).
_ERROR_TYPES = {4: {3, 11, 12}, 6: {1, 2, 3, 4}}
_UNREACHABLE_TYPE = {4: 3, 6: 1}

_RX_BUFFER = 65_535 + 60  # the largest ICMP message plus an IPv4 header with options
_RCVBUF_BYTES = 4 << 20  # replies may wait while the loop runs other work
_COARSE_S = 0.003  # longer waits go through the event loop, shorter ones sleep precisely
_YIELD_S = 0.002  # while pacing, the loop's other tasks get a turn at least this often

# Ceilings that keep one command from becoming a flood.
MIN_INTERVAL_S = 0.01
MIN_PACE_S = 0.0001
MAX_COUNT = 10_000
MAX_PAYLOAD = 65_000

SocketKind = Literal["auto", "raw", "dgram"]


@dataclass(frozen=True, slots=True)
class PingOptions:
    count: int = 5
    interval_s: float = 1.0
    timeout_s: float = 2.0
    payload_bytes: int = 56
    ttl: int = 64
    dont_fragment: bool = False
    socket: SocketKind = "auto"
    #: Minimum spacing of all echo requests of a sweep, across targets (``fping -i``).
    pace_s: float = 0.001

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count must be 1..{MAX_COUNT}")
        if self.interval_s < MIN_INTERVAL_S:
            raise ValueError(f"interval must be at least {MIN_INTERVAL_S} s (no flooding)")
        if not 0 < self.timeout_s <= 60:
            raise ValueError("timeout must be in (0, 60] s")
        if not 0 <= self.payload_bytes <= MAX_PAYLOAD:
            raise ValueError(f"payload must be 0..{MAX_PAYLOAD} bytes")
        if not 1 <= self.ttl <= 255:
            raise ValueError("ttl must be 1..255")
        if not MIN_PACE_S <= self.pace_s <= 10:
            raise ValueError(f"pace must be {MIN_PACE_S}..10 s (no flooding)")


def _ping_group_range() -> str:
    try:
        return Path("/proc/sys/net/ipv4/ping_group_range").read_text().split("\n")[0]
    except OSError:
        return "unknown"


def _privilege_message(kind: SocketKind) -> str:
    rng = _ping_group_range().replace("\t", " ")
    gid = os.getgid()
    if kind == "raw":
        return (
            "ICMP with --socket raw needs root or CAP_NET_RAW (for example "
            "`setcap cap_net_raw+ep` on the Python interpreter, or "
            "AmbientCapabilities=CAP_NET_RAW in the agent's systemd unit)."
        )
    return (
        "cannot open an ICMP socket: a raw socket needs root or CAP_NET_RAW, and "
        f"unprivileged ICMP sockets are not allowed for group {gid} "
        f"(net.ipv4.ping_group_range is '{rng}'). Either grant CAP_NET_RAW, or allow "
        f"your group: sysctl -w net.ipv4.ping_group_range='{gid} {gid}'. "
        "`netvantage measure tcp` needs no privilege at all."
    )


def open_icmp_socket(ip_version: int, kind: SocketKind = "auto") -> Any:
    """An icmplib socket for ``ip_version``: raw if allowed, else datagram (for ``auto``)."""
    cls = ICMPv4Socket if ip_version == 4 else ICMPv6Socket
    tries = {"auto": (True, False), "raw": (True,), "dgram": (False,)}[kind]
    for privileged in tries:
        try:
            return cls(privileged=privileged)
        except SocketPermissionError:
            continue
    raise PrivilegeError(_privilege_message(kind))


# ------------------------------------------------------------------ kernel filters


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _attach_ipv4_filter(sock: socket.socket, ident: int) -> None:
    """Classic BPF on a raw IPv4 ICMP socket: keep echo replies carrying ``ident`` and
    the errors that can quote an echo request; drop the rest (other processes' replies,
    echo requests to this host) before they cost a wake-up.  Best effort."""
    ldxb_msh, ldb_ind, ldh_ind = 0xB1, 0x50, 0x48
    jeq, ret = 0x15, 0x06
    prog = [
        (ldxb_msh, 0, 0, 0),  # X = 4 * (IP[0] & 0xf): the IP header length
        (ldb_ind, 0, 0, 0),  # A = ICMP type
        (jeq, 4, 0, 0),  # echo reply: check the identifier (jump offsets count from pc+1)
        (jeq, 5, 0, 3),  # unreachable
        (jeq, 4, 0, 11),  # time exceeded
        (jeq, 3, 0, 12),  # parameter problem
        (ret, 0, 0, 0),  # anything else: drop
        (ldh_ind, 0, 0, 4),  # A = identifier
        (jeq, 0, 1, ident),
        (ret, 0, 0, 0xFFFFFFFF),  # accept
        (ret, 0, 0, 0),  # drop
    ]
    array = (_SockFilter * len(prog))(*(_SockFilter(*ins) for ins in prog))
    fprog = _SockFprog(len(prog), ctypes.cast(array, ctypes.POINTER(_SockFilter)))
    with contextlib.suppress(OSError):  # the kernel copies the program: array may go
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(fprog))


def _set_icmp6_filter(sock: socket.socket) -> None:
    """Raw ICMPv6: pass only echo replies and errors (not neighbour discovery). Best effort."""
    words = [0xFFFFFFFF] * 8  # a set bit blocks that type
    for icmp_type in (*_ERROR_TYPES[6], _ECHO_REPLY[6]):
        words[icmp_type >> 5] &= ~(1 << (icmp_type & 31))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))


# ------------------------------------------------------------------ one target


class _Job:
    """One target of a sweep: its samples, counters and schedule."""

    def __init__(self, host: str, name: str, opts: PingOptions) -> None:
        self.host = host
        self.name = name
        self.resolved: Resolved | None = None
        self.failure: BaseException | None = None
        self.key_address = ""
        n = opts.count
        self.count = n
        self.timeout_ns = int(opts.timeout_s * 1e9)
        self.rtts: list[float | None] = [None] * n
        self.tx_real: list[int | None] = [None] * n
        self.tx_mono: list[int | None] = [None] * n
        self.late: set[int] = set()
        self.seq_base = 0
        self.sent = 0
        self.answered = 0
        self.duplicates = 0
        self.kernel_stamps = 0
        self.user_stamps = 0
        self.icmp_errors: list[IcmpError] = []
        self.send_errors: list[OSError] = []
        self.first_send = 0.0  # time.monotonic() of the first request
        self.started_at = utc_now()
        self.t0_ns = time.perf_counter_ns()
        self.t_end_ns = 0
        self.done = False

    def complete(self) -> bool:
        return self.sent == self.count and (
            self.answered + len(self.send_errors) >= self.count)

    def on_reply(self, i: int, rx_real: int | None, rx_mono: int) -> None:
        tx_mono = self.tx_mono[i]
        tx_real = self.tx_real[i]
        if tx_mono is None or tx_real is None or i in self.late:
            return
        if self.rtts[i] is not None:
            self.duplicates += 1
            return
        rtt, use_kernel = rtt_ns(tx_real, tx_mono, rx_real, rx_mono)
        if rtt > self.timeout_ns:
            self.late.add(i)  # late: counted as lost, as ping -W does
            return
        self.rtts[i] = ms(rtt)
        if use_kernel:
            self.kernel_stamps += 1
        else:
            self.user_stamps += 1
        self.answered += 1


# ------------------------------------------------------------------ echo requests

_ECHO_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence


def echo_partial_sum(request_type: int, payload: bytes) -> int:
    """The folded one's-complement sum (RFC 1071) of an echo request's fixed parts.

    Type, code and payload are the same for every request of a sweep; only the
    identifier and sequence number change, so :func:`echo_request` adds those two
    words to this sum instead of summing the whole packet again.
    """
    padded = payload + b"\0" if len(payload) % 2 else payload
    words: tuple[int, ...] = struct.unpack(f"!{len(padded) // 2}H", padded)
    total = (request_type << 8) + sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def echo_request(request_type: int, partial_sum: int, ident: int, seq: int,
                 payload: bytes) -> bytes:
    """An ICMP or ICMPv6 echo request with its checksum (RFC 792, RFC 4443 section 4.1).

    An ICMPv6 checksum also covers a pseudo-header that only the kernel knows; it
    recomputes that field on raw ICMPv6 and on ping sockets, as it sets the
    identifier on ping sockets, so the value written here matters for raw IPv4.
    """
    total = partial_sum + ident + seq  # <= 3 * 0xFFFF: two folds bring it to 16 bits
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return _ECHO_HEADER.pack(request_type, 0, ~total & 0xFFFF, ident, seq) + payload


# ------------------------------------------------------------------ one socket


class _Engine:
    """One ICMP socket of one family, shared by every target of a sweep."""

    def __init__(self, ip_version: Literal[4, 6], opts: PingOptions, sweep: _Sweep) -> None:
        self.icmp = open_icmp_socket(ip_version, opts.socket)
        self.sock: socket.socket = self.icmp.sock
        self.fd = self.sock.fileno()
        self.v = ip_version
        self.opts = opts
        self.sweep = sweep
        self.raw = bool(self.icmp.is_privileged)
        self.raw4 = self.raw and ip_version == 4  # raw IPv4 sockets deliver the IP header
        self.reply_type = _ECHO_REPLY[ip_version]
        self.ident = int.from_bytes(os.urandom(2), "big")
        # A random cookie leads the payload: a reply must echo it (raw sockets).
        cookie = os.urandom(min(8, opts.payload_bytes))
        self.payload = cookie + bytes(
            (i + 0x10) & 0xFF for i in range(len(cookie), opts.payload_bytes))
        self.request_type = _ECHO_REQUEST[ip_version]
        self._partial_sum = echo_partial_sum(self.request_type, self.payload)
        self.probes: dict[tuple[str, int], tuple[_Job, int]] = {}
        self._next_seq: dict[str, int] = {}
        self._configure()

    def _configure(self) -> None:
        s, opts = self.sock, self.opts
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
            try:
                s.setsockopt(socket.SOL_SOCKET, option, _RCVBUF_BYTES)
                break
            except OSError:
                continue
        self.icmp._set_ttl(opts.ttl)
        if self.v == 4:
            if self.raw:
                _attach_ipv4_filter(s, self.ident)
            else:
                s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            if opts.dont_fragment:
                s.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
        else:
            if self.raw:
                _set_icmp6_filter(s)
            else:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            if opts.dont_fragment:
                s.setsockopt(socket.IPPROTO_IPV6, _IPV6_DONTFRAG, 1)

    def close(self) -> None:
        self.icmp.close()

    def allocate(self, job: _Job) -> None:
        """Sequence numbers for ``job``, disjoint from other targets at the same address."""
        base = self._next_seq.get(job.key_address, 0)
        self._next_seq[job.key_address] = (base + job.count) & 0xFFFF
        job.seq_base = base

    def forget(self, job: _Job) -> None:
        for i in range(job.sent):
            key = (job.key_address, (job.seq_base + i) & 0xFFFF)
            if self.probes.get(key, (None, 0))[0] is job:
                del self.probes[key]

    # -- sending -------------------------------------------------------------

    def send(self, job: _Job, i: int) -> None:
        seq = (job.seq_base + i) & 0xFFFF
        packet = echo_request(self.request_type, self._partial_sum, self.ident, seq,
                              self.payload)
        dest = (job.key_address, 0)
        self.probes[(job.key_address, seq)] = (job, i)
        job.sent += 1
        # The two clock reads sit right against sendto(): see the module docstring.
        real = time.time_ns()
        mono = time.perf_counter_ns()
        try:
            self.sock.sendto(packet, dest)
        except OSError as exc:
            if self.raw:
                job.send_errors.append(exc)
                return
            # On a shared datagram socket, a pending ICMP error of *another* probe is
            # reported by the next sendto() (and that packet is not sent): collect the
            # queued errors, which clears it, and try once more.
            self.drain_errqueue()
            real = time.time_ns()
            mono = time.perf_counter_ns()
            try:
                self.sock.sendto(packet, dest)
            except OSError as again:
                job.send_errors.append(again)
                return
        job.tx_real[i] = real
        job.tx_mono[i] = mono

    # -- receiving -----------------------------------------------------------

    def on_readable(self) -> None:
        recvmsg = self.sock.recvmsg
        errors = 0
        while True:
            try:
                data, anc, _flags, addr = recvmsg(_RX_BUFFER, 256)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # A datagram socket reports a pending ICMP error once through
                # recvmsg(); the details wait in the error queue.
                errors += 1
                if not self.raw and errors < 64:
                    self.drain_errqueue()
                    continue
                break
            rx_mono = time.perf_counter_ns()
            self._on_packet(data, anc, addr[0], rx_mono)

    def _on_packet(self, data: bytes, anc: list[tuple[int, int, bytes]], source: str,
                   rx_mono: int) -> None:
        # Raw IPv4 sockets deliver the IP header too; IPv6 raw and all datagram
        # sockets start at the ICMP header.
        offset = (data[0] & 0x0F) * 4 if (self.raw4 and data) else 0
        if len(data) < offset + 8:
            return
        icmp_type = data[offset]
        if icmp_type == self.reply_type:
            ident, sequence = _ID_SEQ.unpack_from(data, offset + 4)
            if self.raw and (ident != self.ident or data[offset + 8:] != self.payload):
                return  # another process's echo (a colliding identifier has no cookie)
            if self.v == 6:
                source = _norm(source)
            entry = self.probes.get((source, sequence))
            if entry is not None:
                job, i = entry
                job.on_reply(i, kernel_stamp(anc), rx_mono)
                if job.complete():
                    self.sweep.finish(job)
        elif self.raw and icmp_type in _ERROR_TYPES[self.v]:
            self._on_raw_error(data, offset, icmp_type, source)

    def _on_raw_error(self, data: bytes, offset: int, icmp_type: int, source: str) -> None:
        quoted = data[offset + 8:]
        if self.v == 4:
            ihl = (quoted[0] & 0x0F) * 4 if quoted else 0
            if ihl < 20 or len(quoted) < ihl + 8 or quoted[9] != socket.IPPROTO_ICMP:
                return
            destination = socket.inet_ntop(socket.AF_INET, quoted[16:20])
            inner = quoted[ihl:ihl + 8]
        else:
            if len(quoted) < 48 or quoted[6] != socket.IPPROTO_ICMPV6:
                return
            destination = socket.inet_ntop(socket.AF_INET6, quoted[24:40])
            inner = quoted[40:48]
        if inner[0] != _ECHO_REQUEST[self.v]:
            return
        ident, sequence = _ID_SEQ.unpack_from(inner, 4)
        if ident != self.ident:
            return
        entry = self.probes.get((destination, sequence))
        if entry is None:
            return
        job, i = entry
        job.icmp_errors.append(IcmpError(
            seq=i, from_address=source, icmp_type=icmp_type, icmp_code=data[offset + 1],
        ))

    def drain_errqueue(self) -> None:
        while True:
            try:
                data, anc, _flags, addr = self.sock.recvmsg(_RX_BUFFER, 512, MSG_ERRQUEUE)
            except OSError:  # BlockingIOError: the queue is empty
                return
            error = queued_error(anc, self.v)
            if error is None or len(data) < 8:
                continue
            # msg_name holds the original destination; data, our echo request.
            seq = int.from_bytes(data[6:8], "big")
            entry = self.probes.get((_norm(addr[0]), seq)) if addr else None
            if entry is None:
                continue
            job, i = entry
            job.icmp_errors.append(IcmpError(
                seq=i, from_address=error.offender or "?", icmp_type=error.icmp_type,
                icmp_code=error.icmp_code,
            ))


def _norm(address: str) -> str:
    return address.split("%", 1)[0]


# ------------------------------------------------------------------ the sweep


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Sweep:
    """Targets sharing one socket per family, a global pace and a bound on active targets."""

    def __init__(self, jobs: Sequence[_Job], opts: PingOptions, concurrency: int) -> None:
        self.opts = opts
        self.concurrency = concurrency
        self.waiting = deque(jobs)
        self.engines: dict[int, _Engine] = {}
        try:
            for v in sorted({job.resolved.ip_version for job in jobs if job.resolved}):
                self.engines[v] = _Engine(4 if v == 4 else 6, opts, self)
        except BaseException:
            self.close()
            raise
        self.active = 0
        self.sends: list[tuple[float, int, _Job]] = []  # (due, tie, job)
        self.deadlines: list[tuple[float, int, _Job]] = []
        self._tie = itertools.count()
        self.next_slot = 0.0
        self._waiter: asyncio.Future[None] | None = None

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()

    def engine(self, job: _Job) -> _Engine:
        assert job.resolved is not None
        return self.engines[job.resolved.ip_version]

    def _activate(self) -> None:
        now = time.monotonic()
        while self.waiting and self.active < self.concurrency:
            job = self.waiting.popleft()
            self.active += 1
            self.engine(job).allocate(job)
            heapq.heappush(self.sends, (now, next(self._tie), job))

    def finish(self, job: _Job) -> None:
        if job.done:
            return
        job.done = True
        job.t_end_ns = time.perf_counter_ns()
        self.engine(job).forget(job)
        self.active -= 1
        self._activate()
        if self._waiter is not None:
            _release(self._waiter)

    def _poll(self) -> None:
        for engine in self.engines.values():
            engine.on_readable()

    async def _sleep(self, delay: float) -> None:
        """Sleep on the event loop; :meth:`finish` wakes it early (a slot came free)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        handle = loop.call_later(delay, _release, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for engine in self.engines.values():
            loop.add_reader(engine.fd, engine.on_readable)
        pace, interval, timeout = self.opts.pace_s, self.opts.interval_s, self.opts.timeout_s
        sends, deadlines, tie = self.sends, self.deadlines, self._tie
        yielded = time.monotonic()
        try:
            self._activate()
            while self.active:
                now = time.monotonic()
                t_send = sends[0][0] if sends else math.inf
                if t_send < self.next_slot:
                    t_send = self.next_slot
                t_end = deadlines[0][0] if deadlines else math.inf
                wake = t_send if t_send < t_end else t_end
                if wake - now > _COARSE_S:
                    # On the event loop (its readers drain the sockets meanwhile).
                    await self._sleep(wake - now - _COARSE_S * 2 / 3)
                    yielded = time.monotonic()
                    continue
                if wake > now:
                    # Short waits: clock_nanosleep() keeps microseconds, where the loop's
                    # epoll would round up to whole milliseconds.  Replies wait in the
                    # socket with their kernel stamps and are read just below.
                    time.sleep(wake - now)
                    continue
                self._poll()
                if t_end <= now:
                    _, _, job = heapq.heappop(deadlines)
                    self.finish(job)
                elif sends:
                    _, _, job = heapq.heappop(sends)
                    if not job.done:
                        self._send(job, now, pace, interval, timeout, tie)
                if now - yielded > _YIELD_S:
                    await asyncio.sleep(0)  # let the loop's other tasks run
                    yielded = time.monotonic()
        finally:
            for engine in self.engines.values():
                loop.remove_reader(engine.fd)
            self.close()

    def _send(self, job: _Job, now: float, pace: float, interval: float, timeout: float,
              tie: itertools.count[int]) -> None:
        i = job.sent
        if i == 0:
            job.first_send = now
            job.started_at = utc_now()
            job.t0_ns = time.perf_counter_ns()
        self.engine(job).send(job, i)
        # The grid: never faster than 1/pace on average, never closer than pace/2.
        slot = self.next_slot
        if slot < now - pace / 2:
            slot = now - pace / 2
        self.next_slot = slot + pace
        if job.sent < job.count:
            heapq.heappush(self.sends, (job.first_send + job.sent * interval, next(tie), job))
        elif job.complete():
            self.finish(job)
        else:
            heapq.heappush(self.deadlines, (now + timeout, next(tie), job))


# ------------------------------------------------------------------ records


def _error_text(err: IcmpError, ip_version: int) -> str:
    what = "destination unreachable" if err.icmp_type == _UNREACHABLE_TYPE[ip_version] else "error"
    return (f"ICMPv{ip_version if ip_version == 6 else ''} {what} "
            f"(type {err.icmp_type} code {err.icmp_code}) from {err.from_address}").replace(
                "ICMPv ", "ICMP ")


def _record(job: _Job, opts: PingOptions, origin: Origin, socket_kind: Literal["raw", "dgram"],
            record_id: str) -> PingRecord:
    assert job.resolved is not None
    v = job.resolved.ip_version
    rx_clock: Literal["kernel", "user", "mixed"] | None = None
    if job.kernel_stamps and job.user_stamps:
        rx_clock = "mixed"
    elif job.user_stamps:
        rx_clock = "user"
    elif job.kernel_stamps:
        rx_clock = "kernel"
    body = PingBody.from_samples(
        job.rtts[: job.sent],
        ip_version=v,
        socket=socket_kind,
        payload_bytes=opts.payload_bytes,
        interval_s=opts.interval_s,
        timeout_s=opts.timeout_s,
        dont_fragment=opts.dont_fragment,
        duplicates=job.duplicates,
        icmp_errors=job.icmp_errors,
        rx_clock=rx_clock,
    )
    status: Status
    error: str | None
    if body.received:
        status, error = "ok", None
    elif job.icmp_errors:
        first = job.icmp_errors[0]
        unreachable = first.icmp_type == _UNREACHABLE_TYPE[v]
        status = "unreachable" if unreachable else "error"
        error = _error_text(first, v)
    elif job.send_errors:
        status, error = status_of(job.send_errors[0]), describe(job.send_errors[0])
    else:
        status = "timeout"
        error = f"no reply to {body.sent} echo request(s) within {opts.timeout_s:g} s each"
    return PingRecord(
        id=record_id, agent=origin.agent, region=origin.region, target=job.name,
        address=job.resolved.address, started_at=job.started_at,
        duration_ms=ms(job.t_end_ns - job.t0_ns), status=status, error=error, body=body,
    )


def _failed(job: _Job, opts: PingOptions, origin: Origin, family: Literal[4, 6] | None,
            record_id: str, t0_ns: int) -> PingRecord:
    exc = job.failure or OSError("not resolved")
    body = PingBody.from_samples(
        [], ip_version=family or 4, socket=None, payload_bytes=opts.payload_bytes,
        interval_s=opts.interval_s, timeout_s=opts.timeout_s,
        dont_fragment=opts.dont_fragment,
    )
    return PingRecord(
        id=record_id, agent=origin.agent, region=origin.region, target=job.name,
        address=None, started_at=job.started_at,
        duration_ms=ms(time.perf_counter_ns() - t0_ns), status=status_of(exc),
        error=describe(exc), body=body,
    )


def _literal(host: str, family: Literal[4, 6] | None) -> Resolved | None:
    """A literal IPv4/IPv6 address without asking the resolver (``inet_pton``: fast for
    thousands of targets); ``None`` for a name, a scoped address or a family mismatch,
    which :func:`resolve` then handles (and words the error of)."""
    for af, v in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            packed = socket.inet_pton(af, host)
        except (OSError, ValueError):
            continue
        if family is not None and family != v:
            return None
        return Resolved(socket.inet_ntop(af, packed), 4 if v == 4 else 6)
    return None


async def _sweep(items: Sequence[tuple[Target | str, str | None]], opts: PingOptions,
                 origin: Origin | None, family: Literal[4, 6] | None,
                 concurrency: int) -> list[PingRecord]:
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    origin = origin or Origin.local()
    t0_ns = time.perf_counter_ns()
    jobs: list[_Job] = []
    for target, name in items:
        host = target.host if isinstance(target, Target) else target
        jobs.append(_Job(host, name or host, opts))
    ids = [new_id() for _ in jobs]

    async def resolve_one(job: _Job) -> None:
        try:
            job.resolved = await resolve(job.host, family)
            job.key_address = _norm(job.resolved.address)
        except (OSError, TimeoutError) as exc:
            job.failure = exc
            job.started_at = utc_now()

    names = []
    for job in jobs:
        job.resolved = _literal(job.host, family)
        if job.resolved is None:
            names.append(job)
        else:
            job.key_address = job.resolved.address
    if names:
        await bounded_gather(names, resolve_one, concurrency)

    ok = [job for job in jobs if job.resolved is not None]
    sweep = _Sweep(ok, opts, concurrency)  # may raise PrivilegeError before any packet
    kinds: dict[int, Literal["raw", "dgram"]] = {
        v: "raw" if e.raw else "dgram" for v, e in sweep.engines.items()}
    await sweep.run()
    records = []
    for job, record_id in zip(jobs, ids, strict=True):
        if job.resolved is None:
            records.append(_failed(job, opts, origin, family, record_id, t0_ns))
        else:
            records.append(_record(job, opts, origin, kinds[job.resolved.ip_version],
                                   record_id))
    return records


async def ping(target: Target | str, opts: PingOptions = PingOptions(), *,
               origin: Origin | None = None, family: Literal[4, 6] | None = None,
               name: str | None = None) -> PingRecord:
    """Ping one target; every network outcome is a record, never an exception.

    Raises :class:`PrivilegeError` only when no ICMP socket can be opened at all.
    """
    (record,) = await _sweep([(target, name)], opts, origin, family, 1)
    return record


async def ping_many(targets: Sequence[Target | str], opts: PingOptions = PingOptions(), *,
                    origin: Origin | None = None, family: Literal[4, 6] | None = None,
                    concurrency: int = 8) -> list[PingRecord]:
    """Ping several targets as one sweep; results in input order.

    One ICMP socket per address family serves all targets; requests of the whole
    sweep are spaced by ``opts.pace_s``; at most ``concurrency`` targets are active
    (have requests outstanding) at once.
    """
    return await _sweep([(t, None) for t in targets], opts, origin, family, concurrency)
