"""Path MTU discovery with Don't-Fragment probes, and where a path MTU black hole sits.

How a measurement runs
----------------------
Probes are ICMP echo requests, UDP datagrams (to port 33434 unless told) or TCP
SYNs carrying data, of a chosen *total IP size*, that no router may fragment:
IPv4 with the DF bit set (RFC 791; path MTU discovery, RFC 1191), IPv6 where
routers never fragment (RFC 8200) and the local kernel is told not to either
(``IPV6_DONTFRAG``, ``IPV6_PMTUDISC_PROBE``).  A size *passes* when the target
answers it (echo reply; port unreachable from the target for UDP; SYN/ACK or
RST for TCP).

1. A first round sends the smallest size (68 bytes on IPv4, RFC 791's minimum;
   1280 on IPv6) and the *local MTU* (what the kernel would use toward the
   target now).  If the local MTU passes, that is the path MTU.
2. Otherwise the search narrows ``(good, bad)`` by rounds: each round sends
   sizes spread across the interval, and common tunnel and link MTUs (RFC 1191
   section 7's plateaus and those of PPPoE, GRE, IPsec) that fall inside it, all
   at once, each ``tries`` times.  The largest that passed becomes ``good``, the
   smallest that failed ``bad``.  An ICMP "fragmentation needed" (RFC 1191) or
   ICMPv6 "packet too big" (RFC 8201) names the next hop's MTU, which the next
   round tries exactly.  It ends when ``bad = good + 1``: the path MTU is ``good``.
3. Where it drops: the router that sent "fragmentation needed" / "packet too
   big", if one came.  Otherwise (a *black hole*: RFC 2923) probes of the
   failing size and of a passing size go out at every TTL: the router that
   cannot forward the large packet is the last one to answer the large
   probes with "time exceeded"; the next hop answers only the small ones.

Every round waits for its answers at most ``timeout_s`` (or four times the
first round's RTT, if longer); one deadline bounds the whole run.  Probes are
matched to answers by their id (ICMP sequence, UDP checksum, TCP sequence, and
the IP id on IPv4), as in :mod:`netvantage.measure.packets`, so a lost or late
answer can never be credited to another size.

The kernel learns nothing from a black hole, but a "fragmentation needed" that
does arrive updates its path MTU cache for the target (Linux keeps it
``net.ipv4.route.mtu_expires``, 10 minutes): the *local MTU* of a second run
within that time is the learned value.

Sockets are raw (root or ``CAP_NET_RAW``), read with ``select`` in one thread;
replies carry the kernel's ``SO_TIMESTAMPNS`` receive stamp.  The optional
``pcap`` file gets every probe and answer (:mod:`netvantage.measure.pcap`).
"""

from __future__ import annotations

import contextlib
import errno
import random
import select
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import PrivilegeError
from ..results import PmtuBody, PmtuProbe, PmtuRecord, new_id, utc_now
from .common import Origin
from .kernel import SO_TIMESTAMPNS, kernel_stamp
from .packets import (
    PROTO_ICMP4,
    PROTO_ICMP6,
    PROTO_TCP,
    PROTO_UDP,
    Quoted,
    checksum,
    icmp_echo,
    parse_icmp4,
    parse_icmp6,
    pseudo_header,
    udp_probe,
)
from .pcap import PacketLog

__all__ = ["PmtuOptions", "measure_pmtu"]

Protocol = Literal["icmp", "udp", "tcp"]
_IP_MTU = 14
_IPV6_MTU = 24
_IP_MTU_DISCOVER = 10
_IP_PMTUDISC_PROBE = 3
_IPV6_MTU_DISCOVER = 23
_IPV6_PMTUDISC_PROBE = 3
_IPV6_DONTFRAG = 62
_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
#: MTUs worth trying first: RFC 1191's plateaus and today's common links and tunnels
#: (PPPoE 1492, GRE 1476, IPsec ~1400-1440, IPv6's minimum 1280).
_PLATEAUS = (9000, 4352, 2002, 1500, 1492, 1480, 1476, 1460, 1450, 1440, 1420, 1400, 1380,
             1280, 1006, 576, 508, 296)
