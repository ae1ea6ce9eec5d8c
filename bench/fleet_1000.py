"""A thousand agents uploading every minute to one collector: batch latency, RSS, lost, doubled.

One collector (``netvantage collector serve``, a subprocess on a loopback port,
a fresh store in a temporary directory, one token per agent) and ``--agents``
simulated agents (1,000 by default) in this process: each is an asyncio task,
not a process, that every ``--interval`` seconds (60) for ``--minutes`` (10)
uploads one batch of ``--records`` records (60: 12 data centres x 5 tests, the
issue's campaign) over real HTTP/1.1 (h11 over asyncio streams, a new
connection per upload, as the agent's uploader does), with its bearer token
and the ``X-Netvantage-Backlog`` header.  Agents start at random phases within
the first interval, so uploads arrive spread out as a fleet's would.

A batch that fails (network error, timeout, a non-200 answer) is sent again
after a backoff (1 s doubling to 30 s), like the agent, until it is
acknowledged; ``--resend`` of the acknowledged batches (1 %) are sent once
more, as if the acknowledgement had been lost, and must come back as
duplicates.  Records are ping and tcp records built with the schema's
classes; ids are ``fleet-AGENT-ROUND-N`` so the expected set can be rebuilt
at the end without keeping 600,000 ids in memory.

Printed: batch latency (connect to the last byte of the answer, acknowledged
attempts) p50 / p90 / p99 / max; failed attempts by reason; the collector's
peak RSS (VmHWM) and CPU seconds from /proc; records lost (acknowledged but
not in the store), doubled (stored more than once or stored without being
sent), unacknowledged at the end; duplicates acknowledged vs re-sent; the
collector's own ``/metrics`` count of records ingested checked against the
store; the load average before, during (max) and after — the machine is
shared, read the latency with it.  Goals (issue 18): 0 lost, 0 doubled.

    .venv/bin/python bench/fleet_1000.py [--agents 1000] [--minutes 10] [--interval 60]
        [--records 60] [--resend 0.01]

Every process it starts is stopped by its pid and the temporary directory is
removed, also on Ctrl-C.  Exits 1 when a goal is not met.  Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h11

from netvantage.collector.store import Store
from netvantage.results import (
    PingBody,
    PingRecord,
    TcpAttempt,
    TcpBody,
    TcpRecord,
    encode_record,
)

NETVANTAGE = str(Path(sys.executable).with_name("netvantage"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_BACKOFF_S = 30.0


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    batches_acked: int = 0
    records_acked: int = 0
    resent: int = 0
    duplicates_answered: int = 0
    unacked_records: int = 0
    # per agent: rounds whose batch was acknowledged
    acked_rounds: dict[int, list[int]] = field(default_factory=dict)
    load_max: float = 0.0


def build_batch(agent: str, index: int, round_: int, n: int, region: str) -> bytes:
    now = datetime.now(UTC)
    lines = []
    for j in range(n):
        rid = f"fleet-{index:04d}-{round_:04d}-{j:03d}"
        target = f"dc-{j % 12:02d}"
        rtt = 20.0 + (index % 50) + random.random() * 5
        if j % 2 == 0:
            samples: list[float | None] = [round(rtt + random.random(), 3) for _ in range(4)]
            samples.append(None if random.random() < 0.05 else round(rtt, 3))
            ping_body = PingBody.from_samples(samples, ip_version=4, socket="raw",
                                              payload_bytes=56, interval_s=1.0, timeout_s=2.0,
                                              dont_fragment=False)
            rec: PingRecord | TcpRecord = PingRecord(
                id=rid, agent=agent, region=region, target=target, address="192.0.2.10",
                started_at=now, duration_ms=4012.5, status="ok", body=ping_body)
        else:
            attempts = [TcpAttempt(status="ok", connect_ms=round(rtt + random.random(), 3))
                        for _ in range(3)]
            tcp_body = TcpBody.from_attempts(attempts, port=25, ip_version=4, timeout_s=5.0)
            rec = TcpRecord(id=rid, agent=agent, region=region, target=target,
                            address="192.0.2.10", started_at=now, duration_ms=3 * rtt,
                            status="ok", body=tcp_body)
        lines.append(encode_record(rec))
    return b"\n".join(lines) + b"\n"


async def post(host: str, port: int, token: str, body: bytes, backlog: int,
               timeout_s: float) -> tuple[int, bytes]:
    """One POST /v1/records on a new connection (h11 does the HTTP/1.1 framing)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        conn = h11.Connection(h11.CLIENT)
        out = conn.send(h11.Request(method="POST", target="/v1/records", headers=[
            ("Host", f"{host}:{port}"), ("Authorization", f"Bearer {token}"),
            ("Content-Type", "application/x-ndjson"), ("Content-Length", str(len(body))),
            ("X-Netvantage-Backlog", str(backlog)), ("Connection", "close")]))
        out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        writer.write(out)
        await writer.drain()
        status, chunks = 0, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, b"".join(chunks)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def one_agent(index: int, token: str, args: argparse.Namespace, host: str, port: int,
                    start: float, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    agent = f"fleet-{index:04d}"
    region = f"R{index % 12:02d}"
    phase = random.uniform(0, args.interval)
    rounds = max(1, round(args.minutes * 60 / args.interval))
    acked: list[int] = []
    tally.acked_rounds[index] = acked
    for r in range(rounds):
        due = start + phase + r * args.interval
        await asyncio.sleep(max(0.0, due - loop.time()))
        body = build_batch(agent, index, r, args.records, region)
        sends = 2 if random.random() < args.resend else 1
        done_round = False
        backoff = 0.0
        while sends:
            t0 = loop.time()
            try:
                status, answer = await asyncio.wait_for(
                    post(host, port, token, body, args.records, args.timeout),
                    args.timeout)
            except (OSError, TimeoutError, h11.ProtocolError) as exc:
                tally.failures[type(exc).__name__] += 1
                status, answer = 0, b""
            if status == 200:
                tally.latencies_s.append(loop.time() - t0)
                payload = json.loads(answer)
                if not done_round:
                    done_round = True
                    acked.append(r)
                    tally.batches_acked += 1
                    tally.records_acked += len(payload["ids"])
                else:  # the re-send of an acknowledged batch: all duplicates
                    tally.duplicates_answered += int(payload["duplicates"])
                sends -= 1
                tally.resent += 1 if sends else 0
                backoff = 0.0
                continue
            if status:
                tally.failures[f"HTTP {status}"] += 1
            if loop.time() > start + args.minutes * 60 + args.grace:
                tally.unacked_records += args.records
                break
            backoff = min(MAX_BACKOFF_S, backoff * 2 or 1.0)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))


