"""Targets as users write them, and their resolution to one address.

Accepted forms: ``host``, ``host:port``, ``192.0.2.1``, ``192.0.2.1:25``,
``2001:db8::1`` (no port), ``[2001:db8::1]:25``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Literal

from ..errors import TargetError

__all__ = ["Resolved", "Target", "parse_target", "resolve"]

Family = Literal[4, 6] | None


@dataclass(frozen=True, slots=True)
class Target:
    """A target as given: the name (or literal address) and an optional port."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """One address chosen for a target, with the family it belongs to."""

    address: str
    ip_version: Literal[4, 6]


def _port(text: str, whole: str) -> int:
    if not text.isdigit():
        raise TargetError(f"{whole!r}: port {text!r} is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise TargetError(f"{whole!r}: port {port} is outside 1-65535")
    return port


def _check_host(host: str, whole: str) -> str:
    if not host:
        raise TargetError(f"{whole!r}: empty host")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    # A DNS name: RFC 1035 limits, letters/digits/hyphen/underscore and dots.
    if len(host) > 253 or not all(
        0 < len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label)
        for label in host.rstrip(".").split(".")
    ):
        raise TargetError(f"{whole!r}: {host!r} is neither an IP address nor a host name")
    return host


def parse_target(text: str, *, default_port: int | None = None,
                 require_port: bool = False) -> Target:
    """Parse ``text`` into a :class:`Target`; raises :class:`TargetError` naming the problem."""
    whole = text
    text = text.strip()
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise TargetError(f"{whole!r}: missing ']' after an IPv6 address")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise TargetError(f"{whole!r}: expected ':PORT' after ']'")
            port = _port(rest[1:], whole)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetError(f"{whole!r}: {host!r} is not an IPv6 address") from None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, whole)
    else:
        host = text  # a name, an IPv4 address or a bare IPv6 address
    host = _check_host(host, whole)
    if port is None:
        port = default_port
    if require_port and port is None:
        raise TargetError(f"{whole!r}: give a port, as HOST:PORT (or [IPv6]:PORT)")
    return Target(host=host, port=port)


async def resolve(host: str, family: Family = None, timeout_s: float = 5.0) -> Resolved:
    """Resolve ``host`` to one address (the first the system resolver prefers).

    Literal addresses are returned without asking the resolver.  Raises
    :class:`OSError` (``socket.gaierror``) or :class:`TimeoutError`; callers
    turn those into a record's status.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if family is not None and ip.version != family:
            raise socket.gaierror(socket.EAI_FAMILY, f"{host} is not an IPv{family} address")
        return Resolved(str(ip), 4 if ip.version == 4 else 6)
    af = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[family]
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, None, family=af, type=socket.SOCK_STREAM), timeout_s
    )
    if not infos:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no address")
    fam, _, _, _, sockaddr = infos[0]
    return Resolved(str(sockaddr[0]), 6 if fam == socket.AF_INET6 else 4)
