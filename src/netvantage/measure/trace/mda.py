"""Multipath tracing: the Multipath Detection Algorithm (MDA) over the raw sockets.

Paris traceroute keeps one flow, so it sees one of the paths that per-flow load
balancers spread flows over.  The MDA (Augustin, Friedman and Teixeira,
"Multipath tracing with Paris traceroute", E2EMON 2007; the statistical basis in
Veitch, Augustin, Teixeira and Friedman, "Failure control in multipath route
tracing", IEEE INFOCOM 2009) varies the flow identifier from probe to probe and
enumerates, TTL by TTL, every interface the flows reach and the links between
successive TTLs' interfaces.

What varies
-----------
Each probe belongs to a *flow* whose identifier is one field that load balancers
hash: the UDP or TCP **source port** (destination port fixed), or for ICMP echo
the **identifier**, which moves the checksum (Paris traceroute's ICMP flow).  The
probe's own id stays where Paris mode keeps it, outside the hash (UDP checksum,
ICMP sequence, TCP sequence), so every answer names its flow and its probe.
Linux's multipath routes with ``fib_multipath_hash_policy=1`` hash ports, not
the ICMP identifier: in the lab an ICMP MDA sees one branch; use UDP or TCP.

The stopping rule
-----------------
A router's flows are spread over its successors.  Having seen ``k`` successors
of an interface, the MDA keeps sending flows through that interface until
``n_k`` of them have been sent; a new successor starts the count for ``k + 1``.
``n_k`` rejects the hypothesis "there are k + 1 successors, equally loaded"
at the chosen confidence: it is the smallest ``n`` such that ``n`` flows thrown
uniformly over ``k + 1`` successors miss at least one of them with probability
at most ``α = 1 − confidence``.  By inclusion–exclusion that probability is

    P(n, K) = Σ_{i=1}^{K−1} (−1)^{i+1} · C(K, i) · (1 − i/K)^n,   K = k + 1,

computed here (:func:`stopping_points`); at 95 % it gives 6, 11, 16, 21, 27, 33,
… flows for k = 1, 2, 3, …  Each ``α`` is a per-interface bound, as in the MDA
paper (Veitch et al. show how to spread a budget over a whole trace; we do not).

Node control: the flows probed at TTL ``h`` through interface ``v`` of TTL
``h − 1`` must be flows known to reach ``v``; when too few are known, new flows
are sent at ``h − 1`` first (as many as the least-visited short interface's share
of the flows seen there predicts are needed; one batch serves them all) and those
that reach ``v`` are sent on.  Where TTL ``h − 1`` has one interface, every flow
passes it: new flows go straight to ``h`` and the links are inferred.  A silent
TTL is a pseudo-interface (``None``) whose flows are followed the same way.  An
unanswered probe counts as sent (it found nothing new), so a silent router costs
``n_1`` probes, not a stall.  An interface one of whose flows reached the
destination is not probed further (as scamper's ``tracelb`` does: the destination
ends every path through it).  The trace ends when every interface of a TTL is
the destination (or a router's unreachable), after ``gap_limit`` silent TTLs,
at ``max_ttl`` or at the deadline.

Cost, measured on the lab's diamond (``bench/mda_bench.py``): about 40 probes where
scamper's ``tracelb`` sends 19; scamper spends its ``n_k`` on a whole set of
branches where they reconverge, not on each interface as the MDA's rule does here.

Why here and not a library: scamper's ``tracelb`` is a C program (it is the
reference the benchmark compares against), and no Python library implements the
MDA over our engine's raw sockets, kernel timestamps and record schema.
"""

from __future__ import annotations

import asyncio
import errno
import math
import random
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from ...results import (
    Diamond,
    Hop,
    MdaLink,
    Multipath,
    TraceBody,
    TraceProbe,
    TraceRecord,
    ms,
)
from ..common import Origin
from ..packets import (
    PROTO_ICMP4,
    PROTO_ICMP6,
    PROTO_TCP,
    PROTO_UDP,
    Quoted,
    icmp_echo,
    ipv4_header,
    udp_probe,
)
from .options import TraceOptions
from .records import ending
from .sockets import RawSockets, tcp_syn
from .state import UNREACHABLE, probe_rtt_ms

__all__ = ["MdaEngine", "MdaRun", "diamonds", "mda_record", "miss_probability", "new_run",
           "run_mda", "stopping_points"]

