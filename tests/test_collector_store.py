"""The collector's stores: one suite run against SQLite and a real PostgreSQL server.

The PostgreSQL server is Debian's (``initdb``/``pg_ctl`` in a temporary directory,
a Unix socket only, run as ``nobody`` when the tests run as root), started once
for the module and stopped at its end; each test gets a database of its own.
Under ``CI=true`` a missing PostgreSQL fails these tests instead of skipping them.
"""

from __future__ import annotations

import http.client
import itertools
import json
import select
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pyarrow.dataset as ds  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import NETVANTAGE, invoke_cli
from netns import missing
from netvantage.agent.spool import Spool
from netvantage.agent.upload import Uploader
from netvantage.collector.export import export
from netvantage.collector.serve import BackgroundCollector
from netvantage.collector.store import (
    AgentExistsError,
    AgentReport,
    RecordStore,
    Store,
    StoreError,
    _started_texts,
    open_store,
    utc_text,
)
from netvantage.lab.postgres import PostgresMissingError, TempPostgres
from netvantage.results import (
    AnyRecord,
    PingBody,
    PingRecord,
    TcpAttempt,
    TcpBody,
    TcpRecord,
    encode_record,
    new_id,
    read_jsonl,
)

DAY = datetime(2026, 11, 28, 12, 0, 0, 250_000, tzinfo=UTC)
_names = itertools.count()


def ping(agent: str, *, started: datetime = DAY, rid: str | None = None,
         samples: list[float | None] | None = None) -> PingRecord:
    body = PingBody.from_samples(samples if samples is not None else [10.0, None, 12.5],
                                 ip_version=4, socket="raw", payload_bytes=56, interval_s=1.0,
                                 timeout_s=2.0, dont_fragment=False)
    return PingRecord(id=rid or new_id(), agent=agent, region="ZM-LUN", target="ams.example",
                      address="192.0.2.7", started_at=started, duration_ms=3012.5,
                      status="ok", body=body)


def tcp(agent: str, *, started: datetime = DAY) -> TcpRecord:
    body = TcpBody.from_attempts([TcpAttempt(status="ok", connect_ms=20.5)], port=25,
                                 ip_version=4, timeout_s=2.0)
    return TcpRecord(id=new_id(), agent=agent, target="smtp.example", started_at=started,
                     duration_ms=21.0, status="ok", body=body)


def batch(agent: str, n: int) -> list[AnyRecord]:
    return [ping(agent) if i % 2 else tcp(agent) for i in range(n)]


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def postgres() -> Iterator[TempPostgres]:
    try:
        server = TempPostgres(fsync=False)
    except PostgresMissingError as exc:
        missing(str(exc), "the PostgreSQL store tests")
    with server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh store is: a SQLite file, or a new database on the module's server."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    server: TempPostgres = request.getfixturevalue("postgres")
    return server.create_database(f"t{next(_names)}")


@pytest.fixture
def store(store_url: str) -> Iterator[RecordStore]:
    with open_store(store_url) as s:
        yield s


# --------------------------------------------------------------------------- records


def test_a_batch_is_stored_once_and_read_back_whole(store):
    records = batch("lusaka-1", 40)
    result = store.add_records(records)
    assert result.accepted == [r.id for r in records]
    assert (result.duplicates, result.conflicts) == ([], [])
    assert store.count() == 40
    assert store.count(kind="ping") == 20
    assert store.counts() == {("lusaka-1", "ping", "ams.example"): 20,
                              ("lusaka-1", "tcp", "smtp.example"): 20}
    rows = list(store.iter_rows())
    assert sorted(r.record.id for r in rows) == sorted(r.id for r in records)
    assert {r.record.id: r.record for r in rows} == {r.id: r for r in records}
    # received_at: fixed-width UTC text, now.
    for row in rows:
        assert len(row.received_at) == 27 and row.received_at.endswith("Z")
        when = datetime.fromisoformat(row.received_at)
        assert abs(when - datetime.now(UTC)) < timedelta(minutes=5)


