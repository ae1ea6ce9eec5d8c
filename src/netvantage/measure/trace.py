"""Paris traceroute over raw sockets (ICMP, UDP, TCP SYN), IPv4 and IPv6, and an
unprivileged mode that reads ICMP errors through ``IP_RECVERR``.

How a trace runs (``method="raw"``)
-----------------------------------
* One flow per trace (see :mod:`netvantage.measure.packets`): the fields load
  balancers hash stay constant, and each probe carries its own id (ICMP
  sequence, UDP checksum, TCP sequence; on IPv4 also the IP id).  A reply is
  matched to its probe by (destination quoted, protocol, flow, probe id), so a
  probe's TTL can never be mistaken for another's.
* TTLs go out a *window* at a time, all of the window's TTLs and probes in
  flight together, paced by a global token rate (``pps``) shared by every
  trace of the run; a probe whose turn comes after its trace heard the
  destination at a lower TTL is not sent, and its slot goes to the next.
  When every probe of a window has answered or timed out, the trace stops
  if the destination answered (``reached``), a router said unreachable, or
  ``gap_limit`` TTLs in a row were silent; otherwise the next window goes
  out, up to ``max_ttl``.  One deadline bounds the whole run.
* ``cycles`` > 1 repeats the trace (mtr style) at ``cycle_interval_s``; every
  probe is kept with its cycle, and statistics are per (TTL, responder).

Where an RTT comes from
-----------------------
Everything runs on one asyncio loop in one thread.  The send time is
``CLOCK_REALTIME`` read right before ``sendto()``; the receive time is the
kernel's ``SO_TIMESTAMPNS`` stamp on the ICMP error (or echo reply, or
SYN/ACK).  RTT = receive − send, guarded by the monotonic clock as in
:mod:`netvantage.measure.ping`.  It includes the kernel's output path, the
path to the responder and back and the responder's time to answer (routers
generate ICMP errors on their slow path), not this process's wake-up.

Sockets: IPv4 sends through one ``IPPROTO_RAW`` socket (we write the IP
header: TTL and id per probe); IPv6 through a raw socket of the probe's
protocol with the hop limit given per packet (``IPV6_HOPLIMIT`` ancillary
data).  Replies arrive on raw ICMP/ICMPv6 sockets (and raw TCP sockets for
SYN/ACK or RST).  All of this needs root or ``CAP_NET_RAW``.

Without privileges (``method="recverr"``)
-----------------------------------------
Like ``tracepath``: an ordinary UDP socket (or an unprivileged ICMP socket)
with ``IP_RECVERR``, one probe at a time, the TTL set with ``IP_TTL``; the
kernel hands back each ICMP error with the offender's address and its own
timestamp.  Slower (one round trip per probe), the same flow throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from ..errors import PrivilegeError
from ..results import Hop, Status, TraceBody, TraceProbe, TraceRecord, ms, new_id, utc_now
from .common import Origin, describe, status_of
from .kernel import (
    IP_RECVERR,
    IPV6_RECVERR,
    MSG_ERRQUEUE,
    SO_TIMESTAMPNS,
    kernel_stamp,
    queued_error,
    rtt_ns,
)
from .packets import (
    PROTO_ICMP4,
    PROTO_ICMP6,
    PROTO_TCP,
    PROTO_UDP,
    Quoted,
    icmp_echo,
    ipv4_header,
    parse_icmp4,
    parse_icmp6,
    udp_probe,
)
from .target import Target, parse_target, resolve

__all__ = ["TraceOptions", "trace", "trace_many"]

Protocol = Literal["icmp", "udp", "tcp"]
Method = Literal["auto", "raw", "recverr"]

_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
_DEFAULT_PORT = {"udp": 33434, "tcp": 80}
_UNREACHABLE = {4: 3, 6: 1}
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_TIME_EXCEEDED = {4: 11, 6: 3}


@dataclass(frozen=True, slots=True)
class TraceOptions:
    protocol: Protocol = "icmp"
    port: int | None = None
    probes_per_hop: int = 3
    cycles: int = 1
    cycle_interval_s: float = 1.0
    first_ttl: int = 1
    max_ttl: int = 30
    window: int = 8
    gap_limit: int = 5
    probe_timeout_s: float = 2.0
    deadline_s: float = 60.0
    pps: float = 100.0
    payload_bytes: int = 24
    method: Method = "auto"

    def __post_init__(self) -> None:
        if not 1 <= self.first_ttl <= self.max_ttl <= 255:
            raise ValueError("need 1 <= first_ttl <= max_ttl <= 255")
        if not 1 <= self.probes_per_hop <= 64 or not 1 <= self.cycles <= 10_000:
            raise ValueError("probes per hop 1..64, cycles 1..10000")
        if not 0 < self.pps <= 10_000:
            raise ValueError("pps must be in (0, 10000]: a tracer must not flood")
        if not 1 <= self.window <= 64 or not 1 <= self.gap_limit <= 255:
            raise ValueError("window 1..64, gap limit 1..255")
        if not 0 < self.probe_timeout_s <= 60 or not 0 < self.deadline_s <= 3600:
            raise ValueError("probe timeout (0, 60] s, deadline (0, 3600] s")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError("port must be 1..65535")

    @property
    def dport(self) -> int | None:
        if self.protocol == "icmp":
            return None
        return self.port or _DEFAULT_PORT[self.protocol]


def _rtt_ms(tx_real: int, tx_mono: int, rx_real: int | None, rx_mono: int) -> float:
    return ms(rtt_ns(tx_real, tx_mono, rx_real, rx_mono)[0])


def _source_for(dst: str, version: int) -> str:
    """The address the kernel would send from towards ``dst`` (no packet is sent)."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((dst, 33434))
        return str(s.getsockname()[0])


