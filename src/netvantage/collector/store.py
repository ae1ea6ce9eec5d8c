"""The collector's stores: one SQLite file in WAL mode (the default), or PostgreSQL.

:class:`RecordStore` is what the collector, the exports and the CLI use;
:func:`open_store` opens the one ``--store`` names: a file name is a SQLite
store (:class:`Store`, here), a ``postgresql://`` URL a PostgreSQL one
(:class:`~netvantage.collector.pgstore.PgStore`).  Both hold the same tables::

    records(id, agent, kind, region, target, address, started_at, status,
            source, received_at, json, PRIMARY KEY (agent, id))
    agents(name TEXT PRIMARY KEY, token_sha256 TEXT UNIQUE, created_at, rotated_at)
    agent_health(agent PRIMARY KEY, last_seen_at, batches, records, duplicates,
                 conflicts, backlog, oldest_unsent_s, clock_skew_s, record_lag_s)

* A batch is written in **one transaction**: all of it or none of it.  A
  record is identified by its **(agent, id)**: ids are unique per agent, so
  another agent's record that happens to carry the same id is a different
  record.  A record whose (agent, id) is already stored *with the same
  content* is a *duplicate*: it is acknowledged and not stored again (ids are
  stable, so a retried upload carries the same record).  The same (agent, id)
  with *other* content is a *conflict*: the batch is refused whole and the
  conflicting ids are reported (the stored record is never replaced).  The
  database's primary key enforces the (agent, id) rule, so two collectors
  writing to one database cannot store a record twice.
* What a batch costs: the app decodes each record once (msgspec) and hands
  the store the records with the lines they were decoded from; the line is
  the stored ``json`` (a batch given without its lines is encoded in one
  call, as the schema writes records), the indexed columns are read from the
  decoded records, and the rows go in with a few multi-row ``INSERT``
  statements, each run by SQLite without Python's GIL.  (Passing the rows as
  one JSON parameter and taking them apart with ``json_extract`` made SQLite
  parse every row's JSON once per column.)
* ``agent_health`` is what uploads say about their agent (see
  :class:`AgentReport`), updated in the batch's transaction;
  :meth:`RecordStore.agent_health` lists it with each agent's stored records.
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

import abc
import contextlib
import hashlib
import hmac
import itertools
import operator
import os
import re
import secrets
import sqlite3
import threading
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec

from ..errors import NetvantageError
from ..results import AnyRecord, decode_record
from ..results.bulk import LEAN_TYPES

__all__ = [
    "AgentExistsError",
    "AgentHealth",
    "AgentReport",
    "BatchResult",
    "RecordStore",
    "Store",
    "StoreError",
    "StoredRow",
    "hash_token",
    "is_url",
    "new_token",
    "open_store",
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
CREATE INDEX IF NOT EXISTS records_started ON records (started_at);
CREATE TABLE IF NOT EXISTS agents (
    name         TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    rotated_at   TEXT
);
CREATE TABLE IF NOT EXISTS agent_health (
    agent           TEXT PRIMARY KEY,
    last_seen_at    TEXT NOT NULL,
    batches         INTEGER NOT NULL,
    records         INTEGER NOT NULL,
    duplicates      INTEGER NOT NULL,
    conflicts       INTEGER NOT NULL,
    backlog         INTEGER,
    oldest_unsent_s REAL,
    clock_skew_s    REAL,
    record_lag_s    REAL
);
"""

_COLUMNS = ("id, agent, kind, region, target, address, started_at, status, source, "
            "received_at, json")
_ROW_MARKS = "(" + ",".join("?" * 11) + ")"
#: Rows per INSERT statement, largest first: a batch of 1,000 is 3 x 256 + 3 x 64
#: + 2 x 16 + 2 x 4 rows, ten statements, each compiled once (the statement cache).
_CHUNKS = (256, 64, 16, 4, 1)
# SQLite's default limit of host parameters in one statement is 32766 since
# 3.32 (999 before); stay well under the old one for the duplicate look-up.
_IN_CHUNK = 500

