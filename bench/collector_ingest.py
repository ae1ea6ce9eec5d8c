"""Collector ingest throughput: many agents uploading at once to one collector.

The collector runs as its own process (``netvantage collector serve`` on a
loopback ephemeral port).  This process plays ``--clients`` agents (50 by
default), each a thread with its own token and its own keep-alive
``http.client`` connection, each posting ``--rounds`` batches of ``--batch``
records (JSON Lines, valid ping and tcp records with fresh ids).  Bodies are
built before the clock starts, so the figure is the collector's, not the
record generator's.  Clients and collector share the machine's CPUs.

One run measures, one after the other, each with a fresh store:

1. **SQLite** (a file in a temporary directory, WAL, ``--synchronous``);
2. **PostgreSQL**: Debian's server started in a temporary directory for the
   run (:class:`~netvantage.lab.postgres.TempPostgres`, default durability:
   fsync on), ``collector serve --store postgresql://…``; its server's CPU is
   printed beside the collector's;
3. **SQLite with a CPU-bound process beside it** (one busy loop, as another
   job holding a core would).

Each prints records/s over the wall time from the first request to the last
answer, the collector's CPU time per record, batch latency percentiles and the
check that nothing was lost or doubled (the store holds exactly the ids sent,
every answer acknowledged exactly its batch's ids, then a repeat of one batch
answers all duplicates), with the load average before the run: other jobs on
the machine slow every figure, and a run started above a load of
:data:`QUIET_LOAD` is marked as not a quiet-machine figure.  Goals: SQLite
100,000 records/s and at most 10 µs of collector CPU per record on a quiet
machine, 50,000 records/s with the busy process.

    .venv/bin/python bench/collector_ingest.py [--clients 50] [--batch 1000] [--rounds 4]
        [--synchronous full|normal] [--workers N] [--only sqlite|postgresql|busy]...
        [--profile]

``--profile`` instead runs the ingest path in this process, one thread, the
collector's garbage-collector settings (decode and validate, the body's lines,
the store write, the answer, freeing the batch; ``--clients`` agents'
batches in turn, as many as a run sends): first timed per step with the
process's CPU time, then again under cProfile, whose top functions it prints.

Not a test: it prints figures and exits non-zero only when records were lost
or doubled.
"""

from __future__ import annotations

import argparse
import cProfile
import http.client
import importlib.util
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

import msgspec

from netvantage.collector.app import check_batch, record_lines
from netvantage.collector.serve import tune_gc
from netvantage.collector.store import AgentReport, Store, open_store
from netvantage.lab.postgres import TempPostgres
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
GOAL_QUIET_RECORDS_S = 100_000
GOAL_BUSY_RECORDS_S = 50_000
GOAL_CPU_US = 10.0
#: A run that starts with the 1-minute load average above this is not a quiet-machine figure.
QUIET_LOAD = 0.5
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


