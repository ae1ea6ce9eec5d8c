"""SMTP and IMAP handshake probes: the I/O shell around the sans-I/O dialogues.

One shell serves both protocols.  It resolves the name, connects (the same
timed connect as ``measure tcp``), feeds what it reads to the protocol core
and does what the core decides: send a command, upgrade to TLS, stop.

Timing
------
Every step is a *phase*, timed by :class:`PhaseClock` on the monotonic clock:
``dns``, ``connect``, then the dialogue's phases (``greeting``, ``ehlo`` or
``capability``, ``starttls``, ``tls_handshake``, …, ``quit``/``logout``).  A
command phase runs from just before the command is written to the moment its
complete answer has been parsed; ``greeting`` runs from the end of ``connect``
to the complete greeting; ``tls_handshake`` brackets ``start_tls()``.  The
phases follow each other without gaps, so they add up to the probe's duration
less the bookkeeping between them (microseconds).

Limits
------
One absolute deadline for the whole probe (``timeout_s``) and a limit per
phase (``phase_timeout_s``): whichever comes first ends the phase with status
``timeout``.  Reads are bounded (``max_bytes`` in total; the cores bound line
and reply sizes), so a server that drips bytes, floods lines or never answers
ends within its deadline and cannot exhaust memory.

Stalls
------
A ``tls_handshake`` phase that times out gets ``tls_stall`` in the body: the
connection's TCP counters and a path MTU measurement toward the server decide
whether it is a path MTU black hole (verdict ``pmtu_black_hole``; the record's
error says so) or another stall (:mod:`netvantage.measure.blackhole`).  The
check runs in what is left of the probe's deadline (``timeout_s`` beyond
``phase_timeout_s``: 10 s by default); the record's status stays ``timeout``.

Certificates
------------
The handshake verifies the certificate like a real client (the system's
trust store or ``ca_file``; the expected name is ``server_name``, by default
the target as given).  If verification fails the probe stops with
``tls_error`` and, unless disabled, repeats the dialogue on a second
connection with verification off, only to read the certificate it refused.
``tls.verify_error`` says what was wrong as ``KIND (verify code N): MESSAGE``:
the kind (``unknown CA``, ``self-signed``, ``expired``, ``name mismatch``, …)
follows from OpenSSL's verify code, never from its message text, which changes
between OpenSSL versions.  Other TLS failures name OpenSSL's reason code
(``ssl.SSLError.reason``, e.g. ``WRONG_VERSION_NUMBER``), not its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

from ..results import (
    CertInfo,
    ImapRecord,
    MailBody,
    Phase,
    SmtpRecord,
    Status,
    TlsInfo,
    TlsStall,
    ms,
    new_id,
    utc_now,
)
from .blackhole import TcpCounters, diagnose_stall, tcp_counters
from .certs import CertError, cert_info
from .common import Origin, bounded_gather, describe, status_of
from .proto import (
    Action,
    Done,
    Fail,
    ProtocolError,
    Send,
    StartTls,
    Wait,
    injected_before_tls,
)
from .proto.imap import ImapDialogue, ResponseReader
from .proto.smtp import ReplyReader, SmtpDialogue
from .target import Target, parse_target, resolve
from .tcp import open_tcp

__all__ = ["MailOptions", "PhaseClock", "imap_probe", "mail_many", "smtp_probe", "verify_error",
           "verify_kind"]

Protocol = Literal["smtp", "imap"]
Mode = Literal["starttls", "tls", "plain"]
_IMPLICIT_TLS_PORTS = {465, 993}
DEFAULT_PORTS = {"smtp": 25, "imap": 143}


@dataclass(frozen=True, slots=True)
class MailOptions:
    mode: Mode | None = None  # None: implicit TLS on 465/993, STARTTLS elsewhere
    timeout_s: float = 20.0
    phase_timeout_s: float = 10.0
    ca_file: Path | None = None
    server_name: str | None = None
    helo: str | None = None  # None: an address literal of our own source address
    username: str | None = None
    password: str | None = None
    max_bytes: int = 1 << 20
    fetch_refused_cert: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= 600 or not 0 < self.phase_timeout_s <= 600:
            raise ValueError("timeouts must be in (0, 600] s")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both a user name and a password, or neither")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ValueError(f"CA file {self.ca_file} does not exist")

    def mode_for(self, port: int) -> Mode:
        if self.mode is not None:
            return self.mode
        return "tls" if port in _IMPLICIT_TLS_PORTS else "starttls"


@dataclass
class PhaseClock:
    """Names and times every phase the same way; at most one phase runs at a time."""

    phases: list[Phase] = field(default_factory=list)
    _name: str | None = None
    _t0: int = 0

    def begin(self, name: str, at: int | None = None) -> None:
        if self._name is not None:
            raise RuntimeError(f"phase {name} begun while {self._name} runs")
        self._name, self._t0 = name, time.perf_counter_ns() if at is None else at

    @property
    def running(self) -> str | None:
        return self._name

    @property
    def elapsed_s(self) -> float:
        """Seconds since the running phase began (0 when none runs)."""
        if self._name is None:
            return 0.0
        return (time.perf_counter_ns() - self._t0) / 1e9

    def end(self, *, ok: bool = True, reply: str | None = None, code: str | None = None,
            error: str | None = None, at: int | None = None) -> int:
        if self._name is None:
            raise RuntimeError("no phase is running")
        now = time.perf_counter_ns() if at is None else at
        self.phases.append(Phase(name=self._name, ok=ok, reply=reply, code=code, error=error,
                                 duration_ms=ms(now - self._t0) if ok else None))
        self._name = None
        return now

    def fail(self, error: str, code: str | None = None, reply: str | None = None) -> None:
        """End the running phase as failed (no duration: it never completed)."""
        if self._name is not None:
            self.end(ok=False, error=error, code=code, reply=reply)


class _Abort(Exception):
    def __init__(self, status: Status, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def _cert_info(der: bytes | None) -> CertInfo | None:
    """The leaf certificate's fields; None if there is none or it cannot be read.

    OpenSSL has parsed the certificate already for the handshake to succeed, so
    an unreadable one is a parser's limit, not the server's fault: the record
    keeps its handshake result and goes without the certificate's fields.
    """
    if not der:
        return None
    try:
        return cert_info(der)
    except CertError:
        return None


def _tls_context(opts: MailOptions, verify: bool) -> ssl.SSLContext:
    if verify:
        ctx = ssl.create_default_context(cafile=str(opts.ca_file) if opts.ca_file else None)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _address_literal(sock: socket.socket) -> str:
    host = sock.getsockname()[0]
    return f"[IPv6:{host}]" if ":" in host else f"[{host}]"


class _Session:
    """One connection's dialogue: reads, feeds the core, acts on its decisions."""

    def __init__(self, protocol: Protocol, mode: Mode, opts: MailOptions, clock: PhaseClock,
                 deadline: float, server_name: str, verify: bool = True) -> None:
        self.protocol = protocol
        self.mode = mode
        self.opts = opts
        self.clock = clock
        self.deadline = deadline
        self.server_name = server_name
        self.verify = verify
        self.received = 0
        self.tls = TlsInfo(server_name=server_name,
                           trust=str(opts.ca_file) if opts.ca_file else "system")
        self.core: SmtpDialogue | ImapDialogue
        self.reader_core: ReplyReader | ResponseReader
        if protocol == "smtp":
            self.core = SmtpDialogue(mode=mode, helo=opts.helo or "localhost",
                                     username=opts.username, password=opts.password)
            self.reader_core = ReplyReader()
        else:
            self.core = ImapDialogue(mode=mode, username=opts.username, password=opts.password)
            self.reader_core = ResponseReader()
        self.stop_after_tls = False
        # TCP counters when the handshake began and when it timed out (see .blackhole).
        self.stall_counters: tuple[TcpCounters | None, TcpCounters | None] | None = None
        self.sock: socket.socket | None = None

    def _remaining(self) -> float:
        # The phase limit runs from the start of the phase, not of each read:
        # a server that drips a byte now and then must not stretch a phase.
        overall = self.deadline - time.monotonic()
        phase_left = self.opts.phase_timeout_s - self.clock.elapsed_s
        if overall <= 0 or phase_left <= 0:
            raise self._limit_reached()
        return min(overall, phase_left)

    def _limit_reached(self) -> _Abort:
        """The timeout that ended the phase, said the same way whether a read was waiting
        when it struck or a byte had just come in (a drip can land on the limit itself)."""
        overall = self.deadline - time.monotonic()
        phase_left = self.opts.phase_timeout_s - self.clock.elapsed_s
        if overall <= phase_left:
            return _Abort("timeout", f"no complete answer in phase {self.clock.running} "
                          "before the overall deadline")
        return _Abort("timeout", f"no complete answer in phase {self.clock.running} "
                      f"within its {self.opts.phase_timeout_s:g} s")

    async def run(self, sock: socket.socket, connected_at: int) -> None:
        self.sock = sock
        reader, writer = await asyncio.open_connection(sock=sock, limit=self.opts.max_bytes)
        if self.protocol == "smtp" and self.opts.helo is None:
            assert isinstance(self.core, SmtpDialogue)
            self.core.helo = _address_literal(sock)
        try:
            action: Action = self.core.start()
            pending_start = connected_at
            while True:
                if isinstance(action, Wait):
                    if self.clock.running is None:
                        self.clock.begin(action.phase, at=pending_start)
                    action = await self._read_and_decide(reader)
                elif isinstance(action, Send):
                    self.clock.begin(action.phase)
                    writer.write(action.data)
                    await asyncio.wait_for(writer.drain(), self._remaining())
                    action = await self._read_and_decide(reader)
                elif isinstance(action, StartTls):
                    await self._start_tls(reader, writer)
                    if self.stop_after_tls:
                        return
                    pending_start = time.perf_counter_ns()
                    action = self.core.tls_established()
                elif isinstance(action, Done):
                    return
                elif isinstance(action, Fail):
                    self.clock.fail(action.reason, code=action.code)
                    raise _Abort(action.status, action.reason)
        finally:
            # A transport already closing (reset, or a failed start_tls, after
            # which wait_closed() never completes) has nothing left to flush.
            closing = writer.transport.is_closing()
            writer.close()
            # Closing is not part of any phase; a server that never acknowledges
            # the close must not hold the probe, nor take it past its deadline.
            left = min(1.0, self.deadline - time.monotonic())
            if not closing and left > 0:
                with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
                    await asyncio.wait_for(writer.wait_closed(), left)

    async def _read_and_decide(self, reader: asyncio.StreamReader) -> Action:
        """Read until the core has a complete answer; end the phase; return the next action."""
        while True:
            try:
                data = await asyncio.wait_for(reader.read(65536), self._remaining())
            except TimeoutError:
                raise self._limit_reached() from None
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise _Abort("protocol_error",
                             f"connection reset in phase {self.clock.running}: {exc}") from None
            if not data:
                if self.clock.running in ("quit", "logout"):
                    self.clock.end(reply="(connection closed)")
                    return Done()
                raise _Abort("protocol_error",
                             f"connection closed by the server in phase {self.clock.running}")
            self.received += len(data)
            if self.received > self.opts.max_bytes:
                raise _Abort("protocol_error",
                             f"server sent more than {self.opts.max_bytes} bytes")
            try:
                answers = self.reader_core.feed(data)
            except ProtocolError as exc:
                raise _Abort("protocol_error", str(exc)) from None
            for answer in answers:
                try:
                    if isinstance(self.core, SmtpDialogue):
                        action: Action = self.core.on_reply(answer)  # type: ignore[arg-type]
                    else:
                        action = self.core.on_response(answer)  # type: ignore[arg-type]
                except ProtocolError as exc:
                    raise _Abort("protocol_error", str(exc)) from None
                if isinstance(action, Wait):
                    continue
                if isinstance(action, StartTls) and answers[-1] is answer:
                    # Unparsed bytes in the core *or* still in the stream's buffer
                    # (which after TLS would be handed out as if decrypted):
                    # refused while the starttls phase runs, so that it fails.
                    unread = self.reader_core.buffered + _unread(reader)
                    if unread:
                        action = injected_before_tls(unread)
                if isinstance(action, Fail):
                    return action
                if answers[-1] is not answer and not isinstance(action, Done):
                    # The server answered ahead of our next command (a pipelining
                    # violation): whatever follows would be misread.  After the
                    # STARTTLS reply it is command injection (CVE-2011-0411).
                    # Checked before the phase ends, so that the phase fails.
                    message = f"server sent unrequested data in phase {self.clock.running}"
                    if isinstance(action, StartTls):
                        message += " (a reply after the STARTTLS reply, before TLS)"
                    self.clock.fail(message, code=_code(answer), reply=answer.first_line())
                    raise _Abort("protocol_error", message)
                self.clock.end(reply=answer.first_line(), code=_code(answer))
                return action

    async def _start_tls(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        self.clock.begin("tls_handshake")
        ctx = _tls_context(self.opts, self.verify)
        hostname = self.server_name if self.verify or _is_name(self.server_name) else None
        counters = tcp_counters(self.sock)
        try:
            handshake = asyncio.ensure_future(writer.start_tls(ctx, server_hostname=hostname))
            done, _ = await asyncio.wait({handshake}, timeout=self._remaining())
            if not done:
                # Read the connection's counters before the cancelled handshake closes it.
                self.stall_counters = (counters, tcp_counters(self.sock))
                handshake.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError, ssl.SSLError):
                    await handshake
                raise TimeoutError
            handshake.result()
        except ssl.SSLCertVerificationError as exc:
            message = verify_error(exc)
            self.tls = _replace(self.tls, verified=False, verify_error=message)
            self.clock.fail(f"certificate verify failed: {message}")
            raise _Abort("tls_error", f"certificate verify failed: {message}") from None
        except ssl.SSLError as exc:
            self.clock.fail(f"TLS failed: {exc.reason or exc}")
            raise _Abort("tls_error", f"TLS handshake failed: {exc.reason or exc}") from None
        except TimeoutError:
            self.clock.fail("TLS handshake did not complete in time")
            raise _Abort("timeout", "TLS handshake did not complete in time") from None
        except (ConnectionError, OSError) as exc:
            self.clock.fail(f"connection lost during TLS handshake: {exc}")
            raise _Abort("tls_error", f"connection lost during TLS handshake: {exc}") from None
        if self.mode == "starttls" and _unread(reader):
            # Bytes that reached the stream after the STARTTLS reply, while the
            # handshake was being set up: plaintext the stream would now pass off
            # as decrypted (CVE-2011-0411), or data no server sends before our
            # first command over TLS.  Either way, nothing more is read.
            message = (f"{_unread(reader)} byte(s) received after the STARTTLS reply and "
                       f"before the first command over TLS")
            self.clock.fail(message)
            raise _Abort("protocol_error", message)
        obj = writer.get_extra_info("ssl_object")
        self.clock.end()
        der = obj.getpeercert(binary_form=True) if obj is not None else None
        cipher = obj.cipher() if obj is not None else None
        self.tls = _replace(
            self.tls, version=obj.version() if obj is not None else None,
            cipher=cipher[0] if cipher else None,
            verified=True if self.verify else None,
            cert=_cert_info(der),
        )
        # A fresh reader core: nothing read before TLS may be parsed after it.
        self.reader_core = ReplyReader() if self.protocol == "smtp" else ResponseReader()


