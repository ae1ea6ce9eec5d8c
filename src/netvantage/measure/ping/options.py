"""What one ping command may ask for, with the ceilings that keep it from being a flood."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MAX_COUNT", "MAX_PAYLOAD", "MIN_INTERVAL_S", "MIN_PACE_S", "PingOptions",
           "SocketKind"]

# Ceilings that keep one command from becoming a flood.
MIN_INTERVAL_S = 0.01
MIN_PACE_S = 0.0001
MAX_COUNT = 10_000
MAX_PAYLOAD = 65_000

SocketKind = Literal["auto", "raw", "dgram"]


@dataclass(frozen=True, slots=True)
class PingOptions:
    count: int = 5
    interval_s: float = 1.0
    timeout_s: float = 2.0
    payload_bytes: int = 56
    ttl: int = 64
    dont_fragment: bool = False
    socket: SocketKind = "auto"
    #: Minimum spacing of all echo requests of a sweep, across targets (``fping -i``).
    pace_s: float = 0.001

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count must be 1..{MAX_COUNT}")
        if self.interval_s < MIN_INTERVAL_S:
            raise ValueError(f"interval must be at least {MIN_INTERVAL_S} s (no flooding)")
        if not 0 < self.timeout_s <= 60:
            raise ValueError("timeout must be in (0, 60] s")
        if not 0 <= self.payload_bytes <= MAX_PAYLOAD:
            raise ValueError(f"payload must be 0..{MAX_PAYLOAD} bytes")
        if not 1 <= self.ttl <= 255:
            raise ValueError("ttl must be 1..255")
        if not MIN_PACE_S <= self.pace_s <= 10:
            raise ValueError(f"pace must be {MIN_PACE_S}..10 s (no flooding)")
