"""The collector as a server under hostile clients, and the files it and the agent create.

Real sockets on loopback against a real uvicorn: slow-loris crowds, slow
bodies, more connections than allowed, keep-alive latency (TCP_NODELAY); the
modes of the store's and the spool's files; CSV cells a spreadsheet would run.
"""

from __future__ import annotations

import csv
import http.client
import io
import logging
import os
import select
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from conftest import NETVANTAGE
from netvantage.agent.spool import Spool
from netvantage.collector import serve as serve_module
from netvantage.collector.export import csv_cell, export_csv
from netvantage.collector.serve import LOG_BURST, BackgroundCollector, Limits, bind
from netvantage.collector.store import Store
from netvantage.results import PingBody, PingRecord, encode_record, new_id
from waiting import wait_until

HEADER_S = 1.0
BODY_S = 1.0


def ping(agent: str, **fields: str) -> PingRecord:
    body = PingBody.from_samples([10.0, None, 12.5], ip_version=4, socket="raw",
                                 payload_bytes=56, interval_s=1.0, timeout_s=2.0,
                                 dont_fragment=False)
    record = PingRecord(id=new_id(), agent=agent, region="ZM-LUN", target="ams.example",
                        address="192.0.2.7", started_at=datetime.now(UTC) - timedelta(hours=1),
                        duration_ms=2012.5, status="ok", body=body)
    return msgspec.structs.replace(record, **fields)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "c.db")
    yield s
    s.close()


@pytest.fixture
def collector(store: Store) -> Iterator[BackgroundCollector]:
    limits = Limits(header_timeout_s=HEADER_S, body_timeout_s=BODY_S, keep_alive_s=30,
                    max_connections=400)
    with BackgroundCollector(store, limits=limits) as c:
        yield c


def health(port: int, timeout_s: float = 5.0) -> tuple[int, float]:
    """(status, seconds) of one health check on a new connection."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", "/v1/health")
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - t0
    finally:
        conn.close()


def read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes (or the deadline passes: then b"?")."""
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return got + b"?"
        ready, _, _ = select.select([sock], [], [], left)
        if ready:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return got
            if not chunk:
                return got
            got += chunk


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


# --------------------------------------------------------------------------- defect 5


def test_slow_loris_crowd_is_closed_within_the_header_timeout_while_health_answers(collector):
    handler = Lines()
    logger = logging.getLogger("netvantage.collector")
    logger.addHandler(handler)
    crowd: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", collector.port), timeout=5)
            s.sendall(b"POST /v1/records HTTP/1.1\r\nHost: collector\r\n")  # never finished
            crowd.append(s)
        # While the crowd holds its connections the health check still answers at once.
        status, took = health(collector.port)
        assert status == 200 and took < 0.5, took
        assert len(collector.connection_sockets()) >= 200
        # A trickle does not extend the deadline: it runs from the connection's start.
        for s in crowd[:50]:
            s.sendall(b"X-Trickle: 1\r\n")
        answers = [read_until_closed(s, started + HEADER_S + 3.0) for s in crowd]
        closed_after = time.monotonic() - started
    finally:
        logger.removeHandler(handler)
        for s in crowd:
            s.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
    assert HEADER_S * 0.9 <= closed_after <= HEADER_S + 3.0
    assert health(collector.port)[0] == 200
    wait_until(lambda: not collector.connection_sockets(), 5, "every connection closed")
    # 200 drops, at most one burst of lines about them, none with a traceback.
    dropped = [line for line in handler.lines if "closed a connection" in line]
    assert len(dropped) <= LOG_BURST
    assert not any("Traceback" in line for line in handler.lines)


def test_a_body_that_trickles_is_cut_at_the_body_timeout_and_nothing_is_stored(collector,
                                                                                store):
    token = store.add_agent("lusaka-1")
    line = encode_record(ping("lusaka-1")) + b"\n"
    s = socket.create_connection(("127.0.0.1", collector.port), timeout=5)
    try:
        s.sendall(b"POST /v1/records HTTP/1.1\r\nHost: collector\r\n"
                  b"Authorization: Bearer " + token.encode() + b"\r\n"
                  b"Content-Type: application/x-ndjson\r\n"
                  b"Content-Length: " + str(len(line)).encode() + b"\r\n\r\n")
        started = time.monotonic()
        sent = 0
        while sent < len(line) - 1 and time.monotonic() - started < BODY_S + 2:
            try:
                s.sendall(line[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            ready, _, _ = select.select([s], [], [], 0.2)
            if ready:
                break
        answer = read_until_closed(s, started + BODY_S + 3)
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"no complete request body in 1 s" in answer
    assert time.monotonic() - started < BODY_S + 3
    assert store.count() == 0


def test_an_idle_keep_alive_connection_is_not_cut_by_the_header_timeout(collector):
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=5)
    try:
        for _ in range(2):
            conn.request("GET", "/v1/health")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b'{"ok":true}')
            # Idle longer than the header timeout: the idle time is what is under test.
            time.sleep(HEADER_S + 0.5)
        assert conn.sock is not None  # the same connection served both
    finally:
        conn.close()


