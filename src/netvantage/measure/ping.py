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
monotonic one, the monotonic value is kept and ``rx_clock`` says so.

Sockets
-------
``SOCK_RAW`` needs root or ``CAP_NET_RAW``.  Without it, Linux offers ICMP
"ping" sockets (``SOCK_DGRAM``) to groups inside ``net.ipv4.ping_group_range``;
the kernel then owns the ICMP identifier and hands ICMP errors to us through
``IP_RECVERR`` and the socket's error queue.  Failing both, a
:class:`~netvantage.errors.PrivilegeError` says what to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from icmplib import ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import SocketPermissionError

from ..errors import PrivilegeError
from ..results import IcmpError, PingBody, PingRecord, Status, ms, new_id, utc_now
from .common import Origin, bounded_gather, describe, status_of
from .target import Target, resolve

__all__ = ["PingOptions", "open_icmp_socket", "ping", "ping_many"]

# Linux socket options the socket module does not always name.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
_IPV6_DONTFRAG = getattr(socket, "IPV6_DONTFRAG", 62)
_MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
_TIMESPEC = struct.Struct("@ll")  # struct timespec: native long seconds, long nanoseconds
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_ORIGIN_ICMP, _ORIGIN_ICMP6 = 2, 3

_ECHO_REPLY = {4: 0, 6: 129}
# ICMP errors that quote our echo request: unreachable, time exceeded, parameter
# problem (and, for IPv6, packet too big).
_ERROR_TYPES = {4: {3, 11, 12}, 6: {1, 2, 3, 4}}
_UNREACHABLE_TYPE = {4: 3, 6: 1}

# Ceilings that keep one command from becoming a flood.
MIN_INTERVAL_S = 0.01
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


