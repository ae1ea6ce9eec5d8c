"""The collector: a real uvicorn server on loopback over a real SQLite file.

Every refusal is checked for what it answers *and* for what it did not store.
"""

from __future__ import annotations

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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds  # type: ignore[import-untyped]
import pytest

from conftest import NETVANTAGE, run_cli
from netvantage.collector.app import check_batch
from netvantage.collector.serve import BackgroundCollector
from netvantage.collector.store import Store, hash_token
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
    assert check_batch(good, "a") == [decode_record(good)]


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
