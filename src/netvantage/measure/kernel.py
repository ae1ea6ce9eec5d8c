"""What the Linux socket layer tells a probe: receive timestamps and queued ICMP errors.

Shared by :mod:`.ping` and :mod:`.trace`, which time packets the same way:

* the send time is ``CLOCK_REALTIME`` *and* the monotonic clock, read right
  before ``sendto()``;
* the receive time is the kernel's ``SO_TIMESTAMPNS`` stamp (``CLOCK_REALTIME``,
  taken when the datagram reached the socket) and the monotonic clock read when
  ``recvmsg()`` returned.

:func:`rtt_ns` keeps the kernel-based interval, which excludes the process's
wake-up, unless the wall clock was stepped in between: the monotonic interval
is always a little *longer*, so a kernel-based value that is negative or longer
than it cannot be right, and the monotonic one is used instead.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

__all__ = [
    "IPV6_RECVERR",
    "IP_RECVERR",
    "MSG_ERRQUEUE",
    "SO_TIMESTAMPNS",
    "QueuedError",
    "kernel_stamp",
    "queued_error",
    "rtt_ns",
    "sockaddr_address",
]

# Linux socket options the socket module does not always name.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)

_TIMESPEC = struct.Struct("@ll")  # struct timespec: native long seconds, long nanoseconds
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err
_ORIGINS_ICMP = (2, 3)  # SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6

Ancillary = list[tuple[int, int, bytes]]


def kernel_stamp(anc: Ancillary) -> int | None:
    """The ``SO_TIMESTAMPNS`` receive stamp in ns (CLOCK_REALTIME), if the kernel gave one."""
    for level, kind, data in anc:
        if (level, kind) == (socket.SOL_SOCKET, SO_TIMESTAMPNS) and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


def rtt_ns(tx_real: int, tx_mono: int, rx_real: int | None, rx_mono: int) -> tuple[int, bool]:
    """The round trip in ns, and whether it came from the kernel stamp (see the docstring)."""
    mono = rx_mono - tx_mono
    if rx_real is not None and 0 <= rx_real - tx_real <= mono:
        return rx_real - tx_real, True
    return mono, False


def sockaddr_address(raw: bytes) -> str | None:
    """The address of a raw ``sockaddr_in``/``sockaddr_in6`` (e.g. SO_EE_OFFENDER)."""
    if len(raw) >= 8 and int.from_bytes(raw[0:2], "little") == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if len(raw) >= 24 and int.from_bytes(raw[0:2], "little") == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


@dataclass(frozen=True, slots=True)
class QueuedError:
    """An ICMP error the kernel queued on the socket (``IP_RECVERR``/``IPV6_RECVERR``)."""

    icmp_type: int
    icmp_code: int
    offender: str | None


def queued_error(anc: Ancillary, ip_version: int) -> QueuedError | None:
    """The ICMP error in the ancillary data of a ``MSG_ERRQUEUE`` read, if there is one."""
    level, kind = ((socket.IPPROTO_IP, IP_RECVERR) if ip_version == 4
                   else (socket.IPPROTO_IPV6, IPV6_RECVERR))
    for lvl, typ, data in anc:
        if lvl != level or typ != kind or len(data) < _EXTENDED_ERR.size:
            continue
        _errno, origin, itype, icode, _pad, _info, _data = _EXTENDED_ERR.unpack_from(data)
        if origin in _ORIGINS_ICMP:
            return QueuedError(itype, icode, sockaddr_address(data[_EXTENDED_ERR.size:]))
    return None