_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_SOURCE = "<source>"  # the virtual interface before the first TTL: every flow passes it
MAX_PROBES_PER_TTL = 2048  # a bound on what one TTL may cost, whatever the width
MAX_ROUNDS_PER_TTL = 24


def miss_probability(n: int, k: int) -> float:
    """P(``n`` flows spread uniformly over ``k`` successors miss at least one of them)."""
    if k <= 1:
        return 0.0
    return max(0.0, sum(float((-1) ** (i + 1) * math.comb(k, i) * (1 - i / k) ** n)
                        for i in range(1, k)))


@cache
def _stopping(confidence: float, k: int) -> int:
    alpha = 1.0 - confidence
    n = k + 1
    while miss_probability(n, k + 1) > alpha:
        n += 1
    return n


def stopping_points(confidence: float = 0.95, up_to: int = 16) -> list[int]:
    """``n_k`` for k = 1 … ``up_to``: flows to send through an interface with k successors
    seen before concluding there is no (k + 1)-th (see the module docstring)."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    return [_stopping(confidence, k) for k in range(1, up_to + 1)]


def n_k(confidence: float, k: int) -> int:
    return _stopping(confidence, max(1, k))


# --------------------------------------------------------------------------- one trace


@dataclass
class MdaProbe:
    flow: int
    ttl: int
    tx_real: int = 0
    tx_mono: int = 0
    result: TraceProbe | None = None
    sent: bool = False


@dataclass
class MdaRun:
    """One destination's multipath trace: its flows, its probes, what each flow met."""

    dst: str
    version: Literal[4, 6]
    src: str
    opts: TraceOptions
    base: int  # first flow's identifier (source port or ICMP identifier)
    probes: dict[int, MdaProbe] = field(default_factory=dict)  # probe id → probe
    next_id: int = 1
    next_flow: int = 0
    # TTL → flow → who answered (None: nobody)
    seen: dict[int, dict[int, str | None]] = field(default_factory=dict)
    terminal: set[str] = field(default_factory=set)  # the destination, routers' unreachables
    dest_ttl: int | None = None
    unreachable_ttl: int | None = None
    highest_ttl: int = 0
    stop_reason: str | None = None
    outstanding: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def flow_value(self, flow: int) -> int:
        return (self.base + flow) & 0xFFFF

    def new_flows(self, count: int) -> list[int]:
        start = self.next_flow
        self.next_flow += count
        return list(range(start, self.next_flow))

    def new_probe(self, flow: int, ttl: int) -> tuple[int, MdaProbe]:
        pid = self.next_id
        if pid > 0xFFFE:
            raise OverflowError("more than 65534 probes in one trace")
        self.next_id += 1
        probe = MdaProbe(flow, ttl)
        self.probes[pid] = probe
        return pid, probe

    def packet(self, pid: int, probe: MdaProbe) -> bytes:
        o = self.opts
        value = self.flow_value(probe.flow)
        if o.protocol == "icmp":
            body = icmp_echo(self.version, value, pid, o.payload_bytes, self.src, self.dst)
            proto = PROTO_ICMP4
        elif o.protocol == "udp":
            assert o.dport is not None
            body = udp_probe(self.src, self.dst, value, o.dport, pid, o.payload_bytes)
            proto = PROTO_UDP
        else:
            body = tcp_syn(self.src, self.dst, value, o.dport or 80, pid << 16)
            proto = PROTO_TCP
        if self.version == 4:
            return ipv4_header(self.src, self.dst, proto, probe.ttl, pid, 20 + len(body)) + body
        return body

    # -- what the probes found ---------------------------------------------

    def at(self, ttl: int) -> dict[int, str | None]:
        return self.seen.setdefault(ttl, {})

    def groups(self, ttl: int) -> dict[str | None, list[int]]:
        """The interfaces of a TTL, each with the flows that reached it (None: silent)."""
        out: dict[str | None, list[int]] = {}
        for flow, address in self.at(ttl).items():
            out.setdefault(address, []).append(flow)
        return out

    def interfaces(self) -> list[list[str]]:
        return [sorted({a for a in self.at(ttl).values() if a is not None})
                for ttl in range(1, self.highest_ttl + 1)]

    def links(self) -> list[MdaLink]:
        out: list[MdaLink] = []
        for ttl in range(1, self.highest_ttl):
            near, far = self.at(ttl), self.at(ttl + 1)
            # With one interface (or one silence) at a TTL, every flow passed there: a flow
            # sent straight to the next TTL (see _wanted) links it too.
            only = set(near.values())
            counts = Counter((near[f] if f in near else next(iter(only)), far[f])
                             for f in far if f in near or len(only) == 1)
            out += [MdaLink(ttl=ttl, near=a, far=b, flows=n)
                    for (a, b), n in sorted(counts.items(), key=lambda kv: (str(kv[0][0]),
                                                                           str(kv[0][1])))
                    if not (a is None and b is None)]
        return out


