"""What every measurement shares: who measures, and how OS errors become statuses."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..results import Status

__all__ = ["Origin", "bounded_gather", "describe", "status_of"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Origin:
    """Who takes the measurement: the envelope's ``agent`` and ``region``."""

    agent: str
    region: str | None = None

    @classmethod
    def local(cls, region: str | None = None) -> Origin:
        return cls(agent=socket.gethostname() or "localhost", region=region)


_UNREACHABLE = {
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
    errno.EADDRNOTAVAIL,
}
_REFUSED = {errno.ECONNREFUSED}
_TIMEOUT = {errno.ETIMEDOUT}


def status_of(exc: BaseException) -> Status:
    """Translate an exception from the I/O edge into a record status, once, here."""
    if isinstance(exc, TimeoutError) and not getattr(exc, "errno", None):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "error"
    if isinstance(exc, OSError):
        if exc.errno in _REFUSED:
            return "refused"
        if exc.errno in _UNREACHABLE:
            return "unreachable"
        if exc.errno in _TIMEOUT:
            return "timeout"
    return "error"


def describe(exc: BaseException) -> str:
    """A short, stable error text for a record (no tracebacks, no addresses of memory)."""
    if isinstance(exc, TimeoutError) and not getattr(exc, "errno", None):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{name}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


async def bounded_gather(items: Sequence[T], run: Callable[[T], Awaitable[R]],
                         concurrency: int) -> list[R]:
    """``run`` over ``items`` with at most ``concurrency`` in flight; results in input order."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> R:
        async with gate:
            return await run(item)

    return list(await asyncio.gather(*(one(item) for item in items)))
