"""Measurements, one module per kind.  Each returns a record; none raises for a network failure."""

from __future__ import annotations

from .common import Origin
from .ping import PingOptions, ping, ping_many
from .target import Target, parse_target
from .tcp import TcpOptions, tcp_connect, tcp_many

__all__ = [
    "Origin",
    "PingOptions",
    "Target",
    "TcpOptions",
    "parse_target",
    "ping",
    "ping_many",
    "tcp_connect",
    "tcp_many",
]
