"""The collector: a real uvicorn server on loopback over a real SQLite file.

Every refusal is checked for what it answers *and* for what it did not store.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import http.client
import json
import select
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.dataset as ds  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import NETVANTAGE, run_cli
from netvantage.agent.spool import Spool
from netvantage.agent.upload import Uploader
from netvantage.collector.app import (
    BLOCK_MIN_BYTES,
    DEFAULT_MAX_BODY_BYTES,
    MAX_PROBLEMS,
    check_batch,
    record_lines,
)
from netvantage.collector.serve import BackgroundCollector
from netvantage.collector.store import Store, hash_token, utc_text
from netvantage.lab.pki import LabCA
from netvantage.results import (
    AnyRecord,
    PingBody,
    PingRecord,
    TcpAttempt,
    TcpBody,
    TcpRecord,
    decode_record,
    encode_record,
    new_id,
    read_jsonl,
)

NDJSON = "application/x-ndjson"
DAY1 = datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC)
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "campaigns" / "lab-sample.jsonl"
DAY2 = datetime(2026, 11, 28, 0, 0, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- helpers


def ping(agent: str, *, started: datetime = DAY2, target: str = "ams.example",
         samples: list[float | None] | None = None) -> PingRecord:
    body = PingBody.from_samples(samples if samples is not None else [10.0, None, 12.5, 11.0],
                                 ip_version=4, socket="raw", payload_bytes=56, interval_s=1.0,
                                 timeout_s=2.0, dont_fragment=False)
    return PingRecord(id=new_id(), agent=agent, region="ZM-LUN", target=target,
                      address="192.0.2.7", started_at=started, duration_ms=3012.5,
                      status="ok", body=body)


def tcp(agent: str, *, started: datetime = DAY2, target: str = "ams.example") -> TcpRecord:
    attempts = [TcpAttempt(status="ok", connect_ms=20.5, handshake_rtt_ms=20.1),
                TcpAttempt(status="timeout", error="no answer in 2 s")]
    body = TcpBody.from_attempts(attempts, port=25, ip_version=4, timeout_s=2.0)
    return TcpRecord(id=new_id(), agent=agent, target=target, address="192.0.2.7",
                     started_at=started, duration_ms=2020.0, status="ok", body=body)


def batch(agent: str, n: int, **kw: Any) -> list[AnyRecord]:
    return [ping(agent, **kw) if i % 2 == 0 else tcp(agent, **kw) for i in range(n)]


def lines(records: list[AnyRecord]) -> bytes:
    return b"".join(encode_record(r) + b"\n" for r in records)


def post(url: str, token: str | None, body: bytes | Any, *, content_type: str = NDJSON,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        h = {"Content-Type": content_type, **(headers or {})}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        conn.request("POST", "/v1/records", body=body, headers=h)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def stored_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM records")]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "collector.db") as s:
        yield s


@pytest.fixture
def tokens(store: Store) -> dict[str, str]:
    return {name: store.add_agent(name) for name in ("lusaka-1", "harare-1", "maputo-1")}


@pytest.fixture
def collector(store: Store, tokens: dict[str, str]) -> Iterator[BackgroundCollector]:
    with BackgroundCollector(store, max_body_bytes=1024 * 1024) as c:
        yield c


# --------------------------------------------------------------------------- ingest


def test_health_needs_no_token(collector):
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=10)
    try:
        conn.request("GET", "/v1/health")
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read()) == {"ok": True}
    finally:
        conn.close()


def test_good_batch_is_stored_and_counted(collector, store, tokens):
    records = batch("lusaka-1", 10)
    status, answer = post(collector.url, tokens["lusaka-1"], lines(records))
    assert status == 200
    assert answer == {"accepted": 10, "duplicates": 0, "ids": [r.id for r in records]}
    assert store.count() == 10
    assert store.counts() == {("lusaka-1", "ping", "ams.example"): 5,
                              ("lusaka-1", "tcp", "ams.example"): 5}
    assert sorted(store.iter_records(), key=lambda r: r.id) == sorted(records, key=lambda r: r.id)


def test_same_batch_again_is_all_duplicates(collector, store, tokens):
    records = batch("lusaka-1", 6)
    body = lines(records)
    assert post(collector.url, tokens["lusaka-1"], body)[0] == 200
    status, answer = post(collector.url, tokens["lusaka-1"], body)
    assert status == 200
    assert answer == {"accepted": 0, "duplicates": 6, "ids": [r.id for r in records]}
    # Half old, half new, and a record repeated inside the batch.
    fresh = batch("lusaka-1", 3)
    mixed = [*records[:3], *fresh, fresh[0]]
    status, answer = post(collector.url, tokens["lusaka-1"], lines(mixed))
    assert (status, answer["accepted"], answer["duplicates"]) == (200, 3, 4)
    assert answer["ids"] == [r.id for r in mixed]
    ids = stored_ids(store.path)
    assert len(ids) == len(set(ids)) == 9


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz", "Bearer "])
def test_no_or_wrong_token_is_401(collector, store, header):
    headers = {"Content-Type": NDJSON}
    if header is not None:
        headers["Authorization"] = header
    conn = http.client.HTTPConnection("127.0.0.1", collector.port, timeout=10)
    try:
        conn.request("POST", "/v1/records", body=lines(batch("lusaka-1", 2)), headers=headers)
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        assert resp.status == 401
        assert resp.getheader("WWW-Authenticate", "").startswith("Bearer")
    finally:
        conn.close()
    assert "token" in answer["error"]
    assert answer["problems"] == []
    assert store.count() == 0


def test_record_in_another_agents_name_is_403_naming_the_line(collector, store, tokens):
    records = batch("lusaka-1", 4)
    records[2] = ping("harare-1")
    status, answer = post(collector.url, tokens["lusaka-1"], lines(records))
    assert status == 403
    assert "another agent" in answer["error"]
    assert answer["problems"] == [{
        "line": 3, "id": records[2].id,
        "reason": "record names agent 'harare-1' but the token belongs to 'lusaka-1'"}]
    assert store.count() == 0


def test_malformed_json_is_400_naming_the_line(collector, store, tokens):
    good = lines(batch("lusaka-1", 3)).split(b"\n")
    body = b"\n".join([good[0], good[1][:40], good[2]]) + b"\n"
    status, answer = post(collector.url, tokens["lusaka-1"], body)
    assert status == 400
    assert [(p["line"], p["id"]) for p in answer["problems"]] == [(2, None)]
    assert "malformed JSON" in answer["problems"][0]["reason"]
    assert store.count() == 0


def test_schema_violations_are_422_listing_every_bad_line(collector, store, tokens):
    records = batch("lusaka-1", 6)
    raw = [json.loads(encode_record(r)) for r in records]
    raw[1]["status"] = "fine"                       # not a status
    raw[3]["body"]["rtts_ms"] = [1.0, -5.0]         # negative RTT (and counts disagree)
    raw[4]["kind"] = "carrier-pigeon"               # unknown kind
    raw[5]["schema"] = 99                           # newer schema
    body = b"".join(json.dumps(x).encode() + b"\n" for x in raw)
    status, answer = post(collector.url, tokens["lusaka-1"], body)
    assert status == 422
    problems = {p["line"]: p for p in answer["problems"]}
    assert sorted(problems) == [2, 4, 5, 6]
    assert all(problems[n]["id"] == records[n - 1].id for n in problems)
    assert "status" in problems[2]["reason"]
    assert "unknown kind 'carrier-pigeon'" in problems[5]["reason"]
    assert "newer" in problems[6]["reason"]
    assert "4 line(s)" in answer["error"]
    assert store.count() == 0


def test_one_bad_record_among_good_ones_stores_nothing(collector, store, tokens):
    records = batch("lusaka-1", 200)
    raw = lines(records).split(b"\n")
    raw[150] = raw[150].replace(b'"error":null', b'"error":"but why"', 1)
    status, answer = post(collector.url, tokens["lusaka-1"], b"\n".join(raw))
    assert status == 422
    assert [p["line"] for p in answer["problems"]] == [151]
    assert "no error text" in answer["problems"][0]["reason"]
    assert store.count() == 0
    # Fixed, the same batch goes through whole.
    assert post(collector.url, tokens["lusaka-1"], lines(records))[1]["accepted"] == 200


def test_body_over_the_limit_is_413(collector, store, tokens):
    records = batch("lusaka-1", 3000)   # about 1.6 MiB, the fixture's limit is 1 MiB
    body = lines(records)
    assert len(body) > 1024 * 1024
    status, answer = post(collector.url, tokens["lusaka-1"], body)
    assert status == 413
    assert "limit is 1048576 bytes" in answer["error"]
    # Without Content-Length (http.client sends an iterator chunked): the streamed size.
    chunks = iter([body[i:i + 65536] for i in range(0, len(body), 65536)])
    status, answer = post(collector.url, tokens["lusaka-1"], chunks)  # chunked
    assert status == 413
    assert "passed 1048576 bytes" in answer["error"]
    assert store.count() == 0


def test_chunked_body_under_the_limit_is_fine(collector, store, tokens):
    body = lines(batch("lusaka-1", 50))
    chunks = iter([body[i:i + 1000] for i in range(0, len(body), 1000)])
    status, answer = post(collector.url, tokens["lusaka-1"], chunks)  # chunked
    assert (status, answer["accepted"]) == (200, 50)


def test_wrong_content_type_is_415(collector, store, tokens):
    status, answer = post(collector.url, tokens["lusaka-1"], lines(batch("lusaka-1", 2)),
                          content_type="application/json")
    assert status == 415
    assert "application/x-ndjson" in answer["error"]
    assert store.count() == 0
    # Parameters are allowed.
    status, _ = post(collector.url, tokens["lusaka-1"], lines(batch("lusaka-1", 2)),
                     content_type="application/x-ndjson; charset=utf-8")
    assert status == 200


def test_blank_lines_and_missing_final_newline_are_fine(collector, tokens):
    records = batch("lusaka-1", 3)
    body = b"\n\n".join(encode_record(r) for r in records)   # no trailing newline
    status, answer = post(collector.url, tokens["lusaka-1"], body)
    assert (status, answer["accepted"]) == (200, 3)


def test_concurrent_batches_from_several_agents(collector, store, tokens):
    sent: dict[str, list[str]] = {name: [] for name in tokens}
    errors: list[BaseException] = []

    def upload(agent: str) -> None:
        try:
            for _ in range(5):
                records = batch(agent, 100, target=f"dc-{agent}")
                status, answer = post(collector.url, tokens[agent], lines(records))
                assert (status, answer["accepted"]) == (200, 100)
                sent[agent] += answer["ids"]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upload, args=(a,)) for a in tokens for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert not any(t.is_alive() for t in threads)
    assert store.count() == 3 * 3 * 5 * 100
    ids = stored_ids(store.path)
    assert len(set(ids)) == len(ids) == sum(len(v) for v in sent.values())
    counts = store.counts()
    for agent in tokens:
        assert counts[(agent, "ping", f"dc-{agent}")] == 750
        assert counts[(agent, "tcp", f"dc-{agent}")] == 750


def test_retries_refusals_and_conflicts_at_once_through_the_two_ingest_threads(
        collector, store, tokens):
    """Batches wait in two queues (decoding, then storing): sent at once, the same
    batch is still stored once, and refused or conflicting batches store nothing."""
    agent = "lusaka-1"
    same = batch(agent, 200)
    kept = batch(agent, 2)
    assert post(collector.url, tokens[agent], lines(kept))[0] == 200
    changed = msgspec.structs.replace(kept[0], target="elsewhere.example")  # same id
    bad = lines(batch(agent, 3)) + b"{not json\n"
    bodies = [lines(same)] * 6 + [bad] * 3 + [lines([changed, *batch(agent, 5)])] * 3
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def upload(body: bytes) -> None:
        got = post(collector.url, tokens[agent], body)
        with lock:
            answers.append(got)

    threads = [threading.Thread(target=upload, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    ok = [a for s, a in answers if s == 200]
    assert len(ok) == 6
    assert all(a["ids"] == [r.id for r in same] for a in ok)
    assert sum(a["accepted"] for a in ok) == 200  # stored by exactly one of the six
    assert sum(a["duplicates"] for a in ok) == 5 * 200
    assert sorted(s for s, _ in answers if s != 200) == [400] * 3 + [409] * 3
    assert store.count() == 202
    assert sorted(stored_ids(store.path)) == sorted(r.id for r in [*same, *kept])


def test_store_is_readable_by_another_connection_while_the_collector_writes(
        collector, store, tokens):
    done = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(20):
                status, _ = post(collector.url, tokens["maputo-1"],
                                 lines(batch("maputo-1", 250)))
                assert status == 200
        except BaseException as exc:
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[int] = []
    other: list[int] = []
    # No busy timeout at all: a read that had to wait for the writer would fail
    # at once ("database is locked") instead of waiting.  In WAL mode none does.
    reader = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True, timeout=0)
    try:
        while not done.is_set():
            # A read never waits for the writer (WAL), and a batch is seen whole or not at all.
            seen.append(reader.execute("SELECT count(*) FROM records").fetchone()[0])
            if not other:
                # Another process too, while writes go on.
                out = subprocess.run(
                    [sys.executable, "-c",
                     "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=0); "
                     "print(c.execute('select count(*) from records').fetchone()[0])",
                     str(store.path)], capture_output=True, text=True, timeout=30, check=True)
                other.append(int(out.stdout))
            done.wait(0.005)  # paces the reads; returns at once when the writer is done
    finally:
        reader.close()
        thread.join(60)
    assert not failures
    assert not thread.is_alive()
    assert all(n % 250 == 0 for n in seen + other)
    assert seen == sorted(seen)
    assert store.count() == 5000
    assert len(set(seen)) > 1, "the reader should have seen the store grow"


def test_check_batch_prefers_the_most_basic_problem():
    good = encode_record(ping("a"))
    bad_json = b"{nope"
    bad_schema = good.replace(b'"status":"ok"', b'"status":"great"')
    foreign = encode_record(ping("b"))
    result = check_batch(b"\n".join([good, foreign, bad_schema, bad_json]), "a")
    assert not isinstance(result, list)
    assert result.status == 400
    assert [p.line for p in result.problems] == [2, 3, 4]
    result = check_batch(b"\n".join([good, foreign, bad_schema]), "a")
    assert not isinstance(result, list) and result.status == 422
    result = check_batch(b"\n".join([good, foreign]), "a")
    assert not isinstance(result, list) and result.status == 403
    accepted = check_batch(good, "a")
    assert isinstance(accepted, list)
    assert msgspec.to_builtins(accepted) == msgspec.to_builtins([decode_record(good)])


def test_check_batch_gives_every_kind_s_records_as_the_schema_reads_them():
    # The lab campaign's records (every kind), as one agent's batch: the ping and tcp
    # records come as results.bulk's lean structs, with the same fields and encoded to the
    # same text as the schema's classes; the kind the store files each under is its own.
    from netvantage.collector.store import _KIND

    lines = SAMPLE.read_bytes().splitlines()
    records = [msgspec.structs.replace(r, agent="a") for r in map(decode_record, lines)]
    body = b"\n".join(encode_record(r) for r in records) + b"\n"
    got = check_batch(body, "a")
    assert isinstance(got, list) and len(got) == len(records)
    assert {r.kind for r in records} >= {"ping", "tcp", "trace", "smtp", "imap"}
    assert any(type(r).__name__.startswith("Lean") for r in got)  # a large batch
    small = b"\n".join(body.splitlines()[:20]) + b"\n"
    assert len(body) >= BLOCK_MIN_BYTES > len(small)
    few = check_batch(small, "a")  # a small one: record by record, the schema's classes
    assert isinstance(few, list) and not any(type(r).__name__.startswith("Lean") for r in few)
    assert msgspec.to_builtins(few) == msgspec.to_builtins(records[:20])
    assert [msgspec.json.encode(r) for r in got] == [encode_record(r) for r in records]
    assert [_KIND[type(r)] for r in got] == [r.kind for r in records]
    # A ping whose mean is off its samples, in the middle: refused, with its line.
    ping_at = next(i for i, r in enumerate(records) if r.kind == "ping")
    off = encode_record(records[ping_at])
    mean = msgspec.json.decode(off)["body"]["stats"]["mean_ms"]
    wrong = off.replace(f'"mean_ms":{mean}'.encode(), f'"mean_ms":{mean + 1}'.encode())
    assert wrong != off
    body = b"\n".join([*body.splitlines()[:ping_at], wrong, *body.splitlines()[ping_at + 1:]])
    refused = check_batch(body, "a")
    assert not isinstance(refused, list) and refused.status == 422
    assert [p.line for p in refused.problems] == [ping_at + 1]


# --------------------------------------------------------------------------- commands


def test_add_agent_prints_a_token_that_works_and_only_its_hash_is_stored(tmp_path):
    db = tmp_path / "c.db"
    proc = run_cli("collector", "add-agent", "lusaka-1", "--store", str(db))
    assert proc.returncode == 0, proc.stderr
    token = proc.stdout.strip()
    assert len(token) == 43 and "\n" not in token
    again = run_cli("collector", "add-agent", "lusaka-1", "--store", str(db))
    assert again.returncode == 2
    assert "--rotate" in again.stderr

    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, token_sha256 FROM agents").fetchall()
    assert rows == [("lusaka-1", hashlib.sha256(token.encode()).hexdigest())]
    assert token.encode() not in db.read_bytes()

    with Store(db) as store, BackgroundCollector(store) as c:
        assert post(c.url, token, lines(batch("lusaka-1", 2)))[0] == 200
        rotated = run_cli("collector", "add-agent", "lusaka-1", "--store", str(db), "--rotate")
        assert rotated.returncode == 0
        new = rotated.stdout.strip()
        assert new != token
        assert post(c.url, token, lines(batch("lusaka-1", 2)))[0] == 401
        assert post(c.url, new, lines(batch("lusaka-1", 2)))[0] == 200
        assert store.agent_for_token(new) == "lusaka-1"
        assert hash_token(new) == hashlib.sha256(new.encode()).hexdigest()


def _start_serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([NETVANTAGE, "collector", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        proc.kill()
        proc.wait(10)
        pytest.fail("collector serve printed nothing in 30 s")
    line = proc.stdout.readline()
    assert "listening on" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line.split()[4]


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


def test_serve_command_stores_and_stops_gracefully_on_sigterm(tmp_path):
    db = tmp_path / "c.db"
    token = run_cli("collector", "add-agent", "lusaka-1", "--store", str(db)).stdout.strip()
    proc, url = _start_serve("--store", str(db), "--max-body-mb", "0.01")
    try:
        assert url.startswith("http://127.0.0.1:")
        records = batch("lusaka-1", 10)
        assert post(url, token, lines(records))[1]["accepted"] == 10
        status, answer = post(url, token, lines(batch("lusaka-1", 100)))
        assert status == 413
        assert "10485 bytes" in answer["error"]
    finally:
        rc = _stop(proc)
    assert rc == 0, proc.stderr.read() if proc.stderr else ""
    assert sorted(stored_ids(db)) == sorted(r.id for r in records)
    # The store was closed cleanly: the last connection folded the log into the file.
    assert not (tmp_path / "c.db-wal").exists() or (tmp_path / "c.db-wal").stat().st_size == 0


def test_serve_with_two_worker_processes(tmp_path):
    db = tmp_path / "c.db"
    token = run_cli("collector", "add-agent", "lusaka-1", "--store", str(db)).stdout.strip()
    proc, url = _start_serve("--store", str(db), "--workers", "2")
    sent: list[str] = []
    try:
        for _ in range(6):
            records = batch("lusaka-1", 50)
            status, answer = post(url, token, lines(records))
            assert (status, answer["accepted"]) == (200, 50)
            sent += answer["ids"]
        assert post(url, token, lines(records))[1]["duplicates"] == 50
    finally:
        assert _stop(proc) == 0
    assert sorted(stored_ids(db)) == sorted(sent)


def test_serve_over_tls(tmp_path):
    ca = LabCA.create(tmp_path / "ca")
    issued = ca.issue("collector", ips=["127.0.0.1"], directory=tmp_path / "tls")
    db = tmp_path / "c.db"
    token = run_cli("collector", "add-agent", "lusaka-1", "--store", str(db)).stdout.strip()
    proc, url = _start_serve("--store", str(db), "--tls-cert", str(issued.chain),
                             "--tls-key", str(issued.key))
    try:
        assert url.startswith("https://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        context = ssl.create_default_context(cafile=str(ca.cert_path))
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
        try:
            conn.request("POST", "/v1/records", body=lines(batch("lusaka-1", 4)),
                         headers={"Authorization": f"Bearer {token}", "Content-Type": NDJSON})
            resp = conn.getresponse()
            assert (resp.status, json.loads(resp.read())["accepted"]) == (200, 4)
        finally:
            conn.close()
    finally:
        assert _stop(proc) == 0


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    """A store with pings and tcps over two UTC days, from two agents."""
    db = tmp_path / "filled.db"
    with Store(db) as store:
        store.add_records(batch("lusaka-1", 10, started=DAY1))          # 5 ping, 5 tcp
        store.add_records(batch("harare-1", 7, started=DAY2))           # 4 ping, 3 tcp
        store.add_records([ping("harare-1", started=DAY2 + timedelta(hours=3),
                                samples=[None, None])])                  # a total loss
    return db


def test_export_parquet_is_partitioned_by_kind_and_date(filled, tmp_path):
    out = tmp_path / "dataset"
    proc = run_cli("export", "--store", str(filled), "--format", "parquet", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    parts = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert parts == [
        "kind=ping/date=2026-11-27/part-0.parquet",
        "kind=ping/date=2026-11-28/part-0.parquet",
        "kind=tcp/date=2026-11-27/part-0.parquet",
        "kind=tcp/date=2026-11-28/part-0.parquet",
    ]
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 18
    rows = table.to_pylist()
    per: dict[tuple[str, str], int] = {}
    for r in rows:
        per[(r["kind"], str(r["date"]))] = per.get((r["kind"], str(r["date"])), 0) + 1
    assert per == {("ping", "2026-11-27"): 5, ("ping", "2026-11-28"): 5,
                   ("tcp", "2026-11-27"): 5, ("tcp", "2026-11-28"): 3}
    ping_rows = [r for r in rows if r["kind"] == "ping"]
    assert {r["agent"] for r in ping_rows} == {"lusaka-1", "harare-1"}
    assert all(r["started_at"].tzinfo is not None for r in rows)
    lost = [r for r in ping_rows if json.loads(r["body"])["received"] == 0]
    assert len(lost) == 1 and json.loads(lost[0]["body"])["rtts_ms"] == [None, None]
    # Refuses to overwrite.
    again = run_cli("export", "--store", str(filled), "--format", "parquet", "-o", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr
    # One kind only.
    only = tmp_path / "tcp-only"
    assert run_cli("export", "--store", str(filled), "--format", "parquet", "-o", str(only),
                   "--kind", "tcp").returncode == 0
    assert {p.name for p in only.iterdir()} == {"kind=tcp"}


def test_export_jsonl_round_trips(filled, tmp_path):
    out = tmp_path / "all.jsonl"
    proc = run_cli("export", "--store", str(filled), "--format", "jsonl", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    with Store(filled) as store:
        want = sorted(store.iter_records(), key=lambda r: r.id)
    got = read_jsonl(out)
    assert sorted(got, key=lambda r: r.id) == want
    assert len(got) == 18
    proc = run_cli("export", "--store", str(filled), "--format", "jsonl", "-o", "-",
                   "--kind", "ping")
    assert proc.returncode == 0
    assert len(proc.stdout.splitlines()) == 10


def test_export_csv(filled, tmp_path):
    out = tmp_path / "all.csv"
    proc = run_cli("export", "--store", str(filled), "--format", "csv", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 18
    assert list(rows[0])[:3] == ["id", "schema", "kind"] and list(rows[0])[-1] == "body"
    assert {r["kind"] for r in rows} == {"ping", "tcp"}
    tcp_row = next(r for r in rows if r["kind"] == "tcp")
    assert json.loads(tcp_row["body"])["port"] == 25
    assert tcp_row["region"] == ""          # missing is empty in CSV
    assert tcp_row["started_at"].endswith("Z")


def test_export_of_a_missing_store_fails_clearly(tmp_path):
    proc = run_cli("export", "--store", str(tmp_path / "none.db"), "--format", "jsonl",
                   "-o", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2
    assert "no such store" in proc.stderr
    assert not (tmp_path / "none.db").exists()


def test_the_collector_does_not_load_pyarrow(tmp_path):
    code = ("import sys; from netvantage.collector import app, serve, store; "
            "print('pyarrow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ hostile input (issue 15)


def _raw_post(url: str, token: str, body: bytes) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/v1/records", body=body,
                     headers={"Content-Type": NDJSON, "Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_a_batch_of_garbage_lines_costs_bounded_memory_and_a_small_answer(tmp_path):
    # Defect 1: 16 MiB of two-byte garbage lines built a problem object per line
    # (gigabytes); reading now stops after MAX_PROBLEMS bad lines.
    body = b"x\n" * (8 * 1024 * 1024)
    tracemalloc.start()
    try:
        result = check_batch(body, "a")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not isinstance(result, list)
    assert result.status == 400
    assert len(result.problems) == MAX_PROBLEMS
    assert "reading stopped at line 100" in result.error
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for a garbage batch"
    # Over HTTP: the answer stays small, nothing stored.
    with Store(tmp_path / "c.db") as store:
        token = store.add_agent("a")
        with BackgroundCollector(store) as c:
            status, answer = _raw_post(c.url, token, body[:DEFAULT_MAX_BODY_BYTES])
        assert status == 400
        assert len(answer) < 64 * 1024
        assert store.count() == 0


def test_one_huge_valid_json_line_is_checked_without_building_its_values():
    # A 4 MiB array of numbers is JSON but no record: it is classified (422) by a
    # syntax check, not by building millions of Python ints.
    body = b"[" + b"1," * (2 * 1024 * 1024) + b"1]\n"
    tracemalloc.start()
    try:
        result = check_batch(body, "a")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not isinstance(result, list) and result.status == 422
    assert peak < 2 * len(body), f"peak {peak} bytes"


@pytest.mark.parametrize("line, status", [
    (b"[" * 1000 + b"]" * 1000, 400),                                 # bare deep nesting
    (b'{"id":"abcdefgh","zzz":' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    (b'{"kind":"ping","x":' + b"{\"a\":" * 3000 + b"1" + b"}" * 3001, 400),
])
def test_deep_nesting_is_a_4xx_not_a_500(collector, store, tokens, line, status):
    # Defect 2: the RecursionError of the generic decoder escaped as HTTP 500.
    got, answer = post(collector.url, tokens["lusaka-1"], line + b"\n")
    assert got == status
    assert "nested too deeply" in answer["problems"][0]["reason"]
    assert store.count() == 0


def test_absurd_rtts_are_a_422_not_an_overflow(collector, store, tokens):
    # Defect 2: RTTs of 1e308 overflowed the statistics check (HTTP 500).
    raw = json.loads(encode_record(ping("lusaka-1", samples=[1.0, 2.0])))
    raw["body"]["rtts_ms"] = [1e308, 1e308]
    raw["body"]["stats"] = {"min_ms": 1e308, "median_ms": 1e308, "mean_ms": 1e308,
                            "max_ms": 1e308, "jitter_ms": 0.0}
    status, answer = post(collector.url, tokens["lusaka-1"], json.dumps(raw).encode() + b"\n")
    assert status == 422
    assert answer["problems"][0]["id"] == raw["id"]
    assert store.count() == 0


def test_ids_are_unique_per_agent_not_across_agents(collector, store, tokens):
    # Defect 3: agent B's record made agent A's record with the same id "a
    # duplicate", and A deleted it from its spool: lost.
    theirs = ping("harare-1")
    ours = msgspec.structs.replace(ping("lusaka-1"), id=theirs.id)
    assert post(collector.url, tokens["harare-1"], lines([theirs]))[1]["accepted"] == 1
    status, answer = post(collector.url, tokens["lusaka-1"], lines([ours]))
    assert (status, answer["accepted"], answer["duplicates"]) == (200, 1, 0)
    assert store.count() == 2
    assert sorted(r.agent for r in store.iter_records()) == ["harare-1", "lusaka-1"]


def test_same_agent_same_id_other_content_is_a_409_conflict(collector, store, tokens):
    first, other = ping("lusaka-1"), ping("lusaka-1")
    assert post(collector.url, tokens["lusaka-1"], lines([first]))[0] == 200
    changed = msgspec.structs.replace(first, target="elsewhere.example")
    status, answer = post(collector.url, tokens["lusaka-1"], lines([other, changed]))
    assert status == 409
    assert [p["id"] for p in answer["problems"]] == [first.id]
    assert "conflict" in answer["error"]
    assert store.count() == 1                               # nothing of the batch stored
    assert next(store.iter_records()) == first              # the stored record is kept
    # The same record again is still a plain duplicate.
    status, answer = post(collector.url, tokens["lusaka-1"], lines([first, other]))
    assert (status, answer["accepted"], answer["duplicates"]) == (200, 1, 1)
    # Inside one batch too.
    twin = ping("lusaka-1")
    status, answer = post(collector.url, tokens["lusaka-1"], lines(
        [twin, msgspec.structs.replace(twin, target="x.example")]))
    assert status == 409 and [p["id"] for p in answer["problems"]] == [twin.id]


def test_a_store_keyed_by_id_alone_is_migrated_to_agent_and_id(tmp_path):
    path = tmp_path / "old.db"
    old = ping("harare-1")
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE records (id TEXT PRIMARY KEY, agent TEXT NOT NULL, kind TEXT NOT NULL,
                region TEXT, target TEXT NOT NULL, address TEXT, started_at TEXT NOT NULL,
                status TEXT NOT NULL, source TEXT NOT NULL, received_at TEXT NOT NULL,
                json TEXT NOT NULL);
            CREATE INDEX records_kind_started ON records (kind, started_at);
            CREATE TABLE agents (name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL, rotated_at TEXT);""")
        conn.execute("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                     (old.id, old.agent, old.kind, old.region, old.target, old.address,
                      "2026-11-28T00:00:01.000000Z", old.status, old.source,
                      "2026-11-28T00:00:02.000000Z", encode_record(old).decode()))
    conn.close()
    with Store(path) as store:
        assert list(store.iter_records()) == [old]
        mine = msgspec.structs.replace(ping("lusaka-1"), id=old.id)
        result = store.add_records([mine, old])
        assert (result.accepted, result.duplicates) == ([old.id], [old.id])
        assert store.count() == 2
    with sqlite3.connect(path) as conn:
        pk = {r[1]: r[5] for r in conn.execute("PRAGMA table_info(records)")}
        indexes = [r[1] for r in conn.execute("PRAGMA index_list(records)")]
    conn.close()
    assert (pk["agent"], pk["id"]) == (1, 2)
    assert "records_started" in indexes and "records_kind_started" not in indexes
    Store(path).close()  # opening again: nothing left to migrate