def read_proc(pid: int) -> tuple[int, int, float] | None:
    """(VmRSS kB, VmHWM kB, CPU seconds) of a process, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:
        return None
    rest = stat.rsplit(")", 1)[1].split()
    return (int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]),
            (int(rest[11]) + int(rest[12])) / CLK_TCK)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]  # nearest rank


async def fleet(args: argparse.Namespace, tokens: list[str], host: str, port: int,
                tally: Tally) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time() + 1.0
    t0 = time.monotonic()

    async def watch_load() -> None:
        while True:
            tally.load_max = max(tally.load_max, os.getloadavg()[0])
            await asyncio.sleep(5)

    watcher = asyncio.create_task(watch_load())
    await asyncio.gather(*(one_agent(i, tokens[i], args, host, port, start, tally)
                           for i in range(args.agents)))
    watcher.cancel()
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between uploads")
    parser.add_argument("--records", type=int, default=60, help="records per upload")
    parser.add_argument("--resend", type=float, default=0.01,
                        help="share of acknowledged batches sent again")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per upload")
    parser.add_argument("--grace", type=float, default=120.0,
                        help="seconds after the last round that failed batches keep retrying")
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(f"{args.agents} agents x {args.records} records every {args.interval:g} s for "
          f"{args.minutes:g} min; {os.cpu_count()} CPUs, load average {load_before[0]:.2f} "
          f"{load_before[1]:.2f} {load_before[2]:.2f} (shared machine)", flush=True)
    where = Path(tempfile.mkdtemp(prefix="nvt-fleet-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        db = where / "fleet.db"
        with Store(db, synchronous="normal") as store:
            tokens = [store.add_agent(f"fleet-{i:04d}") for i in range(args.agents)]
        log = (where / "collector.log").open("wb")
        proc = subprocess.Popen(
            [NETVANTAGE, "collector", "serve", "--store", str(db), "--port", "0",
             "--max-connections", str(max(1000, args.agents + 100))],
            stdout=subprocess.PIPE, stderr=log)
        log.close()
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        found = re.search(r"http://([\d.]+):(\d+)", line)
        if not found:
            print(f"the collector did not start: {line!r}", file=sys.stderr)
            return 1
        host, port = found.group(1), int(found.group(2))
        started = read_proc(proc.pid)  # CPU of start-up (imports) is not the ingest's
        samples: list[tuple[int, int, float]] = []
        done = threading.Event()

        def sample(pid: int = proc.pid) -> None:
            while not done.wait(0.5):
                got = read_proc(pid)
                if got:
                    samples.append(got)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        tally = Tally()
        elapsed = asyncio.run(fleet(args, tokens, host, port, tally))
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=30) as answer:
            exposition = answer.read().decode()
        last = read_proc(proc.pid)
        done.set()
        sampler.join()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        ingested = sum(float(m.group(1)) for m in re.finditer(
            r"^netvantage_collector_records_ingested_total\{[^}]*\} (\S+)$", exposition,
            re.MULTILINE))
        conn = sqlite3.connect(db)
        stored_total = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        distinct = conn.execute("SELECT count(*) FROM (SELECT DISTINCT agent, id FROM records)"
                                ).fetchone()[0]
        lost = 0
        unexpected = 0
        for i in range(args.agents):
            agent = f"fleet-{i:04d}"
            stored = {r for (r,) in conn.execute("SELECT id FROM records WHERE agent = ?",
                                                 (agent,))}
            acked = {f"fleet-{i:04d}-{r:04d}-{j:03d}" for r in tally.acked_rounds.get(i, [])
                     for j in range(args.records)}
            lost += len(acked - stored)
            unexpected += sum(1 for rid in stored - acked
                              if not rid.startswith(f"fleet-{i:04d}-"))
        conn.close()
        doubled = stored_total - distinct + unexpected
        lat_ms = [x * 1000 for x in tally.latencies_s]
        hwm_mb = (last[1] if last else max((s[1] for s in samples), default=0)) / 1024
        cpu_s = (last[2] if last else (samples[-1][2] if samples else float("nan"))) - (
            started[2] if started else 0.0)
        rss_mb = [s[0] / 1024 for s in samples]
        load_after = os.getloadavg()
        print(f"elapsed {elapsed:.0f} s; batches acknowledged {tally.batches_acked} "
              f"({tally.records_acked} records), re-sent {tally.resent}, failed attempts "
              f"{sum(tally.failures.values())} {dict(tally.failures) or ''}")
        print(f"batch latency (acknowledged uploads, {len(lat_ms)}): p50 "
              f"{percentile(lat_ms, 50):.1f} ms, p90 {percentile(lat_ms, 90):.1f} ms, p99 "
              f"{percentile(lat_ms, 99):.1f} ms, max {max(lat_ms, default=float('nan')):.1f} ms")
        per_record_us = cpu_s / max(1, tally.records_acked) * 1e6
        print(f"collector: peak RSS (VmHWM) {hwm_mb:.1f} MB, median RSS "
              f"{statistics.median(rss_mb) if rss_mb else float('nan'):.1f} MB, CPU "
              f"{cpu_s:.1f} s after start-up ({per_record_us:.1f} us per record, a new "
              "connection per batch included)")
        print(f"store: {stored_total} records; lost {lost}, doubled {doubled}, unacknowledged "
              f"at the end {tally.unacked_records}; duplicates answered "
              f"{tally.duplicates_answered} for {tally.resent * args.records} re-sent records")
        print(f"collector /metrics: records ingested {ingested:.0f} "
              f"({'=' if ingested == stored_total else '!='} store {stored_total})")
        print(f"load average: before {load_before[0]:.2f}, max during {tally.load_max:.2f}, "
              f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
        ok = lost == 0 and doubled == 0 and tally.unacked_records == 0
        print(f"goals: 0 lost {'met' if lost == 0 else 'NOT met'}, 0 doubled "
              f"{'met' if doubled == 0 else 'NOT met'}, every batch acknowledged "
              f"{'met' if tally.unacked_records == 0 else 'NOT met'}")
        return 0 if ok else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        import shutil

        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