def test_connections_over_the_limit_are_answered_503_and_closed(store):
    with BackgroundCollector(store, limits=Limits(max_connections=20)) as c:
        idle = [socket.create_connection(("127.0.0.1", c.port), timeout=5) for _ in range(20)]
        try:
            wait_until(lambda: len(c.connection_sockets()) >= 20, 5,
                       "the 20 connections accepted", poll_s=0.02)
            extra = socket.create_connection(("127.0.0.1", c.port), timeout=5)
            answer = read_until_closed(extra, time.monotonic() + 3)
            extra.close()
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"retry-after: 5" in answer
            assert b"too many connections" in answer
            assert len(c.connection_sockets()) == 20
        finally:
            for s in idle:
                s.close()
        wait_until(lambda: not c.connection_sockets(), 5, "the idle connections closed",
                   poll_s=0.02)
        assert health(c.port)[0] == 200


def test_incomplete_headers_over_the_limit_are_refused(store):
    with BackgroundCollector(store, limits=Limits(max_header_bytes=4096)) as c:
        s = socket.create_connection(("127.0.0.1", c.port), timeout=5)
        try:
            # Incomplete headers past the limit: the server stops reading them.
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: c\r\nX-Big: " + b"a" * 8192)
            answer = read_until_closed(s, time.monotonic() + 3)
        finally:
            s.close()
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]


