"""Wait for a condition, not for a while: the tests' one way to synchronise with a process.

A fixed ``sleep()`` before an assertion is either too short on a loaded machine
(the test fails for no reason) or too long everywhere else.  These helpers poll
the condition itself and give up at a deadline with an :class:`AssertionError`
that says what was awaited and, when the predicate returns it, the last value seen.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")

__all__ = ["read_line", "wait_until", "wait_until_async"]


def _timed_out(what: str, deadline_s: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {deadline_s:g} s waiting for {what} "
                          f"(last seen: {last!r})")


def wait_until(predicate: Callable[[], T], deadline_s: float, what: str, *,
               poll_s: float = 0.05) -> T:
    """Call ``predicate`` until it returns a true value, and return that value.

    Raises :class:`AssertionError` naming ``what`` if it is still false after
    ``deadline_s`` seconds (monotonic clock).  The predicate is always tried
    once more at the deadline, so a slow poll never causes a false timeout.
    """
    end = time.monotonic() + deadline_s
    while True:
        last_try = time.monotonic() >= end
        value = predicate()
        if value:
            return value
        if last_try:
            raise _timed_out(what, deadline_s, value)
        time.sleep(min(poll_s, max(0.0, end - time.monotonic())))


async def wait_until_async(predicate: Callable[[], T], deadline_s: float, what: str, *,
                           poll_s: float = 0.01) -> T:
    """:func:`wait_until` for a coroutine: the event loop keeps running while it polls."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        last_try = loop.time() >= end
        value = predicate()
        if value:
            return value
        if last_try:
            raise _timed_out(what, deadline_s, value)
        await asyncio.sleep(min(poll_s, max(0.0, end - loop.time())))


def read_line(stream: IO[str], deadline_s: float, what: str) -> str:
    """The next line of a child's output, or an :class:`AssertionError` after ``deadline_s``.

    ``readline()`` on a pipe has no timeout of its own: it runs in a helper thread
    (a daemon, left blocked if the child never writes; killing the child ends it).
    """
    lines: queue.Queue[str] = queue.Queue(maxsize=1)
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=deadline_s)
    except queue.Empty:
        raise AssertionError(f"timed out after {deadline_s:g} s waiting for {what}") from None
