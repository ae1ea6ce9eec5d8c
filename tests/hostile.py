"""Small hostile mail servers for the probe's tests, one behaviour each, on loopback only.

Each server is an asyncio server in its own thread and event loop, so that the
probe under test (``asyncio.run`` in the test's thread) and the server never
share a loop: a server that stalls cannot stall the client by accident, and the
client's timeouts are measured against a server that really runs on its own.

A behaviour is an ``async def handler(conn: Conn)``; :class:`ServerThread`
runs it for every connection, records what the client sent
(:attr:`ServerThread.lines`) and any unexpected exception in a handler
(:attr:`ServerThread.errors`, which tests assert is empty), and on
:meth:`ServerThread.stop` closes the listener and cancels every handler still
running.  Every loop in a handler is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = [
    "HANDLER_LIMIT_S",
    "Conn",
    "Handler",
    "ImapScript",
    "ServerThread",
    "SmtpScript",
    "multiline",
    "self_signed",
    "serve",
    "server_context",
]

Handler = Callable[["Conn"], Awaitable[None]]

# What a handler may meet when the client goes away; anything else is a test bug.
_GONE = (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError, EOFError)
#: No handler waits longer than this for anything.
HANDLER_LIMIT_S = 15.0


class Conn:
    """One accepted connection, with the few moves a hostile server makes."""

    def __init__(self, server: ServerThread, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        sock = writer.get_extra_info("socket")
        # Every write its own TCP segment: needed to split replies at will.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_bytewise(self, data: bytes, pause_s: float = 0.002) -> None:
        """One byte per write (and per TCP segment), with a pause between them.

        No pause after the last byte: a STARTTLS reply sent this way must be
        followed at once by :meth:`starttls`.
        """
        for i in range(len(data)):
            if i:
                await asyncio.sleep(pause_s)
            self.writer.write(data[i:i + 1])
            await self.writer.drain()

    async def line(self, timeout_s: float = HANDLER_LIMIT_S) -> bytes:
        """The client's next line (CRLF stripped); ``EOFError`` when it has gone."""
        data = await asyncio.wait_for(self.reader.readline(), timeout_s)
        if not data.endswith(b"\n"):
            raise EOFError("client closed the connection")
        data = data.rstrip(b"\r\n")
        self.server.lines.append(data)
        return data

    async def until_closed(self, limit_s: float = HANDLER_LIMIT_S) -> None:
        """Read and drop whatever the client sends until it closes (or ``limit_s`` passes)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + limit_s
        while (left := end - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except TimeoutError:
                return
            if not data:
                return

    async def starttls(self, ctx: ssl.SSLContext) -> None:
        """Upgrade to TLS as the server.

        Call it right after the reply that allows it, without awaiting anything
        that could yield in between: asyncio hands the TLS layer only what it
        has not yet put into the stream's buffer, so a ClientHello that lands
        there first would be lost (and the handshake would stall).  Hence no
        ``wait_for`` here (it would yield once); the handshake has its own limit.
        """
        await self.writer.start_tls(ctx, ssl_handshake_timeout=HANDLER_LIMIT_S)

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0) instead of a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class ServerThread:
    """An asyncio TCP server on a loopback address and an ephemeral port, in its own thread."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        if host not in ("127.0.0.1", "::1"):
            raise ValueError("hostile servers listen on loopback only")
        self.handler = handler
        self.host = host
        self.port = 0
        self.connections = 0
        self.lines: list[bytes] = []
        self.errors: list[BaseException] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name=f"hostile-{handler}",
                                        daemon=True)

    @property
    def target(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("hostile server did not start")
        if self.errors:
            raise RuntimeError(f"hostile server failed to start: {self.errors[0]!r}")
        return self

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended already
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("hostile server thread did not stop")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the test
            self.errors.append(exc)
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._connected, self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=5)
            await asyncio.wait_for(server.wait_closed(), 5)

    async def _connected(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await asyncio.wait_for(self.handler(Conn(self, reader, writer)),
                                   HANDLER_LIMIT_S + 5)
        except asyncio.CancelledError:
            pass  # stop() while the behaviour was still going
        except _GONE:
            pass  # the client hung up, as a client facing a hostile server should
        except Exception as exc:
            self.errors.append(exc)
        finally:
            writer.transport.abort()
            self._tasks.discard(task)


@contextlib.contextmanager
def serve(handler: Handler, host: str = "127.0.0.1") -> Iterator[ServerThread]:
    """Run ``handler`` for every connection while the block runs; always stopped."""
    server = ServerThread(handler, host)
    try:
        yield server.start()
    finally:
        server.stop()


# --------------------------------------------------------------------------- TLS


def server_context(chain: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain, key)
    return ctx


def self_signed(directory: Path, name: str, *, ips: Sequence[str] = ()) -> tuple[Path, Path]:
    """A self-signed EC certificate (its own issuer, CA:FALSE) and its key: ``(cert, key)``."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(name)]
    alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# --------------------------------------------------------------------------- SMTP


def multiline(code: int, lines: Sequence[str]) -> bytes:
    """An SMTP reply: ``code-`` on every line but the last, ``code `` on the last."""
    out = [f"{code}-{text}" for text in lines[:-1]] + [f"{code} {lines[-1]}"]
    return "".join(f"{line}\r\n" for line in out).encode()


@dataclass
class SmtpScript:
    """A well-behaved SMTP server, with knobs for the ways a real one can surprise.

    It answers EHLO, STARTTLS (upgrading with ``tls`` if given, or stalling
    if not) and QUIT; anything else gets ``502``.  ``bytewise`` sends every
    reply one byte per TCP segment.  ``after_starttls`` is written right
    after the STARTTLS reply, before the handshake (command injection):
    in the same write, or ``inject_delay_s`` later as a separate segment.
    """

    greeting: bytes = b"220 mail.hostile.test ESMTP\r\n"
    ehlo: Sequence[str] = ("mail.hostile.test", "PIPELINING", "STARTTLS", "8BITMIME")
    ehlo_tls: Sequence[str] = ("mail.hostile.test", "PIPELINING", "AUTH PLAIN", "8BITMIME")
    starttls_reply: bytes = b"220 2.0.0 Ready to start TLS\r\n"
    tls: ssl.SSLContext | None = None
    bytewise: bool = False
    after_starttls: bytes = b""
    inject_delay_s: float | None = None
    commands: list[str] = field(default_factory=list)

    async def reply(self, conn: Conn, data: bytes) -> None:
        if self.bytewise:
            await conn.send_bytewise(data)
        else:
            await conn.send(data)

    async def __call__(self, conn: Conn) -> None:
        await self.reply(conn, self.greeting)
        in_tls = False
        for _ in range(20):
            command = (await conn.line()).decode("ascii", "replace")
            self.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                await self.reply(conn, multiline(250, self.ehlo_tls if in_tls else self.ehlo))
            elif verb == "STARTTLS" and not in_tls:
                if self.after_starttls and self.inject_delay_s is None:
                    await conn.send(self.starttls_reply + self.after_starttls)
                else:
                    await self.reply(conn, self.starttls_reply)
                    if self.after_starttls:
                        await asyncio.sleep(self.inject_delay_s or 0)
                        await conn.send(self.after_starttls)
                if not self.starttls_reply.startswith(b"220"):
                    continue
                if self.tls is None:
                    await conn.until_closed()
                    return
                await conn.starttls(self.tls)
                in_tls = True
            elif verb == "QUIT":
                await self.reply(conn, b"221 2.0.0 Bye\r\n")
                return
            else:
                await conn.send(b"502 5.5.2 Command not recognized\r\n")


# --------------------------------------------------------------------------- IMAP


@dataclass
class ImapScript:
    """A well-behaved IMAP server (greeting, CAPABILITY, STARTTLS, LOGOUT) with knobs.

    ``starttls_answer`` is the tagged answer's status (``OK``, ``NO``, ``BAD``);
    ``capability_extra`` is sent before the untagged CAPABILITY (e.g. a literal
    that is too big); ``untagged_flood`` lines of untagged data follow the
    first CAPABILITY command instead of an answer.
    """

    greeting: bytes = b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hostile ready\r\n"
    caps: str = "IMAP4rev1 STARTTLS LOGINDISABLED"
    caps_tls: str = "IMAP4rev1 AUTH=PLAIN"
    starttls_answer: str = "OK"
    tls: ssl.SSLContext | None = None
    capability_extra: bytes = b""
    untagged_flood: int = 0
    commands: list[str] = field(default_factory=list)

    async def __call__(self, conn: Conn) -> None:
        await conn.send(self.greeting)
        in_tls = False
        for _ in range(20):
            command = (await conn.line()).decode("ascii", "replace")
            self.commands.append(command)
            tag, _, rest = command.partition(" ")
            verb = rest.split(" ", 1)[0].upper()
            if verb == "CAPABILITY":
                if self.untagged_flood:
                    line = b"* OK [ALERT] still here, more to come\r\n"
                    for _ in range(self.untagged_flood):
                        conn.writer.write(line * 64)
                        await conn.writer.drain()
                    await conn.until_closed()
                    return
                caps = self.caps_tls if in_tls else self.caps
                await conn.send(self.capability_extra
                                + f"* CAPABILITY {caps}\r\n{tag} OK done\r\n".encode())
            elif verb == "STARTTLS" and not in_tls:
                await conn.send(f"{tag} {self.starttls_answer} Begin TLS now\r\n".encode())
                if self.starttls_answer != "OK":
                    continue
                if self.tls is None:
                    await conn.until_closed()
                    return
                await conn.starttls(self.tls)
                in_tls = True
            elif verb == "LOGOUT":
                await conn.send(f"* BYE logging out\r\n{tag} OK LOGOUT done\r\n".encode())
                return
            else:
                await conn.send(f"{tag} BAD unknown command\r\n".encode())