class _Session:
    """One target's echo requests and replies, driven by the event loop."""

    def __init__(self, sock: Any, address: str, ip_version: Literal[4, 6],
                 opts: PingOptions) -> None:
        self.icmp = sock
        self.sock: socket.socket = sock.sock
        self.address = address
        self.v = ip_version
        self.opts = opts
        self.raw = bool(sock.is_privileged)
        self.ident = int.from_bytes(os.urandom(2), "big")
        self.payload = bytes((i + 0x10) & 0xFF for i in range(opts.payload_bytes))
        self.tx_real: dict[int, int] = {}
        self.tx_mono: dict[int, int] = {}
        self.rtts: list[float | None] = [None] * opts.count
        self.answered = 0
        self.sent = 0
        self.duplicates = 0
        self.kernel_stamps = 0
        self.user_stamps = 0
        self.icmp_errors: list[IcmpError] = []
        self.send_errors: list[OSError] = []
        self.done = asyncio.Event()
        self._configure()

    def _configure(self) -> None:
        s = self.sock
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self.icmp._set_ttl(self.opts.ttl)
        if self.v == 4:
            if not self.raw:
                s.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
            if self.opts.dont_fragment:
                s.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
        else:
            if not self.raw:
                s.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
            if self.opts.dont_fragment:
                s.setsockopt(socket.IPPROTO_IPV6, _IPV6_DONTFRAG, 1)

    # -- sending -------------------------------------------------------------

    def send(self, seq: int) -> None:
        packet = self.icmp._create_packet(id=self.ident, sequence=seq, payload=self.payload)
        dest = (self.address, 0)
        self.sent += 1
        # The two clock reads sit right against sendto(): see the module docstring.
        real = time.time_ns()
        mono = time.perf_counter_ns()
        try:
            self.sock.sendto(packet, dest)
        except OSError as exc:
            self.send_errors.append(exc)
            return
        self.tx_real[seq] = real
        self.tx_mono[seq] = mono

    # -- receiving -----------------------------------------------------------

    def on_readable(self) -> None:
        if not self.raw:
            self._drain_errqueue()
        while True:
            try:
                data, anc, _flags, addr = self.sock.recvmsg(65_535, 256)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # A datagram socket reports a pending ICMP error once through
                # recvmsg(); the details wait in the error queue.
                if not self.raw:
                    self._drain_errqueue()
                    continue
                break
            rx_mono = time.perf_counter_ns()
            self._on_packet(data, anc, addr[0], rx_mono)
        if self.sent == self.opts.count and self.answered >= self.sent - len(self.send_errors):
            self.done.set()

    def _kernel_stamp(self, anc: list[tuple[int, int, bytes]]) -> int | None:
        for level, kind, data in anc:
            is_stamp = (level, kind) == (socket.SOL_SOCKET, _SO_TIMESTAMPNS)
            if is_stamp and len(data) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(data)
                return int(sec) * 1_000_000_000 + int(nsec)
        return None

    def _on_packet(self, data: bytes, anc: list[tuple[int, int, bytes]], source: str,
                   rx_mono: int) -> None:
        # Raw IPv4 sockets deliver the IP header too; IPv6 raw and all datagram
        # sockets start at the ICMP header.
        offset = (data[0] & 0x0F) * 4 if (self.raw and self.v == 4 and data) else 0
        if len(data) < offset + 8:
            return
        icmp_type = data[offset]
        if icmp_type == _ECHO_REPLY[self.v]:
            reply = self.icmp._parse_reply(packet=data, source=source, current_time=0.0)
            if reply is None or _norm(source) != _norm(self.address):
                return
            if self.raw and reply.id != self.ident:
                return
            self._on_reply(reply.sequence, self._kernel_stamp(anc), rx_mono)
        elif self.raw and icmp_type in _ERROR_TYPES[self.v]:
            reply = self.icmp._parse_reply(packet=data, source=source, current_time=0.0)
            if reply is None or reply.id != self.ident or reply.sequence not in self.tx_mono:
                return
            self.icmp_errors.append(IcmpError(
                seq=reply.sequence, from_address=source,
                icmp_type=icmp_type, icmp_code=data[offset + 1],
            ))

    def _on_reply(self, seq: int, rx_real: int | None, rx_mono: int) -> None:
        if seq not in self.tx_mono or seq >= len(self.rtts):
            return
        if self.rtts[seq] is not None:
            self.duplicates += 1
            return
        mono_ns = rx_mono - self.tx_mono[seq]
        if mono_ns > self.opts.timeout_s * 1e9:
            return  # late: counted as lost, as ping -W does
        kernel_ns = None if rx_real is None else rx_real - self.tx_real[seq]
        if kernel_ns is not None and 0 <= kernel_ns <= mono_ns:
            self.rtts[seq] = ms(kernel_ns)
            self.kernel_stamps += 1
        else:
            self.rtts[seq] = ms(mono_ns)
            self.user_stamps += 1
        self.answered += 1

    def _drain_errqueue(self) -> None:
        level, kind = ((socket.IPPROTO_IP, _IP_RECVERR) if self.v == 4
                       else (socket.IPPROTO_IPV6, _IPV6_RECVERR))
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65_535, 512, _MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for lvl, typ, cdata in anc:
                if lvl != level or typ != kind or len(cdata) < _EXTENDED_ERR.size:
                    continue
                _errno, origin, itype, icode, _pad, _info, _data = _EXTENDED_ERR.unpack_from(cdata)
                if origin not in (_ORIGIN_ICMP, _ORIGIN_ICMP6) or len(data) < 8:
                    continue
                seq = int.from_bytes(data[6:8], "big")
                if seq not in self.tx_mono:
                    continue
                offender = _offender(cdata[_EXTENDED_ERR.size:]) or "?"
                self.icmp_errors.append(IcmpError(
                    seq=seq, from_address=offender, icmp_type=itype, icmp_code=icode,
                ))


def _norm(address: str) -> str:
    return address.split("%", 1)[0]


def _offender(sockaddr: bytes) -> str | None:
    """The address in the ``sockaddr`` that follows ``sock_extended_err`` (SO_EE_OFFENDER)."""
    if len(sockaddr) >= 8 and int.from_bytes(sockaddr[0:2], "little") == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, sockaddr[4:8])
    if len(sockaddr) >= 24 and int.from_bytes(sockaddr[0:2], "little") == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, sockaddr[8:24])
    return None


def _error_text(err: IcmpError, ip_version: int) -> str:
    what = "destination unreachable" if err.icmp_type == _UNREACHABLE_TYPE[ip_version] else "error"
    return (f"ICMPv{ip_version if ip_version == 6 else ''} {what} "
            f"(type {err.icmp_type} code {err.icmp_code}) from {err.from_address}").replace(
                "ICMPv ", "ICMP ")