_SPREAD = 6  # evenly spaced sizes per round besides the plateaus


@dataclass(frozen=True, slots=True)
class PmtuOptions:
    protocol: Protocol = "icmp"
    port: int | None = None  # UDP: 33434; TCP: 443
    timeout_s: float = 1.0
    tries: int = 2
    max_ttl: int = 30
    deadline_s: float = 60.0
    pcap: Path | None = None

    def __post_init__(self) -> None:
        if self.protocol not in ("icmp", "udp", "tcp"):
            raise ValueError(f"protocol must be icmp, udp or tcp, not {self.protocol!r}")
        if not 0 < self.timeout_s <= 60 or not 0 < self.deadline_s <= 3600:
            raise ValueError("timeout must be in (0, 60] s and the deadline in (0, 3600] s")
        if not 1 <= self.tries <= 10 or not 1 <= self.max_ttl <= 255:
            raise ValueError("tries must be 1..10 and max_ttl 1..255")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError("port must be 1..65535")

    @property
    def dport(self) -> int:
        return self.port or (33434 if self.protocol == "udp" else 443)


@dataclass
class _Sent:
    size: int
    ttl: int
    tx_real: int
    tx_mono: int
    answer: str | None = None  # reply | ptb | time_exceeded | unreachable
    responder: str | None = None
    mtu: int | None = None
    rtt_ns: int | None = None


@dataclass
class _Run:
    dst: str
    src: str
    version: int
    opts: PmtuOptions
    sport: int = field(default_factory=lambda: random.randint(33000, 60999))
    ident: int = field(default_factory=lambda: random.randint(1, 0xFFFF))
    next_id: int = field(default_factory=lambda: random.randint(1, 0x7FFF))
    sent: dict[int, _Sent] = field(default_factory=dict)
    copies: dict[int, set[int]] = field(default_factory=dict)  # probe id -> ids of its group
    rounds: int = 0
    log: PacketLog | None = None


# --------------------------------------------------------------------------- packets


def _tcp_syn(src: str, dst: str, sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    """A TCP SYN carrying ``payload`` (RFC 9293 allows data on a SYN), checksummed."""
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 65535, 0, 0)
    value = checksum(pseudo_header(src, dst, PROTO_TCP, len(head) + len(payload)) + head + payload)
    return head[:16] + struct.pack("!H", value) + head[18:] + payload


def _transport(r: _Run, pid: int, size: int) -> tuple[int, bytes]:
    """Protocol number and transport bytes of probe ``pid``, for a total IP size ``size``."""
    room = size - (20 if r.version == 4 else 40)
    if r.opts.protocol == "icmp":
        return (PROTO_ICMP4 if r.version == 4 else PROTO_ICMP6,
                icmp_echo(r.version, r.ident, pid, max(room - 8, 2), r.src, r.dst))
    if r.opts.protocol == "udp":
        return PROTO_UDP, udp_probe(r.src, r.dst, r.sport, r.opts.dport, pid, max(room - 8, 2))
    # One source port per SYN: the target keeps state per 4-tuple, and a second SYN on
    # a half-open connection draws an ACK of the first, which answers nobody.
    return PROTO_TCP, _tcp_syn(r.src, r.dst, _tcp_sport(r, pid), r.opts.dport, pid << 16,
                               bytes(max(room - 20, 0)))


def _tcp_sport(r: _Run, pid: int) -> int:
    return 32768 + (r.sport + pid) % 28000


def _ipv4_df(src: str, dst: str, proto: int, ttl: int, ident: int, body: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ident & 0xFFFF, 0x4000, ttl,
                       proto, 0, socket.inet_aton(src), socket.inet_aton(dst)) + body


def _probe_id(r: _Run, q: Quoted) -> int | None:
    """The id of our probe that ``q`` answers, or None if it is not ours."""
    if q.dst != r.dst and not q.echo_reply:
        return None
    if q.proto in (PROTO_ICMP4, PROTO_ICMP6):
        return q.probe_id if q.flow == r.ident else None
    if q.proto == PROTO_UDP:
        return q.probe_id if q.flow == (r.sport << 16) | r.opts.dport else None
    if q.proto == PROTO_TCP:
        pid = q.probe_id >> 16
        return pid if q.flow == (_tcp_sport(r, pid) << 16) | r.opts.dport else None
    return None