def test_the_same_batch_again_is_all_duplicates(store):
    records = batch("lusaka-1", 30)
    store.add_records(records)
    again = store.add_records([*records[:10], records[0]])
    assert again.accepted == []
    assert again.duplicates == [r.id for r in records[:10]] + [records[0].id]
    mixed = batch("lusaka-1", 5)
    result = store.add_records([records[3], *mixed, mixed[0]])
    assert result.accepted == [r.id for r in mixed]
    assert result.duplicates == [records[3].id, mixed[0].id]
    assert store.count() == 35


def test_other_content_under_a_stored_id_is_a_conflict_and_stores_nothing(store):
    first = ping("lusaka-1", samples=[10.0])
    store.add_records([first])
    changed = ping("lusaka-1", rid=first.id, samples=[99.0])
    fresh = batch("lusaka-1", 4)
    result = store.add_records([*fresh, changed])
    assert result.conflicts == [first.id]
    assert (result.accepted, result.duplicates) == ([], [])
    assert store.count() == 1
    assert next(store.iter_records()) == first
    # A repeat inside one batch with other content: the same.
    twin = ping("lusaka-1", rid=fresh[0].id, samples=[1.0])
    assert store.add_records([fresh[0], twin]).conflicts == [fresh[0].id]
    assert store.count() == 1


def test_ids_are_unique_per_agent_not_across_agents(store):
    mine = ping("lusaka-1")
    theirs = ping("harare-1", rid=mine.id)
    assert store.add_records([mine]).accepted == [mine.id]
    assert store.add_records([theirs]).accepted == [theirs.id]
    assert store.count() == 2


def test_iter_rows_filters_by_kind_and_start_and_orders_by_time(store):
    early = [ping("a-1", started=DAY - timedelta(days=1, seconds=i)) for i in range(3)]
    late = [ping("a-1", started=DAY + timedelta(seconds=i)) for i in range(3)]
    store.add_records([*late, *early, tcp("a-1")])
    got = [r.id for r in store.iter_records(kind="ping", since=DAY)]
    assert got == [r.id for r in late]
    assert [r.started_at for r in store.iter_records(kind="ping")] == sorted(
        r.started_at for r in early + late)
    with pytest.raises(StoreError, match="timezone-aware"):
        list(store.iter_rows(since=DAY.replace(tzinfo=None)))


def test_iter_rows_gives_every_kind_in_one_time_order_ties_by_id(store):
    # Kinds interleaved in time, and three records started at the same instant: the
    # store reads them in (started_at, id) order whatever the kind or the batch order.
    at = [DAY + timedelta(seconds=s) for s in (5, 1, 3, 3, 3, 0, 4)]
    records = [(ping if i % 2 else tcp)("a-1", started=t) for i, t in enumerate(at)]
    store.add_records(records[:4])
    store.add_records(records[4:])
    want = sorted(records, key=lambda r: (r.started_at, r.id))
    assert [r.id for r in store.iter_records()] == [r.id for r in want]
    assert [r.id for r in store.iter_records(kind="tcp")] == [
        r.id for r in want if r.kind == "tcp"]
    assert [r.id for r in store.iter_records(since=DAY + timedelta(seconds=3))] == [
        r.id for r in want if r.started_at >= DAY + timedelta(seconds=3)]


