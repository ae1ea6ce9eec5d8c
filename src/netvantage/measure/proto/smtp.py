"""SMTP client dialogue, sans I/O (RFC 5321 replies, RFC 3207 STARTTLS).

The dialogue, as a table (state: on a reply with this code → what to do)::

    greeting        220 → EHLO (ehlo)         other → Fail greeting
    ehlo            250 → STARTTLS (starttls) if mode is starttls and it is offered
                          AUTH PLAIN (auth)   if credentials and no STARTTLS needed
                          QUIT (quit)         otherwise
                    other → Fail ehlo
    starttls        220 → StartTls            other (e.g. 454) → Fail starttls
    tls_handshake   (I/O) → EHLO (ehlo_tls)  [implicit TLS: wait for greeting]
    ehlo_tls        250 → AUTH PLAIN (auth) with credentials, else QUIT (quit)
                    (with implicit TLS the one EHLO is named ``ehlo``)
                    credentials but PLAIN not among the mechanisms → Fail auth
    auth            235 → QUIT (quit)         other → Fail auth
    quit            any → Done (a server may also just close: the shell ends the phase)

AUTH mechanisms are read from the ``AUTH`` keyword and from its old aliases
``AUTH=`` (an early draft's form, still sent for old clients) and ``X-EXPS``
(:func:`auth_mechanisms`); capabilities are recorded as the server wrote them.

Modes: ``starttls`` (ports 25, 587), ``tls`` (465: TLS first, then the greeting),
``plain`` (no TLS at all).  The dialogue never sends MAIL, RCPT or DATA.

Bytes that arrive after the 220 to STARTTLS and before the handshake are a
protocol error: a client that read them would be open to command injection
(CVE-2011-0411); this core refuses them.

Limits keep a hostile server from exhausting the client: a reply line longer
than ``max_line`` bytes, or a reply of more than ``max_lines`` lines, is a
protocol error.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Literal

from . import Action, Done, Fail, ProtocolError, Send, StartTls, Wait, take_line

__all__ = ["Reply", "ReplyReader", "SmtpDialogue", "auth_mechanisms"]

Mode = Literal["starttls", "tls", "plain"]
_LINE = re.compile(rb"^([0-9]{3})([ -]|$)(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete SMTP reply: a code and its text lines (without code and separator)."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def first_line(self, limit: int = 200) -> str:
        line = f"{self.code} {self.lines[0] if self.lines else ''}".rstrip()
        return line[:limit]


class ReplyReader:
    """Feed bytes, get complete replies.  Tolerates bare LF; refuses malformed lines."""

    def __init__(self, max_line: int = 4096, max_lines: int = 512) -> None:
        self.max_line = max_line
        self.max_lines = max_lines
        self._buf = bytearray()
        self._code: int | None = None
        self._lines: list[str] = []

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete reply."""
        return len(self._buf) + sum(len(x) for x in self._lines)

    def feed(self, data: bytes) -> list[Reply]:
        self._buf += data
        replies: list[Reply] = []
        while (raw := take_line(self._buf, self.max_line, "reply")) is not None:
            reply = self._line(raw)
            if reply is not None:
                replies.append(reply)
        return replies

    def _line(self, raw: bytes) -> Reply | None:
        match = _LINE.match(raw)
        if not match:
            shown = raw[:60].decode("ascii", "backslashreplace")
            raise ProtocolError(f"malformed reply line {shown!r}")
        code = int(match.group(1))
        if not 200 <= code <= 599:
            raise ProtocolError(f"reply code {code} outside 2xx-5xx")
        if self._code is not None and code != self._code:
            raise ProtocolError(f"multi-line reply changed code from {self._code} to {code}")
        self._code = code
        self._lines.append(match.group(3).decode("utf-8", "replace"))
        if len(self._lines) > self.max_lines:
            raise ProtocolError(f"reply of more than {self.max_lines} lines")
        if match.group(2) == b"-":
            return None
        reply = Reply(code, tuple(self._lines))
        self._code, self._lines = None, []
        return reply


def parse_ehlo(reply: Reply) -> list[str]:
    """EHLO keywords (upper-cased, with their parameters), skipping the greeting line."""
    caps = []
    for line in reply.lines[1:]:
        words = line.strip().split()
        if words:
            caps.append(" ".join([words[0].upper(), *words[1:]]))
    return caps


