"""The PostgreSQL store (psycopg 3): several collectors behind one address, one database.

``--store postgresql://USER@HOST/DBNAME`` (any libpq URL: ``?host=/run/postgresql``
for a Unix socket, ``sslmode=…``, a password in the URL or in ``~/.pgpass``).
The tables are those of the SQLite store (see :mod:`.store`), with
``timestamptz`` times, ``bigint`` counts and ``double precision`` figures; they
live in the connection's current schema (set ``?options=-csearch_path%3DNAME``
for another).  The record's JSON is kept as ``text``, exactly as the schema
writes it; cast it (``json::jsonb``) to query inside it.

* **Created and migrated by the collector**: opening the store takes a
  transaction-scoped advisory lock, creates what is missing and moves the
  tables to :data:`SCHEMA_VERSION` (recorded in ``netvantage_schema``), so
  collectors starting together do not race; a database made by a newer
  netvantage is refused.
* **One record, once**: the primary key (agent, id) is the database's, and a
  batch goes in with ``INSERT … ON CONFLICT DO NOTHING``, so two collectors
  given the same batch (an agent retrying through another one) store it once.
  When fewer rows went in than were offered, the transaction is rolled back,
  the stored ones are read back and compared (same content: duplicates; other
  content: a conflict, the batch is refused), and the new ones are inserted
  again; if another collector stored some of them meanwhile, that is done
  again (a few times at most).
* A batch is one statement: the columns travel as arrays (``unnest``) in
  PostgreSQL's binary format (psycopg's text format escapes every element
  with a regular expression: ten times the CPU), so the rows cost one round
  trip whatever their number.
* Every operation has a time limit: connecting (:data:`CONNECT_TIMEOUT_S`) and
  each statement (:data:`STATEMENT_TIMEOUT_S`, a server setting of the session).
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, LiteralString

import psycopg

from ..results import AnyRecord, decode_record
from .store import (
    AgentExistsError,
    AgentHealth,
    AgentReport,
    BatchResult,
    RecordStore,
    StoredRow,
    StoreError,
    _Batch,
    hash_token,
    utc_text,
)

__all__ = ["CONNECT_TIMEOUT_S", "SCHEMA_VERSION", "STATEMENT_TIMEOUT_S", "PgStore", "display_url"]

#: The tables' version; :meth:`PgStore._migrate` moves an older database here.
SCHEMA_VERSION = 2
CONNECT_TIMEOUT_S = 10
STATEMENT_TIMEOUT_S = 120
#: Tries of a batch whose rows another collector keeps storing meanwhile.
MAX_TRIES = 5
#: pg_advisory_xact_lock key of schema changes ("nvschema" in ASCII).
_SCHEMA_LOCK = 0x6E76736368656D61

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS records (
    id          text NOT NULL,
    agent       text NOT NULL,
    kind        text NOT NULL,
    region      text,
    target      text NOT NULL,
    address     text,
    started_at  timestamptz NOT NULL,
    status      text NOT NULL,
    source      text NOT NULL,
    received_at timestamptz NOT NULL,
    json        text NOT NULL,
    PRIMARY KEY (agent, id)
);
CREATE INDEX IF NOT EXISTS records_kind_started ON records (kind, started_at);
CREATE TABLE IF NOT EXISTS agents (
    name         text PRIMARY KEY,
    token_sha256 text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL,
    rotated_at   timestamptz
);
CREATE TABLE IF NOT EXISTS agent_health (
    agent           text PRIMARY KEY,
    last_seen_at    timestamptz NOT NULL,
    batches         bigint NOT NULL,
    records         bigint NOT NULL,
    duplicates      bigint NOT NULL,
    conflicts       bigint NOT NULL,
    backlog         bigint,
    oldest_unsent_s double precision,
    clock_skew_s    double precision,
    record_lag_s    double precision
)
"""