def test_parquet_export_never_holds_more_rows_than_a_file_takes(store, tmp_path):
    # Kinds interleaved over two days, exported with room for 3 rows: every file holds
    # at most 3, each partition holds its own kind and date only, every record once,
    # and a partition's files, read in order, are in time order.
    from netvantage.collector.export import export_parquet

    day2 = DAY + timedelta(days=1)
    records = [(ping if i % 3 else tcp)("a-1", started=base + timedelta(minutes=i))
               for base in (DAY, day2) for i in range(11)]
    store.add_records(records)
    written = export_parquet(store, tmp_path / "pq", rows_per_file=3)
    by_id = {r.id: r for r in records}
    seen: list[str] = []
    for part in sorted((tmp_path / "pq").rglob("*.parquet")):
        kind = part.parent.parent.name.removeprefix("kind=")
        date = part.parent.name.removeprefix("date=")
        ids = ds.dataset(part).to_table().column("id").to_pylist()
        assert 1 <= len(ids) <= 3
        assert {(by_id[i].kind, by_id[i].started_at.date().isoformat()) for i in ids} == {
            (kind, date)}
        seen += ids
    assert sorted(seen) == sorted(by_id)
    assert written == {("ping", "2026-11-28"): 7, ("tcp", "2026-11-28"): 4,
                       ("ping", "2026-11-29"): 7, ("tcp", "2026-11-29"): 4}
    for (kind, date) in written:
        files = sorted((tmp_path / "pq" / f"kind={kind}" / f"date={date}").iterdir(),
                       key=lambda p: int(p.stem.removeprefix("part-")))
        ids = [i for f in files for i in ds.dataset(f).to_table().column("id").to_pylist()]
        assert [by_id[i].started_at for i in ids] == sorted(by_id[i].started_at for i in ids)


# --------------------------------------------------------------------------- agents


def test_agent_tokens(store):
    token = store.add_agent("lusaka-1")
    assert store.agent_for_token(token) == "lusaka-1"
    assert store.agent_for_token("not-a-token") is None
    assert store.agent_for_token("") is None
    with pytest.raises(AgentExistsError):
        store.add_agent("lusaka-1")
    rotated = store.add_agent("lusaka-1", rotate=True)
    assert store.agent_for_token(token) is None
    assert store.agent_for_token(rotated) == "lusaka-1"
    store.add_agent("harare-1")
    assert store.agents() == ["harare-1", "lusaka-1"]
    with pytest.raises(StoreError, match="1 to 255"):
        store.add_agent("")


def test_agent_health_counts_uploads_and_keeps_the_last_report(store):
    store.add_agent("lusaka-1")
    store.add_agent("quiet-1")
    records = batch("lusaka-1", 6)
    store.add_records(records, AgentReport("lusaka-1", backlog=40, oldest_unsent_s=12.5,
                                           clock_skew_s=-0.25))
    store.add_records(records[:2], AgentReport("lusaka-1"))  # says nothing new: kept
    changed = ping("lusaka-1", rid=records[1].id, samples=[77.0])
    store.add_records([changed], AgentReport("lusaka-1", backlog=3))
    store.add_records(batch("imported-1", 2))  # records without uploads or a token
    health = {h.agent: h for h in store.agent_health()}
    assert list(health) == ["imported-1", "lusaka-1", "quiet-1"]
    lusaka = health["lusaka-1"]
    assert (lusaka.records, lusaka.batches, lusaka.uploaded, lusaka.duplicates,
            lusaka.conflicts) == (6, 3, 6, 2, 1)
    assert (lusaka.backlog, lusaka.oldest_unsent_s, lusaka.clock_skew_s) == (3, 12.5, -0.25)
    assert lusaka.has_token and lusaka.last_seen_at is not None
    # The newest record started at DAY: the lag is the time since then.
    assert lusaka.record_lag_s == pytest.approx(
        (datetime.now(UTC) - DAY).total_seconds(), abs=600)
    quiet = health["quiet-1"]
    assert (quiet.records, quiet.batches, quiet.last_seen_at, quiet.backlog) == (0, 0, None, None)
    imported = health["imported-1"]
    assert (imported.records, imported.has_token, imported.created_at) == (2, False, None)


# --------------------------------------------------------------------------- export


