"""The sweep: targets sharing one socket per family, a global pace, a bound on active targets.

Pacing is global, like ``fping -i``: the sweep's requests leave on a grid of
``pace_s`` (at most ``1/pace_s`` per second, never a burst: a late wake-up is
not made up for by two back-to-back requests, and no two requests leave less
than ``pace_s / 2`` apart), and each target's own requests are ``interval_s``
apart, like ``fping -p``.  ``concurrency`` bounds how many targets are active
(have requests in flight) at once; a target finishes when every request is
answered or its last one has timed out, and the next target starts.  Waits
under 3 ms sleep with ``clock_nanosleep()`` (microseconds; the event loop's
epoll rounds up to whole milliseconds) and replies are read right after, from
the socket buffer, with their kernel stamps: while a sweep paces, the loop's
other tasks get a turn every 2–3 ms, and a reply without a kernel stamp (the
``user`` fallback) may be read up to one pace late.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import socket
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ...results import PingRecord, new_id, utc_now
from ..common import Origin, bounded_gather
from ..target import Resolved, Target, resolve
from .engine import Engine, Job, norm_address
from .options import PingOptions
from .records import failed_record, job_record

if TYPE_CHECKING:
    from ..pcap import PacketLog

__all__ = ["Sweep", "ping", "ping_many", "run_sweep"]

_COARSE_S = 0.003  # longer waits go through the event loop, shorter ones sleep precisely
_YIELD_S = 0.002  # while pacing, the loop's other tasks get a turn at least this often
_DEFAULT_OPTIONS = PingOptions()


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Sweep:
    """Targets sharing one socket per family, a global pace and a bound on active targets."""

    def __init__(self, jobs: Sequence[Job], opts: PingOptions, concurrency: int,
                 log: PacketLog | None = None) -> None:
        self.opts = opts
        self.log = log
        self.concurrency = concurrency
        self.waiting = deque(jobs)
        self.engines: dict[int, Engine] = {}
        try:
            for v in sorted({job.resolved.ip_version for job in jobs if job.resolved}):
                self.engines[v] = Engine(4 if v == 4 else 6, opts, self)
        except BaseException:
            self.close()
            raise
        self.active = 0
        self.sends: list[tuple[float, int, Job]] = []  # (due, tie, job)
        self.deadlines: list[tuple[float, int, Job]] = []
        self._tie = itertools.count()
        self.next_slot = 0.0
        self._waiter: asyncio.Future[None] | None = None

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()

    def engine(self, job: Job) -> Engine:
        assert job.resolved is not None
        return self.engines[job.resolved.ip_version]

    def _activate(self) -> None:
        now = time.monotonic()
        while self.waiting and self.active < self.concurrency:
            job = self.waiting.popleft()
            self.active += 1
            self.engine(job).allocate(job)
            heapq.heappush(self.sends, (now, next(self._tie), job))

    def finish(self, job: Job) -> None:
        if job.done:
            return
        job.done = True
        job.t_end_ns = time.perf_counter_ns()
        self.engine(job).forget(job)
        self.active -= 1
        self._activate()
        if self._waiter is not None:
            _release(self._waiter)

    def _poll(self) -> None:
        for engine in self.engines.values():
            engine.on_readable()

    async def _sleep(self, delay: float) -> None:
        """Sleep on the event loop; :meth:`finish` wakes it early (a slot came free)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        handle = loop.call_later(delay, _release, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for engine in self.engines.values():
            loop.add_reader(engine.fd, engine.on_readable)
        pace, interval, timeout = self.opts.pace_s, self.opts.interval_s, self.opts.timeout_s
        sends, deadlines, tie = self.sends, self.deadlines, self._tie
        yielded = time.monotonic()
        try:
            self._activate()
            while self.active:
                now = time.monotonic()
                t_send = sends[0][0] if sends else math.inf
                if t_send < self.next_slot:
                    t_send = self.next_slot
                t_end = deadlines[0][0] if deadlines else math.inf
                wake = t_send if t_send < t_end else t_end
                if wake - now > _COARSE_S:
                    # On the event loop (its readers drain the sockets meanwhile).
                    await self._sleep(wake - now - _COARSE_S * 2 / 3)
                    yielded = time.monotonic()
                    continue
                if wake > now:
                    # Short waits: clock_nanosleep() keeps microseconds, where the loop's
                    # epoll would round up to whole milliseconds.  Replies wait in the
                    # socket with their kernel stamps and are read just below.
                    time.sleep(wake - now)
                    continue
                self._poll()
                if t_end <= now:
                    _, _, job = heapq.heappop(deadlines)
                    self.finish(job)
                elif sends:
                    _, _, job = heapq.heappop(sends)
                    if not job.done:
                        self._send(job, now, pace, interval, timeout, tie)
                if now - yielded > _YIELD_S:
                    await asyncio.sleep(0)  # let the loop's other tasks run
                    yielded = time.monotonic()
        finally:
            for engine in self.engines.values():
                loop.remove_reader(engine.fd)
            self.close()

    def _send(self, job: Job, now: float, pace: float, interval: float, timeout: float,
              tie: itertools.count[int]) -> None:
        i = job.sent
        if i == 0:
            job.first_send = now
            job.started_at = utc_now()
            job.t0_ns = time.perf_counter_ns()
        self.engine(job).send(job, i)
        # The grid: never faster than 1/pace on average, never closer than pace/2.
        slot = self.next_slot
        if slot < now - pace / 2:
            slot = now - pace / 2
        self.next_slot = slot + pace
        if job.sent < job.count:
            heapq.heappush(self.sends, (job.first_send + job.sent * interval, next(tie), job))
        elif job.complete():
            self.finish(job)
        else:
            heapq.heappush(self.deadlines, (now + timeout, next(tie), job))


def _literal(host: str, family: Literal[4, 6] | None) -> Resolved | None:
    """A literal IPv4/IPv6 address without asking the resolver (``inet_pton``: fast for
    thousands of targets); ``None`` for a name, a scoped address or a family mismatch,
    which :func:`resolve` then handles (and words the error of)."""
    for af, v in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            packed = socket.inet_pton(af, host)
        except (OSError, ValueError):
            continue
        if family is not None and family != v:
            return None
        return Resolved(socket.inet_ntop(af, packed), 4 if v == 4 else 6)
    return None


async def run_sweep(items: Sequence[tuple[Target | str, str | None]], opts: PingOptions,
                 origin: Origin | None, family: Literal[4, 6] | None,
                 concurrency: int, pcap: Path | None = None) -> list[PingRecord]:
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    origin = origin or Origin.local()
    t0_ns = time.perf_counter_ns()
    jobs: list[Job] = []
    for target, name in items:
        host = target.host if isinstance(target, Target) else target
        jobs.append(Job(host, name or host, opts))
    ids = [new_id() for _ in jobs]

    async def resolve_one(job: Job) -> None:
        try:
            job.resolved = await resolve(job.host, family)
            job.key_address = norm_address(job.resolved.address)
        except (OSError, TimeoutError) as exc:
            job.failure = exc
            job.started_at = utc_now()

    names = []
    for job in jobs:
        job.resolved = _literal(job.host, family)
        if job.resolved is None:
            names.append(job)
        else:
            job.key_address = job.resolved.address
    if names:
        await bounded_gather(names, resolve_one, concurrency)

    ok = [job for job in jobs if job.resolved is not None]
    log = None
    if pcap is not None:
        from ..pcap import PacketLog

        log = PacketLog(pcap)
    try:
        sweep = Sweep(ok, opts, concurrency, log)  # may raise PrivilegeError before any packet
        kinds: dict[int, Literal["raw", "dgram"]] = {
            v: "raw" if e.raw else "dgram" for v, e in sweep.engines.items()}
        await sweep.run()
    finally:
        if log is not None:
            log.close()
    records = []
    for job, record_id in zip(jobs, ids, strict=True):
        if job.resolved is None:
            records.append(failed_record(job, opts, origin, family, record_id, t0_ns))
        else:
            records.append(job_record(job, opts, origin, kinds[job.resolved.ip_version],
                                   record_id))
    return records


async def ping(target: Target | str, opts: PingOptions = _DEFAULT_OPTIONS, *,
               origin: Origin | None = None, family: Literal[4, 6] | None = None,
               name: str | None = None) -> PingRecord:
    """Ping one target; every network outcome is a record, never an exception.

    Raises :class:`PrivilegeError` only when no ICMP socket can be opened at all.
    """
    (record,) = await run_sweep([(target, name)], opts, origin, family, 1)
    return record


async def ping_many(targets: Sequence[Target | str], opts: PingOptions = _DEFAULT_OPTIONS, *,
                    origin: Origin | None = None, family: Literal[4, 6] | None = None,
                    concurrency: int = 8, pcap: Path | None = None) -> list[PingRecord]:
    """Ping several targets as one sweep; results in input order.

    One ICMP socket per address family serves all targets; requests of the whole
    sweep are spaced by ``opts.pace_s``; at most ``concurrency`` targets are active
    (have requests outstanding) at once.  ``pcap``: write every request and matched
    reply there (:mod:`netvantage.measure.pcap`).
    """
    return await run_sweep([(t, None) for t in targets], opts, origin, family, concurrency,
                           pcap)