def test_a_store_with_the_kind_and_time_index_moves_to_the_time_index(tmp_path):
    # A store of the version before: keyed by (agent, id), indexed by (kind, started_at).
    path = tmp_path / "before.db"
    with Store(path) as store:
        records = [ping("harare-1") for _ in range(3)]
        store.add_records(records)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX records_started")
        conn.execute("CREATE INDEX records_kind_started ON records (kind, started_at)")
    conn.close()
    with Store(path) as store:
        assert sorted(r.id for r in store.iter_records()) == sorted(r.id for r in records)
        reader = store._reader()
        indexes = {r[1] for r in reader.execute("PRAGMA index_list(records)")}
        sql, args = store._rows_query("ping", DAY1, "?", utc_text)
        plan = " | ".join(str(r[-1]) for r in reader.execute(f"EXPLAIN QUERY PLAN {sql}", args))
    assert "records_started" in indexes and "records_kind_started" not in indexes
    # The export's read walks the index: no sort of the whole table.
    assert "records_started" in plan and "TEMP B-TREE FOR ORDER BY" not in plan, plan


def test_uploader_keeps_conflicting_records_and_says_so(collector, store, tokens, tmp_path):
    # The agent's side of a 409: the records stay in its spool ("rejected", with
    # the reason), the rest of the batch goes through.
    first = ping("lusaka-1")
    assert post(collector.url, tokens["lusaka-1"], lines([first]))[0] == 200
    changed = msgspec.structs.replace(first, target="elsewhere.example")
    fresh = ping("lusaka-1")
    spool = Spool(tmp_path / "spool.db")
    try:
        spool.put(changed)
        spool.put(fresh)
        uploader = Uploader(collector.url, tokens["lusaka-1"], spool)
        for _ in range(3):
            asyncio.run(uploader.upload_once())
        assert spool.depth() == 0
        assert spool.rejected_count() == 1
        assert uploader.stats.rejected == 1
        assert any("conflict" in p for p in uploader.stats.problems)
    finally:
        spool.close()
    assert sorted(stored_ids(store.path)) == sorted([first.id, fresh.id])