# ----------------------------------------------------------------------------- raw engine


@dataclass
class _Probe:
    trace: _Trace
    cycle: int
    ttl: int
    index: int
    tx_real: int = 0
    tx_mono: int = 0
    result: TraceProbe | None = None
    sent: bool = False


@dataclass
class _Trace:
    """One destination's trace: its flow, its probes, its stopping state."""

    dst: str
    version: Literal[4, 6]
    src: str
    opts: TraceOptions
    flow_id: int
    sport: int
    probes: dict[int, _Probe] = field(default_factory=dict)  # probe id → probe
    next_id: int = 1
    dest_ttl: dict[int, int] = field(default_factory=dict)  # cycle → TTL
    # TCP: cycle → lowest TTL of a SYN the destination acknowledged with a bare ACK
    # (it reached the destination; its SYN/ACK was lost): see _resolve_tcp_destination().
    dest_hint: dict[int, int] = field(default_factory=dict)
    collisions: int = 0  # TCP: bare ACKs seen, each a SYN that met a half-open connection
    stop_reason: str | None = None
    unreachable_ttl: int | None = None
    highest_ttl: int = 0
    window_done: asyncio.Event = field(default_factory=asyncio.Event)
    outstanding: int = 0

    def new_probe(self, cycle: int, ttl: int, index: int) -> tuple[int, _Probe]:
        pid = self.next_id
        self.next_id += 1
        if self.next_id > 0xFFFE:
            raise ValueError("more than 65534 probes in one trace")
        probe = _Probe(self, cycle, ttl, index)
        self.probes[pid] = probe
        return pid, probe