class _Pacer:
    """One send slot every 1/pps seconds, first come first served, for the whole run."""

    def __init__(self, pps: float) -> None:
        self.interval = 1.0 / pps
        self.next = 0.0
        self.loop = asyncio.get_running_loop()

    async def slot(self) -> None:
        now = self.loop.time()
        at = max(self.next, now)
        self.next = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


class MdaEngine:
    """A run's raw sockets, pacer and reply matching, shared by its multipath traces."""

    def __init__(self, opts: TraceOptions) -> None:
        self.opts = opts
        self.by_dst: dict[str, list[MdaRun]] = {}
        self.pacer = _Pacer(opts.pps)
        self.sockets = RawSockets(opts.protocol, self._match)

    def close(self) -> None:
        self.sockets.close()

    async def send(self, t: MdaRun, pid: int, probe: MdaProbe) -> None:
        await self.pacer.slot()
        data = t.packet(pid, probe)
        sock = self.sockets.socks["tx4" if t.version == 4 else "tx6"]
        probe.tx_real, probe.tx_mono = time.time_ns(), time.perf_counter_ns()
        try:
            if t.version == 4:
                sock.sendto(data, (t.dst, 0))
            else:
                anc = [(socket.IPPROTO_IPV6, _IPV6_HOPLIMIT, struct.pack("@i", probe.ttl))]
                sock.sendmsg([data], anc, 0, (t.dst, 0))
        except OSError as exc:
            probe.result = TraceProbe()
            probe.sent = True
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                t.stop_reason = "unreachable"
            return
        probe.sent = True
        t.outstanding += 1
        log = self.sockets.log
        if log is not None:  # --pcap: the probe as it left
            if t.version == 4:
                log.write(data, probe.tx_real)
            else:
                proto = {"icmp": PROTO_ICMP6, "udp": PROTO_UDP, "tcp": PROTO_TCP}[
                    self.opts.protocol]
                log.write6(data, probe.tx_real, src=t.src, dst=t.dst, next_header=proto,
                           hop_limit=probe.ttl)

    def _match(self, q: Quoted, rx_real: int | None, rx_mono: int) -> None:
        o = self.opts
        for t in self.by_dst.get(q.dst, ()):
            expected = {"icmp": PROTO_ICMP4 if t.version == 4 else PROTO_ICMP6,
                        "udp": PROTO_UDP, "tcp": PROTO_TCP}[o.protocol]
            if q.proto != expected:
                continue
            value = q.flow if o.protocol == "icmp" else q.flow >> 16
            if o.protocol != "icmp" and q.flow & 0xFFFF != o.dport:
                continue
            pid = q.probe_id >> 16 if o.protocol == "tcp" else q.probe_id
            probe = t.probes.get(pid)
            if probe is None or not probe.sent or probe.result is not None:
                continue
            if t.flow_value(probe.flow) != value:
                continue
            if q.proto == PROTO_TCP and q.echo_reply and not q.icmp_type & 0x06:
                continue  # a bare ACK: nobody's answer (see resolve_tcp_destination)
            rtt = probe_rtt_ms(probe.tx_real, probe.tx_mono, rx_real, rx_mono)
            if rtt > o.probe_timeout_s * 1000:
                return
            icmp_type: int | None = q.icmp_type
            icmp_code: int | None = q.icmp_code
            flags = None
            if q.proto == PROTO_TCP and q.echo_reply:
                flags = "SA" if q.icmp_type == 0x12 else "R"
                icmp_type = icmp_code = None
            probe.result = TraceProbe(address=q.responder, rtt_ms=rtt, icmp_type=icmp_type,
                                      icmp_code=icmp_code, tcp_flags=flags,
                                      reply_ttl=q.reply_ttl)
            t.at(probe.ttl)[probe.flow] = q.responder
            unreachable = q.icmp_type == UNREACHABLE[t.version] and not q.echo_reply
            if q.responder == t.dst and (q.echo_reply or unreachable):
                t.terminal.add(q.responder)
                t.dest_ttl = probe.ttl if t.dest_ttl is None else min(t.dest_ttl, probe.ttl)
            elif unreachable:
                t.terminal.add(q.responder)
                if t.unreachable_ttl is None or probe.ttl < t.unreachable_ttl:
                    t.unreachable_ttl = probe.ttl
            t.outstanding -= 1
            if t.outstanding <= 0:
                t.done.set()
            return


