"""``netvantage demo``: real measurements against this machine.

For now the demo measures loopback for real — ICMP to 127.0.0.1 and ::1, and
TCP to a listener it opens and to a port nobody listens on — and writes the
records as JSON Lines.  The full demo (lab, agents, collector, report) grows
from here as those parts land.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from pathlib import Path

from .errors import PrivilegeError
from .measure.common import Origin
from .measure.ping import PingOptions, ping_many
from .measure.tcp import TcpOptions, tcp_many
from .results import AnyRecord, write_jsonl

__all__ = ["DemoResult", "run_demo"]


@dataclass(frozen=True, slots=True)
class DemoResult:
    records: list[AnyRecord]
    output: Path
    notes: list[str]


async def _measure(origin: Origin, notes: list[str]) -> list[AnyRecord]:
    listener = socket.socket(socket.AF_INET6)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    listener.listen(64)
    open_port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
    closed_port = closed.getsockname()[1]
    records: list[AnyRecord] = []
    try:
        try:
            records += await ping_many(["127.0.0.1", "::1"],
                                       PingOptions(count=5, interval_s=0.2), origin=origin)
        except PrivilegeError as exc:
            notes.append(f"ping skipped: {exc}")
        records += await tcp_many(
            [f"127.0.0.1:{open_port}", f"[::1]:{open_port}", f"127.0.0.1:{closed_port}"],
            TcpOptions(attempts=5, interval_s=0.1), origin=origin,
        )
    finally:
        listener.close()
        closed.close()
    return records


def run_demo(out_dir: Path) -> DemoResult:
    notes: list[str] = []
    origin = Origin.local(region="local")
    records = asyncio.run(_measure(origin, notes))
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / "demo-measurements.jsonl"
    write_jsonl(records, output)
    return DemoResult(records=records, output=output, notes=notes)