def _parse_tcp(data: bytes, source: str, v4: bool) -> Quoted | None:
    seg = data[(data[0] & 0x0F) * 4:] if v4 and data else data
    if len(seg) < 20:
        return None
    sport, dport, _seq, ack = struct.unpack_from("!HHII", seg)
    if not seg[13] & 0x14:  # neither ACK nor RST
        return None
    # A SYN with n data bytes is acknowledged as seq+1 (the data is not taken before the
    # handshake completes) or seq+1+n; the probe id sits in the top 16 bits either way.
    return Quoted(source, seg[13], 0, source, PROTO_TCP, (dport << 16) | sport,
                  (ack - 1) & 0xFFFF0000, True, None)


# --------------------------------------------------------------------------- sockets


class _Sockets:
    def __init__(self, r: _Run) -> None:
        self.r = r
        self.rx: dict[socket.socket, str] = {}
        try:
            if r.version == 4:
                self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
                # Send at the interface's MTU even toward a target whose path MTU the
                # kernel has learned (it would refuse a larger packet with EMSGSIZE).
                self.tx.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_PROBE)
                self._rx(socket.AF_INET, socket.IPPROTO_ICMP, "icmp4")
                if r.opts.protocol == "tcp":
                    self._rx(socket.AF_INET, socket.IPPROTO_TCP, "tcp4")
            else:
                proto = {"icmp": socket.IPPROTO_ICMPV6, "udp": socket.IPPROTO_UDP,
                         "tcp": socket.IPPROTO_TCP}[r.opts.protocol]
                icmp6 = self._rx(socket.AF_INET6, socket.IPPROTO_ICMPV6, "icmp6")
                self.tx = (icmp6 if proto == socket.IPPROTO_ICMPV6
                           else socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto))
                self.tx.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_PROBE)
                self.tx.setsockopt(socket.IPPROTO_IPV6, _IPV6_DONTFRAG, 1)
                self.tx.setblocking(False)
                if r.opts.protocol == "tcp":
                    self.rx[self.tx] = "tcp6"
                    self._stamp(self.tx)
        except PermissionError:
            self.close()
            raise PrivilegeError("measure pmtu sends raw packets: it needs root or "
                                 "CAP_NET_RAW (e.g. sudo netvantage measure pmtu ...)") from None

    def _stamp(self, s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if s.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)

    def _rx(self, family: int, proto: int, name: str) -> socket.socket:
        s = socket.socket(family, socket.SOCK_RAW, proto)
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._stamp(s)
        self.rx[s] = name
        return s

    def close(self) -> None:
        for s in {*self.rx, *([self.tx] if hasattr(self, "tx") else [])}:
            s.close()

    def send(self, size: int, ttl: int) -> int:
        r = self.r
        pid = r.next_id
        r.next_id = r.next_id % 0x7FFE + 1
        proto, body = _transport(r, pid, size)
        packet = _ipv4_df(r.src, r.dst, proto, ttl, pid, body) if r.version == 4 else body
        anc = ([] if r.version == 4
               else [(socket.IPPROTO_IPV6, _IPV6_HOPLIMIT, struct.pack("@i", ttl))])
        for attempt in (1, 2):
            now_real, now_mono = time.time_ns(), time.perf_counter_ns()
            try:
                self.tx.sendmsg([packet], anc, 0, (r.dst, 0))
                break
            except OSError as exc:
                # A "fragmentation needed" that reached the raw socket is kept as its
                # pending error and returned by the next send, which it fails: once more.
                if exc.errno != errno.EMSGSIZE or attempt == 2:
                    raise
        if r.log:
            if r.version == 4:
                r.log.write(packet, now_real)
            else:
                r.log.write6(body, now_real, src=r.src, dst=r.dst, next_header=proto,
                             hop_limit=ttl)
        r.sent[pid] = _Sent(size, ttl, now_real, now_mono)
        return pid

    def read(self, until_mono: float, pending: set[int]) -> None:
        """Read answers until every id in ``pending`` is answered or the clock passes."""
        while pending:
            left = until_mono - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select(list(self.rx), [], [], left)
            for s in ready:
                with contextlib.suppress(BlockingIOError, InterruptedError):
                    while True:
                        data, anc, _flags, addr = s.recvmsg(65_536, 256)
                        self._answer(self.rx[s], data, anc, addr[0].split("%")[0], pending)

    def _answer(self, name: str, data: bytes, anc: list[tuple[int, int, bytes]], source: str,
                pending: set[int]) -> None:
        r = self.r
        rx_mono = time.perf_counter_ns()
        stamp = kernel_stamp(anc)
        hops = next((struct.unpack("@i", d[:4])[0] for lvl, k, d in anc
                     if lvl == socket.IPPROTO_IPV6 and k == _IPV6_HOPLIMIT), 64)
        mtu: int | None = None
        if name == "icmp4":
            q = parse_icmp4(data)
            if q is not None and (q.icmp_type, q.icmp_code) == (3, 4):
                mtu = struct.unpack_from("!H", data, (data[0] & 0x0F) * 4 + 6)[0] or None
        elif name == "icmp6":
            if data[:1] == b"\x02":  # packet too big: the quote sits where it does in type 1
                q = parse_icmp6(b"\x01" + data[1:], source, hops)
                if q is not None:
                    q = Quoted(q.responder, 2, 0, q.dst, q.proto, q.flow, q.probe_id, False,
                               q.reply_ttl)
                    mtu = struct.unpack_from("!I", data, 4)[0]
            else:
                q = parse_icmp6(data, source, hops)
        else:
            q = _parse_tcp(data, source, name == "tcp4")
        if q is None:
            return
        pid = _probe_id(r, q)
        probe = r.sent.get(pid) if pid is not None else None
        if probe is None or probe.answer is not None:
            return
        if r.log:
            if r.version == 4:
                r.log.write(data, stamp or time.time_ns())
            else:
                nh = PROTO_TCP if name == "tcp6" else PROTO_ICMP6
                r.log.write6(data, stamp or time.time_ns(), src=source, dst=r.src,
                             next_header=nh, hop_limit=hops)
        unreachable, exceeded = (3, 11) if r.version == 4 else (1, 3)
        if mtu is not None or (r.version == 6 and q.icmp_type == 2):
            probe.answer, probe.mtu = "ptb", mtu
        elif q.echo_reply:
            probe.answer = "reply"
        elif q.icmp_type == exceeded:
            probe.answer = "time_exceeded"
        elif q.icmp_type == unreachable and q.responder == r.dst and r.opts.protocol == "udp":
            probe.answer = "reply"  # port unreachable from the target: the datagram arrived
        else:
            probe.answer = "unreachable"
        probe.responder = q.responder
        mono = rx_mono - probe.tx_mono
        probe.rtt_ns = (stamp - probe.tx_real if stamp is not None
                        and 0 <= stamp - probe.tx_real <= mono else mono)
        assert pid is not None
        # One answer settles its size at that TTL: the other copies need not be waited for.
        pending.difference_update(r.copies.get(pid, {pid}))


