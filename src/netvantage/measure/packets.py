"""Probe packets for Paris traceroute, built with :mod:`struct`, and the parsing of replies.

Paris traceroute (Augustin et al., IMC 2006) keeps every field that per-flow
load balancers hash constant within a trace, and identifies each probe by a
field they do not hash:

* ICMP echo: type, code, **checksum** and identifier are constant; the
  sequence number carries the probe id, and two payload bytes compensate it so
  that the checksum does not move.
* UDP: addresses and ports are constant; the **checksum** carries the probe id
  (two payload bytes are chosen to make it so).
* TCP SYN: addresses and ports are constant; the sequence number carries the
  probe id (TCP probes are built with scapy: see :mod:`netvantage.measure.trace.sockets`).

Routers quote the IP header and at least the first 8 bytes of what follows
(RFC 792; RFC 1812 asks for more), which holds all of these fields, so every
ICMP error names its probe without ambiguity.  On IPv4 the IP identification
also carries the probe id.

These builders stay clear of scapy on purpose: a sweep builds thousands of
probes, and importing scapy costs ~70 MB and most of a second.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

__all__ = [
    "Quoted",
    "checksum",
    "icmp_echo",
    "ipv4_header",
    "parse_icmp4",
    "parse_icmp6",
    "pseudo_header",
    "udp_probe",
]

ICMP4_ECHO_REQUEST, ICMP4_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
PROTO_ICMP4, PROTO_TCP, PROTO_UDP, PROTO_ICMP6 = 1, 6, 17, 58


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ones_sum(data: bytes) -> int:
    return ~checksum(data) & 0xFFFF


def pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return s.packed + d.packed + struct.pack("!BBH", 0, proto, length)
    return s.packed + d.packed + struct.pack("!IxxxB", length, proto)


def ipv4_header(src: str, dst: str, proto: int, ttl: int, ident: int, length: int) -> bytes:
    """An IPv4 header for a raw IP_HDRINCL socket; the kernel fills in the checksum."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, ident & 0xFFFF, 0, ttl, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))


def icmp_echo(version: int, ident: int, seq: int, size: int, src: str = "",
              dst: str = "") -> bytes:
    """An echo request whose checksum is the same for every ``seq`` (Paris).

    The first two payload bytes are the ones'-complement negation of ``seq``:
    seq + ~seq is constant, so the sum, and the checksum, never change.  For
    ICMPv6 the checksum covers a pseudo-header, so ``src`` and ``dst`` are needed.
    """
    kind = ICMP4_ECHO_REQUEST if version == 4 else ICMP6_ECHO_REQUEST
    pad = bytes(max(0, size - 2))
    body = struct.pack("!HH", ident, seq) + struct.pack("!H", ~seq & 0xFFFF) + pad
    head = struct.pack("!BBH", kind, 0, 0)
    prefix = b"" if version == 4 else pseudo_header(src, dst, PROTO_ICMP6, len(head + body))
    value = checksum(prefix + head + body)
    return struct.pack("!BBH", kind, 0, value) + body


def udp_probe(src: str, dst: str, sport: int, dport: int, probe_id: int, size: int) -> bytes:
    """A UDP datagram whose checksum equals ``probe_id`` (1..0xFFFE): Paris UDP.

    The first two payload bytes are chosen so that the checksum comes out as the
    probe id; ports, and so the flow, stay the same for every probe.
    """
    if not 1 <= probe_id <= 0xFFFE:
        raise ValueError("probe id must be 1..65534")
    size = max(size, 2)
    length = 8 + size
    fixed = bytes(size - 2)
    base = (pseudo_header(src, dst, PROTO_UDP, length)
            + struct.pack("!HHHH", sport, dport, length, 0) + b"\0\0" + fixed)
    # checksum = ~(S + W): pick W so that it equals probe_id.
    s = _ones_sum(base)
    want = ~probe_id & 0xFFFF
    w = (want - s) % 0xFFFF
    packet = struct.pack("!HHHH", sport, dport, length, probe_id) + struct.pack("!H", w) + fixed
    # Verify: the checksum over pseudo-header + packet (with the field zeroed) must be probe_id.
    check = checksum(pseudo_header(src, dst, PROTO_UDP, length) + packet[:6] + b"\0\0" +
                     packet[8:])
    if check != probe_id:  # ones' complement has two zeros; nudge the other way round
        w = (w + 0xFFFF) % 0x10000
        packet = packet[:8] + struct.pack("!H", w) + fixed
    return packet


