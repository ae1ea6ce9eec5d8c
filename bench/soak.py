"""Soak: many agents against one collector for minutes, with faults injected on a schedule.

One collector (``netvantage collector serve`` on a loopback port, a fresh
store in a temporary directory, one token per agent from ``collector
add-agent``) and ``--agents`` agents (50 by default) measuring loopback only:
``tcp:PORT`` to a listener of this process and ``ping 127.0.0.1`` when raw or
unprivileged ICMP sockets are allowed, every 5 s (the plan's floor), each
with its own spool (with the audit table) in the temporary directory.

``--real`` of them (all by default) are real ``netvantage agent run``
processes; the others are lightweight uploaders in this process, built from
the agent's own classes (``Spool`` with the audit, ``Uploader``, the TCP
probe), one asyncio loop for all of them: on a 2-CPU machine shared with other
work that is the way to keep 50 agents when 50 Python processes are too many.

Faults, at fixed fractions of the run:

* garbage batches from a token holder (an extra agent ``soak-attacker``):
  random bytes, ``[[[...]]]`` 1,000 deep, RTTs of 1e308 and 1e999, RTTs of 0,
  a start in the year 2300 and in 1970, a 16 MiB body of bad lines, no token,
  an unknown token; later three 16 MiB bodies at once;
* a slow-loris crowd (``--loris`` connections, 200 by default) trickling
  header bytes, while the health check is timed;
* collector restarts: SIGTERM (graceful), then SIGKILL with a 15 s outage;
  right after the SIGKILL restart the attacker re-sends, in its own name,
  records still waiting in some agents' spools (ids squatted before their
  owners can upload them);
* a few real agents killed with SIGKILL and restarted on the same spool;
* a conflict: the attacker sends a record, then the same id with another
  content.

At the end the agents are stopped with SIGTERM (they drain their spools),
what is left in a spool is sent with the agent's own ``Uploader``, and the
collector is stopped.  Printed: records measured (the spools' audit tables),
stored (the store), lost = measured - stored, doubled, conflicts, every
fault with the answers it got (HTTP statuses) and whether the collector
survived it, and the collector's peak RSS (VmHWM, polled from /proc, over
every incarnation).  Goals: 0 lost, 0 doubled, peak RSS < 300 MB, every fault
answered with a 4xx or survived.

    .venv/bin/python bench/soak.py [--minutes 10] [--agents 50] [--real 50]
        [--loris 200] [--rss-cap-mb 3000]

To soak the committed code while the working tree is being edited, run it on
an export of HEAD: ``git archive HEAD src | tar -x -C DIR`` and
``PYTHONPATH=DIR/src`` (the collector and agent processes inherit it).

A collector over ``--rss-cap-mb`` is killed (and restarted) to protect the
machine; that counts as a fault not survived.  Every process started is
stopped by its pid and the temporary directory removed, also on Ctrl-C.
Exits 1 when a goal is not met.  Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from netvantage.agent.spool import Spool
from netvantage.agent.upload import Uploader
from netvantage.measure.common import Origin
from netvantage.measure.target import Target
from netvantage.measure.tcp import TcpOptions, tcp_connect
from netvantage.results import new_id

NETVANTAGE = str(Path(sys.executable).with_name("netvantage"))
REGION = "GB-LON"
ATTACKER = "soak-attacker"
MAX_BODY = 16 * 2**20
GOAL_RSS_MB = 300.0
INTERVAL_S = 5


# -- small helpers ----------------------------------------------------------------

def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) of ``pid``; empty when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


def stop_pid(proc: subprocess.Popen[Any] | None, grace_s: float = 20.0) -> int | None:
    """SIGTERM, then SIGKILL after ``grace_s``; returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def request(port: int, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None,
            timeout: float = 60.0) -> tuple[int | str, dict[str, Any]]:
    """One HTTP exchange; a network failure comes back as its exception's name."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read(1 << 20)
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"raw": raw[:200].decode("utf-8", "replace")}
        return resp.status, payload if isinstance(payload, dict) else {"value": payload}
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, {}
    finally:
        conn.close()


def post_batch(port: int, token: str | None, body: bytes,
               timeout: float = 120.0) -> tuple[int | str, dict[str, Any]]:
    headers = {"Content-Type": "application/x-ndjson"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return request(port, "POST", "/v1/records", body, headers, timeout)


def health_ms(port: int, timeout: float = 5.0) -> float | None:
    t = time.perf_counter()
    status, _ = request(port, "GET", "/v1/health", timeout=timeout)
    return (time.perf_counter() - t) * 1000 if status == 200 else None


def add_agent(store: Path, name: str) -> str:
    out = subprocess.run([NETVANTAGE, "collector", "add-agent", name, "--store", str(store)],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"add-agent {name} failed: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def ping_allowed() -> bool:
    if os.geteuid() == 0:
        return True
    low, high = (int(x) for x in
                 Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    return any(low <= g <= high for g in (os.getgid(), *os.getgroups()))


class Listener(threading.Thread):
    """The loopback TCP target: accepts and closes."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.port = int(self.sock.getsockname()[1])

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()


