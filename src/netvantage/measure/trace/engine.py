"""The raw engine: a global pacer, windows of TTLs in flight, replies matched to probes.

See the package's docstring for how a trace runs and where an RTT comes from;
:mod:`.sockets` does the system calls.
"""

from __future__ import annotations

import asyncio
import errno
from collections import deque

from ...results import TraceProbe
from ..packets import PROTO_ICMP4, PROTO_ICMP6, PROTO_TCP, PROTO_UDP, Quoted
from .options import TraceOptions
from .sockets import RawSockets
from .state import UNREACHABLE, Probe, TraceRun, probe_rtt_ms

__all__ = ["RawEngine", "run_raw"]

_SYN, _RST, _ACK = 0x02, 0x04, 0x10


class RawEngine:
    """A run's sockets, a global pacer and the matching of replies; serves many traces."""

    def __init__(self, opts: TraceOptions) -> None:
        self.opts = opts
        self.loop = asyncio.get_running_loop()
        self.by_dst: dict[str, list[TraceRun]] = {}
        self._next_send = 0.0
        self._interval = 1.0 / opts.pps
        # Probes waiting for a send slot, in order; see _pace().
        self._queue: deque[tuple[asyncio.Future[bool], Probe]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.sockets = RawSockets(opts.protocol, self._match)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.sockets.close()

    # -- sending ---------------------------------------------------------------

    async def _pace(self, probe: Probe) -> bool:
        """Wait for this probe's send slot (first come, first served, ``pps`` a second).

        False if, by the time its slot comes, the probe has become useless: its
        trace heard the destination (or an unreachable) at a lower TTL.  Such a
        probe gives its slot to the next in line, so when many traces share the
        rate, the TTLs of a window beyond the destination cost no time.
        """
        fut: asyncio.Future[bool] = self.loop.create_future()
        if not self._queue:  # idle until now: the next slot is no earlier than now
            self._next_send = max(self._next_send, self.loop.time())
        self._queue.append((fut, probe))
        if self._timer is None:
            self._dispatch()
        return await fut

    def _dispatch(self) -> None:
        """Hand out the slot that is due (at most one), then wait for the next."""
        self._timer = None
        now = self.loop.time()
        if now >= self._next_send:
            while self._queue:
                fut, probe = self._queue.popleft()
                if fut.done():  # its task was cancelled
                    continue
                if not wanted(probe):
                    fut.set_result(False)
                    continue
                fut.set_result(True)
                # A fixed schedule while busy: a timer that fires late does not slow the rate.
                self._next_send += self._interval
                break
        if self._queue:
            self._timer = self.loop.call_at(self._next_send, self._dispatch)

    async def send(self, t: TraceRun, probe: Probe, pid: int) -> None:
        if not await self._pace(probe):
            return  # not sent: see _pace()
        try:
            self.sockets.transmit(t, probe, pid)
        except OSError as exc:
            probe.result = TraceProbe(cycle=probe.cycle)
            probe.sent = True
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) and t.stop_reason is None:
                t.stop_reason = "unreachable"
            return
        probe.sent = True
        t.outstanding += 1

    # -- receiving -------------------------------------------------------------

    def _match(self, q: Quoted, rx_real: int | None, rx_mono: int) -> None:
        for t in self.by_dst.get(q.dst, ()):
            expected_proto = {"icmp": PROTO_ICMP4 if t.version == 4 else PROTO_ICMP6,
                              "udp": PROTO_UDP, "tcp": PROTO_TCP}[self.opts.protocol]
            if q.proto != expected_proto or q.flow != self._flow(t):
                continue
            pid = q.probe_id >> 16 if self.opts.protocol == "tcp" else q.probe_id
            probe = t.probes.get(pid)
            if probe is None or not probe.sent:
                continue
            if q.proto == PROTO_TCP and q.echo_reply and not q.icmp_type & (_SYN | _RST):
                # A bare ACK: the destination, half-open since this probe's SYN, answers
                # a *later* SYN of ours by acknowledging this one.  It is no probe's answer
                # (never its RTT), only proof that this probe reached the destination.
                t.collisions += 1
                hint = t.dest_hint.get(probe.cycle)
                if hint is None or probe.ttl < hint:
                    t.dest_hint[probe.cycle] = probe.ttl
                return
            if probe.result is not None:
                continue
            rtt = probe_rtt_ms(probe.tx_real, probe.tx_mono, rx_real, rx_mono)
            if rtt > self.opts.probe_timeout_s * 1000:
                return  # late: the probe already counts as lost
            tcp_flags = None
            icmp_type: int | None = q.icmp_type
            icmp_code: int | None = q.icmp_code
            if q.proto == PROTO_TCP and q.echo_reply:
                tcp_flags = "SA" if q.icmp_type == _SYN | _ACK else "R"
                icmp_type = icmp_code = None
            probe.result = TraceProbe(cycle=probe.cycle, address=q.responder, rtt_ms=rtt,
                                      icmp_type=icmp_type, icmp_code=icmp_code,
                                      tcp_flags=tcp_flags, reply_ttl=q.reply_ttl)
            self._note(t, probe, q)
            return

    def _flow(self, t: TraceRun) -> int:
        if self.opts.protocol == "icmp":
            return t.flow_id
        assert self.opts.dport is not None
        return (t.sport << 16) | self.opts.dport

    def _note(self, t: TraceRun, probe: Probe, q: Quoted) -> None:
        t.outstanding -= 1
        from_dst = q.responder == t.dst
        if from_dst and (q.echo_reply or q.icmp_type == UNREACHABLE[t.version]):
            current = t.dest_ttl.get(probe.cycle)
            if current is None or probe.ttl < current:
                t.dest_ttl[probe.cycle] = probe.ttl
        elif (not from_dst and q.icmp_type == UNREACHABLE[t.version]
              and (t.unreachable_ttl is None or probe.ttl < t.unreachable_ttl)):
            t.unreachable_ttl = probe.ttl
        if t.outstanding <= 0:
            t.window_done.set()