def test_export_from_either_store(store, tmp_path):
    records = batch("lusaka-1", 10)
    store.add_records(records)
    assert export(store, "jsonl", tmp_path / "r.jsonl") == 10
    assert sorted(r.id for r in read_jsonl(tmp_path / "r.jsonl")) == sorted(r.id for r in records)
    assert export(store, "csv", tmp_path / "r.csv") == 10
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 11
    assert export(store, "parquet", tmp_path / "pq") == 10
    table = ds.dataset(tmp_path / "pq", partitioning="hive").to_table()
    assert sorted(table.column("id").to_pylist()) == sorted(r.id for r in records)


def test_export_command_reads_a_postgresql_store(postgres, tmp_path):
    url = postgres.create_database(f"t{next(_names)}")
    records = batch("lusaka-1", 6)
    with open_store(url) as s:
        s.add_records(records)
    done = invoke_cli("export", "--store", url, "--format", "jsonl", "-o",
                      str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    assert [r.id for r in read_jsonl(tmp_path / "out.jsonl")] == [
        r.id for r in sorted(records, key=lambda r: (r.started_at, r.id))]


# --------------------------------------------------------------------------- columns


@settings(max_examples=300, deadline=None)
@given(st.lists(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                             timezones=st.just(UTC)), max_size=20))
def test_started_at_columns_are_utc_text_of_the_batch(times):
    assert _started_texts(times) == [utc_text(t) for t in times]


def test_the_stored_text_is_the_record_as_the_schema_writes_it(tmp_path):
    records = batch("lusaka-1", 4)
    with Store(tmp_path / "s.db") as s:
        s.add_records(records)
        got = dict(s._reader().execute("SELECT id, json FROM records").fetchall())
        cols = s._reader().execute("SELECT id, kind, started_at FROM records").fetchall()
    assert got == {r.id: encode_record(r).decode() for r in records}
    assert {(i, k, t) for i, k, t in cols} == {(r.id, r.kind, utc_text(r.started_at))
                                               for r in records}


def test_a_new_sqlite_store_has_large_pages_and_an_old_one_keeps_its_own(tmp_path):
    import sqlite3

    from netvantage.collector.store import PAGE_SIZE

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:  # as a store made before PAGE_SIZE was set
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("VACUUM")
    first, second = batch("lusaka-1", 3), batch("lusaka-1", 3)
    for path, size in ((tmp_path / "new.db", PAGE_SIZE), (old, 4096)):
        with Store(path) as s:
            s.add_records(first)
        with Store(path) as s:
            assert s.add_records(second).accepted == [r.id for r in second]
            assert s.count() == 6
            assert s._reader().execute("PRAGMA page_size").fetchone()[0] == size


# --------------------------------------------------------------------------- PostgreSQL


def test_postgresql_tables_are_created_once_and_a_newer_schema_is_refused(postgres):
    url = postgres.create_database(f"t{next(_names)}")
    stores = [open_store(url) for _ in range(3)]  # opened together: one creation
    for s in stores:
        s.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM netvantage_schema").fetchall() == [(2,)]
        conn.execute("UPDATE netvantage_schema SET version = 99")
    with pytest.raises(StoreError, match="schema 99, newer"):
        open_store(url)


def test_a_version_1_postgresql_database_moves_to_the_started_at_index(postgres):
    import psycopg

    from netvantage.collector import pgstore

    url = postgres.create_database(f"t{next(_names)}")
    old = ping("lusaka-1")
    with psycopg.connect(url, autocommit=True) as conn:  # as a collector of version 1 left it
        for statement in pgstore._SCHEMA_V1.split(";"):
            conn.execute(statement)
        conn.execute("CREATE TABLE netvantage_schema (version integer NOT NULL)")
        conn.execute("INSERT INTO netvantage_schema VALUES (1)")
    with open_store(url) as s:
        s.add_records([old])
        assert list(s.iter_records()) == [old]
    with psycopg.connect(url, autocommit=True) as conn:
        indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'records'")}
        assert conn.execute("SELECT version FROM netvantage_schema").fetchall() == [(2,)]
    assert "records_started" in indexes and "records_kind_started" not in indexes