@pytest.mark.parametrize("started, samples, why", [
    (datetime(2300, 1, 1, tzinfo=UTC), [10.0], "ahead of this clock"),
    (datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC), [10.0], "before 2000-01-01"),
    (DAY2, [0.0, 10.0], "> 0"),
])
def test_implausible_times_and_rtts_are_refused_at_ingest(collector, store, tokens, started,
                                                          samples, why):
    # Defect 4: the year 2300 passed and crashed analyse later; 1970 and RTT 0 passed.
    good = ping("lusaka-1", samples=[10.0])
    raw = json.loads(encode_record(good))
    raw["started_at"] = started.isoformat().replace("+00:00", "Z")
    raw["body"]["rtts_ms"] = samples
    raw["body"].update(sent=len(samples), received=len(samples), loss_ratio=0.0)
    status, answer = post(collector.url, tokens["lusaka-1"], json.dumps(raw).encode() + b"\n")
    assert status == 422, answer
    assert why in answer["problems"][0]["reason"]
    assert store.count() == 0


def test_a_stored_record_from_the_year_2300_makes_analyse_refuse_not_crash(tmp_path):
    # A store written before the bounds existed may hold such a record: analyse
    # names it and exits 2 instead of an OutOfBoundsDatetime traceback.
    path = tmp_path / "c.db"
    with Store(path) as store:
        store.add_records(batch("lusaka-1", 4))
    future = json.loads(encode_record(ping("lusaka-1")))
    future["started_at"] = "2300-01-01T00:00:00Z"
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      (future["id"], "lusaka-1", "ping", "ZM-LUN", "ams.example", None,
                       "2300-01-01T00:00:00.000000Z", "ok", "netvantage",
                       "2026-11-28T00:00:02.000000Z", json.dumps(future)))
    conn.close()
    for command in ("analyse", "report"):
        args = [command, str(path)] + (["-o", str(tmp_path / "r.html")]
                                       if command == "report" else [])
        done = run_cli(*args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert future["id"] in done.stderr and "ahead of this clock" in done.stderr


# --------------------------------------------------------------------------- property test


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


def _mutated_record(data: st.DataObject) -> bytes:
    """A valid record's JSON with one field replaced by an arbitrary JSON value."""
    raw = json.loads(encode_record(ping("a")))
    where = data.draw(st.sampled_from(["", "body", "body.stats"]))
    node = raw
    for part in filter(None, where.split(".")):
        node = node[part]
    key = data.draw(st.sampled_from(sorted(node)))
    node[key] = data.draw(_json_values)
    return json.dumps(raw).encode()


def test_ingest_never_answers_5xx_never_stores_part_of_a_batch_and_stays_small(tmp_path):
    """Arbitrary bytes and arbitrary JSON lines (alone and mixed with good records) at a
    real collector on loopback: never a 5xx, a batch is stored whole or not at all, and
    the memory traced during one request stays under a bound."""
    with Store(tmp_path / "p.db") as store:
        token = store.add_agent("a")
        with BackgroundCollector(store, max_body_bytes=256 * 1024) as c:

            @settings(max_examples=150, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])
            @given(data=st.data())
            def check(data: st.DataObject) -> None:
                pieces: list[bytes] = []
                for _ in range(data.draw(st.integers(1, 5))):
                    pieces.append(data.draw(st.one_of(
                        st.binary(max_size=300),
                        _json_values.map(lambda v: json.dumps(v).encode()),
                        st.builds(lambda: encode_record(ping("a"))),
                        st.just(b"[" * data.draw(st.integers(1, 3000))),
                        st.builds(lambda: _mutated_record(data)),
                    )))
                body = b"\n".join(pieces)
                before = store.count()
                tracemalloc.start()
                try:
                    status, answer = _raw_post(c.url, token, body)
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                assert status < 500, answer[:300]
                assert peak < 4 * 1024 * 1024 + 50 * len(body), peak
                reply = json.loads(answer)
                if status == 200:
                    assert store.count() == before + reply["accepted"]
                    assert reply["accepted"] + reply["duplicates"] == len(reply["ids"])
                else:
                    assert store.count() == before
                    assert "error" in reply and len(reply["problems"]) <= MAX_PROBLEMS

            check()


@pytest.mark.parametrize("layout", [
    "{0}\n{1}\n",  # the usual body
    "{0}\n{1}",  # no final newline
    "\n{0}\n\n  \t\n{1}\n\n",  # blank lines and lines of JSON whitespace
    "{0}\r\n{1}\r\n",  # CRLF: the carriage return is JSON whitespace, kept with its line
])
def test_the_stored_lines_are_the_lines_the_records_came_from(layout):
    first, second = ping("a"), tcp("a")
    texts = [encode_record(first).decode(), encode_record(second).decode()]
    body = layout.format(*texts).encode()
    records = check_batch(body, "a")
    assert isinstance(records, list) and [r.id for r in records] == [first.id, second.id]
    lines = record_lines(body, len(records))
    assert lines is not None and [line.rstrip("\r") for line in lines] == texts
    assert msgspec.to_builtins([decode_record(line) for line in lines]) == msgspec.to_builtins(
        records)
    assert record_lines(body, 3) is None  # a count that does not match: encode them again
