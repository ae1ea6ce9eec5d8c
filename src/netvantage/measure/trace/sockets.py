"""The raw socket layer of the engine: it opens the sockets, builds and sends probes,
and reads replies with their kernel timestamps, parsed into :class:`~..packets.Quoted`.

IPv4 sends through one ``IPPROTO_RAW`` socket (we write the IP header: TTL and
id per probe); IPv6 through a raw socket of the probe's protocol with the hop
limit given per packet (``IPV6_HOPLIMIT`` ancillary data).  Replies arrive on
raw ICMP/ICMPv6 sockets (and raw TCP sockets for SYN/ACK or RST), every one of
them open and read by the event loop before the first probe leaves.  All of
this needs root or ``CAP_NET_RAW``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...errors import PrivilegeError
from ..kernel import SO_TIMESTAMPNS, kernel_stamp
from ..packets import (
    PROTO_ICMP4,
    PROTO_TCP,
    PROTO_UDP,
    Quoted,
    icmp_echo,
    ipv4_header,
    parse_icmp4,
    parse_icmp6,
    udp_probe,
)
from .options import Protocol
from .state import Probe, TraceRun

if TYPE_CHECKING:
    from ..pcap import PacketLog

__all__ = ["OnReply", "RawSockets", "parse_tcp", "tcp_syn"]

_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)

OnReply = Callable[[Quoted, int | None, int], None]
"""Called with each parsed reply, its kernel receive stamp (or None) and the monotonic clock."""


class RawSockets:
    """A run's raw sockets: an IPv4 sender, an IPv6 sender, one reader per reply socket."""

    def __init__(self, protocol: Protocol, on_reply: OnReply) -> None:
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()
        self.socks: dict[str, socket.socket] = {}
        self._on_reply = on_reply
        #: --pcap: every probe, and every reply about a destination being traced.
        self.log: PacketLog | None = None
        self.log_dsts: set[str] = set()
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
        if self.protocol == "tcp":
            rx["tcp4"] = (socket.AF_INET, socket.IPPROTO_TCP)
            rx["tcp6"] = (socket.AF_INET6, socket.IPPROTO_TCP)
        proto6 = {"icmp": socket.IPPROTO_ICMPV6, "udp": socket.IPPROTO_UDP,
                  "tcp": socket.IPPROTO_TCP}[self.protocol]
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
        """Stop reading, close every socket and the packet log (which they feed)."""
        for s in self.socks.values():
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(s.fileno())
            s.close()
        self.socks.clear()
        if self.log is not None:
            self.log.close()
            self.log = None

    def packet(self, t: TraceRun, pid: int, ttl: int) -> bytes:
        """Probe ``pid`` of trace ``t`` at ``ttl``, as it goes on the wire."""
        o = t.opts
        if o.protocol == "icmp":
            body = icmp_echo(t.version, t.flow_id, pid, o.payload_bytes, t.src, t.dst)
            proto = PROTO_ICMP4
        elif o.protocol == "udp":
            assert o.dport is not None
            body = udp_probe(t.src, t.dst, t.sport, o.dport, pid, o.payload_bytes)
            proto = PROTO_UDP
        else:
            body = tcp_syn(t.src, t.dst, t.sport, o.dport or 80, pid << 16)
            proto = PROTO_TCP
        if t.version == 4:
            return ipv4_header(t.src, t.dst, proto, ttl, pid, 20 + len(body)) + body
        return body

    def transmit(self, t: TraceRun, probe: Probe, pid: int) -> None:
        """Send one probe, its clocks read right against the system call (``OSError`` raises)."""
        data = self.packet(t, pid, probe.ttl)
        sock = self.socks["tx4" if t.version == 4 else "tx6"]
        probe.tx_real = time.time_ns()
        probe.tx_mono = time.perf_counter_ns()
        if t.version == 4:
            sock.sendto(data, (t.dst, 0))
        else:
            anc = [(socket.IPPROTO_IPV6, _IPV6_HOPLIMIT, struct.pack("@i", probe.ttl))]
            sock.sendmsg([data], anc, 0, (t.dst, 0))
        if self.log is not None:
            if t.version == 4:
                self.log.write(data, probe.tx_real)
            else:
                proto = {"icmp": 58, "udp": PROTO_UDP, "tcp": PROTO_TCP}[self.protocol]
                self.log.write6(data, probe.tx_real, src=t.src, dst=t.dst, next_header=proto,
                                hop_limit=probe.ttl)

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
                quoted = parse_tcp(data, addr[0].split("%")[0], name == "tcp4")
            if quoted is not None:
                if self.log is not None and quoted.dst in self.log_dsts:
                    self._log_reply(name, data, anc, quoted, rx_real)
                self._on_reply(quoted, rx_real, rx_mono)

    def _log_reply(self, name: str, data: bytes, anc: list[tuple[int, int, bytes]],
                   quoted: Quoted, rx_real: int | None) -> None:
        assert self.log is not None
        when = rx_real if rx_real is not None else time.time_ns()
        if name in ("icmp4", "tcp4"):
            self.log.write(data, when)  # raw IPv4 sockets deliver the header as received
            return
        hops = next((struct.unpack("@i", d[:4])[0] for lvl, k, d in anc
                     if lvl == socket.IPPROTO_IPV6 and k == _IPV6_HOPLIMIT), 64)
        self.log.write6(data, when, src=quoted.responder, dst=self.log.source(quoted.dst),
                        next_header=58 if name == "icmp6" else PROTO_TCP, hop_limit=hops)


def tcp_syn(src: str, dst: str, sport: int, dport: int, seq: int) -> bytes:
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


def parse_tcp(data: bytes, source: str, v4: bool) -> Quoted | None:
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