class _RawEngine:
    """Shared sockets, one reader per socket, a global pacer; serves many traces."""

    def __init__(self, opts: TraceOptions) -> None:
        self.opts = opts
        self.loop = asyncio.get_running_loop()
        self.socks: dict[str, socket.socket] = {}
        self.by_dst: dict[str, list[_Trace]] = {}
        self._next_send = 0.0
        self._interval = 1.0 / opts.pps
        # Probes waiting for a send slot, in order; see _pace().
        self._queue: deque[tuple[asyncio.Future[bool], _Probe]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._open()

    def _open(self) -> None:
        try:
            tx4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        except PermissionError:
            raise PrivilegeError(
                "traceroute over raw sockets needs root or CAP_NET_RAW; without them use "
                "--method recverr (UDP or ICMP datagram sockets, like tracepath)") from None
        self.socks["tx4"] = tx4
        rx = {
            "icmp4": (socket.AF_INET, socket.IPPROTO_ICMP),
            "icmp6": (socket.AF_INET6, socket.IPPROTO_ICMPV6),
        }
        if self.opts.protocol == "tcp":
            rx["tcp4"] = (socket.AF_INET, socket.IPPROTO_TCP)
            rx["tcp6"] = (socket.AF_INET6, socket.IPPROTO_TCP)
        proto6 = {"icmp": socket.IPPROTO_ICMPV6, "udp": socket.IPPROTO_UDP,
                  "tcp": socket.IPPROTO_TCP}[self.opts.protocol]
        if proto6 == socket.IPPROTO_ICMPV6:
            self.socks["tx6"] = self._rx_socket(socket.AF_INET6, proto6, "icmp6")
        else:
            self.socks["tx6"] = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto6)
            self.socks["tx6"].setblocking(False)
        for name, (family, proto) in rx.items():
            if name not in self.socks:
                self.socks[name] = self._rx_socket(family, proto, name)
        tx4.setblocking(False)

    def _rx_socket(self, family: int, proto: int, name: str) -> socket.socket:
        s = socket.socket(family, socket.SOCK_RAW, proto)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)
        self.socks[name] = s
        self.loop.add_reader(s.fileno(), self._on_readable, name)
        return s

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for s in self.socks.values():
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(s.fileno())
            s.close()
        self.socks.clear()

    # -- sending ---------------------------------------------------------------

    async def _pace(self, probe: _Probe) -> bool:
        """Wait for this probe's send slot (first come, first served, ``pps`` a second).

        False if, by the time its slot comes, the probe has become useless: its
        trace heard the destination (or an unreachable) at a lower TTL.  Such a
        probe gives its slot to the next in line, so when many traces share the
        rate, the TTLs of a window beyond the destination cost no time.
        """
        fut: asyncio.Future[bool] = self.loop.create_future()
        if not self._queue:  # idle until now: the next slot is no earlier than now
            self._next_send = max(self._next_send, self.loop.time())
        self._queue.append((fut, probe))
        if self._timer is None:
            self._dispatch()
        return await fut

    def _dispatch(self) -> None:
        """Hand out the slot that is due (at most one), then wait for the next."""
        self._timer = None
        now = self.loop.time()
        if now >= self._next_send:
            while self._queue:
                fut, probe = self._queue.popleft()
                if fut.done():  # its task was cancelled
                    continue
                if not _wanted(probe):
                    fut.set_result(False)
                    continue
                fut.set_result(True)
                # A fixed schedule while busy: a timer that fires late does not slow the rate.
                self._next_send += self._interval
                break
        if self._queue:
            self._timer = self.loop.call_at(self._next_send, self._dispatch)

    def _packet(self, t: _Trace, pid: int, ttl: int) -> bytes:
        o = self.opts
        if o.protocol == "icmp":
            body = icmp_echo(t.version, t.flow_id, pid, o.payload_bytes, t.src, t.dst)
            proto = PROTO_ICMP4
        elif o.protocol == "udp":
            assert o.dport is not None
            body = udp_probe(t.src, t.dst, t.sport, o.dport, pid, o.payload_bytes)
            proto = PROTO_UDP
        else:
            body = _tcp_syn(t.src, t.dst, t.sport, o.dport or 80, pid << 16)
            proto = PROTO_TCP
        if t.version == 4:
            return ipv4_header(t.src, t.dst, proto, ttl, pid, 20 + len(body)) + body
        return body

    async def send(self, t: _Trace, probe: _Probe, pid: int) -> None:
        if not await self._pace(probe):
            return  # not sent: see _pace()
        data = self._packet(t, pid, probe.ttl)
        sock = self.socks["tx4" if t.version == 4 else "tx6"]
        # Clocks read right against the system call: see the module docstring.
        probe.tx_real = time.time_ns()
        probe.tx_mono = time.perf_counter_ns()
        try:
            if t.version == 4:
                sock.sendto(data, (t.dst, 0))
            else:
                anc = [(socket.IPPROTO_IPV6, _IPV6_HOPLIMIT, struct.pack("@i", probe.ttl))]
                sock.sendmsg([data], anc, 0, (t.dst, 0))
        except OSError as exc:
            probe.result = TraceProbe(cycle=probe.cycle)
            probe.sent = True
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) and t.stop_reason is None:
                t.stop_reason = "unreachable"
            return
        probe.sent = True
        t.outstanding += 1

    # -- receiving -------------------------------------------------------------

    def _on_readable(self, name: str) -> None:
        sock = self.socks.get(name)
        if sock is None:
            return
        for _ in range(256):
            try:
                data, anc, _flags, addr = sock.recvmsg(4096, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            rx_mono = time.perf_counter_ns()
            rx_real = kernel_stamp(anc)
            if name == "icmp4":
                quoted = parse_icmp4(data)
            elif name == "icmp6":
                hops = next((struct.unpack("@i", d[:4])[0] for lvl, k, d in anc
                             if lvl == socket.IPPROTO_IPV6 and k == _IPV6_HOPLIMIT), None)
                quoted = parse_icmp6(data, addr[0].split("%")[0], hops)
            else:
                quoted = _parse_tcp(data, addr[0].split("%")[0], name == "tcp4")
            if quoted is not None:
                self._match(quoted, rx_real, rx_mono)

    def _match(self, q: Quoted, rx_real: int | None, rx_mono: int) -> None:
        for t in self.by_dst.get(q.dst, ()):
            expected_proto = {"icmp": PROTO_ICMP4 if t.version == 4 else PROTO_ICMP6,
                              "udp": PROTO_UDP, "tcp": PROTO_TCP}[self.opts.protocol]
            if q.proto != expected_proto or q.flow != self._flow(t):
                continue
            pid = q.probe_id >> 16 if self.opts.protocol == "tcp" else q.probe_id
            probe = t.probes.get(pid)
            if probe is None or not probe.sent:
                continue
            if q.proto == PROTO_TCP and q.echo_reply and not q.icmp_type & (_SYN | _RST):
                # A bare ACK: the destination, half-open since this probe's SYN, answers
                # a *later* SYN of ours by acknowledging this one.  It is no probe's answer
                # (never its RTT), only proof that this probe reached the destination.
                t.collisions += 1
                hint = t.dest_hint.get(probe.cycle)
                if hint is None or probe.ttl < hint:
                    t.dest_hint[probe.cycle] = probe.ttl
                return
            if probe.result is not None:
                continue
            rtt = _rtt_ms(probe.tx_real, probe.tx_mono, rx_real, rx_mono)
            if rtt > self.opts.probe_timeout_s * 1000:
                return  # late: the probe already counts as lost
            tcp_flags = None
            icmp_type: int | None = q.icmp_type
            icmp_code: int | None = q.icmp_code
            if q.proto == PROTO_TCP and q.echo_reply:
                tcp_flags = "SA" if q.icmp_type == _SYN | _ACK else "R"
                icmp_type = icmp_code = None
            probe.result = TraceProbe(cycle=probe.cycle, address=q.responder, rtt_ms=rtt,
                                      icmp_type=icmp_type, icmp_code=icmp_code,
                                      tcp_flags=tcp_flags, reply_ttl=q.reply_ttl)
            self._note(t, probe, q)
            return

    def _flow(self, t: _Trace) -> int:
        if self.opts.protocol == "icmp":
            return t.flow_id
        assert self.opts.dport is not None
        return (t.sport << 16) | self.opts.dport

    def _note(self, t: _Trace, probe: _Probe, q: Quoted) -> None:
        t.outstanding -= 1
        from_dst = q.responder == t.dst
        if from_dst and (q.echo_reply or q.icmp_type == _UNREACHABLE[t.version]):
            current = t.dest_ttl.get(probe.cycle)
            if current is None or probe.ttl < current:
                t.dest_ttl[probe.cycle] = probe.ttl
        elif (not from_dst and q.icmp_type == _UNREACHABLE[t.version]
              and (t.unreachable_ttl is None or probe.ttl < t.unreachable_ttl)):
            t.unreachable_ttl = probe.ttl
        if t.outstanding <= 0:
            t.window_done.set()


def _wanted(probe: _Probe) -> bool:
    """Whether a probe can still tell anything: not past where its trace ended."""
    t = probe.trace
    heard = [x for x in (t.dest_ttl.get(probe.cycle), t.dest_hint.get(probe.cycle))
             if x is not None]
    limit = min(heard) if heard else None
    if t.unreachable_ttl is not None:
        limit = min(limit or t.unreachable_ttl, t.unreachable_ttl)
    return limit is None or probe.ttl <= limit


def _tcp_syn(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
    """A TCP SYN with an MSS option, checksummed by scapy (loaded only in TCP mode)."""
    from scapy.layers.inet import (
        IP,
        TCP,
    )
    from scapy.layers.inet6 import IPv6

    segment = TCP(sport=sport, dport=dport, seq=seq, flags="S", window=65535,
                  options=[("MSS", 1460)])
    packet = (IP(src=src, dst=dst) if ":" not in dst else IPv6(src=src, dst=dst)) / segment
    raw = bytes(packet)
    return raw[20:] if ":" not in dst else raw[40:]


def _parse_tcp(data: bytes, source: str, v4: bool) -> Quoted | None:
    """A SYN/ACK or RST from a destination, as seen on a raw TCP socket."""
    offset = (data[0] & 0x0F) * 4 if v4 and data else 0
    seg = data[offset:]
    if len(seg) < 20:
        return None
    sport, dport, _seq, ack = struct.unpack_from("!HHII", seg)
    flags = seg[13]
    if not flags & 0x10 and not flags & 0x04:  # neither ACK nor RST
        return None
    reply_ttl = data[8] if v4 else None
    # The destination's source port is our dport: the flow, seen from our side.
    return Quoted(source, flags & 0x16, 0, source, PROTO_TCP, (dport << 16) | sport,
                  (ack - 1) & 0xFFFFFFFF, True, reply_ttl)


async def _run_raw(engine: _RawEngine, t: _Trace, deadline: float) -> None:
    o = engine.opts
    loop = asyncio.get_running_loop()
    start = loop.time()
    for cycle in range(o.cycles):
        begin = start + cycle * o.cycle_interval_s
        if begin > loop.time():
            await asyncio.sleep(begin - loop.time())
        if loop.time() >= deadline:
            t.stop_reason = "deadline"
            return
        low = o.first_ttl
        silent_run = 0
        while low <= o.max_ttl:
            high = min(low + o.window - 1, o.max_ttl)
            if cycle > 0 and 0 in t.dest_ttl:
                high = min(high, t.dest_ttl[0])
            t.window_done.clear()
            batch: list[tuple[int, _Probe]] = []
            for index in range(o.probes_per_hop):
                for ttl in range(low, high + 1):
                    batch.append(t.new_probe(cycle, ttl, index))
            for pid, probe in batch:
                if loop.time() >= deadline:
                    break
                await engine.send(t, probe, pid)
            t.highest_ttl = max(t.highest_ttl, high)
            await _settle(t, batch, cycle, deadline)
            if o.protocol == "tcp" and (cycle in t.dest_ttl or cycle in t.dest_hint):
                await _resolve_tcp_destination(engine, t, cycle, deadline)
            if cycle in t.dest_ttl:
                break
            if t.unreachable_ttl is not None or t.stop_reason == "unreachable":
                t.stop_reason = "unreachable"
                break
            for ttl in range(low, high + 1):
                answered = any(p.result is not None and p.result.address is not None
                               for p in t.probes.values() if p.cycle == cycle and p.ttl == ttl)
                silent_run = 0 if answered else silent_run + 1
            if silent_run >= o.gap_limit:
                t.stop_reason = "gap"
                break
            if loop.time() >= deadline:
                t.stop_reason = "deadline"
                return
            low = high + 1


async def _settle(t: _Trace, batch: list[tuple[int, _Probe]], cycle: int,
                  deadline: float) -> None:
    """Wait for a batch's answers: probe_timeout_s after its last probe left, at most.

    Whatever has not answered by then is recorded as lost (a late answer is ignored).
    """
    loop = asyncio.get_running_loop()
    end = min(loop.time() + t.opts.probe_timeout_s, deadline)
    while t.outstanding > 0 and loop.time() < end:
        t.window_done.clear()
        try:
            await asyncio.wait_for(t.window_done.wait(), end - loop.time())
        except TimeoutError:
            break
    for _pid, probe in batch:
        if probe.result is None:
            probe.result = TraceProbe(cycle=cycle)
    t.outstanding = 0


async def _resolve_tcp_destination(engine: _RawEngine, t: _Trace, cycle: int,
                                   deadline: float) -> None:
    """Find the destination's TTL and measure its hop one SYN at a time (TCP mode).

    All probes of a trace share one 4-tuple (Paris), and the destination keeps
    state for it: the first SYN that reaches it gets a SYN/ACK and leaves a
    half-open connection, which lasts until our kernel's RST to that SYN/ACK
    gets back (a round trip later).  A SYN arriving meanwhile gets no answer of
    its own, at most a bare ACK of the *first* SYN (Linux sends one per 500 ms).
    So of the window's SYNs that reach the destination only the first can
    answer: the silence of the others says nothing, and if that first
    SYN/ACK is lost, the destination's TTL looks silent and the destination
    seems to be farther away.

    So every unanswered probe of this cycle above the last TTL a router
    answered (below where the destination was heard, by an answer or by a bare
    ACK) is withdrawn, and those TTLs are probed again from the lowest up, one
    SYN at a time: the next leaves only once the previous was answered (our
    RST to that answer then travels ahead of it) or timed out.  The first TTL
    where the destination answers is its TTL, and its hop is filled up to
    ``probes_per_hop`` the same way.  A serial probe that drew a bare ACK met a
    half-open connection (our RST was lost; the RST to that ACK clears it): it
    is withdrawn and sent again, a few times at most.
    """
    o = engine.opts
    loop = asyncio.get_running_loop()

    def heard() -> int:
        return min(x for x in (t.dest_ttl.get(cycle), t.dest_hint.get(cycle)) if x is not None)

    def at(ttl: int) -> list[_Probe]:
        return [p for p in t.probes.values() if p.cycle == cycle and p.ttl == ttl]

    top = heard()
    routers = [p.ttl for p in t.probes.values()
               if p.cycle == cycle and p.ttl < top and p.result is not None
               and p.result.address not in (None, t.dst)]
    ttl = max(routers, default=o.first_ttl - 1) + 1
    for pid, p in list(t.probes.items()):
        if p.cycle == cycle and p.ttl >= ttl and (p.result is None or p.result.address is None):
            del t.probes[pid]
    index = o.probes_per_hop  # serial probes come after the window's in the record
    retries = o.probes_per_hop
    while ttl <= heard():
        probes = at(ttl)
        if len(probes) >= o.probes_per_hop:
            if any(p.result is not None and p.result.address == t.dst for p in probes):
                return
            ttl += 1
            continue
        if loop.time() >= deadline:
            return
        pid, probe = t.new_probe(cycle, ttl, index)
        index += 1
        collisions = t.collisions
        t.window_done.clear()
        await engine.send(t, probe, pid)
        await _settle(t, [(pid, probe)], cycle, deadline)
        silent = probe.result is None or probe.result.address is None
        if silent and t.collisions != collisions and retries > 0:
            retries -= 1
            del t.probes[pid]


# ----------------------------------------------------------------------------- recverr


async def _run_recverr(t: _Trace, deadline: float) -> None:
    """One probe at a time on an ordinary socket; errors from the error queue (tracepath)."""
    o = t.opts
    loop = asyncio.get_running_loop()
    family = socket.AF_INET if t.version == 4 else socket.AF_INET6
    if o.protocol == "udp":
        sock = socket.socket(family, socket.SOCK_DGRAM)
    elif o.protocol == "icmp":
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM,
                                 socket.IPPROTO_ICMP if t.version == 4 else socket.IPPROTO_ICMPV6)
        except PermissionError:
            raise PrivilegeError(
                "unprivileged ICMP traceroute needs net.ipv4.ping_group_range to include "
                "your group; --protocol udp --method recverr needs nothing") from None
    else:
        raise PrivilegeError("TCP traceroute needs raw sockets (root or CAP_NET_RAW)")
    sock.setblocking(False)
    level, recverr = ((socket.IPPROTO_IP, IP_RECVERR) if t.version == 4
                      else (socket.IPPROTO_IPV6, IPV6_RECVERR))
    sock.setsockopt(level, recverr, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    port = o.dport or 0
    sock.connect((t.dst, port))
    ttl_opt = ((socket.IPPROTO_IP, socket.IP_TTL) if t.version == 4
               else (socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS))
    got: asyncio.Future[tuple[Any, ...]] | None = None
    current: dict[str, Any] = {}

    def readable() -> None:
        nonlocal got
        while True:
            try:
                data, anc, _fl, _addr = sock.recvmsg(2048, 512, MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            rx_mono = time.perf_counter_ns()
            error = queued_error(anc, t.version)
            if error is None:
                continue
            # The error quotes our datagram: the probe id is in it where the
            # router quoted enough (ICMP: the sequence; UDP: our payload).
            if o.protocol == "icmp" and len(data) >= 8:
                seq = struct.unpack_from("!H", data, 6)[0]
            elif o.protocol == "udp" and len(data) >= 2:
                seq = struct.unpack_from("!H", data, 0)[0]
            else:
                seq = current.get("seq")
            if got is not None and not got.done() and seq == current.get("seq"):
                got.set_result((error.offender, error.icmp_type, error.icmp_code,
                                kernel_stamp(anc), rx_mono))
        while True:
            try:
                data, anc, _fl, _addr = sock.recvmsg(2048, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # the pending error was reported through the error queue
            rx_mono = time.perf_counter_ns()
            if o.protocol == "icmp" and len(data) >= 8 and data[0] in (0, 129):
                seq = struct.unpack_from("!H", data, 6)[0]
                if got is not None and not got.done() and seq == current.get("seq"):
                    got.set_result((t.dst, data[0], 0, kernel_stamp(anc), rx_mono))

    loop.add_reader(sock.fileno(), readable)
    try:
        for cycle in range(o.cycles):
            begin = loop.time()
            silent_run = 0
            for ttl in range(o.first_ttl, o.max_ttl + 1):
                answered_ttl = False
                for index in range(o.probes_per_hop):
                    if loop.time() >= deadline:
                        t.stop_reason = "deadline"
                        return
                    pid, probe = t.new_probe(cycle, ttl, index)
                    current["seq"] = pid
                    sock.setsockopt(*ttl_opt, ttl)
                    payload = (icmp_echo(t.version, 0, pid, o.payload_bytes, t.src, t.dst)
                               if o.protocol == "icmp"
                               else struct.pack("!H", pid) + bytes(o.payload_bytes))
                    got = loop.create_future()
                    probe.tx_real, probe.tx_mono = time.time_ns(), time.perf_counter_ns()
                    try:
                        sock.send(payload)
                    except OSError as exc:
                        probe.result = TraceProbe(cycle=cycle)
                        if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                            t.stop_reason = "unreachable"
                            return
                        continue
                    probe.sent = True
                    try:
                        res = await asyncio.wait_for(
                            got, min(o.probe_timeout_s, max(0.001, deadline - loop.time())))
                    except TimeoutError:
                        probe.result = TraceProbe(cycle=cycle)
                        continue
                    responder, itype, icode, rx_real, rx_mono = res
                    probe.result = TraceProbe(
                        cycle=cycle, address=responder, icmp_type=itype, icmp_code=icode,
                        rtt_ms=_rtt_ms(probe.tx_real, probe.tx_mono, rx_real, rx_mono))
                    answered_ttl = True
                    if responder == t.dst:
                        t.dest_ttl.setdefault(cycle, ttl)
                    elif itype == _UNREACHABLE[t.version]:
                        t.unreachable_ttl = ttl
                t.highest_ttl = max(t.highest_ttl, ttl)
                if cycle in t.dest_ttl:
                    break
                if t.unreachable_ttl is not None:
                    t.stop_reason = "unreachable"
                    break
                silent_run = 0 if answered_ttl else silent_run + 1
                if silent_run >= o.gap_limit:
                    t.stop_reason = "gap"
                    break
            rest = begin + o.cycle_interval_s - loop.time()
            if cycle + 1 < o.cycles and rest > 0:
                await asyncio.sleep(rest)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


# ----------------------------------------------------------------------------- records


def _record(t: _Trace, method: Literal["raw", "recverr"], origin: Origin, name: str,
            record_id: str, started_at: Any, t0: int) -> TraceRecord:
    o = t.opts
    reached = bool(t.dest_ttl)
    dest_ttl = min(t.dest_ttl.values()) if reached else None
    last = dest_ttl or (t.unreachable_ttl if t.unreachable_ttl else t.highest_ttl)
    by_ttl: dict[int, list[TraceProbe]] = {}
    for probe in sorted(t.probes.values(), key=lambda p: (p.ttl, p.cycle, p.index)):
        if probe.ttl <= last and (probe.sent or probe.result is not None):
            by_ttl.setdefault(probe.ttl, []).append(probe.result or TraceProbe(cycle=probe.cycle))
    hops = [Hop.from_probes(ttl, by_ttl.get(ttl, [])) for ttl in range(1, last + 1)]
    stop = "reached" if reached else (t.stop_reason or "max_ttl")
    status: Status = "ok" if reached else "unreachable" if stop == "unreachable" else "timeout"
    error = None if reached else {
        "unreachable": "a router answered destination unreachable",
        "gap": f"destination not reached: {o.gap_limit} silent TTLs in a row",
        "max_ttl": f"destination not reached within {o.max_ttl} hops",
        "deadline": f"deadline of {o.deadline_s:g} s reached",
    }[stop]
    flow = ({"icmp_id": t.flow_id} if o.protocol == "icmp"
            else {"sport": t.sport, "dport": o.dport or 0})
    body = TraceBody(protocol=o.protocol, ip_version=t.version, port=o.dport, flow=flow,
                     method=method, probes_per_hop=o.probes_per_hop, cycles=o.cycles,
                     max_ttl=o.max_ttl, reached=reached, dest_ttl=dest_ttl,
                     stop_reason=stop,  # type: ignore[arg-type]
                     hops=hops)
    return TraceRecord(id=record_id, agent=origin.agent, region=origin.region, target=name,
                       address=t.dst, started_at=started_at,
                       duration_ms=ms(time.perf_counter_ns() - t0), status=status, error=error,
                       body=body)


def _empty_record(target: str, opts: TraceOptions, origin: Origin, status: Status, error: str,
                  record_id: str, started_at: Any, t0: int) -> TraceRecord:
    body = TraceBody(protocol=opts.protocol, ip_version=4, port=opts.dport, method="raw",
                     probes_per_hop=opts.probes_per_hop, cycles=opts.cycles,
                     max_ttl=opts.max_ttl, reached=False, stop_reason="unreachable", hops=[])
    return TraceRecord(id=record_id, agent=origin.agent, region=origin.region, target=target,
                       address=None, started_at=started_at,
                       duration_ms=ms(time.perf_counter_ns() - t0), status=status, error=error,
                       body=body)


def _choose_method(opts: TraceOptions) -> Literal["raw", "recverr"]:
    if opts.method != "auto":
        return opts.method
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
        return "raw"
    except PermissionError:
        if opts.protocol == "tcp":
            raise PrivilegeError("TCP traceroute needs root or CAP_NET_RAW") from None
        return "recverr"


async def trace_many(targets: Sequence[Target | str], opts: TraceOptions = TraceOptions(), *,
                     origin: Origin | None = None, family: Literal[4, 6] | None = None,
                     concurrency: int = 64) -> list[TraceRecord]:
    """Trace several targets at once (at most ``concurrency``), sharing one pacer."""
    origin = origin or Origin.local()
    method = _choose_method(opts)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + opts.deadline_s
    engine = _RawEngine(opts) if method == "raw" else None
    gate = asyncio.Semaphore(concurrency)
    used_ids: set[int] = set()

    async def one(target: Target | str) -> TraceRecord:
        host = target.host if isinstance(target, Target) else parse_target(target).host
        record_id, started_at, t0 = new_id(), utc_now(), time.perf_counter_ns()
        try:
            resolved = await resolve(host, family)
        except (OSError, TimeoutError) as exc:
            return _empty_record(host, opts, origin, status_of(exc), describe(exc), record_id,
                                 started_at, t0)
        async with gate:
            try:
                src = _source_for(resolved.address, resolved.ip_version)
            except OSError as exc:
                return _empty_record(host, opts, origin, status_of(exc), describe(exc),
                                     record_id, started_at, t0)
            flow_id = random.randrange(1, 0xFFFF)
            while flow_id in used_ids:
                flow_id = random.randrange(1, 0xFFFF)
            used_ids.add(flow_id)
            t = _Trace(dst=resolved.address, version=resolved.ip_version, src=src, opts=opts,
                       flow_id=flow_id, sport=0x8000 | (flow_id & 0x7FFF))
            started_at, t0 = utc_now(), time.perf_counter_ns()
            if engine is not None:
                engine.by_dst.setdefault(t.dst, []).append(t)
                try:
                    await _run_raw(engine, t, deadline)
                finally:
                    engine.by_dst[t.dst].remove(t)
            else:
                await _run_recverr(t, deadline)
            return _record(t, method, origin, host, record_id, started_at, t0)

    try:
        return list(await asyncio.gather(*(one(t) for t in targets)))
    finally:
        if engine is not None:
            engine.close()


async def trace(target: Target | str, opts: TraceOptions = TraceOptions(), *,
                origin: Origin | None = None, family: Literal[4, 6] | None = None,
                name: str | None = None) -> TraceRecord:
    """Trace one target; ``name`` (e.g. the data centre's) replaces the host in the record."""
    (record,) = await trace_many([target], opts, origin=origin, family=family)
    if name is not None:
        record = msgspec.structs.replace(record, target=name)
    return record