async def _round(engine: MdaEngine, t: MdaRun, wanted: list[tuple[int, int]],
                 deadline: float) -> int:
    """Send (flow, TTL) probes and wait for their answers; returns how many were sent."""
    loop = asyncio.get_running_loop()
    batch: list[tuple[int, MdaProbe]] = []
    for flow, ttl in wanted:
        if loop.time() >= deadline or t.stop_reason == "unreachable":
            break
        pid, probe = t.new_probe(flow, ttl)
        batch.append((pid, probe))
        t.done.clear()
        await engine.send(t, pid, probe)
    end = min(loop.time() + t.opts.probe_timeout_s, deadline)
    while t.outstanding > 0 and loop.time() < end:
        t.done.clear()
        try:
            await asyncio.wait_for(t.done.wait(), end - loop.time())
        except TimeoutError:
            break
    for _pid, probe in batch:
        if probe.result is None:
            probe.result = TraceProbe()
            t.at(probe.ttl)[probe.flow] = None
    t.outstanding = 0
    return len(batch)


async def run_mda(engine: MdaEngine, t: MdaRun, deadline: float) -> None:
    """Enumerate the interfaces TTL by TTL (see the module docstring)."""
    o = engine.opts
    loop = asyncio.get_running_loop()
    silent_run = 0
    for ttl in range(o.first_ttl, o.max_ttl + 1):
        t.highest_ttl = ttl
        spent = 0
        for _ in range(MAX_ROUNDS_PER_TTL):
            if loop.time() >= deadline:
                t.stop_reason = "deadline"
                return
            wanted = _wanted(t, ttl, o.confidence)
            if not wanted:
                break
            room = MAX_PROBES_PER_TTL - spent
            if room <= 0:
                break
            spent += await _round(engine, t, wanted[:room], deadline)
            if t.stop_reason == "unreachable":
                return
        here = t.groups(ttl)
        answered = [a for a in here if a is not None]
        if answered and all(a in t.terminal for a in answered):
            if t.unreachable_ttl is not None and t.dest_ttl is None:
                t.stop_reason = "unreachable"
            return
        silent_run = 0 if answered else silent_run + 1
        if silent_run >= o.gap_limit:
            t.stop_reason = "gap"
            return
    t.stop_reason = "max_ttl"


def _wanted(t: MdaRun, ttl: int, confidence: float) -> list[tuple[int, int]]:
    """The next round's probes at ``ttl`` (and node control at ``ttl - 1``)."""
    here = t.at(ttl)
    groups = t.groups(ttl - 1) if ttl > t.opts.first_ttl else {}
    if len(groups) <= 1 and not set(groups) & t.terminal:
        # The first TTL, or one interface (or one silence) before it: every flow passes
        # there, so new flows go straight to this TTL, no node control needed.
        flows_all = list(dict.fromkeys([*next(iter(groups.values()), []), *here]))
        before: dict[str | None, list[int]] = {_SOURCE: flows_all}
        total_before = max(1, len(flows_all))
    else:
        before = {a: flows for a, flows in groups.items() if a not in t.terminal}
        total_before = max(1, len(t.at(ttl - 1)))
    wanted: list[tuple[int, int]] = []
    control = 0
    for vertex, flows in before.items():
        probed = [f for f in flows if f in here]
        successors = {here[f] for f in probed if here[f] is not None}
        if successors & t.terminal:
            continue  # it leads to the destination (as scamper's tracelb: no more probing)
        deficit = n_k(confidence, len(successors)) - len(probed)
        if deficit <= 0:
            continue
        known = [f for f in flows if f not in here][:deficit]
        wanted += [(f, ttl) for f in known]
        missing = deficit - len(known)
        if missing <= 0:
            continue
        if vertex == _SOURCE:
            wanted += [(f, ttl) for f in t.new_flows(missing)]
        else:
            # Node control: new flows at ttl - 1, as many as this interface's share predicts;
            # one batch serves every interface short of flows.
            share = len(flows) / total_before
            control = max(control, math.ceil(missing / max(share, 1e-3)))
    if control:
        wanted += [(f, ttl - 1) for f in t.new_flows(min(MAX_PROBES_PER_TTL, control))]
    return wanted