# What kind of verification failure an OpenSSL verify code (X509_V_ERR_*) is.
# The codes are part of OpenSSL's API and do not change between versions; the
# messages do ("self signed" became "self-signed" in 3.0) and CPython writes its
# own for name mismatches, so the kind is decided by the code alone.
_VERIFY_KINDS: dict[int, str] = {
    2: "unknown CA",  # UNABLE_TO_GET_ISSUER_CERT
    20: "unknown CA",  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY: the leaf's issuer is not trusted
    21: "unknown CA",  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    19: "unknown CA",  # SELF_SIGNED_CERT_IN_CHAIN: the chain ends in a root not trusted
    18: "self-signed",  # DEPTH_ZERO_SELF_SIGNED_CERT: the leaf is its own issuer
    7: "bad signature",  # CERT_SIGNATURE_FAILURE
    9: "not yet valid",  # CERT_NOT_YET_VALID
    10: "expired",  # CERT_HAS_EXPIRED
    22: "chain too long",  # CERT_CHAIN_TOO_LONG
    23: "revoked",  # CERT_REVOKED
    24: "invalid CA",  # INVALID_CA: an issuer that may not issue
    26: "wrong purpose",  # INVALID_PURPOSE: not a TLS server certificate
    62: "name mismatch",  # HOSTNAME_MISMATCH
    63: "name mismatch",  # EMAIL_MISMATCH
    64: "name mismatch",  # IP_ADDRESS_MISMATCH
}


