"""The store's records as files for analysis: Parquet, JSON Lines, CSV.

* **Parquet**: a dataset partitioned by kind and by UTC date of ``started_at``
  (hive style, ``OUT/kind=ping/date=2026-11-28/part-0.parquet``), so a reader
  (pyarrow, pandas, Dask) loads one kind and a range of days without opening
  the rest.  Columns: the envelope flattened (:data:`ENVELOPE` less ``kind``,
  which is the partition key), ``body``, the kind's body as a JSON string, and
  :data:`SUMMARY_COLUMNS`: the figures of a summary record (a ping or tcp body
  with statistics and no samples, schema 2) as typed columns, null for the
  other records, so that a Parquet reader selects or filters them without
  parsing the body (percentiles and deviations stay in ``body``).
  Times are ``timestamp[us, UTC]``.
* **JSON Lines**: the records exactly as the schema writes them.
* **CSV**: the envelope columns and ``body`` as JSON text, made safe to open
  in a spreadsheet (see :func:`csv_cell`): a text cell that starts with
  ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``
  so that it is shown as text, never run as a formula, and control characters
  are written as ``\\xNN``.  Numbers (``schema``, ``duration_ms``) stay
  numbers, negative ones included: only text is neutralised.  The CSV is for
  reading; JSON Lines is the lossless export.

Files are written whole or not at all (a temporary name, then a rename), so a
reader never sees half an export.  pyarrow is imported only for Parquet.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal

import msgspec

from ..files import replaced_whole
from ..results import AnyRecord, PingRecord, TcpRecord, write_jsonl
from .store import RecordStore, StoredRow, StoreError

__all__ = ["ENVELOPE", "FORMATS", "SUMMARY_COLUMNS", "csv_cell", "export", "export_csv",
           "export_jsonl", "export_parquet", "flat_row"]

FORMATS = ("parquet", "jsonl", "csv")
Format = Literal["parquet", "jsonl", "csv"]

#: The flattened columns, in order; ``body`` follows them.
ENVELOPE = ("id", "schema", "kind", "agent", "region", "target", "address", "started_at",
            "duration_ms", "status", "error", "source", "received_at")

#: Parquet columns of a summary record's figures (``summary_samples`` is int64, the
#: others float64; all null for records without a summary).
SUMMARY_COLUMNS = ("summary_samples", "summary_min_ms", "summary_median_ms",
                   "summary_mean_ms", "summary_max_ms")

_json = msgspec.json.Encoder()

#: A text cell starting with one of these is a formula to a spreadsheet (or,
#: for tab and carriage return, may become one after trimming).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: C0 controls, DEL and C1 controls: written as ``\xNN``.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


def csv_cell(value: Any) -> Any:
    """One CSV cell as written: text neutralised for spreadsheets, numbers unchanged.

    Text starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    gets a leading ``'`` (OWASP's advice on CSV injection; spreadsheets show
    the rest as text), whatever follows, so ``-1`` *as text* (a target's name)
    becomes ``'-1``.  Every control character (including tab and newlines: a
    cell stays on one line) becomes ``\\xNN``.  ``None`` is an empty cell;
    ``int`` and ``float`` values are numbers and pass unchanged, negative ones
    too, since a number cell cannot carry a formula.
    """
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        text = str(value)
        if text.startswith(_FORMULA_STARTS):
            text = "'" + text
        return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return value


def _summary_columns(r: AnyRecord) -> dict[str, Any]:
    summary = r.body.summary if isinstance(r, PingRecord | TcpRecord) else None
    if summary is None:
        return dict.fromkeys(SUMMARY_COLUMNS)
    return {"summary_samples": summary.samples, "summary_min_ms": summary.min_ms,
            "summary_median_ms": summary.median_ms, "summary_mean_ms": summary.mean_ms,
            "summary_max_ms": summary.max_ms}


def flat_row(row: StoredRow) -> dict[str, Any]:
    """One stored record as envelope columns plus ``body`` (JSON text)."""
    r = row.record
    return {
        "id": r.id, "schema": r.schema, "kind": r.kind, "agent": r.agent, "region": r.region,
        "target": r.target, "address": r.address, "started_at": r.started_at,
        "duration_ms": r.duration_ms, "status": r.status, "error": r.error,
        "source": r.source, "received_at": datetime.fromisoformat(row.received_at),
        "body": _json.encode(r.body).decode("utf-8"),
    }


def export_jsonl(store: RecordStore, out: str | Path | IO[bytes], *, kind: str | None = None,
                 since: datetime | None = None) -> int:
    """Records as JSON Lines; returns how many."""
    return write_jsonl(store.iter_records(kind=kind, since=since), out)


def export_csv(store: RecordStore, out: str | Path | IO[bytes], *, kind: str | None = None,
               since: datetime | None = None) -> int:
    """Envelope columns and the body as JSON; returns how many rows (header excluded)."""
    if not isinstance(out, str | Path):
        text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        try:
            return _write_csv(store, text, kind, since)
        finally:
            text.detach()
    with replaced_whole(Path(out)) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        n = _write_csv(store, fh, kind, since)
        fh.flush()
        os.fsync(fh.fileno())
    return n


def _write_csv(store: RecordStore, fh: IO[str], kind: str | None, since: datetime | None) -> int:
    writer = csv.writer(fh)
    writer.writerow([*ENVELOPE, "body"])
    n = 0
    for row in store.iter_rows(kind=kind, since=since):
        flat = flat_row(row)
        for key in ("started_at", "received_at"):
            flat[key] = flat[key].isoformat().replace("+00:00", "Z")
        writer.writerow([csv_cell(flat[c]) for c in (*ENVELOPE, "body")])
        n += 1
    return n


def _partitions(store: RecordStore, kind: str | None, since: datetime | None, size: int
                ) -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(kind, date, rows) chunks, holding at most ``size`` rows at any time.

    The store yields rows in time order, so each date arrives as one run, its
    kinds interleaved: a chunk per kind is kept until the date ends, or until the
    chunks together reach ``size`` rows, when the largest one goes out.
    """
    day = ""
    chunks: dict[str, list[dict[str, Any]]] = {}
    held = 0
    for stored in store.iter_rows(kind=kind, since=since):
        flat = flat_row(stored) | _summary_columns(stored.record)
        here = flat["started_at"].date().isoformat()
        if here != day:
            for k, rows in sorted(chunks.items()):
                yield k, day, rows
            chunks, held, day = {}, 0, here
        elif held >= size:
            largest = max(chunks, key=lambda k: len(chunks[k]))
            held -= len(chunks[largest])
            yield largest, day, chunks.pop(largest)
        chunks.setdefault(flat["kind"], []).append(flat)
        held += 1
    for k, rows in sorted(chunks.items()):
        yield k, day, rows


