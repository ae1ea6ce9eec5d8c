"""Measurements, one module per kind.  Each returns a record; none raises for a network failure.

The names below are loaded on first use (PEP 562), so that importing one probe
module — or the CLI, the collector or the analysis, which reach ``measure.common``
— does not import every other probe and its dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Origin",
    "PingOptions",
    "Target",
    "TcpOptions",
    "parse_target",
    "ping_many",
    "tcp_connect",
    "tcp_many",
]

_WHERE = {
    "Origin": "common",
    # ``ping`` itself is not re-exported: ``netvantage.measure.ping`` is the module
    # (the function is ``netvantage.measure.ping.ping``).
    "PingOptions": "ping", "ping_many": "ping",
    "Target": "target", "parse_target": "target",
    "TcpOptions": "tcp", "tcp_connect": "tcp", "tcp_many": "tcp",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
