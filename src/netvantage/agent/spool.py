"""The agent's durable spool: every result is written here before anything else.

An embedded SQLite database (WAL, ``synchronous=FULL``): a result's row is on
disk when :meth:`Spool.put` returns, and a crash at any instant leaves either
the whole row or none of it — SQLite's journal rolls a torn transaction back
when the file is next opened, so a half-written record is never read.  Rows
leave the spool only when the collector has acknowledged their ids
(:meth:`ack`); a record the collector refuses as invalid moves to a
``rejected`` table with the reason, so it can neither block the queue nor be
lost silently.

With ``audit=True`` (tests and benchmarks) every id ever spooled is also kept,
in the same transaction, in an ``audit`` table: that is the ground truth the
kill -9 test compares the collector's store with.

A write that fails (a full disk: ``SQLITE_FULL``; an I/O error) is rolled back
whole and raised as :class:`SpoolWriteError` naming SQLite's own error and the
free space left, never hidden behind a failed ``ROLLBACK``; what the agent
then does is :mod:`.run`'s business.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import NetvantageError, SchemaError
from ..results import AnyRecord, decode_record, encode_record

__all__ = ["Spool", "SpoolError", "SpoolWriteError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    created REAL NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
    id TEXT PRIMARY KEY, record BLOB NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL);
"""


class SpoolError(NetvantageError):
    """The spool file cannot be used; the message says which file and why."""


class SpoolWriteError(SpoolError):
    """A write to an open spool failed (full disk, I/O error); nothing of it was kept."""


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    data: bytes


class Spool:
    def __init__(self, path: Path, *, audit: bool = False) -> None:
        self.path = path
        self.audit = audit
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 (the WAL and SHM files take the same mode).
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                       timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            ok = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise SpoolError(f"{path}: the spool is damaged ({ok}); move it aside and "
                                 "restart (its records can be read with sqlite3)")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise SpoolError(f"{path}: cannot open the spool: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (the caller holds the lock); a failure is a SpoolWriteError.

        SQLite may already have rolled a failed statement's transaction back (it
        does on SQLITE_FULL): a second ROLLBACK would then fail and its error would
        hide the real one, so it runs only while a transaction is still open.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise SpoolWriteError(f"{self.path}: cannot write to the spool: "
                                  f"{self._describe(exc)}") from exc

    def _describe(self, exc: sqlite3.Error) -> str:
        name = getattr(exc, "sqlite_errorname", None)
        text = f"{name}: {exc}" if name else str(exc)
        with contextlib.suppress(OSError):
            st = os.statvfs(self.path.parent)
            text += f" ({st.f_bavail * st.f_frsize} bytes free on its file system)"
        return text

    def put(self, record: AnyRecord) -> None:
        """Store ``record`` durably (returns after the commit reached the disk).

        Raises :class:`SpoolWriteError` if it could not: then nothing of it is stored.
        """
        data = encode_record(record)
        with self._lock, self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO spool (id, kind, created, record) VALUES (?, ?, ?, ?)",
                (record.id, record.kind, time.time(), data))
            if self.audit:
                self._db.execute("INSERT OR IGNORE INTO audit VALUES (?, ?, ?)",
                                 (record.id, record.kind, record.target))

    def batch(self, limit: int) -> list[Pending]:
        """The oldest ``limit`` records, re-validated; unreadable rows move to ``rejected``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, record FROM spool ORDER BY seq LIMIT ?", (limit,)).fetchall()
        good: list[Pending] = []
        for rid, data in rows:
            try:
                decode_record(data)
            except SchemaError as exc:
                self.reject([(rid, f"unreadable in the spool: {exc}")])
                continue
            good.append(Pending(rid, bytes(data)))
        return good

    def ack(self, ids: Sequence[str]) -> int:
        """Forget records the collector has acknowledged; returns how many were removed."""
        if not ids:
            return 0
        removed = 0
        with self._lock, self._transaction():
            for start in range(0, len(ids), 500):
                chunk = list(ids[start:start + 500])
                cur = self._db.execute(
                    f"DELETE FROM spool WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                removed += cur.rowcount
        return removed

    def reject(self, items: Sequence[tuple[str, str]]) -> None:
        """Move records the collector refused (id, reason) out of the queue, keeping them."""
        with self._lock, self._transaction():
            for rid, reason in items:
                self._db.execute(
                    "INSERT OR REPLACE INTO rejected SELECT id, record, ?, ? FROM spool "
                    "WHERE id = ?", (reason, time.time(), rid))
                self._db.execute("DELETE FROM spool WHERE id = ?", (rid,))

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM spool").fetchone()[0])

    def oldest_age_s(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT min(created) FROM spool").fetchone()
        return None if row[0] is None else max(0.0, time.time() - float(row[0]))

    def rejected_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM rejected").fetchone()[0])

    def audit_ids(self) -> list[tuple[str, str, str]]:
        with self._lock:
            rows = self._db.execute("SELECT id, kind, target FROM audit").fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]
