"""The agent's scheduler on its own: cadence, concurrency, and a crashing probe that
does not take the others down.  (Real probes and a real collector: test_agent_lab.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections import Counter
from datetime import UTC, datetime

from netvantage.agent.plan import parse_plan
from netvantage.agent.run import Agent
from netvantage.agent.spool import Spool
from netvantage.measure.common import Origin
from netvantage.results import PingBody, PingRecord, new_id
from waiting import wait_until_async

PLAN = """
[agent]
name = "unit"
spool = "unit.spool.sqlite"
[schedule]
interval_s = 5
start_spread_s = 0
concurrency = 2
max_starts_per_s = 100
[[targets]]
name = "a"
addresses = ["192.0.2.1", "192.0.2.2"]
tests = ["ping", "tcp:25"]
"""


def test_crashing_probe_is_reported_and_the_rest_goes_on(tmp_path):
    import tomllib

    plan = parse_plan(tomllib.loads(PLAN), PLAN, base=tmp_path)
    running = 0
    peak = 0
    calls: Counter[str] = Counter()

    async def fake_measure(job, plan_, origin):
        nonlocal running, peak
        calls[job.key] += 1
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.05)  # a measurement takes a while: overlaps are possible
            if job.test.kind == "tcp" and job.address.endswith(".2"):
                raise RuntimeError("boom")
            body = PingBody.from_samples([1.0], ip_version=4, socket="raw", payload_bytes=56,
                                         interval_s=1.0, timeout_s=1.0, dont_fragment=False)
            return PingRecord(id=new_id(), agent=origin.agent, target=job.target.name,
                              address=job.address, started_at=datetime.now(UTC),
                              duration_ms=50.0, status="ok", body=body)
        finally:
            running -= 1

    lines: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            lines.append(text)

        def flush(self) -> None:
            pass

    agent = Agent(plan, audit=True, out=Out(), measure=fake_measure)  # type: ignore[arg-type]
    jobs = len(plan.jobs)

    async def two_rounds():
        # Stop when every job has run twice (at 0 s and 5 s) and each run has ended:
        # the third round is due at 10 s, far from the stop.
        task = asyncio.create_task(agent.run(drain_s=2.0))
        await wait_until_async(
            lambda: task.done() or agent.stats.measured + agent.stats.statuses["crashed"]
            >= 2 * jobs, 30, "two rounds of every job")
        agent.stop.set()
        return await task

    stats = asyncio.run(two_rounds())
    assert set(calls) == {job.key for job in plan.jobs}
    assert all(n == 2 for n in calls.values()), calls
    assert peak <= 2  # the plan's concurrency
    assert stats.statuses["crashed"] == 2 and stats.measured == 6
    assert any("crashed (a bug" in line for line in lines)
    spool = Spool(tmp_path / "unit.spool.sqlite")
    assert spool.depth() == 6
    spool.close()


def _ping_record(job, origin) -> PingRecord:
    body = PingBody.from_samples([1.0], ip_version=4, socket="raw", payload_bytes=56,
                                 interval_s=1.0, timeout_s=1.0, dont_fragment=False)
    return PingRecord(id=new_id(), agent=origin.agent, target=job.target.name,
                      address=job.address, started_at=datetime.now(UTC), duration_ms=1.0,
                      status="ok", body=body)


def _many_jobs_plan(spool: str, addresses: int, limit_s: float, tests: str = '"ping"') -> str:
    return f"""
[agent]
name = "full"
spool = "{spool}"
spool_error_limit_s = {limit_s}
[schedule]
interval_s = 5
start_spread_s = 0
concurrency = 4
max_starts_per_s = 100
[defaults.tcp]
attempts = 1
timeout_s = 1
[[targets]]
name = "t"
addresses = [{", ".join(f'"127.0.{i // 250}.{i % 250 + 1}"' for i in range(addresses))}]
tests = [{tests}]
"""


class Lines(io.StringIO):
    """What the agent says, line by line (a text stream to it)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def write(self, text: str) -> int:
        self.lines.append(text)
        return len(text)


