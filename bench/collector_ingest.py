"""Collector ingest throughput: many agents uploading at once to one collector.

The collector runs as its own process (``netvantage collector serve`` on a
loopback ephemeral port, a fresh SQLite file in a temporary directory).  This
process plays ``--clients`` agents (50 by default), each a thread with its own
token and its own keep-alive ``http.client`` connection, each posting
``--rounds`` batches of ``--batch`` records (JSON Lines, valid ping and tcp
records with fresh ids).  Bodies are built before the clock starts, so the
figure is the collector's, not the record generator's.

Printed: records/s and batches/s over the wall time from the first request to
the last answer, batch latency percentiles, the collector's CPU time, and the
check that nothing was lost or doubled (the store holds exactly the ids sent,
every answer acknowledged exactly its batch's ids, then a repeat of one batch
answers all duplicates).  Goal: 50,000 records/s.

    .venv/bin/python bench/collector_ingest.py [--clients 50] [--batch 1000] [--rounds 4]
        [--synchronous full|normal] [--profile]

``--profile`` instead profiles the ingest path in this process (decode,
validate, store write of one batch, repeated) with cProfile and prints the top
functions.  Not a test: it prints figures and exits non-zero only when records
were lost or doubled.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import json
import os
import pstats
import select
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from netvantage.collector.app import check_batch
from netvantage.collector.store import Store
from netvantage.results import (
    PingBody,
    PingRecord,
    Record,
    TcpAttempt,
    TcpBody,
    TcpRecord,
    encode_record,
    new_id,
)

NETVANTAGE = str(Path(sys.executable).with_name("netvantage"))
GOAL_RECORDS_S = 50_000
PLACEHOLDER = "00000000-0000-7000-8000-000000000000"


def templates(agent: str) -> list[bytes]:
    """A few realistic records of ``agent`` with a placeholder id (about 450 bytes each)."""
    when = datetime(2026, 11, 28, 19, 0, tzinfo=UTC)
    ping = PingRecord(
        id=PLACEHOLDER, agent=agent, region="ZM-LUN", target="ams.example",
        address="192.0.2.7", started_at=when, duration_ms=4012.5, status="ok",
        body=PingBody.from_samples([181.2, 179.9, None, 183.4, 180.0], ip_version=4,
                                   socket="raw", payload_bytes=56, interval_s=1.0,
                                   timeout_s=2.0, dont_fragment=False))
    attempts = [TcpAttempt(status="ok", connect_ms=182.0 + i, handshake_rtt_ms=181.5 + i)
                for i in range(3)]
    tcp = TcpRecord(
        id=PLACEHOLDER, agent=agent, region="ZM-LUN", target="ams.example",
        address="192.0.2.7", started_at=when, duration_ms=560.2, status="ok",
        body=TcpBody.from_attempts(attempts, port=25, ip_version=4, timeout_s=2.0))
    out: list[Record] = [ping, tcp]
    return [encode_record(r) for r in out]


def make_batch(tmpl: list[bytes], n: int) -> tuple[bytes, list[str]]:
    ids = [new_id() for _ in range(n)]
    lines = [tmpl[i % len(tmpl)].replace(PLACEHOLDER.encode(), i_.encode(), 1)
             for i, i_ in enumerate(ids)]
    return b"\n".join(lines) + b"\n", ids


def start_collector(db: Path, synchronous: str, workers: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [NETVANTAGE, "collector", "serve", "--store", str(db), "--port", "0",
         "--synchronous", synchronous, "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if "listening on" not in line:
        proc.kill()
        proc.wait(10)
        raise SystemExit(f"the collector did not start: {line!r}")
    return proc, int(line.split()[4].rsplit(":", 1)[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (the worker processes)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(c)) for c in children)


def post(conn: http.client.HTTPConnection, token: str, body: bytes) -> tuple[int, dict]:
    conn.request("POST", "/v1/records", body=body,
                 headers={"Authorization": f"Bearer {token}",
                          "Content-Type": "application/x-ndjson"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="nv-bench-") as tmp:
        db = Path(tmp) / "bench.db"
        agents = [f"agent-{i:03d}" for i in range(args.clients)]
        with Store(db) as store:
            tokens = {a: store.add_agent(a) for a in agents}
        t0 = time.perf_counter()
        work: dict[str, list[tuple[bytes, list[str]]]] = {}
        for a in agents:
            tmpl = templates(a)
            work[a] = [make_batch(tmpl, args.batch) for _ in range(args.rounds)]
        body_bytes = sum(len(b) for w in work.values() for b, _ in w)
        total = args.clients * args.rounds * args.batch
        print(f"built {total:,} records in {args.clients * args.rounds} batches "
              f"({body_bytes / 2**20:.1f} MiB, {body_bytes / total:.0f} B/record) in "
              f"{time.perf_counter() - t0:.1f} s")

        proc, port = start_collector(db, args.synchronous, args.workers)
        try:
            cpu0 = cpu_seconds(proc.pid)
            latencies: list[float] = []
            acked: dict[str, list[str]] = {a: [] for a in agents}
            failures: list[str] = []
            lock = threading.Lock()
            barrier = threading.Barrier(args.clients + 1, timeout=60)

            def client(agent: str) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                try:
                    barrier.wait()
                    for body, ids in work[agent]:
                        t = time.perf_counter()
                        status, answer = post(conn, tokens[agent], body)
                        dt = time.perf_counter() - t
                        if status != 200 or answer["ids"] != ids or \
                                answer["accepted"] != len(ids):
                            with lock:
                                failures.append(f"{agent}: {status} {str(answer)[:200]}")
                            return
                        with lock:
                            latencies.append(dt)
                            acked[agent] += answer["ids"]
                except Exception as exc:  # reported below; the benchmark must not hang
                    with lock:
                        failures.append(f"{agent}: {exc!r}")
                finally:
                    conn.close()

            threads = [threading.Thread(target=client, args=(a,), daemon=True) for a in agents]
            for t in threads:
                t.start()
            barrier.wait()
            start = time.perf_counter()
            self0 = time.process_time()
            for t in threads:
                t.join(600)
            wall = time.perf_counter() - start
            cpu = cpu_seconds(proc.pid) - cpu0
            client_cpu = time.process_time() - self0

            # A retried batch: all duplicates, nothing stored twice.
            agent = agents[0]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                status, again = post(conn, tokens[agent], work[agent][0][0])
            finally:
                conn.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

        with sqlite3.connect(db) as conn_db:
            stored, distinct = conn_db.execute(
                "SELECT count(*), count(DISTINCT id) FROM records").fetchone()
            stored_ids = {r[0] for r in conn_db.execute("SELECT id FROM records")}
        sent_ids = {i for w in work.values() for _, ids in w for i in ids}
        acked_n = sum(len(v) for v in acked.values())

        batches = len(latencies)
        print(f"collector: uvicorn + Starlette, SQLite synchronous={args.synchronous.upper()} "
              f"(WAL), {args.workers} worker process(es),\n  {args.clients} concurrent clients, "
              f"{args.rounds} rounds of {args.batch}-record batches, loopback, "
              f"{os.cpu_count()} CPUs shared by both")
        print(f"  records/s      {acked_n / wall:>12,.0f}   (goal {GOAL_RECORDS_S:,})")
        print(f"  batches/s      {batches / wall:>12,.1f}")
        print(f"  MiB/s          {body_bytes / wall / 2**20:>12,.1f}")
        print(f"  wall           {wall:>12.2f} s")
        print(f"  collector CPU  {cpu:>12.2f} s  ({cpu / max(acked_n, 1) * 1e6:.1f} µs/record)")
        print(f"  clients' CPU   {client_cpu:>12.2f} s  (this process)")
        if latencies:
            q = statistics.quantiles(latencies, n=100) if batches > 1 else latencies * 99
            print(f"  batch latency  p50 {q[49] * 1000:.0f} ms, p95 {q[94] * 1000:.0f} ms, "
                  f"max {max(latencies) * 1000:.0f} ms")
        print(f"  sent {total:,}, acknowledged {acked_n:,}, stored {stored:,} "
              f"({distinct:,} distinct ids), failures {len(failures)}")
        print(f"  repeat of one batch: {status} accepted={again.get('accepted')} "
              f"duplicates={again.get('duplicates')}")
        for f in failures[:5]:
            print(f"  failure: {f}")
        lost = len(sent_ids - stored_ids)
        extra = len(stored_ids - sent_ids)
        ok = (not failures and lost == 0 and extra == 0 and stored == distinct == total
              and again.get("duplicates") == args.batch)
        print(f"  lost {lost}, unexpected {extra}, doubled {stored - distinct}: "
              f"{'OK' if ok else 'FAILED'}")
        reached = acked_n / wall >= GOAL_RECORDS_S
        print(f"  goal {'reached' if reached else 'NOT reached'}")
        return 0 if ok else 1


def profile(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="nv-bench-") as tmp, \
            Store(Path(tmp) / "p.db", synchronous=args.synchronous) as store:
        tmpl = templates("agent-000")
        bodies = [make_batch(tmpl, args.batch)[0] for _ in range(args.rounds * 5)]
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        for body in bodies:
            records = check_batch(body, "agent-000")
            assert isinstance(records, list)
            store.add_records(records)
        prof.disable()
        wall = time.perf_counter() - t
        n = len(bodies) * args.batch
        print(f"ingest path in one thread (profiled): {n / wall:,.0f} records/s")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(18)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--synchronous", choices=["full", "normal"], default="full")
    ap.add_argument("--workers", type=int, default=1, help="collector processes")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    return profile(args) if args.profile else run(args)


if __name__ == "__main__":
    sys.exit(main())
