"""The embedded store: one SQLite file in WAL mode, records and agent tokens.

Tables::

    records(id, agent, kind, region, target, address, started_at, status,
            source, received_at, json, PRIMARY KEY (agent, id))
    agents(name TEXT PRIMARY KEY, token_sha256 TEXT UNIQUE, created_at, rotated_at)

* A batch is written in **one transaction**: all of it or none of it.  A
  record is identified by its **(agent, id)**: ids are unique per agent, so
  another agent's record that happens to carry the same id is a different
  record.  A record whose (agent, id) is already stored *with the same
  content* is a *duplicate*: it is acknowledged and not stored again (ids are
  stable, so a retried upload carries the same record).  The same (agent, id)
  with *other* content is a *conflict*: the batch is refused whole and the
  conflicting ids are reported (the stored record is never replaced).
* A store made when ids were unique on their own (``id TEXT PRIMARY KEY``) is
  migrated to the (agent, id) key when opened, in one transaction.
* Timestamps are stored as fixed-width UTC text (``2026-11-28T19:00:00.123456Z``)
  so that text order is time order and the file reads well in ``sqlite3``.
* WAL mode lets other processes (``netvantage export``, a notebook) read a
  consistent snapshot while the collector writes.
* Tokens are never stored, only their SHA-256: a token is 256 random bits
  (``secrets.token_urlsafe(32)``), so a fast hash is enough (a slow password
  hash only helps against guessable secrets).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec

from ..errors import NetvantageError
from ..results import AnyRecord, decode_record, encode_record

__all__ = [
    "AgentExistsError",
    "BatchResult",
    "Store",
    "StoreError",
    "StoredRow",
    "hash_token",
    "new_token",
    "utc_text",
]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id          TEXT NOT NULL,
    agent       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    region      TEXT,
    target      TEXT NOT NULL,
    address     TEXT,
    started_at  TEXT NOT NULL,
    status      TEXT NOT NULL,
    source      TEXT NOT NULL,
    received_at TEXT NOT NULL,
    json        TEXT NOT NULL,
    PRIMARY KEY (agent, id)
);
CREATE INDEX IF NOT EXISTS records_kind_started ON records (kind, started_at);
CREATE TABLE IF NOT EXISTS agents (
    name         TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    rotated_at   TEXT
);
"""

# ?1: received_at; ?2: a JSON array of rows [id, agent, kind, region, target,
# address, started_at, status, source, json] (json_extract: SQLite >= 3.9).
_INSERT = (
    "INSERT OR IGNORE INTO records (id, agent, kind, region, target, address, started_at, "
    "status, source, received_at, json) SELECT "
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(9))
    + ", ?1, json_extract(value, '$[9]') FROM json_each(?2)"
)
_rows_encoder = msgspec.json.Encoder()
_COLUMNS = ("id, agent, kind, region, target, address, started_at, status, source, "
            "received_at, json")

# SQLite's default limit of host parameters in one statement is 32766 since
# 3.32 (999 before); stay well under the old one for the duplicate look-up.
_IN_CHUNK = 500

Synchronous = Literal["full", "normal"]


class StoreError(NetvantageError):
    """The store file cannot be opened or used; the message says what to do."""


class AgentExistsError(StoreError):
    """``add_agent`` for a name that already has a token (use ``rotate=True``)."""


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one batch did: the ids newly stored and the ids already there, in batch order.

    ``conflicts``: ids whose (agent, id) is stored, or repeated in the batch, with
    other content.  When there is any, nothing of the batch was stored (and
    ``accepted`` and ``duplicates`` are empty).
    """

    accepted: list[str]
    duplicates: list[str]
    conflicts: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One stored record with the collector's own column."""

    record: AnyRecord
    received_at: str


def _same_record(stored: str, offered: str) -> bool:
    """Whether a stored record's JSON and an offered one's are the same record.

    Equal text is the usual case; otherwise both are decoded and compared, so a
    record stored by another netvantage version (its encoder may order or
    default fields differently) is still recognised.  A stored text that no
    longer decodes is a different record.
    """
    if stored == offered:
        return True
    try:
        return decode_record(stored) == decode_record(offered)
    except NetvantageError:
        return False


