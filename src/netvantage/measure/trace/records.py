"""A finished trace as a :class:`~netvantage.results.TraceRecord` (the result schema)."""

from __future__ import annotations

import time
from typing import Any, Literal

from ...results import Hop, Status, TraceBody, TraceProbe, TraceRecord, ms
from ..common import Origin
from .options import TraceOptions
from .state import TraceRun

__all__ = ["empty_record", "ending", "trace_record"]


def ending(reached: bool, stop_reason: str | None, o: TraceOptions
           ) -> tuple[str, Status, str | None]:
    """How a trace ended: its stop reason, its status and, unless it reached the
    destination, the error that says why not."""
    stop = "reached" if reached else (stop_reason or "max_ttl")
    status: Status = "ok" if reached else "unreachable" if stop == "unreachable" else "timeout"
    error = None if reached else {
        "unreachable": "a router answered destination unreachable",
        "gap": f"destination not reached: {o.gap_limit} silent TTLs in a row",
        "max_ttl": f"destination not reached within {o.max_ttl} hops",
        "deadline": f"deadline of {o.deadline_s:g} s reached",
    }[stop]
    return stop, status, error


def trace_record(t: TraceRun, method: Literal["raw", "recverr"], origin: Origin, name: str,
            record_id: str, started_at: Any, t0: int) -> TraceRecord:
    o = t.opts
    reached = bool(t.dest_ttl)
    dest_ttl = min(t.dest_ttl.values()) if reached else None
    last = dest_ttl or (t.unreachable_ttl if t.unreachable_ttl else t.highest_ttl)
    by_ttl: dict[int, list[TraceProbe]] = {}
    for probe in sorted(t.probes.values(), key=lambda p: (p.ttl, p.cycle, p.index)):
        if probe.ttl <= last and (probe.sent or probe.result is not None):
            by_ttl.setdefault(probe.ttl, []).append(probe.result or TraceProbe(cycle=probe.cycle))
    hops = [Hop.from_probes(ttl, by_ttl.get(ttl, [])) for ttl in range(1, last + 1)]
    stop, status, error = ending(reached, t.stop_reason, o)
    flow = ({"icmp_id": t.flow_id} if o.protocol == "icmp"
            else {"sport": t.sport, "dport": o.dport or 0})
    body = TraceBody(protocol=o.protocol, ip_version=t.version, port=o.dport, flow=flow,
                     method=method, probes_per_hop=o.probes_per_hop, cycles=o.cycles,
                     max_ttl=o.max_ttl, reached=reached, dest_ttl=dest_ttl,
                     stop_reason=stop,  # type: ignore[arg-type]
                     hops=hops)
    return TraceRecord(id=record_id, agent=origin.agent, region=origin.region, target=name,
                       address=t.dst, started_at=started_at,
                       duration_ms=ms(time.perf_counter_ns() - t0), status=status, error=error,
                       body=body)


def empty_record(target: str, opts: TraceOptions, origin: Origin, status: Status, error: str,
                  record_id: str, started_at: Any, t0: int) -> TraceRecord:
    body = TraceBody(protocol=opts.protocol, ip_version=4, port=opts.dport, method="raw",
                     probes_per_hop=opts.probes_per_hop, cycles=opts.cycles,
                     max_ttl=opts.max_ttl, reached=False, stop_reason="unreachable", hops=[])
    return TraceRecord(id=record_id, agent=origin.agent, region=origin.region, target=target,
                       address=None, started_at=started_at,
                       duration_ms=ms(time.perf_counter_ns() - t0), status=status, error=error,
                       body=body)
