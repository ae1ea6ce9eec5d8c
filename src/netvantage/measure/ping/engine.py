"""The engine: one ICMP socket of one family serving every target of a sweep.

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

One socket per family, however many targets
-------------------------------------------
Every raw ICMP socket on a host receives *every* ICMP packet, so one socket
per target would multiply the receive work by the number of targets and
overflow socket buffers (false loss).  A sweep (:func:`~.sweep.ping_many`,
and :func:`~.sweep.ping` as a sweep of one) therefore opens **one socket per address
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
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Literal

from ...results import IcmpError, ms, utc_now
from ..kernel import MSG_ERRQUEUE, kernel_stamp, queued_error, rtt_ns
from ..target import Resolved
from .options import PingOptions
from .sockets import open_icmp_socket, prepare
from .wire import (
    ECHO_REPLY,
    ECHO_REQUEST,
    ERROR_TYPES,
    ID_SEQ,
    echo_partial_sum,
    echo_request,
)

if TYPE_CHECKING:
    from ..pcap import PacketLog
    from .sweep import Sweep

__all__ = ["Engine", "Job", "norm_address"]

_RX_BUFFER = 65_535 + 60  # the largest ICMP message plus an IPv4 header with options


class Job:
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


class Engine:
    """One ICMP socket of one family, shared by every target of a sweep."""

    def __init__(self, ip_version: Literal[4, 6], opts: PingOptions, sweep: Sweep) -> None:
        self.icmp = open_icmp_socket(ip_version, opts.socket)
        self.sock: socket.socket = self.icmp.sock
        self.fd = self.sock.fileno()
        self.v = ip_version
        self.opts = opts
        self.sweep = sweep
        self.raw = bool(self.icmp.is_privileged)
        self.raw4 = self.raw and ip_version == 4  # raw IPv4 sockets deliver the IP header
        self.reply_type = ECHO_REPLY[ip_version]
        self.ident = int.from_bytes(os.urandom(2), "big")
        # A random cookie leads the payload: a reply must echo it (raw sockets).
        cookie = os.urandom(min(8, opts.payload_bytes))
        self.payload = cookie + bytes(
            (i + 0x10) & 0xFF for i in range(len(cookie), opts.payload_bytes))
        self.request_type = ECHO_REQUEST[ip_version]
        self._partial_sum = echo_partial_sum(self.request_type, self.payload)
        self.probes: dict[tuple[str, int], tuple[Job, int]] = {}
        self._next_seq: dict[str, int] = {}
        self.log: PacketLog | None = sweep.log  # --pcap: every request and matched reply
        prepare(self.icmp, ip_version, self.ident, opts)

    def close(self) -> None:
        self.icmp.close()

    def allocate(self, job: Job) -> None:
        """Sequence numbers for ``job``, disjoint from other targets at the same address."""
        base = self._next_seq.get(job.key_address, 0)
        self._next_seq[job.key_address] = (base + job.count) & 0xFFFF
        job.seq_base = base

    def forget(self, job: Job) -> None:
        for i in range(job.sent):
            key = (job.key_address, (job.seq_base + i) & 0xFFFF)
            if self.probes.get(key, (None, 0))[0] is job:
                del self.probes[key]

    # -- sending -------------------------------------------------------------

    def send(self, job: Job, i: int) -> None:
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
        if self.log is not None:
            dst = job.key_address
            self.log.write_l4(packet, real, src=self.log.source(dst), dst=dst,
                              proto=1 if self.v == 4 else 58, ttl=self.opts.ttl,
                              df=self.opts.dont_fragment)

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
            ident, sequence = ID_SEQ.unpack_from(data, offset + 4)
            if self.raw and (ident != self.ident or data[offset + 8:] != self.payload):
                return  # another process's echo (a colliding identifier has no cookie)
            if self.v == 6:
                source = norm_address(source)
            entry = self.probes.get((source, sequence))
            if entry is not None:
                job, i = entry
                stamp = kernel_stamp(anc)
                if self.log is not None:
                    self._log_reply(data, stamp, source)
                job.on_reply(i, stamp, rx_mono)
                if job.complete():
                    self.sweep.finish(job)
        elif self.raw and icmp_type in ERROR_TYPES[self.v]:
            self._on_raw_error(data, offset, icmp_type, source)

    def _log_reply(self, data: bytes, stamp: int | None, source: str) -> None:
        assert self.log is not None
        when = stamp if stamp is not None else time.time_ns()
        if self.raw4:
            self.log.write(data, when)  # the IP header as received
        else:  # the reply's own TTL is not known here: 64 stands for it
            self.log.write_l4(data, when, src=source, dst=self.log.source(source),
                              proto=1 if self.v == 4 else 58, ttl=64)

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
        if inner[0] != ECHO_REQUEST[self.v]:
            return
        ident, sequence = ID_SEQ.unpack_from(inner, 4)
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
            entry = self.probes.get((norm_address(addr[0]), seq)) if addr else None
            if entry is None:
                continue
            job, i = entry
            job.icmp_errors.append(IcmpError(
                seq=i, from_address=error.offender or "?", icmp_type=error.icmp_type,
                icmp_code=error.icmp_code,
            ))


def norm_address(address: str) -> str:
    return address.split("%", 1)[0]
