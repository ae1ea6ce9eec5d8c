"""Run the collector: uvicorn serving :func:`~netvantage.collector.app.create_app`.

:func:`serve` is the foreground server of ``netvantage collector serve``: it
binds the socket itself (so that ``--port 0`` can say which port it got),
serves until SIGTERM or SIGINT, then stops accepting, lets the batches in
flight finish (bounded by ``graceful_s``), closes the store and returns.

:class:`BackgroundCollector` runs the same server in a thread, for tests,
the demo and benchmarks.

Connection limits (:class:`Limits`, the ``collector serve`` options of the
same names) bound what a crowd of clients can hold:

* ``max_connections`` (1000): open connections at most, per process.  One
  more is answered ``503`` (``Retry-After``) and closed at once, so idle or
  slow clients cannot exhaust the file descriptors; uvicorn's own
  ``limit_concurrency`` is set to match.  :func:`serve` raises the process's
  file-descriptor limit to fit, or lowers ``max_connections`` with a warning.
* ``header_timeout_s`` (10 s): a request's line and headers must be complete
  this long after the connection opened, or after the first byte of a
  keep-alive connection's next request (``408``, then closed): a client
  trickling its headers ("slow loris") is closed.
* ``body_timeout_s`` (60 s): the whole body must arrive this long after its
  headers (``408`` and closed): uvicorn has no read timeout of its own, and
  the app reads the body as it streams in.
* ``keep_alive_s`` (30 s): an idle keep-alive connection is closed after it.
* ``max_header_bytes`` (16 KiB): bytes a request's line and headers may take
  while incomplete (more is ``400``, then closed).
* ``backlog`` (1024): connections the kernel queues before they are accepted.

Every accepted connection has ``TCP_NODELAY`` set: without it a keep-alive
response waits for the client's delayed ACK (about 40 ms on Linux).

Messages about dropped connections (timeouts, resets, refusals) carry no
traceback and, like every other repeated message of the server's loggers, are
limited to :data:`LOG_BURST` of the same kind per :data:`LOG_WINDOW_S`; the
next message says how many were left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import json
import logging
import os
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from .app import DEFAULT_MAX_BODY_BYTES, create_app
from .store import RecordStore, StoreError, Synchronous, open_store

__all__ = ["LOG_BURST", "LOG_WINDOW_S", "BackgroundCollector", "Limits", "app_from_environment",
           "bind", "serve"]

log = logging.getLogger("netvantage.collector")

#: Messages of one kind (one logger, one format string) let through per window.
LOG_BURST = 20
LOG_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """What one server process lets its clients hold (see the module's docstring)."""

    max_connections: int = 1000
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: int = 30
    max_header_bytes: int = 16 * 1024
    backlog: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_connections", "header_timeout_s", "body_timeout_s", "keep_alive_s",
                     "max_header_bytes", "backlog"):
            if not getattr(self, name) > 0:
                raise StoreError(f"{name} must be positive, not {getattr(self, name)!r}")


def fit_descriptors(limits: Limits, reserve: int = 256) -> Limits:
    """``limits`` with ``max_connections`` that fits the file-descriptor limit.

    Raises the soft ``RLIMIT_NOFILE`` up to the hard one if it must (each
    connection is one descriptor; ``reserve`` are kept for the store, threads
    and logs); if even the hard limit is too low, lowers ``max_connections``
    and warns.
    """
    needed = limits.max_connections + reserve
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        fitted = max(1, soft - reserve)
        log.warning("max_connections %d does not fit the limit of %d open files: serving at "
                    "most %d connections (raise it with 'ulimit -n')", limits.max_connections,
                    soft, fitted)
        return dataclasses.replace(limits, max_connections=fitted)
    return limits


# --------------------------------------------------------------------------- logging

#: Errors that mean "the client went away or could not be served": a line, no traceback.
_DROPPED = (ConnectionError, TimeoutError)
_DROPPED_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNRESET,
                   errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT}


