"""What a trace is asked to do: :class:`TraceOptions`, checked when made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Method", "Protocol", "TraceOptions"]

Protocol = Literal["icmp", "udp", "tcp"]
Method = Literal["auto", "raw", "recverr"]

_DEFAULT_PORT = {"udp": 33434, "tcp": 80}


@dataclass(frozen=True, slots=True)
class TraceOptions:
    protocol: Protocol = "icmp"
    port: int | None = None
    probes_per_hop: int = 3
    cycles: int = 1
    cycle_interval_s: float = 1.0
    first_ttl: int = 1
    max_ttl: int = 30
    window: int = 8
    gap_limit: int = 5
    probe_timeout_s: float = 2.0
    deadline_s: float = 60.0
    pps: float = 100.0
    payload_bytes: int = 24
    method: Method = "auto"
    mda: bool = False  # Multipath Detection Algorithm (see .mda): flows vary per probe
    confidence: float = 0.95  # MDA: per-interface confidence of having seen every successor

    def __post_init__(self) -> None:
        if not 1 <= self.first_ttl <= self.max_ttl <= 255:
            raise ValueError("need 1 <= first_ttl <= max_ttl <= 255")
        if not 1 <= self.probes_per_hop <= 64 or not 1 <= self.cycles <= 10_000:
            raise ValueError("probes per hop 1..64, cycles 1..10000")
        if not 0 < self.pps <= 10_000:
            raise ValueError("pps must be in (0, 10000]: a tracer must not flood")
        if not 1 <= self.window <= 64 or not 1 <= self.gap_limit <= 255:
            raise ValueError("window 1..64, gap limit 1..255")
        if not 0 < self.probe_timeout_s <= 60 or not 0 < self.deadline_s <= 3600:
            raise ValueError("probe timeout (0, 60] s, deadline (0, 3600] s")
        if self.mda and self.method == "recverr":
            raise ValueError("--mda sends many flows at once over raw sockets: it cannot run "
                             "with --method recverr (needs root or CAP_NET_RAW)")
        if not 0.5 <= self.confidence <= 0.999:
            raise ValueError("MDA confidence must be in 0.5..0.999")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError("port must be 1..65535")

    @property
    def dport(self) -> int | None:
        if self.protocol == "icmp":
            return None
        return self.port or _DEFAULT_PORT[self.protocol]