#: (agent, last_seen_at, batches, records, duplicates, conflicts, backlog,
#: oldest_unsent_s, clock_skew_s, record_lag_s); a report's missing figures keep
#: the last ones known.
_HEALTH_UPSERT = """
INSERT INTO agent_health (agent, last_seen_at, batches, records, duplicates, conflicts,
                          backlog, oldest_unsent_s, clock_skew_s, record_lag_s)
VALUES ({marks})
ON CONFLICT (agent) DO UPDATE SET
    last_seen_at = excluded.last_seen_at,
    batches = agent_health.batches + excluded.batches,
    records = agent_health.records + excluded.records,
    duplicates = agent_health.duplicates + excluded.duplicates,
    conflicts = agent_health.conflicts + excluded.conflicts,
    backlog = coalesce(excluded.backlog, agent_health.backlog),
    oldest_unsent_s = coalesce(excluded.oldest_unsent_s, agent_health.oldest_unsent_s),
    clock_skew_s = coalesce(excluded.clock_skew_s, agent_health.clock_skew_s),
    record_lag_s = coalesce(excluded.record_lag_s, agent_health.record_lag_s)
"""

Synchronous = Literal["full", "normal"]

#: The page size of a new SQLite store.  A record row is about 900 bytes with
#: its index entries; with SQLite's default of 4 KiB a batch of 1,000 wrote
#: about 230 pages to the log, each with its frame header and checksum, and
#: split pages four times as often: 16 KiB pages took 20 % less CPU to insert
#: and commit the benchmark's batches (one thread, process time, 200 batches
#: of 1,000 records from 50 agents; 3 runs each, alternated, at load averages of 9-10).
PAGE_SIZE = 16384

#: The record kind of each record class (faster than the ``kind`` property), the
#: collector's lean ping and tcp structs (:mod:`netvantage.results.bulk`) included.
_KIND: dict[type, str] = {t: str(t.__struct_config__.tag) for t in
                          (*typing.get_args(AnyRecord), *LEAN_TYPES.values())}
_encoder = msgspec.json.Encoder()
_get_id = operator.attrgetter("id")
_get_agent = operator.attrgetter("agent")
_get_region = operator.attrgetter("region")
_get_target = operator.attrgetter("target")
_get_address = operator.attrgetter("address")
_get_started = operator.attrgetter("started_at")
_get_status = operator.attrgetter("status")
_get_source = operator.attrgetter("source")
# msgspec writes a UTC time as RFC 3339 with "Z" and six fractional digits, or
# none when the microseconds are 0: those get ".000000" (fixed width, see utc_text).
# (A plain replacement: a group in the replacement costs a Python call per match.
# The pattern starts with its literal 'Z"', so the search skips to each time's end
# and only there looks back at the seconds; a look-behind first was tried at every
# byte: 0.30 -> 0.04 µs per record for times with microseconds, 0.38 -> 0.16
# without.)
_WHOLE_SECOND = re.compile(rb'Z"(?<=:[0-9]{2}Z")')
_texts = msgspec.json.Decoder(list[str])


class StoreError(NetvantageError):
    """The store cannot be opened or used; the message says what to do."""


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


@dataclass(frozen=True, slots=True)
class AgentReport:
    """What an upload says about its agent besides its records (``None``: not said).

    ``backlog``: records waiting in the agent's spool when it sent the batch
    (this batch included); ``oldest_unsent_s``: how long the oldest of them
    has waited; ``clock_skew_s``: the agent's clock minus the collector's when
    the request arrived (positive: the agent's clock is ahead), from the
    agent's own send time, so it includes the request's one-way delay.
    """

    agent: str
    backlog: int | None = None
    oldest_unsent_s: float | None = None
    clock_skew_s: float | None = None


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """One agent as :meth:`RecordStore.agent_health` lists it.

    ``records``: records of this agent in the store now; ``batches``,
    ``uploaded``, ``duplicates``, ``conflicts``: counted over its uploads to
    collectors of this store; ``record_lag_s``: the collector's receive time
    minus the start of the newest record of the agent's last batch (the
    measurement's duration, the upload interval and any backlog, plus the clock
    skew); the rest is the agent's last :class:`AgentReport`.  Times are UTC text.
    """

    agent: str
    has_token: bool
    created_at: str | None
    last_seen_at: str | None
    records: int
    batches: int
    uploaded: int
    duplicates: int
    conflicts: int
    backlog: int | None
    oldest_unsent_s: float | None
    clock_skew_s: float | None
    record_lag_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


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


