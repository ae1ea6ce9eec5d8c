"""Paris traceroute over raw sockets (ICMP, UDP, TCP SYN), IPv4 and IPv6, and an
unprivileged mode that reads ICMP errors through ``IP_RECVERR``.

How a trace runs (``method="raw"``)
-----------------------------------
* One flow per trace (see :mod:`netvantage.measure.packets`): the fields load
  balancers hash stay constant, and each probe carries its own id (ICMP
  sequence, UDP checksum, TCP sequence; on IPv4 also the IP id).  A reply is
  matched to its probe by (destination quoted, protocol, flow, probe id), so a
  probe's TTL can never be mistaken for another's.
* TTLs go out a *window* at a time, all of the window's TTLs and probes in
  flight together, paced by a global token rate (``pps``) shared by every
  trace of the run; a probe whose turn comes after its trace heard the
  destination at a lower TTL is not sent, and its slot goes to the next.
  When every probe of a window has answered or timed out, the trace stops
  if the destination answered (``reached``), a router said unreachable, or
  ``gap_limit`` TTLs in a row were silent; otherwise the next window goes
  out, up to ``max_ttl``.  One deadline bounds the whole run.
* TCP: the destination keeps state per 4-tuple, and all of a trace's SYNs
  share one, so only the first SYN to reach it can draw a SYN/ACK; later ones
  meet its half-open connection and get at most a bare ACK of that first SYN,
  which is nobody's answer.  Once a window reaches the destination, the TTLs
  from the last router that answered up to the destination are probed again
  one SYN at a time (see :func:`.engine.resolve_tcp_destination`).
* ``cycles`` > 1 repeats the trace (mtr style) at ``cycle_interval_s``; every
  probe is kept with its cycle, and statistics are per (TTL, responder).

Where an RTT comes from
-----------------------
Everything runs on one asyncio loop in one thread.  The send time is
``CLOCK_REALTIME`` read right before ``sendto()``; the receive time is the
kernel's ``SO_TIMESTAMPNS`` stamp on the ICMP error (or echo reply, or
SYN/ACK).  RTT = receive − send, guarded by the monotonic clock as in
:mod:`netvantage.measure.ping`.  It includes the kernel's output path, the
path to the responder and back and the responder's time to answer (routers
generate ICMP errors on their slow path), not this process's wake-up.

Sockets: IPv4 sends through one ``IPPROTO_RAW`` socket (we write the IP
header: TTL and id per probe); IPv6 through a raw socket of the probe's
protocol with the hop limit given per packet (``IPV6_HOPLIMIT`` ancillary
data).  Replies arrive on raw ICMP/ICMPv6 sockets (and raw TCP sockets for
SYN/ACK or RST).  All of this needs root or ``CAP_NET_RAW``.

Without privileges (``method="recverr"``)
-----------------------------------------
Like ``tracepath``: an ordinary UDP socket (or an unprivileged ICMP socket)
with ``IP_RECVERR``, one probe at a time, the TTL set with ``IP_TTL``; the
kernel hands back each ICMP error with the offender's address and its own
timestamp.  Slower (one round trip per probe), the same flow throughout.

Layout of this package
----------------------
* :mod:`.options` – :class:`TraceOptions`, checked when made;
* :mod:`.state` – one trace's state while it runs (its flow, probes, stopping state);
* :mod:`.sockets` – the raw socket layer: opening, building and sending probes,
  reading and parsing replies with their kernel timestamps;
* :mod:`.engine` – the raw engine: pacing, windows of TTLs, matching replies to
  probes, the TCP destination's one-SYN-at-a-time resolution;
* :mod:`.recverr` – the unprivileged mode;
* :mod:`.records` – a finished trace as a :class:`~netvantage.results.TraceRecord`;
* this module – :func:`trace` and :func:`trace_many`, which tie them together.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ...errors import PrivilegeError
from ...results import TraceRecord, new_id, utc_now
from ..common import Origin, describe, status_of
from ..target import Resolved, Target, parse_target, resolve
from .engine import RawEngine, run_raw
from .options import Method, Protocol, TraceOptions
from .records import empty_record, trace_record
from .recverr import run_recverr
from .state import TraceRun

if TYPE_CHECKING:
    from .mda import MdaEngine, MdaRun

__all__ = ["Method", "Protocol", "TraceOptions", "trace", "trace_many"]

_DEFAULTS = TraceOptions()  # frozen: safe to share as a default


def _source_for(dst: str, version: int) -> str:
    """The address the kernel would send from towards ``dst`` (no packet is sent)."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((dst, 33434))
        return str(s.getsockname()[0])


def _choose_method(opts: TraceOptions) -> Literal["raw", "recverr"]:
    if opts.method != "auto":
        return opts.method
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW).close()
        return "raw"
    except PermissionError:
        if opts.protocol == "tcp":
            raise PrivilegeError("TCP traceroute needs root or CAP_NET_RAW") from None
        return "recverr"


