"""IMAP client dialogue, sans I/O (RFC 9051 / RFC 3501 responses, STARTTLS).

The dialogue, as a table (state: on a response → what to do)::

    greeting        * OK / * PREAUTH → a1 CAPABILITY (capability)
                    * PREAUTH before TLS in mode starttls → Fail greeting (tls_error):
                      STARTTLS is only allowed before authentication (RFC 3501 6.2.1),
                      so the session can never be encrypted
                    * BYE or anything else → Fail greeting
    capability      * CAPABILITY … → remember;  a1 OK →
                        a2 STARTTLS (starttls) if mode is starttls (Fail if not offered)
                        a2 LOGIN (login) with credentials (only over TLS)
                        a2 LOGOUT (logout) otherwise
                    a1 NO/BAD → Fail capability
    starttls        tagged OK → StartTls     NO/BAD → Fail starttls
    tls_handshake   (I/O) → a3 CAPABILITY (capability_tls)  [implicit TLS: wait for greeting]
    capability_tls  like capability, without STARTTLS
                    (after PREAUTH no LOGIN: the session is authenticated already)
    login           * CAPABILITY … or tagged OK [CAPABILITY …] → remember as
                    ``capabilities_auth``;  tagged OK → LOGOUT   NO/BAD → Fail login
    logout          * BYE, then tagged OK → Done (a server may also just close)

Tags follow RFC 3501's grammar: any ASTRING-CHAR but ``+`` (letters, digits and
punctuation except ``( ) { % * "`` and the backslash, spaces and control characters).

Untagged lines in any phase are allowed but counted: more than
``max_untagged`` before the tagged answer is a protocol error (a server
streaming untagged data forever must not hold the client).  A literal
``{N}`` larger than ``max_literal`` is a protocol error, as is a line longer
than ``max_line``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from . import Action, Done, Fail, ProtocolError, Send, StartTls, Wait, take_line

__all__ = ["ImapDialogue", "Response", "ResponseReader"]

Mode = Literal["starttls", "tls", "plain"]
_LITERAL = re.compile(rb"\{(\d{1,10})\+?\}$")
# RFC 3501 9: tag = 1*<any ASTRING-CHAR except "+">; ASTRING-CHAR = ATOM-CHAR / "]";
# ATOM-CHAR = any CHAR except "(" ")" "{" SP CTL "%" "*" DQUOTE "\\" "]".
_TAGGED = re.compile(r'^([^\x00-\x20\x7f(){%*"\\+]+) (OK|NO|BAD)\b ?(.*)$',
                     re.IGNORECASE | re.DOTALL)
_UNTAGGED = re.compile(r"^\* ([A-Za-z0-9]+)\b ?(.*)$", re.DOTALL)
_CAPS_CODE = re.compile(r"\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Response:
    """One IMAP response line (literals folded in).

    ``kind`` is ``untagged`` (``* …``), ``continuation`` (``+ …``) or ``tagged``;
    ``word`` is the status or data keyword upper-cased (OK, NO, BAD, BYE,
    PREAUTH, CAPABILITY, …); ``text`` the rest.
    """

    kind: Literal["untagged", "continuation", "tagged"]
    tag: str | None
    word: str
    text: str

    def first_line(self, limit: int = 200) -> str:
        head = {"untagged": "*", "continuation": "+"}.get(self.kind, self.tag or "")
        return f"{head} {self.word} {self.text}".strip()[:limit]


class ResponseReader:
    """Feed bytes, get complete responses.  Bounded line and literal sizes."""

    def __init__(self, max_line: int = 8192, max_literal: int = 65536) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._parts_len = 0  # sum of len(self._parts), kept as we go (no quadratic re-summing)
        self._literal = 0  # bytes of literal still expected

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete response."""
        return len(self._buf) + self._parts_len

    def feed(self, data: bytes) -> list[Response]:
        self._buf += data
        out: list[Response] = []
        while True:
            if self._literal:
                if len(self._buf) < self._literal:
                    return out
                self._parts.append(bytes(self._buf[: self._literal]))
                self._parts_len += self._literal
                del self._buf[: self._literal]
                self._literal = 0
                continue
            line = take_line(self._buf, self.max_line, "response")
            if line is None:
                return out
            literal = _LITERAL.search(line)
            self._parts.append(line)
            self._parts_len += len(line)
            if literal:
                size = int(literal.group(1))
                if size > self.max_literal:
                    raise ProtocolError(f"literal of {size} bytes exceeds {self.max_literal}")
                if self._parts_len + size > 16 * self.max_literal:
                    raise ProtocolError("response with too many literals")
                # The response goes on after the literal, even an empty one ({0}).
                self._literal = size
                continue
            whole = b"".join(self._parts)
            self._parts, self._parts_len = [], 0
            out.append(self._parse(whole))

    @staticmethod
    def _parse(raw: bytes) -> Response:
        text = raw.decode("utf-8", "replace")
        if text.startswith("+"):
            return Response("continuation", None, "+", text[1:].strip())
        if text.startswith("* "):
            match = _UNTAGGED.match(text)
            if not match:
                raise ProtocolError(f"malformed untagged response {text[:60]!r}")
            return Response("untagged", None, match.group(1).upper(), match.group(2))
        match = _TAGGED.match(text)
        if not match:
            raise ProtocolError(f"malformed response {text[:60]!r}")
        return Response("tagged", match.group(1), match.group(2).upper(), match.group(3))