class _Quiet(logging.Filter):
    """Drops tracebacks of dropped connections and limits repeats of one message."""

    def __init__(self) -> None:
        super().__init__("netvantage-quiet")
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(getattr(record, "netvantage_kind", record.msg))[:200])
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (isinstance(exc, _DROPPED) or (
                isinstance(exc, OSError) and exc.errno in _DROPPED_ERRNOS)):
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        now = time.monotonic()
        with self._lock:
            start, shown, hidden = self._seen.get(key, (now, 0, 0))
            if now - start >= LOG_WINDOW_S:
                start, shown = now, 0
            if shown >= LOG_BURST:
                self._seen[key] = (start, shown, hidden + 1)
                return False
            self._seen[key] = (start, shown + 1, 0)
            if len(self._seen) > 10_000:  # many distinct messages: forget the oldest half
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:5_000]:
                    del self._seen[old]
        if hidden:
            record.msg = f"{record.getMessage()} ({hidden} more like it left out)"
            record.args = None
        return True


_quiet = _Quiet()


def _quiet_logs() -> None:
    """Put the filter on every logger the server writes to (idempotent)."""
    for name in ("netvantage.collector", "uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        if _quiet not in logger.filters:
            logger.addFilter(_quiet)


# --------------------------------------------------------------------------- connections

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
         b"retry-after: 5\r\nconnection: close\r\ncontent-length: 62\r\n\r\n"
         b'{"error":"too many connections: try again later","problems":[]}')
_SLOW = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
         b"connection: close\r\ncontent-length: %d\r\n\r\n%s")
_BAD_HEAD = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
             b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


class _Config(uvicorn.Config):
    """uvicorn's configuration plus our :class:`Limits` (pickled to worker processes too)."""

    def __init__(self, app: Any, limits: Limits, **kwargs: Any) -> None:
        self.limits = limits
        super().__init__(
            app, http=_Protocol,
            limit_concurrency=limits.max_connections + 1,  # uvicorn counts the asking one too
            timeout_keep_alive=limits.keep_alive_s,
            ws="none",  # no WebSocket route: an upgrade request is an ordinary request
            backlog=limits.backlog, **kwargs)