async def ping(target: Target | str, opts: PingOptions = PingOptions(), *,
               origin: Origin | None = None, family: Literal[4, 6] | None = None,
               name: str | None = None) -> PingRecord:
    """Ping one target; every network outcome is a record, never an exception.

    Raises :class:`PrivilegeError` only when no ICMP socket can be opened at all.
    """
    origin = origin or Origin.local()
    host = target.host if isinstance(target, Target) else target
    started_at = utc_now()
    t0 = time.perf_counter_ns()
    record_id = new_id()

    def failed(status: Status, error: str, address: str | None, v: Literal[4, 6]) -> PingRecord:
        body = PingBody.from_samples(
            [], ip_version=v, socket=None, payload_bytes=opts.payload_bytes,
            interval_s=opts.interval_s, timeout_s=opts.timeout_s,
            dont_fragment=opts.dont_fragment,
        )
        return PingRecord(
            id=record_id, agent=origin.agent, region=origin.region, target=name or host,
            address=address, started_at=started_at,
            duration_ms=ms(time.perf_counter_ns() - t0), status=status, error=error, body=body,
        )

    try:
        resolved = await resolve(host, family)
    except (OSError, TimeoutError) as exc:
        return failed(status_of(exc), describe(exc), None, family or 4)

    icmp = open_icmp_socket(resolved.ip_version, opts.socket)
    session = _Session(icmp, resolved.address, resolved.ip_version, opts)
    loop = asyncio.get_running_loop()
    loop.add_reader(session.sock.fileno(), session.on_readable)
    started_at = utc_now()
    t0 = time.perf_counter_ns()
    try:
        start = loop.time()
        for seq in range(opts.count):
            delay = start + seq * opts.interval_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            session.send(seq)
        # Wait for the last replies: at most one timeout after the last send.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.done.wait(), opts.timeout_s)
        session.on_readable()  # anything that arrived in the last instant
    finally:
        loop.remove_reader(session.sock.fileno())
        icmp.close()
    duration_ms = ms(time.perf_counter_ns() - t0)

    rx_clock: Literal["kernel", "user", "mixed"] | None = None
    if session.kernel_stamps and session.user_stamps:
        rx_clock = "mixed"
    elif session.user_stamps:
        rx_clock = "user"
    elif session.kernel_stamps:
        rx_clock = "kernel"
    body = PingBody.from_samples(
        session.rtts[: session.sent] if session.sent else [],
        ip_version=resolved.ip_version,
        socket="raw" if session.raw else "dgram",
        payload_bytes=opts.payload_bytes,
        interval_s=opts.interval_s,
        timeout_s=opts.timeout_s,
        dont_fragment=opts.dont_fragment,
        duplicates=session.duplicates,
        icmp_errors=session.icmp_errors,
        rx_clock=rx_clock,
    )
    status: Status
    error: str | None
    if body.received:
        status, error = "ok", None
    elif session.icmp_errors:
        first = session.icmp_errors[0]
        unreachable = first.icmp_type == _UNREACHABLE_TYPE[resolved.ip_version]
        status = "unreachable" if unreachable else "error"
        error = _error_text(first, resolved.ip_version)
    elif session.send_errors:
        status, error = status_of(session.send_errors[0]), describe(session.send_errors[0])
    else:
        status = "timeout"
        error = f"no reply to {body.sent} echo request(s) within {opts.timeout_s:g} s each"
    return PingRecord(
        id=record_id, agent=origin.agent, region=origin.region, target=name or host,
        address=resolved.address, started_at=started_at, duration_ms=duration_ms,
        status=status, error=error, body=body,
    )


async def ping_many(targets: Sequence[Target | str], opts: PingOptions = PingOptions(), *,
                    origin: Origin | None = None, family: Literal[4, 6] | None = None,
                    concurrency: int = 8) -> list[PingRecord]:
    """Ping several targets, at most ``concurrency`` at a time; results in input order."""
    return await bounded_gather(
        targets, lambda t: ping(t, opts, origin=origin, family=family), concurrency
    )