def test_a_full_spool_disk_pauses_measuring_loudly_and_loses_nothing():
    import tomllib

    from tmpfs import fill, small_tmpfs

    with small_tmpfs(2048) as disk:
        text = _many_jobs_plan(str(disk / "s.sqlite"), 300, 120)
        plan = parse_plan(tomllib.loads(text), text, base=disk)
        measured: list[str] = []
        paused_at: list[int] = []
        in_flight = 0

        async def fake_measure(job, plan_, origin):
            nonlocal in_flight
            in_flight += 1
            try:
                await asyncio.sleep(0.005)  # a measurement takes a while (the fake's work)
                record = _ping_record(job, origin)
                measured.append(record.id)
                return record
            finally:
                in_flight -= 1

        out = Lines()
        agent = Agent(plan, audit=True, out=out, status_interval_s=0.2,
                      measure=fake_measure)
        filler = fill(disk, 96 << 10)  # room for a few dozen results

        async def scenario():
            task = asyncio.create_task(agent.run(drain_s=2.0))
            await wait_until_async(lambda: task.done() or agent.spool_error, 30,
                                   "the spool write to fail")
            assert not task.done()
            line = agent.status_line()
            assert "MEASURING PAUSED" in line and "SQLITE_FULL" in line, line
            # Paused: no measurement starts while nothing can be kept (in-flight ones end).
            await wait_until_async(lambda: in_flight == 0, 30, "in-flight measurements to end")
            paused_at.append(len(measured))
            # That nothing starts can only be shown over a stretch of time: this sleep is
            # the observation under test (several of the agent's 1 s-scale retries).
            await asyncio.sleep(1.5)
            assert len(measured) == paused_at[0] and in_flight == 0
            assert agent.stats.skipped_spool > 0
            filler.unlink()
            await wait_until_async(lambda: task.done() or agent.spool_error is None, 30,
                                   "measuring to resume")
            assert "PAUSED" not in agent.status_line()
            await wait_until_async(lambda: task.done() or len(measured) > paused_at[0], 30,
                                   "a new measurement after the pause")
            agent.stop.set()
            return await task

        stats = asyncio.run(scenario())
        assert any("MEASURING PAUSED" in line and "SQLITE_FULL" in line for line in out.lines)
        assert any("measuring resumes" in line for line in out.lines)
        assert stats.lost == 0
        spool = Spool(disk / "s.sqlite", audit=True)
        spooled = {a for a, _, _ in spool.audit_ids()}
        spool.close()
        assert set(measured) == spooled  # every result measured reached the spool
        assert stats.measured == len(measured)


def test_a_spool_that_stays_full_stops_the_agent_with_exit_1():
    import subprocess

    from conftest import NETVANTAGE
    from tmpfs import fill, small_tmpfs

    with small_tmpfs(2048) as disk:
        plan = disk / "plan.toml"
        # TCP to closed loopback ports: real results, quickly, and no privilege needed.
        plan.write_text(_many_jobs_plan("s.sqlite", 400, 2, '"tcp:9"'))
        fill(disk, 96 << 10)
        proc = subprocess.run([NETVANTAGE, "agent", "run", "--plan", str(plan), "--duration",
                               "120", "--status-interval", "0.5"],
                              capture_output=True, text=True, timeout=90)
    assert proc.returncode == 1, proc.stderr[-3000:]
    err = proc.stderr
    assert "MEASURING PAUSED" in err and "SQLITE_FULL" in err, err[-3000:]
    assert "netvantage: error: spool writes failed for 2 s" in err, err[-3000:]
    assert "rollback" not in err.lower()


# --------------------------------------------------------------------------- a confused collector