def wanted(probe: Probe) -> bool:
    """Whether a probe can still tell anything: not past where its trace ended."""
    t = probe.trace
    heard = [x for x in (t.dest_ttl.get(probe.cycle), t.dest_hint.get(probe.cycle))
             if x is not None]
    limit = min(heard) if heard else None
    if t.unreachable_ttl is not None:
        limit = min(limit or t.unreachable_ttl, t.unreachable_ttl)
    return limit is None or probe.ttl <= limit


async def run_raw(engine: RawEngine, t: TraceRun, deadline: float) -> None:
    o = engine.opts
    loop = asyncio.get_running_loop()
    start = loop.time()
    for cycle in range(o.cycles):
        begin = start + cycle * o.cycle_interval_s
        if begin > loop.time():
            await asyncio.sleep(begin - loop.time())
        if loop.time() >= deadline:
            t.stop_reason = "deadline"
            return
        low = o.first_ttl
        silent_run = 0
        while low <= o.max_ttl:
            high = min(low + o.window - 1, o.max_ttl)
            if cycle > 0 and 0 in t.dest_ttl:
                high = min(high, t.dest_ttl[0])
            t.window_done.clear()
            batch: list[tuple[int, Probe]] = []
            for index in range(o.probes_per_hop):
                for ttl in range(low, high + 1):
                    batch.append(t.new_probe(cycle, ttl, index))
            for pid, probe in batch:
                if loop.time() >= deadline:
                    break
                await engine.send(t, probe, pid)
            t.highest_ttl = max(t.highest_ttl, high)
            await settle(t, batch, cycle, deadline)
            if o.protocol == "tcp" and (cycle in t.dest_ttl or cycle in t.dest_hint):
                await resolve_tcp_destination(engine, t, cycle, deadline)
            if cycle in t.dest_ttl:
                break
            if t.unreachable_ttl is not None or t.stop_reason == "unreachable":
                t.stop_reason = "unreachable"
                break
            for ttl in range(low, high + 1):
                answered = any(p.result is not None and p.result.address is not None
                               for p in t.probes.values() if p.cycle == cycle and p.ttl == ttl)
                silent_run = 0 if answered else silent_run + 1
            if silent_run >= o.gap_limit:
                t.stop_reason = "gap"
                break
            if loop.time() >= deadline:
                t.stop_reason = "deadline"
                return
            low = high + 1