def verify_kind(code: int | None) -> str:
    """The kind of a certificate verification failure, from OpenSSL's verify code."""
    return _VERIFY_KINDS.get(code or 0, "other")


def verify_error(exc: ssl.SSLCertVerificationError) -> str:
    """``tls.verify_error``: ``KIND (verify code N): MESSAGE``.

    KIND (:func:`verify_kind`) and N do not depend on the OpenSSL version, so
    they are what a reader should match on; MESSAGE is OpenSSL's (or CPython's)
    wording for people.
    """
    code = exc.verify_code if isinstance(exc.verify_code, int) else None
    message = exc.verify_message or exc.reason or str(exc)
    return f"{verify_kind(code)} (verify code {code}): {message}"


def _unread(reader: asyncio.StreamReader) -> int:
    """Bytes the stream holds that nobody has read yet (no public API says so)."""
    return len(getattr(reader, "_buffer", b""))


def _replace(info: TlsInfo, **changes: object) -> TlsInfo:
    return msgspec.structs.replace(info, **changes)


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return False
    except ValueError:
        return True


def _code(answer: object) -> str | None:
    code = getattr(answer, "code", None)
    if code is not None:
        return str(code)
    word = getattr(answer, "word", None)
    return str(word) if word is not None else None


async def _probe(protocol: Protocol, target: Target | str, opts: MailOptions,
                 origin: Origin | None, family: Literal[4, 6] | None,
                 name: str | None) -> SmtpRecord | ImapRecord:
    origin = origin or Origin.local()
    if isinstance(target, str):
        target = parse_target(target, default_port=DEFAULT_PORTS[protocol])
    port = target.port or DEFAULT_PORTS[protocol]
    mode = opts.mode_for(port)
    record_id = new_id()
    started_at = utc_now()
    t_start = time.perf_counter_ns()
    deadline = time.monotonic() + opts.timeout_s
    clock = PhaseClock()
    server_name = opts.server_name or target.host
    session: _Session | None = None
    address: str | None = None
    ip_version: Literal[4, 6] | None = family
    status: Status = "ok"
    error: str | None = None
    stall: TlsStall | None = None
    try:
        if _is_name(target.host):
            clock.begin("dns")
            try:
                resolved = await resolve(target.host, family, timeout_s=opts.phase_timeout_s)
            except (OSError, TimeoutError) as exc:
                clock.fail(describe(exc))
                raise _Abort(status_of(exc), describe(exc)) from None
            clock.end()
        else:
            resolved = await resolve(target.host, family)
        address, ip_version = resolved.address, resolved.ip_version
        clock.begin("connect")
        left = max(0.001, min(deadline - time.monotonic(), opts.phase_timeout_s))
        sock, attempt = await open_tcp(address, port, ip_version, left)
        if sock is None:
            clock.fail(attempt.error or attempt.status)
            raise _Abort(attempt.status, attempt.error or attempt.status)
        connected_at = clock.end(at=clock._t0 + round((attempt.connect_ms or 0) * 1e6))
        # Without TCP_NODELAY the command written right after the TLS Finished
        # waits for its ACK (Nagle): one round trip of our making in the phase.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = _Session(protocol, mode, opts, clock, deadline, server_name)
        try:
            await session.run(sock, connected_at)
        except (ConnectionError, OSError) as exc:
            raise _Abort("protocol_error",
                         f"connection failed in phase {clock.running}: {describe(exc)}") from None
    except _Abort as exc:
        status, error = exc.status, exc.error
        clock.fail(exc.error)
        if (status == "tls_error" and session is not None and session.tls.verified is False
                and opts.fetch_refused_cert and address is not None):
            cert = await _fetch_refused_cert(protocol, mode, opts, address, port, ip_version,
                                             server_name, deadline)
            if cert is not None:
                session.tls = _replace(session.tls, cert=cert, cert_from_second_handshake=True)
        if session is not None and session.stall_counters is not None and address is not None:
            # The handshake timed out: why?  Within what is left of the probe's deadline.
            stall = await diagnose_stall(address, ip_version, *session.stall_counters,
                                         budget_s=deadline - time.monotonic() - 0.05)
            if stall.verdict == "pmtu_black_hole":
                error = (f"TLS handshake stalled in a path MTU black hole: path MTU "
                         f"{stall.path_mtu} < interface MTU {stall.local_mtu}, "
                         + ("'too big' ICMP received" if stall.ptb_received
                            else "no 'too big' ICMP came back")
                         + (f", larger packets stop at {stall.hop_address}"
                            if stall.hop_address else ""))
    duration = ms(time.perf_counter_ns() - t_start)
    failed = next((p.name for p in clock.phases if not p.ok), None)
    core = session.core if session else None
    greeting = core.greeting.first_line(500) if core is not None and core.greeting else None
    used_tls = session is not None and any(p.name == "tls_handshake" for p in clock.phases)
    body = MailBody(
        port=port, ip_version=ip_version, mode=mode, timeout_s=opts.timeout_s,
        phases=clock.phases, failed_phase=failed, greeting=greeting,
        capabilities=core.capabilities if core else [],
        capabilities_tls=core.capabilities_tls if core else [],
        capabilities_auth=getattr(core, "capabilities_auth", []) if core else [],
        tls=session.tls if (session is not None and used_tls) else None,
        auth=core.auth_result if core else None,
        bytes_received=session.received if session else 0,
        tls_stall=msgspec.UNSET if stall is None else stall,
    )
    cls = SmtpRecord if protocol == "smtp" else ImapRecord
    return cls(id=record_id, agent=origin.agent, region=origin.region, target=name or target.host,
               address=address, started_at=started_at, duration_ms=duration, status=status,
               error=error, body=body)