class _Protocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 connection (httptools) with TCP_NODELAY, a connection cap,
    read deadlines and a cap on incomplete request headers.

    The parser calls back as a request goes by (``on_message_begin``,
    ``on_headers_complete``, ``on_message_complete``); the deadline follows them:
    armed while a request's line and headers are incomplete (from the
    connection's start, or from the first byte of a keep-alive connection's next
    request) and while its body is incomplete (from the end of the headers);
    none while the app answers (``_answering``: requests complete and not yet
    answered) or while a keep-alive connection is idle (uvicorn's keep-alive
    timeout).

    llhttp does not buffer a request's head (it hands over each piece as it is
    parsed, and httptools joins a header's pieces), so nothing bounds it but
    :attr:`Limits.max_header_bytes`: the bytes received while the head is
    incomplete are counted, and past the limit the request is answered ``400``
    and the connection closed.
    """

    def __init__(self, config: uvicorn.Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.limits if isinstance(config, _Config) else Limits()
        self._deadline: asyncio.TimerHandle | None = None
        self._phase = ""
        self._refused = False
        self._in_message = False  # between on_message_begin and on_message_complete
        self._head_done = False  # the current message's headers are complete
        self._head_bytes = 0  # received while the current head was incomplete
        self._answering = 0  # requests complete and not yet answered

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            log.warning("connection refused (503): %d connections open, the limit",
                        len(self.connections))
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._arm("headers", self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        reading_head = not (self._in_message and self._head_done)
        if reading_head and not self._answering:
            if self._deadline is None:
                self._arm("headers", self.limits.header_timeout_s)  # a keep-alive's next request
            self._head_bytes += len(data)
        super().data_received(data)
        if (self._head_bytes > self.limits.max_header_bytes and not self._answering
                and not (self._in_message and self._head_done)
                and not self.transport.is_closing()):
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True
        self._head_done = False

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._head_bytes = 0
        super().on_headers_complete()
        if not self._answering:
            self._arm("body", self.limits.body_timeout_s)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._disarm()
        # A request answered before its body ended (a 401 or 413 answers without
        # reading it) waits for no answer: only the others are counted.
        if self.cycle is not None and not self.cycle.response_complete:
            self._answering += 1
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._answering = max(0, self._answering - 1)
        self._disarm()
        if not self._answering and self._in_message:
            # A pipelined request already begun: its deadline runs from now.
            if self._head_done:
                self._arm("body", self.limits.body_timeout_s)
            else:
                self._arm("headers", self.limits.header_timeout_s)
        super().on_response_complete()

    def _refuse_head(self) -> None:
        limit = self.limits.max_header_bytes
        log.warning("closed a connection from %s: request line and headers over %d bytes",
                    _peer(self.client), limit,
                    extra={"netvantage_kind": "request head too large"})
        self._disarm()
        body = json.dumps({"error": f"request line and headers over {limit} bytes: closed",
                           "problems": []}).encode()
        self.transport.write(_BAD_HEAD % (len(body), body))
        self.transport.close()

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._phase = ""

    def _expired(self) -> None:
        phase, self._deadline, self._phase = self._phase, None, ""
        if self.transport is None or self.transport.is_closing():
            return
        limit = (self.limits.header_timeout_s if phase == "headers"
                 else self.limits.body_timeout_s)
        what = f"no complete request {phase} in {limit:g} s"
        log.warning("closed a connection from %s: %s", _peer(self.client), what,
                    extra={"netvantage_kind": f"read timeout ({phase})"})
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            body = json.dumps({"error": f"{what}: closed", "problems": []}).encode()
            self.transport.write(_SLOW % (len(body), body))
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]} port {client[1]}" if client else "an unknown peer"


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on the first address ``host`` resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StoreError(f"cannot resolve --host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    # The protocol number matters: asyncio sets TCP_NODELAY on the connections
    # it accepts only from a socket made with IPPROTO_TCP (not 0).
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise StoreError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def _config(app: Any, tls_cert: Path | None, tls_key: Path | None,
            graceful_s: float, workers: int = 1, limits: Limits | None = None) -> uvicorn.Config:
    if (tls_cert is None) != (tls_key is None):
        raise StoreError("give both --tls-cert and --tls-key, or neither")
    config = _Config(
        app,
        limits or Limits(),
        factory=isinstance(app, str),
        workers=workers,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        lifespan="on" if isinstance(app, str) else "off",
        access_log=False,  # the app logs one line per batch, with its agent and counts
        log_level="warning",
        timeout_graceful_shutdown=int(graceful_s),
        server_header=False,
    )
    _quiet_logs()
    return config


def _log_to_stderr() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


_ENV = "NETVANTAGE_COLLECTOR_WORKER"

#: Container objects allocated (less those freed) between two young-generation
#: garbage collections in a collector process (CPython's default is 700).
GC_YOUNG_THRESHOLD = 100_000


def tune_gc() -> None:
    """Fewer garbage collections in a collector process.

    A batch of 1,000 records is some 15,000 container objects that live until
    its answer is sent and are then freed by reference counting (records hold
    no cycles).  With CPython's default thresholds the collector ran about 20
    collections per batch, each walking the batch's live objects and promoting
    them, and a full collection every few batches (a sixth of its CPU time in
    a profile).  Objects from start-up (modules, the app) are frozen out of
    every pass.
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, second, third)


def app_from_environment() -> Any:
    """The app of one worker process (``--workers N``), configured by its parent."""
    _log_to_stderr()
    _quiet_logs()
    conf = json.loads(os.environ[_ENV])
    store = open_store(conf["store"], synchronous=conf["synchronous"])
    app = create_app(store, max_body_bytes=conf["max_body_bytes"], close_store=True)
    tune_gc()
    return app