def new_token() -> str:
    """A fresh agent token: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the store keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def utc_text(when: datetime) -> str:
    """Fixed-width UTC text with microseconds and ``Z``: sorts like the time it names."""
    # isoformat is several times faster than strftime; the offset of a UTC
    # time is always the last six characters, "+00:00".
    return when.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


class Store:
    """The SQLite store; safe to share between threads.

    Writes go through one connection under a lock (SQLite has one writer at a
    time anyway); reads use one connection per thread, so a token check or an
    export never waits behind a batch being written.

    ``synchronous``: ``"full"`` (default) fsyncs the write-ahead log at every
    commit, so a batch acknowledged to an agent survives a power loss — the
    agent deletes its spool copy on that acknowledgement.  ``"normal"`` skips
    that fsync (the log is synced at checkpoints only): the file stays
    consistent, and an application crash loses nothing, but a power loss or
    kernel crash can roll back the last acknowledged batches, which then exist
    nowhere.  Use it only where that is acceptable (benchmarks, a throw-away
    campaign).
    """

    def __init__(self, path: str | Path, *, synchronous: Synchronous = "full",
                 create: bool = True, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"{self.path}: no such store (create it with "
                             f"'netvantage collector add-agent NAME --store {self.path}')")
        if synchronous not in ("full", "normal"):
            raise StoreError(f"synchronous must be 'full' or 'normal', not {synchronous!r}")
        self._synchronous = synchronous
        self._busy_ms = int(busy_timeout_s * 1000)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        try:
            self._writer = self._connect()
            self._writer.executescript(_SCHEMA)
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from None

    def _keyed_by_id_alone(self) -> bool:
        info = self._writer.execute("PRAGMA table_info(records)").fetchall()
        return {str(r[1]): int(r[5]) for r in info}.get("agent", 0) == 0

    def _migrate(self) -> None:
        """Move a store keyed by ``id`` alone to the (agent, id) key (one transaction)."""
        if not self._keyed_by_id_alone():
            return
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._keyed_by_id_alone():  # another process may have migrated meanwhile
                table = _SCHEMA.split(";")[0].replace("TABLE IF NOT EXISTS records",
                                                     "TABLE records_by_agent")
                conn.execute(table)
                conn.execute(f"INSERT INTO records_by_agent ({_COLUMNS}) "
                             f"SELECT {_COLUMNS} FROM records")
                conn.execute("DROP TABLE records")
                conn.execute("ALTER TABLE records_by_agent RENAME TO records")
                conn.execute(_SCHEMA.split(";")[1])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ------------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a batch is
        # exactly one transaction and nothing is left open between calls.
        # A new store is created 0600 (results are private); SQLite gives its
        # WAL and shared-memory files the database file's mode.  Any other
        # error is left for sqlite3.connect to report.
        with contextlib.suppress(OSError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self._busy_ms / 1000)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            conn.close()
            raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode!r}); the store "
                             "needs a local file system that supports shared memory")
        conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError(f"{self.path}: the store is closed")
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection (idempotent).  The last one out checkpoints the log."""
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ agents

    def add_agent(self, name: str, *, rotate: bool = False) -> str:
        """Create (or with ``rotate`` replace) an agent's token; returns the token, once."""
        if not name or len(name) > 255:
            raise StoreError("an agent name is 1 to 255 characters")
        token = new_token()
        now = utc_text(datetime.now(UTC))
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT 1 FROM agents WHERE name = ?", (name,)).fetchone()
                if row is not None and not rotate:
                    raise AgentExistsError(
                        f"agent {name!r} already has a token; give --rotate to replace it "
                        "(the old token stops working)")
                if row is None:
                    conn.execute("INSERT INTO agents (name, token_sha256, created_at) "
                                 "VALUES (?, ?, ?)", (name, hash_token(token), now))
                else:
                    conn.execute("UPDATE agents SET token_sha256 = ?, rotated_at = ? "
                                 "WHERE name = ?", (hash_token(token), now, name))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return token

    def agent_for_token(self, token: str) -> str | None:
        """The agent a bearer token belongs to, or ``None``."""
        if not token:
            return None
        digest = hash_token(token)
        row = self._reader().execute(
            "SELECT name, token_sha256 FROM agents WHERE token_sha256 = ?", (digest,)
        ).fetchone()
        if row is None:
            return None
        # The row was found by its hash; compare once more in constant time so
        # that this check never depends on how an index compares strings.
        if not hmac.compare_digest(str(row[1]), digest):
            return None
        return str(row[0])

    def agents(self) -> list[str]:
        return [str(r[0]) for r in
                self._reader().execute("SELECT name FROM agents ORDER BY name")]

    # ------------------------------------------------------------------ records

    def add_records(self, records: Sequence[AnyRecord]) -> BatchResult:
        """Store a batch in one transaction.

        A record whose (agent, id) is already stored with the same content (or
        repeated in the batch) is a duplicate; with other content a conflict, and
        then nothing is stored (see :class:`BatchResult`).
        """
        rows: dict[tuple[str, str], tuple[str | None, ...]] = {}
        conflicts: list[str] = []
        for r in records:
            key = (r.agent, r.id)
            text = encode_record(r).decode("utf-8")
            known = rows.get(key)
            if known is None:
                rows[key] = (r.id, r.agent, r.kind, r.region, r.target, r.address,
                             utc_text(r.started_at), r.status, r.source, text)
            elif known[-1] != text and r.id not in conflicts:
                conflicts.append(r.id)
        if conflicts:
            return BatchResult([], [], conflicts)
        # The whole batch is one parameter (a JSON array of rows) of one
        # statement: SQLite then inserts it without holding the GIL, where
        # executemany() takes the GIL back for every row and, with other
        # threads decoding, waits for it each time while holding the write lock.
        packed = _rows_encoder.encode(list(rows.values()))
        seen: set[tuple[str, str]] = set()
        with self._write_lock:
            conn = self._writer
            received = utc_text(datetime.now(UTC))
            # IMMEDIATE: take the write lock now, so that what we learn about
            # existing ids holds until COMMIT, even with another writing process.
            conn.execute("BEGIN IMMEDIATE")
            try:
                # The usual batch is all new: insert first, and only when fewer
                # rows went in than were offered find out which ids were there.
                before = conn.total_changes
                conn.execute(_INSERT, (received, packed))
                if conn.total_changes - before != len(rows):
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    stored = self._existing(conn, list(rows))
                    for key, text in stored.items():
                        if not _same_record(text, str(rows[key][-1])):
                            conflicts.append(key[1])
                    if conflicts:
                        conn.execute("ROLLBACK")
                        return BatchResult([], [], conflicts)
                    seen = set(stored)
                    fresh = [v for k, v in rows.items() if k not in seen]
                    conn.execute(_INSERT, (received, _rows_encoder.encode(fresh)))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        accepted: list[str] = []
        duplicates: list[str] = []
        for r in records:
            key = (r.agent, r.id)
            if key in seen:
                duplicates.append(r.id)
            else:
                accepted.append(r.id)
                seen.add(key)
        return BatchResult(accepted, duplicates)

    @staticmethod
    def _existing(conn: sqlite3.Connection,
                  keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The stored JSON of those (agent, id) keys that are stored."""
        found: dict[tuple[str, str], str] = {}
        by_agent: dict[str, list[str]] = {}
        for agent, rid in dict.fromkeys(keys):
            by_agent.setdefault(agent, []).append(rid)
        for agent, ids in by_agent.items():
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start:start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(((agent, str(rid)), str(text)) for rid, text in conn.execute(
                    f"SELECT id, json FROM records WHERE agent = ? AND id IN ({marks})",
                    [agent, *chunk]))
        return found

    def count(self, *, kind: str | None = None) -> int:
        if kind is None:
            row = self._reader().execute("SELECT count(*) FROM records").fetchone()
        else:
            row = self._reader().execute("SELECT count(*) FROM records WHERE kind = ?",
                                         (kind,)).fetchone()
        return int(row[0])

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Records stored per (agent, kind, target)."""
        rows = self._reader().execute(
            "SELECT agent, kind, target, count(*) FROM records "
            "GROUP BY agent, kind, target ORDER BY agent, kind, target")
        return {(str(a), str(k), str(t)): int(n) for a, k, t, n in rows}

    def iter_rows(self, *, kind: str | None = None,
                  since: datetime | None = None) -> Iterator[StoredRow]:
        """Stored records in (kind, started_at, id) order, from one consistent snapshot.

        ``since`` keeps records that *started* at or after that time (UTC-aware).
        """
        where: list[str] = []
        args: list[str] = []
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if since is not None:
            if since.utcoffset() is None:
                raise StoreError("since must be a timezone-aware time")
            where.append("started_at >= ?")
            args.append(utc_text(since))
        sql = "SELECT json, received_at FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY kind, started_at, id"
        # A private connection: the caller may interleave other store calls
        # while iterating, and the open read transaction pins one snapshot.
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            for text, received_at in conn.execute(sql, args):
                yield StoredRow(decode_record(text), str(received_at))
            conn.execute("COMMIT")
        finally:
            conn.close()

    def iter_records(self, kind: str | None = None,
                     since: datetime | None = None) -> Iterator[AnyRecord]:
        """Stored records (see :meth:`iter_rows`) as the schema's classes."""
        for row in self.iter_rows(kind=kind, since=since):
            yield row.record