def test_a_wrong_postgresql_url_is_a_clear_error(postgres):
    bad = postgres.url("no_such_db").replace("netvantage@", "netvantage:secret@")
    with pytest.raises(StoreError, match="cannot connect") as caught:
        open_store(bad)
    assert "secret" not in str(caught.value) and ":***@" in str(caught.value)


def test_two_stores_on_one_database_never_double_a_record(postgres):
    url = postgres.create_database(f"t{next(_names)}")
    batches = [batch(f"a-{i % 3}", 50) for i in range(12)]
    a, b = open_store(url), open_store(url)
    results: dict[str, list[Any]] = {"a": [], "b": []}
    try:
        def feed(name: str, s: RecordStore, order: list[list[AnyRecord]]) -> None:
            for records in order:
                results[name].append(s.add_records(records))

        threads = [threading.Thread(target=feed, args=("a", a, batches)),
                   threading.Thread(target=feed, args=("b", b, batches[::-1]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert a.count() == 600
    finally:
        a.close()
        b.close()
    for name in "ab":
        assert all(not r.conflicts and len(r.accepted) + len(r.duplicates) == 50
                   for r in results[name])
    accepted = sum(len(r.accepted) for name in "ab" for r in results[name])
    assert accepted == 600  # each record accepted by exactly one of the two


def _serve(url: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([NETVANTAGE, "collector", "serve", "--store", url, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if "listening on" not in line:
        proc.kill()
        proc.wait(10)
        pytest.fail(f"collector serve did not start: {line!r}")
    assert "secret" not in line
    return proc, int(line.split()[4].rsplit(":", 1)[1])


def _post(port: int, token: str, records: list[AnyRecord]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/v1/records",
                     body=b"".join(encode_record(r) + b"\n" for r in records),
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/x-ndjson",
                              "X-Netvantage-Backlog": "7"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_two_collector_processes_on_one_database_store_each_record_once(postgres):
    url = postgres.create_database(f"t{next(_names)}")
    token = invoke_cli("collector", "add-agent", "lusaka-1", "--store", url).stdout.strip()
    batches = [batch("lusaka-1", 40) for _ in range(8)]
    procs = [_serve(url), _serve(url)]
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def send(port: int, order: list[list[AnyRecord]]) -> None:
        for records in order:
            answer = _post(port, token, records)
            with lock:
                answers.append(answer)

    try:
        threads = [threading.Thread(target=send, args=(procs[0][1], batches)),
                   threading.Thread(target=send, args=(procs[1][1], batches[::-1]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs:
            assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    assert len(answers) == 16 and all(status == 200 for status, _ in answers)
    assert sum(a["accepted"] for _, a in answers) == 320
    assert sum(a["duplicates"] for _, a in answers) == 320
    with open_store(url) as s:
        assert s.count() == 320
        assert sorted(r.id for r in s.iter_records()) == sorted(r.id for b in batches for r in b)
        (health,) = s.agent_health()
    assert (health.batches, health.uploaded, health.duplicates, health.backlog) == (16, 320,
                                                                                   320, 7)


# --------------------------------------------------------------------------- fleet health


def test_uploads_report_the_backlog_and_collector_agents_lists_it(tmp_path):
    db = tmp_path / "c.db"
    with Store(db) as store:
        token = store.add_agent("lusaka-1")
        store.add_agent("quiet-1")
        spool = Spool(tmp_path / "spool.sqlite")
        try:
            for record in batch("lusaka-1", 7):
                spool.put(record)
            with BackgroundCollector(store) as c:
                uploader = Uploader(c.url, token, spool, batch_size=5)
                import asyncio

                assert asyncio.run(uploader.upload_once()) is True
                health = {h.agent: h for h in store.agent_health()}
                assert (health["lusaka-1"].backlog, health["lusaka-1"].uploaded) == (7, 5)
                assert asyncio.run(uploader.upload_once()) is False
        finally:
            spool.close()
    with open_store(db) as again:
        lusaka = {h.agent: h for h in again.agent_health()}["lusaka-1"]
    assert (lusaka.backlog, lusaka.records, lusaka.batches) == (2, 7, 2)
    assert lusaka.oldest_unsent_s is not None and 0 <= lusaka.oldest_unsent_s < 600
    assert lusaka.clock_skew_s is not None and abs(lusaka.clock_skew_s) < 5

    table = invoke_cli("collector", "agents", "--store", str(db))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["agent", "last", "seen"]
    row = next(line for line in lines if line.startswith("lusaka-1"))
    assert " ago " in row and row.split()[4] == "7"  # agent, N, unit, ago, records
    assert next(line for line in lines if line.startswith("quiet-1")).split()[1:3] == ["-", "0"]
    as_json = invoke_cli("collector", "agents", "--store", str(db), "--json")
    parsed = [msgspec.json.decode(line) for line in as_json.stdout.splitlines()]
    assert [(p["agent"], p["records"], p["backlog"]) for p in parsed] == [
        ("lusaka-1", 7, 2), ("quiet-1", 0, None)]


def test_bad_health_headers_are_ignored_never_refused(tmp_path):
    with Store(tmp_path / "c.db") as store:
        token = store.add_agent("lusaka-1")
        with BackgroundCollector(store) as c:
            conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=30)
            try:
                conn.request("POST", "/v1/records",
                             body=encode_record(ping("lusaka-1")) + b"\n",
                             headers={"Authorization": f"Bearer {token}",
                                      "Content-Type": "application/x-ndjson",
                                      "X-Netvantage-Backlog": "lots",
                                      "X-Netvantage-Oldest-Unsent": "-3",
                                      "X-Netvantage-Sent-At": "nan"})
                assert conn.getresponse().status == 200
            finally:
                conn.close()
        (health,) = store.agent_health()
    assert (health.backlog, health.oldest_unsent_s, health.clock_skew_s) == (None, None, None)
    assert health.uploaded == 1


def test_the_collector_stores_each_line_as_sent(tmp_path):
    """The stored JSON is the line the agent sent (blank lines, CRLF and spacing
    included), never another record's: each line belongs to the record decoded from it."""
    records = batch("lusaka-1", 6)
    sent = [encode_record(r).decode() for r in records]
    sent[1] = sent[1].replace('"agent":', '"agent" :  ')  # same record, other spacing
    body = ("\n \t\r\n".join(sent[:3]) + "\r\n\n" + "\n".join(sent[3:])).encode()
    db = tmp_path / "c.db"
    with Store(db) as store:
        token = store.add_agent("lusaka-1")
        with BackgroundCollector(store) as c:
            conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=30)
            try:
                for _ in range(2):
                    conn.request("POST", "/v1/records", body=body,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/x-ndjson"})
                    answer = json.loads(conn.getresponse().read())
            finally:
                conn.close()
        assert (answer["accepted"], answer["duplicates"]) == (0, 6)
        stored = dict(store._reader().execute("SELECT id, json FROM records").fetchall())
    assert {i: t.rstrip("\r") for i, t in stored.items()} == {
        r.id: text for r, text in zip(records, sent, strict=True)}
    with open_store(db) as again:
        assert {r.id: r for r in again.iter_records()} == {r.id: r for r in records}


def test_a_postgresql_store_reconnects_after_its_connections_are_lost(postgres):
    import psycopg

    url = postgres.create_database(f"t{next(_names)}")
    with open_store(url) as s:
        token = s.add_agent("lusaka-1")
        s.add_records(batch("lusaka-1", 3))
        assert s.agent_for_token(token) == "lusaka-1"
        with psycopg.connect(url, autocommit=True) as admin:  # as a server restart would
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert s.add_records(batch("lusaka-1", 3)).accepted
        assert s.agent_for_token(token) == "lusaka-1"
        assert s.count() == 6