def export_parquet(store: RecordStore, out_dir: str | Path, *, kind: str | None = None,
                   since: datetime | None = None, rows_per_file: int = 250_000
                   ) -> dict[tuple[str, str], int]:
    """A hive-partitioned Parquet dataset; returns rows per (kind, date).

    ``out_dir`` must not exist yet (or be empty): the dataset is built beside
    it and renamed into place when complete.
    """
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StoreError(f"{out} already exists and is not an empty directory; "
                         "remove it or choose another -o")
    utc = pa.timestamp("us", tz="UTC")
    schema = pa.schema([
        ("id", pa.string()), ("schema", pa.int32()), ("agent", pa.string()),
        ("region", pa.string()), ("target", pa.string()), ("address", pa.string()),
        ("started_at", utc), ("duration_ms", pa.float64()), ("status", pa.string()),
        ("error", pa.string()), ("source", pa.string()), ("received_at", utc),
        ("body", pa.string()), ("summary_samples", pa.int64()),
        *((name, pa.float64()) for name in SUMMARY_COLUMNS[1:]),
    ])
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    written: dict[tuple[str, str], int] = {}
    try:
        tmp.mkdir(parents=True)
        files: dict[tuple[str, str], int] = {}
        for k, day, rows in _partitions(store, kind, since, rows_per_file):
            part_dir = tmp / f"kind={k}" / f"date={day}"
            part_dir.mkdir(parents=True, exist_ok=True)
            number = files.get((k, day), 0)
            pq.write_table(pa.Table.from_pylist(rows, schema=schema),
                           part_dir / f"part-{number}.parquet")
            files[(k, day)] = number + 1
            written[(k, day)] = written.get((k, day), 0) + len(rows)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return written


def export(store: RecordStore, fmt: Format, out: str | Path | IO[bytes], *, kind: str | None = None,
           since: datetime | None = None) -> int:
    """Any format; returns the number of records written."""
    if fmt == "parquet":
        if not isinstance(out, str | Path):
            raise StoreError("Parquet is a directory of files: give -o DIR, not a stream")
        return sum(export_parquet(store, out, kind=kind, since=since).values())
    if fmt == "jsonl":
        return export_jsonl(store, out, kind=kind, since=since)
    if fmt == "csv":
        return export_csv(store, out, kind=kind, since=since)
    raise StoreError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
