"""The probe agent: runs its plan on a schedule, spools every result, uploads.

Scheduling: every job (target × address × test) first runs at a random
offset within ``start_spread_s`` (so a fleet restarted together does not
measure in lockstep), then every ``interval_s`` ± ``jitter_s``, measured from
its previous *due* time so the schedule does not drift.  At most
``concurrency`` measurements run at once and at most ``max_starts_per_s``
start per second; each probe module paces its own packets.  A job whose
previous run is still going when it is due again is skipped for that round
(counted), never stacked.

Every result goes to the spool before anything else happens to it; the
uploader drains the spool in the background.  SIGTERM or SIGINT: stop
starting measurements, let running ones finish (bounded), try one last
upload (bounded), close the spool.  A ``kill -9`` loses only measurements
that had not reached the spool yet.

A spool write that fails (a full disk) stops measuring, loudly: the result is
held in memory and written again every few seconds, no new measurement
starts (each round that is due meanwhile is counted as skipped), and the
status line says ``MEASURING PAUSED`` with SQLite's error.  When a write works
again the held results go to the spool and measuring resumes.  If writes keep
failing for the plan's ``[agent] spool_error_limit_s`` (default 300 s), the
agent stops and :meth:`Agent.run` raises :class:`SpoolWriteError`
(``agent run`` exits 1); results still held then are counted and reported
as lost, never dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import PrivilegeError
from ..measure.common import Origin
from ..measure.target import Target
from ..results import AnyRecord
from .plan import Job, Plan
from .spool import Spool, SpoolWriteError
from .upload import Uploader

__all__ = ["Agent", "AgentStats"]

# Retries of a failing spool write: 1 s, doubling, at most this often apart.
SPOOL_RETRY_MAX_S = 10.0


@dataclass
class AgentStats:
    started: float = field(default_factory=time.time)
    measured: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    skipped_busy: int = 0
    skipped_spool: int = 0  # rounds not measured because the spool could not be written
    lost: int = 0  # results that never reached the spool (only when the agent gave up)
    disabled: dict[str, str] = field(default_factory=dict)


def _options(plan: Plan, kind: str, **overrides: Any) -> dict[str, Any]:
    merged = dict(plan.options.get(kind, {}))
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return merged


async def measure_job(job: Job, plan: Plan, origin: Origin) -> AnyRecord:
    """Run one job once; network failures come back as records."""
    test, target = job.test, job.target
    name = target.name
    if test.kind == "ping":
        from ..measure.ping import PingOptions, ping

        return await ping(job.address, PingOptions(**_options(plan, "ping")), origin=origin,
                          name=name)
    if test.kind == "tcp":
        from ..measure.tcp import TcpOptions, tcp_connect

        return await tcp_connect(Target(job.address, test.port),
                                 TcpOptions(**_options(plan, "tcp")), origin=origin, name=name)
    if test.kind == "trace":
        from ..measure.trace import TraceOptions, trace

        opts = TraceOptions(**_options(plan, "trace", protocol=test.protocol, port=test.port))
        return await trace(Target(job.address), opts, origin=origin, name=name)
    if test.kind == "mailready":
        from ..measure.mailready import DEFAULT_ZONES, MailReadyOptions, mailready, read_zones

        zones = read_zones(target.zones_file) if target.zones_file else DEFAULT_ZONES
        ready = MailReadyOptions(**_options(plan, "mailready", domain=target.mail_domain,
                                            selectors=target.dkim_selectors or None,
                                            zones=zones, ca_file=target.ca_file))
        return await mailready(job.address, ready, origin=origin, name=name)
    if test.kind == "pmtu":
        import asyncio

        from ..measure.pmtu import PmtuOptions, measure_pmtu

        popts = PmtuOptions(**_options(plan, "pmtu", protocol=test.protocol, port=test.port))
        # The engine is synchronous (select on raw sockets): off the agent's loop.
        return await asyncio.to_thread(measure_pmtu, job.address, popts, origin=origin,
                                       name=name)
    from ..measure.mail import MailOptions, imap_probe, smtp_probe

    creds = target.credentials
    mail = MailOptions(**_options(plan, test.kind, ca_file=target.ca_file,
                                  server_name=target.server_name,
                                  username=creds.user if creds else None,
                                  password=creds.password if creds else None))
    probe = smtp_probe if test.kind == "smtp" else imap_probe
    return await probe(Target(job.address, test.port), mail, origin=origin, name=name)


class Agent:
    def __init__(self, plan: Plan, *, audit: bool = False, status_interval_s: float = 10.0,
                 out: IO[str] | None = None,
                 measure: Callable[[Job, Plan, Origin], Awaitable[AnyRecord]] = measure_job,
                 ) -> None:
        self.plan = plan
        self.spool = Spool(plan.spool, audit=audit)
        self.origin = Origin(agent=plan.agent, region=plan.region)
        self.stats = AgentStats()
        self.status_interval_s = status_interval_s
        self.out = out or sys.stderr
        self.measure = measure
        self.uploader = (Uploader(plan.collector_url, plan.token or "", self.spool,
                                  batch_size=plan.batch_size,
                                  interval_s=plan.upload_interval_s,
                                  timeout_s=plan.upload_timeout_s, ca_file=plan.collector_ca,
                                  say=self.say)
                         if plan.collector_url else None)
        self.stop = asyncio.Event()
        # Results measured but not yet in the spool (a write failed), oldest first.
        self._held: list[AnyRecord] = []
        self._held_lock = asyncio.Lock()
        self.spool_error: str | None = None
        self._spool_failing_since: float | None = None
        self.fatal: SpoolWriteError | None = None
        # Called with every result after it is counted (agent.metrics hooks in here).
        self.observers: list[Callable[[Job, AnyRecord], None]] = []
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def say(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"{stamp} [{self.plan.agent}] {message}", file=self.out, flush=True)

    def status_line(self) -> str:
        s = self.stats
        up = self.uploader.stats if self.uploader else None
        ok = s.statuses.get("ok", 0)
        parts = []
        if self.spool_error is not None and self._spool_failing_since is not None:
            failing = time.monotonic() - self._spool_failing_since
            parts.append(f"MEASURING PAUSED: spool write failing for {failing:.0f} s "
                         f"(gives up after {self.plan.spool_error_limit_s:g} s): "
                         f"{self.spool_error}")
        parts += [f"measured {s.measured} (ok {ok})", f"spool {self.spool.depth()}"]
        if self._held:
            parts.append(f"held in memory {len(self._held)}")
        if s.lost:
            parts.append(f"LOST {s.lost}")
        rejected = self.spool.rejected_count()
        if rejected:
            parts.append(f"rejected {rejected} (kept in the spool's rejected table)")
        if up is not None:
            parts.append(f"uploaded {up.uploaded}")
            if up.failing and up.last_error:  # failing now, not some time ago
                parts.append(f"upload failing ({up.failing} attempt(s)): {up.last_error}")
        if s.skipped_busy:
            parts.append(f"skipped (still running) {s.skipped_busy}")
        if s.skipped_spool:
            parts.append(f"skipped (spool failing) {s.skipped_spool}")
        return ", ".join(parts)

    async def _keep(self, record: AnyRecord) -> None:
        """Spool ``record``, after any results still held; a failed write holds it."""
        self._held.append(record)
        await self._write_held()

    async def _write_held(self) -> None:
        async with self._held_lock:
            while self._held:
                try:
                    await asyncio.to_thread(self.spool.put, self._held[0])
                except SpoolWriteError as exc:
                    if self.spool_error is None:
                        self._spool_failing_since = time.monotonic()
                        self.say(f"MEASURING PAUSED: {exc}; retrying, giving up after "
                                 f"{self.plan.spool_error_limit_s:g} s")
                    self.spool_error = str(exc)
                    return
                except Exception as exc:  # a bug (the record cannot be encoded): say so
                    self.stats.statuses["crashed"] += 1
                    self.say(f"result {self._held[0].id} cannot be spooled (a bug, please "
                             f"report it): {exc!r}")
                self._held.pop(0)
            if self.spool_error is not None:
                self.say("the spool can be written again: measuring resumes")
                self.spool_error = None
                self._spool_failing_since = None

    async def _spool_retry(self) -> None:
        """While spool writes fail: retry them with backoff; give up past the plan's limit."""
        delay = 1.0
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)
            if self.spool_error is None:
                delay = 1.0
                continue
            await self._write_held()
            since = self._spool_failing_since
            if self.spool_error is None or since is None:
                delay = 1.0
                continue
            delay = min(SPOOL_RETRY_MAX_S, delay * 2)
            if time.monotonic() - since >= self.plan.spool_error_limit_s:
                self.fatal = SpoolWriteError(
                    f"spool writes failed for {self.plan.spool_error_limit_s:g} s (the plan's "
                    f"spool_error_limit_s); stopping. Last error: {self.spool_error}")
                self.say(f"giving up: {self.fatal}")
                self.stop.set()
                return

    async def _run_job(self, job: Job, gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                record = await self.measure(job, self.plan, self.origin)
            except PrivilegeError as exc:
                # Configuration, not the network: say it once, stop that job.
                self.stats.disabled[job.key] = str(exc)
                self.say(f"disabled {job.key}: {exc}")
                return
            except Exception as exc:  # a bug in a probe: say so, keep the others running
                self.stats.statuses["crashed"] += 1
                self.say(f"measurement {job.key} crashed (a bug, please report it): {exc!r}")
                return
            finally:
                self._running.discard(job.key)
            self.stats.measured += 1
            self.stats.statuses[record.status] += 1
            self.stats.kinds[record.kind] += 1
            for observe in self.observers:
                observe(job, record)
            await self._keep(record)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        plan = self.plan
        gate = asyncio.Semaphore(plan.concurrency)
        now = loop.time()
        due = {job.key: now + random.uniform(0, plan.start_spread_s) for job in plan.jobs}
        by_key = {job.key: job for job in plan.jobs}
        min_gap = 1.0 / plan.max_starts_per_s
        last_start = -1e9
        while not self.stop.is_set():
            key = min(due, key=due.__getitem__) if due else None
            if key is None:
                await self.stop.wait()
                return
            wait = max(due[key], last_start + min_gap) - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), wait)
                continue
            job = by_key[key]
            interval = job.target.interval_s
            due[key] += interval + random.uniform(-plan.jitter_s, plan.jitter_s)
            if key in self.stats.disabled:
                del due[key]
                continue
            if key in self._running:
                self.stats.skipped_busy += 1
                continue
            if self.spool_error is not None:  # nowhere to keep a result: measure nothing
                self.stats.skipped_spool += 1
                continue
            self._running.add(key)
            last_start = loop.time()
            task = asyncio.create_task(self._run_job(job, gate))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _report(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.status_interval_s)
            self.say(self.status_line())

    async def run(self, *, duration_s: float | None = None, drain_s: float = 10.0) -> AgentStats:
        loop = asyncio.get_running_loop()
        # Spool writes and uploads are the only blocking calls: two threads are
        # plenty, and each thread more costs a malloc arena's worth of memory.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2,
                                                     thread_name_prefix="nv-agent"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        self.say(f"{len(self.plan.jobs)} measurement(s) every {self.plan.interval_s:g} s, "
                 f"spool {self.plan.spool}, collector {self.plan.collector_url or 'none'}")
        background = [asyncio.create_task(self._schedule()), asyncio.create_task(self._report()),
                      asyncio.create_task(self._spool_retry())]
        if self.uploader is not None:
            background.append(asyncio.create_task(self.uploader.run(self.stop)))
        try:
            if duration_s is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), duration_s)
                self.stop.set()
            else:
                await self.stop.wait()
            self.say("stopping: letting running measurements finish")
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=drain_s)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self._held:
                await self._write_held()  # one last try
            if self._held:
                self.stats.lost += len(self._held)
                self.say(f"LOST {len(self._held)} result(s) that could not be written to the "
                         f"spool: {self.spool_error}")
                self._held.clear()
            if self.uploader is not None:
                await self.uploader.drain(drain_s)
            self.say(f"stopped: {self.status_line()}")
        finally:
            for task in self._tasks:
                task.cancel()
            # The spool closes while a repeated SIGTERM or SIGINT still only sets the stop
            # event: with the default action back, a second signal during the close (an
            # impatient operator, a service manager sending it twice) killed the agent there.
            try:
                self.spool.close()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)
        if self.fatal is not None:
            raise self.fatal
        return self.stats
