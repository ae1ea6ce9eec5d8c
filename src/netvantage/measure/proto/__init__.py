"""Sans-I/O protocol cores: bytes in, decisions out.  No socket, ssl or asyncio here."""

from __future__ import annotations

from dataclasses import dataclass

from ...results import Status

__all__ = ["Action", "Done", "Fail", "ProtocolError", "Send", "StartTls", "Wait"]


class ProtocolError(Exception):
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

    status: Status
    phase: str
    reason: str
    code: str | None = None


Action = Send | Wait | StartTls | Done | Fail