# -- the collector ----------------------------------------------------------------

class Collector:
    """The collector subprocess, restarted on the same port; polls its memory."""

    def __init__(self, db: Path, log: Path, rss_cap_kb: int) -> None:
        self.db, self.log_path, self.rss_cap_kb = db, log, rss_cap_kb
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.peak_kb = 0
        self.incarnations = 0
        self.capped: list[str] = []
        self.unexpected_exits: list[int] = []
        self.expect_down = False
        self._log = log.open("ab")
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, daemon=True)

    def start(self) -> None:
        proc = subprocess.Popen(
            [NETVANTAGE, "collector", "serve", "--store", str(self.db), "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if "listening on" not in line:
            stop_pid(proc, 5)
            raise RuntimeError(f"the collector did not start: {line!r}")
        self.port = int(line.split()[4].rsplit(":", 1)[1])
        for _ in range(300):
            if health_ms(self.port, 1.0) is not None:
                break
            time.sleep(0.1)
        self.proc = proc
        self.incarnations += 1
        self.expect_down = False
        if not self._poller.is_alive():
            self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            proc = self.proc
            if proc is not None and proc.poll() is None:
                st = proc_status(proc.pid)
                self.peak_kb = max(self.peak_kb, st.get("VmHWM", 0), st.get("VmRSS", 0))
                if st.get("VmRSS", 0) > self.rss_cap_kb:
                    self.capped.append(f"RSS {st['VmRSS'] / 1024:.0f} MB")
                    proc.kill()
            time.sleep(0.2)

    def signal_stop(self, sig: int) -> int | None:
        """Stop with ``sig`` (SIGTERM waits for a graceful exit); returns the exit code."""
        proc = self.proc
        assert proc is not None
        self.expect_down = True
        st = proc_status(proc.pid)
        self.peak_kb = max(self.peak_kb, st.get("VmHWM", 0))
        proc.send_signal(sig)
        try:
            return proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            return None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def watchdog(self) -> str | None:
        """Restart a collector that died unasked; says so."""
        if self.expect_down or self.proc is None or self.proc.poll() is None:
            return None
        self.unexpected_exits.append(self.proc.returncode)
        self.start()
        return f"collector died (exit {self.proc.returncode}); restarted"

    def close(self) -> int | None:
        self._stop.set()
        code = None
        if self.proc is not None and self.proc.poll() is None:
            self.expect_down = True
            code = stop_pid(self.proc, 60)
        self._log.close()
        return code


# -- the agents -------------------------------------------------------------------

@dataclass
class AgentDir:
    name: str
    path: Path
    token: str
    real: bool
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def spool(self) -> Path:
        return self.path / "spool.sqlite"


def write_plan(a: AgentDir, port: int, tcp_port: int, ping: bool) -> Path:
    (a.path / "token").write_text(a.token)
    tests = ['"ping"'] if ping else []
    tests.append(f'"tcp:{tcp_port}"')
    plan = a.path / "plan.toml"
    plan.write_text(f"""\
[agent]
name = "{a.name}"
region = "{REGION}"
spool = "spool.sqlite"

[collector]
url = "http://127.0.0.1:{port}"
token_file = "token"
batch_size = 200
upload_interval_s = 2
timeout_s = 10

[schedule]
interval_s = {INTERVAL_S}
jitter_s = 1
start_spread_s = {INTERVAL_S}
concurrency = 2
max_starts_per_s = 2

[defaults]
ping = {{ count = 3, interval_s = 0.2, timeout_s = 1.0 }}
tcp = {{ attempts = 2, interval_s = 0.2, timeout_s = 1.0 }}

[[targets]]
name = "loopback"
addresses = ["127.0.0.1"]
tests = [{", ".join(tests)}]
""")
    return plan


def start_agent(a: AgentDir) -> None:
    log = (a.path / "agent.log").open("ab")
    a.proc = subprocess.Popen(
        [NETVANTAGE, "agent", "run", "--plan", str(a.path / "plan.toml"), "--audit",
         "--status-interval", "30"], stdout=log, stderr=log)
    log.close()
    a.starts += 1


class LightFleet(threading.Thread):
    """Lightweight agents: the agent's Spool and Uploader and the TCP probe, one loop."""

    def __init__(self, agents: list[AgentDir], port: int, tcp_port: int) -> None:
        super().__init__(daemon=True)
        self.agents, self.port, self.tcp_port = agents, port, tcp_port
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.errors: Counter[str] = Counter()
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        finally:
            self.loop.close()
            self.done.set()

    async def _agent(self, a: AgentDir, stop: asyncio.Event) -> None:
        spool = Spool(a.spool, audit=True)
        uploader = Uploader(f"http://127.0.0.1:{self.port}", a.token, spool, batch_size=200,
                            interval_s=2.0, timeout_s=10.0)
        up = asyncio.create_task(uploader.run(stop))
        origin = Origin(agent=a.name, region=REGION)
        opts = TcpOptions(attempts=2, interval_s=0.2, timeout_s=1.0)
        await asyncio.sleep(random.uniform(0, INTERVAL_S))
        try:
            while not stop.is_set():
                record = await tcp_connect(Target("127.0.0.1", self.tcp_port), opts,
                                           origin=origin, name="loopback")
                await asyncio.to_thread(spool.put, record)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), INTERVAL_S + random.uniform(-1, 1))
            await up
            await uploader.drain(10.0)
        finally:
            if uploader.stats.last_error:
                self.errors[uploader.stats.last_error[:60]] += 1
            spool.close()

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        await asyncio.gather(*(self._agent(a, self.stop_event) for a in self.agents))

    def stop(self) -> None:
        if self.stop_event is not None and not self.done.is_set():
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                self.loop.call_soon_threadsafe(self.stop_event.set)