@dataclass(frozen=True, slots=True)
class Quoted:
    """What an ICMP message says about the probe it answers.

    ``responder`` sent the message; ``icmp_type``/``icmp_code`` are its kind;
    ``dst``, ``proto`` and ``probe_id`` identify the probe (for an echo reply,
    the echo's own identifier and sequence); ``flow`` is the constant part
    (ICMP identifier or the ports) to check the probe is ours.
    """

    responder: str
    icmp_type: int
    icmp_code: int
    dst: str
    proto: int
    flow: int
    probe_id: int
    echo_reply: bool
    reply_ttl: int | None


def _quoted_transport(proto: int, tp: bytes) -> tuple[int, int] | None:
    if len(tp) < 8:
        return None
    if proto in (PROTO_ICMP4, PROTO_ICMP6):
        ident, seq = struct.unpack_from("!HH", tp, 4)
        return ident, seq
    if proto == PROTO_UDP:
        sport, dport, _len, csum = struct.unpack_from("!HHHH", tp)
        return (sport << 16) | dport, csum
    if proto == PROTO_TCP:
        sport, dport, seq = struct.unpack_from("!HHI", tp)
        return (sport << 16) | dport, seq
    return None


def parse_icmp4(packet: bytes) -> Quoted | None:
    """Parse what a raw IPv4 ICMP socket delivers (IP header included)."""
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8:
        return None
    reply_ttl = packet[8]
    responder = socket.inet_ntoa(packet[12:16])
    icmp = packet[ihl:]
    kind, code = icmp[0], icmp[1]
    if kind == ICMP4_ECHO_REPLY:
        ident, seq = struct.unpack_from("!HH", icmp, 4)
        return Quoted(responder, kind, code, responder, PROTO_ICMP4, ident, seq, True, reply_ttl)
    if kind not in (3, 11, 12):
        return None
    inner = icmp[8:]
    if len(inner) < 20 or inner[0] >> 4 != 4:
        return None
    inner_ihl = (inner[0] & 0x0F) * 4
    proto = inner[9]
    dst = socket.inet_ntoa(inner[16:20])
    got = _quoted_transport(proto, inner[inner_ihl:inner_ihl + 8])
    if got is None:
        return None
    flow, probe_id = got
    return Quoted(responder, kind, code, dst, proto, flow, probe_id, False, reply_ttl)


def parse_icmp6(packet: bytes, responder: str, reply_ttl: int | None = None) -> Quoted | None:
    """Parse what a raw ICMPv6 socket delivers (no IPv6 header)."""
    if len(packet) < 8:
        return None
    kind, code = packet[0], packet[1]
    if kind == ICMP6_ECHO_REPLY:
        ident, seq = struct.unpack_from("!HH", packet, 4)
        return Quoted(responder, kind, code, responder, PROTO_ICMP6, ident, seq, True,
                      reply_ttl)
    if kind not in (1, 3, 4):
        return None
    inner = packet[8:]
    if len(inner) < 48 or inner[0] >> 4 != 6:
        return None
    proto = inner[6]
    dst = socket.inet_ntop(socket.AF_INET6, inner[24:40])
    got = _quoted_transport(proto, inner[40:48])
    if got is None:
        return None
    flow, probe_id = got
    return Quoted(responder, kind, code, dst, proto, flow, probe_id, False, reply_ttl)