async def trace_many(targets: Sequence[Target | str], opts: TraceOptions = _DEFAULTS, *,
                     origin: Origin | None = None, family: Literal[4, 6] | None = None,
                     concurrency: int = 64, pcap: Path | None = None) -> list[TraceRecord]:
    """Trace several targets at once (at most ``concurrency``), sharing one pacer.

    ``pcap``: write every probe and every answer about a traced destination there
    (:mod:`netvantage.measure.pcap`); it needs the raw method (root or CAP_NET_RAW).
    """
    origin = origin or Origin.local()
    method = _choose_method(opts)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + opts.deadline_s
    if opts.mda:
        if method != "raw":
            raise PrivilegeError("multipath tracing (--mda) needs raw sockets: root or "
                                 "CAP_NET_RAW")
        return await _mda_many(targets, opts, origin, family, concurrency, deadline, pcap)
    engine = RawEngine(opts) if method == "raw" else None
    if pcap is not None:
        if engine is None:
            raise PrivilegeError("--pcap records the raw method's packets: it needs root or "
                                 "CAP_NET_RAW")
        from ..pcap import PacketLog

        engine.sockets.log = PacketLog(pcap)
    used_ids: set[int] = set()

    async def one(host: str, resolved: Resolved, src: str, record_id: str) -> TraceRecord:
        flow_id = random.randrange(1, 0xFFFF)
        while flow_id in used_ids:
            flow_id = random.randrange(1, 0xFFFF)
        used_ids.add(flow_id)
        t = TraceRun(dst=resolved.address, version=resolved.ip_version, src=src, opts=opts,
                     flow_id=flow_id, sport=0x8000 | (flow_id & 0x7FFF))
        started_at, t0 = utc_now(), time.perf_counter_ns()
        if engine is not None:
            with _matched(engine, t):
                await run_raw(engine, t, deadline)
        else:
            await run_recverr(t, deadline)
        return trace_record(t, method, origin, host, record_id, started_at, t0)

    try:
        return await _each(targets, opts, origin, family, concurrency, one)
    finally:
        if engine is not None:
            engine.close()


@contextmanager
def _matched(engine: RawEngine | MdaEngine, t: TraceRun | MdaRun) -> Iterator[None]:
    """While ``t`` runs, the engine (the Paris one or the multipath one) matches replies
    from its destination to it, and the packet log keeps them."""
    runs: list[Any] = engine.by_dst.setdefault(t.dst, [])
    engine.sockets.log_dsts.add(t.dst)
    runs.append(t)
    try:
        yield
    finally:
        runs.remove(t)


async def _each(targets: Sequence[Target | str], opts: TraceOptions, origin: Origin,
                family: Literal[4, 6] | None, concurrency: int,
                run: Callable[[str, Resolved, str, str], Awaitable[TraceRecord]],
                ) -> list[TraceRecord]:
    """One record per target, in order: each resolved (a name that does not resolve, or an
    address with no route, gets its empty record), then ``run(host, resolved, source,
    record_id)`` with at most ``concurrency`` traces at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(target: Target | str) -> TraceRecord:
        host = target.host if isinstance(target, Target) else parse_target(target).host
        record_id, started_at, t0 = new_id(), utc_now(), time.perf_counter_ns()
        try:
            resolved = await resolve(host, family)
        except (OSError, TimeoutError) as exc:
            return empty_record(host, opts, origin, status_of(exc), describe(exc), record_id,
                                started_at, t0)
        async with gate:
            try:
                src = _source_for(resolved.address, resolved.ip_version)
            except OSError as exc:
                return empty_record(host, opts, origin, status_of(exc), describe(exc),
                                    record_id, started_at, t0)
            return await run(host, resolved, src, record_id)

    return list(await asyncio.gather(*(one(t) for t in targets)))


async def _mda_many(targets: Sequence[Target | str], opts: TraceOptions, origin: Origin,
                    family: Literal[4, 6] | None, concurrency: int,
                    deadline: float, pcap: Path | None = None) -> list[TraceRecord]:
    """The multipath traces of :func:`trace_many` (``opts.mda``): one :class:`.mda.MdaEngine`."""
    from .mda import MdaEngine, mda_record, new_run, run_mda

    engine = MdaEngine(opts)
    if pcap is not None:
        from ..pcap import PacketLog

        engine.sockets.log = PacketLog(pcap)
    async def one(host: str, resolved: Resolved, src: str, record_id: str) -> TraceRecord:
        t = new_run(resolved.address, resolved.ip_version, src, opts)
        started_at, t0 = utc_now(), time.perf_counter_ns()
        with _matched(engine, t):
            await run_mda(engine, t, deadline)
        return mda_record(t, origin, host, record_id, started_at, t0)

    try:
        return await _each(targets, opts, origin, family, concurrency, one)
    finally:
        engine.close()


async def trace(target: Target | str, opts: TraceOptions = _DEFAULTS, *,
                origin: Origin | None = None, family: Literal[4, 6] | None = None,
                name: str | None = None) -> TraceRecord:
    """Trace one target; ``name`` (e.g. the data centre's) replaces the host in the record."""
    (record,) = await trace_many([target], opts, origin=origin, family=family)
    if name is not None:
        record = msgspec.structs.replace(record, target=name)
    return record