# -- faults -----------------------------------------------------------------------

@dataclass
class Fault:
    name: str
    answers: Counter[str] = field(default_factory=Counter)
    survived: bool = True
    notes: list[str] = field(default_factory=list)
    accepted_bad: list[str] = field(default_factory=list)

    def answer(self, what: str, status: int | str, *, bad: bool = False) -> None:
        """Note an answer; ``bad``: the body was garbage, so only a 4xx is right."""
        self.answers[f"{what}={status}"] += 1
        if isinstance(status, int) and status >= 500:
            self.survived = False
            self.notes.append(f"{what}: {status} (5xx)")
        elif bad and status == 200:
            self.accepted_bad.append(what)
            self.notes.append(f"{what}: 200, stored (should be a 4xx)")


def valid_record(agent: str, **changes: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "kind": "tcp", "id": new_id(), "schema": 2, "agent": agent, "region": REGION,
        "target": "loopback", "address": "127.0.0.1",
        "started_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "duration_ms": 1.5, "status": "ok", "error": None, "source": "netvantage",
        "body": {"port": 9, "ip_version": 4, "timeout_s": 1.0, "attempts": [
            {"status": "ok", "connect_ms": 0.12, "handshake_rtt_ms": 0.1, "error": None}],
            "succeeded": 1, "stats": {"min_ms": 0.12, "median_ms": 0.12, "mean_ms": 0.12,
                                      "max_ms": 0.12, "jitter_ms": None},
            "attempted": None, "summary": None}}
    rec.update(changes)
    return rec


def line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec).encode() + b"\n"


def with_rtts(value: float) -> dict[str, Any]:
    rec = valid_record(ATTACKER)
    rec["body"]["attempts"] = [{"status": "ok", "connect_ms": value,
                                "handshake_rtt_ms": value, "error": None}] * 3
    rec["body"]["succeeded"] = 3
    rec["body"]["stats"].update(min_ms=value, median_ms=value, mean_ms=value, max_ms=value,
                                jitter_ms=0.0)
    return rec