def test_a_head_sent_in_pieces_past_the_limit_is_refused_before_its_deadline(store):
    # The parser keeps no head buffer of its own: the server counts what it read.
    limits = Limits(max_header_bytes=4096, header_timeout_s=30)
    with BackgroundCollector(store, limits=limits) as c:
        s = socket.create_connection(("127.0.0.1", c.port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: c\r\nX-Big: ")
            wait_until(lambda: c.connection_sockets(), 5, "the connection accepted")
            t0 = time.monotonic()
            answer = b""
            for _ in range(16):  # 8 KiB of one header value, 512 bytes at a time
                try:
                    s.sendall(b"a" * 512)
                except (BrokenPipeError, ConnectionResetError):
                    break
                if select.select([s], [], [], 0.01)[0]:
                    break
            answer = read_until_closed(s, time.monotonic() + 3)
        finally:
            s.close()
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
        assert b"request line and headers over 4096 bytes" in answer
        assert time.monotonic() - t0 < 5
        assert health(c.port)[0] == 200


def test_a_keep_alive_request_after_an_early_refusal_still_has_a_header_deadline(collector):
    # A 401 answers before the body is read; the body that follows ends that request,
    # and the next request on the connection gets the header deadline as any other.
    s = socket.create_connection(("127.0.0.1", collector.port), timeout=5)
    try:
        s.sendall(b"POST /v1/records HTTP/1.1\r\nHost: c\r\nAuthorization: Bearer nope\r\n"
                  b"Content-Type: application/x-ndjson\r\nContent-Length: 3\r\n\r\n")
        first = b""
        while b"unknown token" not in first:
            ready, _, _ = select.select([s], [], [], 5)
            assert ready, first
            first += s.recv(65536)
        assert first.startswith(b"HTTP/1.1 401 "), first[:100]
        s.sendall(b"{}\n")
        s.sendall(b"GET /v1/health HTTP/1.1\r\nHost: c\r\n")  # never finished
        started = time.monotonic()
        answer = read_until_closed(s, started + HEADER_S + 3)
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"no complete request headers in 1 s" in answer
    assert time.monotonic() - started < HEADER_S + 3


def test_log_filter_strips_tracebacks_of_dropped_connections_and_counts_what_it_left_out():
    quiet = serve_module._Quiet()
    logger = logging.getLogger("netvantage.test-quiet")
    logger.propagate = False
    handler = Lines()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.addFilter(quiet)
    try:
        for _ in range(LOG_BURST + 30):
            try:
                raise ConnectionResetError(104, "Connection reset by peer")
            except ConnectionResetError:
                logger.exception("lost a client")
        assert len(handler.lines) == LOG_BURST
        assert handler.lines[0] == ("lost a client: ConnectionResetError: [Errno 104] "
                                    "Connection reset by peer")
        try:
            raise ValueError("a bug")
        except ValueError:
            logger.exception("something else")
        assert "Traceback" in handler.lines[-1]  # a real error keeps its traceback
        # The next window lets messages through again and says how many were left out.
        key = ("netvantage.test-quiet", "lost a client")
        start, shown, hidden = quiet._seen[key]
        quiet._seen[key] = (start - serve_module.LOG_WINDOW_S, shown, hidden)
        logger.warning("lost a client")
        assert handler.lines[-1] == "lost a client (30 more like it left out)"
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(quiet)


def test_serve_options_change_the_limits(tmp_path):
    db = tmp_path / "c.db"
    Store(db).close()
    proc = subprocess.Popen([NETVANTAGE, "collector", "serve", "--store", str(db), "--port", "0",
                             "--header-timeout", "0.5", "--max-connections", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "collector serve printed nothing in 30 s"
        url = proc.stdout.readline().split()[4]
        port = int(url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        t0 = time.monotonic()
        answer = read_until_closed(s, t0 + 5)
        s.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"in 0.5 s" in answer
        assert time.monotonic() - t0 < 3
        crowd = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
        answers = [read_until_closed(s, time.monotonic() + 0.3) for s in crowd]
        for s in crowd:
            s.close()
        assert sum(a.startswith(b"HTTP/1.1 503 ") for a in answers) >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


# --------------------------------------------------------------------------- defect 6


def test_listening_socket_is_tcp_so_accepted_connections_get_tcp_nodelay(collector):
    listener = bind("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
    finally:
        listener.close()
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=5)
    try:
        for _ in range(20):
            conn.request("GET", "/v1/health")
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        sockets = collector.connection_sockets()
        assert len(sockets) == 1
        assert sockets[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        conn.close()


# --------------------------------------------------------------------------- defect 7


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_spool_and_their_logs_are_created_private(tmp_path):
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "c.db")
        store.add_agent("lusaka-1")
        spool = Spool(tmp_path / "spool.db")
        spool.put(ping("lusaka-1"))
        try:
            for name in ("c.db", "c.db-wal", "c.db-shm", "spool.db", "spool.db-wal",
                         "spool.db-shm"):
                assert _mode(tmp_path / name) == 0o600, name
        finally:
            spool.close()
            store.close()
    finally:
        os.umask(old)


def test_an_existing_store_keeps_its_mode(tmp_path):
    path = tmp_path / "c.db"
    Store(path).close()
    path.chmod(0o640)
    Store(path).close()
    assert _mode(path) == 0o640


# --------------------------------------------------------------------------- defect 12


@pytest.mark.parametrize(("value", "written"), [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+1", "'+1"),
    ("-2+3", "'-2+3"),
    ("-1", "'-1"),               # text that looks like a number is still text
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\\x09=1"),
    ("\r=1", "'\\x0d=1"),
    ("a\x00b\x1b[31mc", "a\\x00b\\x1b[31mc"),
    ("two\nlines", "two\\x0alines"),
    ("del\x7f c1\x85", "del\\x7f c1\\x85"),
    ("ams.example", "ams.example"),
    ("a=b", "a=b"),              # only the first character makes a formula
    ("Zürich", "Zürich"),
    (None, ""),
    (-3, -3),                    # numbers stay numbers, negative ones too
    (-2.5, -2.5),
    (0, 0),
])
def test_csv_cell(value, written):
    assert csv_cell(value) == written


def test_csv_export_neutralises_formulas_and_escapes_control_characters(store):
    store.add_agent("lusaka-1")
    record = ping("lusaka-1", target="=cmd|' /C calc'!A0", region="-2+3", status="error",
                  error="@SUM(1)\x00\x1b[31m")
    store.add_records([record])
    out = io.BytesIO()
    assert export_csv(store, out) == 1
    text = out.getvalue().decode("utf-8")
    assert "\x00" not in text and "\x1b" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["target"] == "'=cmd|' /C calc'!A0"
    assert rows[0]["region"] == "'-2+3"
    assert rows[0]["error"] == "'@SUM(1)\\x00\\x1b[31m"
    assert rows[0]["duration_ms"] == "2012.5"
    assert rows[0]["id"] == record.id
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