GARBAGE: list[bytes] = [
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ids": 5}\n',
    b'HTTP/1.1 200 OK\r\nContent-Length: 52\r\n\r\n'
    b'{"ids": [1, null, {"x": 1}], "duplicates": "many"}\n',
    b'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n[1,2,3]\n',
    b'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 26\r\n\r\n'
    b'<html><b>oops</b></html>\n\n',
    b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"ids": ["',  # truncated
    b'HTTP/1.1 200 OK\r\nContent-Length: 9000000\r\n\r\n' + b'[' * 9_000_000,  # huge, deep
    b'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\xff\xfe\x00\x1b',
    b'HTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\n{"ids": "abc", "problems": "x"}',
    b'HTTP/1.1 422 Unprocessable\r\nContent-Length: 15\r\n\r\n{"problems": 7}',
    b'HTTP/1.1 400 Bad\r\nContent-Length: 40\r\n\r\n{"problems": [{"line": true}, 5, null]}\n',
    b'HTTP/1.1 500 Oops\r\nContent-Length: 5\r\n\r\nnope\n',
    b'this is not HTTP at all\r\n\r\n',
    b'',  # closes without a word
]


class ConfusedCollector:
    """A loopback HTTP server that answers each upload with the next garbage answer, then,
    once they are all used, passes uploads to a real collector and its answers back."""

    def __init__(self, real_url: str) -> None:
        import http.server
        import threading
        import urllib.parse

        self.script = list(GARBAGE)
        self.answered = 0
        real = urllib.parse.urlsplit(real_url)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import http.client

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.script:
                    answer = outer.script.pop(0)
                    outer.answered += 1
                    with contextlib.suppress(OSError):
                        self.wfile.write(answer)
                        self.wfile.flush()
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(real.hostname or "", real.port, timeout=10)
                conn.request("POST", self.path, body=body, headers=dict(self.headers))
                response = conn.getresponse()
                data = response.read()
                conn.close()
                self.send_response(response.status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ConfusedCollector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_uploader_survives_any_answer_and_the_spool_drains(tmp_path, monkeypatch):
    import sqlite3
    import tomllib

    from netvantage.agent import upload
    from netvantage.collector.serve import BackgroundCollector
    from netvantage.collector.store import Store

    monkeypatch.setattr(upload, "MAX_BACKOFF_S", 0.05)  # retry fast: the answers are the point
    with Store(tmp_path / "collector.db") as store:
        token = store.add_agent("unit")
        with BackgroundCollector(store) as real, ConfusedCollector(real.url) as confused:
            text = PLAN + f'[collector]\nurl = "{confused.url}"\ntoken = "{token}"\n' \
                          'batch_size = 7\nupload_interval_s = 0.1\ntimeout_s = 5\n'
            plan = parse_plan(tomllib.loads(text), text, base=tmp_path)
            out = Lines()
            agent = Agent(plan, out=out)
            assert agent.uploader is not None
            origin = agent.origin
            good = [_ping_record(job, origin) for job in plan.jobs for _ in range(5)]
            for record in good:
                agent.spool.put(record)
            stranger = Origin(agent="someone-else")  # the collector refuses it (403)
            agent.spool.put(_ping_record(plan.jobs[0], stranger))
            statuses: list[str] = []

            async def scenario():
                stop = asyncio.Event()
                task = asyncio.create_task(agent.uploader.run(stop))  # type: ignore[union-attr]
                await wait_until_async(lambda: task.done() or confused.answered >= 3, 30,
                                       "garbage answers")
                statuses.append(agent.status_line())
                await wait_until_async(lambda: task.done() or agent.spool.depth() == 0, 60,
                                       "the spool to drain")
                assert not task.done(), task  # it survived every answer
                # The spool empties in a worker thread (Spool.ack, Spool.reject) before the
                # uploader counts what it acked: stopped, it has finished that step, and
                # only then does the status line speak for the whole drain (read at once,
                # it said "uploaded 14" of 20 in 8 of 15 runs at load 9-10).
                stop.set()
                await task
                statuses.append(agent.status_line())

            asyncio.run(scenario())
            assert confused.answered == len(GARBAGE)
            assert "upload failing" in statuses[0], statuses
            assert "upload failing" not in statuses[1], statuses  # recovered: the line says so
            assert f"uploaded {len(good)}" in statuses[1], statuses
            assert "rejected 1" in statuses[1], statuses
            agent.spool.close()
        with sqlite3.connect(tmp_path / "collector.db") as db:
            stored = {r[0] for r in db.execute("SELECT id FROM records")}
    assert stored == {r.id for r in good}
    logged = "".join(out.lines)
    assert "upload failed: collector answered 200 without acknowledging the batch (ids: 5" in logged
    assert "not JSON" in logged and "collector unreachable" in logged
    assert "uploads work again" in logged


def test_a_second_sigterm_while_the_spool_closes_does_not_kill_the_agent(tmp_path):
    """The operator (or a service manager) signals again while the agent is closing its
    spool: the agent still ends its run normally, every result in the spool."""
    import os
    import signal
    import tomllib

    plan = parse_plan(tomllib.loads(PLAN), PLAN, base=tmp_path)

    async def measure(job, plan_, origin):
        return _ping_record(job, origin)

    agent = Agent(plan, out=io.StringIO(), measure=measure)
    closing = agent.spool.close
    signalled: list[int] = []

    def close_under_a_signal() -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered while the close runs
        signalled.append(signal.SIGTERM)
        closing()

    agent.spool.close = close_under_a_signal  # type: ignore[method-assign]

    async def one_round():
        task = asyncio.create_task(agent.run(drain_s=2.0))
        await wait_until_async(lambda: task.done() or agent.stats.measured >= len(plan.jobs),
                               30, "one round of every job")
        os.kill(os.getpid(), signal.SIGTERM)  # the first signal: stop
        return await task

    stats = asyncio.run(one_round())
    assert signalled == [signal.SIGTERM] and stats.measured == len(plan.jobs)
    spool = Spool(tmp_path / "unit.spool.sqlite")
    assert spool.depth() == len(plan.jobs)
    spool.close()