# --------------------------------------------------------------------------- diamonds


def diamonds(links: list[MdaLink], last_ttl: int) -> list[Diamond]:
    """Where answered paths split (an interface with two or more successors) and where they
    meet again (the first later TTL whose interfaces reached from the split are one)."""
    succ: dict[tuple[int, str], set[str]] = {}
    for link in links:
        if link.near is not None and link.far is not None:
            succ.setdefault((link.ttl, link.near), set()).add(link.far)
    out: list[Diamond] = []
    for (ttl, vertex), nexts in sorted(succ.items()):
        if len(nexts) < 2:
            continue
        level, width, at = set(nexts), len(nexts), ttl + 1
        convergence: str | None = None
        while at <= last_ttl:
            if len(level) == 1:
                convergence = next(iter(level))
                break
            following: set[str] = set()
            for v in level:
                following |= succ.get((at, v), set())
            if not following:
                break
            level, at = following, at + 1
            width = max(width, len(level))
        out.append(Diamond(divergence=vertex, divergence_ttl=ttl, convergence=convergence,
                           convergence_ttl=at if convergence is not None else None,
                           width=width, length=at - ttl))
    return out


def multipath_of(t: MdaRun) -> Multipath:
    links = t.links()
    top = t.dest_ttl or t.unreachable_ttl or t.highest_ttl
    widest = max((len(i) for i in t.interfaces()), default=1)
    return Multipath(
        confidence=t.opts.confidence,
        flow_field="icmp_id" if t.opts.protocol == "icmp" else "sport",
        flows=len({p.flow for p in t.probes.values() if p.sent}),
        probes_sent=sum(p.sent for p in t.probes.values()),
        stopping=stopping_points(t.opts.confidence, max(2, widest + 1)),
        interfaces=t.interfaces()[:top], links=[x for x in links if x.ttl < top],
        diamonds=diamonds([x for x in links if x.ttl < top], top))


def new_run(dst: str, version: Literal[4, 6], src: str, opts: TraceOptions) -> MdaRun:
    # Source ports from the dynamic range (RFC 6335), far enough below the top for the flows.
    base = random.randrange(0x8000, 0xC000) if opts.protocol != "icmp" \
        else random.randrange(1, 0x8000)
    return MdaRun(dst=dst, version=version, src=src, opts=opts, base=base)


def mda_record(t: MdaRun, origin: Origin, name: str, record_id: str, started_at: Any,
               t0: int) -> TraceRecord:
    """A finished multipath trace as a trace record: every probe in its TTL's hop row, and
    the interfaces, links and diamonds in ``body.multipath``."""
    o = t.opts
    reached = t.dest_ttl is not None
    last = t.dest_ttl or t.unreachable_ttl or t.highest_ttl
    by_ttl: dict[int, list[TraceProbe]] = {}
    for probe in t.probes.values():
        if probe.ttl <= last and probe.sent:
            by_ttl.setdefault(probe.ttl, []).append(probe.result or TraceProbe())
    hops = [Hop.from_probes(ttl, by_ttl.get(ttl, [])) for ttl in range(1, last + 1)]
    stop, status, error = ending(reached, t.stop_reason, o)
    flow = ({"icmp_id": t.base} if o.protocol == "icmp"
            else {"sport": t.base, "dport": o.dport or 0})
    body = TraceBody(protocol=o.protocol, ip_version=t.version, port=o.dport, flow=flow,
                     method="raw", probes_per_hop=o.probes_per_hop, cycles=1,
                     max_ttl=o.max_ttl, reached=reached, dest_ttl=t.dest_ttl,
                     stop_reason=stop,  # type: ignore[arg-type]
                     hops=hops, multipath=multipath_of(t))
    return TraceRecord(id=record_id, agent=origin.agent, region=origin.region, target=name,
                       address=t.dst, started_at=started_at,
                       duration_ms=ms(time.perf_counter_ns() - t0), status=status, error=error,
                       body=body)