def is_url(spec: str | Path) -> bool:
    """Whether ``--store`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://"))


def open_store(spec: str | Path, *, create: bool = True,
               synchronous: Synchronous = "full") -> RecordStore:
    """The store ``spec`` names: a ``postgresql://`` URL or a SQLite file.

    ``synchronous`` is SQLite's (PostgreSQL commits are durable unless the
    server is configured otherwise); ``create=False`` refuses a missing SQLite
    file (a PostgreSQL database must exist; its tables are created).
    """
    if is_url(spec):
        from .pgstore import PgStore

        return PgStore(str(spec))
    return Store(spec, synchronous=synchronous, create=create)


@dataclass(slots=True)
class _Batch:
    """A batch made ready to insert: one row per distinct (agent, id), in batch order.

    The rows are kept as ``columns`` (:data:`_COLUMNS` order), the shape both
    stores' inserts take: a tuple and a key per row cost as much as the
    insert's own Python work, and only a batch with stored or repeated ids
    needs them (:meth:`rows`).
    """

    columns: list[list[Any]]
    conflicts: list[str]
    received_at: datetime

    def keys(self) -> list[tuple[str, str]]:
        """Each row's (agent, id)."""
        return list(zip(self.columns[1], self.columns[0], strict=True))

    def rows(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        """The rows keyed by (agent, id)."""
        return dict(zip(self.keys(), zip(*self.columns, strict=True), strict=True))

    def without(self, keys: set[tuple[str, str]]) -> list[list[Any]]:
        """The columns of the rows whose (agent, id) is not in ``keys``."""
        keep = [key not in keys for key in self.keys()]
        return [list(itertools.compress(column, keep)) for column in self.columns]


class RecordStore(abc.ABC):
    """What every store does; safe to share between threads."""

    #: Where the store is, for messages (a URL without its password).
    location: str
    # The connections of every store: one writer under a lock (one batch at a time per
    # process), one reader per thread.
    _write_lock: threading.Lock
    _writer: Any
    _readers_lock: threading.Lock
    _readers: list[Any]
    _closed: bool

    # ---------------------------------------------------------------- agents

    @abc.abstractmethod
    def add_agent(self, name: str, *, rotate: bool = False) -> str:
        """Create (or with ``rotate`` replace) an agent's token; returns the token, once."""

    @abc.abstractmethod
    def agent_for_token(self, token: str) -> str | None:
        """The agent a bearer token belongs to, or ``None``."""

    @abc.abstractmethod
    def agents(self) -> list[str]:
        """Every agent that has a token, by name."""

    @abc.abstractmethod
    def agent_health(self) -> list[AgentHealth]:
        """Every agent with a token or stored records, by name (see :class:`AgentHealth`)."""

    # ---------------------------------------------------------------- records

    @abc.abstractmethod
    def add_records(self, records: Sequence[AnyRecord], report: AgentReport | None = None,
                    *, texts: Sequence[str] | None = None) -> BatchResult:
        """Store a batch in one transaction (see the module's docstring).

        ``report`` (what the upload said about its agent) is recorded in the
        same transaction, with the batch's counts; a batch refused for a
        conflict still counts its conflicts.  ``texts``: each record's JSON as
        received, when the caller decoded the records from exactly these texts
        (the collector: the lines of the body); stored as they are instead of
        the records encoded again.
        """

    @abc.abstractmethod
    def count(self, *, kind: str | None = None) -> int:
        """Records stored (of one kind)."""

    @abc.abstractmethod
    def counts(self) -> dict[tuple[str, str, str], int]:
        """Records stored per (agent, kind, target)."""

    @abc.abstractmethod
    def iter_rows(self, *, kind: str | None = None,
                  since: datetime | None = None) -> Iterator[StoredRow]:
        """Stored records in (started_at, id) order, from one consistent snapshot.

        ``since`` keeps records that *started* at or after that time (UTC-aware).
        """

    def iter_records(self, kind: str | None = None,
                     since: datetime | None = None) -> Iterator[AnyRecord]:
        """Stored records (see :meth:`iter_rows`) as the schema's classes."""
        for row in self.iter_rows(kind=kind, since=since):
            yield row.record

    def close(self) -> None:
        """Close every connection (idempotent).  SQLite: the last one out checkpoints the
        log."""
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()

    def __enter__(self) -> typing.Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- shared steps

    @staticmethod
    def _new_token(name: str) -> str:
        """A new token for agent ``name``, once the name is known to be acceptable."""
        if not name or len(name) > 255:
            raise StoreError("an agent name is 1 to 255 characters")
        return new_token()

    @staticmethod
    def _owner(row: Sequence[Any] | None, digest: str) -> str | None:
        """The agent of ``row`` (name, token hash), found by the hash ``digest``: compared
        once more in constant time, so that the check never depends on how an index
        compares strings."""
        if row is None or not hmac.compare_digest(str(row[1]), digest):
            return None
        return str(row[0])

    @staticmethod
    def _rows_query(kind: str | None, since: datetime | None, mark: str,
                    when: Callable[[datetime], Any]) -> tuple[str, list[Any]]:
        """The SELECT of :meth:`iter_rows` and its arguments; ``mark`` is the driver's
        placeholder, ``when`` turns ``since`` into what the driver takes."""
        where: list[str] = []
        args: list[Any] = []
        if kind is not None:
            where.append(f"kind = {mark}")
            args.append(kind)
        if since is not None:
            if since.utcoffset() is None:
                raise StoreError("since must be a timezone-aware time")
            where.append(f"started_at >= {mark}")
            args.append(when(since))
        sql = "SELECT json, received_at FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return sql + " ORDER BY started_at, id", args

    @staticmethod
    def _conflicting(stored: Mapping[tuple[str, str], str], batch: _Batch) -> list[str]:
        """The ids of ``batch`` stored before with other content."""
        rows = batch.rows()
        return [key[1] for key, text in stored.items()
                if not _same_record(text, str(rows[key][-1]))]

    @staticmethod
    def _prepare(records: Sequence[AnyRecord], started: Callable[[list[datetime]], list[Any]],
                 received: Callable[[datetime], Any],
                 texts: Sequence[str] | None = None) -> _Batch:
        """The batch's rows (as columns) and the ids repeated with other content.

        ``started`` turns the records' ``started_at`` into the column's values;
        ``received`` the batch's arrival into every row's ``received_at``.
        Built a column at a time (C loops: ``map``), since this runs for every
        record ingested.
        """
        now = datetime.now(UTC)
        n = len(records)
        if texts is None or len(texts) != n:
            # One encoder call for the whole batch; a record's JSON never holds a
            # raw newline (JSON escapes them in strings), so the lines are the records.
            texts = _encoder.encode_lines(records).decode("utf-8").split("\n")[:n]
        ids = list(map(_get_id, records))
        columns = [ids, list(map(_get_agent, records)),
                   list(map(_KIND.__getitem__, map(type, records))),
                   list(map(_get_region, records)), list(map(_get_target, records)),
                   list(map(_get_address, records)),
                   started(list(map(_get_started, records))),
                   list(map(_get_status, records)), list(map(_get_source, records)),
                   [received(now)] * n, list(texts)]
        batch = _Batch(columns, [], now)
        if len(set(ids)) != n:  # an (agent, id) may be repeated in the batch: keep the first
            keyed: dict[tuple[str, str], tuple[Any, ...]] = {}
            for key, row in zip(batch.keys(), zip(*columns, strict=True), strict=True):
                known = keyed.setdefault(key, row)
                if known[-1] != row[-1] and row[0] not in batch.conflicts:
                    batch.conflicts.append(row[0])
            batch.columns = [list(column) for column in zip(*keyed.values(), strict=True)]
        return batch

    @staticmethod
    def _outcome(records: Sequence[AnyRecord], batch: _Batch, seen: set[tuple[str, str]]
                 ) -> BatchResult:
        """Accepted and duplicate ids in batch order, ``seen`` holding the keys stored before."""
        if not seen and len(batch.columns[0]) == len(records):
            return BatchResult([r.id for r in records], [])
        accepted: list[str] = []
        duplicates: list[str] = []
        seen = set(seen)
        for r in records:
            key = (r.agent, r.id)
            if key in seen:
                duplicates.append(r.id)
            else:
                accepted.append(r.id)
                seen.add(key)
        return BatchResult(accepted, duplicates)

    @staticmethod
    def _health_row(report: AgentReport, batch: _Batch, received: Any, result: BatchResult
                    ) -> tuple[Any, ...]:
        lag: float | None = None
        if batch.columns[0] and not result.conflicts:
            newest = max(batch.columns[6])
            if isinstance(newest, str):
                newest = datetime.fromisoformat(newest)
            lag = (batch.received_at - newest).total_seconds()
        return (report.agent, received(batch.received_at), 1, len(result.accepted),
                len(result.duplicates), len(result.conflicts), report.backlog,
                report.oldest_unsent_s, report.clock_skew_s, lag)

    @staticmethod
    def _health(names: set[str], tokens: dict[str, str], stored: dict[str, int],
                rows: dict[str, tuple[Any, ...]]) -> list[AgentHealth]:
        out: list[AgentHealth] = []
        for name in sorted(names):
            h = rows.get(name)
            out.append(AgentHealth(
                agent=name, has_token=name in tokens, created_at=tokens.get(name),
                last_seen_at=h[0] if h else None, records=stored.get(name, 0),
                batches=int(h[1]) if h else 0, uploaded=int(h[2]) if h else 0,
                duplicates=int(h[3]) if h else 0, conflicts=int(h[4]) if h else 0,
                backlog=None if not h or h[5] is None else int(h[5]),
                oldest_unsent_s=None if not h or h[6] is None else float(h[6]),
                clock_skew_s=None if not h or h[7] is None else float(h[7]),
                record_lag_s=None if not h or h[8] is None else float(h[8])))
        return out


def _started_texts(times: list[datetime]) -> list[str]:
    """:func:`utc_text` of records' ``started_at`` (UTC already), a batch in a few C calls.

    (A record's ``__post_init__`` refuses any other offset.  ``isoformat`` one
    record at a time cost as much as inserting the row.)
    """
    return _texts.decode(_WHOLE_SECOND.sub(b'.000000Z"', _encoder.encode(times)))


class Store(RecordStore):
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

    _writer: sqlite3.Connection

    def __init__(self, path: str | Path, *, synchronous: Synchronous = "full",
                 create: bool = True, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.location = str(self.path)
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
            params = self._writer.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the store: {exc}") from None
        self._inserts = [(n, f"INSERT OR IGNORE INTO records ({_COLUMNS}) VALUES "
                          + ",".join([_ROW_MARKS] * n)) for n in _CHUNKS if 11 * n <= params]
        self._health_upsert = _HEALTH_UPSERT.format(marks=",".join("?" * 10))

    def _keyed_by_id_alone(self) -> bool:
        info = self._writer.execute("PRAGMA table_info(records)").fetchall()
        return {str(r[1]): int(r[5]) for r in info}.get("agent", 0) == 0

    def _migrate(self) -> None:
        """Bring an older store's table and index to this version's."""
        self._migrate_key()
        # Stores before this version indexed (kind, started_at); the index on
        # started_at alone (created by the schema above) serves every read, and
        # costs less to keep at ingest: records arrive in time order, so each
        # insertion lands at the index's end.
        self._writer.execute("DROP INDEX IF EXISTS records_kind_started")

    def _migrate_key(self) -> None:
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
        # Takes effect only in a new, empty file (an existing store keeps its size).
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
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

    # ------------------------------------------------------------------ agents

    def add_agent(self, name: str, *, rotate: bool = False) -> str:
        token = self._new_token(name)
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
        if not token:
            return None
        digest = hash_token(token)
        return self._owner(self._reader().execute(
            "SELECT name, token_sha256 FROM agents WHERE token_sha256 = ?", (digest,)
        ).fetchone(), digest)

    def agents(self) -> list[str]:
        return [str(r[0]) for r in
                self._reader().execute("SELECT name FROM agents ORDER BY name")]

    def agent_health(self) -> list[AgentHealth]:
        conn = self._connect()  # one snapshot for the three reads
        try:
            conn.execute("BEGIN")
            tokens = {str(n): str(c) for n, c in conn.execute(
                "SELECT name, created_at FROM agents")}
            stored = {str(a): int(n) for a, n in conn.execute(
                "SELECT agent, count(*) FROM records GROUP BY agent")}
            rows = {str(r[0]): tuple(r[1:]) for r in conn.execute(
                "SELECT agent, last_seen_at, batches, records, duplicates, conflicts, backlog, "
                "oldest_unsent_s, clock_skew_s, record_lag_s FROM agent_health")}
            conn.execute("COMMIT")
        finally:
            conn.close()
        return self._health(set(tokens) | set(stored) | set(rows), tokens, stored, rows)

    # ------------------------------------------------------------------ records

    def _insert(self, conn: sqlite3.Connection, columns: list[list[Any]]) -> int:
        """Insert the rows of ``columns`` (INSERT OR IGNORE); returns how many went in."""
        before = conn.total_changes
        width, total = len(columns), len(columns[0])
        flat: list[Any] = [None] * (width * total)  # row after row, filled a column at a time
        for i, column in enumerate(columns):
            flat[i::width] = column
        done = 0
        for size, sql in self._inserts:
            while total - done >= size:
                conn.execute(sql, flat[done * width:(done + size) * width])
                done += size
        return conn.total_changes - before

    def add_records(self, records: Sequence[AnyRecord], report: AgentReport | None = None,
                    *, texts: Sequence[str] | None = None) -> BatchResult:
        batch = self._prepare(records, _started_texts, utc_text, texts)
        if batch.conflicts:
            result = BatchResult([], [], batch.conflicts)
            self._note_conflicts(report, batch, result)
            return result
        seen: set[tuple[str, str]] = set()
        with self._write_lock:
            conn = self._writer
            # IMMEDIATE: take the write lock now, so that what we learn about
            # existing ids holds until COMMIT, even with another writing process.
            conn.execute("BEGIN IMMEDIATE")
            try:
                # The usual batch is all new: insert first, and only when fewer
                # rows went in than were offered find out which ids were there.
                if self._insert(conn, batch.columns) != len(batch.columns[0]):
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    stored = self._existing(conn, batch.keys())
                    conflicts = self._conflicting(stored, batch)
                    if conflicts:
                        conn.execute("ROLLBACK")
                        result = BatchResult([], [], conflicts)
                        self._note_conflicts(report, batch, result, locked=True)
                        return result
                    seen = set(stored)
                    self._insert(conn, batch.without(seen))
                result = self._outcome(records, batch, seen)
                if report is not None:
                    conn.execute(self._health_upsert,
                                 self._health_row(report, batch, utc_text, result))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return result

    def _note_conflicts(self, report: AgentReport | None, batch: _Batch, result: BatchResult,
                        *, locked: bool = False) -> None:
        if report is None:
            return
        with contextlib.nullcontext() if locked else self._write_lock:
            self._writer.execute(self._health_upsert,
                                 self._health_row(report, batch, utc_text, result))

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
        rows = self._reader().execute(
            "SELECT agent, kind, target, count(*) FROM records "
            "GROUP BY agent, kind, target ORDER BY agent, kind, target")
        return {(str(a), str(k), str(t)): int(n) for a, k, t, n in rows}

    def iter_rows(self, *, kind: str | None = None,
                  since: datetime | None = None) -> Iterator[StoredRow]:
        sql, args = self._rows_query(kind, since, "?", utc_text)
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