def _quote(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError("IMAP quoted strings cannot hold CR, LF or NUL")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class ImapDialogue:
    """Decides what to send next.  See the table in the module docstring."""

    mode: Mode = "starttls"
    username: str | None = None
    password: str | None = None
    max_untagged: int = 1000
    phase: str = "greeting"
    greeting: Response | None = None
    capabilities: list[str] = field(default_factory=list)
    capabilities_tls: list[str] = field(default_factory=list)
    capabilities_auth: list[str] = field(default_factory=list)
    tls_active: bool = False
    preauth: bool = False
    auth_result: Literal["ok", "failed"] | None = None
    _tag_n: int = 0
    _tag: str | None = None
    _untagged: int = 0
    _seen_caps: list[str] | None = None

    def start(self) -> Action:
        if self.mode == "tls":
            return StartTls()
        return Wait("greeting")

    def tls_established(self) -> Action:
        self.tls_active = True
        if self.mode == "tls":
            self.phase = "greeting"
            return Wait("greeting")
        return self._command("CAPABILITY", "capability_tls")

    def _command(self, command: str, phase: str) -> Send:
        self._tag_n += 1
        self._tag = f"a{self._tag_n}"
        self.phase = phase
        self._untagged = 0
        self._seen_caps = None
        return Send(f"{self._tag} {command}\r\n".encode(), phase)

    def _fail(self, status: Literal["protocol_error", "tls_error"], r: Response,
              what: str) -> Fail:
        return Fail(status, self.phase, f"{what}: {r.first_line()}", r.word)

    def on_response(self, r: Response) -> Action:
        if self.phase == "greeting":
            self.greeting = r
            if r.kind == "untagged" and r.word in ("OK", "PREAUTH"):
                if r.word == "PREAUTH":
                    self.preauth = True
                    if self.mode == "starttls" and not self.tls_active:
                        return self._fail("tls_error", r, "PREAUTH greeting before TLS: "
                                          "STARTTLS is not allowed once authenticated")
                caps = _CAPS_CODE.search(r.text)
                if caps:
                    self._remember(caps.group(1).split())
                # Implicit TLS (993) has one CAPABILITY, named like the plain one.
                again = self.tls_active and self.mode == "starttls"
                return self._command("CAPABILITY", "capability_tls" if again else "capability")
            return self._fail("protocol_error", r, "greeting refused")
        if r.kind == "untagged":
            self._untagged += 1
            if self._untagged > self.max_untagged:
                raise ProtocolError(f"more than {self.max_untagged} untagged responses "
                                    f"in phase {self.phase}")
            if r.word == "CAPABILITY":
                self._seen_caps = r.text.split()
            if r.word == "BYE" and self.phase != "logout":
                return self._fail("protocol_error", r, "server closed the session")
            return Wait(self.phase)
        if r.kind == "continuation":
            raise ProtocolError(f"unexpected continuation request in phase {self.phase}")
        if r.tag != self._tag:
            raise ProtocolError(f"answer for tag {r.tag!r} while waiting for {self._tag!r}")
        return self._on_tagged(r)

    def _remember(self, caps: list[str]) -> None:
        upper = [c.upper() for c in caps]
        if self.tls_active:
            self.capabilities_tls = upper
        else:
            self.capabilities = upper

    def _on_tagged(self, r: Response) -> Action:
        phase = self.phase
        if phase in ("capability", "capability_tls"):
            if r.word != "OK":
                return self._fail("protocol_error", r, "CAPABILITY refused")
            code = _CAPS_CODE.search(r.text)
            caps = self._seen_caps or (code.group(1).split() if code else [])
            self._remember(caps)
            if self.mode == "starttls" and not self.tls_active:
                if "STARTTLS" not in self.capabilities:
                    return Fail("tls_error", phase, "server does not offer STARTTLS")
                return self._command("STARTTLS", "starttls")
            if self.username is not None and self.password is not None and not self.preauth:
                if not self.tls_active:
                    return Fail("error", "login", "refusing to send credentials without TLS")
                return self._command(f"LOGIN {_quote(self.username)} {_quote(self.password)}",
                                     "login")
            return self._command("LOGOUT", "logout")
        if phase == "starttls":
            if r.word != "OK":
                return self._fail("tls_error", r, "STARTTLS refused")
            return StartTls()
        if phase == "login":
            self.auth_result = "ok" if r.word == "OK" else "failed"
            if r.word != "OK":
                return self._fail("protocol_error", r, "LOGIN failed")
            # Servers announce what changed after login (RFC 3501 6.2.3, RFC 9051 6.2.3):
            # in an untagged CAPABILITY or in the tagged OK's response code.
            code = _CAPS_CODE.search(r.text)
            caps = self._seen_caps or (code.group(1).split() if code else None)
            if caps is not None:
                self.capabilities_auth = [c.upper() for c in caps]
            return self._command("LOGOUT", "logout")
        if phase == "logout":
            return Done()
        raise ProtocolError(f"tagged {r.word} in phase {phase}")
