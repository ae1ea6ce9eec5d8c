"""Run the collector: uvicorn serving :func:`~netvantage.collector.app.create_app`.

:func:`serve` is the foreground server of ``netvantage collector serve``: it
binds the socket itself (so that ``--port 0`` can say which port it got),
serves until SIGTERM or SIGINT, then stops accepting, lets the batches in
flight finish (bounded by ``graceful_s``), closes the store and returns.

:class:`BackgroundCollector` runs the same server in a thread, for tests,
the demo and benchmarks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from .app import DEFAULT_MAX_BODY_BYTES, create_app
from .store import Store, StoreError, Synchronous

__all__ = ["BackgroundCollector", "app_from_environment", "bind", "serve"]

log = logging.getLogger("netvantage.collector")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on the first address ``host`` resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StoreError(f"cannot resolve --host {host!r}: {exc}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(1024)
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
            graceful_s: float, workers: int = 1) -> uvicorn.Config:
    if (tls_cert is None) != (tls_key is None):
        raise StoreError("give both --tls-cert and --tls-key, or neither")
    return uvicorn.Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        lifespan="on" if isinstance(app, str) else "off",
        access_log=False,  # the app logs one line per batch, with its agent and counts
        log_level="warning",
        timeout_graceful_shutdown=int(graceful_s),
        timeout_keep_alive=30,
        server_header=False,
    )


def _log_to_stderr() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


_ENV = "NETVANTAGE_COLLECTOR_WORKER"


def app_from_environment() -> Any:
    """The app of one worker process (``--workers N``), configured by its parent."""
    _log_to_stderr()
    conf = json.loads(os.environ[_ENV])
    store = Store(conf["store"], synchronous=conf["synchronous"])
    return create_app(store, max_body_bytes=conf["max_body_bytes"], close_store=True)


def serve(store_path: str | Path, *, host: str = "127.0.0.1", port: int = 8750,
          tls_cert: Path | None = None, tls_key: Path | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, synchronous: Synchronous = "full",
          graceful_s: float = 30.0, workers: int = 1,
          announce: Callable[[str], None] | None = None) -> None:
    """Serve in the foreground until SIGTERM or SIGINT; returns after a graceful stop.

    With ``workers`` > 1, that many processes share the listening socket, each
    with its own connection to the store (SQLite serialises their writes):
    decoding and validating, pure Python, then uses more than one CPU.
    """
    _log_to_stderr()
    store = Store(store_path, synchronous=synchronous)
    try:
        if workers > 1:
            os.environ[_ENV] = json.dumps({"store": str(store.path), "synchronous": synchronous,
                                           "max_body_bytes": max_body_bytes})
            app: Any = f"{__name__}:app_from_environment"
        else:
            app = create_app(store, max_body_bytes=max_body_bytes)
        config = _config(app, tls_cert, tls_key, graceful_s, workers)
        sock = bind(host, port)
    except BaseException:
        store.close()
        raise
    if workers > 1:
        try:
            (announce or print)(f"netvantage collector listening on "
                                f"{_url(sock, tls_cert is not None)} (store {store.path}, "
                                f"{len(store.agents())} agent(s), {workers} workers)")
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
                            f" (store {store.path}, {len(store.agents())} agent(s))")
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

    def __init__(self, store: Store, *, host: str = "127.0.0.1", port: int = 0,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, start_timeout_s: float = 10.0,
                 stop_timeout_s: float = 10.0) -> None:
        self.store = store
        self._sock = bind(host, port)
        self.url = _url(self._sock, False)
        self.port = int(self._sock.getsockname()[1])
        config = _config(create_app(store, max_body_bytes=max_body_bytes), None, None,
                         stop_timeout_s)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="netvantage-collector", daemon=True)
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s

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
