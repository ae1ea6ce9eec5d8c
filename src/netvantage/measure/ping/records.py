"""A finished target's record: statistics from its samples, and its status in words."""

from __future__ import annotations

import time
from typing import Literal

from ...results import IcmpError, PingBody, PingRecord, Status, ms
from ..common import Origin, describe, status_of
from .engine import Job
from .options import PingOptions
from .wire import UNREACHABLE_TYPE

__all__ = ["error_text", "failed_record", "job_record"]


def error_text(err: IcmpError, ip_version: int) -> str:
    what = "destination unreachable" if err.icmp_type == UNREACHABLE_TYPE[ip_version] else "error"
    return (f"ICMPv{ip_version if ip_version == 6 else ''} {what} "
            f"(type {err.icmp_type} code {err.icmp_code}) from {err.from_address}").replace(
                "ICMPv ", "ICMP ")


def job_record(job: Job, opts: PingOptions, origin: Origin, socket_kind: Literal["raw", "dgram"],
            record_id: str) -> PingRecord:
    assert job.resolved is not None
    v = job.resolved.ip_version
    rx_clock: Literal["kernel", "user", "mixed"] | None = None
    if job.kernel_stamps and job.user_stamps:
        rx_clock = "mixed"
    elif job.user_stamps:
        rx_clock = "user"
    elif job.kernel_stamps:
        rx_clock = "kernel"
    body = PingBody.from_samples(
        job.rtts[: job.sent],
        ip_version=v,
        socket=socket_kind,
        payload_bytes=opts.payload_bytes,
        interval_s=opts.interval_s,
        timeout_s=opts.timeout_s,
        dont_fragment=opts.dont_fragment,
        duplicates=job.duplicates,
        icmp_errors=job.icmp_errors,
        rx_clock=rx_clock,
    )
    status: Status
    error: str | None
    if body.received:
        status, error = "ok", None
    elif job.icmp_errors:
        first = job.icmp_errors[0]
        unreachable = first.icmp_type == UNREACHABLE_TYPE[v]
        status = "unreachable" if unreachable else "error"
        error = error_text(first, v)
    elif job.send_errors:
        status, error = status_of(job.send_errors[0]), describe(job.send_errors[0])
    else:
        status = "timeout"
        error = f"no reply to {body.sent} echo request(s) within {opts.timeout_s:g} s each"
    return PingRecord(
        id=record_id, agent=origin.agent, region=origin.region, target=job.name,
        address=job.resolved.address, started_at=job.started_at,
        duration_ms=ms(job.t_end_ns - job.t0_ns), status=status, error=error, body=body,
    )


def failed_record(job: Job, opts: PingOptions, origin: Origin, family: Literal[4, 6] | None,
            record_id: str, t0_ns: int) -> PingRecord:
    exc = job.failure or OSError("not resolved")
    body = PingBody.from_samples(
        [], ip_version=family or 4, socket=None, payload_bytes=opts.payload_bytes,
        interval_s=opts.interval_s, timeout_s=opts.timeout_s,
        dont_fragment=opts.dont_fragment,
    )
    return PingRecord(
        id=record_id, agent=origin.agent, region=origin.region, target=job.name,
        address=None, started_at=job.started_at,
        duration_ms=ms(time.perf_counter_ns() - t0_ns), status=status_of(exc),
        error=describe(exc), body=body,
    )
