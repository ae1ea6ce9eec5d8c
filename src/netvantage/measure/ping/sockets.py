"""The socket layer: which ICMP socket a sweep gets, and how it is prepared.

``SOCK_RAW`` needs root or ``CAP_NET_RAW``.  Without it, Linux offers ICMP
"ping" sockets (``SOCK_DGRAM``) to groups inside ``net.ipv4.ping_group_range``;
the kernel then owns the ICMP identifier and hands ICMP errors to us through
``IP_RECVERR`` and the socket's error queue.  Failing both, a
:class:`~netvantage.errors.PrivilegeError` says what to change.

Every raw ICMP socket on a host receives *every* ICMP packet: on a raw socket a
kernel filter (classic BPF for IPv4, ``ICMP6_FILTER`` for IPv6) drops what cannot
be ours before it costs a wake-up.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
from pathlib import Path
from typing import Any

from icmplib import ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import SocketPermissionError

from ...errors import PrivilegeError
from ..kernel import IP_RECVERR, IPV6_RECVERR, SO_TIMESTAMPNS
from .options import PingOptions, SocketKind
from .wire import ECHO_REPLY, ERROR_TYPES

__all__ = ["open_icmp_socket", "prepare"]

# Linux socket options the socket module does not always name.
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SO_ATTACH_FILTER = 26
_IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
_IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)
_IPV6_DONTFRAG = getattr(socket, "IPV6_DONTFRAG", 62)
_ICMP6_FILTER = 1

_RCVBUF_BYTES = 4 << 20  # replies may wait while the loop runs other work


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


def prepare(icmp: Any, ip_version: int, ident: int, opts: PingOptions) -> None:
    """Make ``icmp`` (from :func:`open_icmp_socket`) ready for a sweep: non-blocking,
    kernel receive stamps, a large receive buffer, TTL, ICMP errors (datagram) or a
    kernel filter for identifier ``ident`` (raw), and don't-fragment if asked."""
    s: socket.socket = icmp.sock
    raw = bool(icmp.is_privileged)
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, option, _RCVBUF_BYTES)
            break
        except OSError:
            continue
    icmp._set_ttl(opts.ttl)
    if ip_version == 4:
        if raw:
            _attach_ipv4_filter(s, ident)
        else:
            s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        if opts.dont_fragment:
            s.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
    else:
        if raw:
            _set_icmp6_filter(s)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        if opts.dont_fragment:
            s.setsockopt(socket.IPPROTO_IPV6, _IPV6_DONTFRAG, 1)


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
    for icmp_type in (*ERROR_TYPES[6], ECHO_REPLY[6]):
        words[icmp_type >> 5] &= ~(1 << (icmp_type & 31))
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("=8I", *words))