def serve(store_path: str | Path, *, host: str = "127.0.0.1", port: int = 8750,
          tls_cert: Path | None = None, tls_key: Path | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, synchronous: Synchronous = "full",
          graceful_s: float = 30.0, workers: int = 1, limits: Limits | None = None,
          announce: Callable[[str], None] | None = None) -> None:
    """Serve in the foreground until SIGTERM or SIGINT; returns after a graceful stop.

    With ``workers`` > 1, that many processes share the listening socket, each
    with its own connection to the store (SQLite serialises their writes):
    decoding and validating, pure Python, then uses more than one CPU.
    """
    _log_to_stderr()
    limits = fit_descriptors(limits or Limits())
    store = open_store(store_path, synchronous=synchronous)
    try:
        if workers > 1:
            os.environ[_ENV] = json.dumps({"store": str(store_path), "synchronous": synchronous,
                                           "max_body_bytes": max_body_bytes})
            app: Any = f"{__name__}:app_from_environment"
        else:
            app = create_app(store, max_body_bytes=max_body_bytes)
        config = _config(app, tls_cert, tls_key, graceful_s, workers, limits)
        sock = bind(host, port, limits.backlog)
    except BaseException:
        store.close()
        raise
    if workers > 1:
        # /metrics adds up every worker's counts (collector/metrics.py): the workers'
        # client library keeps them in files of this directory, removed at the end.
        from .metrics import shared_metrics_dir

        try:
            with shared_metrics_dir():
                (announce or print)(f"netvantage collector listening on "
                                    f"{_url(sock, tls_cert is not None)} (store "
                                    f"{store.location}, {len(store.agents())} agent(s), "
                                    f"{workers} workers)")
                # The supervisor turns SIGTERM/SIGINT into a graceful stop of every
                # worker (each finishes its batches in flight and closes the store).
                Multiprocess(config, sockets=[sock]).run()
        finally:
            sock.close()
            store.close()
        return
    server = uvicorn.Server(config)
    got: list[int] = []

    def note(sig: int, frame: FrameType | None) -> None:
        got.append(sig)

    # uvicorn catches SIGTERM/SIGINT while it serves and, once stopped, raises
    # the signal again under the handler found at start: with these handlers
    # that second delivery only notes it, so the store is closed and the
    # process exits 0 after a requested stop.
    previous = {s: signal.signal(s, note) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        (announce or print)(f"netvantage collector listening on {_url(sock, tls_cert is not None)}"
                            f" (store {store.location}, {len(store.agents())} agent(s))")
        tune_gc()
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
        store.close()
    if got:
        log.info("stopped by signal %d; store closed", got[0])
    if not server.started:
        raise StoreError("the server did not start (see the messages above)")


class BackgroundCollector:
    """The collector in a daemon thread on an ephemeral loopback port; a context manager.

    >>> with BackgroundCollector(store) as c:   # doctest: +SKIP
    ...     c.url   # 'http://127.0.0.1:40123'
    """

    def __init__(self, store: RecordStore, *, host: str = "127.0.0.1", port: int = 0,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, start_timeout_s: float = 10.0,
                 stop_timeout_s: float = 10.0, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits()
        self._sock = bind(host, port, self.limits.backlog)
        self.url = _url(self._sock, False)
        self.port = int(self._sock.getsockname()[1])
        config = _config(create_app(store, max_body_bytes=max_body_bytes), None, None,
                         stop_timeout_s, limits=self.limits)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="netvantage-collector", daemon=True)
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s

    def connection_sockets(self) -> list[socket.socket]:
        """The server's side of every open client connection (for tests and benchmarks)."""
        found: list[socket.socket] = []
        for conn in list(self._server.server_state.connections):
            transport = getattr(conn, "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                found.append(sock)
        return found

    def start(self) -> BackgroundCollector:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise StoreError("the collector did not start in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(self._stop_timeout_s + 5)
        self._sock.close()

    def __enter__(self) -> BackgroundCollector:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