async def _fetch_refused_cert(protocol: Protocol, mode: Mode, opts: MailOptions, address: str,
                              port: int, ip_version: Literal[4, 6] | None, server_name: str,
                              deadline: float) -> CertInfo | None:
    """Repeat the dialogue without verification, only to read the refused certificate."""
    clock = PhaseClock()
    left = deadline - time.monotonic()
    if left <= 0.05:
        return None
    try:
        sock, _ = await open_tcp(address, port, ip_version or 4, min(left, opts.phase_timeout_s))
        if sock is None:
            return None
        session = _Session(protocol, mode, opts, clock, deadline, server_name, verify=False)
        session.stop_after_tls = True
        await session.run(sock, time.perf_counter_ns())
        return session.tls.cert
    except (_Abort, OSError, TimeoutError, ssl.SSLError):
        return None


async def smtp_probe(target: Target | str, opts: MailOptions = MailOptions(), *,
                     origin: Origin | None = None, family: Literal[4, 6] | None = None,
                     name: str | None = None) -> SmtpRecord:
    """One SMTP handshake (25/587 STARTTLS, 465 implicit TLS); never sends mail."""
    record = await _probe("smtp", target, opts, origin, family, name)
    assert isinstance(record, SmtpRecord)
    return record


async def imap_probe(target: Target | str, opts: MailOptions = MailOptions(), *,
                     origin: Origin | None = None, family: Literal[4, 6] | None = None,
                     name: str | None = None) -> ImapRecord:
    """One IMAP handshake (143 STARTTLS, 993 implicit TLS); logs in only with credentials."""
    record = await _probe("imap", target, opts, origin, family, name)
    assert isinstance(record, ImapRecord)
    return record


async def mail_many(protocol: Protocol, targets: list[Target | str], opts: MailOptions, *,
                    origin: Origin | None = None, family: Literal[4, 6] | None = None,
                    concurrency: int = 8) -> list[SmtpRecord | ImapRecord]:
    return await bounded_gather(
        targets, lambda t: _probe(protocol, t, opts, origin, family, None), concurrency)