def start_collector(db: str, synchronous: str, workers: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [NETVANTAGE, "collector", "serve", "--store", db, "--port", "0",
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


def tree_cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def postgres_pids(server: TempPostgres) -> list[int]:
    """The postmaster (its children are counted through it)."""
    pid_file = server.data / "postmaster.pid"
    return [int(pid_file.read_text().split()[0])] if pid_file.exists() else []


def stored_keys(spec: str) -> tuple[int, set[tuple[str, str]]]:
    """(rows stored, distinct (agent, id) keys), read with SQL (decoding would take longer)."""
    if spec.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(spec) as conn:
            keys = [(str(a), str(i)) for a, i in conn.execute("SELECT agent, id FROM records")]
    else:
        with sqlite3.connect(spec) as conn_db:
            keys = [(str(a), str(i)) for a, i in conn_db.execute("SELECT agent, id FROM records")]
    return len(keys), set(keys)


class Busy:
    """A CPU-bound process (a busy loop) beside the run, as another job holding a core."""

    def __enter__(self) -> Busy:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait(10)


def run_one(args: argparse.Namespace, title: str, spec: str,
            server_pids: list[int] | None = None) -> dict[str, float | bool]:
    """One measured run against the store ``spec`` names (fresh and empty)."""
    agents = [f"agent-{i:03d}" for i in range(args.clients)]
    with open_store(spec) as store:
        tokens = {a: store.add_agent(a) for a in agents}
    work: dict[str, list[tuple[bytes, list[str]]]] = {}
    for a in agents:
        tmpl = templates(a)
        work[a] = [make_batch(tmpl, args.batch) for _ in range(args.rounds)]
    body_bytes = sum(len(b) for w in work.values() for b, _ in w)
    total = args.clients * args.rounds * args.batch

    load = os.getloadavg()[0]
    proc, port = start_collector(spec, args.synchronous, args.workers)
    try:
        cpu0 = cpu_seconds(proc.pid)
        server0 = tree_cpu_seconds(server_pids or [])
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
        server_cpu = tree_cpu_seconds(server_pids or []) - server0
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

    stored, stored_ids = stored_keys(spec)
    sent_ids = {(a, i) for a, w in work.items() for _, ids in w for i in ids}
    acked_n = sum(len(v) for v in acked.values())
    batches = len(latencies)
    rate = acked_n / wall
    per_record = cpu / max(acked_n, 1) * 1e6
    quiet = load <= QUIET_LOAD
    print(f"\n{title}: load average {load:.2f} before the run"
          f"{'' if quiet else ' (other jobs running: NOT a quiet-machine figure)'}")
    print(f"  {args.clients} clients x {args.rounds} batches of {args.batch} records "
          f"({body_bytes / total:.0f} B/record), {args.workers} collector process(es), "
          f"{os.cpu_count()} CPUs shared by all")
    print(f"  records/s      {rate:>12,.0f}")
    print(f"  MiB/s          {body_bytes / wall / 2**20:>12,.1f}")
    print(f"  wall           {wall:>12.2f} s")
    print(f"  collector CPU  {cpu:>12.2f} s  ({per_record:.1f} µs/record: one core's worth "
          f"would be {1e6 / max(per_record, 1e-9):,.0f} records/s)")
    if server_pids:
        print(f"  database CPU   {server_cpu:>12.2f} s  "
              f"({server_cpu / max(acked_n, 1) * 1e6:.1f} µs/record, the PostgreSQL server)")
    print(f"  clients' CPU   {client_cpu:>12.2f} s  (this process)")
    if latencies:
        q = statistics.quantiles(latencies, n=100) if batches > 1 else latencies * 99
        print(f"  batch latency  p50 {q[49] * 1000:.0f} ms, p95 {q[94] * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms")
    print(f"  sent {total:,}, acknowledged {acked_n:,}, stored {stored:,} "
          f"({len(stored_ids):,} distinct), failures {len(failures)}")
    print(f"  repeat of one batch: {status} accepted={again.get('accepted')} "
          f"duplicates={again.get('duplicates')}")
    for f in failures[:5]:
        print(f"  failure: {f}")
    lost = len(sent_ids - stored_ids)
    extra = len(stored_ids - sent_ids)
    ok = (not failures and lost == 0 and extra == 0 and stored == len(stored_ids) == total
          and again.get("duplicates") == args.batch)
    print(f"  lost {lost}, unexpected {extra}, doubled {stored - len(stored_ids)}: "
          f"{'OK' if ok else 'FAILED'}")
    return {"rate": rate, "cpu_us": per_record, "ok": ok, "quiet": quiet, "load": load}


def run(args: argparse.Namespace) -> int:
    only = set(args.only or ["sqlite", "postgresql", "busy"])
    results: dict[str, dict[str, float | bool]] = {}
    # uvicorn runs on uvloop when this environment has it (the collector extra does).
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(f"collector ingest: uvicorn (httptools, {loop}) + Starlette, {os.cpu_count()} CPUs, "
          f"loopback; SQLite synchronous={args.synchronous.upper()} (WAL)")
    with tempfile.TemporaryDirectory(prefix="nv-bench-") as tmp:
        if "sqlite" in only:
            results["sqlite"] = run_one(args, "SQLite", str(Path(tmp) / "quiet.db"))
        if "postgresql" in only:
            with TempPostgres() as pg:
                url = pg.create_database("bench")
                results["postgresql"] = run_one(
                    args, "PostgreSQL (same clients, a local server, fsync on)", url,
                    postgres_pids(pg))
        if "busy" in only:
            with Busy():
                results["busy"] = run_one(args, "SQLite, with a CPU-bound process beside it",
                                          str(Path(tmp) / "busy.db"))
    print("\ngoals:")
    if "sqlite" in results:
        r = results["sqlite"]
        met = r["rate"] >= GOAL_QUIET_RECORDS_S and r["cpu_us"] <= GOAL_CPU_US
        note = "" if r["quiet"] else f" (load {r['load']:.2f}: not a quiet machine)"
        print(f"  SQLite >= {GOAL_QUIET_RECORDS_S:,} records/s and <= {GOAL_CPU_US:g} µs CPU/"
              f"record: {r['rate']:,.0f}/s, {r['cpu_us']:.1f} µs: "
              f"{'met' if met else 'NOT met'}"
              f"{note}")
    if "postgresql" in results:
        r = results["postgresql"]
        print(f"  PostgreSQL (no goal): {r['rate']:,.0f}/s, {r['cpu_us']:.1f} µs collector "
              "CPU/record")
    if "busy" in results:
        r = results["busy"]
        print(f"  SQLite beside a busy process >= {GOAL_BUSY_RECORDS_S:,} records/s: "
              f"{r['rate']:,.0f}/s: {'met' if r['rate'] >= GOAL_BUSY_RECORDS_S else 'NOT met'}"
              f" (load {r['load']:.2f} before it)")
    ok = all(r["ok"] for r in results.values())
    print(f"  0 lost, 0 doubled in every run: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


STEPS = ("decode + validate", "body lines", "store write", "answer", "free the batch")


def ingest_steps(store: Store, batches: list[tuple[str, bytes]]) -> list[float]:
    """CPU seconds of each of :data:`STEPS` over ``batches`` ((agent, body)), as the
    collector's ``_decode`` and ``_store`` take them."""
    spent = [0.0] * len(STEPS)
    clock = time.process_time
    for agent, body in batches:
        t0 = clock()
        records = check_batch(body, agent)
        assert isinstance(records, list)
        t1 = clock()
        lines = record_lines(body, len(records))
        t2 = clock()
        result = store.add_records(records, AgentReport(agent), texts=lines)
        t3 = clock()
        answer = msgspec.json.encode({"accepted": len(result.accepted),
                                      "duplicates": len(result.duplicates),
                                      "ids": [r.id for r in records]})
        t4 = clock()
        del records, lines, result, answer
        t5 = clock()
        for i, d in enumerate((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            spent[i] += d
    return spent


def profile(args: argparse.Namespace) -> int:
    agents = [f"agent-{i:03d}" for i in range(args.clients)]
    per_agent = {a: [make_batch(templates(a), args.batch)[0] for _ in range(args.rounds)]
                 for a in agents}
    batches = [(a, per_agent[a][r]) for r in range(args.rounds) for a in agents]
    n = len(batches) * args.batch
    tune_gc()
    print(f"ingest path in one thread, {len(batches)} batches of {args.batch} records from "
          f"{args.clients} agents, SQLite synchronous={args.synchronous.upper()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="nv-bench-") as tmp:
        with Store(Path(tmp) / "steps.db", synchronous=args.synchronous) as store:
            spent = ingest_steps(store, batches)
        for step, seconds in zip(STEPS, spent, strict=True):
            print(f"  {step:<18} {seconds / n * 1e6:6.2f} µs/record")
        print(f"  {'whole path':<18} {sum(spent) / n * 1e6:6.2f} µs/record (CPU time)")
        with Store(Path(tmp) / "profiled.db", synchronous=args.synchronous) as store:
            prof = cProfile.Profile()
            prof.enable()
            ingest_steps(store, batches)
            prof.disable()
        print("\nthe same again under cProfile (its own cost inflates Python calls):")
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--synchronous", choices=["full", "normal"], default="full")
    ap.add_argument("--workers", type=int, default=1, help="collector processes")
    ap.add_argument("--only", action="append", choices=["sqlite", "postgresql", "busy"],
                    help="run only this part (repeatable)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    return profile(args) if args.profile else run(args)


if __name__ == "__main__":
    sys.exit(main())