#: Version 2: records indexed by started_at alone, not (kind, started_at): the one
#: index serves every read (time order, ``since``, a kind's records in time order) and
#: costs less at ingest, since records arrive in time order.
_SCHEMA_V2 = """
CREATE INDEX IF NOT EXISTS records_started ON records (started_at);
DROP INDEX IF EXISTS records_kind_started
"""

_INSERT = """
INSERT INTO records (id, agent, kind, region, target, address, started_at, status, source,
                     received_at, json)
SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
                     %b::timestamptz[], %b::text[], %b::text[], %b::timestamptz[], %b::text[])
ON CONFLICT (agent, id) DO NOTHING
"""

_EXISTING = """
SELECT r.agent, r.id, r.json FROM records r
JOIN unnest(%b::text[], %b::text[]) AS k(agent, id) ON r.agent = k.agent AND r.id = k.id
"""

_HEALTH_UPSERT = """
INSERT INTO agent_health (agent, last_seen_at, batches, records, duplicates, conflicts,
                          backlog, oldest_unsent_s, clock_skew_s, record_lag_s)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (agent) DO UPDATE SET
    last_seen_at = greatest(agent_health.last_seen_at, excluded.last_seen_at),
    batches = agent_health.batches + excluded.batches,
    records = agent_health.records + excluded.records,
    duplicates = agent_health.duplicates + excluded.duplicates,
    conflicts = agent_health.conflicts + excluded.conflicts,
    backlog = coalesce(excluded.backlog, agent_health.backlog),
    oldest_unsent_s = coalesce(excluded.oldest_unsent_s, agent_health.oldest_unsent_s),
    clock_skew_s = coalesce(excluded.clock_skew_s, agent_health.clock_skew_s),
    record_lag_s = coalesce(excluded.record_lag_s, agent_health.record_lag_s)
"""


def display_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _lost(conn: psycopg.Connection[Any]) -> bool:
    """Whether a connection is closed or broken (the server went away)."""
    return bool(conn.closed or conn.broken)


def _same(times: list[datetime]) -> list[datetime]:
    return times


def _itself(when: datetime) -> datetime:
    return when