async def settle(t: TraceRun, batch: list[tuple[int, Probe]], cycle: int,
                  deadline: float) -> None:
    """Wait for a batch's answers: probe_timeout_s after its last probe left, at most.

    Whatever has not answered by then is recorded as lost (a late answer is ignored).
    """
    loop = asyncio.get_running_loop()
    end = min(loop.time() + t.opts.probe_timeout_s, deadline)
    while t.outstanding > 0 and loop.time() < end:
        t.window_done.clear()
        try:
            await asyncio.wait_for(t.window_done.wait(), end - loop.time())
        except TimeoutError:
            break
    for _pid, probe in batch:
        if probe.result is None:
            probe.result = TraceProbe(cycle=cycle)
    t.outstanding = 0


async def resolve_tcp_destination(engine: RawEngine, t: TraceRun, cycle: int,
                                   deadline: float) -> None:
    """Find the destination's TTL and measure its hop one SYN at a time (TCP mode).

    All probes of a trace share one 4-tuple (Paris), and the destination keeps
    state for it: the first SYN that reaches it gets a SYN/ACK and leaves a
    half-open connection, which lasts until our kernel's RST to that SYN/ACK
    gets back (a round trip later).  A SYN arriving meanwhile gets no answer of
    its own, at most a bare ACK of the *first* SYN (Linux sends one per 500 ms).
    So of the window's SYNs that reach the destination only the first can
    answer: the silence of the others says nothing, and if that first
    SYN/ACK is lost, the destination's TTL looks silent and the destination
    seems to be farther away.

    So every unanswered probe of this cycle above the last TTL a router
    answered (below where the destination was heard, by an answer or by a bare
    ACK) is withdrawn, and those TTLs are probed again from the lowest up, one
    SYN at a time: the next leaves only once the previous was answered (our
    RST to that answer then travels ahead of it) or timed out.  The first TTL
    where the destination answers is its TTL, and its hop is filled up to
    ``probes_per_hop`` the same way.  A serial probe that drew a bare ACK met a
    half-open connection (our RST was lost; the RST to that ACK clears it): it
    is withdrawn and sent again, a few times at most.
    """
    o = engine.opts
    loop = asyncio.get_running_loop()

    def heard() -> int:
        return min(x for x in (t.dest_ttl.get(cycle), t.dest_hint.get(cycle)) if x is not None)

    def at(ttl: int) -> list[Probe]:
        return [p for p in t.probes.values() if p.cycle == cycle and p.ttl == ttl]

    top = heard()
    routers = [p.ttl for p in t.probes.values()
               if p.cycle == cycle and p.ttl < top and p.result is not None
               and p.result.address not in (None, t.dst)]
    ttl = max(routers, default=o.first_ttl - 1) + 1
    for pid, p in list(t.probes.items()):
        if p.cycle == cycle and p.ttl >= ttl and (p.result is None or p.result.address is None):
            del t.probes[pid]
    index = o.probes_per_hop  # serial probes come after the window's in the record
    retries = o.probes_per_hop
    while ttl <= heard():
        probes = at(ttl)
        if len(probes) >= o.probes_per_hop:
            if any(p.result is not None and p.result.address == t.dst for p in probes):
                return
            ttl += 1
            continue
        if loop.time() >= deadline:
            return
        pid, probe = t.new_probe(cycle, ttl, index)
        index += 1
        collisions = t.collisions
        t.window_done.clear()
        await engine.send(t, probe, pid)
        await settle(t, [(pid, probe)], cycle, deadline)
        silent = probe.result is None or probe.result.address is None
        if silent and t.collisions != collisions and retries > 0:
            retries -= 1
            del t.probes[pid]
