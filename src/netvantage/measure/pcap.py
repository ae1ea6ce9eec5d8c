"""``--pcap FILE``: every probe and every answer of a run, for Wireshark or ``tcpdump -r``.

The file is written by scapy's :class:`~scapy.utils.PcapWriter` (nanosecond
pcap, link type ``LINKTYPE_RAW`` = 101: each record is an IPv4 or IPv6 packet
with no link-layer header, so one file holds both families).  scapy is imported
only when a file is asked for.

Timestamps, in ``CLOCK_REALTIME`` nanoseconds:

* an **answer** carries the kernel's ``SO_TIMESTAMPNS`` receive stamp, the same
  stamp its RTT is computed from;
* a **probe** carries the clock read right before its ``sendto()`` (the send
  stamp of its RTT); the kernel's own transmit stamp would need
  ``SO_TIMESTAMPING`` on the error queue, which the engines do not read.

IPv6 raw sockets neither take nor give the IPv6 header, so for IPv6 the writer
puts back a fixed header (version, payload length, next header, hop limit,
addresses; traffic class and flow label zero): what the kernel sent or received
apart from those two fields.  Likewise for IPv4 packets whose header the kernel
wrote (ping's ICMP sockets): version, lengths, DF, TTL, protocol and addresses
as sent; the identification and checksum the kernel chose are not known (zero).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["LINKTYPE_RAW", "PacketLog", "ipv4_header", "ipv6_header", "source_address"]

LINKTYPE_RAW = 101


def ipv6_header(src: str, dst: str, next_header: int, hop_limit: int, payload_len: int) -> bytes:
    """A fixed IPv6 header (RFC 8200) for a payload a raw socket sent or received."""
    return (struct.pack("!IHBB", 6 << 28, payload_len & 0xFFFF, next_header, hop_limit & 0xFF)
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed)


def ipv4_header(src: str, dst: str, proto: int, ttl: int, payload_len: int,
                df: bool = False) -> bytes:
    """A plain IPv4 header (RFC 791) for a payload whose header the kernel wrote."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0, 0x4000 if df else 0,
                       ttl & 0xFF, proto, 0, ipaddress.IPv4Address(src).packed,
                       ipaddress.IPv4Address(dst).packed)


def source_address(dst: str) -> str:
    """The address the kernel sends from towards ``dst`` (a UDP connect: no packet sent)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((dst, 9))
        return str(s.getsockname()[0])


class PacketLog:
    """An open pcap file; :meth:`write` adds one IP packet with its time in ns."""

    def __init__(self, path: Path | str) -> None:
        from scapy.utils import PcapWriter

        self.path = Path(path)
        self.count = 0
        self._sources: dict[str, str] = {}
        self._writer: Any = PcapWriter(str(self.path), linktype=LINKTYPE_RAW, nano=True,
                                       sync=False)
        self._writer.write_header(None)  # write_packet() alone never writes the file header

    def write(self, packet: bytes, stamp_ns: int) -> None:
        sec, nsec = divmod(stamp_ns, 1_000_000_000)
        # scapy's ``usec`` argument carries nanoseconds when the writer is ``nano``.
        self._writer.write_packet(packet, sec=sec, usec=nsec, caplen=len(packet),
                                  wirelen=len(packet))
        self.count += 1

    def write6(self, payload: bytes, stamp_ns: int, *, src: str, dst: str, next_header: int,
               hop_limit: int) -> None:
        self.write(ipv6_header(src, dst, next_header, hop_limit, len(payload)) + payload,
                   stamp_ns)

    def source(self, dst: str) -> str:
        """Our address towards ``dst``, looked up once per destination."""
        if dst not in self._sources:
            try:
                self._sources[dst] = source_address(dst)
            except OSError:
                self._sources[dst] = "::" if ":" in dst else "0.0.0.0"
        return self._sources[dst]

    def write_l4(self, payload: bytes, stamp_ns: int, *, src: str, dst: str, proto: int,
                 ttl: int, df: bool = False) -> None:
        """A packet of which a socket gave only the part above IP: its header put back."""
        if ":" in dst:
            self.write6(payload, stamp_ns, src=src, dst=dst, next_header=proto, hop_limit=ttl)
        else:
            self.write(ipv4_header(src, dst, proto, ttl, len(payload), df) + payload, stamp_ns)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> PacketLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
