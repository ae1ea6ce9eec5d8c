"""Sans-I/O protocol cores: bytes in, decisions out.  No socket, ssl or asyncio here.

These modules import nothing of netvantage but the leaf :mod:`netvantage.errors`
(a test checks it), so that they can be read, tested and reused on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from ...errors import NetvantageError

__all__ = ["Action", "Done", "Fail", "FailStatus", "ProtocolError", "Send", "StartTls", "Wait",
           "injected_before_tls", "take_line"]

#: The statuses a dialogue can end with: each is also a record status
#: (``netvantage.results.Status``; a test keeps the two in step).
FailStatus: TypeAlias = Literal["protocol_error", "tls_error", "error"]


class ProtocolError(NetvantageError):
    """The peer said something a conforming server would not; ``str()`` says what."""


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``data``; ``phase`` starts now and ends with the next complete response."""

    data: bytes
    phase: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Read more; ``phase`` is (still) running."""

    phase: str


@dataclass(frozen=True, slots=True)
class StartTls:
    """Upgrade the connection to TLS now; the handshake is phase ``tls_handshake``."""

    phase: str = "tls_handshake"


@dataclass(frozen=True, slots=True)
class Done:
    """The dialogue is over; close the connection."""


@dataclass(frozen=True, slots=True)
class Fail:
    """Stop: ``phase`` failed with ``status`` for ``reason`` (``code``: the reply that did it)."""

    status: FailStatus
    phase: str
    reason: str
    code: str | None = None


Action = Send | Wait | StartTls | Done | Fail


def take_line(buf: bytearray, max_line: int, what: str) -> bytes | None:
    """Remove and return the next line of ``buf`` (without CR LF; a bare LF is accepted).

    ``None`` while the line is incomplete.  A line longer than ``max_line`` bytes,
    finished or not, is a :class:`ProtocolError`: a server cannot make us buffer more.
    """
    end = buf.find(b"\n")
    if (end < 0 and len(buf) > max_line) or end + 1 > max_line:
        raise ProtocolError(f"{what} line longer than {max_line} bytes")
    if end < 0:
        return None
    line = bytes(buf[:end]).rstrip(b"\r")
    del buf[: end + 1]
    return line


def injected_before_tls(count: int) -> Fail:
    """Bytes that arrived after the STARTTLS reply, before the handshake: refuse them.

    A client that read them after TLS would take them for the server's (command
    injection, CVE-2011-0411).
    """
    return Fail("protocol_error", "starttls",
                f"{count} byte(s) sent after the STARTTLS reply, before TLS")