def has_capability(caps: list[str], keyword: str) -> bool:
    return any(c.split(" ", 1)[0] == keyword for c in caps)


def auth_mechanisms(caps: list[str]) -> set[str]:
    """SASL mechanisms offered: ``AUTH X Y``, the old ``AUTH=X Y`` and ``X-EXPS X Y``
    (an alias of AUTH some servers still send; RFC 4954 names only AUTH)."""
    found: set[str] = set()
    for cap in caps:
        words = cap.replace("=", " ", 1).split()
        if words and words[0].upper() in ("AUTH", "X-EXPS"):
            found.update(w.upper() for w in words[1:])
    return found


@dataclass
class SmtpDialogue:
    """Decides what to send next.  See the table in the module docstring."""

    mode: Mode = "starttls"
    helo: str = "netvantage.invalid"
    username: str | None = None
    password: str | None = None
    phase: str = "greeting"
    greeting: Reply | None = None
    capabilities: list[str] = field(default_factory=list)
    capabilities_tls: list[str] = field(default_factory=list)
    tls_active: bool = False
    auth_result: Literal["ok", "failed"] | None = None

    def start(self) -> Action:
        """The first action once TCP is connected."""
        if self.mode == "tls":
            return StartTls()
        self.phase = "greeting"
        return Wait("greeting")

    def tls_established(self) -> Action:
        self.tls_active = True
        if self.mode == "tls":
            self.phase = "greeting"
            return Wait("greeting")
        return self._send(f"EHLO {self.helo}", "ehlo_tls")

    def _send(self, command: str, phase: str) -> Send:
        self.phase = phase
        return Send(command.encode("ascii") + b"\r\n", phase)

    def _fail(self, reply: Reply, what: str) -> Fail:
        return Fail("protocol_error", self.phase, f"{what}: {reply.first_line()}",
                    str(reply.code))

    def on_reply(self, reply: Reply) -> Action:
        phase = self.phase
        if phase == "greeting":
            self.greeting = reply
            if reply.code != 220:
                return self._fail(reply, "greeting refused")
            # Implicit TLS (465) has one EHLO, named like the plain one.
            again = self.tls_active and self.mode == "starttls"
            return self._send(f"EHLO {self.helo}", "ehlo_tls" if again else "ehlo")
        if phase in ("ehlo", "ehlo_tls"):
            if reply.code != 250:
                return self._fail(reply, "EHLO refused")
            caps = parse_ehlo(reply)
            if self.tls_active:
                self.capabilities_tls = caps
            else:
                self.capabilities = caps
            if self.mode == "starttls" and not self.tls_active:
                if not has_capability(caps, "STARTTLS"):
                    return Fail("tls_error", "ehlo", "server does not offer STARTTLS",
                                str(reply.code))
                return self._send("STARTTLS", "starttls")
            return self._after_hello()
        if phase == "starttls":
            if reply.code != 220:
                return Fail("tls_error", "starttls", f"STARTTLS refused: {reply.first_line()}",
                            str(reply.code))
            return StartTls()
        if phase == "auth":
            self.auth_result = "ok" if reply.code == 235 else "failed"
            if reply.code != 235:
                return self._fail(reply, "authentication failed")
            return self._send("QUIT", "quit")
        if phase == "quit":
            return Done()
        raise ProtocolError(f"reply {reply.code} in phase {phase}")

    def _after_hello(self) -> Action:
        if self.username is not None and self.password is not None:
            if not self.tls_active:
                return Fail("error", "auth", "refusing to send credentials without TLS")
            offered = auth_mechanisms(self.capabilities_tls if self.tls_active
                                      else self.capabilities)
            if "PLAIN" not in offered:
                return Fail("error", "auth", "server offers no AUTH PLAIN (mechanisms: "
                            f"{', '.join(sorted(offered)) or 'none'}); credentials not sent")
            token = base64.b64encode(
                b"\0" + self.username.encode() + b"\0" + self.password.encode()
            ).decode("ascii")
            return self._send(f"AUTH PLAIN {token}", "auth")
        return self._send("QUIT", "quit")