def garbage_lines(size: int) -> bytes:
    """About ``size`` bytes of short bad lines: half not JSON, half not a record."""
    rng = random.Random(15)
    pieces = [b'{"kind": "ping", "id": 7, "agent": [', b'{"x": 1}', b"\xff\xfe garbage",
              b'{"kind": "tcp"}', b"[[[[", b'"a string"']
    out = bytearray()
    while len(out) < size - 64:
        out += rng.choice(pieces) + b"\n"
    return bytes(out)


def garbage_round(port: int, token: str, fault: Fault, big_at_once: int) -> None:
    rng = random.Random(1)
    deep = b"[" * 1000 + b"]" * 1000 + b"\n"
    huge = line(with_rtts(1e308))
    inf_text = json.dumps(with_rtts(1.5)).replace("1.5", "1e999").encode() + b"\n"
    cases: list[tuple[str, bytes, str | None]] = [
        ("random-bytes", rng.randbytes(1 << 20), token),
        ("deep-nesting", deep, token),
        ("deep-object", b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"\n", token),
        ("rtt-1e308", huge, token),
        ("rtt-1e999", inf_text, token),
        ("rtt-0", line(with_rtts(0.0)), token),
        ("year-2300", line(valid_record(ATTACKER, started_at="2300-01-01T00:00:00Z")), token),
        ("year-1970", line(valid_record(ATTACKER, started_at="1970-01-01T00:00:01Z")), token),
        ("no-token", line(valid_record(ATTACKER)), None),
        ("bad-token", line(valid_record(ATTACKER)), "not-a-token"),
    ]
    for what, body, tok in cases:
        status, _ = post_batch(port, tok, body)
        fault.answer(what, status, bad=True)
    big = garbage_lines(MAX_BODY - 1024)
    results: list[int | str] = []

    def send() -> None:
        results.append(post_batch(port, token, big, timeout=300)[0])

    threads = [threading.Thread(target=send) for _ in range(big_at_once)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for status in results:
        fault.answer(f"16MiB-garbage-x{big_at_once}", status, bad=True)


def slow_loris(port: int, count: int, hold_s: float, fault: Fault) -> None:
    """``count`` connections trickling header bytes for ``hold_s``; times the health check."""
    socks: dict[socket.socket, float] = {}
    t0 = time.monotonic()
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/records HTTP/1.1\r\nHost: soak\r\nX-Slow: ")
            s.setblocking(False)
            socks[s] = 0.0
        except OSError as exc:
            fault.answer("connect", type(exc).__name__)
    fault.notes.append(f"{len(socks)} connections opened")
    closed_after: list[float] = []
    answered: Counter[str] = Counter()
    healths: list[float | None] = []
    next_health = time.monotonic()
    while time.monotonic() - t0 < hold_s and socks:
        for s in list(socks):
            try:
                data = s.recv(4096)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data is None:
                with contextlib.suppress(BlockingIOError, OSError):
                    s.send(b"a")
                continue
            if data:
                m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
                answered[m.group(1).decode() if m else "bytes"] += 1
            closed_after.append(time.monotonic() - t0)
            s.close()
            del socks[s]
        if time.monotonic() >= next_health:
            healths.append(health_ms(port, 5.0))
            next_health += 2.0
        time.sleep(1.0)
    for s in socks:
        s.close()
    for status, n in answered.items():
        fault.answers[f"answer={status}"] += n
    fault.answers["closed-by-collector"] = len(closed_after)
    fault.answers["still-open-at-end"] = len(socks)
    if closed_after:
        fault.notes.append(f"closed by the collector after median "
                           f"{statistics.median(closed_after):.0f} s")
    if socks:
        fault.notes.append(f"{len(socks)} held open for the whole {hold_s:.0f} s "
                           "(no header timeout)")
    ok = [h for h in healths if h is not None]
    fault.notes.append(f"health during the crowd: {len(ok)}/{len(healths)} answered"
                       + (f", max {max(ok):.0f} ms" if ok else ""))
    if len(ok) < len(healths):
        fault.survived = False


def squat(port: int, token: str, agents: list[AgentDir], fault: Fault) -> None:
    """Send in the attacker's name records still waiting in the agents' spools."""
    sent = 0
    for a in agents:
        try:
            with contextlib.closing(sqlite3.connect(a.spool, timeout=5)) as db:
                rows = db.execute("SELECT record FROM spool ORDER BY seq LIMIT 20").fetchall()
        except sqlite3.Error:
            continue
        if not rows:
            continue
        lines = []
        for (data,) in rows:
            rec = json.loads(data)
            rec["agent"] = ATTACKER
            lines.append(line(rec))
        status, _ = post_batch(port, token, b"".join(lines))
        fault.answer("squatted-batch", status)
        sent += len(lines)
    fault.notes.append(f"{sent} pending ids of other agents sent in the attacker's name")


def conflict(port: int, token: str, fault: Fault) -> int:
    rec = valid_record(ATTACKER)
    fault.answer("original", post_batch(port, token, line(rec))[0])
    rec["duration_ms"] = 99.0
    status, payload = post_batch(port, token, line(rec))
    fault.answer("same-id-other-content", status)
    reported = status == 409 or bool(payload.get("conflicts"))
    fault.notes.append("the conflict was reported" if reported else
                       f"the conflict was NOT reported ({status} {json.dumps(payload)[:120]})")
    return 1 if reported else 0


# -- accounting ---------------------------------------------------------------------

def spool_facts(a: AgentDir) -> tuple[dict[str, tuple[str, str]], int, list[str]]:
    """(audit id -> (kind, target), records still pending, rejection reasons)."""
    with contextlib.closing(sqlite3.connect(a.spool, timeout=30)) as db:
        audit = {i: (k, t) for i, k, t in db.execute("SELECT id, kind, target FROM audit")}
        pending = db.execute("SELECT count(*) FROM spool").fetchone()[0]
        reasons = [r for (r,) in db.execute("SELECT reason FROM rejected")]
    return audit, int(pending), reasons


def final_drain(a: AgentDir, port: int) -> int:
    """Send what is left in a stopped agent's spool with the agent's own Uploader."""
    spool = Spool(a.spool, audit=True)
    try:
        if spool.depth() == 0:
            return 0
        uploader = Uploader(f"http://127.0.0.1:{port}", a.token, spool, batch_size=500)
        asyncio.run(uploader.drain(30.0))
        return spool.depth()
    finally:
        spool.close()


# -- the run ----------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    duration = args.minutes * 60.0
    work = Path(tempfile.mkdtemp(prefix="nv-soak-"))
    listener = Listener()
    listener.start()
    collector = Collector(work / "store.sqlite", work / "collector.log",
                          int(args.rss_cap_mb * 1024))
    agents: list[AgentDir] = []
    fleet: LightFleet | None = None
    faults: list[Fault] = []
    events: list[str] = []
    ping = ping_allowed()
    t_start = time.monotonic()

    def note(message: str) -> None:
        stamp = time.monotonic() - t_start
        events.append(f"{stamp:6.0f} s  {message}")
        print(f"  [{stamp:5.0f} s] {message}", flush=True)

    try:
        collector.start()
        port = collector.port
        attacker_token = add_agent(collector.db, ATTACKER)
        for i in range(args.agents):
            name = f"soak-{i:03d}"
            d = work / name
            d.mkdir()
            agents.append(AgentDir(name, d, add_agent(collector.db, name), i < args.real))
        real = [a for a in agents if a.real]
        light = [a for a in agents if not a.real]
        print(f"soak: {args.agents} agents ({len(real)} real processes, {len(light)} "
              f"lightweight in-process), {args.minutes:g} min, collector on 127.0.0.1:{port}, "
              f"tests: {'ping 127.0.0.1, ' if ping else ''}tcp:{listener.port} every "
              f"{INTERVAL_S} s", flush=True)
        for a in real:
            write_plan(a, port, listener.port, ping)
            start_agent(a)
            time.sleep(0.2)  # imports of 50 processes at once would starve the collector
        if light:
            fleet = LightFleet(light, port, listener.port)
            fleet.start()
        t_start = time.monotonic()
        note("all agents started")

        def at(fraction: float) -> None:
            end = t_start + fraction * duration
            while time.monotonic() < end:
                msg = collector.watchdog()
                if msg:
                    note(msg)
                for a in real:
                    if a.proc is not None and a.proc.poll() is not None:
                        note(f"agent {a.name} exited ({a.proc.returncode}) unasked; restarted")
                        start_agent(a)
                time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            msg = collector.watchdog()
            if msg:
                note(msg)

        def garbage(big_at_once: int) -> None:
            f = Fault(f"garbage batches (16 MiB x{big_at_once})")
            faults.append(f)
            garbage_round(collector.port, attacker_token, f, big_at_once)
            f.survived &= collector.alive() and health_ms(collector.port) is not None
            note(f"{f.name}: {dict(f.answers)}")

        at(0.10)
        garbage(1)
        at(0.20)
        f = Fault(f"slow-loris crowd ({args.loris} connections)")
        faults.append(f)
        hold = min(60.0, 0.15 * duration)
        slow_loris(collector.port, args.loris, hold, f)
        f.survived &= collector.alive()
        note(f"{f.name}: {dict(f.answers)}; {'; '.join(f.notes)}")
        at(0.40)
        f = Fault("collector SIGTERM, restart after 5 s")
        faults.append(f)
        code = collector.signal_stop(signal.SIGTERM)
        f.answer("exit", code if code is not None else "hung")
        f.survived = code == 0
        time.sleep(5)
        collector.start()
        note(f"{f.name}: exit {code}")
        at(0.50)
        f = Fault("agents SIGKILLed, restarted after 10 s")
        faults.append(f)
        victims = real[: min(5, len(real))]
        for a in victims:
            if a.proc is not None:
                a.proc.kill()
                a.proc.wait()
        time.sleep(10)
        for a in victims:
            start_agent(a)
        f.notes.append(", ".join(a.name for a in victims) or "no real agent")
        note(f"{f.name}: {f.notes[-1]}")
        at(0.60)
        f = Fault("collector SIGKILL, 15 s outage, then ids squatted")
        faults.append(f)
        code = collector.signal_stop(signal.SIGKILL)
        f.answer("exit", code if code is not None else "hung")
        time.sleep(15)
        collector.start()
        squat(collector.port, attacker_token, agents[::5], f)
        note(f"{f.name}: {dict(f.answers)}; {'; '.join(f.notes)}")
        at(0.72)
        garbage(3)
        at(0.85)
        f = Fault("same id, other content (conflict)")
        faults.append(f)
        planted_reported = conflict(collector.port, attacker_token, f)
        note(f"{f.name}: {dict(f.answers)}; {'; '.join(f.notes)}")
        at(1.0)

        note("stopping the agents (SIGTERM)")
        for a in real:
            if a.proc is not None and a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)
        if fleet is not None:
            fleet.stop()
        # One SIGTERM only: a second one during the agent's own shutdown is not the point.
        deadline = time.monotonic() + 60
        for a in real:
            if a.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    a.proc.wait(max(0.1, deadline - time.monotonic()))
        exit_codes: Counter[int | None] = Counter(stop_pid(a.proc, 10) for a in real)
        if fleet is not None:
            fleet.done.wait(120)
        msg = collector.watchdog()
        if msg:
            note(msg)
        left = {a.name: final_drain(a, collector.port) for a in agents}
        note(f"final drain: {sum(left.values())} record(s) still in spools")
        collector_exit = collector.close()
        note(f"collector stopped (exit {collector_exit})")

        # -- figures
        measured: dict[tuple[str, str], tuple[str, str]] = {}
        pending = 0
        rejected: Counter[str] = Counter()
        for a in agents:
            audit, p, reasons = spool_facts(a)
            measured.update({(a.name, i): kt for i, kt in audit.items()})
            pending += p
            rejected.update(r[:90] for r in reasons)
        names = {a.name for a in agents}
        with contextlib.closing(sqlite3.connect(collector.db)) as db:
            rows = [(ag, i, k, t) for ag, i, k, t in
                    db.execute("SELECT agent, id, kind, target FROM records")
                    if ag in names]
            conflict_tables = [n for (n,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%conflict%'")]
            table_conflicts = sum(db.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]
                                  for n in conflict_tables)
            attacker_ids = {i for (i,) in db.execute(
                "SELECT id FROM records WHERE agent = ?", (ATTACKER,))}
            squatted = len(attacker_ids)
        stored = {(ag, i): (k, t) for ag, i, k, t in rows}
        doubled = len(rows) - len(stored)
        lost_keys = set(measured) - set(stored)
        foreign = set(stored) - set(measured)
        mismatched = sum(1 for key, kt in stored.items() if key in measured
                         and measured[key] != kt)
        log_text = collector.log_path.read_text(errors="replace")
        tracebacks = log_text.count("Traceback")
        agent_errors: Counter[str] = Counter()
        for a in real:
            for m in re.finditer(r"last upload error: ([^,\n]{0,60})",
                                 (a.path / "agent.log").read_text(errors="replace")):
                agent_errors[re.sub(r"\d+", "N", m.group(1))] += 1
            crashed = (a.path / "agent.log").read_text(errors="replace").count("Traceback")
            if crashed:
                agent_errors["Traceback in an agent's log"] += crashed
        if fleet is not None:
            agent_errors.update({re.sub(r"\d+", "N", k): v for k, v in fleet.errors.items()})
        squatted_ids = {i for _, i in lost_keys} & attacker_ids
        load = os.getloadavg()
    finally:
        try:
            for a in agents:
                stop_pid(a.proc, 10)
            if fleet is not None:
                fleet.stop()
                fleet.done.wait(30)
            collector.close()
            listener.sock.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- report
    peak_mb = collector.peak_kb / 1024
    lost = len(lost_keys)
    print(f"\nsoak over {args.minutes:g} min: {args.agents} agents ({len(real)} real, "
          f"{len(light)} lightweight), {collector.incarnations} collector start(s)")
    print(f"  measured  {len(measured):>8,}   (the spools' audit tables)")
    print(f"  stored    {len(stored):>8,}   (the store, these agents' rows; "
          f"{squatted} more under {ATTACKER})")
    print(f"  lost      {lost:>8,}   (measured - stored: {pending} still in spools, "
          f"{sum(rejected.values())} rejected by the collector, {len(squatted_ids)} whose id "
          f"is stored under {ATTACKER} only)")
    for reason, n in rejected.most_common(5):
        print(f"      rejected {n} x {reason}")
    print(f"  doubled   {doubled:>8,}")
    print(f"  conflicts {mismatched:>8,}   (stored content differing from the agent's); "
          f"planted conflict reported: {'yes' if planted_reported else 'NO'}; "
          f"conflict table rows {table_conflicts if conflict_tables else 'n/a (no table)'}")
    if foreign:
        print(f"  stored but never measured: {len(foreign)}")
    print(f"  agents' exit codes at SIGTERM: {dict(exit_codes)}; upload errors seen: "
          f"{dict(agent_errors.most_common(6)) or 'none'}")
    print(f"  collector: peak RSS {peak_mb:.0f} MB (VmHWM), {tracebacks} traceback(s) in its "
          f"log ({len(log_text) / 1024:.0f} KiB), unexpected exits "
          f"{collector.unexpected_exits or 'none'}, killed at the RSS cap "
          f"{collector.capped or 'never'}")
    print(f"  load average at the end (1, 5, 15 min): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
          f"on {os.cpu_count()} CPUs")
    print("\nfaults:")
    for f in faults:
        print(f"  {'survived' if f.survived else 'NOT SURVIVED':<13} {f.name}")
        print(f"      answers: {', '.join(f'{k} ({v})' for k, v in sorted(f.answers.items()))}")
        for text in f.notes:
            print(f"      {text}")
    print("\ntimeline:")
    for e in events:
        print(f"  {e}")
    goals = {
        "0 lost": lost == 0,
        "0 doubled": doubled == 0,
        f"peak RSS < {GOAL_RSS_MB:g} MB": peak_mb < GOAL_RSS_MB,
        "every fault answered with a 4xx or survived": all(f.survived for f in faults)
        and not collector.unexpected_exits and not collector.capped,
        "every garbage batch refused (4xx)": not any(f.accepted_bad for f in faults),
        "the planted conflict reported": planted_reported == 1,
    }
    print("\ngoals:")
    for goal, met in goals.items():
        print(f"  {'met    ' if met else 'NOT MET'}  {goal}")
    return 0 if all(goals.values()) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--agents", type=int, default=50)
    ap.add_argument("--real", type=int, default=None,
                    help="how many agents are real processes (default: all)")
    ap.add_argument("--loris", type=int, default=200, help="slow-loris connections")
    ap.add_argument("--rss-cap-mb", type=float, default=3000.0,
                    help="kill (and restart) a collector above this RSS")
    args = ap.parse_args()
    args.real = args.agents if args.real is None else min(args.real, args.agents)
    if args.minutes < 1:
        ap.error("--minutes must be at least 1 (the faults need the time)")

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