class PgStore(RecordStore):
    """The PostgreSQL store; safe to share between threads.

    Writes go through one connection under a lock (one batch at a time per
    collector process; several collectors write at once); reads use one
    connection per thread (autocommit), and :meth:`iter_rows` a connection of
    its own holding one snapshot.
    """

    _writer: psycopg.Connection[Any]

    def __init__(self, url: str) -> None:
        self.url = url
        self.location = display_url(url)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[psycopg.Connection[Any]] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._writer = self._connect()
        try:
            self._migrate()
        except BaseException:
            self._writer.close()
            raise

    # ------------------------------------------------------------------ connections

    def _connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S,
                                   autocommit=True)
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_S * 1000}")
            conn.execute("SET TIME ZONE 'UTC'")
            conn.autocommit = autocommit
        except psycopg.Error as exc:
            raise StoreError(f"{self.location}: cannot connect to PostgreSQL: "
                             f"{str(exc).strip()}") from None
        return conn

    def _write_conn(self) -> psycopg.Connection[Any]:
        """The writing connection (call with the write lock held), again after a server restart."""
        if _lost(self._writer):
            if self._closed:
                raise StoreError(f"{self.location}: the store is closed")
            self._writer.close()
            self._writer = self._connect()
        return self._writer

    def _reader(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or _lost(conn):
            if self._closed:
                raise StoreError(f"{self.location}: the store is closed")
            conn = self._connect(autocommit=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read(self, sql: LiteralString, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query on this thread's connection; once more on a new connection
        if that one was lost (a server restart), then a :class:`StoreError`."""
        for attempt in (1, 2):
            try:
                return self._reader().execute(sql, args).fetchall()
            except psycopg.OperationalError as exc:
                if attempt == 2 or not _lost(self._local.conn):
                    raise StoreError(f"{self.location}: {str(exc).strip()}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _migrate(self) -> None:
        """Create the tables, or move them to :data:`SCHEMA_VERSION` (one transaction)."""
        conn = self._writer
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute("CREATE TABLE IF NOT EXISTS netvantage_schema "
                             "(version integer NOT NULL)")
                row = conn.execute("SELECT max(version) FROM netvantage_schema").fetchone()
                version = row[0] if row and row[0] is not None else 0
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.location}: the tables are of schema {version}, newer than "
                        f"this netvantage knows ({SCHEMA_VERSION}); upgrade netvantage")
                if version < 1:
                    for statement in _SCHEMA_V1.split(";"):
                        conn.execute(statement)
                if version < 2:
                    for statement in _SCHEMA_V2.split(";"):
                        conn.execute(statement)
                # (Later versions: "if version < 3: ALTER TABLE …" here.)
                if version < SCHEMA_VERSION:
                    conn.execute("DELETE FROM netvantage_schema")
                    conn.execute("INSERT INTO netvantage_schema (version) VALUES (%s)",
                                 (SCHEMA_VERSION,))
        except psycopg.Error as exc:
            raise StoreError(f"{self.location}: cannot create or migrate the tables: "
                             f"{str(exc).strip()}") from None

    # ------------------------------------------------------------------ agents

    def add_agent(self, name: str, *, rotate: bool = False) -> str:
        token = self._new_token(name)
        now = datetime.now(UTC)
        with self._write_lock:
            conn = self._write_conn()
            with conn.transaction():
                self._add_agent(conn, name, token, now, rotate)
        return token

    @staticmethod
    def _add_agent(conn: psycopg.Connection[Any], name: str, token: str, now: datetime,
                   rotate: bool) -> None:
        # Two add-agent runs for one name cannot both create it.
        conn.execute("LOCK TABLE agents IN SHARE ROW EXCLUSIVE MODE")
        row = conn.execute("SELECT 1 FROM agents WHERE name = %s", (name,)).fetchone()
        if row is not None and not rotate:
            raise AgentExistsError(
                f"agent {name!r} already has a token; give --rotate to replace it "
                "(the old token stops working)")
        if row is None:
            conn.execute("INSERT INTO agents (name, token_sha256, created_at) "
                         "VALUES (%s, %s, %s)", (name, hash_token(token), now))
        else:
            conn.execute("UPDATE agents SET token_sha256 = %s, rotated_at = %s "
                         "WHERE name = %s", (hash_token(token), now, name))

    def agent_for_token(self, token: str) -> str | None:
        if not token:
            return None
        digest = hash_token(token)
        rows = self._read("SELECT name, token_sha256 FROM agents WHERE token_sha256 = %s",
                          (digest,))
        return self._owner(rows[0] if rows else None, digest)

    def agents(self) -> list[str]:
        rows = self._read("SELECT name FROM agents ORDER BY name")
        return [str(r[0]) for r in rows]

    def agent_health(self) -> list[AgentHealth]:
        with self._connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                tokens = {str(n): utc_text(c) for n, c in conn.execute(
                    "SELECT name, created_at FROM agents")}
                stored = {str(a): int(n) for a, n in conn.execute(
                    "SELECT agent, count(*) FROM records GROUP BY agent")}
                rows = {str(r[0]): (utc_text(r[1]), *r[2:]) for r in conn.execute(
                    "SELECT agent, last_seen_at, batches, records, duplicates, conflicts, "
                    "backlog, oldest_unsent_s, clock_skew_s, record_lag_s FROM agent_health")}
        return self._health(set(tokens) | set(stored) | set(rows), tokens, stored, rows)

    # ------------------------------------------------------------------ records

    @staticmethod
    def _insert(conn: psycopg.Connection[Any], columns: list[list[Any]]) -> int:
        """Insert the rows of ``columns`` (ON CONFLICT DO NOTHING) as one statement; returns
        how many went in."""
        if not columns[0]:
            return 0
        cur = conn.execute(_INSERT, columns)
        return int(cur.rowcount)

    @staticmethod
    def _existing(conn: psycopg.Connection[Any], keys: Sequence[tuple[str, str]]
                  ) -> dict[tuple[str, str], str]:
        agents = [k[0] for k in keys]
        ids = [k[1] for k in keys]
        return {(str(a), str(i)): str(text)
                for a, i, text in conn.execute(_EXISTING, (agents, ids))}

    def add_records(self, records: Sequence[AnyRecord], report: AgentReport | None = None,
                    *, texts: Sequence[str] | None = None) -> BatchResult:
        batch = self._prepare(records, _same, _itself, texts)
        if batch.conflicts:
            result = BatchResult([], [], batch.conflicts)
            self._note(report, batch, result)
            return result
        for attempt in (1, 2):
            try:
                with self._write_lock:
                    return self._write(records, batch, report)
            except psycopg.Error as exc:
                # A lost connection (a server restart): once more on a new one.  Safe
                # even if the lost COMMIT went through: the rows are then duplicates.
                if attempt == 1 and _lost(self._writer):
                    continue
                raise StoreError(f"{self.location}: cannot store the batch: "
                                 f"{str(exc).strip()}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, records: Sequence[AnyRecord], batch: _Batch,
               report: AgentReport | None) -> BatchResult:
        conn = self._write_conn()  # not autocommit: each try is one transaction
        checked = False
        try:
            for _ in range(MAX_TRIES):
                seen: set[tuple[str, str]] = set()
                fresh = batch.columns
                if checked:  # fewer rows went in than were offered: which were stored?
                    stored = self._existing(conn, batch.keys())
                    conflicts = self._conflicting(stored, batch)
                    if conflicts:
                        conn.rollback()
                        result = BatchResult([], [], conflicts)
                        self._note(report, batch, result, conn)
                        conn.commit()
                        return result
                    seen = set(stored)
                    fresh = batch.without(seen)
                if self._insert(conn, fresh) == len(fresh[0]):
                    result = self._outcome(records, batch, seen)
                    self._note(report, batch, result, conn)
                    conn.commit()
                    return result
                # Another collector stored some of them, maybe meanwhile: look again.
                conn.rollback()
                checked = True
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            raise
        raise StoreError(f"{self.location}: other collectors kept storing records of this "
                         f"batch while it was written ({MAX_TRIES} tries); send it again")

    def _note(self, report: AgentReport | None, batch: _Batch, result: BatchResult,
              conn: psycopg.Connection[Any] | None = None) -> None:
        """Record ``report`` (in ``conn``'s transaction, or in one of its own)."""
        if report is None:
            return
        row = self._health_row(report, batch, _itself, result)
        if conn is not None:
            conn.execute(_HEALTH_UPSERT, row)
            return
        with self._write_lock:
            writer = self._write_conn()
            with writer.transaction():
                writer.execute(_HEALTH_UPSERT, row)

    def count(self, *, kind: str | None = None) -> int:
        if kind is None:
            rows = self._read("SELECT count(*) FROM records")
        else:
            rows = self._read("SELECT count(*) FROM records WHERE kind = %s", (kind,))
        return int(rows[0][0])

    def counts(self) -> dict[tuple[str, str, str], int]:
        rows = self._read("SELECT agent, kind, target, count(*) FROM records "
                          "GROUP BY agent, kind, target ORDER BY agent, kind, target")
        return {(str(a), str(k), str(t)): int(n) for a, k, t, n in rows}

    def iter_rows(self, *, kind: str | None = None,
                  since: datetime | None = None) -> Iterator[StoredRow]:
        sql, args = self._rows_query(kind, since, "%s", _itself)
        # A private connection in one REPEATABLE READ transaction (one
        # snapshot) with a server-side cursor: rows arrive a few thousand at a time.
        with self._connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction(), conn.cursor(name="netvantage_rows") as cur:
                cur.itersize = 2000
                cur.execute(sql, args)
                for text, received_at in cur:
                    yield StoredRow(decode_record(text), utc_text(received_at))

