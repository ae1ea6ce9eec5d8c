"""The control socket's protocol, and the client that the lab and the tests use.

The delay element listens on a UNIX stream socket (mode 0600) and speaks one
JSON object per line::

    {"link": "x", "delay_ms": 10, "jitter_ms": 2}   ->  {"ok": true}
    {"stats": true}                                 ->  {"ok": true, "stats": {...}}
    anything else                                   ->  {"ok": false, "error": "..."}

A new delay applies to packets read after the change.  :func:`parse_request`
is the element's side of a request line (no I/O: the forwarding loop applies
what it returns); :func:`set_link` and :func:`link_stats` are the client's.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import NetvantageError
from .spec import SpecError, check_ms

__all__ = ["ControlError", "LinkChange", "StatsRequest", "encode_line", "link_stats",
           "parse_request", "set_link"]

_MAX_REPLY = 1 << 20


class ControlError(NetvantageError):
    """The delay process refused a control request or could not be reached."""


@dataclass(frozen=True, slots=True)
class StatsRequest:
    """``{"stats": true}``: the counters of every link."""


@dataclass(frozen=True, slots=True)
class LinkChange:
    """A new delay and/or jitter for one link (``None``: leave it as it is)."""

    link: str
    delay_ms: float | None
    jitter_ms: float | None


def encode_line(message: dict[str, Any]) -> bytes:
    """One protocol line: compact JSON and a newline."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def parse_request(line: bytes, links: Container[str]) -> StatsRequest | LinkChange:
    """One request line (without its newline), checked against the element's ``links``.

    Raises :class:`ControlError` with the answer's error text for anything the
    element must refuse.
    """
    try:
        request = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ControlError("request is not JSON") from None
    if not isinstance(request, dict):
        raise ControlError("request must be a JSON object")
    if "stats" in request:
        if request != {"stats": True}:
            raise ControlError('a stats request is exactly {"stats": true}')
        return StatsRequest()
    if "link" not in request:
        raise ControlError('expected "link" or "stats"')
    unknown = set(request) - {"link", "delay_ms", "jitter_ms"}
    if unknown:
        raise ControlError(f"unknown key(s): {', '.join(sorted(unknown))}")
    name = request["link"]
    if not isinstance(name, str) or name not in links:
        raise ControlError(f"no link named {name!r}")
    if "delay_ms" not in request and "jitter_ms" not in request:
        raise ControlError("give delay_ms and/or jitter_ms")
    try:
        delay = check_ms("delay_ms", request.get("delay_ms", 0))
        jitter = check_ms("jitter_ms", request.get("jitter_ms", 0))
    except SpecError as exc:
        raise ControlError(str(exc)) from None
    return LinkChange(name, delay if "delay_ms" in request else None,
                      jitter if "jitter_ms" in request else None)


def _request(control: Path, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.settimeout(timeout_s)
            sock.connect(str(control))
            sock.sendall(encode_line(request))
            buf = b""
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no answer")
                sock.settimeout(left)
                chunk = sock.recv(65_536)
                if not chunk:
                    raise ControlError(f"{control}: connection closed without an answer")
                buf += chunk
                if len(buf) > _MAX_REPLY:
                    raise ControlError(f"{control}: answer longer than {_MAX_REPLY} bytes")
        except (TimeoutError, OSError) as exc:
            if isinstance(exc, ControlError):
                raise
            why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise ControlError(f"delay process control socket {control}: {why}") from exc
    try:
        reply = json.loads(buf.split(b"\n", 1)[0])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ControlError(f"{control}: answer is not JSON: {exc}") from exc
    if not isinstance(reply, dict):
        raise ControlError(f"{control}: answer is not a JSON object")
    if reply.get("ok") is not True:
        raise ControlError(f"{control}: {reply.get('error', 'request refused')}")
    return reply


def set_link(control: Path, link: str, *, delay_ms: float | None = None,
             jitter_ms: float | None = None, timeout_s: float = 5.0) -> None:
    """Change a running link's delay and/or jitter; packets read afterwards see it.

    Raises :class:`SpecError` for bad values and :class:`ControlError` when the
    process refuses the change (unknown link) or cannot be reached in time.
    """
    request: dict[str, Any] = {"link": link}
    if delay_ms is not None:
        request["delay_ms"] = check_ms("delay_ms", delay_ms)
    if jitter_ms is not None:
        request["jitter_ms"] = check_ms("jitter_ms", jitter_ms)
    if len(request) == 1:
        raise SpecError("set_link: give delay_ms and/or jitter_ms")
    _request(control, request, timeout_s)


def link_stats(control: Path, timeout_s: float = 5.0) -> dict[str, dict[str, int]]:
    """Packet counters per link: ``{link: {"a_to_b_forwarded": n, ...}}``.

    For each direction (``a_to_b``, ``b_to_a``): ``forwarded`` (written to the
    far device), ``queued`` (held now), ``dropped`` (queue full) and ``errors``
    (reading the near device or writing the far one failed, e.g. while one of
    them is down; such a packet is lost, as on a wire).
    """
    reply = _request(control, {"stats": True}, timeout_s)
    stats = reply.get("stats")
    if not isinstance(stats, dict) or not all(
        isinstance(v, dict) and all(isinstance(n, int) for n in v.values())
        for v in stats.values()
    ):
        raise ControlError(f"{control}: malformed stats answer")
    return {str(k): {str(c): int(n) for c, n in v.items()} for k, v in stats.items()}
