"""TCP connect time, attempt by attempt, with refused / timeout / unreachable told apart.

Where the time comes from
-------------------------
Each attempt opens a non-blocking socket and reads ``time.perf_counter_ns()``
immediately before ``connect()``; the event loop watches the socket for
writability, and the clock is read again in that callback, before anything
else runs.  ``connect_ms`` is therefore what an application waits for a
connection: SYN out, SYN/ACK back, ACK queued, plus the loop's wake-up (tens
of microseconds on an idle agent) and any SYN retransmission (the first one
after 1 s on Linux).

The kernel also measures the handshake itself: right after the connection is
established, ``TCP_INFO.tcpi_rtt`` holds the SYN → SYN/ACK round trip in
microseconds, free of any user-space delay.  It is recorded as
``handshake_rtt_ms`` beside the application's view.

The outcome of ``connect()`` is read from ``SO_ERROR``: ``ECONNREFUSED`` (a RST
came back) is *refused*; ``EHOSTUNREACH``/``ENETUNREACH`` (an ICMP error, or no
route) is *unreachable*; no answer before the deadline is *timeout*.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..results import Status, TcpAttempt, TcpBody, TcpRecord, ms, new_id, utc_now
from .common import Origin, bounded_gather, describe, status_of
from .target import Target, parse_target, resolve

__all__ = ["TcpOptions", "open_tcp", "tcp_connect", "tcp_many"]

_TCP_INFO = getattr(socket, "TCP_INFO", 11)
# struct tcp_info (linux/tcp.h): 8 bytes of u8 fields, then u32s; tcpi_rtt is
# the 16th u32 (after rto, ato, snd_mss, rcv_mss, unacked, sacked, lost,
# retrans, fackets, last_data_sent, last_ack_sent, last_data_recv,
# last_ack_recv, pmtu, rcv_ssthresh), in microseconds.
_TCPI_RTT_OFFSET = 8 + 15 * 4
_U32 = struct.Struct("=I")

MIN_INTERVAL_S = 0.05
MAX_ATTEMPTS = 1_000


@dataclass(frozen=True, slots=True)
class TcpOptions:
    attempts: int = 3
    interval_s: float = 0.5
    timeout_s: float = 3.0

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= MAX_ATTEMPTS:
            raise ValueError(f"attempts must be 1..{MAX_ATTEMPTS}")
        if self.interval_s < MIN_INTERVAL_S:
            raise ValueError(f"interval must be at least {MIN_INTERVAL_S} s (no flooding)")
        if not 0 < self.timeout_s <= 120:
            raise ValueError("timeout must be in (0, 120] s")


def _handshake_rtt_ms(sock: socket.socket) -> float | None:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < _TCPI_RTT_OFFSET + 4:
        return None
    rtt_us = _U32.unpack_from(info, _TCPI_RTT_OFFSET)[0]
    return round(rtt_us / 1000, 3) if rtt_us else None


async def open_tcp(address: str, port: int, ip_version: int,
                   timeout_s: float) -> tuple[socket.socket | None, TcpAttempt]:
    """Connect once; the socket (connected, non-blocking) on success, else ``None``.

    The caller owns and closes the socket it gets.  See the module docstring
    for what ``connect_ms`` includes.
    """
    loop = asyncio.get_running_loop()
    family = socket.AF_INET if ip_version == 4 else socket.AF_INET6
    sock = socket.socket(family, socket.SOCK_STREAM)
    fd = sock.fileno()
    sock.setblocking(False)
    done: asyncio.Future[int] = loop.create_future()

    def writable() -> None:
        # The clock is read first: this is the end of connect_ms.
        end = time.perf_counter_ns()
        if not done.done():
            done.set_result(end)

    attempt: TcpAttempt | None = None
    try:
        start = time.perf_counter_ns()
        rc = sock.connect_ex((address, port))
        if rc not in (0, errno.EINPROGRESS):
            err = OSError(rc, os.strerror(rc))
            attempt = TcpAttempt(status=status_of(err), error=describe(err))
            return None, attempt
        if rc == 0:
            end = time.perf_counter_ns()
        else:
            loop.add_writer(fd, writable)
            try:
                end = await asyncio.wait_for(done, timeout_s)
            except TimeoutError:
                attempt = TcpAttempt(status="timeout",
                                     error=f"no answer to SYN within {timeout_s:g} s")
                return None, attempt
            finally:
                loop.remove_writer(fd)
        so_error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if so_error:
            err = OSError(so_error, os.strerror(so_error))
            attempt = TcpAttempt(status=status_of(err), error=describe(err))
            return None, attempt
        attempt = TcpAttempt(status="ok", connect_ms=ms(end - start),
                             handshake_rtt_ms=_handshake_rtt_ms(sock))
        return sock, attempt
    finally:
        if attempt is None or attempt.status != "ok":
            sock.close()


async def _attempt(address: str, port: int, ip_version: int, timeout_s: float) -> TcpAttempt:
    sock, attempt = await open_tcp(address, port, ip_version, timeout_s)
    if sock is not None:
        sock.close()
    return attempt


def _overall(attempts: Sequence[TcpAttempt]) -> tuple[Status, str | None]:
    """Record status: ``ok`` if any attempt connected, else the most frequent failure."""
    if any(a.status == "ok" for a in attempts):
        return "ok", None
    counts = Counter(a.status for a in attempts)
    status = max(counts, key=lambda s: (counts[s], -[a.status for a in attempts].index(s)))
    error = next((a.error for a in attempts if a.status == status), None)
    return status, error


async def tcp_connect(target: Target | str, opts: TcpOptions = TcpOptions(), *,
                      origin: Origin | None = None, family: Literal[4, 6] | None = None,
                      name: str | None = None) -> TcpRecord:
    """Connect to ``host:port`` ``opts.attempts`` times; every outcome is a record."""
    origin = origin or Origin.local()
    if isinstance(target, str):
        target = parse_target(target, require_port=True)
    if target.port is None:
        raise ValueError(f"{target}: TCP needs a port")
    record_id = new_id()
    started_at = utc_now()
    t0 = time.perf_counter_ns()
    attempts: list[TcpAttempt] = []
    address: str | None = None
    ip_version: Literal[4, 6] = family or 4
    status: Status
    error: str | None
    try:
        resolved = await resolve(target.host, family)
    except (OSError, TimeoutError) as exc:
        attempts = []
        status, error = status_of(exc), describe(exc)
    else:
        address, ip_version = resolved.address, resolved.ip_version
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(opts.attempts):
            delay = start + i * opts.interval_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            attempts.append(await _attempt(address, target.port, ip_version, opts.timeout_s))
        status, error = _overall(attempts)
    body = TcpBody.from_attempts(attempts, port=target.port, ip_version=ip_version,
                                 timeout_s=opts.timeout_s)
    return TcpRecord(
        id=record_id, agent=origin.agent, region=origin.region, target=name or target.host,
        address=address, started_at=started_at, duration_ms=ms(time.perf_counter_ns() - t0),
        status=status, error=error, body=body,
    )


async def tcp_many(targets: Sequence[Target | str], opts: TcpOptions = TcpOptions(), *,
                   origin: Origin | None = None, family: Literal[4, 6] | None = None,
                   concurrency: int = 8) -> list[TcpRecord]:
    """Measure several ``host:port`` targets, at most ``concurrency`` at once, in input order."""
    return await bounded_gather(
        targets, lambda t: tcp_connect(t, opts, origin=origin, family=family), concurrency
    )
