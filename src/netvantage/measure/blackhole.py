"""Why a TLS handshake stalled: a path MTU black hole, or something else.

The classic way mail "connects but hangs" (RFC 2923, section 2.1): the TCP
handshake, the banner and EHLO are small packets and pass; the server's TLS
certificate flight goes out in full-sized segments (the MSS our SYN advertised:
our interface MTU less the headers), a router on the way cannot forward them,
and the ICMP "fragmentation needed" / "packet too big" that would make the
server send smaller ones never reaches it (filtered).  The server retransmits
the same segments until one side gives up: bytes stop arriving mid-flight.

When the ``tls_handshake`` phase times out, the mail probe takes the evidence
from two places:

1. its own TCP connection (``TCP_INFO``, read when the handshake began and when
   it timed out): whether the server's TCP acknowledged our ClientHello (the
   server is alive and the small packets pass), how many bytes of its answer
   arrived in order, and how many segments arrived past a gap (out of order:
   the *later*, smaller segments of a flight whose first full-sized one was
   lost);
2. a path MTU measurement toward the server (:mod:`netvantage.measure.pmtu`,
   ICMP, in what is left of the probe's deadline): the largest packet that
   gets there, whether an ICMP "too big" came back, and the router where
   larger packets stop.

The verdict is ``pmtu_black_hole`` when the server acknowledged the ClientHello,
its answer did not come whole, and the path MTU is below the interface MTU (the
size the server's segments can reach); otherwise ``stalled``.  The probe
measures our path *to* the server; the server's segments travel the path back,
which in most networks (and in the lab) crosses the same links.  Measuring
needs raw sockets: without them the verdict is ``stalled`` with a note.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from dataclasses import dataclass
from typing import Literal

from ..errors import PrivilegeError
from ..results import TlsStall

__all__ = ["TcpCounters", "diagnose_stall", "tcp_counters"]

_TCP_INFO = getattr(socket, "TCP_INFO", 11)
# Offsets in struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received
# are u64 at 120 and 128 (Linux 4.1/4.2), tcpi_rcv_ooopack a u32 at 224 (Linux 5.4).
_BYTES_ACKED, _BYTES_RECEIVED, _RCV_OOOPACK = 120, 128, 224


class _NoTime(Exception):
    pass


@dataclass(frozen=True, slots=True)
class TcpCounters:
    bytes_acked: int
    bytes_received: int
    out_of_order: int | None


def tcp_counters(sock: socket.socket | None) -> TcpCounters | None:
    """The connection's byte counters from ``TCP_INFO`` (None where the kernel has none)."""
    if sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < _BYTES_RECEIVED + 8:
        return None
    acked, received = struct.unpack_from("=QQ", info, _BYTES_ACKED)
    ooo = (struct.unpack_from("=I", info, _RCV_OOOPACK)[0]
           if len(info) >= _RCV_OOOPACK + 4 else None)
    return TcpCounters(int(acked), int(received), ooo)


async def diagnose_stall(address: str, ip_version: Literal[4, 6] | None,
                         before: TcpCounters | None, after: TcpCounters | None,
                         budget_s: float) -> TlsStall:
    """The evidence of a stalled handshake and the verdict (see the module's docstring)."""
    hello_acked = flight = ooo = None
    if before is not None and after is not None:
        hello_acked = after.bytes_acked > before.bytes_acked
        flight = after.bytes_received - before.bytes_received
        if after.out_of_order is not None and before.out_of_order is not None:
            ooo = after.out_of_order - before.out_of_order
    path_mtu = local_mtu = hop = None
    ptb: bool | None = None
    note = None
    try:
        from .pmtu import PmtuOptions, measure_pmtu

        if budget_s < 0.5:
            raise _NoTime
        opts = PmtuOptions(protocol="icmp", timeout_s=0.5, deadline_s=budget_s, max_ttl=30)
        record = await asyncio.to_thread(measure_pmtu, address, opts, family=ip_version)
        body = record.body
        path_mtu, local_mtu, hop = body.path_mtu, body.local_mtu, body.hop_address
        ptb = body.ptb_received
        if record.status != "ok":
            note = f"path MTU not measured: {record.error}"
    except _NoTime:
        note = ("path MTU not measured: no time left before the probe's deadline (give the "
                "probe a timeout longer than its phase timeout)")
    except PrivilegeError:
        note = "path MTU not measured: it needs raw sockets (root or CAP_NET_RAW)"
    except OSError as exc:
        note = f"path MTU not measured: {exc}"
    black_hole = (hello_acked is not False and path_mtu is not None and local_mtu is not None
                  and path_mtu < local_mtu)
    return TlsStall(verdict="pmtu_black_hole" if black_hole else "stalled",
                    hello_acked=hello_acked, flight_bytes=flight, out_of_order_segments=ooo,
                    path_mtu=path_mtu, local_mtu=local_mtu, ptb_received=ptb,
                    hop_address=hop, note=note)