# --------------------------------------------------------------------------- search


def _local(dst: str, version: int) -> tuple[str, int, int]:
    """Our source address toward ``dst``, the outgoing interface's MTU and the kernel's
    current MTU toward ``dst`` (lower than the interface's once it learned a path MTU)."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((dst, 9))  # a UDP connect sends nothing: it only picks the route
        src = str(s.getsockname()[0])
        cached = int(s.getsockopt(socket.IPPROTO_IP if version == 4 else socket.IPPROTO_IPV6,
                                  _IP_MTU if version == 4 else _IPV6_MTU))
    # Loopback's MTU is 65536, one more than an IP packet can say it is long.
    return src, min(_interface_mtu(dst) or cached, 65_535), min(cached, 65_535)


def _interface_mtu(dst: str) -> int | None:
    """The MTU of the interface the route to ``dst`` leaves by (``ip route get``)."""
    import subprocess

    try:
        out = subprocess.run(["ip", "-o", "route", "get", dst], capture_output=True, text=True,
                             timeout=5, check=False).stdout.split()
        dev = out[out.index("dev") + 1]
        return int(Path(f"/sys/class/net/{dev}/mtu").read_text())
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def _round(socks: _Sockets, sizes: Iterable[int], ttls: Iterable[int], wait_s: float,
           deadline: float) -> dict[tuple[int, int], list[_Sent]]:
    """Send every (size, ttl) ``tries`` times at once; wait for the answers."""
    r = socks.r
    r.rounds += 1
    ids: dict[tuple[int, int], list[int]] = {}
    for ttl in ttls:
        for size in sizes:
            group = [socks.send(size, ttl) for _ in range(r.opts.tries)]
            ids[(size, ttl)] = group
            for pid in group:
                r.copies[pid] = set(group)
    pending = {pid for group in ids.values() for pid in group}
    socks.read(min(time.monotonic() + wait_s, deadline), pending)
    return {key: [r.sent[pid] for pid in group] for key, group in ids.items()}


def _passed(probes: list[_Sent]) -> bool:
    return any(p.answer == "reply" for p in probes)


def _candidates(good: int, bad: int, hint: int | None) -> list[int]:
    # good + 1 settles at once a path MTU that is the largest size known to pass (IPv6's
    # 1280, or a plateau found in the previous round).
    inside = {p for p in _PLATEAUS if good < p < bad} | {good + 1}
    step = (bad - good) / (_SPREAD + 1)
    inside |= {round(good + step * i) for i in range(1, _SPREAD + 1)}
    if hint is not None and good < hint < bad:
        inside |= {hint, hint + 1} - {bad}
    for p in list(inside):  # an exact plateau is confirmed by the size just above it
        if p in _PLATEAUS and p + 1 < bad:
            inside.add(p + 1)
    return sorted(x for x in inside if good < x < bad)


def measure_pmtu(target: str, opts: PmtuOptions = PmtuOptions(), *,
                 origin: Origin | None = None, family: Literal[4, 6] | None = None,
                 name: str | None = None) -> PmtuRecord:
    """Measure the path MTU to ``target`` (an address, or a name resolved first).

    Raises :class:`~netvantage.errors.PrivilegeError` without raw sockets; a name
    that does not resolve raises :class:`OSError` or :class:`TimeoutError`.
    """
    import asyncio

    from .target import resolve

    origin = origin or Origin.local()
    started, t0 = utc_now(), time.monotonic()
    deadline = t0 + opts.deadline_s
    resolved = asyncio.run(resolve(target, family, timeout_s=min(5.0, opts.deadline_s)))
    src, local_mtu, cached_mtu = _local(resolved.address, resolved.ip_version)
    r = _Run(dst=resolved.address, src=src, version=resolved.ip_version, opts=opts)
    if opts.pcap is not None:
        r.log = PacketLog(opts.pcap)
    floor = 68 if r.version == 4 else 1280
    socks = _Sockets(r)
    good = bad = hop_ttl = None
    ptb: _Sent | None = None
    hop_address = next_hop = None
    try:
        first = _round(socks, sorted({floor, local_mtu}), [64], opts.timeout_s, deadline)
        rtts = [p.rtt_ns for ps in first.values() for p in ps if p.rtt_ns is not None]
        wait_s = max(opts.timeout_s, 4 * max(rtts) / 1e9) if rtts else opts.timeout_s
        if _passed(first[(local_mtu, 64)]):
            good = local_mtu
        elif _passed(first[(floor, 64)]):
            good, bad = floor, local_mtu
            hint = _ptb_hint(first[(local_mtu, 64)])
            ptb = ptb or _first_ptb(first[(local_mtu, 64)])
            while bad - good > 1 and time.monotonic() < deadline:
                sizes = _candidates(good, bad, hint)
                got = _round(socks, sizes, [64], wait_s, deadline)
                for size in sizes:
                    if _passed(got[(size, 64)]):
                        good = max(good, size)
                for size in sizes:
                    if size > good and not _passed(got[(size, 64)]) and size < bad:
                        bad = size
                        break
                hint = next((h for ps in got.values() if (h := _ptb_hint(ps))), None)
                ptb = ptb or next((p for ps in got.values() if (p := _first_ptb(ps))), None)
            # Where the packet that does not fit stops: the TTL-limited probes.
            if bad - good <= 1 and time.monotonic() < deadline:
                got = _round(socks, [good, bad], range(1, opts.max_ttl + 1), wait_s, deadline)
                hop_ttl, hop_address, next_hop = _drop_hop(got, good, bad, opts.max_ttl,
                                                            ptb.responder if ptb else None)
    finally:
        socks.close()
        if r.log:
            r.log.close()
    duration_ms = (time.monotonic() - t0) * 1000
    reached = good is not None
    done = good is not None and (bad is None or bad - good <= 1)
    black_hole = bad is not None and ptb is None and done
    body = PmtuBody(
        protocol=opts.protocol, ip_version=r.version,  # type: ignore[arg-type]
        port=opts.dport if opts.protocol != "icmp" else None,
        local_mtu=local_mtu, cached_mtu=cached_mtu if cached_mtu < local_mtu else None,
        path_mtu=good if done else None, reached=reached,
        ptb_received=ptb is not None, ptb_mtu=ptb.mtu if ptb else None,
        ptb_from=ptb.responder if ptb else None, black_hole=black_hole,
        hop_ttl=hop_ttl, hop_address=hop_address, next_hop_address=next_hop,
        rounds=r.rounds,
        probes=[PmtuProbe(size=p.size, ttl=p.ttl, answer=p.answer,  # type: ignore[arg-type]
                          responder=p.responder,
                          mtu=p.mtu, rtt_ms=None if p.rtt_ns is None else round(p.rtt_ns / 1e6, 3))
                for p in r.sent.values()],
    )
    if done:
        status, error = "ok", None
    elif reached:
        status, error = "timeout", "the deadline ended the search before it converged"
    elif any(p.answer == "unreachable" for p in r.sent.values()):
        status, error = "unreachable", "an ICMP unreachable answered the smallest probe"
    else:
        status, error = "timeout", f"no answer to a {floor}-byte probe"
    return PmtuRecord(id=new_id(), agent=origin.agent, region=origin.region,
                      target=name or target,
                      address=r.dst, started_at=started, duration_ms=round(duration_ms, 3),
                      status=status, error=error, body=body)  # type: ignore[arg-type]


def _ptb_hint(probes: list[_Sent]) -> int | None:
    return next((p.mtu for p in probes if p.answer == "ptb" and p.mtu), None)


def _first_ptb(probes: list[_Sent]) -> _Sent | None:
    return next((p for p in probes if p.answer == "ptb"), None)


def _drop_hop(got: dict[tuple[int, int], list[_Sent]], good: int, bad: int, max_ttl: int,
              ptb_from: str | None) -> tuple[int | None, str | None, str | None]:
    """(TTL, address) of the hop that cannot forward ``bad`` bytes, and the hop after it."""
    def who(size: int, ttl: int) -> str | None:
        return next((p.responder for p in got[(size, ttl)]
                     if p.answer in ("time_exceeded", "reply", "ptb")), None)

    small = {ttl: who(good, ttl) for ttl in range(1, max_ttl + 1)}
    if ptb_from is not None:
        ttl = next((t for t, a in small.items() if a == ptb_from), None)
        nxt = small.get(ttl + 1) if ttl is not None else None
        return ttl, ptb_from, nxt
    last: int | None = None
    for ttl in range(1, max_ttl + 1):
        if who(bad, ttl) is not None and any(p.answer == "time_exceeded"
                                             for p in got[(bad, ttl)]):
            last = ttl
        elif small.get(ttl) is not None:
            break
    if last is None:
        return None, None, small.get(1)
    return last, small.get(last), small.get(last + 1)

