"""One trace while it runs: its flow, its probes (by probe id), its stopping state.

Shared by the raw engine, the unprivileged mode and the record builder.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from ...results import TraceProbe, ms
from ..kernel import rtt_ns
from .options import TraceOptions

__all__ = ["UNREACHABLE", "Probe", "TraceRun", "probe_rtt_ms"]

UNREACHABLE = {4: 3, 6: 1}  # ICMP destination unreachable, by IP version


def probe_rtt_ms(tx_real: int, tx_mono: int, rx_real: int | None, rx_mono: int) -> float:
    return ms(rtt_ns(tx_real, tx_mono, rx_real, rx_mono)[0])


@dataclass
class Probe:
    trace: TraceRun
    cycle: int
    ttl: int
    index: int
    tx_real: int = 0
    tx_mono: int = 0
    result: TraceProbe | None = None
    sent: bool = False


@dataclass
class TraceRun:
    """One destination's trace: its flow, its probes, its stopping state."""

    dst: str
    version: Literal[4, 6]
    src: str
    opts: TraceOptions
    flow_id: int
    sport: int
    probes: dict[int, Probe] = field(default_factory=dict)  # probe id → probe
    next_id: int = 1
    dest_ttl: dict[int, int] = field(default_factory=dict)  # cycle → TTL
    # TCP: cycle → lowest TTL of a SYN the destination acknowledged with a bare ACK
    # (it reached the destination; its SYN/ACK was lost): see resolve_tcp_destination().
    dest_hint: dict[int, int] = field(default_factory=dict)
    collisions: int = 0  # TCP: bare ACKs seen, each a SYN that met a half-open connection
    stop_reason: str | None = None
    unreachable_ttl: int | None = None
    highest_ttl: int = 0
    window_done: asyncio.Event = field(default_factory=asyncio.Event)
    outstanding: int = 0

    def new_probe(self, cycle: int, ttl: int, index: int) -> tuple[int, Probe]:
        pid = self.next_id
        self.next_id += 1
        if self.next_id > 0xFFFE:
            raise ValueError("more than 65534 probes in one trace")
        probe = Probe(self, cycle, ttl, index)
        self.probes[pid] = probe
        return pid, probe
